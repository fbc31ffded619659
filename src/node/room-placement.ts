/**
 * Wires the room directory's placement policy (src/rooms RoomHost) to the network (src/p2p RoomDirectory,
 * discovery, ping) for a mixer node: the directory port over the DHT records, the region's mixers from
 * discovered signed advertisements (cached, refreshed on the heartbeat), and a bounded liveness check of a
 * recorded host.
 */
import type { Libp2p, PeerId, PrivateKey } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import type { Registry } from "prom-client";
import { MAX_REVOCATIONS_PER_ROOM, MemoryRevocationStore, type Revocation, type RevocationStore, roomOwnership } from "../access";
import { errorMessage } from "../errors";
import type { Logger } from "../log";
import { fetchVerifiedAdvertisement, type NetworkNode, PROTOCOL_ADVERT, type RoomDirectory, type RoomRecord } from "../p2p";
import { isPlacementCandidate, type PlacementCandidate } from "../protocol";
import { type RoomDirectoryPort, RoomHost, type RoomHostRecord } from "../rooms";

export function roomRecordView(r: RoomRecord): RoomHostRecord {
  return {
    room: r.room,
    region: r.region,
    host: r.host,
    addrs: r.addrs,
    epoch: r.epoch,
    status: r.status,
    ...(r.successor ? { successor: r.successor } : {}),
  };
}

/** A JOIN waits on this lookup: bounded well below the join timeout. */
const QUICK_RESOLVE_MS = 1_500;
/**
 * The heartbeat's reconcile asks for more than a JOIN or a client does: it is what finds a competing claim,
 * and nobody waits on it. After a partition heals, the other side's servers answer only after fresh dials;
 * with the lookup's defaults (3 answers, or 150 ms after the first) this side's own copies decided alone and
 * the losing host kept its claim for up to 9 s. So: every answer the walk reaches (up to K), or 1.5 s after
 * the first (bounded by the directory's own timeout).
 */
export const RECONCILE_RESOLVE = { quorum: 20, settleMs: 1_500 } as const;

/**
 * Revocations of owned rooms kept in the room record (its signed `revocations`, at most 64), so a ban holds
 * on every mixer the room moves to: what this node revoked, what its own record says, and what the records it
 * resolved (the previous host's, on a takeover) said. A revocation made here is published with the next
 * update of the record this node holds. A record's revocations come from its signing host: a hostile host's
 * winning record can only refuse more, never admit a revoked grant elsewhere (every list is only added to).
 */
