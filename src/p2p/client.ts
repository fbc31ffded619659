/**
 * The transient discover client behind `agora-node discover --bootstrap ADDR`: a throwaway identity, no
 * listener, DHT in client mode (it answers no DHT queries and is not added to anyone's routing table).
 * It connects to the bootstrap peers, runs one discovery and stops, all within `timeoutMs`.
 */
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p } from "@libp2p/interface";
import { kadDHT, type SingleKadDHT } from "@libp2p/kad-dht";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { agoraPing, agoraTransportStack } from "../transport";
import { agoraDhtInit } from "./dht";
import { type DiscoverQuery, type DiscoveryServices, MAX_PARALLEL_DIALS, runDiscovery } from "./discovery";
import type { RankedNode } from "./ranking";
import { type ResolveRoomOptions, resolveRoomRecord } from "./room-directory";
import { type ListedRoom, type ListRoomsQuery, listRooms } from "./room-list";
import type { RoomRecord } from "./room-record";
import { createRecordValidation } from "./validator";

export interface DiscoverOnceOptions {
  bootstrap: string[];
  query: DiscoverQuery;
  logger: Logger;
  timeoutMs: number;
}

/** A long-lived DHT client (client mode, no listener) for repeated queries: benches, load generators. */
export interface DiscoveryClient {
  readonly libp2p: Libp2p<DiscoveryServices>;
  discover(q: DiscoverQuery): Promise<RankedNode[]>;
  /** The best live record of a room (where it is hosted), or undefined (docs/room-record.md). */
  resolveRoom(room: string, opts?: ResolveRoomOptions & { timeoutMs?: number }): Promise<RoomRecord | undefined>;
  /** Live rooms, busiest first (providers of the rooms namespace, each asked for its hosted rooms). */
  listRooms(q: ListRoomsQuery): Promise<ListedRoom[]>;
  stop(): Promise<void>;
}

export interface DiscoveryClientOptions {
  bootstrap: string[];
  logger: Logger;
  /** Bound on connecting to the bootstrap peers (default 10 s). */
  connectTimeoutMs?: number;
}

/** Starts a client and connects it to at least one bootstrap peer (throws AgoraError "P2P" if none answers). */
export async function createDiscoveryClient(opts: DiscoveryClientOptions): Promise<DiscoveryClient> {
  if (opts.bootstrap.length === 0) throw new AgoraError("USAGE", "discover needs at least one bootstrap address");
  const addrs = opts.bootstrap.map((a) => {
    try {
      return multiaddr(a);
    } catch (err) {
      throw new AgoraError("USAGE", `bad bootstrap address "${a}": ${errorMessage(err)}`);
    }
  });
  const validation = createRecordValidation();
  const lib: Libp2p<DiscoveryServices> = await createLibp2p({
    privateKey: await generateKeyPair("Ed25519"),
    addresses: { listen: [] },
    ...agoraTransportStack(),
    connectionManager: { maxParallelDials: MAX_PARALLEL_DIALS },
    services: {
      identify: identify(),
      ping: agoraPing(),
      dht: kadDHT(agoraDhtInit(validation, true)),
    },
  });
  const stop = async () => {
    await Promise.race([Promise.resolve(lib.stop()), new Promise((r) => setTimeout(r, 5_000))]).catch(() => undefined);
  };
  try {
    const budget = Math.max(1, opts.connectTimeoutMs ?? 10_000);
    const dials = await Promise.allSettled(addrs.map((ma) => lib.dial(ma, { signal: AbortSignal.timeout(budget) })));
    if (!dials.some((d) => d.status === "fulfilled")) {
      const why = dials.map((d, i) => `${opts.bootstrap[i]}: ${d.status === "rejected" ? errorMessage(d.reason) : "ok"}`).join("; ");
      throw new AgoraError("P2P", `could not reach any bootstrap peer (${why})`);
    }
    // A dial resolves when the connection is up; the peer enters the DHT routing table only after identify
    // has told us it serves the DHT. A query started before that has nobody to ask and ends at once, empty
    // (seen on a busy machine: a fresh `discover` client listing nothing). Wait for it within the budget.
    await routingTableFilled(lib, budget);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    libp2p: lib,
    discover: (q) => runDiscovery({ libp2p: lib, validation, logger: opts.logger }, q),
    resolveRoom: (room, o = {}) => resolveRoom(lib, room, o),
    listRooms: (q) => listRooms(lib, q, opts.logger),
    stop,
  };
}

