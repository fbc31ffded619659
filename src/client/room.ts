/**
 * RoomConnection: the SDK's handle on one room. It joins over one AudioSession and gives a program the
 * room as PCM or as Opus: send 20 ms frames of either, receive the server's mix of everyone else as
 * `audio` (Opus) and, when asked to decode, `pcm` events; `left` tells once how and why it ended.
 *
 * Sequence numbers and timestamps of what it sends are its own (random start, +1 and +960 per frame, as
 * protocol.md asks), so a program only supplies samples or packets.
 */
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { type GrantSigner, grantFromString, ROLE_NAMES, Role, type RoleName, signerFromRawPrivateKey, signModerate } from "../access";
import { AgoraError } from "../errors";
import {
  type AudioFrame,
  Capability,
  FRAME_SAMPLES,
  type JoinedMessage,
  MAX_MIX_ENTRIES,
  MAX_MIX_GAIN,
  ModerateAction,
  type ModerateActionName,
  type ModerateResultMessage,
  type ModerationMessage,
  type OpusCodec,
  type OpusDecoder,
  type OpusEncoder,
  type RosterMessage,
} from "../protocol";
import { SafeEmitter } from "./events";
import { type RoomLocator, RoomNavigator } from "./navigator";
import { clientPlatform } from "./platform";
import { type Participant, RosterView } from "./roster";
import { type AudioRemoteError, AudioSession } from "./session";
import { type DialTarget, resolveTarget } from "./target";
import { VoiceGate } from "./vad";

/** What a RoomConnection announces in JOIN by default: voice-activity flags, personal mix settings, the roster. */
export const DEFAULT_ROOM_CAPABILITIES = Capability.VOICE_ACTIVITY | Capability.PERSONAL_MIX | Capability.ROSTER;

export interface JoinRoomOptions {
  /** the node's multiaddr (…/p2p/<peer id>); `discover()` finds one. Or give `bootstrap`: join by name. */
  node?: DialTarget;
  /**
   * Join by name: any nodes of the network. The room is found where it lives (its record, or the placement
   * rule), REDIRECTs and MOVEs are followed, and a dead host is replaced by the successor every participant
   * computes (`moved` events tell).
   */
  bootstrap?: string[];
  /** the room's region when it has to be placed (default: the first region discovered) */
  region?: string;
  /** where rooms and mixers are looked up instead of the DHT behind `bootstrap` (tests, custom directories) */
  locator?: RoomLocator;
  room: string;
  /** display name, up to 64 bytes of UTF-8 */
  name?: string;
  /** decode the received mix and emit `pcm` events (default false: `audio` events only) */
  decode?: boolean;
  /** uplink bitrate of `sendPcm`; default: the server's suggestion in JOINED */
  bitrate?: number;
  /** codec implementation (default: the wasm libopus, loaded on first use) */
  codec?: OpusCodec;
  /** reuse this libp2p node; default: a private dial-only node, stopped on leave */
  libp2p?: Libp2p;
  /** bound on dial + JOIN/JOINED (default 10 s) */
  timeoutMs?: number;
  /** an access grant for an owned room: the string `agora-node room grant` prints, or its bytes */
  grant?: string | Uint8Array;
  /**
   * the participant's Ed25519 key: the private node's peer id (so a grant bound to it matches) and the key
   * MODERATE requests are signed with. Ignored for the node's identity when `libp2p` is given (that node's
   * key must then be this one for a bound grant to match).
   */
  identity?: PrivateKey;
  signal?: AbortSignal;
  /** 1.1.0 capability bits announced in JOIN (default DEFAULT_ROOM_CAPABILITIES) */
  capabilities?: number;
  /** where an exception thrown by an event listener goes (default: console.error, once per listener) */
  onListenerError?: (event: keyof RoomEvents, err: unknown) => void;
}

