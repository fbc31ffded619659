/**
 * Typed access to the wasm media core (wasm/build/agora_media.wasm: libopus + wasm/src/*.c).
 *
 * The module is a STANDALONE wasm (no Emscripten JS glue), embedded into the compiled executable via the
 * `type: "file"` import below; its only import is the memory-growth notification, supplied here. One
 * compiled WebAssembly.Module is cached per thread; each `instantiateCore()` gets its own linear memory.
 *
 * Pointers are wasm32 offsets. Views into linear memory are re-created after every memory growth
 * (growth detaches the old ArrayBuffer), so never keep a view across a call that may allocate.
 */
import wasmPath from "../../wasm/build/agora_media.wasm" with { type: "file" };
import { AgoraError, errorMessage } from "../errors";
import { FRAME_SAMPLES, MAX_OPUS_PAYLOAD } from "../protocol";
import type { ParticipantStats } from "./types";

export { FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE } from "../protocol";
export const MAX_PACKET = MAX_OPUS_PAYLOAD;
export const MAX_TOP_K = 16;

/** Results of CoreRoom.push (wasm/src/agora_media.h AM_PUSH_*). */
export const PushResult = { OK: 0, LATE: 1, DUPLICATE: 2, RESYNC: 3, INVALID: 4, LISTEN_ONLY: 5 } as const;

/** Voice-activity flags of CoreRoom.push (AM_VAD_*): KNOWN says the sender marks frames, VOICE that this one has voice. */
export const VadFlag = { VOICE: 1, KNOWN: 2 } as const;
/** Largest per-source gain of a listener's mix rules (+12 dB); 0 mutes the source for that listener. */
export const MAX_MIX_GAIN = 4;
/** Most sources one listener may have a rule for. */
export const MAX_MIX_RULES = 64;
export type PushResultCode = (typeof PushResult)[keyof typeof PushResult];

/** Per-participant figures of the core (AM_ST_* order). */
export interface CoreParticipantStats extends Omit<ParticipantStats, "id" | "jitterTargetMs" | "jitterEstimateMs"> {
  targetMs: number;
  jitterEstimateMs: number;
  levelDb: number;
  inMix: boolean;
  duplicates: number;
  fecRecovered: number;
  dropped: number;
  invalid: number;
  resyncs: number;
  decodeErrors: number;
  /** opus_decode calls (frames, concealment, warm-ups). */
  decodes: number;
  /** Frames pulled but not decoded: flagged silent and unable to reach a mix. */
  skipped: number;
  /** Skipped-stream frames decoded anyway by the round-robin probe. */
  probes: number;
}
const STAT_COUNT = 22;

export interface RoomCounters {
  ticks: number;
  personalEncodes: number;
  sharedEncodes: number;
  encoderClones: number;
  encoderSwitches: number;
  encodeErrors: number;
  concealed: number;
  late: number;
  decodes: number;
  skipped: number;
  probes: number;
}
const COUNTER_COUNT = 11;

export interface RoomConfig {
  topK: number;
  sharedEncode: boolean;
  bitrate: number;
  complexity: number;
  jitterMinMs: number;
  jitterMaxMs: number;
  fec: boolean;
}

interface CoreExports {
  memory: WebAssembly.Memory;
  _initialize?: () => void;
  am_alloc(bytes: number): number;
  am_free(ptr: number): void;
  am_opus_version(): number;
  am_enc_create(bitrate: number, complexity: number, fec: number): number;
  am_enc_set_bitrate(enc: number, bitrate: number): number;
  am_enc_encode(enc: number, pcm: number, out: number, maxLen: number): number;
  am_enc_destroy(enc: number): void;
  am_dec_create(): number;
  am_dec_decode(dec: number, data: number, len: number, pcm: number, fec: number): number;
  am_dec_destroy(dec: number): void;
  am_packet_samples(data: number, len: number): number;
  am_room_create(): number;
  am_room_destroy(room: number): void;
  am_room_configure(
    room: number,
    topk: number,
    shared: number,
    bitrate: number,
    complexity: number,
    jmin: number,
    jmax: number,
    fec: number,
  ): number;
  am_room_add(room: number, handle: number): number;
  am_room_remove(room: number, slot: number): number;
  am_room_push(room: number, slot: number, seq: number, ts: number, arrivalMs: number, data: number, len: number): number;
  am_room_push_flags(
    room: number,
    slot: number,
    seq: number,
    ts: number,
    arrivalMs: number,
    data: number,
    len: number,
    flags: number,
  ): number;
  am_room_set_vad(room: number, skip: number, probePeriodTicks: number): number;
  am_room_set_can_speak(room: number, slot: number, canSpeak: number): number;
  am_room_set_gain(room: number, listener: number, source: number, gain: number): number;
  am_room_clear_gains(room: number, listener: number): number;
  am_room_set_priority(room: number, slot: number, duckGain: number): number;
  am_room_tick(room: number, nowMs: number): number;
  am_room_outputs(room: number): number;
  am_room_stats(room: number, slot: number, out: number): number;
  am_room_counters(room: number): number;
  am_room_debug_mix(room: number, slot: number): number;
  am_room_debug_input(room: number, slot: number): number;
  am_bench_signal(out: number, frames: number, kind: number, seed: number): void;
  am_bench_encode(enc: number, pcm: number, frames: number, scratch: number): number;
}

