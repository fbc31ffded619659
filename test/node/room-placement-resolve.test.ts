/**
 * The heartbeat's reconcile lookup (src/node/room-placement.ts directoryPort, RECONCILE_RESOLVE) waits for
 * answers that arrive late, as the other side's servers do right after a partition heals (fresh dials), so
 * the better competing claim is found on that beat; a JOIN's quick lookup and the defaults stop early.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { directoryPort, RECONCILE_RESOLVE } from "../../src/node/room-placement";
import { encodeRoomRecord, type RoomDirectory, type RoomRecord, resolveRoomRecord, signRoomRecord } from "../../src/p2p";

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
