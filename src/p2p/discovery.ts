/**
 * discover(): find live nodes matching a query, verify their signed advertisements, measure latency and rank.
 *
 * 1. Providers of the most specific enumeration CID (region, else capability, else "all") from the DHT.
 * 2. Each provider is a candidate, evaluated as soon as it arrives, DISCOVERY_CONCURRENCY at a time
 *    (p-queue; at most MAX_CANDIDATES without a connection per query), peers this node is connected to first (a connection is proof of reachability; fake providers have
 *    none). Per candidate, within CANDIDATE_TIMEOUT_MS (and the record of one that answered, within as much again
 *    from its answer):
 *    - reachability: a libp2p ping (dial included) that must answer within REACH_TIMEOUT_MS, or, for a peer
 *      proven reachable (it answered the provider lookup's own DHT requests, is connected, or was identified
 *      as an Agora DHT server before: only slow), before the query's deadline;
 *    - at the same time, when the region is known, the DHT copy of /agora/nodes/<region>/<peer> (stops after
 *      QUORUM valid answers; the selector picks the highest seq among several), RECORD_LOOKUP_CONCURRENCY
 *      lookups at a time;
 *    - a reachable candidate's record is fetched from the node itself over /agora/advert/1.0.0 (its current
 *      one, on the connection the ping opened), the DHT copy if that fails. An unreachable one is kept if
 *      its DHT copy arrived by the time its ping gave up (or, for a proven peer, within its budget: it was
 *      alive a heartbeat ago) and ranked after every reachable node (ranking.ts); otherwise it is dropped. Every record goes through the same
 *      validator (signature, key consistency, freshness).
 * 3. Exact filters (region, capability, group); draining nodes are dropped; expired records never get here.
 * 4. Rank (ranking.ts), best first, and cut to `limit`.
 * The whole query is bounded by `timeoutMs`; what was verified by then is returned. A region flooded with
 * fake (unreachable) nodes therefore costs the provider lookup plus about one REACH_TIMEOUT_MS, not a
 * timeout per fake in sequence (bench/discovery.ts --fake N measures it).
 */

import type { Libp2p, PeerId, PeerInfo } from "@libp2p/interface";
import type { KadDHT } from "@libp2p/kad-dht";
import type { Ping } from "@libp2p/ping";
import PQueue from "p-queue";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { REGION_TOKEN_PATTERN } from "../protocol";
import { fetchVerifiedAdvertisement } from "./advert-protocol";
import { advertisementKey, type NodeAdvertisement } from "./advertisement";
import { ALL_NODES_NAMESPACE, capabilityNamespace, namespaceCid, PROTOCOL_DHT, regionNamespace } from "./namespaces";
import { type RankedNode, rankNodes } from "./ranking";
import type { RecordValidation } from "./validator";

export interface DiscoverQuery {
  region?: string;
  capability?: string;
  /** Exact filter on the node's group. */
  group?: string;
  limit?: number;
  /** Additive: group that wins score ties (defaults to the querying node's own group). */
  preferGroup?: string;
  /** Additive: overall bound in ms (default 5000). */
  timeoutMs?: number;
  /** Additive: also return this node itself when it matches (latency 0). */
  includeSelf?: boolean;
}

export type DiscoveryServices = { dht: KadDHT; ping: Ping };

export interface DiscoveryContext {
  libp2p: Libp2p<DiscoveryServices>;
  validation: RecordValidation;
  logger: Logger;
  preferGroup?: string;
  /** This node's current advertisement, for includeSelf. */
  selfRecord?: () => NodeAdvertisement | null;
  /** Dial + ping budget of a candidate's first reach (default REACH_TIMEOUT_MS); tests make it tiny. */
  reachTimeoutMs?: number;
}

export const DEFAULT_DISCOVER_TIMEOUT_MS = 5_000;
export const DEFAULT_LIMIT = 20;
const MAX_LIMIT = 1_000;
/** Candidates without a connection evaluated per query at most (connected ones always are). */
const MAX_CANDIDATES = 256;
/**
 * Candidates evaluated at once: as many as a query takes without a connection, so however many fake
 * providers a region holds, evaluating them costs one reach timeout, not one per wave. A dial to a fake costs
 * a socket and a timer, not CPU. Connected candidates (no dial) go first.
 */
export const DISCOVERY_CONCURRENCY = MAX_CANDIDATES;
/**
 * libp2p's parallel dials for a node or client that runs discovery: libp2p's default (100) for everything
 * else, plus discovery's own, so that a flood of fake candidates never queues a real node's dial behind
 * theirs inside libp2p, where the candidate's reach timeout would expire unseen.
 */
