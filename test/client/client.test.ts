import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { loadOpusCodec, PacedTimer, PlayoutBuffer, runJoinClient, type JoinClientOptions } from "../../src/client";
import { runLoadgen, summarize } from "../../src/client";
import { AudioRoomService } from "../../src/rooms";
import { decodeWav, encodeWav, readWav, resample, WavError, WavWriter, writeWav } from "../../src/client";
import { WireErrorCode } from "../../src/protocol";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { createFakeCodec, createServerNode, db, FakeMediaEngine, goertzelPower, rms, tone, waitFor } from "../helpers/net-fakes";

// Real-time tests (audio is paced at 20 ms/frame) on a shared 2-core machine: well above bun's 5 s default.
setDefaultTimeout(20_000);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "agora-client-test-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("wav", () => {
  test("16-bit mono round trip", () => {
    const x = tone(440, 0.1);
    const p = join(dir, "rt.wav");
    writeWav(p, x);
    const r = readWav(p);
    expect(r.info).toEqual({ sampleRate: 48000, channels: 1, bitsPerSample: 16, frames: x.length });
    expect(r.samples).toEqual(x);
  });

  test("stereo is downmixed by averaging", () => {
    const l = tone(440, 0.05);
    const inter = new Int16Array(l.length * 2);
    for (let i = 0; i < l.length; i++) {
      inter[2 * i] = l[i]!;
      inter[2 * i + 1] = 100;
    }
    const p = join(dir, "st.wav");
    writeFileSync(p, encodeWav(inter, 48000, 2));
    const r = readWav(p);
    expect(r.info.channels).toBe(2);
    expect(r.samples.length).toBe(l.length);
    expect(r.samples[10]).toBe(Math.round((l[10]! + 100) / 2));
  });

  test("44.1 kHz is resampled to 48 kHz keeping the pitch and level", () => {
    const src = new Int16Array(44100);
    for (let i = 0; i < src.length; i++) src[i] = Math.round(10000 * Math.sin((2 * Math.PI * 1000 * i) / 44100));
    const p = join(dir, "441.wav");
    writeFileSync(p, encodeWav(src, 44100, 1));
    const { samples, info } = readWav(p);
    expect(info.sampleRate).toBe(44100);
    expect(samples.length).toBe(48000);
    const mid = samples.subarray(4800, 43200);
    const at1k = goertzelPower(mid, 1000);
    expect(db(at1k / goertzelPower(mid, 1100))).toBeGreaterThan(30);
    expect(Math.abs(rms(mid) - 10000 / Math.SQRT2)).toBeLessThan(150);
  });

  test("downsampling does not alias: a 20 kHz tone at 48 kHz almost vanishes at 16 kHz", () => {
    const x = new Int16Array(48000);
    for (let i = 0; i < x.length; i++) x[i] = Math.round(10000 * Math.sin((2 * Math.PI * 20000 * i) / 48000));
    const y = resample(x, 48000, 16000);
    expect(rms(y.subarray(1000, 15000))).toBeLessThan(100);
  });

  test("unsupported files are rejected with an error naming the file and the problem", () => {
    const bad = (name: string, bytes: Uint8Array, pattern: RegExp) => {
      const p = join(dir, name);
      writeFileSync(p, bytes);
      let err: unknown;
      try {
        readWav(p);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WavError);
      expect((err as WavError).code).toBe("USAGE");
      expect((err as WavError).message).toContain(p);
      expect((err as WavError).message).toMatch(pattern);
    };
    const good = encodeWav(new Int16Array(100));
    const with24 = good.slice();
    new DataView(with24.buffer).setUint16(34, 24, true);
    bad("24.wav", with24, /24-bit/);
    const float = good.slice();
    new DataView(float.buffer).setUint16(20, 3, true);
    bad("float.wav", float, /float/);
    bad("text.wav", new TextEncoder().encode("hello, not a wav file at all"), /no RIFF header/);
    bad("short.wav", new Uint8Array(4), /too short/);
    const lowRate = good.slice();
    new DataView(lowRate.buffer).setUint32(24, 4000, true);
    bad("4k.wav", lowRate, /sample rate 4000/);
    expect(() => readWav(join(dir, "missing.wav"))).toThrow(/missing\.wav: cannot read/);
  });

  test("the streaming writer keeps a valid header while writing", () => {
    const p = join(dir, "stream.wav");
    const w = WavWriter.open(p);
    for (let i = 0; i < 20; i++) w.write(tone(440, 0.02)); // 400 ms > the 250 ms flush threshold
    const partial = decodeWav(readFileSync(p), p);
    expect(partial.frames).toBeGreaterThanOrEqual(12_000);
    expect(partial.frames % 960).toBe(0);
    w.close();
    expect(decodeWav(readFileSync(p), p).frames).toBe(20 * 960);
  });
});

