/** Codec of the 1.1.0 access control messages (MODERATE 0x30, MODERATE_RESULT 0x32, MODERATION 0x33). */
import { describe, expect, test } from "bun:test";
import { decodeMessage, encodeMessage, errorCodeName, isRetryableErrorCode, WireErrorCode, type WireMessage } from "../../src/protocol";

const body = (m: WireMessage) => encodeMessage(m).subarray(2);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const decode = (h: string) => decodeMessage(new Uint8Array(Buffer.from(h, "hex")));

describe("access control messages", () => {
  const moderate: WireMessage = {
    type: "MODERATE",
    requestId: 7,
    action: 3,
    target: "pabc",
    until: 1767225600000,
    signature: new Uint8Array(64).fill(0xaa),
  };
  const result: WireMessage = { type: "MODERATE_RESULT", requestId: 7, code: 12, message: "nope" };
  const notice: WireMessage = { type: "MODERATION", action: 1, target: "pabc", by: "pmod", until: 0 };

  test("round trips with exact layouts", () => {
    for (const m of [moderate, result, notice]) {
      const r = decodeMessage(body(m));
      expect(r.ok && r.value).toEqual(m);
    }
    expect(hex(body(result))).toBe("3200000007000c046e6f7065");
    expect(hex(body(notice))).toBe("33010470616263" + "04706d6f64" + "0000000000000000");
  });

  test("bad input is named: truncation, trailing bytes, lengths, characters", () => {
    const m = hex(body(moderate));
    expect(decode(m.slice(0, -2))).toMatchObject({ ok: false, error: { reason: "truncated", field: "moderate.signature" } });
    expect(decode(`${m}00`)).toMatchObject({ ok: false, error: { reason: "trailing_bytes" } });
    expect(decode("3000000001010541")).toMatchObject({ ok: false, error: { reason: "truncated" } }); // target length past the end
    expect(decode(`33010000${"0".repeat(16)}`)).toMatchObject({ ok: false, error: { reason: "bad_field", field: "moderation.by" } });
    expect(decode(`3301012004706d6f64${"0".repeat(16)}`)).toMatchObject({
      ok: false,
      error: { reason: "bad_field", field: "moderation.target" },
    });
    expect(() => encodeMessage({ ...moderate, signature: new Uint8Array(3) } as WireMessage)).toThrow(/signature/);
    expect(() => encodeMessage({ ...moderate, target: "x".repeat(65) } as WireMessage)).toThrow(/target/);
  });

  test("FORBIDDEN is code 12 and not retryable", () => {
    expect(WireErrorCode.FORBIDDEN).toBe(12);
    expect(errorCodeName(12)).toBe("FORBIDDEN");
    expect(isRetryableErrorCode(12)).toBe(false);
  });
});
