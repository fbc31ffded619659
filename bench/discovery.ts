/**
 * Discovery bench: a 10-node loopback network (1 bootstrap + 9 dedicated nodes in 3 regions).
 *
 *   join → found   time from a new node's start() until a fresh `agora-node discover`-style client
 *                  (new identity, connects to the bootstrap node, one query) finds it. Target ≤ 2 s.
 *   query latency  one discover({region}) on a connected client: providers lookup, 4 DHT record gets,
 *                  4 pings, verification and ranking. Median and p95. Target ≤ 300 ms.
 *
 * Usage: bun bench/discovery.ts [--queries 50] [--joins 5]
 *        bun bench/discovery.ts --fake 200     discovery in a region flooded with 200 fake nodes, on binary
 *                                              processes instead (bench/discovery-flood.ts)
 * Prints a table, then one JSON line.
 */
import { silentLogger } from "../src/log";
import { createDiscoveryClient, discoverOnce } from "../src/p2p";
import { cleanupDirs, startTestNode, stopAll, type TestNode, waitFor } from "../test/p2p/helpers";
import { positiveArg } from "./args";
import { runFloodBench } from "./discovery-flood";

const FAKES = positiveArg("fake", 0, true);
if (FAKES > 0) process.exit(await runFloodBench(FAKES));
const QUERIES = positiveArg("queries", 50);
const JOINS = positiveArg("joins", 5);
// The default heartbeat: joins are measured on a quiet network, not during everyone's re-publish burst.
const HEARTBEAT = 30;
/** known-peers.json at the production cadence, not the test helpers' 0.5 s. */
const QUIET = { knownPeersSaveIntervalMs: 60_000 };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
const r1 = (x: number) => Math.round(x * 10) / 10;

const started = performance.now();
const log = silentLogger();
const nodes: TestNode[] = [];
let exitCode = 0;
try {
  const boot = await startTestNode({ mode: "bootstrap", heartbeat: HEARTBEAT, internal: QUIET });
  nodes.push(boot);
  const regions = ["eu-west", "eu-west", "eu-west", "eu-west", "us-east", "us-east", "us-east", "ap-south", "ap-south"];
  nodes.push(
    ...(await Promise.all(
      regions.map((region, i) =>
        startTestNode({ region, heartbeat: HEARTBEAT, bootstrap: [boot.addr], load: { current_load: i * 7 }, internal: QUIET }),
      ),
    )),
  );
  await waitFor("network published", () => nodes.slice(1).every((n) => n.node.status().last_published_at !== null), 30_000);

  // --- query latency on a connected client ------------------------------------------------------
  const client = await createDiscoveryClient({ bootstrap: [boot.addr], logger: log });
  const warm = await client.discover({ region: "eu-west" });
  if (warm.length !== 4) throw new Error(`warm-up found ${warm.length} eu-west nodes, expected 4`);
  const queryMs: number[] = [];
  for (let i = 0; i < QUERIES; i++) {
    const t0 = performance.now();
    const r = await client.discover({ region: "eu-west" });
    queryMs.push(performance.now() - t0);
    if (r.length !== 4) throw new Error(`query ${i} found ${r.length} nodes, expected 4`);
  }

  // --- join → found ----------------------------------------------------------------------------
  const freshMs: number[] = [];
  const connectedMs: number[] = [];
  for (let j = 0; j < JOINS; j++) {
    const region = `join-${j}`;
    const t0 = performance.now();
    const newcomer = await startTestNode({ region, heartbeat: HEARTBEAT, bootstrap: [boot.addr], internal: QUIET });
    nodes.push(newcomer);
    // (a) what an operator sees with `agora-node discover`: a brand-new client per attempt
    let tFresh = NaN;
    // (b) propagation only: the already-connected client polls
    let tConn = NaN;
    const deadline = t0 + 20_000;
    while (performance.now() < deadline && (Number.isNaN(tFresh) || Number.isNaN(tConn))) {
      if (Number.isNaN(tConn)) {
        const r = await client.discover({ region, timeoutMs: 2_000 });
        if (r.length === 1) tConn = performance.now() - t0;
      }
      if (Number.isNaN(tFresh)) {
        const r = await discoverOnce({ bootstrap: [boot.addr], query: { region }, logger: log, timeoutMs: 3_000 });
        if (r.length === 1) tFresh = performance.now() - t0;
      }
    }
    if (Number.isNaN(tFresh) || Number.isNaN(tConn)) throw new Error(`node ${j} was not found within 20 s`);
    freshMs.push(tFresh);
    connectedMs.push(tConn);
  }
  // one fresh client query on its own (startup + connect + query), for the breakdown
  const onceMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await discoverOnce({ bootstrap: [boot.addr], query: { region: "eu-west" }, logger: log, timeoutMs: 5_000 });
    onceMs.push(performance.now() - t0);
  }
  await client.stop();

  const result = {
    bench: "discovery",
    nodes: 10,
    queries: QUERIES,
    joins: JOINS,
    query_ms: { median: r1(pct(queryMs, 50)), p95: r1(pct(queryMs, 95)), max: r1(Math.max(...queryMs)) },
    join_to_found_fresh_client_ms: { median: r1(pct(freshMs, 50)), max: r1(Math.max(...freshMs)) },
    join_to_found_connected_client_ms: { median: r1(pct(connectedMs, 50)), max: r1(Math.max(...connectedMs)) },
    fresh_client_query_ms: { median: r1(pct(onceMs, 50)), max: r1(Math.max(...onceMs)) },
    targets: { join_to_found_ms: 2000, query_median_ms: 300 },
    pass: pct(freshMs, 50) <= 2000 && Math.max(...freshMs) <= 2000 && pct(queryMs, 50) <= 300,
    total_s: r1((performance.now() - started) / 1000),
  };
  const rows: [string, string, string][] = [
    ["discover query (connected client)", `median ${result.query_ms.median} ms / p95 ${result.query_ms.p95} ms`, "≤ 300 ms"],
    [
      "join → found (fresh client per try)",
      `median ${result.join_to_found_fresh_client_ms.median} ms / max ${result.join_to_found_fresh_client_ms.max} ms`,
      "≤ 2000 ms",
    ],
    [
      "join → found (connected client)",
      `median ${result.join_to_found_connected_client_ms.median} ms / max ${result.join_to_found_connected_client_ms.max} ms`,
      "-",
    ],
    ["fresh client: start+connect+query", `median ${result.fresh_client_query_ms.median} ms`, "-"],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  console.log(`discovery bench: 10 loopback nodes, ${QUERIES} queries, ${JOINS} joins`);
  for (const [a, b, c] of rows) console.log(`  ${a.padEnd(w0)}  ${b.padEnd(w1)}  target ${c}`);
  console.log(JSON.stringify(result));
  if (!result.pass) exitCode = 1;
} catch (err) {
  console.error(`discovery bench failed: ${err instanceof Error ? err.message : String(err)}`);
  console.log(JSON.stringify({ bench: "discovery", error: String(err) }));
  exitCode = 2;
} finally {
  await stopAll(nodes);
  cleanupDirs();
}
process.exit(exitCode);
