/**
 * Integration-test harness: starts real processes of the compiled binary (dist/agora-node) on free ports
 * with their own data directories, waits for /health, and stops them.
 */
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

export const ROOT = resolve(import.meta.dir, "..", "..");
export const BINARY = join(ROOT, "dist", "agora-node");

/** Builds the binary when missing (scripts/test.sh builds it first; this serves `bun test` run by hand). */
export function ensureBinary(): string {
  if (!existsSync(BINARY)) {
    const r = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "build.ts")], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
    if (r.exitCode !== 0) throw new Error("building dist/agora-node failed");
  }
  return BINARY;
}

/** Ports this process has handed out: the kernel may give a just-closed port 0 socket's port again. */
const handedOut = new Set<number>();

/** The kernel's ephemeral range starts here (every client socket's port, TCP and UDP, comes from it). */
const EPHEMERAL_FROM = (() => {
  try {
    const from = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(from) && from > 21_000 ? from : 32_768;
  } catch {
    return 32_768;
  }
})();

/**
 * A free port on 127.0.0.1 for TCP and for UDP alike (a node binds both on its P2P port), never one this
 * process handed out before (a node gets three: p2p, dashboard, metrics). It is taken below the kernel's
 * ephemeral range: a port from there (what listen(0) gives) can be taken meanwhile by any client socket of
 * a test or bench, e.g. a loadgen's hundreds of UDP sockets, and the node then fails to bind it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * (EPHEMERAL_FROM - 20_000));
    if (handedOut.has(port)) continue;
    if ((await tcpFree(port)) && (await udpFree(port))) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`freePort: no free port found between 20000 and ${EPHEMERAL_FROM}`);
}

function tcpFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => res(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
  });
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = createSocket("udp4");
    sock.unref();
    sock.once("error", () => {
      sock.close();
      res(false);
    });
    // 0.0.0.0: a socket on any address of this port would conflict with the node's.
    sock.bind(port, "0.0.0.0", () => sock.close(() => res(true)));
  });
}

const tempDirs: string[] = [];
process.on("exit", () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory, removed when the test process exits. */
export function tempDir(prefix = "agora-test-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a one-shot CLI command of the binary. */
export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  const proc = Bun.spawn([ensureBinary(), ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env },
    cwd: opts.cwd,
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export interface NodeHandle {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  dataDir: string;
  p2pPort: number;
  dashboardPort: number;
  metricsPort: number;
  dashboardUrl: string;
  metricsUrl: string;
  /** Log lines captured so far (stdout + stderr). */
  logs(): string;
  /** Waits for the process to exit; returns its code. */
  exited: Promise<number>;
  peerId(): Promise<string>;
  multiaddr(): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number>;
  cleanup(): void;
}

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  dataDir?: string;
  ports?: { p2p?: number; dashboard?: number; metrics?: number };
  waitHealthy?: boolean;
  timeoutMs?: number;
  /** Keep the data dir after cleanup (restart tests). */
  keepDataDir?: boolean;
  /** Command prefix, e.g. ["ip", "netns", "exec", "ns1"] to run the node on a test host. */
  exec?: string[];
  /** Working directory of the process (default: the test's); a compiled binary must not depend on it. */
  cwd?: string;
  /** Address the node binds everything to (a test host's IP); 127.0.0.1 by default. Non-loopback needs a token in env. */
  host?: string;
}

export async function startNode(opts: StartOptions = {}): Promise<NodeHandle> {
  const dataDir = opts.dataDir ?? tempDir();
  const p2pPort = opts.ports?.p2p ?? (await freePort());
  const dashboardPort = opts.ports?.dashboard ?? (await freePort());
  const metricsPort = opts.ports?.metrics ?? (await freePort());
  const host = opts.host ?? "127.0.0.1";
  const proc = Bun.spawn(
    [
      ...(opts.exec ?? []),
      ensureBinary(),
      "start",
      "--data-dir",
      dataDir,
      "--listen-addr",
      host,
      ...(host === "127.0.0.1" ? [] : ["--dashboard-addr", host, "--metrics-addr", host]),
      "--listen-port",
      String(p2pPort),
      "--dashboard-port",
      String(dashboardPort),
      "--metrics-port",
      String(metricsPort),
      "--log-format",
      "json",
      ...(opts.args ?? []),
    ],
    {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dataDir, ...opts.env },
      cwd: opts.cwd,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const captured = captureOutput(proc);
  const dashboardUrl = `http://${host}:${dashboardPort}`;
  let cachedStatus: { peer_id: string } | undefined;
  const handle: NodeHandle = {
    proc,
    dataDir,
    p2pPort,
    dashboardPort,
    metricsPort,
    dashboardUrl,
    metricsUrl: `http://${host}:${metricsPort}/metrics`,
    logs: captured,
    exited: proc.exited,
    async peerId() {
      if (!cachedStatus) {
        const token = opts.env?.AGORA_DASHBOARD_AUTH_TOKEN;
        cachedStatus = (await (
          await fetch(`${dashboardUrl}/api/status`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
        ).json()) as { peer_id: string };
      }
      return cachedStatus.peer_id;
    },
    async multiaddr() {
      return `/ip4/${host}/tcp/${p2pPort}/p2p/${await handle.peerId()}`;
    },
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      const code = await proc.exited;
      clearTimeout(timer);
      return code;
    },
    cleanup() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      if (!opts.keepDataDir && !opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  if (opts.waitHealthy !== false) await waitHealthy(handle, opts.timeoutMs ?? 20_000);
  return handle;
}

export async function waitHealthy(h: NodeHandle, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (h.proc.exitCode !== null) throw new Error(`node exited with ${h.proc.exitCode} before becoming healthy:\n${h.logs()}`);
    try {
      const r = await fetch(`${h.dashboardUrl}/health`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) return;
    } catch {
      /* not listening yet */
    }
    await Bun.sleep(50);
  }
  throw new Error(`node not healthy within ${timeoutMs} ms:\n${h.logs()}`);
}

/** Polls `check` until it returns a truthy value or the time is up. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  what: string,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await Bun.sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
}

/** Collects a child's stdout and stderr as they arrive; the returned function gives everything so far. */
export function captureOutput(proc: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> }): () => string {
  let text = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    const reader = s.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  return () => text;
}
