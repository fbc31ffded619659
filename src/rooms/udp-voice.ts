/**
 * The mixer's side of voice datagrams (protocol.md, "UDP datagrams"): one UDP socket for every session
 * (the node's STUN socket on node.listen_port, or audio.udp_port's), a session id and AES-256-GCM key per session handed
 * out in JOINED, the client's address learned from its first authenticated datagram (binding), and per
 * direction the choice between datagram and stream from the peer's UDP_REPORT counts.
 *
 * Every datagram is judged in order of cost, so garbage is dropped by the cheapest test that catches it and
 * nothing unauthenticated reaches the Opus decoder: length and version marker, the source's token bucket,
 * the session id, the bound source, the replay window, then the AEAD. Each drop is counted by reason in
 * `agora_audio_udp_dropped_total{reason}`.
 *
 * Outbound datagrams of one event-loop turn (the engine delivers a tick's mixes together) go out in one
 * `sendMany` call.
 *
 * With a `plane` (the media engine's DatagramPlane: what the node runs, on the shared socket by default) the
 * media worker owns the socket instead and does all of the above per datagram on the thread that mixes; this endpoint then only hands out session ids and
 * keys, installs them in the engine, forwards the clients' UDP_REPORT counts, and takes back what the room
 * service needs (authenticated counts for its UDP_REPORT, liveness) and the counters for /metrics. The
 * frames the worker routes to the stream (fallback, dual send) reach the session's sink as before.
 */

import { randomBytes } from "node:crypto";
import { Counter, Gauge, type Registry } from "prom-client";
import type { DatagramPlane, DatagramSyncCounts } from "../audio";
import type { Logger } from "../log";
import {
  type AudioFrame,
  checkOpusPacket,
  DATAGRAM_DROP_REASONS,
  DATAGRAM_TIMING,
  DatagramDirection,
  type DatagramDropReason,
  DatagramFlag,
  type DatagramKey,
  type DatagramTiming,
  datagramKey,
  MAX_DATAGRAM_COUNTER,
  openDatagram,
  parseDatagramHeader,
  ReplayWindow,
  SourceRateLimiter,
  sealDatagram,
  UdpReportSchedule,
  UdpSendPolicy,
} from "../protocol";
import type { UdpEndpoint, UdpPeer } from "../stun";

export interface UdpVoiceLimits extends DatagramTiming {
  /** Datagrams per second one source address:port may send (voice is 50/s, keepalives 5/s) and the burst. */
  perSourcePerSecond: number;
  perSourceBurst: number;
  /** Sources tracked for rate limiting; beyond, new sources share one bucket (a spoofing flood stays bounded). */
  maxSources: number;
}

export const DEFAULT_UDP_VOICE_LIMITS: Readonly<UdpVoiceLimits> = Object.freeze({
  perSourcePerSecond: 150,
  perSourceBurst: 150,
  maxSources: 16_384,
  ...DATAGRAM_TIMING,
});

/** What the room service gets back for each authenticated datagram of one session. */
export interface UdpVoiceHandlers {
  onFrame(frame: AudioFrame): void;
  /** any authenticated datagram (audio or keepalive): the client is alive */
  onAlive(): void;
  /** plane mode: `n` more voice datagrams the media worker dropped because the participant may not speak */
  onSilenced?(n: number): void;
}

/** The mixer's state of one session's datagrams. */
export class UdpVoiceSession {
  readonly key: Uint8Array;
  readonly keyObject: DatagramKey;
  readonly replay = new ReplayWindow(128);
  /** the client's address once its first datagram authenticated */
  bound: UdpPeer | undefined;
  boundKey: string | undefined;
  /** authenticated datagrams received (reported to the client in UDP_REPORT) */
  received = 0;
  /** our datagram counter (nonce): never reused, and at MAX_DATAGRAM_COUNTER this direction stops */
  txCounter = 0;
  lastTxAt = Number.NEGATIVE_INFINITY;
  readonly policy: UdpSendPolicy;
  /** plane mode: the worker's count of this session's voice datagrams dropped as listen-only, last seen */
  silenced = 0;
  /** when our UDP_REPORT of `received` is due */
  readonly reports = new UdpReportSchedule();
  closed = false;

