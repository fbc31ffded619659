/**
 * STUN: the node's UDP socket and what the Internet sees of it (public address and port, mapping behaviour)
 * from the configured `network.stun_servers`. See service.ts for the schedule, message.ts for the format.
 */
export { type Clock, type StunMetrics, StunRequestError, systemClock } from "./client";
export { decodeResponse, encodeBindingRequest, encodeBindingSuccess, type MappedAddress, type StunRejectReason } from "./message";
export { parseHostPort, type StunChangeListener, StunService, type StunServiceOptions } from "./service";
export { bindUdp, type UdpEndpoint, type UdpPeer } from "./udp";
