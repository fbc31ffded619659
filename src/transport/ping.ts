/**
 * libp2p's ping service with room for concurrent pings on one connection. libp2p's connection monitor pings
 * every connection with the same protocol, and aborts the connection when its ping fails; with ping's own
 * limits (1 outbound, 2 inbound streams per connection) an explicit ping at the same moment (a liveness check
 * of a room's host, a client's probe of a mixer) makes the monitor's stream fail with "Too many outbound
 * protocol streams", and the monitor then aborts the connection, resetting every audio stream on it.
 * Discovery pings each candidate too, and a node runs several discoveries at once (its API's queries,
 * placement's mixer refresh): a second ping to a peer failed at once and that peer was ranked "unreachable",
 * behind fakes in a flooded region. A ping stream costs little and is bounded by the connection limits.
 */
import { ping } from "@libp2p/ping";

/** Ping streams one connection may carry at once, each way: the monitor's plus a few explicit ones. */
export const PING_STREAMS_PER_CONNECTION = 8;

export function agoraPing(): ReturnType<typeof ping> {
  return ping({ maxOutboundStreams: PING_STREAMS_PER_CONNECTION, maxInboundStreams: 2 * PING_STREAMS_PER_CONNECTION });
}
