/**
 * The dashboard/API application (Elysia). Every error leaves as JSON `{ error: { code, message } }` with
 * the right status; no stack trace ever reaches a client.
 */
import { html } from "@elysiajs/html";
import { Elysia, t } from "elysia";
import { AgoraError } from "../errors";
import { authorize, SESSION_COOKIE, sessionValue, tokensEqual } from "./auth";
import { corsPlugin } from "./cors";
import { renderLive, renderLogin, renderPage } from "./dashboard";
import { type DashboardSource, StunModel } from "./types";

export const PeerModel = t.Object({
  peer_id: t.String(),
  addrs: t.Array(t.String()),
  direction: t.String(),
  opened_at: t.Number(),
  latency_ms: t.Union([t.Number(), t.Null()]),
  relayed: t.Boolean(),
});

export const RoomModel = t.Object({
  id: t.String(),
  created_at: t.Number(),
  participants: t.Array(
    t.Object({
      id: t.String(),
      speaking: t.Boolean(),
      personal_mix: t.Boolean(),
      jitter_ms: t.Number(),
      buffer_depth_ms: t.Number(),
      loss_percent: t.Number(),
      packets_in: t.Number(),
      packets_out: t.Number(),
      concealed: t.Number(),
      late: t.Number(),
    }),
  ),
});

export const StatusModel = t.Object({
  name: t.String(),
  version: t.String(),
  mode: t.String(),
  state: t.Union([t.Literal("starting"), t.Literal("ready"), t.Literal("draining"), t.Literal("stopping")]),
  peer_id: t.String(),
  region: t.String(),
  group: t.String(),
  labels: t.Array(t.String()),
  capabilities: t.Array(t.String()),
  started_at: t.String(),
  uptime_seconds: t.Number(),
  load: t.Object({ current_load: t.Number(), max_clients: t.Number(), cpu_percent: t.Number(), mem_percent: t.Number(), rss_bytes: t.Number() }),
  limits: t.Object({ max_connections: t.Number(), max_mixers: t.Number(), drain_timeout_seconds: t.Number() }),
  rooms_active: t.Number(),
  participants: t.Number(),
  peers_connected: t.Number(),
  network: t.Union([t.Record(t.String(), t.Unknown()), t.Null()]),
  turn: t.Object({ enabled: t.Boolean(), url: t.String(), username: t.String(), password: t.String() }),
  stun_servers: t.Array(t.String()),
  stun: t.Union([StunModel, t.Null()]),
  drain: t.Union([t.Object({ started_at: t.Union([t.String(), t.Null()]), deadline: t.Union([t.String(), t.Null()]) }), t.Null()]),
  media: t.Union([t.Object({ worker_restarts: t.Number() }), t.Null()]),
});

const ErrorModel = t.Object({ error: t.Object({ code: t.String(), message: t.String() }) });

function jsonError(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

const PUBLIC_PATHS = new Set(["/health", "/login", "/favicon.ico"]);
const MUTATING = new Set(["POST /api/drain", "DELETE /api/drain", "POST /api/reload"]);
const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
};

