/**
 * The room server: the node's side of the audio protocol (src/protocol), binding each participant's stream to
 * the media engine (src/audio).
 */
export {
  AudioRoomService,
  type AudioRoomServiceOptions,
  type AudioRoomSettings,
  type AudioServiceLimits,
  DEFAULT_AUDIO_SERVICE_LIMITS,
  type LimitLabel,
  type PeerLimit,
  remoteIpKey,
  SeqWindow,
  type StreamErrorReason,
} from "./room-service";
export {
  DEFAULT_UDP_VOICE_LIMITS,
  UdpVoiceEndpoint,
  type UdpVoiceEndpointOptions,
  type UdpVoiceLimits,
} from "./udp-voice";
