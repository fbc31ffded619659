/**
 * Command table and argument parsing (node:util parseArgs, strict: unknown flags are usage errors).
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
 */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { closestName } from "../config";
import { AgoraError } from "../errors";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

type Options = NonNullable<ParseArgsConfig["options"]>;

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: Options;
  /** Lines of help under the usage line: one per option, "  --flag VALUE   what it does". */
  help: string[];
  positionals?: { min: number; max: number };
}

const CONFIG_OPT: Options = { config: { type: "string", short: "c" } };
const HELP_OPT: Options = { help: { type: "boolean", short: "h" } };

/** Flags of `start` that are shorthands for config keys; validated exactly like file and env values. */
export const START_FLAG_KEYS: Record<string, string> = {
  mode: "node.mode",
  "listen-addr": "node.listen_addr",
  "listen-port": "node.listen_port",
  region: "node.region",
  group: "node.group",
  "data-dir": "node.data_dir",
  "dashboard-addr": "dashboard.listen_addr",
  "dashboard-port": "dashboard.port",
  "metrics-addr": "metrics.listen_addr",
  "metrics-port": "metrics.port",
  "log-level": "logging.level",
  "log-format": "logging.format",
  "log-file": "logging.file",
  "heartbeat-interval": "network.heartbeat_interval",
  "drain-timeout": "node.drain_timeout",
};

/** The flags of `start` that change the config; `config show` takes the same so it shows what `start` runs. */
const START_CONFIG_OPTIONS: Options = {
  ...Object.fromEntries(Object.keys(START_FLAG_KEYS).map((k) => [k, { type: "string" as const }])),
  bootstrap: { type: "string", multiple: true },
  set: { type: "string", multiple: true },
};

