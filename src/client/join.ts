/**
 * runJoinClient: one participant for a whole call, as the `join` command runs it: a WAV (or nothing) in,
 * what it hears out as a WAV, reconnecting (to the same node, or to one a function picks anew) when the
 * session is lost.
 *
 * Timing model: audio is sent paced by an absolute clock (frame k leaves at t0 + 20·k ms; a late timer
 * sends what is due at once instead of drifting), and received audio is played out by a second absolute
 * clock behind a small jitter buffer. Every playout tick produces exactly 20 ms of output — the decoded
 * frame, Opus packet-loss concealment for a missing one, or silence for a long gap — so the output WAV is a
 * continuous timeline, like a speaker would play it, whatever the network did.
 */
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { ROLE_NAMES, Role, type RoleName } from "../access";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import {
  type AudioFrame,
  Capability,
  checkRoomId,
  FRAME_MS,
  FRAME_SAMPLES,
  ModerateAction,
  type ModerateResultMessage,
  type ModerationMessage,
  type OpusCodec,
  type OpusEncoder,
  SAMPLE_RATE,
  WireErrorCode,
} from "../protocol";
import { type Clock, every, realClock, type TimerHandle } from "./clock";
import { loadOpusCodec } from "./codec";
import { ReceiveLoss } from "./loss";
import type { RoomNavigator } from "./navigator";
import { createClientNode, type DialTargetProvider, resolveTarget } from "./node";
import { PlayoutBuffer } from "./playout";
import { seededRandom } from "./random";
import { AudioRemoteError, AudioSession, type VoiceTransport } from "./session";
import { PacedTimer, sleep } from "./timing";
import { VoiceGate } from "./vad";
import { readWav, WavWriter } from "./wav";

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
  node?: DialTargetProvider;
  /**
   * Join by name instead of `node`: the navigator finds the room's host, follows REDIRECT and MOVE
   * (make-before-break), and after a lost session joins the successor every participant computes. Its
   * libp2p node should be `libp2p` too.
   */
  navigator?: RoomNavigator;
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
  /** an access grant for an owned room (the bytes of `agora-node room grant`'s string) */
  grant?: Uint8Array;
  /** the private node's key, so a grant bound to it matches (default: a fresh key) */
  identity?: PrivateKey;
  /** codec implementation; default: wasm libopus from ./codec */
  codec?: OpusCodec;
  /** time source of the pacing, playout, keepalive, backoff, duration and tail timers (default the real clock) */
  clock?: Clock;
  /** voice by UDP datagram when offered ("auto", default), required ("udp") or never ("stream") */
  transport?: VoiceTransport;
  /**
   * Called once at the start with the report this run fills in, for progress displays: the frame counters,
   * `outputSeconds`, `reconnects` and `participantIds` move while it runs; the rest is set at the end.
   */
  live?: (report: Readonly<JoinClientReport>) => void;
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
  /** received frames' sequence numbers account for this many (gaps included), summed over sessions */
  framesExpected: number;
  /** loss from sequence gaps, percent */
  lossPercent: number;
  /** frames due by the wall clock: 50/s from each JOINED to that session's end */
  framesDue: number;
  /** loss against the wall clock, percent: also counts frames the node never sent */
  dueLossPercent: number;
  /** playout ticks with no frame: concealed by PLC, or silence in long gaps */
  framesConcealed: number;
  framesLate: number;
  framesSkipped: number;
  /** received but rejected by the decoder (concealed instead) */
  framesUndecodable: number;
  reconnects: number;
  /** join by name: sessions switched by a MOVE, and the audio gap of each (ms, last old frame → first new) */
  moves: number;
  moveGapsMs: number[];
  redirectsFollowed: number;
  /** REDIRECT/MOVE refused (not confirmed by the record, not from the host's session) */
  placementRefusals: number;
  /** peer id of the mixer of the last session (join by name) */
  host?: string;
  rttMs?: number;
  /** the role the server gave (JOINED, 1.1.0): a listener, or a muted speaker, sends nothing */
  role?: RoleName;
  /** frames not sent because the role (listener) or a moderator's mute means they would not be mixed */
  framesWithheld: number;
}

const LONG_GAP_FRAMES = 5; // beyond 100 ms of loss, Opus PLC has faded out anyway: write silence