let modulePromise: Promise<WebAssembly.Module> | undefined;

/** Compiles the embedded wasm once per thread. */
export function loadCoreModule(): Promise<WebAssembly.Module> {
  modulePromise ??= (async () => {
    try {
      const bytes = await Bun.file(wasmPath).arrayBuffer();
      return await WebAssembly.compile(bytes);
    } catch (err) {
      modulePromise = undefined; // let a later call retry (e.g. the file appears after a build)
      throw new AgoraError("MEDIA_ENGINE", `cannot load the media core ${wasmPath}: ${errorMessage(err)} (run wasm/build.sh)`, {
        cause: err,
      });
    }
  })();
  return modulePromise;
}

/** One instance of the core: its own linear memory, rooms, codecs. Not thread-safe (one per thread). */
export class MediaCore {
  readonly x: CoreExports;
  private u8: Uint8Array;
  private i16: Int16Array;
  private i32: Int32Array;
  private u32: Uint32Array;
  private f64: Float64Array;
  /** Scratch areas reused by every call (allocated once; calls are synchronous). */
  readonly scratchPacket: number;
  readonly scratchPcm: number;
  private readonly scratchStats: number;

  private constructor(instance: WebAssembly.Instance) {
    this.x = instance.exports as unknown as CoreExports;
    this.u8 = new Uint8Array(0);
    this.i16 = new Int16Array(0);
    this.i32 = new Int32Array(0);
    this.u32 = new Uint32Array(0);
    this.f64 = new Float64Array(0);
    this.refreshViews();
    this.x._initialize?.();
    this.scratchPacket = this.mustAlloc(MAX_PACKET + 3);
    this.scratchPcm = this.mustAlloc(FRAME_SAMPLES * 2);
    this.scratchStats = this.mustAlloc(Math.max(STAT_COUNT, COUNTER_COUNT) * 8);
  }

  static async create(module?: WebAssembly.Module): Promise<MediaCore> {
    const mod = module ?? (await loadCoreModule());
    let core: MediaCore | undefined;
    const instance = await WebAssembly.instantiate(mod, {
      env: {
        // Called by the module's allocator after memory.grow: views over the old buffer are detached.
        emscripten_notify_memory_growth: () => core?.refreshViews(),
      },
    });
    core = new MediaCore(instance);
    return core;
  }

  private refreshViews(): void {
    const buf = this.x.memory.buffer;
    if (this.u8.buffer === buf) return;
    this.u8 = new Uint8Array(buf);
    this.i16 = new Int16Array(buf);
    this.i32 = new Int32Array(buf);
    this.u32 = new Uint32Array(buf);
    this.f64 = new Float64Array(buf);
  }

  heapU8(): Uint8Array {
    this.refreshViews();
    return this.u8;
  }
  heapI16(): Int16Array {
    this.refreshViews();
    return this.i16;
  }
  heapI32(): Int32Array {
    this.refreshViews();
    return this.i32;
  }
  heapU32(): Uint32Array {
    this.refreshViews();
    return this.u32;
  }
  heapF64(): Float64Array {
    this.refreshViews();
    return this.f64;
  }

  mustAlloc(bytes: number): number {
    const p = this.x.am_alloc(bytes);
    if (!p) throw new AgoraError("MEDIA_ENGINE", `media core out of memory (allocating ${bytes} bytes)`);
    this.refreshViews();
    return p;
  }

  free(ptr: number): void {
    if (ptr) this.x.am_free(ptr);
  }

  /** The linked libopus's version, e.g. "1.3.1" (opus_get_version_string without its "libopus " prefix). */
  opusVersion(): string {
    const heap = this.heapU8();
    const start = this.x.am_opus_version();
    let end = start;
    while (end < heap.length && heap[end] !== 0 && end - start < 256) end++;
    return new TextDecoder().decode(heap.subarray(start, end)).replace(/^libopus /, "");
  }

