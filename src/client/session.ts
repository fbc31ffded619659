/**
 * AudioSession: one participant on one `/agora/audio/1.1.0` (or 1.0.0) stream (see src/protocol/protocol.md). It dials,
 * JOINs, waits for JOINED, then sends and receives AUDIO, answers PINGs, measures RTT with its own PINGs and
 * ends on LEAVE, an ERROR, or the stream's end. Outbound audio goes through the protocol's real-time send
 * queue, so a slow connection drops old frames rather than growing latency.
 */
import type { Libp2p, Stream } from "@libp2p/interface";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { AgoraError, type ErrorCode, errorMessage } from "../errors";
import {
  AUDIO_PROTOCOLS,
  type AudioFrame,
  Capability,
  checkDisplayName,
  checkRoomId,
  chunkBytes,
  DATAGRAM_TIMING,
  encodeAudio,
  encodeMessage,
  errorCodeName,
  isRetryableErrorCode,
  type JoinedMessage,
  MessageDecoder,
  type MixGain,
  type ModerateMessage,
  type ModerateResultMessage,
  type ModerationMessage,
  type MoveMessage,
  OutboundQueue,
  type RedirectMessage,
  type RosterMessage,
  WIRE_VERSION,
  WIRE_VERSION_1_1,
  WireErrorCode,
  type WireMessage,
  wireVersionForProtocol,
} from "../protocol";
import { type Clock, realClock } from "./clock";
import type { DialTarget } from "./node";
import { ClientUdpChannel, RecentSeqs } from "./udp";

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

