/**
 * Load generator: rooms × participants sessions against one node, sending pre-encoded audio in real time,
 * and measuring what comes back. Connections (`connections`):
 *  - "shared" (default): every session is one stream on ONE libp2p connection;
 *  - "per-participant": every participant is its own libp2p node (own peer id, own connection, own Noise
 *    session), as real clients are. The node accepts only 5 new connections per second from one IP
 *    (protocol.md, "Transport and framing"), so joins are paced 250 ms apart by default, and a benchmark
 *    spreads participants over several loadgen processes, each with its own loopback source address
 *    (`localAddress`, 127.0.0.x).
 *
 * What each participant sends (encoded once up front and replayed, so loadgen's own CPU stays low; one
 * timer tick sends every due frame of every participant of a send phase, and only probe listeners open their
 * mix datagrams and decode; the others count them for loss by their clear header):
 *  - participant 0 of every room with `talkers` ≥ 1, the "probe speaker": a 100 ms burst at -6 dBFS, each of
 *    its five frames a tone of its own (BURST_SYMBOL_FREQS, 1-3.4 kHz), every `probePeriodMs` (default 1 s); near-silence in between, or, with several talkers, its talker tone
 *    (so it competes for a top-K slot like the others);
 *  - participants 1 … talkers−1: a talker tone at -30 dBFS (250 + 110·k Hz; three of them summed stay under
 *    the onset threshold, so they do not mask the bursts);
 *  - everyone else: a quiet 300 Hz tone at about -50 dBFS (keeps the mixer decoding and mixing real audio
 *    without masking the bursts: even 30 of them summed stay well under the detection threshold), or with
 *    `silentMicrophones` an open but silent microphone: comfort noise at about -65 dBFS, still 50 frames/s.
 *
 * Latency method (documented in protocol.md): the first non-talker of each room (participant 1 with one
 * talker), the "probe listener", decodes its mix. A burst is timed at its first boundary located to 1 ms whose
 * both sides got through (BurstBoundaryDetector): its onset after half a period of quiet, or, when its first
 * frames were lost, concealed or faded in, the start of a later burst frame; latency = (arrival time of the
 * frame + the boundary's offset inside it) − (time that burst frame was sent). A lost frame is concealed and
 * nothing waits for it, so it is not counted as delay. Both times come from the same process clock, so no
 * clock sync is needed. This is mouth-to-ear minus capture and playout buffering: network both ways, the
 * node's jitter buffer, mixing tick alignment and the extra Opus encode/decode (its algorithmic delay appears
 * as the offset). Bursts are attributed to the latest one sent before the boundary, so latencies ≥ probePeriodMs cannot be
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
import { Capability, FRAME_MS, FRAME_SAMPLES, type OpusCodec, type OpusDecoder, SAMPLE_RATE } from "../protocol";
import { type Clock, realClock } from "./clock";
import { loadOpusCodec } from "./codec";
import { lossPercent, ReceiveLoss } from "./loss";
import { type ClientNodeOptions, createClientNode, type DialTarget, type DialTargetProvider } from "./node";
import { seededRandom } from "./random";
import { AudioSession, type AudioSessionOptions, type VoiceTransport } from "./session";
import { PacedTimer, sleep } from "./timing";

/** How loadgen's sessions reach the node (see the file comment). */
export type LoadgenConnections = "shared" | "per-participant";
export const LOADGEN_CONNECTIONS: readonly LoadgenConnections[] = ["shared", "per-participant"];

/** One room of a loadgen process, when rooms differ (a benchmark spreading one room over processes). */
export interface LoadgenRoomSpec {
  id: string;
  participants: number;
  /** talkers among them (default: the run's `talkers`); 0: no probe speaker and no probe listener here */
  talkers?: number;
}

/** Phases of a run, reported to `onPhase` (a benchmark aligns its measurement window to them). */
export type LoadgenPhase = "joined" | "measuring" | "stopped";

