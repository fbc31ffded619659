/**
 * Public surface of the audio NETWORK side: wire protocol, room service, join client, loadgen, WAV I/O.
 * src/audio/index.ts re-exports this file. SAMPLE_RATE / FRAME_SAMPLES / FRAME_MS are deliberately not
 * re-exported here (index.ts exports the media core's, same values) to keep `export *` unambiguous.
 */
export {
  AUDIO_PROTOCOL,
  WIRE_VERSION,
  MAX_OPUS_PAYLOAD,
  MAX_MESSAGE_LENGTH,
  MessageType,
  WireErrorCode,
  WireError,
  MessageDecoder,
  OutboundQueue,
  encodeMessage,
  encodeAudio,
  decodeMessage,
  checkRoomId,
  isValidRoomId,
  isRetryableErrorCode,
  errorCodeName,
  type WireMessage,
  type WireErrorReason,
  type WireErrorCodeName,
  type DecodeResult,
} from "./wire";
export {
  AudioRoomService,
  DEFAULT_AUDIO_SERVICE_LIMITS,
  type AudioRoomServiceOptions,
  type AudioServiceLimits,
  type StreamErrorReason,
} from "./room-service";
export {
  runJoinClient,
  createClientNode,
  loadOpusCodec,
  AudioSession,
  AudioRemoteError,
  type JoinClientOptions,
  type JoinClientReport,
  type SimulateOptions,
  type ReconnectOptions,
  type DialTarget,
  type DialTargetProvider,
  type AudioSessionOptions,
  type OpusCodecLike,
  type OpusEncoderLike,
  type OpusDecoderLike,
} from "./client";
export { runLoadgen, type LoadgenOptions, type LoadgenReport, type LoadgenRoomReport, type LoadgenCounts, type LatencySummary } from "./loadgen";
export { readWav, writeWav, decodeWav, encodeWav, resample, downmix, WavWriter, WavError, WAV_TARGET_RATE, type WavInfo } from "./wav";
