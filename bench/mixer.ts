/**
 * Media-plane benchmark: `bun bench/mixer.ts` (about 2-3 minutes). Prints a table, then ONE JSON line.
 *
 *  (a) Opus encode cost, wasm (emcc -O3, in Bun) vs native libopus (gcc -O2, same source, same flags
 *      otherwise) on byte-identical frames: µs per 20 ms frame and the ratio wasm/native (target ≤ 1.3).
 *  (b) Participants per core in ONE room in real time: the largest N whose slowest tick stays within
 *      20 ms, driving the core directly in a loop (push every participant's packet, tick), for
 *        - the wasm core with shared encode on (top-3 personal encodes + one shared),
 *        - the wasm core with shared encode off (a personal encode for everyone),
 *        - a native per-participant baseline: libopus decoding every participant and giving each its own
 *          encode (the classic conference bridge), target: shared-encode wasm ≥ 3× this,
 *        - the same core natively, for reference.
 *      Three participants talk (synthetic voiced speech), everyone else sends an idle microphone's
 *      background noise, as in a real room. Encodes are VOIP, 32 kb/s, complexity 10.
 *  (c) Added latency through the mixer needs the libp2p path and is measured by the audio-network
 *      engineer's tools; the core's jitter-buffer target and depth are exposed in stats for it.
 *  (d) Silent participants: the same room with voice-activity flags (3 talkers flagged voice, everyone
 *      else flagged silent, as 1.1.0 clients send them), decode skipping off vs on.
 *  (e) Personal mixes: the flagged room (skipping on) with 0 %, 10 % and 30 % of the listeners having a
 *      personal setting (a talker at half volume for them: one more encode each).
 *  With `--baseline-rev REV` the shared-encode row (b) is also run, in the same process and interleaved,
 *  on the core built from REV's wasm/src (the opus objects are shared): before/after on one machine state.
 *  `--no-native` skips the native runs and (a), `--quick` searches with fewer ticks (short runs on a busy
 *  machine; the lead re-runs the full bench on a quiet one).
 *
 * Noise: the machine is shared, so a trial whose slowest tick exceeds 20 ms is attempted up to three
 * times (the best attempt counts), and (a) alternates wasm and native rounds and reports the best round
 * of each side (plus the medians, for honesty).
 */
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { MediaCore, VadFlag } from "../src/audio";
import { FRAME_SAMPLES } from "../src/protocol";
import { flagValue } from "./args";

const root = resolve(import.meta.dir, "..");
const outDir = join(root, "bench", "output");
const native = join(root, "wasm", "build", "native", "mixer-native");
const flag = (name: string): boolean => process.argv.includes(`--${name}`);
const QUICK = flag("quick");
const NO_NATIVE = flag("no-native");
const BASELINE_REV = flagValue("baseline-rev");
const TICKS = QUICK ? 30 : 60;
/**
 * What must stay within 20 ms: the slowest tick (real time, the default), the median tick (`--median`), or
 * the median CPU time a tick cost the process (`--cpu`, the default of `--quick`): on a machine busy with
 * other work, preemptions make wall-clock ticks meaningless, while CPU time still measures the mixer.
 */
const CRITERION: "worst" | "median" | "cpu" = flag("worst") ? "worst" : flag("median") ? "median" : flag("cpu") || QUICK ? "cpu" : "worst";
const tickMs = (t: { worstMs: number; medianMs: number; cpuMedianMs?: number }): number =>
  CRITERION === "worst" ? t.worstMs : CRITERION === "median" ? t.medianMs : (t.cpuMedianMs ?? t.medianMs);
const WARM = 10;
const ENCODE_FRAMES = 500;
const ENCODE_REPS = 9;

