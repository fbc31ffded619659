import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import {
  decodeWav,
  encodeWav,
  type JoinClientOptions,
  type JoinClientReport,
  loadOpusCodec,
  PacedTimer,
  PlayoutBuffer,
  readWav,
  resample,
  runJoinClient,
  runLoadgen,
  sleep,
  summarize,
  WavError,
  WavWriter,
  writeWav,
} from "../../src/client";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { AUDIO_PROTOCOL, chunkBytes, encodeMessage, MessageDecoder, WIRE_VERSION, WireErrorCode } from "../../src/protocol";
import { AudioRoomService } from "../../src/rooms";
import { createFakeCodec, createServerNode, db, FakeMediaEngine, goertzelPower, rms, tone, waitFor } from "../helpers/net-fakes";
import { VirtualClock } from "../helpers/virtual-clock";

// Timing runs on virtual time; the bound is for the real network I/O between clock steps on a busy machine.
setDefaultTimeout(60_000);

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

// ---------------------------------------------------------------------------------------------------------
// Timing logic on virtual time: every timer of the code under test runs on a VirtualClock the test moves,
// so pacing, backoff, keepalive and run length are checked exactly, however busy the machine is.

describe("PacedTimer (virtual time)", () => {
  test("runs tick n at start + n·period, and catches up after a short stall without drifting", async () => {
    const clock = new VirtualClock();
    const at: number[] = [];
    const t = new PacedTimer(10, () => at.push(clock.now()), 10, clock);
    t.begin();
    expect(at).toEqual([0]); // tick 0 at once
    await clock.advance(30);
    expect(at).toEqual([0, 10, 20, 30]);
    clock.stall(60); // the event loop was blocked from 30 to 90: ticks 4..9 are overdue
    await clock.advance(0);
    expect(at).toEqual([0, 10, 20, 30, 90, 90, 90, 90, 90, 90]); // all six due ticks, at once
    await clock.advance(10);
    expect(at.slice(10)).toEqual([100]); // back on the original schedule: no drift
    expect(t.ticks).toBe(11);
    t.stop();
  });

  test("after a long stall the schedule moves forward instead of bursting seconds of audio", async () => {
    const clock = new VirtualClock();
    let n = 0;
    const t = new PacedTimer(20, () => n++, 10, clock);
    t.begin();
    await clock.advance(40);
    expect(n).toBe(3);
    clock.stall(2_000); // 100 ticks overdue
    await clock.advance(0);
    // maxCatchUp (10) ticks, then the schedule restarts at "now": one more tick, due at once
    expect(n).toBe(3 + 10 + 1);
    await clock.advance(20);
    expect(n).toBe(15); // then one per period from the new start, not the 90 still "owed"
    await clock.advance(200);
    expect(n).toBe(25);
    t.stop();
  });

  test("a stopped timer never runs again, even if begun later", async () => {
    const clock = new VirtualClock();
    let n = 0;
    const t = new PacedTimer(20, () => n++, 10, clock);
    t.begin();
    t.stop();
    t.begin();
    await clock.advance(1_000);
    expect(n).toBe(1);
    expect(clock.pending()).toEqual([]);
  });

  test("sleep() resolves when the clock reaches it, or at once on abort", async () => {
    const clock = new VirtualClock();
    let done = false;
    void sleep(100, undefined, clock).then(() => (done = true));
    await clock.advance(99);
    expect(done).toBe(false);
    await clock.advance(1);
    expect(done).toBe(true);
    const ctl = new AbortController();
    let aborted = false;
    void sleep(1_000_000, ctl.signal, clock).then(() => (aborted = true));
    ctl.abort();
    await clock.advance(0);
    expect(aborted).toBe(true);
    expect(clock.pending()).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// runJoinClient against a real AudioRoomService (forwarding fake engine, μ-law fake codec), on virtual time

interface Server {
  node: Libp2p;
  addr: Multiaddr;
  engine: FakeMediaEngine;
  service: AudioRoomService;
}

/** `clock`: the server's token buckets run on the test's clock, so frames sent faster than real time by a
 * client on virtual time are not taken for a flood. */
async function startServer(maxParticipants = 1000, resequence = false, clock?: VirtualClock): Promise<Server> {
  const { node, addr } = await createServerNode();
  const engine = new FakeMediaEngine(maxParticipants, resequence);
  const service = new AudioRoomService({
    libp2p: node,
    engine,
    registry: new Registry(),
    logger: silentLogger(),
    ...(clock ? { now: () => clock.now() } : {}),
  });
  await service.start();
  return { node, addr, engine, service };
}

async function stopServer(s: Server): Promise<void> {
  await s.service.stop();
  await s.node.stop();
}

/** A run in progress: its live report and whether it has ended. */
interface Run {
  report: JoinClientReport;
  done: boolean;
  result: Promise<JoinClientReport>;
}

/** Starts runJoinClient (fake μ-law codec by default; the audio tests pass the real Opus one). */
function start(s: Server | Multiaddr, room: string, extra: Partial<JoinClientOptions>): Run {
  const run = {} as Run;
  run.done = false;
  run.result = runJoinClient({
    node: "addr" in s ? s.addr : s,
    room,
    logger: silentLogger(),
    codec: createFakeCodec(),
    jitterMs: 60,
    ...extra,
    live: (r) => (run.report = r as JoinClientReport),
  }).finally(() => (run.done = true));
  run.result.catch(() => {});
  return run;
}

/**
 * Advances `clock` one 20 ms frame at a time until `until()` holds. After each step it waits (real time,
 * bounded) for `settled()`, e.g. "every frame sent so far has been received": network delivery then never
 * races the virtual clock, so what the clients do per frame is exact.
 */
async function drive(clock: VirtualClock, until: () => boolean, settled: () => boolean = () => true, maxSteps = 5_000): Promise<number> {
  let steps = 0;
  while (!until()) {
    if (++steps > maxSteps) throw new Error(`drive: condition not reached in ${maxSteps} steps (${clock.now()} ms virtual)`);
    await clock.advance(20);
    await waitFor(settled, `delivery after the step to ${clock.now()} ms`, 20_000);
  }
  return steps;
}

/** Both sides joined, and the talker's first frame (sent at once on JOINED) received. */
async function joined(...runs: Run[]): Promise<void> {
  await waitFor(() => runs.every((r) => r.report?.participantIds.length === 1), "clients joined", 20_000);
  await new Promise((resolve) => setImmediate(resolve)); // their timers start right after JOINED
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
    blocks: blocks.length,
    loudBlocks: loud.filter(Boolean).length,
    longestQuietMs: longestQuiet * 20,
    toneDb: db(goertzelPower(body, freq) / Math.max(1e-9, goertzelPower(body, freq * 1.5))),
    seconds: samples.length / 48000,
  };
}

describe("runJoinClient (virtual time)", () => {
  test("sends one frame per 20 ms of clock; the listener's output holds all of it, continuously", async () => {
    const s = await startServer();
    const clock = new VirtualClock();
    try {
      writeWav(join(dir, "a.wav"), tone(440, 1.5));
      const listener = start(s, "room", { output: join(dir, "b-out.wav"), durationSec: 3.5, clock });
      const talker = start(s, "room", { input: join(dir, "a.wav"), tailMs: 200, clock });
      await joined(listener, talker);
      const delivered = () => listener.report.framesReceived === talker.report.framesSent;
      expect(talker.report.framesSent).toBe(1); // frame 0 leaves on JOINED
      await waitFor(delivered, "frame 0 delivered", 20_000);
      // paced, not blasted: after each 20 ms of clock exactly one more frame has left
      for (let k = 1; k < 75; k++) {
        await clock.advance(20);
        expect(talker.report.framesSent).toBe(k + 1);
        await waitFor(delivered, `frame ${k} delivered`, 20_000);
      }
      await drive(clock, () => talker.done);
      const a = await talker.result;
      expect(a.endReason).toBe("input_end");
      expect(a.framesSent).toBe(75);
      expect(a.framesNotSent).toBe(0);
      await drive(clock, () => listener.done);
      const b = await listener.result;
      expect(b.endReason).toBe("duration");
      expect(b.framesReceived).toBe(75);
      expect(b.framesLate + b.framesSkipped + b.framesUndecodable).toBe(0);
      // playout from 60 ms (jitter) after the first frame to the end: one 20 ms block per tick, the 75
      // frames in a row, concealment/silence only after the talker stopped
      const an = analyse(join(dir, "b-out.wav"), 440);
      expect(an.blocks).toBe((3500 - 60) / 20);
      expect(b.framesConcealed).toBe(an.blocks - 75);
      expect(an.loudBlocks).toBeGreaterThanOrEqual(75);
      expect(an.longestQuietMs).toBe(0);
      expect(an.toneDb).toBeGreaterThan(20);
    } finally {
      await stopServer(s);
    }
  });

  test("10 % simulated loss and adjacent swaps: output stays continuous (PLC), order restored", async () => {
    const s = await startServer();
    const clock = new VirtualClock();
    try {
      writeWav(join(dir, "lossy.wav"), tone(660, 2));
      const codec = createFakeCodec();
      const listener = start(s, "r", { codec, output: join(dir, "lossy-out.wav"), durationSec: 3, clock });
      const talker = start(s, "r", {
        input: join(dir, "lossy.wav"),
        simulate: { dropRate: 0.1, reorderRate: 0.1, seed: 7 },
        tailMs: 200,
        clock,
      });
      await joined(listener, talker);
      await drive(
        clock,
        () => listener.done,
        () => listener.report.framesReceived === talker.report.framesSent,
      );
      const [a, b] = [await talker.result, await listener.result];
      expect(a.framesDroppedSimulated).toBeGreaterThan(4);
      expect(a.framesDroppedSimulated).toBeLessThan(20);
      expect(a.framesReorderedSimulated).toBeGreaterThan(2);
      expect(a.framesSent + a.framesDroppedSimulated).toBe(100);
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
    const clock = new VirtualClock();
    try {
      writeWav(join(dir, "opus-lossy.wav"), tone(660, 2));
      const opus = await loadOpusCodec();
      const listener = start(s, "r", { output: join(dir, "opus-lossy-out.wav"), durationSec: 3, codec: opus, clock });
      const talker = start(s, "r", {
        input: join(dir, "opus-lossy.wav"),
        simulate: { dropRate: 0.1, seed: 3 },
        tailMs: 200,
        codec: opus,
        clock,
      });
      await joined(listener, talker);
      await drive(
        clock,
        () => listener.done,
        () => listener.report.framesReceived === talker.report.framesSent,
      );
      const [a, b] = [await talker.result, await listener.result];
      expect(a.framesDroppedSimulated).toBeGreaterThan(4);
      expect(b.framesReceived).toBe(a.framesSent);
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
    const clock = new VirtualClock();
    try {
      writeWav(join(dir, "long.wav"), tone(440, 2.5));
      let asked = 0;
      const run = start(s, "r", {
        node: () => {
          asked++;
          return s.addr;
        },
        input: join(dir, "long.wav"),
        tailMs: 100,
        reconnect: { initialDelayMs: 50 },
        clock,
      });
      await waitFor(() => run.report?.participantIds.length === 1, "first join", 20_000);
      await drive(clock, () => clock.now() >= 300);
      // server-side restart of the audio service: every stream is closed with SHUTTING_DOWN (retryable)
      await s.service.stop();
      await s.service.start();
      // While it is away the clock moves only once the client is back or waiting out a backoff (≥ 50 ms),
      // so the frames it misses are those of its backoff, not of a slow dial.
      await drive(
        clock,
        () => run.report.participantIds.length >= 2,
        () => run.report.participantIds.length >= 2 || clock.pending().some((t) => t.ms >= 50 && t.ms < 5_000),
      );
      await drive(clock, () => run.done);
      const r = await run.result;
      expect(r.endReason).toBe("input_end");
      expect(r.reconnects).toBeGreaterThanOrEqual(1);
      expect(r.participantIds.length).toBeGreaterThanOrEqual(2);
      expect(new Set(r.participantIds).size).toBe(r.participantIds.length);
      expect(asked).toBeGreaterThanOrEqual(2);
      expect(r.framesSent + r.framesNotSent).toBe(125); // every frame was due once: sent, or counted as not sent
      expect(r.framesSent).toBeGreaterThan(80);
    } finally {
      await stopServer(s);
    }
  });

  test("reconnect backoff: attempts at 0, +250, +500, +1000, +1000 ms of clock, then a typed give-up", async () => {
    const s = await startServer(0); // full: every JOIN is refused with CAPACITY (retryable)
    const clock = new VirtualClock();
    try {
      const attempts: number[] = [];
      const run = start(s, "r", {
        node: () => {
          attempts.push(clock.now());
          return s.addr;
        },
        durationSec: 60,
        reconnect: { initialDelayMs: 250, maxDelayMs: 1000, maxAttempts: 5 },
        clock,
      });
      for (let i = 1; i < 5; i++) {
        // the refusal comes over the network; then the client waits on the clock
        const backoff = await waitForTimer(clock, (ms) => ms <= 1000, `backoff timer ${i}`);
        expect(attempts).toHaveLength(i);
        await clock.advance(backoff.at - clock.now() - 1);
        expect(attempts).toHaveLength(i); // not one millisecond early
        await clock.advance(1);
        await waitFor(() => attempts.length === i + 1 || run.done, `attempt ${i + 1}`);
      }
      const err = await run.result.catch((e) => e);
      expect(err).toBeInstanceOf(AgoraError);
      expect((err as AgoraError).message).toMatch(/giving up after 5 attempts.*CAPACITY/);
      expect(attempts).toEqual([0, 250, 750, 1750, 2750]);
    } finally {
      await stopServer(s);
    }
  });

  test("keepalive: a PING every 5 s of clock; a server silent for more than 15 s is dropped and rejoined", async () => {
    const { node, addr } = await createServerNode();
    const clock = new VirtualClock();
    const seen: { joins: number; pings: number } = { joins: 0, pings: 0 };
    // A server that accepts the JOIN and then never says anything again (a dead path that stays open).
    await node.handle(AUDIO_PROTOCOL, (stream) => {
      const decoder = new MessageDecoder();
      stream.addEventListener("message", (evt) => {
        for (const m of decoder.push(chunkBytes(evt.data)).messages) {
          if (m.type === "PING") seen.pings++;
          if (m.type !== "JOIN") continue;
          seen.joins++;
          stream.send(
            encodeMessage({
              type: "JOINED",
              version: WIRE_VERSION,
              participantId: `p${seen.joins}`,
              sampleRate: 48000,
              channels: 1,
              frameSamples: 960,
              codec: 1,
              bitrate: 32000,
              serverTimeMs: Date.now(),
            }),
          );
        }
      });
    });
    const ctl = new AbortController();
    try {
      const run = start(addr, "r", {
        signal: ctl.signal,
        keepaliveMs: 5_000,
        deadAfterMs: 15_000,
        reconnect: { initialDelayMs: 100 },
        clock,
      });
      await waitFor(() => run.report?.participantIds.length === 1, "joined", 20_000);
      for (let i = 1; i <= 3; i++) {
        await clock.advance(5_000);
        await waitFor(() => seen.pings === i, `ping ${i} at ${clock.now()} ms`);
      }
      // at 15 000 ms the server has been silent for exactly 15 s: not yet dead
      expect(seen.joins).toBe(1);
      expect(run.report.reconnects).toBe(0);
      await clock.advance(5_000); // 20 000: silent for more than 15 s → dropped, rejoined at once
      await waitFor(() => seen.joins === 2 && run.report.participantIds.length === 2, "rejoined after the dead connection");
      expect(run.report.reconnects).toBe(1);
      expect(seen.pings).toBe(3); // no ping on the tick that found it dead
      ctl.abort();
      const r = await run.result;
      expect(r.endReason).toBe("aborted");
      expect(r.participantIds).toEqual(["p1", "p2"]);
    } finally {
      ctl.abort();
      await node.stop();
    }
  });

  test("the run ends exactly at its duration, or at input end + tail, on the clock", async () => {
    const s = await startServer();
    const clock = new VirtualClock();
    try {
      const timed = start(s, "r", { durationSec: 2, clock });
      writeWav(join(dir, "short.wav"), tone(440, 0.1)); // 5 frames
      const talker = start(s, "r", { input: join(dir, "short.wav"), tailMs: 300, clock });
      await joined(timed, talker);
      await clock.advance(399);
      expect(talker.done).toBe(false);
      await clock.advance(1); // frame 4 at 80, end of input at the 100 ms tick, + 300 ms tail
      await waitFor(() => talker.done, "talker finished");
      expect((await talker.result).endReason).toBe("input_end");
      await waitFor(() => timed.report.framesReceived === 5, "the 5 frames received");
      await clock.advance(1_599);
      expect(timed.done).toBe(false);
      await clock.advance(1);
      await waitFor(() => timed.done, "timed run finished");
      const r = await timed.result;
      expect(r.endReason).toBe("duration");
      expect(r.framesReceived).toBe(5);
    } finally {
      await stopServer(s);
    }
  });

  test("a draining node: a pinned client gives up at once, a re-homing one retries until accepted", async () => {
    const s = await startServer();
    const clock = new VirtualClock();
    try {
      s.service.setDraining(true);
      const pinned = await start(s, "r", { durationSec: 0.5, reconnect: { initialDelayMs: 100, maxAttempts: 20 }, clock }).result.catch(
        (e) => e,
      );
      expect(pinned).toBeInstanceOf(AgoraError);
      expect((pinned as AgoraError).message).toMatch(/DRAINING/);
      expect(clock.now()).toBe(0); // no retry at all
      let asked = 0;
      const run = start(s, "r", {
        node: () => {
          asked++;
          return s.addr;
        },
        durationSec: 0.5,
        reconnect: { initialDelayMs: 100, maxAttempts: 20 },
        clock,
      });
      await drive(clock, () => asked >= 3);
      expect(run.report.participantIds).toHaveLength(0);
      s.service.setDraining(false);
      await drive(clock, () => run.report.participantIds.length === 1);
      await drive(clock, () => run.done);
      const r = await run.result;
      expect(r.endReason).toBe("duration");
      expect(r.participantIds).toHaveLength(1);
    } finally {
      await stopServer(s);
    }
  });

  test("permanent and exhausted failures end the run with a typed error", async () => {
    const s = await startServer(0);
    try {
      const bad = await start(s, "not a room", { durationSec: 1 }).result.catch((e) => e);
      expect(bad).toBeInstanceOf(AgoraError);
      expect((bad as AgoraError).code).toBe("USAGE");
      const full = await start(s, "r", { durationSec: 1, reconnect: { maxAttempts: 2, initialDelayMs: 10 } }).result.catch((e) => e);
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

/** Waits (real time, bounded) until `clock` holds a timer whose delay matches, and returns it. */
async function waitForTimer(clock: VirtualClock, match: (ms: number) => boolean, what: string): Promise<{ at: number; ms: number }> {
  let found: { at: number; ms: number } | undefined;
  await waitFor(
    () => {
      found = clock.pending().find((t) => match(t.ms));
      return found !== undefined;
    },
    what,
    20_000,
  );
  return found!;
}

describe("runLoadgen", () => {
  test("drives rooms x participants over one connection and measures probe latency and loss (virtual time)", async () => {
    const clock = new VirtualClock();
    const s = await startServer(1000, true, clock);
    try {
      let done = false;
      const running = runLoadgen({
        node: s.addr,
        rooms: 2,
        participants: 3,
        durationSec: 2.5,
        logger: silentLogger(),
        codec: createFakeCodec(),
        probePeriodMs: 500,
        warmupSec: 0.5,
        clock,
      }).finally(() => (done = true));
      running.catch(() => {});
      // Joins are spread 10 ms apart on the clock: let each land before time moves on.
      for (let i = 1; i <= 6; i++) {
        await waitFor(() => s.engine.participantCount() === i, `participant ${i} joined`, 20_000);
        await clock.advance(10);
      }
      // Then one frame period at a time (each phase's send timer ticks once per 20 ms step), each step waiting
      // until the server has the frame every sending participant sent in it, while send timers run.
      const perParticipant = () => {
        const m = new Map<string, number>();
        for (const x of s.engine.pushed) m.set(x.participant, (m.get(x.participant) ?? 0) + 1);
        return m;
      };
      let last = perParticipant();
      await drive(
        clock,
        () => done,
        () => {
          const sending = clock.pending().some((t) => t.ms <= 20);
          const now = perParticipant();
          const ok = !sending || [...last].every(([p, n]) => (now.get(p) ?? 0) >= n + 1);
          if (ok) last = now;
          return ok;
        },
      );
      const report = await running;
      expect(JSON.parse(JSON.stringify(report))).toEqual(report);
      expect(report.totals.joined).toBe(6);
      expect(report.totals.joinErrors).toBe(0);
      expect(report.totals.sessionsLost).toBe(0);
      expect(report.perRoom.map((r) => r.room)).toEqual(["loadgen-0", "loadgen-1"]);
      for (const r of report.perRoom) {
        // 2.5 s of clock at 50 frames/s from each of 3 participants (less the ticks before each one joined)
        expect(r.framesSent).toBeGreaterThan(3 * 120);
        expect(r.framesSent).toBeLessThanOrEqual(3 * 128);
        // forwarding engine: every participant hears the 2 others
        expect(r.framesReceived).toBeGreaterThan(2 * r.framesSent * 0.9);
        expect(r.lossPercent).toBe(0);
        // bursts every 500 ms, counted after the 0.5 s warm-up
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
      const err = await runLoadgen({
        node: s.addr,
        rooms: 1,
        participants: 2,
        durationSec: 1,
        logger: silentLogger(),
        codec: createFakeCodec(),
      }).catch((e) => e);
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
