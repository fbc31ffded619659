/**
 * One room's trouble must not reach another room's participants (issue 11, point 10), measured against
 * the REAL media engine (wasm mixer in its worker): an honest talker and listener in one room; in another
 * process, either ~93 participants of another room that all time out at the same instant, or a storm of
 * streams with garbage JOINs. The figure is the honest listener's largest inter-arrival gap of mixed frames
 * while the event lasts.
 *
 * This is a real-time test, so about its tolerance: the mixer sends one frame per 20 ms tick, so a gap of
 * 20 ms is perfect and 40 ms means at most one tick's frame arrived late (the next one then follows
 * immediately); the jitter buffer of a client absorbs that without an audible hole. The failures this guards
 * against were 110 ms and 620 ms holes. On a busy shared machine the baseline gap (before the event) can
 * itself exceed 40 ms when the test process is descheduled; that is not the node's doing, so the bound
 * applied is max(40 ms, the baseline gap measured just before the event, in the same run) — the event may
 * not make things worse than the machine already is, and on an idle machine that is the 40 ms of the issue.
 * Descheduling is random and the holes this guards against are systematic (they come with every event), so
 * a scenario gets up to three attempts and passes if one of them stays within the bound.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { createMediaEngine, createOpusCodec, type MediaEngine } from "../../src/audio";
import { AudioSession, PacedTimer } from "../../src/client";
import { defaultConfig } from "../../src/config/schema";
import { silentLogger } from "../../src/log";
import { FRAME_SAMPLES } from "../../src/protocol";
import { AudioRoomService, type AudioServiceLimits } from "../../src/rooms";
import { createBareClientNode, createServerNode, metricValue, tone, waitFor } from "../helpers/net-fakes";

setDefaultTimeout(90_000);

const FIXTURE = join(import.meta.dir, "fixtures", "hostile-peers.ts");
const IDLE_TIMEOUT_MS = 4_000;
const ATTEMPTS = 3;
const GAP_BOUND_MS = 40;

let engine: MediaEngine;
let frames: Uint8Array[];

beforeAll(async () => {
  const cfg = defaultConfig();
  engine = createMediaEngine({
    settings: {
      topKSpeakers: cfg.audio.top_k_speakers,
      sharedEncode: cfg.audio.shared_encode,
      bitrate: cfg.audio.bitrate,
      jitterMinMs: cfg.audio.jitter_min_ms,
      jitterMaxMs: cfg.audio.jitter_max_ms,
      maxRooms: 10,
      maxParticipants: 200,
    },
    logger: silentLogger(),
    registry: new Registry(),
    // The hang watchdog is not under test: a slow (not hung) worker on a busy machine must not be
    // restarted, which would itself be a hole in the honest audio.
    heartbeatTimeoutMs: 10_000,
  });
  await engine.start();
  // One second of a 440 Hz tone, encoded once and looped by the talker.
  const codec = await createOpusCodec();
  const enc = codec.encoder(32_000);
  const pcm = tone(440, 1);
  frames = [];
  for (let i = 0; i < 50; i++) frames.push(enc.encode(pcm.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)).slice());
  enc.destroy();
});

afterAll(async () => {
  await engine?.stop();
});

interface Honest {
  server: Libp2p;
  addr: Multiaddr;
  service: AudioRoomService;
  registry: Registry;
  arrivals: number[];
  /** largest gap between arrivals in [from, to] */
  maxGap(from: number, to: number): number;
  stop(): Promise<void>;
}

async function honestCall(limits: Partial<AudioServiceLimits>): Promise<Honest> {
  const { node: server, addr } = await createServerNode();
  const registry = new Registry();
  const service = new AudioRoomService({ libp2p: server, engine, registry, logger: silentLogger(), limits });
  await service.start();
  const talkerNode = await createBareClientNode();
  const listenerNode = await createBareClientNode();
  const talker = await AudioSession.open({ libp2p: talkerNode, target: addr, room: "honest" });
  const arrivals: number[] = [];
  const listener = await AudioSession.open({ libp2p: listenerNode, target: addr, room: "honest", onAudio: (_f, at) => arrivals.push(at) });
  let seq = 0;
  const timer = new PacedTimer(20, () => {
    talker.sendAudio({ seq, timestamp: (seq * FRAME_SAMPLES) >>> 0, payload: frames[seq % frames.length]! });
    seq++;
  });
  timer.begin();
  await waitFor(() => arrivals.length >= 50, "the honest listener to hear the talker");
  return {
    server,
    addr,
    service,
    registry,
    arrivals,
    maxGap(from, to) {
      let max = 0;
      for (let i = 1; i < arrivals.length; i++)
        if (arrivals[i]! >= from && arrivals[i - 1]! <= to) max = Math.max(max, arrivals[i]! - arrivals[i - 1]!);
      return max;
    },
    async stop() {
      timer.stop();
      await talker.leave(1000).catch(() => {});
      await listener.leave(1000).catch(() => {});
      await service.stop();
      await talkerNode.stop();
      await listenerNode.stop();
      await server.stop();
    },
  };
}

