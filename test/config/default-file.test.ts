import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderDefaultConfig } from "../../src/config";
import { ROOT } from "../helpers/node-process";

test("config/node.toml (shipped in the image and packages) is exactly what `config init` writes", () => {
  // Regenerate with: bun -e 'import {renderDefaultConfig} from "./src/config/render"; await Bun.write("config/node.toml", renderDefaultConfig())'
  expect(readFileSync(join(ROOT, "config", "node.toml"), "utf8")).toBe(renderDefaultConfig());
});
