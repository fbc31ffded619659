/**
 * Voice datagrams of `/agora/audio/1.1.0` (Capability.UDP_DATAGRAMS; byte layout in protocol.md, "UDP
 * datagrams"): a clear 18-byte header, then the Opus payload sealed with AES-256-GCM under the session's key,
 * the header as additional data. The nonce is the direction byte and the datagram counter, so it never
 * repeats under one key as long as each side numbers its datagrams 0, 1, 2, … and stops before 2^32.
 *
 * AES-256-GCM because node:crypto has it natively in Bun (ChaCha20-Poly1305 is not); the cipher object per
 * datagram is node:crypto's only AEAD interface (no reusable context), the rest writes into one buffer.
 */
import type * as NodeCrypto from "node:crypto";
import { MAX_OPUS_PAYLOAD } from "./constants";

/** Byte 0 of every datagram: format 1. Its top bits `10` keep it apart from STUN (`00`) on a shared socket. */
export const DATAGRAM_VERSION = 0xa1;
export const DATAGRAM_HEADER_BYTES = 18;
export const DATAGRAM_TAG_BYTES = 16;
export const DATAGRAM_KEY_BYTES = 32;
/** Smallest datagram: a keepalive (header and tag, empty payload). */
export const MIN_DATAGRAM_BYTES = DATAGRAM_HEADER_BYTES + DATAGRAM_TAG_BYTES;
/** Largest datagram: the largest Opus frame sealed. */
export const MAX_DATAGRAM_BYTES = DATAGRAM_HEADER_BYTES + MAX_OPUS_PAYLOAD + DATAGRAM_TAG_BYTES;
/** The last counter a sender may use; then it falls back to the stream for the rest of the session. */
export const MAX_DATAGRAM_COUNTER = 0xffff_ffff;

export const DatagramFlag = {
  /** The frame carries voice (the same bit as AUDIO_VAD's flags). */
  VOICE: 0x01,
  /** No audio: binding, probe and keepalive (seq, timestamp 0; empty payload). */
  KEEPALIVE: 0x02,
} as const;

/** First byte of the nonce: which side sealed the datagram (one key serves both directions). */
export const DatagramDirection = {
  CLIENT_TO_SERVER: 0x43,
  SERVER_TO_CLIENT: 0x53,
} as const;
export type DatagramDirectionValue = (typeof DatagramDirection)[keyof typeof DatagramDirection];

export interface DatagramHeader {
  flags: number;
  sessionId: number;
  /** datagram number of the sender, per direction: nonce and replay protection */
  counter: number;
  /** the AUDIO frame's seq and timestamp (0 in a keepalive) */
  seq: number;
  timestamp: number;
}

/** Why a datagram was dropped: the `reason` label of agora_audio_udp_dropped_total. */
export type DatagramDropReason =
  | "truncated"
  | "oversize"
  | "bad_version"
  | "bad_flags"
  | "unknown_session"
  | "unbound_source"
  | "rate_limited"
  | "auth_failed"
  | "replayed"
  | "too_old"
  | "invalid_opus"
  | "stun_overflow";

export const DATAGRAM_DROP_REASONS: readonly DatagramDropReason[] = [
  "truncated",
  "oversize",
  "bad_version",
  "bad_flags",
  "unknown_session",
  "unbound_source",
  "rate_limited",
  "auth_failed",
  "replayed",
  "too_old",
  "invalid_opus",
  "stun_overflow",
];

/**
 * A STUN message (RFC 5389 §6: top two bits `00`, the magic cookie 0x2112a442 at offset 4) on the node's
 * shared UDP socket: STUN's, not a voice datagram (whose byte 0 has the top bits `10`). Only the 8 bytes a
 * demultiplexer needs are read; STUN itself judges the rest.
 */
export function isStunMessage(data: Uint8Array): boolean {
  return data.length >= 20 && data[0]! < 0x40 && data[4] === 0x21 && data[5] === 0x12 && data[6] === 0xa4 && data[7] === 0x42;
}

/**
 * node:crypto, looked up when first needed rather than imported: src/protocol also bundles for browsers
 * (which share the stream codec but send no datagrams), and a static import would pull a 900 kB polyfill in.
 */
let nodeCrypto: typeof NodeCrypto | undefined;
function crypto(): typeof NodeCrypto {
  nodeCrypto ??= process.getBuiltinModule("node:crypto") as typeof NodeCrypto;
  return nodeCrypto;
}

