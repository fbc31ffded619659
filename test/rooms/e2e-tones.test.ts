/**
 * End to end through the REAL media engine (wasm libopus + mixing core in its worker) and the real Opus
 * codec in the clients: join clients on one libp2p client node each, a node with AudioRoomService, tones
 * in, WAVs out, analysed with Goertzel.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { createMediaEngine } from "../../src/audio";
import { runJoinClient, type JoinClientOptions, type JoinClientReport } from "../../src/client";
import { AudioRoomService } from "../../src/rooms";
import type { MediaEngine, ParticipantStats } from "../../src/audio";
import { readWav, writeWav } from "../../src/client";
import { defaultConfig } from "../../src/config/schema";
import { silentLogger } from "../../src/log";
import { createServerNode, db, goertzelPower, rms, tone, waitFor } from "../helpers/net-fakes";

let dir: string;
let node: Libp2p;
let addr: Multiaddr;
let engine: MediaEngine;
let service: AudioRoomService;
let registry: Registry;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "agora-e2e-tones-"));
  ({ node, addr } = await createServerNode());
  registry = new Registry();
  const cfg = defaultConfig();
  engine = await createMediaEngine({
    settings: {
      topKSpeakers: cfg.audio.top_k_speakers,
      sharedEncode: cfg.audio.shared_encode,
      bitrate: cfg.audio.bitrate,
      jitterMinMs: cfg.audio.jitter_min_ms,
      jitterMaxMs: cfg.audio.jitter_max_ms,
      maxRooms: 10,
      maxParticipants: 50,
    },
    logger: silentLogger(),
    registry,
  });
  await engine.start();
  service = new AudioRoomService({ libp2p: node, engine, registry, logger: silentLogger(), bitrate: cfg.audio.bitrate });
  await service.start();
  for (const f of [440, 660, 880]) writeWav(join(dir, `${f}.wav`), tone(f, 3, 8000));
}, 30_000);

afterAll(async () => {
  await service?.stop();
  await engine?.stop();
  await node?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function join_(room: string, extra: Partial<JoinClientOptions>): Promise<JoinClientReport> {
  return runJoinClient({ node: addr, room, logger: silentLogger(), tailMs: 600, ...extra });
}

/** Middle of the output, where every sender was active (clients start within ~100 ms of each other). */
function steady(path: string): Int16Array {
  const { samples } = readWav(path);
  return samples.subarray(Math.round(0.8 * 48000), Math.round(2.3 * 48000));
}

/** Hann-windowed Goertzel power per 20 ms block. */
function blockPowers(x: Int16Array, freq: number): number[] {
  const out: number[] = [];
  const w = new Float64Array(960);
  for (let i = 0; i + 960 <= x.length; i += 960) {
    for (let j = 0; j < 960; j++) w[j] = x[i + j]! * (0.5 - 0.5 * Math.cos((2 * Math.PI * j) / 959));
    out.push(goertzelPower(w, freq));
  }
  return out;
}

/**
 * 20 ms output frames (the WAV is written frame-aligned and `steady` starts on a frame boundary) whose
 * `freq` power falls 20 dB below the median frame: a lost frame played as silence shows up here, one
 * concealed by Opus PLC does not.
 */
