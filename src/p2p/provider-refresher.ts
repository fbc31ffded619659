/**
 * Provider refresher as a libp2p service: keeps this node listed as a provider of its enumeration
 * namespaces (region, "any node", one per capability; see namespaces.ts) in the DHT. Runs at start and then
 * every `intervalMs`; kad-dht's own reprovider is only the backstop (it fires in the last third of validity).
 */
import { type AbortOptions, type Startable, serviceDependencies } from "@libp2p/interface";
import type { KadDHT } from "@libp2p/kad-dht";
import { type RepeatingTask, repeatingTask } from "@libp2p/utils";
import { errorMessage } from "../errors";
import type { Logger } from "../log";
import { namespaceCid } from "./namespaces";

export interface ProviderRefresherComponents {
  dht: Pick<KadDHT, "provide">;
}

export interface ProviderRefresherInit {
  logger: Logger;
  /** Namespace strings (not CIDs) this node provides. */
  namespaces: string[];
  intervalMs: number;
  /**
   * Back-off bound (default: intervalMs, no back-off). After a round in which every namespace reached
   * ACKED_ENOUGH DHT servers, the next one waits twice as long, up to this; a round that reached fewer
   * starts again at intervalMs. Provider records live for the DHT's provider validity (15 min): refreshing
   * all of them at every heartbeat was three DHT walks per heartbeat per node, for records long stored.
   */
  maxIntervalMs?: number;
  /** One refresh round gives up after this long (the next round retries). */
  timeoutMs: number;
}

/** DHT servers that must have taken a namespace's provider record for a round to count as well acknowledged. */
export const ACKED_ENOUGH = 3;

export class ProviderRefresher implements Startable {
  readonly [Symbol.toStringTag] = "@agora/provider-refresher";
  readonly [serviceDependencies]: string[] = ["@libp2p/kad-dht"];
  private readonly log: Logger;
  private readonly task: RepeatingTask;
  private running = false;
  private rounds = 0;
  private currentIntervalMs: number;
  /** No round before this (Date.now() ms): the task still ticks at intervalMs, backed-off ticks do nothing. */
  private nextRoundAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly components: ProviderRefresherComponents,
    private readonly init: ProviderRefresherInit,
  ) {
    this.log = init.logger;
    this.currentIntervalMs = init.intervalMs;
    this.task = repeatingTask((opts) => this.refresh(opts), init.intervalMs, { runImmediately: true, timeout: init.timeoutMs });
  }

  start(): void {
    this.running = true;
  }

  /** The first round needs the DHT (started alongside this service) to be up. */
  afterStart(): void {
    if (this.running) this.task.start();
  }

  /** Before the DHT stops: aborts a round in flight instead of letting it fail against a stopped DHT. */
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

  /** Completed refresh rounds (tests wait on this instead of sleeping). */
  completedRounds(): number {
    return this.rounds;
  }

  /** The wait before the next round (intervalMs, or backed off after well-acknowledged rounds). */
  intervalMs(): number {
    return this.currentIntervalMs;
  }

  private async refresh(opts: AbortOptions = {}): Promise<void> {
    // Backed off by skipping ticks rather than by re-arming the task (repeatingTask.setInterval during a run
    // arms a second timer). A tick may come up to 10 % early (timers), hence the slack.
    if (Date.now() < this.nextRoundAt - this.init.intervalMs / 10) return;
    const startedAt = Date.now();
    const acks = await Promise.all(
      this.init.namespaces.map(async (ns) => {
        const cid = await namespaceCid(ns);
        let acked = 0;
        try {
          for await (const ev of this.components.dht.provide(cid, { signal: opts.signal })) {
            if (ev.name === "PEER_RESPONSE" && ev.messageName === "ADD_PROVIDER") acked++;
          }
        } catch (err) {
          this.log.debug({ namespace: ns, err: errorMessage(err) }, "provide ended early");
        }
        this.log.debug({ namespace: ns, acked }, "provider record refreshed");
        return acked;
      }),
    );
    this.rounds++;
    const max = Math.max(this.init.intervalMs, this.init.maxIntervalMs ?? this.init.intervalMs);
    const next = acks.every((a) => a >= ACKED_ENOUGH) ? Math.min(max, this.currentIntervalMs * 2) : this.init.intervalMs;
    this.currentIntervalMs = next;
    // The task's own wait (intervalMs) comes after this round's end; the back-off counts from its start.
    this.nextRoundAt = startedAt + next;
  }
}

export function providerRefresher(init: ProviderRefresherInit): (components: ProviderRefresherComponents) => ProviderRefresher {
  return (components) => new ProviderRefresher(components, init);
}
