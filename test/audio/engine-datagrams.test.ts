/**
 * Voice datagrams carried by the media worker (WorkerMediaEngine with `datagrams`, src/audio/datagram-io.ts):
 * a real worker owns the UDP socket; raw clients on 127.0.0.1 seal and open datagrams as protocol.md says.
 * Checked on delivered audio and counters only, with bounded waits: a talker's datagrams reach a listener's
 * datagram mix (and not its stream sink once its reports rise), every bad datagram is dropped by reason,
 * and a worker restart re-binds the same port with the sessions re-installed: binding, replay window and a
 * datagram counter that never goes back (no nonce reuse). On the node's shared socket (`stun`) the worker
 * hands STUN's messages to the control thread and sends its requests: a StunService runs on that share,
 * sees no voice datagram, and keeps working across a worker restart.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { Registry } from "prom-client";
import type { AudioFrame, DatagramSyncCounts } from "../../src/audio";
import { createMediaEngine, createOpusCodec, type WorkerMediaEngine } from "../../src/audio";
import { STUN_PER_TICK, WorkerDatagramIO } from "../../src/audio/datagram-io";
import { silentLogger } from "../../src/log";
import {
  DatagramDirection,
  DatagramFlag,
  datagramKey,
  isStunMessage,
  openDatagram,
  parseDatagramHeader,
  sealDatagram,
} from "../../src/protocol";
import { encodeBindingRequest, StunService } from "../../src/stun";
import { fakeStunServer, honest } from "../stun/helpers";
import { db, goertzel, mediaSettings, toneFrame, waitFor } from "./media-helpers";

const codec = await createOpusCodec();
const engines: WorkerMediaEngine[] = [];
const cleanups: Array<() => void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  for (const e of engines.splice(0)) await e.stop();
});

async function startEngine(opts: { stun?: boolean } = {}): Promise<WorkerMediaEngine> {
  const engine = createMediaEngine({
    settings: mediaSettings(),
    logger: silentLogger(),
    registry: new Registry(),
    testHooks: true,
    heartbeatTimeoutMs: 10_000,
    datagrams: { hostname: "127.0.0.1", port: 0, ...(opts.stun ? { stun: true } : {}) },
  } as never) as WorkerMediaEngine;
  engines.push(engine);
  await engine.start();
  return engine;
}

/** A participant's datagram end: its own socket, counter, and what it opened from the mixer. */
class RawClient {
  counter = 0;
  readonly key = randomBytes(32);
  readonly sessionId = randomBytes(4).readUInt32BE(0) || 1;
  readonly frames: AudioFrame[] = [];
  /** counters of every authenticated datagram from the mixer, in arrival order */
  readonly rxCounters: number[] = [];
  received = 0;
  private constructor(
    readonly socket: import("bun").udp.Socket<"uint8array">,
    readonly mixerPort: number,
  ) {}

  static async open(mixerPort: number): Promise<RawClient> {
    let c: RawClient | undefined;
    const socket = await Bun.udpSocket({
      hostname: "127.0.0.1",
      port: 0,
      binaryType: "uint8array",
      // ICMP port unreachable while the mixer's worker restarts: nothing to do, as a client
      socket: { data: (_s, data) => c?.onDatagram(data), error() {} },
    });
    c = new RawClient(socket, mixerPort);
    cleanups.push(() => socket.close());
    return c;
  }

  seal(flags: number, seq: number, payload: Uint8Array, counter = this.counter++, key: Uint8Array = this.key): Uint8Array {
    return sealDatagram(
      datagramKey(key),
      DatagramDirection.CLIENT_TO_SERVER,
      { flags, sessionId: this.sessionId, counter, seq, timestamp: (seq * 960) >>> 0 },
      payload,
    );
  }

  send(bytes: Uint8Array): void {
    this.socket.send(bytes, this.mixerPort, "127.0.0.1");
  }

