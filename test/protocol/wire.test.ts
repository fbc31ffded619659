import { describe, expect, test } from "bun:test";
import { AgoraError } from "../../src/errors";
import {
  decodeMessage,
  encodeAudio,
  encodeMessage,
  LENGTH_PREFIX_BYTES,
  MAX_MESSAGE_LENGTH,
  MAX_OPUS_PAYLOAD,
  MessageDecoder,
  MessageType,
  seqDiff,
  WireError,
  WireErrorCode,
  type WireMessage,
  wireErrorCodeFor,
} from "../../src/protocol";

function body(framed: Uint8Array): Uint8Array {
  return framed.subarray(LENGTH_PREFIX_BYTES);
}

function roundTrip(msg: WireMessage): WireMessage {
  const framed = encodeMessage(msg);
  expect((framed[0]! << 8) | framed[1]!).toBe(framed.length - LENGTH_PREFIX_BYTES);
  const r = decodeMessage(body(framed));
  if (!r.ok) throw r.error;
  return r.value;
}

function expectWireError(r: ReturnType<typeof decodeMessage>, reason: string, field: string): WireError {
  expect(r.ok).toBe(false);
  if (r.ok) throw new Error("unreachable");
  expect(r.error).toBeInstanceOf(WireError);
  expect(r.error).toBeInstanceOf(AgoraError);
  expect(r.error.code).toBe("WIRE_PROTOCOL");
  expect(r.error.reason).toBe(reason as WireError["reason"]);
  expect(r.error.field).toBe(field);
  expect(r.error.message).toContain(field);
  return r.error;
}

const joined: WireMessage = {
  type: "JOINED",
  version: 1,
  participantId: "p-0123abcd",
  sampleRate: 48000,
  channels: 1,
  frameSamples: 960,
  codec: 1,
  bitrate: 32000,
  serverTimeMs: 1_732_000_000_123,
};

describe("round trip", () => {
  test("every message type", () => {
    const msgs: WireMessage[] = [
      { type: "JOIN", version: 1, room: "lobby-1", name: "Zoë 🎙" },
      { type: "JOIN", version: 1, room: "a", name: "" },
      joined,
      { type: "ERROR", code: WireErrorCode.CAPACITY, message: "room full: 100 participants" },
      { type: "LEAVE" },
      { type: "PING", nonce: 0xffffffff },
      { type: "PONG", nonce: 7 },
      { type: "AUDIO", seq: 0xffffffff, timestamp: 0x12345678, payload: new Uint8Array([0xfc, 1, 2, 3]) },
    ];
    for (const m of msgs) expect(roundTrip(m)).toEqual(m);
  });

  test("audio is compact: 2-byte length + 9-byte header", () => {
    const f = encodeAudio({ seq: 1, timestamp: 960, payload: new Uint8Array(80) });
    expect(f.length).toBe(2 + 9 + 80);
    expect(f[2]).toBe(MessageType.AUDIO);
    // big-endian seq
    expect([...f.subarray(3, 7)]).toEqual([0, 0, 0, 1]);
  });

  test("largest Opus payload round-trips", () => {
    const payload = new Uint8Array(MAX_OPUS_PAYLOAD).map((_, i) => i & 0xff);
    const m = roundTrip({ type: "AUDIO", seq: 5, timestamp: 4800, payload });
    expect(m.type === "AUDIO" && m.payload).toEqual(payload);
  });

  test("over-long ERROR text is truncated on encode, not refused", () => {
    const m = roundTrip({ type: "ERROR", code: 11, message: "é".repeat(1000) });
    expect(m.type === "ERROR" && new TextEncoder().encode(m.message).length).toBeLessThanOrEqual(512);
  });

  test("encoding invalid input raises a typed error", () => {
    expect(() => encodeMessage({ type: "JOIN", version: 1, room: "bad room!", name: "" })).toThrow(WireError);
    expect(() => encodeAudio({ seq: 1, timestamp: 0, payload: new Uint8Array(MAX_OPUS_PAYLOAD + 1) })).toThrow(WireError);
    expect(() => encodeAudio({ seq: -1, timestamp: 0, payload: new Uint8Array(10) })).toThrow(WireError);
    expect(() => encodeAudio({ seq: 1, timestamp: 0, payload: new Uint8Array(0) })).toThrow(WireError);
  });
});