function spawnFixture(args: string[]): { proc: Bun.Subprocess<"ignore", "pipe", "inherit">; line: (want: RegExp) => Promise<string> } {
  // At the lowest CPU priority: on the real network these peers are other machines, so their own CPU use
  // must not be what starves the honest participant on a shared 2-core test machine.
  const nice = Bun.which("nice");
  const cmd = [...(nice ? [nice, "-n", "19"] : []), process.execPath, FIXTURE, ...args];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "inherit", stdin: "ignore" });
  const reader = proc.stdout.getReader();
  let buf = "";
  const line = async (want: RegExp): Promise<string> => {
    const deadline = performance.now() + 60_000;
    for (;;) {
      const hit = buf.split("\n").find((l) => want.test(l));
      if (hit) return hit;
      if (performance.now() > deadline) throw new Error(`fixture never printed ${want}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`fixture exited before printing ${want}: ${buf}`);
      buf += new TextDecoder().decode(value);
    }
  };
  return { proc, line };
}

/** Runs `scenario` until it reports a gap within its bound, at most ATTEMPTS times; returns every result. */
async function attempts(scenario: () => Promise<{ gap: number; bound: number }>): Promise<{ gap: number; bound: number }[]> {
  const results: { gap: number; bound: number }[] = [];
  for (let i = 0; i < ATTEMPTS; i++) {
    const r = await scenario();
    results.push(r);
    if (r.gap <= r.bound) break;
  }
  return results;
}

test("93 participants of another room timing out at once leave no hole in an honest participant's audio", async () => {
  const results = await attempts(idleTimeoutScenario);
  expect(results.some((r) => r.gap <= r.bound)).toBe(true);
});

test("a storm of garbage JOINs leaves no hole in an honest participant's audio", async () => {
  const results = await attempts(joinStormScenario);
  expect(results.some((r) => r.gap <= r.bound)).toBe(true);
});

async function idleTimeoutScenario(): Promise<{ gap: number; bound: number }> {
  const call = await honestCall({ idleTimeoutMs: IDLE_TIMEOUT_MS, pingIntervalMs: 500 });
  const idle = spawnFixture(["idle", call.addr.toString(), "93", "other"]);
  try {
    const ready = await idle.line(/^ready/);
    const joined = Number(ready.split(" ")[1]);
    const pingedAt = performance.now();
    const baselineFrom = performance.now();
    // Everything they sent was the PING just now: they all expire one idle timeout later, in one sweep.
    await waitFor(() => performance.now() > pingedAt + IDLE_TIMEOUT_MS - 300, "the idle timeout to approach", 10_000);
    const eventFrom = performance.now();
    const baseline = call.maxGap(baselineFrom, eventFrom);
    await idle.line(/^closed/);
    const eventTo = performance.now() + 300;
    await waitFor(() => performance.now() > eventTo, "frames after the event", 5_000);
    const gap = call.maxGap(eventFrom, eventTo);
    if (joined < 80) {
      // Not the mass event this scenario is about: the (lowest-priority) fixture could not keep enough of
      // its participants alive while joining them on a busy machine (the server had already timed the
      // others out, so the idle_timeout count is not `joined` either). The attempt does not count.
      console.log(`idle timeout: only ${joined} participants joined at once; attempt not counted`);
      return { gap: Number.POSITIVE_INFINITY, bound: Math.max(GAP_BOUND_MS, baseline) };
    }
    expect(await metricValue(call.registry, "agora_audio_stream_errors_total", { reason: "idle_timeout" })).toBe(joined);
    console.log(`idle timeout of ${joined} participants at once: honest max gap ${gap.toFixed(1)} ms (baseline ${baseline.toFixed(1)} ms)`);
    return { gap, bound: Math.max(GAP_BOUND_MS, baseline) };
  } finally {
    idle.proc.kill();
    await idle.proc.exited;
    await call.stop();
  }
}

async function joinStormScenario(): Promise<{ gap: number; bound: number }> {
  const call = await honestCall({});
  const baselineFrom = performance.now();
  await waitFor(() => performance.now() > baselineFrom + 1000, "a baseline second", 5_000);
  const eventFrom = performance.now();
  const baseline = call.maxGap(baselineFrom, eventFrom);
  const storm = spawnFixture(["storm", call.addr.toString(), "2000"]);
  try {
    const done = await storm.line(/^done/);
    const eventTo = performance.now() + 300;
    await waitFor(() => performance.now() > eventTo, "frames after the event", 5_000);
    const gap = call.maxGap(eventFrom, eventTo);
    const refused = await metricValue(call.registry, "agora_audio_net_limited_total");
    console.log(
      `garbage JOIN storm (${done}, ${refused} refused by limits): honest max gap ${gap.toFixed(1)} ms (baseline ${baseline.toFixed(1)} ms)`,
    );
    expect(refused).toBeGreaterThan(0);
    return { gap, bound: Math.max(GAP_BOUND_MS, baseline) };
  } finally {
    storm.proc.kill();
    await storm.proc.exited;
    await call.stop();
  }
}
