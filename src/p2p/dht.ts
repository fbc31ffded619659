/** kad-dht settings every participant of Agora's DHT shares: server nodes and transient discovery clients. */
import { type KadDHTInit, passthroughMapper } from "@libp2p/kad-dht";
import { PROTOCOL_DHT } from "./namespaces";
import type { RecordValidation } from "./validator";

/** kad-dht's datastore prefix for Agora's DHT: records under `<prefix>/record/`, providers under `<prefix>/provider/`. */
export const DHT_DATASTORE_PREFIX = "/agora-dht";

export function agoraDhtInit(validation: RecordValidation, clientMode: boolean): KadDHTInit {
  return {
    protocol: PROTOCOL_DHT,
    // Nodes are DHT servers from the first second (without this kad-dht waits to see a public address);
    // discovery clients only query.
    clientMode,
    // The default mapper strips private addresses, which would make LAN and loopback deployments unusable.
    peerInfoMapper: passthroughMapper,
    validators: validation.validators,
    selectors: validation.selectors,
    logPrefix: "libp2p:agora-dht",
    datastorePrefix: DHT_DATASTORE_PREFIX,
    // Run the first self-query as soon as a peer is known instead of 1 s after start: every query
    // waits for it, which made a transient discover client ~1 s slower for nothing.
    initialQuerySelfInterval: 0,
  };
}
