/**
 * The ping service every Agora libp2p host runs (nodes, discover clients, room locators).
 *
 * libp2p's ping allows one outbound and two inbound ping streams per connection. Discovery measures each
 * candidate with a ping, and a node runs several discoveries at once (its API's queries, placement's mixer
 * refresh, the alive check before a handover), so a second ping to a peer while one was in flight failed at
 * once and that peer was ranked "unreachable" behind fakes. A few concurrent pings per connection cost a
 * stream each, bounded by the connection limits like any other stream.
 */
import { ping } from "@libp2p/ping";

/** Concurrent ping streams per connection, each way. */
export const PING_STREAMS_PER_CONNECTION = 8;

export function agoraPing(): ReturnType<typeof ping> {
  return ping({ maxOutboundStreams: PING_STREAMS_PER_CONNECTION, maxInboundStreams: PING_STREAMS_PER_CONNECTION });
}