export const COMMANDS: CommandSpec[] = [
  {
    name: "start",
    summary: "run the node (the default command)",
    usage: "agora-node start [--config FILE] [--mode dedicated|relay|bootstrap] [flags]",
    options: {
      ...CONFIG_OPT,
      ...HELP_OPT,
      ...START_CONFIG_OPTIONS,
    },
    help: [
      "  -c, --config FILE          TOML config (default: the embedded defaults; also AGORA_CONFIG)",
      "  --mode MODE                dedicated | relay | bootstrap",
      "  --listen-addr IP           P2P listen address        --listen-port PORT   P2P port",
      "  --region R, --group G      advertised region and group",
      "  --data-dir DIR             identity, known peers, PID file",
      "  --dashboard-addr IP, --dashboard-port PORT, --metrics-addr IP, --metrics-port PORT",
      "  --bootstrap MULTIADDR      bootstrap peer (repeatable; replaces network.bootstrap_peers)",
      "  --log-level L, --log-format json|text, --log-file FILE",
      "  --heartbeat-interval DUR, --drain-timeout DUR",
      "  --set KEY=VALUE            any config key, e.g. --set audio.top_k_speakers=4 (repeatable)",
      "Signals: SIGTERM/SIGINT drain then stop (a second one forces exit); SIGHUP reloads the config.",
      "Windows: Ctrl-C, Ctrl-Break and closing the console drain then stop; reload with POST /api/reload.",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "stop",
    summary: "stop the running node gracefully (SIGTERM, waits for the drain)",
    usage: "agora-node stop [--config FILE | --data-dir DIR | --pid-file FILE] [--timeout SECONDS] [--endpoint URL]",
    options: {
      ...CONFIG_OPT,
      ...HELP_OPT,
      "pid-file": { type: "string" },
      "data-dir": { type: "string" },
      timeout: { type: "string" },
      endpoint: { type: "string" },
      token: { type: "string" },
    },
    help: [
      "  --data-dir DIR    data directory of the node (its PID file is DIR/agora-node.pid)",
      "  --pid-file FILE   PID file of the node (default: from the config)",
      "  --timeout S       how long to wait (default: drain_timeout + 15 s)",
      "  --endpoint URL    dashboard URL to follow the drain on (default: from the config)",
      "  --token TOKEN     admin token (default: from the config)",
      "While the node drains, a line per change says how many rooms and participants are left and the time",
      "to the drain deadline.",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "status",
    summary: "ask the running node for its status",
    usage: "agora-node status [--config FILE] [--data-dir DIR] [--endpoint URL] [--token TOKEN] [--json]",
    options: {
      ...CONFIG_OPT,
      ...HELP_OPT,
      endpoint: { type: "string" },
      token: { type: "string" },
      json: { type: "boolean" },
      "data-dir": { type: "string" },
    },
    help: [
      "  --data-dir DIR   data directory of the node (where its PID file is)",
      "  --endpoint URL   dashboard URL (default: from the config)",
      "  --token TOKEN    admin token (default: from the config; also AGORA_DASHBOARD_AUTH_TOKEN)",
      "  --json           print the raw JSON",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "health",
    summary: "probe the local /health; exit 0 when ready, 1 otherwise (container HEALTHCHECK)",
    usage: "agora-node health [--config FILE] [--endpoint URL] [--timeout SECONDS]",
    options: { ...CONFIG_OPT, ...HELP_OPT, endpoint: { type: "string" }, timeout: { type: "string" } },
    help: ["  --endpoint URL   dashboard URL (default: from the config)"],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "config",
    summary: "init | validate | show the configuration",
    usage: "agora-node config init [PATH] [--force] | config validate PATH | config show [--config FILE] [start flags]",
    options: { ...CONFIG_OPT, ...HELP_OPT, force: { type: "boolean" }, ...START_CONFIG_OPTIONS },
    help: [
      "  init [PATH]      write the fully commented default config (stdout without PATH)",
      "  validate PATH    check a config; exit 2 with every problem found",
      "  show             print the effective config (secrets masked); takes the flags `start` takes",
      "                   (--mode, --set KEY=VALUE, --data-dir, --bootstrap …) and shows what `start` would run",
    ],
    positionals: { min: 1, max: 2 },
  },
  {
    name: "identity",
    summary: "show | new: the node's libp2p identity",
    usage: "agora-node identity show [--config FILE | --key-file FILE] | identity new --key-file FILE",
    options: { ...CONFIG_OPT, ...HELP_OPT, "key-file": { type: "string" }, json: { type: "boolean" } },
    help: ["  show   print the PeerId of the key file", "  new    create a new key file (never overwrites)"],
    positionals: { min: 1, max: 1 },
  },
  {
    name: "discover",
    summary: "find live nodes in the DHT, best first",
    usage:
      "agora-node discover --bootstrap MULTIADDR [--region R] [--capability C] [--group G] [--limit N] [--json] [--timeout S] [--verbose]",
    options: {
      ...HELP_OPT,
      bootstrap: { type: "string", multiple: true },
      region: { type: "string" },
      capability: { type: "string" },
      group: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
      verbose: { type: "boolean" },
    },
    help: [
      "  --bootstrap MULTIADDR   a node to enter the DHT through (repeatable)",
      "  --region, --capability, --group   exact filters",
      "  --limit N   at most N nodes (default 10)",
      "  --json      machine-readable output",
      "  --verbose   log the query on stderr: each candidate dropped and why, the lookup's figures",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "rooms",
    summary: "list live rooms of the network: host, participants, age, epoch",
    usage: "agora-node rooms --bootstrap MULTIADDR [--region R] [--json] [--timeout S]",
    options: {
      ...HELP_OPT,
      bootstrap: { type: "string", multiple: true },
      region: { type: "string" },
      json: { type: "boolean" },
      timeout: { type: "string" },
    },
    help: [
      "  --bootstrap MULTIADDR   a node to enter the DHT through (repeatable)",
      "  --region R  only rooms of this region (the region a room was created in)",
      "  --json      machine-readable output (one array of {record, age_seconds})",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "join",
    summary: "join a room: send a WAV as Opus in real time, record what you hear",
    usage:
      "agora-node join --room R (--node MULTIADDR | --bootstrap MULTIADDR [--region R]) [--grant G [--key-file F]] [--input in.wav] [--output out.wav] [--duration S] [--transport auto|udp|stream] [--dead-after S] [--stats-interval S]",
    options: {
      ...HELP_OPT,
      room: { type: "string" },
      node: { type: "string" },
      bootstrap: { type: "string", multiple: true },
      region: { type: "string" },
      input: { type: "string" },
      output: { type: "string" },
      duration: { type: "string" },
      name: { type: "string" },
      transport: { type: "string" },
      grant: { type: "string" },
      "key-file": { type: "string" },
      "dead-after": { type: "string" },
      "stats-interval": { type: "string" },
    },
    help: [
      "  --room R              room id",
      "  --grant G             access grant for an owned room (agora-node room grant)",
      "  --key-file FILE       participant key (a grant bound with --peer names its peer id)",
      "  --node MULTIADDR      the dedicated node (…/p2p/<peer id>)",
      "  --bootstrap MULTIADDR instead of --node: join the room by name where it lives (its record in the DHT,",
      "                        or the placement rule), follow REDIRECT/MOVE, and re-home with the room if its",
      "                        host dies (repeatable)",
      "  --region R            with --bootstrap: the region a new room is placed in (default: the first found)",
      "  --input FILE          16-bit PCM WAV to send",
      "  --output FILE         where to write what you hear",
      "  --duration S          stop after S seconds",
      "  --transport T         voice as UDP datagrams when offered (auto, default), required (udp) or never (stream)",
      "  --dead-after S        no data from the node for S seconds (default 15): the session is taken for lost",
      "                        and the client re-homes (a partition sends no reset, only silence)",
      '  --stats-interval S    also print the live report as a JSON line {"stats": …} every S seconds (stdout;',
      "                        host, participant ids, frames, moves); the final report stays the last line",
    ],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "room",
    summary: "create | grant | revoke: owned rooms, signed with the owner's (or a moderator's) key",
    usage:
      "agora-node room create --name N --key-file F | room grant --room R --key-file F --role ROLE [--peer ID] [--expires 2h] [--parent G] | room revoke --room R --key-file F --grant G [--until 7d] [--node MULTIADDR] [--parent G]",
    options: {
      ...HELP_OPT,
      name: { type: "string" },
      "key-file": { type: "string" },
      room: { type: "string" },
      role: { type: "string" },
      peer: { type: "string" },
      expires: { type: "string" },
      parent: { type: "string" },
      grant: { type: "string" },
      until: { type: "string" },
      node: { type: "string" },
      json: { type: "boolean" },
    },
    help: [
      "  create             print the id of room N owned by the key in F (created, mode 0600, if missing)",
      "  grant              print a grant string for `join --grant` and the SDK's joinRoom({ grant })",
      "  revoke             revoke a grant until --until (default: its expiry); with --node, tell that mixer now",
      "  --key-file FILE    the owner's Ed25519 key (a moderator's own key with --parent)",
      "  --role ROLE        listener, speaker or moderator",
      "  --peer ID          bind the grant to this participant's peer id (default: a bearer grant)",
      "  --expires D        lifetime: 90s, 30m, 2h, 7d (default 1d)",
      "  --parent G         the issuing moderator's own grant (delegation: at most its role and lifetime)",
      "  --json             machine-readable output",
    ],
    positionals: { min: 1, max: 1 },
  },
  {
    name: "version",
    summary: "print the version, commit, target, bun and libopus versions",
    usage: "agora-node version [--json]",
    options: { ...HELP_OPT, json: { type: "boolean" } },
    help: ["  --json   one JSON object: version, commit, target, bun, libopus"],
    positionals: { min: 0, max: 0 },
  },
  {
    name: "loadgen",
    summary: "drive many participants against a node (benchmarks, soaks)",
    usage:
      "agora-node loadgen --node MULTIADDR --rooms N --participants M --duration S [--transport auto|udp|stream] [--connections shared|per-participant] [--talkers T] [--silent] [--local-address IP] [--join-interval MS] [--json]",
    options: {
      ...HELP_OPT,
      node: { type: "string" },
      rooms: { type: "string" },
      participants: { type: "string" },
      duration: { type: "string" },
      transport: { type: "string" },
      connections: { type: "string" },
      talkers: { type: "string" },
      silent: { type: "boolean" },
      "local-address": { type: "string" },
      "join-interval": { type: "string" },
      json: { type: "boolean" },
    },
    help: [
      "  --rooms N          rooms",
      "  --participants M   participants per room",
      "  --duration S       seconds",
      "  --transport T      auto (default), udp or stream: how voice travels",
      "  --connections C    shared (one libp2p connection, default) or per-participant (one each, as real clients)",
      "  --talkers T        talkers per room (default 1, the latency probe speaker)",
      "  --silent           everyone else is an open, silent microphone (comfort noise) instead of a quiet tone",
      "  --local-address IP source address of the connections (e.g. 127.0.0.2: the node limits new connections per IP)",
      "  --join-interval MS pause between joins (default 10; per-participant 250, under the node's 5 connections/s per IP)",
    ],
    positionals: { min: 0, max: 0 },
  },
];

export interface Parsed {
  command: CommandSpec;
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parseCommand(argv: string[]): Parsed | { help: true } | { version: true } {
  const first = argv[0];
  if (first === "--version" || first === "-V") return { version: true };
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    if (first === "help" && argv[1]) return parseCommand([argv[1], "--help"]);
    return { help: true };
  }
  // Bare flags mean `start`, so `agora-node --config /etc/agora/node.toml` works as in the container.
  const name = first.startsWith("-") ? "start" : first;
  const rest = first.startsWith("-") ? argv : argv.slice(1);
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    const names = COMMANDS.map((c) => c.name);
    const close = closestName(name, [...names, "version", "help"]);
    throw new AgoraError("USAGE", `unknown command "${name}"${close ? ` (did you mean "${close}"?)` : ""}; run agora-node --help`);
  }
  let parsed: { values: unknown; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new AgoraError(
      "USAGE",
      `${command.name}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}; run agora-node ${command.name} --help`,
    );
  }
  const values = parsed.values as Parsed["values"];
  if (values.help) return { command, values, positionals: parsed.positionals };
  const p = command.positionals;
  if (p && (parsed.positionals.length < p.min || parsed.positionals.length > p.max))
    throw new AgoraError(
      "USAGE",
      parsed.positionals.length > p.max
        ? `${command.name}: unexpected argument "${parsed.positionals[p.max]}"; usage: ${command.usage}`
        : `${command.name}: missing argument; usage: ${command.usage}`,
    );
  return { command, values, positionals: parsed.positionals };
}

export function commandHelp(c: CommandSpec): string {
  return [`agora-node ${c.name}: ${c.summary}`, "", `usage: ${c.usage}`, "", ...c.help, "  -h, --help        this help"].join("\n");
}

export function mainHelp(version: string): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `agora-node ${version}: dedicated node of the Agora voice network (mixer, relay or bootstrap)`,
    "",
    "usage: agora-node <command> [flags]      (no command: start)",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "  --version            print the version number (agora-node version: commit, target, libopus too)",
    "  agora-node <command> --help   help on one command",
    "",
    "exit codes: 0 ok, 1 runtime failure, 2 usage or config error",
  ].join("\n");
}

/** Parses a positive number flag; names the flag in the error. */
export function numberFlag(name: string, v: unknown, min: number, max: number, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n)))
    throw new AgoraError("USAGE", `--${name}: expected ${integer ? "an integer" : "a number"} ${min}..${max}, got "${String(v)}"`);
  return n;
}

export function requireFlag(command: string, name: string, v: unknown): string {
  if (typeof v !== "string" || v === "")
    throw new AgoraError("USAGE", `${command}: --${name} is required; run agora-node ${command} --help`);
  return v;
}
