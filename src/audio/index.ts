/**
 * Public surface of the media plane: the MediaEngine contract (types.ts), its worker-based
 * implementation, and the standalone Opus codec over the same wasm core.
 */
import { WorkerMediaEngine, type WorkerMediaEngineOptions } from "./engine";
import type { MediaEngine, MediaEngineOptions } from "./types";

export { createOpusCodec, type OpusCodec, type OpusDecoder, type OpusEncoder, type OpusEncoderOptions } from "./codec";
export { CoreRoom, libopusVersion, MAX_MIX_GAIN, MAX_MIX_RULES, MAX_PACKET, MediaCore, PushResult, type RoomConfig, VadFlag } from "./core";
export { resolveWorkerUrl, WorkerMediaEngine, type WorkerMediaEngineOptions } from "./engine";
export { type MediaMetrics, mediaMetrics } from "./metrics";
export type {
  AudioFrame,
  DatagramPeer,
  DatagramPlane,
  DatagramSessionState,
  DatagramSyncCounts,
  FrameSink,
  MediaEngine,
  MediaEngineOptions,
  MediaSettings,
  MixGain,
  MixGainsResult,
  ParticipantStats,
  RoomStats,
  SharedDatagramSocket,
} from "./types";

/** Creates the media engine (a supervised Bun Worker running the wasm mixer). Call start() before use. */
export function createMediaEngine(opts: MediaEngineOptions | WorkerMediaEngineOptions): MediaEngine {
  return new WorkerMediaEngine(opts);
}
