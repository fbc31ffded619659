/**
 * Builds dist/agora-node: the wasm media core (wasm/build.sh, itself idempotent), then ONE executable with
 * `bun build --compile` holding the CLI, the node, the dashboard, the media worker and the embedded .wasm.
 * Skips the compile when the binary is newer than every input. `--force` rebuilds.
 * scripts/release.ts builds the same executable for every release target (scripts/lib/compile.ts).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildWasm, compileExecutable, gitCommit, ROOT } from "./lib/compile";

const out = join(ROOT, "dist", "agora-node");
const force = process.argv.includes("--force");

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, e)));
  return newest;
}

buildWasm("all");

const inputs = ["src", "package.json", "bun.lock", "patches", "wasm/build/agora_media.wasm"].map((p) => newestMtime(join(ROOT, p)));
if (!force && existsSync(out) && statSync(out).mtimeMs > Math.max(...inputs)) {
  console.error(`build: ${out} is up to date`);
  process.exit(0);
}
const t0 = performance.now();
compileExecutable({ outfile: out, commit: gitCommit() });
console.error(
  `build: wrote ${out} (${(statSync(out).size / 1048576).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
