/**
 * The built @agora/client package for tests: builds it (scripts/build-client.ts) when packages/client/dist
 * is missing or older than its sources, and makes a consumer folder whose node_modules/@agora/client is
 * the package, so imports resolve through its `exports` as they would for a user.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "./node-process";

export const CLIENT_PKG = join(ROOT, "packages", "client");
export const CLIENT_DIST = join(CLIENT_PKG, "dist");

function newest(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let n = st.mtimeMs;
  for (const e of readdirSync(path)) n = Math.max(n, newest(join(path, e)));
  return n;
}

export function ensureClientPackage(): void {
  const built = join(CLIENT_DIST, "types", "client", "browser.d.ts"); // written last
  const inputs = Math.max(
    newest(join(ROOT, "src")),
    newest(join(CLIENT_PKG, "package.json")),
    newest(join(ROOT, "scripts", "build-client.ts")),
    newest(join(ROOT, "wasm", "build", "agora_media.wasm")),
  );
  if (existsSync(built) && statSync(built).mtimeMs > inputs) return;
  const r = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "build-client.ts")], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`scripts/build-client.ts failed:\n${r.stderr.toString()}`);
}

/** A temporary folder with node_modules/@agora/client → packages/client (the caller removes it). */
export function packageConsumer(): string {
  const dir = mkdtempSync(join(tmpdir(), "agora-sdk-consumer-"));
  mkdirSync(join(dir, "node_modules", "@agora"), { recursive: true });
  symlinkSync(CLIENT_PKG, join(dir, "node_modules", "@agora", "client"));
  return dir;
}
