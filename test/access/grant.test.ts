import { describe, expect, test } from "bun:test";
import {
  decodeGrant,
  encodeGrant,
  GrantError,
  grantFromString,
  grantToString,
  issueGrant,
  linkId,
  MAX_REVOCATIONS_PER_ROOM,
  MemoryRevocationStore,
  moderateSigningMessage,
  ownedRoomId,
  ownerKeyId,
  Role,
  roomOwnership,
  signerFromRawPrivateKey,
  signModerate,
  toHex,
  verifyGrant,
  verifyModerate,
} from "../../src/access";
import { decodeMessage, encodeMessage, ModerateAction } from "../../src/protocol";

// The fixed keys of docs/access.md: seeds are the bytes b, b+1, …, b+31.
const seed = (b: number) => Uint8Array.from({ length: 32 }, (_, i) => (b + i) & 0xff);
const owner = signerFromRawPrivateKey(seed(0x00));
const mod = signerFromRawPrivateKey(seed(0x40));
const part = signerFromRawPrivateKey(seed(0x80));
const stranger = signerFromRawPrivateKey(seed(0xc0));
const ROOM = "standup--kzdvvj2umnduyauf35o36k6kw4";
const EXP = 1767225600000; // 2026-01-01T00:00:00Z
const NOW = EXP - 3_600_000;

const G1 =
  "0101237374616e6475702d2d6b7a6476766a32756d6e64757961756633356f33366b366b7734020000019b76daa80003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b800603f103223effd52ef481c122c1e2d96a72df55b4ed1c534b856e162b93a242c09e75556d2ae21294e2eb2a9dbcf5b57f94ca7b971bbe4ccbf5c6497279c270b";
const G2 =
  "0101237374616e6475702d2d6b7a6476766a32756d6e64757961756633356f33366b366b7734030000019b76daa80003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8012543b92ff1095511476adc8369db6ddc933665a11978dda1404ee1066ca9559d5fb536ede6bea28976c5f59021eb54695569cb22a2d1c56ad9a704bc300b8fae633e85e30f54dc9f98f0a33ee4993c3db8410651750eb9d527d4d33bbc2f2f09";
const G3_LINK1 =
  "237374616e6475702d2d6b7a6476766a32756d6e64757961756633356f33366b366b7734010000019b76a3b9802543b92ff1095511476adc8369db6ddc933665a11978dda1404ee1066ca9559d01cd14b37f956e953194ff7fb73b3d81dcc561d61a7538094b7c3e1a643ee5f3aabe852f28ccf77f9ccd9c9ff4c6035210a923d91c14599ca763f456bd968f37d5bab8396c554457f2103e39a82656b383a95d2cee9d840f80c691f44632e6aa0e";
const G3 = `0102${G2.slice(4)}${G3_LINK1}`;

const hex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
const reason = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    if (err instanceof GrantError) return err.reason;
    throw err;
  }
  return "accepted";
};

