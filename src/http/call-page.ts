/**
 * The test-call page (/call): HTML here, the script and AudioWorklet bundled for the browser from
 * ./call/ at build time (Bun macros, see ./call/assets.ts) and served from memory. The page's CSP differs
 * from the dashboard's: scripts only from this origin (no inline script), and connections to WebSocket
 * listeners (the node's /ws port is another origin).
 */
import { callPageScript, callWorkletScript } from "./call/assets" with { type: "macro" };
import { CSS } from "./dashboard";

export const CALL_SCRIPT: string = callPageScript();
export const CALL_WORKLET: string = callWorkletScript();

export const CALL_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'";

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderCallPage(nodeName: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>agora-node · test call</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>${CSS}
main{max-width:760px;margin:1.5rem auto;padding:0 1.5rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;margin-bottom:1rem}
label{display:inline-block;margin:.25rem 1rem .25rem 0}
input[type=text]{padding:.4rem;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:6px;width:14rem}
button{padding:.45rem 1rem;background:var(--accent);border:0;border-radius:6px;color:#000;font-weight:600;margin-right:.5rem}
button:disabled{opacity:.4}
#status{margin:.75rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere}#status.error{color:var(--bad)}
#participants{list-style:none;padding:0;margin:0}#participants li{padding:.2rem 0;color:var(--muted)}
#participants li.speaking{color:var(--ok);font-weight:600}
#stats{color:var(--muted);font-size:12px}</style></head>
<body><header><h1>agora-node · ${escapeHtml(nodeName)} · test call</h1><a class="muted" href="/">dashboard</a></header>
<main><div class="card">
<label>Room <input type="text" id="room" maxlength="64" autocomplete="off"></label>
<label>Name <input type="text" id="name" maxlength="48" value="operator" autocomplete="off"></label><br>
<label title="A hidden second participant in the same room plays back, 1 s late, what the node sends it: your own voice, through the node"><input type="checkbox" id="echo" checked> Echo: hear yourself 1 s later, through the node</label>
<label title="Echo cancellation, noise suppression and automatic gain of the browser"><input type="checkbox" id="processing" checked> Voice processing</label><br>
<button id="join">Join</button><button id="leave" disabled>Leave</button>
<p id="status">Loading…</p></div>
<div class="card"><h2>Participants</h2><ul id="participants"></ul><p id="stats"></p></div>
<p class="muted">The browser joins over the node's WebSocket listener (libp2p: noise, yamux) with the microphone as Opus
(WebCodecs, 48 kHz mono, 20 ms) and plays the node's mix through an AudioWorklet jitter buffer. On an https dashboard the
listener must be behind a TLS reverse proxy (README, "wss").</p></main>
<script type="module" src="/call/app.js"></script></body></html>`;
}
