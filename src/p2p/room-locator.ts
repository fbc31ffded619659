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
  const mixers = cachedMixerLists(async (region) =>
    (await client.discover({ region, capability: "mixer", limit: 64, timeoutMs: opts.discoverTimeoutMs ?? 4_000 })).map((r) => ({
      ...r.advertisement,
    })),
  );
  const resolve = cachedRoomRecords(async (room) => {
    const rec = await resolveRoomRecord(client.libp2p.services.dht, room, {
      signal: AbortSignal.timeout(opts.resolveTimeoutMs ?? 1_500),
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
  });
  return {
    libp2p: client.libp2p,
    resolve,
    mixers,
    stop: () => client.stop(),
  };
}

/**
 * The locator's room lookups over `lookup` (one DHT walk): a record found within RECORD_CACHE_MS answers the
 * next lookup of that room at once, unless the caller asks for a fresh one (`{ fresh: true }`: a REDIRECT's
 * confirmation). Only found records are kept: a new room's "not found" is asked again every time, so the
 * first claim is seen as soon as it is in the DHT. Callers get copies.
 */
export function cachedRoomRecords(
  lookup: (room: string) => Promise<LocatorRoom | undefined>,
  now: () => number = Date.now,
): (room: string, o?: { fresh?: boolean }) => Promise<LocatorRoom | undefined> {
  const records = new Map<string, { at: number; rec: LocatorRoom }>();
  return async (room, o) => {
    const hit = records.get(room);
    if (hit && !o?.fresh && now() - hit.at < RECORD_CACHE_MS) return { ...hit.rec };
    const found = await lookup(room);
    const t = now();
    for (const [r, e] of records) if (t - e.at >= RECORD_CACHE_MS) records.delete(r);
    if (found) records.set(room, { at: t, rec: found });
    else records.delete(room);
    return found && { ...found };
  };
}

/**
 * The locator's mixer lists per region over `discover` (one walk): one answer serves every caller for
 * MIXERS_CACHE_MS; an older one (up to MIXERS_STALE_MS) is answered at once and refreshed behind, and so is
 * a caller that comes while a walk is still under way. A walk that
 * finds no mixer (a routing table still filling, a busy machine's walk that timed out) is no news that the
 * region emptied: the last list that found some is answered instead while it is recent, and the next call
 * walks again. Without that, one empty walk lost the list, and a join right after it found "no live mixer"
 * (bench/rooms' kill round).
 */
export function cachedMixerLists(
  discover: (region: string | undefined) => Promise<LocatorMixer[]>,
  now: () => number = Date.now,
): (region: string | undefined) => Promise<LocatorMixer[]> {
  /** the latest walk per region; `settled` once it answered (a found list: empty or failed walks leave no entry) */
  const cache = new Map<string, { at: number; list: Promise<LocatorMixer[]>; settled: boolean }>();
  /** the last non-empty answer per region, and when it was walked */
  const lastFound = new Map<string, { at: number; list: LocatorMixer[] }>();
  const recentFound = (key: string): LocatorMixer[] | undefined => {
    const last = lastFound.get(key);
    return last && now() - last.at < MIXERS_STALE_MS ? last.list : undefined;
  };
  const refresh = (key: string, region: string | undefined): Promise<LocatorMixer[]> => {
    const entry = { at: now(), list: Promise.resolve<LocatorMixer[]>([]), settled: false };
    const prev = cache.get(key);
    entry.list = discover(region).then(
      (found) => {
        entry.settled = true;
        if (found.length > 0) {
          lastFound.set(key, { at: entry.at, list: found });
          return found;
        }
        // Not worth remembering: the next call walks again (and gets the last list meanwhile).
        if (cache.get(key) === entry) cache.delete(key);
        return recentFound(key) ?? [];
      },
      (err) => {
        entry.settled = true;
        if (cache.get(key) === entry) {
          if (prev) cache.set(key, prev);
          else cache.delete(key);
        }
        const last = recentFound(key);
        if (last) return last;
        throw err;
      },
    );
    cache.set(key, entry);
    return entry.list;
  };
  const copies = (list: LocatorMixer[]) => list.map((m) => ({ ...m }));
  return async (region) => {
    const key = region ?? "";
    const hit = cache.get(key);
    const young = hit && now() - hit.at < MIXERS_CACHE_MS ? hit : undefined;
    if (young?.settled) return copies(await young.list);
    // A list found within MIXERS_STALE_MS answers at once, also while a walk is under way (that walk can
    // take seconds on a busy network, and a join should not wait for it); an older one is walked behind.
    const last = recentFound(key);
    if (last) {
      if (!young) void refresh(key, region).catch(() => undefined);
      return copies(last);
    }
    return copies(await (young?.list ?? refresh(key, region)));
  };
}
