/**
 * Real libp2p nodes on 127.0.0.1 (ephemeral ports): DHT put/get through the validator, discovery and its
 * filters, heartbeat expiry, draining, a hostile DHT peer, bootstrap redial and rejoin from known peers.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p } from "@libp2p/interface";
import type { KadDHT, SingleKadDHT } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey, peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { silentLogger } from "../../src/log";
import { createDiscoveryClient, discoverOnce, type NetworkNode } from "../../src/p2p";
import {
  advertisementKey,
  encodeAdvertisement,
  type NodeAdvertisement,
  signAdvertisement,
  type UnsignedAdvertisement,
  verifyAdvertisementRecord,
} from "../../src/p2p/advertisement";
import type { ConnectionLimits } from "../../src/p2p/connection-limits";
import { namespaceCid } from "../../src/p2p/namespaces";
import {
  cleanupDirs,
  createHostilePeer,
  hostileAdvertisement,
  metricValue,
  nonCanonicalVariants,
  startTestNode as startNode,
  stopAll,
  type TestNode,
  type TestNodeOptions,
  waitFor,
} from "./helpers";
import { RawDhtSession } from "./raw-dht";

// Several nodes on 2 noisy cores; every wait inside is bounded on its own.
setDefaultTimeout(60_000);

/**
 * 2 s heartbeats here, not the helpers' 0.5 s: a record is valid for 3 heartbeats, and 1.5 s is less than
 * a DHT put can take on a busy machine, so records arrived stale and were refused (nothing ever published).
 */
const HEARTBEAT_S = 2;
const startTestNode = (o: TestNodeOptions = {}) => startNode({ heartbeat: HEARTBEAT_S, ...o });

const enc = (s: string) => new TextEncoder().encode(s);
const dhtOf = (n: NetworkNode) => (n.libp2p as Libp2p<{ dht: KadDHT }>).services.dht;
const ids = (r: { advertisement: NodeAdvertisement }[]) => r.map((x) => x.advertisement.peer_id).sort();

/** All valid values a DHT get returns for a key (kad-dht has already validated each). */
async function dhtValues(dht: KadDHT, key: string, timeoutMs = 5_000): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  try {
    for await (const ev of dht.get(enc(key), { signal: AbortSignal.timeout(timeoutMs) })) {
      if (ev.name === "VALUE") out.push(ev.value);
    }
  } catch {
    /* NotFound / timeout */
  }
  return out;
}

type Query = Parameters<NetworkNode["discover"]>[0];

/**
 * Discovery on a busy machine can miss an answer that came too late (the DHT query has a deadline): ask
 * again, bounded, until it returns exactly `want`, and give back the last answer for the assertions.
 */
async function discoverExactly(n: TestNode, q: Query, want: string[]): Promise<Awaited<ReturnType<NetworkNode["discover"]>>> {
  let got: Awaited<ReturnType<NetworkNode["discover"]>> = [];
  const expected = JSON.stringify([...want].sort());
  await waitFor(
    `discover ${JSON.stringify(q)}`,
    async () => {
      got = await n.node.discover(q);
      return JSON.stringify(ids(got)) === expected;
    },
    20_000,
  ).catch(() => {});
  return got;
}

async function published(...nodes: TestNode[]): Promise<void> {
  await waitFor("advertisements published", () => nodes.every((n) => n.node.status().last_published_at !== null), 20_000);
}

