/**
 * bench/capacity: how many participants ONE dedicated node (the compiled binary) carries end to end in real
 * time, with every participant on its own libp2p connection, as real clients are. Prints a table per room
 * layout, then ONE JSON line.
 *
 *   bun bench/capacity.ts [--steps 25,50,100,200,400] [--duration 15] [--warmup 3] [--procs 4]
 *                         [--layouts 1,10] [--talkers 3] [--connections per-participant|shared]
 *                         [--join-interval 250] [--mixer run|skip|<participants per core>]
 *                         [--transport udp|stream|both] [--udp-socket worker|shared] [--vad on|off]
 *                         [--keep-going]
 *   --keep-going: measure every step even after real time was lost (the capacity is still the last step
 *   kept before the first loss): per-N CPU figures on a machine too busy to keep real time.
 *   --transport: how voice travels between the participants and the node: "udp" (encrypted datagrams,
 *   protocol.md "UDP datagrams"; a session that is not offered them fails to join), "stream" (AUDIO on the
 *   libp2p stream, the default) or "both": every layout is ramped on each path in turn against the same
 *   node, and a table of the UDP/stream ratios per N (participants per node core, node cores) follows.
 *   --udp-socket: "shared" (the node's default) leaves the datagrams on the node's UDP socket on
 *   node.listen_port, which the media worker owns and shares with STUN; "worker" (default here) gives them a
 *   port of their own (audio.udp_port). Both are carried by the media worker (src/audio/datagram-io.ts); the
 *   main-thread datagram path (src/rooms/udp-voice.ts without a plane) is no longer in the node.
 *   --vad: "on" (default) every participant marks its frames with the voice-activity flag as a client with
 *   a VAD does (talkers voice, silent microphones silence: the mixer decodes only what can reach a mix);
 *   "off" sends them unflagged, so every frame is decoded.
 *   short run (≈ 2 min): --steps 20,50,100 --duration 8 --warmup 2 --layouts 1 --mixer skip
 *   profile of the node's main thread: --profile DIR (Bun's sampling profiler through BUN_OPTIONS, written
 *   as .cpuprofile and .md when the node exits; e.g. --steps 40 --layouts 1 --profile bench/output/prof);
 *   of the first loadgen process: --profile-loadgen DIR (one file per step, as that process exits)
 *
 * Per layout (1 room, or N spread over 10 rooms) and per N, ramped upwards: `procs` loadgen processes
 * (bench/loadgen-worker.ts) share the N participants; each dials from its own loopback address (127.0.0.2,
 * .3, …) so the node's limit of 5 new connections per second per IP (protocol.md) paces each process, not
 * the whole ramp, and joins are 250 ms apart per process, with at most 8 handshakes in flight over all
 * processes (libp2p resets inbound connections beyond 10 mid-handshake, and a busy node is slow to finish). In every room 3 participants talk (one of them the
 * latency probe speaker, see src/client/loadgen.ts) and everyone else is an open, silent microphone that
 * still sends 50 comfort-noise Opus frames per second.
 *
 * Measured over the window in which every loadgen process is past its joins and warm-up:
 *  - node CPU per thread from /proc/<pid>/task/<tid>/stat: the main thread (libp2p, the audio service), the
 *    media worker (the thread named "Worker": wasm mixer), the others (JIT, GC helpers), in cores;
 *  - participants per node core = N / node cores;
 *  - loss against the wall clock (50 mixed frames/s due to each participant) over the measured window (the
 *    criterion) and over each participant's whole stay (ramp included), loss from sequence gaps, late frames (agora_audio_packets_late_total) and skipped mixer ticks
 *    (agora_mixer_ticks_skipped_total) on /metrics;
 *  - latency p50/p99 from the probe listeners (mouth-to-ear minus capture/playout buffering);
 *  - loadgen CPU (all its processes), in cores and in cores per participant, so the driver's own cost is
 *    visible (on a 2-core machine it competes with the node for the same cores).
 * The loadgen is cheap per participant: pre-encoded frames, one send timer per process, and only each room's
 * probe listener opens (AEAD) and decodes its mix datagrams; every other participant counts the mix for loss
 * by the datagram's clear header (session id, counter, seq). That is honest here: on loopback nobody forges
 * datagrams, the node still seals every one (its cost is measured in full), and what is counted is whether
 * each participant's frames arrived in time. Every participant's own datagrams are sealed as protocol.md
 * says (the node authenticates them), and silent microphones send 50 frames/s like an open microphone
 * (protocol.md paces AUDIO at 50/s; it does not let a client skip silent frames, so no DTX here). Each
 * participant has its own socket, connected to the mixer, as a real client: one `sendMany` per process would
 * need one socket for all, which the node's per-source limit (150 datagrams/s) rightly refuses, and on
 * loopback the kernel's cost per datagram is the same either way (measured: 4.8 µs in sendMany, 5.4 µs
 * alone on a connected socket, 6.8 µs naming the address each time).
 * A layout stops at the first N where the node loses real time: loss > 0.5 %, p99 > 150 ms, a skipped tick,
 * or participants that could not join or were dropped. The core-only figure of bench/mixer.ts (the wasm core
 * alone, shared encode) is printed beside the result (`--mixer run` runs it, about 2-3 minutes).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { type LatencySummary, type LoadgenReport, type LoadgenRoomSpec, lossPercent, summarize } from "../src/client";
import { BINARY, freePort, startNode } from "../test/helpers/node-process";
import { choiceArg, flagValue } from "./args";
import type { LoadgenWorkerEvent, LoadgenWorkerSpec } from "./loadgen-worker";
import { loopbackLoadLimits, metricValue } from "./node-load";

const ROOT = resolve(import.meta.dir, "..");

/** A bound for Promise.race that does not keep the process alive once the race is won. */
const unrefDelay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
const WORKER = join(import.meta.dir, "loadgen-worker.ts");

