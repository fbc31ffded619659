import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config";
import { ConfigError } from "../../src/errors";
import type { DashboardSource, StatusReport } from "../../src/http";
import { createDashboardApp } from "../../src/http";
import { corsVerdict } from "../../src/http/cors";
import { fakeStatus } from "../helpers/fake-status";
import { tempDir } from "../helpers/node-process";

const ALLOWED = "https://directory.example.org";
const OTHER = "https://evil.example.com";
const TOKEN = "test-token-0123456789";

function source(origins: string[], token = ""): { source: DashboardSource; calls: { drains: number; reloads: number; refused: string[] } } {
  const calls = { drains: 0, reloads: 0, refused: [] as string[] };
  const status: StatusReport = fakeStatus();
  return {
    calls,
    source: {
      state: () => "ready",
      notReadyReason: () => undefined,
      status: () => status,
      peers: () => [],
      rooms: () => [],
      history: () => [],
      discover: async () => [{ peer_id: "12D3KooWFound" }],
      drain: async () => void calls.drains++,
      cancelDrain: () => true,
      reload: async () => {
        calls.reloads++;
        return { ok: true, applied: [], restart_required: [], errors: [] };
      },
      authToken: () => token,
      corsOrigins: () => origins,
      corsRefused: (reason) => void calls.refused.push(reason),
    },
  };
}

const req = (path: string, init: RequestInit = {}) => new Request(`http://127.0.0.1:8080${path}`, init);
const preflight = (path: string, origin: string, method = "GET", headers?: string) =>
  req(path, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": method, ...(headers ? { "access-control-request-headers": headers } : {}) },
  });

describe("CORS on the dashboard API", () => {
  test("an allowed origin reads /api/discover and /api/status: its own origin echoed, Vary: Origin, no credentials", async () => {
    const app = createDashboardApp(source([ALLOWED]).source);
    for (const path of ["/api/discover", "/api/status", "/api/peers", "/api/rooms", "/health"]) {
      const r = await app.handle(req(path, { headers: { origin: ALLOWED } }));
      expect(r.status).toBe(200);
      expect(r.headers.get("access-control-allow-origin")).toBe(ALLOWED);
      expect(r.headers.get("vary")).toBe("Origin");
      expect(r.headers.get("access-control-allow-credentials")).toBeNull();
    }
  });

  test("a disallowed origin gets no CORS headers (the browser then hides the answer)", async () => {
    const app = createDashboardApp(source([ALLOWED]).source);
    const r = await app.handle(req("/api/discover", { headers: { origin: OTHER } }));
    expect(r.headers.get("access-control-allow-origin")).toBeNull();
    expect(r.headers.get("vary")).toBe("Origin");
    // Prefix and suffix tricks are not the listed origin.
    for (const o of [`${ALLOWED}.evil.com`, "http://directory.example.org", `${ALLOWED}:8443`, "null"]) {
      const r2 = await app.handle(req("/api/discover", { headers: { origin: o } }));
      expect(r2.headers.get("access-control-allow-origin")).toBeNull();
    }
  });

  test("no origins configured (default): no CORS headers at all, preflights refused", async () => {
    const app = createDashboardApp(source([]).source);
    const r = await app.handle(req("/api/discover", { headers: { origin: ALLOWED } }));
    expect(r.headers.get("access-control-allow-origin")).toBeNull();
    expect(r.headers.get("vary")).toBeNull();
    const p = await app.handle(preflight("/api/discover", ALLOWED));
    expect(p.headers.get("access-control-allow-origin")).toBeNull();
    expect(p.status).toBe(403);
  });

  test("a preflight for the read-only API is answered with the origin, GET/HEAD and the authorization header", async () => {
    const app = createDashboardApp(source([ALLOWED], TOKEN).source);
    const r = await app.handle(preflight("/api/status", ALLOWED, "GET", "Authorization"));
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBe(ALLOWED);
    expect(r.headers.get("access-control-allow-methods")).toBe("GET, HEAD");
    expect(r.headers.get("access-control-allow-headers")).toBe("authorization");
    expect(r.headers.get("access-control-max-age")).toBe("600");
    expect(r.headers.get("vary")).toBe("Origin");
    expect(r.headers.get("access-control-allow-credentials")).toBeNull();
    // Without the token the page can still read why it was refused.
    const denied = await app.handle(req("/api/status", { headers: { origin: ALLOWED } }));
    expect(denied.status).toBe(401);
    expect(denied.headers.get("access-control-allow-origin")).toBe(ALLOWED);
    // With the token, the real request is allowed and readable.
    const g = await app.handle(req("/api/status", { headers: { origin: ALLOWED, authorization: `Bearer ${TOKEN}` } }));
    expect(g.status).toBe(200);
    expect(g.headers.get("access-control-allow-origin")).toBe(ALLOWED);
  });

  test("preflights from unlisted origins, for other headers or other methods are refused with 403 and counted", async () => {
    const { source: s, calls } = source([ALLOWED]);
    const app = createDashboardApp(s);
    for (const p of [
      preflight("/api/status", OTHER),
      preflight("/api/status", ALLOWED, "PUT"),
      preflight("/api/status", ALLOWED, "GET", "x-custom"),
      preflight("/", ALLOWED),
      preflight("/metrics", ALLOWED),
    ]) {
      const r = await app.handle(p);
      expect(r.status).toBe(403);
      expect(r.headers.get("access-control-allow-origin")).toBeNull();
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("CORS_REFUSED");
    }
    expect(calls.refused).toEqual(["origin", "method", "header", "path", "path"]);
  });

  test("mutating endpoints stay closed to every origin, even a listed one: preflight refused, no CORS headers, nothing runs", async () => {
    const { source: s, calls } = source([ALLOWED], TOKEN);
    const app = createDashboardApp(s);
    for (const [method, path] of [
      ["POST", "/api/drain"],
      ["DELETE", "/api/drain"],
      ["POST", "/api/reload"],
      ["POST", "/login"],
    ] as const) {
      const p = await app.handle(preflight(path, ALLOWED, method, "authorization"));
      expect(p.status).toBe(403);
      expect(p.headers.get("access-control-allow-origin")).toBeNull();
      expect(p.headers.get("access-control-allow-methods")).toBeNull();
      // A "simple" cross-origin POST needs no preflight: it gets no CORS header, so the page cannot read the answer;
      // without the token (a page has none unless given) it does nothing.
      const r = await app.handle(
        req(path, {
          method,
          headers: { origin: ALLOWED, "content-type": "application/x-www-form-urlencoded" },
          body: method === "POST" ? "token=x" : undefined,
        }),
      );
      expect(r.headers.get("access-control-allow-origin")).toBeNull();
    }
    expect(calls).toMatchObject({ drains: 0, reloads: 0 });
    expect(calls.refused).toEqual(["path", "path", "path", "path"]);
  });

  test("the list is read per request, so a SIGHUP reload changes it live", async () => {
    const origins: string[] = [];
    const app = createDashboardApp(source(origins).source);
    expect(
      (await app.handle(req("/api/discover", { headers: { origin: ALLOWED } }))).headers.get("access-control-allow-origin"),
    ).toBeNull();
    origins.push(ALLOWED);
    expect((await app.handle(req("/api/discover", { headers: { origin: ALLOWED } }))).headers.get("access-control-allow-origin")).toBe(
      ALLOWED,
    );
  });

  test("corsVerdict: not-cors without Origin, refused for paths outside the read-only set", () => {
    expect(corsVerdict([ALLOWED], null, "GET", "/api/status")).toBe("not-cors");
    expect(corsVerdict([ALLOWED], ALLOWED, "GET", "/api/status/x")).toBe("path");
    expect(corsVerdict([ALLOWED], OTHER, "GET", "/api/status")).toBe("origin");
    expect(corsVerdict([ALLOWED], ALLOWED, "HEAD", "/health")).toBe("allowed");
  });
});

