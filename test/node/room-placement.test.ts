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
import { signMoveToken } from "../../src/rooms";
import { metricValue } from "../helpers/net-fakes";

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
  test("a draining host missing from the latest walk (discovery drops draining nodes) is still a mixer: its move token is accepted", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const oldHostKey = await generateKeyPair("Ed25519");
    const oldHost = peerIdFromPrivateKey(oldHostKey).toString();
    const third = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const answers = [
      [advert(self), advert(oldHost)],
      [advert(self), advert(third)],
    ];
    const network = {
      peerId: self,
      libp2p: { services: {}, peerStore: { merge: async () => {} } },
      listenAddrs: () => ["/ip4/127.0.0.1/tcp/4001"],
      discover: async () => answers.shift() ?? [advert(self), advert(third)],
    } as unknown as NetworkNode;
    const directory = {
      on: () => {},
      resolve: async () => undefined, // the handing-over record is not visible yet
      claim: async () => {},
      update: async () => {},
      release: async () => {},
      current: () => undefined,
      setParticipants: () => {},
      countRedirect: () => {},
      countHandover: () => {},
    } as unknown as RoomDirectory;
    const registry = new Registry();
    const wiring = createRoomPlacement({ network, directory, privateKey: key, region: "eu-west", registry, logger: silentLogger() });
    await wiring.refreshMixers(true);
    await wiring.refreshMixers(); // the old host now drains: this walk no longer has it
    const token = await signMoveToken(oldHostKey, {
      room: "moving",
      epoch: 4,
      issuer: oldHost,
      successor: self,
      participant: "p1",
      expiresAtMs: Date.now() + 10_000,
    });
    expect(await wiring.host.decide("moving", "p1", token)).toEqual({ kind: "admit", epoch: 4 });
    expect(await metricValue(registry, "agora_rooms_move_tokens_total", { result: "accepted" })).toBe(1);
  });

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
