import { describe, expect, test } from "bun:test";
import { runSliced, type SliceClock, type SlicedWork } from "../../src/audio/tick-slices";

/** A clock moved by hand; deferred continuations wait until the test runs them (the "event loop"). */
function manualClock() {
  let t = 0;
  const deferred: Array<() => void> = [];
  const clock: SliceClock = { now: () => t, defer: (f) => deferred.push(f) };
  return {
    clock,
    advance: (ms: number) => {
      t += ms;
    },
    /** One turn of the event loop: runs what was deferred before it. */
    turn: () => {
      const f = deferred.shift();
      if (!f) throw new Error("nothing deferred");
      f();
    },
    pending: () => deferred.length,
  };
}

function work(items: string[], cost: Record<string, number>, m: ReturnType<typeof manualClock>) {
  const log: string[] = [];
  let doneMs: number | undefined;
  const removed = new Set<string>();
  let cancelled = false;
  const w: SlicedWork<string> = {
    items,
    live: (i) => !removed.has(i),
    run: (i) => {
      log.push(i);
      m.advance(cost[i] ?? 0.2);
    },
    beforeYield: () => log.push("|"),
    finish: () => {
      log.push("finish");
      m.advance(0.1);
    },
    done: (ms) => {
      doneMs = ms;
    },
    cancelled: () => cancelled,
  };
  return {
    w,
    log,
    removed,
    cancel: () => {
      cancelled = true;
    },
    doneMs: () => doneMs,
  };
}

describe("runSliced (the mixer's tick in slices)", () => {
  test("yields between items once a slice's budget is spent, and counts only the work time", () => {
    const m = manualClock();
    const k = work(["a", "b", "c", "d", "e"], {}, m);
    runSliced(k.w, m.clock, 0.5, 0.3);
    // 0.2 + 0.2 < 0.5 after b; c reaches 0.6: the slice ends after c
    expect(k.log).toEqual(["a", "b", "c", "|"]);
    expect(k.doneMs()).toBeUndefined();
    expect(m.pending()).toBe(1);
    m.advance(7); // the event loop's turn (datagrams received meanwhile): not work
    m.turn();
    expect(k.log).toEqual(["a", "b", "c", "|", "d", "e", "finish"]);
    expect(m.pending()).toBe(0);
    // 0.3 before + 0.6 + 0.5 (d, e, finish)
    expect(k.doneMs()).toBeCloseTo(1.4, 9);
  });

  test("an item is never split, and a slice over budget after the last item does not yield", () => {
    const m = manualClock();
    const k = work(["big", "small"], { big: 3, small: 3 }, m);
    runSliced(k.w, m.clock, 0.5);
    expect(k.log).toEqual(["big", "|"]);
    m.turn();
    expect(k.log).toEqual(["big", "|", "small", "finish"]);
    expect(k.doneMs()).toBeCloseTo(6.1, 9);
  });

  test("work that fits one slice runs at once, without a yield", () => {
    const m = manualClock();
    const k = work(["a", "b"], {}, m);
    runSliced(k.w, m.clock, 0.5);
    expect(k.log).toEqual(["a", "b", "finish"]);
    expect(m.pending()).toBe(0);
    expect(k.doneMs()).toBeCloseTo(0.5, 9);
  });

  test("an item removed while the work yielded is skipped", () => {
    const m = manualClock();
    const k = work(["a", "b", "c", "d"], { a: 1 }, m);
    runSliced(k.w, m.clock, 0.5);
    expect(k.log).toEqual(["a", "|"]);
    k.removed.add("b");
    m.turn();
    expect(k.log).toEqual(["a", "|", "c", "d", "finish"]);
  });

  test("cancelled while yielding: the rest never runs and done is not called", () => {
    const m = manualClock();
    const k = work(["a", "b", "c"], { a: 1 }, m);
    runSliced(k.w, m.clock, 0.5);
    k.cancel();
    m.turn();
    expect(k.log).toEqual(["a", "|"]);
    expect(k.doneMs()).toBeUndefined();
    expect(m.pending()).toBe(0);
  });

  test("no items: finish and done at once", () => {
    const m = manualClock();
    const k = work([], {}, m);
    runSliced(k.w, m.clock, 0.5);
    expect(k.log).toEqual(["finish"]);
    expect(k.doneMs()).toBeCloseTo(0.1, 9);
  });
});
