/**
 * Fuzz: generated malformed TOML documents never crash the loader or hang; each gets a clear, typed error
 * (ConfigError / AgoraError naming the file) or loads with warnings.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { seededRandom } from "../../src/client";
import { loadConfig, SCHEMA } from "../../src/config";
import { AgoraError } from "../../src/errors";
import { tempDir } from "../helpers/node-process";

/** Deterministic PRNG (the client's), so a failing case can be reproduced from its index. */
const rng = seededRandom;

const VALUES = [
  '"x"',
  "1",
  "-1",
  "70000",
  "1.5",
  "true",
  "nan",
  "inf",
  "[]",
  '["a", 1]',
  "{a=1}",
  '"""multi"""',
  "1979-05-27",
  '"\\u0000"',
  "0x10",
  `"${"a".repeat(5000)}"`,
  "[[]]",
  '"/ip4/1.2.3.4/tcp/1"',
  '"0.0.0.0"',
  '"30s"',
];
const BROKEN = [
  "[",
  "]",
  "=",
  '"',
  "[[x]]",
  "[node",
  "a.b.c = 1",
  "= 3",
  "\u0000",
  "\ud800",
  "key = ",
  "[node]\n[node]",
  "x = 1\nx = 2",
  "\\",
  "'''",
  "#\n#",
  "[ node ]",
  "🎙 = 1",
];

function generate(r: () => number): string {
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)]!;
  const lines: string[] = [];
  const n = 1 + Math.floor(r() * 8);
  for (let i = 0; i < n; i++) {
    const roll = r();
    if (roll < 0.25) lines.push(`[${pick(SCHEMA).section}]`);
    else if (roll < 0.6) lines.push(`${pick(SCHEMA).key} = ${pick(VALUES)}`);
    else if (roll < 0.85) lines.push(pick(BROKEN));
    else {
      const bytes = Array.from({ length: 1 + Math.floor(r() * 40) }, () => String.fromCharCode(Math.floor(r() * 0x2fff)));
      lines.push(bytes.join(""));
    }
  }
  return lines.join(r() < 0.5 ? "\n" : "\r\n");
}

test("1,200 malformed TOML documents: typed errors, never a crash", () => {
  const dir = tempDir();
  const file = join(dir, "fuzz.toml");
  let errors = 0;
  let loaded = 0;
  for (let i = 0; i < 1200; i++) {
    const doc = generate(rng(i));
    writeFileSync(file, doc);
    try {
      loadConfig({ file, env: {} });
      loaded++;
    } catch (err) {
      if (!(err instanceof AgoraError)) throw new Error(`case ${i}: untyped ${String(err)}\n${doc}`);
      expect(err.message).toContain("fuzz.toml");
      expect(err.message.length).toBeLessThan(20_000);
      errors++;
    }
  }
  // The generator must actually produce broken documents, or this test proves nothing.
  expect(errors).toBeGreaterThan(900);
  expect(loaded + errors).toBe(1200);
});

test("environment fuzz: random values for every key give typed errors or valid config", () => {
  const r = rng(42);
  let errors = 0;
  let loaded = 0;
  for (let i = 0; i < 400; i++) {
    const spec = SCHEMA[Math.floor(r() * SCHEMA.length)]!;
    const name = `AGORA_${spec.section.toUpperCase()}_${spec.key.toUpperCase()}`;
    const value = Array.from({ length: Math.floor(r() * 12) }, () => String.fromCharCode(32 + Math.floor(r() * 95))).join("");
    try {
      loadConfig({ env: { [name]: value } });
      loaded++;
    } catch (err) {
      if (!(err instanceof AgoraError)) throw new Error(`case ${i}: ${name}=${JSON.stringify(value)}: untyped ${String(err)}`);
      // the error names the variable it is about
      expect(err.message).toContain(name);
      errors++;
    }
  }
  // Random printable strings are mostly invalid for typed keys: a run without errors means the variables
  // were not read at all, and this test would prove nothing.
  expect(errors).toBeGreaterThan(200);
  expect(loaded + errors).toBe(400);
});
