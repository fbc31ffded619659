/**
 * Pacing for real-time audio: a timer that fires on an absolute schedule (frame k at start + k·period) and an
 * abortable sleep, both on an injectable Clock (real time by default).
 */
import { type Clock, realClock, type TimerHandle } from "./clock";

/**
 * Calls `onTick(n)` at start + n·period on `clock` (default: performance.now() and real timers). A late
 * wake-up runs every due tick at once (up to `maxCatchUp`), so the average rate never drifts; after a longer
 * stall (suspend, GC) the schedule is moved forward instead of bursting seconds of audio.
 */
export class PacedTimer {
  private n = 0;
  private start = 0;
  private timer: TimerHandle | undefined;
  private running = false;
  private stopped = false;

  constructor(
    private readonly periodMs: number,
    private readonly onTick: (n: number) => void,
    private readonly maxCatchUp = 10,
    private readonly clock: Clock = realClock,
  ) {}

  get ticks(): number {
    return this.n;
  }

  begin(at = this.clock.now()): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.start = at;
    this.loop();
  }

  /** Final: a stopped timer never starts again (late events must not revive it). */
  stop(): void {
    this.running = false;
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private readonly loop = (): void => {
    if (!this.running) return;
    const now = this.clock.now();
    let ran = 0;
    while (this.running && this.start + this.n * this.periodMs <= now && ran < this.maxCatchUp) {
      this.onTick(this.n++);
      ran++;
    }
    if (!this.running) return;
    if (ran === this.maxCatchUp && this.start + this.n * this.periodMs <= now) this.start = now - this.n * this.periodMs;
    this.timer = this.clock.setTimeout(this.loop, Math.max(0, this.start + this.n * this.periodMs - this.clock.now()));
  };
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects): for paced loops that must stop promptly. */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = realClock): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = clock.setTimeout(done, ms);
    function done() {
      clock.clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
