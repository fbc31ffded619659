import { describe, expect, test } from "bun:test";
import {
  decodeResponse,
  encodeBindingRequest,
  encodeBindingSuccess,
  FINGERPRINT_XOR,
  looksLikeStun,
  StunDecodeError,
} from "../../src/stun/message";

const hex = (s: string) =>
  Uint8Array.from(
    s
      .replace(/\s+/g, "")
      .match(/../g)!
      .map((b) => Number.parseInt(b, 16)),
  );
const TXID = hex("b7e7a701 bc34d686 fa87dfae");

/** RFC 5769 §2.2: IPv4 Binding success (SOFTWARE, XOR-MAPPED-ADDRESS 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT). */
const RFC5769_IPV4 = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
/** RFC 5769 §2.3: IPv6 Binding success, XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853. */
const RFC5769_IPV6 = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);

function reason(data: Uint8Array): string {
  try {
    decodeResponse(data);
    return "accepted";
  } catch (err) {
    return (err as StunDecodeError).reason;
  }
}

describe("STUN messages (RFC 5389)", () => {
  test("RFC 5769 IPv4 response vector: fingerprint verifies, XOR-MAPPED-ADDRESS 192.0.2.1:32853", () => {
    const r = decodeResponse(RFC5769_IPV4);
    expect(r).toMatchObject({
      kind: "success",
      via: "xor-mapped",
      fingerprint: true,
      mapped: { family: "IPv4", address: "192.0.2.1", port: 32853 },
    });
    expect(r.transactionId).toEqual(TXID);
  });

  test("RFC 5769 IPv6 response vector", () => {
    expect(decodeResponse(RFC5769_IPV6)).toMatchObject({
      kind: "success",
      fingerprint: true,
      mapped: { family: "IPv6", address: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853 },
    });
  });

  test("Binding request: 28 bytes, type 0x0001, FINGERPRINT = CRC-32 of the header xor 0x5354554e (vector)", () => {
    const req = encodeBindingRequest(TXID);
    // fdf6ae02 cross-checked with node:zlib's crc32 (an independent implementation) xor 0x5354554e.
    expect(Buffer.from(req).toString("hex")).toBe("000100082112a442b7e7a701bc34d686fa87dfae80280004fdf6ae02");
    expect(FINGERPRINT_XOR).toBe(0x5354554e);
    expect(looksLikeStun(req)).toBe(true);
    // The request itself is not a response.
    expect(reason(req)).toBe("not_a_response");
  });

  test("round trip of encodeBindingSuccess, XOR and plain MAPPED-ADDRESS fallback", () => {
    const m = { family: "IPv4" as const, address: "203.0.113.7", port: 40123 };
    expect(decodeResponse(encodeBindingSuccess(TXID, m))).toMatchObject({ mapped: m, via: "xor-mapped", fingerprint: true });
    expect(decodeResponse(encodeBindingSuccess(TXID, m, { plainMapped: true, fingerprint: false }))).toMatchObject({
      mapped: m,
      via: "mapped",
      fingerprint: false,
    });
    const m6 = { family: "IPv6" as const, address: "2001:db8::1", port: 1 };
    expect(decodeResponse(encodeBindingSuccess(TXID, m6))).toMatchObject({ mapped: m6 });
  });

  test("a flipped bit anywhere before FINGERPRINT fails the fingerprint", () => {
    for (const at of [12 * 8, 30 * 8, 44 * 8 + 3, 60 * 8]) {
      const bad = RFC5769_IPV4.slice();
      bad[at >> 3]! ^= 1 << (at & 7);
      expect(reason(bad)).toBe("fingerprint");
    }
  });

  test("malformed responses name what is wrong", () => {
    expect(reason(new Uint8Array(10))).toBe("malformed");
    expect(reason(RFC5769_IPV4.subarray(0, 40))).toBe("malformed"); // length field disagrees
    const badFamily = encodeBindingSuccess(TXID, { family: "IPv4", address: "1.2.3.4", port: 5 }, { fingerprint: false });
    badFamily[25] = 7;
    expect(reason(badFamily)).toBe("malformed");
    const overrun = encodeBindingSuccess(TXID, { family: "IPv4", address: "1.2.3.4", port: 5 }, { fingerprint: false });
    overrun[23] = 200;
    expect(reason(overrun)).toBe("malformed");
    const noAddr = hex("01010000 2112a442 b7e7a701 bc34d686 fa87dfae");
    expect(reason(noAddr)).toBe("no_address");
    const errorResp = hex("01110010 2112a442 b7e7a701 bc34d686 fa87dfae 0009000c 00000400 42616420 52657175");
    expect(decodeResponse(errorResp)).toMatchObject({ kind: "error", code: 400, reason: "Bad Requ" });
  });
});

describe("STUN decoder fuzz", () => {
  test("random and mutated datagrams never throw anything but StunDecodeError", () => {
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const base = [RFC5769_IPV4, RFC5769_IPV6, encodeBindingSuccess(TXID, { family: "IPv4", address: "1.2.3.4", port: 5 })];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      let d: Uint8Array;
      if (i % 2 === 0) {
        d = base[i % base.length]!.slice(0, Math.floor(rnd() * 80) + 1);
        for (let k = 0; k < 3; k++) d[Math.floor(rnd() * d.length)] = Math.floor(rnd() * 256);
      } else {
        d = crypto.getRandomValues(new Uint8Array(Math.floor(rnd() * 120)));
        if (d.length >= 8) d.set([0x01, 0x01, 0, (d.length - 20) & 0xfc, 0x21, 0x12, 0xa4, 0x42], 0);
      }
      try {
        decodeResponse(d);
        accepted++;
      } catch (err) {
        expect(err).toBeInstanceOf(StunDecodeError);
      }
    }
    expect(accepted).toBeLessThan(20_000);
  });
});