describe("owned room ids", () => {
  test("test vector: key id and room id of the fixed owner key", () => {
    expect(toHex(owner.publicKey)).toBe("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
    expect(ownerKeyId(owner.publicKey)).toBe("kzdvvj2umnduyauf35o36k6kw4");
    expect(ownedRoomId("standup", owner.publicKey)).toBe(ROOM);
    expect(roomOwnership(ROOM)).toEqual({ owned: true, name: "standup", keyId: "kzdvvj2umnduyauf35o36k6kw4" });
    expect(roomOwnership("standup")).toEqual({ owned: false });
    expect(roomOwnership("a--kzdvvj2umnduyauf35o36k6kw")).toEqual({ owned: false }); // 25 chars: open
  });
  test("names that would not fit are refused", () => {
    expect(() => ownedRoomId("x".repeat(37), owner.publicKey)).toThrow(/1-36/);
    expect(() => ownedRoomId("-bad", owner.publicKey)).toThrow(/room id/);
    expect(ownedRoomId("x".repeat(36), owner.publicKey).length).toBe(64);
  });
});

describe("grant encoding (test vectors)", () => {
  test("owner → bearer speaker grant: exact bytes, signature, id, string form", () => {
    const g = issueGrant(owner, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP });
    expect(toHex(g)).toBe(G1);
    expect(linkId(decodeGrant(g).links[0]!)).toBe("5a146e1ae765d13cb242db9792b7e513");
    expect(grantFromString(grantToString(g))).toEqual(g);
    expect(verifyGrant(g, { room: ROOM, now: NOW })).toMatchObject({ role: Role.SPEAKER, expiresAt: EXP });
  });
  test("owner → moderator (bound) → listener (bound) delegation chain", () => {
    const g2 = issueGrant(owner, { room: ROOM, role: Role.MODERATOR, expiresAt: EXP, subject: mod.publicKey });
    expect(toHex(g2)).toBe(G2);
    const g3 = issueGrant(mod, { room: ROOM, role: Role.LISTENER, expiresAt: EXP - 3_600_000, subject: part.publicKey, parent: g2 });
    expect(toHex(g3)).toBe(G3);
    expect(linkId(decodeGrant(g3).links[1]!)).toBe("f118749fdfa3d02f9075018b8a4bca84");
    const v = verifyGrant(g3, { room: ROOM, now: NOW - 1, remoteKey: part.publicKey });
    expect(v.role).toBe(Role.LISTENER);
    expect(v.keys).toEqual([toHex(owner.publicKey), toHex(mod.publicKey), toHex(part.publicKey)]);
  });
  test("decoding is canonical: re-encoding gives the same bytes; any other form is malformed", () => {
    for (const h of [G1, G2, G3]) expect(toHex(encodeGrant(decodeGrant(hex(h)).links))).toBe(h);
    const bad = [
      "", // empty
      `02${G1.slice(2)}`, // version 2
      `0100${G1.slice(4)}`, // 0 links
      `0105${G1.slice(4)}`, // 5 links
      `${G1}00`, // trailing byte
      G1.slice(0, -2), // truncated signature
      G1.replace("2d2d6b7a6476766a32756d6e647579617566", "2d2d6b7a6476766a32756d6e6475796175~~".replace(/~/g, "7e")), // bad room char
    ];
    for (const h of bad) expect(reason(() => decodeGrant(hex(h)))).toBe("malformed");
    const role4 = hex(G1);
    role4[2 + 1 + 35] = 4;
    expect(reason(() => decodeGrant(role4))).toBe("malformed");
    const flag2 = hex(G1);
    flag2[2 + 1 + 35 + 1 + 8 + 32] = 2;
    expect(reason(() => decodeGrant(flag2))).toBe("malformed");
    expect(reason(() => grantFromString("not base64!"))).toBe("malformed");
  });
});