/**
 * A session key, checked and imported once per session: a KeyObject, which node:crypto uses as it is, where
 * a raw key is copied and imported again by every createCipheriv (a quarter of each datagram's seal or open,
 * measured under Bun: 0.83 µs instead of 1.12 µs per datagram).
 */
export type DatagramKey = NodeCrypto.KeyObject;

export function datagramKey(raw: Uint8Array): DatagramKey {
  if (raw.length !== DATAGRAM_KEY_BYTES) throw new RangeError(`datagram key must be ${DATAGRAM_KEY_BYTES} bytes, got ${raw.length}`);
  return crypto().createSecretKey(Buffer.from(raw));
}

/** 12-byte GCM nonce: direction, 7 zero bytes, counter (big-endian). */
export function datagramNonce(direction: DatagramDirectionValue, counter: number, into: Buffer = Buffer.alloc(12)): Buffer {
  into.fill(0);
  into[0] = direction;
  into.writeUInt32BE(counter >>> 0, 8);
  return into;
}

/**
 * Seals one datagram. `payload` empty only for a keepalive. The caller owns the counter and must never pass
 * the same one twice for one key and direction. With `into` (at least the datagram's length) the datagram is
 * written at its start and returned as a view of it: a sender sealing many datagrams per tick writes them
 * all into one arena instead of allocating a buffer each.
 */
export function sealDatagram(
  key: DatagramKey,
  direction: DatagramDirectionValue,
  header: DatagramHeader,
  payload: Uint8Array,
  nonce: Buffer = Buffer.alloc(12),
  into?: Buffer,
): Buffer {
  if (payload.length > MAX_OPUS_PAYLOAD) throw new RangeError(`payload of ${payload.length} bytes exceeds ${MAX_OPUS_PAYLOAD}`);
  const length = DATAGRAM_HEADER_BYTES + payload.length + DATAGRAM_TAG_BYTES;
  if (into && into.length < length) throw new RangeError(`datagram of ${length} bytes does not fit in ${into.length}`);
  const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  out[0] = DATAGRAM_VERSION;
  out[1] = header.flags;
  out.writeUInt32BE(header.sessionId >>> 0, 2);
  out.writeUInt32BE(header.counter >>> 0, 6);
  out.writeUInt32BE(header.seq >>> 0, 10);
  out.writeUInt32BE(header.timestamp >>> 0, 14);
  const cipher = crypto().createCipheriv("aes-256-gcm", key, datagramNonce(direction, header.counter, nonce));
  cipher.setAAD(out.subarray(0, DATAGRAM_HEADER_BYTES));
  const body = payload.length > 0 ? cipher.update(payload) : undefined;
  cipher.final();
  if (body) out.set(body, DATAGRAM_HEADER_BYTES);
  out.set(cipher.getAuthTag(), DATAGRAM_HEADER_BYTES + payload.length);
  return out;
}

/**
 * The clear header, checked before anything costs more than reading 18 bytes: the length, the version
 * marker and the flags. Returns the reason to drop instead when they are wrong.
 */
export function parseDatagramHeader(bytes: Uint8Array): DatagramHeader | DatagramDropReason {
  if (bytes.length < MIN_DATAGRAM_BYTES) return "truncated";
  if (bytes.length > MAX_DATAGRAM_BYTES) return "oversize";
  if (bytes[0] !== DATAGRAM_VERSION) return "bad_version";
  const flags = bytes[1]!;
  if ((flags & ~(DatagramFlag.VOICE | DatagramFlag.KEEPALIVE)) !== 0) return "bad_flags";
  const keepalive = (flags & DatagramFlag.KEEPALIVE) !== 0;
  if (keepalive !== (bytes.length === MIN_DATAGRAM_BYTES)) return "bad_flags";
  const u32 = (o: number) => ((bytes[o]! << 24) | (bytes[o + 1]! << 16) | (bytes[o + 2]! << 8) | bytes[o + 3]!) >>> 0;
  return { flags, sessionId: u32(2), counter: u32(6), seq: u32(10), timestamp: u32(14) };
}

/** Opens a datagram whose header parsed: the plaintext payload (a fresh buffer), or undefined if forged. */
export function openDatagram(
  key: DatagramKey,
  direction: DatagramDirectionValue,
  bytes: Uint8Array,
  counter: number,
  nonce: Buffer = Buffer.alloc(12),
): Uint8Array | undefined {
  const tagAt = bytes.length - DATAGRAM_TAG_BYTES;
  try {
    const decipher = crypto().createDecipheriv("aes-256-gcm", key, datagramNonce(direction, counter, nonce));
    decipher.setAAD(bytes.subarray(0, DATAGRAM_HEADER_BYTES));
    decipher.setAuthTag(bytes.subarray(tagAt));
    const plain = tagAt > DATAGRAM_HEADER_BYTES ? decipher.update(bytes.subarray(DATAGRAM_HEADER_BYTES, tagAt)) : new Uint8Array(0);
    decipher.final();
    return plain;
  } catch {
    return undefined;
  }
}

