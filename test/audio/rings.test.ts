/**
 * The SharedArrayBuffer rings (src/audio/rings.ts) on the smallest ring they allow (4 KiB): order and
 * contents, the data area wrapping many times, the uint32 HEAD/TAIL counters wrapping, a record that
 * does not fit before the end going whole to offset 0 behind a WRAP marker (never split in two), a full
 * ring (also when the space is there but not in one piece), and outbound packets split into several
 * records past MAX_RECIPIENTS_PER_RECORD. Writer and reader share one thread here; the ordering across
 * threads is what Atomics provide and the engine tests exercise.
 */
import { describe, expect, test } from "bun:test";
import {
  createRingBuffer,
  type InboundRecord,
  MAX_RECIPIENTS_PER_RECORD,
  RingReader,
  RingWriter,
  readInbound,
  readOutbound,
  writeInbound,
  writeOutbound,
} from "../../src/audio/rings";
import { AgoraError } from "../../src/errors";

const SMALL = 4096;
const WRAP = 0xffffffff;

/** A body whose bytes say which record it is. */
function body(index: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (index * 31 + i) & 0xff;
  return b;
}

function put(w: RingWriter, data: Uint8Array): number {
  const off = w.reserve(data.length);
  if (off < 0) return off;
  w.bytes.set(data, off);
  w.commit();
  return off;
}

function take(r: RingReader): Uint8Array | undefined {
  const off = r.next();
  if (off < 0) return undefined;
  const out = r.bytes.slice(off, off + r.length);
  r.release();
  return out;
}

function ring(capacity = SMALL): { sab: SharedArrayBuffer; w: RingWriter; r: RingReader } {
  const sab = createRingBuffer(capacity);
  return { sab, w: new RingWriter(sab), r: new RingReader(sab) };
}

