/** 1.1.0 AUDIO_VAD (0x11) and MIX_SETTINGS (0x31): round trips, the test vectors of protocol.md, validation. */
import { describe, expect, test } from "bun:test";
import { decodeMessage, encodeAudio, encodeMessage, MAX_MIX_ENTRIES, MessageType, type WireMessage } from "../../src/protocol";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const body = (framed: Uint8Array) => framed.subarray(2);

function decodeOk(bytes: Uint8Array): WireMessage {
  const r = decodeMessage(bytes);
  if (!r.ok) throw r.error;
  return r.value;
}

function decodeErr(bytes: Uint8Array) {
  const r = decodeMessage(bytes);
  if (r.ok) throw new Error(`expected a decode error, got ${r.value.type}`);
  return r.error;
}

describe("AUDIO_VAD", () => {
  test("test vector: seq 1, timestamp 960, voice, payload f8 ff fe", () => {
    const framed = encodeAudio({ seq: 1, timestamp: 960, voice: true, payload: unhex("f8fffe") });
    expect(hex(framed)).toBe("000d1100000001000003c001f8fffe");
    const m = decodeOk(body(framed));
    expect(m).toEqual({ type: "AUDIO", seq: 1, timestamp: 960, voice: true, payload: unhex("f8fffe") });
  });

  test("flag 0 is silence; a frame without the flag stays plain AUDIO (0x10)", () => {
    const silent = encodeAudio({ seq: 7, timestamp: 0, voice: false, payload: unhex("f8") });
    expect(silent[2]).toBe(MessageType.AUDIO_VAD);
    expect(decodeOk(body(silent))).toMatchObject({ voice: false });
    const plain = encodeAudio({ seq: 7, timestamp: 0, payload: unhex("f8") });
    expect(plain[2]).toBe(MessageType.AUDIO);
    expect((decodeOk(body(plain)) as { voice?: boolean }).voice).toBeUndefined();
  });

  test("reserved flag bits, a missing flags byte and an empty payload are errors naming the field", () => {
    const e1 = decodeErr(unhex("1100000001000003c002f8"));
    expect(e1.reason).toBe("bad_field");
    expect(e1.field).toBe("audio_vad.flags");
    const e2 = decodeErr(unhex("1100000001000003c0"));
    expect(e2.reason).toBe("truncated");
    const e3 = decodeErr(unhex("1100000001000003c001"));
    expect(e3.reason).toBe("empty_payload");
    const e4 = decodeErr(Uint8Array.from([0x11, 0, 0, 0, 1, 0, 0, 0, 1, 1, ...new Uint8Array(1276)]));
    expect(e4.reason).toBe("payload_too_big");
  });
});

describe("MIX_SETTINGS", () => {
  test("test vector: pa muted, pb at 1.5", () => {
    const framed = encodeMessage({
      type: "MIX_SETTINGS",
      gains: [
        { participantId: "pa", gain: 0 },
        { participantId: "pb", gain: 1.5 },
      ],
    });
    expect(hex(framed)).toBe("000d310002027061000002706205dc");
    expect(decodeOk(body(framed))).toEqual({
      type: "MIX_SETTINGS",
      gains: [
        { participantId: "pa", gain: 0 },
        { participantId: "pb", gain: 1.5 },
      ],
    });
  });

  test("an empty set (every rule cleared) round trips", () => {
    const framed = encodeMessage({ type: "MIX_SETTINGS", gains: [] });
    expect(hex(framed)).toBe("0003310000");
    expect(decodeOk(body(framed))).toEqual({ type: "MIX_SETTINGS", gains: [] });
  });

  test("the encoder refuses what the decoder would refuse", () => {
    const many = Array.from({ length: MAX_MIX_ENTRIES + 1 }, (_, i) => ({ participantId: `p${i}`, gain: 0 }));
    expect(() => encodeMessage({ type: "MIX_SETTINGS", gains: many })).toThrow(/at most 32/);
    expect(() => encodeMessage({ type: "MIX_SETTINGS", gains: [{ participantId: "pa", gain: 4.5 }] })).toThrow(/gain/);
    expect(() => encodeMessage({ type: "MIX_SETTINGS", gains: [{ participantId: "pa", gain: Number.NaN }] })).toThrow(/gain/);
    expect(() => encodeMessage({ type: "MIX_SETTINGS", gains: [{ participantId: "bad id", gain: 0 }] })).toThrow(/participant id/);
    expect(() =>
      encodeMessage({
        type: "MIX_SETTINGS",
        gains: [
          { participantId: "pa", gain: 0 },
          { participantId: "pa", gain: 1 },
        ],
      }),
    ).toThrow(/twice/);
  });

  test("bad bodies are errors naming the field", () => {
    const cases: Array<[string, string, string]> = [
      ["3101 00", "bad_field", "mix_settings.flags"],
      ["3100 21", "bad_field", "mix_settings.count"], // 33 entries
      ["3100 01 02 7061", "truncated", "mix_settings.entries[0].gain"],
      ["3100 01 02 7061 0fa1", "bad_field", "mix_settings.entries[0].gain"], // 4001 > +12 dB
      ["3100 01 02 2020 0000", "bad_field", "mix_settings.entries[0].participantId"],
      ["3100 02 02 7061 0000 02 7061 03e8", "bad_field", "mix_settings.entries[1].participantId"], // twice
      ["3100 00 ff", "trailing_bytes", "mix_settings"],
      ["3100 01 05 7061", "truncated", "mix_settings.entries[0].participantId"],
    ];
    for (const [bytes, reason, field] of cases) {
      const e = decodeErr(unhex(bytes));
      expect([bytes, e.reason, e.field]).toEqual([bytes, reason, field]);
    }
  });
});
