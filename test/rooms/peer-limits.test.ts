/**
 * The room server against a hostile peer, in process (issue 11, points 2, 9, 10, 11): limits that hold per
 * remote peer and per IP across streams and connections, bounded work per sweep, the server's PING, the
 * specified behaviour before JOIN, the precedence of errors, and the metric reason each failure gets.
 *
 * Token buckets run on an injected clock that only moves when a test moves it, so "N per second" is checked
 * exactly, however busy the machine is.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import type { AudioFrame } from "../../src/audio";
import { AudioSession } from "../../src/client";
import { silentLogger } from "../../src/log";
import { encodeAudio, encodeMessage, MessageType, WireErrorCode, type WireMessage } from "../../src/protocol";
import { AudioRoomService, type AudioServiceLimits, remoteIpKey } from "../../src/rooms";
import {
  createBareClientNode,
  createServerNode,
  FakeMediaEngine,
  metricValue,
  OPUS_TOC_20MS,
  openRaw,
  type RawStream,
  waitFor,
} from "../helpers/net-fakes";

setDefaultTimeout(30_000);

const ERRORS = "agora_audio_stream_errors_total";
const LIMITED = "agora_audio_net_limited_total";
const DROPPED = "agora_audio_net_frames_dropped_total";

interface Ctx {
  server: Libp2p;
  addr: Multiaddr;
  clients: Libp2p[];
  engine: FakeMediaEngine;
  registry: Registry;
  service: AudioRoomService;
  clock: { ms: number };
}

let ctx: Ctx | undefined;

/** A service whose token buckets and timeouts see only `clock.ms` (moved by the test). */
async function setup(
  limits: Partial<AudioServiceLimits> = {},
  opts: { realClock?: boolean; engine?: FakeMediaEngine; bitrate?: number } = {},
): Promise<Ctx> {
  const { node: server, addr } = await createServerNode();
  const engine = opts.engine ?? new FakeMediaEngine();
  const registry = new Registry();
  const clock = { ms: 1_000_000 };
  const service = new AudioRoomService({
    libp2p: server,
    engine,
    registry,
    logger: silentLogger(),
    limits,
    bitrate: opts.bitrate,
    ...(opts.realClock ? {} : { now: () => clock.ms }),
  });
  await service.start();
  return { server, addr, clients: [], engine, registry, service, clock };
}

async function client(c: Ctx): Promise<Libp2p> {
  const n = await createBareClientNode();
  c.clients.push(n);
  return n;
}

afterEach(async () => {
  const c = ctx;
  ctx = undefined;
  if (!c) return;
  await c.service.stop();
  for (const n of c.clients) await n.stop();
  await c.server.stop();
});

const JOIN = (room = "r") => encodeMessage({ type: "JOIN", version: 1, room, name: "" });

function frame(seq: number): AudioFrame {
  const payload = new Uint8Array(40).fill(seq & 0xff);
  payload[0] = OPUS_TOC_20MS;
  return { seq, timestamp: (seq * 960) >>> 0, payload };
}

function errorOf(raw: RawStream): Extract<WireMessage, { type: "ERROR" }> | undefined {
  return raw.messages.find((m): m is Extract<WireMessage, { type: "ERROR" }> => m.type === "ERROR");
}

async function joinedRaw(c: Ctx, node: Libp2p, room = "r"): Promise<RawStream> {
  const raw = await openRaw(node, c.addr);
  raw.send(JOIN(room));
  await waitFor(() => raw.messages.some((m) => m.type === "JOINED") || raw.isClosed(), "JOINED");
  return raw;
}

/** waitFor for a condition that reads metrics (asynchronous). */
async function waitForMetric(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(10);
  }
}

async function closedWith(raw: RawStream, code: number): Promise<void> {
  await waitFor(() => raw.isClosed(), "stream to be closed");
  expect(errorOf(raw)?.code).toBe(code);
}

describe("suggested bitrate", () => {
  test("JOINED carries the configured bitrate, and updateSettings changes it for the next JOIN", async () => {
    ctx = await setup({}, { bitrate: 24_000 });
    const node = await client(ctx);
    const a = await AudioSession.open({ libp2p: node, target: ctx.addr, room: "r" });
    expect(a.joined.bitrate).toBe(24_000);
    ctx.service.updateSettings({ bitrate: 64_000 });
    const b = await AudioSession.open({ libp2p: node, target: ctx.addr, room: "r" });
    expect(b.joined.bitrate).toBe(64_000);
    expect(() => ctx!.service.updateSettings({ bitrate: 0 })).toThrow(/bitrate/);
    await a.leave();
    await b.leave();
  });
});

