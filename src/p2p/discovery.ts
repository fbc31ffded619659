/**
 * discover(): find live nodes matching a query, verify their signed advertisements, measure latency and rank.
 *
 * 1. Providers of the most specific enumeration CID (region, else capability, else "all") from the DHT.
 * 2. For each provider, with bounded concurrency and a per-candidate timeout:
 *    - its record: DHT get of /agora/nodes/<region>/<peer> when the region is known (stops after QUORUM
 *      valid answers instead of walking the whole DHT; the selector picks the highest seq among them), or
 *      a direct fetch over /agora/advert/1.0.0 when the region is unknown or the DHT has no copy. Both go
 *      through the same validator (signature, key consistency, freshness);
 *    - a libp2p ping, started in parallel with the fetch.
 * 3. Exact filters (region, capability, group); draining nodes are dropped; expired records never get here.
 * 4. Rank (ranking.ts), best first, and cut to `limit`.
 * The whole query is bounded by `timeoutMs`; what was verified by then is returned.
 */
import type { KadDHT } from "@libp2p/kad-dht";
import type { Libp2p, PeerId, PeerInfo } from "@libp2p/interface";
import type { Ping } from "@libp2p/ping";
import { multiaddr } from "@multiformats/multiaddr";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { fetchAdvertisement } from "./advert-protocol";
import { advertisementKey, type NodeAdvertisement } from "./advertisement";
import { ALL_NODES_NAMESPACE, capabilityNamespace, namespaceCid, regionNamespace } from "./namespaces";
import { type RankedNode, rankNodes } from "./ranking";
import type { RecordValidation } from "./validator";
import { REGION_TOKEN_PATTERN } from "../protocol";

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
}

export const DEFAULT_DISCOVER_TIMEOUT_MS = 5_000;
export const DEFAULT_LIMIT = 20;
const MAX_LIMIT = 1_000;
const MAX_CANDIDATES = 200;
const CONCURRENCY = 8;
const CANDIDATE_TIMEOUT_MS = 3_000;
const PING_TIMEOUT_MS = 2_000;
/** Valid DHT answers collected before a get stops early. */
const QUORUM = 2;
const TOKEN = REGION_TOKEN_PATTERN;

function checkQuery(q: DiscoverQuery): void {
  for (const f of ["region", "capability", "group", "preferGroup"] as const) {
    const v = q[f];
    if (v !== undefined && !TOKEN.test(v)) throw new AgoraError("BAD_REQUEST", `${f} must be a lowercase token like eu-west, got ${JSON.stringify(v)}`);
  }
  if (q.limit !== undefined && (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > MAX_LIMIT)) {
    throw new AgoraError("BAD_REQUEST", `limit must be an integer in 1..${MAX_LIMIT}`);
  }
  if (q.timeoutMs !== undefined && (!Number.isFinite(q.timeoutMs) || q.timeoutMs <= 0)) throw new AgoraError("BAD_REQUEST", "timeoutMs must be positive");
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

class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
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
  const sem = new Semaphore(CONCURRENCY);
  const tasks: Promise<void>[] = [];
  const started = performance.now();

  const consider = (p: PeerInfo) => {
    const id = p.id.toString();
    if (seen.has(id) || seen.size >= MAX_CANDIDATES) return;
    seen.add(id);
    if (id === selfId) {
      const rec = q.includeSelf ? ctx.selfRecord?.() : null;
      if (rec && matches(rec, q)) found.push({ advertisement: rec, latency_ms: 0 });
      return;
    }
    tasks.push(
      sem.run(async () => {
        if (deadline.aborted) return;
        try {
          const r = await evaluate(ctx, q, p, deadline);
          if (r) found.push(r);
        } catch (err) {
          logger.debug({ peer: id, err: errorMessage(err) }, "discovery candidate dropped");
        }
      }),
    );
  };

  // With no connection at all there is nobody to ask: only locally stored providers can answer, and the
  // DHT would otherwise wait out the whole deadline for peers that are not coming.
  const lookupSignal = libp2p.getConnections().length === 0 ? AbortSignal.any([deadline, AbortSignal.timeout(ISOLATED_LOOKUP_MS)]) : deadline;
  try {
    for await (const ev of libp2p.services.dht.findProviders(cid, { signal: lookupSignal })) {
      // Providers this node stores itself arrive in a PEER_RESPONSE from self, remote ones as PROVIDER events.
      if (ev.name === "PROVIDER" || ev.name === "PEER_RESPONSE") for (const p of ev.providers) consider(p);
    }
  } catch (err) {
    if (!deadline.aborted) logger.debug({ err: errorMessage(err) }, "provider lookup ended with an error");
  }
  // Each task is bounded by the deadline and its own timeout, so this cannot hang.
  await Promise.allSettled(tasks);
  const ranked = rankNodes(found, { preferGroup: q.preferGroup ?? ctx.preferGroup }).slice(0, q.limit ?? DEFAULT_LIMIT);
  logger.debug(
    { query: { region: q.region, capability: q.capability, group: q.group }, providers: seen.size, found: ranked.length, ms: Math.round(performance.now() - started), timed_out: deadline.aborted },
    "discovery finished",
  );
  return ranked;
}

