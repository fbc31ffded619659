/**
 * Top entries of a .cpuprofile (Chrome format, as `bun --cpu-prof` or `bench/capacity.ts --profile DIR`
 * write it), ranked by SAMPLES rather than by time:
 *
 *   bun bench/profile-top.ts FILE.cpuprofile [--top 30] [--window FROM-TO]
 *
 * --window: only the samples taken FROM to TO seconds after the profile started (e.g. the steady state of a
 * bench/capacity step, after its joins and before the leave: a whole-run profile is mostly the join ramp's
 * handshakes); `--timeline` prints the samples per second first, to find that window.
 *
 * Why samples: the profile's times are the gaps between samples, and on a busy machine a thread that is
 * descheduled for seconds hands one sample all of that gap (one sample of peer-store code "took" 3 s).
 * Counting samples keeps the ranking honest where the time weighting does not. Self = samples whose top
 * frame is the function; total = samples with the function anywhere on the stack (counted once per sample).
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  /** µs between one sample and the previous one (the first: since startTime) */
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface TopEntry {
  fn: string;
  self: number;
  total: number;
}

/** Samples taken within [fromSec, toSec) after the profile's start. */
export function sampleWindow(profile: CpuProfile, fromSec: number, toSec: number): number[] {
  const out: number[] = [];
  let t = 0;
  for (const [i, id] of profile.samples.entries()) {
    t += profile.timeDeltas?.[i] ?? 0;
    if (t >= fromSec * 1e6 && t < toSec * 1e6) out.push(id);
  }
  return out;
}

/** Samples per whole second since the profile's start. */
export function timeline(profile: CpuProfile): number[] {
  const perSecond: number[] = [];
  let t = 0;
  for (const [i] of profile.samples.entries()) {
    t += profile.timeDeltas?.[i] ?? 0;
    const s = Math.floor(t / 1e6);
    perSecond[s] = (perSecond[s] ?? 0) + 1;
  }
  return Array.from(perSecond, (n) => n ?? 0);
}

export function topFunctions(profile: CpuProfile, samples: number[] = profile.samples): { samples: number; entries: TopEntry[] } {
  const parent = new Map<number, number>();
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const key = (n: ProfileNode) => {
    const f = n.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\//, "")}:${f.lineNumber + 1}` : "native";
    return `${f.functionName || "(anonymous)"} [${where}]`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let counted = 0;
  for (const id of samples) {
    const top = byId.get(id);
    if (!top) continue;
    const k = key(top);
    if (k.startsWith("(idle)") || k.startsWith("(program)") || k.startsWith("(garbage collector)")) {
      self.set(k, (self.get(k) ?? 0) + 1);
      counted++;
      continue;
    }
    counted++;
    self.set(k, (self.get(k) ?? 0) + 1);
    const seen = new Set<string>();
    for (let n: ProfileNode | undefined = top; n; n = byId.get(parent.get(n.id) ?? -1)) {
      const kk = key(n);
      if (seen.has(kk)) continue;
      seen.add(kk);
      total.set(kk, (total.get(kk) ?? 0) + 1);
    }
  }
  const names = new Set([...self.keys(), ...total.keys()]);
  const entries = [...names].map((fn) => ({ fn, self: self.get(fn) ?? 0, total: total.get(fn) ?? 0 }));
  return { samples: counted, entries };
}

if (import.meta.main) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: bun bench/profile-top.ts FILE.cpuprofile [--top 30]");
    process.exit(2);
  }
  const i = process.argv.indexOf("--top");
  const top = i > 0 ? Number(process.argv[i + 1]) : 30;
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  if (process.argv.includes("--timeline")) console.log(`samples per second: ${timeline(profile).join(" ")}`);
  const w = process.argv.indexOf("--window");
  const range = w > 0 ? /^([0-9.]+)-([0-9.]+)$/.exec(process.argv[w + 1] ?? "") : null;
  if (w > 0 && !range) throw new Error("--window: FROM-TO in seconds since the profile's start, e.g. 40-50");
  const { samples, entries } = topFunctions(profile, range ? sampleWindow(profile, Number(range[1]), Number(range[2])) : profile.samples);
  const pct = (n: number) => `${((100 * n) / Math.max(1, samples)).toFixed(1).padStart(5)} %`;
  console.log(
    `${file}: ${samples} samples over ${range ? `${range[1]}-${range[2]} s of ` : ""}${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s`,
  );
  console.log("\nby self samples (the function itself was running):");
  for (const e of [...entries].sort((a, b) => b.self - a.self).slice(0, top))
    console.log(`${pct(e.self)}  ${String(e.self).padStart(6)}  ${e.fn}`);
  console.log("\nby total samples (on the stack):");
  for (const e of [...entries].sort((a, b) => b.total - a.total).slice(0, top))
    console.log(`${pct(e.total)}  ${String(e.total).padStart(6)}  ${e.fn}`);
}
