/**
 * docs/advertisement.md against the code: its test vector (key, signed bytes, signature, stored value,
 * provider CIDs) and its stated limits. The vector is read from the document itself, so the document cannot
 * drift from what nodes do.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPairFromSeed } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import {
  advertisementKey,
  encodeAdvertisement,
  MAX_CLOCK_SKEW_SECONDS,
  MAX_RECORD_BYTES,
  MAX_TTL_SECONDS,
  type NodeAdvertisement,
  SIGNATURE_DOMAIN,
  signAdvertisement,
  signingBytes,
  verifyAdvertisementRecord,
} from "../../src/p2p/advertisement";
import { canonicalJson } from "../../src/p2p/canonical";
import { REACH_TIMEOUT_MS } from "../../src/p2p/discovery";
import {
  ALL_NODES_NAMESPACE,
  capabilityNamespace,
  namespaceCid,
  PROTOCOL_ADVERT,
  PROTOCOL_DHT,
  regionNamespace,
} from "../../src/p2p/namespaces";
import { DEGRADED_PENALTY, UNKNOWN_LATENCY_PENALTY } from "../../src/p2p/ranking";
import { DEFAULT_STORE_LIMITS } from "../../src/p2p/record-store";
import { ROOT } from "../helpers/node-process";

const doc = readFileSync(join(ROOT, "docs", "advertisement.md"), "utf8");
const block = /## 8\. Test vector[\s\S]*?```text\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
const vector = Object.fromEntries(
  block
    .split("\n")
    .filter((l) => l.includes(": "))
    .map((l) => [l.slice(0, l.indexOf(": ")), l.slice(l.indexOf(": ") + 2)]),
) as Record<string, string>;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("docs/advertisement.md test vector", () => {
  test("the document has the vector", () => {
    for (const k of [
      "seed (hex)",
      "public key (hex)",
      "peer id",
      "key",
      "signed bytes (hex)",
      "signature (hex)",
      "signature (base64)",
      "stored value",
    ])
      expect(vector[k]).toBeString();
  });

  test("key, peer id, signed bytes and signature are what the code produces", async () => {
    const key = await generateKeyPairFromSeed("Ed25519", Buffer.from(vector["seed (hex)"]!, "hex"));
    expect(hex(key.publicKey.raw)).toBe(vector["public key (hex)"]!);
    const id = peerIdFromPrivateKey(key).toString();
    expect(id).toBe(vector["peer id"]!);
    expect(advertisementKey("eu-west", id)).toBe(vector.key!);

    const stored = JSON.parse(vector["stored value"]!) as NodeAdvertisement;
    const { signature, ...unsigned } = stored;
    expect(hex(signingBytes(stored as unknown as Record<string, unknown>))).toBe(vector["signed bytes (hex)"]!);
    // Ed25519 is deterministic: signing the same content again gives the documented signature.
    const resigned = await signAdvertisement(unsigned, key);
    expect(resigned.signature).toBe(signature);
    expect(hex(Buffer.from(signature, "base64"))).toBe(vector["signature (hex)"]!);
    expect(new TextDecoder().decode(encodeAdvertisement(resigned))).toBe(vector["stored value"]!);
    // and the signature verifies with the bare public key over the documented bytes
    expect(
      await key.publicKey.verify(Buffer.from(vector["signed bytes (hex)"]!, "hex"), Buffer.from(vector["signature (hex)"]!, "hex")),
    ).toBe(true);
  });

  test("the stored value verifies at last_seen; any byte changed does not", async () => {
    const bytes = new TextEncoder().encode(vector["stored value"]!);
    const now = (JSON.parse(vector["stored value"]!) as NodeAdvertisement).last_seen;
    await verifyAdvertisementRecord(vector.key!, bytes, { now });
    const spaced = new TextEncoder().encode(vector["stored value"]!.replace('"region":', '"region": '));
    await expect(verifyAdvertisementRecord(vector.key!, spaced, { now })).rejects.toMatchObject({ reason: "not_canonical" });
    const edited = new TextEncoder().encode(vector["stored value"]!.replace('"current_load":45', '"current_load":44'));
    await expect(verifyAdvertisementRecord(vector.key!, edited, { now })).rejects.toMatchObject({ reason: "bad_signature" });
    // the stored value is its own canonical form
    expect(canonicalJson(JSON.parse(vector["stored value"]!))).toBe(vector["stored value"]!);
  });

  test("provider CIDs", async () => {
    expect((await namespaceCid(regionNamespace("eu-west"))).toString()).toBe(vector["provider CID of /agora/region/eu-west"]!);
    expect((await namespaceCid(capabilityNamespace("mixer"))).toString()).toBe(vector["provider CID of /agora/capability/mixer"]!);
    expect((await namespaceCid(ALL_NODES_NAMESPACE)).toString()).toBe(vector["provider CID of /agora/all"]!);
  });
});

describe("docs/advertisement.md constants", () => {
  test("protocols, domain prefix, limits, bounds and ranking figures match the code", () => {
    expect(doc).toContain(`**\`${PROTOCOL_DHT}\`**`);
    expect(doc).toContain(`\`${PROTOCOL_ADVERT}\``);
    expect(SIGNATURE_DOMAIN).toBe("agora-node-advertisement/v1\n");
    expect(doc).toContain("`agora-node-advertisement/v1` followed by one line feed (0x0A), 28\nbytes in all");
    expect(new TextEncoder().encode(SIGNATURE_DOMAIN).byteLength).toBe(28);
    expect(doc).toContain(`≤ **${MAX_RECORD_BYTES}** bytes`);
    expect(doc).toContain(`**${MAX_CLOCK_SKEW_SECONDS}** s`);
    expect(doc).toContain(`**${MAX_TTL_SECONDS}** s`);
    expect(doc).toContain(`at most **${DEFAULT_STORE_LIMITS.maxRecordsPerSigner}** records per signing peer`);
    expect(doc).toContain(`(default **${DEFAULT_STORE_LIMITS.maxRecords}**)`);
    expect(doc).toContain(
      `at most **${DEFAULT_STORE_LIMITS.maxProvidersPerPeer}** provider entries per providing peer and **${DEFAULT_STORE_LIMITS.maxProviders}** in total`,
    );
    expect(doc).toContain(`answer within ${REACH_TIMEOUT_MS} ms`);
    expect(doc).toContain(`with \`+${UNKNOWN_LATENCY_PENALTY}\` instead of the RTT term`);
    expect(doc).toContain(`+ ${DEGRADED_PENALTY} when status is degraded`);
  });
});