/**
 * Anti-replay window over datagram counters (RFC 4303 §3.4.3): the highest counter authenticated so far and
 * a bitmap of the `size` counters at and below it. `check` before decrypting (cheap, no state change),
 * `update` only after the datagram authenticated, so forged datagrams cannot move the window.
 */
export class ReplayWindow {
  private highest = -1;
  private readonly bits: Uint32Array;

  constructor(readonly size = 128) {
    if (size % 32 !== 0 || size <= 0) throw new RangeError("replay window size must be a positive multiple of 32");
    this.bits = new Uint32Array(size / 32);
  }

  /** The highest counter authenticated so far (-1: none yet). */
  get highestCounter(): number {
    return this.highest;
  }

  check(counter: number): "ok" | "replayed" | "too_old" {
    if (counter > this.highest) return "ok";
    if (this.highest - counter >= this.size) return "too_old";
    return this.has(counter) ? "replayed" : "ok";
  }

  update(counter: number): void {
    if (counter > this.highest) {
      const shift = counter - this.highest;
      if (shift >= this.size || this.highest < 0) this.bits.fill(0);
      else for (let c = this.highest + 1; c < counter; c++) this.clear(c);
      this.highest = counter;
    }
    const slot = counter % this.size;
    this.bits[slot >>> 5] = (this.bits[slot >>> 5] ?? 0) | (1 << (slot & 31));
  }

  private has(counter: number): boolean {
    const slot = counter % this.size;
    return (this.bits[slot >>> 5]! & (1 << (slot & 31))) !== 0;
  }

  private clear(counter: number): void {
    const slot = counter % this.size;
    this.bits[slot >>> 5] = (this.bits[slot >>> 5] ?? 0) & ~(1 << (slot & 31));
  }
}

/**
 * A token bucket per datagram source ("address|port"): `perSecond` datagrams a second, bursts of `burst`.
 * At most `maxSources` are tracked; beyond, new sources share one bucket, so a flood from spoofed sources
 * costs bounded memory and cannot starve the sources already known.
 */
export class SourceRateLimiter {
  private readonly sources = new Map<string, { tokens: number; at: number }>();
  private readonly overflow = { tokens: 0, at: 0 };

  constructor(readonly limits: { perSecond: number; burst: number; maxSources: number }) {}

  take(source: string, now: number): boolean {
    const L = this.limits;
    let b = this.sources.get(source);
    if (!b) {
      if (this.sources.size >= L.maxSources) b = this.overflow;
      else {
        b = { tokens: L.burst, at: now };
        this.sources.set(source, b);
      }
    }
    b.tokens = Math.min(L.burst, b.tokens + ((now - b.at) * L.perSecond) / 1000);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Forgets sources whose buckets have refilled: memory stays bounded, nothing is lost. */
  prune(now: number): void {
    const L = this.limits;
    for (const [k, b] of this.sources) if (b.tokens + ((now - b.at) * L.perSecond) / 1000 >= L.burst) this.sources.delete(k);
  }
}

/** The timing both ends follow (protocol.md, "Choosing the path"). */
export interface DatagramTiming {
  /**
   * How often each side reports the datagrams it received (UDP_REPORT, every interval once it has received
   * one, changed or not: a flat count is the evidence of loss) and sends a keepalive if idle.
   */
  reportIntervalMs: number;
  /** A direction uses datagrams while the peer's count rose within this long; else the stream. */
  fallbackMs: number;
  /** After falling back, every frame is also sent as a datagram for this long (a blip recovers at once). */
  dualSendMs: number;
  /** Then one frame in this many (or a keepalive) still goes as a datagram: the probe that finds UDP back. */
  probeEvery: number;
}

export const DATAGRAM_TIMING: Readonly<DatagramTiming> = Object.freeze({
  reportIntervalMs: 250,
  fallbackMs: 600,
  dualSendMs: 2_000,
  probeEvery: 10,
});

/**
 * While the count keeps rising, a UDP_REPORT goes out only this often (protocol.md, "Choosing the path"): a
 * peer's send policy stays on datagrams for 4 × fallbackMs (2.4 s) after a rising report as long as no flat one
 * came, so 1 s leaves it a wide margin, and 400 sessions cost 800 stream messages a second instead of 3,200.
 */
export const HEALTHY_REPORT_INTERVAL_MS = 1_000;

/**
 * When a side sends its UDP_REPORT, checked every reportIntervalMs tick: at once when the count did not rise
 * since the previous tick (the evidence the peer's policy falls back on) and on the first rise after that
 * (the peer returns to datagrams without waiting), otherwise every HEALTHY_REPORT_INTERVAL_MS.
 */
export class UdpReportSchedule {
  private lastTickCount = 0;
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private lastSentFlat = true;

