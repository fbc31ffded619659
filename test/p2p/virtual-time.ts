/**
 * Virtual time for the libp2p service tests: bun's fake timers drive setTimeout/Date (repeatingTask's
 * schedule), while setImmediate stays real, so pending promise chains can be drained without any wall clock.
 */
import { jest } from "bun:test";

export function useVirtualTime(): { advance(ms: number): Promise<void>; pendingTimers(): number; restore(): void } {
  jest.useFakeTimers();
  return {
    /** Timers still armed: a stopped service whose task still ran would always have one. */
    pendingTimers: () => jest.getTimerCount(),
    async advance(ms: number) {
      jest.advanceTimersByTime(ms);
      await settle();
    },
    restore() {
      jest.useRealTimers();
    },
  };
}

/** Lets every promise chain that can make progress do so (a few macrotask turns, no timers). */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Drains pending work until `cond` holds; fails (instead of hanging) if it never does. */
export async function until(what: string, cond: () => boolean, turns = 2_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise<void>((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}
