/**
 * One loadgen process of a multi-process benchmark (bench/capacity.ts, bench/mixer-latency.ts --background):
 *
 *   bun bench/loadgen-worker.ts '<LoadgenWorkerSpec as JSON>'
 *
 * Runs runLoadgen with the given rooms and prints one JSON line per event on stdout:
 * `{"event":"joined"|"measuring"|"stopped"}` as the run passes each phase (the parent aligns its CPU and
 * metrics window to them), then `{"event":"report","report":LoadgenReport}`, or `{"event":"error","error":…}`
 * and exit code 1. After "joined" it keeps sending but waits for a line `go` on stdin before its warm-up,
 * so the parent starts every process's measurement together. Ends early, cleanly (LEAVE), when stdin closes.
 */
import { type LoadgenConnections, type LoadgenOptions, type LoadgenReport, type LoadgenRoomSpec, runLoadgen } from "../src/client";
import { createLogger } from "../src/log";

export interface LoadgenWorkerSpec {
  node: string;
  rooms: LoadgenRoomSpec[];
  durationSec: number;
  warmupSec: number;
  connections: LoadgenConnections;
  localAddress?: string;
  joinIntervalMs?: number;
  maxPendingJoins?: number;
  silentMicrophones: boolean;
  voiceActivity?: boolean;
  probePeriodMs?: number;
  /** JSON-able AudioSession options for every session (e.g. a transport choice) */
  sessionOptions?: LoadgenOptions["sessionOptions"];
}

export type LoadgenWorkerEvent =
  | { event: "joined" | "measuring" | "stopped" }
  | { event: "report"; report: LoadgenReport }
  | { event: "error"; error: string };

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "") as LoadgenWorkerSpec;
  const emit = (e: LoadgenWorkerEvent) => process.stdout.write(`${JSON.stringify(e)}\n`);
  const abort = new AbortController();
  let go: () => void = () => {};
  const started = new Promise<void>((resolve) => (go = resolve));
  let input = "";
  process.stdin.on("data", (chunk: Buffer) => {
    input += chunk.toString();
    if (input.split("\n").includes("go")) go();
  });
  process.stdin.on("end", () => {
    abort.abort();
    go();
  });
  process.stdin.resume();
  const logger = createLogger({ level: "warn", format: "json", stdout: process.stderr }).logger;
  try {
    const report = await runLoadgen({
      node: spec.node,
      rooms: spec.rooms.length,
      participants: 1,
      roomSpecs: spec.rooms,
      durationSec: spec.durationSec,
      warmupSec: spec.warmupSec,
      connections: spec.connections,
      localAddress: spec.localAddress,
      joinIntervalMs: spec.joinIntervalMs,
      maxPendingJoins: spec.maxPendingJoins,
      silentMicrophones: spec.silentMicrophones,
      voiceActivity: spec.voiceActivity,
      probePeriodMs: spec.probePeriodMs,
      sessionOptions: spec.sessionOptions,
      // One send timer per process: the processes of a benchmark start at different phases anyway.
      sendPhases: 1,
      keepLatencySamples: true,
      logger,
      signal: abort.signal,
      onPhase: (event) => emit({ event }),
      whenJoined: () => started,
    });
    emit({ event: "report", report });
    process.exit(0);
  } catch (err) {
    emit({ event: "error", error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
}