  /** Copies a packet into the scratch area; returns its pointer. */
  putPacket(data: Uint8Array): number {
    if (data.length > MAX_PACKET) throw new AgoraError("MEDIA_ENGINE", `Opus packet of ${data.length} bytes exceeds ${MAX_PACKET}`);
    this.heapU8().set(data, this.scratchPacket);
    return this.scratchPacket;
  }

  /** Samples in an Opus packet at 48 kHz, or -1 when malformed. */
  packetSamples(data: Uint8Array): number {
    if (data.length === 0 || data.length > MAX_PACKET) return -1;
    const n = this.x.am_packet_samples(this.putPacket(data), data.length);
    return n < 0 ? -1 : n;
  }

  createRoom(config: RoomConfig): CoreRoom {
    const ptr = this.x.am_room_create();
    if (!ptr) throw new AgoraError("MEDIA_ENGINE", "media core out of memory (creating a room)");
    this.refreshViews();
    const room = new CoreRoom(this, ptr);
    room.configure(config);
    return room;
  }

  /** @internal */
  readStats(fill: (ptr: number) => number, count: number): Float64Array | null {
    const n = fill(this.scratchStats);
    if (n < 0) return null;
    const base = this.scratchStats / 8;
    return this.heapF64().slice(base, base + count);
  }
}

/** One output packet of a tick: `data` and `recipients` are views into wasm memory, valid until the next call. */
export interface TickOutput {
  data: Uint8Array;
  recipients: Uint32Array;
}

export class CoreRoom {
  private destroyed = false;
  constructor(
    private readonly core: MediaCore,
    readonly ptr: number,
  ) {}

  private live(): number {
    if (this.destroyed) throw new AgoraError("MEDIA_ENGINE", "room used after destroy");
    return this.ptr;
  }

  configure(c: RoomConfig): void {
    const rc = this.core.x.am_room_configure(
      this.live(),
      c.topK,
      c.sharedEncode ? 1 : 0,
      c.bitrate,
      c.complexity,
      c.jitterMinMs,
      c.jitterMaxMs,
      c.fec ? 1 : 0,
    );
    if (rc < 0) throw new AgoraError("MEDIA_ENGINE", `invalid room configuration ${JSON.stringify(c)}`);
  }

  /** Adds a participant; `handle` (uint32) is echoed in outputs. Returns its slot. */
  add(handle: number): number {
    const slot = this.core.x.am_room_add(this.live(), handle >>> 0);
    if (slot < 0) throw new AgoraError("MEDIA_ENGINE", `media core could not add a participant (error ${slot})`);
    return slot;
  }

  remove(slot: number): void {
    this.core.x.am_room_remove(this.live(), slot);
  }

  /** `vadFlags`: VadFlag bits (0 = the sender does not mark frames: always decoded). */
  push(slot: number, seq: number, ts: number, arrivalMs: number, payload: Uint8Array, vadFlags = 0): PushResultCode | -1 {
    if (payload.length === 0 || payload.length > MAX_PACKET) return PushResult.INVALID;
    const p = this.core.putPacket(payload);
    const r = this.core.x.am_room_push_flags(this.live(), slot, seq >>> 0, ts >>> 0, arrivalMs, p, payload.length, vadFlags);
    return r < 0 ? -1 : (r as PushResultCode);
  }

  /** Pushes a packet already in wasm memory (no copy). */
  pushRaw(slot: number, seq: number, ts: number, arrivalMs: number, ptr: number, len: number, vadFlags = 0): number {
    return this.core.x.am_room_push_flags(this.ptr, slot, seq >>> 0, ts >>> 0, arrivalMs, ptr, len, vadFlags);
  }

  /**
   * Decode skipping of flagged-silent participants (default on), and every how many ticks each of them is
   * decoded anyway to catch a lying flag (default 25 = 500 ms; 0 = never).
   */
  setVad(skip: boolean, probePeriodTicks = 25): void {
    if (this.core.x.am_room_set_vad(this.live(), skip ? 1 : 0, probePeriodTicks) < 0)
      throw new AgoraError("MEDIA_ENGINE", `invalid decode-skipping settings (probe period ${probePeriodTicks} ticks, expected 0..500)`);
  }

  /** false: a listener, never decoded nor mixed (its packets are counted and dropped). */
  setCanSpeak(slot: number, canSpeak: boolean): void {
    if (this.core.x.am_room_set_can_speak(this.live(), slot, canSpeak ? 1 : 0) < 0)
      throw new AgoraError("MEDIA_ENGINE", `no participant in slot ${slot}`);
  }