describe("grant verification", () => {
  const speaker = () => issueGrant(owner, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP });
  test("forged: a flipped signature or body bit, or a stranger's key as issuer", () => {
    const sig = hex(G1);
    sig[sig.length - 1] = sig[sig.length - 1]! ^ 1;
    expect(reason(() => verifyGrant(sig, { room: ROOM, now: NOW }))).toBe("bad_signature");
    const body = hex(G1);
    body[2 + 1 + 35 + 1 + 7] = body[2 + 1 + 35 + 1 + 7]! ^ 1; // expiry changed after signing
    expect(reason(() => verifyGrant(body, { room: ROOM, now: NOW }))).toBe("bad_signature");
    // A stranger cannot issue for the room: the room id names the owner's key.
    expect(reason(() => issueGrant(stranger, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP }))).toBe("wrong_owner");
    const forged = decodeGrant(speaker()).links;
    forged[0] = { ...forged[0]!, issuer: stranger.publicKey };
    expect(reason(() => verifyGrant(encodeGrant(forged), { room: ROOM, now: NOW }))).toBe("wrong_owner");
  });
  test("cannot be replayed into another room, even one of the same owner", () => {
    const other = ownedRoomId("other", owner.publicKey);
    expect(reason(() => verifyGrant(speaker(), { room: other, now: NOW }))).toBe("wrong_room");
    expect(reason(() => verifyGrant(speaker(), { room: "standup", now: NOW }))).toBe("wrong_room");
  });
  test("expiry on the injected clock: the earliest in the chain counts", () => {
    expect(reason(() => verifyGrant(speaker(), { room: ROOM, now: EXP - 1 }))).toBe("accepted");
    expect(reason(() => verifyGrant(speaker(), { room: ROOM, now: EXP }))).toBe("expired");
    expect(reason(() => verifyGrant(hex(G3), { room: ROOM, now: EXP - 3_600_000, remoteKey: part.publicKey }))).toBe("expired");
  });
  test("binding: a bound grant admits only the key it names", () => {
    const g = issueGrant(owner, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP, subject: part.publicKey });
    expect(reason(() => verifyGrant(g, { room: ROOM, now: NOW, remoteKey: part.publicKey }))).toBe("accepted");
    expect(reason(() => verifyGrant(g, { room: ROOM, now: NOW, remoteKey: stranger.publicKey }))).toBe("wrong_peer");
    expect(reason(() => verifyGrant(g, { room: ROOM, now: NOW }))).toBe("wrong_peer");
  });
  test("a moderator cannot exceed the rights the owner gave", () => {
    const modSpeaker = issueGrant(owner, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP, subject: mod.publicKey });
    const modBearer = issueGrant(owner, { room: ROOM, role: Role.MODERATOR, expiresAt: EXP });
    const g2 = hex(G2);
    // Only a bound moderator delegates, only ≤ its role, only within its own lifetime, only for its room.
    expect(reason(() => issueGrant(mod, { room: ROOM, role: Role.LISTENER, expiresAt: EXP, parent: modSpeaker }))).toBe("broken_chain");
    expect(reason(() => issueGrant(mod, { room: ROOM, role: Role.LISTENER, expiresAt: EXP, parent: modBearer }))).toBe("broken_chain");
    expect(reason(() => issueGrant(stranger, { room: ROOM, role: Role.LISTENER, expiresAt: EXP, parent: g2 }))).toBe("broken_chain");
    expect(reason(() => issueGrant(mod, { room: ROOM, role: Role.SPEAKER, expiresAt: EXP + 1, parent: g2 }))).toBe("exceeds_parent");
    expect(
      reason(() => issueGrant(mod, { room: ownedRoomId("other", owner.publicKey), role: Role.SPEAKER, expiresAt: EXP, parent: g2 })),
    ).toBe("wrong_room");
    // The same checks hold for hand-made chains a mixer receives (issueGrant is not the only encoder).
    const raw = decodeGrant(hex(G3)).links;
    raw[1] = { ...raw[1]!, role: Role.MODERATOR }; // listener link raised to moderator after signing
    const up = decodeGrant(hex(G2)).links;
    const tooLong = { ...raw[1]!, expiresAt: EXP + 1 };
    expect(reason(() => verifyGrant(encodeGrant([up[0]!, tooLong]), { room: ROOM, now: NOW, remoteKey: part.publicKey }))).toBe(
      "exceeds_parent",
    );
    expect(reason(() => verifyGrant(encodeGrant([up[0]!, raw[1]!]), { room: ROOM, now: NOW, remoteKey: part.publicKey }))).toBe(
      "bad_signature",
    );
    const speakerUp = decodeGrant(modSpeaker).links;
    const child = issueGrant(mod, { room: ROOM, role: Role.LISTENER, expiresAt: EXP, parent: hex(G2) });
    const spliced = [speakerUp[0]!, decodeGrant(child).links[1]!];
    expect(reason(() => verifyGrant(encodeGrant(spliced), { room: ROOM, now: NOW }))).toBe("broken_chain");
  });
  test("revocation: of any link id or named key, until its time; the owner key is not revocable", () => {
    const store = new MemoryRevocationStore();
    const check = (id: string, at: number) => store.isRevoked(ROOM, id, at);
    const g3 = hex(G3);
    expect(reason(() => verifyGrant(g3, { room: ROOM, now: NOW - 1, remoteKey: part.publicKey, revoked: check }))).toBe("accepted");
    store.revoke(ROOM, { id: "f118749fdfa3d02f9075018b8a4bca84", until: NOW }, NOW - 10);
    expect(reason(() => verifyGrant(g3, { room: ROOM, now: NOW - 1, remoteKey: part.publicKey, revoked: check }))).toBe("revoked");
    expect(reason(() => verifyGrant(g3, { room: ROOM, now: NOW, remoteKey: part.publicKey, revoked: check }))).toBe("expired");
    const s2 = new MemoryRevocationStore();
    s2.revoke(ROOM, { id: toHex(mod.publicKey), until: EXP }, NOW);
    // Banning the moderator's key voids everything it issued.
    expect(
      reason(() =>
        verifyGrant(g3, { room: ROOM, now: NOW - 1, remoteKey: part.publicKey, revoked: (id, at) => s2.isRevoked(ROOM, id, at) }),
      ),
    ).toBe("revoked");
    s2.revoke(ROOM, { id: toHex(owner.publicKey), until: EXP }, NOW);
    expect(reason(() => verifyGrant(hex(G1), { room: ROOM, now: NOW, revoked: (id, at) => s2.isRevoked(ROOM, id, at) }))).toBe("accepted");
    // Another room's revocations do not apply.
    expect(store.isRevoked("other", "f118749fdfa3d02f9075018b8a4bca84", NOW - 1)).toBe(false);
  });
  test("the revocation list is bounded to 64 entries, lapsing first makes room", () => {
    const store = new MemoryRevocationStore();
    for (let i = 0; i < MAX_REVOCATIONS_PER_ROOM; i++) expect(store.revoke(ROOM, { id: i.toString(16), until: 1000 + i }, 0)).toBe(true);
    expect(store.revoke(ROOM, { id: "ffff", until: 999 }, 0)).toBe(false);
    expect(store.revoke(ROOM, { id: "ffff", until: 5000 }, 0)).toBe(true);
    expect(store.isRevoked(ROOM, "0", 0)).toBe(false);
    expect(store.list(ROOM, 0)).toHaveLength(MAX_REVOCATIONS_PER_ROOM);
    expect(() => store.revoke(ROOM, { id: "XYZ", until: 1 }, 0)).toThrow(/hex/);
  });
  test("the number of rooms' lists is bounded: lapsed lists go first, then the oldest", () => {
    const store = new MemoryRevocationStore(3);
    store.revoke("a", { id: "1", until: 10 }, 0);
    store.revoke("b", { id: "1", until: 100 }, 0);
    store.revoke("c", { id: "1", until: 100 }, 0);
    store.revoke("d", { id: "1", until: 100 }, 50); // "a" has lapsed: it goes
    expect(["a", "b", "c", "d"].map((r) => store.isRevoked(r, "1", 50))).toEqual([false, true, true, true]);
    store.revoke("e", { id: "1", until: 100 }, 50); // none lapsed: the oldest ("b") goes
    expect(["b", "c", "d", "e"].map((r) => store.isRevoked(r, "1", 50))).toEqual([false, true, true, true]);
  });
});

