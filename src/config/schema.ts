/**
 * The one schema of agora-node's configuration: every key's type, default, range, doc string and whether it
 * can change on a live node (SIGHUP). The TOML loader, environment overrides, CLI overrides, `config init`
 * and `config show` are all driven from this table, so a key exists in exactly one place.
 */

import { isIP } from "node:net";
import { homedir, hostname } from "node:os";
import { join, win32 as win32Path } from "node:path";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { LABEL_PATTERN, REGION_TOKEN_PATTERN } from "../protocol";

export const NODE_MODES = ["dedicated", "relay", "bootstrap"] as const;
export type NodeMode = (typeof NODE_MODES)[number];

/** The config file's sections, in the order `config init` writes them. */
export const SECTIONS = ["node", "identity", "network", "relay", "turn", "audio", "dashboard", "metrics", "logging"] as const;
export type SectionName = (typeof SECTIONS)[number];

export type KeyType =
  | { kind: "string"; pattern?: RegExp; patternDesc?: string; maxLength?: number }
  | { kind: "integer"; min: number; max: number }
  | { kind: "boolean" }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "list"; item: { pattern?: RegExp; patternDesc: string; check?: (v: string) => string | undefined }; maxItems: number }
  | { kind: "duration"; min: number; max: number; unit: "s" | "ms" }
  | { kind: "address" };

export type ConfigValue = string | number | boolean | readonly string[];

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

const TOKEN = REGION_TOKEN_PATTERN;
const LABEL = LABEL_PATTERN;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/** What the data-directory default depends on; injectable so every OS's rule is testable on any OS. */
export interface HostInfo {
  platform: NodeJS.Platform;
  env: Record<string, string | undefined>;
  /** root on POSIX; an elevated administrator (or a service account) on Windows */
  isAdmin: () => boolean;
  homedir: () => string;
}

/**
 * Windows has no uid: `net session` succeeds only in an elevated process (the probe the is-admin family of
 * packages uses; not worth a dependency for one spawn). Only run when data_dir is not configured.
 */
function windowsElevated(): boolean {
  try {
    return Bun.spawnSync(["net", "session"], { stdout: "ignore", stderr: "ignore", timeout: 3000 }).exitCode === 0;
  } catch {
    return false;
  }
}

let elevated: boolean | undefined;
/** The probe starts a process: asked once per process. */
function isElevatedOnWindows(): boolean {
  if (elevated === undefined) elevated = windowsElevated();
  return elevated;
}

export function currentHost(): HostInfo {
  return {
    platform: process.platform,
    env: process.env,
    isAdmin: () => (process.platform === "win32" ? isElevatedOnWindows() : typeof process.getuid === "function" && process.getuid() === 0),
    homedir,
  };
}

/**
 * Where state lives when no data_dir is configured, by each OS's convention:
 *   Linux (and other POSIX): root → /var/lib/agora (FHS, the systemd unit), else $XDG_DATA_HOME/agora-node
 *     or ~/.local/share/agora-node;
 *   macOS: root → /Library/Application Support/agora-node, else ~/Library/Application Support/agora-node;
 *   Windows: administrator → %ProgramData%\agora, else %LOCALAPPDATA%\agora-node.
 */
export function defaultDataDir(host: HostInfo = currentHost()): string {
  const { env } = host;
  // A bare uid in a container may have neither HOME nor a passwd entry: homedir() then throws.
  const home = (): string | undefined => {
    try {
      return host.homedir() || undefined;
    } catch {
      return undefined;
    }
  };
  if (host.platform === "win32") {
    const programData = env.ProgramData || env.ALLUSERSPROFILE || "C:\\ProgramData";
    if (host.isAdmin()) return win32Path.join(programData, "agora");
    const profile = env.USERPROFILE || home();
    const local = env.LOCALAPPDATA || (profile ? win32Path.join(profile, "AppData", "Local") : undefined);
    return local ? win32Path.join(local, "agora-node") : win32Path.join(programData, "agora");
  }
  if (host.platform === "darwin") {
    if (host.isAdmin()) return "/Library/Application Support/agora-node";
    const h = env.HOME || home();
    return h ? join(h, "Library", "Application Support", "agora-node") : "/Library/Application Support/agora-node";
  }
  if (host.isAdmin()) return "/var/lib/agora";
  const xdg = env.XDG_DATA_HOME;
  if (xdg?.startsWith("/")) return join(xdg, "agora-node");
  const h = env.HOME || home();
  return h ? join(h, ".local", "share", "agora-node") : "/var/lib/agora";
}

