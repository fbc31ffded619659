/**
 * What the HTTP layer needs from the running node. The node runtime implements it; the HTTP layer never
 * reaches into other subsystems directly.
 */
import { type Static, t } from "elysia";

export type NodeState = "starting" | "ready" | "draining" | "stopping";

/** What STUN (network.stun_servers) learned about the node's UDP socket; `stun` in /api/status. */
export const StunServerModel = t.Object({
  server: t.String(),
  ok: t.Boolean(),
  /** The mapping this server reported last (kept through later failures). */
  address: t.Union([t.String(), t.Null()]),
  port: t.Union([t.Number(), t.Null()]),
  rtt_ms: t.Union([t.Number(), t.Null()]),
  error: t.Union([t.String(), t.Null()]),
  last_ok_at: t.Union([t.String(), t.Null()]),
});

export const StunModel = t.Object({
  local_address: t.String(),
  local_port: t.Number(),
  public_address: t.Union([t.String(), t.Null()]),
  public_port: t.Union([t.Number(), t.Null()]),
  /** endpoint-independent: two servers saw the same public address and port (RFC 4787 §4.1). */
  mapping: t.Union([t.Literal("endpoint-independent"), t.Literal("endpoint-dependent"), t.Literal("unknown")]),
  /** True when AutoNAT confirmed the same public IP; the UDP address is then advertised. */
  autonat_agrees: t.Boolean(),
  checked_at: t.Union([t.String(), t.Null()]),
  next_check_at: t.Union([t.String(), t.Null()]),
  servers: t.Array(StunServerModel),
});

export type StunReport = Static<typeof StunModel>;
export type StunServerReport = Static<typeof StunServerModel>;
export type StunMappingBehaviour = StunReport["mapping"];

export interface LoadSnapshot {
  current_load: number;
  max_clients: number;
  cpu_percent: number;
  mem_percent: number;
  rss_bytes: number;
}

export interface HistorySample {
  /** unix ms */
  t: number;
  peers: number;
  rooms: number;
  participants: number;
  cpu_percent: number;
  rss_mb: number;
}

export interface StatusReport {
  name: string;
  version: string;
  mode: string;
  state: NodeState;
  peer_id: string;
  region: string;
  group: string;
  labels: string[];
  capabilities: string[];
  started_at: string;
  uptime_seconds: number;
  load: LoadSnapshot;
  limits: { max_connections: number; max_mixers: number; drain_timeout_seconds: number };
  rooms_active: number;
  participants: number;
  peers_connected: number;
  network: Record<string, unknown> | null;
  turn: { enabled: boolean; url: string; username: string; password: string };
  stun_servers: string[];
  stun: StunReport | null;
  drain: { started_at: string | null; deadline: string | null } | null;
  media: { worker_restarts: number } | null;
}

export interface PeerReport {
  peer_id: string;
  addrs: string[];
  direction: string;
  opened_at: number;
  latency_ms: number | null;
  relayed: boolean;
}

export interface RoomReport {
  id: string;
  created_at: number;
  participants: {
    id: string;
    speaking: boolean;
    personal_mix: boolean;
    jitter_ms: number;
    buffer_depth_ms: number;
    loss_percent: number;
    packets_in: number;
    packets_out: number;
    concealed: number;
    late: number;
  }[];
}

export interface ReloadReport {
  ok: boolean;
  applied: string[];
  restart_required: string[];
  errors: string[];
}

export interface DiscoverParams {
  region?: string;
  capability?: string;
  group?: string;
  limit?: number;
}

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
  /** A cross-origin preflight was refused (counted in agora_http_cors_refused_total{reason}). */
  corsRefused?(reason: "origin" | "path" | "method" | "header"): void;
}
