/**
 * Keeps this node attached to the network.
 *
 * - Configured bootstrap peers are dialed at start and re-dialed whenever they are not connected, with
 *   exponential backoff (base × 2^attempt, capped) and jitter (each delay drawn from [½, 1] of the nominal
 *   value) so a bootstrap node that restarts is not hit by every node in the same millisecond.
 * - Known peers (from known-peers.json) are dialed once at start, and retried with the same backoff only
 *   while the node has no connection at all: they exist to rejoin, not to pin connections.
 * Bootstrap connections are tagged so the connection manager prunes them last.
 */
import type { Libp2p, PeerId } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { errorMessage } from "../errors";
import type { Logger } from "../log";

export const BOOTSTRAP_TAG = "agora-bootstrap";

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1_000, capMs: 300_000 };

/** Delay before attempt `attempt` (0-based): min(cap, base·2^attempt), jittered into [½, 1] of that. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const nominal = Math.min(o.capMs, o.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(nominal * (0.5 + 0.5 * random()));
}

interface Target {
  peerId: PeerId;
  addrs: Multiaddr[];
  persistent: boolean;
  attempt: number;
  timer?: ReturnType<typeof setTimeout>;
  dialing: boolean;
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
  private readonly onDisconnect = (evt: CustomEvent<PeerId>) => {
    const t = this.targets.get(evt.detail.toString());
    if (!t || this.stopped) return;
    if (t.persistent || this.opts.libp2p.getConnections().length === 0) this.schedule(t);
    if (this.opts.libp2p.getConnections().length === 0) this.wakeKnown();
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
        else this.targets.set(key, { peerId, addrs: [ma], persistent: true, attempt: 0, dialing: false });
      } catch (err) {
        this.log.warn({ addr: text, err: errorMessage(err) }, "ignoring malformed bootstrap address");
      }
    }
    for (const k of opts.known.slice(0, opts.maxKnown ?? 16)) {
      if (this.targets.has(k.peer_id) || k.peer_id === opts.libp2p.peerId.toString()) continue;
      try {
        const peerId = peerIdFromString(k.peer_id);
        const addrs = k.addrs.map((a) => multiaddr(a).encapsulate(`/p2p/${k.peer_id}`));
        this.targets.set(k.peer_id, { peerId, addrs, persistent: false, attempt: 0, dialing: false });
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
    this.opts.libp2p.addEventListener("peer:disconnect", this.onDisconnect);
    for (const t of this.targets.values()) void this.dial(t);
  }

  stop(): void {
    this.stopped = true;
    this.opts.libp2p.removeEventListener("peer:disconnect", this.onDisconnect);
    for (const t of this.targets.values()) {
      if (t.timer) clearTimeout(t.timer);
      t.timer = undefined;
    }
  }

  private wakeKnown(): void {
    for (const t of this.targets.values()) if (!t.persistent && !t.timer && !t.dialing) this.schedule(t);
  }

  private schedule(t: Target): void {
    if (this.stopped || t.timer || t.dialing) return;
    const delay = backoffDelay(t.attempt, this.backoff);
    t.timer = setTimeout(() => {
      t.timer = undefined;
      void this.dial(t);
    }, delay);
    // Never keep the process alive just to redial.
    (t.timer as { unref?: () => void }).unref?.();
  }

  private async dial(t: Target): Promise<void> {
    if (this.stopped || t.dialing) return;
    const libp2p = this.opts.libp2p;
    if (libp2p.getConnections(t.peerId).length > 0) {
      t.attempt = 0;
      return;
    }
    // Known peers are only worth redialing while we are isolated.
    if (!t.persistent && t.attempt > 0 && libp2p.getConnections().length > 0) return;
    t.dialing = true;
    try {
      // The peer store needs the addresses so later dials by peer id (DHT, reconnects) can use them too.
      await libp2p.peerStore.merge(t.peerId, {
        multiaddrs: t.addrs.map((a) => a.decapsulateCode(0x01a5 /* p2p */)),
        ...(t.persistent ? { tags: { [BOOTSTRAP_TAG]: { value: 100 } } } : {}),
      });
      await libp2p.dial(t.addrs, { signal: AbortSignal.timeout(this.dialTimeoutMs) });
      t.attempt = 0;
      this.log.debug({ peer: t.peerId.toString(), bootstrap: t.persistent }, "connected to bootstrap/known peer");
    } catch (err) {
      t.attempt++;
      const level = t.persistent && t.attempt % 5 === 1 ? "warn" : "debug";
      this.log[level]({ peer: t.peerId.toString(), attempt: t.attempt, err: errorMessage(err) }, t.persistent ? "bootstrap peer unreachable; will retry with backoff" : "known peer unreachable");
      // Not dialing any more: schedule() skips a target still marked as dialing, which left a failed
      // redial with no retry at all.
      t.dialing = false;
      if (t.persistent || libp2p.getConnections().length === 0) this.schedule(t);
    } finally {
      t.dialing = false;
    }
  }
}