export interface RoomEvents extends Record<string, unknown> {
  /** one Opus frame of the mix for us (payload owned by the listener) */
  audio: { frame: AudioFrame; receivedAt: number };
  /** the same frame decoded: 960 samples of 48 kHz mono (only with `decode: true`) */
  pcm: { pcm: Int16Array; seq: number };
  /** the session ended: `error` unset after our own leave(); an AudioRemoteError carries the server's code */
  left: { error?: AgoraError | AudioRemoteError };
  /**
   * a JOINED after the first (re-joined, e.g. after `moved`); the first one is what joinRoom() resolves
   * with (`room.joined`)
   */
  joined: { joined: JoinedMessage };
  /** the room's participants changed (joins, leaves, names): the new list, also in `room.participants` */
  participants: { participants: readonly Participant[]; total: number };
  /** a participant started or stopped speaking (the mixer's talk detection, about 5 updates/s at most) */
  speaking: { participant: Participant; speaking: boolean };
  /** a moderation in the room (owned rooms): who did what to whom; `self` when it was done to us */
  moderation: { action: ModerateActionName | "UNKNOWN"; target: string; by: string; until: number; self: boolean };
  /** join by name: the room moved to another host (MOVE from the host, or the host died: `failover`) */
  moved: MovedEvent;
  /**
   * something went wrong; `error.code` says what (AgoraError codes; an AudioRemoteError also carries the
   * server's `wireCode`). `fatal` errors end the session and are followed by `left` with the same error.
   */
  error: { error: AgoraError | AudioRemoteError; fatal: boolean };
}

/** What `moved` tells: where the room went and why. */
export interface MovedEvent {
  /** peer id of the host we were on, and of the host we are on now */
  from: string | undefined;
  to: string | undefined;
  /** the room's epoch on the new host */
  epoch: number | undefined;
  /** "move": the host sent MOVE (drain, or it lost the room to another claim); "failover": the host died */
  reason: "move" | "failover";
}

/** What a moderation request came back with: `code` 0 = done, else a WireErrorCode (FORBIDDEN, …). */
export interface ModerationOutcome {
  code: number;
  message: string;
}

export class RoomConnection extends SafeEmitter<RoomEvents> {
  private session!: AudioSession;
  private encoder: OpusEncoder | undefined;
  private decoder: OpusDecoder | undefined;
  private seq = (Math.random() * 0x1_0000_0000) >>> 0;
  private timestamp = (Math.random() * 0x1_0000_0000) >>> 0;
  private ended = false;
  private roster: RosterView | undefined;
  private readonly earlyRoster: RosterMessage[] = [];
  private readonly gate = new VoiceGate();
  /** What we hear of other participants, when not 1 (sent whole as MIX_SETTINGS on every change). */
  private readonly gains = new Map<string, number>();
  private role_: number = Role.SPEAKER;
  private muted_ = false;
  private signer: GrantSigner | undefined;
  private requestId = 0;
  private readonly pendingRequests = new Map<number, (o: ModerationOutcome) => void>();
  private navigator: RoomNavigator | undefined;
  private stopExtra: (() => Promise<void>) | undefined;

  private constructor(
    private readonly codec: OpusCodec | undefined,
    private readonly bitrate: number | undefined,
    private readonly ownNode: Libp2p | undefined,
    onListenerError: JoinRoomOptions["onListenerError"],
  ) {
    super(onListenerError);
  }

  /** Dials the node, joins the room and resolves once JOINED arrived; throws AudioRemoteError on ERROR. */
  static async join(opts: JoinRoomOptions): Promise<RoomConnection> {
    if (opts.node === undefined && !opts.bootstrap?.length && !opts.locator)
      throw new AgoraError("USAGE", "joinRoom: give node (a mixer's multiaddr), or bootstrap / locator to join by name");
    if (opts.node === undefined) return RoomConnection.joinByName(opts);
    const codec = opts.codec ?? (opts.decode ? await clientPlatform().loadCodec() : undefined);
    const grant = typeof opts.grant === "string" ? grantFromString(opts.grant) : opts.grant;
    const ownNode = opts.libp2p ? undefined : await clientPlatform().createNode(opts.identity);
    const conn = new RoomConnection(codec, opts.bitrate, ownNode, opts.onListenerError);
    if (opts.identity) conn.signer = signerFromRawPrivateKey(opts.identity.raw);
    try {
      conn.decoder = opts.decode ? codec?.decoder() : undefined;
      conn.session = await AudioSession.open({
        libp2p: opts.libp2p ?? ownNode!,
        target: await resolveTarget(opts.node!),
        room: opts.room,
        name: opts.name,
        timeoutMs: opts.timeoutMs,
        signal: opts.signal,
        capabilities: (opts.capabilities ?? DEFAULT_ROOM_CAPABILITIES) | Capability.ACCESS_CONTROL,
        ...(grant ? { grant } : {}),
        onAccess: (m) => conn.onAccess(m),
        onAudio: (frame, receivedAt) => conn.onAudio(frame, receivedAt),
        onRoster: (m) => conn.onRoster(m),
        onClose: (error) => void conn.end(error),
      });
      conn.role_ = conn.session.joined.role ?? Role.SPEAKER;
    } catch (err) {
      conn.decoder?.destroy();
      await Promise.resolve(ownNode?.stop()).catch(() => {});
      throw err;
    }
    for (const m of conn.earlyRoster.splice(0)) conn.onRoster(m);
    return conn;
  }

