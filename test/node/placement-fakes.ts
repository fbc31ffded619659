/**
 * Fakes of what the node's placement wiring (src/node/room-placement.ts) uses: a network whose mixer
 * discovery answers what a test scripts, a room directory that holds nothing, and a mixer's advertisement.
 */
import type { NetworkNode, RoomDirectory } from "../../src/p2p";

/** A discovery result for a mixer of region eu-west, online, empty. */
export function mixerAdvert(peer_id: string) {
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

/** The network of peer `self`, whose every mixer discovery is `discover`. */
export function fakeNetwork(self: string, discover: () => Promise<ReturnType<typeof mixerAdvert>[]>): NetworkNode {
  return {
    peerId: self,
    libp2p: { services: {}, peerStore: { merge: async () => {} } },
    listenAddrs: () => ["/ip4/127.0.0.1/tcp/4001"],
    discover,
  } as unknown as NetworkNode;
}

/** A room directory in which no room has a record and every publication succeeds. */
export function fakeDirectory(): RoomDirectory {
  return {
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
}
