/** The test-call page's playout jitter buffer (src/http/call/stream-buffer.ts), fed and drained by hand. */
import { expect, test } from "bun:test";
import { StreamBuffer } from "../../src/http/call/stream-buffer";

const RATE = 48_000;
const QUANTUM = 128;
const frame = (value: number) => new Float32Array(960).fill(value);

/** One render quantum out of the buffer (what the worklet's process() does). */
function pull(b: StreamBuffer): Float32Array {
  const out = new Float32Array(QUANTUM);
  b.mixInto(out);
  return out;
}

test("silent until the target is buffered, then plays the frames in order", () => {
  const b = new StreamBuffer(2880, 9600, RATE); // 60 ms target, 200 ms max
  b.push(frame(0.1));
  b.push(frame(0.2));
  expect(pull(b).every((v) => v === 0)).toBe(true); // 40 ms < 60 ms: still waiting
  b.push(frame(0.3));
  expect(b.bufferedMs).toBe(60);
  const played: number[] = [];
  for (let i = 0; i < 22; i++) played.push(...pull(b)); // 2816 samples
  expect(played.slice(0, 960).every((v) => Math.abs(v - 0.1) < 1e-6)).toBe(true);
  expect(played.slice(960, 1920).every((v) => Math.abs(v - 0.2) < 1e-6)).toBe(true);
  expect(played.slice(1920).every((v) => Math.abs(v - 0.3) < 1e-6)).toBe(true);
  expect(b.underruns).toBe(0);
});

test("an underrun stops playback until the target is buffered again", () => {
  const b = new StreamBuffer(1920, 9600, RATE);
  b.push(frame(0.5));
  b.push(frame(0.5));
  for (let i = 0; i < 15; i++) pull(b); // 1920 samples
  expect(pull(b).every((v) => v === 0)).toBe(true);
  expect(b.underruns).toBe(1);
  b.push(frame(0.7)); // 960 < 1920: not yet
  expect(pull(b).every((v) => v === 0)).toBe(true);
  b.push(frame(0.7));
  expect(pull(b).every((v) => Math.abs(v - 0.7) < 1e-6)).toBe(true);
});

test("a burst beyond the maximum is trimmed to the target, oldest audio first", () => {
  const b = new StreamBuffer(1920, 4800, RATE); // 40 ms target, 100 ms max
  for (let i = 0; i < 6; i++) b.push(frame(i / 10)); // 120 ms arrive at once
  expect(b.bufferedMs).toBe(40);
  expect(b.dropped).toBe(6 * 960 - 1920);
  // What is left are the newest two frames.
  expect(Math.abs(pull(b)[0]! - 0.4)).toBeLessThan(1e-6);
});

test("the echo delay line: a 1 s target holds back 1 s of audio (the first frame plays once the 50th has arrived)", () => {
  const b = new StreamBuffer(RATE, RATE + 9600, RATE);
  let pulled = 0;
  let firstSound = -1;
  for (let f = 0; f < 100; f++) {
    b.push(frame(f === 0 ? 0.9 : 0.01));
    // 960 samples of output per frame pushed, as the audio clock and the node's 20 ms frames agree.
    for (let q = 0; q < 960 / 96; q++) {
      const out = new Float32Array(96);
      b.mixInto(out);
      if (firstSound < 0 && out[0]! > 0.5) firstSound = pulled;
      pulled += 96;
    }
  }
  // Frame 49 arrives at output position 49 × 960; with it 1 s (50 frames) is buffered and frame 0 starts.
  expect(firstSound).toBe(49 * 960);
});
