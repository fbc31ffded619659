/**
 * The wasm mixing core driven directly, in virtual time (no worker, no timers): mix-minus, limiter,
 * top-K shared encode and encoder continuity, the jitter buffer (reorder, late, loss, duplicates,
 * adaptation, pauses) and input validation. Every figure is measured on the audio itself.
 */
import { describe, expect, test } from "bun:test";
import { createOpusCodec, type OpusDecoder, type OpusEncoder } from "../../src/audio/codec";
import { CoreRoom, MediaCore, PushResult, type RoomConfig } from "../../src/audio/core";
import { concat, db, FRAME, goertzel, peak, rms, snrDb, toneFrame } from "./media-helpers";

const codec = await createOpusCodec();
const core = await MediaCore.create();

const BASE: RoomConfig = { topK: 3, sharedEncode: true, bitrate: 32000, complexity: 10, jitterMinMs: 20, jitterMaxMs: 200, fec: false };

interface Sent {
  at: number;
  seq: number;
  payload: Uint8Array;
}

/** A room plus a virtual network: packets are delivered at their arrival time, ticks every 20 ms. */
class Driver {
  readonly room: CoreRoom;
  readonly slots = new Map<string, number>();
  readonly handles = new Map<string, number>();
  private readonly encoders = new Map<string, OpusEncoder>();
  private readonly queue: Array<Sent & { who: string }> = [];
  private readonly seqs = new Map<string, number>();
  t = 0; // current tick index
  /** Per tick: handle → packet it received. */
  received: Array<Map<number, Uint8Array>> = [];
  pushResults: number[] = [];

  constructor(config: Partial<RoomConfig> = {}) {
    this.room = core.createRoom({ ...BASE, ...config });
  }

  add(name: string): void {
    const handle = this.handles.size + 1;
    this.handles.set(name, handle);
    this.slots.set(name, this.room.add(handle));
    this.encoders.set(name, codec.encoder(32000));
    this.seqs.set(name, 1000);
  }

  /** Encodes `pcm` as `name`'s next frame and schedules it `delayMs` after the current tick time. */
  send(name: string, pcm: Int16Array, delayMs = 0, seqOverride?: number): Sent {
    const seq = seqOverride ?? this.seqs.get(name)!;
    if (seqOverride === undefined) this.seqs.set(name, seq + 1);
    const s = { who: name, at: this.t * 20 + delayMs, seq, payload: this.encoders.get(name)!.encode(pcm) };
    this.queue.push(s);
    return s;
  }

  /** Skips a sequence number (a packet lost in the network). */
  lose(name: string, pcm: Int16Array): void {
    this.encoders.get(name)!.encode(pcm); // the sender still encoded it
    this.seqs.set(name, this.seqs.get(name)! + 1);
  }

  pushRaw(name: string, seq: number, payload: Uint8Array): number {
    return this.room.push(this.slots.get(name)!, seq, seq * FRAME, this.t * 20, payload);
  }

  step(): Map<number, Uint8Array> {
    const now = this.t * 20;
    this.queue.sort((a, b) => a.at - b.at);
    while (this.queue.length > 0 && this.queue[0]!.at <= now) {
      const s = this.queue.shift()!;
      this.pushResults.push(this.room.push(this.slots.get(s.who)!, s.seq, s.seq * FRAME, s.at, s.payload));
    }
    const n = this.room.tick(now);
    const got = new Map<number, Uint8Array>();
    for (let i = 0; i < n; i++) {
      const o = this.room.output(i);
      const data = o.data.slice();
      for (const h of o.recipients) {
        expect(got.has(h)).toBe(false); // exactly one packet per participant per tick
        got.set(h, data);
      }
    }
    this.received.push(got);
    this.t++;
    return got;
  }

  slot(name: string): number {
    return this.slots.get(name)!;
  }
  handle(name: string): number {
    return this.handles.get(name)!;
  }
  stats(name: string) {
    return this.room.stats(this.slot(name))!;
  }

  /** Decodes everything `name` received so far with one decoder (what its client would hear). */
  heard(name: string): Int16Array[] {
    const dec: OpusDecoder = codec.decoder();
    const out = this.received.map((m) => {
      const p = m.get(this.handle(name));
      return dec.decode(p ?? null);
    });
    dec.destroy();
    return out;
  }

