/**
 * Single-producer/single-consumer byte rings over a SharedArrayBuffer: how audio crosses between the
 * control thread and the media worker in bulk (never one postMessage per packet).
 *
 * Layout: a 64-byte header of Int32 slots (three used), then `capacity` bytes of data (a power of two,
 * at least 4096).
 *   HEAD  bytes ever written or skipped (uint32, wraps), published by the producer with Atomics.store
 *   TAIL  bytes ever consumed or skipped (uint32, wraps), published by the consumer with Atomics.store
 *   DROPS records the producer refused because the free space was not there in one piece
 * Records are `u32 body length | body`, padded to 4 bytes, at most capacity/2 bytes in all. A record
 * never straddles the end of the data area: when it does not fit in the bytes left before the end, the
 * producer writes a WRAP marker (0xffffffff) there and puts the whole record at offset 0; the skipped
 * tail counts as used until the consumer passes it. So a record fits only when the free space holds the
 * skipped tail plus the record; otherwise it is dropped and counted.
 * Atomics give the ordering: body bytes written before the HEAD store are visible after the consumer's
 * HEAD load (and likewise for TAIL), so no lock is needed.
 *
 * Two record formats ride on it (little-endian):
 *   inbound  (control → worker): room u32 | participant u32 | seq u32 | ts u32 | arrival f64 (epoch ms) |
 *                                flags u32 (voice activity, core.ts VadFlag; 0 = unknown) | payload
 *   outbound (worker → control): room u32 | seq u32 | ts u32 | payloadLen u32 | recipientCount u32 |
 *                                recipients u32[] | payload
 */
import { AgoraError } from "../errors";

const HEADER_BYTES = 64;
const HEAD = 0;
const TAIL = 1;
const DROPS = 2;
const WRAP = 0xffffffff;

export const INBOUND_HEADER_BYTES = 28;
export const OUTBOUND_HEADER_BYTES = 20;
/** Outbound records carry at most this many recipients; a shared mix for more is split. */
export const MAX_RECIPIENTS_PER_RECORD = 512;

function align4(n: number): number {
  return (n + 3) & ~3;
}

export function createRingBuffer(capacity: number): SharedArrayBuffer {
  if (capacity < 4096 || (capacity & (capacity - 1)) !== 0) {
    throw new AgoraError("MEDIA_ENGINE", `ring capacity ${capacity} must be a power of two >= 4096`);
  }
  return new SharedArrayBuffer(HEADER_BYTES + capacity);
}

class RingBase {
  protected readonly hdr: Int32Array;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly capacity: number;
  protected readonly mask: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.capacity = sab.byteLength - HEADER_BYTES;
    this.mask = this.capacity - 1;
    this.hdr = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.bytes = new Uint8Array(sab, HEADER_BYTES, this.capacity);
    this.view = new DataView(sab, HEADER_BYTES, this.capacity);
  }

  /** Bytes currently queued. */
  used(): number {
    return (Atomics.load(this.hdr, HEAD) - Atomics.load(this.hdr, TAIL)) >>> 0;
  }

  drops(): number {
    return Atomics.load(this.hdr, DROPS) >>> 0;
  }
}

export class RingWriter extends RingBase {
  private head: number;
  private pending = -1;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.head = Atomics.load(this.hdr, HEAD) >>> 0;
  }

  /**
   * Reserves a record with a body of `bodyBytes`; returns the body's offset into `bytes`/`view`, or -1
   * when the ring is full (the record is dropped and counted in DROPS). Call commit() after filling it.
   * Throws when the record could never fit (more than capacity/2 bytes).
   */
  reserve(bodyBytes: number): number {
    const need = align4(4 + bodyBytes);
    if (need > this.capacity / 2) throw new AgoraError("MEDIA_ENGINE", `ring record of ${bodyBytes} bytes is too large`);
    const tail = Atomics.load(this.hdr, TAIL) >>> 0;
    const free = this.capacity - ((this.head - tail) >>> 0);
    let pos = this.head & this.mask;
    const contiguous = this.capacity - pos;
    const total = need <= contiguous ? need : contiguous + need;
    if (total > free) {
      Atomics.add(this.hdr, DROPS, 1);
      return -1;
    }
    if (need > contiguous) {
      this.view.setUint32(pos, WRAP, true);
      this.head = (this.head + contiguous) >>> 0;
      pos = 0;
    }
    this.view.setUint32(pos, bodyBytes, true);
    this.pending = need;
    return pos + 4;
  }

  commit(): void {
    if (this.pending < 0) throw new AgoraError("MEDIA_ENGINE", "ring commit without reserve");
    this.head = (this.head + this.pending) >>> 0;
    this.pending = -1;
    Atomics.store(this.hdr, HEAD, this.head | 0);
  }
}

