/**
 * Room-record bench: a 10-node loopback network (1 bootstrap + 9 mixers, one region), in process.
 *
 *   claim → resolvable   from a mixer's claim() until a connected client resolves the room to it.
 *   resolve (client)     one resolveRoom() on a connected client-mode DHT node: p50/p95. Target p95 ≤ 300 ms
 *                        (resolve is the first step of join-by-name, whose whole budget is 1 s).
 *   resolve (mixer)      one RoomDirectory.resolve() of another mixer's room: p50/p95.
 *   list                 one listRooms() of the region with every claimed room: time and rooms found.
 *   verify               verifyRoomRecord() per second on one core (signature + canonical check).
 *
 * Usage: bun bench/room-records.ts [--rooms 20] [--resolves 50]
 * Prints a table, then one JSON line.
 */
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { silentLogger } from "../src/log";
import { createDiscoveryClient, encodeRoomRecord, roomRecordKey, signRoomRecord, verifyRoomRecord } from "../src/p2p";
import { cleanupDirs, startTestNode, stopAll, type TestNode, waitFor } from "../test/p2p/helpers";
import { positiveArg } from "./args";

const ROOMS = positiveArg("rooms", 20);
const RESOLVES = positiveArg("resolves", 50);
const HEARTBEAT = 30;
const QUIET = { knownPeersSaveIntervalMs: 60_000 };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
const r1 = (x: number) => Math.round(x * 10) / 10;

const started = performance.now();
const nodes: TestNode[] = [];
let exitCode = 0;
try {
  const boot = await startTestNode({ mode: "bootstrap", heartbeat: HEARTBEAT, internal: QUIET });
  nodes.push(boot);
  const mixers = await Promise.all(
    Array.from({ length: 9 }, () => startTestNode({ heartbeat: HEARTBEAT, bootstrap: [boot.addr], internal: QUIET })),
  );
  nodes.push(...mixers);
  await waitFor("network published", () => mixers.every((n) => n.node.status().last_published_at !== null), 60_000);
  const client = await createDiscoveryClient({ bootstrap: [boot.addr], logger: silentLogger() });

  // --- claim → resolvable -------------------------------------------------------------------------
  const claimMs: number[] = [];
  for (let i = 0; i < ROOMS; i++) {
    const host = mixers[i % mixers.length]!;
    const room = `bench-room-${i}`;
    const t0 = performance.now();
    await host.node.rooms!.claim(room, { epoch: 1, participants: i });
    await waitFor(
      `room ${room} resolvable`,
      async () => (await client.resolveRoom(room, { timeoutMs: 2_000 }))?.host === host.node.peerId,
      20_000,
      20,
    );
    claimMs.push(performance.now() - t0);
  }

  // --- resolve latency ----------------------------------------------------------------------------
  const clientMs: number[] = [];
  const mixerMs: number[] = [];
  for (let i = 0; i < RESOLVES; i++) {
    const room = `bench-room-${i % ROOMS}`;
    let t0 = performance.now();
    const viaClient = await client.resolveRoom(room, { timeoutMs: 5_000 });
    clientMs.push(performance.now() - t0);
    if (!viaClient) throw new Error(`client could not resolve ${room}`);
    const asker = mixers[(i + 1) % mixers.length]!;
    t0 = performance.now();
    const viaMixer = await asker.node.rooms!.resolve(room);
    mixerMs.push(performance.now() - t0);
    if (!viaMixer) throw new Error(`mixer could not resolve ${room}`);
  }

  // --- listing ------------------------------------------------------------------------------------
  let t0 = performance.now();
  const listed = await client.listRooms({ region: "eu-west", timeoutMs: 10_000 });
  const listMs = performance.now() - t0;

  // --- verify throughput --------------------------------------------------------------------------
  const key = await generateKeyPair("Ed25519");
  const rec = await signRoomRecord(
    {
      room: "standup",
      region: "eu-west",
      host: peerIdFromPrivateKey(key).toString(),
      addrs: ["/ip4/127.0.0.1/tcp/7001"],
      participants: 3,
      epoch: 1,
      seq: 1,
      last_seen: Date.now() / 1000,
      ttl_seconds: 90,
      status: "active",
      open: true,
    },
    key,
  );
  const bytes = encodeRoomRecord(rec);
  const N = 2_000;
  t0 = performance.now();
  for (let i = 0; i < N; i++) await verifyRoomRecord(roomRecordKey("standup"), bytes);
  const verifyPerS = N / ((performance.now() - t0) / 1000);
  await client.stop();

  const result = {
    bench: "room-records",
    nodes: 10,
    rooms: ROOMS,
    resolves: RESOLVES,
    claim_to_resolvable_ms: { p50: r1(pct(claimMs, 50)), p95: r1(pct(claimMs, 95)), max: r1(Math.max(...claimMs)) },
    resolve_client_ms: { p50: r1(pct(clientMs, 50)), p95: r1(pct(clientMs, 95)), max: r1(Math.max(...clientMs)) },
    resolve_mixer_ms: { p50: r1(pct(mixerMs, 50)), p95: r1(pct(mixerMs, 95)), max: r1(Math.max(...mixerMs)) },
    list_ms: r1(listMs),
    listed_rooms: listed.length,
    verify_per_s: Math.round(verifyPerS),
    targets: { resolve_client_p95_ms: 300 },
    pass: pct(clientMs, 95) <= 300 && listed.length === ROOMS,
    total_s: r1((performance.now() - started) / 1000),
  };
  const rows: [string, string, string][] = [
    [
      "claim → resolvable (connected client)",
      `p50 ${result.claim_to_resolvable_ms.p50} ms / p95 ${result.claim_to_resolvable_ms.p95} ms`,
      "-",
    ],
    ["resolve (connected client)", `p50 ${result.resolve_client_ms.p50} ms / p95 ${result.resolve_client_ms.p95} ms`, "p95 ≤ 300 ms"],
    ["resolve (another mixer)", `p50 ${result.resolve_mixer_ms.p50} ms / p95 ${result.resolve_mixer_ms.p95} ms`, "-"],
    ["list region", `${result.list_ms} ms, ${listed.length}/${ROOMS} rooms`, `all ${ROOMS}`],
    ["verifyRoomRecord", `${result.verify_per_s}/s`, "-"],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  console.log(`room-records bench: 10 loopback nodes, ${ROOMS} rooms, ${RESOLVES} resolves`);
  for (const [a, b, c] of rows) console.log(`  ${a.padEnd(w0)}  ${b.padEnd(w1)}  target ${c}`);
  console.log(JSON.stringify(result));
  if (!result.pass) exitCode = 1;
} catch (err) {
  console.error(`room-records bench failed: ${err instanceof Error ? err.message : String(err)}`);
  console.log(JSON.stringify({ bench: "room-records", error: String(err) }));
  exitCode = 2;
} finally {
  await stopAll(nodes);
  cleanupDirs();
}
process.exit(exitCode);
