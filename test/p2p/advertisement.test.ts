import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Registry } from "prom-client";
import {
  advertisementKey,
  encodeAdvertisement,
  MAX_RECORD_BYTES,
  type NodeAdvertisement,
  RecordRejectedError,
  type RejectReason,
  signAdvertisement,
  signingBytes,
  type UnsignedAdvertisement,
  verifyAdvertisementRecord,
} from "../../src/p2p/advertisement";
import { canonicalJson } from "../../src/p2p/canonical";
import { createRecordValidation } from "../../src/p2p/validator";
import { metricValue, nonCanonicalVariants } from "./helpers";

const NOW = 1_707_849_600;

function unsigned(peerId: string, over: Partial<UnsignedAdvertisement> = {}): UnsignedAdvertisement {
  return {
    peer_id: peerId,
    version: "0.1.0",
    region: "eu-west",
    capabilities: ["mixer"],
    max_clients: 100,
    current_load: 45,
    uptime_seconds: 2_592_000,
    reputation: 0.87,
    last_seen: NOW,
    listen_addr: ["/ip4/1.2.3.4/tcp/7001"],
    group: "default",
    labels: ["tier=premium"],
    status: "online",
    cpu_percent: 12.5,
    mem_percent: 40,
    seq: 1,
    ttl_seconds: 90,
    ...over,
  };
}

async function keyAndId(): Promise<{ key: PrivateKey; id: string }> {
  const key = await generateKeyPair("Ed25519");
  return { key, id: peerIdFromPrivateKey(key).toString() };
}

async function signed(key: PrivateKey, over: Partial<UnsignedAdvertisement> = {}): Promise<NodeAdvertisement> {
  return signAdvertisement(unsigned(peerIdFromPrivateKey(key).toString(), over), key);
}

/** Stored bytes of any object: canonical JSON, so that each test reaches the check it is about. */
const bytesOf = (o: unknown) => new TextEncoder().encode(typeof o === "string" ? o : canonicalJson(o));

async function rejection(p: Promise<unknown>): Promise<RejectReason> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(RecordRejectedError);
    expect((err as RecordRejectedError).code).toBe("RECORD_INVALID");
    return (err as RecordRejectedError).reason;
  }
  throw new Error("expected the record to be rejected, it was accepted");
}

describe("canonical JSON", () => {
  test("sorts keys recursively, no whitespace, independent of insertion order", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: "x" } })).toBe('{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}');
    expect(canonicalJson({ a: 1, b: 2 })).toBe(canonicalJson({ b: 2, a: 1 }));
  });
  test("numbers and strings as ECMAScript JSON (RFC 8785)", () => {
    expect(canonicalJson([1.5, 0.001, 1e21, -0, "é\n\u2028"])).toBe('[1.5,0.001,1e+21,0,"é\\n\u2028"]');
  });
  test("refuses values that have no JSON form", () => {
    expect(() => canonicalJson({ x: Number.NaN })).toThrow();
    expect(() => canonicalJson({ x: Infinity })).toThrow();
  });
});

describe("advertisement sign/verify", () => {
  test("a signed record verifies and round-trips through its stored bytes", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key);
    expect(rec.signature).toMatch(/^[A-Za-z0-9+/]{86}==$/);
    const bytes = encodeAdvertisement(rec);
    const back = await verifyAdvertisementRecord(advertisementKey("eu-west", id), bytes, { now: NOW + 1 });
    expect(back).toEqual(rec);
  });

  test("the signature covers every field but itself (changing any field breaks it)", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key);
    for (const [field, value] of Object.entries({
      current_load: 46,
      status: "draining",
      seq: 2,
      labels: [],
      listen_addr: ["/ip4/6.6.6.6/tcp/1"],
      reputation: 1,
    })) {
      const tampered = { ...rec, [field]: value };
      expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytesOf(tampered), { now: NOW }))).toBe(
        "bad_signature",
      );
    }
  });

  test("the signed bytes are domain-separated canonical JSON without the signature", async () => {
    const { key } = await keyAndId();
    const rec = await signed(key);
    const text = new TextDecoder().decode(signingBytes(rec as unknown as Record<string, unknown>));
    expect(text.startsWith("agora-node-advertisement/v1\n{")).toBe(true);
    expect(text).not.toContain("signature");
  });

  test("unknown extra fields are allowed when signed (forward compatibility) and rejected when added later", async () => {
    const { key, id } = await keyAndId();
    const withExtra = await signAdvertisement({ ...unsigned(id), future_field: "x" } as UnsignedAdvertisement, key);
    await verifyAdvertisementRecord(advertisementKey("eu-west", id), encodeAdvertisement(withExtra), { now: NOW });
    const rec = await signed(key);
    expect(
      await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytesOf({ ...rec, injected: 1 }), { now: NOW })),
    ).toBe("bad_signature");
  });
});

