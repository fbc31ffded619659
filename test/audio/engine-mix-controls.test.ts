/**
 * The engine's mix controls and voice-activity flags through a real media worker (real 20 ms clock, audio
 * through the rings): per-listener gains, listen-only participants and the priority speaker are applied
 * by WorkerChannel requests and survive a worker restart; the voice flag reaches the core (frames left
 * undecoded are counted). Waits are bounded polls on delivered audio or counters, never fixed sleeps.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import type { AudioFrame, MediaSettings } from "../../src/audio";
import { createMediaEngine, createOpusCodec, type OpusEncoder, type WorkerMediaEngine } from "../../src/audio";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { concat, db, goertzel, mediaSettings, toneFrame, waitFor } from "./media-helpers";

const codec = await createOpusCodec();
const engines: WorkerMediaEngine[] = [];
const timers: Array<ReturnType<typeof setInterval>> = [];

afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t);
  for (const e of engines.splice(0)) await e.stop();
});

async function startEngine(registry = new Registry(), over: Partial<MediaSettings> = {}): Promise<WorkerMediaEngine> {
  const e = createMediaEngine({
    settings: mediaSettings({ jitterMinMs: 60, jitterMaxMs: 400, ...over }),
    logger: silentLogger(),
    registry,
    testHooks: true,
    heartbeatTimeoutMs: 10_000,
  } as never) as WorkerMediaEngine;
  engines.push(e);
  await e.start();
  return e;
}

class Inbox {
  readonly frames = new Map<string, AudioFrame[]>();
  sink(id: string): (f: AudioFrame) => void {
    this.frames.set(id, []);
    return (f) => this.frames.get(id)!.push(f);
  }
  count(id: string): number {
    return this.frames.get(id)?.length ?? 0;
  }
  heard(id: string, lastN: number): Int16Array {
    const dec = codec.decoder();
    const all = this.frames.get(id)!.map((f) => dec.decode(f.payload));
    dec.destroy();
    return concat(all.slice(-lastN));
  }
}

/** Participants sending one frame every 20 ms: a tone (flagged voice) or silence (flagged silent). */
function talk(engine: WorkerMediaEngine, room: string, senders: Array<[string, number | null]>, flags = true): void {
  const encoders = new Map<string, OpusEncoder>(senders.map(([id]) => [id, codec.encoder(32000)]));
  const silence = new Int16Array(960);
  let k = 0;
  timers.push(
    setInterval(() => {
      for (const [id, hz] of senders) {
        const pcm = hz === null ? silence : toneFrame(hz, k);
        const frame: AudioFrame = { seq: k, timestamp: k * 960, payload: encoders.get(id)!.encode(pcm) };
        if (flags) frame.voice = hz !== null;
        engine.pushFrame(room, id, frame);
      }
      k++;
    }, 20),
  );
}

const level = (x: Int16Array, hz: number) => db(goertzel(x, hz));

/** Polls (bounded) until `cond` holds on the last second of what `id` heard. */
async function heardEventually(inbox: Inbox, id: string, cond: (x: Int16Array) => boolean, timeoutMs = 15_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (inbox.count(id) >= 50 && cond(inbox.heard(id, 50))) return true;
    if (Date.now() > end) return false;
    await Bun.sleep(100);
  }
}

async function metric(registry: Registry, name: string): Promise<number> {
  const m = (await registry.metrics()).match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : 0;
}