describe("PlayoutBuffer", () => {
  const pkt = (n: number) => new Uint8Array([n & 0xff]);

  test("reorders, conceals gaps, drops late and duplicate frames", () => {
    const b = new PlayoutBuffer(3, 10);
    expect(b.pop()).toBeUndefined();
    b.push(100, pkt(100));
    b.push(102, pkt(102));
    b.push(101, pkt(101));
    b.push(101, pkt(101));
    expect(b.duplicates).toBe(1);
    expect(b.pop()?.[0]).toBe(100);
    expect(b.pop()?.[0]).toBe(101);
    expect(b.pop()?.[0]).toBe(102);
    expect(b.pop()).toBeNull(); // 103 missing → PLC
    b.push(103, pkt(103));
    expect(b.late).toBe(1);
    b.push(104, pkt(104));
    expect(b.pop()?.[0]).toBe(104);
  });

  test("bounds latency by skipping ahead after a burst", () => {
    const b = new PlayoutBuffer(3, 10);
    for (let s = 0; s < 30; s++) b.push(s, pkt(s));
    expect(b.depth).toBeLessThanOrEqual(10);
    expect(b.skipped).toBeGreaterThan(0);
    expect(b.pop()?.[0]).toBeGreaterThanOrEqual(20);
  });

  test("handles sequence wrap-around and a new numbering", () => {
    const b = new PlayoutBuffer(2, 10);
    b.push(0xffffffff, pkt(1));
    b.push(0, pkt(2));
    expect(b.pop()?.[0]).toBe(1);
    expect(b.pop()?.[0]).toBe(2);
    b.push(5_000_000, pkt(3)); // server stream restarted with other numbers
    expect(b.pop()?.[0]).toBe(3);
  });
});

