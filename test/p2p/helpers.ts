/** Loopback-only libp2p networks for the p2p and relay tests (ephemeral ports, temp data dirs, 127.0.0.1). */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p, MultiaddrConnection, PrivateKey, Stream, StreamMuxer } from "@libp2p/interface";
import { type KadDHT, kadDHT, passthroughMapper } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { ping } from "@libp2p/ping";
import { multiaddrConnectionPair } from "@libp2p/utils";
import { createLibp2p } from "libp2p";
import { Registry } from "prom-client";
import { type AgoraConfig, defaultConfig } from "../../src/config/schema";
import { silentLogger } from "../../src/log";
import {
  agoraTransportStack,
  createNetworkNode,
  type LoadFigures,
  type NetworkNode,
  type NetworkNodeInternals,
  PROTOCOL_DHT,
  type UnsignedAdvertisement,
} from "../../src/p2p";

export interface TestNodeOptions {
  mode?: AgoraConfig["node"]["mode"];
  region?: string;
  group?: string;
  labels?: string[];
  capabilities?: string[];
  bootstrap?: string[];
  /** network.announce_addrs */
  announce?: string[];
  heartbeat?: number;
  load?: Partial<LoadFigures>;
  relay?: Partial<AgoraConfig["relay"]>;
  internal?: NetworkNodeInternals;
  dataDir?: string;
  privateKey?: PrivateKey;
}

export interface TestNode {
  node: NetworkNode;
  registry: Registry;
  dataDir: string;
  config: AgoraConfig;
  load: LoadFigures;
  privateKey: PrivateKey;
  /** Multiaddr with /p2p/ of the loopback listener. */
  addr: string;
}

const dirs: string[] = [];

export function tempDir(prefix = "agora-p2p-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export function cleanupDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function testConfig(o: TestNodeOptions, dataDir: string): AgoraConfig {
  const c = defaultConfig();
  c.node.mode = o.mode ?? "dedicated";
  c.node.listen_addr = "127.0.0.1";
  c.node.region = o.region ?? "eu-west";
  c.node.group = o.group ?? "default";
  c.node.labels = o.labels ?? [];
  c.node.data_dir = dataDir;
  c.network.bootstrap_peers = o.bootstrap ?? [];
  c.network.announce_addrs = o.announce ?? [];
  c.network.heartbeat_interval = o.heartbeat ?? 0.5;
  c.network.enable_upnp = false;
  Object.assign(c.relay, o.relay ?? {});
  return c;
}

export async function startTestNode(o: TestNodeOptions = {}): Promise<TestNode> {
  const dataDir = o.dataDir ?? tempDir();
  const config = testConfig(o, dataDir);
  const registry = new Registry();
  const privateKey = o.privateKey ?? (await generateKeyPair("Ed25519"));
  const load: LoadFigures = { current_load: 0, max_clients: 100, cpu_percent: 10, mem_percent: 20, status: "online", ...o.load };
  const capabilities =
    o.capabilities ?? (config.node.mode === "dedicated" ? ["mixer"] : config.node.mode === "relay" ? ["relay"] : ["bootstrap"]);
  const node = createNetworkNode({
    config,
    privateKey,
    logger: silentLogger(),
    registry,
    dataDir,
    version: "0.1.0-test",
    capabilities,
    load: () => load,
    internal: {
      listenPort: 0,
      backoff: { baseMs: 100, capMs: 1_000 },
      // Every test node connects from 127.0.0.1: libp2p's default of 5 inbound connections/s per host is too few.
      inboundConnectionThreshold: 1_000,
      relayClient: "never",
      knownPeersSaveIntervalMs: 500,
      ...o.internal,
    },
  });
  await node.start();
  const addr = node.listenAddrs().find((a) => a.startsWith("/ip4/127.0.0.1/tcp/")) ?? "";
  return { node, registry, dataDir, config, load, privateKey, addr };
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 100): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await Bun.sleep(everyMs);
  }
}

export async function stopAll(nodes: (TestNode | undefined)[]): Promise<void> {
  await Promise.all(nodes.map((n) => n?.node.stop().catch(() => undefined)));
}

/** Value of one sample of a metric in the registry (undefined if absent). */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  if (!m) return undefined;
  const got = await m.get();
  const v = got.values.find((s) => Object.entries(labels).every(([k, val]) => String((s.labels as Record<string, unknown>)[k]) === val));
  return v?.value;
}