export async function runJoinClient(opts: JoinClientOptions): Promise<JoinClientReport> {
  const log = opts.logger.child({ component: "join", room: opts.room });
  const tailMs = opts.tailMs ?? 1000;
  const jitterFrames = Math.max(1, Math.round((opts.jitterMs ?? 60) / FRAME_MS));
  const keepaliveMs = opts.keepaliveMs ?? 5000;
  const deadAfterMs = opts.deadAfterMs ?? 15_000;
  const reconnect = { maxAttempts: 10, initialDelayMs: 250, maxDelayMs: 5000, ...opts.reconnect };
  const clock = opts.clock ?? realClock;
  if (opts.durationSec !== undefined && !(opts.durationSec > 0))
    throw new AgoraError("USAGE", `durationSec must be > 0, got ${opts.durationSec}`);
  const roomErr = checkRoomId(opts.room);
  if (roomErr) throw new AgoraError("USAGE", roomErr, { where: "room" });
  if (!opts.node === !opts.navigator) throw new AgoraError("USAGE", "runJoinClient needs either node or navigator");
  if (!opts.input && opts.durationSec === undefined && !opts.signal)
    throw new AgoraError("USAGE", "runJoinClient needs an input, a duration or an abort signal to know when to stop");

  const input = opts.input ? readWav(opts.input).samples : undefined;
  const totalFrames = input ? Math.ceil(input.length / FRAME_SAMPLES) : 0;
  const codec = opts.codec ?? (await loadOpusCodec());
  const output = opts.output ? WavWriter.open(opts.output) : undefined;
  const ownNode = !opts.libp2p;
  const node = opts.libp2p ?? (await createClientNode(opts.identity ? { privateKey: opts.identity } : {}));

  const rand = seededRandom(opts.simulate?.seed ?? 0x5eed);
  const dropRate = opts.simulate?.dropRate ?? 0;
  const reorderRate = opts.simulate?.reorderRate ?? 0;

  const report: JoinClientReport = {
    room: opts.room,
    participantIds: [],
    endReason: "aborted",
    inputSeconds: input ? input.length / SAMPLE_RATE : 0,
    outputSeconds: 0,
    framesSent: 0,
    framesDroppedSimulated: 0,
    framesReorderedSimulated: 0,
    framesNotSent: 0,
    framesReceived: 0,
    framesExpected: 0,
    lossPercent: 0,
    framesDue: 0,
    dueLossPercent: 0,
    framesConcealed: 0,
    framesLate: 0,
    framesSkipped: 0,
    framesUndecodable: 0,
    reconnects: 0,
    framesWithheld: 0,
    moves: 0,
    moveGapsMs: [],
    redirectsFollowed: 0,
    placementRefusals: 0,
  };
  let role: number = Role.SPEAKER;
  let muted = false;
  opts.live?.(report);

  let session: AudioSession | undefined;
  let stopping = false;
  const rx = new ReceiveLoss();
  let fatal: AgoraError | undefined;
  let encoder: OpusEncoder | undefined;
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
  const playoutTimer = new PacedTimer(
    FRAME_MS,
    () => {
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
    },
    10,
    clock,
  );

  const onAudio = (frame: AudioFrame, receivedAt: number) => {
    if (stopping) return;
    report.framesReceived++;
    rx.frame(frame.seq);
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
        // Access control: the grant (re-presented after a MOVE too) and the moderation notices about us.
        const access = {
          ...(opts.grant ? { grant: opts.grant } : {}),
          onAccess: (m: ModerateResultMessage | ModerationMessage) => {
            if (m.type !== "MODERATION" || m.target !== session?.participantId) return;
            if (m.action === ModerateAction.MUTE || m.action === ModerateAction.UNMUTE) muted = m.action === ModerateAction.MUTE;
            if (m.action === ModerateAction.PROMOTE && role === Role.LISTENER) role = Role.SPEAKER;
            report.role = ROLE_NAMES[role];
          },
        };
        const onClose = (err: AgoraError | undefined) => {
          if (!stopping) rx.left(clock.now());
          if (err && !stopping) {
            log.warn({ err: err.message }, "audio session lost");
            if (err instanceof AudioRemoteError && !err.retryable) fatal = err;
            onSessionLost();
          }
        };
        // Voice-activity flags on what we send (1.1.0): the node skips decoding our silence.
        const capabilities = Capability.VOICE_ACTIVITY;
        const transport = opts.transport ? { transport: opts.transport } : {};
        const nav = opts.navigator;
        const target = nav ? nav.host : await resolveTarget(opts.node!);
        const s = nav
          ? await nav.open({
              name: opts.name,
              capabilities,
              ...transport,
              ...access,
              onAudio,
              signal: runSignal,
              clock,
              onClose,
              onMoved: (moved) => {
                // make-before-break: the new session is joined, the old one is being left by the navigator
                rx.left(clock.now());
                session = moved;
                rx.joined(clock.now());
                playout.reset();
                report.moves++;
                report.participantIds.push(moved.participantId);
                report.host = nav.host;
                log.info({ participant: moved.participantId, host: nav.host, epoch: moved.joined.epoch }, "moved to the room's new host");
              },
            })
          : await AudioSession.open({
              libp2p: node,
              target: target!,
              room: opts.room,
              name: opts.name,
              capabilities: capabilities | Capability.ACCESS_CONTROL,
              ...transport,
              ...access,
              onAudio,
              signal: runSignal,
              clock,
              onClose,
            });
        report.host = nav?.host;
        session = s;
        role = s.joined.role ?? Role.SPEAKER;
        muted = false;
        report.role = ROLE_NAMES[role];
        rx.joined(clock.now());
        playout.reset(); // the new stream has its own sequence numbering
        report.participantIds.push(s.participantId);
        if (!encoder) encoder = codec.encoder(opts.bitrate ?? s.joined.bitrate);
        log.info({ participant: s.participantId, target: String(nav ? nav.host : target) }, "joined");
        return;
      } catch (err) {
        if (stopping) return;
        if (err instanceof AudioRemoteError && !err.retryable) throw err;
        // A draining node will not take us back; only a target chosen anew (discovery) can help.
        if (
          err instanceof AudioRemoteError &&
          err.wireCode === WireErrorCode.DRAINING &&
          typeof opts.node !== "function" &&
          !opts.navigator
        )
          throw err;
        if (err instanceof AgoraError && err.code === "USAGE") throw err; // a bad multiaddr will not get better
        if (++attempt >= reconnect.maxAttempts)
          throw new AgoraError("P2P", `giving up after ${attempt} attempts to join room ${opts.room}: ${errorMessage(err)}`, {
            cause: err,
          });
        log.warn({ err: errorMessage(err), attempt, retryInMs: delay }, "join failed; retrying");
        await sleep(delay, runSignal, clock);
        delay = Math.min(reconnect.maxDelayMs, delay * 2);
      }
    }
  };
  onSessionLost = () => {
    session = undefined;
    // The host is gone for us: placement leaves it out, so every participant picks the same successor.
    opts.navigator?.hostLost();
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
  const gate = new VoiceGate();
  const sendOne = (f: AudioFrame) => {
    if (session && (role < Role.SPEAKER || muted)) report.framesWithheld++;
    // join by name: the navigator also feeds the session being left during a MOVE (make-before-break)
    else if (session && (opts.navigator ? opts.navigator.sendAudio(f) : session.sendAudio(f))) report.framesSent++;
    else report.framesNotSent++;
  };
  let tailTimer: TimerHandle | undefined;
  const sendTimer = new PacedTimer(
    FRAME_MS,
    (k) => {
      if (!input || !encoder) return;
      if (k >= totalFrames) {
        if (held) sendOne(held);
        held = undefined;
        sendTimer.stop();
        tailTimer = clock.setTimeout(() => finishRun("input_end"), tailMs, { unref: true });
        return;
      }
      frameBuf.fill(0);
      frameBuf.set(input.subarray(k * FRAME_SAMPLES, Math.min(input.length, (k + 1) * FRAME_SAMPLES)));
      // Copy: an encoder may return a view of its own memory that the next call overwrites.
      const frame: AudioFrame = { seq, timestamp: ts, payload: encoder.encode(frameBuf).slice(), voice: gate.update(frameBuf) };
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
    },
    10,
    clock,
  );

  const stopKeepalive = every(
    clock,
    Math.min(keepaliveMs, deadAfterMs / 3),
    () => {
      const s = session;
      if (!s) return;
      if (clock.now() - s.lastRxAt > deadAfterMs) s.abort(`no data from the server for ${deadAfterMs} ms`);
      else s.ping();
    },
    { unref: true },
  );

  let durationTimer: TimerHandle | undefined;
  try {
    connectLoop = connect();
    await Promise.race([connectLoop, finished]);
    if (fatal) throw fatal;
    if (!stopping) {
      sendTimer.begin();
      if (opts.durationSec !== undefined) durationTimer = clock.setTimeout(() => finishRun("duration"), opts.durationSec * 1000);
    }
    report.endReason = await finished;
    if (fatal) throw fatal;
  } finally {
    stopping = true;
    stopCtl.abort();
    sendTimer.stop();
    playoutTimer.stop();
    stopKeepalive();
    clock.clearTimeout(durationTimer);
    clock.clearTimeout(tailTimer);
    opts.signal?.removeEventListener("abort", onAbort);
    await connectLoop.catch(() => {});
    rx.left(clock.now());
    Object.assign(report, (({ framesReceived: _, ...loss }) => loss)(rx.figures()));
    if (opts.navigator) {
      const st = opts.navigator.stats;
      report.moveGapsMs = [...st.moveGapsMs];
      report.redirectsFollowed = st.redirectsFollowed;
      report.placementRefusals = st.redirectsRefused + st.movesRefused + st.redirectLoops;
    }
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
