/**
 * The advertisement publisher service with fake components on virtual time: serves its record, publishes
 * at start and every interval, stays draining once told, and stop aborts the put in flight and cancels.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { defaultConfig } from "../../src/config/schema";
import { silentLogger } from "../../src/log";
import { type AdvertPublisherComponents, advertPublisher } from "../../src/p2p/advert-publisher";
import { advertisementKey, verifyAdvertisementRecord } from "../../src/p2p/advertisement";
import { PROTOCOL_ADVERT } from "../../src/p2p/namespaces";
import { cleanupDirs, tempDir } from "./helpers";
import { until, useVirtualTime } from "./virtual-time";

afterAll(() => cleanupDirs());

interface Put {
  key: string;
  value: Uint8Array;
  signal?: AbortSignal;
  /** virtual time the put started */
  at: number;
}

async function fakes(o: { hang?: boolean; stored?: boolean; putMs?: number } = {}) {
  const privateKey = await generateKeyPair("Ed25519");
  const peerId = peerIdFromPrivateKey(privateKey);
  const puts: Put[] = [];
  const handlers = new Map<string, unknown>();
  const addrs = [multiaddr(`/ip4/127.0.0.1/tcp/4001/p2p/${peerId}`), multiaddr(`/ip4/10.0.0.7/tcp/4001/p2p/${peerId}`)];
  const events = new EventTarget();
  const components = {
    peerId,
    privateKey,
    events,
    addressManager: { getAddresses: () => [...addrs], getAddressesWithMetadata: () => [] },
    registrar: {
      handle: async (protocol: string, handler: unknown) => void handlers.set(protocol, handler),
      unhandle: async (protocol: string) => void handlers.delete(protocol),
    },
    dht: {
      async *put(key: Uint8Array, value: Uint8Array, opts: { signal?: AbortSignal } = {}) {
        puts.push({ key: new TextDecoder().decode(key), value, signal: opts.signal, at: Date.now() });
        if (o.putMs)
          await new Promise<void>((r) => {
            setTimeout(r, o.putMs);
            opts.signal?.addEventListener("abort", () => r(), { once: true });
          });
        if (o.hang)
          await new Promise<void>((_, reject) => opts.signal?.addEventListener("abort", () => reject(opts.signal!.reason), { once: true }));
        if (o.stored !== false) yield { name: "PEER_RESPONSE", messageName: "PUT_VALUE", record: { value } };
      },
    },
  } as unknown as AdvertPublisherComponents;
  const config = defaultConfig();
  config.node.region = "eu-west";
  config.network.heartbeat_interval = 1;
  const dataDir = tempDir();
  const init = {
    config,
    logger: silentLogger(),
    dataDir,
    version: "0.1.0-test",
    capabilities: ["mixer", "Not A Token"],
    intervalMs: 1_000,
  };
  const load = { current_load: 3, max_clients: 50, cpu_percent: 12.34, mem_percent: 20, status: "online" as const };
  const svc = advertPublisher({ ...init, load: () => load })(components);
  return { svc, puts, handlers, peerId: peerId.toString(), dataDir, addrs, events };
}

