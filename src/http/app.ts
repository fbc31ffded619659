/**
 * The dashboard/API application (Elysia). Every error leaves as JSON `{ error: { code, message } }` with
 * the right status; no stack trace ever reaches a client.
 */
import { Elysia, t } from "elysia";
import { AgoraError } from "../errors";
import { authorize, SESSION_COOKIE, sessionValue, tokensEqual } from "./auth";
import { CALL_CSP, CALL_SCRIPT, CALL_WORKLET, renderCallPage } from "./call-page";
import { corsPlugin } from "./cors";
import { renderLive, renderLogin, renderPage } from "./dashboard";
import { CallInfoModel, DiscoverQueryModel, DrainReplyModel, ErrorModel, PeerModel, ReloadModel, RoomModel, StatusModel } from "./models";
import type { DashboardSource } from "./types";

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
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
};

export function createDashboardApp(source: DashboardSource) {
  return new Elysia()
    .onRequest(({ set }) => {
      Object.assign(set.headers, SECURITY_HEADERS);
    })
    .use(
      corsPlugin(
        () => source.corsOrigins?.() ?? [],
        (reason) => source.corsRefused?.(reason),
      ),
    )
    .onError(({ code, error }) => {
      if (error instanceof AgoraError) {
        const status =
          error.code === "BAD_REQUEST"
            ? 400
            : error.code === "UNAUTHORIZED"
              ? 401
              : error.code === "NOT_FOUND"
                ? 404
                : error.code === "SHUTTING_DOWN"
                  ? 503
                  : 500;
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
        return jsonError(
          403,
          "UNAUTHORIZED",
          "mutating endpoints are disabled until an admin token is configured (dashboard.auth_token_file)",
        );
      const verdict = authorize(request, token, mutating);
      if (verdict === "ok") return;
      const wantsHtml =
        request.method === "GET" &&
        (path === "/" || path === "/fragment" || path === "/call") &&
        (request.headers.get("accept") ?? "").includes("text/html");
      if (wantsHtml && verdict === "missing" && !mutating) {
        set.status = 303;
        set.headers.location = "/login";
        return "";
      }
      set.headers["www-authenticate"] = 'Bearer realm="agora-node"';
      return jsonError(
        401,
        "UNAUTHORIZED",
        verdict === "missing" ? "missing admin token (Authorization: Bearer <token>)" : "invalid admin token",
      );
    })
    .get("/health", ({ set }) => {
      const state = source.state();
      set.headers["cache-control"] = "no-store";
      if (state === "ready") return { status: "ok", state };
      set.status = 503;
      return { status: state, state, reason: source.notReadyReason() ?? state };
    })
    .get("/login", () => renderLogin(false), {
      afterHandle: ({ set }) => {
        set.headers["content-type"] = "text/html; charset=utf-8";
      },
    })
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
    .get("/call", ({ set }) => {
      set.headers["content-type"] = "text/html; charset=utf-8";
      set.headers["cache-control"] = "no-store";
      set.headers["content-security-policy"] = CALL_CSP;
      return renderCallPage(source.status().name);
    })
    .get("/call/app.js", ({ set }) => {
      set.headers["content-type"] = "text/javascript; charset=utf-8";
      set.headers["cache-control"] = "no-cache";
      return CALL_SCRIPT;
    })
    .get("/call/worklet.js", ({ set }) => {
      set.headers["content-type"] = "text/javascript; charset=utf-8";
      set.headers["cache-control"] = "no-cache";
      return CALL_WORKLET;
    })
    .get(
      "/api/call",
      ({ set }) => {
        set.headers["cache-control"] = "no-store";
        const peerId = source.status().peer_id;
        const addrs = source.webSocketAddrs?.() ?? [];
        return {
          peer_id: peerId,
          ws_addrs: addrs.map((a) => (a.includes("/p2p/") ? a : `${a}/p2p/${peerId}`)),
          default_room: "test-call",
        };
      },
      { response: { 200: CallInfoModel } },
    )
    .get("/api/status", () => source.status(), { response: { 200: StatusModel } })
    .get("/api/peers", () => source.peers(), { response: { 200: t.Array(PeerModel) } })
    .get("/api/rooms", () => source.rooms(), { response: { 200: t.Array(RoomModel) } })
    .get(
      "/api/discover",
      async ({ query }) => source.discover({ region: query.region, capability: query.capability, group: query.group, limit: query.limit }),
      {
        query: DiscoverQueryModel,
      },
    )
    .post(
      "/api/drain",
      async () => {
        await source.drain();
        return { ok: true, state: source.state() };
      },
      { response: { 200: DrainReplyModel, 403: ErrorModel } },
    )
    .delete("/api/drain", () => ({ ok: source.cancelDrain(), state: source.state() }), { response: { 200: DrainReplyModel } })
    .post(
      "/api/reload",
      async ({ set }) => {
        const r = await source.reload();
        if (!r.ok) set.status = 422;
        return r;
      },
      { response: { 200: ReloadModel, 422: ReloadModel } },
    );
}

export type DashboardApp = ReturnType<typeof createDashboardApp>;
