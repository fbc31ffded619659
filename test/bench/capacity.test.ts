/**
 * Smoke test of bench/capacity.ts: a tiny run (3 participants on their own connections, two loadgen
 * processes, a few seconds) against the compiled binary, checking the JSON line's fields and that every
 * figure was really measured, on both voice paths (`--transport both`: UDP datagrams, then the stream).
 * Real time may be lost on a busy machine: the verdict must then name why.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ensureBinary, ROOT } from "../helpers/node-process";

test("bench/capacity --transport both: one tiny step per path yields a complete JSON line with the ratios", async () => {
  ensureBinary();
  const proc = Bun.spawn(
    [
      process.execPath,
      join(ROOT, "bench", "capacity.ts"),
      ...["--steps", "3", "--duration", "3", "--warmup", "1", "--procs", "2", "--layouts", "1", "--mixer", "504", "--transport", "both"],
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  const killer = setTimeout(() => proc.kill("SIGKILL"), 230_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(killer);
  expect({ code, stderr: code === 0 ? "" : stderr }).toEqual({ code: 0, stderr: "" });
  const lines = stdout.trim().split("\n");
  const out = JSON.parse(lines.at(-1)!);
  expect(out.bench).toBe("capacity");
  expect(out.params).toMatchObject({ steps: [3], procs: 2, layouts: [1], talkers: 3, connections: "per-participant" });
  expect(out.thresholds).toEqual({ lossPercent: 0.5, p99Ms: 150, skippedTicks: 0 });
  expect(out.mixerCoreParticipantsPerCore).toBe(504);
  expect(out.params.transports).toEqual(["udp", "stream"]);
  expect(out.layouts.map((l: { transport: string }) => l.transport)).toEqual(["udp", "stream"]);
  for (const layout of out.layouts) {
    const [step] = layout.steps;
    expect(step).toMatchObject({ rooms: 1, participants: 3, joined: 3, joinErrors: 0 });
    // node CPU split by thread, from /proc: the main thread and the media worker both did work
    expect(step.nodeCores.main).toBeGreaterThan(0);
    expect(step.nodeCores.mediaWorker).toBeGreaterThan(0);
    expect(step.nodeCores.total).toBeCloseTo(step.nodeCores.main + step.nodeCores.mediaWorker + step.nodeCores.other, 2);
    expect(step.participantsPerNodeCore).toBe(Math.round(3 / step.nodeCores.total));
    expect(step.loadgenCores).toBeGreaterThan(0);
    // the driver's cost per 100 participants, from the same figure
    expect(step.loadgenCoresPer100).toBeCloseTo((step.loadgenCores / step.joined) * 100, 2);
    expect(step.windowSec).toBeGreaterThan(1);
    // three participants each send 50 frames/s: the node's packet counters moved accordingly (generous bounds)
    expect(step.packetsInPerSec).toBeGreaterThan(30);
    expect(step.packetsInPerSec).toBeLessThan(400);
    expect(step.packetsOutPerSec).toBeGreaterThan(0);
    for (const k of [
      "windowLossPercent",
      "dueLossPercent",
      "seqLossPercent",
      "lateFrames",
      "skippedTicks",
      "workerRestarts",
      "loadAverage",
    ])
      expect(typeof step[k]).toBe("number");
    expect(step.latencyMs.samples).toBeGreaterThan(0);
    expect(step.latencyMs.p50).toBeGreaterThan(0);
    // the verdict agrees with its reasons, and the layout's summary with the verdict
    expect(step.realTime).toBe(step.failures.length === 0);
    expect(layout.capacityParticipants).toBe(step.realTime ? 3 : null);
    expect(layout.lostAtParticipants).toBe(step.realTime ? null : 3);
    // the voice path really was the one asked for: datagrams counted by the node on udp only
    if (layout.transport === "udp") {
      expect(step.udpInPerSec).toBeGreaterThan(30);
      expect(step.udpOutPerSec).toBeGreaterThan(0);
    } else expect({ in: step.udpInPerSec, out: step.udpOutPerSec }).toEqual({ in: 0, out: 0 });
    expect(step.udpDroppedPerSec).toBe(0);
  }
  // udp / stream per N, from the two steps above
  const [udpStep, streamStep] = out.layouts.map((l: { steps: Array<{ participantsPerNodeCore: number }> }) => l.steps[0]);
  expect(out.udpOverStream).toEqual([
    {
      rooms: 1,
      perN: [
        expect.objectContaining({
          participants: 3,
          participantsPerNodeCore: Math.round((udpStep.participantsPerNodeCore / streamStep.participantsPerNodeCore) * 100) / 100,
        }),
      ],
    },
  ]);
  // the table is printed before the JSON line
  expect(lines.some((l) => l.startsWith("transport rooms      N joined"))).toBe(true);
  expect(lines.some((l) => l.startsWith("udp / stream, 1 room(s):"))).toBe(true);
}, 240_000);
