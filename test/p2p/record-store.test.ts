/**
 * The DHT record store on its own, on an injected clock: expiry (never served, then swept), the per-signer and
 * total bounds, rollback and seq-conflict refusals, the node's own record, and provider bounds.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { Record as DhtRecord } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Key } from "interface-datastore";
import { base32 } from "multiformats/bases/base32";
import { Registry } from "prom-client";
import {
  advertisementKey,
  encodeAdvertisement,
  type RejectReason,
  signAdvertisement,
  type UnsignedAdvertisement,
} from "../../src/p2p/advertisement";
import { DHT_DATASTORE_PREFIX } from "../../src/p2p/dht";
import { createDhtRecordStore, type DhtRecordStore, type DhtRecordStoreLimits } from "../../src/p2p/record-store";
import { hostileAdvertisement, metricValue } from "./helpers";

const T0 = 1_800_000_000;

function recordKey(dhtKey: string): Key {
  return new Key(`${DHT_DATASTORE_PREFIX}/record/${base32.baseEncode(new TextEncoder().encode(dhtKey))}`, false);
}

interface Signer {
  key: PrivateKey;
  id: string;
}

async function signer(): Promise<Signer> {
  const key = await generateKeyPair("Ed25519");
  return { key, id: peerIdFromPrivateKey(key).toString() };
}

async function advert(
  s: Signer,
  over: Partial<UnsignedAdvertisement>,
): Promise<{ key: Key; dhtKey: string; value: Uint8Array; stored: Uint8Array }> {
  const u = hostileAdvertisement(s.id, { last_seen: T0, seq: 1, ttl_seconds: 60, ...over });
  const value = encodeAdvertisement(await signAdvertisement(u, s.key));
  const dhtKey = advertisementKey(u.region, s.id);
  return { key: recordKey(dhtKey), dhtKey, value, stored: new DhtRecord(new TextEncoder().encode(dhtKey), value, new Date()).serialize() };
}

function harness(limits: Partial<DhtRecordStoreLimits> = {}, self = "12D3KooWself", ownSeq = 0) {
  const clock = { now: T0 };
  const rejected: RejectReason[] = [];
  const registry = new Registry();
  const store = createDhtRecordStore({
    prefix: DHT_DATASTORE_PREFIX,
    selfPeerId: self,
    ownSeq: () => ownSeq,
    limits: { sweepIntervalMs: 3_600_000, ...limits },
    onReject: (r) => rejected.push(r),
    registry,
    now: () => clock.now,
  });
  store.start();
  return { store, clock, rejected, registry };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { reason?: string }).reason ?? String(err);
  }
  return "stored";
}

async function served(store: DhtRecordStore, key: Key): Promise<Uint8Array | null> {
  try {
    return DhtRecord.deserialize(await store.get(key)).value;
  } catch (err) {
    expect((err as Error).name).toBe("NotFoundError");
    return null;
  }
}

describe("expiry", () => {
  test("a record past last_seen + ttl is never served and the sweep deletes it", async () => {
    const { store, clock, registry } = harness();
    const s = await signer();
    const short = await advert(s, { region: "r-short", ttl_seconds: 10 });
    const long = await advert(s, { region: "r-long", ttl_seconds: 100 });
    await store.put(short.key, short.stored);
    await store.put(long.key, long.stored);
    expect(store.sizes().record).toBe(2);

    clock.now = T0 + 10; // last_seen + ttl exactly: still valid
    expect(await served(store, short.key)).not.toBeNull();
    clock.now = T0 + 10.001;
    // not served even before any sweep ran
    expect(await store.has(short.key)).toBe(false);
    expect(await served(store, short.key)).toBeNull();
    expect(await served(store, long.key)).not.toBeNull();

    // The sweep takes what nobody asked for.
    const other = await advert(await signer(), { region: "r-other", ttl_seconds: 20 });
    await store.put(other.key, other.stored);
    clock.now = T0 + 50;
    expect(store.sweep()).toBe(1);
    expect(store.sizes().record).toBe(1);
    const left = [];
    for await (const e of store.query({ prefix: `${DHT_DATASTORE_PREFIX}/record` })) left.push(e.key.toString());
    expect(left).toEqual([long.key.toString()]);
    clock.now = T0 + 101;
    expect(store.sweep()).toBe(1);
    expect(store.sizes().record).toBe(0);
    expect(await metricValue(registry, "agora_dht_store_evictions_total", { kind: "record", reason: "expired" })).toBe(3);
    store.stop();
  });

  test("the sweep runs on its own every sweepIntervalMs", async () => {
    const { store, clock } = harness({ sweepIntervalMs: 20 });
    const a = await advert(await signer(), { ttl_seconds: 1 });
    await store.put(a.key, a.stored);
    clock.now = T0 + 2;
    const end = Date.now() + 5_000;
    while (store.sizes().record > 0 && Date.now() < end) await Bun.sleep(10);
    expect(store.sizes().record).toBe(0);
    store.stop();
  });

  test("an expired record is refused", async () => {
    const { store, clock, rejected } = harness();
    const a = await advert(await signer(), { ttl_seconds: 5 });
    clock.now = T0 + 6;
    expect(await refusal(store.put(a.key, a.stored))).toBe("stale");
    expect(rejected).toEqual(["stale"]);
  });
});

describe("bounds", () => {
  test("one signer keeps at most maxRecordsPerSigner records, the freshest", async () => {
    const { store, rejected, registry } = harness({ maxRecordsPerSigner: 4 });
    const s = await signer();
    const recs = [];
    for (let i = 0; i < 10; i++) recs.push(await advert(s, { region: `made-up-${i}`, last_seen: T0 + i }));
    for (const r of recs) await store.put(r.key, r.stored);
    expect(store.sizes().record).toBe(4);
    for (const [i, r] of recs.entries()) expect((await served(store, r.key)) !== null).toBe(i >= 6);
    expect(await metricValue(registry, "agora_dht_store_evictions_total", { kind: "record", reason: "signer_quota" })).toBe(6);
    // a staler one than all it holds is refused outright
    const old = await advert(s, { region: "made-up-old", last_seen: T0 - 1 });
    expect(await refusal(store.put(old.key, old.stored))).toBe("signer_quota");
    expect(rejected).toEqual(["signer_quota"]);
    expect(await served(store, old.key)).toBeNull();
    expect(store.sizes().record).toBe(4);
  });

  test("puts that interleave (several streams at once) leave nothing stored beyond the bounds", async () => {
    const { store } = harness({ maxRecordsPerSigner: 4 });
    const s = await signer();
    const recs = [];
    for (let i = 0; i < 40; i++) recs.push(await advert(s, { region: `made-up-${i}`, last_seen: T0 + i }));
    await Promise.all(recs.map((r) => store.put(r.key, r.stored).catch(() => undefined)));
    expect(store.sizes().record).toBe(4);
    const held = [];
    for await (const e of store.query({ prefix: `${DHT_DATASTORE_PREFIX}/record` })) held.push(e.key.toString());
    expect(held.sort()).toEqual(
      recs
        .slice(-4)
        .map((r) => r.key.toString())
        .sort(),
    );
  });

  test("in total at most maxRecords, the stalest go first", async () => {
    const { store, rejected, registry } = harness({ maxRecords: 5 });
    const recs = [];
    for (let i = 0; i < 8; i++) recs.push(await advert(await signer(), { last_seen: T0 + i }));
    // put out of order: the bound keeps the 5 freshest whatever the arrival order
    for (const i of [3, 0, 7, 1, 6, 2, 5, 4]) await store.put(recs[i]!.key, recs[i]!.stored).catch(() => undefined);
    expect(store.sizes().record).toBe(5);
    for (const [i, r] of recs.entries()) expect((await served(store, r.key)) !== null).toBe(i >= 3);
    expect(await metricValue(registry, "agora_dht_store_evictions_total", { kind: "record", reason: "store_full" })).toBe(3);
    // one staler than everything stored is refused, not stored
    expect(rejected).toEqual([]);
    expect(await refusal(store.put(recs[0]!.key, recs[0]!.stored))).toBe("store_full");
    expect(rejected).toEqual(["store_full"]);
    expect(await served(store, recs[0]!.key)).toBeNull();
  });

  test("this node's own record is exempt from the bounds", async () => {
    const me = await signer();
    const { store } = harness({ maxRecords: 2 }, me.id);
    const mine = await advert(me, { last_seen: T0 - 30 });
    await store.put(mine.key, mine.stored);
    for (let i = 0; i < 5; i++) {
      const r = await advert(await signer(), { last_seen: T0 + i });
      await store.put(r.key, r.stored);
    }
    expect(await served(store, mine.key)).not.toBeNull();
    // it counts towards the total, but the others make room
    expect(store.sizes().record).toBe(2);
  });

  test("only node advertisements are stored; other keys pass through untouched", async () => {
    const { store } = harness();
    const pk = new TextEncoder().encode("/pk/whatever");
    const k = new Key(`${DHT_DATASTORE_PREFIX}/record/${base32.baseEncode(pk)}`, false);
    expect(await refusal(store.put(k, new DhtRecord(pk, new Uint8Array([1]), new Date()).serialize()))).toBe("unsupported_key");
    await store.put(new Key("/peers/abc"), new Uint8Array([7]));
    expect(await store.get(new Key("/peers/abc"))).toEqual(new Uint8Array([7]));
  });
});

describe("one content per seq, never backwards", () => {
  test("a lower seq is superseded, an equal seq must be the same bytes", async () => {
    const { store, rejected } = harness();
    const s = await signer();
    const v5 = await advert(s, { seq: 5 });
    await store.put(v5.key, v5.stored);
    const v4 = await advert(s, { seq: 4, last_seen: T0 + 1 });
    expect(await refusal(store.put(v4.key, v4.stored))).toBe("superseded");
    const twin = await advert(s, { seq: 5, current_load: 7 });
    expect(await refusal(store.put(twin.key, twin.stored))).toBe("seq_conflict");
    expect(rejected).toEqual(["superseded", "seq_conflict"]);
    // the same bytes again (a refresh) and a higher seq are fine
    await store.put(v5.key, new DhtRecord(new TextEncoder().encode(v5.dhtKey), v5.value, new Date()).serialize());
    const v6 = await advert(s, { seq: 6 });
    await store.put(v6.key, v6.stored);
    expect(Buffer.from((await served(store, v6.key))!).equals(Buffer.from(v6.value))).toBe(true);
  });

  test("this node never stores a copy of its own record older than the seq it published", async () => {
    const me = await signer();
    const { store, rejected } = harness({}, me.id, 10);
    const old = await advert(me, { seq: 9 });
    expect(await refusal(store.put(old.key, old.stored))).toBe("superseded");
    expect(rejected).toEqual(["superseded"]);
    const cur = await advert(me, { seq: 10 });
    await store.put(cur.key, cur.stored);
    // another peer's old copy would have been fine (nothing stored for it yet)
    const other = await signer();
    const theirs = await advert(other, { seq: 1 });
    await store.put(theirs.key, theirs.stored);
  });
});

describe("provider records", () => {
  const pkey = (cid: string, peer: string) => new Key(`${DHT_DATASTORE_PREFIX}/provider/${cid}/${peer}`);
  test("at most maxProvidersPerPeer per providing peer and maxProviders in total, oldest written first", async () => {
    const { store, registry } = harness({ maxProvidersPerPeer: 3, maxProviders: 5 }, "self");
    for (let i = 0; i < 10; i++) await store.put(pkey(`cid${i}`, "evil"), new Uint8Array([1]));
    expect(store.sizes().provider).toBe(3);
    const left = [];
    for await (const k of store.queryKeys({ prefix: `${DHT_DATASTORE_PREFIX}/provider` })) left.push(k.toString());
    expect(left.sort()).toEqual(["cid7", "cid8", "cid9"].map((c) => pkey(c, "evil").toString()));
    // a refresh of an old entry makes it the newest
    await store.put(pkey("cid7", "evil"), new Uint8Array([2]));
    await store.put(pkey("cidA", "evil"), new Uint8Array([1]));
    expect(await store.has(pkey("cid7", "evil"))).toBe(true);
    expect(await store.has(pkey("cid8", "evil"))).toBe(false);
    // total bound; the node's own entries never go
    await store.put(pkey("cidS", "self"), new Uint8Array([1]));
    for (const p of ["p1", "p2", "p3"]) await store.put(pkey("cidX", p), new Uint8Array([1]));
    expect(store.sizes().provider).toBe(5);
    expect(await store.has(pkey("cidS", "self"))).toBe(true);
    expect(await metricValue(registry, "agora_dht_store_evictions_total", { kind: "provider", reason: "signer_quota" })).toBe(8);
    expect(await metricValue(registry, "agora_dht_store_evictions_total", { kind: "provider", reason: "store_full" })).toBe(2);
    // kad-dht's own cleanup deletes through the store and the index follows
    await store.delete(pkey("cidS", "self"));
    expect(store.sizes().provider).toBe(4);
  });
});
