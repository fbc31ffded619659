import { describe, expect, test } from "bun:test";
import {
  decodeMessage,
  encodeMessage,
  encodeRosterSnapshot,
  LENGTH_PREFIX_BYTES,
  MAX_MESSAGE_LENGTH,
  MAX_ROSTER_LISTED,
  MessageDecoder,
  type RosterEntry,
  type RosterSnapshotMessage,
  WireError,
  type WireMessage,
} from "../../src/protocol";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));

function decodeBody(framed: Uint8Array): WireMessage {
  const r = decodeMessage(framed.subarray(LENGTH_PREFIX_BYTES));
  if (!r.ok) throw r.error;
  return r.value;
}

function expectFail(bodyHex: string, reason: string, field: string): void {
  const r = decodeMessage(unhex(bodyHex));
  expect(r.ok).toBe(false);
  if (r.ok) return;
  expect(r.error).toBeInstanceOf(WireError);
  expect({ reason: r.error.reason, field: r.error.field }).toEqual({ reason: reason as WireError["reason"], field });
}

describe("ROSTER (0x09)", () => {
  test("test vectors (protocol.md): a snapshot page and a speaking update", () => {
    const snapshot: RosterSnapshotMessage = {
      type: "ROSTER",
      kind: "snapshot",
      rev: 7,
      total: 2,
      listed: 2,
      index: 0,
      entries: [
        { participantId: "p1", name: "A", speaking: true },
        { participantId: "p2", name: "", speaking: false },
      ],
    };
    const s = encodeMessage(snapshot);
    expect(hex(s)).toBe("0018 0901 00000007 0002 0002 0000 02 01027031 0141 00027032 00".replace(/\s/g, ""));
    expect(decodeBody(s)).toEqual(snapshot);
    const speaking = encodeMessage({ type: "ROSTER", kind: "speaking", rev: 7, speaking: [false, true] });
    expect(hex(speaking)).toBe("000909020000000700" + "0240");
    expect(decodeBody(speaking)).toEqual({ type: "ROSTER", kind: "speaking", rev: 7, speaking: [false, true] });
  });

  test("a speaking bit set covers every listed participant, MSB first", () => {
    const flags = Array.from({ length: 19 }, (_, i) => i % 3 === 0);
    const m = decodeBody(encodeMessage({ type: "ROSTER", kind: "speaking", rev: 1, speaking: flags }));
    expect(m).toEqual({ type: "ROSTER", kind: "speaking", rev: 1, speaking: flags });
  });

  test("a snapshot is split into pages under the message limit and reassembles in order", () => {
    const entries: RosterEntry[] = Array.from({ length: 300 }, (_, i) => ({
      participantId: `p${String(i).padStart(63, "0")}`,
      name: "n".repeat(64),
      speaking: i % 5 === 0,
    }));
    const pages = encodeRosterSnapshot(42, 300, entries);
    expect(pages.length).toBeGreaterThan(1);
    const got: RosterEntry[] = [];
    const decoder = new MessageDecoder();
    for (const p of pages) {
      expect(p.length - LENGTH_PREFIX_BYTES).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
      const { messages, error } = decoder.push(p);
      expect(error).toBeUndefined();
      const m = messages[0] as RosterSnapshotMessage;
      expect({ rev: m.rev, total: m.total, listed: m.listed, index: m.index }).toEqual({
        rev: 42,
        total: 300,
        listed: MAX_ROSTER_LISTED,
        index: got.length,
      });
      got.push(...m.entries);
    }
    expect(got).toEqual(entries.slice(0, MAX_ROSTER_LISTED));
    // Typical ids and short names fit one page.
    const small = encodeRosterSnapshot(
      1,
      3,
      entries.slice(0, 3).map((e, i) => ({ ...e, participantId: `p${i}`, name: `N${i}` })),
    );
    expect(small.length).toBe(1);
    // An empty room is one empty page (listed 0).
    expect(decodeBody(encodeRosterSnapshot(2, 0, [])[0]!)).toEqual({
      type: "ROSTER",
      kind: "snapshot",
      rev: 2,
      total: 0,
      listed: 0,
      index: 0,
      entries: [],
    });
  });

  test("malformed ROSTER bodies name the field", () => {
    expectFail("09", "truncated", "roster.kind");
    expectFail("0903 00000001", "bad_field", "roster.kind");
    expectFail("0901 00000001 0001 0002 0000 00", "bad_field", "roster.listed"); // listed > total
    expectFail("0901 00000001 0200 0101 0000 00", "bad_field", "roster.listed"); // listed > 256
    expectFail("0901 00000001 0002 0002 0001 02", "bad_field", "roster.index"); // 1 + 2 > 2
    expectFail("0901 00000001 0001 0001 0000 01 00 02 7031", "truncated", "roster.entries[0].nameLength");
    expectFail("0901 00000001 0001 0001 0000 01 00 02 7021 00", "bad_field", "roster.entries[0].participantId");
    expectFail("0901 00000001 0001 0001 0000 01 00 02 7031 01 07", "bad_field", "roster.entries[0].name"); // control char
    expectFail("0901 00000001 0001 0001 0000 01 00 02 7031 01 ff", "bad_field", "roster.entries[0].name"); // not UTF-8
    expectFail("0901 00000001 0001 0001 0000 01 00 02 7031 00 00", "trailing_bytes", "roster");
    expectFail("0902 00000001 0009 ff", "truncated", "roster.speaking");
    expectFail("0902 00000001 0101", "bad_field", "roster.listed");
    expectFail("0902 00000001 0001 80 00", "trailing_bytes", "roster");
  });

  test("encoding refuses what a server must not send", () => {
    const e = { participantId: "p1", name: "A", speaking: false };
    expect(() => encodeMessage({ type: "ROSTER", kind: "snapshot", rev: 1, total: 1, listed: 2, index: 0, entries: [e] })).toThrow(
      WireError,
    );
    expect(() => encodeMessage({ type: "ROSTER", kind: "snapshot", rev: 1, total: 2, listed: 1, index: 1, entries: [e] })).toThrow(
      WireError,
    );
    expect(() => encodeMessage({ type: "ROSTER", kind: "snapshot", rev: -1, total: 1, listed: 1, index: 0, entries: [e] })).toThrow(
      WireError,
    );
    expect(() =>
      encodeMessage({
        type: "ROSTER",
        kind: "snapshot",
        rev: 1,
        total: 1,
        listed: 1,
        index: 0,
        entries: [{ ...e, participantId: "bad id" }],
      }),
    ).toThrow(WireError);
  });
});
