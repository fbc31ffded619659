/**
 * Relay auto-listen as a libp2p service (the `auto` relay client mode): once the reachability service calls
 * this node "private" while it has a LAN address, listen on `/p2p-circuit`, i.e. let the circuit relay
 * transport reserve a slot on a relay among the connected peers, so that others can still dial the node.
 *
 * Loopback-only nodes are single-host test/dev setups: a relay would not make them more reachable, so they
 * never do it. Checked every `intervalMs` (a local decision, cheap) until the listen succeeds.
 */
import { type Startable, serviceDependencies } from "@libp2p/interface";
import type { AddressManager, TransportManager } from "@libp2p/interface-internal";
import { isLoopback, isPrivate, type RepeatingTask, repeatingTask } from "@libp2p/utils";
import { multiaddr } from "@multiformats/multiaddr";
import { errorMessage } from "../errors";
import type { Logger } from "../log";
import { isCircuit } from "./addrs";
import { REACHABILITY_CAPABILITY, type Reachability } from "./reachability";

export interface RelayListenComponents {
  reachability: Pick<Reachability, "status">;
  addressManager: Pick<AddressManager, "getAddresses">;
  transportManager: Pick<TransportManager, "listen">;
}

export interface RelayListenInit {
  logger: Logger;
  /** Time between checks; the first one runs this long after start (default 30 s, the reachability grace). */
  intervalMs?: number;
}

export const DEFAULT_RELAY_CHECK_INTERVAL_MS = 30_000;

export class RelayListen implements Startable {
  readonly [Symbol.toStringTag] = "@agora/relay-listen";
  readonly [serviceDependencies]: string[] = [REACHABILITY_CAPABILITY, "@libp2p/circuit-relay-v2-transport"];
  private readonly log: Logger;
  private readonly task: RepeatingTask;
  private running = false;
  private listening = false;
  private checkCount = 0;

  constructor(
    private readonly components: RelayListenComponents,
    init: RelayListenInit,
  ) {
    this.log = init.logger;
    this.task = repeatingTask(() => this.check(), init.intervalMs ?? DEFAULT_RELAY_CHECK_INTERVAL_MS);
  }

  start(): void {
    this.running = true;
  }

  /** Checks begin once every component (the relay transport, the listeners) is up. */
  afterStart(): void {
    if (this.running) this.task.start();
  }

  beforeStop(): void {
    this.task.stop();
  }

  stop(): void {
    this.running = false;
    this.task.stop();
  }

  isStarted(): boolean {
    return this.running;
  }

  /** True once this node listens on /p2p-circuit because of this service. */
  isListening(): boolean {
    return this.listening;
  }

  /** How many checks have completed (tests wait on this instead of sleeping). */
  checks(): number {
    return this.checkCount;
  }

  /** One decision; public so the node (and tests) can force a check. */
  async check(): Promise<void> {
    try {
      if (!this.running || this.listening) return;
      if (this.components.reachability.status() !== "private") return;
      const hasLan = this.components.addressManager.getAddresses().some((ma) => !isCircuit(ma) && isPrivate(ma) && !isLoopback(ma));
      if (!hasLan) return;
      this.listening = true;
      this.log.info("node is not reachable directly; reserving a slot on a relay");
      try {
        await this.components.transportManager.listen([multiaddr("/p2p-circuit")]);
      } catch (err) {
        this.listening = false;
        this.log.warn({ err: errorMessage(err) }, "could not listen on relays");
      }
    } finally {
      this.checkCount++;
    }
  }
}

export function relayListen(init: RelayListenInit): (components: RelayListenComponents) => RelayListen {
  return (components) => new RelayListen(components, init);
}