describe("malformed messages are rejected with a typed error naming the field", () => {
  test("truncated", () => {
    const audio = body(encodeAudio({ seq: 1, timestamp: 2, payload: new Uint8Array(10) }));
    expectWireError(decodeMessage(audio.subarray(0, 5)), "truncated", "audio.header");
    // a complete header with no payload is not a truncation: it has its own reason (protocol.md)
    expectWireError(decodeMessage(audio.subarray(0, 9)), "empty_payload", "audio.payload");
    const join = body(encodeMessage({ type: "JOIN", version: 1, room: "room", name: "bob" }));
    expectWireError(decodeMessage(join.subarray(0, 1)), "truncated", "join.version");
    expectWireError(decodeMessage(join.subarray(0, 5)), "truncated", "join.room");
    expectWireError(decodeMessage(join.subarray(0, join.length - 1)), "truncated", "join.name");
    const j = body(encodeMessage(joined));
    expectWireError(decodeMessage(j.subarray(0, j.length - 3)), "truncated", "joined.serverTimeMs");
    expectWireError(decodeMessage(new Uint8Array([MessageType.PING, 0, 0])), "truncated", "ping.nonce");
    expectWireError(decodeMessage(new Uint8Array([MessageType.ERROR, 0, 3, 0, 10, 65])), "truncated", "error.message");
  });

  test("empty body", () => {
    expectWireError(decodeMessage(new Uint8Array(0)), "empty", "type");
  });

  test("bad type", () => {
    expectWireError(decodeMessage(new Uint8Array([0x7f, 1, 2])), "bad_type", "type");
    expectWireError(decodeMessage(new Uint8Array([0x00])), "bad_type", "type");
  });

  test("bad version", () => {
    const join = body(encodeMessage({ type: "JOIN", version: 1, room: "room", name: "" })).slice();
    join[1] = 3;
    const e = expectWireError(decodeMessage(join), "bad_version", "join.version");
    expect(wireErrorCodeFor(e.reason)).toBe(WireErrorCode.UNSUPPORTED_VERSION);
    // a future version with a different layout still gets "unsupported version", not a parse error
    expectWireError(decodeMessage(new Uint8Array([MessageType.JOIN, 9, 0xff])), "bad_version", "join.version");
  });

  test("bad room id", () => {
    const mk = (room: Uint8Array) => new Uint8Array([MessageType.JOIN, 1, room.length, ...room, 0]);
    const te = new TextEncoder();
    const e = expectWireError(decodeMessage(mk(te.encode("has space"))), "bad_room", "join.room");
    expect(wireErrorCodeFor(e.reason)).toBe(WireErrorCode.BAD_ROOM);
    expectWireError(decodeMessage(mk(te.encode("-leading-dash"))), "bad_room", "join.room");
    expectWireError(decodeMessage(mk(te.encode("x".repeat(65)))), "bad_room", "join.room");
    expectWireError(decodeMessage(mk(new Uint8Array(0))), "bad_room", "join.room");
    expectWireError(decodeMessage(mk(te.encode("caf\u00e9"))), "bad_room", "join.room");
    // 64 characters is the limit, inclusive
    expect(decodeMessage(mk(te.encode("x".repeat(64)))).ok).toBe(true);
  });

  test("bad display name", () => {
    const te = new TextEncoder();
    const mk = (name: Uint8Array) => new Uint8Array([MessageType.JOIN, 1, 1, 0x61, name.length, ...name]);
    expectWireError(decodeMessage(mk(new Uint8Array([0xff, 0xfe]))), "bad_field", "join.name");
    expectWireError(decodeMessage(mk(te.encode("a\u0007b"))), "bad_field", "join.name");
    expectWireError(decodeMessage(mk(te.encode("x".repeat(65)))), "bad_field", "join.name");
  });

  test("payload too big", () => {
    const b = new Uint8Array(9 + MAX_OPUS_PAYLOAD + 1);
    b[0] = MessageType.AUDIO;
    expectWireError(decodeMessage(b), "payload_too_big", "audio.payload");
  });

  test("oversize body", () => {
    expectWireError(decodeMessage(new Uint8Array(MAX_MESSAGE_LENGTH + 1)), "oversize", "length");
  });

  test("trailing bytes", () => {
    expectWireError(decodeMessage(new Uint8Array([MessageType.LEAVE, 0])), "trailing_bytes", "leave");
    expectWireError(decodeMessage(new Uint8Array([MessageType.PONG, 0, 0, 0, 1, 9])), "trailing_bytes", "pong");
  });

  test("JOINED with foreign codec parameters", () => {
    const j = body(encodeMessage({ ...joined, sampleRate: 16000 } as WireMessage));
    expectWireError(decodeMessage(j), "bad_field", "joined.codec");
  });
});