describe("advertisement publisher service", () => {
  let clock: ReturnType<typeof useVirtualTime>;
  afterEach(() => clock?.restore());

  test("serves /agora/advert/1.0.0 while started, publishes at start and then every interval", async () => {
    clock = useVirtualTime();
    const { svc, puts, handlers, peerId, dataDir } = await fakes();
    await expect(svc.publishNow()).rejects.toMatchObject({ code: "P2P" }); // not started
    await svc.start();
    expect(handlers.has(PROTOCOL_ADVERT)).toBe(true);
    expect(puts.length).toBe(0); // nothing before libp2p's afterStart
    svc.afterStart();
    await until("first publish", () => svc.lastPublishedAt() !== null);
    const key = advertisementKey("eu-west", peerId);
    expect(puts.map((p) => p.key)).toEqual([key]);
    const rec = await verifyAdvertisementRecord(key, puts[0]!.value);
    expect(rec).toMatchObject({
      peer_id: peerId,
      region: "eu-west",
      capabilities: ["mixer"],
      current_load: 3,
      max_clients: 50,
      cpu_percent: 12.3,
      status: "online",
    });
    // loopback addresses are left out when there is anything else
    expect(rec.listen_addr).toEqual(["/ip4/10.0.0.7/tcp/4001"]);
    expect(svc.current()).toEqual(rec);
    expect(existsSync(join(dataDir, "advertisement-seq.json"))).toBe(true);
    await clock.advance(999);
    expect(puts.length).toBe(1);
    await clock.advance(1);
    await until("second publish", () => puts.length === 2);
    await clock.advance(1_000);
    await until("third publish", () => puts.length === 3);
    const seqs = await Promise.all(puts.map(async (p) => (await verifyAdvertisementRecord(key, p.value)).seq));
    expect(seqs[0]! < seqs[1]! && seqs[1]! < seqs[2]!).toBe(true);
    svc.beforeStop();
    await svc.stop();
    expect(handlers.has(PROTOCOL_ADVERT)).toBe(false);
    await expect(svc.publishNow()).rejects.toMatchObject({ code: "P2P" });
  });

  test("draining sticks across heartbeats", async () => {
    clock = useVirtualTime();
    const { svc, puts } = await fakes();
    await svc.start();
    svc.afterStart();
    await until("first publish", () => puts.length === 1);
    await svc.announceDraining();
    expect(svc.current()?.status).toBe("draining");
    await clock.advance(1_000);
    await until("next heartbeat", () => puts.length === 3);
    expect(svc.current()?.status).toBe("draining");
    await svc.stop();
  });

  test("a cancelled drain is advertised at once, and later heartbeats no longer say draining", async () => {
    clock = useVirtualTime();
    const { svc, puts, peerId } = await fakes();
    await svc.start();
    svc.afterStart();
    await until("first publish", () => puts.length === 1);
    await svc.announceDraining();
    expect(svc.current()?.status).toBe("draining");
    const before = puts.length;
    await svc.announceDrainCancelled();
    // published right away, without waiting for the heartbeat
    expect(puts.length).toBe(before + 1);
    const key = advertisementKey("eu-west", peerId);
    expect((await verifyAdvertisementRecord(key, puts.at(-1)!.value)).status).toBe("online");
    await clock.advance(1_000);
    await until("next heartbeat", () => puts.length === before + 2);
    expect((await verifyAdvertisementRecord(key, puts.at(-1)!.value)).status).toBe("online");
    // nothing to cancel: no extra publish
    await svc.announceDrainCancelled();
    expect(puts.length).toBe(before + 2);
    await svc.stop();
  });

  test("a put no DHT peer stores is not a publish", async () => {
    clock = useVirtualTime();
    const { svc, puts } = await fakes({ stored: false });
    await svc.start();
    svc.afterStart();
    await until("first put", () => puts.length === 1);
    await svc.publishNow();
    expect(svc.lastPublishedAt()).toBeNull();
    expect(svc.current()).not.toBeNull(); // still served directly
    // availability half of reputation: every beat so far failed
    await svc.publishNow();
    expect(svc.current()!.reputation).toBe(0);
    await svc.stop();
  });

  test("a slow put does not stretch the heartbeat: the held beat runs as soon as it ends, and never two at once", async () => {
    clock = useVirtualTime();
    const { svc, puts } = await fakes({ putMs: 1_500 }); // interval 1 s
    await svc.start();
    svc.afterStart();
    await until("first put", () => puts.length === 1);
    const t0 = puts[0]!.at;
    await clock.advance(1_000); // a beat while the put runs: held, not started
    expect(puts.length).toBe(1);
    await clock.advance(499);
    expect(puts.length).toBe(1);
    await clock.advance(1);
    await until("held beat", () => puts.length === 2);
    expect(puts[1]!.at - t0).toBe(1_500); // the period is max(interval, put), not put + interval
    await clock.advance(1_500);
    await until("third put", () => puts.length === 3);
    expect(puts[2]!.at - t0).toBe(3_000);
    svc.beforeStop();
    await svc.stop();
  });

  test("stop aborts the put in flight, waits for it, and cancels later heartbeats", async () => {
    clock = useVirtualTime();
    const { svc, puts } = await fakes({ hang: true });
    await svc.start();
    svc.afterStart();
    await until("put in flight", () => puts.length === 1);
    expect(puts[0]!.signal!.aborted).toBe(false);
    svc.beforeStop();
    expect(puts[0]!.signal!.aborted).toBe(true);
    await svc.stop();
    await clock.advance(10_000);
    expect(puts.length).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  test("a new own address (a listener that came up late) is advertised without waiting for the heartbeat, once", async () => {
    clock = useVirtualTime();
    // The first put hangs (no DHT peer answers yet): the new addresses must not wait for it.
    const { svc, puts, peerId, addrs, events } = await fakes({ hang: true });
    await svc.start();
    svc.afterStart();
    await until("first put under way", () => puts.length === 1);
    addrs.push(multiaddr(`/ip4/10.0.0.7/tcp/4002/ws/p2p/${peerId}`));
    // A burst of updates, as libp2p sends while its listeners come up: one publish after it settles.
    events.dispatchEvent(new CustomEvent("self:peer:update"));
    events.dispatchEvent(new CustomEvent("self:peer:update"));
    await clock.advance(300); // well inside the 1 s heartbeat
    await until("the republish", () => puts.length === 2);
    expect(puts[0]!.signal!.aborted).toBe(true);
    expect(svc.current()?.listen_addr).toContain("/ip4/10.0.0.7/tcp/4002/ws");
    const rec = await verifyAdvertisementRecord(advertisementKey("eu-west", peerId), puts[1]!.value);
    expect(rec.listen_addr).toContain("/ip4/10.0.0.7/tcp/4002/ws");
    // An update that changes nothing publishes nothing.
    events.dispatchEvent(new CustomEvent("self:peer:update"));
    await clock.advance(300);
    expect(puts.length).toBe(2);
    svc.beforeStop();
    await svc.stop();
    await clock.advance(3_000);
    expect(clock.pendingTimers()).toBe(0);
  });
});
