/**
 * bench/soak: a dedicated node (the compiled binary) under sustained audio load for a long time, watched
 * the way an operator would: RSS over time (leak check), mixer tick p99 from /metrics, loss and latency
 * from the loadgen, worker restarts. Not part of the test suite.
 *   bun bench/soak.ts [--minutes 10] [--rooms 4] [--participants 5]
 * Prints a table of samples, then one JSON line.
 */
import { readFileSync } from "node:fs";
import { runLoadgen } from "../src/client";
import { createLogger } from "../src/log";
import { startNode } from "../test/helpers/node-process";
import { positiveArg } from "./args";
import { metricValue } from "./node-load";

const MINUTES = positiveArg("minutes", 10);
const ROOMS = positiveArg("rooms", 4);
const PARTICIPANTS = positiveArg("participants", 5);
const SAMPLE_S = Math.max(5, Math.min(60, (MINUTES * 60) / 40));

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

/** p99 of a Prometheus histogram from its cumulative buckets (upper bound of the bucket holding p99). */
function histogramP99(text: string, name: string): number | null {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)`, "gm"))].map(
    (m) => [m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])] as const,
  );
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return null;
  return buckets.find(([, c]) => c >= total * 0.99)?.[0] ?? null;
}

const node = await startNode({ args: ["--log-level", "warn", "--set", "node.max_mixers=64", "--set", "node.max_connections=1000"] });
try {
  const samples: { t_s: number; rss_mb: number; tick_p99_ms: number | null; restarts: number }[] = [];
  const t0 = performance.now();
  const logger = createLogger({ level: "warn", format: "text", stdout: process.stderr }).logger;
  const load = runLoadgen({ node: await node.multiaddr(), rooms: ROOMS, participants: PARTICIPANTS, durationSec: MINUTES * 60, logger });
  let done = false;
  void load.finally(() => (done = true));
  while (!done) {
    await Bun.sleep(SAMPLE_S * 1000);
    const text = await (await fetch(node.metricsUrl)).text();
    const tick = histogramP99(text, "agora_mixer_tick_seconds");
    samples.push({
      t_s: Math.round((performance.now() - t0) / 1000),
      rss_mb: +rssMb(node.proc.pid).toFixed(1),
      tick_p99_ms: tick === null ? null : tick * 1000,
      restarts: metricValue(text, "agora_media_worker_restarts_total"),
    });
    const s = samples.at(-1)!;
    console.log(
      `${String(s.t_s).padStart(6)} s   rss ${s.rss_mb.toFixed(1).padStart(7)} MB   tick p99 ≤ ${s.tick_p99_ms ?? "—"} ms   worker restarts ${s.restarts}`,
    );
  }
  const report = await load;
  // Leak check: compare the second half's RSS to the first half's, after warm-up.
  const half = Math.floor(samples.length / 2);
  const avg = (a: typeof samples) => a.reduce((x, s) => x + s.rss_mb, 0) / Math.max(1, a.length);
  const first = avg(samples.slice(1, half));
  const second = avg(samples.slice(half));
  // The halves are centred half the run apart.
  const growthPerHour = (second - first) / Math.max(1 / 3600, (samples.at(-1)?.t_s ?? 1) / 2 / 3600);
  console.log(`\nsoak: ${MINUTES} min, ${ROOMS} rooms × ${PARTICIPANTS} participants`);
  console.log(`  RSS first half ${first.toFixed(1)} MB, second half ${second.toFixed(1)} MB (≈ ${growthPerHour.toFixed(1)} MB/h)`);
  console.log(
    `  loss ${report.totals.lossPercent.toFixed(2)} %, latency p50/p99 ${report.latencyMs.p50?.toFixed(0)}/${report.latencyMs.p99?.toFixed(0)} ms, sessions lost ${report.totals.sessionsLost}`,
  );
  console.log(
    JSON.stringify({
      bench: "soak",
      minutes: MINUTES,
      rooms: ROOMS,
      participants: PARTICIPANTS,
      rss_mb_first_half: +first.toFixed(1),
      rss_mb_second_half: +second.toFixed(1),
      rss_growth_mb_per_hour: +growthPerHour.toFixed(1),
      tick_p99_ms_last: samples.at(-1)?.tick_p99_ms ?? null,
      worker_restarts: samples.at(-1)?.restarts ?? 0,
      loss_percent: report.totals.lossPercent,
      latency_ms: report.latencyMs,
      sessions_lost: report.totals.sessionsLost,
      samples,
    }),
  );
} finally {
  await node.stop().catch(() => undefined);
  node.cleanup();
}
