/**
 * What the HTTP layer needs from the running node. The node runtime implements it; the HTTP layer never
 * reaches into other subsystems directly.
 */
export type NodeState = "starting" | "ready" | "draining" | "stopping";

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
}
