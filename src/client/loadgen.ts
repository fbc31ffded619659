/**
 * Load generator: rooms × participants sessions against one node over ONE libp2p connection (one stream
 * each), sending pre-encoded audio in real time, and measuring what comes back.
 *
 * What each participant sends (encoded once up front and replayed, so loadgen's own CPU stays low):
 *  - participant 0 of every room, the "probe speaker": a 100 ms 1 kHz burst at -6 dBFS every `probePeriodMs`
 *    (default 1 s), near-silence in between;
 *  - everyone else: a quiet 300 Hz tone at about -50 dBFS (keeps the mixer decoding and mixing real audio
 *    without masking the bursts: even 30 of them summed stay well under the detection threshold).
 *
 * Latency method (documented in protocol.md): participant 1 of each room, the "probe listener", decodes its
 * mix. When a burst onset appears after ≥ 300 ms of quiet, its position is located to 1 ms (RMS over
 * 48-sample blocks) and latency = (arrival time of the frame + onset offset inside it) − (time the burst's
 * first frame was sent). Both times come from the same process clock, so no clock sync is needed. This is
 * mouth-to-ear minus capture and playout buffering: network both ways, the node's jitter buffer, mixing
 * tick alignment and the extra Opus encode/decode (its algorithmic delay appears as the onset offset).
 * Bursts are attributed to the latest one sent before the onset, so latencies ≥ probePeriodMs cannot be
 * measured (they would alias); such onsets are discarded and counted. Probes during the first `warmupSec`
 * after the joins (jitter buffers prefilling) are not counted: the figures are steady-state.
 *
 * Loss per receiving participant is counted two ways (./loss.ts): RTP-style from sequence gaps, and against
 * the wall clock (50 mixed frames/s are due from JOINED to leave), which also shows frames the node never sent.
 */
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { FRAME_MS, FRAME_SAMPLES, type OpusCodec, type OpusDecoder, SAMPLE_RATE } from "../protocol";
import { type Clock, realClock } from "./clock";
import { loadOpusCodec } from "./codec";
import { lossPercent, ReceiveLoss } from "./loss";
import { createClientNode, type DialTarget, type DialTargetProvider } from "./node";
import { AudioSession, type VoiceTransport } from "./session";
import { PacedTimer, sleep } from "./timing";

export interface LoadgenOptions {
  /** node multiaddr (…/p2p/<peer id>) or a function returning one */
  node: DialTargetProvider;
  rooms: number;
  /** participants per room */
  participants: number;
  durationSec: number;
  logger: Logger;
  /** room ids are `${roomPrefix}-${i}` (default "loadgen") */
  roomPrefix?: string;
  /** Opus bitrate of the generated audio (default 32000) */
  bitrate?: number;
  /** pause between two JOINs, spreading the join storm (default 10 ms) */
  joinIntervalMs?: number;
  /** one latency probe burst per this period (default 1000 ms; latencies above it are not measurable) */
  probePeriodMs?: number;
  /**
   * Latency probes are ignored for this long after the last JOIN (default 1 s): the first bursts meet jitter
   * buffers still prefilling and rooms still filling up, which is start-up, not steady-state latency.
   */
  warmupSec?: number;
  /** reuse a libp2p node instead of starting one */
  libp2p?: Libp2p;
  codec?: OpusCodec;
  /** protocol id to dial (default the audio protocol; the latency bench uses an echo protocol) */
  protocol?: string;
  /** voice by UDP datagram when offered ("auto", default), required ("udp") or never ("stream") */
  transport?: VoiceTransport;
  signal?: AbortSignal;
  /** time source of the pacing, the join spread, warm-up and run length, and of the latency figures (default real) */
  clock?: Clock;
}