/** The server answered JOIN with REDIRECT (1.1.0): the room is hosted elsewhere. */
export class AudioRedirectError extends AgoraError {
  readonly redirect: RedirectMessage;
  constructor(redirect: RedirectMessage) {
    super("P2P", `room ${redirect.room} is hosted by ${redirect.hostPeerId} (epoch ${redirect.epoch})`);
    this.name = "AudioRedirectError";
    this.redirect = redirect;
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
    case WireErrorCode.FORBIDDEN:
      return "UNAUTHORIZED";
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
  /** one address, or several of one peer (libp2p dials them as one peer) */
  target: DialTarget | Multiaddr[];
  room: string;
  name?: string;
  /**
   * Protocol id(s) offered, most preferred first: default `/agora/audio/1.1.0` then `/agora/audio/1.0.0`
   * (AUDIO_PROTOCOLS); the latency bench points it at an echo protocol.
   */
  protocol?: string | readonly string[];
  /** 1.1.0 JOIN extensions: capability bits (Capability), a move token, a grant */
  capabilities?: number;
  moveToken?: Uint8Array;
  grant?: Uint8Array;
  /**
   * 1.1.0 control messages after JOINED (MOVE). Without a handler a MOVE ends the session with an error,
   * as a server must not send one to a client that did not announce Capability.ROOM_DIRECTORY.
   */
  onControl?: (msg: MoveMessage) => void;
  /** 1.1.0 ROSTER messages (announce Capability.ROSTER in `capabilities`); without a handler ROSTER ends the session */
  onRoster?: (msg: RosterMessage) => void;
  /**
   * 1.1.0 access control messages (MODERATE_RESULT, MODERATION). Without a handler they end the session, as
   * a server must not send them to a client that did not announce Capability.ACCESS_CONTROL.
   */
  onAccess?: (msg: ModerateResultMessage | ModerationMessage) => void;
  /** bound on dial + protocol negotiation + JOIN/JOINED (default 10 s) */
  timeoutMs?: number;
  /**
   * Told how long each phase of open() took, in ms (the join-time breakdown of bench/rooms): "dial" (the
   * connection and the protocol's negotiation), "answer" (JOIN to JOINED, ERROR or REDIRECT: the mixer's
   * decision), "datagrams" (the voice datagram setup after JOINED).
   */
  onOpenPhase?: (phase: "dial" | "answer" | "datagrams", ms: number) => void;
  /** outbound audio frames held while the connection cannot keep up before the oldest is dropped */
  sendQueueFrames?: number;
  /** called for every received AUDIO; `payload` is owned by the callee */
  onAudio?: (frame: AudioFrame, receivedAt: number) => void;
  /** called once when the session ends; `error` unset after a clean leave() */
  onClose?: (error: AgoraError | undefined) => void;
  signal?: AbortSignal;
  /** many sessions over one connection (loadgen) need more than libp2p's default 64 outbound streams */
  maxOutboundStreams?: number;
  /** time source of `lastRxAt`, `receivedAt` and RTT (default the real clock) */
  clock?: Clock;
  /**
   * How voice travels (1.1.0): "auto" (default) as encrypted UDP datagrams when the server offers them,
   * "udp" the same but the open fails when it does not, "stream" never by datagram. The stream carries
   * control either way and is the fallback whenever datagrams do not get through.
   */
  transport?: VoiceTransport;
  /**
   * Open (authenticate and decrypt) the mixer's voice datagrams (default true). false: they are counted and
   * delivered by their clear header alone (seq, timestamp, an EMPTY payload), saving the AEAD open per frame:
   * only for a load generator's participants that never play what they receive, on a path nobody forges
   * (their UDP_REPORT then counts headers anyone could write). Never for a real client.
   */
  openDatagrams?: boolean;
}

export type VoiceTransport = "auto" | "udp" | "stream";
export const VOICE_TRANSPORTS: readonly VoiceTransport[] = ["auto", "udp", "stream"];

/** Which path voice takes in one direction right now. */
export type VoicePath = "udp" | "stream";

export class AudioSession {
  readonly joined: JoinedMessage;
  /** the negotiated protocol id */
  readonly protocol: string;
  private readonly queue: OutboundQueue;
  private readonly clock: Clock;
  private closedWith: AgoraError | undefined | null = null; // null = open
  private pingNonce = 0;
  private readonly pings = new Map<number, number>();
  /** clock.now() of the last message from the server */
  lastRxAt: number;
  /** smoothed round-trip time from PING/PONG, ms */
  rttMs: number | undefined;
  framesSent = 0;
  framesReceived = 0;
  /** frames received twice during a path switch (by stream and by datagram) and dropped */
  framesDuplicate = 0;
  /** frames of a datagram session that came by the stream first (the server's direction on the stream) */
  framesViaStream = 0;
  /** voice datagrams, once the server offered them (undefined: stream only) */
  private udp: ClientUdpChannel | undefined;
  private udpTimer: ReturnType<typeof setInterval> | undefined;
  private readonly recent = new RecentSeqs();

  private constructor(
    private readonly stream: Stream,
    joined: JoinedMessage,
    private readonly opts: AudioSessionOptions,
    /** the handshake's decoder: bytes after JOINED may already be buffered in it */
    private readonly decoder: MessageDecoder,
  ) {
    this.joined = joined;
    this.protocol = stream.protocol ?? "";
    this.clock = opts.clock ?? realClock;
    this.lastRxAt = this.clock.now();
    this.queue = new OutboundQueue(stream, opts.sendQueueFrames ?? 10);
  }

  get participantId(): string {
    return this.joined.participantId;
  }

  get room(): string {
    return this.opts.room;
  }

  /** JOIN/JOINED version in use: 1 on `/agora/audio/1.0.0`, 2 on `/agora/audio/1.1.0`. */
  get wireVersion(): number {
    return this.joined.version;
  }

  get isOpen(): boolean {
    return this.closedWith === null;
  }

  /** The path of our voice to the mixer now. */
  get uplinkPath(): VoicePath {
    return this.udp?.policy.usingDatagrams ? "udp" : "stream";
  }

  /** Times our voice left datagrams for the stream (the send policy judged them lost). */
  get uplinkFallbacks(): number {
    return this.udp?.policy.fallbacks ?? 0;
  }

  /** Whether voice datagrams were negotiated on this session. */
  get datagramsOffered(): boolean {
    return this.udp !== undefined;
  }