export function createDashboardApp(source: DashboardSource) {
  return new Elysia()
    .use(html({ autoDetect: false }))
    .onRequest(({ set }) => {
      Object.assign(set.headers, SECURITY_HEADERS);
    })
    .use(corsPlugin(() => source.corsOrigins?.() ?? [], (reason) => source.corsRefused?.(reason)))
    .onError(({ code, error }) => {
      if (error instanceof AgoraError) {
        const status = error.code === "BAD_REQUEST" ? 400 : error.code === "UNAUTHORIZED" ? 401 : error.code === "NOT_FOUND" ? 404 : error.code === "SHUTTING_DOWN" ? 503 : 500;
        return jsonError(status, error.code, error.message);
      }
      switch (code) {
        case "NOT_FOUND":
          return jsonError(404, "NOT_FOUND", "no such endpoint");
        case "VALIDATION": {
          const msg = (error as { message?: string }).message ?? "invalid request";
          let summary = "invalid request";
          try {
            const parsed = JSON.parse(msg) as { property?: string; message?: string };
            summary = `${parsed.property ?? "request"}: ${parsed.message ?? "invalid"}`;
          } catch {
            summary = msg.split("\n")[0] ?? summary;
          }
          return jsonError(400, "BAD_REQUEST", summary);
        }
        case "PARSE":
          return jsonError(400, "BAD_REQUEST", "malformed request body");
        default:
          return jsonError(500, "INTERNAL", "internal error; see the node's log");
      }
    })
    .onBeforeHandle(({ request, path, set }) => {
      if (PUBLIC_PATHS.has(path)) return;
      const mutating = MUTATING.has(`${request.method} ${path}`);
      const token = source.authToken();
      if (mutating && !token)
        return jsonError(403, "UNAUTHORIZED", "mutating endpoints are disabled until an admin token is configured (dashboard.auth_token_file)");
      const verdict = authorize(request, token, mutating);
      if (verdict === "ok") return;
      const wantsHtml = request.method === "GET" && (path === "/" || path === "/fragment") && (request.headers.get("accept") ?? "").includes("text/html");
      if (wantsHtml && verdict === "missing" && !mutating) {
        set.status = 303;
        set.headers.location = "/login";
        return "";
      }
      set.headers["www-authenticate"] = 'Bearer realm="agora-node"';
      return jsonError(401, "UNAUTHORIZED", verdict === "missing" ? "missing admin token (Authorization: Bearer <token>)" : "invalid admin token");
    })
    .get("/health", ({ set }) => {
      const state = source.state();
      set.headers["cache-control"] = "no-store";
      if (state === "ready") return { status: "ok", state };
      set.status = 503;
      return { status: state, state, reason: source.notReadyReason() ?? state };
    })
    .get("/login", () => renderLogin(false), { afterHandle: ({ set }) => void (set.headers["content-type"] = "text/html; charset=utf-8") })
    .post(
      "/login",
      ({ body, set }) => {
        const token = source.authToken();
        set.headers["content-type"] = "text/html; charset=utf-8";
        if (!token) {
          set.status = 303;
          set.headers.location = "/";
          return "";
        }
        if (!tokensEqual(body.token, token)) {
          set.status = 401;
          return renderLogin(true);
        }
        set.status = 303;
        set.headers.location = "/";
        set.headers["set-cookie"] = `${SESSION_COOKIE}=${sessionValue(token)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200`;
        return "";
      },
      { body: t.Object({ token: t.String({ maxLength: 1024 }) }) },
    )
    .get("/", ({ set }) => {
      set.headers["content-type"] = "text/html; charset=utf-8";
      set.headers["cache-control"] = "no-store";
      return renderPage(source.status(), source.peers(), source.rooms(), source.history());
    })
    .get("/fragment", ({ set }) => {
      set.headers["content-type"] = "text/html; charset=utf-8";
      set.headers["cache-control"] = "no-store";
      return renderLive(source.status(), source.peers(), source.rooms(), source.history());
    })
    .get("/api/status", () => source.status(), { response: { 200: StatusModel } })
    .get("/api/peers", () => source.peers(), { response: { 200: t.Array(PeerModel) } })
    .get("/api/rooms", () => source.rooms(), { response: { 200: t.Array(RoomModel) } })
    .get(
      "/api/discover",
      async ({ query }) => source.discover({ region: query.region, capability: query.capability, group: query.group, limit: query.limit }),
      {
        query: t.Object({
          region: t.Optional(t.String({ pattern: "^[a-z0-9][a-z0-9_-]{0,62}$" })),
          capability: t.Optional(t.String({ pattern: "^[a-z0-9][a-z0-9_-]{0,31}$" })),
          group: t.Optional(t.String({ pattern: "^[a-z0-9][a-z0-9_-]{0,62}$" })),
          limit: t.Optional(t.Numeric({ minimum: 1, maximum: 100 })),
        }),
      },
    )
    .post("/api/drain", async () => {
      await source.drain();
      return { ok: true, state: source.state() };
    }, { response: { 200: t.Object({ ok: t.Boolean(), state: t.String() }), 403: ErrorModel } })
    .delete("/api/drain", () => ({ ok: source.cancelDrain(), state: source.state() }))
    .post("/api/reload", async ({ set }) => {
      const r = await source.reload();
      if (!r.ok) set.status = 422;
      return r;
    });
}

export type DashboardApp = ReturnType<typeof createDashboardApp>;