  constructor(private readonly healthyIntervalMs = HEALTHY_REPORT_INTERVAL_MS) {}

  /** Whether to send a report with `received` now (nothing before the first datagram arrived). */
  due(received: number, now: number): boolean {
    if (received === 0) return false;
    const rising = received !== this.lastTickCount;
    this.lastTickCount = received;
    // a tick's timer may fire a few ms early relative to the last send: half a tick of slack
    const send = !rising || this.lastSentFlat || now - this.lastSentAt >= this.healthyIntervalMs - 125;
    if (send) {
      this.lastSentAt = now;
      this.lastSentFlat = !rising;
    }
    return send;
  }
}

const ROUTE_DATAGRAM = Object.freeze({ datagram: true, stream: false });
const ROUTE_STREAM = Object.freeze({ datagram: false, stream: true });
const ROUTE_BOTH = Object.freeze({ datagram: true, stream: true });

/**
 * One direction's send policy, the same at both ends: datagrams while the peer's reported count keeps rising,
 * else the stream with datagram copies (every frame for `dualSendMs`, then every `probeEvery`-th), so a
 * blocked path is left within `fallbackMs` and a path that works again is taken back without a gap (the
 * receiver drops the frames that came both ways by seq).
 */
export class UdpSendPolicy {
  private lastReported = -1;
  private progressAt = Number.NEGATIVE_INFINITY;
  private reportAt = Number.NEGATIVE_INFINITY;
  private lostAt = Number.NEGATIVE_INFINITY;
  /** the first route() call: the session's first frame */
  private firstRouteAt: number | undefined;
  private frames = 0;
  usingDatagrams = false;
  /** times this direction left datagrams for the stream (a bench shows them beside its latency figures) */
  fallbacks = 0;

  constructor(private readonly limits: Pick<DatagramTiming, "fallbackMs" | "dualSendMs" | "probeEvery">) {}

  /** The peer's UDP_REPORT: its count of our datagrams it authenticated. */
  report(received: number, now: number): void {
    if (received !== this.lastReported && this.lastReported !== -1) this.progressAt = now;
    else if (this.lastReported === -1 && received > 0) this.progressAt = now;
    this.lastReported = received;
    this.reportAt = now;
    this.evaluate(now);
  }

  /**
   * Datagrams are judged lost only on evidence: a report that arrived after the last progress and still
   * shows none (the stream works, datagrams do not), `fallbackMs` after that progress. Reports that are
   * merely late (a busy machine, a TCP retransmission) do not switch the path: that would add the stream's
   * work exactly when there is no time for it. Without any report for 4 × fallbackMs the stream is the
   * safer bet anyway.
   */
  evaluate(now: number): boolean {
    const since = now - this.progressAt;
    const flatReportSeen = this.reportAt > this.progressAt;
    const ok = since <= this.limits.fallbackMs || (!flatReportSeen && since <= 4 * this.limits.fallbackMs);
    if (this.usingDatagrams && !ok) {
      this.lostAt = now;
      this.fallbacks++;
    }
    this.usingDatagrams = ok;
    return ok;
  }

  /**
   * For one frame: send it by datagram, by stream, or both (one of three shared answers: no allocation per
   * frame). Before the peer's first report, every frame goes both ways for `dualSendMs`: the receiver's
   * jitter buffer then meets the first frames at the datagrams' speed, not at the stream's (a TCP
   * retransmission at the start of a call would otherwise set its target for seconds), and drops the
   * stream's copies.
   */
  route(now: number): Readonly<{ datagram: boolean; stream: boolean }> {
    if (this.evaluate(now)) return ROUTE_DATAGRAM;
    this.firstRouteAt ??= now;
    const dual =
      now - this.lostAt <= this.limits.dualSendMs || (this.lastReported === -1 && now - this.firstRouteAt <= this.limits.dualSendMs);
    this.frames++;
    return dual || this.frames % this.limits.probeEvery === 0 ? ROUTE_BOTH : ROUTE_STREAM;
  }
}
