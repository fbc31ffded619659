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
  /** `fresh`: a new lookup, not a record this locator found within RECORD_CACHE_MS */
  resolve(room: string, opts?: { fresh?: boolean }): Promise<LocatorRoom | undefined>;
  mixers(region: string | undefined): Promise<LocatorMixer[]>;
  stop(): Promise<void>;
}

export interface RoomLocatorOptions {
  bootstrap: string[];
  logger: Logger;
  /** bound on one record lookup (default 1.5 s: a new room has none to find) and on one mixer discovery (default 4 s) */
  resolveTimeoutMs?: number;
  discoverTimeoutMs?: number;
}

/** One discovery serves every participant that asks within this long (many join at once through one client). */
const MIXERS_CACHE_MS = 2_000;
/** Older answers are still used (and refreshed behind) up to this age: mixers come and go in heartbeats. */
const MIXERS_STALE_MS = 60_000;
/**
 * A room's live record found within this long answers the next lookup of it at once: participants joining
 * one room through one client (or one after the other) would otherwise each wait for their own DHT walk,
 * longer than the navigator's head start. Only found records are kept (a new room's empty answer is not),
 * and a record that went stale meanwhile costs at most a REDIRECT or a MOVE from its old host.
 */
const RECORD_CACHE_MS = 1_500;

export async function createRoomLocator(opts: RoomLocatorOptions): Promise<RoomLocatorClient> {
  const client = await createDiscoveryClient({ bootstrap: opts.bootstrap, logger: opts.logger });
  const cache = new Map<string, { at: number; list: Promise<LocatorMixer[]> }>();
  const records = new Map<string, { at: number; rec: LocatorRoom }>();
  return {
    libp2p: client.libp2p,
    resolve: async (room, o) => {
      const hit = records.get(room);
      if (hit && !o?.fresh && Date.now() - hit.at < RECORD_CACHE_MS) return { ...hit.rec };
      const rec = await resolveRoomRecord(client.libp2p.services.dht, room, {
        signal: AbortSignal.timeout(opts.resolveTimeoutMs ?? 1_500),
      });
      const found: LocatorRoom | undefined = rec && {
        host: rec.host,
        addrs: rec.addrs,
        epoch: rec.epoch,
        status: rec.status,
        ...(rec.successor ? { successor: rec.successor } : {}),
      };
      const now = Date.now();
      for (const [r, e] of records) if (now - e.at >= RECORD_CACHE_MS) records.delete(r);
      if (found) records.set(room, { at: now, rec: found });
      else records.delete(room);
      return found && { ...found };
    },
    mixers: async (region) => {
      const key = region ?? "";
      const hit = cache.get(key);
      if (hit && Date.now() - hit.at < MIXERS_CACHE_MS) return (await hit.list).map((m) => ({ ...m }));
      // Stale but recent: answer from it and refresh behind (a join should not wait for a discovery walk).
      if (hit && Date.now() - hit.at < MIXERS_STALE_MS) {
        const stale = await hit.list.catch(() => []);
        if (stale.length > 0) {
          void refreshMixers(key, region);
          return stale.map((m) => ({ ...m }));
        }
      }
      return (await refreshMixers(key, region)).map((m) => ({ ...m }));
    },
    stop: () => client.stop(),
  };

  function refreshMixers(key: string, region: string | undefined): Promise<LocatorMixer[]> {
    const list = client.discover({ region, capability: "mixer", limit: 64, timeoutMs: opts.discoverTimeoutMs ?? 4_000 }).then((ranked) => {
      // An empty answer (a routing table still filling) is not worth remembering.
      if (ranked.length === 0) cache.delete(key);
      return ranked.map((r) => ({ ...r.advertisement }));
    });
    const prev = cache.get(key);
    cache.set(key, { at: Date.now(), list });
    list.catch(() => {
      if (prev) cache.set(key, prev);
      else cache.delete(key);
    });
    return list;
  }
}
