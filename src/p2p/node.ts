/**
 * The Agora network node: a js-libp2p host (TCP, noise, yamux, identify, ping) running Agora's own Kademlia
 * DHT (`/agora/kad/1.0.0`, server mode), AutoNAT, optional UPnP, the circuit relay transport (server in relay
 * mode), signed advertisements with a heartbeat, provider records for enumeration, and discovery.
 */
import { autoNAT } from "@libp2p/autonat";
import { circuitRelayServer, circuitRelayTransport, type CircuitRelayService } from "@libp2p/circuit-relay-v2";
import { identify } from "@libp2p/identify";
import type { Connection, Libp2p, PeerId, PrivateKey } from "@libp2p/interface";
import { kadDHT, type KadDHT, type SingleKadDHT } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { ping } from "@libp2p/ping";
import { agoraTransportStack } from "./stack";
import { uPnPNAT } from "@libp2p/upnp-nat";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Registry } from "prom-client";
import type { AgoraConfig } from "../config/schema";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { RelayMonitor, relayServerInit } from "../relay";
import { writeFileAtomic } from "../state";
import { isCircuit, isLoopbackIp, ipOf, isPrivateAddr, isPrivateIp, stripOwnPeerId, tcpListenAddr } from "./addrs";
import { serveAdvertisements } from "./advert-protocol";
import {
  advertisementKeyBytes,
  encodeAdvertisement,
  MAX_RECORD_BYTES,
  type NodeAdvertisement,
  type NodeStatus,
  NODE_STATUSES,
  signAdvertisement,
  type UnsignedAdvertisement,
} from "./advertisement";
import { type BackoffOptions, Redialer } from "./bootstrap";
import { type DiscoverQuery, type DiscoveryServices, MAX_PARALLEL_DIALS, runDiscovery } from "./discovery";
import { type KnownPeer, knownPeersPath, loadKnownPeers, saveKnownPeers } from "./known-peers";
import { ConnectionMetrics, libp2pMetrics } from "./metrics";
import { ALL_NODES_NAMESPACE, capabilityNamespace, namespaceCid, PROTOCOL_ADVERT, PROTOCOL_DHT, regionNamespace } from "./namespaces";
import type { RankedNode } from "./ranking";
import { agoraDhtInit, DHT_DATASTORE_PREFIX } from "./dht";
import { createDhtRecordStore, type DhtRecordStoreLimits } from "./record-store";
import { createRecordValidation, type RecordValidation } from "./validator";

export interface LoadFigures {
  current_load: number;
  max_clients: number;
  cpu_percent: number;
  mem_percent: number;
  status: "online" | "degraded" | "draining";
}

/** Knobs for tests, benches and embedding; production leaves them unset. */
export interface NetworkNodeInternals {
  /** Overrides node.listen_port; 0 = an ephemeral port (the config schema does not allow 0). */
  listenPort?: number;
  /** Replaces the listen multiaddrs entirely ([] = dial-only, e.g. a peer reachable only through a relay). */
  listenAddrs?: string[];
  /** Bootstrap redial backoff (default 1 s doubling up to 5 min). */
  backoff?: BackoffOptions;
  /**
   * Reserve a slot on a relay (listen on /p2p-circuit). "auto" (default): once the node finds itself
   * unreachable (reachability "private") while listening on a non-loopback address.
   */
  relayClient?: "auto" | "always" | "never";
  /** libp2p's per-host inbound connection rate limit (default 5/s); many loopback nodes need more. */
  inboundConnectionThreshold?: number;
  /** Run AutoNAT (default true). */
  autonat?: boolean;
  /** How long DHT servers keep provider records without a refresh (default 15 min). */
  providerValidityMs?: number;
  /** How often known-peers.json is rewritten (default 60 s). */
  knownPeersSaveIntervalMs?: number;
  /** Bounds of the DHT record store (default: record-store.ts, maxRecords from network.dht_max_records). */
  dhtStore?: Partial<DhtRecordStoreLimits> & { now?: () => number };
  /** Additional libp2p connection gater hooks (tests block direct dials with this). */
  connectionGater?: import("@libp2p/interface").ConnectionGater;
}