export const MAX_PARALLEL_DIALS = 100 + DISCOVERY_CONCURRENCY;
/**
 * DHT record lookups at once, across the query's candidates: each asks the same few servers, and a kad-dht
 * server takes 32 inbound streams per connection; beyond that lookups fail instead of queueing.
 */
const RECORD_LOOKUP_CONCURRENCY = 16;
/**
 * Dial + ping must answer within this: TCP, multistream, Noise, yamux and the ping itself take about five
 * round trips, so a node up to ~100 ms away (a region's nodes, a region query's candidates) makes it. One
 * farther away is still listed if its DHT copy is at hand, ranked as unreachable.
 */
export const REACH_TIMEOUT_MS = 500;
/** Everything one candidate may cost: record lookup and reachability. */
const CANDIDATE_TIMEOUT_MS = 1_500;
/**
 * Valid DHT answers collected before a get stops early. One: a reachable node's record comes from the node
 * itself; the DHT copy serves the unreachable (ranked last) and the rare node whose direct fetch failed, and
 * servers refuse copies older than the one they hold (record-store.ts), so waiting for a second answer
 * (a whole DHT walk when only one server has the key) would buy little for a lot of time in a flood.
 */
const QUORUM = 1;
/** Record-lookup priority of a candidate that answered its ping (connected ones have 1, the rest 0). */
const ANSWERED_PRIORITY = 2;
const TOKEN = REGION_TOKEN_PATTERN;

function checkQuery(q: DiscoverQuery): void {
  for (const f of ["region", "capability", "group", "preferGroup"] as const) {
    const v = q[f];
    if (v !== undefined && !TOKEN.test(v))
      throw new AgoraError("BAD_REQUEST", `${f} must be a lowercase token like eu-west, got ${JSON.stringify(v)}`);
  }
  if (q.limit !== undefined && (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > MAX_LIMIT)) {
    throw new AgoraError("BAD_REQUEST", `limit must be an integer in 1..${MAX_LIMIT}`);
  }
  if (q.timeoutMs !== undefined && (!Number.isFinite(q.timeoutMs) || q.timeoutMs <= 0))
    throw new AgoraError("BAD_REQUEST", "timeoutMs must be positive");
}

/** The enumeration namespace a query walks: the most selective one it names. */
export function queryNamespace(q: DiscoverQuery): string {
  if (q.region) return regionNamespace(q.region);
  if (q.capability) return capabilityNamespace(q.capability);
  return ALL_NODES_NAMESPACE;
}

export function matches(rec: NodeAdvertisement, q: DiscoverQuery): boolean {
  if (q.region !== undefined && rec.region !== q.region) return false;
  if (q.capability !== undefined && !rec.capabilities.includes(q.capability)) return false;
  if (q.group !== undefined && rec.group !== q.group) return false;
  return rec.status !== "draining";
}

const ISOLATED_LOOKUP_MS = 250;

