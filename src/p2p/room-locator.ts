/**
 * The client's view of the room directory (RoomLocator in src/client/navigator.ts): a DHT client in client
 * mode connected through any bootstrap node, which resolves room records (verified, live, best by the
 * selector) and discovers the region's mixers (verified advertisements). Its libp2p node also carries the
 * participant's audio sessions, so one connection setup serves both.
 */
import type { Libp2p } from "@libp2p/interface";
import type { Logger } from "../log";
import { createDiscoveryClient } from "./client";
import { resolveRoomRecord } from "./room-directory";

/** What a RoomLocator returns (structurally the SDK's LocatedRoom / MixerCandidate). */
export interface LocatorRoom {
  host: string;
  addrs: string[];
  epoch: number;
  status: "active" | "handing-over";
  successor?: string;
}

export interface LocatorMixer {
  peer_id: string;
  region: string;
  status: string;
  capabilities: string[];
  current_load: number;
  max_clients: number;
  listen_addr: string[];
}

export interface RoomLocatorClient {
  readonly libp2p: Libp2p;
  resolve(room: string): Promise<LocatorRoom | undefined>;
  mixers(region: string | undefined): Promise<LocatorMixer[]>;
  stop(): Promise<void>;
}

export interface RoomLocatorOptions {
  bootstrap: string[];
  logger: Logger;
  /** bound on one record lookup (default 3 s) and on one mixer discovery (default 4 s) */
  resolveTimeoutMs?: number;
  discoverTimeoutMs?: number;
}

/** One discovery serves every participant that asks within this long (many join at once through one client). */
const MIXERS_CACHE_MS = 2_000;

export async function createRoomLocator(opts: RoomLocatorOptions): Promise<RoomLocatorClient> {
  const client = await createDiscoveryClient({ bootstrap: opts.bootstrap, logger: opts.logger });
  const cache = new Map<string, { at: number; list: Promise<LocatorMixer[]> }>();
  return {
    libp2p: client.libp2p,
    resolve: async (room) => {
      const rec = await resolveRoomRecord(client.libp2p.services.dht, room, {
        signal: AbortSignal.timeout(opts.resolveTimeoutMs ?? 3_000),
      });
      return (
        rec && {
          host: rec.host,
          addrs: rec.addrs,
          epoch: rec.epoch,
          status: rec.status,
          ...(rec.successor ? { successor: rec.successor } : {}),
        }
      );
    },
    mixers: async (region) => {
      const key = region ?? "";
      const hit = cache.get(key);
      if (hit && Date.now() - hit.at < MIXERS_CACHE_MS) return (await hit.list).map((m) => ({ ...m }));
      const list = client
        .discover({ region, capability: "mixer", limit: 64, timeoutMs: opts.discoverTimeoutMs ?? 4_000 })
        .then((ranked) => {
          // An empty answer (a routing table still filling) is not worth remembering.
          if (ranked.length === 0) cache.delete(key);
          return ranked.map((r) => ({ ...r.advertisement }));
        });
      cache.set(key, { at: Date.now(), list });
      list.catch(() => cache.delete(key));
      return (await list).map((m) => ({ ...m }));
    },
    stop: () => client.stop(),
  };
}
