/**
 * The participant SDK's entry point (src/client/index.ts): importable without a node, and joinRoom()'s
 * RoomConnection sends and receives PCM and Opus with the events it documents.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { AudioRemoteError, FRAME_SAMPLES, joinRoom, type RoomConnection, WireErrorCode } from "../../src/client";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { AudioRoomService } from "../../src/rooms";
import {
  createBareClientNode,
  createFakeCodec,
  createServerNode,
  db,
  FakeMediaEngine,
  goertzelPower,
  OPUS_TOC_20MS,
  tone,
  waitFor,
} from "../helpers/net-fakes";

const repo = join(import.meta.dir, "..", "..");

test("importing the SDK loads no part of the node (only client, access, protocol, transport, errors, log)", () => {
  const probe = `
    await import(${JSON.stringify(join(repo, "src/client/index.ts"))});
    const ours = Object.keys(require.cache).filter((k) => k.startsWith(${JSON.stringify(`${join(repo, "src")}/`)}));
    console.log(JSON.stringify(ours.map((k) => k.slice(${JSON.stringify(`${join(repo, "src")}/`)}.length).split("/")[0])));
  `;
  const r = Bun.spawnSync([process.execPath, "-e", probe], { cwd: repo, timeout: 30_000 });
  expect(r.exitCode).toBe(0);
  const subsystems = [...new Set(JSON.parse(r.stdout.toString()) as string[])].sort();
  expect(subsystems).toEqual(["access", "client", "errors", "log", "protocol", "transport"]);
});

describe("joinRoom", () => {
  let node: Libp2p;
  let addr: Multiaddr;
  let engine: FakeMediaEngine;
  let service: AudioRoomService;
  // One dialing node for most joins: libp2p accepts at most 5 new inbound connections per second from one
  // address (connectionManager.inboundConnectionThreshold), and each private node is a new connection.
  let client: Libp2p;

  beforeAll(async () => {
    client = await createBareClientNode();
    ({ node, addr } = await createServerNode());
    engine = new FakeMediaEngine();
    service = new AudioRoomService({ libp2p: node, engine, registry: new Registry(), logger: silentLogger() });
    await service.start();
  });
  afterAll(async () => {
    await client.stop();
    await service.stop();
    await node.stop();
  });

  test("PCM sent by one participant arrives decoded at the other; leave emits `left` without an error", async () => {
    const codec = createFakeCodec();
    const a = await joinRoom({ node: addr, room: "sdk-pcm", name: "alice", codec });
    const b = await joinRoom({ node: addr, room: "sdk-pcm", name: "bob", codec, decode: true });
    expect(a.participantId).not.toBe(b.participantId);
    expect(a.joined.bitrate).toBeGreaterThan(0);
    const heard: Int16Array[] = [];
    let opusFrames = 0;
    b.on("pcm", (e) => heard.push(e.pcm));
    b.on("audio", () => opusFrames++);
    const left: (AgoraError | undefined)[] = [];
    a.on("left", (e) => left.push(e.error));

    const signal = tone(440, 0.2);
    for (let k = 0; k < signal.length / FRAME_SAMPLES; k++) {
      expect(await a.sendPcm(signal.subarray(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES))).toBe(true);
    }
    await waitFor(() => heard.length >= 10, "10 decoded frames at bob");
    expect(opusFrames).toBe(heard.length);
    const got = new Int16Array(heard.length * FRAME_SAMPLES);
    for (const [i, f] of heard.entries()) got.set(f, i * FRAME_SAMPLES);
    expect(db(goertzelPower(got, 440) / goertzelPower(got, 1000))).toBeGreaterThan(26);

    // What alice sent is numbered by the SDK: consecutive seq, timestamps 960 apart.
    const sent = engine.pushed.filter((p) => p.participant === a.participantId).map((p) => p.frame);
    expect(sent.length).toBe(10);
    for (let i = 1; i < sent.length; i++) {
      expect(sent[i]!.seq).toBe((sent[i - 1]!.seq + 1) >>> 0);
      expect(sent[i]!.timestamp).toBe((sent[i - 1]!.timestamp + FRAME_SAMPLES) >>> 0);
    }

    await a.leave();
    expect(left).toEqual([undefined]);
    expect(a.isOpen).toBe(false);
    expect(a.sendOpus(new Uint8Array([1, 2, 3]))).toBe(false);
    await waitFor(() => engine.leaves.includes(a.participantId), "the server saw alice leave");
    await b.leave();
  });

  test("a refused JOIN rejects with AudioRemoteError carrying the server's code", async () => {
    service.setDraining(true);
    try {
      let err: unknown;
      try {
        await joinRoom({ node: addr, room: "sdk-refused", codec: createFakeCodec(), libp2p: client });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AudioRemoteError);
      expect((err as AudioRemoteError).wireCode).toBe(WireErrorCode.DRAINING);
      expect((err as AudioRemoteError).retryable).toBe(true);
    } finally {
      service.setDraining(false);
    }
  });

  test("bad arguments are typed USAGE errors naming what is wrong", async () => {
    const room = await joinRoom({ node: addr, room: "sdk-usage", codec: createFakeCodec(), libp2p: client });
    try {
      await expect(room.sendPcm(new Int16Array(100))).rejects.toThrow(/expected 960 samples/);
      await expect(joinRoom({ node: addr, room: "bad room!", codec: createFakeCodec() })).rejects.toMatchObject({ code: "USAGE" });
      await expect(joinRoom({ node: "not-a-multiaddr", room: "x", codec: createFakeCodec() })).rejects.toBeInstanceOf(AgoraError);
    } finally {
      await room.leave();
    }
  });

  test("a throwing listener neither ends the session nor starves other listeners", async () => {
    const codec = createFakeCodec();
    const a = await joinRoom({ node: addr, room: "sdk-throw", codec, libp2p: client });
    const listenerErrors: string[] = [];
    const b: RoomConnection = await joinRoom({
      node: addr,
      room: "sdk-throw",
      codec,
      libp2p: client,
      onListenerError: (event, err) => listenerErrors.push(`${String(event)}: ${(err as Error).message}`),
    });
    let seen = 0;
    b.on("audio", () => {
      throw new Error("listener bug");
    });
    b.on("audio", () => seen++);
    for (let i = 0; i < 5; i++) a.sendOpus(Uint8Array.from({ length: 160 }, (_, j) => (j === 0 ? OPUS_TOC_20MS : i + 1)));
    await waitFor(() => seen >= 5, "5 frames at the second listener");
    expect(b.isOpen).toBe(true);
    expect(listenerErrors.length).toBe(seen);
    expect(listenerErrors[0]).toBe("audio: listener bug");
    await a.leave();
    await b.leave();
    expect(client.status).toBe("started"); // a shared node is the caller's: leave() does not stop it
  });
});
