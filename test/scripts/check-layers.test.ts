/** scripts/check-layers.ts: finds imports past a subsystem's index.ts and circles between subsystems. */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const script = join(import.meta.dir, "..", "..", "scripts", "check-layers.ts");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), "agora-layers-"));
  dirs.push(d);
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(d, p)), { recursive: true });
    writeFileSync(join(d, p), text);
  }
  return d;
}

function check(dir: string): { code: number; err: string } {
  const r = Bun.spawnSync([process.execPath, script, dir]);
  return { code: r.exitCode, err: r.stderr.toString() };
}

test("a clean tree passes", () => {
  const d = tree({
    "a/index.ts": 'export { x } from "./x";\n',
    "a/x.ts": 'import type { Y } from "../b";\nexport const x = 1;\n',
    "b/index.ts": "export type Y = number;\n",
    "main.ts": 'import { x } from "./a";\n',
  });
  expect(check(d)).toEqual({ code: 0, err: expect.stringContaining("no circle") });
});

test("an import of a file inside another subsystem is named with file:line", () => {
  const d = tree({ "a/index.ts": '\nimport { y } from "../b/y";\n', "b/index.ts": "", "b/y.ts": "export const y = 1;\n" });
  const r = check(d);
  expect(r.code).toBe(1);
  expect(r.err).toContain('a/index.ts:2: imports "../b/y", a file inside b/');
});

test("a circle between subsystems is found even when no two files form one (type and dynamic imports count)", () => {
  const d = tree({
    "a/index.ts": 'export { f } from "./f";\n',
    "a/f.ts": 'import type { G } from "../b";\nexport const f = 1;\n',
    "b/index.ts": 'export type G = number;\nexport const g = () => import("../a");\n',
  });
  const r = check(d);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/subsystem circle: a → b .*; b → a/);
});

test("a subsystem's portable.ts is a face too (the runtime-neutral part a browser bundle takes alone)", () => {
  const d = tree({
    "a/index.ts": 'import { c } from "../b/portable";\nimport { y } from "../b/portable.ts";\nexport const x = c + y;\n',
    "b/index.ts": 'export { c, y } from "./portable";\n',
    "b/portable.ts": "export const c = 1;\nexport const y = 2;\n",
  });
  expect(check(d)).toEqual({ code: 0, err: expect.stringContaining("no circle") });
  const bad = tree({
    "a/index.ts": 'import { y } from "../b/portable-ish";\n',
    "b/index.ts": "",
    "b/portable-ish.ts": "export const y = 1;\n",
  });
  expect(check(bad).code).toBe(1);
});
