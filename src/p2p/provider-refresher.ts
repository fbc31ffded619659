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
  /** One refresh round gives up after this long (the next round retries). */
  timeoutMs: number;
}

export class ProviderRefresher implements Startable {
  readonly [Symbol.toStringTag] = "@agora/provider-refresher";
  readonly [serviceDependencies]: string[] = ["@libp2p/kad-dht"];
  private readonly log: Logger;
  private readonly task: RepeatingTask;
  private running = false;
  private rounds = 0;

  constructor(
    private readonly components: ProviderRefresherComponents,
    private readonly init: ProviderRefresherInit,
  ) {
    this.log = init.logger;
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

  private async refresh(opts: AbortOptions = {}): Promise<void> {
    await Promise.all(
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
      }),
    );
    this.rounds++;
  }
}

export function providerRefresher(init: ProviderRefresherInit): (components: ProviderRefresherComponents) => ProviderRefresher {
  return (components) => new ProviderRefresher(components, init);
}