  /** The room's participants (first 256 in join order, us included) once the server sent its roster (1.1.0). */
  get participants(): readonly Participant[] {
    return this.roster?.participants ?? [];
  }

  /** How many are in the room, listed in `participants` or not (0 before the first roster). */
  get participantTotal(): number {
    return this.roster?.total ?? 0;
  }

  private static async joinByName(opts: JoinRoomOptions): Promise<RoomConnection> {
    const codec = opts.codec ?? (opts.decode ? await clientPlatform().loadCodec() : undefined);
    let locator = opts.locator;
    let libp2p = opts.libp2p;
    let stopLocator: (() => Promise<void>) | undefined;
    if (!locator) {
      // The network subsystem is the platform's (loaded only for this, as discover() does; not in browsers).
      const l = await clientPlatform().createRoomLocator(opts.bootstrap!);
      locator = l;
      libp2p ??= l.libp2p;
      stopLocator = () => l.stop();
    }
    const ownNode = libp2p ? undefined : await clientPlatform().createNode(opts.identity);
    const conn = new RoomConnection(codec, opts.bitrate, ownNode, opts.onListenerError);
    conn.stopExtra = stopLocator;
    if (opts.identity) conn.signer = signerFromRawPrivateKey(opts.identity.raw);
    const grant = typeof opts.grant === "string" ? grantFromString(opts.grant) : opts.grant;
    const nav = new RoomNavigator({ libp2p: libp2p ?? ownNode!, room: opts.room, locator, region: opts.region });
    conn.navigator = nav;
    const sessionOpts = {
      name: opts.name,
      capabilities: opts.capabilities ?? DEFAULT_ROOM_CAPABILITIES,
      onRoster: (m: RosterMessage) => conn.onRoster(m),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
      // the grant goes with every JOIN, the successor's after a MOVE too: it verifies the role anew
      ...(grant ? { grant } : {}),
      onAccess: (m: ModerateResultMessage | ModerationMessage) => conn.onAccess(m),
      onAudio: (frame: AudioFrame, receivedAt: number) => conn.onAudio(frame, receivedAt),
      onMoved: (s: AudioSession) => {
        const from = conn.hostPeer;
        conn.session = s;
        conn.roster = undefined; // the new host's first ROSTER rebuilds it (our participant id changed)
        conn.role_ = s.joined.role ?? Role.SPEAKER;
        conn.hostPeer = nav.host;
        conn.emit("moved", { from, to: nav.host, epoch: s.joined.epoch, reason: "move" });
      },
      onClose: (error: AgoraError | undefined) => {
        if (!error || conn.ended) return void conn.end(error);
        void conn.failover(sessionOpts, error);
      },
    };
    try {
      conn.decoder = opts.decode ? codec?.decoder() : undefined;
      conn.session = await nav.open(sessionOpts);
      conn.role_ = conn.session.joined.role ?? Role.SPEAKER;
      conn.hostPeer = nav.host;
    } catch (err) {
      conn.decoder?.destroy();
      await Promise.resolve(ownNode?.stop()).catch(() => {});
      await stopLocator?.().catch(() => {});
      throw err;
    }
    return conn;
  }

  private hostPeer: string | undefined;

  /**
   * The host's session ended with an error (it died, or a network cut): every participant leaves that host
   * out and joins the successor by the same rule; bounded attempts, then `left` with the error.
   */
  private async failover(sessionOpts: Parameters<RoomNavigator["open"]>[0], error: AgoraError): Promise<void> {
    const nav = this.navigator!;
    const from = this.hostPeer;
    nav.hostLost(from);
    for (let attempt = 0; attempt < 5 && !this.ended; attempt++) {
      try {
        this.session = await nav.open(sessionOpts);
        this.roster = undefined;
        this.role_ = this.session.joined.role ?? Role.SPEAKER;
        this.hostPeer = nav.host;
        this.emit("moved", { from, to: nav.host, epoch: this.session.joined.epoch, reason: "failover" });
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      }
    }
    await this.end(error);
  }

