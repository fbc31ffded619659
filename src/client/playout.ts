import { seqDiff } from "../protocol";

/**
 * Receive-side jitter buffer keyed by sequence number. `pop()` is called once per playout tick and returns
 * the next frame, null when it is missing (→ PLC), or undefined before the first frame. Latency is bounded:
 * when the buffer holds more than `maxFrames` (a burst after a stall), it skips ahead to `targetFrames`.
 */
export class PlayoutBuffer {
  private readonly frames = new Map<number, Uint8Array>();
  private next: number | undefined;
  private highest: number | undefined;
  private lateRun = 0;
  late = 0;
  duplicates = 0;
  skipped = 0;

  constructor(
    private readonly targetFrames: number,
    private readonly maxFrames: number,
  ) {}

  get started(): boolean {
    return this.next !== undefined;
  }

  get depth(): number {
    if (this.next === undefined || this.highest === undefined) return 0;
    return Math.max(0, seqDiff(this.highest, this.next) + 1);
  }

  push(seq: number, payload: Uint8Array): void {
    seq >>>= 0;
    if (this.next === undefined) this.next = seq;
    const d = seqDiff(seq, this.next);
    if (d < 0) {
      this.late++;
      // A numbering that went backwards for good (server restarted its counter) would otherwise be
      // dropped forever: after 10 consecutive late frames, follow it.
      if (++this.lateRun <= 10) return;
      this.reset();
      this.next = seq;
    }
    this.lateRun = 0;
    if (d > this.maxFrames * 8) {
      // The numbering jumped (new server stream): restart on it rather than waiting for the gap.
      this.reset();
      this.next = seq;
    }
    if (this.frames.has(seq)) {
      this.duplicates++;
      return;
    }
    this.frames.set(seq, payload);
    if (this.highest === undefined || seqDiff(seq, this.highest) > 0) this.highest = seq;
    if (this.depth > this.maxFrames) {
      const skip = this.depth - this.targetFrames;
      for (let i = 0; i < skip; i++) {
        if (this.frames.delete(this.next!)) this.skipped++;
        this.next = (this.next! + 1) >>> 0;
      }
    }
  }

  pop(): Uint8Array | null | undefined {
    if (this.next === undefined) return undefined;
    const seq = this.next;
    const p = this.frames.get(seq);
    if (p) this.frames.delete(seq);
    this.next = (seq + 1) >>> 0;
    return p ?? null;
  }

  reset(): void {
    this.frames.clear();
    this.next = undefined;
    this.highest = undefined;
    this.lateRun = 0;
  }
}