describe("MessageDecoder (stream framing)", () => {
  const msgs: WireMessage[] = [
    { type: "JOIN", version: 1, room: "r", name: "n" },
    { type: "AUDIO", seq: 1, timestamp: 960, payload: new Uint8Array([1, 2, 3]) },
    { type: "PING", nonce: 42 },
    { type: "AUDIO", seq: 2, timestamp: 1920, payload: new Uint8Array(300).fill(7) },
    { type: "LEAVE" },
  ];
  const stream = Uint8Array.from(msgs.flatMap((m) => [...encodeMessage(m)]));

  test("reassembles messages cut at every possible boundary", () => {
    for (const step of [1, 2, 3, 7, 64, stream.length]) {
      const d = new MessageDecoder();
      const out: WireMessage[] = [];
      for (let i = 0; i < stream.length; i += step) {
        const r = d.push(stream.subarray(i, i + step));
        expect(r.error).toBeUndefined();
        out.push(...r.messages);
      }
      expect(out).toEqual(msgs);
      expect(d.bufferedBytes).toBe(0);
    }
  });

  test("payloads do not alias the caller's chunk", () => {
    const d = new MessageDecoder();
    const chunk = encodeAudio({ seq: 1, timestamp: 0, payload: new Uint8Array([9, 9]) });
    const [m] = d.push(chunk).messages;
    chunk.fill(0);
    expect(m?.type === "AUDIO" && [...m.payload]).toEqual([9, 9]);
  });

  test("oversize length prefix fails before the body arrives", () => {
    const d = new MessageDecoder();
    const ok = encodeMessage({ type: "PING", nonce: 1 });
    const r = d.push(Uint8Array.from([...ok, 0xff, 0xff]));
    expect(r.messages).toHaveLength(1);
    expect(r.error?.reason).toBe("oversize");
    expect(r.error?.code).toBe("WIRE_PROTOCOL");
    // refuses further input once failed
    expect(d.push(ok).error?.reason).toBe("oversize");
    expect(d.push(ok).messages).toHaveLength(0);
  });

  test("zero length prefix", () => {
    expect(new MessageDecoder().push(new Uint8Array([0, 0])).error?.reason).toBe("empty");
  });

  test("a malformed message in the middle stops the stream", () => {
    const bad = new Uint8Array([0, 2, 0x55, 0]);
    const d = new MessageDecoder();
    const r = d.push(Uint8Array.from([...encodeMessage({ type: "PING", nonce: 1 }), ...bad, ...encodeMessage({ type: "LEAVE" })]));
    expect(r.messages).toEqual([{ type: "PING", nonce: 1 }]);
    expect(r.error?.reason).toBe("bad_type");
  });

  test("partial message is reported as buffered", () => {
    const d = new MessageDecoder();
    d.push(encodeMessage({ type: "LEAVE" }).subarray(0, 2));
    expect(d.bufferedBytes).toBe(2);
  });
});

test("seqDiff handles uint32 wrap-around", () => {
  expect(seqDiff(0, 0xffffffff)).toBe(1);
  expect(seqDiff(0xffffffff, 0)).toBe(-1);
  expect(seqDiff(10, 5)).toBe(5);
  expect(seqDiff(5, 10)).toBe(-5);
});