  /** Join by name: REDIRECTs and MOVEs followed and refused, and the audio gap of each MOVE (ms). */
  get placementStats(): RoomNavigator["stats"] | undefined {
    return this.navigator?.stats;
  }

  /** The peer id of the mixer hosting our session (join by name). */
  get host(): string | undefined {
    return this.navigator?.host;
  }

  /** What the server said in JOINED: our participant id, the bitrate it suggests, the codec parameters. */
  get joined(): JoinedMessage {
    return this.session.joined;
  }

  get participantId(): string {
    return this.session.participantId;
  }

  get isOpen(): boolean {
    return !this.ended && this.session.isOpen;
  }

  /** Smoothed round-trip time to the node (ms), once a PING was answered. */
  get rttMs(): number | undefined {
    return this.session.rttMs;
  }

  /** Our role in the room: `speaker` in open rooms; in owned ones what the grant (or a promotion) gives. */
  get role(): RoleName {
    return ROLE_NAMES[this.role_] ?? "listener";
  }

  /** Muted by a moderator: what we send is not mixed, so it is not sent. */
  get muted(): boolean {
    return this.muted_;
  }

  /**
   * Sends one 20 ms Opus packet; false once the connection has ended. `voice`: whether it carries voice
   * (from the encoder's VAD or DTX), sent where the server takes voice-activity flags. A listener's (or
   * muted) audio would never be mixed, so it is not sent at all (true: nothing went wrong).
   */
  sendOpus(payload: Uint8Array, voice?: boolean): boolean {
    if (this.role_ < Role.SPEAKER || this.muted_) return this.isOpen;
    const frame: AudioFrame = { seq: this.seq, timestamp: this.timestamp, payload };
    if (voice !== undefined) frame.voice = voice;
    this.seq = (this.seq + 1) >>> 0;
    this.timestamp = (this.timestamp + FRAME_SAMPLES) >>> 0;
    return this.navigator ? this.navigator.sendAudio(frame) : this.session.sendAudio(frame);
  }

  /** Encodes and sends 960 samples (20 ms of 48 kHz mono); false once the connection has ended. */
  async sendPcm(pcm: Int16Array): Promise<boolean> {
    if (pcm.length !== FRAME_SAMPLES)
      throw new AgoraError("USAGE", `sendPcm: expected ${FRAME_SAMPLES} samples (20 ms at 48 kHz), got ${pcm.length}`);
    if (!this.isOpen) return false;
    if (this.role_ < Role.SPEAKER || this.muted_) return true; // withheld (see sendOpus): no need to encode
    if (!this.encoder) {
      const codec = this.codec ?? (await clientPlatform().loadCodec());
      this.encoder = codec.encoder(this.bitrate ?? this.session.joined.bitrate);
    }
    return this.sendOpus(this.encoder.encode(pcm), this.gate.update(pcm));
  }

  /** Whether the server takes personal mix settings on this connection (both sides announced PERSONAL_MIX). */
  get personalMix(): boolean {
    return this.session.negotiated(Capability.PERSONAL_MIX);
  }

  /**
   * Replaces what we hear of other participants (by participant id): 0 mutes one for us only, 1 is as
   * everyone hears it, up to 4 (+12 dB). Nobody else's mix changes. Throws USAGE without PERSONAL_MIX
   * or on a bad entry.
   */
  setMixSettings(gains: Readonly<Record<string, number>> | ReadonlyMap<string, number>): void {
    const entries = gains instanceof Map ? [...gains.entries()] : Object.entries(gains);
    const next = new Map<string, number>();
    for (const [id, gain] of entries) {
      if (typeof gain !== "number" || !(gain >= 0 && gain <= MAX_MIX_GAIN))
        throw new AgoraError("USAGE", `volume for ${id} must be 0..${MAX_MIX_GAIN}, got ${String(gain)}`);
      if (gain !== 1) next.set(id, gain);
    }
    if (next.size > MAX_MIX_ENTRIES)
      throw new AgoraError("USAGE", `at most ${MAX_MIX_ENTRIES} participants with their own volume, got ${next.size}`);
    this.session.sendMixSettings([...next].map(([participantId, gain]) => ({ participantId, gain })));
    this.gains.clear();
    for (const [id, g] of next) this.gains.set(id, g);
  }

  /** Mutes (or unmutes) one participant for us only. */
  muteFor(participantId: string, muted = true): void {
    this.setVolume(participantId, muted ? 0 : 1);
  }

