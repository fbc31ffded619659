/**
 * Integration with real processes of the compiled binary on 127.0.0.1: a bootstrap node, dedicated nodes in
 * two regions and a relay; a fresh `discover` client filtered by region finds exactly the right ones; a
 * SIGKILLed node drops out within 3 heartbeat intervals; a hostile peer's forged, oversized and stale
 * records are refused by the binary nodes; two peers that cannot dial each other exchange data through the
 * relay process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { advertisementKey, encodeAdvertisement, signAdvertisement } from "../../src/p2p";
import { type NodeHandle, runCli, startNode } from "../helpers/node-process";
import { sendBulk, serveBulk } from "../relay/bulk";
import { cleanupDirs, createHostilePeer, hostileAdvertisement, startTestNode, stopAll, type TestNode, waitFor } from "./helpers";

// 2 s: records live 3 heartbeats, and with 1 s (3 s records) a put on a busy machine could take so long
// that the copies readers hold expired between two publishes (nodes flickered out of discovery).
const HEARTBEAT_S = 2;
const procs: Record<string, NodeHandle> = {};
let bootAddr = "";

async function discover(args: string[]): Promise<string[]> {
  const r = await runCli(["discover", "--bootstrap", bootAddr, "--json", "--timeout", "5", ...args], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`discover ${args.join(" ")} failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { advertisement: { peer_id: string } }[]).map((n) => n.advertisement.peer_id).sort();
}

/** A CLI discovery, asked again (bounded) until it answers exactly `want`: one query on a busy machine can miss a late answer. */
async function discoverExactly(args: string[], want: string[]): Promise<string[]> {
  let got: string[] = [];
  const expected = JSON.stringify([...want].sort());
  await waitFor(
    `discover ${args.join(" ")}`,
    async () => {
      got = await discover(args);
      return JSON.stringify(got) === expected;
    },
    30_000,
    300,
  ).catch(() => {});
  return got;
}

async function metric(h: NodeHandle, name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(" ").pop()) : 0;
}

const node = (mode: string, region: string) =>
  startNode({ args: ["--mode", mode, "--region", region, "--heartbeat-interval", `${HEARTBEAT_S}s`, "--bootstrap", bootAddr] });

beforeAll(async () => {
  procs.boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  bootAddr = await procs.boot.multiaddr();
  [procs.a, procs.b, procs.u, procs.r] = await Promise.all([
    node("dedicated", "eu-west"),
    node("dedicated", "eu-west"),
    node("dedicated", "us-east"),
    node("relay", "eu-west"),
  ]);
}, 60_000);

afterAll(() => {
  for (const h of Object.values(procs)) h.cleanup();
  cleanupDirs();
});

describe("discovery across binary nodes", () => {
  test("a fresh client filtered by region and capability finds exactly the right nodes", async () => {
    const [a, b, u, r] = await Promise.all([procs.a!.peerId(), procs.b!.peerId(), procs.u!.peerId(), procs.r!.peerId()]);
    await waitFor("all advertisements", async () => (await discover(["--region", "eu-west"])).length === 3, 30_000, 300);
    expect(await discoverExactly(["--region", "eu-west"], [a, b, r])).toEqual([a, b, r].sort());
    expect(await discoverExactly(["--region", "eu-west", "--capability", "mixer"], [a, b])).toEqual([a, b].sort());
    expect(await discoverExactly(["--region", "us-east"], [u])).toEqual([u]);
    expect(await discoverExactly(["--capability", "relay"], [r])).toEqual([r]);
    expect(await discover(["--region", "ap-south"])).toEqual([]);
    // The human-readable form says why each node ranked where it did.
    const text = await runCli(["discover", "--bootstrap", bootAddr, "--region", "us-east"]);
    expect(text.stdout).toContain(u);
    expect(text.stdout).toMatch(/why: .*load 0\/100/);
  }, 150_000);

  test("a SIGKILLed node is not returned after 3 heartbeat intervals", async () => {
    const gone = await procs.a!.peerId();
    procs.a!.proc.kill("SIGKILL");
    await procs.a!.exited;
    // Its records expire 3 heartbeats after its last publish; wait (bounded) for readers to drop it rather
    // than sleeping that long and asserting once.
    const only = [await procs.b!.peerId()];
    let found: string[] = [];
    await waitFor(
      "the killed node dropped from discovery",
      async () => {
        found = await discover(["--region", "eu-west", "--capability", "mixer"]);
        return JSON.stringify(found) === JSON.stringify(only);
      },
      3 * HEARTBEAT_S * 1000 + 20_000,
    ).catch(() => {});
    expect(found).toEqual(only);
    const viaApi = async () =>
      (
        (await (await fetch(`${procs.u!.dashboardUrl}/api/discover?region=eu-west`)).json()) as { advertisement: { peer_id: string } }[]
      ).map((n) => n.advertisement.peer_id);
    await waitFor("the killed node dropped from the API", async () => !(await viaApi()).includes(gone), 20_000).catch(() => {});
    expect(await viaApi()).not.toContain(gone);
  }, 60_000);
});