function numberFlag(name: string, def: number, min: number): number {
  const v = flagValue(name);
  const n = v === undefined ? def : Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number ≥ ${min}, got ${v}`);
  return n;
}
function listFlag(name: string, def: number[]): number[] {
  const v = flagValue(name);
  if (v === undefined) return def;
  const xs = v.split(",").map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < 1))
    throw new Error(`--${name}: expected positive integers like 10,20, got ${v}`);
  return xs;
}

export const THRESHOLDS = { lossPercent: 0.5, p99Ms: 150, skippedTicks: 0 } as const;

const steps = listFlag("steps", [25, 50, 100, 200, 400]).sort((a, b) => a - b);
const durationSec = numberFlag("duration", 15, 1);
const warmupSec = numberFlag("warmup", 3, 0);
const procs = Math.round(numberFlag("procs", 4, 1));
const layouts = listFlag("layouts", [1, 10]);
const talkers = Math.round(numberFlag("talkers", 3, 0));
const connections: LoadgenWorkerSpec["connections"] = choiceArg("connections", ["per-participant", "shared"]);
const joinIntervalMs = numberFlag("join-interval", connections === "per-participant" ? 250 : 10, 0);
const mixerMode = flagValue("mixer") ?? "run";
export type CapacityTransport = "udp" | "stream";
const transportFlag = choiceArg("transport", ["stream", "udp", "both"]);
const keepGoing = process.argv.includes("--keep-going");
const vad = choiceArg("vad", ["on", "off"]);
const udpSocket = choiceArg("udp-socket", ["worker", "shared"]);
const transports: CapacityTransport[] = transportFlag === "both" ? ["udp", "stream"] : [transportFlag];
const profileDir = flagValue("profile");
/** the same profiler on the first loadgen process (the one with the probe listener of room 0) */
const profileLoadgenDir = flagValue("profile-loadgen");
if (procs > 200) throw new Error("--procs: at most 200 (one loopback source address each)");

// ---- /proc sampling ---------------------------------------------------------------------------------
const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** utime + stime in seconds of one /proc stat line (the comm field may hold spaces and parentheses) */
function statCpuSeconds(line: string): number {
  const f = line.slice(line.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of proc(5), counted after comm
}

type ThreadCpu = Map<number, { name: string; cpuSec: number }>;
function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      out.set(Number(tid), { name, cpuSec: statCpuSeconds(readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8")) });
    } catch {
      /* the thread ended between readdir and read */
    }
  }
  return out;
}
function processCpuSeconds(pid: number): number {
  try {
    return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return Number.NaN;
  }
}

export interface NodeCpu {
  main: number;
  mediaWorker: number;
  other: number;
  total: number;
}
/** Cores used per thread class between two samples `seconds` apart. */
function nodeCores(pid: number, a: ThreadCpu, b: ThreadCpu, seconds: number): NodeCpu {
  const cores = { main: 0, mediaWorker: 0, other: 0, total: 0 };
  for (const [tid, t] of b) {
    const used = (t.cpuSec - (a.get(tid)?.cpuSec ?? 0)) / seconds;
    if (tid === pid) cores.main += used;
    else if (t.name === "Worker") cores.mediaWorker += used;
    else cores.other += used;
    cores.total += used;
  }
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { main: r(cores.main), mediaWorker: r(cores.mediaWorker), other: r(cores.other), total: r(cores.total) };
}

// ---- /metrics ---------------------------------------------------------------------------------------
interface MetricSample {
  workerRestarts: number;
  skippedTicks: number;
  lateFrames: number;
  packetsIn: number;
  packetsOut: number;
  udpIn: number;
  udpOut: number;
  udpDropped: number;
  netIn: number;
  netOut: number;
}
/** /metrics, retried: on a busy machine one scrape can take longer than its bound, the run goes on. */
async function scrape(url: string, attempts = 3): Promise<string> {
  for (let i = 1; ; i++) {
    try {
      return await (await fetch(url, { signal: AbortSignal.timeout(20_000) })).text();
    } catch (err) {
      if (i >= attempts) throw err;
    }
  }
}
async function metrics(url: string): Promise<MetricSample> {
  const text = await scrape(url);
  return {
    workerRestarts: metricValue(text, "agora_media_worker_restarts_total"),
    skippedTicks: metricValue(text, "agora_mixer_ticks_skipped_total"),
    lateFrames: metricValue(text, "agora_audio_packets_late_total"),
    packetsIn: metricValue(text, "agora_audio_packets_total", 'direction="in"'),
    packetsOut: metricValue(text, "agora_audio_packets_total", 'direction="out"'),
    udpIn: metricValue(text, "agora_audio_udp_received_total"),
    udpOut: metricValue(text, "agora_audio_udp_sent_total"),
    netIn: metricValue(text, "agora_audio_net_frames_received_total"),
    netOut: metricValue(text, "agora_audio_net_frames_sent_total"),
    udpDropped: [...text.matchAll(/^agora_audio_udp_dropped_total\{[^}]*\} ([0-9.e+-]+)$/gm)].reduce((s, m) => s + Number(m[1]), 0),
  };
}

// ---- loadgen processes ------------------------------------------------------------------------------
/**
 * Splits `n` participants of `rooms` rooms over `procs` processes. Each room has an owner process holding
 * its talkers and probe listener (the latency probe needs speaker and listener on one clock); the rest of
 * the room is dealt out round-robin so every process ramps about the same number of connections.
 */
export function splitParticipants(
  n: number,
  rooms: number,
  procs: number,
  talkersPerRoom: number,
  id: (r: number) => string,
): LoadgenRoomSpec[][] {
  const out: LoadgenRoomSpec[][] = Array.from({ length: procs }, () => []);
  const load = new Array<number>(procs).fill(0);
  for (let r = 0; r < rooms; r++) {
    const inRoom = Math.floor(n / rooms) + (r < n % rooms ? 1 : 0);
    if (inRoom === 0) continue;
    const counts = new Array<number>(procs).fill(0);
    const owner = r % procs;
    counts[owner] = Math.min(inRoom, talkersPerRoom + 1);
    load[owner]! += counts[owner]!;
    for (let left = inRoom - counts[owner]!; left > 0; left--) {
      const least = load.indexOf(Math.min(...load));
      counts[least]!++;
      load[least]!++;
    }
    for (let p = 0; p < procs; p++)
      if (counts[p]! > 0) out[p]!.push({ id: id(r), participants: counts[p]!, talkers: p === owner ? talkersPerRoom : 0 });
  }
  return out;
}

interface Worker {
  proc: Subprocess<"pipe", "pipe", "inherit">;
  phases: Set<string>;
  report?: LoadgenReport;
  error?: string;
  done: Promise<void>;
}

function startWorker(spec: LoadgenWorkerSpec, onEvent: () => void, profile?: string): Worker {
  const proc = Bun.spawn([process.execPath, WORKER, JSON.stringify(spec)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
    ...(profile ? { env: { ...process.env, BUN_OPTIONS: `--cpu-prof --cpu-prof-md --cpu-prof-dir=${resolve(profile)}` } } : {}),
  });
  const w: Worker = { proc, phases: new Set(), done: Promise.resolve() };
  w.done = (async () => {
    const dec = new TextDecoder();
    let buf = "";
    const reader = proc.stdout.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let e: LoadgenWorkerEvent;
        try {
          e = JSON.parse(line) as LoadgenWorkerEvent;
        } catch {
          continue;
        }
        if (process.env.AGORA_BENCH_DEBUG) console.error(`${new Date().toISOString()} loadgen ${proc.pid}: ${line.slice(0, 200)}`);
        if (e.event === "report") w.report = e.report;
        else if (e.event === "error") w.error = e.error;
        else w.phases.add(e.event);
        onEvent();
      }
    }
    await proc.exited;
    if (!w.report && !w.error) w.error = `loadgen process exited with ${proc.exitCode} without a report`;
    onEvent();
  })();
  return w;
}

/** Resolves when `cond` holds (re-checked on every worker event), or rejects after `timeoutMs`. */
function until(cond: () => boolean, subscribe: (fn: () => void) => void, timeoutMs: number, what: string): Promise<void> {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    const check = () => {
      if (cond()) {
        clearTimeout(timer);
        res();
      }
    };
    subscribe(check);
    check();
  });
}

export interface StepResult {
  transport: CapacityTransport;
  rooms: number;
  participants: number;
  joined: number;
  joinErrors: number;
  sessionsLost: number;
  windowSec: number;
  nodeCores: NodeCpu;
  participantsPerNodeCore: number | null;
  loadgenCores: number;
  /** loadgen cores per 100 participants (the driver's cost per participant) */
  loadgenCoresPer100: number;
  /** loss against the wall clock over the measured window (steady state): the real-time criterion */
  windowLossPercent: number;
  /** the same over each participant's whole stay, the join ramp included */
  dueLossPercent: number;
  seqLossPercent: number;
  lateFrames: number;
  skippedTicks: number;
  workerRestarts: number;
  /** the machine's 1-minute load average at the end of the window (a shared machine distorts every figure) */
  loadAverage: number;
  packetsInPerSec: number;
  packetsOutPerSec: number;
  /** voice datagrams authenticated / sent / dropped by the node per second (0 on the stream path) */
  udpInPerSec: number;
  udpOutPerSec: number;
  udpDroppedPerSec: number;
  /**
   * frames the room service received / sent per second (agora_audio_net_frames_*): with the datagrams in the
   * media worker only those that went by stream (fallback, dual send), so how much of a UDP step fell back
   */
  netFramesInPerSec: number;
  netFramesOutPerSec: number;
  latencyMs: LatencySummary;
  realTime: boolean;
  /** why real time was lost (empty when kept) */
  failures: string[];
}

async function runStep(
  node: { pid: number; addr: string; metricsUrl: string },
  transport: CapacityTransport,
  rooms: number,
  n: number,
): Promise<StepResult> {
  const active = splitParticipants(n, rooms, procs, talkers, (r) => `cap-${transport}-${rooms}r-${n}-${r}`)
    .map((specRooms, i) => ({ specRooms, i }))
    .filter((x) => x.specRooms.length > 0);
  const perProc = Math.max(...active.map((a) => a.specRooms.reduce((s, r) => s + r.participants, 0)));
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const l of listeners) l();
  };
  const workers = active.map(({ specRooms, i }) =>
    startWorker(
      {
        node: node.addr,
        rooms: specRooms,
        // the loadgen's duration counts from its last JOINED: warm-up, then the measured part
        durationSec: warmupSec + durationSec,
        warmupSec,
        connections,
        ...(connections === "per-participant" ? { localAddress: `127.0.0.${2 + i}` } : {}),
        joinIntervalMs,
        // all processes together stay under the node's 10 connections mid-handshake (see loadgen)
        ...(connections === "per-participant" ? { maxPendingJoins: Math.max(1, Math.floor(8 / active.length)) } : {}),
        silentMicrophones: true,
        voiceActivity: vad === "on",
        // "udp": a session not offered datagrams fails its join (counted), rather than silently using the stream
        sessionOptions: { transport },
      },
      notify,
      i === 0 ? profileLoadgenDir : undefined,
    ),
  );
  const subscribe = (fn: () => void) => listeners.add(fn);
  try {
    // A process that failed (none of its participants could join) no longer counts for the phases; its
    // participants count as not joined.
    const live = () => workers.filter((w) => !w.error);
    const joinBudgetMs = (perProc * joinIntervalMs + 30_000) * 3;
    await until(() => live().every((w) => w.phases.has("joined")), subscribe, joinBudgetMs, "all loadgen processes joined");
    // Everyone joined: start the warm-up and measurement of all processes together.
    for (const w of live()) w.proc.stdin.write("go\n");
    for (const w of live()) w.proc.stdin.flush();
    await until(
      () => live().every((w) => w.phases.has("measuring")),
      subscribe,
      warmupSec * 1000 + 60_000,
      "all loadgen processes measuring",
    );
    // The scrapes stay outside the CPU window (a /metrics scrape costs the node's main thread ~30 ms, which is
    // the bench's cost, not the participants'); the counters' own interval is from one scrape to the other.
    const tm0 = performance.now();
    const m0 = await metrics(node.metricsUrl);
    const c0 = threadCpu(node.pid);
    const l0 = workers.map((w) => processCpuSeconds(w.proc.pid));
    const t0 = performance.now();
    await until(
      () => live().length === 0 || live().some((w) => w.phases.has("stopped")),
      subscribe,
      durationSec * 1000 + 60_000,
      "a loadgen process to stop",
    );
    const seconds = (performance.now() - t0) / 1000;
    const c1 = threadCpu(node.pid);
    const l1 = workers.map((w) => processCpuSeconds(w.proc.pid));
    const metricSeconds = (performance.now() - tm0) / 1000;
    const m1 = await metrics(node.metricsUrl);
    await Promise.race([Promise.all(workers.map((w) => w.done)), unrefDelay(60_000)]);
    const reports = workers.map((w) => w.report).filter((r): r is LoadgenReport => r !== undefined);
    const workerErrors = workers.flatMap((w) => (w.error ? [w.error] : []));
    const sum = (f: (r: LoadgenReport) => number) => reports.reduce((s, r) => s + f(r), 0);
    const cores = nodeCores(node.pid, c0, c1, seconds);
    const result: StepResult = {
      transport,
      rooms,
      participants: n,
      joined: sum((r) => r.totals.joined),
      joinErrors: sum((r) => r.totals.joinErrors),
      sessionsLost: sum((r) => r.totals.sessionsLost),
      windowSec: Math.round(seconds * 10) / 10,
      nodeCores: cores,
      participantsPerNodeCore: cores.total > 0 ? Math.round(n / cores.total) : null,
      loadgenCores: Math.round((l1.reduce((s, x, i) => s + (Number.isFinite(x - l0[i]!) ? x - l0[i]! : 0), 0) / seconds) * 1000) / 1000,
      loadgenCoresPer100: 0,
      windowLossPercent: lossPercent(
        sum((r) => r.window.framesDue),
        sum((r) => r.window.framesReceived),
      ),
      dueLossPercent: lossPercent(
        sum((r) => r.totals.framesDue),
        sum((r) => r.totals.framesReceived),
      ),
      seqLossPercent: lossPercent(
        sum((r) => r.totals.framesExpected),
        sum((r) => r.totals.framesReceived),
      ),
      lateFrames: m1.lateFrames - m0.lateFrames,
      skippedTicks: m1.skippedTicks - m0.skippedTicks,
      workerRestarts: m1.workerRestarts - m0.workerRestarts,
      loadAverage: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
      packetsInPerSec: Math.round((m1.packetsIn - m0.packetsIn) / metricSeconds),
      packetsOutPerSec: Math.round((m1.packetsOut - m0.packetsOut) / metricSeconds),
      udpInPerSec: Math.round((m1.udpIn - m0.udpIn) / metricSeconds),
      udpOutPerSec: Math.round((m1.udpOut - m0.udpOut) / metricSeconds),
      udpDroppedPerSec: Math.round((m1.udpDropped - m0.udpDropped) / metricSeconds),
      netFramesInPerSec: Math.round((m1.netIn - m0.netIn) / metricSeconds),
      netFramesOutPerSec: Math.round((m1.netOut - m0.netOut) / metricSeconds),
      latencyMs: summarize(reports.flatMap((r) => r.latencySamplesMs ?? [])),
      realTime: true,
      failures: [],
    };
    result.loadgenCoresPer100 = Math.round((result.loadgenCores / Math.max(1, result.joined)) * 100 * 1000) / 1000;
    result.failures = [...realTimeFailures(result), ...workerErrors.map((e) => `loadgen process failed: ${e}`)];
    result.realTime = result.failures.length === 0;
    return result;
  } finally {
    for (const w of workers) {
      try {
        w.proc.stdin.end();
      } catch {
        /* already gone */
      }
    }
    await Promise.race([Promise.all(workers.map((w) => w.proc.exited)), unrefDelay(15_000)]);
    for (const w of workers) w.proc.kill("SIGKILL");
  }
}

/** The reasons a step lost real time, by the thresholds of the issue. */
export function realTimeFailures(
  s: Pick<StepResult, "participants" | "joined" | "sessionsLost" | "windowLossPercent" | "skippedTicks" | "workerRestarts" | "latencyMs">,
): string[] {
  const f: string[] = [];
  if (s.workerRestarts > 0) f.push(`media worker restarted ${s.workerRestarts}×`);
  if (s.joined < s.participants) f.push(`joined ${s.joined}/${s.participants}`);
  if (s.sessionsLost > 0) f.push(`${s.sessionsLost} sessions lost`);
  if (s.windowLossPercent > THRESHOLDS.lossPercent) f.push(`loss ${s.windowLossPercent} % > ${THRESHOLDS.lossPercent} %`);
  if (s.skippedTicks > THRESHOLDS.skippedTicks) f.push(`${s.skippedTicks} skipped ticks`);
  if (s.latencyMs.p99 === null) f.push("no latency probe measured");
  else if (s.latencyMs.p99 > THRESHOLDS.p99Ms) f.push(`p99 ${s.latencyMs.p99} ms > ${THRESHOLDS.p99Ms} ms`);
  return f;
}

function mixerFigure(): { participantsPerCore: number | null; source: string } {
  if (mixerMode === "skip") return { participantsPerCore: null, source: "skipped (--mixer skip)" };
  if (mixerMode !== "run") {
    const n = Number(mixerMode);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--mixer: run, skip or a number, got ${mixerMode}`);
    return { participantsPerCore: n, source: "given (--mixer)" };
  }
  const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "mixer.ts")], { cwd: ROOT, stdout: "pipe", stderr: "inherit" });
  const line = r.stdout
    .toString()
    .split("\n")
    .find((l) => l.startsWith('{"bench":"mixer"'));
  if (r.exitCode !== 0 || !line) return { participantsPerCore: null, source: `bench/mixer.ts failed (exit ${r.exitCode})` };
  return {
    participantsPerCore: (JSON.parse(line) as { participantsPerCore: { wasmSharedOn: number } }).participantsPerCore.wasmSharedOn,
    source: "bench/mixer.ts",
  };
}

