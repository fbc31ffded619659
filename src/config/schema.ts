/**
 * The one schema of agora-node's configuration: every key's type, default, range, doc string and whether it
 * can change on a live node (SIGHUP). The TOML loader, environment overrides, CLI overrides, `config init`
 * and `config show` are all driven from this table, so a key exists in exactly one place.
 */
import { homedir, hostname } from "node:os";
import { join } from "node:path";

export type NodeMode = "dedicated" | "relay" | "bootstrap";
export const NODE_MODES: readonly NodeMode[] = ["dedicated", "relay", "bootstrap"];

export interface AgoraConfig {
  node: {
    mode: NodeMode;
    listen_addr: string;
    listen_port: number;
    max_connections: number;
    max_mixers: number;
    region: string;
    group: string;
    labels: string[];
    /** seconds */
    drain_timeout: number;
    data_dir: string;
    /** empty: `<data_dir>/agora-node.pid` */
    pid_file: string;
  };
  identity: {
    /** empty: `<data_dir>/identity.key` */
    key_file: string;
    name: string;
  };
  network: {
    bootstrap_peers: string[];
    announce_addrs: string[];
    enable_upnp: boolean;
    stun_servers: string[];
    /** seconds */
    heartbeat_interval: number;
    dht_max_records: number;
  };
  relay: {
    max_reservations: number;
    max_reservations_per_peer: number;
    /** seconds */
    reservation_ttl: number;
    /** seconds; 0 = unlimited */
    max_circuit_duration: number;
    /** bytes per direction; 0 = unlimited */
    max_circuit_bytes: number;
    max_circuits: number;
  };
  turn: {
    enabled: boolean;
    url: string;
    username: string;
    password: string;
  };
  audio: {
    top_k_speakers: number;
    shared_encode: boolean;
    bitrate: number;
    /** milliseconds */
    jitter_min_ms: number;
    /** milliseconds */
    jitter_max_ms: number;
  };
  dashboard: {
    enabled: boolean;
    listen_addr: string;
    port: number;
    auth_token: string;
    auth_token_file: string;
  };
  metrics: {
    enabled: boolean;
    listen_addr: string;
    port: number;
    endpoint: string;
  };
  logging: {
    level: "trace" | "debug" | "info" | "warn" | "error" | "fatal";
    file: string;
    format: "json" | "text";
  };
}

export type SectionName = keyof AgoraConfig;

export type KeyType =
  | { kind: "string"; pattern?: RegExp; patternDesc?: string; maxLength?: number }
  | { kind: "integer"; min: number; max: number }
  | { kind: "boolean" }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "list"; item: { pattern?: RegExp; patternDesc: string; check?: (v: string) => string | undefined }; maxItems: number }
  | { kind: "duration"; min: number; max: number; unit: "s" | "ms" }
  | { kind: "address" };

export type ConfigValue = string | number | boolean | string[];

export interface KeySpec {
  section: SectionName;
  key: string;
  type: KeyType;
  default: ConfigValue | (() => ConfigValue);
  doc: string;
  /** Takes effect on SIGHUP without a restart. */
  live?: boolean;
  /** Masked in `config show`, `/api/status` and logs. */
  secret?: boolean;
  /** Written commented-out by `config init` (example rather than setting). */
  example?: string;
}

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9_.:=\/-]{0,127}$/;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Where state lives when no data_dir is configured: the FHS location for a service, the XDG one for a user. */
export function defaultDataDir(): string {
  if (isRoot()) return "/var/lib/agora";
  const xdg = process.env.XDG_DATA_HOME;
  if (xdg && xdg.startsWith("/")) return join(xdg, "agora-node");
  let home = process.env.HOME;
  if (!home) {
    // A bare uid in a container may have neither HOME nor a passwd entry: homedir() then throws.
    try {
      home = homedir();
    } catch {
      return "/var/lib/agora";
    }
  }
  return join(home, ".local", "share", "agora-node");
}

