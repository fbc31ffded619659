/**
 * Listing rooms over in-process loopback nodes: hosts provide the rooms namespaces and serve their records
 * over /agora/rooms/1.0.0; a lister verifies each record and keeps only those signed by the host that
 * answered. A hostile host's replayed record of another host's room, a forged one and a stale one are dropped;
 * its own valid claim is listed (so its answer was read). The room-list answer stays within its byte bound.
 */
import { afterAll, expect, test } from "bun:test";
import type { Stream } from "@libp2p/interface";
import type { KadDHT } from "@libp2p/kad-dht";
import { silentLogger } from "../../src/log";
import {
  createDiscoveryClient,
  encodeRoomRecord,
  PROTOCOL_ROOMS,
  ROOMS_ALL_NAMESPACE,
  type RoomRecord,
  roomsRegionNamespace,
  signRoomRecord,
  type UnsignedRoomRecord,
} from "../../src/p2p";
import { namespaceCid } from "../../src/p2p/namespaces";
import { encodeRoomList, MAX_LISTED_ROOMS, MAX_ROOM_LIST_BYTES } from "../../src/p2p/room-directory";
import { cleanupDirs, startTestNode, stopAll, type TestNode, waitFor } from "./helpers";

const nodes: TestNode[] = [];
afterAll(async () => {
  await stopAll(nodes);
  cleanupDirs();
});

function unsigned(room: string, host: string, over: Partial<UnsignedRoomRecord> = {}): UnsignedRoomRecord {
  return {
    room,
    region: "eu-west",
    host,
    addrs: [],
    participants: 1,
    epoch: 1,
    seq: Date.now(),
    last_seen: Date.now() / 1000,
    ttl_seconds: 3600,
    status: "active",
    open: true,
    ...over,
  };
}

test("a lister keeps only records signed by the host that served them", async () => {
  const boot = await startTestNode({ mode: "bootstrap", heartbeat: 30 });
  nodes.push(boot);
  const [a, h] = await Promise.all([
    startTestNode({ heartbeat: 30, bootstrap: [boot.addr] }),
    // Not a mixer: no room directory of its own; the test plays its room-list protocol by hand.
    startTestNode({ heartbeat: 30, bootstrap: [boot.addr], capabilities: ["hostile"] }),
  ]);
  nodes.push(a, h);
  expect(h.node.rooms).toBeUndefined();
  const alpha = await a.node.rooms!.claim("alpha", { epoch: 1, participants: 2 });

  const hId = h.node.peerId;
  const hostile: RoomRecord[] = [
    alpha, // replayed: A's genuine record, served by H
    await signRoomRecord(unsigned("beta", a.node.peerId), h.privateKey), // forged: names A, signed by H
    await signRoomRecord(unsigned("gamma", hId, { last_seen: Date.now() / 1000 - 7200 }), h.privateKey), // stale
    await signRoomRecord(unsigned("delta", hId), h.privateKey), // H's own valid claim
  ];
  await h.node.libp2p.handle(PROTOCOL_ROOMS, async (stream: Stream) => {
    stream.send(new TextEncoder().encode(JSON.stringify({ rooms: hostile })));
    await stream.close();
  });
  for (const ns of [roomsRegionNamespace("eu-west"), ROOMS_ALL_NAMESPACE]) {
    const cid = await namespaceCid(ns);
    for await (const _ of (h.node.libp2p.services as { dht: KadDHT }).dht.provide(cid, { signal: AbortSignal.timeout(20_000) })) {
      /* drain */
    }
  }

  const client = await createDiscoveryClient({ bootstrap: [boot.addr], logger: silentLogger() });
  try {
    const listed = await waitFor(
      "both hosts' rooms listed",
      async () => {
        const l = await client.listRooms({ region: "eu-west", timeoutMs: 5_000 });
        return l.some((x) => x.record.room === "alpha") && l.some((x) => x.record.room === "delta") ? l : undefined;
      },
      30_000,
      200,
    );
    expect(listed.map((x) => `${x.record.room}@${x.record.host}`).sort()).toEqual([`alpha@${a.node.peerId}`, `delta@${hId}`]);
    expect(listed.find((x) => x.record.room === "alpha")!.record.participants).toBe(2);
    // Without a region, through /agora/rooms-all: the same rooms.
    const all = await client.listRooms({ timeoutMs: 5_000 });
    expect(all.map((x) => x.record.room).sort()).toEqual(["alpha", "delta"]);
    // Another region: nothing.
    expect(await client.listRooms({ region: "us-east", timeoutMs: 3_000 })).toEqual([]);
  } finally {
    await client.stop();
  }
}, 90_000);

test("the room-list answer holds at most MAX_LISTED_ROOMS records, busiest first, within MAX_ROOM_LIST_BYTES", async () => {
  const { generateKeyPair } = await import("@libp2p/crypto/keys");
  const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
  const key = await generateKeyPair("Ed25519");
  const host = peerIdFromPrivateKey(key).toString();
  const revocations = Array.from({ length: 64 }, (_, i) => ({ id: i.toString(16).padStart(64, "0"), until: 1e13 }));
  const recs: RoomRecord[] = [];
  for (let i = 0; i < MAX_LISTED_ROOMS + 10; i++)
    recs.push(await signRoomRecord(unsigned(`big-${i}`, host, { participants: i, revocations }), key));
  expect(encodeRoomRecord(recs[0]!).byteLength).toBeGreaterThan(6000);
  const bytes = encodeRoomList(recs);
  expect(bytes.byteLength).toBeLessThanOrEqual(MAX_ROOM_LIST_BYTES);
  const list = (JSON.parse(new TextDecoder().decode(bytes)) as { rooms: RoomRecord[] }).rooms;
  expect(list.length).toBeGreaterThan(0);
  expect(list.length).toBeLessThan(MAX_LISTED_ROOMS);
  expect(list[0]!.participants).toBe(MAX_LISTED_ROOMS + 9);
  const small = recs.slice(0, 70).map((r) => ({ ...r, revocations: undefined }));
  expect((JSON.parse(new TextDecoder().decode(encodeRoomList(small))) as { rooms: unknown[] }).rooms.length).toBe(MAX_LISTED_ROOMS);
});