/** Warns when a source file is newer than the binary: the bench would measure old code. */
function staleBinaryWarning(): string | null {
  let newest = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  try {
    walk(join(ROOT, "src"));
    return statSync(BINARY).mtimeMs < newest ? "dist/agora-node is older than src/: run `bun scripts/build.ts` first" : null;
  } catch {
    return null;
  }
}

const fmt = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? "-" : v.toFixed(d));

async function main(): Promise<void> {
  const stale = staleBinaryWarning();
  if (stale) console.error(`warning: ${stale}`);
  const maxN = steps.at(-1)!;
  const udpArgs = udpSocket === "worker" ? ["--set", `audio.udp_port=${await freePort()}`, "--set", "audio.udp_listen_addr=127.0.0.1"] : [];
  const node = await startNode({
    args: [
      ...udpArgs,
      "--log-level",
      "warn",
      "--set",
      `node.max_connections=${Math.min(100_000, maxN + 64)}`,
      "--set",
      "node.max_mixers=64",
      ...loopbackLoadLimits(maxN),
    ],
    timeoutMs: 60_000,
    ...(profileDir ? { env: { BUN_OPTIONS: `--cpu-prof --cpu-prof-md --cpu-prof-dir=${resolve(profileDir)}` } } : {}),
  });
  const results: LayoutResult[] = [];
  try {
    const target = { pid: node.proc.pid, addr: await node.multiaddr(), metricsUrl: node.metricsUrl };
    for (const rooms of layouts) {
      for (const transport of transports) {
        const layout: LayoutResult = { transport, rooms, steps: [], capacity: null, lostAt: null };
        results.push(layout);
        for (const n of steps) {
          if (n < 2 * rooms) continue; // a latency probe needs a speaker and a listener in every room
          const s = await runStep(target, transport, rooms, n);
          layout.steps.push(s);
          console.error(
            `  ${transport}, ${rooms} room(s), N=${n}: node ${fmt(s.nodeCores.total, 2)} cores (main ${fmt(s.nodeCores.main, 2)}, worker ${fmt(s.nodeCores.mediaWorker, 2)}), loadgen ${fmt(s.loadgenCores, 2)} cores, loss ${s.windowLossPercent} %, p99 ${fmt(s.latencyMs.p99)} ms, load ${fmt(s.loadAverage)}${s.realTime ? "" : ` — real time lost: ${s.failures.join(", ")}`}`,
          );
          if (!s.realTime) {
            layout.lostAt ??= s;
            if (keepGoing) continue;
            break;
          }
          if (!layout.lostAt) layout.capacity = s;
        }
      }
    }
  } finally {
    await node.stop();
    node.cleanup();
  }
  const mixer = mixerFigure();
  report(results, mixer);
}

