/**
 * The test-call page's AudioWorklet (bundled for the browser by assets.ts, loaded with audioWorklet.addModule):
 *
 * - `agora-capture` cuts the microphone into 20 ms frames (960 samples at 48 kHz) and posts each to the page,
 *   which encodes it with WebCodecs. The AudioContext runs at 48 kHz, so no resampling happens here.
 * - `agora-playout` plays what the page decoded: one small jitter buffer per stream. It starts a stream once
 *   `targetMs` is buffered, refills to `targetMs` after an underrun, and drops the oldest audio beyond
 *   `maxMs`, so a burst after a stall costs one glitch, not lasting latency. The echo stream is the same
 *   buffer with a 1 s target: a delay line of exactly what the node sent.
 *
 * Runs on the audio rendering thread: no allocation per 128-sample quantum beyond the posted frames.
 */

// The AudioWorkletGlobalScope is not part of TypeScript's DOM library.
declare const sampleRate: number;
declare function registerProcessor(name: string, ctor: unknown): void;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
}

import { StreamBuffer } from "./stream-buffer";

const FRAME = 960;

class CaptureProcessor extends AudioWorkletProcessor {
  private frame = new Float32Array(FRAME);
  private fill = 0;
  process(inputs: Float32Array[][]): boolean {
    const input = inputs[0]?.[0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      this.frame[this.fill++] = input[i]!;
      if (this.fill === FRAME) {
        this.port.postMessage(this.frame, [this.frame.buffer]);
        this.frame = new Float32Array(FRAME);
        this.fill = 0;
      }
    }
    return true;
  }
}

class PlayoutProcessor extends AudioWorkletProcessor {
  private readonly streams = new Map<string, StreamBuffer>();
  private quanta = 0;
  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent) => {
      const m = e.data as
        | { kind: "stream"; id: string; targetMs: number; maxMs: number }
        | { kind: "pcm"; id: string; pcm: Float32Array }
        | { kind: "drop"; id: string };
      if (m.kind === "stream") {
        const ms = (v: number) => Math.round((v * sampleRate) / 1000);
        this.streams.set(m.id, new StreamBuffer(ms(m.targetMs), ms(m.maxMs), sampleRate));
      } else if (m.kind === "pcm") this.streams.get(m.id)?.push(m.pcm);
      else this.streams.delete(m.id);
    };
  }
  process(_inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const out = outputs[0];
    const first = out?.[0];
    if (!out || !first) return true;
    first.fill(0);
    for (const s of this.streams.values()) s.mixInto(first);
    for (let c = 1; c < out.length; c++) out[c]!.set(first);
    // About four reports a second (128-sample quanta), for the page's statistics.
    if (++this.quanta % 94 === 0) {
      const stats: Record<string, { bufferedMs: number; underruns: number; dropped: number }> = {};
      for (const [id, s] of this.streams) stats[id] = { bufferedMs: s.bufferedMs, underruns: s.underruns, dropped: s.dropped };
      this.port.postMessage(stats);
    }
    return true;
  }
}

registerProcessor("agora-capture", CaptureProcessor);
registerProcessor("agora-playout", PlayoutProcessor);
