/**
 * libp2p's ping service with room for concurrent pings on one connection. libp2p's connection monitor pings
 * every connection with the same protocol, and aborts the connection when its ping fails; with ping's own
 * limits (1 outbound, 2 inbound streams per connection) an explicit ping at the same moment (a liveness check
 * of a room's host, a client's probe of a mixer) makes the monitor's stream fail with "Too many outbound
 * protocol streams", and the monitor then aborts the connection, resetting every audio stream on it.
 */
import { ping } from "@libp2p/ping";

/** Ping streams one connection may carry at once, each way: the monitor's plus a few explicit ones. */
export const PING_STREAMS_PER_CONNECTION = 4;

export function agoraPing(): ReturnType<typeof ping> {
  return ping({ maxOutboundStreams: PING_STREAMS_PER_CONNECTION, maxInboundStreams: 2 * PING_STREAMS_PER_CONNECTION });
}
