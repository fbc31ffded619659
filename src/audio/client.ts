/**
 * Client side of `/agora/audio/1.0.0`: the `join` command (runJoinClient), the building blocks loadgen and
 * the latency bench reuse (AudioSession, PacedTimer, PlayoutBuffer), and a minimal libp2p client node.
 *
 * Timing model: audio is sent paced by an absolute clock (frame k leaves at t0 + 20·k ms; a late timer
 * sends what is due at once instead of drifting), and received audio is played out by a second absolute
 * clock behind a small jitter buffer. Every playout tick produces exactly 20 ms of output — the decoded
 * frame, Opus packet-loss concealment for a missing one, or silence for a long gap — so the output WAV is a
 * continuous timeline, like a speaker would play it, whatever the network did.
 */
import { agoraTransportStack } from "../p2p";
import { identify } from "@libp2p/identify";
import type { Libp2p, Stream } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { AgoraError, errorMessage, type ErrorCode } from "../errors";
import type { Logger } from "../log";
import type { AudioFrame } from "./types";
import { readWav, WavWriter } from "./wav";
import {
  AUDIO_PROTOCOL,
  checkDisplayName,
  checkRoomId,
  chunkBytes,
  encodeAudio,
  encodeMessage,
  errorCodeName,
  FRAME_MS,
  FRAME_SAMPLES,
  isRetryableErrorCode,
  MessageDecoder,
  OutboundQueue,
  seqDiff,
  WIRE_VERSION,
  WireErrorCode,
  type JoinedMessage,
  type WireMessage,
} from "./wire";

// ---------------------------------------------------------------------------------------------------------
// Codec contract (structurally the same as src/audio/codec.ts createOpusCodec(); restated so the network
// code and its tests can run with any implementation).

export interface OpusEncoderLike {
  /** 960 samples (20 ms, 48 kHz mono) → one Opus packet. */
  encode(pcm: Int16Array): Uint8Array;
  destroy(): void;
}
export interface OpusDecoderLike {
  /** null = packet lost → concealment (PLC); always 960 samples. */
  decode(packet: Uint8Array | null): Int16Array;
  destroy(): void;
}
export interface OpusCodecLike {
  encoder(bitrate: number): OpusEncoderLike;
  decoder(): OpusDecoderLike;
}

/** The real codec (wasm libopus), loaded lazily so network-only users never pay for it. */
export async function loadOpusCodec(): Promise<OpusCodecLike> {
  const mod = await import("./codec");
  return mod.createOpusCodec();
}

// ---------------------------------------------------------------------------------------------------------
// libp2p client node and dial target

export type DialTarget = string | Multiaddr;
/** A fixed multiaddr or a function asked again on every (re)connect, so re-homing can swap the node. */
export type DialTargetProvider = DialTarget | (() => DialTarget | Promise<DialTarget>);

/** Minimal dial-only node: tcp, noise, yamux, identify, ping. No listen address. */
export async function createClientNode(): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: [] },
    // Bun needs the p2p subsystem's transport and encrypter (tcp abort crash, noise cipher gap): see there.
    ...agoraTransportStack(),
    services: { identify: identify(), ping: ping() },
  });
}

