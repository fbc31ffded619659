/**
 * Ordered start/stop of the node's long-lived parts. Parts stop in the reverse order they started; a part
 * that fails to start stops the ones already started, so a failed start leaves nothing running or bound.
 */
import type { Logger } from "../log";

export interface Service {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export class Lifecycle {
  private readonly started: Service[] = [];
  constructor(private readonly log: Logger) {}

  /** Starts one part and records it for the reverse-order stop. */
  async start(service: Service): Promise<void> {
    const t0 = performance.now();
    await service.start();
    this.started.push(service);
    this.log.debug({ service: service.name, ms: Math.round(performance.now() - t0) }, "started");
  }

  /** Stops every started part, newest first; one part's failure does not keep the others running. */
  async stopAll(timeoutMsPerService = 10_000): Promise<string[]> {
    const failures: string[] = [];
    while (this.started.length > 0) {
      const service = this.started.pop()!;
      try {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          service.stop(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`did not stop within ${timeoutMsPerService} ms`)), timeoutMsPerService);
          }),
        ]).finally(() => clearTimeout(timer));
        this.log.debug({ service: service.name }, "stopped");
      } catch (err) {
        failures.push(service.name);
        this.log.error({ service: service.name, err: (err as Error).message }, "failed to stop cleanly");
      }
    }
    return failures;
  }

  names(): string[] {
    return this.started.map((s) => s.name);
  }
}
