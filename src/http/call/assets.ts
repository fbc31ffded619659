/**
 * Bun macros (imported `with { type: "macro" }` by ../call-page.ts): the test-call page's script and its
 * AudioWorklet, bundled for the browser when the importing file is transpiled. `bun build --compile` thus
 * embeds both as string literals in the executable (served from any working directory, no file read at run
 * time), and running from source (bun test, bun src/main.ts) bundles them on load. Bun.build cannot be
 * called inside a macro during bundling (it would wait for itself), hence the CLI in a child process.
 */
import { join } from "node:path";

function bundle(file: string): string {
  const r = Bun.spawnSync([process.execPath, "build", "--target=browser", "--minify", "--format=esm", join(import.meta.dir, file)], {
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`bundling src/http/call/${file} for the browser failed:\n${r.stderr.toString()}`);
  return r.stdout.toString();
}

export function callPageScript(): string {
  return bundle("page.ts");
}

export function callWorkletScript(): string {
  return bundle("worklet.ts");
}
