/**
 * The operator's dashboard: one self-contained HTML page (inline CSS, inline SVG charts, a few lines of
 * inline JS for auto-refresh; no external resource, so it works on an air-gapped host and under a strict
 * CSP). The `#live` part is re-fetched as a fragment every few seconds.
 */
import { escapeHtml } from "@kitajs/html";
import type { HistorySample, PeerReport, RoomReport, StatusReport, StunReport } from "./types";

const e = (v: unknown) => escapeHtml(String(v));

/** One line for the STUN result (dashboard and `status`): public UDP address, mapping, servers answering. */
export function formatStun(stun: StunReport | null | undefined): string {
  if (!stun) return "off";
  if (stun.servers.length === 0) return `no STUN servers configured (UDP ${stun.local_port})`;
  const answering = stun.servers.filter((x) => x.ok).length;
  const servers = `${answering}/${stun.servers.length} servers answering`;
  if (stun.public_address === null) return stun.checked_at === null ? `checking (UDP ${stun.local_port})` : `unknown, ${servers}`;
  const host = stun.public_address.includes(":") ? `[${stun.public_address}]` : stun.public_address;
  return `${host}:${stun.public_port} → UDP ${stun.local_port}, ${stun.mapping} mapping, ${servers}${stun.autonat_agrees ? ", AutoNAT agrees (advertised)" : ""}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** A small line chart of one series as inline SVG. */
export function sparkline(label: string, values: number[], unit: string, width = 260, height = 56): string {
  const max = Math.max(1, ...values);
  const last = values.length > 0 ? values[values.length - 1]! : 0;
  const n = values.length;
  const pts = values
    .map((v, i) => {
      const x = n <= 1 ? width : (i / (n - 1)) * width;
      const y = height - 4 - (v / max) * (height - 8);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
  const lastText = Number.isInteger(last) ? String(last) : last.toFixed(1);
  return `<figure class="chart" aria-label="${e(label)}">
<figcaption>${e(label)} <b>${e(lastText)}${e(unit)}</b> <small>max ${e(Number.isInteger(max) ? max : max.toFixed(1))}</small></figcaption>
<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${e(label)} over the last minutes">
<rect x="0" y="0" width="${width}" height="${height}" class="bg"/>
${n > 1 ? `<polyline points="${pts}" class="line"/>` : `<text x="8" y="${height / 2}" class="muted">collecting…</text>`}
</svg></figure>`;
}

const STATE_CLASS: Record<string, string> = { ready: "ok", starting: "warn", draining: "warn", stopping: "bad" };

function card(title: string, value: string, sub = ""): string {
  return `<div class="card"><div class="k">${e(title)}</div><div class="v">${value}</div>${sub ? `<div class="s">${sub}</div>` : ""}</div>`;
}

/** "1.2 MB" style byte counts for the relay card. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "12s ago", measured against the server's clock when the page was rendered. */
function ago(iso: string | null, now: number): string {
  if (!iso) return "never";
  return `${formatDuration(Math.max(0, (now - Date.parse(iso)) / 1000))} ago`;
}

export function renderLive(s: StatusReport, peers: PeerReport[], rooms: RoomReport[], history: HistorySample[], now = Date.now()): string {
  const loadPct = s.load.max_clients > 0 ? Math.round((s.load.current_load / s.load.max_clients) * 100) : 0;
  const net = s.network as { reachability?: string; listen_addrs?: string[] } | null;
  const d = s.discovery;
  const bootstrapClass =
    d.bootstrap_configured === 0
      ? ""
      : d.bootstrap_connected === 0
        ? "bad"
        : d.bootstrap_connected < d.bootstrap_configured
          ? "warn"
          : "ok";
  const isolated = d.isolated
    ? `<div class="banner warn" id="isolated"><b>No other node can find this one.</b> No bootstrap peers are configured, no peers are remembered from earlier runs, and no peer is connected. Set <code>network.bootstrap_peers</code> in the config.</div>`
    : "";
  const cards = [
    card(
      "State",
      `<span class="pill ${STATE_CLASS[s.state] ?? "warn"}" id="state">${e(s.state)}</span>`,
      s.drain?.deadline ? `drain deadline ${e(s.drain.deadline)}` : "",
    ),
    card("Mode", e(s.mode), e(s.capabilities.join(", ") || "—")),
    card("Uptime", `<span id="uptime">${e(formatDuration(s.uptime_seconds))}</span>`, `since ${e(s.started_at)}`),
    card("Peers", `<span id="peers-count">${s.peers_connected}</span>`, `max ${s.limits.max_connections}`),
    card("Rooms", `<span id="rooms-count">${s.rooms_active}</span>`, `${s.participants} participants · max ${s.limits.max_mixers} rooms`),
    card(
      "Load",
      `<span id="load">${loadPct}%</span>`,
      `${s.load.current_load}/${s.load.max_clients} · CPU ${s.load.cpu_percent}% · RSS ${Math.round(s.load.rss_bytes / 1048576)} MB`,
    ),
    card(
      "Bootstrap",
      `<span id="bootstrap" class="${bootstrapClass}">${d.bootstrap_connected}/${d.bootstrap_configured}</span>`,
      `connected · ${d.known_peers} known peer${d.known_peers === 1 ? "" : "s"}`,
    ),
    card(
      "DHT",
      `<span id="dht-size">${d.routing_table_size}</span>`,
      `peers in the routing table · ${d.publishes ? `advertised <span id="advertised">${e(ago(d.last_published_at, now))}</span>` : "bootstrap: no advertisement"}`,
    ),
    ...(s.relay
      ? [
          card(
            "Relay",
            `<span id="relay-circuits">${s.relay.circuits}</span>`,
            `circuits · <span id="relay-reservations">${s.relay.reservations}</span> reservations · <span id="relay-bytes">${e(formatBytes(s.relay.bytes_relayed))}</span> relayed`,
          ),
        ]
      : []),
  ].join("");
  const charts = [
    sparkline(
      "Peers",
      history.map((h) => h.peers),
      "",
    ),
    sparkline(
      "Participants",
      history.map((h) => h.participants),
      "",
    ),
    sparkline(
      "CPU",
      history.map((h) => h.cpu_percent),
      "%",
    ),
    sparkline(
      "Memory",
      history.map((h) => h.rss_mb),
      " MB",
    ),
  ].join("");
  const peerRows = peers.length
    ? peers
        .slice(0, 200)
        .map(
          (p) =>
            `<tr><td class="mono">${e(p.peer_id)}</td><td>${e(p.direction)}${p.relayed ? " (relayed)" : ""}</td><td class="mono">${e(p.addrs[0] ?? "")}</td><td>${p.latency_ms === null ? "—" : `${e(p.latency_ms)} ms`}</td></tr>`,
        )
        .join("")
    : `<tr><td colspan="4" class="muted">No peers connected.</td></tr>`;
  const roomRows = rooms.length
    ? rooms
        .map(
          (r) =>
            `<tr><td>${e(r.id)}</td><td>${roomDirectoryCells(r)}</td><td>${r.participants.length}</td><td>${e(
              r.participants
                .filter((p) => p.speaking)
                .map((p) => p.id)
                .join(", ") || "—",
            )}</td><td>${e(
              Math.max(0, ...r.participants.map((p) => p.jitter_ms)).toFixed(1),
            )} ms</td><td>${e(Math.max(0, ...r.participants.map((p) => p.loss_percent)).toFixed(1))}%</td></tr>`,
        )
        .join("")
    : `<tr><td colspan="7" class="muted">No active rooms.</td></tr>`;
  return `${isolated}<section class="cards">${cards}</section>
<section class="charts">${charts}</section>
<section><h2>Rooms</h2><table id="rooms"><thead><tr><th>Room</th><th>Hosted here</th><th>Epoch · handovers in/out</th><th>Participants</th><th>Speaking</th><th>Jitter (max)</th><th>Loss (max)</th></tr></thead><tbody>${roomRows}</tbody></table></section>
<section><h2>Peers</h2><table id="peers"><thead><tr><th>Peer</th><th>Direction</th><th>Address</th><th>Latency</th></tr></thead><tbody>${peerRows}</tbody></table></section>
<section class="meta"><h2>Node</h2><dl>
<dt>Peer ID</dt><dd class="mono" id="peer-id">${e(s.peer_id)}</dd>
<dt>Region / group</dt><dd>${e(s.region)} / ${e(s.group)}${s.labels.length ? ` · ${e(s.labels.join(", "))}` : ""}</dd>
<dt>Listen</dt><dd class="mono">${e((net?.listen_addrs ?? []).join("  ") || "—")}</dd>
<dt>Reachability</dt><dd>${e(net?.reachability ?? "unknown")}</dd>
<dt>Public UDP (STUN)</dt><dd class="mono" id="stun">${e(formatStun(s.stun))}</dd>
<dt>Version</dt><dd>${e(s.version)}</dd>
</dl></section>`;
}

export const CSS = `
:root{--bg:#0f1419;--fg:#e6e6e6;--muted:#8b949e;--card:#161b22;--line:#30363d;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--accent:#58a6ff}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;align-items:baseline;gap:1rem;padding:1rem 1.5rem;border-bottom:1px solid var(--line)}
header h1{font-size:1.25rem;margin:0}header .muted{font-size:.9rem}main{padding:1rem 1.5rem;max-width:1200px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:.75rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem}
.card .k{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}.card .v{font-size:1.6rem;font-weight:600}.card .s{color:var(--muted);font-size:.8rem}
.pill{display:inline-block;padding:0 .6rem;border-radius:999px;font-size:1.1rem}.pill.ok{background:#12361d;color:var(--ok)}.pill.warn{background:#3a2c0b;color:var(--warn)}.pill.bad{background:#3d1214;color:var(--bad)}
.charts{display:flex;flex-wrap:wrap;gap:.75rem;margin:1rem 0}.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem .75rem}
.chart figcaption{color:var(--muted);font-size:.8rem}.chart b{color:var(--fg)}.chart .bg{fill:transparent}.chart .line{fill:none;stroke:var(--accent);stroke-width:2}.chart text{fill:var(--muted);font-size:11px}
h2{font-size:1rem;margin:1.25rem 0 .5rem}table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line)}th{color:var(--muted);font-weight:500;font-size:.8rem}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.8rem;word-break:break-all}.muted{color:var(--muted)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem}dt{color:var(--muted)}dd{margin:0}
footer{color:var(--muted);padding:1rem 1.5rem;font-size:.8rem}a{color:var(--accent)}
.card .v .ok{color:var(--ok)}.card .v .warn{color:var(--warn)}.card .v .bad{color:var(--bad)}
.banner{border-radius:8px;padding:.6rem 1rem;margin:0 0 .75rem}.banner.warn{background:#3a2c0b;color:var(--warn);border:1px solid var(--warn)}
.banner.bad{background:#3d1214;color:var(--bad);border:1px solid var(--bad)}code{font-family:ui-monospace,monospace}
#stale{margin:.75rem 1.5rem 0}body.stale main{opacity:.45;filter:grayscale(1)}body.stale .pill{background:#3d1214;color:var(--bad)}
`;

/** Refresh period of the live fragment, and the age of the last good answer past which the page is stale. */
export const REFRESH_MS = 3000;
export const STALE_AFTER_MS = 10_000;

/**
 * Re-fetches the live fragment; keeps the last good view, and once the last successful fetch is older
 * than STALE_AFTER_MS, greys it out under a red banner and replaces the state with "no answer", so a
 * dead node never keeps showing a green "ready".
 */
const SCRIPT = `
(function(){var live=document.getElementById('live'),stamp=document.getElementById('refreshed'),banner=document.getElementById('stale');
var lastOk=Date.now(),STALE=${STALE_AFTER_MS};
function check(){var age=Date.now()-lastOk,stale=age>STALE;document.body.classList.toggle('stale',stale);banner.hidden=!stale;
if(stale){banner.textContent='No answer from the node for '+Math.round(age/1000)+' s: the figures below are from '+new Date(lastOk).toLocaleTimeString()+' and may be out of date.';
var st=document.getElementById('state');if(st)st.textContent='no answer';}}
function tick(){fetch('/fragment',{credentials:'same-origin',cache:'no-store',signal:AbortSignal.timeout(${REFRESH_MS})}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.text()})
.then(function(h){live.innerHTML=h;lastOk=Date.now();stamp.textContent='updated '+new Date().toLocaleTimeString();check()})
.catch(function(err){stamp.textContent='node not answering ('+err.message+'), retrying…';check()})}
setInterval(tick,${REFRESH_MS});setInterval(check,1000);})();
`;

/** Two cells: whether this node hosts the room, and its epoch with handovers in/out ("—" without a directory). */
function roomDirectoryCells(r: RoomReport): string {
  const d = r.directory;
  if (!d) return "—</td><td>—";
  const hosted = d.hosted_here ? (d.status === "handing-over" ? "yes (handing over)" : "yes") : "no";
  return `${e(hosted)}</td><td>${d.hosted_here ? e(d.epoch) : "—"} · ${e(d.handovers_in)}/${e(d.handovers_out)}`;
}

export function renderPage(s: StatusReport, peers: PeerReport[], rooms: RoomReport[], history: HistorySample[]): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>agora-node · ${e(s.name)}</title><style>${CSS}</style></head>
<body><header><h1>agora-node · ${e(s.name)}</h1><span class="muted">${e(s.mode)} · ${e(s.region)} · v${e(s.version)}</span><span class="muted" id="refreshed"></span></header>
<div class="banner bad" id="stale" role="alert" hidden></div>
<main id="live">${renderLive(s, peers, rooms, history)}</main>
<footer><a href="/call">Test call</a> · JSON: <a href="/api/status">/api/status</a> · <a href="/api/peers">/api/peers</a> · <a href="/api/rooms">/api/rooms</a> · <a href="/health">/health</a></footer>
<script>${SCRIPT}</script></body></html>`;
}

export function renderLogin(failed: boolean): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>agora-node · sign in</title><style>${CSS}
form{max-width:360px;margin:4rem auto;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1.5rem}
input{width:100%;padding:.5rem;margin:.5rem 0 1rem;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:6px}
button{padding:.5rem 1rem;background:var(--accent);border:0;border-radius:6px;color:#000;font-weight:600}</style></head>
<body><form method="post" action="/login"><h1>agora-node</h1><p class="muted">This dashboard needs the node's admin token.</p>
${failed ? `<p style="color:var(--bad)">That token is not valid.</p>` : ""}
<label>Admin token<input type="password" name="token" autocomplete="current-password" autofocus></label><button type="submit">Sign in</button></form></body></html>`;
}
