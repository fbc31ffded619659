/**
 * bench/udp-profile: where the node's main thread spends its time carrying voice on the stream and as UDP
 * datagrams: the node runs from source under bun's CPU profiler while loadgen drives the same load with
 * `--transport stream`, then with `--transport udp`; each profile's top entries by self time are written
 * to bench/output/profile-stream.txt and bench/output/profile-udp.txt (the decision whether datagram I/O
 * should move into the media worker is read from them).
 *
 *   bun bench/udp-profile.ts [--duration 10] [--rooms 2] [--participants 10] [--top 25]
 *
 * Prints both tables and ONE JSON line (main-thread busy share per run and the top 5 entries).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runLoadgen, type VoiceTransport } from "../src/client";
import { silentLogger } from "../src/log";
import { freePort, ROOT, tempDir } from "../test/helpers/node-process";
import { positiveArg } from "./args";

const duration = positiveArg("duration", 10);
const rooms = Math.round(positiveArg("rooms", 2));
const participants = Math.round(positiveArg("participants", 10));
const top = Math.round(positiveArg("top", 25));

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
  timeDeltas: number[];
}

interface Entry {
  name: string;
  selfMs: number;
  share: number;
}

function topEntries(profile: CpuProfile): { entries: Entry[]; totalMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byId.get(profile.samples[i]!);
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    total += dt;
    if (!n) continue;
    const f = n.callFrame;
    const where = f.url ? `${f.url.replace(`${ROOT}/`, "").replace(/^.*node_modules\//, "node_modules/")}:${f.lineNumber + 1}` : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const entries = [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, ms]) => ({ name, selfMs: Math.round(ms), share: Math.round((ms / total) * 1000) / 10 }));
  return { entries, totalMs: total };
}

async function profileRun(transport: VoiceTransport) {
  const dataDir = tempDir("agora-prof-");
  const profDir = join(dataDir, "prof");
  const p2p = await freePort();
  const dashboard = await freePort();
  const proc = Bun.spawn(
    [
      process.execPath,
      "--cpu-prof",
      `--cpu-prof-dir=${profDir}`,
      join(ROOT, "src", "main.ts"),
      "start",
      "--data-dir",
      dataDir,
      "--listen-addr",
      "127.0.0.1",
      "--listen-port",
      String(p2p),
      "--dashboard-port",
      String(dashboard),
      "--metrics-port",
      String(await freePort()),
      "--log-format",
      "json",
      "--log-level",
      "warn",
    ],
    { env: { ...process.env, HOME: dataDir }, stdout: "ignore", stderr: "ignore" },
  );
  try {
    let peer: string | undefined;
    const deadline = Date.now() + 60_000;
    while (!peer && Date.now() < deadline) {
      await Bun.sleep(250);
      try {
        const status = (await (await fetch(`http://127.0.0.1:${dashboard}/api/status`)).json()) as { peer_id?: string; state?: string };
        if (status.state === "ready") peer = status.peer_id;
      } catch {
        /* not up yet */
      }
    }
    if (!peer) throw new Error("node did not start within 60 s");
    const addr = `/ip4/127.0.0.1/tcp/${p2p}/p2p/${peer}`;
    const report = await runLoadgen({ node: addr, rooms, participants, durationSec: duration, transport, logger: silentLogger() });
    proc.kill("SIGTERM");
    await proc.exited;
    const file = readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"));
    if (!file) throw new Error(`no CPU profile written in ${profDir}`);
    const profile = JSON.parse(readFileSync(join(profDir, file), "utf8")) as CpuProfile;
    return { report, ...topEntries(profile) };
  } finally {
    if (proc.exitCode === null) proc.kill("SIGKILL");
  }
}

const outDir = join(ROOT, "bench", "output");
mkdirSync(outDir, { recursive: true });
const summary: Record<string, unknown> = { bench: "udp-profile", rooms, participants, durationSec: duration };
for (const transport of ["stream", "udp"] as const) {
  const r = await profileRun(transport);
  const lines = [
    `# node main thread, ${rooms} rooms × ${participants} participants, ${duration} s, loadgen --transport ${transport}`,
    `# profile ${Math.round(r.totalMs)} ms sampled over the process's life (shares are of that); latency p50 ${r.report.latencyMs.p50} ms p99 ${r.report.latencyMs.p99} ms, due-loss ${r.report.totals.dueLossPercent} %`,
    "self ms   share %  function",
    ...r.entries.map((e) => `${String(e.selfMs).padStart(7)}  ${e.share.toFixed(1).padStart(7)}  ${e.name}`),
  ];
  writeFileSync(join(outDir, `profile-${transport}.txt`), `${lines.join("\n")}\n`);
  console.log(lines.join("\n"));
  console.log("");
  summary[transport] = { sampledMs: Math.round(r.totalMs), top5: r.entries.slice(0, 5), p99: r.report.latencyMs.p99 };
}
console.log(JSON.stringify(summary));
