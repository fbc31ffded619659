/**
 * Audio end to end with real processes: a dedicated node (the compiled binary) and `agora-node join`
 * clients (the same binary) sending 440, 660 and 880 Hz tones into one room. Each output must hold the two
 * other tones with its own at least 26 dB lower. The same room then proves graceful shutdown: SIGTERM turns
 * /health 503 at once, refuses new joins, and the node exits 0 as soon as the last participant has left.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { readWav, writeWav } from "../../src/client";
import { type NodeHandle, runCli, startNode, tempDir } from "../helpers/node-process";

const RATE = 48_000;
const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});

function tone(hz: number, seconds: number): Int16Array {
  return Int16Array.from({ length: RATE * seconds }, (_, i) => Math.round(6000 * Math.sin((2 * Math.PI * hz * i) / RATE)));
}

/** Power of one frequency in a block of samples (Goertzel), normalised per sample. */
function goertzel(samples: Int16Array, hz: number, from: number, to: number): number {
  const k = 2 * Math.cos((2 * Math.PI * hz) / RATE);
  let s0 = 0,
    s1 = 0,
    s2 = 0;
  for (let i = from; i < to; i++) {
    s0 = samples[i]! + k * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return (s1 * s1 + s2 * s2 - k * s1 * s2) / (to - from);
}

const db = (a: number, b: number) => 10 * Math.log10(a / Math.max(b, 1e-9));

async function roomsOf(h: NodeHandle) {
  return (await (await fetch(`${h.dashboardUrl}/api/rooms`)).json()) as { id: string; participants: { id: string; speaking: boolean }[] }[];
}

describe("three join processes in one room on a binary node", () => {
  test("each hears the other two tones, its own ≥ 26 dB lower; SIGTERM drains, refuses joins, exits 0 when empty", async () => {
    const node = await startNode({ args: ["--drain-timeout", "60s"] });
    started.push(node);
    const addr = await node.multiaddr();
    const dir = tempDir();
    const freqs = [440, 660, 880];
    for (const [i, f] of freqs.entries()) writeWav(join(dir, `in${i}.wav`), tone(f, 8), RATE);
    const clients = freqs.map((_, i) =>
      runCli(["join", "--room", "tones", "--node", addr, "--input", join(dir, `in${i}.wav`), "--output", join(dir, `out${i}.wav`)], {
        timeoutMs: 60_000,
      }),
    );
    await (async () => {
      for (let i = 0; i < 100; i++) {
        const rooms = await roomsOf(node);
        if (rooms[0]?.participants.length === 3) return;
        await Bun.sleep(100);
      }
      throw new Error("three participants never showed up in /api/rooms");
    })();
    await Bun.sleep(2000);
    const live = await roomsOf(node);
    expect(live[0]!.participants.filter((p) => p.speaking).length).toBe(3);

    // Graceful shutdown while the call runs.
    node.proc.kill("SIGTERM");
    await Bun.sleep(300);
    const health = await fetch(`${node.dashboardUrl}/health`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { status: string }).status).toBe("draining");
    expect((await roomsOf(node))[0]!.participants.length).toBe(3); // the call goes on
    const late = await runCli(["join", "--room", "tones", "--node", addr, "--duration", "2"], { timeoutMs: 30_000 });
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(/draining/i);
    expect(node.proc.exitCode).toBeNull();

    const results = await Promise.all(clients);
    for (const r of results) expect(r.code).toBe(0);
    expect(await node.exited).toBe(0); // left when the room emptied, long before the 60 s drain timeout
    expect(node.logs()).toContain("drained: no participants left");

    for (let i = 0; i < 3; i++) {
      const out = readWav(join(dir, `out${i}.wav`)).samples;
      // Judge the steady middle of the call: 2 s .. 6 s of the output.
      const [from, to] = [2 * RATE, Math.min(out.length, 6 * RATE)];
      expect(to - from).toBeGreaterThan(RATE * 3);
      const own = goertzel(out, freqs[i]!, from, to);
      for (let j = 0; j < 3; j++) {
        if (j === i) continue;
        const other = goertzel(out, freqs[j]!, from, to);
        expect(db(other, own)).toBeGreaterThanOrEqual(26);
      }
    }
  }, 90_000);

  test("a second signal during the drain forces an immediate exit", async () => {
    const node = await startNode({ args: ["--drain-timeout", "60s"] });
    started.push(node);
    const addr = await node.multiaddr();
    const client = runCli(["join", "--room", "forced", "--node", addr, "--duration", "6"], { timeoutMs: 60_000 });
    for (let i = 0; i < 100 && (await roomsOf(node)).length === 0; i++) await Bun.sleep(100);
    expect((await roomsOf(node)).length).toBe(1);
    node.proc.kill("SIGTERM");
    await Bun.sleep(500);
    expect(node.proc.exitCode).toBeNull(); // still draining: a participant is in the room
    node.proc.kill("SIGTERM");
    expect(await node.exited).toBe(1);
    expect(node.logs()).toContain("second signal: exiting immediately");
    await client; // its node vanished: it ends at its duration, whatever it printed
  }, 90_000);

  test("agora-node loadgen drives rooms × participants against the node and reports loss and latency", async () => {
    const node = await startNode();
    started.push(node);
    const r = await runCli(
      ["loadgen", "--node", await node.multiaddr(), "--rooms", "2", "--participants", "3", "--duration", "4", "--json"],
      { timeoutMs: 60_000 },
    );
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as {
      totals: { sessions: number; joined: number; framesReceived: number; lossPercent: number };
      latencyMs: { samples: number; p50: number | null };
    };
    expect(report.totals.sessions).toBe(6);
    expect(report.totals.joined).toBe(6);
    expect(report.totals.framesReceived).toBeGreaterThan(6 * 100);
    expect(report.totals.lossPercent).toBeLessThan(5);
    expect(report.latencyMs.samples).toBeGreaterThan(0);
    expect(report.latencyMs.p50).toBeGreaterThan(0);
  }, 60_000);
});
