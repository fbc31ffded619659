/**
 * CORS for the dashboard API, as a small Elysia plugin. Only the read-only API is opened, only to the origins
 * in `dashboard.cors_origins` (read per request, so SIGHUP changes the list live), only for GET/HEAD:
 *
 *   allowed origin, read-only path  → `Access-Control-Allow-Origin: <that origin>`, `Vary: Origin`
 *   preflight for the above         → 204 with the allowed method and header (authorization) and a max age
 *   any other preflight             → 403 `CORS_REFUSED`, no CORS headers (mutating endpoints, login, other
 *                                     paths, other methods, unlisted origins), counted by reason
 *
 * Credentials are never allowed (no `Access-Control-Allow-Credentials`): the session cookie is SameSite=Strict
 * and a cross-origin page that holds the admin token sends it as `Authorization: Bearer`, which needs no
 * credentials mode. `*` is never sent.
 *
 * Why not `@elysiajs/cors` (1.4.2, the release for Elysia 1.4): it is app-wide — it answers every OPTIONS on
 * every path with 204 and, by default, echoes the requested method, so a preflight for `POST /api/reload`
 * would be answered as if allowed; it sends `Access-Control-Allow-Credentials: true` on every response by
 * default and echoes request header names as exposed headers. Restricting it per route would mean turning
 * off nearly every default and still could not refuse a preflight; the policy here is a few lines.
 */
import { Elysia } from "elysia";

/** The read-only endpoints a listed origin may read. Everything else stays same-origin. */
export const CORS_READ_ONLY_PATHS: ReadonlySet<string> = new Set(["/api/status", "/api/peers", "/api/rooms", "/api/discover", "/health"]);
const CORS_METHODS = new Set(["GET", "HEAD"]);
const ALLOW_METHODS = "GET, HEAD";
/** Request headers a cross-origin page may send (the admin token). */
const ALLOW_HEADERS = new Set(["authorization"]);
/** Seconds a browser may cache a preflight answer; short, so a removed origin loses access soon. */
const PREFLIGHT_MAX_AGE = 600;

/** Why a cross-origin request or preflight was refused (the `reason` of agora_http_cors_refused_total). */
export type CorsRefusal = "origin" | "path" | "method" | "header";
export type CorsVerdict = "not-cors" | "allowed" | CorsRefusal;

/** The policy on its own, for tests and for the plugin: is this cross-origin request or preflight allowed? */
export function corsVerdict(
  origins: readonly string[],
  origin: string | null,
  method: string,
  path: string,
  requestHeaders?: string | null,
): CorsVerdict {
  if (origin === null) return "not-cors";
  if (!origins.includes(origin)) return "origin";
  if (!CORS_READ_ONLY_PATHS.has(path)) return "path";
  if (!CORS_METHODS.has(method)) return "method";
  if (requestHeaders) {
    for (const h of requestHeaders.split(",")) {
      const name = h.trim().toLowerCase();
      if (name !== "" && !ALLOW_HEADERS.has(name)) return "header";
    }
  }
  return "allowed";
}

function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start === -1) return "/";
  const end = url.slice(start).search(/[?#]/);
  return end === -1 ? url.slice(start) : url.slice(start, start + end);
}

/** `refused` is told about every refused preflight (the node counts them). */
export function corsPlugin(origins: () => readonly string[], refused?: (reason: CorsRefusal) => void) {
  return new Elysia({ name: "agora-cors" }).onRequest(({ request, set }) => {
    const list = origins();
    const origin = request.headers.get("origin");
    const preflightMethod = request.method === "OPTIONS" ? request.headers.get("access-control-request-method") : null;
    // Nothing listed: plain requests are untouched (same-origin only); preflights are still refused below.
    if (list.length === 0 && preflightMethod === null) return;
    const path = pathOf(request.url);
    if (preflightMethod !== null && origin !== null) {
      const verdict = corsVerdict(list, origin, preflightMethod.toUpperCase(), path, request.headers.get("access-control-request-headers"));
      if (verdict !== "allowed") {
        refused?.(verdict === "not-cors" ? "origin" : verdict);
        return new Response(
          JSON.stringify({
            error: { code: "CORS_REFUSED", message: `cross-origin ${preflightMethod} ${path} from ${origin} is not allowed` },
          }),
          {
            status: 403,
            headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", vary: "Origin" },
          },
        );
      }
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": origin,
          "access-control-allow-methods": ALLOW_METHODS,
          "access-control-allow-headers": [...ALLOW_HEADERS].join(", "),
          "access-control-max-age": String(PREFLIGHT_MAX_AGE),
          vary: "Origin",
        },
      });
    }
    // The answer to a read-only path depends on Origin once any origin is listed: caches must key on it.
    if (CORS_READ_ONLY_PATHS.has(path)) set.headers.vary = "Origin";
    if (corsVerdict(list, origin, request.method, path) === "allowed") set.headers["access-control-allow-origin"] = origin!;
  });
}
