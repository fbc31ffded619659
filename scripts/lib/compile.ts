/**
 * What scripts/build.ts and scripts/release.ts share: the wasm core build and the ONE `bun build --compile`
 * invocation that makes an agora-node executable (CLI, node, dashboard, the media worker as a second entry
 * point, the embedded .wasm). A release target only adds `--target` and the runtime to build against.
 */
import { statSync } from "node:fs";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..", "..");

/** The media worker runs in a Bun Worker, so it is a second entry point of the same executable. */
export const ENTRY_POINTS = ["src/main.ts", "src/audio/worker.ts"];

/** Runs a command in the repository; exits the script with a clear message when it fails. */
export function run(cmd: string[], what: string, cwd = ROOT): void {
  const r = Bun.spawnSync(cmd, { cwd, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) {
    console.error(`${what} failed (exit ${r.exitCode}): ${cmd.join(" ")}`);
    process.exit(1);
  }
}

/** Runs a command and returns its trimmed stdout, or undefined when it fails (e.g. git outside a checkout). */
export function output(cmd: string[], cwd = ROOT): string | undefined {
  try {
    const r = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 ? r.stdout.toString().trim() : undefined;
  } catch {
    return undefined; // the program is not installed
  }
}

/** Builds the wasm media core (wasm/build.sh skips what is up to date). "wasm" skips the native bench baseline. */
export function buildWasm(which: "all" | "wasm" = "all"): string {
  run(["bash", join(ROOT, "wasm", "build.sh"), which], "the wasm media core");
  return join(ROOT, "wasm", "build", "agora_media.wasm");
}

/**
 * The commit the executable is built from: the full hash, "-dirty" when tracked files differ from it,
 * "unknown" outside a git checkout (a source tarball).
 */
export function gitCommit(): string {
  const head = output(["git", "rev-parse", "HEAD"]);
  if (!head) return "unknown";
  const clean = Bun.spawnSync(["git", "diff", "--quiet", "HEAD", "--"], { cwd: ROOT }).exitCode === 0;
  return clean ? head : `${head}-dirty`;
}

export interface CompileOptions {
  outfile: string;
  /** A `bun build --target`, e.g. "bun-linux-arm64"; omitted: the host. */
  target?: string;
  /** The Bun runtime of the target (so nothing is downloaded while compiling). */
  executablePath?: string;
  /** Embedded into src/version.ts (see BUILD_COMMIT there). */
  commit: string;
}

/** Compiles one executable; returns its path (Bun appends .exe for Windows targets). */
export function compileExecutable(o: CompileOptions): string {
  const cmd = [
    process.execPath,
    "build",
    "--compile",
    "--minify-syntax",
    "--minify-whitespace",
    "--sourcemap=none",
    // A string literal replaces the identifier; from source (bun test, bun src/main.ts) it stays undeclared.
    "--define",
    `AGORA_BUILD_COMMIT=${JSON.stringify(o.commit)}`,
    ...(o.target ? [`--target=${o.target}`] : []),
    ...(o.executablePath ? [`--compile-executable-path=${o.executablePath}`] : []),
    ...ENTRY_POINTS,
    "--outfile",
    o.outfile,
  ];
  run(cmd, "bun build --compile");
  const exe = o.target?.includes("windows") && !o.outfile.endsWith(".exe") ? `${o.outfile}.exe` : o.outfile;
  statSync(exe); // throws when bun wrote it somewhere else
  return exe;
}
