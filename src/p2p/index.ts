/**
 * Public surface of the network subsystem (see node.ts for the node, client.ts for the transient discover
 * client, advertisement.ts for the record format and its checks, room-record.ts / room-directory.ts for room
 * records: where a room lives, docs/room-record.md).
 */

export { RELAYED_STREAM_OPTIONS } from "../relay";
export { agoraNoise, agoraTcp, agoraTransportStack, YAMUX_MAX_FRAME_BYTES, YAMUX_MAX_WINDOW_BYTES } from "../transport";
export { fetchVerifiedAdvertisement } from "./advert-protocol";
export type { NodeAdvertisement, NodeStatus, RejectReason, UnsignedAdvertisement } from "./advertisement";
export {
  advertisementKey,
  encodeAdvertisement,
  MAX_RECORD_BYTES,
  RecordRejectedError,
  signAdvertisement,
  verifyAdvertisementRecord,
} from "./advertisement";
export {
  createDiscoveryClient,
  type DiscoverOnceOptions,
  type DiscoveryClient,
  type DiscoveryClientOptions,
  discoverOnce,
  listRoomsOnce,
  resolveRoom,
  resolveRoomOnce,
} from "./client";
export type { DiscoverQuery } from "./discovery";
export { PROTOCOL_ADVERT, PROTOCOL_DHT } from "./namespaces";
export type { LoadFigures, NetworkNode, NetworkNodeInternals, NetworkNodeOptions, NetworkStatus, PeerSummary } from "./node";
export { createNetworkNode } from "./node";
export type { RankedNode } from "./ranking";
export { loadScore, rankNodes, scoreNode } from "./ranking";
export {
  fetchHostedRooms,
  type HostedRoomInfo,
  MAX_HOSTED_ROOMS,
  PROTOCOL_ROOMS,
  type ResolveRoomOptions,
  type ResolveRoomRecordOptions,
  ROOMS_ALL_NAMESPACE,
  type RoomClaimOptions,
  type RoomClock,
  RoomDirectory,
  type RoomDirectoryEvents,
  resolveRoomRecord,
  roomsRegionNamespace,
  systemRoomClock,
} from "./room-directory";
export { type ListedRoom, type ListRoomsQuery, listRooms, MAX_LIST_HOSTS } from "./room-list";
export { createRoomLocator, type LocatorMixer, type LocatorRoom, type RoomLocatorClient, type RoomLocatorOptions } from "./room-locator";
export { type HandoverDirection, ROOM_REJECTED_METRIC, RoomMetrics } from "./room-metrics";
export {
  compareRoomRecords,
  encodeRoomRecord,
  MAX_REVOCATIONS,
  MAX_ROOM_RECORD_BYTES,
  type RoomClaim,
  type RoomRecord,
  type RoomRevocation,
  type RoomStatus,
  roomRecordKey,
  roomTieBreak,
  selectRoomRecord,
  signRoomRecord,
  type UnsignedRoomRecord,
  verifyRoomRecord,
} from "./room-record";
