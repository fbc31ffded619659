import { describe, expect, test } from "bun:test";
import { lossPercent, ReceiveLoss } from "../../src/client";

describe("ReceiveLoss: loss from sequence gaps and against the wall clock", () => {
  test("a node that sends 60 % of the frames due, numbered without gaps, shows 0 % by gaps and 40 % by the clock", () => {
    const rx = new ReceiveLoss();
    rx.joined(1_000);
    // 10 s joined: 500 frames due; the node sent 300, consecutively numbered (it skipped ticks, not seqs)
    for (let i = 0; i < 300; i++) rx.frame(4_000_000_000 + i); // wraps past 2^32 on the way
    rx.left(11_000);
    expect(rx.figures()).toEqual({ framesReceived: 300, framesExpected: 300, lossPercent: 0, framesDue: 500, dueLossPercent: 40 });
  });

  test("gaps are seen by both; a reconnect adds a session and the time between sessions is not due", () => {
    const rx = new ReceiveLoss();
    rx.joined(0);
    for (const seq of [10, 11, 13, 14]) rx.frame(seq); // 12 lost
    rx.left(100); // 5 due
    rx.joined(5_000); // new session, own numbering
    for (const seq of [7, 8, 9, 10, 11]) rx.frame(seq);
    rx.left(5_100); // 5 due
    expect(rx.figures()).toEqual({ framesReceived: 9, framesExpected: 10, lossPercent: 10, framesDue: 10, dueLossPercent: 10 });
  });

  test("left() twice or without joined() adds nothing; more received than due is 0 % loss", () => {
    const rx = new ReceiveLoss();
    rx.left(50);
    rx.joined(0);
    for (let i = 0; i < 3; i++) rx.frame(i);
    rx.left(40);
    rx.left(1_000);
    expect(rx.figures()).toMatchObject({ framesDue: 2, dueLossPercent: 0, framesExpected: 3 });
    expect(lossPercent(0, 0)).toBe(0);
    expect(lossPercent(3, 1)).toBe(66.67);
  });
});