export interface LoadgenOptions {
  /** node multiaddr (…/p2p/<peer id>) or a function returning one */
  node: DialTargetProvider;
  rooms: number;
  /** participants per room */
  participants: number;
  /** explicit rooms; replaces rooms × participants (ids used as given) */
  roomSpecs?: LoadgenRoomSpec[];
  /** talkers per room (default 1: the probe speaker only) */
  talkers?: number;
  /** non-talkers send comfort noise (an open, silent microphone) instead of a quiet tone */
  silentMicrophones?: boolean;
  /**
   * Mark every frame with the voice-activity flag as a client with a VAD does (1.1.0 VOICE_ACTIVITY,
   * announced by every session): talkers' frames as voice, everyone else's as silence, so the mixer need
   * not decode the silent ones (protocol.md, "Voice activity"). Default off: every frame unflagged.
   */
  voiceActivity?: boolean;
  /** "shared" (default) or "per-participant" libp2p connections */
  connections?: LoadgenConnections;
  /** source IP of this process's connections (per-participant mode; a loopback 127.0.0.x on one host) */
  localAddress?: string;
  /** makes the libp2p node of each participant (per-participant mode; default createClientNode) */
  createNode?: (opts: ClientNodeOptions) => Promise<Libp2p>;
  /**
   * Send timers, each sending for its share of the rooms at its own phase of the 20 ms frame (default
   * min(rooms, 4)): one tick sends every due frame of its rooms.
   */
  sendPhases?: number;
  /** called as the run passes each phase */
  onPhase?: (phase: LoadgenPhase) => void;
  /**
   * Awaited after the joins, before the warm-up (everyone keeps sending meanwhile): a benchmark with several
   * loadgen processes starts their measurements together once all of them have joined.
   */
  whenJoined?: () => Promise<void>;
  /**
   * More AudioSession options for every session (a transport choice, capabilities), under loadgen's own:
   * new session features reach the load generator without loadgen knowing them.
   */
  sessionOptions?: Partial<Omit<AudioSessionOptions, "libp2p" | "target" | "room" | "name" | "onAudio" | "onClose" | "clock" | "signal">>;
  /** include every probe latency in the report (`latencySamplesMs`), for merging several processes */
  keepLatencySamples?: boolean;
  durationSec: number;
  logger: Logger;
  /** room ids are `${roomPrefix}-${i}` (default "loadgen") */
  roomPrefix?: string;
  /** Opus bitrate of the generated audio (default 32000) */
  bitrate?: number;
  /** pause between two JOINs, spreading the join storm (default 10 ms; per-participant connections 250 ms) */
  joinIntervalMs?: number;
  /**
   * Joins in flight at once (default unbounded; per-participant connections 2). A node accepts only 10
   * inbound connections still in their handshake (libp2p's maxIncomingPendingConnections) and resets the
   * rest, and a busy node takes long to finish handshakes: several processes ramping must stay under it.
   */
  maxPendingJoins?: number;
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
  /**
   * probes timed at a later frame of their burst (its first frames lost, concealed or faded in on the way):
   * how often loss touched a probe, which the latency figures leave out
   */
  probesTimedLater: number;
  /** mixed frames the probe listener's decoder rejected */
  framesUndecodable: number;
}

export interface LoadgenReport {
  node: string;
  rooms: number;
  participantsPerRoom: number;
  connections: LoadgenConnections;
  /** libp2p connections opened to the node (1 when shared) */
  libp2pNodes: number;
  durationSec: number;
  warmupSec: number;
  probePeriodMs: number;
  startedAt: string;
  joinMs: LatencySummary;
  totals: LoadgenCounts & { sessions: number };
  /** over all rooms' probes */
  latencyMs: LatencySummary;
  /** every probe latency (ms), with keepLatencySamples */
  latencySamplesMs?: number[];
  /**
   * Which path voice took, over sessions that were offered datagrams: times a session's own voice left
   * datagrams for the stream, and mixed frames that reached it by the stream first (the server's direction
   * on the stream, or its copies at the start of a session).
   */
  paths: { datagramSessions: number; uplinkFallbacks: number; downlinkFramesViaStream: number };
  /**
   * Loss against the wall clock over the measured part only (warm-up end to the end of sending), for the
   * sessions open at both ends: the steady state, without the join ramp.
   */
  window: { seconds: number; sessions: number; framesDue: number; framesReceived: number; lossPercent: number };
  perRoom: LoadgenRoomReport[];
}

const BURST_FRAMES = 5;
/**
 * The burst's frames each carry their own tone (continuous phase), so the listener can tell which of them a
 * piece of received audio is: 600 Hz apart, three bins of the 5 ms analysis window.
 */
