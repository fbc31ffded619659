/**
 * The mixer's tick in slices. The media worker receives, opens and timestamps voice datagrams on the same
 * thread that mixes (datagram-io.ts), and a tick over a few hundred participants takes 5-10 ms. Run in
 * one piece, it holds every datagram that arrives meanwhile until it ends: the datagram's arrival time is
 * taken late by up to a whole tick, and that lateness is arrival jitter that every jitter buffer must then
 * cover with a deeper buffer (measured: 10-20 ms more latency at 320 participants, bench/mixer-latency).
 * In slices, the thread returns to the event loop whenever a slice's budget is spent, so a datagram waits at
 * most about one slice. A slice ends only between two items (rooms): a room's tick is never split, so its
 * jitter buffers never see a push in the middle of their own tick.
 *
 * The clock and the deferral are injected: the worker passes performance.now and setImmediate (whose
 * callback runs after the event loop has polled for I/O), tests a clock they move by hand.
 */

export interface SliceClock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Runs `f` after the event loop has had a turn, I/O callbacks included. */
  defer(f: () => void): void;
}

export interface SlicedWork<T> {
  items: readonly T[];
  /** One item's whole work. */
  run(item: T): void;
  /** False for an item that left while the work was yielding (a room removed meanwhile): it is skipped. */
  live(item: T): boolean;
  /** Before each yield, e.g. to send what is mixed so far rather than at the end of the tick. */
  beforeYield?(): void;
  /** After the last item, in the last slice (its time counts as work). */
  finish?(): void;
  /** Once, at the end, with the time spent working, yields excluded. */
  done(workMs: number): void;
  /** Checked at each resumption: true abandons the work (the worker is stopping); done is not called. */
  cancelled(): boolean;
}

/**
 * Runs `work` in slices of about `sliceMs` of work each (an item that starts within the budget runs to its
 * end). `workMs` is what the work cost before this call (the caller's own preparation), added to the total.
 */
export function runSliced<T>(work: SlicedWork<T>, clock: SliceClock, sliceMs: number, workMs = 0): void {
  let next = 0;
  let spent = workMs;
  const slice = (): void => {
    if (work.cancelled()) return;
    const start = clock.now();
    while (next < work.items.length) {
      const item = work.items[next++]!;
      if (!work.live(item)) continue;
      work.run(item);
      if (next < work.items.length && clock.now() - start >= sliceMs) {
        work.beforeYield?.();
        spent += clock.now() - start;
        clock.defer(slice);
        return;
      }
    }
    work.finish?.();
    spent += clock.now() - start;
    work.done(spent);
  };
  slice();
}