describe("per-peer and per-IP limits hold across streams (a hostile peer)", () => {
  test("stream opens per peer: the burst passes, the rest are refused with RATE_LIMITED; the rate refills", async () => {
    ctx = await setup({ peerJoinBurst: 5, peerJoinsPerSecond: 2 });
    const hostile = await client(ctx);
    const raws: RawStream[] = [];
    for (let i = 0; i < 8; i++) raws.push(await openRaw(hostile, ctx.addr));
    await waitFor(() => raws.filter((r) => r.isClosed()).length === 3, "3 refused streams");
    expect(raws.slice(0, 5).every((r) => !r.isClosed())).toBe(true);
    for (const r of raws.slice(5)) expect(errorOf(r)?.code).toBe(WireErrorCode.RATE_LIMITED);
    expect(await metricValue(ctx.registry, LIMITED, { limit: "peer_joins" })).toBe(3);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "rate_limited" })).toBe(3);
    // Closing streams gives nothing back (it is a rate, not a count) ...
    for (const r of raws.slice(0, 5)) r.send(encodeMessage({ type: "LEAVE" }));
    await waitFor(() => ctx!.service.streamCount() === 0, "streams released");
    const again = await openRaw(hostile, ctx.addr);
    await closedWith(again, WireErrorCode.RATE_LIMITED);
    // ... time does: 2/s → one second later two more are admitted.
    ctx.clock.ms += 1000;
    const next = [await joinedRaw(ctx, hostile), await joinedRaw(ctx, hostile)];
    expect(next.every((r) => r.messages[0]?.type === "JOINED")).toBe(true);
    // An honest peer on the same address has its own bucket.
    const honest = await client(ctx);
    expect((await joinedRaw(ctx, honest)).messages[0]?.type).toBe("JOINED");
  });

  test("open streams per peer; per IP over all peers", async () => {
    ctx = await setup({ peerMaxStreams: 3, ipMaxStreams: 5 });
    const hostile = await client(ctx);
    const first = [await joinedRaw(ctx, hostile), await joinedRaw(ctx, hostile)];
    const third = await joinedRaw(ctx, hostile);
    expect(third.messages[0]?.type).toBe("JOINED");
    const fourth = await openRaw(hostile, ctx.addr);
    await closedWith(fourth, WireErrorCode.RATE_LIMITED);
    expect(await metricValue(ctx.registry, LIMITED, { limit: "peer_streams" })).toBe(1);
    expect(first.every((r) => !r.isClosed())).toBe(true);
    // 127.0.0.1 now has 3 streams; two more peers get 2 more, the next is over the IP's 5.
    const other = await client(ctx);
    await joinedRaw(ctx, other);
    await joinedRaw(ctx, other);
    const sixth = await openRaw(await client(ctx), ctx.addr);
    await closedWith(sixth, WireErrorCode.RATE_LIMITED);
    expect(await metricValue(ctx.registry, LIMITED, { limit: "ip_streams" })).toBe(1);
  });

  test("audio frames are pooled per peer: rejoining does not refill the burst", async () => {
    ctx = await setup({ burstMessages: 40, maxMessagesPerSecond: 150, framesPerStreamPerSecond: 60 });
    const hostile = await client(ctx);
    const a = await joinedRaw(ctx, hostile);
    for (let i = 0; i < 30; i++) a.send(encodeAudio(frame(i)));
    await waitFor(() => ctx!.engine.pushed.length === 30, "first 30 frames");
    a.send(encodeMessage({ type: "LEAVE" }));
    await waitFor(() => a.isClosed(), "leave");
    // A fresh stream has a fresh per-stream bucket (40), but the peer's pool has 10 frames left.
    const b = await joinedRaw(ctx, hostile);
    for (let i = 0; i < 30; i++) b.send(encodeAudio(frame(100 + i)));
    await waitForMetric(
      async () => (await metricValue(ctx!.registry, LIMITED, { limit: "peer_frames" })) === 20,
      "20 frames over the pool",
    );
    expect(ctx.engine.pushed.length).toBe(40);
    expect(await metricValue(ctx.registry, DROPPED, { reason: "rate_limited" })).toBe(20);
    expect(b.isClosed()).toBe(false); // frames are dropped, the participant stays
    // The pool refills at 60 frames/s per joined stream: 30 in 500 ms.
    ctx.clock.ms += 500;
    for (let i = 0; i < 40; i++) b.send(encodeAudio(frame(200 + i)));
    await waitForMetric(async () => (await metricValue(ctx!.registry, LIMITED, { limit: "peer_frames" })) === 30, "pool refilled by 30");
    expect(ctx.engine.pushed.length).toBe(70);
    expect(b.isClosed()).toBe(false);
  });

  test("a peer that ignores RATE_LIMITED is disconnected, and for penaltyMs each new stream closes its connection", async () => {
    ctx = await setup({ peerJoinBurst: 2, peerJoinsPerSecond: 1, disconnectAfterRefusals: 3, penaltyMs: 5_000 });
    const hostile = await client(ctx);
    const serverSide = () => ctx!.server.getConnections().filter((c) => c.remotePeer.equals(hostile.peerId));
    for (let i = 0; i < 2; i++) await joinedRaw(ctx, hostile);
    for (let i = 0; i < 2; i++) await openRaw(hostile, ctx.addr); // refused, connection kept
    expect(serverSide().length).toBe(1);
    await openRaw(hostile, ctx.addr).catch(() => undefined); // the third refusal in a row
    await waitFor(() => serverSide().length === 0, "the hostile peer's connection to be closed");
    expect(await metricValue(ctx.registry, LIMITED, { limit: "peer_disconnected" })).toBe(1);
    // It dials again (once its side has seen the old connection go: a stream opened on that one only fails,
    // and nothing reaches the server): its first audio stream closes the new connection at once.
    await waitFor(() => hostile.getConnections(ctx!.server.peerId).length === 0, "the hostile peer to see its connection closed");
    await openRaw(hostile, ctx.addr).catch(() => undefined);
    await waitForMetric(
      async () => (await metricValue(ctx!.registry, LIMITED, { limit: "peer_disconnected" })) === 2,
      "the new connection closed at its first stream",
    );
    await waitFor(() => serverSide().length === 0, "the new connection to be closed");
    // An honest peer on the same address is not affected.
    expect((await joinedRaw(ctx, await client(ctx))).messages[0]?.type).toBe("JOINED");
    // After the penalty (and with its bucket refilled) the peer is welcome again.
    ctx.clock.ms += 5_001;
    expect((await joinedRaw(ctx, hostile)).messages[0]?.type).toBe("JOINED");
  });

  test("the IP key: IPv4 as is, IPv6 by /64, relayed connections have none", () => {
    expect(remoteIpKey("/ip4/192.0.2.7/tcp/4001")).toBe("192.0.2.7");
    expect(remoteIpKey("/ip6/2001:db8:1:2:aa:bb:cc:dd/tcp/4001")).toBe("2001:db8:1:2::/64");
    expect(remoteIpKey("/ip6/2001:db8::1/tcp/4001")).toBe("2001:db8:0:0::/64");
    expect(remoteIpKey("/ip4/192.0.2.7/tcp/4001/p2p/12D3KooWRelay/p2p-circuit")).toBeUndefined();
    expect(remoteIpKey("/dns4/example.org/tcp/4001")).toBeUndefined();
  });
});

