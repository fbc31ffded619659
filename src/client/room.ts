/**
 * RoomConnection: the SDK's handle on one room. It joins over one AudioSession and gives a program the
 * room as PCM or as Opus: send 20 ms frames of either, receive the server's mix of everyone else as
 * `audio` (Opus) and, when asked to decode, `pcm` events; `left` tells once how and why it ended.
 *
 * Sequence numbers and timestamps of what it sends are its own (random start, +1 and +960 per frame, as
 * protocol.md asks), so a program only supplies samples or packets.
 */
import type { Libp2p } from "@libp2p/interface";
import { AgoraError } from "../errors";
import { silentLogger } from "../log";
import { type AudioFrame, FRAME_SAMPLES, type JoinedMessage, type OpusCodec, type OpusDecoder, type OpusEncoder } from "../protocol";
import { loadOpusCodec } from "./codec";
import { SafeEmitter } from "./events";
import { type RoomLocator, RoomNavigator } from "./navigator";
import { createClientNode, type DialTarget, resolveTarget } from "./node";
import { type AudioRemoteError, AudioSession } from "./session";

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
  /** join by name: the room moved to another host (MOVE from the host, or the host died: `failover`) */
  moved: { from: string | undefined; to: string | undefined; epoch: number | undefined; reason: "move" | "failover" };
}

export class RoomConnection extends SafeEmitter<RoomEvents> {
  private session!: AudioSession;
  private encoder: OpusEncoder | undefined;
  private decoder: OpusDecoder | undefined;
  private seq = (Math.random() * 0x1_0000_0000) >>> 0;
  private timestamp = (Math.random() * 0x1_0000_0000) >>> 0;
  private ended = false;
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
    const codec = opts.codec ?? (opts.decode ? await loadOpusCodec() : undefined);
    const ownNode = opts.libp2p ? undefined : await createClientNode();
    const conn = new RoomConnection(codec, opts.bitrate, ownNode, opts.onListenerError);
    try {
      conn.decoder = opts.decode ? codec?.decoder() : undefined;
      conn.session = await AudioSession.open({
        libp2p: opts.libp2p ?? ownNode!,
        target: await resolveTarget(opts.node!),
        room: opts.room,
        name: opts.name,
        timeoutMs: opts.timeoutMs,
        signal: opts.signal,
        onAudio: (frame, receivedAt) => conn.onAudio(frame, receivedAt),
        onClose: (error) => void conn.end(error),
      });
    } catch (err) {
      conn.decoder?.destroy();
      await Promise.resolve(ownNode?.stop()).catch(() => {});
      throw err;
    }
    return conn;
  }

  private static async joinByName(opts: JoinRoomOptions): Promise<RoomConnection> {
    const codec = opts.codec ?? (opts.decode ? await loadOpusCodec() : undefined);
    let locator = opts.locator;
    let libp2p = opts.libp2p;
    let stopLocator: (() => Promise<void>) | undefined;
    if (!locator) {
      // The network subsystem is loaded only for this (as discover() does).
      const { createRoomLocator } = await import("../p2p");
      const l = await createRoomLocator({ bootstrap: opts.bootstrap!, logger: silentLogger() });
      locator = l;
      libp2p ??= l.libp2p;
      stopLocator = () => l.stop();
    }
    const ownNode = libp2p ? undefined : await createClientNode();
    const conn = new RoomConnection(codec, opts.bitrate, ownNode, opts.onListenerError);
    conn.stopExtra = stopLocator;
    const nav = new RoomNavigator({ libp2p: libp2p ?? ownNode!, room: opts.room, locator, region: opts.region });
    conn.navigator = nav;
    const sessionOpts = {
      name: opts.name,
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
      onAudio: (frame: AudioFrame, receivedAt: number) => conn.onAudio(frame, receivedAt),
      onMoved: (s: AudioSession) => {
        const from = conn.hostPeer;
        conn.session = s;
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

  /** Sends one 20 ms Opus packet; false once the connection has ended. */
  sendOpus(payload: Uint8Array): boolean {
    const frame: AudioFrame = { seq: this.seq, timestamp: this.timestamp, payload };
    this.seq = (this.seq + 1) >>> 0;
    this.timestamp = (this.timestamp + FRAME_SAMPLES) >>> 0;
    return this.navigator ? this.navigator.sendAudio(frame) : this.session.sendAudio(frame);
  }

  /** Encodes and sends 960 samples (20 ms of 48 kHz mono); false once the connection has ended. */
  async sendPcm(pcm: Int16Array): Promise<boolean> {
    if (pcm.length !== FRAME_SAMPLES)
      throw new AgoraError("USAGE", `sendPcm: expected ${FRAME_SAMPLES} samples (20 ms at 48 kHz), got ${pcm.length}`);
    if (!this.isOpen) return false;
    if (!this.encoder) {
      const codec = this.codec ?? (await loadOpusCodec());
      this.encoder = codec.encoder(this.bitrate ?? this.session.joined.bitrate);
    }
    return this.sendOpus(this.encoder.encode(pcm));
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
    await this.stopExtra?.().catch(() => {});
  }
}

/** Joins a room on a known node. */
export function joinRoom(opts: JoinRoomOptions): Promise<RoomConnection> {
  return RoomConnection.join(opts);
}