describe("rings", () => {
  test("records come out in order with their bytes; used() is what is queued (4-byte length + body, padded)", () => {
    const { w, r } = ring();
    expect(take(r)).toBeUndefined();
    put(w, body(1, 5));
    put(w, body(2, 8));
    expect(w.used()).toBe(12 + 12);
    expect(take(r)).toEqual(body(1, 5));
    expect(r.used()).toBe(12);
    expect(take(r)).toEqual(body(2, 8));
    expect(take(r)).toBeUndefined();
    expect(w.used()).toBe(0);
  });

  test("wrap: 20 000 records of varied sizes cycle through a 4 KiB ring in order and intact", () => {
    const { w, r } = ring();
    let refused = 0;
    let written = 0;
    let read = 0;
    let wraps = 0;
    let lastOff = -1;
    while (read < 20_000) {
      // Write three, read two: the ring fills up and stays full, so wraps happen with data on both sides.
      for (let k = 0; k < 3 && written < 20_000; k++) {
        const off = put(w, body(written, 1 + ((written * 37) % 300)));
        if (off < 0) {
          refused++; // full: written again on a later round
          break;
        }
        if (off < lastOff) wraps++;
        lastOff = off;
        written++;
      }
      for (let k = 0; k < 2 || written === 20_000; k++) {
        const got = take(r);
        if (!got) break;
        expect(got).toEqual(body(read, 1 + ((read * 37) % 300)));
        read++;
      }
    }
    expect(wraps).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(0);
    expect(w.drops()).toBe(refused);
    expect(w.used()).toBe(0);
  });

  test("wrap: the HEAD and TAIL byte counters wrap past 2^32 without losing a record", () => {
    const sab = createRingBuffer(SMALL);
    const hdr = new Int32Array(sab, 0, 16);
    const start = (0x1_0000_0000 - 1000) | 0; // 1000 bytes before the uint32 wrap, 8-byte aligned
    Atomics.store(hdr, 0, start);
    Atomics.store(hdr, 1, start);
    const w = new RingWriter(sab);
    const r = new RingReader(sab);
    for (let i = 0; i < 100; i++) {
      expect(put(w, body(i, 60))).toBeGreaterThan(0);
      expect(take(r)).toEqual(body(i, 60));
      expect(w.used()).toBe(0);
    }
    expect(Atomics.load(hdr, 0) >>> 0).toBeLessThan(10_000); // went past 2^32
    expect(w.used()).toBe(0);
  });

  test("split: a record that does not fit before the end goes whole to offset 0 behind a WRAP marker", () => {
    const { w, r } = ring();
    // Advance to 12 bytes before the end of the data area (records of 2040 + 2044 bytes), then consume.
    put(w, body(0, 2036));
    put(w, body(1, 2040));
    take(r);
    take(r);
    expect(w.used()).toBe(0);
    const off = put(w, body(2, 40)); // needs 44 > 12 contiguous
    expect(off).toBe(4); // at the start, after its length word
    expect(w.view.getUint32(SMALL - 12, true)).toBe(WRAP); // the tail holds the marker, not half a record
    expect(w.used()).toBe(12 + 44); // the skipped tail counts until the reader passes it
    expect(take(r)).toEqual(body(2, 40));
    expect(r.used()).toBe(0);
    // A record that fits the tail exactly takes it, no marker; the next one starts at offset 0.
    const { w: w2, r: r2 } = ring();
    put(w2, body(0, 2036));
    put(w2, body(1, 2040));
    take(r2);
    take(r2);
    expect(put(w2, body(3, 8))).toBe(SMALL - 12 + 4);
    expect(put(w2, body(4, 8))).toBe(4);
    expect(take(r2)).toEqual(body(3, 8));
    expect(take(r2)).toEqual(body(4, 8));
  });

  test("full: a record that does not fit is dropped and counted; space freed by the reader is used again", () => {
    const { w, r } = ring();
    let n = 0;
    while (put(w, body(n, 100)) >= 0) n++;
    expect(n).toBe(Math.floor(SMALL / 104));
    expect(w.drops()).toBe(1);
    expect(put(w, body(n, 100))).toBe(-1);
    expect(w.drops()).toBe(2);
    expect(w.used()).toBe(n * 104); // nothing half-written
    expect(take(r)).toEqual(body(0, 100));
    expect(put(w, body(n, 100))).toBeGreaterThanOrEqual(0);
    for (let i = 1; i <= n; i++) expect(take(r)).toEqual(body(i, 100));
    expect(take(r)).toBeUndefined();
  });

  test("full when split: enough free bytes in total but not in one piece at the end, so the record waits", () => {
    const { w, r } = ring();
    for (let i = 0; i < 39; i++) put(w, body(i, 100)); // head at 4056: 40 bytes left before the end
    take(r); // 104 free at the start: 144 free in all
    expect(put(w, body(99, 104))).toBe(-1); // needs 108: 40 (skipped) + 108 > 144
    expect(w.drops()).toBe(1);
    expect(w.view.getUint32(4056, true)).not.toBe(WRAP); // no marker left behind for a dropped record
    expect(w.used()).toBe(38 * 104);
    take(r); // 208 free at the start now
    expect(put(w, body(99, 104))).toBe(4);
    for (let i = 2; i < 39; i++) expect(take(r)).toEqual(body(i, 100));
    expect(take(r)).toEqual(body(99, 104));
  });

  test("limits: too large a record, commit without reserve and a bad capacity are refused", () => {
    const { w } = ring();
    expect(() => w.reserve(SMALL / 2)).toThrow(AgoraError);
    expect(() => w.commit()).toThrow(/commit without reserve/);
    expect(() => createRingBuffer(2048)).toThrow(/power of two >= 4096/);
    expect(() => createRingBuffer(5000)).toThrow(/power of two/);
  });

  test("inbound records carry room, participant, seq, timestamp, arrival, voice-activity flags and payload", () => {
    const { w, r } = ring();
    const payload = body(7, 99);
    expect(writeInbound(w, 3, 0xfffffff0, -1, 2 ** 32 + 5, 1_700_000_000_123.25, payload, 3)).toBe(true);
    expect(writeInbound(w, 3, 1, 2, 3, 4, payload)).toBe(true);
    const rec: InboundRecord = { room: 0, participant: 0, seq: 0, ts: 0, arrivalMs: 0, flags: 0, payloadOffset: 0, payloadLength: 0 };
    const off = r.next();
    readInbound(r, off, rec);
    expect(rec).toMatchObject({
      room: 3,
      participant: 0xfffffff0,
      seq: 0xffffffff,
      ts: 5,
      arrivalMs: 1_700_000_000_123.25,
      flags: 3,
      payloadLength: 99,
    });
    expect([...r.bytes.subarray(rec.payloadOffset, rec.payloadOffset + rec.payloadLength)]).toEqual([...payload]);
    r.release();
    readInbound(r, r.next(), rec);
    expect(rec.flags).toBe(0); // no flags given: unknown
  });

  test("outbound: a packet for more than MAX_RECIPIENTS_PER_RECORD listeners is split into several records", () => {
    const { w, r } = ring(8192);
    const payload = body(5, 60);
    const recipients = Uint32Array.from({ length: 2 * MAX_RECIPIENTS_PER_RECORD + 76 }, (_, i) => 1000 + i);
    expect(writeOutbound(w, 9, 77, 77 * 960, payload, recipients)).toBe(recipients.length);
    const got: number[] = [];
    const sizes: number[] = [];
    for (let off = r.next(); off >= 0; off = r.next()) {
      const rec = readOutbound(r, off);
      expect(rec).toMatchObject({ room: 9, seq: 77, ts: 77 * 960, payload });
      sizes.push(rec.recipientCount);
      for (let i = 0; i < rec.recipientCount; i++) got.push(r.view.getUint32(rec.recipientsOffset + i * 4, true));
      r.release();
    }
    expect(sizes).toEqual([MAX_RECIPIENTS_PER_RECORD, MAX_RECIPIENTS_PER_RECORD, 76]);
    expect(got).toEqual([...recipients]);
    // A ring with room for only part of it: the records that fit are written, the count says how many recipients.
    const small = ring(8192);
    while (put(small.w, body(0, 1000)) >= 0) {}
    take(small.r);
    take(small.r);
    take(small.r); // 3172 bytes free: one record of 512 (2092 bytes) fits, the second does not, the last (388) does
    expect(writeOutbound(small.w, 1, 1, 960, payload, recipients)).toBe(MAX_RECIPIENTS_PER_RECORD + 76);
    expect(small.w.drops()).toBe(2); // the put that found it full, and the second record
  });
});