interface LayoutResult {
  transport: CapacityTransport;
  rooms: number;
  steps: StepResult[];
  capacity: StepResult | null;
  lostAt: StepResult | null;
}

/** UDP against stream per N of one layout (both measured in this run): the figures as ratios udp / stream. */
export function transportRatios(results: LayoutResult[], rooms: number) {
  const udp = results.find((l) => l.rooms === rooms && l.transport === "udp");
  const stream = results.find((l) => l.rooms === rooms && l.transport === "stream");
  if (!udp || !stream) return [];
  const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : Math.round((a / b) * 100) / 100);
  return udp.steps.flatMap((u) => {
    const s = stream.steps.find((x) => x.participants === u.participants);
    if (!s) return [];
    return [
      {
        participants: u.participants,
        participantsPerNodeCore: ratio(u.participantsPerNodeCore, s.participantsPerNodeCore),
        nodeCores: ratio(u.nodeCores.total, s.nodeCores.total),
        mainCores: ratio(u.nodeCores.main, s.nodeCores.main),
        workerCores: ratio(u.nodeCores.mediaWorker, s.nodeCores.mediaWorker),
        p99: ratio(u.latencyMs.p99, s.latencyMs.p99),
        loadgenCores: ratio(u.loadgenCores, s.loadgenCores),
      },
    ];
  });
}

