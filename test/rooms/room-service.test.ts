import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import type { AudioFrame } from "../../src/audio";
import { AudioRemoteError, AudioSession } from "../../src/client";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOL_1_1,
  encodeAudio,
  encodeMessage,
  isRetryableErrorCode,
  MessageType,
  WireErrorCode,
  type WireMessage,
} from "../../src/protocol";
import { AudioRoomService, type AudioServiceLimits, SeqWindow } from "../../src/rooms";
import {
  createBareClientNode,
  createServerNode,
  FakeMediaEngine,
  metricValue,
  OPUS_TOC_20MS,
  openRaw,
  waitFor,
} from "../helpers/net-fakes";

// Real-time tests (audio is paced at 20 ms/frame) on a shared 2-core machine: well above bun's 5 s default.
setDefaultTimeout(20_000);

const ERRORS = "agora_audio_stream_errors_total";

interface Ctx {
  server: Libp2p;
  addr: Multiaddr;
  client: Libp2p;
  engine: FakeMediaEngine;
  registry: Registry;
  service: AudioRoomService;
}

let ctx: Ctx;

async function setup(limits: Partial<AudioServiceLimits> = {}, maxParticipants = 1000): Promise<Ctx> {
  const { node: server, addr } = await createServerNode();
  const client = await createBareClientNode();
  const engine = new FakeMediaEngine(maxParticipants);
  const registry = new Registry();
  const service = new AudioRoomService({ libp2p: server, engine, registry, logger: silentLogger(), limits });
  await service.start();
  return { server, addr, client, engine, registry, service };
}

async function teardown(c: Ctx | undefined): Promise<void> {
  if (!c) return;
  await c.service.stop();
  await c.client.stop();
  await c.server.stop();
}

function frame(seq: number, fill = seq & 0xff): AudioFrame {
  const payload = new Uint8Array(40).fill(fill);
  payload[0] = OPUS_TOC_20MS;
  return { seq, timestamp: (seq * 960) >>> 0, payload };
}

/** A joined participant that records what it receives. */
async function participant(c: Ctx, room: string, name = "") {
  const received: AudioFrame[] = [];
  const session = await AudioSession.open({
    libp2p: c.client,
    target: c.addr,
    room,
    name,
    onAudio: (f) => received.push(f),
  });
  return { session, received };
}

/**
 * A participant that keeps talking every 20 ms while a misbehaving stream is dealt with, and a listener
 * that must keep hearing it: proves one bad stream affects nothing else.
 */
async function talkerAndListener(c: Ctx, room: string) {
  const talker = await participant(c, room, "talker");
  const listener = await participant(c, room, "listener");
  let seq = 0;
  const timer = setInterval(() => {
    talker.session.sendAudio(frame(seq++));
    // a listen-only client keeps itself alive with PINGs (tests use short idle timeouts)
    if (seq % 5 === 0) listener.session.ping();
  }, 20);
  return {
    talker,
    listener,
    async stopAndCheckStillFlowing() {
      const before = listener.received.length;
      await waitFor(() => listener.received.length >= before + 5, "listener to keep receiving audio");
      clearInterval(timer);
      expect(talker.session.isOpen).toBe(true);
      expect(listener.session.isOpen).toBe(true);
    },
  };
}

async function expectClosedWith(raw: Awaited<ReturnType<typeof openRaw>>, code: number): Promise<void> {
  await waitFor(() => raw.isClosed(), "misbehaving stream to be closed");
  const err = raw.messages.find((m): m is Extract<WireMessage, { type: "ERROR" }> => m.type === "ERROR");
  expect(err).toBeDefined();
  expect(err!.code).toBe(code);
}

afterEach(async () => {
  await teardown(ctx);
});