export class RecordRevocations implements RevocationStore {
  private readonly local = new MemoryRevocationStore();
  constructor(
    private readonly directory: Pick<RoomDirectory, "current" | "update">,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  isRevoked(room: string, id: string, nowMs: number): boolean {
    if (this.local.isRevoked(room, id, nowMs)) return true;
    return (this.directory.current(room)?.revocations ?? []).some((r) => r.id === id && r.until > nowMs);
  }

  revoke(room: string, entry: Revocation, nowMs: number): boolean {
    if (!this.local.revoke(room, entry, nowMs)) return false;
    if (this.directory.current(room))
      void this.directory
        .update(room, { revocations: this.list(room, nowMs) })
        .catch((err) => this.log.warn({ room, err: errorMessage(err) }, "could not publish the room's revocations"));
    return true;
  }

  /** Ours and our record's, the latest expiry per id; at most 64, those lapsing last kept. */
  list(room: string, nowMs: number): Revocation[] {
    const all = new Map<string, number>();
    for (const r of [...(this.directory.current(room)?.revocations ?? []), ...this.local.list(room, nowMs)])
      if (r.until > nowMs) all.set(r.id, Math.max(all.get(r.id) ?? 0, r.until));
    return [...all]
      .map(([id, until]) => ({ id, until }))
      .sort((a, b) => b.until - a.until)
      .slice(0, MAX_REVOCATIONS_PER_ROOM);
  }

  /** Takes over the revocations of a record resolved from the network (a previous host's). */
  learn(room: string, revocations: readonly Revocation[] | undefined): void {
    const now = this.now();
    for (const r of revocations ?? []) if (r.until > now) this.local.revoke(room, r, now);
  }
}

export function directoryPort(d: RoomDirectory, revocations?: RecordRevocations): RoomDirectoryPort {
  return {
    resolve: async (room, o) => {
      const r = await d.resolve(room, o?.quick ? { quorum: 1, signal: AbortSignal.timeout(QUICK_RESOLVE_MS) } : RECONCILE_RESOLVE);
      if (r && roomOwnership(room).owned) revocations?.learn(room, r.revocations);
      return r && roomRecordView(r);
    },
    claim: async (room, epoch, participants) => {
      // Owned rooms are marked so in their record and keep their revocations across hosts.
      const owned = roomOwnership(room).owned;
      const revs = owned ? (revocations?.list(room, Date.now()) ?? []) : [];
      await d.claim(room, { epoch, participants, ...(owned ? { open: false } : {}), ...(revs.length > 0 ? { revocations: revs } : {}) });
    },
    handOver: async (room, epoch, successor, participants) => {
      await d.update(room, { epoch, status: "handing-over", successor, participants });
    },
    release: (room) => d.release(room),
    countRedirect: () => d.countRedirect(),
    countHandover: (room, direction) => d.countHandover(room, direction),
  };
}

type Candidate = Awaited<ReturnType<NonNullable<ConstructorParameters<typeof RoomHost>[0]["candidates"]>>>[number];

export interface RoomPlacementWiring {
  host: RoomHost;
  /** heartbeat: refresh the mixer list, reconcile hosted rooms, report participant counts */
  beat(participants: Map<string, number>): Promise<void>;
  /** a fresh mixer list (before a drain picks successors), bounded by discovery's timeout; `ifEmpty`: only without one */
  refreshMixers(ifEmpty?: boolean): Promise<void>;
}

/**
 * The heartbeat refreshes the region's mixer list at most this often (the beat itself may be faster) while
 * the list matters: this node hosts a room, or a JOIN asked it for placement within MIXER_DEMAND_MS.
 */
export const MIXER_REFRESH_MS = 5_000;
/** An idle node's list, unchanged walk after walk, is refreshed half as often each time, down to this. */
export const IDLE_MIXER_REFRESH_MS = 30_000;
/** A JOIN's placement question keeps the list at MIXER_REFRESH_MS for this long. */
export const MIXER_DEMAND_MS = 60_000;

/**
 * When the mixer list is due for a refresh. A discovery is a DHT walk plus a ping, a record lookup and an
 * advertisement fetch per mixer of the region, and every mixer ran one every 5 s whether or not anybody
 * asked it anything: on a 10-node test network that was most of an idle node's DHT traffic. So an idle node
 * backs off while its walks bring no news (no mixer it has not seen in the last minute, none that became
 * eligible for placement or stopped being so):
 * 5 s, 10 s, 20 s, 30 s. A walk that found fewer mixers (a busy machine's timed-out walk, a mixer gone) is
 * no news: the hosts and drains that depend on a fresh list refresh at the busy pace or ask for one
 * themselves. Hosting a room or a recent JOIN brings back the 5 s pace at once, as do news and a failed walk.
 * A drain asks for a fresh list itself (refreshMixers), and a JOIN on a list older than the busy pace
 * refreshes it behind the answer.
 */
export class MixerRefreshCadence {
  private lastAt = Number.NEGATIVE_INFINITY;
  private demandAt = Number.NEGATIVE_INFINITY;
  private idleMs = MIXER_REFRESH_MS;

  constructor(private readonly now: () => number = Date.now) {}

  /** A JOIN asked for placement: the list matters now. */
  demand(): void {
    this.demandAt = this.now();
  }

  /** The refresh interval in force: MIXER_REFRESH_MS while hosting or asked, the backed-off one otherwise. */
  intervalMs(hosting: boolean): number {
    return hosting || this.now() - this.demandAt < MIXER_DEMAND_MS ? MIXER_REFRESH_MS : this.idleMs;
  }

  due(hosting: boolean): boolean {
    return this.now() - this.lastAt >= this.intervalMs(hosting);
  }