export interface NetworkNodeOptions {
  config: AgoraConfig;
  privateKey: PrivateKey;
  logger: Logger;
  registry: Registry;
  dataDir: string;
  version: string;
  capabilities: string[];
  load: () => LoadFigures;
  /** Additive: testing/embedding knobs. */
  internal?: NetworkNodeInternals;
}

export interface PeerSummary {
  peer_id: string;
  addrs: string[];
  direction: "inbound" | "outbound";
  opened_at: number;
  latency_ms: number | null;
  relayed: boolean;
}

export interface NetworkStatus {
  peer_id: string;
  listen_addrs: string[];
  reachability: "public" | "private" | "unknown";
  upnp: boolean;
  dht: { protocol: string; mode: "server" | "client"; routing_table_size: number };
  bootstrap: { configured: number; connected: number };
  advertisement: NodeAdvertisement | null;
  last_published_at: number | null;
  relay: { enabled: boolean; reservations: number; circuits: number; bytes_relayed: number } | null;
}

export interface NetworkNode {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly peerId: string;
  readonly libp2p: Libp2p;
  listenAddrs(): string[];
  peers(): PeerSummary[];
  status(): NetworkStatus;
  publishNow(): Promise<void>;
  announceDraining(): Promise<void>;
  discover(q: DiscoverQuery): Promise<RankedNode[]>;
  setMaxConnections(n: number): void;
}

type Services = DiscoveryServices & { relay?: CircuitRelayService };

const PROVIDER_VALIDITY_MS = 15 * 60_000;
/** Provider records are refreshed at least this often, whatever the heartbeat. */
const MAX_PROVIDE_INTERVAL_MS = 5 * 60_000;
/** Heartbeats remembered for the availability half of `reputation`. */
const HISTORY = 20;
const STABILITY_HORIZON_S = 7 * 86400;
const SEQ_FILE = "advertisement-seq.json";
const REACHABILITY_GRACE_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function createNetworkNode(opts: NetworkNodeOptions): NetworkNode {
  return new AgoraNetworkNode(opts);
}

class AgoraNetworkNode implements NetworkNode {
  readonly peerId: string;
  private readonly log: Logger;
  private readonly cfg: AgoraConfig;
  private readonly internal: NetworkNodeInternals;
  private readonly publishes: boolean;
  private lib?: Libp2p<Services>;
  private validation?: RecordValidation;
  private connMetrics?: ConnectionMetrics;
  private relayMonitor?: RelayMonitor;
  private redialer?: Redialer;
  private starting?: Promise<void>;
  private running = false;
  private startedAt = Date.now();
  private maxConnections: number;

  private record: NodeAdvertisement | null = null;
  private recordBytes: Uint8Array | null = null;
  private lastPublishedAt: number | null = null;
  private lastSeq = 0;
  private draining = false;
  private publishChain: Promise<void> = Promise.resolve();
  private readonly history: boolean[] = [];
  private lastLoad: LoadFigures | null = null;
  private seqWriteWarned = false;

  private knownPeers: KnownPeer[] = [];
  private inboundPublicSeen = false;
  private relayListening = false;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(private readonly opts: NetworkNodeOptions) {
    this.cfg = opts.config;
    this.log = opts.logger;
    this.internal = opts.internal ?? {};
    this.peerId = peerIdFromPrivateKey(opts.privateKey).toString();
    this.publishes = this.cfg.node.mode !== "bootstrap";
    this.maxConnections = this.cfg.node.max_connections;
  }

