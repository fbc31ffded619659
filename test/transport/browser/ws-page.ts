/**
 * Runs in Chromium (bundled with `bun build --target browser`): stock js-libp2p with @libp2p/websockets,
 * noise with its default browser crypto and yamux, nothing of agora-node's own transport code. It dials the
 * node's /ws address, pings it and pushes a large message over the bulk test protocol (see ../../relay/bulk.ts).
 */
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { webSockets } from "@libp2p/websockets";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { readAll } from "../../../src/p2p/stream-util";

const BULK_PROTOCOL = "/agora-test/bulk/1.0.0";
const CHUNK = 16 * 1024;

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic bytes so the test can compute the same digest without moving them across. */
function pattern(size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = 0x12345678;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

async function run(addr: string, bulkBytes: number) {
  const node = await createLibp2p({
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { ping: ping() },
    // A browser libp2p refuses private addresses by default; the test node is on loopback.
    connectionGater: { denyDialMultiaddr: () => false },
  });
  try {
    const t0 = performance.now();
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(20_000) });
    const connectMs = performance.now() - t0;
    const rttMs = await node.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(10_000) });
    const data = pattern(bulkBytes);
    const signal = AbortSignal.timeout(60_000);
    const t1 = performance.now();
    const stream = await conn.newStream(BULK_PROTOCOL, { signal });
    const reply = readAll(stream, 64, signal);
    reply.catch(() => undefined);
    for (let off = 0; off < data.byteLength; off += CHUNK) {
      if (!stream.send(data.subarray(off, off + CHUNK))) await stream.onDrain({ signal });
    }
    await stream.close({ signal });
    const remoteDigest = hex(await reply);
    const bulkMs = performance.now() - t1;
    const localDigest = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
    return { connectMs, rttMs, bulkMs, remoteDigest, localDigest, remotePeer: conn.remotePeer.toString() };
  } finally {
    await node.stop();
  }
}

/** Dial and ping only (a node that does not serve the bulk test protocol: the compiled binary). */
async function pingOnly(addr: string) {
  const node = await createLibp2p({
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { ping: ping(), identify: identify() },
    connectionGater: { denyDialMultiaddr: () => false },
  });
  try {
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(20_000) });
    const rttMs = await node.services.ping.ping(conn.remoteAddr, { signal: AbortSignal.timeout(10_000) });
    // identify runs by itself after the connection opens; wait (bounded) for its answer.
    let protocols: string[] = [];
    for (const deadline = performance.now() + 10_000; protocols.length === 0 && performance.now() < deadline; ) {
      protocols = (await node.peerStore.get(conn.remotePeer).catch(() => ({ protocols: [] as string[] }))).protocols;
      if (protocols.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    return { rttMs, remotePeer: conn.remotePeer.toString(), protocols };
  } finally {
    await node.stop();
  }
}

(globalThis as unknown as { agoraWsTest: typeof run }).agoraWsTest = run;
(globalThis as unknown as { agoraWsPing: typeof pingOnly }).agoraWsPing = pingOnly;
(globalThis as unknown as { agoraWsReady: boolean }).agoraWsReady = true;
