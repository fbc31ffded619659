/**
 * Discovery by a fresh client in a crowded region, over a scripted libp2p (the DHT walk's events, pings and
 * record lookups are this test's), so the case a busy host produces is exact:
 *   - kad-dht ends a provider walk once it holds K (20) providers, i.e. right after the first server's answer
 *     when that server stores the region's whole list, so the region's real nodes never answer the walk;
 *   - every real node's first dial + ping is slower than the reach timeout, and no connection is left open.
 * A real node must still be listed reachable: the server that answered named it among the closest peers of
 * its routing table (a table keeps only peers that answered that server). A fake (a provider record and
 * nothing else) is named by nobody and stays unreachable, and costs no second ping.
 * And the case a starved client produces: a real node answers its ping only after the candidate's whole
 * budget; it is still listed, its record fetched within a budget of its own.
 */
import { describe, expect, test } from "bun:test";
import { setTimeout as sleep } from "node:timers/promises";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { PeerId, PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { silentLogger } from "../../src/log";
import { advertisementKey, encodeAdvertisement, signAdvertisement } from "../../src/p2p";
import { type DiscoveryContext, runDiscovery } from "../../src/p2p/discovery";
import { createRecordValidation } from "../../src/p2p/validator";
import { hostileAdvertisement } from "./helpers";

const REGION = "crowded";

interface Peer {
  key: PrivateKey;
  id: PeerId;
  record: Uint8Array;
}

async function peer(): Promise<Peer> {
  const key = await generateKeyPair("Ed25519");
  const id = peerIdFromPrivateKey(key);
  const ad = hostileAdvertisement(id.toString(), { region: REGION, version: "1.0.0", seq: 1, ttl_seconds: 600, current_load: 0 });
  return { key, id, record: encodeAdvertisement(await signAdvertisement(ad, key)) };
}

interface Script {
  /** Real peers answer their first ping, after this long and whatever its signal says (a starved host). */
  slowAnswerMs?: number;
  /** Every DHT copy arrives after this long (unless its lookup is aborted first). */
  dhtDelayMs?: number;
}

/** A libp2p whose DHT walk is one answer from `server`: all providers, and `closer` from its routing table. */
function scriptedLibp2p(server: Peer, providers: Peer[], closer: Peer[], script: Script = {}) {
  const pings = new Map<string, number>();
  const info = (p: Peer) => ({ id: p.id, multiaddrs: [multiaddr("/ip4/127.0.0.1/tcp/1")] });
  const byKey = new Map(providers.map((p) => [advertisementKey(REGION, p.id.toString()), p.record]));
  const libp2p = {
    peerId: peerIdFromPrivateKey(server.key), // any id but the providers'
    getConnections: () => [{}], // connected to the server only: getConnections(peer) below
    peerStore: {
      merge: async () => undefined,
      get: async () => {
        throw Object.assign(new Error("not found"), { name: "NotFoundError" });
      },
    },
    dialProtocol: async () => {
      throw new Error("no direct record in this test");
    },
    services: {
      dht: {
        async *findProviders() {
          // one server's answer, then the walk stops (K providers found): kad-dht's behaviour
          yield { name: "PEER_RESPONSE", from: server.id, providers: providers.map(info), closer: closer.map(info) };
          yield { name: "PROVIDER", from: server.id, providers: providers.map(info) };
        },
        async *get(key: Uint8Array, o: { signal: AbortSignal }) {
          if (script.dhtDelayMs) await sleep(script.dhtDelayMs, undefined, { signal: o.signal });
          const v = byKey.get(new TextDecoder().decode(key));
          if (v) yield { name: "VALUE", from: server.id, value: v };
        },
      },
      ping: {
        // The first dial + ping of every peer misses any reach timeout (a busy host); a real peer answers
        // the second. A fake's address never answers.
        ping: async (id: PeerId, o: { signal: AbortSignal }) => {
          const n = (pings.get(id.toString()) ?? 0) + 1;
          pings.set(id.toString(), n);
          const real = closer.some((c) => c.id.equals(id));
          if (real && script.slowAnswerMs !== undefined) {
            await Bun.sleep(script.slowAnswerMs);
            return script.slowAnswerMs;
          }
          if (real && n >= 2) return 7;
          await new Promise((_, reject) => o.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
          return 0;
        },
      },
    },
  };
  // getConnections(peer): none to any provider (the aborted dials left nothing open)
  const getConnections = (p?: PeerId) => (p === undefined ? [{}] : []);
  libp2p.getConnections = getConnections as typeof libp2p.getConnections;
  return { libp2p, pings };
}

describe("discovery by a fresh client in a region with more than K providers", () => {
  test("real nodes named by the answering server are listed reachable; fakes unreachable, pinged once", async () => {
    const server = await peer();
    const real = await Promise.all([peer(), peer()]);
    const fakes = await Promise.all(Array.from({ length: 24 }, () => peer()));
    const { libp2p, pings } = scriptedLibp2p(server, [...fakes.slice(0, 12), ...real, ...fakes.slice(12)], real);
    const ctx = { libp2p, validation: createRecordValidation(), logger: silentLogger(), reachTimeoutMs: 20 } as unknown as DiscoveryContext;
    const found = await runDiscovery(ctx, { region: REGION, timeoutMs: 5_000, limit: 100 });

    const realIds = real.map((p) => p.id.toString()).sort();
    const fakeIds = new Set(fakes.map((p) => p.id.toString()));
    expect(
      found
        .filter((f) => f.latency_ms !== null)
        .map((f) => f.advertisement.peer_id)
        .sort(),
    ).toEqual(realIds);
    expect(
      found
        .slice(0, 2)
        .map((f) => f.advertisement.peer_id)
        .sort(),
    ).toEqual(realIds);
    expect(found.slice(2).every((f) => fakeIds.has(f.advertisement.peer_id) && f.latency_ms === null)).toBe(true);
    for (const f of fakes) expect(pings.get(f.id.toString())).toBe(1);
  });

  // As a fresh client on a starved machine saw it: a real node's ping answered only after 1.4 s (the reach
  // timeout long expired), its record fetch then had what was left of the candidate's 1.5 s budget, and the
  // node was dropped. A node that answered is real: its record gets a budget of its own from its answer.
  test("a real node whose answer used up the candidate's budget is still listed, with its record from the DHT", async () => {
    const server = await peer();
    const real = await Promise.all([peer(), peer()]);
    const fakes = await Promise.all(Array.from({ length: 24 }, () => peer()));
    // the answer comes after the candidate budget (1.5 s), the DHT copy 200 ms after that
    const { libp2p, pings } = scriptedLibp2p(server, [...fakes.slice(0, 12), ...real, ...fakes.slice(12)], real, {
      slowAnswerMs: 1_600,
      dhtDelayMs: 1_800,
    });
    const ctx = { libp2p, validation: createRecordValidation(), logger: silentLogger(), reachTimeoutMs: 20 } as unknown as DiscoveryContext;
    const found = await runDiscovery(ctx, { region: REGION, timeoutMs: 5_000, limit: 100 });

    expect(found.map((f) => f.advertisement.peer_id).sort()).toEqual(real.map((p) => p.id.toString()).sort());
    expect(found.every((f) => f.latency_ms === 1_600)).toBe(true);
    // the fakes' lookups ended with their pings: nothing of theirs was at hand, so none is listed
    for (const f of fakes) expect(pings.get(f.id.toString())).toBe(1);
  });
});