describe("loopback Agora network", () => {
  let boot: TestNode;
  let a: TestNode;
  let b: TestNode;
  let us: TestNode;
  let relay: TestNode;

  beforeAll(async () => {
    boot = await startTestNode({ mode: "bootstrap" });
    const bs = [boot.addr];
    [a, b, us, relay] = await Promise.all([
      startTestNode({ region: "eu-west", group: "alpha", bootstrap: bs, load: { current_load: 10 } }),
      startTestNode({ region: "eu-west", group: "beta", bootstrap: bs, load: { current_load: 60, cpu_percent: 85 } }),
      startTestNode({ region: "us-east", bootstrap: bs }),
      startTestNode({ mode: "relay", region: "eu-west", bootstrap: bs }),
    ]);
    await published(a, b, us, relay);
  });

  afterAll(async () => {
    await stopAll([a, b, us, relay, boot]);
  });

  test("bootstrap node is a DHT server without an advertisement; others are connected to it", async () => {
    const s = boot.node.status();
    expect(s.advertisement).toBeNull();
    expect(s.dht).toMatchObject({ protocol: "/agora/kad/1.0.0", mode: "server" });
    await waitFor("bootstrap routing table", () => boot.node.status().dht.routing_table_size >= 4);
    for (const n of [a, b, us, relay]) {
      expect(n.node.status().bootstrap).toEqual({ configured: 1, connected: 1 });
      expect(n.node.status().dht.mode).toBe("server");
    }
    expect(boot.node.peers().map((p) => p.peer_id)).toEqual(expect.arrayContaining([a.node.peerId, b.node.peerId]));
    const p = a.node.peers().find((x) => x.peer_id === boot.node.peerId)!;
    expect(p).toMatchObject({ direction: "outbound", relayed: false });
    expect(p.addrs[0]).toStartWith("/ip4/127.0.0.1/tcp/");
  });

  test("the published record is in the DHT, signed, and carries the node's figures", async () => {
    const key = advertisementKey("eu-west", a.node.peerId);
    // Reputation counts successful publishes; the very first records of a node whose first puts failed (a
    // busy machine) carry 0, so wait for one published after a success.
    const rec = await waitFor(
      "a record with a reputation, reachable from another node",
      async () => {
        const v = await dhtValues(dhtOf(us.node), key);
        const r = v.length > 0 ? await verifyAdvertisementRecord(key, v[0]!) : null;
        return r && r.reputation > 0 ? r : null;
      },
      30_000,
    );
    expect(rec).toMatchObject({
      peer_id: a.node.peerId,
      region: "eu-west",
      group: "alpha",
      capabilities: ["mixer"],
      current_load: 10,
      max_clients: 100,
      status: "online",
      version: "0.1.0-test",
    });
    expect(rec.ttl_seconds).toBe(3 * HEARTBEAT_S);
    expect(rec.listen_addr.length).toBeGreaterThan(0);
    expect(rec.listen_addr[0]).toStartWith("/ip4/127.0.0.1/tcp/");
    expect(rec.reputation).toBeGreaterThan(0);
    expect(rec.reputation).toBeLessThanOrEqual(1);
  });

  test("raw DHT put/get between nodes goes through the validator", async () => {
    // A valid record written by one node through the DHT API is readable from another.
    const key = await generateKeyPair("Ed25519");
    const id = peerIdFromPrivateKey(key).toString();
    const u: UnsignedAdvertisement = {
      peer_id: id,
      version: "x",
      region: "test-zone",
      capabilities: ["mixer"],
      max_clients: 1,
      current_load: 0,
      uptime_seconds: 0,
      reputation: 0.5,
      last_seen: Date.now() / 1000,
      listen_addr: [],
      group: "default",
      labels: [],
      status: "online",
      cpu_percent: 0,
      mem_percent: 0,
      seq: 1,
      ttl_seconds: 60,
    };
    const good = encodeAdvertisement(await signAdvertisement(u, key));
    let stored = 0;
    for await (const ev of dhtOf(a.node).put(enc(advertisementKey("test-zone", id)), good, { signal: AbortSignal.timeout(10_000) })) {
      if (ev.name === "PEER_RESPONSE" && ev.messageName === "PUT_VALUE") stored++;
    }
    expect(stored).toBeGreaterThan(0);
    const got = await dhtValues(dhtOf(b.node), advertisementKey("test-zone", id));
    expect(got.length).toBe(1);
    expect(Buffer.from(got[0]!).equals(Buffer.from(good))).toBe(true);
    // A key outside the record's region: every server refuses the PUT.
    let accepted = 0;
    for await (const ev of dhtOf(a.node).put(enc(advertisementKey("other-zone", id)), good, { signal: AbortSignal.timeout(10_000) })) {
      if (ev.name === "PEER_RESPONSE" && ev.messageName === "PUT_VALUE") accepted++;
    }
    expect(accepted).toBe(0);
    expect(await dhtValues(dhtOf(b.node), advertisementKey("other-zone", id))).toEqual([]);
  });

  test("discovery by region returns exactly that region's publishing nodes, ranked, with latency", async () => {
    const eu = await discoverExactly(us, { region: "eu-west" }, [a.node.peerId, b.node.peerId, relay.node.peerId]);
    expect(ids(eu)).toEqual([a.node.peerId, b.node.peerId, relay.node.peerId].sort());
    for (const r of eu) {
      expect(r.latency_ms).not.toBeNull();
      expect(r.reasons[0]).toMatch(/^latency \d+ ms/);
      expect(r.reasons.some((x) => x.startsWith("load "))).toBe(true);
    }
    // b is loaded (60 %) with CPU 85 %: it must rank after a.
    expect(eu.findIndex((r) => r.advertisement.peer_id === a.node.peerId)).toBeLessThan(
      eu.findIndex((r) => r.advertisement.peer_id === b.node.peerId),
    );
    expect(eu.find((r) => r.advertisement.peer_id === b.node.peerId)!.reasons).toContain("cpu 85% (+0.5)");
    expect(ids(await discoverExactly(a, { region: "us-east" }, [us.node.peerId]))).toEqual([us.node.peerId]);
    expect(await a.node.discover({ region: "ap-south", timeoutMs: 2_000 })).toEqual([]);
  });

  test("concurrent discoveries on one node all see the others reachable (several pings to one peer at once)", async () => {
    // A node runs discoveries at once (API queries, placement's mixer refresh, alive checks): with libp2p's
    // default of one outbound ping stream per connection the second ping failed at once and ranked the peer
    // "unreachable" (behind fakes, in a flood).
    const pinger = (us.node.libp2p as Libp2p<{ ping: { ping(p: unknown, o?: { signal?: AbortSignal }): Promise<number> } }>).services.ping;
    const target = peerIdFromString(a.node.peerId);
    const rtts = await Promise.all(Array.from({ length: 6 }, () => pinger.ping(target, { signal: AbortSignal.timeout(20_000) })));
    expect(rtts.every((ms) => Number.isFinite(ms) && ms >= 0)).toBe(true);
    const runs = await Promise.all(Array.from({ length: 4 }, () => us.node.discover({ region: "eu-west", timeoutMs: 20_000 })));
    for (const r of runs) {
      expect(ids(r)).toEqual([a.node.peerId, b.node.peerId, relay.node.peerId].sort());
      expect(r.every((n) => n.latency_ms !== null)).toBe(true);
    }
  });

  test("capability and group filters are exact", async () => {
    const exactly = async (q: Query, want: string[]) => expect(ids(await discoverExactly(us, q, want))).toEqual([...want].sort());
    await exactly({ capability: "relay" }, [relay.node.peerId]);
    await exactly({ region: "eu-west", capability: "mixer" }, [a.node.peerId, b.node.peerId]);
    await exactly({ region: "eu-west", group: "beta" }, [b.node.peerId]);
    // no filter at all: every publishing node but the asking one; includeSelf adds it
    await exactly({}, [a.node.peerId, b.node.peerId, relay.node.peerId]);
    await exactly({ includeSelf: true }, [a.node.peerId, b.node.peerId, relay.node.peerId, us.node.peerId]);
    // limit 1: the single best of the region's publishing nodes (two mixers and the relay), whichever ranks first
    const best = ids(await us.node.discover({ region: "eu-west", limit: 1 }));
    expect(best).toHaveLength(1);
    expect([a.node.peerId, b.node.peerId, relay.node.peerId]).toContain(best[0]!);
    await expect(us.node.discover({ region: "EU WEST" })).rejects.toMatchObject({ code: "BAD_REQUEST" });
  });

  test("the transient discover client (DHT client mode) finds the same nodes", async () => {
    const want = [a.node.peerId, b.node.peerId, relay.node.peerId].sort();
    // a fresh client on a busy machine may not hear every answer within one query's deadline: ask again
    let found: Awaited<ReturnType<typeof discoverOnce>> = [];
    await waitFor(
      "the transient client finds the three",
      async () => {
        found = await discoverOnce({ bootstrap: [boot.addr], query: { region: "eu-west" }, logger: silentLogger(), timeoutMs: 10_000 });
        return JSON.stringify(ids(found)) === JSON.stringify(want);
      },
      30_000,
    ).catch(() => {});
    expect(ids(found)).toEqual(want);
    expect(found.every((f) => f.latency_ms !== null)).toBe(true);
    await expect(
      discoverOnce({
        bootstrap: ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWKDStZZgYnA7uRggHUq1EZyxtknJX2q8AziLsnaTSswaf"],
        query: {},
        logger: silentLogger(),
        timeoutMs: 3_000,
      }),
    ).rejects.toMatchObject({ code: "P2P" });
  });

  test("a discovery client is handed out only once its DHT routing table has the bootstrap peer", async () => {
    // The dial resolves before identify says the peer serves the DHT; a query started in between had
    // nobody to ask and returned nothing. Several clients at once make the gap likely.
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => createDiscoveryClient({ bootstrap: [boot.addr], logger: silentLogger() })),
    );
    try {
      for (const c of clients) expect((c.libp2p.services.dht as unknown as SingleKadDHT).routingTable.size).toBeGreaterThan(0);
      const found = await Promise.all(clients.map((c) => c.discover({ region: "eu-west" })));
      for (const f of found) expect(ids(f)).toEqual([a.node.peerId, b.node.peerId, relay.node.peerId].sort());
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
    }
  });

  test("a draining node is no longer returned; once its drain is cancelled it is again", async () => {
    const d = await startTestNode({ region: "drain-zone", bootstrap: [boot.addr] });
    try {
      await published(d);
      await waitFor("draining node found", async () => (await a.node.discover({ region: "drain-zone" })).length === 1);
      await d.node.announceDraining();
      expect(d.node.status().advertisement?.status).toBe("draining");
      // stays draining across heartbeats: two more records published, both draining
      const seq = d.node.status().advertisement!.seq;
      await waitFor("two heartbeats after draining", () => d.node.status().advertisement!.seq >= seq + 2, 6 * HEARTBEAT_S * 1000);
      expect(d.node.status().advertisement?.status).toBe("draining");
      await waitFor("draining node dropped", async () => (await a.node.discover({ region: "drain-zone" })).length === 0);
      // The drain is cancelled: advertised at once as not draining, and listed again (a region's next drain
      // hands its rooms to the nodes discovery lists).
      await d.node.announceDrainCancelled();
      expect(d.node.status().advertisement?.status).not.toBe("draining");
      await waitFor("listed again after the cancelled drain", async () => (await a.node.discover({ region: "drain-zone" })).length === 1);
    } finally {
      await d.node.stop();
    }
  });

  test("a stopped node drops out once 3 heartbeat intervals pass without a publish", async () => {
    const gone = await startTestNode({ region: "gone-zone", bootstrap: [boot.addr] });
    await published(gone);
    await waitFor("node found", async () => (await us.node.discover({ region: "gone-zone" })).length === 1);
    const key = advertisementKey("gone-zone", gone.node.peerId);
    const last = gone.node.status().advertisement!;
    await gone.node.stop();
    // The DHT copies outlive the node; they become invalid at last_seen + ttl (3 heartbeats). Wait for that
    // instant, then for the effect (bounded): readers refuse the expired copies.
    const expiry = (last.last_seen + last.ttl_seconds) * 1000;
    await waitFor("the record's expiry", () => Date.now() > expiry, expiry - Date.now() + 5_000);
    await waitFor(
      "expired record no longer discovered",
      async () => (await us.node.discover({ region: "gone-zone", timeoutMs: 3_000 })).length === 0,
      20_000,
    );
    await waitFor("expired record refused by DHT readers", async () => (await dhtValues(dhtOf(a.node), key)).length === 0, 20_000);
    expect(await dhtValues(dhtOf(a.node), key)).toEqual([]);
  });

  test("a hostile DHT peer's forged, oversized and stale records are refused by honest nodes", async () => {
    const evil = await createHostilePeer();
    const [evilKey, evilId] = [evil.key, evil.peerId];
    const honest = [boot, a, b, us, relay];
    const before = async (reason: string) =>
      (await Promise.all(honest.map((n) => metricValue(n.registry, "agora_dht_records_rejected_total", { reason })))).reduce(
        (s, v) => s! + (v ?? 0),
        0,
      )!;
    const base = { bad_signature: await before("bad_signature"), oversized: await before("oversized"), stale: await before("stale") };
    try {
      for (const n of honest) await evil.libp2p.dial(multiaddr(n.addr));
      await waitFor(
        "hostile routing table",
        () => (evil.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size >= 3,
      );
      const putCount = evil.put;
      const now = Date.now() / 1000;
      const u = (peer: string, over: Partial<UnsignedAdvertisement>) =>
        hostileAdvertisement(peer, { group: "alpha", last_seen: now, ...over });
      // 1. forged: claims to be node a (huge seq, zero load), signed with the attacker's key
      const aKey = advertisementKey("eu-west", a.node.peerId);
      expect(await putCount(aKey, encodeAdvertisement(await signAdvertisement(u(a.node.peerId, {}), evilKey)))).toBe(0);
      // 2. oversized, under the attacker's own key and properly signed
      const bigKey = advertisementKey("eu-west", evilId);
      const big = await signAdvertisement(u(evilId, { labels: Array.from({ length: 32 }, (_, i) => `l${i}-${"x".repeat(120)}`) }), evilKey);
      expect(await putCount(bigKey, encodeAdvertisement(big))).toBe(0);
      // 3. stale, under the attacker's own key and properly signed
      const stale = await signAdvertisement(u(evilId, { region: "stale-zone", last_seen: now - 3600 }), evilKey);
      expect(await putCount(advertisementKey("stale-zone", evilId), encodeAdvertisement(stale))).toBe(0);

      // Honest readers still get a's own record (its latest heartbeat's, so wait for a read that has it),
      // and nothing for the attacker's keys.
      const got = await waitFor(
        "a's own record readable",
        () => dhtValues(dhtOf(us.node), aKey).then((v) => (v.length > 0 ? v : null)),
        20_000,
      );
      expect(got.length).toBe(1);
      const rec = await verifyAdvertisementRecord(aKey, got[0]!);
      expect(rec.version).toBe("0.1.0-test");
      expect(rec.seq).toBeLessThan(Number.MAX_SAFE_INTEGER);
      expect(await dhtValues(dhtOf(us.node), bigKey)).toEqual([]);
      expect(await dhtValues(dhtOf(us.node), advertisementKey("stale-zone", evilId))).toEqual([]);

      expect(await before("bad_signature")).toBeGreaterThan(base.bad_signature);
      expect(await before("oversized")).toBeGreaterThan(base.oversized);
      expect(await before("stale")).toBeGreaterThan(base.stale);
      // and every honest node is still serving (a discovery on a busy machine can miss a slow answer: retry)
      const honestIds = [a.node.peerId, b.node.peerId, relay.node.peerId].sort();
      let seen: string[] = [];
      await waitFor(
        "every honest node discovered",
        async () => {
          seen = ids(await us.node.discover({ region: "eu-west" }));
          return seen.length === 3;
        },
        20_000,
      ).catch(() => {});
      expect(seen).toEqual(honestIds);
    } finally {
      await evil.stop();
    }
  });

  test("stored record bytes cannot be rewritten: non-canonical variants at the same seq are refused by every server", async () => {
    const evil = await createHostilePeer();
    const victim = await generateKeyPair("Ed25519");
    const victimId = peerIdFromPrivateKey(victim).toString();
    const honest = [boot, a, b];
    const notCanonical = async () =>
      (
        await Promise.all(honest.map((n) => metricValue(n.registry, "agora_dht_records_rejected_total", { reason: "not_canonical" })))
      ).reduce((x, y) => x! + (y ?? 0), 0)!;
    const base = await notCanonical();
    try {
      const key = advertisementKey("eu-west", victimId);
      const canonical = encodeAdvertisement(await signAdvertisement(hostileAdvertisement(victimId, { ttl_seconds: 600, seq: 7 }), victim));
      const sessions = honest.map((n) => new RawDhtSession(evil.libp2p, multiaddr(n.addr)));
      for (const s of sessions) expect(await s.put(key, canonical)).toBe(true);
      const variants = nonCanonicalVariants(new TextDecoder().decode(canonical));
      for (const [what, text] of Object.entries(variants)) {
        for (const s of sessions) expect([what, await s.put(key, enc(text))]).toEqual([what, false]);
      }
      // every server still serves the bytes the signer produced
      for (const s of sessions) expect(Buffer.from((await s.get(key))!).equals(Buffer.from(canonical))).toBe(true);
      expect((await notCanonical()) - base).toBe(Object.keys(variants).length * honest.length);
      for (const s of sessions) s.close();
    } finally {
      await evil.stop();
    }
  });

  test("a node never stores a copy of its own record older than the one it published", async () => {
    const own = await startTestNode({ region: "own-zone", bootstrap: [boot.addr], heartbeat: 30 });
    const evil = await createHostilePeer();
    try {
      await published(own);
      const key = advertisementKey("own-zone", own.node.peerId);
      const session = new RawDhtSession(evil.libp2p, multiaddr(own.addr));
      const older = await waitFor("own record on its own server", () => session.get(key));
      const olderSeq = (await verifyAdvertisementRecord(key, older)).seq;
      await own.node.publishNow();
      const newer = own.node.status().advertisement!;
      expect(newer.seq).toBeGreaterThan(olderSeq);
      // The older copy is still fresh (ttl 90 s) and properly signed: only its age is wrong.
      expect(await session.put(key, older)).toBe(false);
      expect((await verifyAdvertisementRecord(key, (await session.get(key))!)).seq).toBe(newer.seq);
      expect(await metricValue(own.registry, "agora_dht_records_rejected_total", { reason: "superseded" })).toBeGreaterThanOrEqual(1);
      session.close();
    } finally {
      await evil.stop();
      await own.node.stop();
    }
  });

  test("one peer key cannot fill a server: at most 4 records per signer, providers bounded per peer", async () => {
    const evil = await createHostilePeer();
    try {
      const session = new RawDhtSession(evil.libp2p, multiaddr(boot.addr));
      const stored = async (kind: string) => (await metricValue(boot.registry, "agora_dht_store_entries", { kind }))!;
      const recordsBefore = await stored("record");
      const t = Date.now() / 1000;
      const keys: string[] = [];
      for (let i = 0; i < 40; i++) {
        const region = `made-up-${i}`;
        keys.push(advertisementKey(region, evil.peerId));
        const value = encodeAdvertisement(
          await signAdvertisement(hostileAdvertisement(evil.peerId, { region, last_seen: t + i / 100, ttl_seconds: 600 }), evil.key),
        );
        await session.put(keys[i]!, value);
      }
      expect((await stored("record")) - recordsBefore).toBeLessThanOrEqual(4);
      // only the 4 freshest are served
      const servedNow = [];
      for (const k of keys) servedNow.push((await session.get(k)) !== null);
      expect(servedNow.filter(Boolean).length).toBe(4);
      expect(servedNow.slice(36)).toEqual([true, true, true, true]);
      expect(
        await metricValue(boot.registry, "agora_dht_store_evictions_total", { kind: "record", reason: "signer_quota" }),
      ).toBeGreaterThanOrEqual(36);

      // provider records: one key announcing itself for 100 made-up namespaces
      const providersBefore = await stored("provider");
      const self = peerIdFromPrivateKey(evil.key).toMultihash().bytes;
      for (let i = 0; i < 100; i++)
        await session.addProvider((await namespaceCid(`/agora/region/made-up-${i}`)).bytes, self, [
          multiaddr("/ip4/127.0.0.1/tcp/9").bytes,
        ]);
      await waitFor(
        "provider flood processed",
        async () =>
          ((await metricValue(boot.registry, "agora_dht_store_evictions_total", { kind: "provider", reason: "signer_quota" })) ?? 0) >=
          100 - 32,
      );
      expect((await stored("provider")) - providersBefore).toBeLessThanOrEqual(32);
      session.close();
    } finally {
      await evil.stop();
    }
  });

  test("the sweep purges expired records on the node's clock, and they are never served after expiry", async () => {
    const clock = { now: Date.now() / 1000 };
    const n = await startTestNode({ mode: "bootstrap", internal: { dhtStore: { now: () => clock.now, sweepIntervalMs: 50 } } });
    const evil = await createHostilePeer();
    try {
      const session = new RawDhtSession(evil.libp2p, multiaddr(n.addr));
      const key = advertisementKey("sweep-zone", evil.peerId);
      const rec = await signAdvertisement(
        hostileAdvertisement(evil.peerId, { region: "sweep-zone", last_seen: clock.now, ttl_seconds: 60 }),
        evil.key,
      );
      expect(await session.put(key, encodeAdvertisement(rec))).toBe(true);
      expect(await session.get(key)).not.toBeNull();
      expect(await metricValue(n.registry, "agora_dht_store_entries", { kind: "record" })).toBe(1);
      clock.now += 61; // the wall clock has not moved: only the node's store clock says "expired"
      await waitFor("swept", async () => (await metricValue(n.registry, "agora_dht_store_entries", { kind: "record" })) === 0, 10_000, 20);
      expect(await session.get(key)).toBeNull();
      expect(await metricValue(n.registry, "agora_dht_store_evictions_total", { kind: "record", reason: "expired" })).toBe(1);
      session.close();
    } finally {
      await evil.stop();
      await n.node.stop();
    }
  });

  test("connection metrics and live max_connections", async () => {
    expect(await metricValue(a.registry, "agora_connections_total", { type: "outgoing" })).toBeGreaterThan(0);
    expect(await metricValue(boot.registry, "agora_connections_total", { type: "incoming" })).toBeGreaterThan(0);
    expect(await metricValue(boot.registry, "agora_connections_active", { type: "incoming" })).toBeGreaterThanOrEqual(4);
    const cm = (a.node.libp2p as Libp2p<{ connectionLimits: ConnectionLimits }>).services.connectionLimits;
    expect(cm.getMaxConnections()).toBe(100);
    a.node.setMaxConnections(42);
    expect(cm.getMaxConnections()).toBe(42);
    expect(() => a.node.setMaxConnections(0)).toThrow();
    a.node.setMaxConnections(100);
  });

  test("status reports the network view", () => {
    const s = relay.node.status();
    expect(s.peer_id).toBe(relay.node.peerId);
    expect(s.listen_addrs[0]).toContain(`/p2p/${relay.node.peerId}`);
    expect(["private", "unknown"]).toContain(s.reachability);
    expect(s.upnp).toBe(false);
    expect(s.advertisement?.capabilities).toEqual(["relay"]);
    expect(s.last_published_at).toBeNumber();
    expect(s.relay).toMatchObject({ enabled: true });
    expect(a.node.status().relay).toBeNull();
  });
});

