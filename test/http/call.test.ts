/**
 * The test-call page's HTTP side without a browser: /call and its scripts behind the admin token, the
 * page's own CSP, /api/call's addresses, and the choice of address the page makes (src/http/call/address.ts).
 * The browser side is test/http/call-browser.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { createDashboardApp, type DashboardSource } from "../../src/http";
import { SESSION_COOKIE, sessionValue } from "../../src/http/auth";
import { chooseAddress } from "../../src/http/call/address";
import { fakeStatus } from "../helpers/fake-status";

const TOKEN = "call-token-0123456789";
const PEER = "12D3KooWTest";

function source(token: string, wsAddrs?: string[]): DashboardSource {
  return {
    state: () => "ready",
    notReadyReason: () => undefined,
    status: () => fakeStatus({ peer_id: PEER }),
    peers: () => [],
    rooms: () => [],
    history: () => [],
    discover: async () => [],
    drain: async () => {},
    cancelDrain: () => false,
    reload: async () => ({ ok: true, applied: [], restart_required: [], errors: [] }),
    authToken: () => token,
    ...(wsAddrs ? { webSocketAddrs: () => wsAddrs } : {}),
  };
}

function get(app: ReturnType<typeof createDashboardApp>, path: string, headers: Record<string, string> = {}) {
  return app.handle(new Request(`http://127.0.0.1${path}`, { headers }));
}

describe("/call behind the admin token", () => {
  const app = createDashboardApp(source(TOKEN, ["/ip4/127.0.0.1/tcp/7002/ws"]));
  test("a browser without a session is sent to /login; JSON clients get 401", async () => {
    const html = await get(app, "/call", { accept: "text/html" });
    expect(html.status).toBe(303);
    expect(html.headers.get("location")).toBe("/login");
    for (const path of ["/call/app.js", "/call/worklet.js", "/api/call"]) expect((await get(app, path)).status).toBe(401);
    expect((await get(app, "/api/call", { authorization: "Bearer wrong" })).status).toBe(401);
  });
  test("with the session cookie: the page, its own CSP, the bundled scripts", async () => {
    const cookie = { cookie: `${SESSION_COOKIE}=${sessionValue(TOKEN)}`, accept: "text/html" };
    const page = await get(app, "/call", cookie);
    expect(page.status).toBe(200);
    const body = await page.text();
    expect(body).toContain('<script type="module" src="/call/app.js"></script>');
    expect(body).not.toMatch(/<script>|https?:\/\/(?!127\.0\.0\.1)/); // no inline script, no external resource
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self' ws: wss:");
    expect(csp).not.toContain("unsafe-inline'; connect-src 'self';");
    const script = await get(app, "/call/app.js", cookie);
    expect(script.headers.get("content-type")).toStartWith("text/javascript");
    const js = await script.text();
    // The bundle holds the page's own code and js-libp2p (not an import of anything outside it).
    expect(js).toContain("__agoraCall");
    expect(js).toContain("/agora/audio/1.1.0");
    expect(js).not.toMatch(/\bimport\s*[{*"']|\brequire\(/);
    const worklet = await (await get(app, "/call/worklet.js", cookie)).text();
    expect(worklet).toContain("registerProcessor");
    expect(worklet).toContain("agora-playout");
  });
  test("/api/call: the node's WebSocket addresses with its peer id", async () => {
    const r = await get(app, "/api/call", { authorization: `Bearer ${TOKEN}` });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ peer_id: PEER, ws_addrs: [`/ip4/127.0.0.1/tcp/7002/ws/p2p/${PEER}`], default_room: "test-call" });
  });
});

test("without a token the page is open (loopback dashboard) and /api/call says when there is no listener", async () => {
  const app = createDashboardApp(source(""));
  expect((await get(app, "/call", { accept: "text/html" })).status).toBe(200);
  expect(((await (await get(app, "/api/call")).json()) as { ws_addrs: string[] }).ws_addrs).toEqual([]);
});

describe("chooseAddress", () => {
  const ws = "/ip4/127.0.0.1/tcp/7002/ws/p2p/X";
  const lan = "/ip4/192.168.1.5/tcp/7002/ws/p2p/X";
  const tls = "/dns4/voice.example.org/tcp/443/tls/ws/p2p/X";
  test("no WebSocket address: explains network.ws_port", () => {
    const r = chooseAddress(["/ip4/127.0.0.1/tcp/7001/p2p/X"], "http:", "127.0.0.1");
    expect(r.addr).toBeUndefined();
    expect(r.why).toContain("network.ws_port");
  });
  test("https page with only plain ws: explains the TLS reverse proxy", () => {
    const r = chooseAddress([ws], "https:", "voice.example.org");
    expect(r.addr).toBeUndefined();
    expect(r.why).toContain("reverse proxy");
    expect(r.why).toContain("network.announce_addrs");
  });
  test("https page: the TLS address", () => {
    expect(chooseAddress([ws, tls], "https:", "voice.example.org").addr).toBe(tls);
  });
  test("http page: the address on the page's host, else loopback", () => {
    expect(chooseAddress([ws, lan], "http:", "192.168.1.5").addr).toBe(lan);
    expect(chooseAddress([lan, ws], "http:", "localhost").addr).toBe(ws);
  });
});
