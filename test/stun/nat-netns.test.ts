/**
 * STUN through a real NAT: network namespaces inner ─ router ─ outer, nftables masquerade on the router's
 * outer leg, two coturn STUN servers in outer. The STUN client and the compiled node in inner must learn
 * the router's outer address (never their own inner one). With `masquerade random` (a new random port per
 * destination, like a symmetric NAT) the node reports an endpoint-dependent mapping.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { netnsAvailable } from "../helpers/netns";
import { BINARY, eventually, freePort, type NodeHandle, ROOT, startNode } from "../helpers/node-process";
import { coturnAvailable, type StunServerHandle, startCoturn } from "../helpers/stun-server";

const TAG = `agst${(process.pid % 10000).toString(36)}`;
const NS = { inner: `${TAG}-in`, router: `${TAG}-rt`, outer: `${TAG}-out` };
const INNER_IP = "10.213.90.2";
const ROUTER_INNER_IP = "10.213.90.1";
const ROUTER_OUTER_IP = "10.213.91.1";
const OUTER_IP = "10.213.91.2";
const available = netnsAvailable() && coturnAvailable();

function sh(argv: string[], check = true): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString() + r.stderr.toString();
  if (check && r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (${r.exitCode}): ${out}`);
  return out;
}
const inNs = (ns: string, ...argv: string[]) => sh(["ip", "netns", "exec", ns, ...argv]);

function teardown(): void {
  for (const ns of Object.values(NS)) sh(["ip", "netns", "del", ns], false);
}

function masquerade(random: boolean): void {
  sh(["ip", "netns", "exec", NS.router, "nft", "delete", "table", "ip", "agora_nat"], false);
  inNs(NS.router, "nft", "add", "table", "ip", "agora_nat");
  inNs(NS.router, "nft", "add chain ip agora_nat post { type nat hook postrouting priority srcnat; }");
  inNs(NS.router, "nft", `add rule ip agora_nat post oifname "${TAG}ro" masquerade${random ? " random" : ""}`);
}

const servers: StunServerHandle[] = [];
const nodes: NodeHandle[] = [];

beforeAll(async () => {
  if (!available) return;
  teardown();
  for (const ns of Object.values(NS)) sh(["ip", "netns", "add", ns]);
  sh(["ip", "link", "add", `${TAG}i`, "netns", NS.inner, "type", "veth", "peer", "name", `${TAG}ri`, "netns", NS.router]);
  sh(["ip", "link", "add", `${TAG}o`, "netns", NS.outer, "type", "veth", "peer", "name", `${TAG}ro`, "netns", NS.router]);
  for (const [ns, dev, ip] of [
    [NS.inner, `${TAG}i`, INNER_IP],
    [NS.router, `${TAG}ri`, ROUTER_INNER_IP],
    [NS.router, `${TAG}ro`, ROUTER_OUTER_IP],
    [NS.outer, `${TAG}o`, OUTER_IP],
  ] as const) {
    sh(["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", dev]);
    sh(["ip", "-n", ns, "link", "set", dev, "up"]);
  }
  for (const ns of Object.values(NS)) sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  // inner knows only its router; outer has no route back to inner: only the masquerade makes answers return.
  sh(["ip", "-n", NS.inner, "route", "add", "default", "via", ROUTER_INNER_IP]);
  inNs(NS.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
  masquerade(false);
  const exec = ["ip", "netns", "exec", NS.outer];
  servers.push(await startCoturn({ host: OUTER_IP, port: 3478, exec }), await startCoturn({ host: OUTER_IP, port: 3479, exec }));
}, 60_000);

afterAll(async () => {
  for (const n of nodes) n.cleanup();
  await Promise.all(servers.map((s) => s.stop()));
  teardown();
});

type StunReport = {
  local_port: number;
  public_address: string | null;
  public_port: number | null;
  mapping: string;
  servers: { ok: boolean; address: string | null }[];
};

async function statusInNs(node: NodeHandle): Promise<StunReport | undefined> {
  const p = Bun.spawn(["ip", "netns", "exec", NS.inner, BINARY, "status", "--endpoint", node.dashboardUrl, "--json"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) return undefined;
  return (JSON.parse(out) as { stun: StunReport | null }).stun ?? undefined;
}

async function nodeInInner(): Promise<NodeHandle> {
  // P2P (TCP and the UDP socket) on every interface of inner; dashboard and metrics on inner's loopback.
  const n = await startNode({
    exec: ["ip", "netns", "exec", NS.inner],
    waitHealthy: false,
    args: ["--listen-addr", "0.0.0.0"],
    env: { AGORA_NETWORK_STUN_SERVERS: servers.map((s) => s.label).join(",") },
  });
  nodes.push(n);
  return n;
}

describe.skipIf(!available)("STUN behind nftables masquerade", () => {
  test("a STUN client in inner learns the router's outer address, not its own", async () => {
    const port = await freePort();
    const out = inNs(
      NS.inner,
      process.execPath,
      join(ROOT, "test", "stun", "fixtures", "probe.ts"),
      String(port),
      ...servers.map((s) => s.label),
    );
    const r = JSON.parse(out.trim().split("\n").pop()!) as StunReport;
    expect(r.servers.map((s) => s.ok)).toEqual([true, true]);
    expect(r.public_address).toBe(ROUTER_OUTER_IP);
    expect(r.public_address).not.toBe(INNER_IP);
    expect(r.mapping).toBe("endpoint-independent");
    expect(r.local_port).toBe(port);
  }, 40_000);

  test("the node in inner learns the outer address of its UDP socket on the P2P port's number", async () => {
    const n = await nodeInInner();
    const stun = await eventually(
      async () => {
        const s = await statusInNs(n);
        return s?.servers.every((x) => x.ok) ? s : undefined;
      },
      30_000,
      "the node's STUN result through the NAT",
    );
    expect(stun).toMatchObject({ local_port: n.p2pPort, public_address: ROUTER_OUTER_IP, mapping: "endpoint-independent" });
    expect(stun.public_port).toBeGreaterThan(0);
  }, 60_000);

  test("with `masquerade random` (a new port per destination) the mapping is endpoint-dependent", async () => {
    masquerade(true);
    const n = await nodeInInner();
    const stun = await eventually(
      async () => {
        const s = await statusInNs(n);
        return s?.servers.every((x) => x.ok) ? s : undefined;
      },
      30_000,
      "the node's STUN result through the random-port NAT",
    );
    expect(stun.public_address).toBe(ROUTER_OUTER_IP);
    expect(stun.mapping).toBe("endpoint-dependent");
  }, 60_000);
});