export function checkMultiaddrText(v: string, requirePeer: boolean): string | undefined {
  if (!v.startsWith("/")) return `expected a multiaddr such as /ip4/1.2.3.4/tcp/7001/p2p/12D3KooW…, got "${v}"`;
  const parts = v.split("/").slice(1);
  if (parts.length < 2 || parts.some((p) => p === "")) return `malformed multiaddr "${v}"`;
  if (requirePeer && !/\/p2p\/[1-9A-HJ-NP-Za-km-z]{40,}$/.test(v)) return `multiaddr "${v}" must end in /p2p/<peer id>`;
  return undefined;
}

export const SCHEMA: readonly KeySpec[] = [
  // [node]
  { section: "node", key: "mode", type: { kind: "enum", values: NODE_MODES }, default: "dedicated",
    doc: "What this node does for the network: dedicated (audio mixer), relay (circuit relay for peers behind NAT) or bootstrap (stable DHT entry point)." },
  { section: "node", key: "listen_addr", type: { kind: "address" }, default: "0.0.0.0",
    doc: "IP address the libp2p (P2P) listener binds. 0.0.0.0 for every IPv4 interface, :: for IPv6." },
  { section: "node", key: "listen_port", type: { kind: "integer", min: 1, max: 65535 }, default: 7001,
    doc: "TCP port of the P2P listener; open it in your firewall." },
  { section: "node", key: "max_connections", type: { kind: "integer", min: 1, max: 100000 }, default: 100, live: true,
    doc: "Upper bound on open P2P connections; also caps audio participants." },
  { section: "node", key: "max_mixers", type: { kind: "integer", min: 0, max: 10000 }, default: 5, live: true,
    doc: "Upper bound on rooms mixed at once (dedicated mode)." },
  { section: "node", key: "region", type: { kind: "string", pattern: TOKEN, patternDesc: "a lowercase token like eu-west" }, default: "default",
    doc: "Region advertised in the DHT (/agora/nodes/<region>/<peer-id>); clients filter on it." },
  { section: "node", key: "group", type: { kind: "string", pattern: TOKEN, patternDesc: "a lowercase token like community-a" }, default: "default",
    doc: "Operator group; used as a tiebreak when clients rank nodes." },
  { section: "node", key: "labels", type: { kind: "list", item: { pattern: LABEL, patternDesc: "a label like gpu or tier=premium" }, maxItems: 32 }, default: [],
    doc: "Free-form labels advertised with the node." },
  { section: "node", key: "drain_timeout", type: { kind: "duration", min: 0, max: 86400, unit: "s" }, default: 30, live: true,
    doc: "On SIGTERM/SIGINT, how long to wait for rooms to empty before stopping (seconds, or a string like \"2m\")." },
  { section: "node", key: "data_dir", type: { kind: "string", maxLength: 4096 }, default: defaultDataDir, example: '"/var/lib/agora"',
    doc: "Directory for persistent state: identity, known peers, PID file. Default: /var/lib/agora as root, else ~/.local/share/agora-node." },
  { section: "node", key: "pid_file", type: { kind: "string", maxLength: 4096 }, default: "",
    doc: "PID file; empty means <data_dir>/agora-node.pid." },
  // [identity]
  { section: "identity", key: "key_file", type: { kind: "string", maxLength: 4096 }, default: "",
    doc: "Ed25519 libp2p identity key, created on first start (mode 0600). Empty means <data_dir>/identity.key." },
  { section: "identity", key: "name", type: { kind: "string", maxLength: 64 }, default: () => hostname().slice(0, 64), example: '"Agora Node EU-West"',
    doc: "Display name shown on the dashboard (default: the host name)." },
  // [network]
  { section: "network", key: "bootstrap_peers",
    type: { kind: "list", item: { patternDesc: "a multiaddr ending in /p2p/<peer id>", check: (v) => checkMultiaddrText(v, true) }, maxItems: 64 },
    default: [], example: '["/ip4/1.2.3.4/tcp/7001/p2p/12D3KooW..."]',
    doc: "Peers dialed at start and re-dialed with backoff until connected." },
  { section: "network", key: "announce_addrs",
    type: { kind: "list", item: { patternDesc: "a multiaddr like /ip4/1.2.3.4/tcp/7001", check: (v) => checkMultiaddrText(v, false) }, maxItems: 16 },
    default: [], doc: "Addresses advertised instead of the listen addresses (public IP behind port forwarding)." },
  { section: "network", key: "enable_upnp", type: { kind: "boolean" }, default: false,
    doc: "Ask the home router for a port mapping via UPnP. Off by default: datacenter hosts have no UPnP gateway." },
  { section: "network", key: "stun_servers", type: { kind: "list", item: { pattern: HOST_PORT, patternDesc: "host:port" }, maxItems: 16 },
    default: [], example: '["stun.l.google.com:19302"]',
    doc: "STUN servers handed to clients for NAT detection of their WebRTC legs (shown in /api/status)." },
  { section: "network", key: "heartbeat_interval", type: { kind: "duration", min: 0.2, max: 3600, unit: "s" }, default: 30,
    doc: "How often the node re-publishes its signed DHT advertisement; it is treated as offline after 3 missed intervals." },
  { section: "network", key: "dht_max_records", type: { kind: "integer", min: 16, max: 1000000 }, default: 8192, live: false,
    doc: "Node advertisements this node stores for the DHT at most (each ≤ 4 KiB; the stalest goes first). One peer may hold at most 4 of them." },
  // [relay]
  { section: "relay", key: "max_reservations", type: { kind: "integer", min: 1, max: 100000 }, default: 256, live: false,
    doc: "Relay mode: reservations held at once." },
  { section: "relay", key: "max_reservations_per_peer", type: { kind: "integer", min: 1, max: 1000 }, default: 4,
    doc: "Relay mode: reservations one peer (by IP) may hold." },
  { section: "relay", key: "reservation_ttl", type: { kind: "duration", min: 10, max: 86400, unit: "s" }, default: 3600,
    doc: "Relay mode: how long a reservation lasts before the client must refresh it." },
  { section: "relay", key: "max_circuit_duration", type: { kind: "duration", min: 0, max: 86400, unit: "s" }, default: 14400,
    doc: "Relay mode: longest relayed call (0 = unlimited). libp2p's default of 2 minutes would cut calls." },
  { section: "relay", key: "max_circuit_bytes", type: { kind: "integer", min: 0, max: 1e15 }, default: 1073741824,
    doc: "Relay mode: bytes relayed per circuit and direction (0 = unlimited). Default 1 GiB, about 9 h of 256 kbit/s." },
  { section: "relay", key: "max_circuits", type: { kind: "integer", min: 1, max: 100000 }, default: 512,
    doc: "Relay mode: circuits open at once." },
  // [turn]
  { section: "turn", key: "enabled", type: { kind: "boolean" }, default: false,
    doc: "Hand clients an external TURN server for their WebRTC legs (relay mode plays TURN's role for libp2p traffic)." },
  { section: "turn", key: "url", type: { kind: "string", pattern: /^(turns?:[^\s]+)?$/, patternDesc: "a turn: or turns: URL" }, default: "",
    example: '"turn:turn.example.com:3478"', doc: "TURN server URL." },
  { section: "turn", key: "username", type: { kind: "string", maxLength: 256 }, default: "", doc: "TURN username." },
  { section: "turn", key: "password", type: { kind: "string", maxLength: 256 }, default: "", secret: true, doc: "TURN password." },
  // [audio]
  { section: "audio", key: "top_k_speakers", type: { kind: "integer", min: 1, max: 16 }, default: 3, live: true,
    doc: "Active speakers that get a personal mix-minus; everyone else shares one encoded mix." },
  { section: "audio", key: "shared_encode", type: { kind: "boolean" }, default: true, live: true,
    doc: "Encode one shared mix for listeners (off: one encoder per participant)." },
  { section: "audio", key: "bitrate", type: { kind: "integer", min: 6000, max: 510000 }, default: 32000, live: true,
    doc: "Opus bitrate of mixes sent to participants (bit/s)." },
  { section: "audio", key: "jitter_min_ms", type: { kind: "integer", min: 0, max: 1000 }, default: 20, live: true,
    doc: "Smallest jitter-buffer target (ms)." },
  { section: "audio", key: "jitter_max_ms", type: { kind: "integer", min: 20, max: 2000 }, default: 200, live: true,
    doc: "Largest jitter-buffer target (ms)." },
  // [dashboard]
  { section: "dashboard", key: "enabled", type: { kind: "boolean" }, default: true, doc: "Serve the web dashboard and JSON API." },
  { section: "dashboard", key: "listen_addr", type: { kind: "address" }, default: "127.0.0.1",
    doc: "Address of the dashboard. Any non-loopback address requires auth_token or auth_token_file." },
  { section: "dashboard", key: "port", type: { kind: "integer", min: 1, max: 65535 }, default: 8080, doc: "Dashboard TCP port." },
  { section: "dashboard", key: "auth_token", type: { kind: "string", maxLength: 512 }, default: "", secret: true, live: true,
    doc: "Admin token: with one set, everything but /health needs 'Authorization: Bearer <token>'. At least 16 characters." },
  { section: "dashboard", key: "auth_token_file", type: { kind: "string", maxLength: 4096 }, default: "", live: true,
    doc: "File holding the admin token (preferred over auth_token: keeps the secret out of the config)." },
  // [metrics]
  { section: "metrics", key: "enabled", type: { kind: "boolean" }, default: true, doc: "Serve Prometheus metrics." },
  { section: "metrics", key: "listen_addr", type: { kind: "address" }, default: "127.0.0.1",
    doc: "Address of the metrics listener; 0.0.0.0 to let a remote Prometheus scrape it." },
  { section: "metrics", key: "port", type: { kind: "integer", min: 1, max: 65535 }, default: 9090, doc: "Metrics TCP port." },
  { section: "metrics", key: "endpoint", type: { kind: "string", pattern: /^\/[A-Za-z0-9._~\/-]*$/, patternDesc: "a URL path like /metrics" },
    default: "/metrics", doc: "HTTP path of the metrics." },
  // [logging]
  { section: "logging", key: "level", type: { kind: "enum", values: ["trace", "debug", "info", "warn", "error", "fatal"] }, default: "info", live: true,
    doc: "Least severe level written." },
  { section: "logging", key: "file", type: { kind: "string", maxLength: 4096 }, default: "",
    example: '"/var/log/agora/node.log"', doc: "Also append logs to this file (empty: stdout only)." },
  { section: "logging", key: "format", type: { kind: "enum", values: ["json", "text"] }, default: "json", doc: "json (one object per line) or text." },
];

