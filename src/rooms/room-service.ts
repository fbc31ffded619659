/**
 * AudioRoomService: binds the libp2p audio protocol (`/agora/audio/1.1.0` and `/agora/audio/1.0.0`, see protocol.md) to the media
 * engine. One stream is one participant: JOIN → engine.join, AUDIO → engine.pushFrame, the engine's mix
 * for the participant → AUDIO back on the same stream, LEAVE/close → engine.leave.
 *
 * Each stream is isolated: a malformed, oversized, flooding or silent stream is closed with an ERROR that
 * carries a code, counted in `agora_audio_stream_errors_total{reason}`, and nothing else is touched. All
 * per-stream work is synchronous inside event handlers wrapped in try/catch, so one stream's failure can
 * never surface as an unhandled rejection or stall another stream. Timeouts are checked by one sweep
 * timer for all streams rather than one timer per stream (50 frames/s × N streams of setTimeout churn).
 *
 * Limits that a peer could bypass by opening a new stream (join attempts, open streams, audio frames) are
 * also kept per remote peer and per remote IP, across all their streams and connections (see protocol.md,
 * "Per-peer limits"). Work that one event multiplies (a mass idle timeout, a storm of refused streams) is
 * bounded per sweep so that it cannot stall the event loop that carries everyone else's audio.
 */
import { randomBytes } from "node:crypto";
import type { Connection, Libp2p, Stream } from "@libp2p/interface";
import { Counter, Gauge, type Registry } from "prom-client";
import {
  applyCarried,
  type CarriedAccess,
  GrantError,
  type GrantFailure,
  MemoryRevocationStore,
  type RevocationStore,
  Role,
  roomOwnership,
  toHex,
  type VerifiedGrant,
  verifyGrant,
  verifyModerate,
} from "../access";
import type { MediaEngine, RoomStats } from "../audio";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOLS,
  type AudioFrame,
  Capability,
  CHANNELS,
  CODEC_OPUS,
  checkOpusPacket,
  chunkBytes,
  encodeAudio,
  encodeMessage,
  FRAME_SAMPLES,
  type JoinMessage,
  MessageDecoder,
  type MixSettingsMessage,
  ModerateAction,
  type ModerateMessage,
  OutboundQueue,
  SAMPLE_RATE,
  seqDiff,
  WIRE_VERSION,
  WIRE_VERSION_1_1,
  WireErrorCode,
  type WireErrorReason,
  type WireMessage,
  wireErrorCodeFor,
  wireVersionForProtocol,
} from "../protocol";
import type { MoveTokenAccess } from "./move-token";
import type { RoomHost } from "./room-host";
import { type RosterMember, RosterPublisher } from "./roster";
import type { UdpVoiceEndpoint, UdpVoiceSession } from "./udp-voice";

export interface AudioServiceLimits {
  /** A joined stream that sends nothing (no audio, no PING) for this long is half-open: closed. */
  idleTimeoutMs: number;
  /** A stream must JOIN within this long after opening. */
  joinTimeoutMs: number;
  /**
   * Token bucket on received messages: sustained rate (3× the nominal 50 frames/s) and burst size. The
   * burst lets a client catch up after a network stall (TCP delivers the backlog at once).
   */
  maxMessagesPerSecond: number;
  burstMessages: number;
  /** Outbound audio frames held while the stream cannot keep up (10 = 200 ms); beyond, oldest dropped. */
  sendQueueFrames: number;
  /** Frames this far behind the newest one received are "late" (the jitter buffer can't use them). */
  reorderWindow: number;
  /** Bound on waiting for a stream to flush/close before it is reset. */
  closeTimeoutMs: number;
  /** Concurrent audio streams per libp2p connection (loadgen multiplexes many participants on one). */
  maxStreamsPerConnection: number;
  /**
   * The server PINGs a joined client after this long without receiving anything from it, and again at this
   * interval, so a listen-only client that merely answers PINGs is not taken for half-open.
   */
  pingIntervalMs: number;
  /** Stream opens (join attempts) per remote peer: sustained rate per second and burst. */
  peerJoinsPerSecond: number;
  peerJoinBurst: number;
  /** Concurrent audio streams per remote peer, over all its connections. */
  peerMaxStreams: number;
  /** The same per remote IP address (IPv6: per /64), over all peers behind it. Relayed peers count only per peer. */
  ipJoinsPerSecond: number;
  ipJoinBurst: number;
  ipMaxStreams: number;
  /**
   * AUDIO frames per second per joined stream, pooled over all streams of one peer (and of one IP): nominal
   * 50 + 20 %. The pool's burst is `burstMessages` per joined stream. Excess frames are dropped, not the stream.
   */
  framesPerStreamPerSecond: number;
  /**
   * A peer whose stream opens were refused this many times in a row ignores RATE_LIMITED (a retrying client
   * backs off): its connection is closed, and for `penaltyMs` any audio stream it opens closes its connection
   * again at once. Refusing a stream still costs the node libp2p's stream set-up for every attempt; a new
   * connection costs the attacker a handshake and is under libp2p's per-host inbound connection rate limit
   * (see protocol.md).
   */
  disconnectAfterRefusals: number;
  penaltyMs: number;
  /** Idle/join timeouts acted on per sweep pass; the rest follow one pass later (`expirySpreadMs`). */
  maxExpiriesPerSweep: number;
  expirySpreadMs: number;
  /** Spacing of roster updates to one session (protocol.md "Roster": ≤ 5/s at 200 ms). */
  rosterIntervalMs: number;
}

export const DEFAULT_AUDIO_SERVICE_LIMITS: Readonly<AudioServiceLimits> = Object.freeze({
  idleTimeoutMs: 15_000,
  joinTimeoutMs: 10_000,
  maxMessagesPerSecond: 150,
  burstMessages: 150,
  sendQueueFrames: 10,
  reorderWindow: 64,
  closeTimeoutMs: 2_000,
  maxStreamsPerConnection: 1024,
  pingIntervalMs: 5_000,
  peerJoinsPerSecond: 8,
  peerJoinBurst: 32,
  peerMaxStreams: 64,
  ipJoinsPerSecond: 32,
  ipJoinBurst: 128,
  ipMaxStreams: 256,
  framesPerStreamPerSecond: 60,
  disconnectAfterRefusals: 8,
  penaltyMs: 10_000,
  maxExpiriesPerSweep: 4,
  expirySpreadMs: 20,
  rosterIntervalMs: 200,
});

/** Which per-peer/per-IP limit refused something: the `limit` label of agora_audio_net_limited_total. */
export type PeerLimit = "peer_joins" | "ip_joins" | "peer_streams" | "ip_streams" | "peer_frames" | "ip_frames";
/** Values of the `limit` label: the limits, and the disconnection of a peer that ignores them. */
export type LimitLabel = PeerLimit | "peer_disconnected";

export interface AudioRoomServiceOptions {
  libp2p: Pick<Libp2p, "handle" | "unhandle">;
  engine: MediaEngine;
  registry: Registry;
  logger: Logger;
  /** Uplink bitrate suggested to clients in JOINED (bit/s); usually config audio.bitrate. Live: updateSettings. */
  bitrate?: number;
  limits?: Partial<AudioServiceLimits>;
  /** Monotonic clock in ms (default performance.now); tests inject one to drive the token buckets. */
  now?: () => number;
  /** Voice datagrams (Capability.UDP_DATAGRAMS); without it every session uses the stream. */
  udp?: UdpVoiceEndpoint;
  /** IP addresses offered beside the UDP port (none: clients send to the host they dialled). */
  udpAddrs?: string[];
  /** Wall clock in unix ms for grant expiry and revocations (default Date.now); tests inject one. */
  wallClock?: () => number;
  /**
   * Revocations of owned rooms (banned grants and keys). Default: kept in this service's memory; the room
   * directory replaces it with the room record's `revocations`, so a ban holds on every mixer.
   */
  revocations?: RevocationStore;
  /**
   * Handover: the access state a verified move token carries (see src/access/handover.ts). The placement
   * subsystem verifies the token (JOIN ext 0x02) and returns what the old host signed into it, or undefined
   * when the token is not valid for the room. Without it, a moved participant gets exactly its grant's role.
   */
  carriedAccess?: (room: string, moveToken: Uint8Array) => CarriedAccess | undefined;
  /**
   * The room directory's policy (dedicated mode with a network): JOINs of directory-aware 1.1.0 clients are
   * placed by it (admit and claim, or REDIRECT), and it moves rooms on drain and lost claims. Without it the
   * service serves every room it is asked for, as before 1.1.0.
   */
  host?: RoomHost;
  /**
   * Called after a participant joined or left a room, with the room's participant count on this node
   * (1 after the first JOIN: the room opened; 0: it closed). Errors thrown by it are logged, never fatal.
   */
  onRoomParticipants?: (room: string, participants: number) => void;
}