describe("canonical bytes only", () => {
  test("every non-canonical spelling of a validly signed record is refused as not_canonical, and counted", async () => {
    const { key, id } = await keyAndId();
    const canonical = new TextDecoder().decode(encodeAdvertisement(await signed(key)));
    const registry = new Registry();
    const v = createRecordValidation({ registry, now: () => NOW });
    const k = advertisementKey("eu-west", id);
    const variants = nonCanonicalVariants(canonical);
    for (const [what, text] of Object.entries(variants)) {
      expect(text).not.toBe(canonical);
      // same content: only the spelling differs
      expect(canonicalJson(JSON.parse(text))).toBe(canonical);
      expect([what, await rejection(v.verify(k, new TextEncoder().encode(text)))]).toEqual([what, "not_canonical"]);
    }
    expect(await metricValue(registry, "agora_dht_records_rejected_total", { reason: "not_canonical" })).toBe(Object.keys(variants).length);
    await v.verify(k, new TextEncoder().encode(canonical));
    v.dispose();
  });
});

describe("advertisement rejections", () => {
  test("forged: signed by another key for this peer's key", async () => {
    const honest = await keyAndId();
    const attacker = await keyAndId();
    // The attacker signs a record that claims the honest peer id.
    const forged = await signAdvertisement(unsigned(honest.id), attacker.key);
    expect(
      await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", honest.id), encodeAdvertisement(forged), { now: NOW })),
    ).toBe("bad_signature");
  });

  test("foreign: a valid record of one peer stored under another peer's key", async () => {
    const a = await keyAndId();
    const b = await keyAndId();
    const rec = await signed(a.key);
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", b.id), encodeAdvertisement(rec), { now: NOW }))).toBe(
      "key_mismatch",
    );
  });

  test("oversized (> 4 KiB) is refused before parsing", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key, { labels: Array.from({ length: 32 }, (_, i) => `label-${i}-${"x".repeat(110)}`) });
    const bytes = encodeAdvertisement(rec);
    expect(bytes.byteLength).toBeGreaterThan(MAX_RECORD_BYTES);
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytes, { now: NOW }))).toBe("oversized");
  });

  test("stale: last_seen + ttl in the past, by any margin", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key, { last_seen: NOW - 100, ttl_seconds: 90 });
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), encodeAdvertisement(rec), { now: NOW }))).toBe(
      "stale",
    );
    // exactly at the edge it is still valid
    await verifyAdvertisementRecord(advertisementKey("eu-west", id), encodeAdvertisement(rec), { now: NOW - 10 });
  });

  test("future: last_seen beyond the 30 s clock-skew allowance", async () => {
    const { key, id } = await keyAndId();
    const ok = await signed(key, { last_seen: NOW + 25 });
    await verifyAdvertisementRecord(advertisementKey("eu-west", id), encodeAdvertisement(ok), { now: NOW });
    const bad = await signed(key, { last_seen: NOW + 31 });
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), encodeAdvertisement(bad), { now: NOW }))).toBe(
      "future",
    );
  });

  test("wrong region: key region differs from the record's", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key, { region: "eu-west" });
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("us-east", id), encodeAdvertisement(rec), { now: NOW }))).toBe(
      "key_mismatch",
    );
  });

  test("malformed JSON, non-object JSON and invalid UTF-8", async () => {
    const { id } = await keyAndId();
    const k = advertisementKey("eu-west", id);
    expect(await rejection(verifyAdvertisementRecord(k, bytesOf('{"peer_id": "x",'), { now: NOW }))).toBe("malformed");
    expect(await rejection(verifyAdvertisementRecord(k, bytesOf("[1,2]"), { now: NOW }))).toBe("malformed");
    expect(await rejection(verifyAdvertisementRecord(k, new Uint8Array([0xff, 0xfe, 0x7b]), { now: NOW }))).toBe("malformed");
  });

  test("every missing field is refused", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key);
    for (const field of Object.keys(rec)) {
      const { [field]: _gone, ...rest } = rec as unknown as Record<string, unknown>;
      const reason = await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytesOf(rest), { now: NOW }));
      expect(reason).toBe("invalid_field");
    }
  });

  test("mistyped and out-of-range fields are refused", async () => {
    const { key, id } = await keyAndId();
    const rec = await signed(key);
    const cases: Record<string, unknown>[] = [
      { current_load: "45" },
      { current_load: 4.5 },
      { max_clients: -1 },
      { reputation: 1.2 },
      { cpu_percent: 101 },
      { status: "busy" },
      { capabilities: "mixer" },
      { capabilities: ["Mixer!"] },
      { listen_addr: ["not a multiaddr"] },
      { labels: [42] },
      { seq: 1.5 },
      { ttl_seconds: 0 },
      { ttl_seconds: 86_400 },
      { signature: 7 },
      { last_seen: "yesterday" },
    ];
    for (const c of cases) {
      const reason = await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytesOf({ ...rec, ...c }), { now: NOW }));
      expect({ case: c, reason }).toEqual({ case: c, reason: "invalid_field" });
    }
  });

  test("keys outside /agora/nodes/<region>/<peer-id> are refused", async () => {
    const { key, id } = await keyAndId();
    const bytes = encodeAdvertisement(await signed(key));
    for (const k of [
      `/agora/other/eu-west/${id}`,
      `/agora/nodes/${id}`,
      `/agora/nodes/EU/${id}`,
      `/agora/nodes/eu-west/${id}/x`,
      "/agora/nodes/eu-west/notapeerid",
    ]) {
      expect(await rejection(verifyAdvertisementRecord(k, bytes, { now: NOW }))).toBe("bad_key");
    }
  });

  test("peer ids that do not embed an Ed25519 key are refused", async () => {
    const secp = await generateKeyPair("secp256k1");
    const id = peerIdFromPrivateKey(secp).toString();
    const rec = { ...unsigned(id), signature: `${"A".repeat(86)}==` };
    expect(await rejection(verifyAdvertisementRecord(advertisementKey("eu-west", id), bytesOf(rec), { now: NOW }))).toBe("unsupported_key");
  });
});

