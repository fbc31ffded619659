/**
 * Keeps this node attached to the network.
 *
 * - Configured bootstrap peers are dialed at start and re-dialed whenever they are not connected, with
 *   p-retry's exponential backoff: base × 2^attempt, capped, and jittered (each delay drawn from [½, 1] of
 *   the nominal value, except at the cap itself) so a bootstrap node that restarts is not hit by every node in
 *   the same millisecond. Nodes that started together stay apart once at the cap: their earlier random
 *   delays have already put them out of phase.
 * - Known peers (from known-peers.json) are dialed once at start, and retried with the same backoff only
 *   while the node has no connection at all: they exist to rejoin, not to pin connections.
 * Bootstrap connections are tagged so the connection manager prunes them last.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Libp2p, PeerId } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import pRetry, { type Options as RetryOptions } from "p-retry";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";

export const BOOTSTRAP_TAG = "agora-bootstrap";

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1_000, capMs: 300_000 };

/**
 * p-retry options for the backoff: retry n waits min(cap, base·2^n · r) with r drawn from [½, 1] (p-retry
 * draws its factor from [1, 2], hence half the base as its minTimeout). Retries for ever: the loop ends on
 * success, on stop (the signal), or when `shouldRetry` says the peer is no longer worth it.
 */
export function backoffRetryOptions(o: BackoffOptions): RetryOptions {
  return { retries: Number.POSITIVE_INFINITY, factor: 2, minTimeout: o.baseMs / 2, maxTimeout: o.capMs, randomize: true, unref: true };
}

/** The wait before the first redial after a disconnect: the first backoff step, [½, 1] of the base. */
function firstDelay(o: BackoffOptions): number {
  return Math.round(o.baseMs * (0.5 + 0.5 * Math.random()));
}

interface Target {
  peerId: PeerId;
  addrs: Multiaddr[];
  persistent: boolean;
  /** The retry loop running for this peer, if any. */
  loop?: Promise<void>;
}

export interface RedialerOptions {
  libp2p: Libp2p;
  logger: Logger;
  bootstrap: string[];
  known: { peer_id: string; addrs: string[] }[];
  backoff?: BackoffOptions;
  dialTimeoutMs?: number;
  /** At most this many known peers are used (most recent first). */
  maxKnown?: number;
}

export class Redialer {
  private readonly targets = new Map<string, Target>();
  private readonly log: Logger;
  private readonly backoff: BackoffOptions;
  private readonly dialTimeoutMs: number;
  private stopped = true;
  private controller = new AbortController();
  private readonly onDisconnect = (evt: CustomEvent<PeerId>) => {
    const t = this.targets.get(evt.detail.toString());
    if (!t || this.stopped) return;
    const isolated = this.opts.libp2p.getConnections().length === 0;
    if (t.persistent || isolated) this.redial(t, true);
    if (isolated) this.wakeKnown();
  };

  constructor(private readonly opts: RedialerOptions) {
    this.log = opts.logger;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.dialTimeoutMs = opts.dialTimeoutMs ?? 10_000;
    for (const text of opts.bootstrap) {
      try {
        const ma = multiaddr(text);
        const id = ma.getComponents().findLast((c) => c.name === "p2p")?.value;
        if (!id) throw new Error("no /p2p/<peer id>");
        const peerId = peerIdFromString(id);
        const key = peerId.toString();
        if (key === opts.libp2p.peerId.toString()) continue;
        const t = this.targets.get(key);
        if (t) t.addrs.push(ma);
        else this.targets.set(key, { peerId, addrs: [ma], persistent: true });
      } catch (err) {
        this.log.warn({ addr: text, err: errorMessage(err) }, "ignoring malformed bootstrap address");
      }
    }
    for (const k of opts.known.slice(0, opts.maxKnown ?? 16)) {
      if (this.targets.has(k.peer_id) || k.peer_id === opts.libp2p.peerId.toString()) continue;
      try {
        const peerId = peerIdFromString(k.peer_id);
        const addrs = k.addrs.map((a) => multiaddr(a).encapsulate(`/p2p/${k.peer_id}`));
        this.targets.set(k.peer_id, { peerId, addrs, persistent: false });
      } catch {
        /* loadKnownPeers already validated; a bad entry is simply skipped */
      }
    }
  }

