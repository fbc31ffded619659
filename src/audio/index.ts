/**
 * Public surface of the media plane: the MediaEngine contract (types.ts), its worker-based
 * implementation, and the standalone Opus codec over the same wasm core.
 */
import { WorkerMediaEngine, type WorkerMediaEngineOptions } from "./engine";
import type { MediaEngine, MediaEngineOptions } from "./types";

export type { AudioFrame, FrameSink, MediaEngine, MediaEngineOptions, MediaSettings, ParticipantStats, RoomStats } from "./types";
export { WorkerMediaEngine, resolveWorkerUrl, type WorkerMediaEngineOptions } from "./engine";
export { createOpusCodec, type OpusCodec, type OpusDecoder, type OpusEncoder, type OpusEncoderOptions } from "./codec";
export { CoreRoom, libopusVersion, MediaCore, PushResult, MAX_PACKET, type RoomConfig } from "./core";
export { mediaMetrics, type MediaMetrics } from "./metrics";

/** Creates the media engine (a supervised Bun Worker running the wasm mixer). Call start() before use. */
export function createMediaEngine(opts: MediaEngineOptions | WorkerMediaEngineOptions): MediaEngine {
  return new WorkerMediaEngine(opts);
}