describe("staying attached", () => {
  afterAll(() => cleanupDirs());

  test("bootstrap peers are redialed with backoff after they restart", async () => {
    const bootKey = await generateKeyPair("Ed25519");
    let boot = await startTestNode({ mode: "bootstrap", privateKey: bootKey });
    const port = Number(boot.addr.split("/")[4]);
    // Every dial to the bootstrap's port goes through the gater: count them instead of sleeping.
    let dials = 0;
    const countDials = {
      denyDialMultiaddr: (ma: Multiaddr) => {
        if (ma.toString().includes(`/tcp/${port}`)) dials++;
        return false;
      },
    };
    const n = await startTestNode({ bootstrap: [boot.addr], internal: { connectionGater: countDials } });
    try {
      await waitFor("connected to bootstrap", () => n.node.status().bootstrap.connected === 1);
      await boot.node.stop();
      await waitFor("bootstrap gone", () => n.node.status().bootstrap.connected === 0);
      const before = dials;
      await waitFor("a few failed redials", () => dials >= before + 2);
      boot = await startTestNode({ mode: "bootstrap", privateKey: bootKey, internal: { listenPort: port } });
      // redial backoff is capped at 1 s; the bound is for a busy machine
      await waitFor("reconnected without help", () => n.node.status().bootstrap.connected === 1, 30_000);
    } finally {
      await stopAll([n, boot]);
    }
  });

  test("a restarted node rejoins from known-peers.json without a bootstrap list", async () => {
    const boot = await startTestNode({ mode: "bootstrap" });
    const other = await startTestNode({ region: "kp-zone", bootstrap: [boot.addr] });
    const first = await startTestNode({ region: "kp-home", bootstrap: [boot.addr] });
    const dataDir = first.dataDir;
    const key = first.privateKey;
    let again: TestNode | undefined;
    try {
      const file = join(dataDir, "known-peers.json");
      await waitFor("known peers saved", () => existsSync(file) && readFileSync(file, "utf8").includes(boot.node.peerId));
      const saved = JSON.parse(readFileSync(file, "utf8")) as { version: number; peers: { peer_id: string; addrs: string[] }[] };
      expect(saved.version).toBe(1);
      expect(saved.peers.find((p) => p.peer_id === boot.node.peerId)!.addrs[0]).toStartWith("/ip4/127.0.0.1/tcp/");
      const seqBefore = first.node.status().advertisement!.seq;
      await first.node.stop();
      again = await startTestNode({ region: "kp-home", dataDir, privateKey: key, bootstrap: [] });
      expect(again.node.status().bootstrap.configured).toBe(0);
      await waitFor("rejoined", () => again!.node.peers().length > 0);
      await published(again);
      expect(again.node.status().advertisement!.seq).toBeGreaterThan(seqBefore);
      await waitFor("discovers after rejoin", async () => (await again!.node.discover({ region: "kp-zone" })).length === 1);
    } finally {
      await stopAll([again, other, first, boot]);
    }
  });

  test("a port in use is a LISTEN_FAILED error", async () => {
    const n = await startTestNode({});
    try {
      const port = Number(n.addr.split("/")[4]);
      await expect(startTestNode({ internal: { listenPort: port } })).rejects.toMatchObject({ code: "LISTEN_FAILED" });
    } finally {
      await n.node.stop();
    }
  });
});