  get libp2p(): Libp2p {
    if (!this.lib) throw new AgoraError("P2P", "the network node is not started");
    return this.lib;
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  start(): Promise<void> {
    if (this.running) return Promise.resolve();
    this.starting ??= this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private listenMultiaddrs(): string[] {
    if (this.internal.listenAddrs) return [...this.internal.listenAddrs];
    const port = this.internal.listenPort ?? this.cfg.node.listen_port;
    const addrs = [tcpListenAddr(this.cfg.node.listen_addr, port)];
    if (this.internal.relayClient === "always") addrs.push("/p2p-circuit");
    return addrs;
  }

  private async doStart(): Promise<void> {
    const cfg = this.cfg;
    this.startedAt = Date.now();
    this.draining = false;
    this.knownPeers = loadKnownPeers(knownPeersPath(this.opts.dataDir), this.log);
    this.lastSeq = this.loadSeq();
    const validation = createRecordValidation({ registry: this.opts.registry });
    const connMetrics = new ConnectionMetrics(this.opts.registry);
    const relayMonitor = cfg.node.mode === "relay" ? new RelayMonitor(cfg.relay, this.opts.registry) : undefined;
    const listen = this.listenMultiaddrs();
    const providerValidity = this.internal.providerValidityMs ?? PROVIDER_VALIDITY_MS;

    const services: Record<string, unknown> = {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        ...agoraDhtInit(validation, false),
        metricsPrefix: "libp2p_agora_dht",
        // Provider records expire after providerValidity unless refreshed; we refresh them ourselves with the
        // heartbeat, kad-dht's reprovider is only the backstop (it fires within the last third of validity).
        reprovide: { validity: providerValidity, interval: Math.min(60_000, providerValidity / 3), threshold: providerValidity / 3 },
      }),
    };
    if (this.internal.autonat !== false) services.autonat = autoNAT();
    // UPnP sends SSDP multicast to the LAN: only when the operator asked for it.
    if (cfg.network.enable_upnp) services.upnp = uPnPNAT();
    if (relayMonitor) services.relay = circuitRelayServer(relayServerInit(cfg.relay));

    const gater = { ...(relayMonitor?.gater() ?? {}), ...(this.internal.connectionGater ?? {}) };
    const stack = agoraTransportStack();
    let lib: Libp2p<Services>;
    try {
      lib = (await createLibp2p({
        start: false,
        privateKey: this.opts.privateKey,
        nodeInfo: { name: "agora-node", version: this.opts.version, userAgent: `agora-node/${this.opts.version}` },
        addresses: {
          listen: listen,
          ...(cfg.network.announce_addrs.length > 0 ? { announce: cfg.network.announce_addrs } : {}),
        },
        ...stack,
        transports: [...stack.transports, ...(cfg.node.mode === "relay" ? [] : [circuitRelayTransport()])],
        connectionGater: gater,
        connectionManager: {
          maxConnections: this.maxConnections,
          maxParallelDials: MAX_PARALLEL_DIALS,
          ...(this.internal.inboundConnectionThreshold !== undefined ? { inboundConnectionThreshold: this.internal.inboundConnectionThreshold } : {}),
        },
        // Bounded, self-cleaning storage for what the DHT keeps for others (record-store.ts).
        datastore: createDhtRecordStore({
          prefix: DHT_DATASTORE_PREFIX,
          selfPeerId: this.peerId,
          ownSeq: () => this.lastSeq,
          onReject: validation.countRejection,
          registry: this.opts.registry,
          limits: { maxRecords: cfg.network.dht_max_records, ...this.internal.dhtStore },
          now: this.internal.dhtStore?.now,
        }),
        metrics: libp2pMetrics(this.opts.registry, relayMonitor ? (s) => relayMonitor.trackStream(s) : undefined),
        services: services as never,
      })) as unknown as Libp2p<Services>;
    } catch (err) {
      validation.dispose();
      connMetrics.dispose();
      relayMonitor?.dispose();
      throw new AgoraError("P2P", `cannot create the libp2p node: ${errorMessage(err)}`, { cause: err });
    }
    connMetrics.attach(lib);
    lib.addEventListener("connection:open", this.onConnectionOpen);
    try {
      await lib.start();
    } catch (err) {
      connMetrics.dispose();
      validation.dispose();
      relayMonitor?.dispose();
      await Promise.resolve(lib.stop()).catch(() => undefined);
      const msg = errorMessage(err);
      if (/EADDRINUSE|EADDRNOTAVAIL|EACCES|listen/i.test(msg)) {
        throw new AgoraError("LISTEN_FAILED", `cannot listen on ${listen.join(", ")}: ${msg}`, { cause: err });
      }
      throw new AgoraError("P2P", `libp2p did not start: ${msg}`, { cause: err });
    }
    this.lib = lib;
    this.validation = validation;
    this.connMetrics = connMetrics;
    this.relayMonitor = relayMonitor;
    if (relayMonitor && lib.services.relay) relayMonitor.attach(lib, lib.services.relay);
    this.running = true;
    try {
      if (this.publishes) await serveAdvertisements(lib, () => this.recordBytes);
    } catch (err) {
      await this.shutdown();
      throw new AgoraError("P2P", `cannot register ${PROTOCOL_ADVERT}: ${errorMessage(err)}`, { cause: err });
    }

    this.redialer = new Redialer({
      libp2p: lib,
      logger: this.log,
      bootstrap: cfg.network.bootstrap_peers,
      known: this.knownPeers,
      backoff: this.internal.backoff,
    });
    this.redialer.start();

    if (this.publishes) {
      this.every(0, () => this.cfg.network.heartbeat_interval * 1000, () => this.publishNow());
      this.every(0, () => Math.min(this.cfg.network.heartbeat_interval * 1000, MAX_PROVIDE_INTERVAL_MS), () => this.provideAll());
    }
    this.every(this.internal.knownPeersSaveIntervalMs ?? 60_000, () => this.internal.knownPeersSaveIntervalMs ?? 60_000, async () => this.saveKnownPeers());
    if ((this.internal.relayClient ?? "auto") === "auto") this.every(REACHABILITY_GRACE_MS, () => 60_000, async () => this.maybeListenOnRelays());

    this.log.info(
      { peer_id: this.peerId, mode: cfg.node.mode, listen: this.listenAddrs(), dht: PROTOCOL_DHT, bootstrap: cfg.network.bootstrap_peers.length, known_peers: this.knownPeers.length },
      "p2p network started",
    );
  }