/** Components whose value the config checks itself, so each problem gets its own message. */
const VALUED_PROTOCOLS = new Set(["ip4", "ip6", "tcp", "udp", "dns", "dns4", "dns6", "dnsaddr", "p2p", "ipfs", "sni", "certhash"]);

export function checkMultiaddrText(v: string, requirePeer: boolean): string | undefined {
  if (!v.startsWith("/")) return `expected a multiaddr such as /ip4/1.2.3.4/tcp/7001/p2p/12D3KooW…, got "${v}"`;
  const parts = v.split("/").slice(1);
  if (parts.length < 2 || parts.some((p) => p === "")) return `malformed multiaddr "${v}"`;
  // Walk the components: an address, a port and a peer id each get their own message naming the bad part.
  for (let i = 0; i < parts.length; i++) {
    const name = parts[i]!;
    if (!VALUED_PROTOCOLS.has(name)) continue;
    const value = parts[i + 1];
    if (value === undefined) return `multiaddr "${v}": /${name} needs a value`;
    i++;
    if (name === "ip4" && isIP(value) !== 4) return `multiaddr "${v}": "${value}" is not an IPv4 address`;
    if (name === "ip6" && isIP(value) !== 6) return `multiaddr "${v}": "${value}" is not an IPv6 address`;
    if ((name === "tcp" || name === "udp") && !(/^\d{1,5}$/.test(value) && Number(value) >= 1 && Number(value) <= 65535))
      return `multiaddr "${v}": ${name} port "${value}" is not in 1..65535`;
    if (name === "p2p" || name === "ipfs") {
      try {
        peerIdFromString(value);
      } catch {
        return `multiaddr "${v}": "${value}" is not a valid peer id (expected a base58 id like 12D3KooW…)`;
      }
    }
  }
  try {
    multiaddr(v);
  } catch (err) {
    return `malformed multiaddr "${v}": ${(err as Error).message}`;
  }
  if (requirePeer && !(parts.length >= 2 && (parts[parts.length - 2] === "p2p" || parts[parts.length - 2] === "ipfs")))
    return `multiaddr "${v}" must end in /p2p/<peer id>`;
  return undefined;
}

/**
 * One web origin exactly as a browser sends it in `Origin` (RFC 6454 serialization): http or https, a host,
 * an optional non-default port, nothing after. Comparing serialized origins as strings is then exact.
 */
