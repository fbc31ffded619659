/**
 * Integration: the compiled binary as a real process. Lifecycle, identity persistence, PID file rules,
 * signals (TERM/INT drain, HUP reload), status/stop/health commands, modes, auth, logging.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually, freePort, type NodeHandle, runCli, startNode, tempDir } from "../helpers/node-process";

const started: NodeHandle[] = [];
async function node(opts: Parameters<typeof startNode>[0] = {}): Promise<NodeHandle> {
  const h = await startNode(opts);
  started.push(h);
  return h;
}
afterAll(() => {
  for (const h of started) h.cleanup();
});

async function json(url: string, token?: string): Promise<any> {
  const r = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return r.json();
}

describe("agora-node start (no config file)", () => {
  test("runs on the embedded defaults, persists its identity, removes its PID file on SIGTERM", async () => {
    const h = await node();
    const status = await json(`${h.dashboardUrl}/api/status`);
    expect(status.state).toBe("ready");
    expect(status.mode).toBe("dedicated");
    expect(status.capabilities).toEqual(["mixer"]);
    expect(status.peer_id).toStartWith("12D3KooW");
    const keyFile = join(h.dataDir, "identity.key");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const pidFile = join(h.dataDir, "agora-node.pid");
    expect(readFileSync(pidFile, "utf8").trim()).toBe(String(h.proc.pid));
    expect(h.logs()).toContain("running on the embedded defaults");

    expect(await h.stop("SIGTERM")).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
    const logs = h
      .logs()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
    expect(logs.some((l) => l.msg === "stopped")).toBe(true);
    expect(logs.every((l) => ["trace", "debug", "info", "warn", "error", "fatal"].includes(l.level) && typeof l.time === "string")).toBe(
      true,
    );

    // Restart on the same data dir: same PeerId.
    const again = await node({ dataDir: h.dataDir });
    expect((await json(`${again.dashboardUrl}/api/status`)).peer_id).toBe(status.peer_id);
    expect(await again.stop("SIGINT")).toBe(0);
  });

  test("a SIGKILLed node restarts with the same identity after a stale PID file", async () => {
    const h = await node();
    const peer = await h.peerId();
    h.proc.kill("SIGKILL");
    await h.exited;
    expect(existsSync(join(h.dataDir, "agora-node.pid"))).toBe(true);
    const again = await node({ dataDir: h.dataDir });
    expect(await again.peerId()).toBe(peer);
    expect(again.logs()).toContain("replaced a stale PID file");
    await again.stop();
  });

  test("a second node on the same data directory is refused with a clear message", async () => {
    const h = await node();
    const second = await startNode({ dataDir: h.dataDir, waitHealthy: false });
    started.push(second);
    expect(await second.exited).toBe(1);
    expect(second.logs()).toContain(`another agora-node (pid ${h.proc.pid}) is running on data directory ${h.dataDir}`);
    expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
    await h.stop();
  });

  test("a corrupt identity is an error (exit 1) and the file is left as it was", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "identity.key"), "not a key", { mode: 0o600 });
    const h = await startNode({ dataDir: dir, waitHealthy: false });
    started.push(h);
    expect(await h.exited).toBe(1);
    expect(h.logs()).toContain("identity key is corrupt");
    expect(readFileSync(join(dir, "identity.key"), "utf8")).toBe("not a key");
    expect(existsSync(join(dir, "agora-node.pid"))).toBe(false);
  });

  test("an occupied dashboard port is a clear error and nothing stays bound", async () => {
    const blocker = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("x") });
    const h = await startNode({ ports: { dashboard: blocker.port }, waitHealthy: false });
    started.push(h);
    expect(await h.exited).toBe(1);
    expect(h.logs()).toContain(`dashboard.port ${blocker.port} on 127.0.0.1 is in use`);
    blocker.stop(true);
  });
});

describe("config and usage errors", () => {
  test("an invalid config file: exit 2 with file:line messages, nothing started", async () => {
    const dir = tempDir();
    const file = join(dir, "node.toml");
    writeFileSync(file, '[node]\nmode = "dedicated"\nlisten_port = 70000\nmax_mixers = "five"\n');
    const r = await runCli(["start", "--config", file, "--data-dir", dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("node.toml:3 node.listen_port: expected integer 1..65535, got 70000");
    expect(r.stderr).toContain('node.toml:4 node.max_mixers: expected integer 0..10000, got "five"');
    const v = await runCli(["config", "validate", file]);
    expect(v.code).toBe(2);
    expect(v.stderr).toContain("2 problems");
  });

  test("a dashboard on 0.0.0.0 without a token refuses to start", async () => {
    const dir = tempDir();
    const r = await runCli(["start", "--data-dir", dir, "--dashboard-addr", "0.0.0.0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("requires an admin token");
  });

  test("config init writes a commented config that validates; show masks secrets", async () => {
    const dir = tempDir();
    const file = join(dir, "node.toml");
    expect((await runCli(["config", "init", file])).code).toBe(0);
    expect(readFileSync(file, "utf8")).toContain("# What this node does for the network");
    expect((await runCli(["config", "init", file])).code).toBe(2);
    const v = await runCli(["config", "validate", file]);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain("valid");
    const show = await runCli(["config", "show", "--config", file], { env: { AGORA_TURN_PASSWORD: "hunter2hunter2" } });
    expect(show.code).toBe(0);
    expect(show.stdout).not.toContain("hunter2hunter2");
    expect(show.stdout).toContain("# env AGORA_TURN_PASSWORD");
  });

  test("identity new and show", async () => {
    const dir = tempDir();
    const key = join(dir, "id.key");
    const n = await runCli(["identity", "new", "--key-file", key, "--json"]);
    expect(n.code).toBe(0);
    const { peer_id } = JSON.parse(n.stdout);
    const s = await runCli(["identity", "show", "--key-file", key, "--json"]);
    expect(JSON.parse(s.stdout).peer_id).toBe(peer_id);
    expect((await runCli(["identity", "new", "--key-file", key])).code).toBe(1);
  });
});

describe("status, stop, health", () => {
  test("status says clearly when no node runs; stop is a no-op then", async () => {
    const dir = tempDir();
    const port = await freePort();
    const s = await runCli(["status", "--data-dir", dir, "--endpoint", `http://127.0.0.1:${port}`]);
    expect(s.code).toBe(1);
    expect(s.stdout).toContain("agora-node is not running");
    const st = await runCli(["stop", "--data-dir", dir]);
    expect(st.code).toBe(0);
    expect(st.stdout).toContain("not running");
    const hl = await runCli(["health", "--endpoint", `http://127.0.0.1:${port}`]);
    expect(hl.code).toBe(1);
  });

  test("status reports the running node; stop drains it and waits for the exit", async () => {
    const h = await node();
    const s = await runCli(["status", "--data-dir", h.dataDir, "--endpoint", h.dashboardUrl]);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain("state        ready");
    expect(s.stdout).toContain(await h.peerId());
    const j = await runCli(["status", "--json", "--endpoint", h.dashboardUrl]);
    expect(JSON.parse(j.stdout).mode).toBe("dedicated");
    expect((await runCli(["health", "--endpoint", h.dashboardUrl])).code).toBe(0);
    const stop = await runCli(["stop", "--data-dir", h.dataDir]);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toMatch(/stopped after/);
    expect(await h.exited).toBe(0);
  });
});

describe("modes, auth, reload, logging", () => {
  test("relay and bootstrap modes report their capabilities", async () => {
    for (const [mode, cap] of [
      ["relay", "relay"],
      ["bootstrap", "bootstrap"],
    ] as const) {
      const h = await node({ args: ["--mode", mode] });
      const s = await json(`${h.dashboardUrl}/api/status`);
      expect(s.mode).toBe(mode);
      expect(s.capabilities).toEqual([cap]);
      const metrics = await (await fetch(h.metricsUrl)).text();
      expect(metrics).toContain("agora_rooms_active 0");
      expect(metrics).toContain('agora_audio_packets_total{direction="in"} 0');
      expect(await h.stop()).toBe(0);
    }
  });

  test("with a token, the API needs it; drain turns /health 503 at once and can be cancelled", async () => {
    const token = "integration-token-0123456789";
    const h = await node({ env: { AGORA_DASHBOARD_AUTH_TOKEN: token } });
    expect((await fetch(`${h.dashboardUrl}/api/status`)).status).toBe(401);
    expect((await fetch(`${h.dashboardUrl}/api/status`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const d = await fetch(`${h.dashboardUrl}/api/drain`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(d.status).toBe(200);
    const health = await fetch(`${h.dashboardUrl}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: "draining" });
    await fetch(`${h.dashboardUrl}/api/drain`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
    await h.stop();
  });

  test("SIGHUP applies live keys, names restart-only keys, and rejects an invalid config", async () => {
    const dir = tempDir();
    const file = join(dir, "node.toml");
    const logFile = join(dir, "logs", "node.log");
    writeFileSync(file, `[node]\nmax_connections = 100\n[logging]\nlevel = "info"\nfile = "${logFile}"\n`);
    const h = await node({ args: ["--config", file], dataDir: dir });
    writeFileSync(file, `[node]\nmax_connections = 42\nregion = "eu-west"\n[logging]\nlevel = "debug"\nfile = "${logFile}"\n`);
    h.proc.kill("SIGHUP");
    await eventually(
      async () => (await json(`${h.dashboardUrl}/api/status`)).limits.max_connections === 42,
      10_000,
      "max_connections reload",
    );
    await eventually(
      () => h.logs().includes("changed keys need a restart") && h.logs().includes("node.region"),
      5000,
      "restart-required log",
    );
    writeFileSync(file, `[node]\nmax_connections = "lots"\n`);
    h.proc.kill("SIGHUP");
    await eventually(() => h.logs().includes("config reload rejected"), 5000, "rejection log");
    const s = await json(`${h.dashboardUrl}/api/status`);
    expect(s.limits.max_connections).toBe(42);
    expect(s.state).toBe("ready");
    expect(readFileSync(logFile, "utf8")).toContain("agora-node ready");
    await h.stop();
  });

  test("text log format", async () => {
    const h = await node({ args: ["--log-format", "text"] });
    await h.stop();
    expect(h.logs()).toMatch(/INFO.*agora-node ready/);
    expect(h.logs()).not.toContain('"msg":"agora-node ready"');
  });
});
