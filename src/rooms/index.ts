/**
 * The room server: the node's side of the audio protocol (src/protocol), binding each participant's stream to
 * the media engine (src/audio).
 */
export {
  AudioRoomService,
  type AudioRoomServiceOptions,
  type AudioRoomSettings,
  type LimitLabel,
  type PeerLimit,
  remoteIpKey,
  type AudioServiceLimits,
  DEFAULT_AUDIO_SERVICE_LIMITS,
  SeqWindow,
  type StreamErrorReason,
} from "./room-service";
