/**
 * The wasm core's voice-activity decode skipping and per-listener mix controls, driven directly in virtual
 * time: decode counts come from the core's own stats, levels are measured on the mixes themselves.
 */
import { describe, expect, test } from "bun:test";
import {
  type CoreRoom,
  createOpusCodec,
  MediaCore,
  type OpusDecoder,
  type OpusEncoder,
  PushResult,
  type RoomConfig,
} from "../../src/audio";
import { VadFlag } from "../../src/audio/core";
import { concat, db, FRAME, goertzel, maxStep, toneFrame } from "./media-helpers";

const codec = await createOpusCodec();
const core = await MediaCore.create();

const BASE: RoomConfig = { topK: 3, sharedEncode: true, bitrate: 32000, complexity: 5, jitterMinMs: 20, jitterMaxMs: 200, fec: false };
const SILENT = VadFlag.KNOWN;
const VOICE = VadFlag.KNOWN | VadFlag.VOICE;

/** Quiet open-microphone noise (about -60 dBFS), deterministic. */
function noiseFrame(seed: number, k: number, amplitude = 32): Int16Array {
  let s = (seed * 2654435761 + k * 40503 + 1) >>> 0;
  const out = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s % (2 * amplitude + 1)) - amplitude;
  }
  return out;
}

/** One room; every participant sends one frame per tick (what `signal` returns) with the flags given. */
class Room {
  readonly room: CoreRoom;
  private readonly slots = new Map<string, number>();
  private readonly encoders = new Map<string, OpusEncoder>();
  private readonly handles = new Map<string, number>();
  t = 0;
  received: Array<Map<number, Uint8Array>> = [];

  constructor(config: Partial<RoomConfig> = {}) {
    this.room = core.createRoom({ ...BASE, ...config });
  }
  add(name: string): void {
    const handle = this.handles.size + 1;
    this.handles.set(name, handle);
    this.slots.set(name, this.room.add(handle));
    this.encoders.set(name, codec.encoder(32000, { complexity: 5 }));
  }
  slot(name: string): number {
    return this.slots.get(name)!;
  }
  stats(name: string) {
    return this.room.stats(this.slot(name))!;
  }
  /** `send(name, k)` → [pcm, flags] or null (nothing sent this tick). */
  step(send: (name: string, k: number) => [Int16Array, number] | null): number[] {
    const now = this.t * 20;
    const results: number[] = [];
    for (const name of this.slots.keys()) {
      const s = send(name, this.t);
      if (!s) continue;
      const payload = this.encoders.get(name)!.encode(s[0]);
      results.push(this.room.push(this.slot(name), 1000 + this.t, (1000 + this.t) * FRAME, now, payload, s[1]));
    }
    const n = this.room.tick(now);
    const got = new Map<number, Uint8Array>();
    for (let i = 0; i < n; i++) {
      const o = this.room.output(i);
      const data = o.data.slice();
      for (const h of o.recipients) got.set(h, data);
    }
    this.received.push(got);
    this.t++;
    return results;
  }
  mix(name: string): Int16Array {
    return this.room.debugMix(this.slot(name));
  }
  heard(name: string, from: number): Int16Array {
    const dec: OpusDecoder = codec.decoder();
    const out = this.received.map((m) => dec.decode(m.get(this.handles.get(name)!) ?? null));
    dec.destroy();
    return concat(out.slice(from));
  }
  destroy(): void {
    for (const e of this.encoders.values()) e.destroy();
    this.room.destroy();
  }
}

/** Level of tone `hz` in `x`, dB relative to a full-amplitude-8000 sine. */
function toneDb(x: Int16Array, hz: number): number {
  return db((2 * goertzel(x, hz)) / ((8000 * 8000) / 2));
}

const TALKERS: Record<string, number> = { a: 440, b: 660, c: 880 };

