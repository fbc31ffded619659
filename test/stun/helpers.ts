/** Test doubles for the STUN tests: a manual clock and a scriptable STUN server on a real UDP socket. */
import type { Clock } from "../../src/stun";
import { decodeResponse, encodeBindingSuccess } from "../../src/stun";
import { HEADER_BYTES } from "../../src/stun/message";

export class ManualClock implements Clock {
  private t = 1_700_000_000_000;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Moves time forward, firing due timers in order (each may schedule more). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  /** When the earliest pending timer fires, relative to now (undefined: none). */
  nextIn(): number | undefined {
    let min: number | undefined;
    for (const { at } of this.timers.values()) if (min === undefined || at < min) min = at;
    return min === undefined ? undefined : min - this.t;
  }
}

export type Reply = (request: Uint8Array, from: { address: string; port: number }) => Uint8Array[] | undefined;

/** A UDP server that answers each datagram with whatever `reply` returns (nothing: silence). */
export async function fakeStunServer(reply: Reply) {
  let current = reply;
  let requests = 0;
  const socket = await Bun.udpSocket({
    hostname: "127.0.0.1",
    port: 0,
    binaryType: "uint8array",
    socket: {
      data(s, data, port, address) {
        requests++;
        for (const out of current(data, { address, port }) ?? []) s.send(out, port, address);
      },
      error() {},
    },
  });
  return {
    port: socket.port,
    label: `127.0.0.1:${socket.port}`,
    get requests() {
      return requests;
    },
    setReply(r: Reply) {
      current = r;
    },
    close: () => socket.close(),
  };
}

export const txidOf = (request: Uint8Array) => request.slice(8, HEADER_BYTES);

/** The honest answer: the sender's own address and port as XOR-MAPPED-ADDRESS, with FINGERPRINT. */
export const honest: Reply = (req, from) => [encodeBindingSuccess(txidOf(req), { family: "IPv4", address: from.address, port: from.port })];

/** Polls until `check` holds (the machine may be busy; no fixed sleeps). */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

export { decodeResponse };
