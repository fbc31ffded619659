/** `discover`, `rooms`, `join` and `loadgen`: client-side commands that start a transient libp2p node. */
import { isIP } from "node:net";
import { GrantError, grantFromString } from "../access";
import {
  type JoinClientReport,
  LOADGEN_CONNECTIONS,
  type LoadgenConnections,
  RoomNavigator,
  runJoinClient,
  runLoadgen as runLoadgenClients,
  VOICE_TRANSPORTS,
  type VoiceTransport,
} from "../client";
import { checkMultiaddrText } from "../config";
import { AgoraError } from "../errors";
import { createLogger } from "../log";
import { readIdentity } from "../node";
import { createRoomLocator, discoverOnce, listRoomsOnce, type RankedNode } from "../p2p";
import { checkRoomId, REGION_TOKEN_PATTERN } from "../protocol";
import { EXIT_FAILURE, EXIT_OK, numberFlag, type Parsed, requireFlag } from "./args";
import type { Io } from "./context";

const TOKEN = REGION_TOKEN_PATTERN;

/** Client commands print their result on stdout; their own log goes to stderr, warnings and worse only (all of it with --verbose). */
function cliLogger(verbose = false) {
  return createLogger({ level: verbose ? "debug" : "warn", format: "text", stdout: process.stderr }).logger;
}

function multiaddrFlag(command: string, name: string, v: unknown): string {
  const text = requireFlag(command, name, v);
  const problem = checkMultiaddrText(text, true);
  if (problem) throw new AgoraError("USAGE", `${command} --${name}: ${problem}`);
  return text;
}

function tokenFlag(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !TOKEN.test(v))
    throw new AgoraError("USAGE", `--${name}: expected a lowercase token like eu-west, got "${String(v)}"`);
  return v;
}

export async function runDiscover(p: Parsed, io: Io): Promise<number> {
  const boots = (p.values.bootstrap as string[] | undefined) ?? [];
  if (boots.length === 0) throw new AgoraError("USAGE", "discover: --bootstrap MULTIADDR is required (a node to enter the DHT through)");
  for (const b of boots) multiaddrFlag("discover", "bootstrap", b);
  const query = {
    region: tokenFlag("region", p.values.region),
    capability: tokenFlag("capability", p.values.capability),
    group: tokenFlag("group", p.values.group),
    limit: numberFlag("limit", p.values.limit, 1, 100, true) ?? 10,
  };
  const timeoutMs = (numberFlag("timeout", p.values.timeout, 1, 300) ?? 15) * 1000;
  const nodes: RankedNode[] = await discoverOnce({ bootstrap: boots, query, logger: cliLogger(p.values.verbose === true), timeoutMs });
  if (p.values.json) {
    io.out(JSON.stringify(nodes));
    return EXIT_OK;
  }
  if (nodes.length === 0) {
    io.out(
      `no live nodes found${query.region ? ` in region ${query.region}` : ""}${query.capability ? ` with capability ${query.capability}` : ""}`,
    );
    return EXIT_OK;
  }
  nodes.forEach((n, i) => {
    const a = n.advertisement;
    io.out(
      `${i + 1}. ${a.peer_id}  ${a.region}/${a.group}  [${(a.capabilities ?? []).join(",")}]  load ${a.current_load}/${a.max_clients}  score ${n.score.toFixed(3)}`,
    );
    io.out(`   ${(a.listen_addr ?? []).join(" ")}`);
    io.out(`   why: ${n.reasons.join("; ")}`);
  });
  return EXIT_OK;
}