describe("1.1.0: extensions, REDIRECT, MOVE", () => {
  const PEER = "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq";

  test("JOIN and JOINED version 2 carry their extensions; version 1 has none", () => {
    const join: WireMessage = {
      type: "JOIN",
      version: 2,
      room: "lobby",
      name: "ann",
      capabilities: 0b1011,
      moveToken: new Uint8Array([9, 8, 7]),
      grant: new Uint8Array(300).fill(5),
    };
    expect(roundTrip(join)).toEqual(join);
    expect(roundTrip({ type: "JOIN", version: 2, room: "a", name: "" })).toEqual({ type: "JOIN", version: 2, room: "a", name: "" });
    const j2: WireMessage = { ...joined, version: 2, capabilities: 1, epoch: 7, role: 2 } as WireMessage;
    expect(roundTrip(j2)).toEqual(j2);
    expect(() => encodeMessage({ type: "JOIN", version: 1, room: "a", name: "", capabilities: 1 })).toThrow(WireError);
    // version 1 JOIN followed by extension bytes is still trailing garbage
    const v1 = body(encodeMessage({ type: "JOIN", version: 1, room: "a", name: "" }));
    expectWireError(decodeMessage(Uint8Array.from([...v1, 1, 0, 4, 0, 0, 0, 1])), "trailing_bytes", "join");
  });

  test("test vector: JOIN version 2 with capabilities and a move token (protocol.md)", () => {
    const bytes = encodeMessage({ type: "JOIN", version: 2, room: "r1", name: "A", capabilities: 1, moveToken: Uint8Array.of(0xab, 0xcd) });
    expect(Buffer.from(bytes).toString("hex")).toBe("00130102027231014101000400000001020002abcd");
  });

  test("unknown extension tags are skipped; a repeated tag or an overrun is an error", () => {
    const base = [...body(encodeMessage({ type: "JOIN", version: 2, room: "a", name: "" }))];
    const withUnknown = decodeMessage(Uint8Array.from([...base, 0x7e, 0, 2, 1, 2, 0x01, 0, 4, 0, 0, 0, 3]));
    expect(withUnknown.ok && withUnknown.value).toEqual({ type: "JOIN", version: 2, room: "a", name: "", capabilities: 3 });
    expectWireError(decodeMessage(Uint8Array.from([...base, 1, 0, 4, 0, 0, 0, 1, 1, 0, 4, 0, 0, 0, 1])), "bad_field", "join.extension[1]");
    expectWireError(decodeMessage(Uint8Array.from([...base, 1, 0, 9, 0])), "truncated", "join.extension[1]");
    expectWireError(decodeMessage(Uint8Array.from([...base, 1, 0, 2, 0, 0])), "bad_field", "join.capabilities");
    expectWireError(decodeMessage(Uint8Array.from([...base, 2, 0, 0])), "bad_field", "join.moveToken");
  });

  test("REDIRECT and MOVE round trip and are validated", () => {
    const redirect: WireMessage = {
      type: "REDIRECT",
      room: "lobby",
      epoch: 3,
      hostPeerId: PEER,
      addrs: ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4002/ws"],
    };
    expect(roundTrip(redirect)).toEqual(redirect);
    const move: WireMessage = {
      type: "MOVE",
      room: "lobby",
      epoch: 4,
      successorPeerId: PEER,
      addrs: ["/ip4/127.0.0.1/tcp/4003"],
      token: new Uint8Array(32).fill(1),
      reason: 1,
    };
    expect(roundTrip(move)).toEqual(move);
    expect(() => encodeMessage({ ...redirect, hostPeerId: "not-a-peer" } as WireMessage)).toThrow(WireError);
    expect(() => encodeMessage({ ...redirect, addrs: Array(17).fill("/ip4/1.2.3.4/tcp/1") } as WireMessage)).toThrow(WireError);
    const r = [...body(encodeMessage(redirect))];
    expectWireError(decodeMessage(Uint8Array.from(r.slice(0, -3))), "truncated", "redirect.addrs[1]");
    expectWireError(decodeMessage(Uint8Array.from([...r, 0])), "trailing_bytes", "redirect");
    const m = [...body(encodeMessage(move))];
    m[m.length - 1 - 32 - 2 - 1] = 0; // token length high byte stays 0; zero the low byte → empty token
    m[m.length - 1 - 32 - 1] = 0;
    expectWireError(decodeMessage(Uint8Array.from(m)), "bad_field", "move.token");
  });
});
