/**
 * How the relay joins a circuit's two streams (patches/@libp2p%2Fcircuit-relay-v2@4.2.13.patch).
 *
 * The relay's side of a circuit is two yamux streams: `src` from the dialing peer, `dst` to the listening
 * one. Here both are real yamux streams with Agora's muxer settings, over in-memory connections, joined by
 * the relay's own `createLimitedRelay`. Upstream joined them with a pipe that queued without bound, so a
 * receiver that stops reading made the relay hold everything the sender sent (up to the circuit's data limit,
 * 1 GiB per direction by default): a memory exhaustion attack on relay operators with two cooperating peers.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { Stream } from "@libp2p/interface";
import { defaultLogger } from "@libp2p/logger";
// not in the package's exports map: the function under test is internal to the relay server
import { createLimitedRelay } from "../../node_modules/@libp2p/circuit-relay-v2/dist/src/utils.js";
import { YAMUX_MAX_WINDOW_BYTES } from "../../src/p2p";
import { yamuxLink } from "../p2p/helpers";

const MIB = 1024 * 1024;

interface Circuit {
  /** the dialing peer's end */
  sender: Stream;
  /** the listening peer's end */
  receiver: Stream;
  /** the relay's two streams */
  src: Stream;
  dst: Stream;
  shutdown: AbortController;
  close(): void;
}

async function relayedCircuit(dataLimit = 1n << 40n): Promise<Circuit> {
  const hop = yamuxLink(); // sender → relay
  const stop = yamuxLink(); // relay → receiver
  const sender = await hop.near.createStream();
  sender.send(new Uint8Array([0])); // yamux opens a stream with its first frame
  const src = await hop.nextFarStream();
  const dst = await stop.near.createStream();
  dst.send(new Uint8Array([0]));
  const receiver = await stop.nextFarStream();
  // drop the opening bytes on both ends before anything else is read
  await Promise.all([nextMessage(src), nextMessage(receiver)]);
  const shutdown = new AbortController();
  const reservation = { signal: new AbortController().signal, limit: { data: dataLimit } };
  createLimitedRelay(src, dst, shutdown.signal, reservation as never, { log: defaultLogger().forComponent("test:circuit") } as never);
  return {
    sender,
    receiver,
    src,
    dst,
    shutdown,
    close() {
      hop.close();
      stop.close();
    },
  };
}

function nextMessage(s: Stream): Promise<void> {
  return new Promise((resolve) => s.addEventListener("message", () => resolve(), { once: true }));
}

/** Sends `total` bytes of a known pattern as fast as `stream` accepts them; `accepted` counts what it took. */
function pump(stream: Stream, total: number, chunk = 64 * 1024) {
  const state = { accepted: 0, done: false, error: undefined as unknown };
  const data = pattern(total);
  const finished = (async () => {
    try {
      for (let off = 0; off < total; off += chunk) {
        const part = data.subarray(off, off + chunk);
        const more = stream.send(part);
        state.accepted += part.byteLength;
        if (!more) await stream.onDrain({ signal: AbortSignal.timeout(30_000) });
      }
      await stream.close();
    } catch (err) {
      state.error = err;
    } finally {
      state.done = true;
    }
  })();
  return { state, finished, sha: createHash("sha256").update(data).digest("hex") };
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 2654435761) >>> 24;
  return out;
}

/** Collects what `stream` receives until its remote closes its writing side. */
function collect(stream: Stream): { bytes: () => number; ended: Promise<string> } {
  const hash = createHash("sha256");
  let n = 0;
  const ended = new Promise<string>((resolve, reject) => {
    stream.addEventListener("message", (evt) => {
      const d = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
      hash.update(d);
      n += d.byteLength;
    });
    stream.addEventListener("remoteCloseWrite", () => resolve(hash.digest("hex")), { once: true });
    stream.addEventListener("close", (evt) => evt.error && reject(evt.error), { once: true });
  });
  return { bytes: () => n, ended };
}

describe("relay circuit join", () => {
  test("a receiver that stops reading stops the sender: the relay holds one window, then delivers everything", async () => {
    const c = await relayedCircuit();
    try {
      const total = 48 * MIB;
      c.receiver.pause(); // the far end reads nothing
      const got = collect(c.receiver);
      const sent = pump(c.sender, total);
      await Bun.sleep(1500);
      // what the relay holds for this circuit: the source's unread bytes plus the destination's unsent ones
      const held = c.src.readBufferLength + c.dst.writeBufferLength;
      // what has left the sender (the rest waits in its own write buffer)
      const left = sent.state.accepted - c.sender.writeBufferLength;
      expect(sent.state.done).toBe(false);
      // bounded by the windows along the way (the relay's grant to the sender, the receiver's to the relay);
      // upstream's pipe kept granting and had taken all 48 MiB by now
      expect(left).toBeLessThan(2 * YAMUX_MAX_WINDOW_BYTES + MIB);
      expect(held).toBeLessThanOrEqual(YAMUX_MAX_WINDOW_BYTES + 64 * 1024);
      c.receiver.resume();
      const digest = await got.ended;
      await sent.finished;
      expect(sent.state.error).toBeUndefined();
      expect(got.bytes()).toBe(total);
      expect(digest).toBe(sent.sha);
    } finally {
      c.close();
    }
  });

  test("both directions at once, each half-close passed on", async () => {
    const c = await relayedCircuit();
    try {
      const up = collect(c.receiver);
      const down = collect(c.sender);
      const a = pump(c.sender, 6 * MIB, 16 * 1024);
      const b = pump(c.receiver, 5 * MIB, 48 * 1024);
      const [upSha, downSha] = await Promise.all([up.ended, down.ended]);
      await Promise.all([a.finished, b.finished]);
      expect(upSha).toBe(a.sha);
      expect(downSha).toBe(b.sha);
      expect(up.bytes()).toBe(6 * MIB);
      expect(down.bytes()).toBe(5 * MIB);
    } finally {
      c.close();
    }
  });

  test("a reset on one side resets the other", async () => {
    const c = await relayedCircuit();
    try {
      const closed = new Promise<Error | undefined>((resolve) =>
        c.sender.addEventListener("close", (evt) => resolve(evt.error), { once: true }),
      );
      c.receiver.abort(new Error("receiver gone"));
      const err = await Promise.race([closed, Bun.sleep(5000).then(() => "timeout" as const)]);
      expect(err).not.toBe("timeout");
      expect(err).toBeInstanceOf(Error);
      expect(c.src.status).not.toBe("open");
    } finally {
      c.close();
    }
  });

  test("the data limit still ends the circuit", async () => {
    const c = await relayedCircuit(1n * BigInt(MIB));
    try {
      const closed = new Promise<Error | undefined>((resolve) =>
        c.sender.addEventListener("close", (evt) => resolve(evt.error), { once: true }),
      );
      c.receiver.addEventListener("message", () => undefined);
      pump(c.sender, 4 * MIB);
      const err = await Promise.race([closed, Bun.sleep(5000).then(() => "timeout" as const)]);
      expect(err).toBeInstanceOf(Error);
    } finally {
      c.close();
    }
  });
});
