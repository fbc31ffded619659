import { describe, expect, test } from "bun:test";
import type { DashboardSource, NodeState, StatusReport } from "../../src/http";
import { createDashboardApp } from "../../src/http";
import { SESSION_COOKIE, sessionValue } from "../../src/http/auth";
import { fakeStatus } from "../helpers/fake-status";

const TOKEN = "test-token-0123456789";

function fakeSource(opts: { token?: string; state?: NodeState; isolated?: boolean; relay?: boolean } = {}) {
  let state: NodeState = opts.state ?? "ready";
  let drains = 0;
  let reloads = 0;
  const base = fakeStatus();
  const status: StatusReport = fakeStatus({
    discovery: { ...base.discovery, isolated: opts.isolated ?? false },
    relay: opts.relay ? { reservations: 3, circuits: 2, bytes_relayed: 5 * 1048576 } : null,
  });
  const source: DashboardSource = {
    state: () => state,
    notReadyReason: () => (state === "ready" ? undefined : state),
    status: () => ({ ...status, state }),
    peers: () => [
      { peer_id: "12D3KooWPeer", addrs: ["/ip4/127.0.0.1/tcp/1"], direction: "inbound", opened_at: 1, latency_ms: 2, relayed: false },
    ],
    rooms: () => [
      {
        id: "standup",
        created_at: 1,
        participants: [
          {
            id: "p1",
            speaking: true,
            personal_mix: true,
            jitter_ms: 3,
            buffer_depth_ms: 40,
            loss_percent: 0,
            packets_in: 1,
            packets_out: 1,
            concealed: 0,
            late: 0,
          },
        ],
        directory: {
          hosted_here: true,
          epoch: 7,
          status: "active",
          handovers_in: 2,
          handovers_out: 1,
          last_published_at: new Date(0).toISOString(),
        },
      },
      // handed over to another mixer: known to the directory, no participants here
      {
        id: "moved-away",
        created_at: 0,
        participants: [],
        directory: { hosted_here: false, epoch: 0, status: "active", handovers_in: 0, handovers_out: 3, last_published_at: null },
      },
    ],
    history: () => [1, 2, 3].map((i) => ({ t: i, peers: i, rooms: 1, participants: i, cpu_percent: i, rss_mb: 50 })),
    discover: async () => [],
    drain: async () => {
      drains++;
      state = "draining";
    },
    cancelDrain: () => {
      state = "ready";
      return true;
    },
    reload: async () => {
      reloads++;
      return { ok: true, applied: [], restart_required: [], errors: [] };
    },
    authToken: () => opts.token ?? "",
  };
  return { source, counts: () => ({ drains, reloads }), setState: (s: NodeState) => (state = s) };
}

const req = (path: string, init: RequestInit = {}) => new Request(`http://localhost${path}`, init);

describe("dashboard app without token (loopback default)", () => {
  const { source, setState } = fakeSource();
  const app = createDashboardApp(source);

  test("/health is 200 when ready and 503 with a JSON reason while draining", async () => {
    let r = await app.handle(req("/health"));
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: "ok", state: "ready" });
    setState("draining");
    r = await app.handle(req("/health"));
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ status: "draining", reason: "draining" });
    setState("ready");
  });

  test("the dashboard renders status, escaped names and inline SVG charts with no external resources", async () => {
    const r = await app.handle(req("/"));
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toContain("text/html");
    const html = await r.text();
    expect(html).toContain("test &lt;node&gt;");
    expect(html).not.toContain("test <node>");
    expect(html).toContain("<svg");
    expect(html).toContain("1h 2m");
    expect(html).toContain("standup");
    expect(html).not.toMatch(/(src|href)="https?:/);
    expect(r.headers.get("content-security-policy")).toContain("default-src 'none'");
  });

  test("JSON API endpoints answer with their models", async () => {
    expect(((await (await app.handle(req("/api/status"))).json()) as StatusReport).peer_id).toBe("12D3KooWTest");
    expect(await (await app.handle(req("/api/peers"))).json()).toHaveLength(1);
    const rooms = (await (await app.handle(req("/api/rooms"))).json()) as {
      id: string;
      directory?: { hosted_here: boolean; epoch: number };
    }[];
    expect(rooms[0]!.id).toBe("standup");
    expect(rooms[0]!.directory).toMatchObject({ hosted_here: true, epoch: 7, handovers_in: 2, handovers_out: 1 });
    expect(rooms[1]!.directory).toMatchObject({ hosted_here: false, handovers_out: 3 });
  });

  test("the dashboard's room table shows whether this node hosts the room, its epoch and handovers in/out", async () => {
    const html = await (await app.handle(req("/fragment"))).text();
    expect(html).toContain("<th>Hosted here</th>");
    expect(html).toContain("<td>standup</td><td>yes</td><td>7 · 2/1</td>");
    expect(html).toContain("<td>moved-away</td><td>no</td><td>— · 0/3</td>");
  });

  test("unknown paths and bad queries are JSON errors with a code", async () => {
    let r = await app.handle(req("/nope"));
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: { code: "NOT_FOUND", message: "no such endpoint" } });
    r = await app.handle(req("/api/discover?region=EU%20WEST"));
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("BAD_REQUEST");
    r = await app.handle(req("/api/discover?limit=abc"));
    expect(r.status).toBe(400);
  });

  test("mutating endpoints are refused while no token is configured", async () => {
    const r = await app.handle(req("/api/drain", { method: "POST" }));
    expect(r.status).toBe(403);
    expect(((await r.json()) as { error: { message: string } }).error.message).toContain("admin token");
  });
});

