/**
 * libp2p over WebSocket in Bun (src/transport/websockets.ts): Bun-to-Bun ping and a large message through
 * the stock @libp2p/websockets listener, and the listener's bounds against bad input from a raw WebSocket
 * client: garbage, oversized and malformed frames, idle sockets that never start the noise handshake, and a
 * flood of them. Each is closed and counted with its reason; a real participant keeps working throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect } from "node:net";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import { agoraTransportStack, agoraWebSockets, type WsRejectReason } from "../../src/transport";
import { eventually } from "../helpers/node-process";
import { sendBulk, serveBulk } from "../relay/bulk";

const HANDSHAKE_MS = 400;
const MAX_MESSAGE = 128 * 1024;
const MAX_PENDING = 3;
const MAX_UPGRADING = 16;

let server: Libp2p<{ ping: ReturnType<ReturnType<typeof ping>> }>;
let client: Libp2p<{ ping: ReturnType<ReturnType<typeof ping>> }>;
let wsAddr: string;
let wsUrl: string;
const rejected: WsRejectReason[] = [];
const count = (r: WsRejectReason) => rejected.filter((x) => x === r).length;

function wsNode(listen: string[]) {
  const stack = agoraTransportStack();
  return createLibp2p({
    addresses: { listen },
    ...stack,
    transports: [
      agoraWebSockets({
        handshakeTimeoutMs: HANDSHAKE_MS,
        maxMessageBytes: MAX_MESSAGE,
        maxPendingConnections: MAX_PENDING,
        maxUpgradingSockets: MAX_UPGRADING,
        onReject: (r) => rejected.push(r),
      }),
      ...stack.transports,
    ],
    // The raw clients below all come from 127.0.0.1; libp2p's per-host rate limit (5/s) would hide ours.
    connectionManager: { inboundConnectionThreshold: 10_000 },
    services: { ping: ping() },
  });
}

beforeAll(async () => {
  server = await wsNode(["/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/tcp/0"]);
  await serveBulk(server);
  client = await wsNode([]);
  wsAddr = wsMultiaddr().toString();
  const port = wsAddr.split("/")[4];
  wsUrl = `ws://127.0.0.1:${port}/`;
});

afterAll(async () => {
  await client?.stop();
  await server?.stop();
});

const wsMultiaddr = () => server.getMultiaddrs().find((a) => a.toString().includes("/ws/"))!;
const tcpMultiaddr = () => server.getMultiaddrs().find((a) => !a.toString().includes("/ws/"))!;

function openRaw(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("raw websocket failed to open"));
  });
}

/** Resolves with the close code once the server has closed the socket (the test's own timeout bounds it). */
function closedBy(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(-1);
    ws.addEventListener("close", (e) => resolve(e.code), { once: true });
  });
}

describe("the stock listener under Bun", () => {
  test("stopping a node whose WebSocket listener had a connection finishes (stock close() waited for ever)", async () => {
    const node = await wsNode(["/ip4/127.0.0.1/tcp/0/ws"]);
    await client.dial(node.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(10_000) });
    let stopped = false;
    const stopping = Promise.resolve(node.stop()).then(() => (stopped = true));
    await eventually(() => stopped, 10_000, "libp2p.stop() of the WebSocket listener");
    await stopping;
  }, 20_000);

  test("a Bun peer dials /ws, pings, and moves 8 MiB through one stream intact", async () => {
    expect(wsAddr).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\//);
    const conn = await client.dial(wsMultiaddr(), { signal: AbortSignal.timeout(10_000) });
    expect(conn.remoteAddr.toString()).toContain("/ws");
    expect(await client.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(10_000) })).toBeGreaterThanOrEqual(0);
    const data = new Uint8Array(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    await sendBulk(conn, data); // throws unless the listener's sha256 matches
    await conn.close();
  }, 60_000);
});