/**
 * Where `room` lives: its best live record in the DHT, or undefined. Works with any libp2p node that runs
 * Agora's DHT (a node, or a client-mode one such as createDiscoveryClient's).
 */
export function resolveRoom(
  libp2p: Pick<Libp2p<{ dht: Pick<DiscoveryServices["dht"], "get"> }>, "services">,
  room: string,
  opts: ResolveRoomOptions & { timeoutMs?: number } = {},
): Promise<RoomRecord | undefined> {
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 5_000), ...(opts.signal ? [opts.signal] : [])]);
  return resolveRoomRecord(libp2p.services.dht, room, { signal, quorum: opts.quorum, settleMs: opts.settleMs });
}

/** One room lookup with a throwaway client, all within `timeoutMs`. */
export async function resolveRoomOnce(opts: {
  bootstrap: string[];
  room: string;
  logger: Logger;
  timeoutMs: number;
}): Promise<RoomRecord | undefined> {
  const deadline = Date.now() + opts.timeoutMs;
  const client = await createDiscoveryClient({
    bootstrap: opts.bootstrap,
    logger: opts.logger,
    connectTimeoutMs: Math.min(10_000, opts.timeoutMs),
  });
  try {
    return await client.resolveRoom(opts.room, { timeoutMs: Math.max(1, deadline - Date.now()) });
  } finally {
    await client.stop();
  }
}

/** One room listing with a throwaway client, all within `timeoutMs`. */
export async function listRoomsOnce(opts: {
  bootstrap: string[];
  region?: string;
  logger: Logger;
  timeoutMs: number;
}): Promise<ListedRoom[]> {
  const deadline = Date.now() + opts.timeoutMs;
  const client = await createDiscoveryClient({
    bootstrap: opts.bootstrap,
    logger: opts.logger,
    connectTimeoutMs: Math.min(10_000, opts.timeoutMs),
  });
  try {
    return await client.listRooms({ region: opts.region, timeoutMs: Math.max(1, deadline - Date.now()) });
  } finally {
    await client.stop();
  }
}

/** One query with a throwaway client, all within `timeoutMs`. */
export async function discoverOnce(opts: DiscoverOnceOptions): Promise<RankedNode[]> {
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) throw new AgoraError("USAGE", "timeoutMs must be positive");
  const deadline = Date.now() + opts.timeoutMs;
  const client = await createDiscoveryClient({
    bootstrap: opts.bootstrap,
    logger: opts.logger,
    connectTimeoutMs: Math.min(10_000, opts.timeoutMs),
  });
  try {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new AgoraError("P2P", `discovery timed out after ${opts.timeoutMs} ms while connecting`);
    return await client.discover({ ...opts.query, timeoutMs: Math.min(remaining, opts.query.timeoutMs ?? remaining) });
  } finally {
    await client.stop();
  }
}

/** Resolves when the DHT routing table holds a peer, or after `timeoutMs` (the query then reports what it finds). */
async function routingTableFilled(lib: Libp2p<DiscoveryServices>, timeoutMs: number): Promise<void> {
  const table = (lib.services.dht as Partial<SingleKadDHT>).routingTable;
  if (!table || table.size > 0) return;
  const deadline = Date.now() + timeoutMs;
  await new Promise<void>((resolve) => {
    const check = () => {
      if (table.size > 0 || Date.now() >= deadline) {
        lib.removeEventListener("peer:identify", check);
        clearInterval(poll);
        resolve();
      }
    };
    // identify is the usual trigger; the poll covers the routing table's own (async) update after it
    const poll = setInterval(check, 25);
    lib.addEventListener("peer:identify", check);
  });
}