  constructor(
    readonly id: number,
    readonly handlers: UdpVoiceHandlers,
    limits: UdpVoiceLimits,
    plane?: DatagramPlane,
  ) {
    this.key = randomBytes(32);
    this.keyObject = datagramKey(this.key);
    this.policy = plane ? new PlaneSendPolicy(limits, plane, id) : new UdpSendPolicy(limits);
  }
}

/** Which participant a session's datagrams belong to (plane mode: the worker pushes them into its buffer). */
export interface UdpVoiceOwner {
  room: string;
  participant: string;
  /** the client announced VOICE_ACTIVITY: its voice bit reaches the mixer */
  trustVoice: boolean;
}

const STREAM_ONLY = Object.freeze({ datagram: false, stream: true });

/**
 * The send policy of a session whose datagrams the media worker carries: the worker decides per frame, so
 * every frame that still reaches the control thread is one for the stream; reports go to the worker.
 */
class PlaneSendPolicy extends UdpSendPolicy {
  constructor(
    limits: UdpVoiceLimits,
    private readonly plane: DatagramPlane,
    private readonly sessionId: number,
  ) {
    super(limits);
  }
  override report(received: number): void {
    this.plane.report(this.sessionId, received);
  }
  override evaluate(): boolean {
    return false;
  }
  override route(): Readonly<{ datagram: boolean; stream: boolean }> {
    return STREAM_ONLY;
  }
}

interface UdpMetrics {
  dropped: Counter<"reason">;
  received: Counter;
  sent: Counter;
  sendDropped: Counter;
  sessions: Gauge;
}

function metricsFor(registry: Registry): UdpMetrics {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const dropped = get(
    "agora_audio_udp_dropped_total",
    () =>
      new Counter({
        name: "agora_audio_udp_dropped_total",
        help: "Voice datagrams dropped before decoding, by reason",
        labelNames: ["reason"],
        registers: [registry],
      }),
  );
  for (const reason of DATAGRAM_DROP_REASONS) dropped.inc({ reason }, 0);
  return {
    dropped,
    received: get(
      "agora_audio_udp_received_total",
      () => new Counter({ name: "agora_audio_udp_received_total", help: "Voice datagrams authenticated", registers: [registry] }),
    ),
    sent: get(
      "agora_audio_udp_sent_total",
      () => new Counter({ name: "agora_audio_udp_sent_total", help: "Voice datagrams sent to participants", registers: [registry] }),
    ),
    sendDropped: get(
      "agora_audio_udp_send_dropped_total",
      () =>
        new Counter({
          name: "agora_audio_udp_send_dropped_total",
          help: "Voice datagrams the kernel refused to send (full send buffer, firewall, ICMP error for that address)",
          registers: [registry],
        }),
    ),
    sessions: get(
      "agora_audio_udp_sessions",
      () => new Gauge({ name: "agora_audio_udp_sessions", help: "Sessions offered voice datagrams", registers: [registry] }),
    ),
  };
}

export interface UdpVoiceEndpointOptions {
  /** the socket this endpoint reads and writes on the control thread; or: */
  endpoint?: UdpEndpoint;
  /** the media engine carries the datagrams in its worker (see the file comment) */
  plane?: DatagramPlane;
  /** the address the plane's socket is bound to (for localAddress) */
  planeAddress?: string;
  registry: Registry;
  logger: Logger;
  limits?: Partial<UdpVoiceLimits>;
  now?: () => number;
}

export class UdpVoiceEndpoint {
  readonly limits: UdpVoiceLimits;
  private readonly sessions = new Map<number, UdpVoiceSession>();
  private readonly sources: SourceRateLimiter;
  private readonly metrics: UdpMetrics;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly nonce = Buffer.alloc(12);
  private pending: Array<Uint8Array | number | string> = [];
  private flushScheduled = false;
  private removeReceiver: (() => void) | undefined;
  /** counts by reason since the last log line (a flood must not become a flood of log lines) */
  private droppedSinceLog = 0;
  /** datagrams sent and authenticated since the counters were last updated (prom-client per datagram costs) */
  private sentPending = 0;
  private receivedPending = 0;

  private removeSync: (() => void) | undefined;