/** Why a JOIN to an owned room was refused: the `reason` label of agora_access_denied_total. */
export type AccessDeniedReason = GrantFailure | "no_grant" | "locked";

/** Outcome labels of agora_access_moderation_total{result}. */
type ModerationResult = "ok" | "not_moderator" | "bad_signature" | "replayed" | "bad_target" | "outranked" | "bad_action" | "full";

/** Settings that change on a running service (SIGHUP). */
export interface AudioRoomSettings {
  /** Uplink bitrate suggested in JOINED from now on (bit/s). */
  bitrate: number;
}

/** Values of the `reason` label of agora_audio_stream_errors_total (bounded set). */
export type StreamErrorReason =
  | WireErrorReason
  | "flood"
  | "rate_limited"
  | "idle_timeout"
  | "join_timeout"
  | "unexpected_message"
  | "reset"
  | "engine"
  | "internal";

interface NetMetrics {
  streamErrors: Counter<"reason">;
  streamsActive: Gauge;
  joins: Counter<"result">;
  framesIn: Counter;
  framesOut: Counter;
  framesDropped: Counter<"reason">;
  framesReordered: Counter;
  limited: Counter<"limit">;
  pings: Counter;
  mixSettings: Counter<"result">;
  accessDenied: Counter<"reason">;
  moderation: Counter<"action" | "result">;
}

/** MIX_SETTINGS a session may have applied per second; more are coalesced (the latest wins, applied later). */
const MIX_SETTINGS_PER_SECOND = 5;

/** Get-or-create, so a service restarted on the same registry (tests, reload) does not throw on re-registration. */
function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[] = []): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: [registry] });
}

function gauge(registry: Registry, name: string, help: string): Gauge {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Gauge;
  return new Gauge({ name, help, registers: [registry] });
}

function createMetrics(registry: Registry): NetMetrics {
  return {
    streamErrors: counter(registry, "agora_audio_stream_errors_total", "Audio protocol streams closed because of an error, by reason", [
      "reason",
    ]),
    streamsActive: gauge(registry, "agora_audio_net_streams_active", "Open audio protocol streams (joined or awaiting JOIN)"),
    joins: counter(registry, "agora_audio_net_joins_total", "JOIN requests by result (ok, capacity, draining, error)", ["result"]),
    framesIn: counter(
      registry,
      "agora_audio_net_frames_received_total",
      "Audio frames received from participants and queued to the engine",
    ),
    framesOut: counter(registry, "agora_audio_net_frames_sent_total", "Mixed audio frames written to participant streams"),
    framesDropped: counter(
      registry,
      "agora_audio_net_frames_dropped_total",
      "Audio frames dropped by the network layer: send_queue (receiver too slow, oldest dropped), duplicate, late, listener and muted (access control)",
      ["reason"],
    ),
    framesReordered: counter(registry, "agora_audio_net_frames_reordered_total", "Audio frames received out of order and still forwarded"),
    limited: counter(
      registry,
      "agora_audio_net_limited_total",
      "Stream opens refused and audio frames dropped by a per-peer or per-IP limit, by limit",
      ["limit"],
    ),
    pings: counter(registry, "agora_audio_net_pings_sent_total", "PINGs sent by the server to joined clients it heard nothing from"),
    mixSettings: counter(
      registry,
      "agora_audio_net_mix_settings_total",
      "MIX_SETTINGS messages by result: applied, unknown_participant (applied without entries naming nobody in the room), coalesced (over the rate, applied later), engine_error",
      ["result"],
    ),
    accessDenied: counter(
      registry,
      "agora_access_denied_total",
      "JOINs to owned rooms refused with FORBIDDEN, by reason (no_grant, malformed, bad_signature, expired, wrong_room, revoked, locked, ...)",
      ["reason"],
    ),
    moderation: counter(registry, "agora_access_moderation_total", "MODERATE requests by action and result", ["action", "result"]),
  };
}

/**
 * Duplicate / late detection over uint32 sequence numbers (RFC 1982 arithmetic, so wrap-around is fine).
 * Reordered frames inside the window are forwarded (the engine's jitter buffer puts them in place).
 */
export class SeqWindow {
  private highest: number | undefined;
  private readonly seen: Uint8Array;
  private lateRun = 0;

  constructor(private readonly size: number) {
    this.seen = new Uint8Array(size);
  }

  /** "ok" | "reordered": forward; "duplicate" | "late": drop. */
  accept(seq: number): "ok" | "reordered" | "duplicate" | "late" {
    if (this.highest === undefined) return this.reset(seq);
    const d = seqDiff(seq, this.highest);
    if (d > 0) {
      if (d >= this.size) this.seen.fill(0);
      else for (let i = 1; i < d; i++) this.seen[(this.highest + i) % this.size] = 0;
      this.highest = seq >>> 0;
      this.seen[this.highest % this.size] = 1;
      this.lateRun = 0;
      return "ok";
    }
    if (-d >= this.size) {
      // A sender that restarted its sequence (new encoder, bug) would otherwise be dropped forever: after
      // half a second of consistently "late" frames, resynchronise on the new numbering.
      if (++this.lateRun > 25) return this.reset(seq);
      return "late";
    }
    const slot = (seq >>> 0) % this.size;
    if (this.seen[slot]) return "duplicate";
    this.seen[slot] = 1;
    this.lateRun = 0;
    return "reordered";
  }

  private reset(seq: number): "ok" {
    this.seen.fill(0);
    this.highest = seq >>> 0;
    this.seen[this.highest % this.size] = 1;
    this.lateRun = 0;
    return "ok";
  }
}

type SessionState = "awaiting_join" | "joined" | "closing" | "closed";

/** Re-reads the state (a handler may have closed the session; TS would keep an earlier narrowing). */
function isEnded(s: { state: SessionState }): boolean {
  return s.state === "closing" || s.state === "closed";
}

/**
 * A token bucket whose rate and size may change between calls (they scale with a principal's streams).
 * Hand-written rather than @libp2p/utils' RateLimiter: that one is a fixed window of points per duration,
 * which lets through twice the limit across a window edge and cannot scale with the live stream count.
 */
class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(size: number, now: number) {
    this.tokens = size;
    this.at = now;
  }
  take(now: number, ratePerSecond: number, size: number): boolean {
    this.tokens = Math.min(size, this.tokens + ((now - this.at) * ratePerSecond) / 1000);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  /** Full again (so forgetting the principal loses nothing). */
  isFull(now: number, ratePerSecond: number, size: number): boolean {
    return this.tokens + ((now - this.at) * ratePerSecond) / 1000 >= size;
  }
}

/** A remote peer or a remote IP: what its streams share. */
interface Principal {
  readonly kind: "peer" | "ip";
  streams: number;
  joined: number;
  /** stream opens refused in a row (reset by an admitted one) */
  refusals: number;
  /** disconnected for ignoring its limits: until then, each new stream closes its connection */
  penaltyUntil: number;
  readonly joins: TokenBucket;
  readonly frames: TokenBucket;
}