describe("DHT validator and selector", () => {
  test("counts rejections by reason on the registry and accepts valid records", async () => {
    const registry = new Registry();
    let now = NOW;
    const v = createRecordValidation({ registry, now: () => now });
    const { key, id } = await keyAndId();
    const k = new TextEncoder().encode(advertisementKey("eu-west", id));
    const validate = v.validators.agora!;
    await validate(k, encodeAdvertisement(await signed(key, { seq: 5 })));
    await expect(Promise.resolve(validate(k, bytesOf("nope")))).rejects.toBeInstanceOf(RecordRejectedError);
    now = NOW + 1000;
    await expect(Promise.resolve(validate(k, encodeAdvertisement(await signed(key, { seq: 6 }))))).rejects.toThrow(/stale/);
    expect(await metricValue(registry, "agora_dht_records_rejected_total", { reason: "malformed" })).toBe(1);
    expect(await metricValue(registry, "agora_dht_records_rejected_total", { reason: "stale" })).toBe(1);
    expect(await metricValue(registry, "agora_dht_records_rejected_total", { reason: "bad_signature" })).toBe(0);
    v.dispose();
    expect(registry.getSingleMetric("agora_dht_records_rejected_total")).toBeUndefined();
  });

  test("a replayed older record is refused as superseded while the newer one is live", async () => {
    const v = createRecordValidation({ now: () => NOW });
    const { key, id } = await keyAndId();
    const k = advertisementKey("eu-west", id);
    const older = encodeAdvertisement(await signed(key, { seq: 10 }));
    const newer = encodeAdvertisement(await signed(key, { seq: 11 }));
    await v.verify(k, older);
    await v.verify(k, newer);
    await v.verify(k, newer); // same seq again is fine (re-stored copies)
    expect(await rejection(v.verify(k, older))).toBe("superseded");
    expect(v.rejected("superseded")).toBe(1);
  });

  test("selector prefers the highest seq, then the newest last_seen", async () => {
    const v = createRecordValidation({ now: () => NOW });
    const { key } = await keyAndId();
    const a = encodeAdvertisement(await signed(key, { seq: 3, last_seen: NOW - 5 }));
    const b = encodeAdvertisement(await signed(key, { seq: 7, last_seen: NOW - 9 }));
    const c = encodeAdvertisement(await signed(key, { seq: 7, last_seen: NOW - 1 }));
    expect(v.select([a, b, c])).toBe(2);
    expect(v.select([c, a, b])).toBe(0);
    expect(v.selectors.agora!(new Uint8Array(), [a, b]) as number).toBe(1);
    // garbage ranks last instead of throwing
    expect(v.select([bytesOf("x"), a])).toBe(1);
  });
});
