/**
 * The contract between the control plane (rooms, participants, the libp2p audio protocol) and the media
 * plane (the worker running the wasm core). The control plane never touches samples: it moves encoded
 * Opus frames in bulk and reads statistics.
 */
import type { Registry } from "prom-client";
import type { Logger } from "../log";
import type { AudioFrame, MixGain } from "../protocol";

export type { AudioFrame, MixGain };

/** What setMixGains applied: entries naming nobody in the room (or the listener itself) are skipped. */
export interface MixGainsResult {
  applied: number;
  unknown: string[];
}

export interface MediaSettings {
  topKSpeakers: number;
  sharedEncode: boolean;
  bitrate: number;
  jitterMinMs: number;
  jitterMaxMs: number;
  maxRooms: number;
  maxParticipants: number;
}

export interface ParticipantStats {
  id: string;
  speaking: boolean;
  /** true when this participant gets a personal mix-minus (top-K speaker) */
  personalMix: boolean;
  jitterMs: number;
  bufferDepthMs: number;
  lossPercent: number;
  packetsIn: number;
  packetsOut: number;
  concealed: number;
  late: number;
  /** Current adaptive playout target of this participant's jitter buffer (ms); depth settles near it. */
  jitterTargetMs?: number;
  /**
   * The arrival-jitter estimate that target follows (ms, not rounded to frames): the 97th percentile of the
   * packets' delays over the fastest one in the last 2 s. Its fraction of a frame still decides whether a
   * frame waits one more tick, which the whole-frame target does not show.
   */
  jitterEstimateMs?: number;
}

export interface RoomStats {
  id: string;
  createdAt: number;
  participants: ParticipantStats[];
}

/** Receives the mix for one participant, one encoded frame every 20 ms. */
export type FrameSink = (frame: AudioFrame) => void;

/** Datagram counters of one sync period (the control thread adds them to /metrics). */
export interface DatagramSyncCounts {
  /** dropped before decoding, by reason (DatagramDropReason) */
  dropped: Partial<Record<string, number>>;
  received: number;
  sent: number;
  /** refused by the kernel (a full send buffer, a firewall, an ICMP error for that address) */
  sendRefused: number;
}

/** One session's datagram state as the media worker last reported it. */
export interface DatagramSessionState {
  /** authenticated datagrams from the client (the count of the server's UDP_REPORT) */
  received: number;
  /** performance.now() of the last authenticated datagram (-Infinity: none yet) */
  lastRxAt: number;
  /** the client's address is learnt */
  bound: boolean;
  /** voice datagrams dropped because the participant may not speak (setCanSpeak false), since install */
  silenced: number;
}

/** A peer's UDP address. */
export interface DatagramPeer {
  address: string;
  port: number;
}

/**
 * The control thread's view of the node's shared UDP socket when the media worker owns it (the shape of
 * src/stun's UdpEndpoint, so the STUN service runs on it unchanged): only STUN messages arrive here, in one
 * batch per tick; what is sent goes out through the worker. Sends while the worker restarts are lost (STUN
 * retransmits); the restarted worker binds the same port.
 */
export interface SharedDatagramSocket {
  /** the bound address and port (valid once the engine started) */
  readonly local: DatagramPeer;
  send(data: Uint8Array, to: DatagramPeer): void;
  /** `[data, port, address, …]`; returns how many were taken (all: the worker sends them) */
  sendMany(packets: Array<Uint8Array | number | string>): number;
  onDatagram(receiver: (data: Uint8Array, from: DatagramPeer) => void): () => void;
  /** never called: the worker's socket errors are ICMP reports for one address, which STUN times out on */
  onError(listener: (err: Error) => void): () => void;
  /** stops delivering to the receivers; the socket is the engine's and closes when it stops */
  close(): void;
}

/**
 * Voice datagrams carried by the media engine itself: the media worker owns the UDP socket, opens what
 * arrives straight into the jitter buffers and seals each mix per recipient (datagram-io.ts). The control
 * thread installs sessions and forwards the clients' UDP_REPORT counts; frames a recipient must get by
 * stream (fallback, dual send, not bound yet) still reach its sink.
 */
export interface DatagramPlane {
  /** the socket's UDP port (valid once the engine started) */
  readonly port: number;
  /** Carries `participantId`'s voice datagrams under `sessionId`/`key`; `trustVoice`: its voice bit reaches the mixer. */
  install(roomId: string, participantId: string, session: { sessionId: number; key: Uint8Array; trustVoice: boolean }): void;
  remove(sessionId: number): void;
  /** the client's UDP_REPORT: how many of our datagrams it authenticated */
  report(sessionId: number, received: number): void;
  state(sessionId: number): DatagramSessionState | undefined;
  /** Called after each sync with the worker (every 100 ms while running), sessions' states already updated. */
  onSync(listener: (counts: DatagramSyncCounts) => void): () => void;
  /** present when the socket is the node's shared one (STUN's too): the control thread's share of it */
  readonly socket?: SharedDatagramSocket;
}

export interface MediaEngineOptions {
  settings: MediaSettings;
  logger: Logger;
  registry: Registry;
}

export interface MediaEngine {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Creates the room on first join. Throws AgoraError("CAPACITY") past max_mixers / max_connections. */
  join(roomId: string, participantId: string, sink: FrameSink): void;
  leave(roomId: string, participantId: string): void;
  /**
   * Queues a received frame; frames cross to the worker in bulk, never one message each. `frame.voice`
   * (the sender's voice-activity flag) lets the mixer skip decoding silence; absent = always decoded.
   */
  pushFrame(roomId: string, participantId: string, frame: AudioFrame): void;
  /**
   * false makes the participant listen-only (access control's listener role): its audio is never decoded
   * nor mixed, it still receives the mix. Default true. Throws BAD_REQUEST for an unknown participant.
   */
  setCanSpeak(roomId: string, participantId: string, canSpeak: boolean): void;
  /**
   * Replaces the listener's per-source gains (0 = muted for this listener only, 1 = unchanged, at most 4).
   * A listener with any gain gets a personal mix. Throws BAD_REQUEST on an out-of-range gain or too many
   * entries; entries naming no participant of the room are skipped and returned.
   */
  setMixGains(roomId: string, listenerId: string, gains: readonly MixGain[]): MixGainsResult;
  /** The room's priority speaker (undefined: none): everyone else is ducked by `duckDb` (default 12) while it talks. */
  setPrioritySpeaker(roomId: string, participantId: string | undefined, duckDb?: number): void;
  rooms(): RoomStats[];
  participantCount(): number;
  updateSettings(settings: Partial<MediaSettings>): void;
  /** How often the worker was restarted after a crash. */
  readonly workerRestarts: number;
  /** Voice datagrams in the media worker, when the engine was given a socket for them. */
  readonly datagrams?: DatagramPlane;
}
