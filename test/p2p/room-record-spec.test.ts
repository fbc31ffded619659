/**
 * docs/room-record.md against the code: its test vector (key, signed bytes, signature, stored value,
 * tie-break, provider CIDs) and its stated limits, read from the document itself.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPairFromSeed } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { namespaceCid } from "../../src/p2p/namespaces";
import { DEFAULT_STORE_LIMITS } from "../../src/p2p/record-store";
import {
  DEFAULT_RESOLVE_QUORUM,
  DEFAULT_RESOLVE_SETTLE_MS,
  MAX_HOSTED_ROOMS,
  MAX_LISTED_ROOMS,
  MAX_ROOM_LIST_BYTES,
  PROTOCOL_ROOMS,
  ROOMS_ALL_NAMESPACE,
  roomsRegionNamespace,
} from "../../src/p2p/room-directory";
import {
  encodeRoomRecord,
  MAX_REVOCATIONS,
  MAX_ROOM_ADDRS,
  MAX_ROOM_RECORD_BYTES,
  ROOM_SIGNATURE_DOMAIN,
  type RoomRecord,
  roomRecordKey,
  roomSigningBytes,
  roomTieBreak,
  signRoomRecord,
  verifyRoomRecord,
} from "../../src/p2p/room-record";
import { ROOT } from "../helpers/node-process";

const doc = readFileSync(join(ROOT, "docs", "room-record.md"), "utf8");
const block = /## 8\. Test vector[\s\S]*?```text\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
const vector = Object.fromEntries(
  block
    .split("\n")
    .filter((l) => l.includes(": "))
    .map((l) => [l.slice(0, l.indexOf(": ")), l.slice(l.indexOf(": ") + 2)]),
) as Record<string, string>;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("docs/room-record.md test vector", () => {
  test("key, signed bytes, signature and stored value are what the code produces", async () => {
    const key = await generateKeyPairFromSeed("Ed25519", Buffer.from(vector["seed (hex)"]!, "hex"));
    const id = peerIdFromPrivateKey(key).toString();
    expect(id).toBe(vector["peer id"]!);
    expect(roomRecordKey("standup")).toBe(vector.key!);
    const stored = JSON.parse(vector["stored value"]!) as RoomRecord;
    const { signature, ...unsigned } = stored;
    expect(hex(roomSigningBytes(stored as unknown as Record<string, unknown>))).toBe(vector["signed bytes (hex)"]!);
    const resigned = await signRoomRecord(unsigned, key);
    expect(resigned.signature).toBe(signature);
    expect(hex(Buffer.from(signature, "base64"))).toBe(vector["signature (hex)"]!);
    expect(new TextDecoder().decode(encodeRoomRecord(resigned))).toBe(vector["stored value"]!);
    expect(encodeRoomRecord(resigned).byteLength).toBe(Number(/The stored value is (\d+) bytes/.exec(doc)?.[1]));
    expect(Buffer.from(vector["signed bytes (hex)"]!, "hex").toString("utf8").startsWith(ROOM_SIGNATURE_DOMAIN)).toBe(true);
    const rec = await verifyRoomRecord(vector.key!, new TextEncoder().encode(vector["stored value"]!), { now: 1767225600.25 });
    expect(rec.host).toBe(id);
  });

  test("tie-break and provider CIDs", async () => {
    expect(roomTieBreak("standup", vector["peer id"]!)).toBe(vector[`tie-break of standup/${vector["peer id"]}`]!);
    expect((await namespaceCid(roomsRegionNamespace("eu-west"))).toString()).toBe(vector["provider CID of /agora/rooms-region/eu-west"]!);
    expect((await namespaceCid(ROOMS_ALL_NAMESPACE)).toString()).toBe(vector["provider CID of /agora/rooms-all"]!);
  });

  test("any change of one byte of the stored value is refused", async () => {
    const bytes = new TextEncoder().encode(vector["stored value"]!);
    for (const i of [5, 40, 120, 200, 300]) {
      const bad = bytes.slice();
      bad[i] = bad[i]! ^ 0x01;
      await expect(verifyRoomRecord(vector.key!, bad, { now: 1767225600.25 })).rejects.toThrow();
    }
  });
});

describe("docs/room-record.md limits", () => {
  test("the numbers in the document are the code's", () => {
    expect(doc).toContain(`at most **${MAX_ROOM_RECORD_BYTES}** bytes`);
    expect(doc).toContain(`at most **${DEFAULT_STORE_LIMITS.maxRoomRecordsPerSigner}** room records per host`);
    expect(doc).toContain(`at most **${MAX_HOSTED_ROOMS}** rooms`);
    expect(doc).toContain(`at most **${MAX_LISTED_ROOMS}**`);
    expect(doc).toContain(`at most **${MAX_ROOM_LIST_BYTES}** bytes`);
    expect(doc).toContain(`≤ ${MAX_ROOM_ADDRS} multiaddr`);
    expect(doc).toContain(`≤ ${MAX_REVOCATIONS} \`{"id"`);
    expect(doc).toContain(`\`${PROTOCOL_ROOMS}\``);
    expect(doc).toContain(`until it holds\n**${DEFAULT_RESOLVE_QUORUM}** answers, or **${DEFAULT_RESOLVE_SETTLE_MS}** ms after the first`);
  });
});