  /** Peer ids of the configured bootstrap peers. */
  bootstrapPeers(): string[] {
    return [...this.targets.values()].filter((t) => t.persistent).map((t) => t.peerId.toString());
  }

  connectedBootstrapCount(): number {
    return this.bootstrapPeers().filter((p) => this.opts.libp2p.getConnections(peerIdFromString(p)).length > 0).length;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.controller = new AbortController();
    this.opts.libp2p.addEventListener("peer:disconnect", this.onDisconnect);
    for (const t of this.targets.values()) this.redial(t, false);
  }

  stop(): void {
    this.stopped = true;
    this.opts.libp2p.removeEventListener("peer:disconnect", this.onDisconnect);
    this.controller.abort(new AgoraError("P2P", "the redialer stopped"));
  }

  /** Resolves once every retry loop has ended (after stop()). */
  async settled(): Promise<void> {
    await Promise.all([...this.targets.values()].map((t) => t.loop));
  }

  private wakeKnown(): void {
    for (const t of this.targets.values()) if (!t.persistent) this.redial(t, true);
  }

  /** Starts the retry loop for `t` unless one is running; `wait`: the first dial waits one backoff step. */
  private redial(t: Target, wait: boolean): void {
    if (this.stopped || t.loop) return;
    const libp2p = this.opts.libp2p;
    const signal = this.controller.signal;
    t.loop = (async () => {
      if (wait) await sleep(firstDelay(this.backoff), undefined, { signal, ref: false });
      await pRetry((attempt) => this.dialOnce(t, attempt, signal), {
        ...backoffRetryOptions(this.backoff),
        signal,
        // Known peers are only worth redialing while we are isolated.
        shouldRetry: () => t.persistent || libp2p.getConnections().length === 0,
        onFailedAttempt: ({ error, attemptNumber, retryDelay }) => {
          const level = t.persistent && attemptNumber % 5 === 1 ? "warn" : "debug";
          this.log[level](
            { peer: t.peerId.toString(), attempt: attemptNumber, retry_in_ms: retryDelay, err: errorMessage(error) },
            t.persistent ? "bootstrap peer unreachable; will retry with backoff" : "known peer unreachable",
          );
        },
      });
    })()
      .catch(() => undefined)
      .finally(() => {
        t.loop = undefined;
      });
  }

  private async dialOnce(t: Target, attempt: number, signal: AbortSignal): Promise<void> {
    const libp2p = this.opts.libp2p;
    if (libp2p.getConnections(t.peerId).length > 0) return;
    // A known peer's retry is moot once the node has other connections again.
    if (!t.persistent && attempt > 1 && libp2p.getConnections().length > 0) return;
    try {
      // The peer store needs the addresses so later dials by peer id (DHT, reconnects) can use them too.
      await libp2p.peerStore.merge(t.peerId, {
        multiaddrs: t.addrs.map((a) => a.decapsulateCode(0x01a5 /* p2p */)),
        ...(t.persistent ? { tags: { [BOOTSTRAP_TAG]: { value: 100 } } } : {}),
      });
      await libp2p.dial(t.addrs, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.dialTimeoutMs)]) });
    } catch (err) {
      // Always an Error with a code: p-retry gives up at once on a TypeError, and a dial must always be retried.
      throw new AgoraError("P2P", `cannot dial ${t.peerId.toString()}: ${errorMessage(err)}`, { cause: err });
    }
    this.log.debug({ peer: t.peerId.toString(), bootstrap: t.persistent }, "connected to bootstrap/known peer");
  }
}
