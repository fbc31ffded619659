/**
 * Room records on their own: codec and canonical bytes, every refusal of the DHT validator with its reason
 * counted in agora_rooms_records_rejected_total, the selector's order (deterministic whatever the input order),
 * and the DHT record store: per-host bound, replacement only by a better claim, expiry on an injected clock.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { Record as DhtRecord } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Key } from "interface-datastore";
import { base32 } from "multiformats/bases/base32";
import { Registry } from "prom-client";
import type { RejectReason } from "../../src/p2p/advertisement";
import { canonicalJson } from "../../src/p2p/canonical";
import { DHT_DATASTORE_PREFIX } from "../../src/p2p/dht";
import { createDhtRecordStore } from "../../src/p2p/record-store";
import { ROOM_REJECTED_METRIC, RoomMetrics } from "../../src/p2p/room-metrics";
import {
  compareRoomRecords,
  encodeRoomRecord,
  MAX_ROOM_RECORD_BYTES,
  type RoomRecord,
  roomRecordKey,
  roomTieBreak,
  selectRoomRecord,
  signRoomRecord,
  type UnsignedRoomRecord,
  verifyRoomRecord,
} from "../../src/p2p/room-record";
import { createRecordValidation } from "../../src/p2p/validator";

const T0 = 1_800_000_000;

interface Signer {
  key: PrivateKey;
  id: string;
}

async function signer(): Promise<Signer> {
  const key = await generateKeyPair("Ed25519");
  return { key, id: peerIdFromPrivateKey(key).toString() };
}

function unsigned(host: string, over: Partial<UnsignedRoomRecord> = {}): UnsignedRoomRecord {
  return {
    room: "standup",
    region: "eu-west",
    host,
    addrs: ["/ip4/127.0.0.1/tcp/7001"],
    participants: 2,
    epoch: 1,
    seq: 1,
    last_seen: T0,
    ttl_seconds: 90,
    status: "active",
    open: true,
    ...over,
  };
}

async function signed(s: Signer, over: Partial<UnsignedRoomRecord> = {}): Promise<{ rec: RoomRecord; bytes: Uint8Array }> {
  const rec = await signRoomRecord(unsigned(s.id, over), s.key);
  return { rec, bytes: encodeRoomRecord(rec) };
}

const KEY = roomRecordKey("standup");

async function reasonOf(p: unknown): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { reason?: string }).reason ?? `not a rejection: ${String(err)}`;
  }
  return "accepted";
}

describe("room record codec", () => {
  test("canonical bytes: signed, encoded and verified round trip; the key names the room", async () => {
    const s = await signer();
    const { rec, bytes } = await signed(s, {
      status: "handing-over",
      successor: (await signer()).id,
      revocations: [{ id: "ab01", until: 5 }],
    });
    expect(new TextDecoder().decode(bytes)).toBe(canonicalJson(rec));
    const back = await verifyRoomRecord(KEY, bytes, { now: T0 });
    expect(back).toEqual(rec);
    expect(KEY).toBe("/agora/rooms/standup");
  });
});

describe("validator refusals, each counted by reason", () => {
  test("forged, stale, future, oversized, bad fields, not canonical, wrong key, lower epoch, lost tie-break", async () => {
    const registry = new Registry();
    const roomMetrics = new RoomMetrics(registry);
    let now = T0;
    const v = createRecordValidation({ registry, roomMetrics, now: () => now });
    const validate = (key: string, value: Uint8Array) => v.validators.agora!(new TextEncoder().encode(key), value);
    const host = await signer();
    const other = await signer();

    // Forged: signed by another key than the host it names.
    const forged = await signRoomRecord(unsigned(host.id), other.key);
    expect(await reasonOf(validate(KEY, encodeRoomRecord(forged)))).toBe("bad_signature");
    // Stale: authentic but past last_seen + ttl.
    expect(await reasonOf(validate(KEY, (await signed(host, { last_seen: T0 - 100, ttl_seconds: 90 })).bytes))).toBe("stale");
    expect(await reasonOf(validate(KEY, (await signed(host, { last_seen: T0 + 100 })).bytes))).toBe("future");
    // Oversized: padded past the bound with an unknown member (still signed).
    const big = await signRoomRecord({ ...unsigned(host.id), pad: "x".repeat(MAX_ROOM_RECORD_BYTES) } as UnsignedRoomRecord, host.key);
    expect(await reasonOf(validate(KEY, encodeRoomRecord(big)))).toBe("oversized");
    // Fields.
    for (const bad of [
      { epoch: 2 ** 32 },
      { epoch: -1 },
      { participants: 1.5 },
      { status: "gone" },
      { status: "handing-over" }, // no successor
      { successor: other.id }, // successor while active
      { status: "handing-over", successor: host.id }, // successor = host
      { open: "yes" },
      { region: "EU" },
      { addrs: ["not-a-multiaddr"] },
      { revocations: [{ id: "XYZ", until: 1 }] },
      { revocations: Array.from({ length: 65 }, (_, i) => ({ id: i.toString(16), until: 1 })) },
      { revocations: [{ id: "ab", until: 1, extra: 1 }] },
      { ttl_seconds: 0 },
    ] as Partial<UnsignedRoomRecord>[]) {
      const r = await signRoomRecord({ ...unsigned(host.id), ...bad } as UnsignedRoomRecord, host.key);
      expect(`${JSON.stringify(bad)}: ${await reasonOf(validate(KEY, encodeRoomRecord(r)))}`).toBe(`${JSON.stringify(bad)}: invalid_field`);
    }
    // Not canonical: same content, another spelling.
    const good = await signed(host);
    const spaced = new TextEncoder().encode(JSON.stringify(good.rec, null, 1));
    expect(await reasonOf(validate(KEY, spaced))).toBe("not_canonical");
    // The record of another room under this key; a key that is no room key.
    expect(await reasonOf(validate(roomRecordKey("other"), good.bytes))).toBe("key_mismatch");
    expect(await reasonOf(validate("/agora/rooms/bad key", good.bytes))).toBe("bad_key");
    expect(await reasonOf(validate(KEY, new TextEncoder().encode("{")))).toBe("malformed");

    // A live claim at epoch 3 makes a lower epoch from another host a refusal, and a tie lost too.
    expect(await reasonOf(validate(KEY, (await signed(host, { epoch: 3, seq: 10 })).bytes))).toBe("accepted");
    expect(await reasonOf(validate(KEY, (await signed(other, { epoch: 2, seq: 99 })).bytes))).toBe("lower_epoch");
    const hostWinsTie = roomTieBreak("standup", host.id) < roomTieBreak("standup", other.id);
    expect(await reasonOf(validate(KEY, (await signed(other, { epoch: 3, seq: 99 })).bytes))).toBe(hostWinsTie ? "claim_lost" : "accepted");
    // The same host rolling back its own seq.
    if (hostWinsTie) expect(await reasonOf(validate(KEY, (await signed(host, { epoch: 3, seq: 9 })).bytes))).toBe("superseded");
    // A higher epoch is accepted from anyone; after the live claim expires, any valid claim may replace it.
    expect(await reasonOf(validate(KEY, (await signed(other, { epoch: 4, seq: 100 })).bytes))).toBe("accepted");
    now = T0 + 200;
    expect(await reasonOf(validate(KEY, (await signed(host, { epoch: 1, seq: 11, last_seen: now })).bytes))).toBe("accepted");

    for (const r of [
      "bad_signature",
      "stale",
      "future",
      "oversized",
      "not_canonical",
      "key_mismatch",
      "bad_key",
      "malformed",
      "lower_epoch",
    ] as RejectReason[])
      expect(`${r}: ${roomMetrics.rejectedCount(r)}`).toBe(`${r}: 1`);
    expect(roomMetrics.rejectedCount("invalid_field")).toBe(14);
    const text = await registry.metrics();
    expect(text).toContain(`${ROOM_REJECTED_METRIC}{reason="bad_signature"} 1`);
    expect(text).toContain(`${ROOM_REJECTED_METRIC}{reason="lower_epoch"} 1`);
    // Room refusals are not counted as advertisement refusals.
    expect(v.rejected("bad_signature")).toBe(0);
    v.dispose();
    roomMetrics.dispose();
  });
});

describe("selector", () => {
  test("higher epoch, then the same host's higher seq, then the lower tie-break; independent of input order", async () => {
    const hosts = await Promise.all([signer(), signer(), signer()]);
    const recs = [
      await signed(hosts[0]!, { epoch: 1, seq: 5 }),
      await signed(hosts[1]!, { epoch: 2, seq: 1 }),
      await signed(hosts[2]!, { epoch: 2, seq: 7, status: "handing-over", successor: hosts[0]!.id }),
      await signed(hosts[1]!, { epoch: 2, seq: 2 }),
    ];
    const tieWinner = [hosts[1]!, hosts[2]!].sort((a, b) => (roomTieBreak("standup", a.id) < roomTieBreak("standup", b.id) ? -1 : 1))[0]!;
    const expected = tieWinner === hosts[1] ? recs[3]!.rec : recs[2]!.rec;
    const orders = [
      [0, 1, 2, 3],
      [3, 2, 1, 0],
      [2, 0, 3, 1],
      [1, 3, 0, 2],
    ];
    for (const o of orders) {
      const list = o.map((i) => recs[i]!.bytes);
      expect(JSON.parse(new TextDecoder().decode(list[selectRoomRecord(list)]!))).toEqual(expected);
      // and the validation's selector for the namespace dispatches room keys to it
      const v = createRecordValidation({ now: () => T0 });
      expect(v.selectors.agora!(new TextEncoder().encode(KEY), list)).toBe(selectRoomRecord(list));
    }
    expect(compareRoomRecords(recs[1]!.rec, recs[0]!.rec)).toBeGreaterThan(0);
    expect(compareRoomRecords(recs[3]!.rec, recs[1]!.rec)).toBeGreaterThan(0);
    expect(compareRoomRecords(recs[0]!.rec, recs[0]!.rec)).toBe(0);
  });
});

function dsKey(dhtKey: string): Key {
  return new Key(`${DHT_DATASTORE_PREFIX}/record/${base32.baseEncode(new TextEncoder().encode(dhtKey))}`, false);
}
const stored = (dhtKey: string, value: Uint8Array) => new DhtRecord(new TextEncoder().encode(dhtKey), value, new Date()).serialize();

describe("record store", () => {
  function harness(maxRoomRecordsPerSigner = 3, maxRecords = 100) {
    const clock = { now: T0 };
    const rejected: RejectReason[] = [];
    const store = createDhtRecordStore({
      prefix: DHT_DATASTORE_PREFIX,
      selfPeerId: "12D3KooWself",
      limits: { sweepIntervalMs: 3_600_000, maxRoomRecordsPerSigner, maxRecords },
      onReject: () => rejected.push("malformed"),
      onRoomReject: (r) => rejected.push(r),
      now: () => clock.now,
    });
    store.start();
    return { store, clock, rejected };
  }

  test("a live record is replaced only by a better claim; an expired one by anything, and is never served", async () => {
    const { store, clock, rejected } = harness();
    const a = await signer();
    const b = await signer();
    const k = dsKey(KEY);
    await store.put(k, stored(KEY, (await signed(a, { epoch: 5, seq: 1 })).bytes));
    await expect(store.put(k, stored(KEY, (await signed(b, { epoch: 4, seq: 9 })).bytes))).rejects.toThrow(/lower_epoch/);
    await expect(store.put(k, stored(KEY, (await signed(a, { epoch: 5, seq: 0 })).bytes))).rejects.toThrow(/superseded/);
    await expect(store.put(k, stored(KEY, (await signed(a, { epoch: 5, seq: 1, participants: 9 })).bytes))).rejects.toThrow(/seq_conflict/);
    const aWins = roomTieBreak("standup", a.id) < roomTieBreak("standup", b.id);
    const tie = store.put(k, stored(KEY, (await signed(b, { epoch: 5, seq: 9 })).bytes));
    if (aWins) await expect(tie).rejects.toThrow(/claim_lost/);
    else await tie;
    expect(rejected).toEqual(["lower_epoch", "superseded", "seq_conflict", ...(aWins ? ["claim_lost" as const] : [])]);
    await store.put(k, stored(KEY, (await signed(b, { epoch: 6, seq: 10 })).bytes));
    clock.now = T0 + 91;
    expect(await store.has(k)).toBe(false);
    await expect(store.put(k, stored(KEY, (await signed(a, { epoch: 1, seq: 2 })).bytes))).rejects.toThrow(/stale/);
    await store.put(k, stored(KEY, (await signed(a, { epoch: 1, seq: 2, last_seen: clock.now })).bytes));
    expect(await store.has(k)).toBe(true);
    store.stop();
  });

  test("at most maxRoomRecordsPerSigner rooms per host: the stalest goes, a staler newcomer is refused", async () => {
    const { store, rejected } = harness(3);
    const a = await signer();
    const put = async (room: string, lastSeen: number) => {
      const key = roomRecordKey(room);
      await store.put(dsKey(key), stored(key, (await signed(a, { room, last_seen: lastSeen })).bytes));
    };
    await put("r1", T0 - 3);
    await put("r2", T0 - 2);
    await put("r3", T0 - 1);
    await put("r4", T0);
    expect(await store.has(dsKey(roomRecordKey("r1")))).toBe(false);
    for (const r of ["r2", "r3", "r4"]) expect(await store.has(dsKey(roomRecordKey(r)))).toBe(true);
    await expect(put("r5", T0 - 10)).rejects.toThrow(/signer_quota/);
    expect(rejected).toEqual(["signer_quota"]);
    expect(store.sizes().record).toBe(3);
    // Another host is not limited by the first one's quota.
    const b = await signer();
    const key = roomRecordKey("r9");
    await store.put(dsKey(key), stored(key, (await signed(b, { room: "r9" })).bytes));
    expect(store.sizes().record).toBe(4);
    store.stop();
  });

  test("sweep deletes expired room records on the injected clock", async () => {
    const { store, clock } = harness();
    const a = await signer();
    await store.put(dsKey(KEY), stored(KEY, (await signed(a, { ttl_seconds: 30 })).bytes));
    clock.now = T0 + 29;
    expect(store.sweep()).toBe(0);
    clock.now = T0 + 31;
    expect(store.sweep()).toBe(1);
    expect(store.sizes().record).toBe(0);
    store.stop();
  });
});
