/**
 * Agora's shared wire format: the audio protocol `/agora/audio/1.0.0` (codec in wire.ts, documented in
 * protocol.md), the real-time send policy over a stream (send-queue.ts), the constants and types every side
 * agrees on. Used by the room server (src/rooms), the participant SDK (src/client) and the media plane
 * (src/audio); it depends on nothing but src/errors, so any of them can import it without the others.
 */
export * from "./constants";
export type { AudioFrame, OpusCodec, OpusDecoder, OpusEncoder, OpusEncoderOptions } from "./types";
export {
  AUDIO_PROTOCOL,
  checkDisplayName,
  checkOpusPacket,
  checkRoomId,
  CODEC_OPUS,
  decodeMessage,
  encodeAudio,
  encodeMessage,
  errorCodeName,
  isRetryableErrorCode,
  isValidRoomId,
  LENGTH_PREFIX_BYTES,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_MESSAGE_LENGTH,
  MAX_NAME_BYTES,
  MAX_PARTICIPANT_ID_LENGTH,
  MessageDecoder,
  MessageType,
  seqDiff,
  SUPPORTED_WIRE_VERSIONS,
  WIRE_VERSION,
  WireError,
  WireErrorCode,
  wireErrorCodeFor,
  type AudioMessage,
  type DecodeResult,
  type ErrorMessage,
  type JoinedMessage,
  type JoinMessage,
  type LeaveMessage,
  type MessageTypeName,
  type PingMessage,
  type PongMessage,
  type WireErrorCodeName,
  type WireErrorReason,
  type WireMessage,
} from "./wire";
export { chunkBytes, type DrainableStream, OutboundQueue } from "./send-queue";
