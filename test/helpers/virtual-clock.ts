/**
 * Virtual time for timing logic under test: a Clock whose time moves only when the test says so, running
 * due timers in order (by due time, then by creation), so pacing, backoff and timeouts are checked exactly
 * and never depend on how busy the machine is.
 */
import type { Clock, TimerHandle } from "../../src/client";

interface VirtualTimer {
  id: number;
  at: number;
  /** the delay it was created with */
  ms: number;
  fn: () => void;
}

/** Lets promise continuations (and anything else already queued) run before the next timer. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

export class VirtualClock implements Clock {
  private t = 0;
  private nextId = 1;
  private readonly timers = new Map<number, VirtualTimer>();

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.t + Math.max(0, ms), ms, fn });
    return id;
  }

  clearTimeout(handle: TimerHandle | undefined): void {
    if (typeof handle === "number") this.timers.delete(handle);
  }

  /** Timers not yet run, soonest first. */
  pending(): { at: number; ms: number }[] {
    return this.sorted().map(({ at, ms }) => ({ at, ms }));
  }

  /**
   * Moves time forward by `ms`, running every timer that falls due on the way at its own due time (in
   * order), letting promise continuations settle after each. Timers created by a timer run too if due.
   */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (let runs = 0; ; runs++) {
      if (runs > 1_000_000) throw new Error("VirtualClock: timers keep scheduling themselves without time passing");
      const next = this.sorted()[0];
      if (!next || next.at > end) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }

  /**
   * A stall: time jumps by `ms` without running anything (a blocked event loop, a suspended machine).
   * Overdue timers run late at the next advance(), seeing the later time, as real ones would.
   */
  stall(ms: number): void {
    this.t += ms;
  }

  private sorted(): VirtualTimer[] {
    return [...this.timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  }
}
