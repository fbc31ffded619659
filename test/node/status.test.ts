/**
 * Integration: what the operator sees of discovery. A node nobody can find says so (a warning at start, the
 * API, the dashboard, `status`); a node joined through a bootstrap peer shows n of m bootstrap peers
 * connected, its DHT routing table and when its advertisement was last published; a relay shows its
 * reservations, circuits and bytes relayed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { eventually, type NodeHandle, runCli, startNode } from "../helpers/node-process";

const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});
async function node(opts: Parameters<typeof startNode>[0] = {}): Promise<NodeHandle> {
  const h = await startNode(opts);
  started.push(h);
  return h;
}
const status = async (h: NodeHandle) => (await (await fetch(`${h.dashboardUrl}/api/status`)).json()) as Record<string, any>;
const jsonLines = (t: string) =>
  t
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, any>);

describe("discovery as the operator sees it", () => {
  test("an isolated node warns at start and says so in the API, the dashboard and status; a joined one shows n/m, DHT and last publish", async () => {
    const a = await node({ args: ["--heartbeat-interval", "1s"] });
    const warning = jsonLines(a.logs()).find((l) => l.level === "warn" && /no other node can find this one/.test(l.msg));
    expect(warning).toBeDefined();
    const sa = await status(a);
    expect(sa.discovery).toMatchObject({
      bootstrap_configured: 0,
      bootstrap_connected: 0,
      known_peers: 0,
      isolated: true,
      publishes: true,
      last_published_at: null,
    });
    expect(await (await fetch(a.dashboardUrl)).text()).toContain('id="isolated"');
    const cliA = await runCli(["status", "--endpoint", a.dashboardUrl, "--data-dir", a.dataDir]);
    expect(cliA.stdout).toContain("  bootstrap    0/0 connected, 0 known peers");
    expect(cliA.stdout).toContain("  advertised   not yet");
    expect(cliA.stdout).toContain("WARNING      no bootstrap peers, no known peers, no connection");

    const b = await node({ args: ["--heartbeat-interval", "1s", "--bootstrap", await a.multiaddr()] });
    expect(jsonLines(b.logs()).some((l) => /no other node can find this one/.test(l.msg ?? ""))).toBe(false);
    const sb = await eventually(
      async () => {
        const s = await status(b);
        return s.discovery.bootstrap_connected === 1 && s.discovery.routing_table_size >= 1 && s.discovery.last_published_at !== null && s;
      },
      20_000,
      "B connected to its bootstrap peer, with a routing table and a published advertisement",
    );
    expect(sb.discovery).toMatchObject({ bootstrap_configured: 1, isolated: false });
    expect(Date.now() - Date.parse(sb.discovery.last_published_at)).toBeLessThan(60_000);
    const cliB = await runCli(["status", "--endpoint", b.dashboardUrl, "--data-dir", b.dataDir]);
    expect(cliB.stdout).toContain("  bootstrap    1/1 connected");
    expect(cliB.stdout).toMatch(/ {2}dht {10}[1-9]\d* peers in the routing table/);
    expect(cliB.stdout).toMatch(/ {2}advertised {3}\d+s ago \(\d{4}-/);
    expect(cliB.stdout).not.toContain("WARNING");
    const page = await (await fetch(b.dashboardUrl)).text();
    expect(page).toContain('<span id="bootstrap" class="ok">1/1</span>');
    expect(page).not.toContain('id="isolated"');
    // A peer connected: A is no longer isolated either.
    await eventually(async () => (await status(a)).discovery.isolated === false, 10_000, "A not isolated once B connected");
  }, 60_000);

  test("a relay node shows reservations, circuits and bytes relayed", async () => {
    const r = await node({ args: ["--mode", "relay"] });
    const s = await status(r);
    expect(s.relay).toEqual({ reservations: 0, circuits: 0, bytes_relayed: 0 });
    const page = await (await fetch(r.dashboardUrl)).text();
    expect(page).toContain('<span id="relay-circuits">0</span>');
    expect(page).toContain('<span id="relay-reservations">0</span> reservations');
    expect(page).toContain('<span id="relay-bytes">0 B</span> relayed');
    const cli = await runCli(["status", "--endpoint", r.dashboardUrl, "--data-dir", r.dataDir]);
    expect(cli.stdout).toContain("  relay        0 reservations, 0 circuits, 0 B relayed");
    expect((await status(await node())).relay).toBeNull();
  }, 60_000);
});