describe("MODERATE", () => {
  const ctx = { room: ROOM, participantId: "p0123456789ab" };
  const req = { requestId: 1, action: ModerateAction.MUTE, target: "pa1b2c3d4e5f6", until: 0 };
  test("test vector: the signed MODERATE message", () => {
    const m = signModerate(mod, ctx, req);
    expect(toHex(encodeMessage(m))).toBe(
      "005c3000000001010d70613162326333643465356636000000000000000034077fbc84dbc062cea31b71426fadbb1f8dc76f700a2a99017004639aff438bcbed8b2774ba9074b36de38637cc61187bdd3831821a541275f4451a0954540e",
    );
    const back = decodeMessage(encodeMessage(m).subarray(2));
    expect(back.ok && back.value).toEqual(m);
    expect(verifyModerate(mod.publicKey, ctx, m)).toBe(true);
  });
  test("a signature does not carry over to another room, session, target or key", () => {
    const m = signModerate(mod, ctx, req);
    expect(verifyModerate(mod.publicKey, { ...ctx, room: ownedRoomId("other", owner.publicKey) }, m)).toBe(false);
    expect(verifyModerate(mod.publicKey, { ...ctx, participantId: "pffffffffffff" }, m)).toBe(false);
    expect(verifyModerate(mod.publicKey, ctx, { ...m, target: "pffffffffffff" })).toBe(false);
    expect(verifyModerate(stranger.publicKey, ctx, m)).toBe(false);
    expect(moderateSigningMessage(ctx, req).subarray(0, 17)).toEqual(new TextEncoder().encode("agora-moderate/1\0"));
  });
});

describe("bad input never gets through, never throws anything but GrantError", () => {
  test("random bytes and every single-byte change of a valid grant", () => {
    let seedN = 12345;
    const rnd = () => {
      seedN = (seedN * 1103515245 + 12345) >>> 0;
      return seedN >>> 8;
    };
    for (let i = 0; i < 500; i++) {
      const b = Uint8Array.from({ length: rnd() % 400 }, () => rnd() & 0xff);
      if (i % 2) b[0] = 1; // mostly past the version byte
      const r = reason(() => verifyGrant(b, { room: ROOM, now: NOW }));
      expect(r).not.toBe("accepted");
    }
    const valid = hex(G3);
    for (let at = 0; at < valid.length; at++) {
      const b = valid.slice();
      b[at] = b[at]! ^ (1 << (at % 8));
      expect(reason(() => verifyGrant(b, { room: ROOM, now: NOW - 1, remoteKey: part.publicKey }))).not.toBe("accepted");
    }
  });
});
