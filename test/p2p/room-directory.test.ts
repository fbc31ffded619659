/**
 * The room directory on virtual time against an in-memory DHT that applies the real validator and selector:
 * claim publishes at once and the heartbeat re-signs every interval (ttl 3 × interval); a dead host's record
 * stops resolving within 3 intervals; resolve ignores records older than 3 intervals whatever their ttl; a
 * claim that loses to a better one is counted and reported; release publishes a 1 s record.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PeerId, PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { silentLogger } from "../../src/log";
import { type RoomClock, RoomDirectory, type RoomDirectoryComponents } from "../../src/p2p/room-directory";
import { RoomMetrics } from "../../src/p2p/room-metrics";
import {
  encodeRoomRecord,
  type RoomRecord,
  roomRecordKey,
  roomTieBreak,
  signRoomRecord,
  verifyRoomRecord,
} from "../../src/p2p/room-record";
import { createRecordValidation } from "../../src/p2p/validator";
import { VirtualClock } from "../helpers/virtual-clock";

const T0_MS = 1_800_000_000_000;
const INTERVAL = 1_000;

/** One DHT "server": the validator (signature, freshness, epoch guard) then the stored value per key. */
function fakeDht(nowMs: () => number) {
  const validation = createRecordValidation({ now: () => nowMs() / 1000 });
  const values = new Map<string, Uint8Array>();
  const puts: RoomRecord[] = [];
  return {
    values,
    puts,
    validation,
    async *put(key: Uint8Array, value: Uint8Array) {
      await validation.validators.agora!(key, value);
      values.set(new TextDecoder().decode(key), value);
      puts.push(JSON.parse(new TextDecoder().decode(value)) as RoomRecord);
      yield { name: "PEER_RESPONSE", messageName: "PUT_VALUE", record: { value } } as never;
    },
    async *get(key: Uint8Array) {
      const v = values.get(new TextDecoder().decode(key));
      if (!v) return;
      try {
        await validation.validators.agora!(key, v);
      } catch {
        return; // expired: a server does not serve it
      }
      yield { name: "VALUE", value: v } as never;
    },
    async *provide() {},
  };
}

/**
 * Several fake DHT servers; each directory reaches the servers its view lists (a partition is two disjoint
 * views). A refused put is a QUERY_ERROR from that server, as a reset stream is in kad-dht.
 */
function fakeCluster(nowMs: () => number, n: number) {
  const servers = Array.from({ length: n }, () => fakeDht(nowMs));
  const view = (reach: number[]) => ({
    reach,
    async *put(key: Uint8Array, value: Uint8Array) {
      for (const i of this.reach) {
        try {
          for await (const ev of servers[i]!.put(key, value)) yield ev;
        } catch (err) {
          yield { name: "QUERY_ERROR", error: err } as never;
        }
      }
    },
    async *get(key: Uint8Array) {
      for (const i of this.reach) yield* servers[i]!.get(key);
    },
    async *provide() {},
  });
  return { servers, view };
}

async function identity(): Promise<{ key: PrivateKey; peerId: PeerId }> {
  const key = await generateKeyPair("Ed25519");
  return { key, peerId: peerIdFromPrivateKey(key) };
}

async function directory(
  dht: Pick<ReturnType<typeof fakeDht>, "put" | "get" | "provide">,
  clock: RoomClock,
  metrics = new RoomMetrics(),
  id?: { key: PrivateKey; peerId: PeerId },
) {
  id ??= await identity();
  const components: RoomDirectoryComponents = {
    peerId: id.peerId,
    privateKey: id.key,
    addressManager: { getAddresses: () => [multiaddr(`/ip4/127.0.0.1/tcp/7001/p2p/${id.peerId}`)] },
    registrar: { handle: async () => {}, unhandle: async () => {} },
    dht: dht as unknown as RoomDirectoryComponents["dht"],
  };
  const dir = new RoomDirectory(components, { logger: silentLogger(), region: "eu-west", intervalMs: INTERVAL, metrics, clock });
  await dir.start();
  return { dir, id, metrics };
}

/** Lets a few rounds of promise continuations run (no wall time involved). */
async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error("condition not reached");
}

function clocks() {
  const vc = new VirtualClock();
  const clock: RoomClock = {
    now: () => T0_MS + vc.now(),
    setTimeout: (fn, ms) => vc.setTimeout(fn, ms),
    clearTimeout: (h) => vc.clearTimeout(h),
  };
  return { vc, clock };
}