export const SECTION_DOCS: Record<SectionName, string> = {
  node: "What the node is and how much it takes on.",
  identity: "The node's libp2p identity.",
  network: "Joining the Agora DHT and being reachable.",
  relay: "Circuit relay v2 limits (relay mode), sized for voice calls.",
  turn: "External TURN server handed to clients.",
  audio: "Mixer settings (dedicated mode).",
  dashboard: "Web dashboard and JSON API.",
  metrics: "Prometheus metrics.",
  logging: "Structured logs.",
};

export const SECTIONS: readonly SectionName[] = ["node", "identity", "network", "relay", "turn", "audio", "dashboard", "metrics", "logging"];

export function specFor(path: string): KeySpec | undefined {
  return SCHEMA.find((s) => `${s.section}.${s.key}` === path);
}

export function defaultValue(spec: KeySpec): ConfigValue {
  const v = typeof spec.default === "function" ? spec.default() : spec.default;
  return Array.isArray(v) ? [...v] : v;
}

/** The effective config when no file, environment or flag says otherwise (the embedded default). */
export function defaultConfig(): AgoraConfig {
  const out: Record<string, Record<string, ConfigValue>> = {};
  for (const s of SECTIONS) out[s] = {};
  for (const spec of SCHEMA) out[spec.section]![spec.key] = defaultValue(spec);
  return out as unknown as AgoraConfig;
}