  /** What `listener` hears of `source`: 0 (muted for it) .. MAX_MIX_GAIN, 1 = as everyone else. */
  setGain(listener: number, source: number, gain: number): void {
    const rc = this.core.x.am_room_set_gain(this.live(), listener, source, gain);
    if (rc < 0)
      throw new AgoraError(
        "MEDIA_ENGINE",
        rc === -4
          ? `no participant in slot ${listener} or ${source}`
          : `invalid mix rule: gain ${gain} for slot ${source} (0..${MAX_MIX_GAIN}, not oneself, at most ${MAX_MIX_RULES} sources)`,
      );
  }

  clearGains(listener: number): void {
    if (this.core.x.am_room_clear_gains(this.live(), listener) < 0)
      throw new AgoraError("MEDIA_ENGINE", `no participant in slot ${listener}`);
  }

  /** The priority speaker (a slot, or -1): others are scaled by `duckGain` while it is mixed. */
  setPriority(slot: number, duckGain = 0.25): void {
    if (this.core.x.am_room_set_priority(this.live(), slot, duckGain) < 0)
      throw new AgoraError("MEDIA_ENGINE", `invalid priority speaker: slot ${slot}, duck gain ${duckGain} (0..1)`);
  }

  /** Runs one 20 ms tick; returns the number of output packets (read them with output()). */
  tick(nowMs: number): number {
    const n = this.core.x.am_room_tick(this.live(), nowMs);
    if (n < 0) throw new AgoraError("MEDIA_ENGINE", `mixer tick failed (error ${n})`);
    return n;
  }

  /** Output `i` of the last tick (views into wasm memory: copy before the next core call). */
  output(i: number): TickOutput {
    const i32 = this.core.heapI32();
    const d = this.core.x.am_room_outputs(this.ptr) / 4 + i * 4;
    const len = i32[d]!;
    const data = i32[d + 1]!;
    const nrecip = i32[d + 2]!;
    const recip = i32[d + 3]!;
    return {
      data: this.core.heapU8().subarray(data, data + len),
      recipients: this.core.heapU32().subarray(recip / 4, recip / 4 + nrecip),
    };
  }

  stats(slot: number): CoreParticipantStats | null {
    const s = this.core.readStats((out) => this.core.x.am_room_stats(this.live(), slot, out), STAT_COUNT);
    if (!s) return null;
    return {
      speaking: s[0] !== 0,
      personalMix: s[1] !== 0,
      jitterMs: s[2]!,
      bufferDepthMs: s[3]!,
      lossPercent: s[4]!,
      packetsIn: s[5]!,
      packetsOut: s[6]!,
      concealed: s[7]!,
      late: s[8]!,
      targetMs: s[9]!,
      levelDb: s[10]!,
      inMix: s[11] !== 0,
      duplicates: s[12]!,
      fecRecovered: s[13]!,
      dropped: s[14]!,
      invalid: s[15]!,
      resyncs: s[16]!,
      decodeErrors: s[17]!,
      decodes: s[18]!,
      skipped: s[19]!,
      probes: s[20]!,
      jitterEstimateMs: s[21]!,
    };
  }

  counters(): RoomCounters {
    const base = this.core.x.am_room_counters(this.live()) / 8;
    const f = this.core.heapF64();
    return {
      ticks: f[base]!,
      personalEncodes: f[base + 1]!,
      sharedEncodes: f[base + 2]!,
      encoderClones: f[base + 3]!,
      encoderSwitches: f[base + 4]!,
      encodeErrors: f[base + 5]!,
      concealed: f[base + 6]!,
      late: f[base + 7]!,
      decodes: f[base + 8]!,
      skipped: f[base + 9]!,
      probes: f[base + 10]!,
    };
  }

  /** The PCM mix sent to `slot` by the last tick, before encoding (a copy). Test and diagnostics hook. */
  debugMix(slot: number): Int16Array {
    return this.copyPcm(this.core.x.am_room_debug_mix(this.live(), slot));
  }

  /** The decoded (or concealed) input of `slot` in the last tick (a copy). */
  debugInput(slot: number): Int16Array {
    return this.copyPcm(this.core.x.am_room_debug_input(this.live(), slot));
  }

  private copyPcm(ptr: number): Int16Array {
    if (!ptr) throw new AgoraError("MEDIA_ENGINE", "no such participant slot");
    return this.core.heapI16().slice(ptr / 2, ptr / 2 + FRAME_SAMPLES);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.core.x.am_room_destroy(this.ptr);
  }
}

/** The libopus version of the embedded core (`agora-node version`): one throwaway instance, no worker. */
export async function libopusVersion(): Promise<string> {
  return (await MediaCore.create()).opusVersion();
}