describe("dashboard app with a token", () => {
  const { source, counts } = fakeSource({ token: TOKEN });
  const app = createDashboardApp(source);
  const bearer = { authorization: `Bearer ${TOKEN}` };

  test("everything but /health needs the token", async () => {
    expect((await app.handle(req("/health"))).status).toBe(200);
    for (const path of ["/api/status", "/api/peers", "/api/rooms", "/fragment"]) {
      const r = await app.handle(req(path));
      expect(r.status).toBe(401);
      expect(r.headers.get("www-authenticate")).toContain("Bearer");
      expect((await app.handle(req(path, { headers: { authorization: "Bearer wrong-token-000000" } }))).status).toBe(401);
      expect((await app.handle(req(path, { headers: bearer }))).status).toBe(200);
    }
  });

  test("a browser is sent to /login; a valid login sets a session cookie that works for reads only", async () => {
    const r = await app.handle(req("/", { headers: { accept: "text/html" } }));
    expect(r.status).toBe(303);
    expect(r.headers.get("location")).toBe("/login");
    const bad = await app.handle(
      req("/login", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "token=nope" }),
    );
    expect(bad.status).toBe(401);
    const ok = await app.handle(
      req("/login", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `token=${TOKEN}` }),
    );
    expect(ok.status).toBe(303);
    const cookie = ok.headers.get("set-cookie")!;
    expect(cookie).toContain(`${SESSION_COOKIE}=${sessionValue(TOKEN)}`);
    expect(cookie).toContain("HttpOnly");
    expect(cookie).not.toContain(TOKEN);
    const withCookie = { cookie: `${SESSION_COOKIE}=${sessionValue(TOKEN)}` };
    expect((await app.handle(req("/api/status", { headers: withCookie }))).status).toBe(200);
    expect((await app.handle(req("/api/drain", { method: "POST", headers: withCookie }))).status).toBe(401);
  });

  test("POST /api/drain and /api/reload need the Bearer token", async () => {
    expect((await app.handle(req("/api/reload", { method: "POST" }))).status).toBe(401);
    const r = await app.handle(req("/api/reload", { method: "POST", headers: bearer }));
    expect(r.status).toBe(200);
    const d = await app.handle(req("/api/drain", { method: "POST", headers: bearer }));
    expect(await d.json()).toEqual({ ok: true, state: "draining" });
    expect(counts()).toEqual({ drains: 1, reloads: 1 });
  });
});

describe("dashboard: discovery and relay figures", () => {
  test("bootstrap n/m, DHT routing table, last publish; the isolated banner only when isolated", async () => {
    const html = await (await createDashboardApp(fakeSource().source).handle(req("/fragment"))).text();
    expect(html).toContain('<span id="bootstrap" class="warn">1/2</span>');
    expect(html).toContain("4 known peers");
    expect(html).toContain('<span id="dht-size">7</span>');
    expect(html).toMatch(/advertised <span id="advertised">1[23]s ago<\/span>/);
    expect(html).not.toContain('id="isolated"');
    expect(html).not.toContain("relay-circuits");
    const lonely = await (await createDashboardApp(fakeSource({ isolated: true }).source).handle(req("/fragment"))).text();
    expect(lonely).toContain('id="isolated"');
    expect(lonely).toContain("No other node can find this one.");
  });

  test("relay mode: reservations, circuits and bytes relayed", async () => {
    const html = await (await createDashboardApp(fakeSource({ relay: true }).source).handle(req("/fragment"))).text();
    expect(html).toContain('<span id="relay-circuits">2</span>');
    expect(html).toContain('<span id="relay-reservations">3</span> reservations');
    expect(html).toContain('<span id="relay-bytes">5.0 MiB</span> relayed');
  });

  test("the page carries the stale banner and the script that shows it", async () => {
    const html = await (await createDashboardApp(fakeSource().source).handle(req("/"))).text();
    expect(html).toContain('<div class="banner bad" id="stale" role="alert" hidden></div>');
    expect(html).toContain("STALE=10000");
  });
});