/** The IP a connection comes from, IPv6 cut to its /64; undefined for relayed connections (the relay's IP). */
export function remoteIpKey(addr: string): string | undefined {
  if (addr.includes("/p2p-circuit")) return undefined;
  const m = /^\/(ip4|ip6)\/([^/]+)/.exec(addr);
  if (!m) return undefined;
  if (m[1] === "ip4") return m[2];
  const ip = m[2]!.toLowerCase();
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = ip.includes("::") ? (tail ? tail.split(":") : []) : [];
  const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

interface Session {
  readonly stream: Stream;
  readonly peer: string;
  readonly principals: Principal[];
  /** Over a per-peer/per-IP limit at open: refused (RATE_LIMITED) on its first data or the next sweep. */
  refused?: PeerLimit;
  /** When the server last sent a PING (0 = not since the client was last heard). */
  pingedAt: number;
  readonly openedAt: number;
  state: SessionState;
  log: Logger;
  room?: string;
  participantId?: string;
  name?: string;
  lastRxAt: number;
  tokens: number;
  tokensAt: number;
  readonly decoder: MessageDecoder;
  readonly queue: OutboundQueue;
  readonly seq: SeqWindow;
  /** JOIN/JOINED version of the negotiated protocol id: 1 on 1.0.0, 2 on 1.1.0 (extensions, new types). */
  readonly wireVersion: number;
  /** Capabilities the client announced in JOIN (1.1.0), 0 before JOIN or on 1.0.0. */
  clientCapabilities: number;
  /** Its entry in the room's roster while joined. */
  rosterMember?: RosterMember;
  /** Voice datagrams of this session, when both sides announced UDP_DATAGRAMS and the connection is direct. */
  udp?: UdpVoiceSession;
  /** the connection is relayed (no direct path for datagrams) */
  readonly relayed: boolean;
  /** MIX_SETTINGS rate: when the last one was applied, and the one waiting for its turn. */
  mixAppliedAt: number;
  mixPending?: MixSettingsMessage;
  mixTimer?: ReturnType<typeof setTimeout>;
  /** raw Ed25519 key of the remote peer (libp2p authenticated it); undefined for other key types */
  readonly remoteKey?: Uint8Array;
  /** Role in the room (Role): speaker in open rooms, the grant's role in owned ones. */
  role: number;
  /** server-side mute by a moderator: its AUDIO is dropped */
  muted: boolean;
  /** what the engine was last told of this participant (setCanSpeak); the engine's default is true */
  engineCanSpeak?: boolean;
  /** promoted by a moderator from listener to speaker (carried with a MOVE) */
  promoted: boolean;
  /** the verified grant (owned rooms) */
  grant?: VerifiedGrant;
  /** last MODERATE request id accepted (ids must increase: a replayed request is refused) */
  lastRequestId: number;
  /** a JOIN is being placed (directory lookup in flight): a second JOIN is unexpected */
  placing?: boolean;
  /** MOVE already sent on this session (a session is moved at most once) */
  moved?: boolean;
}

/** Per owned room state the service keeps beside its sessions. */
interface AccessRoomState {
  locked: boolean;
}
const MAX_ROOM_STATES = 10_000;

export class AudioRoomService {
  private readonly limits: AudioServiceLimits;
  private readonly metrics: NetMetrics;
  private readonly log: Logger;
  private readonly sessions = new Set<Session>();
  private readonly participantIds = new Set<string>();
  private readonly principals = new Map<string, Principal>();
  /** Joined participants per room on this node (for onRoomParticipants). */
  private readonly roomCounts = new Map<string, number>();
  private readonly now: () => number;
  private bitrate: number;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private spreadTimer: ReturnType<typeof setTimeout> | undefined;
  private running = false;
  private draining = false;
  /** Capability bits this server offers in JOINED on 1.1.0 sessions (features OR theirs in as they land). */
  private readonly roster: RosterPublisher;
  private readonly capabilities: number;
  private reportTimer: ReturnType<typeof setInterval> | undefined;
  private readonly wallClock: () => number;
  private readonly revocations: RevocationStore;
  private readonly roomStates = new Map<string, AccessRoomState>();

  constructor(private readonly opts: AudioRoomServiceOptions) {
    this.limits = { ...DEFAULT_AUDIO_SERVICE_LIMITS, ...opts.limits };
    for (const [k, v] of Object.entries(this.limits))
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
        throw new AgoraError("CONFIG_INVALID", `audio service limit ${k} must be a positive number, got ${v}`);
    this.metrics = createMetrics(opts.registry);
    this.log = opts.logger.child({ component: "audio-net" });
    this.now = opts.now ?? (() => performance.now());
    this.wallClock = opts.wallClock ?? (() => Date.now());
    this.revocations = opts.revocations ?? new MemoryRevocationStore();
    this.capabilities =
      Capability.ROSTER |
      Capability.VOICE_ACTIVITY |
      Capability.PERSONAL_MIX |
      Capability.ACCESS_CONTROL |
      (opts.udp ? Capability.UDP_DATAGRAMS : 0) |
      (opts.host ? Capability.ROOM_DIRECTORY : 0);
    this.bitrate = opts.bitrate ?? 32_000;
    this.roster = new RosterPublisher({
      registry: opts.registry,
      now: this.now,
      intervalMs: this.limits.rosterIntervalMs,
      speaking: () => speakingByRoom(this.opts.engine.rooms()),
    });
    opts.host?.bind({ hostedRooms: () => this.hostedRooms(), move: (room, target, token) => this.moveRoom(room, target, token) });
  }

  /** Joined participants that were sent a MOVE and have not left yet (a drain waits for them). */
  movingParticipants(): number {
    let n = 0;
    for (const s of this.sessions) if (s.state === "joined" && s.moved) n++;
    return n;
  }

  /** Joined participants per room. */
  hostedRooms(): Map<string, number> {
    const out = new Map<string, number>();
    for (const s of this.sessions) if (s.state === "joined" && s.room) out.set(s.room, (out.get(s.room) ?? 0) + 1);
    return out;
  }

  /**
   * Sends MOVE (successor, token) to each directory-aware participant of `room`; they stay joined here until
   * they leave (make-before-break on the client). Returns how many were told.
   */
  async moveRoom(
    room: string,
    target: { successorPeerId: string; addrs: string[]; epoch: number; reason: number },
    token: (participantPeer: string, access?: MoveTokenAccess) => Promise<Uint8Array>,
  ): Promise<number> {
    const targets = [...this.sessions].filter(
      (s) => s.state === "joined" && s.room === room && !s.moved && (s.clientCapabilities & Capability.ROOM_DIRECTORY) !== 0,
    );
    let told = 0;
    await Promise.all(
      targets.map(async (s) => {
        let t: Uint8Array;
        try {
          // Owned rooms: what of the participant's access is not in its grant travels in its token.
          const access = s.grant
            ? {
                promoted: s.promoted,
                muted: s.muted,
                locked: this.roomStates.get(room)?.locked ?? false,
                grantLinkId: s.grant.linkIds.at(-1)!,
              }
            : undefined;
          t = await token(s.peer, access);
        } catch (err) {
          s.log.warn({ err: errorMessage(err) }, "could not sign a move token");
          return;
        }
        if (s.state !== "joined" || s.moved) return;
        s.moved = true;
        s.queue.send(encodeMessage({ type: "MOVE", room, ...target, token: t }), false);
        told++;
      }),
    );
    return told;
  }

  /** Applies settings that may change while running; takes effect for the next JOIN. */
  updateSettings(settings: Partial<AudioRoomSettings>): void {
    if (settings.bitrate !== undefined) {
      if (!Number.isInteger(settings.bitrate) || settings.bitrate <= 0 || settings.bitrate > 0xffffffff)
        throw new AgoraError("CONFIG_INVALID", `audio bitrate must be a positive integer (bit/s), got ${settings.bitrate}`);
      if (settings.bitrate !== this.bitrate) this.log.info({ bitrate: settings.bitrate }, "suggested bitrate changed");
      this.bitrate = settings.bitrate;
    }
  }

  /** The oldest protocol id served (every id in `protocols` is). */
  get protocol(): string {
    return AUDIO_PROTOCOL;
  }

  /** Protocol ids served, newest first. */
  get protocols(): readonly string[] {
    return AUDIO_PROTOCOLS;
  }

  async start(): Promise<void> {
    if (this.running) return;
    await this.opts.libp2p.handle([...AUDIO_PROTOCOLS], (stream, connection) => this.onStream(stream, connection), {
      maxInboundStreams: this.limits.maxStreamsPerConnection,
      // Voice through a relay is the point of relay mode (its limits are sized for calls).
      runOnLimitedConnection: true,
    });
    this.running = true;
    const sweepMs = Math.max(
      50,
      Math.min(1000, Math.floor(Math.min(this.limits.idleTimeoutMs, this.limits.joinTimeoutMs, this.limits.pingIntervalMs) / 4)),
    );
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref?.();
    this.roster.start();
    if (this.opts.udp) {
      this.opts.udp.start();
      this.reportTimer = setInterval(() => this.udpTick(), this.opts.udp.limits.reportIntervalMs);
      this.reportTimer.unref?.();
    }
    this.log.info({ protocols: AUDIO_PROTOCOLS }, "audio protocol registered");
  }

  /** Unregisters the protocol and closes every stream with SHUTTING_DOWN; bounded by closeTimeoutMs. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    if (this.reportTimer) clearInterval(this.reportTimer);
    this.reportTimer = undefined;
    clearTimeout(this.spreadTimer);
    this.spreadTimer = undefined;
    this.roster.stop();
    try {
      await this.opts.libp2p.unhandle([...AUDIO_PROTOCOLS]);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "unhandle audio protocol failed");
    }
    const closing = [...this.sessions].map((s) =>
      this.closeSession(s, { code: WireErrorCode.SHUTTING_DOWN, message: "node is shutting down" }),
    );
    await Promise.allSettled(closing);
    this.opts.udp?.stop();
    this.log.info("audio protocol stopped");
  }

  /** While draining, new JOINs are refused with DRAINING; joined participants stay. */
  setDraining(draining: boolean): void {
    if (this.draining !== draining)
      this.log.info({ draining }, draining ? "audio: refusing new joins (draining)" : "audio: accepting joins again");
    this.draining = draining;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  rooms(): RoomStats[] {
    return this.opts.engine.rooms();
  }

  participantCount(): number {
    return this.opts.engine.participantCount();
  }

  /** Open audio streams, joined or still awaiting JOIN. */
  streamCount(): number {
    return this.sessions.size;
  }

  // -------------------------------------------------------------------------------------------------------

  private onStream(stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString();
    if (!this.running) {
      stream.abort(new AgoraError("SHUTTING_DOWN", "audio service stopped"));
      return;
    }
    const now = this.now();
    const peerPrincipal = this.principal("peer", peer, now);
    if (peerPrincipal.penaltyUntil > now) {
      this.metrics.limited.inc({ limit: "peer_disconnected" satisfies LimitLabel });
      connection.abort(new AgoraError("WIRE_PROTOCOL", "audio stream limits ignored; try again later"));
      return;
    }
    const principals = [peerPrincipal];
    const ip = remoteIpKey(connection.remoteAddr.toString());
    if (ip !== undefined) principals.push(this.principal("ip", ip, now));
    const s: Session = {
      stream,
      peer,
      principals,
      pingedAt: 0,
      openedAt: now,
      state: "awaiting_join",
      log: this.log.child({ peer, stream: stream.id }),
      lastRxAt: now,
      tokens: this.limits.burstMessages,
      tokensAt: now,
      decoder: new MessageDecoder(),
      queue: new OutboundQueue(stream, this.limits.sendQueueFrames, () => this.metrics.framesDropped.inc({ reason: "send_queue" })),
      seq: new SeqWindow(this.limits.reorderWindow),
      wireVersion: wireVersionForProtocol(stream.protocol ?? "") ?? WIRE_VERSION,
      clientCapabilities: 0,
      relayed: ip === undefined,
      mixAppliedAt: Number.NEGATIVE_INFINITY,
      remoteKey: connection.remotePeer.type === "Ed25519" ? connection.remotePeer.publicKey.raw : undefined,
      role: Role.SPEAKER,
      muted: false,
      promoted: false,
      lastRequestId: -1,
    };
    this.sessions.add(s);
    this.metrics.streamsActive.inc();
    // Bounded read buffer: we never pause the stream, so anything piling up here means we stopped reading
    // (closing) and the peer keeps pushing.
    stream.maxReadBufferLength = 64 * 1024;
    stream.addEventListener("message", (evt) => this.guard(s, () => this.onData(s, chunkBytes(evt.data))));
    stream.addEventListener("remoteCloseWrite", () => this.guard(s, () => this.onRemoteCloseWrite(s)));
    stream.addEventListener("close", (evt) => this.guard(s, () => this.onClosed(s, evt.error)));
    for (const p of principals) p.streams++;
    // Decided before anything of the stream is read: a refused stream costs one ERROR and a reset, nothing
    // is parsed, and it is logged at debug level only (a storm must not become a storm of log lines). The
    // ERROR goes out when the client's first bytes arrive (or at the next sweep): a reset while the client
    // is still reading the multistream-select answer would lose the ERROR in its dial.
    s.refused = this.admit(principals, now);
    if (!s.refused) peerPrincipal.refusals = 0;
    else {
      this.metrics.limited.inc({ limit: s.refused });
      if (++peerPrincipal.refusals >= this.limits.disconnectAfterRefusals) {
        peerPrincipal.refusals = 0;
        peerPrincipal.penaltyUntil = now + this.limits.penaltyMs;
        this.metrics.limited.inc({ limit: "peer_disconnected" satisfies LimitLabel });
        this.log.warn({ peer, limit: s.refused }, "peer keeps opening audio streams over its limit; closing its connection");
        connection.abort(
          new AgoraError("WIRE_PROTOCOL", `audio stream limit ${s.refused} ignored ${this.limits.disconnectAfterRefusals} times`),
        );
        return;
      }
    }
    s.log.debug("audio stream opened");
  }

  private refuse(s: Session, limit: PeerLimit): void {
    const what = limit.endsWith("joins") ? "stream opens" : "open streams";
    const per = limit.startsWith("peer") ? "peer" : "IP address";
    this.fail(s, WireErrorCode.RATE_LIMITED, `too many ${what} from this ${per} (${limit})`, "rate_limited", "debug");
  }

  private principal(kind: "peer" | "ip", key: string, now: number): Principal {
    const k = `${kind}:${key}`;
    let p = this.principals.get(k);
    if (!p) {
      const burst = kind === "peer" ? this.limits.peerJoinBurst : this.limits.ipJoinBurst;
      p = {
        kind,
        streams: 0,
        joined: 0,
        refusals: 0,
        penaltyUntil: 0,
        joins: new TokenBucket(burst, now),
        frames: new TokenBucket(this.limits.burstMessages, now),
      };
      this.principals.set(k, p);
    }
    return p;
  }

  /** The first per-peer/per-IP limit a new stream breaks, or undefined (the stream is already counted). */
  private admit(principals: Principal[], now: number): PeerLimit | undefined {
    const L = this.limits;
    for (const p of principals) {
      const [rate, burst, max] =
        p.kind === "peer" ? [L.peerJoinsPerSecond, L.peerJoinBurst, L.peerMaxStreams] : [L.ipJoinsPerSecond, L.ipJoinBurst, L.ipMaxStreams];
      if (!p.joins.take(now, rate, burst)) return p.kind === "peer" ? "peer_joins" : "ip_joins";
      if (p.streams > max) return p.kind === "peer" ? "peer_streams" : "ip_streams";
    }
    return undefined;
  }

  /**
   * Pooled frame budget of the session's peer, then of its IP; the reason to drop this frame, if any. The
   * IP's pool is twice the sum of its streams' shares: it is the backstop against many peer ids behind one
   * address, and one flooding peer (stopped by its own pool first) cannot starve its neighbours' share.
   */
  private takeFrame(s: Session, now: number): PeerLimit | undefined {
    const L = this.limits;
    for (const p of s.principals) {
      const n = Math.max(1, p.joined) * (p.kind === "ip" ? 2 : 1);
      if (!p.frames.take(now, L.framesPerStreamPerSecond * n, L.burstMessages * n)) return p.kind === "peer" ? "peer_frames" : "ip_frames";
    }
    return undefined;
  }

  /** Forgets principals with no stream whose buckets have refilled: nothing is lost, memory stays bounded. */
  private prunePrincipals(now: number): void {
    const L = this.limits;
    for (const [k, p] of this.principals) {
      if (p.streams > 0 || p.penaltyUntil > now) continue;
      const [rate, burst] = p.kind === "peer" ? [L.peerJoinsPerSecond, L.peerJoinBurst] : [L.ipJoinsPerSecond, L.ipJoinBurst];
      if (p.joins.isFull(now, rate, burst) && p.frames.isFull(now, L.framesPerStreamPerSecond, L.burstMessages)) this.principals.delete(k);
    }
  }

  /** Last line of isolation: a bug in one session's handling closes that session, nothing else. */
  private guard(s: Session, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      s.log.error({ err: errorMessage(err) }, "audio session failed");
      this.fail(s, WireErrorCode.INTERNAL, "internal error", "internal");
    }
  }

  private onData(s: Session, bytes: Uint8Array): void {
    if (s.state === "closing" || s.state === "closed") return;
    if (s.refused) {
      this.refuse(s, s.refused);
      return;
    }
    const now = this.now();
    s.lastRxAt = now;
    s.pingedAt = 0;
    const { messages, error } = s.decoder.push(bytes);
    for (const m of messages) {
      if (!this.takeToken(s, now)) {
        this.fail(s, WireErrorCode.RATE_LIMITED, `more than ${this.limits.maxMessagesPerSecond} messages/s sustained`, "flood");
        return;
      }
      this.onMessage(s, m);
      if (isEnded(s)) return;
    }
    if (error) this.fail(s, wireErrorCodeFor(error.reason), error.message, error.reason);
  }

  private takeToken(s: Session, now: number): boolean {
    s.tokens = Math.min(this.limits.burstMessages, s.tokens + ((now - s.tokensAt) * this.limits.maxMessagesPerSecond) / 1000);
    s.tokensAt = now;
    if (s.tokens < 1) return false;
    s.tokens -= 1;
    return true;
  }

  private onMessage(s: Session, m: WireMessage): void {
    switch (m.type) {
      case "AUDIO": {
        if (s.state !== "joined") {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "AUDIO before JOIN", "unexpected_message");
          return;
        }
        if (m.voice !== undefined && !this.negotiated(s, Capability.VOICE_ACTIVITY)) {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "AUDIO_VAD needs VOICE_ACTIVITY announced on 1.1.0", "unexpected_message");
          return;
        }
        if (checkOpusPacket(m.payload) !== undefined) {
          // A broken encoder is not hostile: drop the frame (the mixer conceals it), keep the participant.
          this.metrics.framesDropped.inc({ reason: "invalid_opus" });
          return;
        }
        const frame: AudioFrame = { seq: m.seq, timestamp: m.timestamp, payload: m.payload };
        if (m.voice !== undefined) frame.voice = m.voice;
        this.acceptFrame(s, frame);
        return;
      }
      case "UDP_REPORT":
        if (!s.udp) {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "UDP_REPORT on a session without voice datagrams", "unexpected_message");
          return;
        }
        s.udp.policy.report(m.received, this.now());
        return;
      case "PING":
        s.queue.send(encodeMessage({ type: "PONG", nonce: m.nonce }), false);
        return;
      case "PONG":
        return;
      case "MIX_SETTINGS":
        if (s.state !== "joined") {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "MIX_SETTINGS before JOIN", "unexpected_message");
          return;
        }
        if (!this.negotiated(s, Capability.PERSONAL_MIX)) {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "MIX_SETTINGS needs PERSONAL_MIX announced on 1.1.0", "unexpected_message");
          return;
        }
        this.mixSettings(s, m);
        return;
      case "JOIN":
        if (s.state !== "awaiting_join" || s.placing) {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "second JOIN on one stream", "unexpected_message");
          return;
        }
        this.join(s, m);
        return;
      case "LEAVE":
        s.log.debug("participant left");
        void this.closeSession(s);
        return;
      case "ERROR":
        // A client giving up with a reason: log it and close quietly; it is not our error to count.
        s.log.info({ code: m.code, message: m.message }, "client sent ERROR");
        void this.closeSession(s);
        return;
      case "MODERATE":
        if (s.wireVersion < WIRE_VERSION_1_1) {
          this.fail(s, WireErrorCode.MALFORMED, "unknown message type 0x30 on /agora/audio/1.0.0", "bad_type");
          return;
        }
        if (s.state !== "joined") {
          this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, "MODERATE before JOIN", "unexpected_message");
          return;
        }
        this.moderate(s, m);
        return;
      case "MODERATE_RESULT":
      case "MODERATION":
        if (s.wireVersion < WIRE_VERSION_1_1) {
          this.fail(s, WireErrorCode.MALFORMED, `unknown message type ${m.type} on /agora/audio/1.0.0`, "bad_type");
          return;
        }
        this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, `${m.type} is sent by servers only`, "unexpected_message");
        return;
      case "JOINED":
      case "REDIRECT":
      case "MOVE":
      case "ROSTER":
        this.fail(s, WireErrorCode.UNEXPECTED_MESSAGE, `${m.type} is sent by servers only`, "unexpected_message");
        return;
    }
  }

  /**
   * Tells the engine whether the participant may be heard (its role and mute, acceptFrame's first rule): the
   * core then never mixes it, and the media worker drops its voice datagrams, which never pass through
   * acceptFrame when the worker carries them.
   */
  private gateVoice(s: Session): void {
    if (s.state !== "joined" || !s.room || !s.participantId) return;
    const canSpeak = s.role >= Role.SPEAKER && !s.muted;
    if ((s.engineCanSpeak ?? true) === canSpeak) return;
    s.engineCanSpeak = canSpeak;
    try {
      this.opts.engine.setCanSpeak(s.room, s.participantId, canSpeak);
    } catch (err) {
      s.log.warn({ err: errorMessage(err) }, "engine.setCanSpeak failed");
    }
  }

  /**
   * One inbound frame, from the stream or a datagram (already checked as Opus): one sequence window for both
   * paths, so a frame that came both ways during a switch reaches the engine once.
   */
  private acceptFrame(s: Session, frame: AudioFrame): void {
    // A listener's (or a muted speaker's) audio is never mixed: dropped before anything else, on either path.
    if (s.role < Role.SPEAKER || s.muted) {
      this.metrics.framesDropped.inc({ reason: s.muted ? "muted" : "listener" });
      return;
    }
    const verdict = s.seq.accept(frame.seq);
    if (verdict === "duplicate" || verdict === "late") {
      this.metrics.framesDropped.inc({ reason: verdict });
      return;
    }
    if (verdict === "reordered") this.metrics.framesReordered.inc();
    const limited = this.takeFrame(s, this.now());
    if (limited) {
      this.metrics.limited.inc({ limit: limited });
      this.metrics.framesDropped.inc({ reason: "rate_limited" });
      return;
    }
    this.opts.engine.pushFrame(s.room!, s.participantId!, frame);
    this.metrics.framesIn.inc();
  }

  /** Datagram offer for a session that may use one: 1.1.0, both announced UDP_DATAGRAMS, a direct connection. */
  private openUdp(s: Session): UdpVoiceSession | undefined {
    const udp = this.opts.udp;
    if (!udp || s.wireVersion < WIRE_VERSION_1_1 || (s.clientCapabilities & Capability.UDP_DATAGRAMS) === 0 || s.relayed) return undefined;
    // The voice-activity bit reaches the engine only from a client that announced it means it.
    const voice = (s.clientCapabilities & Capability.VOICE_ACTIVITY) !== 0;
    return udp.open(
      {
        onFrame: (frame) =>
          this.guard(s, () => {
            if (s.state !== "joined") return;
            if (!voice) frame.voice = undefined;
            this.acceptFrame(s, frame);
          }),
        onAlive: () => {
          s.lastRxAt = this.now();
          s.pingedAt = 0;
        },
        // the media worker's share of acceptFrame's first rule (datagrams it carries never come here)
        onSilenced: (n) => this.metrics.framesDropped.inc({ reason: s.muted ? "muted" : "listener" }, n),
      },
      { room: s.room!, participant: s.participantId!, trustVoice: voice },
    );
  }

  /**
   * Every report interval: UDP_REPORT to clients that sent datagrams when one is due (every second while the
   * count rises, at once when it stalled or resumed), keepalives where nothing went out.
   */
  private udpTick(): void {
    const udp = this.opts.udp;
    if (!udp) return;
    const now = this.now();
    for (const s of this.sessions) {
      const u = s.udp;
      if (!u || s.state !== "joined") continue;
      this.guard(s, () => {
        if (u.reports.due(u.received, now)) s.queue.send(encodeMessage({ type: "UDP_REPORT", received: u.received }), false);
        u.policy.evaluate(now);
        if (u.bound && now - u.lastTxAt >= udp.limits.reportIntervalMs) udp.send(u, undefined);
      });
    }
    udp.logDrops();
    udp.pruneSources(now);
  }

  /** A 1.1.0 feature both sides announced. */
  private negotiated(s: Session, cap: number): boolean {
    return s.wireVersion >= WIRE_VERSION_1_1 && (s.clientCapabilities & this.capabilities & cap) !== 0;
  }

  /**
   * Applies a listener's mix settings, at most MIX_SETTINGS_PER_SECOND per second: a faster sender (a
   * volume slider) has its latest settings applied when its turn comes, the ones in between are skipped.
   */
  private mixSettings(s: Session, m: MixSettingsMessage): void {
    const now = this.now();
    const wait = s.mixAppliedAt + 1000 / MIX_SETTINGS_PER_SECOND - now;
    if (wait > 0) {
      this.metrics.mixSettings.inc({ result: "coalesced" });
      s.mixPending = m;
      s.mixTimer ??= setTimeout(() => {
        s.mixTimer = undefined;
        const pending = s.mixPending;
        s.mixPending = undefined;
        if (pending && s.state === "joined") this.guard(s, () => this.applyMixSettings(s, pending, this.now()));
      }, wait);
      return;
    }
    this.applyMixSettings(s, m, now);
  }

  private applyMixSettings(s: Session, m: MixSettingsMessage, now: number): void {
    s.mixAppliedAt = now;
    try {
      const r = this.opts.engine.setMixGains(s.room!, s.participantId!, m.gains);
      if (r.unknown.length > 0) {
        // Not hostile: a source may have left while the message was on its way.
        this.metrics.mixSettings.inc({ result: "unknown_participant" });
        s.log.debug({ unknown: r.unknown.slice(0, 4), count: r.unknown.length }, "MIX_SETTINGS names participants not in the room");
      } else {
        this.metrics.mixSettings.inc({ result: "applied" });
      }
    } catch (err) {
      this.metrics.mixSettings.inc({ result: "engine_error" });
      s.log.warn({ err: errorMessage(err) }, "MIX_SETTINGS not applied");
    }
  }

  /**
   * Admission to an owned room: the grant verified offline against the owner key the room id names (see
   * docs/access.md), the connection's key, the revocations and the room's lock. Returns the role, or
   * refuses the JOIN with FORBIDDEN (counted by reason) and returns undefined. Open rooms admit speakers.
   */
  private admitAccess(s: Session, m: JoinMessage): { role: number; grant?: VerifiedGrant } | undefined {
    if (!roomOwnership(m.room).owned) return { role: Role.SPEAKER };
    const deny = (reason: AccessDeniedReason, message: string): undefined => {
      this.metrics.accessDenied.inc({ reason });
      this.metrics.joins.inc({ result: "forbidden" });
      // debug, as other refusals: a storm of forbidden JOINs must not become a storm of log lines (counted)
      s.log.debug({ room: m.room, reason }, `join refused: ${message}`);
      void this.closeSession(s, { code: WireErrorCode.FORBIDDEN, message });
      return undefined;
    };
    if (!m.grant) return deny("no_grant", `room ${m.room} is owned: JOIN must carry a grant`);
    const now = this.wallClock();
    let grant: VerifiedGrant;
    try {
      grant = verifyGrant(m.grant, {
        room: m.room,
        now,
        remoteKey: s.remoteKey,
        revoked: (id, at) => this.revocations.isRevoked(m.room, id, at),
      });
    } catch (err) {
      if (err instanceof GrantError) return deny(err.reason, err.message);
      throw err;
    }
    if (s.remoteKey && this.revocations.isRevoked(m.room, toHex(s.remoteKey), now))
      return deny("revoked", "this participant key is banned from the room");
    return { role: grant.role, grant };
  }

  /**
   * The last access step, once the JOIN is placed here: what a verified move token carried (from the room
   * host's decision, or the `carriedAccess` hook) applies on top of the grant, never beyond it, and the room's
   * lock refuses newcomers without a moderator role (participants the token names were inside already).
   * False when the JOIN was refused.
   */
  private finishAccess(s: Session, m: JoinMessage, fromHost?: MoveTokenAccess): boolean {
    const grant = s.grant;
    if (!grant) return true;
    const carried: CarriedAccess | undefined = fromHost
      ? {
          room: m.room,
          locked: fromHost.locked,
          participants: [{ linkId: fromHost.grantLinkId, promoted: fromHost.promoted, muted: fromHost.muted }],
        }
      : m.moveToken
        ? this.opts.carriedAccess?.(m.room, m.moveToken)
        : undefined;
    const mine = carried?.room === m.room ? carried.participants.find((p) => p.linkId === grant.linkIds.at(-1)) : undefined;
    if (mine && carried?.locked) this.roomState(m.room).locked = true;
    if (!mine && this.roomStates.get(m.room)?.locked && grant.role < Role.MODERATOR) {
      this.metrics.accessDenied.inc({ reason: "locked" });
      this.metrics.joins.inc({ result: "forbidden" });
      s.log.debug({ room: m.room, reason: "locked" }, "join refused: room locked");
      void this.closeSession(s, { code: WireErrorCode.FORBIDDEN, message: `room ${m.room} is locked: only moderators may join` });
      return false;
    }
    const { role, muted } = applyCarried(grant, mine);
    s.role = role;
    s.muted = muted;
    s.promoted = role > grant.role;
    return true;
  }

  /**
   * The access state of a room to carry with a MOVE (placement signs it into the move token): who was
   * promoted or muted, and whether the room is locked. Roles themselves are not carried: grants are.
   */
  accessSnapshot(room: string): CarriedAccess {
    return {
      room,
      locked: this.roomStates.get(room)?.locked ?? false,
      participants: this.roomSessions(room)
        .filter((x) => x.grant && (x.promoted || x.muted))
        .map((x) => ({ linkId: x.grant!.linkIds.at(-1)!, peer: x.peer, promoted: x.promoted, muted: x.muted })),
    };
  }

  private roomSessions(room: string): Session[] {
    return [...this.sessions].filter((x) => x.state === "joined" && x.room === room);
  }

  /** A moderator's rank: 0 for the owner's own key, else the length of its delegation chain (lower = more). */
  private rank(s: Session): number {
    if (!s.grant) return Number.MAX_SAFE_INTEGER;
    return s.grant.subject && s.grant.keys[0] === toHex(s.grant.subject) ? 0 : s.grant.linkIds.length;
  }

  private roomState(room: string): AccessRoomState {
    let st = this.roomStates.get(room);
    if (!st) {
      if (this.roomStates.size >= MAX_ROOM_STATES) this.roomStates.delete(this.roomStates.keys().next().value!);
      st = { locked: false };
      this.roomStates.set(room, st);
    }
    return st;
  }

  /**
   * One MODERATE: from a moderator whose grant is bound to its key, signed by that key over this room and
   * session, with a request id above the last one. Answered with MODERATE_RESULT; what happened is told to
   * the room with MODERATION (participants that announced ACCESS_CONTROL).
   */
  private moderate(s: Session, m: ModerateMessage): undefined {
    const actionName =
      Object.entries(ModerateAction)
        .find(([, v]) => v === m.action)?.[0]
        ?.toLowerCase() ?? "unknown";
    const answer = (result: ModerationResult, code: number, message: string): undefined => {
      this.metrics.moderation.inc({ action: actionName, result });
      if (result !== "ok") s.log.info({ action: actionName, result }, `moderation refused: ${message}`);
      if (s.clientCapabilities & Capability.ACCESS_CONTROL)
        s.queue.send(encodeMessage({ type: "MODERATE_RESULT", requestId: m.requestId, code, message }), false);
    };
    const room = s.room!;
    const now = this.wallClock();
    const g = s.grant;
    // The grant is checked again: it may have expired or been revoked since the JOIN.
    const revoked = g && [...g.linkIds, ...g.keys.slice(1)].some((id) => this.revocations.isRevoked(room, id, now));
    if (!g || s.role < Role.MODERATOR || !g.subject || now >= g.expiresAt || revoked)
      return answer(
        "not_moderator",
        WireErrorCode.FORBIDDEN,
        "only a participant with a bound, unexpired, unrevoked moderator grant may moderate",
      );
    if (!verifyModerate(g.subject, { room, participantId: s.participantId! }, m))
      return answer("bad_signature", WireErrorCode.FORBIDDEN, "MODERATE signature does not verify with the moderator's key");
    if (m.requestId <= s.lastRequestId) return answer("replayed", WireErrorCode.FORBIDDEN, `request id ${m.requestId} was already used`);
    s.lastRequestId = m.requestId;
    const notify = (target: string, until = 0): void => {
      const notice = encodeMessage({ type: "MODERATION", action: m.action, target, by: s.participantId!, until });
      for (const x of this.roomSessions(room)) if (x.clientCapabilities & Capability.ACCESS_CONTROL) x.queue.send(notice, false);
    };
    const A = ModerateAction;
    switch (m.action) {
      case A.LOCK:
      case A.UNLOCK:
        this.roomState(room).locked = m.action === A.LOCK;
        answer("ok", 0, m.action === A.LOCK ? "room locked" : "room unlocked");
        notify("");
        return;
      case A.END: {
        this.roomState(room).locked = true;
        answer("ok", 0, "room ended");
        notify("");
        for (const x of this.roomSessions(room))
          void this.closeSession(x, { code: WireErrorCode.FORBIDDEN, message: "the room was ended by a moderator" });
        return;
      }
      case A.REVOKE: {
        if (!/^[0-9a-f]{1,64}$/.test(m.target) || m.until <= now)
          return answer("bad_target", WireErrorCode.MALFORMED, "REVOKE needs a hex id (grant link id or key) and an until in the future");
        if (!this.revocations.revoke(room, { id: m.target, until: m.until }, now))
          return answer("full", WireErrorCode.CAPACITY, "the room's revocation list is full");
        answer("ok", 0, "revoked");
        notify(m.target, m.until);
        for (const x of this.roomSessions(room))
          if (
            x.grant &&
            (x.grant.linkIds.includes(m.target) || x.grant.keys.includes(m.target) || (x.remoteKey && toHex(x.remoteKey) === m.target))
          )
            if (this.rank(x) !== 0) void this.closeSession(x, { code: WireErrorCode.FORBIDDEN, message: "your grant was revoked" });
        return;
      }
      case A.MUTE:
      case A.UNMUTE:
      case A.REMOVE:
      case A.BAN_KEY:
      case A.PROMOTE: {
        const t = this.roomSessions(room).find((x) => x.participantId === m.target);
        if (!t) return answer("bad_target", WireErrorCode.MALFORMED, `no participant ${m.target} in room ${room}`);
        // Rights never exceed the owner's delegation: a moderator acts on participants below it only.
        if (t !== s && t.role >= Role.MODERATOR && this.rank(t) <= this.rank(s))
          return answer("outranked", WireErrorCode.FORBIDDEN, `${m.target} is a moderator delegated at or above you`);
        if (m.action === A.MUTE || m.action === A.UNMUTE) {
          t.muted = m.action === A.MUTE;
          this.gateVoice(t);
          answer("ok", 0, t.muted ? "muted" : "unmuted");
          notify(m.target);
          return;
        }
        if (m.action === A.PROMOTE) {
          if (t.role === Role.LISTENER) {
            t.role = Role.SPEAKER;
            t.promoted = true;
            this.gateVoice(t);
          }
          answer("ok", 0, "promoted to speaker");
          notify(m.target);
          return;
        }
        // REMOVE / BAN_KEY: revoke so the same grant (or key) cannot rejoin, then close the target.
        const until = m.until > now ? m.until : (t.grant?.expiresAt ?? now + 86_400_000);
        const ids = t.grant ? [t.grant.linkIds[t.grant.linkIds.length - 1]!] : [];
        if (m.action === A.BAN_KEY && t.remoteKey) ids.push(toHex(t.remoteKey));
        for (const id of ids)
          if (!this.revocations.revoke(room, { id, until }, now))
            return answer("full", WireErrorCode.CAPACITY, "the room's revocation list is full");
        answer("ok", 0, m.action === A.BAN_KEY ? "removed and key banned" : "removed");
        notify(m.target, until);
        void this.closeSession(t, { code: WireErrorCode.FORBIDDEN, message: "removed from the room by a moderator" });
        return;
      }
      default:
        return answer("bad_action", WireErrorCode.MALFORMED, `unknown moderation action ${m.action}`);
    }
  }

  private join(s: Session, m: JoinMessage): void {
    if (m.version !== s.wireVersion) {
      this.metrics.joins.inc({ result: "error" });
      this.fail(
        s,
        WireErrorCode.UNSUPPORTED_VERSION,
        `JOIN version ${m.version} on ${s.stream.protocol}, which carries version ${s.wireVersion}`,
        "bad_version",
      );
      return;
    }
    s.clientCapabilities = m.capabilities ?? 0;
    // Access to an owned room first: a JOIN without the right grant is refused before it is placed (a
    // stranger must not make this node claim or look up the room), redirected or counted against capacity.
    const access = this.admitAccess(s, m);
    if (!access) return;
    s.role = access.role;
    s.grant = access.grant;
    const host = this.opts.host;
    if (host && s.wireVersion >= WIRE_VERSION_1_1 && (s.clientCapabilities & Capability.ROOM_DIRECTORY) !== 0) {
      // Placed by the room directory: admit here (claiming the room if nobody live hosts it) or REDIRECT.
      s.placing = true;
      void host
        .decide(m.room, s.peer, m.moveToken)
        .then((d) =>
          this.guard(s, () => {
            s.placing = false;
            if (isEnded(s)) {
              // Gone while being placed: a room claimed for it alone must not stay claimed (and republished).
              if (d.kind === "admit" && !this.hostedRooms().has(m.room)) host.roomEmptied(m.room);
              return;
            }
            if (d.kind === "redirect") {
              if (d.addrs.length === 0 && this.draining) {
                this.metrics.joins.inc({ result: "draining" });
                void this.closeSession(s, { code: WireErrorCode.DRAINING, message: "node is draining; join the room's successor" });
                return;
              }
              this.redirect(s, m.room, d);
              return;
            }
            if (this.draining && host.epochOf(m.room) === undefined) {
              this.metrics.joins.inc({ result: "draining" });
              void this.closeSession(s, {
                code: WireErrorCode.DRAINING,
                message: "node is draining and accepts no new participants; join another node",
              });
              return;
            }
            this.admitJoin(s, m, d.epoch, d.carried);
            // refused after all (access, capacity, the engine): no claim for a room nobody is in
            if (s.state !== "joined" && !this.hostedRooms().has(m.room)) host.roomEmptied(m.room);
          }),
        )
        .catch((err) =>
          this.guard(s, () => {
            throw err;
          }),
        );
      return;
    }
    if (this.draining) {
      this.metrics.joins.inc({ result: "draining" });
      void this.closeSession(s, {
        code: WireErrorCode.DRAINING,
        message: "node is draining and accepts no new participants; join another node",
      });
      return;
    }
    this.admitJoin(s, m);
  }

  private redirect(s: Session, room: string, d: { hostPeerId: string; addrs: string[]; epoch: number }): void {
    this.metrics.joins.inc({ result: "redirect" });
    this.opts.host?.redirected();
    s.log.debug({ room, host: d.hostPeerId }, "JOIN redirected to the room's host");
    // Written straight to the stream (as an ERROR is), not through the queue that closing discards.
    try {
      if (s.stream.writeStatus === "writable")
        s.stream.send(encodeMessage({ type: "REDIRECT", room, epoch: d.epoch, hostPeerId: d.hostPeerId, addrs: d.addrs.slice(0, 16) }));
    } catch {
      /* write end gone: the close below releases the session */
    }
    void this.closeSession(s);
  }

  private admitJoin(s: Session, m: JoinMessage, epoch?: number, carried?: MoveTokenAccess): void {
    if (!this.finishAccess(s, m, carried)) return;
    const participantId = this.newParticipantId();
    const sink = (frame: AudioFrame): void => this.onEngineFrame(s, frame);
    try {
      this.opts.engine.join(m.room, participantId, sink);
    } catch (err) {
      if (err instanceof AgoraError && err.code === "CAPACITY") {
        this.metrics.joins.inc({ result: "capacity" });
        void this.closeSession(s, { code: WireErrorCode.CAPACITY, message: err.message });
        return;
      }
      this.metrics.joins.inc({ result: "error" });
      s.log.error({ err: errorMessage(err), room: m.room }, "engine.join failed");
      this.fail(s, WireErrorCode.INTERNAL, "the media engine could not add this participant", "engine");
      return;
    }
    s.state = "joined";
    s.room = m.room;
    s.participantId = participantId;
    this.gateVoice(s);
    s.udp = this.openUdp(s);
    s.name = m.name;
    this.participantIds.add(participantId);
    for (const p of s.principals) p.joined++;
    s.log = s.log.child({ room: m.room, participant: participantId });
    this.metrics.joins.inc({ result: "ok" });
    s.queue.send(
      encodeMessage({
        type: "JOINED",
        version: s.wireVersion,
        participantId,
        sampleRate: SAMPLE_RATE,
        channels: CHANNELS,
        frameSamples: FRAME_SAMPLES,
        codec: CODEC_OPUS,
        bitrate: this.bitrate,
        serverTimeMs: Date.now(),
        ...(s.wireVersion >= WIRE_VERSION_1_1 ? { capabilities: this.capabilities, role: s.role } : {}),
        ...(s.udp ? { udp: { sessionId: s.udp.id, port: this.opts.udp!.port, key: s.udp.key, addrs: this.opts.udpAddrs ?? [] } } : {}),
        ...(s.wireVersion >= WIRE_VERSION_1_1 && epoch !== undefined ? { epoch } : {}),
      }),
      false,
    );
    s.log.info({ name: m.name || undefined }, "participant joined");
    s.rosterMember = {
      participantId,
      name: m.name,
      subscribed: s.wireVersion >= WIRE_VERSION_1_1 && (s.clientCapabilities & this.capabilities & Capability.ROSTER) !== 0,
      canSend: () => s.state === "joined" && s.queue.depth === 0,
      send: (bytes) => s.queue.send(bytes, false),
    };
    this.roster.add(m.room, s.rosterMember);
    this.roomParticipants(m.room, 1);
  }

  private roomParticipants(room: string, delta: number): void {
    const n = Math.max(0, (this.roomCounts.get(room) ?? 0) + delta);
    if (n === 0) this.roomCounts.delete(room);
    else this.roomCounts.set(room, n);
    try {
      this.opts.onRoomParticipants?.(room, n);
    } catch (err) {
      this.log.warn({ room, err: errorMessage(err) }, "room participants hook failed");
    }
  }

  private onEngineFrame(s: Session, frame: AudioFrame): void {
    // The worker may still deliver a frame or two after leave(): ignore them.
    if (s.state !== "joined") return;
    if (s.udp && this.opts.udp) {
      const route = s.udp.policy.route(this.now());
      const sent = route.datagram && this.opts.udp.send(s.udp, frame);
      if (sent && !route.stream) {
        this.metrics.framesOut.inc();
        return;
      }
    }
    let bytes: Uint8Array;
    try {
      // The mix goes out as plain AUDIO: AUDIO_VAD is client → server only.
      bytes = encodeAudio(frame.voice === undefined ? frame : { seq: frame.seq, timestamp: frame.timestamp, payload: frame.payload });
    } catch (err) {
      s.log.warn({ err: errorMessage(err) }, "engine produced an unsendable frame; dropped");
      this.metrics.framesDropped.inc({ reason: "invalid" });
      return;
    }
    const before = s.queue.sent;
    if (!s.queue.send(bytes, true)) return;
    if (s.queue.sent > before) this.metrics.framesOut.inc();
  }

  private onRemoteCloseWrite(s: Session): void {
    if (s.state === "closing" || s.state === "closed") return;
    if (s.decoder.bufferedBytes > 0) {
      this.fail(s, WireErrorCode.MALFORMED, `stream ended inside a message (${s.decoder.bufferedBytes} bytes pending)`, "truncated");
      return;
    }
    // The client closed its side without LEAVE: the same thing for us.
    void this.closeSession(s);
  }

  private onClosed(s: Session, error: Error | undefined): void {
    if (s.state === "closed") return;
    if (s.state !== "closing") {
      // Reset or connection lost without LEAVE (client crash, network cut).
      this.metrics.streamErrors.inc({ reason: "reset" });
      s.log.info({ err: error ? errorMessage(error) : undefined }, "audio stream reset by peer");
    }
    this.release(s);
  }

  /**
   * Timeouts and server PINGs. At most `maxExpiriesPerSweep` sessions are closed per pass; if more are due
   * (a whole room's clients vanished at once), the next pass runs `expirySpreadMs` later, so the closes and
   * engine leaves are spread over several mixer ticks instead of blocking the event loop in one go.
   */
  private sweep(): void {
    clearTimeout(this.spreadTimer);
    this.spreadTimer = undefined;
    const now = this.now();
    const L = this.limits;
    let expired = 0;
    let deferred = false;
    for (const s of this.sessions) {
      if (s.refused) {
        this.refuse(s, s.refused);
        continue;
      }
      const joinDue = s.state === "awaiting_join" && now - s.openedAt > L.joinTimeoutMs;
      const idleDue = s.state === "joined" && now - s.lastRxAt > L.idleTimeoutMs;
      if (joinDue || idleDue) {
        if (expired >= L.maxExpiriesPerSweep) {
          deferred = true;
          continue;
        }
        expired++;
        if (joinDue) this.fail(s, WireErrorCode.JOIN_TIMEOUT, `no JOIN within ${L.joinTimeoutMs} ms`, "join_timeout");
        else this.fail(s, WireErrorCode.IDLE_TIMEOUT, `nothing received for ${L.idleTimeoutMs} ms`, "idle_timeout");
      } else if (
        s.state === "joined" &&
        now - s.lastRxAt >= L.pingIntervalMs &&
        (s.pingedAt === 0 || now - s.pingedAt >= L.pingIntervalMs)
      ) {
        s.pingedAt = now;
        s.queue.send(encodeMessage({ type: "PING", nonce: randomBytes(4).readUInt32BE(0) }), false);
        this.metrics.pings.inc();
      }
    }
    if (deferred && this.running) {
      this.spreadTimer = setTimeout(() => this.sweep(), L.expirySpreadMs);
      this.spreadTimer.unref?.();
    }
    this.prunePrincipals(now);
  }

  private fail(s: Session, code: number, message: string, reason: StreamErrorReason, level: "warn" | "debug" = "warn"): void {
    if (s.state === "closing" || s.state === "closed") return;
    this.metrics.streamErrors.inc({ reason });
    s.log[level]({ reason, code }, `closing audio stream: ${message}`);
    void this.closeSession(s, { code, message });
  }

  /**
   * Leaves the engine, sends the ERROR (if any) ahead of any queued audio, closes our write end and then
   * resets the stream, every step bounded: a peer that stopped reading cannot keep the session alive.
   */
  private async closeSession(s: Session, error?: { code: number; message: string }): Promise<void> {
    if (s.state === "closing" || s.state === "closed") return;
    s.state = "closing";
    this.leaveEngine(s);
    s.queue.close(); // queued audio is stale now; the ERROR must not wait behind it
    const stream = s.stream;
    if (error && stream.writeStatus === "writable") {
      try {
        stream.send(encodeMessage({ type: "ERROR", code: error.code, message: error.message }));
      } catch {
        /* write end already gone; the close below still releases the session */
      }
    }
    try {
      await stream.close({ signal: AbortSignal.timeout(this.limits.closeTimeoutMs) });
    } catch {
      /* timed out flushing or already reset */
    }
    if (error || stream.status !== "closed") {
      // Our data is with the muxer (ordered before the reset), so the peer reads the ERROR first. Resetting
      // rather than waiting for the peer's close frees the read side of a peer that never closes.
      if (!error) await new Promise((r) => setTimeout(r, Math.min(250, this.limits.closeTimeoutMs)).unref?.());
      if (stream.status !== "closed") stream.abort(new AgoraError("WIRE_PROTOCOL", error ? `closed: ${error.message}` : "closed"));
    }
    this.release(s);
  }

  private leaveEngine(s: Session): void {
    if (s.participantId === undefined || s.room === undefined) return;
    const { room, participantId } = s;
    s.participantId = undefined;
    this.participantIds.delete(participantId);
    if (s.rosterMember) this.roster.remove(room, s.rosterMember);
    s.rosterMember = undefined;
    if (s.udp) this.opts.udp?.close(s.udp);
    for (const p of s.principals) p.joined--;
    try {
      this.opts.engine.leave(room, participantId);
    } catch (err) {
      s.log.warn({ err: errorMessage(err) }, "engine.leave failed");
    }
    s.log.info("participant left");
    if (this.opts.host && !this.hostedRooms().has(room)) this.opts.host.roomEmptied(room);
    this.roomParticipants(room, -1);
  }

  private release(s: Session): void {
    if (s.state === "closed") return;
    if (s.mixTimer) clearTimeout(s.mixTimer);
    s.mixTimer = undefined;
    this.leaveEngine(s);
    s.state = "closed";
    s.queue.close();
    if (this.sessions.delete(s)) {
      this.metrics.streamsActive.dec();
      for (const p of s.principals) p.streams--;
    }
  }

  private newParticipantId(): string {
    for (;;) {
      const id = `p${randomBytes(6).toString("hex")}`;
      if (!this.participantIds.has(id)) return id;
    }
  }
}

/** Speaking participant ids per room, from the engine's room statistics. */
function speakingByRoom(rooms: RoomStats[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const r of rooms) {
    const ids = new Set<string>();
    for (const p of r.participants) if (p.speaking) ids.add(p.id);
    out.set(r.id, ids);
  }
  return out;
}