export function checkOrigin(v: string): string | undefined {
  if (v === "*" || v === "null") return `"${v}" is not allowed: list each origin (like https://directory.example.org) explicitly`;
  if (!/^https?:\/\/[^\s/?#]+$/.test(v))
    return `expected an origin like https://directory.example.org (scheme://host[:port], no path), got "${v}"`;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return `"${v}" is not a valid origin`;
  }
  if (url.username || url.password) return `an origin carries no user info, got "${v}"`;
  if (url.origin !== v) return `write the origin as browsers send it: "${url.origin}", got "${v}"`;
  return undefined;
}

/**
 * Every key of the configuration. `as const` keeps each entry's section, key and type literal, so that
 * AgoraConfig below is computed from this table: a key added here exists in the type, the file, the
 * environment, the flags and `config init` at once, and nowhere else.
 */
const SCHEMA_TABLE = [
  // [node]
  {
    section: "node",
    key: "mode",
    type: { kind: "enum", values: NODE_MODES },
    default: "dedicated",
    doc: "What this node does for the network: dedicated (audio mixer), relay (circuit relay for peers behind NAT) or bootstrap (stable DHT entry point).",
  },
  {
    section: "node",
    key: "listen_addr",
    type: { kind: "address" },
    default: "0.0.0.0",
    doc: "IP address the libp2p (P2P) listener binds. 0.0.0.0 for every IPv4 interface, :: for IPv6.",
  },
  {
    section: "node",
    key: "listen_port",
    type: { kind: "integer", min: 1, max: 65535 },
    default: 7001,
    doc: "TCP port of the P2P listener; open it in your firewall.",
  },
  {
    section: "node",
    key: "max_connections",
    type: { kind: "integer", min: 1, max: 100000 },
    default: 100,
    live: true,
    doc: "Upper bound on open P2P connections; also caps audio participants.",
  },
  {
    section: "node",
    key: "max_mixers",
    type: { kind: "integer", min: 0, max: 10000 },
    default: 5,
    live: true,
    doc: "Upper bound on rooms mixed at once (dedicated mode).",
  },
  {
    section: "node",
    key: "region",
    type: { kind: "string", pattern: TOKEN, patternDesc: "a lowercase token like eu-west" },
    default: "default",
    doc: "Region advertised in the DHT (/agora/nodes/<region>/<peer-id>); clients filter on it.",
  },
  {
    section: "node",
    key: "group",
    type: { kind: "string", pattern: TOKEN, patternDesc: "a lowercase token like community-a" },
    default: "default",
    doc: "Operator group; used as a tiebreak when clients rank nodes.",
  },
  {
    section: "node",
    key: "labels",
    type: { kind: "list", item: { pattern: LABEL, patternDesc: "a label like gpu or tier=premium" }, maxItems: 32 },
    default: [],
    doc: "Free-form labels advertised with the node.",
  },
  {
    section: "node",
    key: "drain_timeout",
    type: { kind: "duration", min: 0, max: 86400, unit: "s" },
    default: 30,
    live: true,
    doc: 'On SIGTERM/SIGINT, how long to wait for rooms to empty before stopping (seconds, or a string like "2m").',
  },
  {
    section: "node",
    key: "data_dir",
    type: { kind: "string", maxLength: 4096 },
    default: () => defaultDataDir(),
    example: '"/var/lib/agora"',
    doc: "Directory for persistent state: identity, known peers, PID file. Default: /var/lib/agora as root, else ~/.local/share/agora-node.",
  },
  {
    section: "node",
    key: "pid_file",
    type: { kind: "string", maxLength: 4096 },
    default: "",
    doc: "PID file; empty means <data_dir>/agora-node.pid.",
  },
  // [identity]
  {
    section: "identity",
    key: "key_file",
    type: { kind: "string", maxLength: 4096 },
    default: "",
    doc: "Ed25519 libp2p identity key, created on first start (mode 0600). Empty means <data_dir>/identity.key.",
  },
  {
    section: "identity",
    key: "name",
    type: { kind: "string", maxLength: 64 },
    default: () => hostname().slice(0, 64),
    example: '"Agora Node EU-West"',
    doc: "Display name shown on the dashboard (default: the host name).",
  },
  // [network]
  {
    section: "network",
    key: "bootstrap_peers",
    type: {
      kind: "list",
      item: { patternDesc: "a multiaddr ending in /p2p/<peer id>", check: (v) => checkMultiaddrText(v, true) },
      maxItems: 64,
    },
    default: [],
    example: '["/ip4/1.2.3.4/tcp/7001/p2p/12D3KooW..."]',
    doc: "Peers dialed at start and re-dialed with backoff until connected.",
  },
  {
    section: "network",
    key: "announce_addrs",
    type: {
      kind: "list",
      item: { patternDesc: "a multiaddr like /ip4/1.2.3.4/tcp/7001", check: (v) => checkMultiaddrText(v, false) },
      maxItems: 16,
    },
    default: [],
    doc: "Addresses advertised instead of the listen addresses (public IP behind port forwarding).",
  },
  {
    section: "network",
    key: "enable_upnp",
    type: { kind: "boolean" },
    default: false,
    doc: "Ask the home router for a port mapping via UPnP. Off by default: datacenter hosts have no UPnP gateway.",
  },
  {
    section: "network",
    key: "stun_servers",
    type: { kind: "list", item: { pattern: HOST_PORT, patternDesc: "host:port" }, maxItems: 16 },
    default: [],
    example: '["stun.l.google.com:19302"]',
    doc: "STUN servers (host:port) the node asks for the public address of its UDP socket (node.listen_port, UDP) at start and every 5 min; shown in /api/status and, when AutoNAT agrees, advertised.",
  },
  {
    section: "network",
    key: "heartbeat_interval",
    type: { kind: "duration", min: 0.2, max: 3600, unit: "s" },
    default: 30,
    doc: "How often the node re-publishes its signed DHT advertisement; it is treated as offline after 3 missed intervals.",
  },
  {
    section: "network",
    key: "ws_port",
    type: { kind: "integer", min: 0, max: 65535 },
    default: 0,
    doc: "TCP port of the libp2p WebSocket listener (/ws), for browsers; 0 = off. For wss put a TLS reverse proxy in front (README) and list its public /tls/ws address in network.announce_addrs.",
  },
  {
    section: "network",
    key: "ws_listen_addr",
    type: { kind: "address" },
    default: "127.0.0.1",
    doc: "IP address the WebSocket listener binds. Loopback (for a TLS reverse proxy on the same host) unless network.ws_allow_insecure_public is set.",
  },
  {
    section: "network",
    key: "ws_allow_insecure_public",
    type: { kind: "boolean" },
    default: false,
    doc: "Allow plain (unencrypted HTTP) ws on a non-loopback address. libp2p traffic is still noise-encrypted, but browsers on https pages refuse ws://.",
  },
  {
    section: "network",
    key: "dht_max_records",
    type: { kind: "integer", min: 16, max: 1000000 },
    default: 8192,
    live: false,
    doc: "Node advertisements this node stores for the DHT at most (each ≤ 4 KiB; the stalest goes first). One peer may hold at most 4 of them.",
  },
  // [relay]
  {
    section: "relay",
    key: "max_reservations",
    type: { kind: "integer", min: 1, max: 100000 },
    default: 256,
    live: false,
    doc: "Relay mode: reservations held at once.",
  },
  {
    section: "relay",
    key: "max_reservations_per_peer",
    type: { kind: "integer", min: 1, max: 1000 },
    default: 4,
    doc: "Relay mode: reservations one peer (by IP) may hold.",
  },
  {
    section: "relay",
    key: "reservation_ttl",
    type: { kind: "duration", min: 10, max: 86400, unit: "s" },
    default: 3600,
    doc: "Relay mode: how long a reservation lasts before the client must refresh it.",
  },
  {
    section: "relay",
    key: "max_circuit_duration",
    type: { kind: "duration", min: 0, max: 86400, unit: "s" },
    default: 14400,
    doc: "Relay mode: longest relayed call (0 = unlimited). libp2p's default of 2 minutes would cut calls.",
  },
  {
    section: "relay",
    key: "max_circuit_bytes",
    type: { kind: "integer", min: 0, max: 1e15 },
    default: 1073741824,
    doc: "Relay mode: bytes relayed per circuit and direction (0 = unlimited). Default 1 GiB, about 9 h of 256 kbit/s.",
  },
  {
    section: "relay",
    key: "max_circuits",
    type: { kind: "integer", min: 1, max: 100000 },
    default: 512,
    doc: "Relay mode: circuits open at once.",
  },
  // [turn]
  {
    section: "turn",
    key: "enabled",
    type: { kind: "boolean" },
    default: false,
    doc: "Hand clients an external TURN server for their WebRTC legs (relay mode plays TURN's role for libp2p traffic).",
  },
  {
    section: "turn",
    key: "url",
    type: { kind: "string", pattern: /^(turns?:[^\s]+)?$/, patternDesc: "a turn: or turns: URL" },
    default: "",
    example: '"turn:turn.example.com:3478"',
    doc: "TURN server URL.",
  },
  { section: "turn", key: "username", type: { kind: "string", maxLength: 256 }, default: "", doc: "TURN username." },
  { section: "turn", key: "password", type: { kind: "string", maxLength: 256 }, default: "", secret: true, doc: "TURN password." },
  // [audio]
  {
    section: "audio",
    key: "top_k_speakers",
    type: { kind: "integer", min: 1, max: 16 },
    default: 3,
    live: true,
    doc: "Active speakers that get a personal mix-minus; everyone else shares one encoded mix.",
  },
  {
    section: "audio",
    key: "shared_encode",
    type: { kind: "boolean" },
    default: true,
    live: true,
    doc: "Encode one shared mix for listeners (off: one encoder per participant).",
  },
  {
    section: "audio",
    key: "bitrate",
    type: { kind: "integer", min: 6000, max: 510000 },
    default: 32000,
    live: true,
    doc: "Opus bitrate of mixes sent to participants (bit/s).",
  },
  {
    section: "audio",
    key: "jitter_min_ms",
    type: { kind: "integer", min: 0, max: 1000 },
    default: 20,
    live: true,
    doc: "Smallest jitter-buffer target (ms).",
  },
  {
    section: "audio",
    key: "max_streams_per_peer",
    type: { kind: "integer", min: 1, max: 100000 },
    default: 64,
    doc: "Participants (audio streams) one remote peer may have at once, over all its connections; more are refused with RATE_LIMITED.",
  },
  {
    section: "audio",
    key: "max_streams_per_ip",
    type: { kind: "integer", min: 1, max: 1000000 },
    default: 256,
    doc: "The same per remote IP address (IPv6: per /64), over every peer behind it. Raise it for load tests from one host.",
  },
  {
    section: "audio",
    key: "joins_per_second_per_peer",
    type: { kind: "integer", min: 1, max: 100000 },
    default: 8,
    doc: "Sustained join attempts per second one peer may make (bursts of 4× are allowed); beyond, RATE_LIMITED.",
  },
  {
    section: "audio",
    key: "joins_per_second_per_ip",
    type: { kind: "integer", min: 1, max: 1000000 },
    default: 32,
    doc: "The same per remote IP address (IPv6: per /64).",
  },
  {
    section: "audio",
    key: "jitter_max_ms",
    type: { kind: "integer", min: 20, max: 2000 },
    default: 200,
    live: true,
    doc: "Largest jitter-buffer target (ms).",
  },
  {
    section: "audio",
    key: "udp_enabled",
    type: { kind: "boolean" },
    default: true,
    doc: "Offer voice as encrypted UDP datagrams to 1.1.0 clients that handle them (the stream stays for control and is the fallback).",
  },
  {
    section: "audio",
    key: "udp_port",
    type: { kind: "integer", min: 0, max: 65535 },
    default: 0,
    doc: "UDP port of the voice datagrams. 0 = share the node's UDP socket on node.listen_port (the one STUN maps for NAT traversal, so clients behind NATs reach the mapping STUN learned); another port gets a socket of its own. Either way the media worker owns the socket and carries every voice datagram itself (the main thread keeps only control; on the shared socket the worker hands STUN's messages to the main thread). Open it in your firewall.",
  },
  {
    section: "audio",
    key: "udp_listen_addr",
    type: { kind: "address" },
    default: "0.0.0.0",
    doc: "IP address the voice datagram socket binds when audio.udp_port is set (with udp_port = 0 it is node.listen_addr); a specific address is also offered to clients (0.0.0.0/:: offers none: clients use the address they dialled).",
  },
  // [dashboard]
  { section: "dashboard", key: "enabled", type: { kind: "boolean" }, default: true, doc: "Serve the web dashboard and JSON API." },
  {
    section: "dashboard",
    key: "listen_addr",
    type: { kind: "address" },
    default: "127.0.0.1",
    doc: "Address of the dashboard. Any non-loopback address requires auth_token or auth_token_file.",
  },
  { section: "dashboard", key: "port", type: { kind: "integer", min: 1, max: 65535 }, default: 8080, doc: "Dashboard TCP port." },
  {
    section: "dashboard",
    key: "auth_token",
    type: { kind: "string", maxLength: 512 },
    default: "",
    secret: true,
    live: true,
    doc: "Admin token: with one set, everything but /health needs 'Authorization: Bearer <token>'. At least 16 characters.",
  },
  {
    section: "dashboard",
    key: "auth_token_file",
    type: { kind: "string", maxLength: 4096 },
    default: "",
    live: true,
    doc: "File holding the admin token (preferred over auth_token: keeps the secret out of the config).",
  },
  {
    section: "dashboard",
    key: "cors_origins",
    type: { kind: "list", item: { patternDesc: "an origin like https://directory.example.org", check: checkOrigin }, maxItems: 32 },
    default: [],
    live: true,
    example: '["https://directory.example.org"]',
    doc: "Web origins whose pages may read the read-only API (GET /api/status, /api/peers, /api/rooms, /api/discover, /health) from a browser. Mutating endpoints are never opened to other origins. Empty: same-origin only.",
  },
  // [metrics]
  { section: "metrics", key: "enabled", type: { kind: "boolean" }, default: true, doc: "Serve Prometheus metrics." },
  {
    section: "metrics",
    key: "listen_addr",
    type: { kind: "address" },
    default: "127.0.0.1",
    doc: "Address of the metrics listener; 0.0.0.0 to let a remote Prometheus scrape it.",
  },
  { section: "metrics", key: "port", type: { kind: "integer", min: 1, max: 65535 }, default: 9090, doc: "Metrics TCP port." },
  {
    section: "metrics",
    key: "endpoint",
    type: { kind: "string", pattern: /^\/[A-Za-z0-9._~/-]*$/, patternDesc: "a URL path like /metrics" },
    default: "/metrics",
    doc: "HTTP path of the metrics.",
  },
  // [logging]
  {
    section: "logging",
    key: "level",
    type: { kind: "enum", values: ["trace", "debug", "info", "warn", "error", "fatal"] },
    default: "info",
    live: true,
    doc: "Least severe level written.",
  },
  {
    section: "logging",
    key: "file",
    type: { kind: "string", maxLength: 4096 },
    default: "",
    example: '"/var/log/agora/node.log"',
    doc: "Also append logs to this file (empty: stdout only).",
  },
  {
    section: "logging",
    key: "format",
    type: { kind: "enum", values: ["json", "text"] },
    default: "json",
    doc: "json (one object per line) or text.",
  },
] as const satisfies readonly KeySpec[];

/** The same table, as the loader, the renderer and the CLI iterate it. */
export const SCHEMA: readonly KeySpec[] = SCHEMA_TABLE;

/** The TypeScript type of a key's value, from its KeyType. */
type ValueOfKey<T> = T extends { kind: "integer" | "duration" }
  ? number
  : T extends { kind: "boolean" }
    ? boolean
    : T extends { kind: "enum"; values: readonly (infer V)[] }
      ? V
      : T extends { kind: "list" }
        ? string[]
        : string;
type SchemaEntry = (typeof SCHEMA_TABLE)[number];

/**
 * The effective configuration: one object per section, one field per key, typed from SCHEMA. Durations are
 * seconds (or ms where their unit says so), lists are string arrays.
 */
export type AgoraConfig = {
  [S in SectionName]: { [E in Extract<SchemaEntry, { section: S }> as E["key"]]: ValueOfKey<E["type"]> };
};

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

export function specFor(path: string): KeySpec | undefined {
  return SCHEMA.find((s) => `${s.section}.${s.key}` === path);
}

export function defaultValue(spec: KeySpec): ConfigValue {
  const v = typeof spec.default === "function" ? spec.default() : spec.default;
  return Array.isArray(v) ? [...(v as readonly string[])] : v;
}

/** The effective config when no file, environment or flag says otherwise (the embedded default). */
export function defaultConfig(): AgoraConfig {
  const out: Record<string, Record<string, ConfigValue>> = {};
  for (const s of SECTIONS) out[s] = {};
  for (const spec of SCHEMA) out[spec.section]![spec.key] = defaultValue(spec);
  return out as unknown as AgoraConfig;
}
