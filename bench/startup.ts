/**
 * bench/startup: time from process start to /health 200, idle RSS after settling, and binary size.
 * Median of several runs of the compiled binary. Prints a table, then one JSON line.
 *   bun bench/startup.ts [--runs N]
 * Targets: start → healthy ≤ 1 s, idle RSS ≤ 120 MB.
 */
import { readFileSync, rmSync, statSync } from "node:fs";
import { BINARY, ensureBinary, freePort, tempDir } from "../test/helpers/node-process";
import { positiveArg } from "./args";

const RUNS = positiveArg("runs", 7);
ensureBinary();

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const results: { mode: string; healthyMs: number[]; rssMb: number[] }[] = [];
for (const mode of ["dedicated", "relay", "bootstrap"]) {
  const healthyMs: number[] = [];
  const rssMb: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const dir = tempDir("agora-bench-");
    const [p2p, dash, met] = [await freePort(), await freePort(), await freePort()];
    const t0 = performance.now();
    const proc = Bun.spawn(
      [
        BINARY,
        "start",
        "--mode",
        mode,
        "--data-dir",
        dir,
        "--listen-addr",
        "127.0.0.1",
        "--listen-port",
        String(p2p),
        "--dashboard-port",
        String(dash),
        "--metrics-port",
        String(met),
        "--log-level",
        "warn",
      ],
      { stdout: "ignore", stderr: "ignore", env: { HOME: dir, PATH: process.env.PATH ?? "" } },
    );
    for (;;) {
      try {
        if ((await fetch(`http://127.0.0.1:${dash}/health`)).status === 200) break;
      } catch {
        /* not up yet */
      }
      if (performance.now() - t0 > 30_000) throw new Error("node did not become healthy in 30 s");
      await Bun.sleep(5);
    }
    healthyMs.push(performance.now() - t0);
    await Bun.sleep(3000); // settle: first heartbeat, GC
    rssMb.push(rssOf(proc.pid) / 1048576);
    proc.kill("SIGTERM");
    await proc.exited;
    rmSync(dir, { recursive: true, force: true });
  }
  results.push({ mode, healthyMs, rssMb });
}
const sizeMb = statSync(BINARY).size / 1048576;
console.log(`agora-node startup (${RUNS} runs per mode, medians)`);
console.log("mode        start→healthy ms   idle RSS MB   target");
for (const r of results)
  console.log(
    `${r.mode.padEnd(11)} ${median(r.healthyMs).toFixed(0).padStart(16)}   ${median(r.rssMb).toFixed(1).padStart(11)}   ≤1000 ms, ≤120 MB`,
  );
console.log(`binary size: ${sizeMb.toFixed(1)} MiB`);
console.log(
  JSON.stringify({
    bench: "startup",
    runs: RUNS,
    binary_mib: +sizeMb.toFixed(1),
    modes: Object.fromEntries(
      results.map((r) => [r.mode, { healthy_ms_median: +median(r.healthyMs).toFixed(0), rss_mb_median: +median(r.rssMb).toFixed(1) }]),
    ),
  }),
);