describe("mix controls through the media worker", () => {
  test("mute for me: X leaves only the listener's mix; the setting survives a worker restart", async () => {
    const engine = await startEngine();
    const inbox = new Inbox();
    for (const id of ["a", "x", "l", "m"]) engine.join("room", id, inbox.sink(id));
    talk(engine, "room", [
      ["a", 440],
      ["x", 880],
      ["l", null],
      ["m", null],
    ]);
    const r = engine.setMixGains("room", "l", [
      { participantId: "x", gain: 0 },
      { participantId: "nobody", gain: 0.5 },
      { participantId: "l", gain: 0 },
    ]);
    expect(r).toEqual({ applied: 1, unknown: ["nobody", "l"] });
    const muted = (x: Int16Array) => level(x, 440) - level(x, 880) > 26;
    const both = (x: Int16Array) => Math.abs(level(x, 440) - level(x, 880)) < 10;
    expect(await heardEventually(inbox, "l", muted)).toBe(true);
    expect(await heardEventually(inbox, "m", both)).toBe(true);
    await engine.crashWorker("throw");
    expect(await waitFor(() => engine.workerRestarts === 1, 10_000)).toBe(true);
    const after = inbox.count("l");
    expect(await waitFor(() => inbox.count("l") >= after + 60, 10_000)).toBe(true);
    expect(await heardEventually(inbox, "l", muted)).toBe(true);
    expect(await heardEventually(inbox, "m", both)).toBe(true);
    // Cleared: X is back in the listener's mix.
    engine.setMixGains("room", "l", []);
    expect(await heardEventually(inbox, "l", both)).toBe(true);
  });

  test("a listen-only participant is never heard, even after a restart; allowed to speak again, it is", async () => {
    const engine = await startEngine();
    const inbox = new Inbox();
    for (const id of ["a", "x", "m"]) engine.join("room", id, inbox.sink(id));
    engine.setCanSpeak("room", "x", false);
    talk(engine, "room", [
      ["a", 440],
      ["x", 880],
      ["m", null],
    ]);
    const withoutX = (x: Int16Array) => level(x, 440) > -40 && level(x, 440) - level(x, 880) > 40;
    expect(await heardEventually(inbox, "m", withoutX)).toBe(true);
    await engine.crashWorker("throw");
    expect(await waitFor(() => engine.workerRestarts === 1, 10_000)).toBe(true);
    const after = inbox.count("m");
    expect(await waitFor(() => inbox.count("m") >= after + 60, 10_000)).toBe(true);
    expect(withoutX(inbox.heard("m", 50))).toBe(true);
    engine.setCanSpeak("room", "x", true);
    expect(await heardEventually(inbox, "m", (x) => Math.abs(level(x, 440) - level(x, 880)) < 10)).toBe(true);
  });

  test("priority speaker: the others are ducked about 12 dB while it talks", async () => {
    const engine = await startEngine();
    const inbox = new Inbox();
    for (const id of ["a", "b", "m"]) engine.join("room", id, inbox.sink(id));
    talk(engine, "room", [
      ["a", 440],
      ["b", 660],
      ["m", null],
    ]);
    const balanced = (x: Int16Array) => Math.abs(level(x, 440) - level(x, 660)) < 3;
    expect(await heardEventually(inbox, "m", balanced)).toBe(true);
    engine.setPrioritySpeaker("room", "a");
    expect(await heardEventually(inbox, "m", (x) => level(x, 440) - level(x, 660) > 9)).toBe(true);
    engine.setPrioritySpeaker("room", undefined);
    expect(await heardEventually(inbox, "m", balanced)).toBe(true);
  });

  test("bad requests are refused with BAD_REQUEST naming what is wrong", async () => {
    const engine = await startEngine();
    engine.join("room", "a", () => {});
    engine.join("room", "b", () => {});
    const bad = (fn: () => unknown): AgoraError => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(AgoraError);
        return err as AgoraError;
      }
      throw new Error("expected an error");
    };
    expect(bad(() => engine.setMixGains("room", "a", [{ participantId: "b", gain: 5 }])).message).toMatch(/gains\[0\].*0\.\.4/);
    expect(bad(() => engine.setMixGains("room", "a", [{ participantId: "b", gain: Number.NaN }])).code).toBe("BAD_REQUEST");
    const many = Array.from({ length: 65 }, (_, i) => ({ participantId: `p${i}`, gain: 0 }));
    expect(bad(() => engine.setMixGains("room", "a", many)).message).toMatch(/at most 64/);
    expect(bad(() => engine.setMixGains("room", "zz", [])).message).toMatch(/no participant zz/);
    expect(bad(() => engine.setCanSpeak("nope", "a", false)).message).toMatch(/no participant a in room nope/);
    expect(bad(() => engine.setPrioritySpeaker("room", "a", 100)).message).toMatch(/0\.\.60 dB/);
    expect(bad(() => engine.setPrioritySpeaker("nope", "a")).message).toMatch(/no room nope/);
  });
});

describe("voice-activity flags through the engine", () => {
  test("flagged-silent frames are left undecoded (counted); unflagged ones are always decoded", async () => {
    const registry = new Registry();
    const engine = await startEngine(registry);
    const inbox = new Inbox();
    for (const id of ["a", "s1", "s2"]) engine.join("room", id, inbox.sink(id));
    talk(
      engine,
      "room",
      [
        ["a", 440],
        ["s1", null],
        ["s2", null],
      ],
      true,
    );
    // Metrics are read as they grow (tick reports arrive every 20 ms): bounded polls, not a fixed wait.
    const grows = async (reg: Registry, name: string, min: number) => {
      const end = Date.now() + 20_000;
      while ((await metric(reg, name)) < min && Date.now() < end) await Bun.sleep(100);
      return metric(reg, name);
    };
    // Two silent senders: most of their frames are not decoded; the talker's always are.
    expect(await grows(registry, "agora_mixer_frames_undecoded_total", 150)).toBeGreaterThanOrEqual(150);
    const decodes = await metric(registry, "agora_mixer_decodes_total");
    const undecoded = await metric(registry, "agora_mixer_frames_undecoded_total");
    expect(undecoded).toBeGreaterThan(decodes); // 2 silent streams skipped vs 1 talker (+ probes) decoded

    const registry2 = new Registry();
    const plain = await startEngine(registry2);
    const inbox2 = new Inbox();
    for (const id of ["a", "s1"]) plain.join("room", id, inbox2.sink(id));
    talk(
      plain,
      "room",
      [
        ["a", 440],
        ["s1", null],
      ],
      false,
    );
    expect(await grows(registry2, "agora_mixer_decodes_total", 200)).toBeGreaterThanOrEqual(200);
    expect(await metric(registry2, "agora_mixer_frames_undecoded_total")).toBe(0);
  });
});