describe("dashboard.cors_origins in the config", () => {
  function load(value: string): ConfigError | string[] {
    const dir = tempDir();
    const file = join(dir, "node.toml");
    writeFileSync(file, `[node]\ndata_dir = "${dir}"\n\n[dashboard]\ncors_origins = ${value}\n`);
    try {
      return loadConfig({ file, env: {} }).config.dashboard.cors_origins;
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
  }

  test("valid origins load; the default is empty", () => {
    expect(load(`["https://directory.example.org", "http://127.0.0.1:5173", "http://[::1]:8080"]`)).toEqual([
      "https://directory.example.org",
      "http://127.0.0.1:5173",
      "http://[::1]:8080",
    ]);
    expect(loadConfig({ env: {} }).config.dashboard.cors_origins).toEqual([]);
  });

  for (const [bad, why] of [
    [`["*"]`, "explicitly"],
    [`["https://a.example/path"]`, "no path"],
    [`["directory.example.org"]`, "scheme://host"],
    [`["https://A.example"]`, `"https://a.example"`],
    [`["https://a.example:443"]`, `"https://a.example"`],
    [`["https://a.example/"]`, "no path"],
    [`["ftp://a.example"]`, "scheme://host"],
    [`["https://user@a.example"]`, "user info"],
    [`[1]`, "expected a string"],
  ] as const)
    test(`${bad} is rejected with file:line, key and why`, () => {
      const r = load(bad);
      expect(r).toBeInstanceOf(ConfigError);
      const msg = (r as ConfigError).message;
      expect(msg).toContain("node.toml:5");
      expect(msg).toContain("dashboard.cors_origins");
      expect(msg).toContain(why);
    });
});