function dropouts(x: Int16Array, freq: number): { blocks: number; longestMs: number } {
  const p = blockPowers(x, freq);
  const median = [...p].sort((a, b) => a - b)[p.length >> 1]!;
  let run = 0;
  let longest = 0;
  let blocks = 0;
  for (const v of p) {
    const out = db(v / median) < -20;
    if (out) blocks++;
    run = out ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return { blocks, longestMs: longest * 20 };
}

/** Samples the engine's stats of the (only) participant that sends, while `running` is pending. */
async function talkerStats(room: string, running: Promise<unknown>): Promise<ParticipantStats | undefined> {
  let last: ParticipantStats | undefined;
  let done = false;
  void running.finally(() => (done = true));
  while (!done) {
    const r = service.rooms().find((x) => x.id === room);
    const t = r?.participants.find((p) => p.packetsIn > 0);
    if (t) last = { ...t };
    await Bun.sleep(100);
  }
  return last;
}

describe("three talkers, one room (mix-minus)", () => {
  test("each output holds the other two tones, its own at least 26 dB lower", async () => {
    const freqs = [440, 660, 880];
    const reports = await Promise.all(
      freqs.map((f) => join_("tones", { name: `tone-${f}`, input: join(dir, `${f}.wav`), output: join(dir, `out-${f}.wav`) })),
    );
    for (const r of reports) {
      expect(r.endReason).toBe("input_end");
      expect(r.framesSent).toBe(150);
      expect(r.framesReceived).toBeGreaterThan(140);
    }
    for (const own of freqs) {
      const x = steady(join(dir, `out-${own}.wav`));
      const p = Object.fromEntries(freqs.map((f) => [f, goertzelPower(x, f)]));
      const others = freqs.filter((f) => f !== own);
      for (const o of others) {
        // the other talkers are clearly present (8000-amplitude tone → power ≈ 4e6; allow mixer gain/limiting)
        expect(p[o]!).toBeGreaterThan(1e5);
        expect(db(p[o]! / p[own]!)).toBeGreaterThanOrEqual(26);
      }
    }
  }, 30_000);
});

describe("impaired uplink", () => {
  test("10 % dropped packets: the listener's output stays continuous (PLC), no long silent runs", async () => {
    const listener = join_("lossy", { output: join(dir, "lossy-out.wav"), durationSec: 4.2 });
    await waitFor(() => service.participantCount() === 1, "listener joined");
    const talking = join_("lossy", { input: join(dir, "440.wav"), simulate: { dropRate: 0.1, seed: 42 } });
    const stats = await talkerStats("lossy", talking);
    const talker = await talking;
    expect(talker.framesDroppedSimulated).toBeGreaterThanOrEqual(8);
    expect(talker.framesSent + talker.framesDroppedSimulated).toBe(150);
    // the engine saw the gaps and concealed them
    expect(stats?.concealed ?? 0).toBeGreaterThanOrEqual(5);
    await listener;
    const x = steady(join(dir, "lossy-out.wav"));
    expect(rms(x)).toBeGreaterThan(1000);
    // ~7 frames were lost inside this window; played as silence each would be a dropout
    const d = dropouts(x, 440);
    expect(d.blocks).toBeLessThanOrEqual(2);
    expect(d.longestMs).toBeLessThanOrEqual(40);
  }, 30_000);

  test("reordered packets: the output is still a clean, continuous tone", async () => {
    const listener = join_("reorder", { output: join(dir, "reorder-out.wav"), durationSec: 4.2 });
    await waitFor(() => service.participantCount() === 1, "listener joined");
    const talking = join_("reorder", { input: join(dir, "660.wav"), simulate: { reorderRate: 0.2, seed: 9 } });
    const stats = await talkerStats("reorder", talking);
    const talker = await talking;
    expect(talker.framesReorderedSimulated).toBeGreaterThanOrEqual(10);
    expect(talker.framesSent).toBe(150);
    // swapped frames were put back in order by the jitter buffer, not discarded as late and concealed
    expect(stats).toBeDefined();
    expect(stats!.late).toBeLessThanOrEqual(2);
    expect(stats!.concealed).toBeLessThanOrEqual(5);
    await listener;
    const x = steady(join(dir, "reorder-out.wav"));
    expect(dropouts(x, 660).blocks).toBe(0);
    // Frames decoded out of order would click (broadband energy): the tone must carry nearly all the power.
    const tonePower = goertzelPower(x, 660);
    const total = rms(x) ** 2;
    expect(tonePower / total).toBeGreaterThan(0.95);
  }, 30_000);
});
