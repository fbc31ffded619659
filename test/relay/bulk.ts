/**
 * A bulk-transfer test protocol: the dialer sends N bytes and closes its writing side, the listener answers
 * with the sha256 of what it received. Used by the relay tests and bench/relay.ts.
 */
import { createHash } from "node:crypto";
import type { Connection, Libp2p, Stream } from "@libp2p/interface";
import { readAll } from "../../src/p2p/stream-util";
import { RELAYED_STREAM_OPTIONS } from "../../src/relay";

export const BULK_PROTOCOL = "/agora-test/bulk/1.0.0";
/** Echo protocol for round-trip latency: every message is sent straight back. */
export const ECHO_PROTOCOL = "/agora-test/echo/1.0.0";
const CHUNK = 16 * 1024;

export async function serveBulk(libp2p: Libp2p, maxBytes = 256 * 1024 * 1024): Promise<void> {
  await libp2p.handle(
    BULK_PROTOCOL,
    async (stream: Stream) => {
      try {
        const data = await readAll(stream, maxBytes, AbortSignal.timeout(60_000));
        stream.send(createHash("sha256").update(data).digest());
        await stream.close();
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      }
    },
    { ...RELAYED_STREAM_OPTIONS },
  );
  await libp2p.handle(
    ECHO_PROTOCOL,
    (stream: Stream) => {
      stream.addEventListener("message", (evt) => {
        try {
          stream.send(evt.data);
        } catch {
          /* closed */
        }
      });
      stream.addEventListener("remoteCloseWrite", () => void stream.close().catch(() => undefined));
    },
    { ...RELAYED_STREAM_OPTIONS },
  );
}

/** Sends `data` over a new bulk stream on `conn`; resolves when the listener confirms the sha256. */
export async function sendBulk(conn: Connection, data: Uint8Array, timeoutMs = 60_000): Promise<void> {
  const signal = AbortSignal.timeout(timeoutMs);
  const stream = await conn.newStream(BULK_PROTOCOL, { ...RELAYED_STREAM_OPTIONS, signal });
  const reply = readAll(stream, 64, signal);
  // A rejection while we are still sending is re-thrown below; do not let it go unhandled meanwhile.
  reply.catch(() => undefined);
  for (let off = 0; off < data.byteLength; off += CHUNK) {
    if (stream.status !== "open") break;
    if (!stream.send(data.subarray(off, off + CHUNK))) await stream.onDrain({ signal });
  }
  await stream.close({ signal });
  const digest = await reply;
  const want = createHash("sha256").update(data).digest();
  if (!Buffer.from(digest).equals(want)) throw new Error(`bulk transfer corrupted or cut: got ${digest.byteLength} digest bytes`);
}

export interface VoiceLoadResult {
  sent: number;
  received: number;
  /** Round-trip times (ms) of every echoed frame. */
  rtts: number[];
}

/**
 * Voice-shaped load: `streams` echo streams, each sending one `frameBytes` frame every 20 ms for
 * `seconds` (Opus at 64 kbit/s ≈ 160 bytes per frame). Each frame carries its send time; the echo gives a
 * round trip per frame. Frames still in flight 1 s after the end count as lost.
 */
export async function voiceLoad(conn: Connection, streams: number, seconds: number, frameBytes = 160): Promise<VoiceLoadResult> {
  const res: VoiceLoadResult = { sent: 0, received: 0, rtts: [] };
  const opened = await Promise.all(
    Array.from({ length: streams }, () =>
      conn.newStream(ECHO_PROTOCOL, { ...RELAYED_STREAM_OPTIONS, signal: AbortSignal.timeout(10_000) }),
    ),
  );
  for (const s of opened) {
    let pending = new Uint8Array(0);
    s.addEventListener("message", (evt) => {
      const chunk = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
      const buf = new Uint8Array(pending.byteLength + chunk.byteLength);
      buf.set(pending);
      buf.set(chunk, pending.byteLength);
      let off = 0;
      for (; off + frameBytes <= buf.byteLength; off += frameBytes) {
        const sentAt = new DataView(buf.buffer, buf.byteOffset + off, 8).getFloat64(0);
        res.rtts.push(performance.now() - sentAt);
        res.received++;
      }
      pending = buf.slice(off);
    });
  }
  const end = performance.now() + seconds * 1000;
  let next = performance.now();
  while (performance.now() < end) {
    for (const s of opened) {
      const frame = new Uint8Array(frameBytes);
      new DataView(frame.buffer).setFloat64(0, performance.now());
      if (s.status === "open") {
        s.send(frame);
        res.sent++;
      }
    }
    next += 20;
    await Bun.sleep(Math.max(0, next - performance.now()));
  }
  await Bun.sleep(1_000);
  await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  return res;
}

/** Median round-trip time in ms of `rounds` small messages on one echo stream. */
export async function echoRtt(conn: Connection, rounds: number, size = 160): Promise<number[]> {
  const stream = await conn.newStream(ECHO_PROTOCOL, { ...RELAYED_STREAM_OPTIONS, signal: AbortSignal.timeout(10_000) });
  const rtts: number[] = [];
  const payload = new Uint8Array(size).fill(7);
  let pending: { resolve: () => void; got: number } | undefined;
  stream.addEventListener("message", (evt) => {
    if (!pending) return;
    pending.got += evt.data.byteLength;
    if (pending.got >= size) pending.resolve();
  });
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("echo timed out")), 5_000);
      pending = {
        got: 0,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      stream.send(payload);
    });
    rtts.push(performance.now() - t0);
  }
  await stream.close().catch(() => undefined);
  return rtts;
}
