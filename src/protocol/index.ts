/**
 * Agora's shared wire format: the audio protocol `/agora/audio/1.0.0` (codec in wire.ts, documented in
 * protocol.md), the real-time send policy over a stream (send-queue.ts), the constants and types every side
 * agrees on. Used by the room server (src/rooms), the participant SDK (src/client) and the media plane
 * (src/audio); it depends on nothing but src/errors, so any of them can import it without the others.
 */
export * from "./constants";
export { chunkBytes, type DrainableStream, OutboundQueue } from "./send-queue";
export type { AudioFrame, OpusCodec, OpusDecoder, OpusEncoder, OpusEncoderOptions } from "./types";
export {
  AUDIO_PROTOCOL,
  type AudioMessage,
  CODEC_OPUS,
  checkDisplayName,
  checkOpusPacket,
  checkRoomId,
  type DecodeResult,
  decodeMessage,
  type ErrorMessage,
  encodeAudio,
  encodeMessage,
  errorCodeName,
  isRetryableErrorCode,
  isValidRoomId,
  type JoinedMessage,
  type JoinMessage,
  LENGTH_PREFIX_BYTES,
  type LeaveMessage,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_MESSAGE_LENGTH,
  MAX_NAME_BYTES,
  MAX_PARTICIPANT_ID_LENGTH,
  MessageDecoder,
  MessageType,
  type MessageTypeName,
  type PingMessage,
  type PongMessage,
  SUPPORTED_WIRE_VERSIONS,
  seqDiff,
  WIRE_VERSION,
  WireError,
  WireErrorCode,
  type WireErrorCodeName,
  type WireErrorReason,
  type WireMessage,
  wireErrorCodeFor,
} from "./wire";