async function resolveTarget(p: DialTargetProvider): Promise<Multiaddr> {
  const t = typeof p === "function" ? await p() : p;
  if (typeof t !== "string") return t;
  try {
    return multiaddr(t);
  } catch (err) {
    throw new AgoraError("USAGE", `invalid node multiaddr "${t}": ${errorMessage(err)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// AudioSession: one stream, one participant

/** A server refused or ended the session with an ERROR message. */
export class AudioRemoteError extends AgoraError {
  readonly wireCode: number;
  readonly retryable: boolean;
  constructor(wireCode: number, message: string) {
    super(agoraCodeFor(wireCode), `server error ${errorCodeName(wireCode)}: ${message}`);
    this.name = "AudioRemoteError";
    this.wireCode = wireCode;
    this.retryable = isRetryableErrorCode(wireCode);
  }
}

function agoraCodeFor(wireCode: number): ErrorCode {
  switch (wireCode) {
    case WireErrorCode.CAPACITY:
      return "CAPACITY";
    case WireErrorCode.DRAINING:
    case WireErrorCode.SHUTTING_DOWN:
      return "SHUTTING_DOWN";
    case WireErrorCode.BAD_ROOM:
      return "BAD_REQUEST";
    case WireErrorCode.UNSUPPORTED_VERSION:
    case WireErrorCode.MALFORMED:
    case WireErrorCode.UNEXPECTED_MESSAGE:
      return "WIRE_PROTOCOL";
    default:
      return "P2P";
  }
}

export interface AudioSessionOptions {
  libp2p: Libp2p;
  target: DialTarget;
  room: string;
  name?: string;
  /** defaults to AUDIO_PROTOCOL; the latency bench points it at an echo protocol */
  protocol?: string;
  /** bound on dial + protocol negotiation + JOIN/JOINED (default 10 s) */
  timeoutMs?: number;
  /** outbound audio frames held while the connection cannot keep up before the oldest is dropped */
  sendQueueFrames?: number;
  /** called for every received AUDIO; `payload` is owned by the callee */
  onAudio?: (frame: AudioFrame, receivedAt: number) => void;
  /** called once when the session ends; `error` unset after a clean leave() */
  onClose?: (error: AgoraError | undefined) => void;
  signal?: AbortSignal;
  /** many sessions over one connection (loadgen) need more than libp2p's default 64 outbound streams */
  maxOutboundStreams?: number;
}

export class AudioSession {
  readonly joined: JoinedMessage;
  private readonly queue: OutboundQueue;
  private closedWith: AgoraError | undefined | null = null; // null = open
  private pingNonce = 0;
  private readonly pings = new Map<number, number>();
  /** performance.now() of the last message from the server */
  lastRxAt: number;
  /** smoothed round-trip time from PING/PONG, ms */
  rttMs: number | undefined;
  framesSent = 0;
  framesReceived = 0;

  private constructor(
    private readonly stream: Stream,
    joined: JoinedMessage,
    private readonly opts: AudioSessionOptions,
    /** the handshake's decoder: bytes after JOINED may already be buffered in it */
    private readonly decoder: MessageDecoder,
  ) {
    this.joined = joined;
    this.lastRxAt = performance.now();
    this.queue = new OutboundQueue(stream, opts.sendQueueFrames ?? 10);
  }

  get participantId(): string {
    return this.joined.participantId;
  }

  get isOpen(): boolean {
    return this.closedWith === null;
  }

  /** Dials, negotiates the protocol, JOINs and waits for JOINED; throws AudioRemoteError on ERROR. */
  static async open(opts: AudioSessionOptions): Promise<AudioSession> {
    const roomErr = checkRoomId(opts.room);
    if (roomErr) throw new AgoraError("USAGE", roomErr, { where: "room" });
    const nameErr = checkDisplayName(opts.name ?? "");
    if (nameErr) throw new AgoraError("USAGE", nameErr, { where: "name" });
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    const target = typeof opts.target === "string" ? multiaddr(opts.target) : opts.target;
    let stream: Stream;
    try {
      stream = await opts.libp2p.dialProtocol(target, opts.protocol ?? AUDIO_PROTOCOL, {
        signal,
        maxOutboundStreams: opts.maxOutboundStreams,
      });
    } catch (err) {
      throw new AgoraError("P2P", `cannot open ${opts.protocol ?? AUDIO_PROTOCOL} to ${target.toString()}: ${errorMessage(err)}`, { cause: err });
    }
    const decoder = new MessageDecoder();
    const early: WireMessage[] = [];
    let settled = false;
    let resolveResult: (r: JoinedMessage | AgoraError) => void = () => {};
    const result = new Promise<JoinedMessage | AgoraError>((resolve) => (resolveResult = resolve));
    const settle = (r: JoinedMessage | AgoraError) => {
      if (settled) return;
      settled = true;
      resolveResult(r);
    };
    const onMessage = (evt: { data: { subarray(): Uint8Array } }) => {
      const { messages, error } = decoder.push(chunkBytes(evt.data));
      for (const m of messages) {
        // Anything after JOINED (AUDIO in the same chunk, even an ERROR) is replayed once attached.
        if (settled) early.push(m);
        else if (m.type === "JOINED") settle(m);
        else if (m.type === "ERROR") settle(new AudioRemoteError(m.code, m.message));
        else settle(new AgoraError("WIRE_PROTOCOL", `expected JOINED or ERROR, got ${m.type}`));
      }
      if (error) {
        if (settled) early.push({ type: "ERROR", code: WireErrorCode.MALFORMED, message: error.message });
        else settle(error);
      }
    };
    const onClose = (evt: { error?: Error }) =>
      settle(new AgoraError("P2P", `stream closed before JOINED${evt.error ? `: ${errorMessage(evt.error)}` : ""}`));
    const onAbort = () =>
      settle(opts.signal?.aborted ? new AgoraError("P2P", "join aborted") : new AgoraError("P2P", `no JOINED within ${timeoutMs} ms`));
    stream.addEventListener("message", onMessage);
    stream.addEventListener("close", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      stream.send(encodeMessage({ type: "JOIN", version: WIRE_VERSION, room: opts.room, name: opts.name ?? "" }));
    } catch (err) {
      settle(new AgoraError("P2P", `cannot send JOIN: ${errorMessage(err)}`));
    }
    const r = await result;
    stream.removeEventListener("message", onMessage);
    stream.removeEventListener("close", onClose);
    signal.removeEventListener("abort", onAbort);
    if (r instanceof AgoraError) {
      stream.abort(r);
      throw r;
    }
    const session = new AudioSession(stream, r, opts, decoder);
    session.attach(early);
    return session;
  }

  private attach(early: WireMessage[]): void {
    this.stream.addEventListener("message", (evt) => {
      const { messages, error } = this.decoder.push(chunkBytes(evt.data));
      for (const m of messages) this.onMessage(m);
      if (error) this.finish(error, true);
    });
    this.stream.addEventListener("close", (evt) =>
      this.finish(new AgoraError("P2P", `audio stream closed by ${evt.local ? "us" : "the server"}${evt.error ? `: ${errorMessage(evt.error)}` : ""}`), false),
    );
    this.stream.addEventListener("remoteCloseWrite", () => this.finish(new AgoraError("P2P", "server closed the audio stream"), true));
    for (const m of early) this.onMessage(m);
    // The stream may have ended between JOINED and now (no listener saw it).
    if (this.isOpen && this.stream.status !== "open") this.finish(new AgoraError("P2P", `audio stream ${this.stream.status} right after JOINED`), false);
  }

  private onMessage(m: WireMessage): void {
    const now = performance.now();
    this.lastRxAt = now;
    switch (m.type) {
      case "AUDIO":
        this.framesReceived++;
        this.opts.onAudio?.({ seq: m.seq, timestamp: m.timestamp, payload: m.payload }, now);
        return;
      case "PONG": {
        const sentAt = this.pings.get(m.nonce);
        if (sentAt !== undefined) {
          this.pings.delete(m.nonce);
          const rtt = now - sentAt;
          this.rttMs = this.rttMs === undefined ? rtt : this.rttMs * 0.8 + rtt * 0.2;
        }
        return;
      }
      case "PING":
        this.queue.send(encodeMessage({ type: "PONG", nonce: m.nonce }), false);
        return;
      case "ERROR":
        this.finish(new AudioRemoteError(m.code, m.message), true);
        return;
      default:
        this.finish(new AgoraError("WIRE_PROTOCOL", `unexpected ${m.type} from server`), true);
    }
  }

  /** Queues one frame; false once the session is closed. */
  sendAudio(frame: AudioFrame): boolean {
    if (!this.isOpen) return false;
    const ok = this.queue.send(encodeAudio(frame), true);
    if (ok) this.framesSent++;
    return ok;
  }

  /** Keepalive and RTT probe. */
  ping(): void {
    if (!this.isOpen) return;
    const nonce = (this.pingNonce = (this.pingNonce + 1) >>> 0);
    this.pings.set(nonce, performance.now());
    if (this.pings.size > 16) this.pings.delete(this.pings.keys().next().value!);
    this.queue.send(encodeMessage({ type: "PING", nonce }), false);
  }

  /** Sends LEAVE and closes; bounded by `timeoutMs` (default 2 s), after which the stream is reset. */
  async leave(timeoutMs = 2_000): Promise<void> {
    if (!this.isOpen) return;
    this.closedWith = undefined;
    this.queue.close();
    try {
      this.stream.send(encodeMessage({ type: "LEAVE" }));
      await this.stream.close({ signal: AbortSignal.timeout(timeoutMs) });
    } catch {
      /* bounded: fall through to abort */
    }
    if (this.stream.status !== "closed") {
      // Wait (bounded) for the server's close so it sees LEAVE rather than a reset.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.stream.addEventListener("close", () => (clearTimeout(t), resolve()), { once: true });
      });
      if ((this.stream.status as string) !== "closed") this.stream.abort(new AgoraError("P2P", "leave timed out"));
    }
    this.opts.onClose?.(undefined);
  }

  /** Drops the session without LEAVE (used when the connection is already known dead). */
  abort(reason: string): void {
    this.finish(new AgoraError("P2P", reason), true);
  }

  private finish(error: AgoraError, abortStream: boolean): void {
    if (!this.isOpen) return;
    this.closedWith = error;
    this.queue.close();
    if (abortStream && this.stream.status !== "closed") this.stream.abort(error);
    this.opts.onClose?.(error);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Timing

/**
 * Calls `onTick(n)` at start + n·period (performance.now() clock). A late wake-up runs every due tick at
 * once (up to `maxCatchUp`), so the average rate never drifts; after a longer stall (suspend, GC) the
 * schedule is moved forward instead of bursting seconds of audio.
 */
export class PacedTimer {
  private n = 0;
  private start = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running = false;
  private stopped = false;

  constructor(
    private readonly periodMs: number,
    private readonly onTick: (n: number) => void,
    private readonly maxCatchUp = 10,
  ) {}

  get ticks(): number {
    return this.n;
  }

  begin(at = performance.now()): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.start = at;
    this.loop();
  }

  /** Final: a stopped timer never starts again (late events must not revive it). */
  stop(): void {
    this.running = false;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private readonly loop = (): void => {
    if (!this.running) return;
    const now = performance.now();
    let ran = 0;
    while (this.running && this.start + this.n * this.periodMs <= now && ran < this.maxCatchUp) {
      this.onTick(this.n++);
      ran++;
    }
    if (!this.running) return;
    if (ran === this.maxCatchUp && this.start + this.n * this.periodMs <= now) this.start = now - this.n * this.periodMs;
    this.timer = setTimeout(this.loop, Math.max(0, this.start + this.n * this.periodMs - performance.now()));
  };
}

/**
 * Receive-side jitter buffer keyed by sequence number. `pop()` is called once per playout tick and returns
 * the next frame, null when it is missing (→ PLC), or undefined before the first frame. Latency is bounded:
 * when the buffer holds more than `maxFrames` (a burst after a stall), it skips ahead to `targetFrames`.
 */
export class PlayoutBuffer {
  private readonly frames = new Map<number, Uint8Array>();
  private next: number | undefined;
  private highest: number | undefined;
  private lateRun = 0;
  late = 0;
  duplicates = 0;
  skipped = 0;

  constructor(
    private readonly targetFrames: number,
    private readonly maxFrames: number,
  ) {}

  get started(): boolean {
    return this.next !== undefined;
  }

  get depth(): number {
    if (this.next === undefined || this.highest === undefined) return 0;
    return Math.max(0, seqDiff(this.highest, this.next) + 1);
  }

  push(seq: number, payload: Uint8Array): void {
    seq >>>= 0;
    if (this.next === undefined) this.next = seq;
    const d = seqDiff(seq, this.next);
    if (d < 0) {
      this.late++;
      // A numbering that went backwards for good (server restarted its counter) would otherwise be
      // dropped forever: after 10 consecutive late frames, follow it.
      if (++this.lateRun <= 10) return;
      this.reset();
      this.next = seq;
    }
    this.lateRun = 0;
    if (d > this.maxFrames * 8) {
      // The numbering jumped (new server stream): restart on it rather than waiting for the gap.
      this.reset();
      this.next = seq;
    }
    if (this.frames.has(seq)) {
      this.duplicates++;
      return;
    }
    this.frames.set(seq, payload);
    if (this.highest === undefined || seqDiff(seq, this.highest) > 0) this.highest = seq;
    if (this.depth > this.maxFrames) {
      const skip = this.depth - this.targetFrames;
      for (let i = 0; i < skip; i++) {
        if (this.frames.delete(this.next!)) this.skipped++;
        this.next = (this.next! + 1) >>> 0;
      }
    }
  }

  pop(): Uint8Array | null | undefined {
    if (this.next === undefined) return undefined;
    const seq = this.next;
    const p = this.frames.get(seq);
    if (p) this.frames.delete(seq);
    this.next = (seq + 1) >>> 0;
    return p ?? null;
  }

  reset(): void {
    this.frames.clear();
    this.next = undefined;
    this.highest = undefined;
    this.lateRun = 0;
  }
}

/** Deterministic PRNG (mulberry32) so simulated loss is reproducible in tests. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------------------
// runJoinClient

export interface SimulateOptions {
  /** fraction of frames never sent (0..1) */
  dropRate?: number;
  /** fraction of frames sent after their successor (adjacent swap, 0..1) */
  reorderRate?: number;
  seed?: number;
}

export interface ReconnectOptions {
  /** consecutive failed attempts before giving up (default 10) */
  maxAttempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export interface JoinClientOptions {
  /** node multiaddr (…/p2p/<peer id>), or a function returning one, asked again on every reconnect */
  node: DialTargetProvider;
  room: string;
  name?: string;
  /** WAV to send (any rate/channels of 16-bit PCM; converted to 48 kHz mono); none = listen only */
  input?: string;
  /** WAV to write what is heard (48 kHz mono 16-bit), written continuously */
  output?: string;
  /** stop after this long; default: end of input + tail, or until `signal` aborts */
  durationSec?: number;
  logger: Logger;
  /** uplink bitrate; default: the server's suggestion from JOINED */
  bitrate?: number;
  /** keep receiving this long after the input ends (default 1000 ms) */
  tailMs?: number;
  /** playout delay behind the first received frame (default 60 ms) */
  jitterMs?: number;
  simulate?: SimulateOptions;
  reconnect?: ReconnectOptions;
  /** PING interval: keeps a silent client alive and measures RTT (default 5000 ms) */
  keepaliveMs?: number;
  /** no data from the server for this long → connection considered dead, reconnect (default 15 000 ms) */
  deadAfterMs?: number;
  signal?: AbortSignal;
  /** reuse this libp2p node instead of starting (and stopping) a private one */
  libp2p?: Libp2p;
  /** codec implementation; default: wasm libopus from ./codec */
  codec?: OpusCodecLike;
}

export interface JoinClientReport {
  room: string;
  /** one per successful JOIN (reconnects add more) */
  participantIds: string[];
  endReason: "input_end" | "duration" | "aborted";
  inputSeconds: number;
  outputSeconds: number;
  framesSent: number;
  /** not sent because of `simulate.dropRate` */
  framesDroppedSimulated: number;
  /** sent after their successor because of `simulate.reorderRate` */
  framesReorderedSimulated: number;
  /** due while disconnected (reconnecting) */
  framesNotSent: number;
  framesReceived: number;
  /** playout ticks with no frame: concealed by PLC, or silence in long gaps */
  framesConcealed: number;
  framesLate: number;
  framesSkipped: number;
  /** received but rejected by the decoder (concealed instead) */
  framesUndecodable: number;
  reconnects: number;
  rttMs?: number;
}

const LONG_GAP_FRAMES = 5; // beyond 100 ms of loss, Opus PLC has faded out anyway: write silence

export async function runJoinClient(opts: JoinClientOptions): Promise<JoinClientReport> {
  const log = opts.logger.child({ component: "join", room: opts.room });
  const tailMs = opts.tailMs ?? 1000;
  const jitterFrames = Math.max(1, Math.round((opts.jitterMs ?? 60) / FRAME_MS));
  const keepaliveMs = opts.keepaliveMs ?? 5000;
  const deadAfterMs = opts.deadAfterMs ?? 15_000;
  const reconnect = { maxAttempts: 10, initialDelayMs: 250, maxDelayMs: 5000, ...opts.reconnect };
  if (opts.durationSec !== undefined && !(opts.durationSec > 0)) throw new AgoraError("USAGE", `durationSec must be > 0, got ${opts.durationSec}`);
  const roomErr = checkRoomId(opts.room);
  if (roomErr) throw new AgoraError("USAGE", roomErr, { where: "room" });
  if (!opts.input && opts.durationSec === undefined && !opts.signal)
    throw new AgoraError("USAGE", "runJoinClient needs an input, a duration or an abort signal to know when to stop");

  const input = opts.input ? readWav(opts.input).samples : undefined;
  const totalFrames = input ? Math.ceil(input.length / FRAME_SAMPLES) : 0;
  const codec = opts.codec ?? (await loadOpusCodec());
  const output = opts.output ? WavWriter.open(opts.output) : undefined;
  const ownNode = !opts.libp2p;
  const node = opts.libp2p ?? (await createClientNode());

  const rand = seededRandom(opts.simulate?.seed ?? 0x5eed);
  const dropRate = opts.simulate?.dropRate ?? 0;
  const reorderRate = opts.simulate?.reorderRate ?? 0;

  const report: JoinClientReport = {
    room: opts.room,
    participantIds: [],
    endReason: "aborted",
    inputSeconds: input ? input.length / 48_000 : 0,
    outputSeconds: 0,
    framesSent: 0,
    framesDroppedSimulated: 0,
    framesReorderedSimulated: 0,
    framesNotSent: 0,
    framesReceived: 0,
    framesConcealed: 0,
    framesLate: 0,
    framesSkipped: 0,
    framesUndecodable: 0,
    reconnects: 0,
  };

  let session: AudioSession | undefined;
  let stopping = false;
  let fatal: AgoraError | undefined;
  let encoder: OpusEncoderLike | undefined;
  const decoder = codec.decoder();
  const playout = new PlayoutBuffer(jitterFrames, jitterFrames + 10);
  let missRun = 0;
  const silence = new Int16Array(FRAME_SAMPLES);

  // Aborted when the run ends, so a dial or backoff in progress does not hold up the shutdown.
  const stopCtl = new AbortController();
  const runSignal = opts.signal ? AbortSignal.any([opts.signal, stopCtl.signal]) : stopCtl.signal;
  let finishRun: (reason: JoinClientReport["endReason"]) => void = () => {};
  const finished = new Promise<JoinClientReport["endReason"]>((resolve) => {
    finishRun = (r) => {
      if (!stopping) {
        stopping = true;
        stopCtl.abort();
        resolve(r);
      }
    };
  });
  const onAbort = () => finishRun("aborted");
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) finishRun("aborted");

  // --- playout: one 20 ms output frame per tick, whatever arrived ---
  const playoutTimer = new PacedTimer(FRAME_MS, () => {
    const p = playout.pop();
    if (p === undefined) return;
    let pcm: Int16Array | undefined;
    if (p) {
      try {
        pcm = decoder.decode(p);
        missRun = 0;
      } catch (err) {
        // A packet the decoder rejects (corrupt, not 20 ms) is treated as lost: conceal, keep playing.
        report.framesUndecodable++;
        if (report.framesUndecodable === 1) log.warn({ err: errorMessage(err) }, "undecodable audio frame (concealed)");
      }
    }
    if (!pcm) {
      report.framesConcealed++;
      missRun++;
      pcm = silence;
      if (missRun <= LONG_GAP_FRAMES) {
        try {
          pcm = decoder.decode(null);
        } catch {
          /* PLC unavailable: silence keeps the timeline */
        }
      }
    }
    try {
      output?.write(pcm);
    } catch (err) {
      // Disk full, file removed…: the run cannot do what it was asked; end it with the error.
      fatal ??= err instanceof AgoraError ? err : new AgoraError("USAGE", errorMessage(err));
      playoutTimer.stop();
      finishRun("aborted");
      return;
    }
    report.outputSeconds += FRAME_MS / 1000;
  });

  const onAudio = (frame: AudioFrame, receivedAt: number) => {
    if (stopping) return;
    report.framesReceived++;
    playout.push(frame.seq, frame.payload);
    // The playout clock starts jitterMs after the very first frame and then never stops, so reconnect
    // gaps show up as concealment/silence in the output rather than as a shorter file.
    playoutTimer.begin(receivedAt + jitterFrames * FRAME_MS);
  };

  // --- connection management with reconnect ---
  let connectLoop: Promise<void> = Promise.resolve();
  let onSessionLost: () => void = () => {};
  const connect = async (): Promise<void> => {
    let attempt = 0;
    let delay = reconnect.initialDelayMs;
    while (!stopping) {
      try {
        const target = await resolveTarget(opts.node);
        const s = await AudioSession.open({
          libp2p: node,
          target,
          room: opts.room,
          name: opts.name,
          onAudio,
          signal: runSignal,
          onClose: (err) => {
            if (err && !stopping) {
              log.warn({ err: err.message }, "audio session lost");
              if (err instanceof AudioRemoteError && !err.retryable) fatal = err;
              onSessionLost();
            }
          },
        });
        session = s;
        playout.reset(); // the new stream has its own sequence numbering
        report.participantIds.push(s.participantId);
        if (!encoder) encoder = codec.encoder(opts.bitrate ?? s.joined.bitrate);
        log.info({ participant: s.participantId, target: target.toString() }, "joined");
        return;
      } catch (err) {
        if (stopping) return;
        if (err instanceof AudioRemoteError && !err.retryable) throw err;
        // A draining node will not take us back; only a target chosen anew (discovery) can help.
        if (err instanceof AudioRemoteError && err.wireCode === WireErrorCode.DRAINING && typeof opts.node !== "function") throw err;
        if (err instanceof AgoraError && err.code === "USAGE") throw err; // a bad multiaddr will not get better
        if (++attempt >= reconnect.maxAttempts)
          throw new AgoraError("P2P", `giving up after ${attempt} attempts to join room ${opts.room}: ${errorMessage(err)}`, { cause: err });
        log.warn({ err: errorMessage(err), attempt, retryInMs: delay }, "join failed; retrying");
        await sleep(delay, runSignal);
        delay = Math.min(reconnect.maxDelayMs, delay * 2);
      }
    }
  };
  onSessionLost = () => {
    session = undefined;
    if (stopping) return;
    if (fatal) return finishRun("aborted");
    report.reconnects++;
    connectLoop = connect().catch((err) => {
      fatal = err instanceof AgoraError ? err : new AgoraError("P2P", errorMessage(err));
      finishRun("aborted");
    });
  };

  // --- sender: frame k leaves at t0 + 20·k ---
  let seq = (rand() * 0x100000000) >>> 0;
  let ts = (rand() * 0x100000000) >>> 0;
  let held: AudioFrame | undefined; // reorder simulation: frame waiting for its successor
  const frameBuf = new Int16Array(FRAME_SAMPLES);
  const sendOne = (f: AudioFrame) => {
    if (session?.sendAudio(f)) report.framesSent++;
    else report.framesNotSent++;
  };
  const sendTimer = new PacedTimer(FRAME_MS, (k) => {
    if (!input || !encoder) return;
    if (k >= totalFrames) {
      if (held) sendOne(held);
      held = undefined;
      sendTimer.stop();
      setTimeout(() => finishRun("input_end"), tailMs).unref?.();
      return;
    }
    frameBuf.fill(0);
    frameBuf.set(input.subarray(k * FRAME_SAMPLES, Math.min(input.length, (k + 1) * FRAME_SAMPLES)));
    // Copy: an encoder may return a view of its own memory that the next call overwrites.
    const frame: AudioFrame = { seq, timestamp: ts, payload: encoder.encode(frameBuf).slice() };
    seq = (seq + 1) >>> 0;
    ts = (ts + FRAME_SAMPLES) >>> 0;
    if (dropRate > 0 && rand() < dropRate) {
      report.framesDroppedSimulated++;
      return;
    }
    if (held) {
      sendOne(frame);
      sendOne(held);
      held = undefined;
      return;
    }
    if (reorderRate > 0 && rand() < reorderRate) {
      held = frame;
      report.framesReorderedSimulated++;
      return;
    }
    sendOne(frame);
  });

  const keepalive = setInterval(() => {
    const s = session;
    if (!s) return;
    if (performance.now() - s.lastRxAt > deadAfterMs) s.abort(`no data from the server for ${deadAfterMs} ms`);
    else s.ping();
  }, Math.min(keepaliveMs, deadAfterMs / 3));
  keepalive.unref?.();

  let durationTimer: ReturnType<typeof setTimeout> | undefined;
  try {
    connectLoop = connect();
    await Promise.race([connectLoop, finished]);
    if (fatal) throw fatal;
    if (!stopping) {
      sendTimer.begin();
      if (opts.durationSec !== undefined) durationTimer = setTimeout(() => finishRun("duration"), opts.durationSec * 1000);
    }
    report.endReason = await finished;
    if (fatal) throw fatal;
  } finally {
    stopping = true;
    stopCtl.abort();
    sendTimer.stop();
    playoutTimer.stop();
    clearInterval(keepalive);
    if (durationTimer) clearTimeout(durationTimer);
    opts.signal?.removeEventListener("abort", onAbort);
    await connectLoop.catch(() => {});
    if (session) {
      report.rttMs = session.rttMs;
      await session.leave().catch(() => {});
    }
    report.framesLate = playout.late;
    report.framesSkipped = playout.skipped;
    try {
      output?.close();
    } finally {
      encoder?.destroy();
      decoder.destroy();
      if (ownNode) {
        try {
          await node.stop();
        } catch (err) {
          log.warn({ err: errorMessage(err) }, "libp2p stop failed");
        }
      }
    }
  }
  log.info({ ...report, participantIds: undefined }, "join client finished");
  return report;
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects): for paced loops that must stop promptly. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