export async function runDiscovery(ctx: DiscoveryContext, q: DiscoverQuery): Promise<RankedNode[]> {
  checkQuery(q);
  const { libp2p, logger } = ctx;
  const timeoutMs = q.timeoutMs ?? DEFAULT_DISCOVER_TIMEOUT_MS;
  const deadline = AbortSignal.timeout(timeoutMs);
  const selfId = libp2p.peerId.toString();
  const cid = await namespaceCid(queryNamespace(q));
  const found: { advertisement: NodeAdvertisement; latency_ms: number | null }[] = [];
  const seen = new Set<string>();
  let unconnected = 0;
  const queue = new PQueue({ concurrency: DISCOVERY_CONCURRENCY });
  const lookups = new PQueue({ concurrency: RECORD_LOOKUP_CONCURRENCY });
  const tasks: Promise<void>[] = [];
  const started = performance.now();
  // Peers that answered this query's DHT walk, or that a DHT server that answered named among the closest
  // peers of its routing table (a table keeps only peers that answered that server): real nodes, whatever
  // their first ping said. The second half matters for a fresh client in a crowded region: kad-dht ends the
  // walk once it holds K providers, i.e. after the first server's answer, so the region's nodes themselves are
  // never asked, and on a busy host their first dial can take longer than the reach timeout. A provider
  // record alone (what a flood of fakes is) vouches for nothing.
  const answered = new Set<string>();
  const named = new Set<string>();
  let walkDone!: () => void;
  const walk: DhtWalk = {
    answered: (id) => answered.has(id) || named.has(id),
    done: new Promise<void>((r) => (walkDone = r)),
  };

  const consider = (p: PeerInfo) => {
    const id = p.id.toString();
    if (seen.has(id)) return;
    const connected = libp2p.getConnections(p.id).length > 0;
    if (!connected && unconnected >= MAX_CANDIDATES) return;
    seen.add(id);
    if (id === selfId) {
      const rec = q.includeSelf ? ctx.selfRecord?.() : null;
      if (rec && matches(rec, q)) found.push({ advertisement: rec, latency_ms: 0 });
      return;
    }
    if (!connected) unconnected++;
    tasks.push(
      queue.add(
        async () => {
          if (deadline.aborted) return;
          try {
            const r = await evaluate(ctx, q, p, deadline, lookups, connected ? 1 : 0, walk);
            if (r) found.push(r);
          } catch (err) {
            logger.debug({ peer: id, err: errorMessage(err) }, "discovery candidate dropped");
          }
        },
        { priority: connected ? 1 : 0 },
      ),
    );
  };

  // With no connection at all there is nobody to ask: only locally stored providers can answer, and the
  // DHT would otherwise wait out the whole deadline for peers that are not coming.
  const lookupSignal =
    libp2p.getConnections().length === 0 ? AbortSignal.any([deadline, AbortSignal.timeout(ISOLATED_LOOKUP_MS)]) : deadline;
  try {
    for await (const ev of libp2p.services.dht.findProviders(cid, { signal: lookupSignal })) {
      if (ev.name === "PEER_RESPONSE") {
        answered.add(ev.from.toString());
        for (const c of ev.closer) named.add(c.id.toString());
      }
      // Providers this node stores itself arrive in a PEER_RESPONSE from self, remote ones as PROVIDER events.
      if (ev.name === "PROVIDER" || ev.name === "PEER_RESPONSE") for (const p of ev.providers) consider(p);
    }
  } catch (err) {
    if (!deadline.aborted) logger.debug({ err: errorMessage(err) }, "provider lookup ended with an error");
  } finally {
    walkDone();
  }
  const lookupMs = performance.now() - started;
  // Each task is bounded by the deadline and its own timeout, so this cannot hang.
  await Promise.allSettled(tasks);
  queue.clear();
  lookups.clear();
  const ranked = rankNodes(found, { preferGroup: q.preferGroup ?? ctx.preferGroup }).slice(0, q.limit ?? DEFAULT_LIMIT);
  logger.debug(
    {
      query: { region: q.region, capability: q.capability, group: q.group },
      providers: seen.size,
      found: ranked.length,
      unreachable: found.filter((f) => f.latency_ms === null).length,
      ms: Math.round(performance.now() - started),
      provider_lookup_ms: Math.round(lookupMs),
      timed_out: deadline.aborted,
    },
    "discovery finished",
  );
  return ranked;
}

interface DhtWalk {
  /** The peer answered one of the provider lookup's DHT requests, or an answering server named it as a closer peer. */
  answered(id: string): boolean;
  /** Settles when the provider lookup is over. */
  done: Promise<void>;
}

