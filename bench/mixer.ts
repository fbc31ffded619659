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
 *
 * Noise: the machine is shared, so a trial whose slowest tick exceeds 20 ms is attempted up to three
 * times (the best attempt counts), and (a) alternates wasm and native rounds and reports the best round
 * of each side (plus the medians, for honesty).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { MediaCore } from "../src/audio";
import { FRAME_SAMPLES } from "../src/protocol";

const root = resolve(import.meta.dir, "..");
const outDir = join(root, "bench", "output");
const native = join(root, "wasm", "build", "native", "mixer-native");
const TICKS = 60;
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
for (let r = 0; r < ENCODE_REPS; r++) {
  const enc = x.am_enc_create(32000, 10, 0);
  const t0 = performance.now();
  const bytes = x.am_bench_encode(enc, pcmPtr, ENCODE_FRAMES, scratch);
  wasmEncode.push(((performance.now() - t0) * 1000) / ENCODE_FRAMES);
  x.am_enc_destroy(enc);
  if (bytes <= 0) throw new Error("wasm encode failed");
  const n = JSON.parse(run([native, "encode", framesFile, "1"])) as { usPerFrameMin: number };
  nativeEncodeRuns.push(n.usPerFrameMin);
}
const nativeEncode = { usPerFrameMin: Math.min(...nativeEncodeRuns), usPerFrameMedian: median(nativeEncodeRuns) };
const encode = {
  wasmUsPerFrame: Math.min(...wasmEncode),
  wasmUsPerFrameMedian: median(wasmEncode),
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
}
interface Search {
  trials: Trial[];
  maxN: number;
}

function trialWasm(n: number, shared: boolean): Trial {
  const room = core.createRoom({
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
  for (let i = 0; i < n; i++) {
    slots.push(room.add(i + 1));
    src.push(streamOf(i));
  }
  const times: number[] = [];
  for (let k = 0; k < TICKS + WARM; k++) {
    const t0 = performance.now();
    const now = k * 20;
    for (let i = 0; i < n; i++) {
      const s = src[i]!;
      room.push(slots[i]!, k, k * FRAME_SAMPLES, now, s[(k + i * 7) % s.length]!);
    }
    room.tick(now);
    if (k >= WARM) times.push(performance.now() - t0);
  }
  room.destroy();
  return { n, worstMs: Math.max(...times), medianMs: median(times) };
}

function searchWasm(shared: boolean, maxN: number): Search {
  const trials: Trial[] = [];
  const attempt = (n: number): boolean => {
    // Up to three attempts, the best counts: a preempted tick is not the mixer's cost.
    let t = trialWasm(n, shared);
    for (let i = 1; i < 3 && t.worstMs > 20; i++) {
      const again = trialWasm(n, shared);
      if (again.worstMs < t.worstMs) t = again;
    }
    trials.push(t);
    return t.worstMs <= 20;
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
const wasmShared = searchWasm(true, 8192);
const wasmUnshared = searchWasm(false, 8192);
const nativeBaseline = JSON.parse(run([native, "baseline", packetsFile, String(TICKS), "8192"])) as Search;
const nativeCoreShared = JSON.parse(run([native, "core", packetsFile, String(TICKS), "8192", "1"])) as Search;
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
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log(`media-plane benchmark (${TICKS} ticks per trial after ${WARM} warm-up; slowest tick must stay ≤ 20 ms)`);
for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
const trialLine = (name: string, s: Search): string =>
  `  ${name}: ${s.trials.map((t) => `${t.n}:${f(t.worstMs)}/${f(t.medianMs)}ms`).join(" ")}`;
console.log("trials (N: slowest/median tick):");
console.log(trialLine("wasm shared on ", wasmShared));
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
    },
    ticksPerTrial: TICKS,
    searchSeconds,
  }),
);
