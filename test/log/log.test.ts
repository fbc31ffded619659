import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { createLogger } from "../../src/log";
import { tempDir } from "../helpers/node-process";

function lines(file: string): Record<string, unknown>[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l));
}

describe("logging", () => {
  test("JSON lines carry the level name, not pino's number", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (d) => (text += d));
    const logs = createLogger({ level: "debug", format: "json", stdout: out });
    logs.logger.info("hello");
    logs.logger.warn({ k: 1 }, "careful");
    logs.logger.debug("detail");
    const got = text
      .split("\n")
      .filter((l) => l)
      .map((l) => JSON.parse(l));
    expect(got.map((l) => l.level)).toEqual(["info", "warn", "debug"]);
  });

  test("the text format still names the level", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (d) => (text += d));
    createLogger({ level: "info", format: "text", stdout: out }).logger.warn("careful");
    expect(text).toMatch(/WARN.*careful/);
  });

  test("reopen() after a rename (logrotate) writes to a new file of the configured name", () => {
    const dir = tempDir();
    const file = join(dir, "node.log");
    const logs = createLogger({ level: "info", format: "json", file, stdout: new PassThrough() });
    logs.logger.info("before rotation");
    renameSync(file, `${file}.1`);
    logs.logger.info("still into the renamed file");
    logs.reopen();
    logs.logger.info("after rotation");
    logs.close();
    expect(lines(`${file}.1`).map((l) => l.msg)).toEqual(["before rotation", "still into the renamed file"]);
    expect(existsSync(file)).toBe(true);
    expect(lines(file).map((l) => l.msg)).toEqual(["after rotation"]);
  });
});
