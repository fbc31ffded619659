/**
 * Fuzz the live HTTP server with random paths, methods, headers and bodies (raw TCP, so malformed requests
 * reach the server as sent). Every answer is an HTTP response (JSON errors for API paths), no request
 * hangs the server, and the node stays healthy throughout.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { type NodeHandle, startNode } from "../helpers/node-process";

const TOKEN = "fuzz-token-0123456789abcdef";
let h: NodeHandle;
beforeAll(async () => {
  h = await startNode({ env: { AGORA_DASHBOARD_AUTH_TOKEN: TOKEN } });
});
afterAll(() => h?.cleanup());

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function rawRequest(port: number, bytes: Uint8Array, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let data = "";
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(data);
    }, timeoutMs);
    sock.on("data", (d) => {
      data += d.toString("latin1");
      if (data.includes("\r\n\r\n")) {
        clearTimeout(timer);
        sock.destroy();
        resolve(data);
      }
    });
    sock.on("error", () => {
      clearTimeout(timer);
      resolve(data);
    });
    sock.on("connect", () => sock.end(bytes));
  });
}

const PATHS = [
  "/",
  "/api/status",
  "/api/peers",
  "/api/rooms",
  "/api/discover",
  "/api/drain",
  "/api/reload",
  "/health",
  "/login",
  "/fragment",
  "/metrics",
  "/../../etc/passwd",
  "/%00",
  "/api/status?x=%zz",
  "/api/discover?limit=-1&region=%F0%9F%8E%99",
  "//",
  "/api//status",
];
const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW", "G\u0000T"];

test("500 random well-formed requests get JSON errors or pages, never a crash", async () => {
  const r = rng(7);
  const pick = <T>(a: T[]) => a[Math.floor(r() * a.length)]!;
  const statuses = new Map<number, number>();
  for (let i = 0; i < 500; i++) {
    const path =
      pick(PATHS) +
      (r() < 0.3 ? `?${Math.floor(r() * 1e9).toString(36)}=${encodeURIComponent(String.fromCharCode(Math.floor(r() * 500)))}` : "");
    const method = pick(METHODS.slice(0, 7));
    const headers: Record<string, string> = {};
    if (r() < 0.3) headers.authorization = pick([`Bearer ${TOKEN}`, "Bearer", "Basic abc", `Bearer ${"x".repeat(5000)}`, "bearer  x"]);
    if (r() < 0.3)
      headers["content-type"] = pick([
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
      ]);
    if (r() < 0.2) headers.cookie = pick(["agora_session=", "agora_session=abc", "a=b; c", ";;;"]);
    const body =
      method === "GET" || method === "HEAD" ? undefined : pick(["", "{", '{"token":1}', "token=", "\u0000\u0001", "x".repeat(2000)]);
    const res = await fetch(`${h.dashboardUrl}${path}`, { method, headers, body, signal: AbortSignal.timeout(15_000) }).catch(
      (e) => e as Error,
    );
    if (res instanceof Error) throw new Error(`request ${i} ${method} ${path} failed: ${res.message}`);
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    expect(res.status).toBeLessThan(500);
    if (path.startsWith("/api/") && res.status >= 400 && method !== "HEAD") {
      const j = (await res.json()) as { error?: { code?: string } };
      expect(typeof j.error?.code).toBe("string");
    } else await res.arrayBuffer();
  }
  expect(statuses.get(401)).toBeGreaterThan(50);
  expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
}, 240_000);

test("300 malformed raw requests (random bytes, bad request lines, huge headers) leave the node healthy", async () => {
  const r = rng(99);
  for (let i = 0; i < 300; i++) {
    const kind = i % 4;
    let bytes: Uint8Array;
    if (kind === 0) bytes = Uint8Array.from({ length: 1 + Math.floor(r() * 512) }, () => Math.floor(r() * 256));
    else if (kind === 1)
      bytes = new TextEncoder().encode(
        `${METHODS[Math.floor(r() * METHODS.length)]} ${PATHS[Math.floor(r() * PATHS.length)]} HTTP/1.1\r\nHost: x\r\nContent-Length: ${Math.floor(r() * 1e6)}\r\n\r\nabc`,
      );
    else if (kind === 2)
      bytes = new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20000 + Math.floor(r() * 50000))}\r\n\r\n`);
    else bytes = new TextEncoder().encode(`POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${"q".repeat(100)}`);
    await rawRequest(h.dashboardPort, bytes, 2000);
  }
  expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
  expect(h.proc.exitCode).toBeNull();
}, 120_000);

test("an oversized body is refused", async () => {
  const res = await fetch(`${h.dashboardUrl}/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: `token=${"x".repeat(200_000)}`,
  });
  expect(res.status).toBe(413);
});