describe("room directory", () => {
  test("claim publishes now, the heartbeat re-signs every interval, ttl is 3 intervals; a dead host is gone within 3", async () => {
    const { vc, clock } = clocks();
    const dht = fakeDht(clock.now);
    const { dir, id } = await directory(dht, clock);
    const rec = await dir.claim("standup", { epoch: 1, participants: 2 });
    expect(rec).toMatchObject({
      room: "standup",
      host: id.peerId.toString(),
      epoch: 1,
      participants: 2,
      status: "active",
      open: true,
      region: "eu-west",
    });
    expect(rec.ttl_seconds).toBe(3);
    expect(rec.addrs).toEqual(["/ip4/127.0.0.1/tcp/7001"]);
    expect(dht.puts.length).toBe(1);

    dir.setParticipants("standup", 5);
    await vc.advance(INTERVAL);
    expect(dht.puts.length).toBe(2);
    expect(dht.puts[1]!.participants).toBe(5);
    expect(dht.puts[1]!.seq).toBeGreaterThan(dht.puts[0]!.seq);
    expect(dht.puts[1]!.last_seen).toBe((T0_MS + INTERVAL) / 1000);
    await vc.advance(INTERVAL);
    expect(dht.puts.length).toBe(3);

    // Another node resolves it.
    const other = await directory(dht, clock);
    expect((await other.dir.resolve("standup"))?.host).toBe(id.peerId.toString());

    // The host dies: no more heartbeats. Within 3 intervals of its last record, nobody resolves it.
    const lastSigned = dht.puts.at(-1)!.last_seen * 1000;
    await dir.stop();
    await vc.advance(lastSigned + 3 * INTERVAL + 1 - clock.now());
    expect(dht.puts.length).toBe(3);
    expect(await other.dir.resolve("standup")).toBeUndefined();
    await other.dir.stop();
  });

  test("resolve ignores records older than 3 intervals whatever their ttl, and prefers the better of its own and the DHT's", async () => {
    const { clock } = clocks();
    const dht = fakeDht(clock.now);
    const { dir } = await directory(dht, clock);
    const far = await identity();
    const old = await signRoomRecord(
      {
        room: "old",
        region: "eu-west",
        host: far.peerId.toString(),
        addrs: [],
        participants: 1,
        epoch: 9,
        seq: 1,
        last_seen: (clock.now() - 4 * INTERVAL) / 1000,
        ttl_seconds: 3600,
        status: "active",
        open: true,
      },
      far.key,
    );
    dht.values.set(roomRecordKey("old"), encodeRoomRecord(old));
    expect(await dir.resolve("old")).toBeUndefined();

    await dir.claim("mine", { epoch: 1 });
    expect((await dir.resolve("mine"))?.epoch).toBe(1);
    await dir.stop();
  });

  test("a claim that loses to a better live one is counted, reported and no longer hosted", async () => {
    const { vc, clock } = clocks();
    const dht = fakeDht(clock.now);
    const winner = await directory(dht, clock);
    await winner.dir.claim("standup", { epoch: 5 });
    const metrics = new RoomMetrics();
    const loser = await directory(dht, clock, metrics);
    const lost: [string, RoomRecord][] = [];
    loser.dir.on({ onClaimLost: (room, rec) => lost.push([room, rec]) });
    await loser.dir.claim("standup", { epoch: 1 });
    expect(lost.length).toBe(1);
    expect(lost[0]![0]).toBe("standup");
    expect(lost[0]![1].host).toBe(winner.id.peerId.toString());
    expect(loser.dir.current("standup")).toBeUndefined();
    expect((await metrics.claimsLost.get()).values[0]!.value).toBe(1);
    expect(dht.validation.roomMetrics.rejectedCount("lower_epoch")).toBe(1);
    // It no longer re-publishes the room.
    const before = dht.puts.length;
    await vc.advance(INTERVAL);
    expect(dht.puts.filter((p) => p.host === loser.id.peerId.toString()).length).toBe(0);
    expect(dht.puts.length).toBe(before + 1);
    await winner.dir.stop();
    await loser.dir.stop();
  });

  test("after a partition heals, the claim that loses the tie-break learns it from the refusals and gives up", async () => {
    const { vc, clock } = clocks();
    const cluster = fakeCluster(clock.now, 2);
    const [i1, i2] = [await identity(), await identity()];
    const firstWins = roomTieBreak("standup", i1.peerId.toString()) < roomTieBreak("standup", i2.peerId.toString());
    const [wId, lId] = firstWins ? [i1, i2] : [i2, i1];
    const wView = cluster.view([0]);
    const lView = cluster.view([1]);
    const winner = await directory(wView, clock, new RoomMetrics(), wId);
    const lMetrics = new RoomMetrics();
    const loser = await directory(lView, clock, lMetrics, lId);
    const lost: string[] = [];
    loser.dir.on({ onClaimLost: (_room, rec) => lost.push(rec.host) });
    // Both sides of the partition claim the room at epoch 1: each side's server accepts its own.
    await winner.dir.claim("standup", { epoch: 1 });
    await loser.dir.claim("standup", { epoch: 1 });
    expect(lost).toEqual([]);
    // Heal: both reach both servers from now on.
    wView.reach = [0, 1];
    lView.reach = [0, 1];
    await vc.advance(INTERVAL);
    await waitUntil(() => lost.length > 0);
    expect(lost).toEqual([wId.peerId.toString()]);
    expect(loser.dir.current("standup")).toBeUndefined();
    expect(winner.dir.current("standup")).toBeDefined();
    expect((await lMetrics.claimsLost.get()).values[0]!.value).toBe(1);
    // Every server ends up with the winner's claim, and the loser publishes the room no more.
    await vc.advance(INTERVAL);
    for (const srv of cluster.servers) {
      const held = JSON.parse(new TextDecoder().decode(srv.values.get(roomRecordKey("standup"))!)) as RoomRecord;
      expect(held.host).toBe(wId.peerId.toString());
    }
    await winner.dir.stop();
    await loser.dir.stop();
  });

  test("release publishes a last record with a 1 s ttl and 0 participants, then stops", async () => {
    const { vc, clock } = clocks();
    const dht = fakeDht(clock.now);
    const { dir } = await directory(dht, clock);
    await dir.claim("standup", { epoch: 2, participants: 3 });
    await dir.release("standup");
    const last = dht.puts.at(-1)!;
    expect(last).toMatchObject({ ttl_seconds: 1, participants: 0, epoch: 2 });
    await verifyRoomRecord(roomRecordKey("standup"), encodeRoomRecord(last), { now: clock.now() / 1000 });
    const n = dht.puts.length;
    await vc.advance(3 * INTERVAL);
    expect(dht.puts.length).toBe(n);
    expect(dir.hostedRooms()).toEqual([]);
    await dir.stop();
  });

  test("update to handing-over carries the successor; handover and redirect counters feed info() and the metrics", async () => {
    const { clock } = clocks();
    const dht = fakeDht(clock.now);
    const metrics = new RoomMetrics();
    const { dir } = await directory(dht, clock, metrics);
    const succ = (await identity()).peerId.toString();
    await dir.claim("standup", { epoch: 1 });
    await expect(dir.update("standup", { status: "handing-over" })).rejects.toThrow(/successor/);
    const rec = await dir.update("standup", { status: "handing-over", successor: succ });
    expect(rec).toMatchObject({ status: "handing-over", successor: succ, epoch: 1 });
    const back = await dir.update("standup", { status: "active", epoch: 2 });
    expect(back.successor).toBeUndefined();
    dir.countHandover("standup", "in");
    dir.countHandover("gone", "out");
    dir.countRedirect();
    expect(dir.info()).toEqual([
      {
        room: "gone",
        hosted_here: false,
        epoch: 0,
        status: "active",
        participants: 0,
        handovers_in: 0,
        handovers_out: 1,
        last_published_at: null,
      },
      {
        room: "standup",
        hosted_here: true,
        epoch: 2,
        status: "active",
        participants: 0,
        handovers_in: 1,
        handovers_out: 0,
        last_published_at: clock.now(),
      },
    ]);
    const h = (await metrics.handovers.get()).values;
    expect(h.find((v) => v.labels.direction === "in")?.value).toBe(1);
    expect(h.find((v) => v.labels.direction === "out")?.value).toBe(1);
    expect((await metrics.redirects.get()).values[0]!.value).toBe(1);
    await dir.stop();
  });
});