export class RingReader extends RingBase {
  private tail: number;
  private current = -1;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.tail = Atomics.load(this.hdr, TAIL) >>> 0;
  }

  /** Body length of the record last returned by next(). */
  length = 0;

  /** Offset of the next record's body into `bytes`/`view` (its length in `length`), or -1 when empty. */
  next(): number {
    const head = Atomics.load(this.hdr, HEAD) >>> 0;
    for (;;) {
      if (this.tail === head) return -1;
      const pos = this.tail & this.mask;
      const len = this.view.getUint32(pos, true);
      if (len === WRAP) {
        this.tail = (this.tail + (this.capacity - pos)) >>> 0;
        continue;
      }
      this.length = len;
      this.current = align4(4 + len);
      return pos + 4;
    }
  }

  /** Releases the record returned by next() to the producer. */
  release(): void {
    if (this.current < 0) return;
    this.tail = (this.tail + this.current) >>> 0;
    this.current = -1;
    Atomics.store(this.hdr, TAIL, this.tail | 0);
  }
}

// ---- record helpers ----------------------------------------------------------------------------

export interface InboundRecord {
  room: number;
  participant: number;
  seq: number;
  ts: number;
  arrivalMs: number;
  /** VadFlag bits (0: the sender does not mark frames) */
  flags: number;
  payloadOffset: number;
  payloadLength: number;
}

export function writeInbound(
  w: RingWriter,
  room: number,
  participant: number,
  seq: number,
  ts: number,
  arrivalMs: number,
  payload: Uint8Array,
  flags = 0,
): boolean {
  const off = w.reserve(INBOUND_HEADER_BYTES + payload.length);
  if (off < 0) return false;
  const v = w.view;
  v.setUint32(off, room, true);
  v.setUint32(off + 4, participant, true);
  v.setUint32(off + 8, seq >>> 0, true);
  v.setUint32(off + 12, ts >>> 0, true);
  v.setFloat64(off + 16, arrivalMs, true);
  v.setUint32(off + 24, flags, true);
  w.bytes.set(payload, off + INBOUND_HEADER_BYTES);
  w.commit();
  return true;
}

/** Reads the inbound record at `off` (from RingReader.next()) into `out`. */
export function readInbound(r: RingReader, off: number, out: InboundRecord): void {
  const v = r.view;
  out.room = v.getUint32(off, true);
  out.participant = v.getUint32(off + 4, true);
  out.seq = v.getUint32(off + 8, true);
  out.ts = v.getUint32(off + 12, true);
  out.arrivalMs = v.getFloat64(off + 16, true);
  out.flags = v.getUint32(off + 24, true);
  out.payloadOffset = off + INBOUND_HEADER_BYTES;
  out.payloadLength = r.length - INBOUND_HEADER_BYTES;
}

/**
 * Writes one outbound packet for `recipients`, split into several records past MAX_RECIPIENTS_PER_RECORD.
 * Returns how many recipients were written: a record that finds the ring full is dropped (counted) and
 * the following, smaller, ones may still fit.
 */
export function writeOutbound(w: RingWriter, room: number, seq: number, ts: number, payload: Uint8Array, recipients: Uint32Array): number {
  let written = 0;
  for (let start = 0; start < recipients.length; start += MAX_RECIPIENTS_PER_RECORD) {
    const chunk = recipients.subarray(start, Math.min(recipients.length, start + MAX_RECIPIENTS_PER_RECORD));
    const off = w.reserve(OUTBOUND_HEADER_BYTES + chunk.length * 4 + payload.length);
    if (off < 0) continue;
    const v = w.view;
    v.setUint32(off, room, true);
    v.setUint32(off + 4, seq >>> 0, true);
    v.setUint32(off + 8, ts >>> 0, true);
    v.setUint32(off + 12, payload.length, true);
    v.setUint32(off + 16, chunk.length, true);
    let p = off + OUTBOUND_HEADER_BYTES;
    for (let i = 0; i < chunk.length; i++, p += 4) v.setUint32(p, chunk[i]!, true);
    w.bytes.set(payload, p);
    w.commit();
    written += chunk.length;
  }
  return written;
}

export interface OutboundRecord {
  room: number;
  seq: number;
  ts: number;
  /** A copy, safe to hand to sinks. */
  payload: Uint8Array;
  recipientsOffset: number;
  recipientCount: number;
}

export function readOutbound(r: RingReader, off: number): OutboundRecord {
  const v = r.view;
  const len = v.getUint32(off + 12, true);
  const n = v.getUint32(off + 16, true);
  const payloadAt = off + OUTBOUND_HEADER_BYTES + n * 4;
  return {
    room: v.getUint32(off, true),
    seq: v.getUint32(off + 4, true),
    ts: v.getUint32(off + 8, true),
    payload: r.bytes.slice(payloadAt, payloadAt + len),
    recipientsOffset: off + OUTBOUND_HEADER_BYTES,
    recipientCount: n,
  };
}