  destroy(): void {
    for (const e of this.encoders.values()) e.destroy();
    this.room.destroy();
  }
}

/** dB of tone `own` below the weaker of `others` in `x`. */
function suppressionDb(x: Int16Array, own: number, others: number[]): number {
  const weakest = Math.min(...others.map((f) => goertzel(x, f)));
  return db(weakest / Math.max(goertzel(x, own), 1e-12));
}

describe("mix-minus", () => {
  test("three talkers (440/660/880 Hz): each hears the other two, its own tone ≥ 26 dB lower", () => {
    const d = new Driver();
    const tones: Record<string, number> = { a: 440, b: 660, c: 880 };
    for (const n of Object.keys(tones)) d.add(n);
    const mixes: Record<string, Int16Array[]> = { a: [], b: [], c: [] };
    for (let k = 0; k < 100; k++) {
      for (const [n, hz] of Object.entries(tones)) d.send(n, toneFrame(hz, k));
      d.step();
      if (k >= 50) for (const n of Object.keys(tones)) mixes[n]!.push(d.room.debugMix(d.slot(n)));
    }
    for (const [n, hz] of Object.entries(tones)) {
      const others = Object.values(tones).filter((f) => f !== hz);
      const st = d.stats(n);
      expect(st.personalMix).toBe(true);
      expect(st.inMix).toBe(true);
      expect(st.speaking).toBe(true);
      // The mix before encoding: exact int32 mix-minus.
      const mix = concat(mixes[n]!);
      for (const f of others) expect(db((2 * goertzel(mix, f)) / (8000 * 8000 / 2))).toBeGreaterThan(-3); // others at full level
      expect(suppressionDb(mix, hz, others)).toBeGreaterThan(26);
      // What the participant's client decodes (through the personal encoder).
      const heard = concat(d.heard(n).slice(50));
      expect(suppressionDb(heard, hz, others)).toBeGreaterThan(26);
    }
    d.destroy();
  });
});

describe("limiter", () => {
  test("five full-scale talkers never clip: no sample at the rails, no flat-topped runs, still loud", () => {
    const d = new Driver({ topK: 5 });
    const tones = [300, 470, 610, 830, 1090];
    tones.forEach((_, i) => d.add(`t${i}`));
    d.add("listener");
    let maxPeak = 0;
    let flatRuns = 0;
    const late: Int16Array[] = [];
    for (let k = 0; k < 80; k++) {
      tones.forEach((hz, i) => d.send(`t${i}`, toneFrame(hz, k, 30000)));
      d.step();
      for (const n of ["t0", "t3", "listener"]) {
        const m = d.room.debugMix(d.slot(n));
        maxPeak = Math.max(maxPeak, peak(m));
        for (let i = 3; i < FRAME; i++) {
          const v = m[i]!;
          if (Math.abs(v) > 29000 && v === m[i - 1] && v === m[i - 2] && v === m[i - 3]) flatRuns++;
        }
        if (k >= 40 && n === "listener") late.push(m);
      }
    }
    expect(maxPeak).toBeLessThanOrEqual(32766);
    expect(flatRuns).toBe(0);
    // The sum peaks near 5 × 30000: turned down, but not to a whisper (≥ -6 dBFS peak, ≥ -12 dBFS RMS).
    const l = concat(late);
    expect(peak(l)).toBeGreaterThan(16000);
    expect(rms(l)).toBeGreaterThan(8000);
    // All five tones still there (gain, not distortion): each within 6 dB of the loudest.
    const powers = tones.map((f) => goertzel(l, f));
    for (const p of powers) expect(db(Math.max(...powers) / p)).toBeLessThan(6);
    d.destroy();
  });
});