  private onDatagram(data: Uint8Array): void {
    const h = parseDatagramHeader(data);
    if (typeof h === "string" || h.sessionId !== this.sessionId) return;
    const plain = openDatagram(datagramKey(this.key), DatagramDirection.SERVER_TO_CLIENT, data, h.counter);
    if (!plain) return;
    this.received++;
    this.rxCounters.push(h.counter);
    if ((h.flags & DatagramFlag.KEEPALIVE) === 0) this.frames.push({ seq: h.seq, timestamp: h.timestamp, payload: plain });
  }
}

/** A 440 Hz talker sending one datagram every 20 ms; the listener reports what it received, as a client does. */
function talkAndReport(engine: WorkerMediaEngine, talker: RawClient, listener: RawClient) {
  const enc = codec.encoder(32000);
  let k = 0;
  const sendTimer = setInterval(() => {
    talker.send(talker.seal(DatagramFlag.VOICE, k, enc.encode(toneFrame(440, k))));
    k++;
  }, 20);
  const reportTimer = setInterval(() => {
    engine.datagrams!.report(listener.sessionId, listener.received);
    engine.datagrams!.report(talker.sessionId, talker.received);
    // the listener's keepalive: it binds, and keeps its mapping
    listener.send(listener.seal(DatagramFlag.KEEPALIVE, 0, new Uint8Array(0)));
  }, 250);
  cleanups.push(() => {
    clearInterval(sendTimer);
    clearInterval(reportTimer);
    enc.destroy();
  });
}

function heardDb(frames: AudioFrame[], hz: number, lastN = 25): number {
  const dec = codec.decoder();
  const pcm = frames.map((f) => dec.decode(f.payload));
  dec.destroy();
  const tail = pcm.slice(-lastN);
  const all = new Int16Array(tail.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of tail) {
    all.set(p, o);
    o += p.length;
  }
  return db(goertzel(all, hz));
}

async function setupRoom(opts: { stun?: boolean } = {}) {
  const engine = await startEngine(opts);
  const plane = engine.datagrams!;
  expect(plane.port).toBeGreaterThan(0);
  const talker = await RawClient.open(plane.port);
  const listener = await RawClient.open(plane.port);
  const streamed = new Map<string, AudioFrame[]>([
    ["talker", []],
    ["listener", []],
  ]);
  engine.join("r", "talker", (f) => streamed.get("talker")!.push(f));
  engine.join("r", "listener", (f) => streamed.get("listener")!.push(f));
  plane.install("r", "talker", { sessionId: talker.sessionId, key: talker.key, trustVoice: true });
  plane.install("r", "listener", { sessionId: listener.sessionId, key: listener.key, trustVoice: true });
  const counts: DatagramSyncCounts[] = [];
  cleanups.push(plane.onSync((c) => counts.push(c)));
  const dropped = (reason: string) => counts.reduce((n, c) => n + (c.dropped[reason] ?? 0), 0);
  return { engine, plane, talker, listener, streamed, dropped };
}

