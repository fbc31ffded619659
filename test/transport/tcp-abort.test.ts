/** An aborted TCP dial must never crash the process (see src/transport/tcp.ts). */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

function run(mode: "raw" | "wrapped") {
  const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "aborted-dials.ts"), mode], {
    cwd: join(import.meta.dir, "..", ".."),
    timeout: 30_000,
  });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("aborted TCP dials", () => {
  test("agoraTcp(): 20 dials aborted mid-connect, all rejected, process alive", () => {
    const r = run("wrapped");
    expect(r.out.trim()).toBe("rejected 20 uncaught 0");
    expect(r.err).not.toContain("AbortError");
    expect(r.code).toBe(0);
  });

  test("control: plain @libp2p/tcp 11.0.28 throws uncaught AbortErrors (drop the wrapper when this fails)", () => {
    const r = run("raw");
    const m = /rejected (\d+) uncaught (\d+)/.exec(r.out);
    expect(m).not.toBeNull();
    expect(Number(m![2])).toBeGreaterThan(0);
    expect(r.err).toContain("uncaught AbortError");
  });
});
