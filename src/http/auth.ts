/**
 * Admin-token checks. Comparisons run on SHA-256 digests with timingSafeEqual, so neither the token's
 * content nor its length leaks through response timing. Browsers log in once through /login and then
 * carry a session cookie derived from the token (never the token itself); rotating the token ends sessions.
 */
import { createHash, timingSafeEqual } from "node:crypto";

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

export function tokensEqual(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

export const SESSION_COOKIE = "agora_session";

export function sessionValue(token: string): string {
  return createHash("sha256").update(`agora-dashboard-session:${token}`, "utf8").digest("hex");
}

export function bearerToken(header: string | null): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : undefined;
}

export function cookieValue(header: string | null, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return undefined;
}

/** Decides access. Mutating requests must carry the Bearer header: a cookie alone would allow CSRF. */
export function authorize(req: Request, token: string, mutating: boolean): "ok" | "missing" | "invalid" {
  const bearer = bearerToken(req.headers.get("authorization"));
  if (mutating) {
    if (!token) return bearer === undefined ? "missing" : "invalid";
    if (bearer === undefined) return "missing";
    return tokensEqual(bearer, token) ? "ok" : "invalid";
  }
  if (!token) return "ok";
  if (bearer !== undefined) return tokensEqual(bearer, token) ? "ok" : "invalid";
  const cookie = cookieValue(req.headers.get("cookie"), SESSION_COOKIE);
  if (cookie !== undefined) return tokensEqual(cookie, sessionValue(token)) ? "ok" : "invalid";
  return "missing";
}