export interface LatencySummary {
  samples: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

/** Counters reported per room and, summed, for the whole run. */
export interface LoadgenCounts {
  joined: number;
  joinErrors: number;
  /** sessions that ended before the run did (server closed or connection lost) */
  sessionsLost: number;
  framesSent: number;
  framesReceived: number;
  /** frames the received sequence numbers account for (gaps included) */
  framesExpected: number;
  /** loss from sequence gaps: (framesExpected − framesReceived) / framesExpected, percent */
  lossPercent: number;
  /** frames due by the wall clock: 50/s per participant from its JOINED to its leave */
  framesDue: number;
  /** loss against the wall clock: (framesDue − framesReceived) / framesDue, percent */
  dueLossPercent: number;
}

export interface LoadgenRoomReport extends LoadgenCounts {
  room: string;
  participants: number;
  /** first join error message, if any */
  joinError?: string;
  latencyMs: LatencySummary;
  /** onsets that could not be attributed to a burst (latency ≥ probe period, or spurious) */
  probesUnmatched: number;
  /** mixed frames the probe listener's decoder rejected */
  framesUndecodable: number;
}

export interface LoadgenReport {
  node: string;
  rooms: number;
  participantsPerRoom: number;
  durationSec: number;
  warmupSec: number;
  probePeriodMs: number;
  startedAt: string;
  joinMs: LatencySummary;
  totals: LoadgenCounts & { sessions: number };
  /** over all rooms' probes */
  latencyMs: LatencySummary;
  perRoom: LoadgenRoomReport[];
}

const BURST_FRAMES = 5;
const BURST_FREQ = 1000;
const BURST_AMPLITUDE = 16_000;
const BACKGROUND_FREQ = 300;
const BACKGROUND_AMPLITUDE = 100;
/** 1 ms blocks; a -6 dBFS sine has RMS ≈ 11 300, the background at most a few hundred per participant */
const ONSET_BLOCK = 48;
const ONSET_RMS = 4000;
const MIN_PROBE_PERIOD_MS = 200;

export function summarize(values: number[]): LatencySummary {
  if (values.length === 0) return { samples: 0, p50: null, p90: null, p99: null, max: null, mean: null };
  const v = [...values].sort((a, b) => a - b);
  const q = (p: number) => round1(v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))]!);
  return {
    samples: v.length,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: round1(v.at(-1)!),
    mean: round1(v.reduce((a, b) => a + b, 0) / v.length),
  };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Encodes one period of a looping signal; the second pass is kept so encoder state is steady-state. */
function preEncode(codec: OpusCodec, bitrate: number, periodFrames: number, sample: (i: number) => number): Uint8Array[] {
  const enc = codec.encoder(bitrate);
  try {
    const pcm = new Int16Array(FRAME_SAMPLES);
    let out: Uint8Array[] = [];
    for (let pass = 0; pass < 2; pass++) {
      out = [];
      for (let f = 0; f < periodFrames; f++) {
        for (let i = 0; i < FRAME_SAMPLES; i++) pcm[i] = sample(f * FRAME_SAMPLES + i);
        out.push(enc.encode(pcm).slice());
      }
    }
    return out;
  } finally {
    enc.destroy();
  }
}

/**
 * Finds burst onsets in a decoded stream: at least `quietBeforeMs` of quiet (so the burst's own tail or a
 * concealment artefact is not taken for a new onset), then a 1 ms block above threshold.
 */
export class OnsetDetector {
  private quietSamples = 0;
  private readonly quietNeeded: number;
  constructor(quietBeforeMs: number) {
    this.quietNeeded = Math.round((quietBeforeMs * SAMPLE_RATE) / 1000);
  }
  /** Returns the sample offset of an onset in this frame, or -1. */
  feed(pcm: Int16Array): number {
    let found = -1;
    for (let b = 0; b + ONSET_BLOCK <= pcm.length; b += ONSET_BLOCK) {
      let s = 0;
      for (let i = b; i < b + ONSET_BLOCK; i++) s += pcm[i]! * pcm[i]!;
      const loud = Math.sqrt(s / ONSET_BLOCK) > ONSET_RMS;
      if (loud) {
        if (found < 0 && this.quietSamples >= this.quietNeeded) found = b;
        this.quietSamples = 0;
      } else this.quietSamples += ONSET_BLOCK;
    }
    return found;
  }
}

