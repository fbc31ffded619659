/** `stop`, `status` and `health`: talk to a running node through its PID file and dashboard. */
import { AgoraError } from "../errors";
import { type DiscoveryReport, formatBytes, formatDuration, formatStun, type StatusReport } from "../http";
import { isAgoraProcess, readPid } from "../node";
import { EXIT_FAILURE, EXIT_OK, numberFlag, type Parsed } from "./args";
import { type Io, loadForCommand } from "./context";

function dashboardEndpoint(p: Parsed, io: Io): { url: string; token: string; pidFile: string; enabled: boolean } {
  const explicit = typeof p.values.endpoint === "string" ? p.values.endpoint : undefined;
  const c = loadForCommand(p.values, io.env).config;
  const host = ["0.0.0.0", "::"].includes(c.dashboard.listen_addr) ? "127.0.0.1" : c.dashboard.listen_addr;
  const url = explicit ?? `http://${host.includes(":") ? `[${host}]` : host}:${c.dashboard.port}`;
  if (explicit && !/^https?:\/\/[^\s]+$/.test(explicit))
    throw new AgoraError("USAGE", `--endpoint: expected an http:// URL, got "${explicit}"`);
  const token = typeof p.values.token === "string" ? p.values.token : c.dashboard.auth_token;
  return { url: url.replace(/\/+$/, ""), token, pidFile: c.node.pid_file, enabled: c.dashboard.enabled || explicit !== undefined };
}

async function fetchJson(url: string, token: string, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: text };
  }
}

/** One line of drain progress from /api/status, e.g. `draining: 1 room, 2 participants left, 27s to the deadline`. */
export function drainLine(
  s: { state?: string; rooms_active?: number; participants?: number; drain?: { deadline: string | null } | null },
  now: number,
): { key: string; text: string } {
  const rooms = Number(s.rooms_active) || 0;
  const participants = Number(s.participants) || 0;
  const deadline = s.drain?.deadline ? Date.parse(s.drain.deadline) : NaN;
  const left = Number.isFinite(deadline) ? `, ${Math.max(0, Math.ceil((deadline - now) / 1000))}s to the deadline` : "";
  const what = `${rooms} room${rooms === 1 ? "" : "s"}, ${participants} participant${participants === 1 ? "" : "s"} left`;
  return { key: `${s.state}/${rooms}/${participants}`, text: `${s.state ?? "unknown"}: ${what}${left}` };
}

/**
 * Follows the drain through the dashboard while `stop` waits: one line each time the state, the rooms or
 * the participants left change. Silent when the dashboard is off or does not answer (the PID still decides).
 */
function drainProgress(p: Parsed, io: Io): { poll(): Promise<void> } | undefined {
  let ep: ReturnType<typeof dashboardEndpoint>;
  try {
    ep = dashboardEndpoint(p, io);
  } catch {
    return undefined;
  }
  if (!ep.enabled) return undefined;
  let lastKey = "";
  let nextAt = 0;
  return {
    async poll() {
      if (Date.now() < nextAt) return;
      nextAt = Date.now() + 250;
      try {
        const r = await fetchJson(`${ep.url}/api/status`, ep.token, 1000);
        if (r.status !== 200 || typeof r.body !== "object" || r.body === null) return;
        const line = drainLine(r.body as Parameters<typeof drainLine>[0], Date.now());
        if (line.key === lastKey) return;
        lastKey = line.key;
        io.err(line.text);
      } catch {
        /* the dashboard closes as the node stops: the PID decides */
      }
    },
  };
}

/**
 * Windows has no SIGTERM: process.kill() there ends the process at once (TerminateProcess), skipping the
 * drain. `stop` still works, but says so and how to drain instead.
 */
export function stopCaveat(platform: NodeJS.Platform = process.platform): string | undefined {
  return platform === "win32"
    ? "on Windows this ends the node at once, without draining its rooms; to drain first, POST /api/drain (or press Ctrl-C in the node's console) and stop it once it is idle"
    : undefined;
}

