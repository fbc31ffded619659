/**
 * Test doubles and helpers for the audio network tests: a forwarding fake MediaEngine, a tiny μ-law "codec"
 * (so network/client logic is testable without wasm), libp2p nodes on 127.0.0.1, tone generation and
 * Goertzel analysis.
 */
import { identify } from "@libp2p/identify";
import type { Libp2p, Stream } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import type { Registry } from "prom-client";
import type { AudioFrame, FrameSink, MediaEngine, MediaSettings, MixGain, MixGainsResult, RoomStats } from "../../src/audio";
import { AgoraError } from "../../src/errors";
import type { OpusCodec } from "../../src/protocol";
import { AUDIO_PROTOCOL, chunkBytes, MessageDecoder, type WireMessage } from "../../src/protocol";
import { agoraTransportStack } from "../../src/transport";

/**
 * Forwards every pushed frame, unchanged and synchronously, to every OTHER participant of the room: the
 * routing of a mix-minus without the mixing, so tests can check exactly which bytes reach whom.
 */
export class FakeMediaEngine implements MediaEngine {
  readonly workerRestarts = 0;
  readonly pushed: { room: string; participant: string; frame: AudioFrame }[] = [];
  readonly joins: string[] = [];
  readonly leaves: string[] = [];
  private readonly roomMap = new Map<string, { createdAt: number; sinks: Map<string, FrameSink> }>();
  settings: Partial<MediaSettings> = {};

  /** per-listener output numbering, as a real mixer has (one seq space per participant's mix) */
  private readonly outSeq = new Map<string, number>();

  constructor(
    private readonly maxParticipants = 1000,
    private readonly resequence = false,
  ) {}

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  join(roomId: string, participantId: string, sink: FrameSink): void {
    if (this.participantCount() >= this.maxParticipants)
      throw new AgoraError("CAPACITY", `node full: ${this.maxParticipants} participants`);
    let room = this.roomMap.get(roomId);
    if (!room) {
      room = { createdAt: Date.now(), sinks: new Map() };
      this.roomMap.set(roomId, room);
    }
    room.sinks.set(participantId, sink);
    this.joins.push(participantId);
  }

  leave(roomId: string, participantId: string): void {
    const room = this.roomMap.get(roomId);
    if (!room?.sinks.delete(participantId)) return;
    this.leaves.push(participantId);
    if (room.sinks.size === 0) this.roomMap.delete(roomId);
  }

  pushFrame(roomId: string, participantId: string, frame: AudioFrame): void {
    this.pushed.push({ room: roomId, participant: participantId, frame });
    const room = this.roomMap.get(roomId);
    if (!room) throw new AgoraError("MEDIA_ENGINE", `no room ${roomId}`);
    for (const [id, sink] of room.sinks) {
      if (id === participantId) continue;
      if (!this.resequence) sink(frame);
      else {
        const seq = this.outSeq.get(id) ?? 0;
        this.outSeq.set(id, seq + 1);
        sink({ seq, timestamp: (seq * 960) >>> 0, payload: frame.payload });
      }
    }
  }

  readonly mixCalls: Array<{ kind: "canSpeak" | "gains" | "priority"; room: string; participant?: string; value: unknown }> = [];

  setCanSpeak(roomId: string, participantId: string, canSpeak: boolean): void {
    this.mixCalls.push({ kind: "canSpeak", room: roomId, participant: participantId, value: canSpeak });
  }

  setMixGains(roomId: string, listenerId: string, gains: readonly MixGain[]): MixGainsResult {
    this.mixCalls.push({ kind: "gains", room: roomId, participant: listenerId, value: gains });
    const members = this.roomMap.get(roomId)?.sinks;
    const unknown = gains.filter((g) => !members?.has(g.participantId) || g.participantId === listenerId).map((g) => g.participantId);
    return { applied: gains.length - unknown.length, unknown };
  }

  setPrioritySpeaker(roomId: string, participantId: string | undefined, duckDb?: number): void {
    this.mixCalls.push({ kind: "priority", room: roomId, participant: participantId, value: duckDb });
  }

  /** Sends a frame to one participant as if the mixer produced it. */
  emit(roomId: string, participantId: string, frame: AudioFrame): void {
    this.roomMap.get(roomId)?.sinks.get(participantId)?.(frame);
  }

  members(roomId: string): string[] {
    return [...(this.roomMap.get(roomId)?.sinks.keys() ?? [])];
  }

  rooms(): RoomStats[] {
    return [...this.roomMap].map(([id, r]) => ({
      id,
      createdAt: r.createdAt,
      participants: [...r.sinks.keys()].map((p) => ({
        id: p,
        speaking: false,
        personalMix: false,
        jitterMs: 0,
        bufferDepthMs: 0,
        lossPercent: 0,
        packetsIn: 0,
        packetsOut: 0,
        concealed: 0,
        late: 0,
      })),
    }));
  }

  participantCount(): number {
    let n = 0;
    for (const r of this.roomMap.values()) n += r.sinks.size;
    return n;
  }

  updateSettings(settings: Partial<MediaSettings>): void {
    this.settings = { ...this.settings, ...settings };
  }
}

// --- μ-law "codec": 960 bytes per 20 ms frame (fits the 1275-byte limit), lossy but tone-preserving ---