function report(results: LayoutResult[], mixer: { participantsPerCore: number | null; source: string }): void {
  console.log(
    `capacity of one dedicated node: voice by ${transports.join(" and by ")} (datagrams in the media worker, on ${udpSocket === "worker" ? "a socket of their own" : "the node's socket shared with STUN"}), ${connections} connections, ${talkers} talkers per room, others silent microphones, voice-activity flags ${vad}; ${durationSec} s measured per step after ${warmupSec} s warm-up; ${procs} loadgen processes`,
  );
  const head =
    "transport rooms      N joined  node cores  main  worker  other  part/core  loadgen cores  /100 part  loss%  stay loss%  seqloss%  late  skipped  p50 ms  p99 ms  load  real time";
  for (const l of results) {
    console.log(head);
    for (const s of l.steps)
      console.log(
        [
          s.transport.padEnd(9),
          String(s.rooms).padStart(5),
          String(s.participants).padStart(6),
          String(s.joined).padStart(6),
          fmt(s.nodeCores.total, 2).padStart(11),
          fmt(s.nodeCores.main, 2).padStart(5),
          fmt(s.nodeCores.mediaWorker, 2).padStart(7),
          fmt(s.nodeCores.other, 2).padStart(6),
          String(s.participantsPerNodeCore ?? "-").padStart(10),
          fmt(s.loadgenCores, 2).padStart(14),
          fmt(s.loadgenCoresPer100, 3).padStart(10),
          s.windowLossPercent.toFixed(2).padStart(6),
          s.dueLossPercent.toFixed(2).padStart(11),
          s.seqLossPercent.toFixed(2).padStart(9),
          String(s.lateFrames).padStart(5),
          String(s.skippedTicks).padStart(8),
          fmt(s.latencyMs.p50).padStart(7),
          fmt(s.latencyMs.p99).padStart(7),
          fmt(s.loadAverage).padStart(5),
          s.realTime ? "  kept" : `  LOST (${s.failures.join(", ")})`,
        ].join(" "),
      );
    const c = l.capacity;
    console.log(
      `${l.transport}, ${l.rooms} room(s): real time kept up to N=${c?.participants ?? "none of the steps"}${c ? ` (${c.participantsPerNodeCore} participants per node core)` : ""}${l.lostAt ? `, lost at N=${l.lostAt.participants}` : ", not lost within the steps"}; core-only (bench/mixer.ts, wasm, shared encode): ${mixer.participantsPerCore ?? "-"} participants per core [${mixer.source}]`,
    );
  }
  const ratios = transports.length === 2 ? layouts.map((rooms) => ({ rooms, perN: transportRatios(results, rooms) })) : [];
  for (const r of ratios) {
    console.log(`udp / stream, ${r.rooms} room(s):`);
    console.log("     N  part/core  node cores  main  worker  p99  loadgen cores");
    for (const x of r.perN)
      console.log(
        [
          String(x.participants).padStart(6),
          fmt(x.participantsPerNodeCore, 2).padStart(10),
          fmt(x.nodeCores, 2).padStart(11),
          fmt(x.mainCores, 2).padStart(5),
          fmt(x.workerCores, 2).padStart(7),
          fmt(x.p99, 2).padStart(4),
          fmt(x.loadgenCores, 2).padStart(14),
        ].join(" "),
      );
  }
  console.log(
    JSON.stringify({
      bench: "capacity",
      params: {
        steps,
        durationSec,
        warmupSec,
        procs,
        layouts,
        talkers,
        connections,
        joinIntervalMs,
        transports,
        udpSocket,
        vad,
        keepGoing,
      },
      thresholds: THRESHOLDS,
      layouts: results.map((l) => ({
        transport: l.transport,
        rooms: l.rooms,
        capacityParticipants: l.capacity?.participants ?? null,
        capacityParticipantsPerNodeCore: l.capacity?.participantsPerNodeCore ?? null,
        lostAtParticipants: l.lostAt?.participants ?? null,
        steps: l.steps,
      })),
      udpOverStream: ratios,
      mixerCoreParticipantsPerCore: mixer.participantsPerCore,
      mixerSource: mixer.source,
    }),
  );
}

if (import.meta.main) await main();
