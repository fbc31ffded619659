/**
 * The JSON API's shapes as Elysia (TypeBox) models: they validate what the API sends and reads, and every
 * TypeScript type of the API (types.ts) is derived from them, so a field exists in exactly one place.
 */
import { t } from "elysia";
import type { ParticipantStats } from "../audio";
import { REGION_TOKEN_PATTERN } from "../protocol";

export const NodeStateModel = t.Union([t.Literal("starting"), t.Literal("ready"), t.Literal("draining"), t.Literal("stopping")]);

export const LoadModel = t.Object({
  current_load: t.Number(),
  max_clients: t.Number(),
  cpu_percent: t.Number(),
  mem_percent: t.Number(),
  rss_bytes: t.Number(),
});

/** One point of the dashboard's history (every 2 s over 10 min). */
export const HistorySampleModel = t.Object({
  /** unix ms */
  t: t.Number(),
  peers: t.Number(),
  rooms: t.Number(),
  participants: t.Number(),
  cpu_percent: t.Number(),
  rss_mb: t.Number(),
});

/** Whether other nodes can find this one, for the operator. */
export const DiscoveryModel = t.Object({
  bootstrap_configured: t.Number(),
  bootstrap_connected: t.Number(),
  known_peers: t.Number(),
  routing_table_size: t.Number(),
  /** False in bootstrap mode: a bootstrap node advertises nothing. */
  publishes: t.Boolean(),
  /** When the signed advertisement last reached at least one DHT peer; null = not yet. */
  last_published_at: t.Union([t.String(), t.Null()]),
  /** No bootstrap peer configured, no known peer and no connection: no other node can find this one. */
  isolated: t.Boolean(),
});

export const RelayModel = t.Object({ reservations: t.Number(), circuits: t.Number(), bytes_relayed: t.Number() });

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

export const PeerModel = t.Object({
  peer_id: t.String(),
  addrs: t.Array(t.String()),
  direction: t.String(),
  opened_at: t.Number(),
  latency_ms: t.Union([t.Number(), t.Null()]),
  relayed: t.Boolean(),
});

/**
 * One participant as the API shows it: the media engine's ParticipantStats with snake_case keys (the API's
 * convention). `participantReport` maps one to the other mechanically, and the type check at the end of
 * this file fails when the two shapes drift apart.
 */
export const ParticipantModel = t.Object({
  id: t.String(),
  speaking: t.Boolean(),
  personal_mix: t.Boolean(),
  jitter_ms: t.Number(),
  buffer_depth_ms: t.Number(),
  loss_percent: t.Number(),
  packets_in: t.Number(),
  packets_out: t.Number(),
  concealed: t.Number(),
  late: t.Number(),
  jitter_target_ms: t.Optional(t.Number()),
  /** the arrival-jitter estimate the target follows, ms, fractional (97th percentile over 2 s) */
  jitter_estimate_ms: t.Optional(t.Number()),
});

/** The room's record in the network's room directory, as this node sees it (mixer nodes). */
export const RoomDirectoryModel = t.Object({
  /** This node hosts the room (publishes its record). */
  hosted_here: t.Boolean(),
  /** Epoch of this node's record (0 when it does not host the room). */
  epoch: t.Number(),
  status: t.Union([t.Literal("active"), t.Literal("handing-over")]),
  /** Handovers of the room to this node (in) and from it (out). */
  handovers_in: t.Number(),
  handovers_out: t.Number(),
  /** When its record last reached a DHT peer; null = not yet (or not hosted). */
  last_published_at: t.Union([t.String(), t.Null()]),
});

export const RoomModel = t.Object({
  id: t.String(),
  created_at: t.Number(),
  participants: t.Array(ParticipantModel),
  /** Absent on nodes without a room directory (relay, bootstrap) and for rooms it knows nothing about. */
  directory: t.Optional(RoomDirectoryModel),
});

export const StatusModel = t.Object({
  name: t.String(),
  version: t.String(),
  mode: t.String(),
  state: NodeStateModel,
  peer_id: t.String(),
  region: t.String(),
  group: t.String(),
  labels: t.Array(t.String()),
  capabilities: t.Array(t.String()),
  started_at: t.String(),
  uptime_seconds: t.Number(),
  load: LoadModel,
  limits: t.Object({ max_connections: t.Number(), max_mixers: t.Number(), drain_timeout_seconds: t.Number() }),
  rooms_active: t.Number(),
  participants: t.Number(),
  peers_connected: t.Number(),
  network: t.Union([t.Record(t.String(), t.Unknown()), t.Null()]),
  turn: t.Object({ enabled: t.Boolean(), url: t.String(), username: t.String(), password: t.String() }),
  stun_servers: t.Array(t.String()),
  stun: t.Union([StunModel, t.Null()]),
  drain: t.Union([t.Object({ started_at: t.Union([t.String(), t.Null()]), deadline: t.Union([t.String(), t.Null()]) }), t.Null()]),
  media: t.Union([t.Object({ worker_restarts: t.Number() }), t.Null()]),
  discovery: DiscoveryModel,
  /** Relay mode only. */
  relay: t.Union([RelayModel, t.Null()]),
});

/** What the test-call page (/call) needs to dial the node from a browser. */
export const CallInfoModel = t.Object({
  peer_id: t.String(),
  /** the node's WebSocket multiaddrs (listen and announced; /ws, /wss or /tls/ws), each with /p2p/<peer id> */
  ws_addrs: t.Array(t.String()),
  default_room: t.String(),
});

export const ErrorModel = t.Object({ error: t.Object({ code: t.String(), message: t.String() }) });

export const DrainReplyModel = t.Object({ ok: t.Boolean(), state: t.String() });

export const ReloadModel = t.Object({
  ok: t.Boolean(),
  applied: t.Array(t.String()),
  restart_required: t.Array(t.String()),
  errors: t.Array(t.String()),
});

const TOKEN_SOURCE = REGION_TOKEN_PATTERN.source;
export const DiscoverQueryModel = t.Object({
  region: t.Optional(t.String({ pattern: TOKEN_SOURCE })),
  capability: t.Optional(t.String({ pattern: "^[a-z0-9][a-z0-9_-]{0,31}$" })),
  group: t.Optional(t.String({ pattern: TOKEN_SOURCE })),
  limit: t.Optional(t.Numeric({ minimum: 1, maximum: 100 })),
});

// ---- the participant shape, mapped mechanically --------------------------------------------------------

type SnakeCase<S extends string> = S extends `${infer H}${infer R}`
  ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${SnakeCase<R>}`
  : S;
type SnakeKeys<T> = { [K in keyof T as K extends string ? SnakeCase<K> : never]: T[K] };
export type ParticipantReport = typeof ParticipantModel.static;

/** The engine's figures for one participant, as the API shows them. */
export function participantReport(p: ParticipantStats): ParticipantReport {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  return out as ParticipantReport;
}

// Compile-time: the model and the engine's ParticipantStats (snake-cased) are the same shape.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const participantShapesAgree: Same<SnakeKeys<ParticipantStats>, ParticipantReport> = true;
void participantShapesAgree;