describe("bad input on the WebSocket listener", () => {
  test("garbage instead of multistream-select is closed and counted", async () => {
    const before = rejected.length;
    const ws = await openRaw();
    ws.send(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n this is not multistream-select\n".repeat(20)));
    await closedBy(ws);
    await eventually(() => rejected.length > before, 5_000, "the garbage connection counted");
    expect(["handshake_failed", "handshake_timeout"]).toContain(rejected[rejected.length - 1]!);
  }, 20_000);

  test("a message above the limit is closed with 1009 and counted as frame_too_large", async () => {
    const before = count("frame_too_large");
    const ws = await openRaw();
    ws.send(new Uint8Array(MAX_MESSAGE + 1));
    expect(await closedBy(ws)).toBe(1009);
    await eventually(() => count("frame_too_large") === before + 1, 5_000, "frame_too_large counted");
  }, 20_000);

  test("a malformed frame (reserved bits set) is closed and counted as malformed_frame", async () => {
    const before = count("malformed_frame");
    const port = Number(wsUrl.split(":")[2]!.replace("/", ""));
    const sock = tcpConnect(port, "127.0.0.1");
    const ended = new Promise<string>((resolve) => {
      let got = "";
      sock.on("data", (d) => {
        got += d.toString("latin1");
        if (got.includes("\r\n\r\n") && !got.includes("sent")) {
          got += "sent";
          // FIN + RSV1..3 + binary opcode, masked, 4-byte payload: no extension was negotiated, so RSV must be 0.
          sock.write(Buffer.from([0xf2, 0x84, 1, 2, 3, 4, 9, 9, 9, 9]));
        }
      });
      sock.on("close", () => resolve(got));
      sock.on("error", () => undefined);
    });
    sock.write(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    expect(await ended).toContain("101");
    await eventually(() => count("malformed_frame") === before + 1, 5_000, "malformed_frame counted");
  }, 20_000);

  test("a socket that never starts the noise handshake is closed after the handshake timeout", async () => {
    const before = count("handshake_timeout");
    const ws = await openRaw();
    let closed = false;
    void closedBy(ws).then(() => (closed = true));
    // Our timeout is 400 ms; libp2p's own (10 s) must not be what closes it.
    await eventually(() => closed, 8_000, "the idle socket closed before libp2p's own 10 s upgrade timeout");
    await eventually(() => count("handshake_timeout") === before + 1, 5_000, "handshake_timeout counted");
  }, 20_000);

  test("a flood of idle sockets: at most maxPending wait, the rest are closed at once; a participant still joins and pings", async () => {
    const beforePending = count("too_many_pending");
    const beforeTimeout = count("handshake_timeout");
    const flood = await Promise.all(Array.from({ length: 12 }, openRaw));
    const closes = flood.map(closedBy);
    // Immediately over the limit: every socket beyond maxPending is refused without waiting for a timeout.
    await eventually(() => count("too_many_pending") - beforePending >= 12 - MAX_PENDING, 5_000, "excess sockets refused");
    // A participant dialing the same node over TCP meanwhile is unaffected: the flood holds at most
    // maxPending of libp2p's 10 pending inbound slots, which TCP shares.
    const tcpConn = await client.dial(tcpMultiaddr(), { force: true, signal: AbortSignal.timeout(5_000) });
    expect(await client.services.ping.ping(tcpConn.remoteAddr, { signal: AbortSignal.timeout(5_000) })).toBeGreaterThanOrEqual(0);
    await tcpConn.close();
    await Promise.all(closes);
    expect(count("handshake_timeout") - beforeTimeout).toBeLessThanOrEqual(MAX_PENDING);
    expect(count("too_many_pending") - beforePending + count("handshake_timeout") - beforeTimeout).toBe(12);
    // Once the flood is gone a WebSocket participant connects again.
    const conn = await client.dial(wsMultiaddr(), { signal: AbortSignal.timeout(10_000), force: true });
    expect(await client.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(5_000) })).toBeGreaterThanOrEqual(0);
  }, 30_000);

  test("TCP connections that never finish the HTTP upgrade are closed after the timeout, and capped in number", async () => {
    const port = Number(wsUrl.split(":")[2]!.replace("/", ""));
    const beforeTimeout = count("upgrade_timeout");
    const beforeCap = count("too_many_upgrading");
    const payloads = ["", "GET / HTTP/1.1\r\nHost: x\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"];
    const n = MAX_UPGRADING + 4;
    const closes = Array.from(
      { length: n },
      (_, i) =>
        new Promise<void>((resolve) => {
          const sock = tcpConnect(port, "127.0.0.1");
          sock.on("connect", () => {
            const p = payloads[i % payloads.length]!;
            if (p) sock.write(p);
          });
          sock.on("error", () => undefined);
          sock.on("close", () => resolve());
        }),
    );
    let closed = 0;
    for (const c of closes) void c.then(() => closed++);
    // Every one of them is closed by the listener, well before any libp2p or HTTP timeout would.
    await eventually(() => closed === n, 8_000, "all half-open upgrade sockets closed");
    const timedOut = count("upgrade_timeout") - beforeTimeout;
    const capped = count("too_many_upgrading") - beforeCap;
    expect(timedOut + capped).toBe(n);
    expect(timedOut).toBeLessThanOrEqual(MAX_UPGRADING);
    expect(capped).toBeGreaterThanOrEqual(n - MAX_UPGRADING);
    // The listener still upgrades a real WebSocket afterwards.
    const conn = await client.dial(wsMultiaddr(), { signal: AbortSignal.timeout(10_000), force: true });
    expect(await client.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(5_000) })).toBeGreaterThanOrEqual(0);
  }, 30_000);

  test("an upgrade request with oversized headers, or not HTTP at all, is answered, closed at once and counted", async () => {
    const port = Number(wsUrl.split(":")[2]!.replace("/", ""));
    const beforeLarge = count("request_too_large");
    const beforeMalformed = count("malformed_request");
    const beforeTimeout = count("upgrade_timeout");
    /** Writes `head` then keeps writing `tail` (if any) until the server closes; resolves with its answer. */
    const abuse = (head: string, tail?: Buffer) =>
      new Promise<{ answer: string; written: number }>((resolve) => {
        const sock = tcpConnect(port, "127.0.0.1");
        let answer = "";
        let written = 0;
        let closed = false;
        sock.on("data", (d) => {
          answer += d.toString();
        });
        sock.on("error", () => undefined);
        sock.on("close", () => {
          closed = true;
          resolve({ answer, written });
        });
        sock.on("connect", async () => {
          sock.write(head);
          // Bounded: at most 64 MiB, the server closes long before (its header limit is 16 KiB).
          while (tail && !closed && written < 64 * 1024 * 1024) {
            written += tail.length;
            if (!sock.write(tail))
              await new Promise((r) => {
                sock.once("drain", r);
                sock.once("close", r);
              });
          }
        });
      });
    const [big, garbage] = await Promise.all([
      abuse("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Big: ", Buffer.alloc(64 * 1024, 97)),
      abuse("hello, this is not HTTP\r\n\r\n"),
    ]);
    expect(big.answer).toStartWith("HTTP/1.1 431");
    expect(big.written).toBeLessThan(64 * 1024 * 1024);
    expect(garbage.answer).toStartWith("HTTP/1.1 400");
    await eventually(() => count("request_too_large") > beforeLarge && count("malformed_request") > beforeMalformed, 5_000, "both counted");
    expect(count("request_too_large") - beforeLarge).toBe(1);
    expect(count("malformed_request") - beforeMalformed).toBe(1);
    // Closed by the parser's verdict, not left to the upgrade timeout.
    expect(count("upgrade_timeout")).toBe(beforeTimeout);
    const conn = await client.dial(wsMultiaddr(), { signal: AbortSignal.timeout(10_000), force: true });
    expect(await client.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(5_000) })).toBeGreaterThanOrEqual(0);
  }, 30_000);
});