describe("top-K shared encode", () => {
  test("the 3 loudest talkers get personal encodes; everyone else shares one encode without them", () => {
    const d = new Driver();
    const talkers: Array<[string, number, number]> = [
      ["t1", 440, 16000],
      ["t2", 660, 12000],
      ["t3", 880, 9000],
      ["t4", 1200, 2500], // talking, but the quietest: not mixed
    ];
    for (const [n] of talkers) d.add(n);
    d.add("l1");
    d.add("l2");
    let got = new Map<number, Uint8Array>();
    const before = d.room.counters();
    for (let k = 0; k < 60; k++) {
      for (const [n, hz, amp] of talkers) d.send(n, toneFrame(hz, k, amp));
      got = d.step();
    }
    for (const n of ["t1", "t2", "t3"]) {
      expect(d.stats(n).personalMix).toBe(true);
      expect(d.stats(n).inMix).toBe(true);
    }
    expect(d.stats("t4").speaking).toBe(true);
    for (const n of ["t4", "l1", "l2"]) {
      expect(d.stats(n).personalMix).toBe(false);
      expect(d.stats(n).inMix).toBe(false);
    }
    // One shared packet for t4, l1, l2 (the same bytes), a different one for each top speaker.
    const shared = got.get(d.handle("l1"))!;
    expect(got.get(d.handle("l2"))).toBe(shared);
    expect(got.get(d.handle("t4"))).toBe(shared);
    const personal = new Set(["t1", "t2", "t3"].map((n) => got.get(d.handle(n))));
    expect(personal.size).toBe(3);
    expect(personal.has(shared)).toBe(false);
    // Encodes per tick in steady state: 3 personal + 1 shared, not 6.
    const after = d.room.counters();
    expect(after.ticks - before.ticks).toBe(60);
    const lastTicks = 20;
    const c1 = d.room.counters();
    for (let k = 60; k < 60 + lastTicks; k++) {
      for (const [n, hz, amp] of talkers) d.send(n, toneFrame(hz, k, amp));
      d.step();
    }
    const c2 = d.room.counters();
    expect(c2.personalEncodes - c1.personalEncodes).toBe(3 * lastTicks);
    expect(c2.sharedEncodes - c1.sharedEncodes).toBe(lastTicks);
    // The shared mix carries t1..t3 and not t4.
    const heard = concat(d.heard("l1").slice(40));
    const inMix = [440, 660, 880].map((f) => goertzel(heard, f));
    expect(db(Math.min(...inMix) / goertzel(heard, 1200))).toBeGreaterThan(26);
    // t4 hears the same mix (it is not in it, so it does not hear itself).
    const heardT4 = concat(d.heard("t4").slice(40));
    expect(db(Math.min(...[440, 660, 880].map((f) => goertzel(heardT4, f))) / goertzel(heardT4, 1200))).toBeGreaterThan(26);

    // Shared encode off: everyone gets a personal encode.
    d.room.configure({ ...BASE, sharedEncode: false });
    for (const [n, hz, amp] of talkers) d.send(n, toneFrame(hz, 80, amp));
    got = d.step();
    const all = new Set([...got.values()]);
    expect(all.size).toBe(6);
    for (const n of ["t4", "l1", "l2"]) expect(d.stats(n).personalMix).toBe(true);
    d.destroy();
  });

  test("a listener who starts talking continues on a clone of the shared encoder: no dropout", () => {
    const d = new Driver();
    d.add("speaker");
    d.add("listener");
    d.add("other");
    const snrs: number[] = [];
    const clonesBefore = d.room.counters().encoderClones;
    for (let k = 0; k < 90; k++) {
      d.send("speaker", toneFrame(440, k, 12000));
      if (k >= 50) d.send("listener", toneFrame(1000, k, 12000));
      d.step();
    }
    expect(d.room.counters().encoderClones - clonesBefore).toBeGreaterThanOrEqual(1);
    expect(d.stats("listener").personalMix).toBe(true);
    // What the listener's client decoded, frame by frame, against the speaker's tone (codec delay
    // compensated): the switch from the shared stream to the personal one at tick 50 is seamless.
    // (Measured: ≈ 30 dB on every frame; a fresh encoder instead of the clone drops the switch frame
    // to ≈ 6 dB.)
    const heard = d.heard("listener");
    const ref = concat(Array.from({ length: 90 }, (_, k) => toneFrame(440, k, 12000)));
    const h = concat(heard);
    const { lag } = snrDb(ref.subarray(20 * FRAME, 40 * FRAME), h.subarray(20 * FRAME, 41 * FRAME));
    for (let k = 44; k < 60; k++) {
      let err = 0;
      let sig = 0;
      for (let i = k * FRAME; i < (k + 1) * FRAME; i++) {
        const want = ref[i - lag]!;
        err += (h[i]! - want) ** 2;
        sig += want * want;
      }
      snrs.push(db(sig / err));
    }
    for (const snr of snrs) expect(snr).toBeGreaterThan(20);
    // And it never hears its own 1 kHz.
    const after = concat(heard.slice(60));
    expect(db(goertzel(after, 440) / goertzel(after, 1000))).toBeGreaterThan(26);
    d.destroy();
  });

  test("a speaker who stops keeps its personal encoder for a while, then moves to the shared mix on silence", () => {
    const d = new Driver();
    d.add("a");
    d.add("b");
    d.add("c");
    const personalAt = new Map<number, boolean>();
    for (let k = 0; k < 260; k++) {
      if (k < 100) d.send("a", toneFrame(440, k, 12000));
      if (k < 100) d.send("b", toneFrame(660, k, 12000));
      d.step();
      personalAt.set(k, d.stats("a").personalMix);
    }
    expect(personalAt.get(90)).toBe(true);
    // Silence from tick 100; talk hangover 300 ms, then at least 1 s of hold: still personal at 150.
    expect(personalAt.get(150)).toBe(true);
    expect(personalAt.get(259)).toBe(false);
    expect(d.room.counters().encoderSwitches).toBeGreaterThanOrEqual(2);
    d.destroy();
  });
});