/** Records leave() calls grouped by synchronous run: a group is what one sweep pass did in one go. */
class BatchRecordingEngine extends FakeMediaEngine {
  readonly batches: number[] = [];
  private open = false;
  override leave(roomId: string, participantId: string): void {
    super.leave(roomId, participantId);
    if (!this.open) {
      this.open = true;
      this.batches.push(0);
      queueMicrotask(() => (this.open = false));
    }
    this.batches[this.batches.length - 1]!++;
  }
}

describe("bounded work per event", () => {
  test("a mass idle timeout is spread: at most maxExpiriesPerSweep closes per pass, all eventually", async () => {
    const engine = new BatchRecordingEngine();
    ctx = await setup({ idleTimeoutMs: 1000, pingIntervalMs: 100_000, maxExpiriesPerSweep: 4, expirySpreadMs: 20 }, { engine });
    const idle = await client(ctx);
    const raws: RawStream[] = [];
    for (let i = 0; i < 20; i++) raws.push(await joinedRaw(ctx, idle, "other"));
    expect(ctx.service.participantCount()).toBe(20);
    ctx.clock.ms += 1001; // all 20 expire at the same instant
    await waitFor(() => engine.leaves.length === 20, "all 20 idle participants closed");
    expect(Math.max(...engine.batches)).toBeLessThanOrEqual(4);
    expect(engine.batches.length).toBeGreaterThanOrEqual(5);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "idle_timeout" })).toBe(20);
  });
});

