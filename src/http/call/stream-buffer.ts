/**
 * One playout stream of the test-call page's AudioWorklet (worklet.ts): a ring of samples that starts playing
 * once `target` samples are buffered, refills to `target` after an underrun (one gap, then steady again), and
 * drops the oldest audio beyond `max`, so a burst after a stall costs one glitch, not lasting latency.
 * Pure (no AudioWorklet globals), so it is tested in Bun.
 */

/** Samples of one 20 ms frame at 48 kHz; the ring holds `max` plus one frame being pushed. */
const FRAME = 960;

/** A ring of samples with start/refill/trim rules (see the header). */
export class StreamBuffer {
  private readonly ring: Float32Array;
  private read = 0;
  private size = 0;
  private playing = false;
  underruns = 0;
  dropped = 0;
  /** `target` and `max` in samples; `rate` for bufferedMs. */
  constructor(
    private readonly target: number,
    private readonly max: number,
    private readonly rate: number,
  ) {
    this.ring = new Float32Array(max + FRAME);
  }
  push(pcm: Float32Array): void {
    for (let i = 0; i < pcm.length; i++) {
      if (this.size === this.ring.length) {
        this.read = (this.read + 1) % this.ring.length;
        this.size--;
        this.dropped++;
      }
      this.ring[(this.read + this.size) % this.ring.length] = pcm[i]!;
      this.size++;
    }
    if (this.size > this.max) {
      const drop = this.size - this.target;
      this.read = (this.read + drop) % this.ring.length;
      this.size -= drop;
      this.dropped += drop;
    }
  }
  /** Adds this stream's next samples into `out`. */
  mixInto(out: Float32Array): void {
    if (!this.playing) {
      if (this.size < this.target) return;
      this.playing = true;
    }
    if (this.size < out.length) {
      this.playing = false;
      this.underruns++;
      return;
    }
    for (let i = 0; i < out.length; i++) {
      out[i]! += this.ring[this.read]!;
      this.read = (this.read + 1) % this.ring.length;
    }
    this.size -= out.length;
  }
  get bufferedMs(): number {
    return (this.size / this.rate) * 1000;
  }
}
