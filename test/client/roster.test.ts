/**
 * The SDK's roster: RosterView's reassembly on its own, then joinRoom against an in-process room service
 * (fake media engine whose speaking flags the test sets): `participants`, `speaking`, 1.0.0 and
 * non-announcing sessions left alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import type { RoomStats as EngineRoomStats } from "../../src/audio";
import { AudioSession, joinRoom, type Participant, RosterView } from "../../src/client";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOL_1_1,
  Capability,
  encodeMessage,
  type RosterEntry,
  WireErrorCode,
  type WireMessage,
} from "../../src/protocol";
import { AudioRoomService } from "../../src/rooms";
import { createBareClientNode, createFakeCodec, createServerNode, FakeMediaEngine, openRaw, waitFor } from "../helpers/net-fakes";

const entry = (id: string, speaking = false): RosterEntry => ({ participantId: id, name: id.toUpperCase(), speaking });

describe("RosterView", () => {
  test("pages are reassembled; speaking updates apply to their snapshot only", () => {
    const v = new RosterView("b");
    expect(v.apply({ type: "ROSTER", kind: "snapshot", rev: 5, total: 3, listed: 3, index: 0, entries: [entry("a"), entry("b")] })).toEqual(
      {
        membership: false,
        speaking: [],
      },
    );
    expect(v.participants).toEqual([]); // incomplete snapshot: nothing yet
    const done = v.apply({ type: "ROSTER", kind: "snapshot", rev: 5, total: 3, listed: 3, index: 2, entries: [entry("c", true)] });
    expect(done).toEqual({ membership: true, speaking: [{ id: "c", name: "C", speaking: true, self: false }] });
    expect(v.participants.map((p) => [p.id, p.self])).toEqual([
      ["a", false],
      ["b", true],
      ["c", false],
    ]);
    expect(v.total).toBe(3);
    // stale revision: ignored
    expect(v.apply({ type: "ROSTER", kind: "speaking", rev: 4, speaking: [true, true, true] })).toEqual({
      membership: false,
      speaking: [],
    });
    const s = v.apply({ type: "ROSTER", kind: "speaking", rev: 5, speaking: [true, false, false] });
    expect(s).toEqual({
      membership: false,
      speaking: [
        { id: "a", name: "A", speaking: true, self: false },
        { id: "c", name: "C", speaking: false, self: false },
      ],
    });
    // a speaker who leaves stops speaking
    const left = v.apply({ type: "ROSTER", kind: "snapshot", rev: 6, total: 2, listed: 2, index: 0, entries: [entry("b"), entry("c")] });
    expect(left).toEqual({ membership: true, speaking: [{ id: "a", name: "A", speaking: false, self: false }] });
  });

  test("out-of-sequence pages and mismatched flag counts are WIRE_PROTOCOL errors that keep the last good list", () => {
    const v = new RosterView("a");
    v.apply({ type: "ROSTER", kind: "snapshot", rev: 1, total: 1, listed: 1, index: 0, entries: [entry("a")] });
    const gap = v.apply({ type: "ROSTER", kind: "snapshot", rev: 2, total: 3, listed: 3, index: 1, entries: [entry("b")] });
    expect(gap).toBeInstanceOf(AgoraError);
    expect((gap as AgoraError).code).toBe("WIRE_PROTOCOL");
    expect((gap as AgoraError).message).toContain("roster.index");
    const count = v.apply({ type: "ROSTER", kind: "speaking", rev: 1, speaking: [true, true] });
    expect(count).toBeInstanceOf(AgoraError);
    expect(v.participants.map((p) => p.id)).toEqual(["a"]);
  });
});

class SpeakingEngine extends FakeMediaEngine {
  readonly speakingIds = new Set<string>();
  override rooms(): EngineRoomStats[] {
    return super.rooms().map((r) => ({ ...r, participants: r.participants.map((p) => ({ ...p, speaking: this.speakingIds.has(p.id) })) }));
  }
}

describe("joinRoom's roster", () => {
  let node: Libp2p;
  let addr: Multiaddr;
  let engine: SpeakingEngine;
  let service: AudioRoomService;
  let client: Libp2p;
  let registry: Registry;

  beforeAll(async () => {
    client = await createBareClientNode();
    ({ node, addr } = await createServerNode());
    engine = new SpeakingEngine();
    registry = new Registry();
    service = new AudioRoomService({ libp2p: node, engine, registry, logger: silentLogger() });
    await service.start();
  });
  afterAll(async () => {
    await client.stop();
    await service.stop();
    await node.stop();
  });

  test("participants on join and on change, speaking events from the engine's stats", async () => {
    const codec = createFakeCodec();
    const a = await joinRoom({ node: addr, room: "roster", name: "alice", codec, libp2p: client });
    // The snapshot follows JOINED at once; it may come in the same chunk (then it is there on resolve) or the next.
    await waitFor(() => a.participants.length === 1, "alice's first roster");
    expect(a.participants.map((p) => [p.name, p.self])).toEqual([["alice", true]]);
    const lists: string[][] = [];
    a.on("participants", (e) => lists.push(e.participants.map((p) => p.name)));
    const b = await joinRoom({ node: addr, room: "roster", name: "bob", codec, libp2p: client });
    await waitFor(() => b.participants.length === 2, "bob's first roster");
    expect(b.participants.map((p) => [p.name, p.self])).toEqual([
      ["alice", false],
      ["bob", true],
    ]);
    await waitFor(() => lists.length > 0, "alice's participants event");
    expect(lists.at(-1)).toEqual(["alice", "bob"]);
    expect(a.participantTotal).toBe(2);

    const speaking: [string, boolean][] = [];
    a.on("speaking", (e) => speaking.push([e.participant.name, e.speaking]));
    engine.speakingIds.add(b.participantId);
    await waitFor(() => speaking.length >= 1, "speaking event");
    expect(speaking).toEqual([["bob", true]]);
    expect(a.participants.find((p) => p.id === b.participantId)?.speaking).toBe(true);
    engine.speakingIds.clear();
    await waitFor(() => speaking.length >= 2, "stopped-speaking event");
    expect(speaking[1]).toEqual(["bob", false]);

    await b.leave();
    await waitFor(() => a.participants.length === 1, "bob gone from alice's list");
    expect(lists.at(-1)).toEqual(["alice"]);
    await a.leave();
  });

  test("a 1.0.0 session and a 1.1.0 session without the capability get no ROSTER but are listed", async () => {
    const a = await joinRoom({ node: addr, room: "roster-old", name: "new", codec: createFakeCodec(), libp2p: client });
    // Either would end with "unexpected ROSTER" if the server sent one (no onRoster handler).
    const old = await AudioSession.open({ libp2p: client, target: addr, room: "roster-old", name: "old", protocol: AUDIO_PROTOCOL });
    const plain = await AudioSession.open({
      libp2p: client,
      target: addr,
      room: "roster-old",
      name: "plain",
      protocol: AUDIO_PROTOCOL_1_1,
    });
    expect(old.wireVersion).toBe(1);
    expect(plain.wireVersion).toBe(2);
    await waitFor(() => a.participants.length === 3, "three participants listed");
    expect(a.participants.map((p: Participant) => p.name)).toEqual(["new", "old", "plain"]);
    // still open after several roster intervals: nothing unexpected arrived
    const until = performance.now() + 600;
    await waitFor(() => performance.now() > until, "600 ms");
    expect(old.isOpen && plain.isOpen).toBe(true);
    await old.leave();
    await plain.leave();
    await a.leave();
  });

  test("a client sending ROSTER is closed with UNEXPECTED_MESSAGE and counted; the room's others keep their audio", async () => {
    const other = await joinRoom({ node: addr, room: "roster-bad", name: "other", codec: createFakeCodec(), libp2p: client });
    const raw = await openRaw(client, addr, AUDIO_PROTOCOL_1_1);
    raw.send(encodeMessage({ type: "JOIN", version: 2, room: "roster-bad", name: "bad", capabilities: Capability.ROSTER }));
    await waitFor(() => raw.messages.some((m) => m.type === "ROSTER"), "the bad client's own snapshot");
    raw.send(encodeMessage({ type: "ROSTER", kind: "speaking", rev: 1, speaking: [true] }));
    await waitFor(() => raw.isClosed(), "the bad client's stream closed");
    const err = raw.messages.find((m): m is Extract<WireMessage, { type: "ERROR" }> => m.type === "ERROR");
    expect(err?.code).toBe(WireErrorCode.UNEXPECTED_MESSAGE);
    const errors = await registry.getSingleMetric("agora_audio_stream_errors_total")!.get();
    expect(errors.values.find((v) => v.labels.reason === "unexpected_message")?.value).toBe(1);
    await waitFor(() => other.participants.length === 1, "the bad client gone from the list");
    expect(other.isOpen).toBe(true);
    // the other participant's audio still reaches the engine (a valid 20 ms CELT packet)
    other.sendOpus(Uint8Array.of(0xf8, 0xff, 0xfe));
    await waitFor(() => engine.pushed.some((p) => p.room === "roster-bad" && p.participant === other.participantId), "audio still flowing");
    await other.leave();
  });
});