async function evaluate(
  ctx: DiscoveryContext,
  q: DiscoverQuery,
  provider: PeerInfo,
  deadline: AbortSignal,
): Promise<{ advertisement: NodeAdvertisement; latency_ms: number | null } | null> {
  const { libp2p } = ctx;
  const signal = AbortSignal.any([deadline, AbortSignal.timeout(CANDIDATE_TIMEOUT_MS)]);
  if (provider.multiaddrs.length > 0) await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => undefined);

  const pinging = ping(ctx, provider.id, signal);
  let rec: NodeAdvertisement | null = null;
  if (q.region) rec = await dhtRecord(ctx, advertisementKey(q.region, provider.id.toString()), signal);
  if (!rec && !signal.aborted) rec = await directRecord(ctx, provider.id, signal);
  if (!rec) {
    await pinging;
    return null;
  }
  if (!matches(rec, q)) return null;
  let latency = await pinging;
  if (latency === null && !signal.aborted && rec.listen_addr.length > 0) {
    // The provider record may have carried no usable address; the advertisement does.
    const addrs = rec.listen_addr.flatMap((a) => {
      try {
        return [multiaddr(a)];
      } catch {
        return [];
      }
    });
    await libp2p.peerStore.merge(provider.id, { multiaddrs: addrs }).catch(() => undefined);
    latency = await ping(ctx, provider.id, signal);
  }
  return { advertisement: rec, latency_ms: latency };
}

async function ping(ctx: DiscoveryContext, peer: PeerId, signal: AbortSignal): Promise<number | null> {
  try {
    return await ctx.libp2p.services.ping.ping(peer, { signal: AbortSignal.any([signal, AbortSignal.timeout(PING_TIMEOUT_MS)]) });
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

async function directRecord(ctx: DiscoveryContext, peer: PeerId, signal: AbortSignal): Promise<NodeAdvertisement | null> {
  let bytes: Uint8Array | null;
  try {
    bytes = await fetchAdvertisement(ctx.libp2p, peer, signal);
  } catch {
    return null;
  }
  if (!bytes) return null;
  // The key is rebuilt from the claimed region and the peer we actually talked to, so a node can only ever
  // hand out its own record.
  let region = "unknown";
  try {
    const o = JSON.parse(new TextDecoder().decode(bytes)) as { region?: unknown };
    if (typeof o.region === "string") region = o.region;
  } catch {
    /* the validator reports it as malformed */
  }
  try {
    return await ctx.validation.verify(advertisementKey(region, peer.toString()), bytes);
  } catch {
    return null;
  }
}
