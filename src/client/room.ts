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
  ModerateAction,
  type ModerateActionName,
  type ModerateResultMessage,
  type ModerationMessage,
  type OpusCodec,
  type OpusDecoder,
  type OpusEncoder,
} from "../protocol";
import { loadOpusCodec } from "./codec";
import { SafeEmitter } from "./events";
import { createClientNode, type DialTarget, resolveTarget } from "./node";
import { type AudioRemoteError, AudioSession } from "./session";

export interface JoinRoomOptions {
  /** the node's multiaddr (…/p2p/<peer id>); `discover()` finds one */
  node: DialTarget;
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
  /** a moderation in the room (owned rooms): who did what to whom; `self` when it was done to us */
  moderation: { action: ModerateActionName | "UNKNOWN"; target: string; by: string; until: number; self: boolean };
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
  private role_: number = Role.SPEAKER;
  private muted_ = false;
  private signer: GrantSigner | undefined;
  private requestId = 0;
  private readonly pendingRequests = new Map<number, (o: ModerationOutcome) => void>();

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
    const codec = opts.codec ?? (opts.decode ? await loadOpusCodec() : undefined);
    const grant = typeof opts.grant === "string" ? grantFromString(opts.grant) : opts.grant;
    const ownNode = opts.libp2p ? undefined : await createClientNode(opts.identity);
    const conn = new RoomConnection(codec, opts.bitrate, ownNode, opts.onListenerError);
    if (opts.identity) conn.signer = signerFromRawPrivateKey(opts.identity.raw);
    try {
      conn.decoder = opts.decode ? codec?.decoder() : undefined;
      conn.session = await AudioSession.open({
        libp2p: opts.libp2p ?? ownNode!,
        target: await resolveTarget(opts.node),
        room: opts.room,
        name: opts.name,
        timeoutMs: opts.timeoutMs,
        signal: opts.signal,
        capabilities: Capability.ACCESS_CONTROL,
        ...(grant ? { grant } : {}),
        onAccess: (m) => conn.onAccess(m),
        onAudio: (frame, receivedAt) => conn.onAudio(frame, receivedAt),
        onClose: (error) => void conn.end(error),
      });
      conn.role_ = conn.session.joined.role ?? Role.SPEAKER;
    } catch (err) {
      conn.decoder?.destroy();
      await Promise.resolve(ownNode?.stop()).catch(() => {});
      throw err;
    }
    return conn;
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
   * Sends one 20 ms Opus packet; false once the connection has ended. A listener's (or muted) audio would
   * never be mixed, so it is not sent at all (true: nothing went wrong).
   */
  sendOpus(payload: Uint8Array): boolean {
    if (this.role_ < Role.SPEAKER || this.muted_) return this.isOpen;
    const frame: AudioFrame = { seq: this.seq, timestamp: this.timestamp, payload };
    this.seq = (this.seq + 1) >>> 0;
    this.timestamp = (this.timestamp + FRAME_SAMPLES) >>> 0;
    return this.session.sendAudio(frame);
  }

  /** Encodes and sends 960 samples (20 ms of 48 kHz mono); false once the connection has ended. */
  async sendPcm(pcm: Int16Array): Promise<boolean> {
    if (pcm.length !== FRAME_SAMPLES)
      throw new AgoraError("USAGE", `sendPcm: expected ${FRAME_SAMPLES} samples (20 ms at 48 kHz), got ${pcm.length}`);
    if (!this.isOpen) return false;
    if (this.role_ < Role.SPEAKER || this.muted_) return true; // withheld (see sendOpus): no need to encode
    if (!this.encoder) {
      const codec = this.codec ?? (await loadOpusCodec());
      this.encoder = codec.encoder(this.bitrate ?? this.session.joined.bitrate);
    }
    return this.sendOpus(this.encoder.encode(pcm));
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

  private async end(error: AgoraError | undefined): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.encoder?.destroy();
    this.decoder?.destroy();
    this.encoder = this.decoder = undefined;
    this.emit("left", { error });
    await Promise.resolve(this.ownNode?.stop()).catch(() => {});
  }
}

/** Joins a room on a known node. */
export function joinRoom(opts: JoinRoomOptions): Promise<RoomConnection> {
  return RoomConnection.join(opts);
}