export const BURST_SYMBOL_FREQS: readonly number[] = [1000, 1600, 2200, 2800, 3400];
const BURST_AMPLITUDE = 16_000;
const BACKGROUND_FREQ = 300;
const BACKGROUND_AMPLITUDE = 100;
/** -30 dBFS: voice level, yet three talkers summed (≤ 3000) stay under ONSET_RMS even in phase */
const TALKER_AMPLITUDE = 1000;
const talkerFreq = (k: number) => 250 + 110 * k;
/** comfort noise of a silent microphone: uniform ±32, RMS ≈ 18 (-65 dBFS) */
const NOISE_AMPLITUDE = 32;
/** per-participant joins: under the node's 5 new connections per second per IP */
const PER_PARTICIPANT_JOIN_INTERVAL_MS = 250;
/** per-participant joins in flight per process: a few processes together stay under the node's 10 pending handshakes */
const PER_PARTICIPANT_PENDING_JOINS = 2;
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

/** A burst boundary found by BurstBoundaryDetector: where burst frame `symbol` begins in the received audio. */
export interface BurstBoundary {
  /** the burst frame (0-based) that begins here: 0 is the onset after quiet */
  symbol: number;
  /** time of the boundary on the caller's clock (arrival time of the frame holding it + its offset there) */
  at: number;
}

/** Analysis window of the burst detector (5 ms: 200 Hz resolution for tones 600 Hz apart). */
const SYMBOL_WINDOW = 240;
/** A burst tone counts as present above this amplitude in the window (≈ the onset detector's RMS 4000). */
const SYMBOL_AMPLITUDE = 5600;
const UNKNOWN_SYMBOL = -2;
/**
 * After a hole the decoder's first output overlaps the frame before the hole (Opus's 2.5 ms MDCT overlap
 * with state from a frame that was not the one before): classified only from 5 ms in.
 */
const GAP_SETTLE_SAMPLES = 240;

/**
 * Times a probe burst by the boundaries between its frames (each carrying its own tone, BURST_SYMBOL_FREQS),
 * not only by its onset, so that a lost frame is never counted as delay. Per 1 ms block the dominant burst
 * tone in the last 5 ms is classified (or quiet); a boundary is where it changes, placed at the window's
 * middle. Counted: quiet → frame 0 after `quietBeforeMs` of quiet (the classic onset), or frame j → frame
 * j+1, whichever comes first in a burst; then nothing until the next quiet gap. Anything else (quiet →
 * frame 2: the first frames were lost, concealed or faded in by the decoder recovering from a loss; frame 1 →
 * frame 3: frame 2 was concealed) is not a boundary whose send time is known, so it is not measured. `gap()`
 * (frames missing on the listener's own leg) drops the window: a boundary is never found across a hole.
 */
export class BurstBoundaryDetector {
  private readonly window = new Float32Array(SYMBOL_WINDOW);
  private filled = 0;
  private writeAt = 0;
  /** the last block's class: a burst frame, -1 quiet, or UNKNOWN_SYMBOL right after a hole */
  private state = -1;
  private quietSamples = 0;
  private armed = false;
  private readonly quietNeeded: number;
  private readonly coeffs: Float64Array;

  constructor(quietBeforeMs: number, freqs: readonly number[] = BURST_SYMBOL_FREQS) {
    this.quietNeeded = Math.round((quietBeforeMs * SAMPLE_RATE) / 1000);
    this.coeffs = Float64Array.from(freqs, (f) => 2 * Math.cos((2 * Math.PI * f) / SAMPLE_RATE));
  }

  /**
   * Frames were lost before the next one: the window restarts after the hole and the state there is unknown
   * (the first tone after it is not a boundary), and its first 5 ms are not classified. The quiet counted
   * before the hole still arms the next burst.
   */
  gap(): void {
    this.filled = -GAP_SETTLE_SAMPLES;
    this.state = UNKNOWN_SYMBOL;
  }