describe("join and frame flow", () => {
  beforeEach(async () => {
    ctx = await setup();
  });

  test("JOINED carries id and codec parameters; frames flow both ways", async () => {
    const a = await participant(ctx, "room-1", "alice");
    const b = await participant(ctx, "room-1", "bob");
    expect(a.session.participantId).toMatch(/^p[0-9a-f]{12}$/);
    expect(a.session.participantId).not.toBe(b.session.participantId);
    // a client offers 1.1.0 first: JOINED is version 2 with the server's capabilities
    expect(a.session.joined).toMatchObject({ sampleRate: 48000, channels: 1, frameSamples: 960, codec: 1, version: 2 });
    expect(a.session.protocol).toBe("/agora/audio/1.1.0");
    expect(a.session.joined.capabilities).toBeNumber();
    expect(Math.abs(a.session.joined.serverTimeMs - Date.now())).toBeLessThan(60_000);
    expect(ctx.service.participantCount()).toBe(2);
    expect(ctx.service.rooms().map((r) => r.id)).toEqual(["room-1"]);

    for (let i = 0; i < 20; i++) a.session.sendAudio(frame(1000 + i));
    b.session.sendAudio(frame(7));
    await waitFor(() => b.received.length === 20 && a.received.length === 1, "frames to cross the mixer");
    expect(b.received.map((f) => f.seq)).toEqual(Array.from({ length: 20 }, (_, i) => 1000 + i));
    expect([...b.received[3]!.payload]).toEqual([...frame(1003).payload]);
    expect(b.received[3]!.timestamp).toBe(1003 * 960);
    expect(a.received[0]!.seq).toBe(7);
    expect(await metricValue(ctx.registry, "agora_audio_net_frames_received_total")).toBe(21);
    expect(await metricValue(ctx.registry, "agora_audio_net_frames_sent_total")).toBe(21);

    await a.session.leave();
    await waitFor(() => ctx.service.participantCount() === 1, "leave to reach the engine");
    expect(ctx.engine.leaves).toEqual([a.session.participantId]);
    expect(await metricValue(ctx.registry, ERRORS)).toBe(0);
    await b.session.leave();
    await waitFor(() => ctx.service.streamCount() === 0, "streams to be released");
  });

  test("PING is answered with PONG (keepalive / RTT)", async () => {
    const a = await participant(ctx, "r");
    a.session.ping();
    await waitFor(() => a.session.rttMs !== undefined, "PONG");
    expect(a.session.rttMs!).toBeGreaterThanOrEqual(0);
  });

  test("out-of-order frames are forwarded, duplicates and very late frames dropped", async () => {
    const a = await participant(ctx, "r");
    const b = await participant(ctx, "r");
    // around the uint32 wrap: 0xfffffffe, 0xffffffff, 0, 1 sent as ffffffff, fffffffe(reordered), 1, 0(reordered), 0(dup)
    const order = [0xffffffff, 0xfffffffe, 1, 0, 0, 1];
    for (const s of order) a.session.sendAudio(frame(s));
    // 200 frames ahead, then a frame from far behind the reorder window
    a.session.sendAudio(frame(200));
    a.session.sendAudio(frame(2));
    await waitFor(() => ctx.engine.pushed.length === 5, "frames at the engine");
    await Bun.sleep(100);
    expect(ctx.engine.pushed.map((p) => p.frame.seq)).toEqual([0xffffffff, 0xfffffffe, 1, 0, 200]);
    expect(b.received).toHaveLength(5);
    expect(await metricValue(ctx.registry, "agora_audio_net_frames_dropped_total", { reason: "duplicate" })).toBe(2);
    expect(await metricValue(ctx.registry, "agora_audio_net_frames_dropped_total", { reason: "late" })).toBe(1);
    expect(await metricValue(ctx.registry, "agora_audio_net_frames_reordered_total")).toBe(2);
    expect(await metricValue(ctx.registry, ERRORS)).toBe(0);
  });

  test("a participant that disappears without LEAVE is removed and counted as reset", async () => {
    const a = await participant(ctx, "r");
    const b = await participant(ctx, "r");
    a.session.abort("simulated crash");
    await waitFor(() => ctx.service.participantCount() === 1, "engine.leave after reset");
    expect(await metricValue(ctx.registry, ERRORS, { reason: "reset" })).toBe(1);
    expect(b.session.isOpen).toBe(true);
  });
});

describe("room participants hook", () => {
  test("onRoomParticipants sees each room's count on this node: 1 when it opens, 0 when it closes", async () => {
    const { node: server, addr } = await createServerNode();
    const client = await createBareClientNode();
    const engine = new FakeMediaEngine(1000);
    const calls: string[] = [];
    const service = new AudioRoomService({
      libp2p: server,
      engine,
      registry: new Registry(),
      logger: silentLogger(),
      onRoomParticipants: (room, n) => {
        calls.push(`${room}=${n}`);
        if (room === "boom") throw new Error("a failing hook is logged, never fatal");
      },
    });
    await service.start();
    const c = { server, addr, client, engine, registry: new Registry(), service };
    try {
      const a = await participant(c, "r1");
      const b = await participant(c, "r1");
      const x = await participant(c, "boom");
      await waitFor(() => calls.length === 3, "three joins reported");
      expect(calls).toEqual(["r1=1", "r1=2", "boom=1"]);
      await a.session.leave();
      await waitFor(() => calls.length === 4, "a leave reported");
      b.session.abort("simulated crash");
      await waitFor(() => calls.length === 5, "a reset reported");
      await x.session.leave();
      await waitFor(() => calls.length === 6, "the failing hook's room closed");
      expect(calls.slice(3)).toEqual(["r1=1", "r1=0", "boom=0"]);
    } finally {
      await teardown(c);
    }
  });
});

