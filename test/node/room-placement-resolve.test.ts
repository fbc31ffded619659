/**
 * The heartbeat's reconcile lookup (src/node/room-placement.ts directoryPort, RECONCILE_RESOLVE) waits for
 * answers that arrive late, as the other side's servers do right after a partition heals (fresh dials), so
 * the better competing claim is found on that beat; a JOIN's quick lookup and the defaults stop early. And
 * the heartbeat's reconcile does not wait behind a mixer discovery stuck on unreachable mixers.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { createRoomPlacement, directoryPort, RECONCILE_RESOLVE } from "../../src/node/room-placement";
import { encodeRoomRecord, type NetworkNode, type RoomDirectory, type RoomRecord, resolveRoomRecord, signRoomRecord } from "../../src/p2p";

const ROOM = "healed";

async function record(epoch: number): Promise<Uint8Array> {
  const key = await generateKeyPair("Ed25519");
  const host = peerIdFromPrivateKey(key).toString();
  const now = Math.floor(Date.now() / 1000);
  const rec = await signRoomRecord(
    {
      room: ROOM,
      region: "eu-west",
      host,
      addrs: ["/ip4/127.0.0.1/tcp/7001"],
      participants: 2,
      epoch,
      seq: 1,
      last_seen: now,
      ttl_seconds: 30,
      status: "active",
      open: true,
    },
    key,
  );
  return encodeRoomRecord(rec);
}

/** A DHT walk: this side's copy at once, the other side's better claim `lateMs` later. */
function walk(near: Uint8Array, far: Uint8Array, lateMs: number) {
  return {
    async *get(_key: Uint8Array, o: { signal?: AbortSignal }) {
      yield { name: "VALUE", value: near } as never;
      await new Promise((res) => setTimeout(res, lateMs));
      if (o.signal?.aborted) return;
      yield { name: "PEER_RESPONSE", record: { value: far } } as never;
    },
  };
}

describe("the reconcile lookup", () => {
  test("finds a better claim answering 600 ms after this side's own copy; the defaults' lookup stops before it", async () => {
    const [near, far] = [await record(1), await record(2)];
    const signal = AbortSignal.timeout(10_000);
    const reconcile = await resolveRoomRecord(walk(near, far, 600), ROOM, { signal, ...RECONCILE_RESOLVE });
    expect(reconcile?.epoch).toBe(2);
    const quick = await resolveRoomRecord(walk(near, far, 600), ROOM, { signal });
    expect(quick?.epoch).toBe(1);
  });

  test("the port asks for the reconcile lookup on the heartbeat and a quick one for a JOIN", async () => {
    const asked: unknown[] = [];
    const d = {
      resolve: async (_room: string, o: unknown) => {
        asked.push(o);
        return undefined as RoomRecord | undefined;
      },
    };
    const port = directoryPort(d as unknown as RoomDirectory);
    await port.resolve(ROOM);
    await port.resolve(ROOM, { quick: true });
    expect(asked[0]).toEqual(RECONCILE_RESOLVE);
    expect((asked[1] as { quorum: number }).quorum).toBe(1);
  });
});

describe("the placement heartbeat", () => {
  test("reconciles hosted rooms on every beat while a mixer discovery hangs (a partition's unreachable mixers)", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const reconciles: string[] = [];
    let discoveries = 0;
    const network = {
      peerId: self,
      libp2p: { services: {}, peerStore: { merge: async () => {} } },
      listenAddrs: () => ["/ip4/127.0.0.1/tcp/7001"],
      discover: () => {
        discoveries++;
        // The JOIN's lookup of the region's mixers answers (empty); the heartbeat's refreshes then wait on
        // mixers that never answer.
        if (discoveries === 1) return Promise.resolve([]);
        return new Promise<never>(() => {});
      },
    };
    const directory = {
      on: () => {},
      setParticipants: () => {},
      current: () => undefined,
      claim: async () => ({}) as RoomRecord,
      resolve: async (room: string, o: { quorum?: number }) => {
        if (o?.quorum !== 1) reconciles.push(room);
        return undefined;
      },
    };
    const placement = createRoomPlacement({
      network: network as unknown as NetworkNode,
      directory: directory as unknown as RoomDirectory,
      privateKey: key,
      region: "eu-west",
      registry: new Registry(),
      logger: silentLogger(),
    });
    expect((await placement.host.decide(ROOM, "participant")).kind).toBe("admit");
    for (let i = 0; i < 3; i++) {
      const beat = placement.beat(new Map([[ROOM, 1]]));
      const done = await Promise.race([beat.then(() => true), new Promise((res) => setTimeout(() => res(false), 2_000))]);
      expect(done).toBe(true);
    }
    expect(reconciles).toEqual([ROOM, ROOM, ROOM]);
    expect(discoveries).toBe(2); // the JOIN's, then one in flight at a time across the beats
  });
});
