/**
 * The room server: the node's side of the audio protocol (src/protocol), binding each participant's stream to
 * the media engine (src/audio), and the room directory's placement policy (room-host.ts: claim, REDIRECT,
 * handover with move tokens).
 */
export {
  decodeMoveToken,
  MOVE_TOKEN_DOMAIN,
  MOVE_TOKEN_TTL_MS,
  type MoveTokenAccess,
  type MoveTokenClaims,
  type MoveTokenRejection,
  signMoveToken,
  verifyMoveToken,
} from "./move-token";
export {
  type JoinDecision,
  LOST_MOVE_RETRY_MS,
  type RoomDirectoryPort,
  RoomHost,
  type RoomHostOptions,
  type RoomHostRecord,
  type RoomMembers,
} from "./room-host";
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
