/**
 * The node's placement wiring (src/node/room-placement.ts) over fakes of the network and the directory: a
 * discovery that finds no other mixer (a busy machine's timed-out walk) must not replace the last list, or
 * the next drain has no successor and sends no MOVE at all (bench/rooms' repeated drain series).
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { createRoomPlacement } from "../../src/node/room-placement";
import type { NetworkNode, RoomDirectory } from "../../src/p2p";

function advert(peer_id: string) {
  return {
    advertisement: {
      peer_id,
      region: "eu-west",
      status: "online",
      capabilities: ["mixer"],
      current_load: 0,
      max_clients: 100,
      listen_addr: ["/ip4/127.0.0.1/tcp/4001"],
    },
  };
}

describe("room placement wiring", () => {
  test("a drain whose current list has no eligible successor (the walk found only a draining mixer) picks from recent walks", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const other = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const third = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const draining = advert(third);
    draining.advertisement.status = "draining";
    const answers = [
      [advert(self), advert(other)],
      [advert(self), draining],
    ];
    const network = {
      peerId: self,
      libp2p: { services: {}, peerStore: { merge: async () => {} } },
      listenAddrs: () => ["/ip4/127.0.0.1/tcp/4001"],
      discover: async () => answers.shift() ?? [advert(self), draining],
    } as unknown as NetworkNode;
    const directory = {
      on: () => {},
      resolve: async () => undefined,
      claim: async () => {},
      update: async () => {},
      release: async () => {},
      current: () => undefined,
      setParticipants: () => {},
      countRedirect: () => {},
      countHandover: () => {},
    } as unknown as RoomDirectory;
    const wiring = createRoomPlacement({
      network,
      directory,
      privateKey: key,
      region: "eu-west",
      registry: new Registry(),
      logger: silentLogger(),
    });
    await wiring.refreshMixers(true);
    const moves: string[] = [];
    wiring.host.bind({
      hostedRooms: () => new Map([["r", 1]]),
      move: async (_room, t) => {
        moves.push(t.successorPeerId);
        return 1;
      },
    });
    expect((await wiring.host.decide("r", "participant")).kind).toBe("admit");
    await wiring.refreshMixers(); // [self, a draining mixer]: replaces the list, which has no successor
    expect(await wiring.host.handOverAll()).toEqual(["r"]);
    expect(moves).toEqual([other]);
  });

  test("a discovery that finds no other mixer keeps the last list: the drain still MOVEs to the successor", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const other = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const answers: ReturnType<typeof advert>[][] = [[advert(self), advert(other)]];
    let walks = 0;
    const network = {
      peerId: self,
      libp2p: { services: {}, peerStore: { merge: async () => {} } },
      listenAddrs: () => ["/ip4/127.0.0.1/tcp/4001"],
      discover: async () => {
        walks++;
        return answers.shift() ?? [advert(self)]; // later walks time out with only this node
      },
    } as unknown as NetworkNode;
    const directory = {
      on: () => {},
      resolve: async () => undefined,
      claim: async () => {},
      update: async () => {},
      release: async () => {},
      current: () => undefined,
      setParticipants: () => {},
      countRedirect: () => {},
      countHandover: () => {},
    } as unknown as RoomDirectory;
    const wiring = createRoomPlacement({
      network,
      directory,
      privateKey: key,
      region: "eu-west",
      registry: new Registry(),
      logger: silentLogger(),
    });
    await wiring.refreshMixers(true);
    const moves: string[] = [];
    wiring.host.bind({
      hostedRooms: () => new Map([["r", 1]]),
      move: async (_room, t) => {
        moves.push(t.successorPeerId);
        return 1;
      },
    });
    expect((await wiring.host.decide("r", "participant")).kind).toBe("admit");
    // the drain's fresh look finds only this node
    await wiring.refreshMixers();
    expect(walks).toBeGreaterThanOrEqual(2);
    expect(await wiring.host.handOverAll()).toEqual(["r"]);
    expect(moves).toEqual([other]);
  });
});
