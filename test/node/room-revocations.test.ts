/**
 * Owned rooms' revocations over the room records (src/node/room-placement.ts): a ban made on the host goes
 * into its record; a successor that resolves the old host's record learns the list and carries it in its own
 * claim, marked not open; open rooms carry none.
 */
import { describe, expect, test } from "bun:test";
import { ownedRoomId, signerFromRawPrivateKey } from "../../src/access";
import { silentLogger } from "../../src/log";
import { directoryPort, RecordRevocations } from "../../src/node/room-placement";
import type { RoomDirectory, RoomRecord } from "../../src/p2p";

const room = ownedRoomId("rec", signerFromRawPrivateKey(new Uint8Array(32).fill(7)).publicKey);
const NOW = Date.now();

/** The slice of RoomDirectory the store and the port use, recording what they publish. */
function fakeDirectory(resolved?: Partial<RoomRecord>) {
  const hosted = new Map<string, Partial<RoomRecord>>();
  const claims: { room: string; opts: Record<string, unknown> }[] = [];
  const d = {
    current: (r: string) => hosted.get(r) as RoomRecord | undefined,
    update: async (r: string, patch: Record<string, unknown>) => {
      hosted.set(r, { ...hosted.get(r), ...patch });
      return hosted.get(r) as RoomRecord;
    },
    claim: async (r: string, opts: Record<string, unknown>) => {
      claims.push({ room: r, opts });
      hosted.set(r, { room: r, ...opts });
      return hosted.get(r) as RoomRecord;
    },
    resolve: async () =>
      resolved ? ({ room, region: "eu-west", host: "old", addrs: [], epoch: 1, status: "active", ...resolved } as RoomRecord) : undefined,
    release: async () => {},
    countRedirect: () => {},
    countHandover: () => {},
  };
  return { d, hosted, claims };
}

describe("revocations in the room record", () => {
  test("a ban on the host is published in its record and refused from it", async () => {
    const { d, hosted } = fakeDirectory();
    const store = new RecordRevocations(d as unknown as RoomDirectory, silentLogger(), () => NOW);
    await directoryPort(d as unknown as RoomDirectory, store).claim(room, 1, 2);
    expect(store.revoke(room, { id: "ab".repeat(16), until: NOW + 60_000 }, NOW)).toBe(true);
    await Bun.sleep(0);
    expect(hosted.get(room)?.revocations).toEqual([{ id: "ab".repeat(16), until: NOW + 60_000 }]);
    expect(hosted.get(room)?.open).toBe(false);
    expect(store.isRevoked(room, "ab".repeat(16), NOW)).toBe(true);
    expect(store.isRevoked(room, "ab".repeat(16), NOW + 60_000)).toBe(false);
  });

  test("a successor learns the old host's list when it resolves the record, and claims with it", async () => {
    const old = [
      { id: "cd".repeat(16), until: NOW + 60_000 },
      { id: "ee".repeat(32), until: NOW - 1 }, // lapsed: dropped
    ];
    const { d, claims } = fakeDirectory({ revocations: old });
    const store = new RecordRevocations(d as unknown as RoomDirectory, silentLogger(), () => NOW);
    const port = directoryPort(d as unknown as RoomDirectory, store);
    await port.resolve(room);
    expect(store.isRevoked(room, "cd".repeat(16), NOW)).toBe(true);
    expect(store.isRevoked(room, "ee".repeat(32), NOW)).toBe(false);
    await port.claim(room, 2, 3);
    expect(claims.at(-1)).toEqual({ room, opts: { epoch: 2, participants: 3, open: false, revocations: [old[0]] } });
    // An open room's claim says nothing about access.
    await port.claim("open-room", 1, 1);
    expect(claims.at(-1)).toEqual({ room: "open-room", opts: { epoch: 1, participants: 1 } });
  });
});