export async function runRooms(p: Parsed, io: Io): Promise<number> {
  const boots = (p.values.bootstrap as string[] | undefined) ?? [];
  if (boots.length === 0) throw new AgoraError("USAGE", "rooms: --bootstrap MULTIADDR is required (a node to enter the DHT through)");
  for (const b of boots) multiaddrFlag("rooms", "bootstrap", b);
  const region = tokenFlag("region", p.values.region);
  const timeoutMs = (numberFlag("timeout", p.values.timeout, 1, 300) ?? 10) * 1000;
  const rooms = await listRoomsOnce({ bootstrap: boots, region, logger: cliLogger(), timeoutMs });
  if (p.values.json) {
    io.out(JSON.stringify(rooms));
    return EXIT_OK;
  }
  if (rooms.length === 0) {
    io.out(`no live rooms found${region ? ` in region ${region}` : ""}`);
    return EXIT_OK;
  }
  io.out("ROOM  REGION  HOST  PARTICIPANTS  AGE  EPOCH  STATUS");
  for (const { record: r, age_seconds } of rooms) {
    const status = r.status === "handing-over" ? `handing-over to ${r.successor}` : r.status;
    io.out(`${r.room}  ${r.region}  ${r.host}  ${r.participants}  ${age_seconds}s  ${r.epoch}  ${status}`);
  }
  return EXIT_OK;
}

/**
 * A dial target that follows discovery: each (re)connect asks the DHT for the best live mixer, skipping the
 * nodes this client already failed on (a dead node's record lingers until its TTL runs out).
 */
export function discoveredMixer(
  bootstrap: string[],
  region: string | undefined,
  logger: ReturnType<typeof cliLogger>,
): () => Promise<string> {
  const failed = new Set<string>();
  let current: string | undefined;
  return async () => {
    if (current) failed.add(current);
    for (let attempt = 0; attempt < 20; attempt++) {
      const nodes = await discoverOnce({ bootstrap, query: { region, capability: "mixer", limit: 20 }, logger, timeoutMs: 5_000 });
      const next = nodes.find((n) => !failed.has(n.advertisement.peer_id) && n.advertisement.listen_addr.length > 0);
      if (next) {
        current = next.advertisement.peer_id;
        logger.info({ peer_id: current, score: next.score, reasons: next.reasons }, "joining the best mixer found");
        return `${next.advertisement.listen_addr[0]}/p2p/${current}`;
      }
      // Every known mixer failed: the oldest failure may have recovered; retry it after a pause.
      if (failed.size > 0 && nodes.length > 0) failed.clear();
      await Bun.sleep(500);
    }
    throw new AgoraError("P2P", `no live mixer found${region ? ` in region ${region}` : ""} through ${bootstrap.join(", ")}`);
  };
}

/** `--transport auto|udp|stream` */
function transportFlag(command: string, v: unknown): VoiceTransport | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "string" && (VOICE_TRANSPORTS as readonly string[]).includes(v)) return v as VoiceTransport;
  throw new AgoraError("USAGE", `${command} --transport: "${String(v)}" is not one of ${VOICE_TRANSPORTS.join(", ")}`);
}