async function evaluate(
  ctx: DiscoveryContext,
  q: DiscoverQuery,
  provider: PeerInfo,
  deadline: AbortSignal,
  lookups: PQueue,
  priority: number,
  walk: DhtWalk,
): Promise<{ advertisement: NodeAdvertisement; latency_ms: number | null } | null> {
  const { libp2p } = ctx;
  const began = performance.now();
  const signal = AbortSignal.any([deadline, AbortSignal.timeout(CANDIDATE_TIMEOUT_MS)]);
  if (provider.multiaddrs.length > 0) await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => undefined);

  // Reachability and the DHT copy of the record at the same time: a candidate costs about REACH_TIMEOUT_MS.
  const reaching = ping(ctx, provider.id, signal, ctx.reachTimeoutMs ?? REACH_TIMEOUT_MS);
  // The DHT copy is bounded by the query's deadline and ended explicitly: at once for a candidate that
  // neither answered nor is proven (a fake costs no more than its ping), by the record budget of one that
  // answered.
  const noLookup = new AbortController();
  const lookupSignal = AbortSignal.any([deadline, noLookup.signal]);
  const lookingUp: Promise<NodeAdvertisement | null> = q.region
    ? lookups
        .add(
          async () => (lookupSignal.aborted ? null : dhtRecord(ctx, advertisementKey(q.region!, provider.id.toString()), lookupSignal)),
          { priority, signal: lookupSignal, id: provider.id.toString() },
        )
        .then(
          (r) => r ?? null,
          () => null,
        )
    : Promise.resolve(null);
  let looked: NodeAdvertisement | null | undefined;
  void lookingUp.then((r) => (looked = r));
  let latency = await reaching;
  const firstAnswerMs = performance.now() - began;
  let proven = false;
  if (latency === null && !signal.aborted) {
    // A node that answered the DHT walk, is connected, or was identified as an Agora DHT server on an earlier
    // connection is (or was) reachable: its dial was merely slower than the reach timeout (a busy host, a cold
    // client), so it gets another chance. A fake, never connected, never qualifies.
    await Promise.race([walk.done, new Promise((r) => signal.addEventListener("abort", r, { once: true }))]);
    proven =
      walk.answered(provider.id.toString()) || libp2p.getConnections(provider.id).length > 0 || (await knownDhtServer(ctx, provider.id));
    // Up to the query's deadline: only real nodes get here, and a busy moment must not drop them.
    if (proven) latency = await ping(ctx, provider.id, deadline, DEFAULT_DISCOVER_TIMEOUT_MS);
  }
  // Ends the DHT copy's lookup when `s` fires (at once if it has).
  const endLookupOn = (s: AbortSignal) =>
    s.aborted ? noLookup.abort() : s.addEventListener("abort", () => noLookup.abort(), { once: true });
  let rec: NodeAdvertisement | null = null;
  if (latency !== null) {
    // A node that answered is real, however long its answer took (on a starved host the ping alone can use up
    // the candidate's budget): its record gets a budget of its own from now, within the deadline, from the
    // node itself over the connection the ping opened, else from the DHT. Its DHT lookup, if still queued
    // (behind a flood of fakes' lookups, on a fresh client), goes first.
    const recordBudget = AbortSignal.any([deadline, AbortSignal.timeout(CANDIDATE_TIMEOUT_MS)]);
    endLookupOn(recordBudget);
    try {
      lookups.setPriority(provider.id.toString(), ANSWERED_PRIORITY);
    } catch {
      // already running or done
    }
    rec = await directRecord(ctx, provider.id, recordBudget);
    if (rec) noLookup.abort();
    else rec = await lookingUp;
  } else {
    // Unreachable: kept (ranked last) only if its DHT copy is already here. Waiting for it would let every
    // fake candidate cost a lookup on top of its reach timeout; a proven peer is worth the wait, within its budget.
    if (proven) endLookupOn(signal);
    rec = looked ?? (proven ? await lookingUp : null);
  }
  noLookup.abort();
  if (!rec || !matches(rec, q)) {
    ctx.logger.debug(
      {
        peer: provider.id.toString(),
        latency_ms: latency,
        proven,
        first_ping_ms: Math.round(firstAnswerMs),
        record: rec ? "does not match the query" : latency === null ? "no DHT copy at hand" : "neither from the node nor from the DHT",
        ms: Math.round(performance.now() - began),
      },
      "discovery candidate dropped",
    );
    return null;
  }
  return { advertisement: rec, latency_ms: latency };
}

async function knownDhtServer(ctx: DiscoveryContext, peer: PeerId): Promise<boolean> {
  try {
    return (await ctx.libp2p.peerStore.get(peer)).protocols.includes(PROTOCOL_DHT);
  } catch {
    return false;
  }
}

async function ping(ctx: DiscoveryContext, peer: PeerId, signal: AbortSignal, timeoutMs = REACH_TIMEOUT_MS): Promise<number | null> {
  try {
    return await ctx.libp2p.services.ping.ping(peer, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) });
  } catch {
    return null;
  }
}

/** DHT get that stops after QUORUM valid answers; kad-dht has already run the validator on each answer. */
export async function dhtRecord(ctx: DiscoveryContext, key: string, signal: AbortSignal): Promise<NodeAdvertisement | null> {
  const keyBytes = new TextEncoder().encode(key);
  const stop = new AbortController();
  const records: Uint8Array[] = [];
  try {
    for await (const ev of ctx.libp2p.services.dht.get(keyBytes, { signal: AbortSignal.any([signal, stop.signal]) })) {
      if (ev.name === "PEER_RESPONSE" && ev.record) records.push(ev.record.value);
      else if (ev.name === "VALUE") records.push(ev.value);
      if (records.length >= QUORUM) {
        stop.abort();
        break;
      }
    }
  } catch {
    // not found, timeout, or aborted after quorum: use what arrived
  } finally {
    stop.abort();
  }
  if (records.length === 0) return null;
  try {
    return await ctx.validation.verify(key, records[ctx.validation.select(records)]!);
  } catch {
    return null;
  }
}

function directRecord(ctx: DiscoveryContext, peer: PeerId, signal: AbortSignal): Promise<NodeAdvertisement | null> {
  return fetchVerifiedAdvertisement(ctx.libp2p, peer, signal, (key, bytes) => ctx.validation.verify(key, bytes));
}
