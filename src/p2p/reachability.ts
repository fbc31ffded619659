/**
 * Reachability as a libp2p service: is this node reachable directly from the internet?
 *
 * - public: an address verified by AutoNAT (or an operator's announce address, which libp2p takes on trust),
 *   or an accepted direct inbound connection from a public IP.
 * - private: no public candidate address at all once the startup grace period is over, or every public
 *   candidate failed verification.
 * - unknown: still checking.
 *
 * It reads libp2p's address manager and connection events through the components it declares, nothing else.
 */
import { type Connection, type Libp2pEvents, type Startable, serviceCapabilities, type TypedEventTarget } from "@libp2p/interface";
import type { AddressManager } from "@libp2p/interface-internal";
import { isPrivate } from "@libp2p/utils";
import { ipOf, isCircuit } from "./addrs";

export type ReachabilityStatus = "public" | "private" | "unknown";

/** The capability the relay auto-listen service depends on. */
export const REACHABILITY_CAPABILITY = "@agora/reachability";

export interface ReachabilityComponents {
  addressManager: Pick<AddressManager, "getAddressesWithMetadata">;
  events: Pick<TypedEventTarget<Libp2pEvents>, "addEventListener" | "removeEventListener">;
}

export interface ReachabilityInit {
  /** With no public candidate address at all, "unknown" turns "private" this long after start (default 30 s). */
  graceMs?: number;
  /** Injected clock (tests). */
  now?: () => number;
}

export const DEFAULT_REACHABILITY_GRACE_MS = 30_000;

export class Reachability implements Startable {
  readonly [Symbol.toStringTag] = "@agora/reachability";
  readonly [serviceCapabilities]: string[] = [REACHABILITY_CAPABILITY];
  private readonly graceMs: number;
  private readonly now: () => number;
  private startedAt = 0;
  private running = false;
  private inboundPublicSeen = false;

  constructor(
    private readonly components: ReachabilityComponents,
    init: ReachabilityInit = {},
  ) {
    this.graceMs = init.graceMs ?? DEFAULT_REACHABILITY_GRACE_MS;
    this.now = init.now ?? Date.now;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.startedAt = this.now();
    this.inboundPublicSeen = false;
    this.components.events.addEventListener("connection:open", this.onConnectionOpen);
  }

  stop(): void {
    this.running = false;
    this.components.events.removeEventListener("connection:open", this.onConnectionOpen);
  }

  isStarted(): boolean {
    return this.running;
  }

  status(): ReachabilityStatus {
    if (!this.running) return "unknown";
    if (this.inboundPublicSeen) return "public";
    const candidates = this.components.addressManager
      .getAddressesWithMetadata()
      .filter((a) => !isCircuit(a.multiaddr) && !isPrivate(a.multiaddr));
    if (candidates.some((a) => a.verified)) return "public";
    if (candidates.length === 0) return this.now() - this.startedAt >= this.graceMs ? "private" : "unknown";
    // expires > 0 on an unverified address means a verification ran and failed (libp2p unconfirm()).
    if (candidates.every((a) => !a.verified && a.expires > 0)) return "private";
    return "unknown";
  }

  private readonly onConnectionOpen = (evt: CustomEvent<Connection>) => {
    const c = evt.detail;
    // An accepted direct connection from a public IP proves we are reachable from the internet.
    if (c.direction === "inbound" && !isCircuit(c.remoteAddr) && ipOf(c.remoteAddr) !== undefined && !isPrivate(c.remoteAddr))
      this.inboundPublicSeen = true;
  };
}

export function reachability(init: ReachabilityInit = {}): (components: ReachabilityComponents) => Reachability {
  return (components) => new Reachability(components, init);
}