  /** Voice datagrams sent, authenticated from the mixer, and dropped (forged, replayed, foreign). */
  get datagramStats(): { sent: number; received: number; dropped: number } {
    return { sent: this.udp?.sent ?? 0, received: this.udp?.received ?? 0, dropped: this.udp?.dropped ?? 0 };
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
    const protocols = typeof opts.protocol === "string" ? [opts.protocol] : [...(opts.protocol ?? AUDIO_PROTOCOLS)];
    const clock = opts.clock ?? realClock;
    let phaseAt = clock.now();
    const phase = (name: "dial" | "answer" | "datagrams") => {
      const now = clock.now();
      opts.onOpenPhase?.(name, now - phaseAt);
      phaseAt = now;
    };
    try {
      stream = await opts.libp2p.dialProtocol(target, protocols, {
        signal,
        maxOutboundStreams: opts.maxOutboundStreams,
      });
      phase("dial");
    } catch (err) {
      throw new AgoraError("P2P", `cannot open ${protocols.join(" or ")} to ${String(target)}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    // An echo protocol (bench) has no version of its own: it speaks 1.0.0's messages.
    const version = wireVersionForProtocol(stream.protocol ?? "") ?? WIRE_VERSION;
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
        else if (m.type === "REDIRECT" && version >= WIRE_VERSION_1_1) settle(new AudioRedirectError(m));
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
      const capabilities = opts.transport === "stream" ? opts.capabilities : (opts.capabilities ?? 0) | Capability.UDP_DATAGRAMS;
      const ext =
        version >= WIRE_VERSION_1_1
          ? {
              ...(capabilities !== undefined ? { capabilities } : {}),
              ...(opts.moveToken ? { moveToken: opts.moveToken } : {}),
              ...(opts.grant ? { grant: opts.grant } : {}),
            }
          : {};
      stream.send(encodeMessage({ type: "JOIN", version, room: opts.room, name: opts.name ?? "", ...ext }));
    } catch (err) {
      settle(new AgoraError("P2P", `cannot send JOIN: ${errorMessage(err)}`));
    }
    const r = await result;
    phase("answer");
    stream.removeEventListener("message", onMessage);
    stream.removeEventListener("close", onClose);
    signal.removeEventListener("abort", onAbort);
    if (r instanceof AgoraError) {
      stream.abort(r);
      throw r;
    }
    const session = new AudioSession(stream, r, opts, decoder);
    session.attach(early);
    if (session.isOpen && r.udp && opts.transport !== "stream" && ((r.capabilities ?? 0) & Capability.UDP_DATAGRAMS) !== 0)
      await session.startDatagrams(stream);
    phase("datagrams");
    if (opts.transport === "udp" && !session.udp) {
      session.abort("voice datagrams required but not available");
      throw new AgoraError(
        "P2P",
        version < WIRE_VERSION_1_1
          ? `transport udp: ${target.toString()} speaks only ${stream.protocol} (no voice datagrams)`
          : `transport udp: ${target.toString()} did not offer voice datagrams on this connection`,
      );
    }
    return session;
  }

  /**
   * Binds our socket, sends the first datagram (the mixer binds our NAT mapping from it) and starts the
   * report/keepalive timer. A failure leaves the session on the stream: datagrams are an optimisation.
   */
  private async startDatagrams(stream: Stream): Promise<void> {
    const offer = this.joined.udp!;
    const conn = this.opts.libp2p.getConnections().find((c) => c.streams.includes(stream));
    const remote = conn?.remoteAddr.toString() ?? "";
    if (remote.includes("/p2p-circuit")) return;
    const host = offer.addrs[0] ?? /^\/ip[46]\/([^/]+)/.exec(remote)?.[1];
    if (!host) return;
    try {
      this.udp = await ClientUdpChannel.open(offer, host, (frame) => this.onDatagramFrame(frame), this.opts.openDatagrams ?? true);
    } catch {
      return;
    }
    if (!this.isOpen) {
      this.udp.close();
      this.udp = undefined;
      return;
    }
    this.udp.send(undefined, this.clock.now());
    this.udpTimer = setInterval(() => this.udpTick(), DATAGRAM_TIMING.reportIntervalMs);
    this.udpTimer.unref?.();
  }

  private udpTick(): void {
    const u = this.udp;
    if (!u || !this.isOpen) return;
    const now = this.clock.now();
    if (u.reports.due(u.received, now)) this.queue.send(encodeMessage({ type: "UDP_REPORT", received: u.received }), false);
    u.policy.evaluate(now);
    if (now - u.lastTxAt >= DATAGRAM_TIMING.reportIntervalMs) u.send(undefined, now);
  }

  private onDatagramFrame(frame: AudioFrame): void {
    if (!this.isOpen) return;
    const now = this.clock.now();
    this.lastRxAt = now;
    this.deliver(frame, now, false);
  }

  /** One received frame from either path; the second copy of a frame that came both ways is dropped. */
  private deliver(frame: AudioFrame, now: number, viaStream: boolean): void {
    if (this.udp && !this.recent.first(frame.seq)) {
      this.framesDuplicate++;
      return;
    }
    this.framesReceived++;
    if (viaStream && this.udp) this.framesViaStream++;
    this.opts.onAudio?.(frame, now);
  }

  private attach(early: WireMessage[]): void {
    this.stream.addEventListener("message", (evt) => {
      const { messages, error } = this.decoder.push(chunkBytes(evt.data));
      for (const m of messages) this.onMessage(m);
      if (error) this.finish(error, true);
    });
    this.stream.addEventListener("close", (evt) =>
      this.finish(
        new AgoraError(
          "P2P",
          `audio stream closed by ${evt.local ? "us" : "the server"}${evt.error ? `: ${errorMessage(evt.error)}` : ""}`,
        ),
        false,
      ),
    );
    this.stream.addEventListener("remoteCloseWrite", () => this.finish(new AgoraError("P2P", "server closed the audio stream"), true));
    for (const m of early) this.onMessage(m);
    // The stream may have ended between JOINED and now (no listener saw it).
    if (this.isOpen && this.stream.status !== "open")
      this.finish(new AgoraError("P2P", `audio stream ${this.stream.status} right after JOINED`), false);
  }

  private onMessage(m: WireMessage): void {
    const now = this.clock.now();
    this.lastRxAt = now;
    switch (m.type) {
      case "AUDIO":
        this.deliver({ seq: m.seq, timestamp: m.timestamp, payload: m.payload }, now, true);
        return;
      case "UDP_REPORT":
        if (this.udp) {
          this.udp.policy.report(m.received, now);
          return;
        }
        this.finish(new AgoraError("WIRE_PROTOCOL", "UDP_REPORT on a session without voice datagrams"), true);
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
      case "MODERATE_RESULT":
      case "MODERATION":
        if (this.wireVersion >= WIRE_VERSION_1_1 && this.opts.onAccess) {
          this.opts.onAccess(m);
          return;
        }
        this.finish(new AgoraError("WIRE_PROTOCOL", `unexpected ${m.type} from server`), true);
        return;
      case "MOVE":
        if (this.wireVersion >= WIRE_VERSION_1_1 && this.opts.onControl) {
          this.opts.onControl(m);
          return;
        }
        this.finish(new AgoraError("WIRE_PROTOCOL", "unexpected MOVE from server"), true);
        return;
      case "ROSTER":
        if (this.wireVersion >= WIRE_VERSION_1_1 && this.opts.onRoster) {
          this.opts.onRoster(m);
          return;
        }
        this.finish(new AgoraError("WIRE_PROTOCOL", "unexpected ROSTER from server"), true);
        return;
      default:
        this.finish(new AgoraError("WIRE_PROTOCOL", `unexpected ${m.type} from server`), true);
    }
  }

  /** Whether a 1.1.0 feature (Capability bit) was announced by both sides of this session. */
  negotiated(capability: number): boolean {
    return this.wireVersion >= WIRE_VERSION_1_1 && ((this.opts.capabilities ?? 0) & (this.joined.capabilities ?? 0) & capability) !== 0;
  }

  /**
   * Queues one frame; false once the session is closed. `frame.voice` goes out as AUDIO_VAD where
   * VOICE_ACTIVITY was negotiated and is dropped (plain AUDIO) elsewhere.
   */
  sendAudio(frame: AudioFrame): boolean {
    if (!this.isOpen) return false;
    const out =
      frame.voice !== undefined && !this.negotiated(Capability.VOICE_ACTIVITY)
        ? { seq: frame.seq, timestamp: frame.timestamp, payload: frame.payload }
        : frame;
    if (this.udp) {
      const now = this.clock.now();
      const route = this.udp.policy.route(now);
      const sent = route.datagram && this.udp.send(out, now);
      if (sent && !route.stream) {
        this.framesSent++;
        return true;
      }
    }
    const ok = this.queue.send(encodeAudio(out), true);
    if (ok) this.framesSent++;
    return ok;
  }

  /**
   * Sends the complete set of per-source gains of our mix (MIX_SETTINGS): 0 mutes a participant for us
   * only, 1 is unchanged, up to 4. Throws USAGE when the server does not offer PERSONAL_MIX on this session
   * (or we did not announce it), or when an entry is invalid.
   */
  sendMixSettings(gains: readonly MixGain[]): void {
    if (!this.negotiated(Capability.PERSONAL_MIX))
      throw new AgoraError("USAGE", "personal mix settings need PERSONAL_MIX announced by both sides of a 1.1.0 session");
    let bytes: Uint8Array;
    try {
      bytes = encodeMessage({ type: "MIX_SETTINGS", gains: [...gains] });
    } catch (err) {
      throw new AgoraError("USAGE", errorMessage(err), { cause: err });
    }
    if (this.isOpen) this.queue.send(bytes, false);
  }

  /** Sends a signed moderation request (1.1.0, access control); false once the session is closed. */
  sendModerate(msg: ModerateMessage): boolean {
    if (!this.isOpen) return false;
    if (this.wireVersion < WIRE_VERSION_1_1) throw new AgoraError("USAGE", "moderation needs /agora/audio/1.1.0");
    return this.queue.send(encodeMessage(msg), false);
  }

  /** Keepalive and RTT probe. */
  ping(): void {
    if (!this.isOpen) return;
    this.pingNonce = (this.pingNonce + 1) >>> 0;
    const nonce = this.pingNonce;
    this.pings.set(nonce, this.clock.now());
    if (this.pings.size > 16) this.pings.delete(this.pings.keys().next().value!);
    this.queue.send(encodeMessage({ type: "PING", nonce }), false);
  }

  /** Sends LEAVE and closes; bounded by `timeoutMs` (default 2 s), after which the stream is reset. */
  async leave(timeoutMs = 2_000): Promise<void> {
    if (!this.isOpen) return;
    this.closedWith = undefined;
    this.queue.close();
    this.stopDatagrams();
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
        this.stream.addEventListener(
          "close",
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
      if ((this.stream.status as string) !== "closed") this.stream.abort(new AgoraError("P2P", "leave timed out"));
    }
    this.opts.onClose?.(undefined);
  }

  private stopDatagrams(): void {
    clearInterval(this.udpTimer);
    this.udpTimer = undefined;
    this.udp?.close();
  }

  /** Drops the session without LEAVE (used when the connection is already known dead). */
  abort(reason: string): void {
    this.finish(new AgoraError("P2P", reason), true);
  }

  private finish(error: AgoraError, abortStream: boolean): void {
    if (!this.isOpen) return;
    this.closedWith = error;
    this.queue.close();
    this.stopDatagrams();
    if (abortStream && this.stream.status !== "closed") this.stream.abort(error);
    this.opts.onClose?.(error);
  }
}
