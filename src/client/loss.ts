/**
 * Receive-side loss of a participant, counted two ways, because each alone can hide a failure:
 *
 *  - **by sequence gaps** (RTP style): (highest seq − first seq + 1) − frames received, per session. It sees
 *    what the network lost, but not what the node never sent: a node that falls behind and sends fewer
 *    frames, numbered consecutively, shows 0 % here.
 *  - **against the wall clock**: the node owes each joined participant one mixed frame every 20 ms
 *    (50 frames/s) from JOINED until the participant leaves, whatever the room says. Frames due = the
 *    joined time / 20 ms; loss = due − received. This shows a mixer that skips ticks or sends late.
 *
 * A reconnect starts a new session: both counts add up over sessions (a new session has its own numbering,
 * and the time between sessions is not due).
 */
import { FRAME_MS, seqDiff } from "../protocol";

export interface ReceiveLossFigures {
  framesReceived: number;
  /** frames the sequence numbers say were sent (gaps included) */
  framesExpected: number;
  /** loss from sequence gaps, percent (two decimals) */
  lossPercent: number;
  /** frames due by the wall clock: 50/s from JOINED to leave */
  framesDue: number;
  /** loss against the wall clock, percent (two decimals) */
  dueLossPercent: number;
}

export class ReceiveLoss {
  private received = 0;
  private expectedClosed = 0;
  private dueMsClosed = 0;
  private first: number | undefined;
  private highest: number | undefined;
  private joinedAt: number | undefined;

  /** JOINED received at `now` (ms, the same clock as `left`): a new session begins. */
  joined(now: number): void {
    this.closeSession(now);
    this.joinedAt = now;
  }

  frame(seq: number): void {
    this.received++;
    if (this.first === undefined) this.first = this.highest = seq;
    else if (seqDiff(seq, this.highest!) > 0) this.highest = seq;
  }

  /** The session ended (LEAVE sent, or lost) at `now`. */
  left(now: number): void {
    this.closeSession(now);
  }

  figures(): ReceiveLossFigures {
    const expected = this.expectedClosed + this.openExpected();
    const due = Math.floor(this.dueMsClosed / FRAME_MS);
    return {
      framesReceived: this.received,
      framesExpected: expected,
      lossPercent: lossPercent(expected, this.received),
      framesDue: due,
      dueLossPercent: lossPercent(due, this.received),
    };
  }

  private openExpected(): number {
    return this.first === undefined ? 0 : seqDiff(this.highest!, this.first) + 1;
  }

  private closeSession(now: number): void {
    this.expectedClosed += this.openExpected();
    this.first = this.highest = undefined;
    if (this.joinedAt !== undefined) this.dueMsClosed += Math.max(0, now - this.joinedAt);
    this.joinedAt = undefined;
  }
}

/** Percent with two decimals; received beyond expected (duplicates, clock skew) counts as no loss. */
export function lossPercent(expected: number, received: number): number {
  return expected > 0 ? Math.round((Math.max(0, expected - received) / expected) * 10_000) / 100 : 0;
}
