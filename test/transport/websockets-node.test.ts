/**
 * The compiled binary with network.ws_port set: its /ws address is in its listen addresses, a Bun
 * participant whose libp2p dials only WebSocket joins a room and is heard by a TCP participant, and raw
 * WebSocket garbage and a message above the limit are closed and counted in
 * agora_ws_connections_rejected_total{reason} while both participants stay joined.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createServer } from "node:net";
import { identify } from "@libp2p/identify";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { webSockets } from "@libp2p/websockets";
import { createLibp2p } from "libp2p";
import { AudioSession, createClientNode, discover, FRAME_SAMPLES, loadOpusCodec, SAMPLE_RATE } from "../../src/client";
import type { AudioFrame } from "../../src/protocol";
import { agoraTransportStack, WS_MAX_MESSAGE_BYTES } from "../../src/transport";
import { eventually, freePort, type NodeHandle, startNode } from "../helpers/node-process";

let node: NodeHandle;
let wsPort: number;
let wsClient: Libp2p;
let tcpClient: Libp2p;

beforeAll(async () => {
  wsPort = await freePort();
  node = await startNode({ env: { AGORA_NETWORK_WS_PORT: String(wsPort) } });
  const stack = agoraTransportStack();
  // WebSocket only: this participant cannot reach the node any other way.
  wsClient = await createLibp2p({
    addresses: { listen: [] },
    ...stack,
    transports: [webSockets()],
    services: { identify: identify(), ping: ping() },
  });
  tcpClient = await createClientNode();
}, 60_000);

afterAll(async () => {
  await wsClient?.stop();
  await tcpClient?.stop();
  node?.cleanup();
});

async function metric(reason: string): Promise<number> {
  const text = await (await fetch(node.metricsUrl)).text();
  const m = text.match(new RegExp(`^agora_ws_connections_rejected_total\\{reason="${reason}"\\} (\\d+)`, "m"));
  return m ? Number(m[1]) : Number.NaN;
}

function rawClosed(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("raw websocket failed to open"));
  });
}

test("a WebSocket-only participant joins a room and is heard; bad WebSocket input is counted and harms nobody", async () => {
  const status = (await (await fetch(`${node.dashboardUrl}/api/status`)).json()) as { network?: { listen_addrs?: string[] } };
  const listen = status.network?.listen_addrs ?? [];
  const wsAddr = listen.find((a) => a.includes(`/tcp/${wsPort}/ws`));
  expect(wsAddr).toBeDefined();
  expect(await metric("frame_too_large")).toBe(0);

  const heard: AudioFrame[] = [];
  const ended: string[] = [];
  const talker = await AudioSession.open({
    libp2p: wsClient,
    target: wsAddr!,
    room: "ws-room",
    name: "browserish",
    onClose: () => ended.push("talker"),
  });
  const listener = await AudioSession.open({
    libp2p: tcpClient,
    target: await node.multiaddr(),
    room: "ws-room",
    name: "cli",
    onAudio: (f) => heard.push(f),
    onClose: () => ended.push("listener"),
  });
  expect(wsClient.getConnections()[0]!.remoteAddr.toString()).toContain("/ws");
  expect(talker.joined.participantId).not.toBe(listener.joined.participantId);

  const codec = await loadOpusCodec();
  const enc = codec.encoder(32_000);
  let seq = 0;
  const talk = setInterval(() => {
    const pcm = new Int16Array(FRAME_SAMPLES);
    for (let i = 0; i < pcm.length; i++)
      pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * (seq * FRAME_SAMPLES + i)) / SAMPLE_RATE));
    talker.sendAudio({ seq, timestamp: (seq * FRAME_SAMPLES) >>> 0, payload: enc.encode(pcm) });
    seq++;
    if (seq % 5 === 0) listener.ping();
  }, 20);
  try {
    await eventually(() => heard.length >= 10, 15_000, "the TCP participant hears the WebSocket participant");

    // Bad input on the same listener while the call goes on.
    const big = await rawClosed();
    big.send(new Uint8Array(WS_MAX_MESSAGE_BYTES + 1));
    const garbage = await rawClosed();
    garbage.send(new TextEncoder().encode("not multistream-select at all\n".repeat(64)));
    await eventually(async () => (await metric("frame_too_large")) === 1, 15_000, "frame_too_large counted");
    await eventually(async () => (await metric("handshake_failed")) + (await metric("handshake_timeout")) >= 1, 15_000, "garbage counted");

    const before = heard.length;
    await eventually(() => heard.length >= before + 10, 15_000, "audio still flows after the bad input");
    expect(ended).toEqual([]);
  } finally {
    clearInterval(talk);
    enc.destroy();
  }
  await talker.leave();
  await listener.leave();
}, 90_000);

test("the /ws address is in the node's signed DHT advertisement, so discovery hands it to browsers", async () => {
  const peerId = await node.peerId();
  const found = await eventually(
    async () => {
      const nodes = await discover({ bootstrap: [await node.multiaddr()], region: "default", timeoutMs: 5_000 }).catch(() => []);
      return nodes.find((n) => n.advertisement.peer_id === peerId);
    },
    30_000,
    "the node found by discovery",
  );
  expect(found.advertisement.listen_addr).toContainEqual(expect.stringContaining(`/tcp/${wsPort}/ws`));
}, 60_000);

test("a WebSocket port already in use stops the start with an error naming network.ws_port", async () => {
  const port = await freePort();
  const blocker = createServer().listen(port, "127.0.0.1");
  await new Promise((resolve) => blocker.once("listening", resolve));
  const h = await startNode({ env: { AGORA_NETWORK_WS_PORT: String(port) }, waitHealthy: false });
  try {
    expect(await h.exited).not.toBe(0);
    expect(h.logs()).toContain(`network.ws_port ${port} on 127.0.0.1 is in use`);
  } finally {
    h.cleanup();
    blocker.close();
  }
}, 60_000);
