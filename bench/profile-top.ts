/**
 * Top entries of a .cpuprofile (Chrome format, as `bun --cpu-prof` or `bench/capacity.ts --profile DIR`
 * write it), ranked by SAMPLES rather than by time:
 *
 *   bun bench/profile-top.ts FILE.cpuprofile [--top 30]
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
  startTime: number;
  endTime: number;
}

export interface TopEntry {
  fn: string;
  self: number;
  total: number;
}

export function topFunctions(profile: CpuProfile): { samples: number; entries: TopEntry[] } {
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
  for (const id of profile.samples) {
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
  const { samples, entries } = topFunctions(profile);
  const pct = (n: number) => `${((100 * n) / Math.max(1, samples)).toFixed(1).padStart(5)} %`;
  console.log(`${file}: ${samples} samples over ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s`);
  console.log("\nby self samples (the function itself was running):");
  for (const e of [...entries].sort((a, b) => b.self - a.self).slice(0, top))
    console.log(`${pct(e.self)}  ${String(e.self).padStart(6)}  ${e.fn}`);
  console.log("\nby total samples (on the stack):");
  for (const e of [...entries].sort((a, b) => b.total - a.total).slice(0, top))
    console.log(`${pct(e.total)}  ${String(e.total).padStart(6)}  ${e.fn}`);
}
