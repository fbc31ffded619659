/**
 * Checks the subsystem rules of src/ that madge (file-level circles) cannot see:
 *   1. a subsystem imports another only through its face: `../<subsystem>` (its index.ts, or its
 *      portable.ts: the runtime-neutral part a browser bundle can take alone), never another file inside it;
 *   2. the graph of subsystems has no circle (p2p → relay → p2p is a circle even when no two files are).
 * Type-only imports count: a circle of types is still two subsystems that cannot be understood apart.
 * Prints each violation as file:line and exits 1 when there is any. Usage: bun scripts/check-layers.ts [src]
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const root = resolve(process.argv[2] ?? join(import.meta.dir, "..", "src"));
const IMPORT = /(?:^|[\s;])(?:import|export)\s[^"'`]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** The subsystem a path under src/ belongs to ("" for top-level files such as main.ts). */
function subsystemOf(path: string): string {
  const parts = relative(root, path).split("/");
  return parts.length > 1 ? parts[0]! : "";
}

const problems: string[] = [];
const edges = new Map<string, Map<string, string>>(); // from → to → first place seen

for (const file of files(root)) {
  const from = subsystemOf(file);
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2]!;
    if (!spec.startsWith(".")) continue;
    const target = resolve(file, "..", spec);
    if (!target.startsWith(`${root}/`)) continue; // e.g. the embedded wasm file outside src/
    // "../p2p" is the folder (its index.ts); "../p2p/addrs" a file in it.
    const to = subsystemOf(existsSync(target) && statSync(target).isDirectory() ? join(target, "index.ts") : target);
    if (to === from || to === "") continue;
    // The match may start with the whitespace before the keyword: count lines up to the keyword itself.
    const line = text.slice(0, m.index + m[0].search(/import|export/)).split("\n").length;
    const where = `${relative(process.cwd(), file)}:${line}`;
    // portable.ts: the runtime-neutral part of a face (what a browser bundle may import without the rest).
    const faces = ["", "index", "index.ts", "portable", "portable.ts"].map((f) => resolve(root, to, f));
    if (!faces.includes(target)) {
      problems.push(`${where}: imports "${spec}", a file inside ${to}/; import "../${to}" (its index.ts) instead`);
    }
    if (from === "") continue;
    let out = edges.get(from);
    if (!out) {
      out = new Map();
      edges.set(from, out);
    }
    if (!out.has(to)) out.set(to, where);
  }
}

// Circles: depth-first search; each circle is reported once, from its smallest member.
const reported = new Set<string>();
function visit(node: string, path: string[]): void {
  for (const next of edges.get(node)?.keys() ?? []) {
    const i = path.indexOf(next);
    if (i >= 0) {
      const found = path.slice(i);
      const start = found.indexOf([...found].sort()[0]!);
      const cycle = [...found.slice(start), ...found.slice(0, start)];
      const key = [...cycle].sort().join(",");
      if (!reported.has(key)) {
        reported.add(key);
        const hops = cycle.map((s, k) => `${s} → ${cycle[(k + 1) % cycle.length]} (${edges.get(s)!.get(cycle[(k + 1) % cycle.length]!)})`);
        problems.push(`subsystem circle: ${hops.join("; ")}`);
      }
      continue;
    }
    visit(next, [...path, next]);
  }
}
for (const s of edges.keys()) visit(s, [s]);

if (problems.length > 0) {
  for (const p of problems) console.error(`check-layers: ${p}`);
  console.error(`check-layers: ${problems.length} problem${problems.length === 1 ? "" : "s"}`);
  process.exit(1);
}
console.error(`check-layers: ${edges.size} subsystems, imports only through index.ts, no circle`);
