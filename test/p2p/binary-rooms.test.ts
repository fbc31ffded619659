/**
 * Room records with real processes of the compiled binary on 127.0.0.1: a bootstrap node and two mixers.
 * A participant joins a room by name; the mixer placement picks (the host, "A") claims it; its record is
 * stored by the other DHT servers (the other mixer, "B", answers GET_VALUE with it), resolves from a client
 * (SDK resolveRoom), and `agora-node rooms` lists it. A hostile peer's room records, put straight to every
 * server, are each refused and counted by reason: forged (signed by a key other than the host it names),
 * stale, oversized, a lower-epoch claim. A's record stays where it was; when the participant leaves, the
 * room stops resolving.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { multiaddr } from "@multiformats/multiaddr";
import { joinRoom, type RoomConnection, resolveRoom } from "../../src/client";
import { encodeRoomRecord, type RoomRecord, roomRecordKey, signRoomRecord, type UnsignedRoomRecord, verifyRoomRecord } from "../../src/p2p";
import { type NodeHandle, runCli, startNode } from "../helpers/node-process";
import { cleanupDirs, createHostilePeer, type HostilePeer, waitFor } from "./helpers";
import { RawDhtSession } from "./raw-dht";

const HEARTBEAT_S = 2;
const ROOM = "binary-rooms";
const KEY = roomRecordKey(ROOM);
const procs: Record<string, NodeHandle> = {};
let bootAddr = "";
let participant: RoomConnection | undefined;
let evil: HostilePeer;

async function metric(h: NodeHandle, name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(" ").pop()) : 0;
}

async function apiRooms(
  h: NodeHandle,
): Promise<{ id: string; directory?: { hosted_here: boolean; epoch: number; last_published_at: string | null } }[]> {
  return (await (await fetch(`${h.dashboardUrl}/api/rooms`)).json()) as never;
}

const servers = () => [procs.boot!, procs.m1!, procs.m2!];
// procs.a: the mixer hosting the room ("A"), procs.b: the other one ("B"), known once the participant joined.

beforeAll(async () => {
  procs.boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  bootAddr = await procs.boot.multiaddr();
  const mixer = () =>
    startNode({ args: ["--mode", "dedicated", "--region", "eu-west", "--heartbeat-interval", `${HEARTBEAT_S}s`, "--bootstrap", bootAddr] });
  [procs.m1, procs.m2] = await Promise.all([mixer(), mixer()]);
  evil = await createHostilePeer();
}, 120_000);

afterAll(async () => {
  await participant?.leave().catch(() => undefined);
  await evil?.stop().catch(() => undefined);
  for (const p of new Set(Object.values(procs))) p.cleanup();
  cleanupDirs();
});

describe("room records between binary processes", () => {
  let hostRecord: RoomRecord;

  test("a JOIN by name makes the placed mixer (A) claim the room; B stores its record; a client resolves it; `rooms` lists it", async () => {
    participant = await joinRoom({ bootstrap: [bootAddr], region: "eu-west", room: ROOM, name: "p1", timeoutMs: 30_000 });
    const hosting = await waitFor(
      "a mixer publishes the room's record",
      async () => {
        for (const m of [procs.m1!, procs.m2!])
          if ((await apiRooms(m)).some((r) => r.id === ROOM && r.directory?.hosted_here && r.directory.last_published_at !== null))
            return m;
        return undefined;
      },
      30_000,
      200,
    );
    procs.a = hosting;
    procs.b = hosting === procs.m1 ? procs.m2! : procs.m1!;
    const aId = await procs.a!.peerId();
    const a = (await apiRooms(procs.a!)).find((r) => r.id === ROOM)!;
    expect(a.directory!.epoch).toBeGreaterThanOrEqual(1);

    // Mixer B, as a DHT server, holds A's record and hands it out.
    const bSession = new RawDhtSession(evil.libp2p, multiaddr(await procs.b!.multiaddr()));
    const stored = await waitFor("B stores the record", () => bSession.get(KEY), 30_000, 200);
    hostRecord = await verifyRoomRecord(KEY, stored);
    expect(hostRecord).toMatchObject({ room: ROOM, host: aId, region: "eu-west", epoch: a.directory!.epoch, status: "active", open: true });
    expect(hostRecord.addrs.some((x) => x.endsWith(`/tcp/${procs.a!.p2pPort}`))).toBe(true);
    bSession.close();

    // A client that knows only the bootstrap node resolves the room to A.
    const resolved = await waitFor(
      "the SDK resolves the room with its participant (the count rides on the next heartbeat)",
      async () => {
        const r = await resolveRoom({ bootstrap: [bootAddr], room: ROOM, timeoutMs: 10_000 });
        return r?.participants === 1 ? r : undefined;
      },
      30_000,
      300,
    );
    expect(resolved.host).toBe(aId);
    expect(resolved.participants).toBe(1);

    // `agora-node rooms` lists it with its host, participants, age and epoch.
    const listed = await waitFor(
      "agora-node rooms lists the room",
      async () => {
        const r = await runCli(["rooms", "--bootstrap", bootAddr, "--region", "eu-west", "--json", "--timeout", "8"], {
          timeoutMs: 30_000,
        });
        if (r.code !== 0) throw new Error(r.stderr);
        return (JSON.parse(r.stdout) as { record: RoomRecord; age_seconds: number }[]).find(
          (x) => x.record.room === ROOM && x.record.participants === 1,
        );
      },
      45_000,
      300,
    );
    expect(listed.record.host).toBe(aId);
    expect(listed.record.participants).toBe(1);
    expect(listed.record.epoch).toBe(hostRecord.epoch);
    expect(listed.age_seconds).toBeLessThan(3 * HEARTBEAT_S + 1);
    const text = await runCli(["rooms", "--bootstrap", bootAddr, "--timeout", "8"], { timeoutMs: 30_000 });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(ROOM);
  }, 180_000);

  test("forged, stale, oversized and lower-epoch records are refused by every DHT server and counted", async () => {
    const aId = await procs.a!.peerId();
    const base = (over: Partial<UnsignedRoomRecord>): UnsignedRoomRecord => ({
      room: ROOM,
      region: "eu-west",
      host: evil.peerId,
      addrs: ["/ip4/127.0.0.1/tcp/9"],
      participants: 1000,
      epoch: 0,
      seq: Number.MAX_SAFE_INTEGER,
      last_seen: Date.now() / 1000,
      ttl_seconds: 3600,
      status: "active",
      open: true,
      ...over,
    });
    const attacks: [string, () => Promise<Uint8Array>][] = [
      // Names A as its host (so it would win every tie), but is signed with the hostile peer's key.
      ["bad_signature", async () => encodeRoomRecord(await signRoomRecord(base({ host: aId, epoch: 1_000_000 }), evil.key))],
      [
        "stale",
        async () => encodeRoomRecord(await signRoomRecord(base({ epoch: 1_000_000, last_seen: Date.now() / 1000 - 7200 }), evil.key)),
      ],
      [
        "oversized",
        async () =>
          encodeRoomRecord(await signRoomRecord({ ...base({ epoch: 1_000_000 }), pad: "x".repeat(9000) } as UnsignedRoomRecord, evil.key)),
      ],
      // Valid and signed by its own host, but a lower epoch than A's live claim (epoch ≥ 1).
      ["lower_epoch", async () => encodeRoomRecord(await signRoomRecord(base({ epoch: 0 }), evil.key))],
    ];
    // Every server holds A's live claim before the attacks (a busy machine may have delayed a put).
    for (const h of servers()) {
      const session = new RawDhtSession(evil.libp2p, multiaddr(await h.multiaddr()));
      await waitFor("the server holds A's claim", async () => (await session.get(KEY)) !== null, 30_000, 200);
      session.close();
    }
    for (const [reason, make] of attacks) {
      const value = await make();
      for (const h of servers()) {
        const before = await metric(h, "agora_rooms_records_rejected_total", `reason="${reason}"`);
        const session = new RawDhtSession(evil.libp2p, multiaddr(await h.multiaddr()));
        expect(`${reason} stored: ${await session.put(KEY, value)}`).toBe(`${reason} stored: false`);
        session.close();
        await waitFor(
          `${reason} counted`,
          async () => (await metric(h, "agora_rooms_records_rejected_total", `reason="${reason}"`)) > before,
          10_000,
          100,
        );
      }
    }
    // Nothing was stolen: every server still hands out A's claim.
    for (const h of servers()) {
      const session = new RawDhtSession(evil.libp2p, multiaddr(await h.multiaddr()));
      const rec = await verifyRoomRecord(KEY, (await session.get(KEY))!);
      session.close();
      expect(rec.host).toBe(aId);
      expect(rec.epoch).toBe(hostRecord.epoch);
    }
    expect((await resolveRoom({ bootstrap: [bootAddr], room: ROOM, timeoutMs: 10_000 }))?.host).toBe(aId);
  }, 120_000);

  test("when the last participant leaves, the room stops resolving", async () => {
    await participant!.leave();
    participant = undefined;
    await waitFor(
      "the room no longer resolves",
      async () => (await resolveRoom({ bootstrap: [bootAddr], room: ROOM, timeoutMs: 5_000 })) === undefined,
      3 * HEARTBEAT_S * 1000 + 30_000,
      300,
    );
  }, 90_000);
});