interface Participant {
  room: RoomState;
  index: number;
  session?: AudioSession;
  lost: boolean;
  seq: number;
  ts: number;
  k: number;
  rx: ReceiveLoss;
}

interface RoomState {
  id: string;
  participants: Participant[];
  joinErrors: number;
  joinError?: string;
  /** send times of probe bursts, newest last (bounded) */
  burstSentAt: number[];
  latencies: number[];
  unmatched: number;
  undecodable: number;
  decoder?: OpusDecoder;
  detector: OnsetDetector;
}

export async function runLoadgen(opts: LoadgenOptions): Promise<LoadgenReport> {
  for (const [k, v] of [
    ["rooms", opts.rooms],
    ["participants", opts.participants],
  ] as const)
    if (!Number.isInteger(v) || v < 1 || v > 10_000) throw new AgoraError("USAGE", `${k} must be an integer in 1-10000, got ${v}`);
  if (opts.warmupSec !== undefined && !(opts.warmupSec >= 0)) throw new AgoraError("USAGE", `warmupSec must be ≥ 0, got ${opts.warmupSec}`);
  if (!(opts.durationSec > 0) || opts.durationSec > 86_400)
    throw new AgoraError("USAGE", `durationSec must be in (0, 86400], got ${opts.durationSec}`);
  const log = opts.logger.child({ component: "loadgen" });
  const clock = opts.clock ?? realClock;
  const prefix = opts.roomPrefix ?? "loadgen";
  const bitrate = opts.bitrate ?? 32_000;
  if (opts.probePeriodMs !== undefined && !(opts.probePeriodMs >= MIN_PROBE_PERIOD_MS))
    throw new AgoraError("USAGE", `probePeriodMs must be ≥ ${MIN_PROBE_PERIOD_MS} (a 100 ms burst plus a gap), got ${opts.probePeriodMs}`);
  const periodFrames = Math.round((opts.probePeriodMs ?? 1000) / FRAME_MS);
  const periodMs = periodFrames * FRAME_MS;
  // Half the gap between bursts must be quiet before an onset counts.
  const quietBeforeMs = ((periodFrames - BURST_FRAMES) * FRAME_MS) / 2;
  const joinIntervalMs = opts.joinIntervalMs ?? 10;
  const codec = opts.codec ?? (await loadOpusCodec());
  const target: DialTarget = await (typeof opts.node === "function" ? opts.node() : opts.node);
  const targetAddr = typeof target === "string" ? multiaddr(target) : target;

  // Pre-encoded material: the probe pattern and the background tone, both one period long.
  const burst = preEncode(codec, bitrate, periodFrames, (i) =>
    i < BURST_FRAMES * FRAME_SAMPLES ? Math.round(BURST_AMPLITUDE * Math.sin((2 * Math.PI * BURST_FREQ * i) / SAMPLE_RATE)) : 0,
  );
  const backgroundFrames = SAMPLE_RATE / FRAME_SAMPLES; // 1 s: 300 Hz loops seamlessly
  const background = preEncode(codec, bitrate, backgroundFrames, (i) =>
    Math.round(BACKGROUND_AMPLITUDE * Math.sin((2 * Math.PI * BACKGROUND_FREQ * i) / SAMPLE_RATE)),
  );

  const rooms: RoomState[] = [];
  for (let r = 0; r < opts.rooms; r++) {
    const room: RoomState = {
      id: `${prefix}-${r}`,
      participants: [],
      joinErrors: 0,
      burstSentAt: [],
      latencies: [],
      unmatched: 0,
      undecodable: 0,
      detector: new OnsetDetector(quietBeforeMs),
    };
    for (let i = 0; i < opts.participants; i++)
      room.participants.push({
        room,
        index: i,
        lost: false,
        seq: (Math.random() * 2 ** 32) >>> 0,
        ts: (Math.random() * 2 ** 32) >>> 0,
        k: 0,
        rx: new ReceiveLoss(),
      });
    rooms.push(room);
  }
  const probeListener = (room: RoomState) => room.participants[opts.participants >= 2 ? 1 : 0]!;

  const ownNode = !opts.libp2p;
  const node = opts.libp2p ?? (await createClientNode());
  const startedAt = new Date().toISOString();
  const joinTimes: number[] = [];
  let stopping = false;
  let measuring = false;
  const warmupMs = (opts.warmupSec ?? 1) * 1000;

  const onAudio = (p: Participant, seq: number, payload: Uint8Array, receivedAt: number) => {
    p.rx.frame(seq);
    const room = p.room;
    if (p !== probeListener(room) || !room.decoder) return;
    let pcm: Int16Array;
    try {
      pcm = room.decoder.decode(payload);
    } catch {
      room.undecodable++;
      return;
    }
    const offset = room.detector.feed(pcm);
    if (offset < 0 || !measuring) return;
    const onsetAt = receivedAt + (offset / SAMPLE_RATE) * 1000;
    let sentAt: number | undefined;
    for (let i = room.burstSentAt.length - 1; i >= 0; i--)
      if (room.burstSentAt[i]! <= onsetAt) {
        sentAt = room.burstSentAt[i];
        break;
      }
    if (sentAt === undefined || onsetAt - sentAt >= periodMs) room.unmatched++;
    else room.latencies.push(onsetAt - sentAt);
  };

  // Rooms are spread over up to 4 send phases within the 20 ms frame: the mixer's tick has a fixed phase,
  // and a latency measured at a single sender phase would carry one arbitrary 0-20 ms alignment offset.
  const phases = Math.min(rooms.length, 4);
  const sendTimers = Array.from({ length: phases }, (_, ph) => new PacedTimer(FRAME_MS, () => sendTick(ph), 10, clock));
  const sendTick = (phase: number) => {
    const now = clock.now();
    for (let r = phase; r < rooms.length; r += phases) {
      const room = rooms[r]!;
      for (const p of room.participants) {
        const s = p.session;
        if (!s?.isOpen) continue;
        const isProbe = p.index === 0;
        const pattern = isProbe ? burst : background;
        const i = p.k % pattern.length;
        if (isProbe && i === 0) {
          room.burstSentAt.push(now);
          if (room.burstSentAt.length > 8) room.burstSentAt.shift();
        }
        s.sendAudio({ seq: p.seq, timestamp: p.ts, payload: pattern[i]! });
        p.seq = (p.seq + 1) >>> 0;
        p.ts = (p.ts + FRAME_SAMPLES) >>> 0;
        p.k++;
      }
    }
  };
  const stopSending = () => {
    for (const t of sendTimers) t.stop();
  };

  const total = opts.rooms * opts.participants;
  try {
    const sendStart = clock.now();
    for (const [ph, t] of sendTimers.entries()) t.begin(sendStart + (ph * FRAME_MS) / phases);
    // Join everyone, staggered; each participant starts sending on its first tick after JOINED.
    const joins: Promise<void>[] = [];
    for (const room of rooms) {
      for (const p of room.participants) {
        if (stopping || opts.signal?.aborted) break;
        const t0 = clock.now();
        joins.push(
          AudioSession.open({
            libp2p: node,
            target: targetAddr,
            room: room.id,
            name: `loadgen-${room.id}-${p.index}`,
            protocol: opts.protocol,
            ...(opts.transport ? { transport: opts.transport } : {}),
            signal: opts.signal,
            maxOutboundStreams: total + 16,
            clock,
            onAudio: (f, at) => onAudio(p, f.seq, f.payload, at),
            onClose: (err) => {
              if (!stopping) p.rx.left(clock.now());
              if (err && !stopping) {
                p.lost = true;
                log.warn({ room: room.id, participant: p.index, err: err.message }, "loadgen session lost");
              }
            },
          }).then(
            (s) => {
              joinTimes.push(clock.now() - t0);
              p.rx.joined(clock.now());
              p.session = s;
              if (p === probeListener(room)) room.decoder = codec.decoder();
            },
            (err) => {
              room.joinErrors++;
              room.joinError ??= errorMessage(err);
            },
          ),
        );
        if (joinIntervalMs > 0) await sleep(joinIntervalMs, opts.signal, clock);
      }
    }
    await Promise.all(joins);
    const joined = rooms.reduce((n, r) => n + r.participants.filter((p) => p.session).length, 0);
    log.info({ joined, total }, "loadgen: participants joined");
    if (joined === 0) {
      const first = rooms.find((r) => r.joinError)?.joinError;
      throw new AgoraError("P2P", `loadgen: no participant could join ${targetAddr.toString()}${first ? `: ${first}` : ""}`);
    }
    await sleep(Math.min(warmupMs, opts.durationSec * 1000), opts.signal, clock);
    measuring = true;
    await sleep(Math.max(0, opts.durationSec * 1000 - warmupMs), opts.signal, clock);
    stopSending();
    // Let the last mixed frames arrive before counting.
    await sleep(300, opts.signal, clock);
  } finally {
    stopping = true;
    stopSending();
    const leftAt = clock.now();
    for (const r of rooms) for (const p of r.participants) if (p.session?.isOpen) p.rx.left(leftAt);
    await Promise.allSettled(rooms.flatMap((r) => r.participants.map((p) => p.session?.leave(2_000))));
    for (const r of rooms) r.decoder?.destroy();
    if (ownNode) {
      try {
        await node.stop();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, "libp2p stop failed");
      }
    }
  }

  const perRoom: LoadgenRoomReport[] = rooms.map((r) => {
    let sent = 0;
    let received = 0;
    let expected = 0;
    let due = 0;
    for (const p of r.participants) {
      sent += p.session?.framesSent ?? 0;
      const f = p.rx.figures();
      received += f.framesReceived;
      expected += f.framesExpected;
      due += f.framesDue;
    }
    return {
      room: r.id,
      participants: r.participants.length,
      joined: r.participants.filter((p) => p.session).length,
      joinErrors: r.joinErrors,
      ...(r.joinError ? { joinError: r.joinError } : {}),
      sessionsLost: r.participants.filter((p) => p.lost).length,
      framesSent: sent,
      framesReceived: received,
      framesExpected: expected,
      lossPercent: lossPercent(expected, received),
      framesDue: due,
      dueLossPercent: lossPercent(due, received),
      latencyMs: summarize(r.latencies),
      probesUnmatched: r.unmatched,
      framesUndecodable: r.undecodable,
    };
  });
  const sum = (f: (r: LoadgenRoomReport) => number) => perRoom.reduce((n, r) => n + f(r), 0);
  const framesExpected = sum((r) => r.framesExpected);
  const framesReceived = sum((r) => r.framesReceived);
  const framesDue = sum((r) => r.framesDue);
  const report: LoadgenReport = {
    node: targetAddr.toString(),
    rooms: opts.rooms,
    participantsPerRoom: opts.participants,
    durationSec: opts.durationSec,
    warmupSec: warmupMs / 1000,
    probePeriodMs: periodMs,
    startedAt,
    joinMs: summarize(joinTimes),
    totals: {
      sessions: total,
      joined: sum((r) => r.joined),
      joinErrors: sum((r) => r.joinErrors),
      sessionsLost: sum((r) => r.sessionsLost),
      framesSent: sum((r) => r.framesSent),
      framesReceived,
      framesExpected,
      lossPercent: lossPercent(framesExpected, framesReceived),
      framesDue,
      dueLossPercent: lossPercent(framesDue, framesReceived),
    },
    latencyMs: summarize(rooms.flatMap((r) => r.latencies)),
    perRoom,
  };
  log.info({ totals: report.totals, latencyMs: report.latencyMs }, "loadgen finished");
  return report;
}