describe("both protocol versions are served", () => {
  beforeEach(async () => {
    ctx = await setup();
  });

  test("a 1.0.0 client and a 1.1.0 client share a room; each gets JOINED in its own version", async () => {
    const v1 = await openRaw(ctx.client, ctx.addr, AUDIO_PROTOCOL);
    v1.send(encodeMessage({ type: "JOIN", version: 1, room: "mixed", name: "old" }));
    const v2 = await openRaw(ctx.client, ctx.addr, AUDIO_PROTOCOL_1_1);
    v2.send(encodeMessage({ type: "JOIN", version: 2, room: "mixed", name: "new", capabilities: 0xff }));
    await waitFor(() => v1.messages.length > 0 && v2.messages.length > 0, "both JOINED");
    const j1 = v1.messages[0]!;
    const j2 = v2.messages[0]!;
    expect(j1.type).toBe("JOINED");
    expect(j2.type).toBe("JOINED");
    if (j1.type !== "JOINED" || j2.type !== "JOINED") throw new Error("unreachable");
    expect(j1.version).toBe(1);
    expect(j1.capabilities).toBeUndefined();
    expect(j2.version).toBe(2);
    expect(j2.capabilities).toBeNumber();
    v1.send(encodeAudio(frame(1)));
    await waitFor(() => v2.messages.some((m) => m.type === "AUDIO"), "1.0.0 audio to reach the 1.1.0 participant");
    expect(ctx.service.rooms()[0]!.participants).toHaveLength(2);
  });

  test("a JOIN whose version does not match the negotiated protocol id is UNSUPPORTED_VERSION", async () => {
    for (const [protocol, version] of [
      [AUDIO_PROTOCOL, 2],
      [AUDIO_PROTOCOL_1_1, 1],
    ] as const) {
      const raw = await openRaw(ctx.client, ctx.addr, protocol);
      raw.send(encodeMessage({ type: "JOIN", version, room: "r", name: "" }));
      await expectClosedWith(raw, WireErrorCode.UNSUPPORTED_VERSION);
    }
    expect(await metricValue(ctx.registry, ERRORS, { reason: "bad_version" })).toBe(2);
    expect(ctx.service.participantCount()).toBe(0);
  });

  test("server-only 1.1.0 messages from a client are UNEXPECTED_MESSAGE", async () => {
    const raw = await openRaw(ctx.client, ctx.addr, AUDIO_PROTOCOL_1_1);
    raw.send(
      encodeMessage({
        type: "REDIRECT",
        room: "r",
        epoch: 1,
        hostPeerId: "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
        addrs: ["/ip4/127.0.0.1/tcp/1"],
      }),
    );
    await expectClosedWith(raw, WireErrorCode.UNEXPECTED_MESSAGE);
  });
});