describe("decode skipping (voice-activity flags)", () => {
  test("flagged-silent participants are not decoded, except a few probes; talkers are decoded every tick and still mixed", () => {
    const SILENT_N = 20;
    const TICKS = 150;
    const run = (skip: boolean) => {
      const r = new Room();
      r.room.setVad(skip, 10);
      for (const n of Object.keys(TALKERS)) r.add(n);
      for (let i = 0; i < SILENT_N; i++) r.add(`s${i}`);
      const mixes: Int16Array[] = [];
      for (let k = 0; k < TICKS; k++) {
        r.step((n, t) => (n in TALKERS ? [toneFrame(TALKERS[n]!, t), VOICE] : [noiseFrame(Number(n.slice(1)), t), SILENT]));
        if (k >= 100) mixes.push(r.mix("s0"));
      }
      const silentDecodes = Array.from({ length: SILENT_N }, (_, i) => r.stats(`s${i}`).decodes);
      const talkerDecodes = Object.keys(TALKERS).map((n) => r.stats(n).decodes);
      const counters = r.room.counters();
      const talkersInMix = Object.keys(TALKERS).every((n) => r.stats(n).inMix);
      const mix = concat(mixes);
      const levels = Object.values(TALKERS).map((hz) => toneDb(mix, hz));
      const probes = r.stats("s0").probes;
      r.destroy();
      return { silentDecodes, talkerDecodes, counters, talkersInMix, levels, probes };
    };
    const on = run(true);
    const off = run(false);
    // Without skipping every participant is decoded every tick.
    for (const d of off.silentDecodes) expect(d).toBeGreaterThanOrEqual(TICKS - 10);
    expect(off.counters.skipped).toBe(0);
    // With it: talkers every tick, silent participants only for the first frames and their probes
    // (each probed every 10 ticks, 2 decodes per probe).
    for (const d of on.talkerDecodes) expect(d).toBeGreaterThanOrEqual(TICKS - 10);
    for (const d of on.silentDecodes) expect(d).toBeLessThan(TICKS / 3);
    expect(on.probes).toBeGreaterThan(5);
    const totalOn = on.silentDecodes.reduce((a, b) => a + b, 0);
    const totalOff = off.silentDecodes.reduce((a, b) => a + b, 0);
    expect(totalOn).toBeLessThan(totalOff / 3);
    expect(on.counters.skipped).toBeGreaterThan(SILENT_N * (TICKS - 30));
    // The mix a silent participant hears is the same three talkers at full level either way.
    expect(on.talkersInMix).toBe(true);
    for (const [i, l] of on.levels.entries()) {
      expect(l).toBeGreaterThan(-3);
      expect(Math.abs(l - off.levels[i]!)).toBeLessThan(1);
    }
  });

  test("a client flagging a tone as silent is found by the probe and mixed within a probe cycle; no PLC, no click", () => {
    const r = new Room();
    r.room.setVad(true, 5);
    r.add("a");
    r.add("liar");
    for (let i = 0; i < 10; i++) r.add(`s${i}`);
    const START = 60;
    let foundAt = -1;
    const heardLiar: Int16Array[] = [];
    for (let k = 0; k < START + 60; k++) {
      r.step((n, t) => {
        if (n === "a") return [toneFrame(440, t), VOICE];
        if (n === "liar") return [t >= START ? toneFrame(660, t) : noiseFrame(99, t), SILENT];
        return [noiseFrame(Number(n.slice(1)), t), SILENT];
      });
      if (k >= START && foundAt < 0 && r.stats("liar").inMix) foundAt = k;
      if (k >= START) heardLiar.push(r.mix("s0"));
    }
    // Every skipped stream is probed within 5 ticks; mixed from the probed frame on.
    expect(foundAt).toBeGreaterThanOrEqual(START);
    expect(foundAt - START).toBeLessThanOrEqual(8);
    const st = r.stats("liar");
    expect(st.inMix).toBe(true);
    expect(st.speaking).toBe(true);
    expect(st.concealed).toBe(0); // resuming decode is not a PLC run
    expect(st.decodeErrors).toBe(0);
    const after = concat(heardLiar.slice(foundAt - START + 2));
    expect(toneDb(after, 660)).toBeGreaterThan(-3);
    // The resumed stream starts from a primed decoder with the onset ramp: no step bigger than the tone's own.
    const entry = concat(heardLiar.slice(Math.max(0, foundAt - START - 1), foundAt - START + 3));
    const toneStep = 8000 * Math.sin((2 * Math.PI * 660) / 48000) + 8000 * Math.sin((2 * Math.PI * 440) / 48000);
    expect(maxStep(entry)).toBeLessThan(toneStep * 1.6);
    r.destroy();
  });

  test("with many silent participants each is still probed once per period (default 500 ms): a liar among 60 is found in time", () => {
    const r = new Room();
    r.add("a");
    r.add("liar");
    for (let i = 0; i < 60; i++) r.add(`s${i}`);
    const START = 40;
    let foundAt = -1;
    for (let k = 0; k < START + 40 && foundAt < 0; k++) {
      r.step((n, t) => {
        if (n === "a") return [toneFrame(440, t), VOICE];
        if (n === "liar") return [t >= START ? toneFrame(660, t) : noiseFrame(99, t), SILENT];
        return [noiseFrame(Number(n.slice(1)), t), SILENT];
      });
      if (k >= START && r.stats("liar").inMix) foundAt = k;
    }
    expect(foundAt).toBeGreaterThanOrEqual(START);
    expect(foundAt - START).toBeLessThanOrEqual(26); // 25 ticks = 500 ms, +1 for the frame it is mixed in
    // The cost: 61 skipped streams × 2 decodes per probe / 25 ticks ≈ 5 decodes per tick, not 61.
    const silentDecodes = Array.from({ length: 60 }, (_, i) => r.stats(`s${i}`).decodes).reduce((a, b) => a + b, 0);
    expect(silentDecodes / r.t).toBeLessThan(10);
    r.destroy();
  });

  test("a client flagging silence as voice is decoded and measured, and never takes a top-K slot", () => {
    const r = new Room({ topK: 3 });
    r.room.setVad(true, 5);
    for (const n of Object.keys(TALKERS)) r.add(n);
    r.add("liar");
    r.add("l");
    let liarInMix = 0;
    for (let k = 0; k < 120; k++) {
      r.step((n, t) => {
        if (n in TALKERS) return [toneFrame(TALKERS[n]!, t, k < 40 && n === "c" ? 0 : 8000), VOICE];
        if (n === "liar") return [noiseFrame(5, t), VOICE];
        return [noiseFrame(6, t), SILENT];
      });
      if (r.stats("liar").inMix) liarInMix++;
    }
    const st = r.stats("liar");
    expect(st.decodes).toBeGreaterThanOrEqual(115); // flagged voice: always decoded
    expect(st.skipped).toBe(0);
    expect(liarInMix).toBe(0); // even while only two real talkers left a free slot (c silent for 40 ticks)
    expect(st.speaking).toBe(false);
    for (const n of Object.keys(TALKERS)) expect(r.stats(n).inMix).toBe(true);
    r.destroy();
  });

  test("frames without flags (1.0.0 clients) are always decoded", () => {
    const r = new Room();
    r.add("a");
    r.add("old");
    for (let k = 0; k < 50; k++) r.step((n, t) => (n === "a" ? [toneFrame(440, t), VOICE] : [noiseFrame(1, t), 0]));
    expect(r.stats("old").decodes).toBeGreaterThanOrEqual(48);
    expect(r.stats("old").skipped).toBe(0);
    r.destroy();
  });
});

