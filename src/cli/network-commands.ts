/** `discover`, `join` and `loadgen`: client-side commands that start a transient libp2p node. */
import { runJoinClient, runLoadgen as runLoadgenClients } from "../audio/net";
import { checkMultiaddrText } from "../config/schema";
import { AgoraError } from "../errors";
import { createLogger } from "../log";
import { discoverOnce, type RankedNode } from "../p2p";
import { EXIT_FAILURE, EXIT_OK, numberFlag, type Parsed, requireFlag } from "./args";
import type { Io } from "./index";

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function cliLogger() {
  return createLogger({ level: (process.env.AGORA_LOGGING_LEVEL as "info") ?? "warn", format: "text", stdout: process.stderr }).logger;
}

function multiaddrFlag(command: string, name: string, v: unknown): string {
  const text = requireFlag(command, name, v);
  const problem = checkMultiaddrText(text, true);
  if (problem) throw new AgoraError("USAGE", `${command} --${name}: ${problem}`);
  return text;
}

function tokenFlag(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !TOKEN.test(v)) throw new AgoraError("USAGE", `--${name}: expected a lowercase token like eu-west, got "${String(v)}"`);
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
  const nodes: RankedNode[] = await discoverOnce({ bootstrap: boots, query, logger: cliLogger(), timeoutMs });
  if (p.values.json) {
    io.out(JSON.stringify(nodes));
    return EXIT_OK;
  }
  if (nodes.length === 0) {
    io.out(`no live nodes found${query.region ? ` in region ${query.region}` : ""}${query.capability ? ` with capability ${query.capability}` : ""}`);
    return EXIT_OK;
  }
  nodes.forEach((n, i) => {
    const a = n.advertisement as unknown as Record<string, any>;
    io.out(`${i + 1}. ${a.peer_id}  ${a.region}/${a.group}  [${(a.capabilities ?? []).join(",")}]  load ${a.current_load}/${a.max_clients}  score ${n.score.toFixed(3)}`);
    io.out(`   ${(a.listen_addr ?? []).join(" ")}`);
    io.out(`   why: ${n.reasons.join("; ")}`);
  });
  return EXIT_OK;
}

export async function runJoin(p: Parsed, io: Io): Promise<number> {
  const room = requireFlag("join", "room", p.values.room);
  if (!TOKEN.test(room)) throw new AgoraError("USAGE", `join --room: expected a room id like daily-standup (lowercase, digits, - and _), got "${room}"`);
  const node = multiaddrFlag("join", "node", p.values.node);
  const input = typeof p.values.input === "string" ? p.values.input : undefined;
  const output = typeof p.values.output === "string" ? p.values.output : undefined;
  const durationSec = numberFlag("duration", p.values.duration, 0.1, 86400);
  if (!input && durationSec === undefined) throw new AgoraError("USAGE", "join: give --input FILE or --duration S (how long to listen)");
  const summary = await runJoinClient({ node, room, input, output, durationSec, name: typeof p.values.name === "string" ? p.values.name : undefined, logger: cliLogger() });
  io.out(JSON.stringify(summary));
  return EXIT_OK;
}

export async function runLoadgen(p: Parsed, io: Io): Promise<number> {
  const node = multiaddrFlag("loadgen", "node", p.values.node);
  const rooms = numberFlag("rooms", p.values.rooms, 1, 1000, true) ?? 1;
  const participants = numberFlag("participants", p.values.participants, 1, 1000, true) ?? 3;
  const durationSec = numberFlag("duration", p.values.duration, 1, 86400) ?? 10;
  const summary = await runLoadgenClients({ node, rooms, participants, durationSec, logger: cliLogger() });
  io.out(p.values.json ? JSON.stringify(summary) : JSON.stringify(summary, null, 2));
  return (summary as { failed?: number }).failed ? EXIT_FAILURE : EXIT_OK;
}
