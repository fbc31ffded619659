import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import type { AudioFrame } from "../../src/audio";
import { AudioSession, type VoiceTransport } from "../../src/client";
import { silentLogger } from "../../src/log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOL_1_1,
  Capability,
  DatagramDirection,
  DatagramFlag,
  datagramKey,
  encodeMessage,
  MAX_DATAGRAM_BYTES,
  sealDatagram,
  type UdpOffer,
} from "../../src/protocol";
import { AudioRoomService, UdpVoiceEndpoint } from "../../src/rooms";
import { bindUdp, type UdpEndpoint } from "../../src/stun";
import {
  createBareClientNode,
  createServerNode,
  FakeMediaEngine,
  metricValue,
  OPUS_TOC_20MS,
  openRaw,
  waitFor,
} from "../helpers/net-fakes";

setDefaultTimeout(30_000);

const DROPPED = "agora_audio_udp_dropped_total";

interface Ctx {
  server: Libp2p;
  addr: Multiaddr;
  client: Libp2p;
  engine: FakeMediaEngine;
  registry: Registry;
  service: AudioRoomService;
  socket: UdpEndpoint;
  udp: UdpVoiceEndpoint;
  sessions: AudioSession[];
}

let ctx: Ctx | undefined;

async function setup(): Promise<Ctx> {
  const { node: server, addr } = await createServerNode();
  const client = await createBareClientNode();
  const engine = new FakeMediaEngine();
  const registry = new Registry();
  const socket = await bindUdp("127.0.0.1", 0);
  const udp = new UdpVoiceEndpoint({ endpoint: socket, registry, logger: silentLogger() });
  const service = new AudioRoomService({
    libp2p: server,
    engine,
    registry,
    logger: silentLogger(),
    udp,
    limits: { idleTimeoutMs: 60_000 },
  });
  await service.start();
  return { server, addr, client, engine, registry, service, socket, udp, sessions: [] };
}

afterEach(async () => {
  const c = ctx;
  ctx = undefined;
  if (!c) return;
  for (const s of c.sessions) s.abort("test over");
  await c.service.stop();
  c.socket.close();
  await c.client.stop();
  await c.server.stop();
});

function frame(seq: number): AudioFrame {
  const payload = new Uint8Array(40).fill(seq & 0xff);
  payload[0] = OPUS_TOC_20MS;
  return { seq, timestamp: (seq * 960) >>> 0, payload };
}

async function join(c: Ctx, room: string, opts: { protocol?: string; transport?: VoiceTransport; openDatagrams?: boolean } = {}) {
  const received: AudioFrame[] = [];
  const session = await AudioSession.open({
    libp2p: c.client,
    target: c.addr,
    room,
    onAudio: (f) => received.push(f),
    ...(opts.protocol ? { protocol: opts.protocol } : {}),
    ...(opts.transport ? { transport: opts.transport } : {}),
    ...(opts.openDatagrams !== undefined ? { openDatagrams: opts.openDatagrams } : {}),
  });
  c.sessions.push(session);
  return { session, received };
}

/** Sends a frame every 20 ms from `talker` until stopped. */
function talk(session: AudioSession, from = 0) {
  let seq = from;
  const timer = setInterval(() => session.sendAudio(frame(seq++)), 20);
  return {
    stop: () => clearInterval(timer),
    get seq() {
      return seq;
    },
  };
}