/**
 * TOC byte of a well-formed 20 ms Opus packet (config 31 = CELT fullband 20 ms, mono, code 0: one frame).
 * The node drops AUDIO whose payload is not a well-formed 20 ms Opus packet, so fake payloads start with it.
 */
export const OPUS_TOC_20MS = 0xf8;

function linearToUlaw(sample: number): number {
  const BIAS = 0x84;
  let sign = 0;
  let s = sample;
  if (s < 0) {
    s = -s;
    sign = 0x80;
  }
  if (s > 32635) s = 32635;
  s += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

function ulawToLinear(u: number): number {
  const v = ~u & 0xff;
  const sign = v & 0x80;
  const exponent = (v >> 4) & 0x07;
  const mantissa = v & 0x0f;
  const s = (((mantissa << 3) + 0x84) << exponent) - 0x84;
  return sign ? -s : s;
}

/** Counts calls so tests can see that concealment (decode(null)) was used. */
export interface FakeCodecStats {
  encoded: number;
  decoded: number;
  concealed: number;
}

export function createFakeCodec(stats: FakeCodecStats = { encoded: 0, decoded: 0, concealed: 0 }): OpusCodec & { stats: FakeCodecStats } {
  return {
    stats,
    encoder: () => ({
      encode(pcm: Int16Array): Uint8Array {
        if (pcm.length !== 960) throw new Error(`fake encoder: expected 960 samples, got ${pcm.length}`);
        stats.encoded++;
        const out = new Uint8Array(961);
        out[0] = OPUS_TOC_20MS;
        for (let i = 0; i < 960; i++) out[i + 1] = linearToUlaw(pcm[i]!);
        return out;
      },
      setBitrate() {},
      destroy() {},
    }),
    decoder: () => {
      let last = new Int16Array(960);
      return {
        decode(packet: Uint8Array | null): Int16Array {
          if (packet === null) {
            // Crude PLC: repeat the last frame at -6 dB (enough to keep a tone continuous).
            stats.concealed++;
            last = last.map((v) => v >> 1);
            return last;
          }
          stats.decoded++;
          const out = new Int16Array(960);
          for (let i = 0; i < 960 && i + 1 < packet.length; i++) out[i] = ulawToLinear(packet[i + 1]!);
          last = out;
          return out;
        },
        decodeFec(): Int16Array {
          // The fake format carries no FEC: recover as concealment does.
          return this.decode(null);
        },
        destroy() {},
      };
    },
  };
}

// --- libp2p ---

export async function createServerNode(): Promise<{ node: Libp2p; addr: Multiaddr }> {
  const node = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    services: { identify: identify() },
  });
  const addr = node.getMultiaddrs().find((a) => a.toString().includes("/ip4/127.0.0.1/"));
  if (!addr) throw new Error("server node has no 127.0.0.1 address");
  return { node, addr };
}

export async function createBareClientNode(): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: [] },
    ...agoraTransportStack(),
    services: { identify: identify() },
  });
}

/** A raw protocol stream for misbehaviour tests: collects decoded server messages and the close. */
export interface RawStream {
  stream: Stream;
  messages: WireMessage[];
  closed: Promise<void>;
  isClosed(): boolean;
  send(bytes: Uint8Array | number[]): void;
}

export async function openRaw(client: Libp2p, addr: Multiaddr, protocol: string = AUDIO_PROTOCOL): Promise<RawStream> {
  const stream = await client.dialProtocol(addr, protocol, { signal: AbortSignal.timeout(10_000) });
  const messages: WireMessage[] = [];
  const decoder = new MessageDecoder();
  let closed = false;
  stream.addEventListener("message", (evt) => messages.push(...decoder.push(chunkBytes(evt.data)).messages));
  const closedP = new Promise<void>((resolve) =>
    stream.addEventListener("close", () => {
      closed = true;
      resolve();
    }),
  );
  return {
    stream,
    messages,
    closed: closedP,
    isClosed: () => closed,
    send: (bytes) => stream.send(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes)),
  };
}

// --- waiting, metrics ---

/** Polls `cond` every 10 ms; fails with `what` after `timeoutMs` (tests never hang). */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(10);
  }
}

export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const data = await m.get();
  let sum = 0;
  for (const v of data.values) {
    const l = v.labels as Record<string, string | number>;
    if (Object.entries(labels).every(([k, want]) => String(l[k]) === want)) sum += v.value;
  }
  return sum;
}

// --- audio analysis ---

export function tone(freq: number, seconds: number, amplitude = 8000, rate = 48_000): Int16Array {
  const n = Math.round(seconds * rate);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * freq * i) / rate));
  return out;
}

/** Power of `freq` in `x` (Goertzel), as mean power: a sine of amplitude A gives ≈ A²/2 (= its rms²). */
export function goertzelPower(x: Int16Array | Float64Array, freq: number, rate = 48_000): number {
  const n = x.length;
  if (n === 0) return 0;
  const k = (2 * Math.PI * freq) / rate;
  const coeff = 2 * Math.cos(k);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const s0 = x[i]! + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return power / ((n * n) / 4) / 2;
}

export function db(ratio: number): number {
  return 10 * Math.log10(ratio);
}

export function rms(x: Int16Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s / Math.max(1, x.length));
}
