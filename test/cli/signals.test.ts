import { expect, test } from "bun:test";
import { main } from "../../src/cli";
import { stopCaveat } from "../../src/cli/control";
import { signalPlan } from "../../src/cli/start";

test("Windows: Ctrl-C (SIGINT), Ctrl-Break (SIGBREAK) and console close (SIGHUP) drain; nothing reloads by signal", () => {
  const win = signalPlan("win32");
  expect(win.stop).toEqual(expect.arrayContaining(["SIGINT", "SIGBREAK", "SIGHUP"]));
  expect(win.reload).toEqual([]);
});

test("POSIX: SIGTERM and SIGINT drain, SIGHUP reloads (unchanged)", () => {
  for (const p of ["linux", "darwin"] as const) {
    expect(signalPlan(p).stop.sort()).toEqual(["SIGINT", "SIGTERM"]);
    expect(signalPlan(p).reload).toEqual(["SIGHUP"]);
  }
  expect(signalPlan()).toEqual(signalPlan(process.platform));
});

test("start --help says how to stop and reload on Windows", async () => {
  const out: string[] = [];
  expect(await main(["start", "--help"], { out: (s) => void out.push(s), err: () => undefined, env: {} })).toBe(0);
  expect(out.join("\n")).toContain("Windows: Ctrl-C, Ctrl-Break and closing the console drain then stop; reload with POST /api/reload.");
});

test("stop on Windows says it cannot drain (no SIGTERM there) and how to drain instead", () => {
  expect(stopCaveat("win32")).toContain("without draining");
  expect(stopCaveat("win32")).toContain("POST /api/drain");
  expect(stopCaveat("linux")).toBeUndefined();
  expect(stopCaveat("darwin")).toBeUndefined();
});
