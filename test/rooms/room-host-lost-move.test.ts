/**
 * RoomHost after a lost claim (src/rooms/room-host.ts): participants that did not follow the MOVE (the
 * winner had itself moved on, and their client refused the REDIRECT it then got) are moved again, to the
 * room's current host, once LOST_MOVE_RETRY_MS has passed; seen in the partition test as a split for good.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { LOST_MOVE_RETRY_MS, RoomHost, type RoomMembers } from "../../src/rooms";
import { MemoryRoomDirectory } from "../helpers/room-directory";

const ROOM = "stuck";

describe("room host: a lost claim's participants that stayed", () => {
  test("are moved again to the room's current host after LOST_MOVE_RETRY_MS, not before", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const dir = new MemoryRoomDirectory();
    let now = 1_000_000;
    const moves: string[] = [];
    let here = 2;
    const members: RoomMembers = {
      hostedRooms: () => new Map(here > 0 ? [[ROOM, here]] : []),
      move: async (_room, target) => {
        moves.push(target.successorPeerId);
        return here;
      },
    };
    const host = new RoomHost({
      directory: dir.port(self, "eu-west", () => ["/ip4/127.0.0.1/tcp/1"]),
      selfPeerId: self,
      privateKey: key,
      region: "eu-west",
      selfAddrs: () => ["/ip4/127.0.0.1/tcp/1"],
      candidates: async () => [],
      isAlive: async () => true,
      // the winners are mixers of the region (a record naming anything else is not obeyed)
      isMixer: async (peer) => peer.startsWith("winner-"),
      registry: new Registry(),
      logger: silentLogger(),
      now: () => now,
    });
    host.bind(members);
    expect((await host.decide(ROOM, "p1")).kind).toBe("admit");
    await Bun.sleep(0); // the claim is published
    // The other side of a healed partition holds the room with a higher epoch: MOVE there.
    await dir.port("winner-b", "eu-west", () => ["/ip4/127.0.0.1/tcp/2"]).claim(ROOM, 5, 3);
    await host.reconcile();
    expect(moves).toEqual(["winner-b"]);
    // The winner moved on before our participants arrived (they refused its REDIRECT and stayed here).
    await dir.port("winner-b", "eu-west", () => []).release(ROOM);
    await dir.port("winner-c", "eu-west", () => ["/ip4/127.0.0.1/tcp/3"]).claim(ROOM, 6, 3);
    now += LOST_MOVE_RETRY_MS - 1;
    await host.reconcile();
    expect(moves).toEqual(["winner-b"]); // a MOVE in progress is given its time
    now += 1;
    await host.reconcile();
    expect(moves).toEqual(["winner-b", "winner-c"]);
    // Gone: nothing more to move.
    here = 0;
    host.roomEmptied(ROOM);
    now += 10 * LOST_MOVE_RETRY_MS;
    await host.reconcile();
    expect(moves).toEqual(["winner-b", "winner-c"]);
  });
});