function run(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { cwd: root, stdout: "pipe", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed with exit ${r.exitCode}`);
  return r.stdout.toString();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

run(["bash", join(root, "wasm", "build.sh")]);
mkdirSync(outDir, { recursive: true });
const core = await MediaCore.create();
const x = core.x;

/** The core of an earlier revision (its wasm/src, today's compiled libopus objects, the same flags). */
function buildBaselineCore(rev: string): string {
  const dir = join(outDir, `baseline-${rev.replace(/[^A-Za-z0-9._-]/g, "_")}`);
  mkdirSync(dir, { recursive: true });
  const files = run(["git", "ls-tree", "--name-only", `${rev}:wasm/src`])
    .split("\n")
    .filter((f) => /\.[ch]$/.test(f));
  for (const f of files) writeFileSync(join(dir, f), run(["git", "show", `${rev}:wasm/src/${f}`]));
  const opus = join(root, "wasm", "vendor", "opus-1.3.1");
  const flags = ["-O3", "-flto", "-msimd128", "-mnontrapping-fptoint", "-mbulk-memory", "-fno-math-errno"];
  const defs = ["-DOPUS_BUILD", "-DVAR_ARRAYS", "-DHAVE_LRINT", "-DHAVE_LRINTF", "-DNDEBUG", '-DPACKAGE_VERSION="1.3.1"'];
  const incs = ["include", "celt", "silk", "silk/float", "src"].map((d) => `-I${join(opus, d)}`);
  const objs: string[] = [];
  for (const f of files.filter((f) => f.endsWith(".c"))) {
    const o = join(dir, f.replace(/\.c$/, ".o"));
    run(["emcc", ...flags, ...defs, ...incs, `-I${dir}`, "-c", join(dir, f), "-o", o]);
    objs.push(o);
  }
  const objDir = join(root, "wasm", "build", "obj-wasm");
  for (const f of readdirSync(objDir)) if (f.startsWith("opus_") && f.endsWith(".o")) objs.push(join(objDir, f));
  const out = join(dir, "agora_media.wasm");
  const link = ["-O3", "-flto", "-msimd128", "-mnontrapping-fptoint", "-mbulk-memory", "--no-entry", "-sSTANDALONE_WASM=1"];
  const mem = ["-sALLOW_MEMORY_GROWTH=1", "-sINITIAL_MEMORY=16MB", "-sMAXIMUM_MEMORY=2GB", "-sTOTAL_STACK=1MB"];
  run(["emcc", ...objs, ...link, ...mem, "-sFILESYSTEM=0", "-sERROR_ON_UNDEFINED_SYMBOLS=1", "-o", out]);
  return out;
}
const baselineCore = BASELINE_REV
  ? await MediaCore.create(await WebAssembly.compile(await Bun.file(buildBaselineCore(BASELINE_REV)).arrayBuffer()))
  : undefined;

// ---- (a) encode cost ------------------------------------------------------------------------------
const pcmPtr = core.mustAlloc(ENCODE_FRAMES * FRAME_SAMPLES * 2);
x.am_bench_signal(pcmPtr, ENCODE_FRAMES, 0, 1);
const framesFile = join(outDir, "frames.pcm");
writeFileSync(framesFile, core.heapU8().slice(pcmPtr, pcmPtr + ENCODE_FRAMES * FRAME_SAMPLES * 2));
const scratch = core.mustAlloc(1500);
// Interleaved rounds (wasm, then native, …) so both sides see the same background load; the best
// round of each side is the figure (noise only ever adds time).
const wasmEncode: number[] = [];
const nativeEncodeRuns: number[] = [];
for (let r = 0; r < (NO_NATIVE ? 0 : ENCODE_REPS); r++) {
  const enc = x.am_enc_create(32000, 10, 0);
  const t0 = performance.now();
  const bytes = x.am_bench_encode(enc, pcmPtr, ENCODE_FRAMES, scratch);
  wasmEncode.push(((performance.now() - t0) * 1000) / ENCODE_FRAMES);
  x.am_enc_destroy(enc);
  if (bytes <= 0) throw new Error("wasm encode failed");
  const n = JSON.parse(run([native, "encode", framesFile, "1"])) as { usPerFrameMin: number };
  nativeEncodeRuns.push(n.usPerFrameMin);
}
const nativeEncode = NO_NATIVE
  ? { usPerFrameMin: Number.NaN, usPerFrameMedian: Number.NaN }
  : { usPerFrameMin: Math.min(...nativeEncodeRuns), usPerFrameMedian: median(nativeEncodeRuns) };
const encode = {
  wasmUsPerFrame: NO_NATIVE ? Number.NaN : Math.min(...wasmEncode),
  wasmUsPerFrameMedian: NO_NATIVE ? Number.NaN : median(wasmEncode),
  nativeUsPerFrame: nativeEncode.usPerFrameMin,
  nativeUsPerFrameMedian: nativeEncode.usPerFrameMedian,
  ratio: 0,
  ratioMedian: 0,
};
encode.ratio = encode.wasmUsPerFrame / encode.nativeUsPerFrame;
encode.ratioMedian = encode.wasmUsPerFrameMedian / encode.nativeUsPerFrameMedian;

// ---- packets shared by every participants-per-core trial ------------------------------------------
const TALK_FRAMES = 150;
const streams: Uint8Array[][] = [];
{
  const pcm = core.mustAlloc(TALK_FRAMES * FRAME_SAMPLES * 2);
  const seeds: Array<[kind: number, seed: number]> = [
    [0, 1],
    [0, 2],
    [0, 3],
    [1, 10],
    [1, 11],
    [1, 12],
    [1, 13],
  ];
  for (const [kind, seed] of seeds) {
    x.am_bench_signal(pcm, TALK_FRAMES, kind, seed);
    const enc = x.am_enc_create(32000, 10, 0);
    const frames: Uint8Array[] = [];
    for (let f = 0; f < TALK_FRAMES; f++) {
      const n = x.am_enc_encode(enc, pcm + f * FRAME_SAMPLES * 2, scratch, 1275);
      frames.push(core.heapU8().slice(scratch, scratch + n));
    }
    x.am_enc_destroy(enc);
    streams.push(frames);
  }
  core.free(pcm);
}
const packetsFile = join(outDir, "packets.bin");
{
  const parts: Uint8Array[] = [];
  const head = new DataView(new ArrayBuffer(8));
  head.setUint32(0, streams.length, true);
  head.setUint32(4, TALK_FRAMES, true);
  parts.push(new Uint8Array(head.buffer));
  for (const s of streams) {
    for (const p of s) {
      const l = new Uint8Array(2);
      new DataView(l.buffer).setUint16(0, p.length, true);
      parts.push(l, p);
    }
  }
  writeFileSync(packetsFile, Buffer.concat(parts));
}
const streamOf = (i: number): Uint8Array[] => streams[i < 3 ? i : 3 + (i % (streams.length - 3))]!;

// ---- (b) participants per core ----------------------------------------------------------------------
interface Trial {
  n: number;
  worstMs: number;
  medianMs: number;
  /** median CPU time of the process per tick (getrusage): what the tick cost, whatever else ran */
  cpuMedianMs?: number;
}
interface Search {
  trials: Trial[];
  maxN: number;
}

/** A room variant: the defaults are the original (b) trial. */
interface Variant {
  shared: boolean;
  /** 1.1.0 voice-activity flags: talkers flagged voice, everyone else flagged silent */
  flagged?: boolean;
  /** decode skipping of flagged-silent participants (the new core's default) */
  skip?: boolean;
  /** share of the listeners (everyone but the talkers) with a personal setting, 0..1 */
  personal?: number;
  /** run on the baseline revision's core */
  baseline?: boolean;
}

function trialWasm(n: number, v: Variant): Trial {
  const c = v.baseline ? baselineCore! : core;
  const shared = v.shared;
  const room = c.createRoom({
    topK: 3,
    sharedEncode: shared,
    bitrate: 32000,
    complexity: 10,
    jitterMinMs: 20,
    jitterMaxMs: 200,
    fec: false,
  });
  const slots: number[] = [];
  const src: Uint8Array[][] = [];
  const flags: number[] = [];
  for (let i = 0; i < n; i++) {
    slots.push(room.add(i + 1));
    src.push(streamOf(i));
    flags.push(v.flagged ? (i < 3 ? VadFlag.KNOWN | VadFlag.VOICE : VadFlag.KNOWN) : 0);
  }
  if (!v.baseline) room.setVad(v.skip ?? true);
  const personal = Math.round((v.personal ?? 0) * Math.max(0, n - 3));
  for (let i = 3; i < 3 + personal; i++) room.setGain(slots[i]!, slots[0]!, 0.5);
  // Packets go through the same scratch buffer either way; the baseline core only has am_room_push.
  const times: number[] = [];
  const cpu: number[] = [];
  for (let k = 0; k < TICKS + WARM; k++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const now = k * 20;
    for (let i = 0; i < n; i++) {
      const s = src[i]!;
      const pkt = s[(k + i * 7) % s.length]!;
      const ptr = c.putPacket(pkt);
      if (v.baseline) c.x.am_room_push(room.ptr, slots[i]!, k, k * FRAME_SAMPLES, now, ptr, pkt.length);
      else room.pushRaw(slots[i]!, k, k * FRAME_SAMPLES, now, ptr, pkt.length, flags[i]!);
    }
    room.tick(now);
    if (k >= WARM) {
      times.push(performance.now() - t0);
      const d = process.cpuUsage(c0);
      cpu.push((d.user + d.system) / 1000);
    }
  }
  room.destroy();
  return { n, worstMs: Math.max(...times), medianMs: median(times), cpuMedianMs: median(cpu) };
}

function searchWasm(v: Variant, maxN: number): Search {
  const trials: Trial[] = [];
  const attempt = (n: number): boolean => {
    // Up to three attempts, the best counts: a preempted tick is not the mixer's cost.
    let t = trialWasm(n, v);
    for (let i = 1; i < 3 && tickMs(t) > 20; i++) {
      const again = trialWasm(n, v);
      if (tickMs(again) < tickMs(t)) t = again;
    }
    trials.push(t);
    return tickMs(t) <= 20;
  };
  let lo = 0;
  let hi = -1;
  for (let n = 8; n <= maxN; n *= 2) {
    if (attempt(n)) lo = n;
    else {
      hi = n;
      break;
    }
  }
  if (hi < 0) hi = maxN + 1;
  while (hi - lo > 1 && (hi - lo) * 100 > lo * 3) {
    const mid = (lo + hi) >> 1;
    if (attempt(mid)) lo = mid;
    else hi = mid;
  }
  return { trials, maxN: lo };
}

const t0 = performance.now();
const noSearch: Search = { trials: [], maxN: Number.NaN };
// Before/after of the shared-encode figure: interleaved (baseline, new, baseline, new), best of each.
const sharedRuns: Search[] = [];
const baselineRuns: Search[] = [];
for (let r = 0; r < (baselineCore ? 2 : 1); r++) {
  if (baselineCore) baselineRuns.push(searchWasm({ shared: true, baseline: true }, 8192));
  sharedRuns.push(searchWasm({ shared: true }, 8192));
}
const best = (runs: Search[]): Search => runs.reduce((a, b) => (b.maxN > a.maxN ? b : a), runs[0] ?? noSearch);
const wasmShared = best(sharedRuns);
const baselineShared = baselineCore ? best(baselineRuns) : noSearch;
const wasmUnshared = searchWasm({ shared: false }, 8192);
const flaggedNoSkip = searchWasm({ shared: true, flagged: true, skip: false }, 8192);
const flaggedSkip = searchWasm({ shared: true, flagged: true, skip: true }, 8192);
const personal10 = searchWasm({ shared: true, flagged: true, skip: true, personal: 0.1 }, 8192);
const personal30 = searchWasm({ shared: true, flagged: true, skip: true, personal: 0.3 }, 8192);
const nativeBaseline = NO_NATIVE ? noSearch : (JSON.parse(run([native, "baseline", packetsFile, String(TICKS), "8192"])) as Search);
const nativeCoreShared = NO_NATIVE ? noSearch : (JSON.parse(run([native, "core", packetsFile, String(TICKS), "8192", "1"])) as Search);
const searchSeconds = (performance.now() - t0) / 1000;

// ---- report -----------------------------------------------------------------------------------------
const f = (v: number, d = 1): string => v.toFixed(d);
const rows: Array<[string, string]> = [
  ["(a) Opus encode, wasm (µs/frame, best / median)", `${f(encode.wasmUsPerFrame)} / ${f(encode.wasmUsPerFrameMedian)}`],
  ["(a) Opus encode, native gcc -O2 (µs/frame)", `${f(encode.nativeUsPerFrame)} / ${f(encode.nativeUsPerFrameMedian)}`],
  ["(a) wasm / native ratio (best / median)", `${f(encode.ratio, 2)} / ${f(encode.ratioMedian, 2)}  (target ≤ 1.3)`],
  ["(b) participants/core, wasm, shared encode ON", String(wasmShared.maxN)],
  ["(b) participants/core, wasm, shared encode OFF", String(wasmUnshared.maxN)],
  ["(b) participants/core, native per-participant baseline", String(nativeBaseline.maxN)],
  ["(b) participants/core, native core, shared ON (reference)", String(nativeCoreShared.maxN)],
  ["(b) wasm shared ON vs native baseline", `${f(wasmShared.maxN / Math.max(1, nativeBaseline.maxN), 2)}×  (target ≥ 3×)`],
  ["(b) wasm shared ON vs wasm shared OFF", `${f(wasmShared.maxN / Math.max(1, wasmUnshared.maxN), 2)}×`],
  ...(baselineCore
    ? ([
        [`(b) participants/core, wasm, shared ON, core of ${BASELINE_REV} (before)`, String(baselineShared.maxN)],
        ["(b) shared ON, this core vs before", `${f(wasmShared.maxN / Math.max(1, baselineShared.maxN), 2)}×`],
      ] as Array<[string, string]>)
    : []),
  ["(d) flagged room (3 talkers + silent), decode skipping OFF", String(flaggedNoSkip.maxN)],
  ["(d) flagged room (3 talkers + silent), decode skipping ON", String(flaggedSkip.maxN)],
  ["(d) decode skipping ON vs OFF", `${f(flaggedSkip.maxN / Math.max(1, flaggedNoSkip.maxN), 2)}×`],
  ["(e) flagged room, skipping ON, 0 % personal settings", String(flaggedSkip.maxN)],
  ["(e) flagged room, skipping ON, 10 % personal settings", String(personal10.maxN)],
  ["(e) flagged room, skipping ON, 30 % personal settings", String(personal30.maxN)],
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log(
  `media-plane benchmark (${TICKS} ticks per trial after ${WARM} warm-up; ${{ worst: "slowest tick", median: "median tick", cpu: "median CPU time per tick" }[CRITERION]} must stay ≤ 20 ms)`,
);
for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
const trialLine = (name: string, s: Search): string =>
  `  ${name}: ${s.trials.map((t) => `${t.n}:${f(t.worstMs)}/${f(t.medianMs)}${t.cpuMedianMs === undefined ? "" : `/${f(t.cpuMedianMs)}cpu`}ms`).join(" ")}`;
console.log("trials (N: slowest/median tick[/median CPU per tick]):");
console.log(trialLine("wasm shared on ", wasmShared));
if (baselineCore) console.log(trialLine("before, shared ", baselineShared));
console.log(trialLine("flagged no skip", flaggedNoSkip));
console.log(trialLine("flagged skip   ", flaggedSkip));
console.log(trialLine("personal 10 %  ", personal10));
console.log(trialLine("personal 30 %  ", personal30));
console.log(trialLine("wasm shared off", wasmUnshared));
console.log(trialLine("native baseline", nativeBaseline));
console.log(trialLine("native core    ", nativeCoreShared));
console.log(
  JSON.stringify({
    bench: "mixer",
    encode,
    participantsPerCore: {
      wasmSharedOn: wasmShared.maxN,
      wasmSharedOff: wasmUnshared.maxN,
      nativeBaseline: nativeBaseline.maxN,
      nativeCoreSharedOn: nativeCoreShared.maxN,
      speedupVsBaseline: wasmShared.maxN / Math.max(1, nativeBaseline.maxN),
      ...(baselineCore ? { wasmSharedOnBefore: baselineShared.maxN, baselineRev: BASELINE_REV } : {}),
      flaggedSkipOff: flaggedNoSkip.maxN,
      flaggedSkipOn: flaggedSkip.maxN,
      personal0: flaggedSkip.maxN,
      personal10: personal10.maxN,
      personal30: personal30.maxN,
    },
    quick: QUICK,
    criterion: CRITERION,
    ticksPerTrial: TICKS,
    searchSeconds,
  }),
);