  constructor(private readonly opts: UdpVoiceEndpointOptions) {
    if (!opts.endpoint === !opts.plane) throw new Error("UdpVoiceEndpoint: give exactly one of endpoint and plane");
    this.limits = { ...DEFAULT_UDP_VOICE_LIMITS, ...opts.limits };
    this.sources = new SourceRateLimiter({
      perSecond: this.limits.perSourcePerSecond,
      burst: this.limits.perSourceBurst,
      maxSources: this.limits.maxSources,
    });
    this.metrics = metricsFor(opts.registry);
    this.now = opts.now ?? (() => performance.now());
    this.log = opts.logger.child({ component: "udp-voice" });
  }

  get port(): number {
    return this.opts.plane ? this.opts.plane.port : this.opts.endpoint!.local.port;
  }

  get localAddress(): string {
    return this.opts.plane ? (this.opts.planeAddress ?? "0.0.0.0") : this.opts.endpoint!.local.address;
  }

  /** true when the media worker carries the datagrams */
  get inWorker(): boolean {
    return this.opts.plane !== undefined;
  }

  start(): void {
    if (this.opts.plane) this.removeSync ??= this.opts.plane.onSync((c) => this.onPlaneSync(c));
    else this.removeReceiver ??= this.opts.endpoint!.onDatagram((data, from) => this.onDatagram(data, from));
  }

  stop(): void {
    this.removeSync?.();
    this.removeSync = undefined;
    this.removeReceiver?.();
    this.removeReceiver = undefined;
    this.flush();
    for (const s of this.sessions.values()) s.closed = true;
    this.sessions.clear();
    this.metrics.sessions.set(0);
  }

  /** A new session; with a plane, `owner` (required then) says whose voice its datagrams carry. */
  open(handlers: UdpVoiceHandlers, owner?: UdpVoiceOwner): UdpVoiceSession {
    let id: number;
    do id = randomBytes(4).readUInt32BE(0);
    while (this.sessions.has(id) || id === 0);
    const plane = this.opts.plane;
    const s = new UdpVoiceSession(id, handlers, this.limits, plane);
    if (plane) {
      if (!owner) throw new Error("UdpVoiceEndpoint.open: a plane needs the session's owner");
      plane.install(owner.room, owner.participant, { sessionId: id, key: s.key, trustVoice: owner.trustVoice });
    }
    this.sessions.set(id, s);
    this.metrics.sessions.inc();
    return s;
  }

  close(s: UdpVoiceSession): void {
    if (s.closed) return;
    s.closed = true;
    this.opts.plane?.remove(s.id);
    if (this.sessions.delete(s.id)) this.metrics.sessions.dec();
  }

  /** The worker's counters and session states of one sync period (plane mode). */
  private onPlaneSync(c: DatagramSyncCounts): void {
    for (const reason of DATAGRAM_DROP_REASONS) {
      const n = c.dropped[reason];
      if (n) {
        this.metrics.dropped.inc({ reason }, n);
        this.droppedSinceLog += n;
      }
    }
    if (c.received > 0) this.metrics.received.inc(c.received);
    if (c.sent > 0) this.metrics.sent.inc(c.sent);
    if (c.sendRefused > 0) this.metrics.sendDropped.inc(c.sendRefused);
    const plane = this.opts.plane!;
    for (const s of this.sessions.values()) {
      const st = plane.state(s.id);
      if (!st) continue;
      if (st.silenced > s.silenced) {
        const n = st.silenced - s.silenced;
        s.silenced = st.silenced;
        s.handlers.onSilenced?.(n);
      }
      if (st.received === s.received) continue;
      s.received = st.received;
      s.handlers.onAlive();
    }
  }

  /** Seals `frame` for this session's client and queues it for the batch; false if it cannot go by datagram. */
  send(s: UdpVoiceSession, frame: AudioFrame | undefined): boolean {
    // plane mode: the worker sends every datagram (and the keepalives) itself
    if (this.opts.plane || s.closed || !s.bound || s.txCounter > MAX_DATAGRAM_COUNTER) return false;
    const flags = frame ? (frame.voice ? DatagramFlag.VOICE : 0) : DatagramFlag.KEEPALIVE;
    const header = { flags, sessionId: s.id, counter: s.txCounter++, seq: frame?.seq ?? 0, timestamp: frame?.timestamp ?? 0 };
    const bytes = sealDatagram(s.keyObject, DatagramDirection.SERVER_TO_CLIENT, header, frame?.payload ?? EMPTY, this.nonce);
    s.lastTxAt = this.now();
    this.pending.push(bytes, s.bound.port, s.bound.address);
    this.sentPending++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
    return true;
  }

