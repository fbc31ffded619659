/**
 * `agora-node stop` follows the drain: a line per change of rooms and participants left, with the time to
 * the drain deadline, while it waits for the exit.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { drainLine } from "../../src/cli/control";
import { eventually, type NodeHandle, runCli, startNode } from "../helpers/node-process";

const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});

describe("stop shows the drain's progress", () => {
  test("drainLine counts what is left and the seconds to the deadline", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(
      drainLine({ state: "draining", rooms_active: 1, participants: 2, drain: { deadline: "2026-01-01T00:00:27.200Z" } }, now).text,
    ).toBe("draining: 1 room, 2 participants left, 28s to the deadline");
    expect(drainLine({ state: "draining", rooms_active: 0, participants: 0, drain: { deadline: "2025-12-31T23:59:00Z" } }, now).text).toBe(
      "draining: 0 rooms, 0 participants left, 0s to the deadline",
    );
    expect(drainLine({ state: "ready", rooms_active: 0, participants: 0, drain: null }, now).text).toBe(
      "ready: 0 rooms, 0 participants left",
    );
  });

  test("a live participant: stop prints the room and participant left, then the exit", async () => {
    const node = await startNode({ args: ["--drain-timeout", "60s"] });
    started.push(node);
    const client = runCli(["join", "--room", "progress", "--node", await node.multiaddr(), "--duration", "4"], { timeoutMs: 60_000 });
    await eventually(
      async () => ((await (await fetch(`${node.dashboardUrl}/api/status`)).json()) as { participants: number }).participants === 1,
      20_000,
      "the participant to join",
    );
    const stop = await runCli(["stop", "--data-dir", node.dataDir, "--endpoint", node.dashboardUrl], { timeoutMs: 60_000 });
    await client;
    expect(stop.code).toBe(0);
    expect(stop.stderr).toMatch(/^draining: 1 room, 1 participant left, \d+s to the deadline$/m);
    expect(stop.stdout).toMatch(/stopped after/);
    expect(await node.exited).toBe(0);
  }, 90_000);
});