describe("jitter buffer", () => {
  test("reordering within the buffer is absorbed: nothing late, nothing concealed", () => {
    const d = new Driver({ jitterMinMs: 60 });
    d.add("a");
    d.add("l");
    const inputs: Int16Array[] = [];
    for (let k = 0; k < 100; k++) {
      // Pairs swap: frame k+1 arrives 5 ms before frame k.
      const delay = k % 2 === 0 ? 25 : 0;
      d.send("a", toneFrame(440, k), delay);
      d.step();
      inputs.push(d.room.debugInput(d.slot("a")));
    }
    const st = d.stats("a");
    expect(st.late).toBe(0);
    expect(st.concealed).toBe(0);
    expect(st.packetsIn).toBe(99); // the last one is still in flight (25 ms delay)
    expect(st.targetMs).toBeGreaterThanOrEqual(60);
    // Continuous playout once started: every frame after the prefill carries the tone.
    const played = inputs.slice(10);
    for (const f of played) expect(rms(f)).toBeGreaterThan(3000);
    d.destroy();
  });

  test("a packet arriving after its playout time is counted late and dropped; its frame was concealed", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    let held: Uint8Array | undefined;
    let heldSeq = 0;
    for (let k = 0; k < 40; k++) {
      if (k === 20) {
        const s = d.send("a", toneFrame(440, k), 10_000); // parked far in the future …
        held = s.payload;
        heldSeq = s.seq;
      } else {
        d.send("a", toneFrame(440, k));
      }
      if (k === 24) expect(d.pushRaw("a", heldSeq, held!)).toBe(PushResult.LATE); // … delivered 80 ms late
      d.step();
    }
    const st = d.stats("a");
    expect(st.late).toBe(1);
    expect(st.concealed).toBe(1);
    d.destroy();
  });

  test("while the buffer is below its target, a late packet stretches it instead of being lost", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    for (let k = 0; k < 40; k++) {
      d.send("a", toneFrame(440, k), k === 10 ? 12 : 0); // during the first half second: still settling
      d.step();
    }
    const st = d.stats("a");
    expect(st.late).toBe(0);
    expect(st.concealed).toBe(1); // one concealment frame while waiting for it
    expect(st.lossPercent).toBe(0);
    expect(st.bufferDepthMs).toBeGreaterThan(25); // it now runs one frame deeper
    d.destroy();
  });

  test("once at its target, a spike beyond it is concealed and the packet dropped as late; the timeline holds", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    const inputs: Int16Array[] = [];
    for (let k = 0; k < 80; k++) {
      d.send("a", toneFrame(440, k), k === 50 ? 30 : 3);
      d.step();
      inputs.push(d.room.debugInput(d.slot("a")));
    }
    const st = d.stats("a");
    expect(st.late).toBe(1);
    expect(st.concealed).toBe(1);
    // One spike in 80 is inside the ~2 % tail the target deliberately leaves out: no latency added.
    expect(st.targetMs).toBe(20);
    // The timeline kept going: every frame after the start carries the tone, the concealed one too.
    for (const f of inputs.slice(5)) expect(rms(f)).toBeGreaterThan(2000);
    d.destroy();
  });

  test("loss: a missing packet is concealed (PLC, or FEC from the next packet), loss is reported", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    const inputs: Int16Array[] = [];
    for (let k = 0; k < 60; k++) {
      if (k === 30 || k === 45) d.lose("a", toneFrame(440, k));
      else d.send("a", toneFrame(440, k));
      d.step();
      inputs.push(d.room.debugInput(d.slot("a")));
    }
    const st = d.stats("a");
    expect(st.concealed).toBe(2);
    expect(st.late).toBe(0);
    expect(st.lossPercent).toBeGreaterThan(2); // 2 of ~60
    expect(st.lossPercent).toBeLessThan(6);
    // The concealed frames are audio, not holes.
    const concealedFrames = inputs.filter((_, k) => k > 25).map((f) => rms(f));
    expect(Math.min(...concealedFrames)).toBeGreaterThan(1500);
    d.destroy();
  });

  test("duplicates are dropped and counted", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    for (let k = 0; k < 20; k++) {
      const s = d.send("a", toneFrame(440, k));
      if (k === 10) expect(d.pushRaw("a", s.seq, s.payload)).toBe(PushResult.OK);
      if (k === 10) expect(d.pushRaw("a", s.seq, s.payload)).toBe(PushResult.DUPLICATE);
      d.step();
    }
    expect(d.stats("a").duplicates).toBeGreaterThanOrEqual(1);
    d.destroy();
  });

  test("the target adapts to measured jitter and back down to jitter_min", () => {
    let seed = 42;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const jittery = new Driver({ jitterMinMs: 20, jitterMaxMs: 400 });
    jittery.add("a");
    jittery.add("l");
    const steady = new Driver({ jitterMinMs: 20, jitterMaxMs: 400 });
    steady.add("a");
    steady.add("l");
    for (let k = 0; k < 300; k++) {
      jittery.send("a", toneFrame(440, k), rnd() * 70);
      steady.send("a", toneFrame(440, k), 3);
      jittery.step();
      steady.step();
    }
    const j = jittery.stats("a");
    const s = steady.stats("a");
    expect(j.jitterMs).toBeGreaterThan(10);
    expect(j.targetMs).toBeGreaterThanOrEqual(60);
    expect(j.targetMs).toBeLessThanOrEqual(120);
    expect(s.targetMs).toBe(20);
    expect(s.jitterMs).toBeLessThan(1);
    // Once adapted, late arrivals are rare (< 3 % of 300).
    expect(j.late).toBeLessThan(10);
    jittery.destroy();
    steady.destroy();
  });

  test("a sender that pauses is concealed briefly, then silent; on resuming it plays again", () => {
    const d = new Driver();
    d.add("a");
    d.add("l");
    const levels: number[] = [];
    for (let k = 0; k < 80; k++) {
      if (k < 30 || k >= 60) d.send("a", toneFrame(440, k)); // seq stays contiguous, like DTX
      d.step();
      levels.push(rms(d.room.debugInput(d.slot("a"))));
    }
    const st = d.stats("a");
    expect(st.concealed).toBeLessThanOrEqual(6); // at most ~100 ms of invented audio
    expect(st.late).toBe(0);
    expect(levels[50]).toBe(0); // paused: silence, not endless PLC
    expect(Math.min(...levels.slice(65))).toBeGreaterThan(3000); // playing again
    d.destroy();
  });

  test("invalid packets are rejected and counted", () => {
    const d = new Driver();
    d.add("a");
    expect(d.pushRaw("a", 1, new Uint8Array([0x18, 1, 2, 3]))).toBe(PushResult.INVALID); // 40 ms
    expect(d.pushRaw("a", 2, new Uint8Array([0x0b]))).toBe(PushResult.INVALID); // malformed
    expect(d.pushRaw("a", 3, new Uint8Array(0))).toBe(PushResult.INVALID);
    expect(d.pushRaw("a", 4, new Uint8Array(1400))).toBe(PushResult.INVALID); // > 1275 bytes
    d.step();
    expect(d.stats("a").invalid).toBe(2); // the empty and oversized ones are refused before the core
    d.destroy();
  });
});