  /** Feeds one decoded frame that arrived at `receivedAt`; returns the boundary counted in it, if any. */
  feed(pcm: Int16Array, receivedAt: number): BurstBoundary | undefined {
    let found: BurstBoundary | undefined;
    for (let b = 0; b + ONSET_BLOCK <= pcm.length; b += ONSET_BLOCK) {
      for (let i = b; i < b + ONSET_BLOCK; i++) {
        this.window[this.writeAt] = pcm[i]!;
        this.writeAt = (this.writeAt + 1) % SYMBOL_WINDOW;
      }
      this.filled = Math.min(SYMBOL_WINDOW, this.filled + ONSET_BLOCK);
      if (this.filled < SYMBOL_WINDOW) continue;
      const next = this.classify();
      const prev = this.state;
      this.state = next;
      if (next < 0) {
        this.quietSamples += ONSET_BLOCK;
        if (this.quietSamples >= this.quietNeeded) this.armed = true;
        continue;
      }
      this.quietSamples = 0;
      if (next === prev || !this.armed || found) continue;
      if ((prev === -1 && next === 0) || (prev >= 0 && next === prev + 1)) {
        // the window's middle: its end is b + ONSET_BLOCK in this frame
        const offset = b + ONSET_BLOCK - SYMBOL_WINDOW / 2;
        found = { symbol: next, at: receivedAt + (offset / SAMPLE_RATE) * 1000 };
        this.armed = false;
      }
    }
    return found;
  }

