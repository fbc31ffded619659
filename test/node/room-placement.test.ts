/**
 * The node's placement wiring (src/node/room-placement.ts) over fakes of the network and the directory: a
 * discovery that finds no other mixer (a busy machine's timed-out walk) must not replace the last list, or
 * the next drain has no successor and sends no MOVE at all (bench/rooms' repeated drain series).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { createLibp2p } from "libp2p";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { createRoomPlacement } from "../../src/node/room-placement";
import { agoraTransportStack, encodeAdvertisement, type NetworkNode, PROTOCOL_ADVERT, signAdvertisement } from "../../src/p2p";
import { serveAdvertisements } from "../../src/p2p/advert-protocol";
import { rankPlacement } from "../../src/protocol";
import { signMoveToken } from "../../src/rooms";
import { metricValue } from "../helpers/net-fakes";
import { hostileAdvertisement } from "../p2p/helpers";
import { until, useVirtualTime } from "../p2p/virtual-time";
import { fakeDirectory, fakeNetwork, mixerAdvert } from "./placement-fakes";

const stops: (() => unknown)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

/** A libp2p node on loopback serving `status` in its own signed advertisement over /agora/advert/1.0.0. */
async function advertisingMixer(status: "online" | "draining"): Promise<{ node: Libp2p; peer: string }> {
  const key: PrivateKey = await generateKeyPair("Ed25519");
  const node = await createLibp2p({
    privateKey: key,
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    services: { identify: identify() },
  });
  stops.push(() => node.stop());
  const peer = node.peerId.toString();
  const rec = await signAdvertisement(
    hostileAdvertisement(peer, {
      version: "test",
      seq: 1,
      status,
      listen_addr: node.getMultiaddrs().map((a) => a.toString().replace(/\/p2p\/.*$/, "")),
    }),
    key,
  );
  const bytes = encodeAdvertisement(rec);
  await serveAdvertisements(node, () => bytes);
  return { node, peer };
}