describe("protocol behaviour as specified in protocol.md", () => {
  test("the server PINGs a silent joined client; answering PONG keeps it joined, silence still times out", async () => {
    ctx = await setup({ idleTimeoutMs: 900, pingIntervalMs: 200 }, { realClock: true });
    const node = await client(ctx);
    const answering = await joinedRaw(ctx, node);
    let answered = 0;
    answering.stream.addEventListener("message", () => {
      for (const m of answering.messages.splice(1))
        if (m.type === "PING") {
          answering.send(encodeMessage({ type: "PONG", nonce: m.nonce }));
          answered++;
        }
    });
    const silent = await joinedRaw(ctx, node);
    await closedWith(silent, WireErrorCode.IDLE_TIMEOUT);
    expect(silent.messages.some((m) => m.type === "PING")).toBe(true);
    // Wait for two more idle timeouts' worth of PINGs: the answering client is still there.
    await waitFor(() => answered >= 8, "8 PINGs answered");
    expect(answering.isClosed()).toBe(false);
    expect(await metricValue(ctx.registry, "agora_audio_net_pings_sent_total")).toBeGreaterThanOrEqual(9);
  });

  test("LEAVE or ERROR before JOIN end the stream quietly: no ERROR back, no error counted, no join", async () => {
    ctx = await setup();
    const node = await client(ctx);
    const leave = await openRaw(node, ctx.addr);
    leave.send(encodeMessage({ type: "LEAVE" }));
    const error = await openRaw(node, ctx.addr);
    error.send(encodeMessage({ type: "ERROR", code: 11, message: "client gave up" }));
    await waitFor(() => leave.isClosed() && error.isClosed(), "both streams closed");
    expect(leave.messages).toEqual([]);
    expect(error.messages).toEqual([]);
    expect(await metricValue(ctx.registry, ERRORS)).toBe(0);
    expect(ctx.engine.joins).toEqual([]);
  });

  test("precedence: stream limits before parsing; decoding before state; state before draining and capacity", async () => {
    ctx = await setup({ peerJoinBurst: 1 });
    const node = await client(ctx);
    ctx.service.setDraining(true);
    // 1. a decode error beats draining: a bad version while draining is UNSUPPORTED_VERSION
    const v = await openRaw(node, ctx.addr);
    v.send([0, 5, MessageType.JOIN, 9, 1, 0x61, 0]);
    await closedWith(v, WireErrorCode.UNSUPPORTED_VERSION);
    // 2. a stream over the peer's limit is refused before its JOIN is looked at
    const limited = await openRaw(node, ctx.addr);
    limited.send([0, 5, MessageType.JOIN, 9, 1, 0x61, 0]);
    await closedWith(limited, WireErrorCode.RATE_LIMITED);
    // 3. in one chunk, the first failing message in stream order decides: AUDIO-before-JOIN, then garbage
    ctx.clock.ms += 10_000;
    const order = await openRaw(node, ctx.addr);
    order.send(Uint8Array.from([...encodeAudio(frame(1)), 0, 1, 0x7e]));
    await closedWith(order, WireErrorCode.UNEXPECTED_MESSAGE);
    // 4. a valid JOIN while draining is DRAINING (not an error: counted in joins_total)
    ctx.clock.ms += 10_000;
    const drained = await openRaw(node, ctx.addr);
    drained.send(JOIN());
    await closedWith(drained, WireErrorCode.DRAINING);
    expect(await metricValue(ctx.registry, "agora_audio_net_joins_total", { result: "draining" })).toBe(1);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "bad_version" })).toBe(1);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "rate_limited" })).toBe(1);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "unexpected_message" })).toBe(1);
  });

  test("an AUDIO with an empty payload is MALFORMED with its own reason, empty_payload", async () => {
    ctx = await setup();
    const raw = await joinedRaw(ctx, await client(ctx));
    raw.send([0, 9, MessageType.AUDIO, 0, 0, 0, 1, 0, 0, 3, 0xc0]);
    await closedWith(raw, WireErrorCode.MALFORMED);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "empty_payload" })).toBe(1);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "truncated" })).toBe(0);
  });

  test("undecodable Opus is dropped and counted (invalid_opus); the participant stays", async () => {
    ctx = await setup();
    const raw = await joinedRaw(ctx, await client(ctx));
    const withToc = (toc: number[], seq: number) =>
      encodeAudio({ seq, timestamp: seq * 960, payload: Uint8Array.from([...toc, 1, 2, 3, 4]) });
    raw.send(withToc([0x00], 1)); // SILK 10 ms: not the 20 ms v1 carries
    raw.send(withToc([0x03, 0x00], 2)); // code 3 with 0 frames (RFC 6716 R5)
    raw.send(withToc([0xf1, 0], 3)); // CELT 2 × 10 ms (code 1) with an odd number of frame bytes (R3)
    raw.send(withToc([OPUS_TOC_20MS], 4)); // fine
    await waitForMetric(
      async () => (await metricValue(ctx!.registry, DROPPED, { reason: "invalid_opus" })) === 3,
      "3 invalid frames counted",
    );
    await waitFor(() => ctx!.engine.pushed.length === 1, "the valid frame forwarded");
    expect(ctx.engine.pushed[0]!.frame.seq).toBe(4);
    expect(raw.isClosed()).toBe(false);
  });
});
