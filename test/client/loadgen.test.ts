/**
 * loadgen: per-participant connections, pre-encoded frame replay, talkers and silent microphones, and
 * one send timer tick sending every due frame of its participants (on virtual time). Against an in-process
 * AudioRoomService with a forwarding fake engine and the fake μ-law codec, so sent signals can be read back.
 */
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { createOpusCodec, MediaCore } from "../../src/audio";
import {
  BURST_SYMBOL_FREQS,
  BurstBoundaryDetector,
  type ClientNodeOptions,
  createClientNode,
  type LoadgenReport,
  OnsetDetector,
  runLoadgen,
} from "../../src/client";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { AudioRoomService } from "../../src/rooms";
import { createFakeCodec, createServerNode, FakeMediaEngine, rms, waitFor } from "../helpers/net-fakes";
import { VirtualClock } from "../helpers/virtual-clock";

setDefaultTimeout(60_000);

interface Server {
  node: Libp2p;
  addr: Multiaddr;
  engine: FakeMediaEngine;
  service: AudioRoomService;
}

async function startServer(clock?: VirtualClock): Promise<Server> {
  const { node, addr } = await createServerNode();
  const engine = new FakeMediaEngine(1000, true);
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

/** μ-law payload of the fake codec back to PCM */
function pcmOf(payload: Uint8Array): Int16Array {
  return createFakeCodec().decoder().decode(payload);
}

function framesBy(engine: FakeMediaEngine): Map<string, Uint8Array[]> {
  const m = new Map<string, Uint8Array[]>();
  for (const x of engine.pushed) {
    const list = m.get(x.participant) ?? [];
    list.push(x.frame.payload);
    m.set(x.participant, list);
  }
  return m;
}

describe("loadgen connections", () => {
  test("per-participant: one libp2p node and one connection per participant, from the given source address", async () => {
    const s = await startServer();
    try {
      const made: ClientNodeOptions[] = [];
      let during: { peer: string; addr: string }[] = [];
      let maxInFlight = 0;
      const report = await runLoadgen({
        node: s.addr,
        rooms: 2,
        participants: 2,
        durationSec: 1,
        warmupSec: 0,
        joinIntervalMs: 0,
        logger: silentLogger(),
        codec: createFakeCodec(),
        connections: "per-participant",
        localAddress: "127.0.0.5",
        createNode: async (o) => {
          made.push(o);
          // joins in flight: at most the default 2 of per-participant mode (4 would start at once otherwise)
          maxInFlight = Math.max(maxInFlight, made.length - s.engine.participantCount());
          await Bun.sleep(100);
          return createClientNode(o);
        },
        onPhase: (p) => {
          if (p === "measuring")
            during = s.node.getConnections().map((c) => ({ peer: c.remotePeer.toString(), addr: c.remoteAddr.toString() }));
        },
      });
      // while the run was on: four connections, four distinct peers, all from 127.0.0.5
      expect(during).toHaveLength(4);
      expect(new Set(during.map((c) => c.peer)).size).toBe(4);
      for (const c of during) expect(c.addr).toStartWith("/ip4/127.0.0.5/tcp/");
      expect(made).toEqual(Array.from({ length: 4 }, () => ({ localAddress: "127.0.0.5" })));
      expect(maxInFlight).toBe(2);
      expect(report.connections).toBe("per-participant");
      expect(report.libp2pNodes).toBe(4);
      expect(report.totals.joined).toBe(4);
      expect(report.totals.framesSent).toBeGreaterThan(0);
      // every participant's own node is stopped at the end
      await waitFor(() => s.node.getConnections().length === 0, "loadgen connections closed", 20_000);
    } finally {
      await stopServer(s);
    }
  });

  test("shared (default): every session on one connection", async () => {
    const s = await startServer();
    try {
      let during = -1;
      const report = await runLoadgen({
        node: s.addr,
        rooms: 1,
        participants: 3,
        durationSec: 0.5,
        warmupSec: 0,
        joinIntervalMs: 0,
        logger: silentLogger(),
        codec: createFakeCodec(),
        onPhase: (p) => {
          if (p === "measuring") during = s.node.getConnections().length;
        },
      });
      expect(during).toBe(1);
      expect(report.connections).toBe("shared");
      expect(report.libp2pNodes).toBe(1);
    } finally {
      await stopServer(s);
    }
  });

  test("sessionOptions reach every AudioSession", async () => {
    const s = await startServer();
    try {
      // a 0 ms bound on dial + JOIN cannot be met: every join fails, so the run fails naming why
      const err = await runLoadgen({
        node: s.addr,
        rooms: 1,
        participants: 2,
        durationSec: 1,
        joinIntervalMs: 0,
        logger: silentLogger(),
        codec: createFakeCodec(),
        sessionOptions: { timeoutMs: 0 },
      }).catch((e) => e);
      expect(err).toBeInstanceOf(AgoraError);
      expect((err as AgoraError).message).toMatch(/no participant could join/);
      expect(s.engine.participantCount()).toBe(0);
    } finally {
      await stopServer(s);
    }
  });

  test("bad options are typed usage errors", async () => {
    const base = {
      node: "/ip4/127.0.0.1/tcp/1",
      rooms: 1,
      participants: 1,
      durationSec: 1,
      logger: silentLogger(),
      codec: createFakeCodec(),
    };
    const bad = [
      { connections: "many" as "shared" },
      { talkers: -1 },
      { roomSpecs: [{ id: "r", participants: 0 }] },
      { connections: "per-participant" as const, libp2p: {} as Libp2p },
    ];
    for (const extra of bad) {
      const err = await runLoadgen({ ...base, ...extra }).catch((e) => e);
      expect(err).toBeInstanceOf(AgoraError);
      expect((err as AgoraError).code).toBe("USAGE");
    }
  });
});

describe("loadgen sending (virtual time)", () => {
  test("one timer tick sends every participant's frame; frames are pre-encoded once and replayed; talkers and silent microphones", async () => {
    const clock = new VirtualClock();
    const s = await startServer(clock);
    const codec = createFakeCodec();
    try {
      let done = false;
      const phases: string[] = [];
      const running = runLoadgen({
        node: s.addr,
        rooms: 3,
        participants: 4,
        talkers: 2,
        silentMicrophones: true,
        sendPhases: 1,
        durationSec: 2.5,
        warmupSec: 0.5,
        joinIntervalMs: 0,
        logger: silentLogger(),
        codec,
        clock,
        onPhase: (p) => phases.push(p),
      }).finally(() => (done = true));
      running.catch(() => {});
      // "joined": every session has its JOINED (the clock has not moved, so no frame is due yet)
      await waitFor(() => done || phases.includes("joined"), "loadgen joined", 30_000);
      if (done) await running; // surfaces the failure
      expect(s.engine.participantCount()).toBe(12);
      // Everything was encoded before the first frame went out.
      const encodedAtStart = codec.stats.encoded;
      expect(encodedAtStart).toBeGreaterThan(0);
      // One send timer for all three rooms (a timer due within one frame period); the run's sleeps are longer.
      const sendTimers = () => clock.pending().filter((t) => t.ms <= 20).length;
      expect(sendTimers()).toBe(1);
      let last = new Map([...framesBy(s.engine)].map(([p, f]) => [p, f.length]));
      let steps = 0;
      while (!done) {
        if (++steps > 500) throw new Error("loadgen did not finish in 500 steps");
        const sending = sendTimers() > 0;
        await clock.advance(20);
        if (!sending) {
          await waitFor(() => done || clock.pending().length > 0, "next timer", 20_000);
          continue;
        }
        // The one tick of this step sent one frame for each of the 12 participants.
        await waitFor(
          () => {
            // the step that ends the run stops the timer before its last tick
            if (phases.includes("stopped")) return true;
            const now = framesBy(s.engine);
            return now.size === 12 && [...now].every(([p, f]) => f.length >= (last.get(p) ?? 0) + 1);
          },
          `every participant's frame of the step to ${clock.now()} ms`,
          20_000,
        );
        last = new Map([...framesBy(s.engine)].map(([p, f]) => [p, f.length]));
      }
      const report: LoadgenReport = await running;
      expect(phases).toEqual(["joined", "measuring", "stopped"]);
      expect(codec.stats.encoded).toBe(encodedAtStart);
      expect(report.totals.framesSent).toBeGreaterThan(encodedAtStart);
      expect(report.totals.joined).toBe(12);
      // the steady-state window: from the warm-up's end (0.5 s) to the end of sending (2.5 s), 12 sessions
      expect(report.window).toMatchObject({ seconds: 2, sessions: 12, framesDue: 12 * 100 });

      // Each room: the probe speaker, one more talker and two silent microphones, told apart by level.
      const frames = framesBy(s.engine);
      const room0 = s.engine.pushed.filter((x) => x.room === "loadgen-0");
      const order: string[] = [];
      for (const x of room0) if (!order.includes(x.participant)) order.push(x.participant);
      expect(order).toHaveLength(4);
      const levels = new Map(
        order.map((p) => [
          p,
          frames
            .get(p)!
            .slice(0, 50)
            .map((f) => rms(pcmOf(f))),
        ]),
      );
      // the probe speaker: bursts far above the talkers, talking between them
      const probe = [...levels.values()].find((l) => Math.max(...l) > 8000);
      expect(probe).toBeDefined();
      expect(probe!.filter((v) => v > 8000)).toHaveLength(5);
      expect(probe!.filter((v) => v > 400 && v < 1000).length).toBeGreaterThan(40);
      // the other talker: a steady -30 dBFS tone (RMS ≈ 707)
      const talkers = [...levels.values()].filter((l) => l.every((v) => v > 400 && v < 1000));
      expect(talkers).toHaveLength(1);
      // two open, silent microphones: comfort noise, never digital silence, far below the talkers
      const silent = [...levels.values()].filter((l) => l.every((v) => v > 5 && v < 60));
      expect(silent).toHaveLength(2);
      // replay: a 1 s loop (50 frames) sent again byte for byte
      for (const p of order) {
        const f = frames.get(p)!;
        expect(f.length).toBeGreaterThan(100);
        for (let k = 0; k < 50; k++) expect(f[k + 50]).toEqual(f[k]!);
      }
    } finally {
      await stopServer(s);
    }
  });

  test("voiceActivity: talkers' frames flagged voice, silent microphones' flagged silence; unflagged without it", async () => {
    const s = await startServer();
    try {
      for (const voiceActivity of [true, false]) {
        const before = s.engine.pushed.length;
        const room = `vad-${voiceActivity}`;
        const report = await runLoadgen({
          node: s.addr,
          rooms: 1,
          participants: 4,
          talkers: 2,
          roomPrefix: room,
          silentMicrophones: true,
          voiceActivity,
          durationSec: 1,
          warmupSec: 0,
          joinIntervalMs: 0,
          logger: silentLogger(),
          codec: createFakeCodec(),
        });
        expect(report.totals.joined).toBe(4);
        const pushed = s.engine.pushed.slice(before).filter((x) => x.room === `${room}-0`);
        const flags = new Map<string, Set<boolean | undefined>>();
        for (const x of pushed) flags.set(x.participant, (flags.get(x.participant) ?? new Set()).add(x.frame.voice));
        expect(flags.size).toBe(4);
        const sets = [...flags.values()].map((v) => [...v]);
        if (voiceActivity) {
          expect(sets.filter((v) => v.length === 1 && v[0] === true)).toHaveLength(2);
          expect(sets.filter((v) => v.length === 1 && v[0] === false)).toHaveLength(2);
        } else expect(sets.every((v) => v.length === 1 && v[0] === undefined)).toBe(true);
      }
    } finally {
      await stopServer(s);
    }
  });

  test("default phases: one send timer per room, up to 4", async () => {
    const clock = new VirtualClock();
    const s = await startServer(clock);
    try {
      const running = runLoadgen({
        node: s.addr,
        rooms: 3,
        participants: 1,
        durationSec: 1,
        warmupSec: 0.5,
        joinIntervalMs: 0,
        logger: silentLogger(),
        codec: createFakeCodec(),
        clock,
      });
      running.catch(() => {});
      await waitFor(() => s.engine.participantCount() === 3, "3 participants joined", 20_000);
      expect(clock.pending().filter((t) => t.ms <= 20)).toHaveLength(3);
      for (let i = 0; i < 200 && !(await Promise.race([running.then(() => true), Bun.sleep(0).then(() => false)])); i++)
        await clock.advance(20);
      await running;
    } finally {
      await stopServer(s);
    }
  });
});

describe("latency probe under loss (loadgen's burst timing, through the real mixing core)", () => {
  // The mixer's jitter buffer plays a frame one tick after it arrives; loss on either leg is concealed
  // (the speaker's leg) or skipped (the listener's leg, as loadgen decodes only what arrived). Nothing
  // waits for a lost frame, so the latency of whatever gets through stays what it is without loss.
  const PERIOD = 13; // frames: a 100 ms burst in a 260 ms period, the bench's probe period
  const BURST = BURST_SYMBOL_FREQS.length;

  /** Per received probe: latency (ms) by the burst-boundary timing and, for comparison, by the onset alone. */
  async function probe(speakerLoses: (k: number) => boolean, listenerLoses: (k: number) => boolean, frames = 1300) {
    const codec = await createOpusCodec();
    const core = await MediaCore.create();
    const room = core.createRoom({
      topK: 3,
      sharedEncode: true,
      bitrate: 32000,
      complexity: 10,
      jitterMinMs: 20,
      jitterMaxMs: 200,
      fec: false,
    });
    const speaker = room.add(1);
    const listener = room.add(2);
    // The burst, as loadgen makes it: each frame its own tone, continuous phase; silence between bursts.
    const enc = codec.encoder(32000);
    const quiet = codec.encoder(32000);
    let phase = 0;
    const burstFrame = (k: number) => {
      const pcm = new Int16Array(960);
      const f = k % PERIOD;
      if (f < BURST)
        for (let i = 0; i < 960; i++, phase += (2 * Math.PI * BURST_SYMBOL_FREQS[f]!) / 48_000)
          pcm[i] = Math.round(16_000 * Math.sin(phase));
      else phase = 0;
      return pcm;
    };
    const dec = codec.decoder();
    const boundaries = new BurstBoundaryDetector(80);
    const onsets = new OnsetDetector(80);
    const byBoundary: number[] = [];
    const byOnset: number[] = [];
    let timedLater = 0;
    let lastHeard = -1;
    for (let k = 0; k < frames; k++) {
      const now = k * 20;
      const pkt = enc.encode(burstFrame(k));
      if (!speakerLoses(k)) room.push(speaker, k, k * 960, now - 15, pkt); // sent 5 ms after the last tick
      room.push(listener, k, k * 960, now - 15, quiet.encode(new Int16Array(960)));
      const n = room.tick(now);
      let mix: Uint8Array | undefined;
      for (let i = 0; i < n; i++) {
        const o = room.output(i);
        if (o.recipients.includes(2)) mix = o.data.slice();
      }
      if (!mix || listenerLoses(k)) continue;
      if (lastHeard >= 0 && k !== lastHeard + 1) {
        for (let i = lastHeard + 1; i < k; i++) dec.decode(null); // concealed, as loadgen's listener does
        boundaries.gap();
      }
      lastHeard = k;
      const pcm = dec.decode(mix);
      const arrivedAt = now + 2; // the mix reaches the listener 2 ms after the tick
      const burstStart = (k - (k % PERIOD)) * 20 - 15; // send time of this period's first burst frame
      if (k < PERIOD * 4) continue; // settling
      const b = boundaries.feed(pcm, arrivedAt);
      if (b) {
        byBoundary.push(b.at - (burstStart + b.symbol * 20));
        if (b.symbol > 0) timedLater++;
      }
      const onset = onsets.feed(pcm);
      if (onset >= 0) byOnset.push(arrivedAt + onset / 48 - burstStart);
    }
    enc.destroy();
    quiet.destroy();
    dec.destroy();
    room.destroy();
    return { byBoundary, byOnset, timedLater };
  }

  let clean: Awaited<ReturnType<typeof probe>>;
  let reference = 0;
  beforeAll(async () => {
    clean = await probe(
      () => false,
      () => false,
    );
    reference = clean.byBoundary[0]!;
  });

  test("without loss every burst is timed at its onset, the same figure each time", () => {
    expect(clean.byBoundary.length).toBeGreaterThanOrEqual(90);
    expect(clean.timedLater).toBe(0);
    for (const l of clean.byBoundary) expect(Math.abs(l - reference)).toBeLessThanOrEqual(1);
    // the onset-only timing agrees when nothing is lost
    for (const l of clean.byOnset) expect(Math.abs(l - reference)).toBeLessThanOrEqual(2);
  });

  test("a burst's first frame lost on either leg is not counted as delay (the onset alone counts it)", async () => {
    const first = (k: number) => k >= PERIOD * 4 && k % PERIOD === 0;
    // the listener's leg: the mixed frame holding the onset (the codecs delay it by part of a frame)
    const down = await probe(
      () => false,
      (k) => k >= PERIOD * 4 && k % PERIOD === 0,
    );
    const up = await probe(first, () => false);
    for (const r of [down, up]) {
      expect(r.byBoundary.length).toBeGreaterThanOrEqual(90);
      expect(r.timedLater).toBe(r.byBoundary.length); // every burst was timed at a later frame
      for (const l of r.byBoundary) expect(Math.abs(l - reference)).toBeLessThanOrEqual(3);
      // what the onset-only probe reported for the same audio: a frame or more of "latency" per lost frame
      expect(Math.min(...r.byOnset)).toBeGreaterThanOrEqual(reference + 15);
    }
  });

  test("10 % random loss on each leg: every probe that gets through reads the clean latency", async () => {
    let seed = 99;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const lostUp = new Set<number>();
    const lostDown = new Set<number>();
    for (let k = 0; k < 1300; k++) {
      if (rnd() < 0.1) lostUp.add(k);
      if (rnd() < 0.1) lostDown.add(k);
    }
    const r = await probe(
      (k) => lostUp.has(k),
      (k) => lostDown.has(k),
    );
    expect(r.byBoundary.length).toBeGreaterThanOrEqual(80); // nearly every burst still timed
    expect(r.timedLater).toBeGreaterThan(5);
    for (const l of r.byBoundary) expect(Math.abs(l - reference)).toBeLessThanOrEqual(3);
    expect(Math.max(...r.byOnset)).toBeGreaterThanOrEqual(reference + 15); // the onset alone: frames of "delay"
  });
});
