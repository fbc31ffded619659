/**
 * What the HTTP layer needs from the running node. The node runtime implements it; the HTTP layer never
 * reaches into other subsystems directly.
 */
import type {
  CallInfoModel,
  DiscoverQueryModel,
  DiscoveryModel,
  HistorySampleModel,
  LoadModel,
  NodeStateModel,
  PeerModel,
  RelayModel,
  ReloadModel,
  RoomModel,
  StatusModel,
  StunModel,
  StunServerModel,
} from "./models";

export type { ParticipantReport } from "./models";
export type NodeState = typeof NodeStateModel.static;
export type LoadSnapshot = typeof LoadModel.static;
export type HistorySample = typeof HistorySampleModel.static;
export type StatusReport = typeof StatusModel.static;
export type PeerReport = typeof PeerModel.static;
export type RoomReport = typeof RoomModel.static;
export type ReloadReport = typeof ReloadModel.static;
export type CallInfo = typeof CallInfoModel.static;

export type DiscoverParams = typeof DiscoverQueryModel.static;
export type DiscoveryReport = typeof DiscoveryModel.static;
export type RelayReport = typeof RelayModel.static;
export type StunReport = typeof StunModel.static;
export type StunServerReport = typeof StunServerModel.static;
export type StunMappingBehaviour = StunReport["mapping"];

export interface DashboardSource {
  state(): NodeState;
  /** Why the node is not ready, for /health. */
  notReadyReason(): string | undefined;
  status(): StatusReport;
  peers(): PeerReport[];
  rooms(): RoomReport[];
  history(): HistorySample[];
  discover(q: DiscoverParams): Promise<unknown[]>;
  drain(): Promise<void>;
  cancelDrain(): boolean;
  reload(): Promise<ReloadReport>;
  /** Current admin token ('' = none); read per request so SIGHUP can rotate it. */
  authToken(): string;
  /** Origins allowed to read the read-only API (dashboard.cors_origins); read per request so SIGHUP applies. */
  corsOrigins?(): readonly string[];
  /** The node's WebSocket multiaddrs for the test-call page (none: the listener is off, network.ws_port = 0). */
  webSocketAddrs?(): string[];
  /** A cross-origin preflight was refused (counted in agora_http_cors_refused_total{reason}). */
  corsRefused?(reason: "origin" | "path" | "method" | "header"): void;
}