describe("misbehaving streams are closed with a code, counted, and isolated", () => {
  test("malformed message (bad type)", async () => {
    ctx = await setup();
    const ok = await talkerAndListener(ctx, "r");
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    raw.send([0, 3, 0x7e, 1, 2]);
    await expectClosedWith(raw, WireErrorCode.MALFORMED);
    expect(raw.messages[0]?.type).toBe("JOINED");
    expect(await metricValue(ctx.registry, ERRORS, { reason: "bad_type" })).toBe(1);
    await ok.stopAndCheckStillFlowing();
    expect(ctx.service.participantCount()).toBe(2);
  });

  test("truncated message at end of stream", async () => {
    ctx = await setup();
    const ok = await talkerAndListener(ctx, "r");
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    raw.send(encodeAudio(frame(1)).subarray(0, 20));
    await raw.stream.close();
    await expectClosedWith(raw, WireErrorCode.MALFORMED);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "truncated" })).toBe(1);
    await ok.stopAndCheckStillFlowing();
  });

  test("oversized length prefix", async () => {
    ctx = await setup();
    const ok = await talkerAndListener(ctx, "r");
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    raw.send([0xff, 0xff, MessageType.AUDIO]);
    await expectClosedWith(raw, WireErrorCode.MALFORMED);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "oversize" })).toBe(1);
    await ok.stopAndCheckStillFlowing();
  });

  test("Opus payload too big", async () => {
    ctx = await setup();
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    const body = new Uint8Array(9 + 1300);
    body[0] = MessageType.AUDIO;
    raw.send([body.length >> 8, body.length & 0xff, ...body]);
    await expectClosedWith(raw, WireErrorCode.MALFORMED);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "payload_too_big" })).toBe(1);
    expect(ctx.engine.pushed).toHaveLength(0);
  });

  test("unsupported version and bad room id get their own codes", async () => {
    ctx = await setup();
    const v = await openRaw(ctx.client, ctx.addr);
    v.send([0, 5, MessageType.JOIN, 2, 1, 0x61, 0]);
    await expectClosedWith(v, WireErrorCode.UNSUPPORTED_VERSION);
    const r = await openRaw(ctx.client, ctx.addr);
    r.send([0, 6, MessageType.JOIN, 1, 2, 0x61, 0x20, 0]);
    await expectClosedWith(r, WireErrorCode.BAD_ROOM);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "bad_version" })).toBe(1);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "bad_room" })).toBe(1);
    expect(isRetryableErrorCode(WireErrorCode.BAD_ROOM)).toBe(false);
    expect(isRetryableErrorCode(WireErrorCode.UNSUPPORTED_VERSION)).toBe(false);
    // the client refuses a bad room id before dialing, with a typed error
    const err = await AudioSession.open({ libp2p: ctx.client, target: ctx.addr, room: "bad room" }).catch((e) => e);
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).code).toBe("USAGE");
  });

  test("AUDIO before JOIN", async () => {
    ctx = await setup();
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeAudio(frame(1)));
    await expectClosedWith(raw, WireErrorCode.UNEXPECTED_MESSAGE);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "unexpected_message" })).toBe(1);
  });

  test("flood: far above 3x the nominal frame rate", async () => {
    ctx = await setup();
    const ok = await talkerAndListener(ctx, "r");
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    await waitFor(() => raw.messages.length > 0, "JOINED");
    const burst: number[] = [];
    for (let i = 0; i < 400; i++) burst.push(...encodeAudio(frame(i)));
    raw.send(Uint8Array.from(burst));
    await expectClosedWith(raw, WireErrorCode.RATE_LIMITED);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "flood" })).toBe(1);
    // the burst allowance (150) got through, the rest did not
    const fromFlooder = ctx.engine.pushed.filter((p) => p.participant !== ok.talker.session.participantId);
    expect(fromFlooder.length).toBeGreaterThan(100);
    expect(fromFlooder.length).toBeLessThan(200);
    await ok.stopAndCheckStillFlowing();
  });

  test("a steady 100 frames/s (2x nominal) is not a flood", async () => {
    ctx = await setup({ maxMessagesPerSecond: 150, burstMessages: 20 });
    const a = await participant(ctx, "r");
    for (let i = 0; i < 60; i++) {
      a.session.sendAudio(frame(i));
      a.session.sendAudio(frame(10_000 + i));
      await Bun.sleep(20);
    }
    expect(a.session.isOpen).toBe(true);
    expect(await metricValue(ctx.registry, ERRORS)).toBe(0);
  });

  test("half-open: a joined stream that goes silent is closed", async () => {
    ctx = await setup({ idleTimeoutMs: 400 });
    const ok = await talkerAndListener(ctx, "r");
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "r", name: "" }));
    await expectClosedWith(raw, WireErrorCode.IDLE_TIMEOUT);
    expect(await metricValue(ctx.registry, ERRORS, { reason: "idle_timeout" })).toBe(1);
    await ok.stopAndCheckStillFlowing();
    expect(ctx.service.participantCount()).toBe(2);
  });

  test("a stream that never JOINs is closed", async () => {
    ctx = await setup({ joinTimeoutMs: 300 });
    const raw = await openRaw(ctx.client, ctx.addr);
    raw.send(encodeMessage({ type: "PING", nonce: 1 }));
    await expectClosedWith(raw, WireErrorCode.JOIN_TIMEOUT);
    expect(raw.messages[0]).toEqual({ type: "PONG", nonce: 1 });
    expect(await metricValue(ctx.registry, ERRORS, { reason: "join_timeout" })).toBe(1);
  });
});

