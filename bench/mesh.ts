/**
 * bench/mesh: load across a 3-node mesh of real processes on loopback (one bootstrap, two dedicated), as in
 * seed 004's load tests:
 *  - HTTP API load against every node at once (GET /api/status, /api/peers, /api/rooms, /health) with a
 *    fixed number of concurrent clients: p50/p95/p99 latency and requests/s per node;
 *  - an audio loadgen across both mixers (rooms × participants each): join time, frame loss and
 *    end-to-end latency percentiles.
 *   bun bench/mesh.ts [--http-seconds 10] [--concurrency 16] [--audio-seconds 15] [--rooms 2] [--participants 4]
 * The defaults finish in about a minute; pass larger values for a soak (e.g. --audio-seconds 600).
 * Prints a table, then one JSON line. Traffic goes to 127.0.0.1 only, bounded in count and time.
 */
import { runLoadgen } from "../src/client";
import { createLogger } from "../src/log";
import { type NodeHandle, startNode } from "../test/helpers/node-process";
import { positiveArg } from "./args";

const HTTP_SECONDS = positiveArg("http-seconds", 10);
const CONCURRENCY = positiveArg("concurrency", 16);
const AUDIO_SECONDS = positiveArg("audio-seconds", 15);
const ROOMS = positiveArg("rooms", 2);
const PARTICIPANTS = positiveArg("participants", 4);

const pct = (sorted: number[], p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;

async function httpLoad(h: NodeHandle, seconds: number, concurrency: number) {
  const paths = ["/api/status", "/api/peers", "/api/rooms", "/health"];
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let i = w; performance.now() < deadline; i++) {
        const t0 = performance.now();
        try {
          const r = await fetch(`${h.dashboardUrl}${paths[i % paths.length]}`, { signal: AbortSignal.timeout(5000) });
          await r.arrayBuffer();
          if (r.status !== 200) errors++;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    errors,
    rps: latencies.length / seconds,
    p50: pct(latencies, 50),
    p95: pct(latencies, 95),
    p99: pct(latencies, 99),
  };
}

const nodes: Record<string, NodeHandle> = {};
try {
  nodes.bootstrap = await startNode({ args: ["--mode", "bootstrap", "--log-level", "warn", "--heartbeat-interval", "5s"] });
  const boot = await nodes.bootstrap.multiaddr();
  for (const [name, region] of [
    ["mixer-eu", "eu-west"],
    ["mixer-us", "us-east"],
  ] as const)
    nodes[name] = await startNode({
      args: [
        "--mode",
        "dedicated",
        "--region",
        region,
        "--log-level",
        "warn",
        "--heartbeat-interval",
        "5s",
        "--bootstrap",
        boot,
        "--set",
        "node.max_mixers=64",
        "--set",
        "node.max_connections=1000",
      ],
    });

  // 1. HTTP: every node at once.
  const http = Object.fromEntries(
    await Promise.all(Object.entries(nodes).map(async ([n, h]) => [n, await httpLoad(h, HTTP_SECONDS, CONCURRENCY)] as const)),
  );

  // 2. Audio: a loadgen per mixer, both at once.
  const logger = createLogger({ level: "warn", format: "text", stdout: process.stderr }).logger;
  const audio = Object.fromEntries(
    await Promise.all(
      ["mixer-eu", "mixer-us"].map(
        async (n) =>
          [
            n,
            await runLoadgen({
              node: await nodes[n]!.multiaddr(),
              rooms: ROOMS,
              participants: PARTICIPANTS,
              durationSec: AUDIO_SECONDS,
              logger,
            }),
          ] as const,
      ),
    ),
  );

  console.log(
    `agora-node mesh bench: 3 nodes on loopback; HTTP ${HTTP_SECONDS}s × ${CONCURRENCY} clients per node; audio ${AUDIO_SECONDS}s, ${ROOMS} rooms × ${PARTICIPANTS} participants per mixer`,
  );
  console.log("\nHTTP API      req/s    p50 ms   p95 ms   p99 ms   errors");
  for (const [n, r] of Object.entries(http))
    console.log(
      `${n.padEnd(12)} ${r.rps.toFixed(0).padStart(6)}   ${r.p50.toFixed(2).padStart(6)}   ${r.p95.toFixed(2).padStart(6)}   ${r.p99.toFixed(2).padStart(6)}   ${r.errors}`,
    );
  console.log("\naudio        joined   loss %   latency p50/p90/p99 ms   join p50 ms");
  for (const [n, r] of Object.entries(audio))
    console.log(
      `${n.padEnd(12)} ${`${r.totals.joined}/${r.totals.sessions}`.padStart(6)}   ${r.totals.lossPercent.toFixed(2).padStart(6)}   ${[
        r.latencyMs.p50,
        r.latencyMs.p90,
        r.latencyMs.p99,
      ]
        .map((v) => (v === null ? "—" : v.toFixed(0)))
        .join("/")
        .padStart(22)}   ${r.joinMs.p50?.toFixed(0) ?? "—"}`,
    );
  console.log(
    JSON.stringify({
      bench: "mesh",
      http_seconds: HTTP_SECONDS,
      concurrency: CONCURRENCY,
      audio_seconds: AUDIO_SECONDS,
      http: Object.fromEntries(
        Object.entries(http).map(([n, r]) => [
          n,
          { rps: +r.rps.toFixed(0), p50_ms: +r.p50.toFixed(2), p95_ms: +r.p95.toFixed(2), p99_ms: +r.p99.toFixed(2), errors: r.errors },
        ]),
      ),
      audio: Object.fromEntries(
        Object.entries(audio).map(([n, r]) => [
          n,
          {
            joined: r.totals.joined,
            sessions: r.totals.sessions,
            loss_percent: r.totals.lossPercent,
            latency_ms: r.latencyMs,
            join_ms_p50: r.joinMs.p50,
          },
        ]),
      ),
    }),
  );
} finally {
  for (const h of Object.values(nodes)) {
    await h.stop().catch(() => undefined);
    h.cleanup();
  }
}