test("PacedTimer catches up after a stall instead of drifting", async () => {
  const ticks: number[] = [];
  const t = new PacedTimer(10, (n) => ticks.push(n));
  t.begin();
  const until = performance.now() + 60;
  while (performance.now() < until) {
    /* block the event loop for 60 ms */
  }
  await waitFor(() => ticks.length >= 8, "ticks to catch up");
  t.stop();
  expect(ticks.slice(0, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
});

// ---------------------------------------------------------------------------------------------------------
// runJoinClient against a real AudioRoomService (forwarding fake engine, μ-law fake codec)

interface Server {
  node: Libp2p;
  addr: Multiaddr;
  engine: FakeMediaEngine;
  service: AudioRoomService;
}

async function startServer(maxParticipants = 1000, resequence = false): Promise<Server> {
  const { node, addr } = await createServerNode();
  const engine = new FakeMediaEngine(maxParticipants, resequence);
  const service = new AudioRoomService({ libp2p: node, engine, registry: new Registry(), logger: silentLogger() });
  await service.start();
  return { node, addr, engine, service };
}

async function stopServer(s: Server): Promise<void> {
  await s.service.stop();
  await s.node.stop();
}

/** Fake μ-law codec by default (fast, deterministic); the audio tests pass the real Opus one. */
function client(s: Server, room: string, extra: Partial<JoinClientOptions>): Promise<Awaited<ReturnType<typeof runJoinClient>>> {
  return runJoinClient({ node: s.addr, room, logger: silentLogger(), codec: createFakeCodec(), jitterMs: 60, ...extra });
}

/** 20 ms block levels of the loud part of a WAV, and the longest run of near-silent blocks inside it. */
function analyse(path: string, freq: number) {
  const { samples } = readWav(path);
  const blocks: number[] = [];
  for (let i = 0; i + 960 <= samples.length; i += 960) blocks.push(rms(samples.subarray(i, i + 960)));
  const loud = blocks.map((b) => b > 1000);
  const first = loud.indexOf(true);
  const last = loud.lastIndexOf(true);
  let longestQuiet = 0;
  let run = 0;
  for (let i = first; i <= last; i++) {
    run = loud[i] ? 0 : run + 1;
    longestQuiet = Math.max(longestQuiet, run);
  }
  const body = samples.subarray(first * 960, (last + 1) * 960);
  return {
    loudBlocks: loud.filter(Boolean).length,
    longestQuietMs: longestQuiet * 20,
    toneDb: db(goertzelPower(body, freq) / Math.max(1e-9, goertzelPower(body, freq * 1.5))),
    seconds: samples.length / 48000,
  };
}

describe("runJoinClient", () => {
  test("sends a WAV in real time; the other participant's output holds it, continuously", async () => {
    const s = await startServer();
    try {
      writeWav(join(dir, "a.wav"), tone(440, 1.5));
      const opus = await loadOpusCodec();
      const listener = client(s, "room", { output: join(dir, "b-out.wav"), durationSec: 3.5, codec: opus });
      await waitFor(() => s.engine.participantCount() === 1, "listener joined");
      const t0 = performance.now();
      const a = await client(s, "room", { input: join(dir, "a.wav"), tailMs: 200, codec: opus });
      const elapsed = performance.now() - t0;
      expect(a.endReason).toBe("input_end");
      expect(a.framesSent).toBe(75);
      expect(a.participantIds).toHaveLength(1);
      // paced, not blasted: 1.5 s of audio cannot have been sent in much less than 1.5 s
      expect(elapsed).toBeGreaterThan(1400);
      const b = await listener;
      expect(b.endReason).toBe("duration");
      expect(b.framesReceived).toBe(75);
      expect(b.framesUndecodable).toBe(0);
      const an = analyse(join(dir, "b-out.wav"), 440);
      expect(an.loudBlocks).toBeGreaterThanOrEqual(70);
      expect(an.longestQuietMs).toBeLessThanOrEqual(40);
      expect(an.toneDb).toBeGreaterThan(20);
      // the output timeline runs from the first received frame to the end: longer than the tone itself
      expect(an.seconds).toBeGreaterThan(1.5);
    } finally {
      await stopServer(s);
    }
  });

  test("10 % simulated loss and adjacent swaps: output stays continuous (PLC), order restored", async () => {
    const s = await startServer();
    try {
      writeWav(join(dir, "lossy.wav"), tone(660, 2));
      const codec = createFakeCodec();
      const listener = runJoinClient({ node: s.addr, room: "r", logger: silentLogger(), codec, output: join(dir, "lossy-out.wav"), durationSec: 3.8 });
      await waitFor(() => s.engine.participantCount() === 1, "listener joined");
      const a = await client(s, "r", { input: join(dir, "lossy.wav"), simulate: { dropRate: 0.1, reorderRate: 0.1, seed: 7 }, tailMs: 200 });
      expect(a.framesDroppedSimulated).toBeGreaterThan(4);
      expect(a.framesDroppedSimulated).toBeLessThan(20);
      expect(a.framesReorderedSimulated).toBeGreaterThan(2);
      expect(a.framesSent + a.framesDroppedSimulated).toBe(100);
      const b = await listener;
      expect(b.framesReceived).toBe(a.framesSent);
      expect(b.framesLate).toBe(0); // swaps are absorbed by the jitter buffer
      expect(codec.stats.concealed).toBeGreaterThanOrEqual(a.framesDroppedSimulated);
      const an = analyse(join(dir, "lossy-out.wav"), 660);
      expect(an.longestQuietMs).toBeLessThanOrEqual(40);
      expect(an.toneDb).toBeGreaterThan(15);
    } finally {
      await stopServer(s);
    }
  });

  test("real Opus: 10 % loss is concealed by Opus PLC in the listener", async () => {
    const s = await startServer();
    try {
      writeWav(join(dir, "opus-lossy.wav"), tone(660, 2));
      const opus = await loadOpusCodec();
      const listener = client(s, "r", { output: join(dir, "opus-lossy-out.wav"), durationSec: 3.8, codec: opus });
      await waitFor(() => s.engine.participantCount() === 1, "listener joined");
      const a = await client(s, "r", { input: join(dir, "opus-lossy.wav"), simulate: { dropRate: 0.1, seed: 3 }, tailMs: 200, codec: opus });
      const b = await listener;
      expect(b.framesConcealed).toBeGreaterThanOrEqual(a.framesDroppedSimulated);
      expect(b.framesUndecodable).toBe(0);
      const an = analyse(join(dir, "opus-lossy-out.wav"), 660);
      expect(an.longestQuietMs).toBeLessThanOrEqual(40);
      expect(an.toneDb).toBeGreaterThan(15);
    } finally {
      await stopServer(s);
    }
  });

  test("reconnects when the stream drops, asking the target function again", async () => {
    const s = await startServer();
    try {
      writeWav(join(dir, "long.wav"), tone(440, 2.5));
      let asked = 0;
      const run = runJoinClient({
        node: () => {
          asked++;
          return s.addr;
        },
        room: "r",
        input: join(dir, "long.wav"),
        logger: silentLogger(),
        codec: createFakeCodec(),
        tailMs: 100,
        reconnect: { initialDelayMs: 50 },
      });
      await waitFor(() => s.engine.participantCount() === 1, "first join");
      await Bun.sleep(300);
      // server-side restart of the audio service: every stream is closed with SHUTTING_DOWN (retryable)
      await s.service.stop();
      await s.service.start();
      const r = await run;
      expect(r.reconnects).toBeGreaterThanOrEqual(1);
      expect(r.participantIds.length).toBeGreaterThanOrEqual(2);
      expect(new Set(r.participantIds).size).toBe(r.participantIds.length);
      expect(asked).toBeGreaterThanOrEqual(2);
      expect(r.framesSent).toBeGreaterThan(80);
    } finally {
      await stopServer(s);
    }
  });

  test("a draining node: a pinned client gives up at once, a re-homing one retries until accepted", async () => {
    const s = await startServer();
    try {
      s.service.setDraining(true);
      const pinned = await client(s, "r", { durationSec: 0.5, reconnect: { initialDelayMs: 100, maxAttempts: 20 } }).catch((e) => e);
      expect(pinned).toBeInstanceOf(AgoraError);
      expect((pinned as AgoraError).message).toMatch(/DRAINING/);
      setTimeout(() => s.service.setDraining(false), 400);
      let asked = 0;
      const r = await client(s, "r", {
        node: () => {
          asked++;
          return s.addr;
        },
        durationSec: 0.5,
        reconnect: { initialDelayMs: 100, maxAttempts: 20 },
      });
      expect(r.participantIds).toHaveLength(1);
      expect(asked).toBeGreaterThan(1);
    } finally {
      await stopServer(s);
    }
  });

  test("permanent and exhausted failures end the run with a typed error", async () => {
    const s = await startServer(0);
    try {
      const bad = await client(s, "not a room", { durationSec: 1 }).catch((e) => e);
      expect(bad).toBeInstanceOf(AgoraError);
      expect((bad as AgoraError).code).toBe("USAGE");
      const full = await client(s, "r", { durationSec: 1, reconnect: { maxAttempts: 2, initialDelayMs: 10 } }).catch((e) => e);
      expect(full).toBeInstanceOf(AgoraError);
      expect((full as AgoraError).message).toMatch(/giving up after 2 attempts.*CAPACITY/);
      expect(WireErrorCode.CAPACITY).toBe(3);
      const usage = await runJoinClient({ node: s.addr, room: "r", logger: silentLogger(), codec: createFakeCodec() }).catch((e) => e);
      expect((usage as AgoraError).code).toBe("USAGE");
    } finally {
      await stopServer(s);
    }
  });
});

describe("runLoadgen", () => {
  test("drives rooms x participants over one connection and measures probe latency and loss", async () => {
    const s = await startServer(1000, true);
    try {
      const report = await runLoadgen({
        node: s.addr,
        rooms: 2,
        participants: 3,
        durationSec: 2.5,
        logger: silentLogger(),
        codec: createFakeCodec(),
        probePeriodMs: 500,
        warmupSec: 0.5,
      });
      expect(JSON.parse(JSON.stringify(report))).toEqual(report);
      expect(report.totals.joined).toBe(6);
      expect(report.totals.joinErrors).toBe(0);
      expect(report.totals.sessionsLost).toBe(0);
      expect(report.perRoom.map((r) => r.room)).toEqual(["loadgen-0", "loadgen-1"]);
      for (const r of report.perRoom) {
        // ~2.5 s at 50 frames/s from each of 3 participants
        expect(r.framesSent).toBeGreaterThan(3 * 100);
        // forwarding engine: every participant hears the 2 others
        expect(r.framesReceived).toBeGreaterThan(2 * r.framesSent * 0.9);
        expect(r.lossPercent).toBe(0);
        expect(r.latencyMs.samples).toBeGreaterThanOrEqual(3);
        expect(r.latencyMs.p50!).toBeGreaterThanOrEqual(0);
        expect(r.latencyMs.p50!).toBeLessThan(500);
      }
      expect(report.latencyMs.samples).toBe(report.perRoom.reduce((n, r) => n + r.latencyMs.samples, 0));
      // the server saw one connection carrying all six streams
      expect(s.node.getConnections()).toHaveLength(1);
    } finally {
      await stopServer(s);
    }
  });

  test("an unreachable node fails with a typed error", async () => {
    const s = await startServer(0);
    try {
      const err = await runLoadgen({ node: s.addr, rooms: 1, participants: 2, durationSec: 1, logger: silentLogger(), codec: createFakeCodec() }).catch((e) => e);
      expect(err).toBeInstanceOf(AgoraError);
      expect((err as AgoraError).message).toMatch(/no participant could join.*CAPACITY/);
    } finally {
      await stopServer(s);
    }
  });

  test("summarize() percentiles", () => {
    const s = summarize(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(s).toEqual({ samples: 100, p50: 50, p90: 90, p99: 99, max: 100, mean: 50.5 });
    expect(summarize([]).p50).toBeNull();
  });
});