describe("a hostile DHT peer against binary nodes", () => {
  test("forged, oversized and stale records are refused and counted; honest records survive", async () => {
    const evil = await createHostilePeer();
    const [evilKey, evilId] = [evil.key, evil.peerId];
    const honest = [procs.boot!, procs.b!, procs.u!, procs.r!];
    const rejected = async (reason: string) =>
      (await Promise.all(honest.map((h) => metric(h, "agora_dht_records_rejected_total", `reason="${reason}"`)))).reduce(
        (s, v) => s + v,
        0,
      );
    const base = { bad_signature: await rejected("bad_signature"), oversized: await rejected("oversized"), stale: await rejected("stale") };
    try {
      for (const h of honest) await evil.libp2p.dial(multiaddr(await h.multiaddr()));
      const put = evil.put;
      const now = Date.now() / 1000;
      const b = await procs.b!.peerId();
      expect(
        await put(advertisementKey("eu-west", b), encodeAdvertisement(await signAdvertisement(hostileAdvertisement(b), evilKey))),
      ).toBe(0);
      const big = hostileAdvertisement(evilId, { labels: Array.from({ length: 32 }, (_, i) => `l${i}-${"x".repeat(120)}`) });
      expect(await put(advertisementKey("eu-west", evilId), encodeAdvertisement(await signAdvertisement(big, evilKey)))).toBe(0);
      const stale = hostileAdvertisement(evilId, { last_seen: now - 3600 });
      expect(await put(advertisementKey("eu-west", evilId), encodeAdvertisement(await signAdvertisement(stale, evilKey)))).toBe(0);

      expect(await rejected("bad_signature")).toBeGreaterThan(base.bad_signature);
      expect(await rejected("oversized")).toBeGreaterThan(base.oversized);
      expect(await rejected("stale")).toBeGreaterThan(base.stale);
      // b is still found with its own record, and every node still serves.
      const r = await runCli(["discover", "--bootstrap", bootAddr, "--region", "eu-west", "--capability", "mixer", "--json"]);
      const found = JSON.parse(r.stdout) as { advertisement: { peer_id: string; version: string } }[];
      expect(found.map((n) => [n.advertisement.peer_id, n.advertisement.version])).toEqual([[b, "0.1.0"]]);
      for (const h of honest) expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
    } finally {
      await evil.stop();
    }
  }, 60_000);
});

describe("relay mode as a real process", () => {
  test("two peers that cannot dial each other exchange 2 MiB through the relay node", async () => {
    const relayAddr = await procs.r!.multiaddr();
    const relayTcp = relayAddr.split("/p2p/")[0]!;
    const viaRelayOnly = (ma: Multiaddr) => !(ma.toString() === relayTcp || ma.toString().startsWith(`${relayTcp}/`));
    let hidden: TestNode | undefined;
    let caller: TestNode | undefined;
    try {
      // No listener at all, and a gater that forbids any dial but to the relay: reachable only through it.
      hidden = await startTestNode({
        region: "nat-zone",
        bootstrap: [relayAddr],
        internal: { listenAddrs: [`${relayAddr}/p2p-circuit`], connectionGater: { denyDialMultiaddr: viaRelayOnly } },
      });
      await waitFor("relay reservation", () => hidden!.node.listenAddrs().some((a) => a.includes("/p2p-circuit")), 15_000);
      await serveBulk(hidden.node.libp2p);
      caller = await startTestNode({
        region: "caller-zone",
        bootstrap: [relayAddr],
        internal: { listenAddrs: [], connectionGater: { denyDialMultiaddr: viaRelayOnly } },
      });
      const bytesBefore = await metric(procs.r!, "agora_relay_bytes_total", "");
      const conn = await caller.node.libp2p.dial(multiaddr(`${relayAddr}/p2p-circuit/p2p/${hidden.node.peerId}`));
      expect(conn.remoteAddr.toString()).toContain("/p2p-circuit");
      const data = randomBytes(2 * 1024 * 1024);
      await sendBulk(conn, data);
      const text = await (await fetch(procs.r!.metricsUrl)).text();
      const relayed = Number(/^agora_relay_bytes_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
      expect(relayed - bytesBefore).toBeGreaterThanOrEqual(2 * 1024 * 1024);
      const status = (await (await fetch(`${procs.r!.dashboardUrl}/api/status`)).json()) as {
        network: { relay: { enabled: boolean; reservations: number } };
      };
      expect(status.network.relay.enabled).toBe(true);
      expect(status.network.relay.reservations).toBeGreaterThanOrEqual(1);
    } finally {
      await stopAll([hidden, caller]);
    }
  }, 60_000);
});