describe("backpressure", () => {
  test("a participant that stops reading loses its OLDEST frames, counted, and stays joined", async () => {
    ctx = await setup({ sendQueueFrames: 10 });
    const slow = await participant(ctx, "r");
    const other = await participant(ctx, "r");
    // Stop reading: yamux stops granting send window, the server's stream reports "needs drain".
    (slow.session as unknown as { stream: { pause(): void; resume(): void } }).stream.pause();
    const big = (seq: number) => ({ seq, timestamp: seq * 960, payload: new Uint8Array(1275).fill(OPUS_TOC_20MS) });
    // The yamux send window (256 KiB, auto-tuned up to a few MiB) decides when the transport pushes back;
    // emit in batches until it has, then 200 more: those must be dropped, not buffered without bound.
    const droppedNow = () => metricValue(ctx.registry, "agora_audio_net_frames_dropped_total", { reason: "send_queue" });
    let total = 0;
    while ((await droppedNow()) === 0 && total < 3000)
      for (let i = 0; i < 50; i++) ctx.engine.emit("r", slow.session.participantId, big(total++));
    expect(await droppedNow()).toBeGreaterThan(0);
    for (let i = 0; i < 200; i++) ctx.engine.emit("r", slow.session.participantId, big(total++));
    const dropped = await droppedNow();
    expect(dropped).toBeGreaterThanOrEqual(200);
    (slow.session as unknown as { stream: { resume(): void } }).stream.resume();
    await waitFor(() => slow.received.length === total - dropped, "delivery of the non-dropped frames");
    // the queue kept the NEWEST audio: the last 10 frames arrive, in order, after a gap
    const seqs = slow.received.map((f) => f.seq);
    expect(seqs.slice(-10)).toEqual(Array.from({ length: 10 }, (_, i) => total - 10 + i));
    expect(seqs.at(-11)!).toBeLessThan(total - 200);
    expect(slow.session.isOpen).toBe(true);
    expect(other.session.isOpen).toBe(true);
    expect(await metricValue(ctx.registry, ERRORS)).toBe(0);
  });
});

describe("draining, capacity, shutdown", () => {
  test("draining refuses new joins with DRAINING; joined participants stay", async () => {
    ctx = await setup();
    const a = await participant(ctx, "r");
    ctx.service.setDraining(true);
    const err = await AudioSession.open({ libp2p: ctx.client, target: ctx.addr, room: "r" }).catch((e) => e);
    expect(err).toBeInstanceOf(AudioRemoteError);
    expect((err as AudioRemoteError).wireCode).toBe(WireErrorCode.DRAINING);
    expect((err as AudioRemoteError).retryable).toBe(true);
    expect((err as AudioRemoteError).message).toContain("draining");
    expect(a.session.isOpen).toBe(true);
    expect(ctx.service.participantCount()).toBe(1);
    expect(await metricValue(ctx.registry, "agora_audio_net_joins_total", { result: "draining" })).toBe(1);
    ctx.service.setDraining(false);
    const b = await participant(ctx, "r");
    expect(b.session.isOpen).toBe(true);
  });

  test("engine capacity is reported as CAPACITY", async () => {
    ctx = await setup({}, 1);
    await participant(ctx, "r");
    const err = await AudioSession.open({ libp2p: ctx.client, target: ctx.addr, room: "r2" }).catch((e) => e);
    expect(err).toBeInstanceOf(AudioRemoteError);
    expect((err as AudioRemoteError).wireCode).toBe(WireErrorCode.CAPACITY);
    expect((err as AudioRemoteError).code).toBe("CAPACITY");
  });

  test("stop() closes every stream with SHUTTING_DOWN and leaves the engine", async () => {
    ctx = await setup();
    const closes: unknown[] = [];
    for (let i = 0; i < 3; i++)
      await AudioSession.open({ libp2p: ctx.client, target: ctx.addr, room: "r", onClose: (e) => closes.push(e) });
    await ctx.service.stop();
    await waitFor(() => closes.length === 3, "clients to see the shutdown");
    for (const e of closes) expect((e as AudioRemoteError).wireCode).toBe(WireErrorCode.SHUTTING_DOWN);
    expect(ctx.engine.participantCount()).toBe(0);
    expect(ctx.service.streamCount()).toBe(0);
  });
});

test("SeqWindow resynchronises on a sender that restarted its numbering", () => {
  const w = new SeqWindow(64);
  expect(w.accept(100_000)).toBe("ok");
  let verdicts: string[] = [];
  for (let i = 0; i < 30; i++) verdicts.push(w.accept(i));
  expect(verdicts.slice(0, 25).every((v) => v === "late")).toBe(true);
  expect(verdicts.at(-1)).toBe("ok");
  verdicts = [];
});
