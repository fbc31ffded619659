/**
 * Builds dist/agora-node: the wasm media core (wasm/build.sh, itself idempotent), then ONE executable with
 * `bun build --compile` holding the CLI, the node, the dashboard, the media worker and the embedded .wasm.
 * Skips the compile when the binary is newer than every input. `--force` rebuilds.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const out = join(root, "dist", "agora-node");
const force = process.argv.includes("--force");

function run(cmd: string[], what: string): void {
  const r = Bun.spawnSync(cmd, { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) {
    console.error(`build: ${what} failed (exit ${r.exitCode}): ${cmd.join(" ")}`);
    process.exit(1);
  }
}

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, e)));
  return newest;
}

run(["bash", join(root, "wasm", "build.sh")], "the wasm media core");

const inputs = ["src", "package.json", "bun.lock", "patches", "wasm/build/agora_media.wasm"].map((p) => newestMtime(join(root, p)));
if (!force && existsSync(out) && statSync(out).mtimeMs > Math.max(...inputs)) {
  console.error(`build: ${out} is up to date`);
  process.exit(0);
}
const t0 = performance.now();
run(
  [process.execPath, "build", "--compile", "--minify-syntax", "--minify-whitespace", "--sourcemap=none",
    "src/main.ts", "src/audio/worker.ts", "--outfile", out],
  "bun build --compile",
);
console.error(`build: wrote ${out} (${(statSync(out).size / 1048576).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