describe("listen-only participants", () => {
  test("a participant that may not speak is never decoded nor mixed; allowed again, it is heard", () => {
    const r = new Room();
    r.add("a");
    r.add("x");
    r.add("l");
    r.room.setCanSpeak(r.slot("x"), false);
    const results: number[] = [];
    const mixes: Int16Array[] = [];
    for (let k = 0; k < 60; k++) {
      results.push(...r.step((n, t) => (n === "l" ? null : [toneFrame(n === "a" ? 440 : 660, t), 0])));
      if (k >= 20) mixes.push(r.mix("l"));
    }
    expect(results.filter((x) => x === PushResult.LISTEN_ONLY).length).toBe(60);
    expect(r.stats("x").decodes).toBe(0);
    expect(r.stats("x").packetsIn).toBe(60);
    const m = concat(mixes);
    expect(toneDb(m, 440)).toBeGreaterThan(-3);
    expect(toneDb(m, 660)).toBeLessThan(-60);
    r.room.setCanSpeak(r.slot("x"), true);
    const later: Int16Array[] = [];
    for (let k = 0; k < 40; k++) {
      r.step((n, t) => (n === "l" ? null : [toneFrame(n === "a" ? 440 : 660, t), 0]));
      if (k >= 20) later.push(r.mix("l"));
    }
    expect(toneDb(concat(later), 660)).toBeGreaterThan(-3);
    r.destroy();
  });
});