describe("voice datagrams in the media worker", () => {
  test("a talker's datagrams reach the listener's datagram mix; once its reports rise, the stream carries nothing", async () => {
    const { engine, plane, talker, listener, streamed } = await setupRoom();
    talkAndReport(engine, talker, listener);
    expect(await waitFor(() => (plane.state(talker.sessionId)?.received ?? 0) > 25, 15_000)).toBe(true);
    expect(plane.state(talker.sessionId)?.bound).toBe(true);
    // before any report the listener's frames go by stream (with datagram probes); then by datagram only
    expect(await waitFor(() => listener.frames.length > 50, 15_000)).toBe(true);
    const streamedBefore = streamed.get("listener")!.length;
    const datagramsBefore = listener.frames.length;
    expect(await waitFor(() => listener.frames.length > datagramsBefore + 50, 15_000)).toBe(true);
    // a few in flight while the policy switched; not a stream of them
    expect(streamed.get("listener")!.length - streamedBefore).toBeLessThan(10);
    expect(heardDb(listener.frames, 440)).toBeGreaterThan(20);
    // the listener's mix frames arrived in seq order per counter: counters strictly rise
    for (let i = 1; i < listener.rxCounters.length; i++) expect(listener.rxCounters[i]!).toBeGreaterThan(listener.rxCounters[i - 1]!);
  }, 60_000);

  test("bad datagrams are dropped by reason before decoding; the talker's audio goes on", async () => {
    const { engine, talker, listener, dropped } = await setupRoom();
    talkAndReport(engine, talker, listener);
    expect(await waitFor(() => listener.frames.length > 10, 15_000)).toBe(true);
    const stranger = await RawClient.open(engine.datagrams!.port);
    const opus = new Uint8Array([0xf8, 1, 2, 3]);
    talker.send(talker.seal(0, 1, opus, 1_000_000, randomBytes(32))); // wrong key
    talker.send(talker.seal(0, 1, opus, 0)); // replayed (counter 0 was the first voice datagram)
    talker.send(new Uint8Array(10)); // truncated
    talker.send(new Uint8Array(2000)); // oversize
    const badVersion = talker.seal(0, 1, opus, 2_000_000);
    badVersion[0] = 0xa2;
    talker.send(badVersion);
    stranger.send(stranger.seal(0, 1, opus)); // a session nobody installed
    // the talker's session, from another source after binding
    const fromElsewhere = await RawClient.open(engine.datagrams!.port);
    fromElsewhere.send(
      sealDatagram(
        datagramKey(talker.key),
        DatagramDirection.CLIENT_TO_SERVER,
        { flags: 0, sessionId: talker.sessionId, counter: 3_000_000, seq: 1, timestamp: 0 },
        opus,
      ),
    );
    for (const reason of ["auth_failed", "replayed", "truncated", "oversize", "bad_version", "unknown_session", "unbound_source"])
      expect({ reason, seen: await waitFor(() => dropped(reason) >= 1, 10_000) }).toEqual({ reason, seen: true });
    const before = listener.frames.length;
    expect(await waitFor(() => listener.frames.length > before + 25, 10_000)).toBe(true);
    expect(heardDb(listener.frames, 440)).toBeGreaterThan(20);
  }, 60_000);

  test("a worker restart re-binds the same port and re-installs the sessions: binding, replay window and counters carry on", async () => {
    const { engine, plane, talker, listener, dropped } = await setupRoom();
    talkAndReport(engine, talker, listener);
    expect(await waitFor(() => listener.frames.length > 25 && (plane.state(listener.sessionId)?.bound ?? false), 15_000)).toBe(true);
    const port = plane.port;
    // a sync has carried the counters the worker reached
    expect(await waitFor(() => (plane.state(talker.sessionId)?.received ?? 0) > 25, 10_000)).toBe(true);
    const lastCounterBefore = listener.rxCounters.at(-1)!;
    const countBefore = listener.rxCounters.length;
    await engine.crashWorker("throw");
    expect(await waitFor(() => engine.workerRestarts === 1, 15_000)).toBe(true);
    expect(plane.port).toBe(port);
    expect(await waitFor(() => listener.rxCounters.length > countBefore + 25, 20_000)).toBe(true);
    // every datagram after the restart has a counter above every one before it: the nonce never repeats
    const after = listener.rxCounters.slice(countBefore);
    expect(after.filter((c) => c <= lastCounterBefore)).toEqual([]);
    // the talker's datagrams are still accepted from its bound address (binding and window restored) ...
    const received = plane.state(talker.sessionId)!.received;
    expect(await waitFor(() => plane.state(talker.sessionId)!.received > received + 25, 10_000)).toBe(true);
    // ... and an old counter replayed after the restart is refused
    talker.send(talker.seal(0, 1, new Uint8Array([0xf8, 1, 2]), 1));
    expect(await waitFor(() => dropped("replayed") + dropped("too_old") >= 1, 10_000)).toBe(true);
    expect(heardDb(listener.frames, 440)).toBeGreaterThan(20);
  }, 60_000);
});