export async function runJoin(p: Parsed, io: Io): Promise<number> {
  const room = requireFlag("join", "room", p.values.room);
  // The protocol's own rule (src/protocol), so the CLI accepts exactly the room ids a node accepts.
  const roomProblem = checkRoomId(room);
  if (roomProblem) throw new AgoraError("USAGE", `join --room: ${roomProblem}`);
  const boots = (p.values.bootstrap as string[] | undefined) ?? [];
  if (boots.length > 0 && p.values.node !== undefined) throw new AgoraError("USAGE", "join: give either --node or --bootstrap, not both");
  for (const b of boots) multiaddrFlag("join", "bootstrap", b);
  const region = tokenFlag("region", p.values.region);
  const logger = cliLogger();
  const input = typeof p.values.input === "string" ? p.values.input : undefined;
  const output = typeof p.values.output === "string" ? p.values.output : undefined;
  const durationSec = numberFlag("duration", p.values.duration, 0.1, 86400);
  if (!input && durationSec === undefined) throw new AgoraError("USAGE", "join: give --input FILE or --duration S (how long to listen)");
  const deadAfterSec = numberFlag("dead-after", p.values["dead-after"], 0.5, 3600);
  const statsIntervalSec = numberFlag("stats-interval", p.values["stats-interval"], 0.1, 3600);
  let grant: Uint8Array | undefined;
  if (p.values.grant !== undefined) {
    try {
      grant = grantFromString(String(p.values.grant));
    } catch (err) {
      if (err instanceof GrantError) throw new AgoraError("USAGE", `join --grant: ${err.message}`);
      throw err;
    }
  }
  const identity = typeof p.values["key-file"] === "string" ? readIdentity(p.values["key-file"]).privateKey : undefined;
  if (identity && boots.length > 0)
    throw new AgoraError(
      "USAGE",
      "join: --key-file works with --node (the locator of --bootstrap has its own key); use a bearer grant there",
    );
  // Join by name: the room's record (or the placement rule) says where it lives; REDIRECT and MOVE are
  // followed, and a lost host is replaced by the successor every participant computes.
  const node = boots.length > 0 ? undefined : multiaddrFlag("join", "node", p.values.node);
  const locator = boots.length > 0 ? await createRoomLocator({ bootstrap: boots, logger }) : undefined;
  const navigator = locator ? new RoomNavigator({ libp2p: locator.libp2p, room, locator, region, logger }) : undefined;
  let summary: Awaited<ReturnType<typeof runJoinClient>>;
  // Machine-readable progress for scripts and tests: the live report (which host, which participant id).
  let statsTimer: ReturnType<typeof setInterval> | undefined;
  const live =
    statsIntervalSec === undefined
      ? undefined
      : (report: Readonly<JoinClientReport>) => {
          statsTimer = setInterval(() => io.out(JSON.stringify({ stats: report })), statsIntervalSec * 1000);
        };
  try {
    summary = await runJoinClient({
      ...(navigator && locator ? { navigator, libp2p: locator.libp2p } : { node }),
      ...(grant ? { grant } : {}),
      ...(identity ? { identity } : {}),
      room,
      input,
      output,
      durationSec,
      name: typeof p.values.name === "string" ? p.values.name : undefined,
      transport: transportFlag("join", p.values.transport),
      ...(deadAfterSec !== undefined ? { deadAfterMs: deadAfterSec * 1000 } : {}),
      ...(live ? { live } : {}),
      logger,
    });
  } finally {
    clearInterval(statsTimer);
    await locator?.stop();
  }
  io.out(JSON.stringify(summary));
  return EXIT_OK;
}

export async function runLoadgen(p: Parsed, io: Io): Promise<number> {
  const node = multiaddrFlag("loadgen", "node", p.values.node);
  const rooms = numberFlag("rooms", p.values.rooms, 1, 1000, true) ?? 1;
  const participants = numberFlag("participants", p.values.participants, 1, 1000, true) ?? 3;
  const durationSec = numberFlag("duration", p.values.duration, 1, 86400) ?? 10;
  const connections = p.values.connections ?? "shared";
  if (!LOADGEN_CONNECTIONS.includes(connections as LoadgenConnections))
    throw new AgoraError("USAGE", `--connections: expected ${LOADGEN_CONNECTIONS.join(" or ")}, got "${String(connections)}"`);
  const localAddress = p.values["local-address"];
  if (localAddress !== undefined && (typeof localAddress !== "string" || isIP(localAddress) === 0))
    throw new AgoraError("USAGE", `--local-address: expected an IP address like 127.0.0.2, got "${String(localAddress)}"`);
  const transport = transportFlag("loadgen", p.values.transport);
  const summary = await runLoadgenClients({
    node,
    transport,
    rooms,
    participants,
    durationSec,
    logger: cliLogger(),
    connections: connections as LoadgenConnections,
    talkers: numberFlag("talkers", p.values.talkers, 0, 1000, true),
    silentMicrophones: p.values.silent === true,
    localAddress,
    joinIntervalMs: numberFlag("join-interval", p.values["join-interval"], 0, 60_000),
  });
  io.out(p.values.json ? JSON.stringify(summary) : JSON.stringify(summary, null, 2));
  return (summary as { failed?: number }).failed ? EXIT_FAILURE : EXIT_OK;
}
