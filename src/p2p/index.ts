/**
 * Public surface of the network subsystem (see node.ts for the node, client.ts for the transient discover
 * client, advertisement.ts for the record format and its checks).
 */

export { RELAYED_STREAM_OPTIONS } from "../relay";
export { agoraNoise, agoraTcp, agoraTransportStack, YAMUX_MAX_FRAME_BYTES, YAMUX_MAX_WINDOW_BYTES } from "../transport";
export type { NodeAdvertisement, NodeStatus, RejectReason, UnsignedAdvertisement } from "./advertisement";
export {
  advertisementKey,
  encodeAdvertisement,
  MAX_RECORD_BYTES,
  RecordRejectedError,
  signAdvertisement,
  verifyAdvertisementRecord,
} from "./advertisement";
export { createDiscoveryClient, type DiscoverOnceOptions, type DiscoveryClient, type DiscoveryClientOptions, discoverOnce } from "./client";
export type { DiscoverQuery } from "./discovery";
export { PROTOCOL_ADVERT, PROTOCOL_DHT } from "./namespaces";
export type { LoadFigures, NetworkNode, NetworkNodeInternals, NetworkNodeOptions, NetworkStatus, PeerSummary } from "./node";
export { createNetworkNode } from "./node";
export type { RankedNode } from "./ranking";
export { loadScore, rankNodes, scoreNode } from "./ranking";
