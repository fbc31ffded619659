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
}

export interface RoomStats {
  id: string;
  createdAt: number;
  participants: ParticipantStats[];
}

/** Receives the mix for one participant, one encoded frame every 20 ms. */
export type FrameSink = (frame: AudioFrame) => void;

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
}
