/**
 * The time source of the participant side: what reads the time and what schedules timers goes through a
 * Clock, so pacing, keepalive, backoff and run-length logic can be driven by virtual time in tests (the
 * real clock is the default everywhere).
 */

/** An opaque timer handle, only ever given back to the clock that returned it. */
export type TimerHandle = unknown;

export interface Clock {
  /** milliseconds on a monotonic scale (performance.now() for the real clock) */
  now(): number;
  /** runs `fn` once, `ms` from now; `unref`: the timer alone does not keep the process alive */
  setTimeout(fn: () => void, ms: number, opts?: { unref?: boolean }): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
}

/** performance.now() and the runtime's timers. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms, opts) {
    const t = setTimeout(fn, ms);
    if (opts?.unref) t.unref?.();
    return t;
  },
  clearTimeout(handle) {
    if (handle !== undefined) clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/**
 * Calls `fn` every `periodMs` on `clock` until the returned function is called (a setInterval that any
 * Clock can drive). The next call is scheduled after `fn` returns, so a slow call never piles up calls.
 */
export function every(clock: Clock, periodMs: number, fn: () => void, opts?: { unref?: boolean }): () => void {
  let stopped = false;
  let handle: TimerHandle | undefined;
  const schedule = () => {
    handle = clock.setTimeout(run, periodMs, opts);
  };
  const run = () => {
    if (stopped) return;
    fn();
    if (!stopped) schedule();
  };
  schedule();
  return () => {
    stopped = true;
    clock.clearTimeout(handle);
  };
}