describe("voice datagrams through AudioRoomService", () => {
  test("a 1.1.0 client goes over UDP both ways; a 1.0.0 client in the same room stays on the stream; both hear each other", async () => {
    ctx = await setup();
    const c = ctx;
    const udpClient = await join(c, "r1");
    const oldClient = await join(c, "r1", { protocol: AUDIO_PROTOCOL });
    expect(udpClient.session.datagramsOffered).toBe(true);
    expect(udpClient.session.joined.udp?.port).toBe(c.socket.local.port);
    expect(oldClient.session.datagramsOffered).toBe(false);
    expect(oldClient.session.wireVersion).toBe(1);
    const a = talk(udpClient.session);
    const b = talk(oldClient.session, 10_000);
    try {
      await waitFor(() => udpClient.session.uplinkPath === "udp", "the 1.1.0 client's uplink to switch to datagrams");
      await waitFor(() => udpClient.session.datagramStats.received > 20, "mix frames by datagram to the 1.1.0 client");
      const seenBy = (r: AudioFrame[], min: number) => r.filter((f) => f.seq >= min).length;
      await waitFor(() => seenBy(oldClient.received, 0) > 30 && seenBy(udpClient.received, 10_000) > 30, "both clients to hear each other");
    } finally {
      a.stop();
      b.stop();
    }
    expect(await metricValue(c.registry, "agora_audio_udp_received_total")).toBeGreaterThan(20);
    expect(await metricValue(c.registry, "agora_audio_udp_sent_total")).toBeGreaterThan(20);
    // frames that came both ways during the switch reached the engine once
    const pushedSeqs = c.engine.pushed.filter((p) => p.participant === udpClient.session.participantId).map((p) => p.frame.seq);
    expect(new Set(pushedSeqs).size).toBe(pushedSeqs.length);
    const heard = udpClient.received.map((f) => f.seq);
    expect(new Set(heard).size).toBe(heard.length);
  });

  test("openDatagrams false (a load generator's silent participant): mix frames counted and delivered by header, unopened", async () => {
    ctx = await setup();
    const c = ctx;
    const talker = await join(c, "r5");
    const counter = await join(c, "r5", { openDatagrams: false });
    const a = talk(talker.session);
    const b = talk(counter.session, 10_000);
    try {
      await waitFor(() => counter.session.datagramStats.received > 30, "mix datagrams to the header-counting client");
      await waitFor(() => talker.session.datagramStats.received > 30, "mix datagrams to the talker");
      // Until the client's first UDP_REPORT the mixer sends every frame both ways (protocol.md, "Choosing the
      // path"), and the stream's copy may come first; after it, the mix comes by datagram alone.
      await waitFor(
        () => counter.received.length >= 20 && counter.received.slice(-20).every((f) => f.payload.length === 0),
        "the mix by datagram alone, delivered by header",
      );
    } finally {
      a.stop();
      b.stop();
    }
    const byDatagram = counter.received.slice(-20);
    // delivered by the clear header: consecutive seqs, no payload (nothing was decrypted)
    expect(byDatagram.every((f) => f.payload.length === 0)).toBe(true);
    for (let i = 1; i < byDatagram.length; i++) expect(byDatagram[i]!.seq).toBe((byDatagram[i - 1]!.seq + 1) >>> 0);
    // the default opens them: the mix's Opus packets
    expect(talker.received.slice(-20).every((f) => f.payload.length > 0)).toBe(true);
    // the count the session reports still rises, so the mixer keeps it on datagrams
    expect(counter.session.datagramStats.dropped).toBe(0);
  });

  test("transport stream keeps a 1.1.0 session on the stream (no offer)", async () => {
    ctx = await setup();
    const s = await join(ctx, "r2", { transport: "stream" });
    expect(s.session.wireVersion).toBe(2);
    expect(s.session.joined.udp).toBeUndefined();
    expect(s.session.datagramsOffered).toBe(false);
  });

  test("transport udp fails to open where no datagrams are offered (1.0.0, or a server without them)", async () => {
    ctx = await setup();
    await expect(join(ctx, "r4", { protocol: AUDIO_PROTOCOL, transport: "udp" })).rejects.toThrow(/no voice datagrams/);
    const { node: server, addr } = await createServerNode();
    const service = new AudioRoomService({
      libp2p: server,
      engine: new FakeMediaEngine(),
      registry: new Registry(),
      logger: silentLogger(),
    });
    await service.start();
    try {
      await expect(AudioSession.open({ libp2p: ctx.client, target: addr, room: "r4", transport: "udp" })).rejects.toThrow(
        /did not offer voice datagrams/,
      );
      const auto = await AudioSession.open({ libp2p: ctx.client, target: addr, room: "r4" });
      expect(auto.datagramsOffered).toBe(false);
      auto.abort("done");
    } finally {
      await service.stop();
      await server.stop();
    }
  });

  test("every kind of bad datagram is dropped, counted by reason, and an honest client keeps sending", async () => {
    ctx = await setup();
    const c = ctx;
    const raw = await openRaw(c.client, c.addr, AUDIO_PROTOCOL_1_1);
    raw.send(encodeMessage({ type: "JOIN", version: 2, room: "r3", name: "", capabilities: Capability.UDP_DATAGRAMS }));
    await waitFor(() => raw.messages.some((m) => m.type === "JOINED"), "JOINED");
    const joined = raw.messages.find((m) => m.type === "JOINED");
    const offer = (joined as { udp?: UdpOffer }).udp!;
    expect(offer).toBeDefined();
    const key = datagramKey(offer.key);
    const me = await bindUdp("127.0.0.1", 0);
    const other = await bindUdp("127.0.0.1", 0);
    const to = { address: "127.0.0.1", port: offer.port };
    let counter = 0;
    const seal = (over: Partial<{ flags: number; sessionId: number; counter: number }> = {}, payload = frame(counter).payload) =>
      sealDatagram(
        key,
        DatagramDirection.CLIENT_TO_SERVER,
        { flags: DatagramFlag.VOICE, sessionId: offer.sessionId, counter: over.counter ?? counter++, seq: counter, timestamp: 0, ...over },
        payload,
      );
    const dropped = (reason: string) => metricValue(c.registry, DROPPED, { reason });
    const pushed = () => c.engine.pushed.length;
    try {
      // a valid one binds this socket as the session's source
      me.send(seal(), to);
      await waitFor(() => pushed() === 1, "the first datagram to reach the engine");
      const expectDrop = async (reason: string, send: () => void) => {
        const before = await dropped(reason);
        send();
        const deadline = performance.now() + 10_000;
        while ((await dropped(reason)) === before) {
          if (performance.now() > deadline) throw new Error(`no ${reason} drop counted`);
          await Bun.sleep(10);
        }
      };
      await expectDrop("truncated", () => me.send(new Uint8Array(10), to));
      await expectDrop("oversize", () => me.send(new Uint8Array(MAX_DATAGRAM_BYTES + 1).fill(0xa1), to));
      await expectDrop("bad_version", () => me.send(new Uint8Array(100).fill(0x55), to));
      await expectDrop("bad_flags", () => me.send(seal({ flags: 0x40 }), to));
      await expectDrop("unknown_session", () => me.send(seal({ sessionId: (offer.sessionId + 1) >>> 0 }), to));
      await expectDrop("unbound_source", () => other.send(seal(), to));
      const forged = seal();
      forged[forged.length - 1]! ^= 0xff;
      await expectDrop("auth_failed", () => me.send(forged, to));
      const replay = seal();
      me.send(replay, to);
      await waitFor(() => pushed() === 2, "the valid datagram before its replay");
      await expectDrop("replayed", () => me.send(replay, to));
      counter += 500;
      me.send(seal(), to);
      await waitFor(() => pushed() === 3, "a datagram far ahead");
      await expectDrop("too_old", () => me.send(seal({ counter: 10 }), to));
      await expectDrop("invalid_opus", () => me.send(seal({}, Uint8Array.of(0x00, 1, 2)), to));
      // a forged wrong-key datagram never reached the engine, nor did any of the others
      expect(pushed()).toBe(3);
      // flood from one source: beyond its bucket it is rate limited, not decrypted
      await expectDrop("rate_limited", () => {
        for (let i = 0; i < 400; i++) me.send(seal({ sessionId: 1 }), to);
      });
      expect(raw.isClosed()).toBe(false);
    } finally {
      me.close();
      other.close();
    }
  });

  test("a datagram the kernel refuses mid-batch costs only that recipient its frame", async () => {
    const delivered: string[] = [];
    let receiver: ((data: Uint8Array, from: { address: string; port: number }) => void) | undefined;
    const fake: UdpEndpoint = {
      local: { address: "127.0.0.1", port: 9 },
      send: () => {},
      // like sendmmsg: stops at the first refused datagram and says how many went out
      sendMany(packets) {
        for (let i = 0; i < packets.length; i += 3) {
          if (packets[i + 1] === 2) return i / 3;
          delivered.push(`${packets[i + 2]}:${packets[i + 1]}`);
        }
        return packets.length / 3;
      },
      onDatagram(r) {
        receiver = r;
        return () => {};
      },
      onError: () => () => {},
      close: () => {},
    };
    const registry = new Registry();
    const ep = new UdpVoiceEndpoint({ endpoint: fake, registry, logger: silentLogger() });
    ep.start();
    const sessions = [1, 2, 3].map((port) => {
      const s = ep.open({ onFrame: () => {}, onAlive: () => {} });
      const hello = sealDatagram(
        datagramKey(s.key),
        DatagramDirection.CLIENT_TO_SERVER,
        { flags: DatagramFlag.KEEPALIVE, sessionId: s.id, counter: 0, seq: 0, timestamp: 0 },
        new Uint8Array(0),
      );
      receiver!(hello, { address: "10.0.0.1", port });
      expect(s.bound?.port).toBe(port);
      return s;
    });
    for (const s of sessions) expect(ep.send(s, frame(1))).toBe(true);
    ep.flush();
    expect(delivered).toEqual(["10.0.0.1:1", "10.0.0.1:3"]);
    expect(await metricValue(registry, "agora_audio_udp_send_dropped_total")).toBe(1);
    ep.stop();
  });
});