  /** What we hear of one participant: 0..4, 1 = unchanged. */
  setVolume(participantId: string, gain: number): void {
    const next = new Map(this.gains);
    next.set(participantId, gain);
    this.setMixSettings(next);
  }

  /** Our current per-participant volumes (those not at 1). */
  mixSettings(): ReadonlyMap<string, number> {
    return new Map(this.gains);
  }

  /**
   * A moderator's request (owned rooms, needs `identity`: the key its moderator grant is bound to): mute,
   * unmute, remove (and ban the grant or key until `until`), promote a listener, lock, unlock or end the
   * room, or revoke a grant id / key. Resolves with the server's answer (code 0 = done).
   */
  moderate(action: ModerateActionName, target = "", until = 0, timeoutMs = 10_000): Promise<ModerationOutcome> {
    if (!this.signer) throw new AgoraError("USAGE", "moderate: joinRoom needs `identity` (the key the moderator grant is bound to)");
    if (!this.isOpen) throw new AgoraError("P2P", "moderate: the room connection has ended");
    const requestId = ++this.requestId;
    const msg = signModerate(
      this.signer,
      { room: this.session.room, participantId: this.participantId },
      { requestId, action: ModerateAction[action], target, until },
    );
    return new Promise<ModerationOutcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingRequests.delete(requestId);
        reject(new AgoraError("P2P", `no answer to moderation request ${requestId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pendingRequests.set(requestId, (o) => {
        clearTimeout(timer);
        resolve(o);
      });
      if (!this.session.sendModerate(msg)) {
        this.pendingRequests.delete(requestId);
        clearTimeout(timer);
        reject(new AgoraError("P2P", "moderate: the room connection has ended"));
      }
    });
  }

  private onAccess(m: ModerateResultMessage | ModerationMessage): void {
    if (m.type === "MODERATE_RESULT") {
      const done = this.pendingRequests.get(m.requestId);
      this.pendingRequests.delete(m.requestId);
      done?.({ code: m.code, message: m.message });
      return;
    }
    const action = (Object.entries(ModerateAction).find(([, v]) => v === m.action)?.[0] ?? "UNKNOWN") as ModerateActionName | "UNKNOWN";
    const self = m.target === this.participantId;
    if (self && action === "MUTE") this.muted_ = true;
    if (self && action === "UNMUTE") this.muted_ = false;
    if (self && action === "PROMOTE" && this.role_ === Role.LISTENER) this.role_ = Role.SPEAKER;
    this.emit("moderation", { action, target: m.target, by: m.by, until: m.until, self });
  }

  /** Keepalive and RTT probe; the caller decides the period (protocol.md asks for at least one per 5 s of silence). */
  ping(): void {
    this.session.ping();
  }

  /** Sends LEAVE and waits (bounded) for the server to close; emits `left` without an error. */
  async leave(): Promise<void> {
    await this.session.leave();
    await this.end(undefined);
  }

  private onAudio(frame: AudioFrame, receivedAt: number): void {
    this.emit("audio", { frame, receivedAt });
    if (!this.decoder) return;
    let pcm: Int16Array;
    try {
      pcm = this.decoder.decode(frame.payload);
    } catch {
      pcm = this.decoder.decode(null); // a packet the decoder rejects is concealed, as a lost one
    }
    this.emit("pcm", { pcm, seq: frame.seq });
  }

  private onRoster(m: RosterMessage): void {
    // ROSTER right behind JOINED is replayed while AudioSession.open() still runs: keep it until it returned.
    if (!this.session) {
      if (this.earlyRoster.length < 64) this.earlyRoster.push(m);
      return;
    }
    this.roster ??= new RosterView(this.session.participantId);
    const change = this.roster.apply(m);
    if (change instanceof AgoraError) {
      this.emit("error", { error: change, fatal: false });
      return;
    }
    if (change.membership) this.emit("participants", { participants: this.roster.participants, total: this.roster.total });
    for (const p of change.speaking) this.emit("speaking", { participant: p, speaking: p.speaking });
  }

  private async end(error: AgoraError | undefined): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (error) this.emit("error", { error, fatal: true });
    this.encoder?.destroy();
    this.decoder?.destroy();
    this.encoder = this.decoder = undefined;
    this.emit("left", { error });
    await Promise.resolve(this.ownNode?.stop()).catch(() => {});
    await this.stopExtra?.().catch(() => {});
  }
}

/** Joins a room on a known node. */
export function joinRoom(opts: JoinRoomOptions): Promise<RoomConnection> {
  return RoomConnection.join(opts);
}