  /**
   * Runs `fn` after `firstMs`, then again `periodMs()` after each run *started* (never overlapping: a slow run
   * delays the next one instead of stacking up).
   */
  private every(firstMs: number, periodMs: () => number, fn: () => Promise<void>): void {
    const run = async () => {
      if (!this.running) return;
      const t0 = Date.now();
      try {
        await fn();
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, "periodic network task failed");
      }
      if (!this.running) return;
      // ±10 % jitter: nodes started together (a datacenter reboot, a test network) must not beat in lockstep.
      arm(Math.max(0, periodMs() * (0.9 + 0.2 * Math.random()) - (Date.now() - t0)));
    };
    const arm = (ms: number) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        void run();
      }, ms);
      this.timers.add(t);
    };
    arm(firstMs);
  }

  async stop(): Promise<void> {
    if (this.starting) await this.starting.catch(() => undefined);
    await this.shutdown();
  }

  private async shutdown(): Promise<void> {
    const lib = this.lib;
    if (!this.running || !lib) return;
    this.running = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.redialer?.stop();
    await this.saveKnownPeers().catch((err) => this.log.warn({ err: errorMessage(err) }, "could not save known peers"));
    lib.removeEventListener("connection:open", this.onConnectionOpen);
    const stopped = await Promise.race([Promise.resolve(lib.stop()).then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]).catch((err) => {
      this.log.warn({ err: errorMessage(err) }, "libp2p stop failed");
      return true;
    });
    if (!stopped) this.log.warn({ timeout_ms: STOP_TIMEOUT_MS }, "libp2p did not stop in time; continuing shutdown");
    // Stopping libp2p aborts DHT queries, so an in-flight heartbeat ends now; never let it outlive stop().
    await Promise.race([this.publishChain, sleep(2_000)]);
    this.connMetrics?.dispose();
    this.relayMonitor?.dispose();
    this.validation?.dispose();
    this.log.info({ peer_id: this.peerId }, "p2p network stopped");
  }

  // --- advertisement -----------------------------------------------------------------------------

  publishNow(): Promise<void> {
    if (!this.publishes) return Promise.resolve();
    if (!this.running) return Promise.reject(new AgoraError("P2P", "cannot publish: the network node is not running"));
    const next = this.publishChain.then(() => this.publishOnce());
    // The chain itself never rejects, so one failure cannot wedge later heartbeats.
    this.publishChain = next.catch(() => undefined);
    return next;
  }

  async announceDraining(): Promise<void> {
    this.draining = true;
    await this.publishNow();
  }

  private loadSeq(): number {
    try {
      const o = JSON.parse(readFileSync(join(this.opts.dataDir, SEQ_FILE), "utf8")) as { seq?: unknown };
      return typeof o.seq === "number" && Number.isSafeInteger(o.seq) ? o.seq : 0;
    } catch {
      return 0;
    }
  }

  /** Strictly increasing: wall-clock milliseconds, bumped past the last persisted value if the clock went back. */
  private nextSeq(): number {
    const seq = Math.max(this.lastSeq + 1, Date.now());
    this.lastSeq = seq;
    try {
      writeFileAtomic(join(this.opts.dataDir, SEQ_FILE), `${JSON.stringify({ seq })}\n`, 0o600);
    } catch (err) {
      if (!this.seqWriteWarned) this.log.warn({ err: errorMessage(err), data_dir: this.opts.dataDir }, "cannot persist the advertisement sequence number; relying on the clock");
      this.seqWriteWarned = true;
    }
    return seq;
  }

  private currentLoad(): LoadFigures {
    let l: LoadFigures;
    try {
      l = this.opts.load();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "load figures unavailable; advertising the last known ones as degraded");
      l = { ...(this.lastLoad ?? { current_load: 0, max_clients: this.cfg.node.max_connections, cpu_percent: 0, mem_percent: 0 }), status: "degraded" };
    }
    const int = (x: number) => (Number.isFinite(x) ? Math.max(0, Math.round(x)) : 0);
    const pct = (x: number) => (Number.isFinite(x) ? Math.min(100, Math.max(0, Math.round(x * 10) / 10)) : 0);
    const clean: LoadFigures = {
      current_load: int(l.current_load),
      max_clients: int(l.max_clients),
      cpu_percent: pct(l.cpu_percent),
      mem_percent: pct(l.mem_percent),
      status: NODE_STATUSES.includes(l.status) ? l.status : "degraded",
    };
    this.lastLoad = clean;
    return clean;
  }

  private reputation(uptimeSeconds: number): number {
    const availability = this.history.length === 0 ? 1 : this.history.filter(Boolean).length / this.history.length;
    const stability = Math.min(1, uptimeSeconds / STABILITY_HORIZON_S);
    return Math.round((0.5 * availability + 0.5 * stability) * 1000) / 1000;
  }

  private advertisedAddrs(): string[] {
    const lib = this.lib;
    if (this.cfg.network.announce_addrs.length > 0) return this.cfg.network.announce_addrs.map((a) => stripOwnPeerId(a, this.peerId));
    if (!lib) return [];
    const all = lib.getMultiaddrs();
    const nonLoopback = all.filter((ma) => {
      const ip = ipOf(ma);
      return ip === undefined || !isLoopbackIp(ip);
    });
    // Loopback addresses only help when nothing else exists (single-host test networks).
    const chosen = nonLoopback.length > 0 ? nonLoopback : all;
    return [...new Set(chosen.map((ma) => stripOwnPeerId(ma.toString(), this.peerId)))].slice(0, 16);
  }

  private buildUnsigned(): UnsignedAdvertisement {
    const load = this.currentLoad();
    const uptime = Math.floor((Date.now() - this.startedAt) / 1000);
    const status: NodeStatus = this.draining ? "draining" : load.status;
    return {
      peer_id: this.peerId,
      version: this.opts.version.slice(0, 64),
      region: this.cfg.node.region,
      capabilities: this.opts.capabilities.filter((c) => TOKEN.test(c)).slice(0, 16),
      max_clients: load.max_clients,
      current_load: load.current_load,
      uptime_seconds: uptime,
      reputation: this.reputation(uptime),
      last_seen: Math.round(Date.now()) / 1000,
      listen_addr: this.advertisedAddrs(),
      group: this.cfg.node.group,
      labels: this.cfg.node.labels.slice(0, 32),
      status,
      cpu_percent: load.cpu_percent,
      mem_percent: load.mem_percent,
      seq: this.nextSeq(),
      ttl_seconds: Math.min(3 * this.cfg.network.heartbeat_interval, 3 * 3600),
    };
  }

  /** Signs a record that fits in MAX_RECORD_BYTES, shedding labels then addresses if it would not. */
  private async signFitting(unsigned: UnsignedAdvertisement): Promise<{ rec: NodeAdvertisement; bytes: Uint8Array }> {
    let u = unsigned;
    for (;;) {
      const rec = await signAdvertisement(u, this.opts.privateKey);
      const bytes = encodeAdvertisement(rec);
      if (bytes.byteLength <= MAX_RECORD_BYTES) return { rec, bytes };
      if (u.labels.length > 0) u = { ...u, labels: u.labels.slice(0, -1) };
      else if (u.listen_addr.length > 1) u = { ...u, listen_addr: u.listen_addr.slice(0, -1) };
      else throw new AgoraError("P2P", `advertisement does not fit in ${MAX_RECORD_BYTES} bytes`);
      this.log.warn({ bytes: bytes.byteLength }, "advertisement too large; dropping labels/addresses to fit");
    }
  }

  private async publishOnce(): Promise<void> {
    const lib = this.lib;
    if (!this.running || !lib) return;
    const { rec, bytes } = await this.signFitting(this.buildUnsigned());
    // Served by /agora/advert/1.0.0 right away, whatever the DHT does.
    this.record = rec;
    this.recordBytes = bytes;
    const key = advertisementKeyBytes(rec.region, this.peerId);
    const timeoutMs = Math.min(30_000, Math.max(2_000, this.cfg.network.heartbeat_interval * 2000));
    let stored = 0;
    let failed = 0;
    try {
      for await (const ev of lib.services.dht.put(key, bytes, { signal: AbortSignal.timeout(timeoutMs) })) {
        if (ev.name === "PEER_RESPONSE" && ev.messageName === "PUT_VALUE" && ev.record && Buffer.compare(Buffer.from(ev.record.value), Buffer.from(bytes)) === 0) stored++;
        else if (ev.name === "QUERY_ERROR") failed++;
      }
    } catch (err) {
      // Timeout with no DHT peers yet, or shutdown: not an error worth more than debug, the next beat retries.
      this.log.debug({ err: errorMessage(err), stored }, "advertisement put ended early");
    }
    this.history.push(stored > 0);
    if (this.history.length > HISTORY) this.history.shift();
    if (stored > 0) this.lastPublishedAt = Date.now();
    this.log.debug({ seq: rec.seq, status: rec.status, stored, failed }, stored > 0 ? "advertisement published" : "advertisement reached no DHT peer");
  }

  private async provideAll(): Promise<void> {
    const lib = this.lib;
    if (!this.running || !lib) return;
    const namespaces = [regionNamespace(this.cfg.node.region), ALL_NODES_NAMESPACE, ...this.opts.capabilities.filter((c) => TOKEN.test(c)).map(capabilityNamespace)];
    const timeoutMs = Math.min(60_000, Math.max(5_000, this.cfg.network.heartbeat_interval * 2000));
    await Promise.all(
      namespaces.map(async (ns) => {
        const cid = await namespaceCid(ns);
        let acked = 0;
        try {
          for await (const ev of lib.services.dht.provide(cid, { signal: AbortSignal.timeout(timeoutMs) })) {
            if (ev.name === "PEER_RESPONSE" && ev.messageName === "ADD_PROVIDER") acked++;
          }
        } catch (err) {
          this.log.debug({ namespace: ns, err: errorMessage(err) }, "provide ended early");
        }
        this.log.debug({ namespace: ns, acked }, "provider record refreshed");
      }),
    );
  }

  // --- discovery ---------------------------------------------------------------------------------

  async discover(q: DiscoverQuery): Promise<RankedNode[]> {
    if (!this.running || !this.lib || !this.validation) throw new AgoraError("P2P", "cannot discover: the network node is not running");
    return runDiscovery(
      { libp2p: this.lib, validation: this.validation, logger: this.log, preferGroup: this.cfg.node.group, selfRecord: () => this.record },
      q,
    );
  }

  // --- connections -------------------------------------------------------------------------------

  setMaxConnections(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new AgoraError("BAD_REQUEST", `max connections must be a positive integer, got ${n}`);
    this.maxConnections = n;
    const cm = (this.lib as unknown as { components?: { connectionManager?: { setMaxConnections(n: number): void } } } | undefined)?.components?.connectionManager;
    cm?.setMaxConnections(n);
  }

  private readonly onConnectionOpen = (evt: CustomEvent<Connection>) => {
    const c = evt.detail;
    // An accepted direct connection from a public address proves we are reachable from the internet.
    if (c.direction === "inbound" && !isCircuit(c.remoteAddr) && !isPrivateAddr(c.remoteAddr) && ipOf(c.remoteAddr) !== undefined) this.inboundPublicSeen = true;
  };

  listenAddrs(): string[] {
    return this.lib?.getMultiaddrs().map((m) => m.toString()) ?? [];
  }

  peers(): PeerSummary[] {
    const lib = this.lib;
    if (!lib) return [];
    const byPeer = new Map<string, PeerSummary>();
    for (const c of lib.getConnections()) {
      if (c.status !== "open") continue;
      const id = c.remotePeer.toString();
      const relayed = isCircuit(c.remoteAddr);
      const rtt = typeof c.rtt === "number" && Number.isFinite(c.rtt) ? c.rtt : null;
      const s = byPeer.get(id);
      if (!s) {
        byPeer.set(id, { peer_id: id, addrs: [c.remoteAddr.toString()], direction: c.direction, opened_at: c.timeline.open, latency_ms: rtt, relayed });
        continue;
      }
      s.addrs.push(c.remoteAddr.toString());
      if (c.timeline.open < s.opened_at) {
        s.opened_at = c.timeline.open;
        s.direction = c.direction;
      }
      if (rtt !== null && (s.latency_ms === null || rtt < s.latency_ms)) s.latency_ms = rtt;
      // Relayed only if every connection to the peer is.
      s.relayed = s.relayed && relayed;
    }
    return [...byPeer.values()];
  }

  /**
   * public: an address verified by AutoNAT (or an operator's announce address, taken on trust), or an
   * accepted direct connection from a public IP. private: no public candidate address at all once the
   * startup grace period is over, or every public candidate failed verification. unknown: still checking.
   */
  private reachability(): "public" | "private" | "unknown" {
    const lib = this.lib as unknown as { components?: { addressManager?: { getAddressesWithMetadata(): { multiaddr: import("@multiformats/multiaddr").Multiaddr; verified: boolean; expires: number }[] } } } | undefined;
    const am = lib?.components?.addressManager;
    if (!am) return "unknown";
    if (this.inboundPublicSeen) return "public";
    const candidates = am.getAddressesWithMetadata().filter((a) => !isCircuit(a.multiaddr) && !isPrivateAddr(a.multiaddr));
    if (candidates.some((a) => a.verified)) return "public";
    if (candidates.length === 0) return Date.now() - this.startedAt >= REACHABILITY_GRACE_MS ? "private" : "unknown";
    // expires > 0 on an unverified address means a verification ran and failed (libp2p unconfirm()).
    if (candidates.every((a) => !a.verified && a.expires > 0)) return "private";
    return "unknown";
  }

  private async maybeListenOnRelays(): Promise<void> {
    const lib = this.lib;
    if (!lib || this.relayListening || this.cfg.node.mode === "relay") return;
    if (this.reachability() !== "private") return;
    // Loopback-only nodes are single-host test/dev setups: a relay would not make them more reachable.
    const hasLan = lib.getMultiaddrs().some((ma) => {
      const ip = ipOf(ma);
      return ip !== undefined && isPrivateIp(ip) && !isLoopbackIp(ip);
    });
    if (!hasLan) return;
    const tm = (lib as unknown as { components?: { transportManager?: { listen(addrs: import("@multiformats/multiaddr").Multiaddr[]): Promise<void> } } }).components?.transportManager;
    if (!tm) return;
    this.relayListening = true;
    this.log.info("node is not reachable directly; reserving a slot on a relay");
    await tm.listen([multiaddr("/p2p-circuit")]).catch((err) => {
      this.relayListening = false;
      this.log.warn({ err: errorMessage(err) }, "could not listen on relays");
    });
  }

  // --- status ------------------------------------------------------------------------------------

  status(): NetworkStatus {
    const lib = this.lib;
    const dht = lib?.services.dht as (KadDHT & Partial<SingleKadDHT>) | undefined;
    return {
      peer_id: this.peerId,
      listen_addrs: this.running ? this.listenAddrs() : [],
      reachability: this.running ? this.reachability() : "unknown",
      upnp: this.cfg.network.enable_upnp,
      dht: {
        protocol: PROTOCOL_DHT,
        mode: dht && this.running ? dht.getMode() : "server",
        routing_table_size: (this.running && dht?.routingTable?.size) || 0,
      },
      bootstrap: { configured: this.cfg.network.bootstrap_peers.length, connected: this.running ? (this.redialer?.connectedBootstrapCount() ?? 0) : 0 },
      advertisement: this.record,
      last_published_at: this.lastPublishedAt,
      relay: this.cfg.node.mode === "relay" ? (this.relayMonitor?.stats() ?? { enabled: true, reservations: 0, circuits: 0, bytes_relayed: 0 }) : null,
    };
  }

  // --- known peers -------------------------------------------------------------------------------

  private async saveKnownPeers(): Promise<void> {
    const lib = this.lib;
    if (!lib) return;
    const now = Date.now() / 1000;
    const seen: KnownPeer[] = [];
    const done = new Set<string>();
    for (const c of lib.getConnections()) {
      const id = c.remotePeer.toString();
      if (done.has(id)) continue;
      done.add(id);
      let peer;
      try {
        peer = await lib.peerStore.get(c.remotePeer as PeerId);
      } catch {
        continue;
      }
      // Only Agora DHT servers help a node rejoin; clients and transient discover nodes do not.
      if (!peer.protocols.includes(PROTOCOL_DHT)) continue;
      const addrs = peer.addresses.map((a) => a.multiaddr).filter((ma) => !isCircuit(ma)).map((ma) => stripOwnPeerId(ma.toString(), id));
      if (c.direction === "outbound" && !isCircuit(c.remoteAddr)) addrs.unshift(stripOwnPeerId(c.remoteAddr.toString(), id));
      const unique = [...new Set(addrs)];
      if (unique.length > 0) seen.push({ peer_id: id, addrs: unique, last_seen: now });
    }
    if (seen.length === 0 && this.knownPeers.length === 0) return;
    try {
      this.knownPeers = saveKnownPeers(knownPeersPath(this.opts.dataDir), this.knownPeers, seen, now);
    } catch (err) {
      this.log.warn({ err: errorMessage(err), data_dir: this.opts.dataDir }, "cannot write known peers");
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => {
    const t = setTimeout(r, ms);
    (t as { unref?: () => void }).unref?.();
  });
}
