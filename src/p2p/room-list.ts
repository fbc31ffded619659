/**
 * Listing live rooms (`agora-node rooms`). A DHT cannot enumerate keys, so hosts announce themselves: a node
 * that hosts rooms is a provider of `/agora/rooms-region/<region>` for each region it hosts rooms of, and
 * of `/agora/rooms-all` (room-directory.ts). The lister asks the DHT for those providers and each provider
 * for its hosted rooms' signed records over `/agora/rooms/1.0.0`; every record is verified (signature by
 * the host it names, which must be the peer answering, freshness), and two claims of one room are resolved by
 * the selector's order. Bounded: MAX_LIST_HOSTS providers, MAX_LISTED_ROOMS records each, one deadline.
 */
import type { Libp2p, PeerId, PeerInfo } from "@libp2p/interface";
import type { KadDHT } from "@libp2p/kad-dht";
import PQueue from "p-queue";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { REGION_TOKEN_PATTERN } from "../protocol";
import { namespaceCid } from "./namespaces";
import { fetchHostedRooms, ROOMS_ALL_NAMESPACE, roomsRegionNamespace } from "./room-directory";
import { compareRoomRecords, type RoomRecord } from "./room-record";

/** Hosts asked per listing at most. */
export const MAX_LIST_HOSTS = 256;
const LIST_CONCURRENCY = 16;
const HOST_TIMEOUT_MS = 2_000;

export interface ListRoomsQuery {
  region?: string;
  /** Overall bound (default 5 s). */
  timeoutMs?: number;
}

export interface ListedRoom {
  record: RoomRecord;
  /** Seconds since the record was signed, when listed. */
  age_seconds: number;
}

export async function listRooms(
  libp2p: Libp2p<{ dht: KadDHT }>,
  q: ListRoomsQuery,
  logger: Logger,
  extra: RoomRecord[] = [],
): Promise<ListedRoom[]> {
  if (q.region !== undefined && !REGION_TOKEN_PATTERN.test(q.region))
    throw new AgoraError("BAD_REQUEST", `region must be a lowercase token like eu-west, got ${JSON.stringify(q.region)}`);
  const deadline = AbortSignal.timeout(q.timeoutMs ?? 5_000);
  const cid = await namespaceCid(q.region ? roomsRegionNamespace(q.region) : ROOMS_ALL_NAMESPACE);
  const best = new Map<string, RoomRecord>();
  const take = (rec: RoomRecord) => {
    if (q.region && rec.region !== q.region) return;
    const held = best.get(rec.room);
    if (!held || compareRoomRecords(rec, held) > 0) best.set(rec.room, rec);
  };
  for (const r of extra) take(r);
  const seen = new Set<string>([libp2p.peerId.toString()]);
  const queue = new PQueue({ concurrency: LIST_CONCURRENCY });
  const tasks: Promise<void>[] = [];
  const ask = (p: PeerInfo) => {
    const id = p.id.toString();
    if (seen.has(id) || seen.size > MAX_LIST_HOSTS) return;
    seen.add(id);
    tasks.push(
      queue.add(async () => {
        if (deadline.aborted) return;
        try {
          if (p.multiaddrs.length > 0) await libp2p.peerStore.merge(p.id, { multiaddrs: p.multiaddrs }).catch(() => undefined);
          const recs = await fetchHostedRooms(libp2p, p.id as PeerId, AbortSignal.any([deadline, AbortSignal.timeout(HOST_TIMEOUT_MS)]));
          for (const r of recs) take(r);
        } catch (err) {
          logger.debug({ peer: id, err: errorMessage(err) }, "room list of a host not fetched");
        }
      }),
    );
  };
  try {
    for await (const ev of libp2p.services.dht.findProviders(cid, { signal: deadline })) {
      if (ev.name === "PROVIDER" || ev.name === "PEER_RESPONSE") for (const p of ev.providers) ask(p);
    }
  } catch (err) {
    if (!deadline.aborted) logger.debug({ err: errorMessage(err) }, "room provider lookup ended with an error");
  }
  await Promise.allSettled(tasks);
  queue.clear();
  const now = Date.now() / 1000;
  return [...best.values()]
    .filter((r) => r.last_seen + r.ttl_seconds >= now)
    .sort((a, b) => b.participants - a.participants || (a.room < b.room ? -1 : a.room > b.room ? 1 : 0))
    .map((record) => ({ record, age_seconds: Math.max(0, Math.round((now - record.last_seen) * 10) / 10) }));
}