/**
 * A hostile DHT participant: a raw kad-dht client on Agora's protocol that accepts anything itself, so it
 * really sends out whatever records a test hands it. `put` answers how many peers accepted the record.
 */
export interface HostilePeer {
  libp2p: Libp2p<{ dht: KadDHT }>;
  key: PrivateKey;
  peerId: string;
  put(key: string, value: Uint8Array): Promise<number>;
  stop(): Promise<void>;
}

export async function createHostilePeer(): Promise<HostilePeer> {
  const key = await generateKeyPair("Ed25519");
  const libp2p: Libp2p<{ dht: KadDHT }> = await createLibp2p({
    privateKey: key,
    addresses: { listen: [] },
    ...agoraTransportStack(),
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: PROTOCOL_DHT,
        clientMode: true,
        peerInfoMapper: passthroughMapper,
        validators: { agora: async () => {} },
        selectors: { agora: () => 0 },
      }),
    },
  });
  return {
    libp2p,
    key,
    peerId: peerIdFromPrivateKey(key).toString(),
    async put(k, value) {
      let accepted = 0;
      for await (const ev of libp2p.services.dht.put(new TextEncoder().encode(k), value, { signal: AbortSignal.timeout(10_000) }))
        if (ev.name === "PEER_RESPONSE" && ev.messageName === "PUT_VALUE") accepted++;
      return accepted;
    },
    stop: async () => {
      await libp2p.stop();
    },
  };
}

/**
 * The record a hostile peer puts: fresh, zero load and the largest possible `seq`, so that it would win
 * every ranking and every selector if a DHT server accepted it. `over` changes any field.
 */
export function hostileAdvertisement(peer: string, over: Partial<UnsignedAdvertisement> = {}): UnsignedAdvertisement {
  return {
    peer_id: peer,
    version: "evil",
    region: "eu-west",
    capabilities: ["mixer"],
    max_clients: 1000,
    current_load: 0,
    uptime_seconds: 1e7,
    reputation: 1,
    last_seen: Date.now() / 1000,
    listen_addr: ["/ip4/6.6.6.6/tcp/1"],
    group: "default",
    labels: [],
    status: "online",
    cpu_percent: 0,
    mem_percent: 0,
    seq: Number.MAX_SAFE_INTEGER,
    ttl_seconds: 60,
    ...over,
  };
}

/** Byte variants of one signed record that all parse to the same content (so its signature still verifies). */
export function nonCanonicalVariants(canonical: string): Record<string, string> {
  const o = JSON.parse(canonical) as Record<string, unknown>;
  const reversed = Object.fromEntries(Object.entries(o).reverse());
  return {
    "whitespace padding": `${canonical}   `,
    "whitespace inside": JSON.stringify(o, null, 1),
    "duplicate key": `{"seq":${String(o.seq)},${canonical.slice(1)}`,
    "reordered fields": JSON.stringify(reversed),
    "number spelled differently": canonical.replace(`"max_clients":${String(o.max_clients)}`, `"max_clients":${String(o.max_clients)}.0`),
    "escaped character": canonical.replace('"region":"eu-west"', '"region":"eu\\u002dwest"'),
  };
}

type MuxerFactory = ReturnType<ReturnType<typeof agoraTransportStack>["streamMuxers"][number]>;

export interface YamuxLink {
  /** the opening side's connection, under its muxer (to watch what it sends) */
  nearConn: MultiaddrConnection;
  /** the accepting side's connection (to watch what it sends back: window updates) */
  farConn: MultiaddrConnection;
  /** opens streams */
  near: StreamMuxer;
  /** the next stream the far side received */
  nextFarStream(): Promise<Stream>;
  close(): void;
}

/** Two muxers (Agora's yamux settings unless given) over an in-memory connection: muxing without sockets. */
export function yamuxLink(factory: MuxerFactory = agoraTransportStack().streamMuxers[0]!()): YamuxLink {
  const [nearConn, farConn] = multiaddrConnectionPair();
  const near = factory.createStreamMuxer(nearConn);
  const far = factory.createStreamMuxer(farConn);
  const arrived: Stream[] = [];
  let wake: (() => void) | undefined;
  far.addEventListener("stream", (evt) => {
    arrived.push((evt as unknown as { detail: Stream }).detail);
    wake?.();
  });
  return {
    nearConn,
    farConn,
    near,
    async nextFarStream() {
      while (arrived.length === 0) await new Promise<void>((r) => (wake = r));
      return arrived.shift()!;
    },
    close() {
      near.abort(new Error("test over"));
      far.abort(new Error("test over"));
    },
  };
}
