/**
 * The libp2p transport stack every Agora node, client, test and bench uses (TCP, Noise, Yamux, each with its
 * Bun fix or tuning: see the files). A leaf module: the participant SDK takes it from here without loading
 * the node's network subsystem.
 */
export { agoraNoise, bunSafeNoiseCrypto } from "./noise";
export { agoraPing, PING_STREAMS_PER_CONNECTION } from "./ping";
export { agoraTransportStack, YAMUX_MAX_FRAME_BYTES, YAMUX_MAX_WINDOW_BYTES } from "./stack";
export { agoraTcp } from "./tcp";
export {
  type AgoraWebSocketsInit,
  agoraWebSockets,
  WS_HANDSHAKE_TIMEOUT_MS,
  WS_MAX_MESSAGE_BYTES,
  WS_MAX_PENDING_CONNECTIONS,
  WS_REJECT_REASONS,
  type WsRejectReason,
} from "./websockets";