export async function runStop(p: Parsed, io: Io): Promise<number> {
  const loaded = typeof p.values["pid-file"] === "string" ? undefined : loadForCommand(p.values, io.env);
  const pidFile = typeof p.values["pid-file"] === "string" ? p.values["pid-file"] : loaded!.config.node.pid_file;
  const timeoutS = numberFlag("timeout", p.values.timeout, 0, 86400) ?? (loaded?.config.node.drain_timeout ?? 30) + 15;
  const pid = readPid(pidFile);
  if (pid === undefined || !isAgoraProcess(pid)) {
    io.out(
      `agora-node is not running (${pid === undefined ? `no PID file at ${pidFile}` : `stale PID file ${pidFile} names pid ${pid}, which is not running`}); nothing to stop`,
    );
    return EXIT_OK;
  }
  const caveat = stopCaveat();
  if (caveat) io.err(`agora-node stop: ${caveat}`);
  try {
    process.kill(pid, "SIGTERM");
  } catch (err) {
    throw new AgoraError("NOT_RUNNING", `cannot signal pid ${pid}: ${(err as Error).message}`);
  }
  io.err(`sent SIGTERM to agora-node (pid ${pid}); waiting up to ${timeoutS}s for it to drain and exit…`);
  const progress = drainProgress(p, io);
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutS * 1000) {
    if (!isAgoraProcess(pid)) {
      io.out(`agora-node (pid ${pid}) stopped after ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      return EXIT_OK;
    }
    await progress?.poll();
    await Bun.sleep(100);
  }
  io.err(
    `agora-node (pid ${pid}) is still running after ${timeoutS}s (draining rooms?); run stop again to wait more, or kill -TERM ${pid} twice to force`,
  );
  return EXIT_FAILURE;
}

export async function runStatus(p: Parsed, io: Io): Promise<number> {
  const ep = dashboardEndpoint(p, io);
  const pid = readPid(ep.pidFile);
  const alive = pid !== undefined && isAgoraProcess(pid);
  if (!ep.enabled) {
    io.out(
      alive
        ? `agora-node is running (pid ${pid}); the dashboard is disabled, so no details`
        : `agora-node is not running (no live process in ${ep.pidFile})`,
    );
    return alive ? EXIT_OK : EXIT_FAILURE;
  }
  let r: { status: number; body: unknown };
  try {
    r = await fetchJson(`${ep.url}/api/status`, ep.token, 5000);
  } catch (err) {
    const why = (err as Error).name === "TimeoutError" ? "timed out" : "connection refused";
    io.out(
      alive
        ? `agora-node (pid ${pid}) is running but its dashboard at ${ep.url} does not answer (${why})`
        : `agora-node is not running (nothing answers at ${ep.url}: ${why}; no live process in ${ep.pidFile})`,
    );
    return EXIT_FAILURE;
  }
  if (r.status === 401 || r.status === 403) {
    io.err(`the node at ${ep.url} requires an admin token: pass --token or set dashboard.auth_token_file in the config`);
    return EXIT_FAILURE;
  }
  if (r.status !== 200 || typeof r.body !== "object" || r.body === null) {
    io.err(`unexpected answer from ${ep.url}/api/status: HTTP ${r.status}`);
    return EXIT_FAILURE;
  }
  // A node of another version may lack fields: every one is read as optional.
  const s = r.body as Partial<StatusReport>;
  if (p.values.json) {
    io.out(JSON.stringify(s, null, 2));
    return EXIT_OK;
  }
  const net = (s.network ?? {}) as { listen_addrs?: string[]; reachability?: string };
  const d: Partial<DiscoveryReport> = s.discovery ?? {};
  const since = (iso: unknown) =>
    typeof iso === "string" ? `${formatDuration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago (${iso})` : "not yet";
  const discovery = [
    `  bootstrap    ${d.bootstrap_connected ?? 0}/${d.bootstrap_configured ?? 0} connected, ${d.known_peers ?? 0} known peers`,
    `  dht          ${d.routing_table_size ?? 0} peers in the routing table`,
    `  advertised   ${d.publishes === false ? "never (bootstrap mode advertises nothing)" : since(d.last_published_at)}`,
    ...(s.relay
      ? [
          `  relay        ${s.relay.reservations} reservations, ${s.relay.circuits} circuits, ${formatBytes(Number(s.relay.bytes_relayed) || 0)} relayed`,
        ]
      : []),
    ...(d.isolated
      ? ["  WARNING      no bootstrap peers, no known peers, no connection: no other node can find this one (set network.bootstrap_peers)"]
      : []),
  ];
  io.out(
    [
      `agora-node ${s.version}  ${s.name}`,
      `  state        ${s.state}`,
      `  mode         ${s.mode} (${(s.capabilities ?? []).join(", ")})`,
      `  peer id      ${s.peer_id}`,
      `  region       ${s.region} / group ${s.group}`,
      `  uptime       ${formatDuration(Number(s.uptime_seconds) || 0)}`,
      `  peers        ${s.peers_connected} (max ${s.limits?.max_connections})`,
      `  rooms        ${s.rooms_active}, ${s.participants} participants (max ${s.limits?.max_mixers} rooms)`,
      `  load         ${s.load?.current_load}/${s.load?.max_clients}, cpu ${s.load?.cpu_percent}%, rss ${Math.round((s.load?.rss_bytes ?? 0) / 1048576)} MB`,
      `  listen       ${(net.listen_addrs ?? []).join(" ")}`,
      `  reachability ${net.reachability ?? "unknown"}`,
      ...discovery,
      `  public udp   ${formatStun(s.stun)}`,
      `  dashboard    ${ep.url}`,
    ].join("\n"),
  );
  return EXIT_OK;
}

export async function runHealth(p: Parsed, io: Io): Promise<number> {
  const ep = dashboardEndpoint(p, io);
  const timeoutS = numberFlag("timeout", p.values.timeout, 0.1, 60) ?? 3;
  try {
    const r = await fetchJson(`${ep.url}/health`, "", timeoutS * 1000);
    const body = r.body as { status?: string; reason?: string };
    if (r.status === 200) {
      io.out("ok");
      return EXIT_OK;
    }
    io.out(`unhealthy: HTTP ${r.status}${body?.reason ? ` (${body.reason})` : ""}`);
    return EXIT_FAILURE;
  } catch (err) {
    io.out(`unhealthy: ${ep.url}/health does not answer (${(err as Error).name === "TimeoutError" ? "timed out" : "connection refused"})`);
    return EXIT_FAILURE;
  }
}