  /** A refresh ended: `news` whether it found what the last minute's walks had not; undefined: it failed. */
  refreshed(news: boolean | undefined): void {
    this.lastAt = this.now();
    this.idleMs = news === false ? Math.min(IDLE_MIXER_REFRESH_MS, this.idleMs * 2) : MIXER_REFRESH_MS;
  }
}

/**
 * Whether a walk found a mixer `known` (peer id to its eligibility, isPlacementCandidate) does not have, or
 * one whose eligibility for placement in `region` changed. Load figures and online/degraded flip on a busy
 * machine and change no placement.
 */
export function mixerListNews(found: readonly PlacementCandidate[], known: ReadonlyMap<string, boolean>, region: string): boolean {
  return found.some((c) => known.get(c.peer_id) !== isPlacementCandidate(c, region));
}

/** A discovery that finds no other mixer does not replace a list younger than this. */
const KEEP_LAST_LIST_MS = 60_000;

/** How long a liveness ping of a recorded host may take before the host counts as dead. */
const ALIVE_TIMEOUT_MS = 1_500;
const DISCOVER_TIMEOUT_MS = 4_000;
/** A drain asks the mixers it is connected to for their current advertisement, this many at most, this long. */
const KNOWN_MIXERS_MAX = 64;
const KNOWN_MIXERS_TIMEOUT_MS = 1_500;

export function createRoomPlacement(opts: {
  network: NetworkNode;
  directory: RoomDirectory;
  privateKey: PrivateKey;
  region: string;
  registry: Registry;
  logger: Logger;
  /** owned rooms' revocations over the records (pass the same store to the audio service) */
  revocations?: RecordRevocations;
  /** the refresh cadence's clock (virtual time in tests) */
  now?: () => number;
}): RoomPlacementWiring {
  const { network, directory } = opts;
  const log = opts.logger.child({ component: "room-placement" });
  let cache: Candidate[] = [];
  /** every mixer a discovery found in the last minute, its latest advertisement (a drain's fallback) */
  const recent = new Map<string, { at: number; c: Candidate }>();
  let refreshedAt = Number.NEGATIVE_INFINITY;
  const cadence = new MixerRefreshCadence(opts.now);
  let refreshing: Promise<Candidate[]> | undefined;
  const refresh = (): Promise<Candidate[]> => {
    refreshing ??= network
      .discover({ region: opts.region, capability: "mixer", includeSelf: true, timeoutMs: DISCOVER_TIMEOUT_MS })
      .then((ranked) => {
        const next = ranked.map((r) => ({ ...r.advertisement }));
        const known = new Map([...recent].map(([peer, e]) => [peer, isPlacementCandidate(e.c, opts.region)]));
        cadence.refreshed(mixerListNews(next, known, opts.region));
        const now = Date.now();
        for (const c of next) if (c.status !== "draining") recent.set(c.peer_id, { at: now, c });
        for (const [peer, e] of recent) if (now - e.at > KEEP_LAST_LIST_MS) recent.delete(peer);
        // A walk that found no mixer but this node (a busy machine's timed-out discovery) is a failed one, not
        // news that the region emptied: replacing a recent list with it left a drain without a successor, so
        // its rooms got no MOVE at all. The last list stands until it is a minute old.
        const others = next.some((c) => c.peer_id !== network.peerId);
        if (!others && cache.some((c) => c.peer_id !== network.peerId) && Date.now() - refreshedAt < KEEP_LAST_LIST_MS) {
          log.debug({ found: next.length, kept: cache.length }, "mixer discovery found no other mixer; keeping the last list");
          return cache;
        }
        cache = next;
        refreshedAt = Date.now();
        return cache;
      })
      .catch((err) => {
        cadence.refreshed(undefined);
        log.debug({ err: errorMessage(err) }, "mixer discovery for placement failed; keeping the last list");
        return cache;
      })
      .finally(() => {
        refreshing = undefined;
      });
    return refreshing;
  };
  const libp2p = network.libp2p as Libp2p<{ ping?: { ping(peer: unknown, o: { signal: AbortSignal }): Promise<number> } }>;
  /**
   * The region's mixers this node is connected to, each by its own current signed advertisement (served over
   * /agora/advert/1.0.0 on the open connection: no DHT walk, which on a busy machine may find none of them):
   * a drain's first source of successors. Draining ones are returned as such (the pool leaves them out) and
   * dropped from `recent`; live ones refresh it.
   */
  const knownMixers = async (): Promise<Candidate[]> => {
    const peers = new Map<string, PeerId>();
    for (const c of libp2p.getConnections?.() ?? [])
      if (c.status === "open" && c.remotePeer.toString() !== network.peerId) peers.set(c.remotePeer.toString(), c.remotePeer);
    const servers: PeerId[] = [];
    for (const id of peers.values()) {
      if (servers.length >= KNOWN_MIXERS_MAX) break;
      const info = await libp2p.peerStore.get(id).catch(() => undefined);
      if (info?.protocols.includes(PROTOCOL_ADVERT)) servers.push(id);
    }
    const signal = AbortSignal.timeout(KNOWN_MIXERS_TIMEOUT_MS);
    const ads = await Promise.all(servers.map((id) => fetchVerifiedAdvertisement(network.libp2p, id, signal).catch(() => null)));
    const now = Date.now();
    const out: Candidate[] = [];
    for (const ad of ads) {
      if (!ad || ad.region !== opts.region || !ad.capabilities.includes("mixer")) continue;
      const c = { ...ad };
      if (c.status === "draining") recent.delete(c.peer_id);
      else recent.set(c.peer_id, { at: now, c });
      out.push(c);
    }
    log.debug({ connected: peers.size, servers: servers.length, mixers: out.length }, "mixers asked directly for a drain");
    return out;
  };
  const isAlive = async (peer: string, addrs: string[]): Promise<boolean> => {
    try {
      const id = peerIdFromString(peer);
      const mas = addrs.flatMap((a) => {
        try {
          return [multiaddr(a.replace(/\/p2p\/[^/]+$/, ""))];
        } catch {
          return [];
        }
      });
      if (mas.length > 0) await libp2p.peerStore.merge(id, { multiaddrs: mas }).catch(() => undefined);
      const ping = libp2p.services.ping;
      if (!ping) return (await libp2p.dial(id, { signal: AbortSignal.timeout(ALIVE_TIMEOUT_MS) })).status === "open";
      await ping.ping(id, { signal: AbortSignal.timeout(ALIVE_TIMEOUT_MS) });
      return true;
    } catch {
      return false;
    }
  };
  const host = new RoomHost({
    directory: directoryPort(directory, opts.revocations),
    selfPeerId: network.peerId,
    privateKey: opts.privateKey,
    region: opts.region,
    selfAddrs: () => network.listenAddrs(),
    // A JOIN's rule check: the list matters from now on; one older than the busy pace is refreshed behind
    // this answer (an idle node's list may be up to IDLE_MIXER_REFRESH_MS old).
    candidates: async () => {
      cadence.demand();
      if (cache.length === 0) return refresh();
      if (cadence.due(true)) void refresh();
      return cache;
    },
    recentCandidates: () => [...recent.values()].map((e) => e.c),
    knownMixers,
    refreshCandidates: async () => {
      await refresh();
    },
    isAlive,
    // A peer missing from our list may still be a mixer (a busy machine's discovery finds part of the
    // region): the peer is asked for its own signed advertisement, which a real mixer always serves.
    isMixer: async (peer) => {
      // A draining host (the issuer of our move tokens) is missing from a fresh walk (discovery drops draining
      // nodes) but was seen by a recent one; asking it for its advertisement can time out on a busy machine.
      if (cache.some((c) => c.peer_id === peer && c.capabilities.includes("mixer"))) return true;
      if (recent.get(peer)?.c.capabilities.includes("mixer")) return true;
      try {
        const ad = await fetchVerifiedAdvertisement(network.libp2p, peerIdFromString(peer), AbortSignal.timeout(ALIVE_TIMEOUT_MS));
        return ad !== null && ad.region === opts.region && ad.capabilities.includes("mixer");
      } catch {
        return false;
      }
    },
    registry: opts.registry,
    logger: opts.logger,
  });
  directory.on({ onClaimLost: (room, winner) => host.claimLost(room, roomRecordView(winner)) });
  void refresh();
  let beating = false;
  return {
    host,
    refreshMixers: async (ifEmpty = false) => {
      if (!ifEmpty || cache.length === 0) await refresh();
    },
    async beat(participants) {
      if (beating) return;
      beating = true;
      try {
        for (const [room, n] of participants) directory.setParticipants(room, n);
        // The mixer list is a discovery (a DHT walk and a ping per advertised mixer): not on every beat, or a
        // region flooded with fake advertisements keeps this node's dialer busy with them (a drain refreshes
        // it first anyway), and an idle node backs off (MixerRefreshCadence).
        const due = cache.length === 0 || cadence.due(participants.size > 0);
        // Not awaited: a discovery waits out its timeout on unreachable mixers (a partition), and the next
        // beats' reconciles, which find a healed partition's competing claim, must not wait behind it.
        if (due) void refresh();
        await host.reconcile();
      } catch (err) {
        log.debug({ err: errorMessage(err) }, "room placement heartbeat failed");
      } finally {
        beating = false;
      }
    },
  };
}