describe("per-listener mix controls", () => {
  /** Three talkers and two listeners; `setup` installs the rules; returns each listener's mix (ticks 60..119). */
  function runMix(setup: (r: Room) => void, opts: { heard?: boolean } = {}) {
    const r = new Room();
    for (const n of Object.keys(TALKERS)) r.add(n);
    r.add("l");
    r.add("m");
    const mixes: Record<string, Int16Array[]> = { l: [], m: [], a: [] };
    for (let k = 0; k < 120; k++) {
      if (k === 20) setup(r);
      r.step((n, t) => (n in TALKERS ? [toneFrame(TALKERS[n]!, t), VOICE] : [noiseFrame(n === "l" ? 1 : 2, t), SILENT]));
      if (k >= 60) for (const n of Object.keys(mixes)) mixes[n]!.push(r.mix(n));
    }
    const out = {
      l: concat(mixes.l!),
      m: concat(mixes.m!),
      a: concat(mixes.a!),
      lPersonal: r.stats("l").personalMix,
      mPersonal: r.stats("m").personalMix,
      counters: r.room.counters(),
      heardL: opts.heard ? r.heard("l", 60) : undefined,
    };
    r.destroy();
    return out;
  }

  test("mute for me: the listener's mix lacks the source (≥ 26 dB below the others), everyone else still hears it", () => {
    const res = runMix((r) => r.room.setGain(r.slot("l"), r.slot("b"), 0), { heard: true });
    expect(res.lPersonal).toBe(true); // a personal mix for the listener with settings
    expect(res.mPersonal).toBe(false); // the others keep the shared encode
    expect(toneDb(res.l, 440) - toneDb(res.l, 660)).toBeGreaterThan(26);
    expect(toneDb(res.l, 880) - toneDb(res.l, 660)).toBeGreaterThan(26);
    expect(toneDb(res.l, 440)).toBeGreaterThan(-3);
    // What the listener's client decodes, through its personal encoder.
    expect(toneDb(res.heardL!, 440) - toneDb(res.heardL!, 660)).toBeGreaterThan(26);
    for (const hz of Object.values(TALKERS)) expect(toneDb(res.m, hz)).toBeGreaterThan(-3);
    expect(toneDb(res.a, 660)).toBeGreaterThan(-3); // a talker (mix-minus) still hears b
  });

  test("a listener's personal mix exists only while a source it has a rule for is mixed", () => {
    const r = new Room();
    r.add("a");
    r.add("x");
    r.add("l");
    r.room.setGain(r.slot("l"), r.slot("x"), 0);
    const xTalks = (t: number) => t >= 40 && t < 100;
    const personalAt: boolean[] = [];
    const mixes: Int16Array[] = [];
    for (let k = 0; k < 400; k++) {
      r.step((n, t) => {
        if (n === "a") return [toneFrame(440, t), VOICE];
        if (n === "x") return xTalks(t) ? [toneFrame(880, t), VOICE] : [noiseFrame(3, t), SILENT];
        return [noiseFrame(4, t), SILENT];
      });
      personalAt.push(r.stats("l").personalMix);
      if (k >= 45 && k < 100) mixes.push(r.mix("l"));
    }
    expect(personalAt.slice(0, 40).some(Boolean)).toBe(false); // x silent: l shares the encode
    expect(personalAt.slice(42, 100).every(Boolean)).toBe(true); // x mixed: l's own mix without x
    const m = concat(mixes);
    expect(toneDb(m, 440) - toneDb(m, 880)).toBeGreaterThan(26);
    expect(personalAt.at(-1)).toBe(false); // back on the shared encode once x has been quiet a while
    // The switch into the personal mix is a clone of the shared encoder: no gap in what l decodes.
    const heard = r.heard("l", 30).subarray(0, 20 * FRAME);
    expect(toneDb(heard, 440)).toBeGreaterThan(-3);
    r.destroy();
  });

  test("per-source volume: gain 0.5 puts the source 6 dB down for that listener only", () => {
    const res = runMix((r) => r.room.setGain(r.slot("l"), r.slot("a"), 0.5));
    const drop = toneDb(res.m, 440) - toneDb(res.l, 440);
    expect(drop).toBeGreaterThan(5);
    expect(drop).toBeLessThan(7);
    expect(Math.abs(toneDb(res.l, 660) - toneDb(res.m, 660))).toBeLessThan(0.5);
  });

  test("clearing the rules returns the listener to the shared mix content", () => {
    const res = runMix((r) => {
      r.room.setGain(r.slot("l"), r.slot("b"), 0);
      r.room.clearGains(r.slot("l"));
    });
    expect(Math.abs(toneDb(res.l, 660) - toneDb(res.m, 660))).toBeLessThan(0.5);
  });

  test("priority speaker: everyone else is ducked about 12 dB in every mix while it talks", () => {
    const plain = runMix(() => {});
    const prio = runMix((r) => r.room.setPriority(r.slot("a"), 0.25));
    for (const hz of [660, 880]) {
      const duck = toneDb(plain.m, hz) - toneDb(prio.m, hz);
      expect(duck).toBeGreaterThan(11);
      expect(duck).toBeLessThan(13);
    }
    expect(Math.abs(toneDb(prio.m, 440) - toneDb(plain.m, 440))).toBeLessThan(0.5);
    // No extra encode: the duck is inside the shared mix.
    expect(prio.mPersonal).toBe(false);
    expect(prio.l.length).toBe(plain.l.length);
  });

  test("bad rules are refused with a clear error and change nothing", () => {
    const r = new Room();
    r.add("a");
    r.add("b");
    expect(() => r.room.setGain(r.slot("a"), r.slot("b"), 5)).toThrow(/gain 5/);
    expect(() => r.room.setGain(r.slot("a"), r.slot("b"), Number.NaN)).toThrow(/gain NaN/);
    expect(() => r.room.setGain(r.slot("a"), r.slot("a"), 0)).toThrow(/not oneself/);
    expect(() => r.room.setGain(r.slot("a"), 99, 0)).toThrow(/no participant/);
    expect(() => r.room.setPriority(r.slot("a"), 2)).toThrow(/duck gain 2/);
    r.destroy();
  });

  test("a source that leaves takes its rules with it (the slot reused by a newcomer is not muted)", () => {
    const r = new Room();
    r.add("a");
    r.add("l");
    r.room.setGain(r.slot("l"), r.slot("a"), 0);
    const aSlot = r.slot("a");
    r.room.remove(aSlot);
    const slot = r.room.add(77);
    expect(slot).toBe(aSlot);
    expect(r.stats("l").personalMix).toBe(false);
    r.room.remove(slot);
    r.destroy();
  });
});