describe("room placement wiring", () => {
  test("a draining host missing from the latest walk (discovery drops draining nodes) is still a mixer: its move token is accepted", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const oldHostKey = await generateKeyPair("Ed25519");
    const oldHost = peerIdFromPrivateKey(oldHostKey).toString();
    const third = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const answers = [
      [mixerAdvert(self), mixerAdvert(oldHost)],
      [mixerAdvert(self), mixerAdvert(third)],
    ];
    const network = fakeNetwork(self, async () => answers.shift() ?? [mixerAdvert(self), mixerAdvert(third)]);
    const directory = fakeDirectory(); // the handing-over record is not visible yet
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
    const draining = mixerAdvert(third);
    draining.advertisement.status = "draining";
    const answers = [
      [mixerAdvert(self), mixerAdvert(other)],
      [mixerAdvert(self), draining],
    ];
    const network = fakeNetwork(self, async () => answers.shift() ?? [mixerAdvert(self), draining]);
    const directory = fakeDirectory();
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
    const answers: ReturnType<typeof mixerAdvert>[][] = [[mixerAdvert(self), mixerAdvert(other)]];
    let walks = 0;
    const network = fakeNetwork(self, async () => {
      walks++;
      return answers.shift() ?? [mixerAdvert(self)]; // later walks time out with only this node
    });
    const directory = fakeDirectory();
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

  test("a drain picks its successor from the mixers it is connected to, by their own word: none in the walk, a stale list naming a draining one", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = await createLibp2p({
      privateKey: key,
      addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
      ...agoraTransportStack(),
      services: { identify: identify() },
    });
    stops.push(() => self.stop());
    const selfId = self.peerId.toString();
    const live = await advertisingMixer("online");
    const draining = await advertisingMixer("draining");
    // A room whose rule puts the draining mixer first, so a list that still calls it online would pick it.
    const room = Array.from({ length: 200 }, (_, i) => `r${i}`).find(
      (r) =>
        rankPlacement(r, "eu-west", [mixerAdvert(live.peer).advertisement, mixerAdvert(draining.peer).advertisement])[0]?.peer_id ===
        draining.peer,
    )!;
    for (const m of [live, draining]) await self.dial(m.node.getMultiaddrs()[0]!);
    // the first walk (at start) saw the draining mixer before it drained; later walks find only this node
    const answers = [[mixerAdvert(selfId), mixerAdvert(draining.peer)]];
    const network = {
      peerId: selfId,
      libp2p: self,
      listenAddrs: () => ["/ip4/127.0.0.1/tcp/4001"],
      discover: async () => answers.shift() ?? [mixerAdvert(selfId)],
    } as unknown as NetworkNode;
    const wiring = createRoomPlacement({
      network,
      directory: fakeDirectory(),
      privateKey: key,
      region: "eu-west",
      registry: new Registry(),
      logger: silentLogger(),
    });
    await wiring.refreshMixers(true);
    await wiring.refreshMixers(); // finds only this node: the last list (naming the draining mixer online) stands
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const protos = await Promise.all([live, draining].map(async (m) => (await self.peerStore.get(m.node.peerId)).protocols));
      if (protos.every((p) => p.includes(PROTOCOL_ADVERT))) break;
      await Bun.sleep(20);
    }
    const moves: string[] = [];
    wiring.host.bind({
      hostedRooms: () => new Map([[room, 1]]),
      move: async (_room, t) => {
        moves.push(t.successorPeerId);
        return 1;
      },
    });
    expect((await wiring.host.decide(room, "participant")).kind).toBe("admit");
    expect(await wiring.host.handOverAll()).toEqual([room]);
    expect(moves).toEqual([live.peer]);
  });

  test("a drain that finds no successor looks again (a fresh walk between tries) until it finds one; a cancelled drain stops looking", async () => {
    const clock = useVirtualTime();
    try {
      const key = await generateKeyPair("Ed25519");
      const self = peerIdFromPrivateKey(key).toString();
      const other = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
      let walks = 0;
      let othersFrom = 4; // the walks before this one find only this node (a busy machine)
      const network = fakeNetwork(self, async () =>
        ++walks >= othersFrom ? [mixerAdvert(self), mixerAdvert(other)] : [mixerAdvert(self)],
      );
      const wiring = createRoomPlacement({
        network,
        directory: fakeDirectory(),
        privateKey: key,
        region: "eu-west",
        registry: new Registry(),
        logger: silentLogger(),
      });
      const moves: string[] = [];
      wiring.host.bind({
        hostedRooms: () => new Map([["r", 1]]),
        move: async (_room, t) => {
          moves.push(t.successorPeerId);
          return 1;
        },
      });
      await until("first walk", () => walks >= 1);
      expect((await wiring.host.decide("r", "participant")).kind).toBe("admit");
      let result: string[] | undefined;
      void wiring.host.handOverAll({ deadlineMs: Date.now() + 20_000 }).then((r) => (result = r));
      await until("first try over", () => walks >= 2);
      expect(result).toBeUndefined(); // still looking, not given up
      for (let i = 0; i < 40 && result === undefined; i++) await clock.advance(250);
      expect(result).toEqual(["r"]);
      expect(moves).toEqual([other]);

      // Cancelled: no more tries, nothing moved, however long the drain timeout.
      othersFrom = Number.POSITIVE_INFINITY;
      walks = 0;
      const self2 = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
      const wiring2 = createRoomPlacement({
        network: {
          ...network,
          peerId: self2,
          discover: async () => {
            walks++;
            return [mixerAdvert(self2)];
          },
        } as unknown as NetworkNode,
        directory: fakeDirectory(),
        privateKey: key,
        region: "eu-west",
        registry: new Registry(),
        logger: silentLogger(),
      });
      wiring2.host.bind({ hostedRooms: () => new Map([["r", 1]]), move: async () => 1 });
      await until("first walk", () => walks >= 1);
      expect((await wiring2.host.decide("r", "participant")).kind).toBe("admit");
      const cancel = new AbortController();
      let result2: string[] | undefined;
      void wiring2.host.handOverAll({ deadlineMs: Date.now() + 60_000, signal: cancel.signal }).then((r) => (result2 = r));
      await clock.advance(1_000);
      expect(result2).toBeUndefined();
      cancel.abort();
      await until("cancelled handover returns", () => result2 !== undefined);
      expect(result2).toEqual([]);
      const after = walks;
      await clock.advance(10_000);
      expect(walks).toBe(after); // no retry loop left running
    } finally {
      clock.restore();
    }
  });
});