  /** The burst tone dominating the window, or -1 when none reaches SYMBOL_AMPLITUDE. */
  private classify(): number {
    let best = -1;
    let bestAmp = SYMBOL_AMPLITUDE;
    for (let k = 0; k < this.coeffs.length; k++) {
      const c = this.coeffs[k]!;
      let s1 = 0;
      let s2 = 0;
      for (let n = 0; n < SYMBOL_WINDOW; n++) {
        const s0 = this.window[(this.writeAt + n) % SYMBOL_WINDOW]! + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      const amp = (2 * Math.sqrt(Math.max(0, s1 * s1 + s2 * s2 - c * s1 * s2))) / SYMBOL_WINDOW;
      if (amp > bestAmp) {
        bestAmp = amp;
        best = k;
      }
    }
    return best;
  }
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
  /** pre-encoded frames replayed in a loop */
  pattern: Uint8Array[];
  isProbe: boolean;
  /** the probe speaker or a talker tone: its frames are flagged as voice (with voiceActivity) */
  talker: boolean;
  session?: AudioSession;
  /** its own libp2p node (per-participant connections) */
  node?: Libp2p;
  lost: boolean;
  seq: number;
  ts: number;
  k: number;
  rx: ReceiveLoss;
}

interface RoomState {
  id: string;
  participants: Participant[];
  /** the participant whose mix is decoded for latency probes, if the room has a probe speaker */
  listener?: Participant;
  joinErrors: number;
  joinError?: string;
  /** send times of each frame of the probe bursts, newest burst last (bounded) */
  burstSentAt: number[][];
  latencies: number[];
  unmatched: number;
  timedLater: number;
  undecodable: number;
  decoder?: OpusDecoder;
  detector: BurstBoundaryDetector;
  /** the listener's last received seq (a hole before a frame resets the detector) */
  lastSeq?: number;
}

export async function runLoadgen(opts: LoadgenOptions): Promise<LoadgenReport> {
  const specs: LoadgenRoomSpec[] = opts.roomSpecs ?? [];
  if (opts.roomSpecs) {
    if (specs.length < 1 || specs.length > 10_000) throw new AgoraError("USAGE", `roomSpecs must list 1-10000 rooms, got ${specs.length}`);
    for (const [i, r] of specs.entries())
      if (!Number.isInteger(r.participants) || r.participants < 1 || r.participants > 10_000)
        throw new AgoraError("USAGE", `roomSpecs[${i}].participants must be an integer in 1-10000, got ${r.participants}`);
  } else {
    for (const [k, v] of [
      ["rooms", opts.rooms],
      ["participants", opts.participants],
    ] as const)
      if (!Number.isInteger(v) || v < 1 || v > 10_000) throw new AgoraError("USAGE", `${k} must be an integer in 1-10000, got ${v}`);
  }
  if (opts.warmupSec !== undefined && !(opts.warmupSec >= 0)) throw new AgoraError("USAGE", `warmupSec must be ≥ 0, got ${opts.warmupSec}`);
  if (!(opts.durationSec > 0) || opts.durationSec > 86_400)
    throw new AgoraError("USAGE", `durationSec must be in (0, 86400], got ${opts.durationSec}`);
  const talkersOf = (v: number | undefined, where: string) => {
    const t = v ?? opts.talkers ?? 1;
    if (!Number.isInteger(t) || t < 0 || t > 10_000) throw new AgoraError("USAGE", `${where} must be an integer in 0-10000, got ${t}`);
    return t;
  };
  talkersOf(undefined, "talkers");
  const connections = opts.connections ?? "shared";
  if (!LOADGEN_CONNECTIONS.includes(connections))
    throw new AgoraError("USAGE", `connections must be ${LOADGEN_CONNECTIONS.join(" or ")}, got ${String(connections)}`);
  if (opts.libp2p && connections === "per-participant")
    throw new AgoraError("USAGE", "per-participant connections make their own libp2p nodes: do not pass libp2p");
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
  const joinIntervalMs = opts.joinIntervalMs ?? (connections === "per-participant" ? PER_PARTICIPANT_JOIN_INTERVAL_MS : 10);
  const maxPendingJoins =
    opts.maxPendingJoins ?? (connections === "per-participant" ? PER_PARTICIPANT_PENDING_JOINS : Number.POSITIVE_INFINITY);
  if (!(maxPendingJoins >= 1)) throw new AgoraError("USAGE", `maxPendingJoins must be ≥ 1, got ${maxPendingJoins}`);
  const codec = opts.codec ?? (await loadOpusCodec());
  const target: DialTarget = await (typeof opts.node === "function" ? opts.node() : opts.node);
  const targetAddr = typeof target === "string" ? multiaddr(target) : target;

  const roomList: { id: string; participants: number; talkers: number }[] = opts.roomSpecs
    ? specs.map((r, i) => ({ id: r.id, participants: r.participants, talkers: talkersOf(r.talkers, `roomSpecs[${i}].talkers`) }))
    : Array.from({ length: opts.rooms }, (_, r) => ({
        id: `${prefix}-${r}`,
        participants: opts.participants,
        talkers: talkersOf(undefined, "talkers"),
      }));
  const maxTalkers = Math.max(...roomList.map((r) => Math.min(r.talkers, r.participants)));

  // Pre-encoded material, each one loop long: the probe pattern (burst, then quiet or talking), the tones of
  // the other talkers, and what non-talkers send.
  const sine = (amp: number, freq: number) => (i: number) => Math.round(amp * Math.sin((2 * Math.PI * freq * i) / SAMPLE_RATE));
  // Continuous phase across the burst's frames, each at its own BURST_SYMBOL_FREQS tone.
  const burstPhase = new Float64Array(BURST_FRAMES * FRAME_SAMPLES);
  for (let i = 1; i < burstPhase.length; i++)
    burstPhase[i] = burstPhase[i - 1]! + (2 * Math.PI * BURST_SYMBOL_FREQS[Math.floor((i - 1) / FRAME_SAMPLES)]!) / SAMPLE_RATE;
  const burstOnly = (i: number) => Math.round(BURST_AMPLITUDE * Math.sin(burstPhase[i]!));
  const probeFiller = sine(TALKER_AMPLITUDE, talkerFreq(0));
  const probePattern = (talking: boolean) =>
    preEncode(codec, bitrate, periodFrames, (i) => (i < BURST_FRAMES * FRAME_SAMPLES ? burstOnly(i) : talking ? probeFiller(i) : 0));
  const burst = probePattern(false);
  const talkingBurst = maxTalkers >= 2 ? probePattern(true) : burst;
  const loopFrames = SAMPLE_RATE / FRAME_SAMPLES; // 1 s: tones of whole hertz loop seamlessly
  const talkerTones = Array.from({ length: Math.max(0, maxTalkers - 1) }, (_, k) =>
    preEncode(codec, bitrate, loopFrames, sine(TALKER_AMPLITUDE, talkerFreq(k + 1))),
  );
  const random = seededRandom(0x5eed);
  const noise = Float64Array.from({ length: loopFrames * FRAME_SAMPLES }, () => Math.round((random() * 2 - 1) * NOISE_AMPLITUDE));
  const background = opts.silentMicrophones
    ? preEncode(codec, bitrate, loopFrames, (i) => noise[i % noise.length]!)
    : preEncode(codec, bitrate, loopFrames, sine(BACKGROUND_AMPLITUDE, BACKGROUND_FREQ));

  const rooms: RoomState[] = [];
  for (const spec of roomList) {
    const room: RoomState = {
      id: spec.id,
      participants: [],
      joinErrors: 0,
      burstSentAt: [],
      latencies: [],
      unmatched: 0,
      timedLater: 0,
      undecodable: 0,
      detector: new BurstBoundaryDetector(quietBeforeMs),
    };
    for (let i = 0; i < spec.participants; i++) {
      const isProbe = i === 0 && spec.talkers >= 1;
      const pattern = isProbe ? (spec.talkers >= 2 ? talkingBurst : burst) : i < spec.talkers ? talkerTones[i - 1]! : background;
      room.participants.push({
        room,
        index: i,
        pattern,
        isProbe,
        talker: i < spec.talkers,
        lost: false,
        seq: (Math.random() * 2 ** 32) >>> 0,
        ts: (Math.random() * 2 ** 32) >>> 0,
        k: 0,
        rx: new ReceiveLoss(),
      });
    }
    if (spec.talkers >= 1)
      room.listener = room.participants[spec.talkers < spec.participants ? spec.talkers : spec.participants >= 2 ? 1 : 0];
    rooms.push(room);
  }

  const voiceActivity = opts.voiceActivity ?? false;
  const perParticipant = connections === "per-participant";
  const ownNode = !opts.libp2p && !perParticipant;
  const sharedNode = perParticipant ? undefined : (opts.libp2p ?? (await createClientNode()));
  const createNode = opts.createNode ?? createClientNode;
  let libp2pNodes = sharedNode ? 1 : 0;
  const startedAt = new Date().toISOString();
  const joinTimes: number[] = [];
  let stopping = false;
  let measuring = false;
  const warmupMs = (opts.warmupSec ?? 1) * 1000;

  // Steady-state window: frames received per participant at its start, and when it started and ended.
  const windowStart = new Map<Participant, number>();
  let windowFrom = 0;
  let windowTo = 0;
  const windowEnd = new Map<Participant, number>();
  const snapshot = (into: Map<Participant, number>) => {
    for (const r of rooms) for (const p of r.participants) if (p.session?.isOpen) into.set(p, p.rx.figures().framesReceived);
  };

  const onAudio = (p: Participant, seq: number, payload: Uint8Array, receivedAt: number) => {
    p.rx.frame(seq);
    const room = p.room;
    if (p !== room.listener || !room.decoder) return;
    const missing = room.lastSeq === undefined ? 0 : ((seq - room.lastSeq) | 0) - 1;
    room.lastSeq = seq;
    let pcm: Int16Array;
    try {
      if (missing !== 0) {
        // As a client's playout would: conceal what is missing (up to 100 ms), so the decoder's state leads
        // into this frame; the concealment is not audio that arrived, so it is not timed.
        for (let i = 0; i < Math.min(Math.max(missing, 0), 5); i++) room.decoder.decode(null);
        room.detector.gap();
      }
      pcm = room.decoder.decode(payload);
    } catch {
      room.undecodable++;
      return;
    }
    const boundary = room.detector.feed(pcm, receivedAt);
    if (!boundary || !measuring) return;
    // The send time of the burst frame that begins at this boundary, in the latest burst sent before it.
    let sentAt: number | undefined;
    for (let i = room.burstSentAt.length - 1; i >= 0; i--) {
      const frames = room.burstSentAt[i]!;
      if (frames[0]! <= boundary.at) {
        sentAt = frames[boundary.symbol];
        break;
      }
    }
    if (sentAt === undefined || boundary.at - sentAt >= periodMs) room.unmatched++;
    else {
      room.latencies.push(boundary.at - sentAt);
      if (boundary.symbol > 0) room.timedLater++;
    }
  };

  // Rooms are spread over up to 4 send phases within the 20 ms frame by default: the mixer's tick has a
  // fixed phase, and a latency measured at a single sender phase would carry one arbitrary 0-20 ms
  // alignment offset. Each phase's timer sends all of its participants' due frames in one tick.
  const phases = Math.max(1, Math.min(rooms.length, Math.round(opts.sendPhases ?? 4)));
  const phaseMembers: Participant[][] = Array.from({ length: phases }, () => []);
  for (const [r, room] of rooms.entries()) phaseMembers[r % phases]!.push(...room.participants);
  const sendTick = (phase: number) => {
    const now = clock.now();
    for (const p of phaseMembers[phase]!) {
      const s = p.session;
      if (!s?.isOpen) continue;
      const i = p.k % p.pattern.length;
      if (p.isProbe && i < BURST_FRAMES) {
        const sentAt = p.room.burstSentAt;
        if (i === 0) {
          sentAt.push([now]);
          if (sentAt.length > 8) sentAt.shift();
        } else sentAt.at(-1)?.push(now);
      }
      s.sendAudio(
        voiceActivity
          ? { seq: p.seq, timestamp: p.ts, payload: p.pattern[i]!, voice: p.talker }
          : { seq: p.seq, timestamp: p.ts, payload: p.pattern[i]! },
      );
      p.seq = (p.seq + 1) >>> 0;
      p.ts = (p.ts + FRAME_SAMPLES) >>> 0;
      p.k++;
    }
  };
  const sendTimers = Array.from({ length: phases }, (_, ph) => new PacedTimer(FRAME_MS, () => sendTick(ph), 10, clock));
  const stopSending = () => {
    for (const t of sendTimers) t.stop();
  };
  const phase = (ph: LoadgenPhase) => {
    try {
      opts.onPhase?.(ph);
    } catch (err) {
      log.warn({ phase: ph, err: errorMessage(err) }, "loadgen onPhase handler failed");
    }
  };

  const total = rooms.reduce((n, r) => n + r.participants.length, 0);
  const join = async (room: RoomState, p: Participant): Promise<void> => {
    const t0 = clock.now();
    let node = sharedNode;
    if (!node) {
      node = await createNode(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {});
      p.node = node;
      libp2pNodes++;
    }
    const s = await AudioSession.open({
      ...opts.sessionOptions,
      ...(voiceActivity ? { capabilities: (opts.sessionOptions?.capabilities ?? 0) | Capability.VOICE_ACTIVITY } : {}),
      libp2p: node,
      target: targetAddr,
      room: room.id,
      name: `loadgen-${room.id}-${p.index}`,
      protocol: opts.protocol,
      ...(opts.transport ? { transport: opts.transport } : {}),
      signal: opts.signal,
      ...(perParticipant ? {} : { maxOutboundStreams: total + 16 }),
      // Only the probe listener decodes, so only it opens its mix datagrams; everyone else counts them for
      // loss by their clear header (seq): on loopback nobody forges them, and the node still seals each one.
      ...(p === room.listener ? {} : { openDatagrams: false }),
      clock,
      onAudio: (f, at) => onAudio(p, f.seq, f.payload, at),
      onClose: (err) => {
        if (!stopping) p.rx.left(clock.now());
        if (err && !stopping) {
          p.lost = true;
          log.warn({ room: room.id, participant: p.index, err: err.message }, "loadgen session lost");
        }
      },
    });
    joinTimes.push(clock.now() - t0);
    p.rx.joined(clock.now());
    p.session = s;
    if (p === room.listener) room.decoder = codec.decoder();
  };
  const stopNode = async (node: Libp2p) => {
    try {
      await node.stop();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, "libp2p stop failed");
    }
  };
  try {
    if (sharedNode) {
      // Connect once before the joins: many streams racing to open the first connection can each start a
      // dial, and the loser's streams are reset.
      const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(10_000)]) : AbortSignal.timeout(10_000);
      try {
        await sharedNode.dial(targetAddr, { signal });
      } catch (err) {
        throw new AgoraError("P2P", `loadgen: cannot connect to ${targetAddr.toString()}: ${errorMessage(err)}`, { cause: err });
      }
    }
    const sendStart = clock.now();
    for (const [ph, t] of sendTimers.entries()) t.begin(sendStart + (ph * FRAME_MS) / phases);
    // Join everyone, staggered; each participant starts sending on its first tick after JOINED.
    const joins: Promise<void>[] = [];
    let inFlight = 0;
    let joinSettled: (() => void) | undefined;
    for (const room of rooms) {
      for (const p of room.participants) {
        while (inFlight >= maxPendingJoins) await new Promise<void>((resolve) => (joinSettled = resolve));
        if (stopping || opts.signal?.aborted) break;
        inFlight++;
        joins.push(
          join(room, p)
            .catch((err) => {
              room.joinErrors++;
              room.joinError ??= errorMessage(err);
            })
            .finally(() => {
              inFlight--;
              joinSettled?.();
              joinSettled = undefined;
            }),
        );
        if (joinIntervalMs > 0) await sleep(joinIntervalMs, opts.signal, clock);
      }
    }
    await Promise.all(joins);
    const joined = rooms.reduce((n, r) => n + r.participants.filter((p) => p.session).length, 0);
    log.info({ joined, total, connections, libp2pNodes }, "loadgen: participants joined");
    if (joined === 0) {
      const first = rooms.find((r) => r.joinError)?.joinError;
      throw new AgoraError("P2P", `loadgen: no participant could join ${targetAddr.toString()}${first ? `: ${first}` : ""}`);
    }
    phase("joined");
    if (opts.whenJoined) await opts.whenJoined();
    await sleep(Math.min(warmupMs, opts.durationSec * 1000), opts.signal, clock);
    measuring = true;
    windowFrom = clock.now();
    snapshot(windowStart);
    phase("measuring");
    await sleep(Math.max(0, opts.durationSec * 1000 - warmupMs), opts.signal, clock);
    stopSending();
    windowTo = clock.now();
    snapshot(windowEnd);
    phase("stopped");
    // Let the last mixed frames arrive before counting.
    await sleep(300, opts.signal, clock);
  } finally {
    stopping = true;
    stopSending();
    const leftAt = clock.now();
    for (const r of rooms) for (const p of r.participants) if (p.session?.isOpen) p.rx.left(leftAt);
    await Promise.allSettled(rooms.flatMap((r) => r.participants.map((p) => p.session?.leave(2_000))));
    for (const r of rooms) r.decoder?.destroy();
    await Promise.allSettled(rooms.flatMap((r) => r.participants.map((p) => (p.node ? stopNode(p.node) : undefined))));
    if (ownNode && sharedNode) await stopNode(sharedNode);
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
      probesTimedLater: r.timedLater,
      framesUndecodable: r.undecodable,
    };
  });
  const windowFigures = () => {
    const seconds = Math.max(0, windowTo - windowFrom) / 1000;
    let sessions = 0;
    let received = 0;
    for (const [p, end] of windowEnd) {
      const start = windowStart.get(p);
      if (start === undefined) continue;
      sessions++;
      received += end - start;
    }
    const framesDue = Math.floor((sessions * seconds * 1000) / FRAME_MS);
    return { seconds: round1(seconds), sessions, framesDue, framesReceived: received, lossPercent: lossPercent(framesDue, received) };
  };
  const pathFigures = () => {
    const sessions = rooms.flatMap((r) => r.participants.flatMap((p) => (p.session?.datagramsOffered ? [p.session] : [])));
    return {
      datagramSessions: sessions.length,
      uplinkFallbacks: sessions.reduce((n, s) => n + s.uplinkFallbacks, 0),
      downlinkFramesViaStream: sessions.reduce((n, s) => n + s.framesViaStream, 0),
    };
  };
  const sum = (f: (r: LoadgenRoomReport) => number) => perRoom.reduce((n, r) => n + f(r), 0);
  const framesExpected = sum((r) => r.framesExpected);
  const framesReceived = sum((r) => r.framesReceived);
  const framesDue = sum((r) => r.framesDue);
  const report: LoadgenReport = {
    node: targetAddr.toString(),
    rooms: rooms.length,
    participantsPerRoom: opts.roomSpecs ? Math.max(...roomList.map((r) => r.participants)) : opts.participants,
    connections,
    libp2pNodes,
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
    ...(opts.keepLatencySamples ? { latencySamplesMs: rooms.flatMap((r) => r.latencies.map(round1)) } : {}),
    window: windowFigures(),
    paths: pathFigures(),
    perRoom,
  };
  log.info({ totals: report.totals, latencyMs: report.latencyMs }, "loadgen finished");
  return report;
}