  /** Sends what this turn queued, in one system call batch where the socket supports it. */
  flush(): void {
    this.flushScheduled = false;
    this.updateCounters();
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    try {
      const endpoint = this.opts.endpoint!;
      if (endpoint.sendMany) {
        // sendmmsg stops at the first datagram the kernel refuses (a full buffer, a firewall drop, an ICMP
        // error queued for one client's address): skip that one and send the rest, so one recipient's
        // trouble never costs the others their frame. Nothing is queued: by the next tick it is stale.
        const total = batch.length / 3;
        let done = 0;
        let refused = 0;
        while (done < total) {
          done += endpoint.sendMany(done === 0 ? batch : batch.slice(done * 3));
          if (done < total) {
            refused++;
            done++;
          }
        }
        if (refused > 0) this.metrics.sendDropped.inc(refused);
      } else
        for (let i = 0; i < batch.length; i += 3)
          endpoint.send(batch[i] as Uint8Array, { port: batch[i + 1] as number, address: batch[i + 2] as string });
    } catch (err) {
      this.log.debug({ err: String(err) }, "datagram send failed");
    }
  }

  /** Brings the sent/received counters up to date (called per batch and per report tick). */
  updateCounters(): void {
    if (this.sentPending > 0) this.metrics.sent.inc(this.sentPending);
    if (this.receivedPending > 0) this.metrics.received.inc(this.receivedPending);
    this.sentPending = 0;
    this.receivedPending = 0;
  }

  private drop(reason: DatagramDropReason): void {
    this.metrics.dropped.inc({ reason });
    this.droppedSinceLog++;
  }

  /** Logs (at most once per call, from the room service's sweep) how many datagrams were dropped. */
  logDrops(): void {
    this.updateCounters();
    if (this.droppedSinceLog === 0) return;
    this.log.debug({ dropped: this.droppedSinceLog }, "voice datagrams dropped (agora_audio_udp_dropped_total has the reasons)");
    this.droppedSinceLog = 0;
  }

  /** Forgets sources whose buckets have refilled: memory stays bounded, nothing is lost. */
  pruneSources(now: number): void {
    this.sources.prune(now);
  }

  /** Every datagram on the socket (STUN's too: those are not ours and are ignored without counting). */
  onDatagram(data: Uint8Array, from: UdpPeer): void {
    const reason = this.accept(data, from);
    if (reason !== undefined) this.drop(reason);
  }

  /** Handles one datagram; the reason it was dropped, if it was. */
  private accept(data: Uint8Array, from: UdpPeer): DatagramDropReason | undefined {
    // STUN (RFC 5389: top two bits 00 and the magic cookie) shares the socket; it is STUN's to answer.
    if (data.length >= 8 && data[0]! < 0x40 && data[4] === 0x21 && data[5] === 0x12 && data[6] === 0xa4 && data[7] === 0x42)
      return undefined;
    const header = parseDatagramHeader(data);
    if (typeof header === "string") return header;
    const now = this.now();
    const sourceKey = `${from.address}|${from.port}`;
    if (!this.sources.take(sourceKey, now)) return "rate_limited";
    const s = this.sessions.get(header.sessionId);
    if (!s) return "unknown_session";
    if (s.boundKey !== undefined && s.boundKey !== sourceKey) return "unbound_source";
    const replay = s.replay.check(header.counter);
    if (replay !== "ok") return replay;
    const plain = openDatagram(s.keyObject, DatagramDirection.CLIENT_TO_SERVER, data, header.counter, this.nonce);
    if (!plain) return "auth_failed";
    s.replay.update(header.counter);
    if (s.boundKey === undefined) {
      s.bound = { address: from.address, port: from.port };
      s.boundKey = sourceKey;
    }
    s.received = (s.received + 1) >>> 0;
    this.receivedPending++;
    s.handlers.onAlive();
    if ((header.flags & DatagramFlag.KEEPALIVE) !== 0) return undefined;
    if (checkOpusPacket(plain) !== undefined) return "invalid_opus";
    s.handlers.onFrame({
      seq: header.seq,
      timestamp: header.timestamp,
      payload: plain,
      voice: (header.flags & DatagramFlag.VOICE) !== 0,
    });
    return undefined;
  }
}

const EMPTY = new Uint8Array(0);
