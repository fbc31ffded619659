/**
 * Yamux data frames are capped (patches/@chainsafe%2Flibp2p-yamux@8.0.1.patch).
 *
 * @chainsafe/libp2p-yamux 8.0.1 documents `maxMessageSize` (default 64 KiB) but sends data frames as large
 * as the whole send window (256 KiB at first, up to 16 MiB). A receiver can deliver nothing of a frame until
 * all of it has arrived, so a circuit relay forwarded in 16 MiB store-and-forward gulps (half a link's rate),
 * and a voice frame on another stream of the same connection waited behind up to 16 MiB of bulk.
 * Measured on the wire here: the frames a muxer really sends, on a yamux pair over an in-memory connection.
 *
 * Window updates (the same patch): unpatched, a receiver answered EVERY data frame with a window update, so a
 * small control message (a UDP_REPORT once a second per session) cost two frames, two Noise encryptions and
 * two socket writes on each side. Patched, it updates once half the window is used, as hashicorp/yamux does.
 */
import { describe, expect, test } from "bun:test";
import { yamux } from "@chainsafe/libp2p-yamux";
import { agoraTransportStack, YAMUX_MAX_FRAME_BYTES } from "../../src/p2p";
import { yamuxLink } from "./helpers";

const HEADER = 12;
const TYPE_DATA = 0;
const TYPE_WINDOW_UPDATE = 1;

/** Every frame header `conn` sends (type, flags, length), in order. */
function tapFrames(conn: {
  send(data: Uint8Array | { subarray(): Uint8Array }): boolean;
}): { type: number; flags: number; length: number }[] {
  const frames: { type: number; flags: number; length: number }[] = [];
  let pending = new Uint8Array(0);
  let skip = 0;
  const orig = conn.send.bind(conn);
  conn.send = (data) => {
    const bytes = data instanceof Uint8Array ? data : data.subarray();
    let buf = new Uint8Array(pending.byteLength + bytes.byteLength);
    buf.set(pending);
    buf.set(bytes, pending.byteLength);
    for (;;) {
      if (skip > 0) {
        const n = Math.min(skip, buf.byteLength);
        skip -= n;
        buf = buf.subarray(n);
        if (skip > 0) break;
      }
      if (buf.byteLength < HEADER) break;
      const view = new DataView(buf.buffer, buf.byteOffset, HEADER);
      const frame = { type: view.getUint8(1), flags: view.getUint16(2), length: view.getUint32(8) };
      frames.push(frame);
      buf = buf.subarray(HEADER);
      if (frame.type === TYPE_DATA) skip = frame.length;
    }
    pending = buf.slice();
    return orig(data);
  };
  return frames;
}

type MuxerFactory = Parameters<typeof yamuxLink>[0];

async function sendThrough(factory: MuxerFactory, bytes: number): Promise<{ frames: number[]; received: number }> {
  const link = yamuxLink(factory);
  const sent = tapFrames(link.nearConn as never);
  let received = 0;
  const done = Promise.withResolvers<void>();
  const stream = await link.near.createStream();
  // one send of everything: the muxer alone decides how to frame it
  stream.send(new Uint8Array(bytes).fill(7));
  const far = await link.nextFarStream();
  far.addEventListener("message", (m) => {
    received += m.data.byteLength;
    if (received >= bytes) done.resolve();
  });
  const timer = setTimeout(() => done.reject(new Error(`only ${received} of ${bytes} bytes arrived`)), 10_000);
  await done.promise.finally(() => clearTimeout(timer));
  await stream.close().catch(() => undefined);
  link.close();
  // data-frame payload lengths, in order
  return { frames: sent.filter((f) => f.type === TYPE_DATA).map((f) => f.length), received };
}

describe("yamux data frames", () => {
  test("default: no data frame over 64 KiB, even with a 256 KiB window and a 1 MiB send", async () => {
    const { frames, received } = await sendThrough(yamux()(), 1024 * 1024);
    expect(received).toBe(1024 * 1024);
    expect(frames.reduce((a, b) => a + b, 0)).toBe(1024 * 1024);
    expect(Math.max(...frames)).toBe(64 * 1024);
  });

  test("a configured maxMessageSize is the cap", async () => {
    const { frames } = await sendThrough(yamux({ maxMessageSize: 16 * 1024 })(), 512 * 1024);
    expect(Math.max(...frames)).toBe(16 * 1024);
    expect(frames.length).toBe(32);
  });

  test("agora's transport stack sends frames of at most YAMUX_MAX_FRAME_BYTES", async () => {
    const factory = agoraTransportStack().streamMuxers[0]!();
    const { frames, received } = await sendThrough(factory, 256 * 1024);
    expect(received).toBe(256 * 1024);
    expect(YAMUX_MAX_FRAME_BYTES).toBe(16 * 1024);
    expect(Math.max(...frames)).toBe(YAMUX_MAX_FRAME_BYTES);
  });

  test("window updates: none for small messages until half the window is used, then they keep a bulk send going", async () => {
    const link = yamuxLink(yamux()());
    const back = tapFrames(link.farConn as never);
    const stream = await link.near.createStream();
    stream.send(new Uint8Array(9).fill(1));
    const far = await link.nextFarStream();
    let received = 0;
    let wanted = 0;
    let arrived: (() => void) | undefined;
    far.addEventListener("message", (m) => {
      received += m.data.byteLength;
      if (received >= wanted) arrived?.();
    });
    const until = (bytes: number) =>
      new Promise<void>((resolve, reject) => {
        wanted = bytes;
        if (received >= bytes) return resolve();
        const timer = setTimeout(() => reject(new Error(`only ${received} of ${bytes} bytes arrived`)), 20_000);
        arrived = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    // 200 control-sized messages, one at a time (each its own data frame): 1.8 KB of a 256 KiB window
    for (let i = 1; i < 200; i++) {
      stream.send(new Uint8Array(9).fill(1));
      await until(9 * (i + 1));
    }
    const updates = () => back.filter((f) => f.type === TYPE_WINDOW_UPDATE && f.flags === 0);
    expect(updates().length).toBe(0);
    // 4 MiB in one send: sixteen windows' worth only arrives if updates still flow
    stream.send(new Uint8Array(4 * 1024 * 1024).fill(2));
    await until(9 * 200 + 4 * 1024 * 1024);
    expect(updates().length).toBeGreaterThan(0);
    await stream.close().catch(() => undefined);
    link.close();
  });
});