describe("the node's shared UDP socket in the media worker (STUN beside voice)", () => {
  /** A StunService on the control thread's share of the worker's socket, against an honest server. */
  async function stunOn(engine: WorkerMediaEngine) {
    const server = await fakeStunServer(honest);
    cleanups.push(() => server.close());
    const socket = engine.datagrams!.socket!;
    const seen: Uint8Array[] = [];
    cleanups.push(socket.onDatagram((d) => seen.push(d)));
    const service = new StunService({
      servers: [server.label],
      listenAddr: "127.0.0.1",
      listenPort: 0,
      endpoint: socket,
      logger: silentLogger(),
      registry: new Registry(),
      intervalMs: 300_000,
      // a busy machine: the first wait is long enough that a tick's batch is never taken for a loss
      rtoMs: 1_000,
      retransmits: 3,
    });
    cleanups.push(() => void service.stop());
    return { server, service, seen };
  }

  test("STUN learns the worker socket's mapping; voice datagrams never reach the control thread", async () => {
    const { engine, plane, talker, listener } = await setupRoom({ stun: true });
    expect(plane.socket?.local).toEqual({ address: "127.0.0.1", port: plane.port });
    const { server, service, seen } = await stunOn(engine);
    talkAndReport(engine, talker, listener);
    await service.start();
    const r = await service.refresh();
    // the request left from the worker's socket (the server saw its port), the answer was handed back
    expect(r.servers[0]).toMatchObject({ ok: true, address: "127.0.0.1", port: plane.port });
    expect(r).toMatchObject({ public_address: "127.0.0.1", public_port: plane.port, local_port: plane.port });
    expect(server.requests).toBeGreaterThanOrEqual(1);
    // voice flows on the same socket meanwhile, and none of it crossed
    expect(await waitFor(() => listener.frames.length > 25, 15_000)).toBe(true);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    expect(seen.every(isStunMessage)).toBe(true);
    expect(heardDb(listener.frames, 440)).toBeGreaterThan(20);
  }, 60_000);

  test("after a worker restart the re-bound socket carries STUN again", async () => {
    const { engine, plane } = await setupRoom({ stun: true });
    const { service } = await stunOn(engine);
    await service.start();
    expect((await service.refresh()).servers[0]!.ok).toBe(true);
    const port = plane.port;
    await engine.crashWorker("throw");
    expect(await waitFor(() => engine.workerRestarts === 1, 15_000)).toBe(true);
    expect(plane.port).toBe(port);
    // a transaction may start while the replacement still binds: it retransmits; a second round if not
    let ok = false;
    const deadline = Date.now() + 30_000;
    while (!ok && Date.now() < deadline) ok = (await service.refresh()).servers[0]!.ok && service.report().servers[0]!.port === port;
    expect(ok).toBe(true);
  }, 90_000);

  test("STUN messages are handed over in batches of at most STUN_PER_TICK a tick; beyond, stun_overflow", async () => {
    const io = new WorkerDatagramIO(() => true);
    await io.bind({ hostname: "127.0.0.1", port: 0, stun: true });
    cleanups.push(() => io.close());
    const request = encodeBindingRequest(new Uint8Array(12).fill(7));
    for (let i = 0; i < STUN_PER_TICK + 10; i++) io.onDatagram(request, 4000 + i, "127.0.0.9");
    const batch = io.takeStun()!;
    expect(batch.length).toBe(STUN_PER_TICK * 3);
    expect(batch.slice(0, 3)).toEqual([request, 4000, "127.0.0.9"]);
    expect(io.takeStun()).toBeUndefined();
    expect(io.sync().dropped).toEqual({ stun_overflow: 10 });
    // without `stun` (a voice-only port) the same message is just a bad datagram
    const voiceOnly = new WorkerDatagramIO(() => true);
    await voiceOnly.bind({ hostname: "127.0.0.1", port: 0 });
    cleanups.push(() => voiceOnly.close());
    voiceOnly.onDatagram(request, 4000, "127.0.0.9");
    expect(voiceOnly.takeStun()).toBeUndefined();
    expect(voiceOnly.sync().dropped).toEqual({ truncated: 1 }); // 28 bytes: below a keepalive
  });
});
