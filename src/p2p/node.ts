/**
 * The Agora network node: a js-libp2p host (TCP, noise, yamux, identify, ping) running Agora's own Kademlia
 * DHT (`/agora/kad/1.0.0`, server mode), AutoNAT, optional UPnP, the circuit relay transport (server in relay
 * mode), and Agora's own libp2p services: the advertisement publisher (advert-publisher.ts), the provider
 * refresher (provider-refresher.ts), reachability (reachability.ts), relay auto-listen (relay-listen.ts) and
 * the live connection limit (connection-limits.ts). This file assembles them and is the NetworkNode facade;
 * libp2p starts and stops the services.
 */
import { autoNAT } from "@libp2p/autonat";
import { circuitRelayServer, circuitRelayTransport } from "@libp2p/circuit-relay-v2";
import { identify } from "@libp2p/identify";
import type { Libp2p, PeerId, PrivateKey } from "@libp2p/interface";
import { type KadDHT, kadDHT, type SingleKadDHT } from "@libp2p/kad-dht";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { uPnPNAT } from "@libp2p/upnp-nat";
import { type RepeatingTask, repeatingTask } from "@libp2p/utils";
import { createLibp2p } from "libp2p";
import type { Registry } from "prom-client";
import type { AgoraConfig } from "../config";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { RelayMonitor, relayServerInit } from "../relay";
import { agoraPing, agoraTransportStack } from "../transport";
import { isCircuit, stripOwnPeerId, tcpListenAddr } from "./addrs";
import { type AdvertPublisher, type AdvertPublisherComponents, advertPublisher, type LoadFigures, TOKEN } from "./advert-publisher";
import type { NodeAdvertisement } from "./advertisement";
import { type BackoffOptions, Redialer } from "./bootstrap";
import { connectionLimits } from "./connection-limits";
import { agoraDhtInit, DHT_DATASTORE_PREFIX } from "./dht";
import { type DiscoverQuery, MAX_PARALLEL_DIALS, runDiscovery } from "./discovery";
import { type KnownPeer, knownPeersPath, loadKnownPeers, saveKnownPeers } from "./known-peers";
import { ConnectionMetrics, libp2pMetrics } from "./metrics";
import { ALL_NODES_NAMESPACE, capabilityNamespace, PROTOCOL_ADVERT, PROTOCOL_DHT, regionNamespace } from "./namespaces";
import { providerRefresher } from "./provider-refresher";
import type { RankedNode } from "./ranking";
import { reachability } from "./reachability";
import { createDhtRecordStore, type DhtRecordStoreLimits } from "./record-store";
import { relayListen } from "./relay-listen";
import { type RoomClock, type RoomDirectory, type RoomDirectoryComponents, roomDirectory } from "./room-directory";
import { RoomMetrics } from "./room-metrics";
import { createRecordValidation, type RecordValidation } from "./validator";
import { type WebSocketListen, webSocketListen } from "./websocket";

export type { LoadFigures } from "./advert-publisher";

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
  /** Reachability: with no public address candidate, "unknown" turns "private" after this (default 30 s). */
  reachabilityGraceMs?: number;
  /** relayClient "auto": time between reachability checks, the first one after start (default 30 s). */
  relayCheckIntervalMs?: number;
  /** Overrides network.ws_port; 0 = an ephemeral port (the config's 0 means off). */
  wsPort?: number;
  /** Bounds of the DHT record store (default: record-store.ts, maxRecords from network.dht_max_records). */
  dhtStore?: Partial<DhtRecordStoreLimits> & { now?: () => number };
  /** Additional libp2p connection gater hooks (tests block direct dials with this). */
  connectionGater?: import("@libp2p/interface").ConnectionGater;
  /** The room directory's clock (virtual time in tests) and record interval (default: network.heartbeat_interval). */
  roomClock?: RoomClock;
  roomRecordIntervalMs?: number;
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
  /** Addresses added to the advertisement, given the public IPs AutoNAT confirmed (the STUN-learned UDP endpoint). */
  extraAddrs?: (autonatConfirmedIps: string[]) => string[];
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
  /** Peers remembered in the data directory, redialed when the bootstrap list is gone. */
  known_peers: number;
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
  /** A cancelled drain: the advertisement says non-draining again, published at once. */
  announceDrainCancelled(): Promise<void>;
  discover(q: DiscoverQuery): Promise<RankedNode[]>;
  setMaxConnections(n: number): void;
  /** The room directory (mixer nodes, i.e. with the "mixer" capability, while running); undefined otherwise. */
  readonly rooms: RoomDirectory | undefined;
  /** Room metrics (agora_rooms_*), on the node's registry while running. */
  readonly roomMetrics: RoomMetrics | undefined;
}

const PROVIDER_VALIDITY_MS = 15 * 60_000;
/** Provider records are refreshed at least this often, whatever the heartbeat. */
const MAX_PROVIDE_INTERVAL_MS = 5 * 60_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * ±10 %, drawn once per node: nodes started together (a datacenter reboot, a test network) must not beat in
 * lockstep. A fixed per-node period is enough for that: nodes with different periods drift apart.
 */
function jittered(ms: number): number {
  return Math.round(ms * (0.9 + 0.2 * Math.random()));
}

export function createNetworkNode(opts: NetworkNodeOptions): NetworkNode {
  return new AgoraNetworkNode(opts);
}

type AgoraLibp2p = Awaited<ReturnType<typeof createAgoraLibp2p>>;

interface Assembly {
  config: AgoraConfig;
  opts: NetworkNodeOptions;
  internal: NetworkNodeInternals;
  listen: string[];
  maxConnections: number;
  validation: RecordValidation;
  roomMetrics: RoomMetrics;
  relayMonitor?: RelayMonitor;
  /** libp2p over WebSocket (network.ws_port), when configured */
  wsListen?: WebSocketListen;
}

/** libp2p's own connection-monitor interval, kept for heartbeats slower than it. */
const DEFAULT_CONNECTION_PING_MS = 10_000;

/** The libp2p node with every service this node runs; each one is started and stopped by libp2p. */
function createAgoraLibp2p(a: Assembly) {
  const { config: cfg, opts, internal, relayMonitor } = a;
  const heartbeatMs = cfg.network.heartbeat_interval * 1000;
  const providerValidity = internal.providerValidityMs ?? PROVIDER_VALIDITY_MS;
  const publishes = cfg.node.mode !== "bootstrap";
  const relayAuto = (internal.relayClient ?? "auto") === "auto" && cfg.node.mode !== "relay";
  const capabilities = opts.capabilities.filter((c) => TOKEN.test(c));
  const gater = { ...(relayMonitor?.gater() ?? {}), ...(internal.connectionGater ?? {}) };
  const stack = agoraTransportStack();
  // The store refuses copies of our own record older than the one we published: it asks the publisher.
  let publisher: AdvertPublisher | undefined;
  return createLibp2p({
    start: false,
    privateKey: opts.privateKey,
    nodeInfo: { name: "agora-node", version: opts.version, userAgent: `agora-node/${opts.version}` },
    addresses: {
      listen: a.listen,
      ...(cfg.network.announce_addrs.length > 0 ? { announce: cfg.network.announce_addrs } : {}),
    },
    ...stack,
    transports: [
      ...stack.transports,
      ...(a.wsListen ? [a.wsListen.transport] : []),
      ...(cfg.node.mode === "relay" ? [] : [circuitRelayTransport()]),
    ],
    connectionGater: gater,
    // A connection into a partition looks open until TCP gives up (minutes), and after the heal it resumes
    // only at TCP's next, exponentially backed-off retransmission: every DHT query over it hangs meanwhile,
    // so a healed partition's two room records stay apart. libp2p's connection monitor pings each connection
    // and aborts one that does not answer; at the heartbeat's pace (at most its 10 s default), the other
    // side's peers are dropped within seconds and redialed afresh once the network is back.
    connectionMonitor: { pingInterval: Math.min(DEFAULT_CONNECTION_PING_MS, heartbeatMs) },
    connectionManager: {
      maxConnections: a.maxConnections,
      maxParallelDials: MAX_PARALLEL_DIALS,
      ...(internal.inboundConnectionThreshold !== undefined ? { inboundConnectionThreshold: internal.inboundConnectionThreshold } : {}),
    },
    // Bounded, self-cleaning storage for what the DHT keeps for others (record-store.ts).
    datastore: createDhtRecordStore({
      prefix: DHT_DATASTORE_PREFIX,
      selfPeerId: peerIdFromPrivateKey(opts.privateKey).toString(),
      ownSeq: () => publisher?.ownSeq() ?? 0,
      onReject: a.validation.countRejection,
      onRoomReject: a.validation.countRoomRejection,
      registry: opts.registry,
      limits: { maxRecords: cfg.network.dht_max_records, ...internal.dhtStore },
      now: internal.dhtStore?.now,
    }),
    metrics: libp2pMetrics(opts.registry, relayMonitor ? (s) => relayMonitor.trackStream(s) : undefined),
    services: {
      identify: identify(),
      ping: agoraPing(),
      dht: kadDHT({
        ...agoraDhtInit(a.validation, false),
        metricsPrefix: "libp2p_agora_dht",
        // Provider records expire after providerValidity unless refreshed; the provider refresher refreshes
        // them with the heartbeat, kad-dht's reprovider is only the backstop (within the last third of validity).
        reprovide: { validity: providerValidity, interval: Math.min(60_000, providerValidity / 3), threshold: providerValidity / 3 },
      }),
      connectionLimits: connectionLimits(),
      reachability: reachability({ graceMs: internal.reachabilityGraceMs }),
      ...(internal.autonat !== false ? { autonat: autoNAT() } : {}),
      // UPnP sends SSDP multicast to the LAN: only when the operator asked for it.
      ...(cfg.network.enable_upnp ? { upnp: uPnPNAT() } : {}),
      ...(relayMonitor ? { relay: circuitRelayServer(relayServerInit(cfg.relay)) } : {}),
      ...(relayAuto ? { relayListen: relayListen({ logger: opts.logger, intervalMs: internal.relayCheckIntervalMs }) } : {}),
      ...(publishes && opts.capabilities.includes("mixer")
        ? {
            roomDirectory: (components: RoomDirectoryComponents) =>
              roomDirectory({
                logger: opts.logger,
                region: cfg.node.region,
                intervalMs: internal.roomRecordIntervalMs ?? jittered(heartbeatMs),
                metrics: a.roomMetrics,
                clock: internal.roomClock,
              })(components),
          }
        : {}),
      ...(publishes
        ? {
            advertPublisher: (components: AdvertPublisherComponents) => {
              publisher = advertPublisher({
                config: cfg,
                logger: opts.logger,
                dataDir: opts.dataDir,
                version: opts.version,
                capabilities: opts.capabilities,
                load: opts.load,
                extraAddrs: opts.extraAddrs,
                intervalMs: jittered(heartbeatMs),
              })(components);
              return publisher;
            },
            providerRefresher: providerRefresher({
              logger: opts.logger,
              namespaces: [regionNamespace(cfg.node.region), ALL_NODES_NAMESPACE, ...capabilities.map(capabilityNamespace)],
              intervalMs: jittered(Math.min(heartbeatMs, MAX_PROVIDE_INTERVAL_MS)),
              // Backs off while rounds reach enough servers: at most 16 heartbeats, well within the validity.
              maxIntervalMs: Math.min(16 * heartbeatMs, MAX_PROVIDE_INTERVAL_MS, providerValidity / 3),
              timeoutMs: Math.min(60_000, Math.max(5_000, heartbeatMs * 2)),
            }),
          }
        : {}),
    },
  });
}

class AgoraNetworkNode implements NetworkNode {
  readonly peerId: string;
  private readonly log: Logger;
  private readonly cfg: AgoraConfig;
  private readonly internal: NetworkNodeInternals;
  private lib?: AgoraLibp2p;
  private validation?: RecordValidation;
  private roomMetricsInstance?: RoomMetrics;
  private connMetrics?: ConnectionMetrics;
  private wsListen?: WebSocketListen;
  private relayMonitor?: RelayMonitor;
  private redialer?: Redialer;
  private knownPeersTask?: RepeatingTask;
  private starting?: Promise<void>;
  private running = false;
  private maxConnections: number;
  private knownPeers: KnownPeer[] = [];

  constructor(private readonly opts: NetworkNodeOptions) {
    this.cfg = opts.config;
    this.log = opts.logger;
    this.internal = opts.internal ?? {};
    this.peerId = peerIdFromPrivateKey(opts.privateKey).toString();
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
    this.knownPeers = loadKnownPeers(knownPeersPath(this.opts.dataDir), this.log);
    const roomMetrics = new RoomMetrics(this.opts.registry);
    const validation = createRecordValidation({ registry: this.opts.registry, roomMetrics });
    const connMetrics = new ConnectionMetrics(this.opts.registry);
    const relayMonitor = cfg.node.mode === "relay" ? new RelayMonitor(cfg.relay, this.opts.registry) : undefined;
    const wsListen = webSocketListen(cfg.network, this.opts.registry, this.log, this.internal.wsPort);
    const listen = [...this.listenMultiaddrs(), ...(wsListen ? [wsListen.listenAddr] : [])];
    const dispose = () => {
      connMetrics.dispose();
      validation.dispose();
      roomMetrics.dispose();
      relayMonitor?.dispose();
      wsListen?.dispose();
    };
    let lib: AgoraLibp2p;
    try {
      lib = await createAgoraLibp2p({
        config: cfg,
        opts: this.opts,
        internal: this.internal,
        listen,
        maxConnections: this.maxConnections,
        validation,
        roomMetrics,
        relayMonitor,
        wsListen,
      });
    } catch (err) {
      dispose();
      throw new AgoraError("P2P", `cannot create the libp2p node: ${errorMessage(err)}`, { cause: err });
    }
    connMetrics.attach(lib);
    try {
      await lib.start();
    } catch (err) {
      dispose();
      await Promise.resolve(lib.stop()).catch(() => undefined);
      const msg = errorMessage(err);
      if (/EADDRINUSE|EADDRNOTAVAIL|EACCES|listen/i.test(msg)) {
        throw new AgoraError("LISTEN_FAILED", `cannot listen on ${listen.join(", ")}: ${msg}`, { cause: err });
      }
      if (msg.includes(PROTOCOL_ADVERT)) throw new AgoraError("P2P", `cannot register ${PROTOCOL_ADVERT}: ${msg}`, { cause: err });
      throw new AgoraError("P2P", `libp2p did not start: ${msg}`, { cause: err });
    }
    this.lib = lib;
    this.validation = validation;
    this.roomMetricsInstance = roomMetrics;
    this.connMetrics = connMetrics;
    this.wsListen = wsListen;
    this.relayMonitor = relayMonitor;
    if (relayMonitor && lib.services.relay) relayMonitor.attach(lib, lib.services.relay);
    this.running = true;

    this.redialer = new Redialer({
      libp2p: lib,
      logger: this.log,
      bootstrap: cfg.network.bootstrap_peers,
      known: this.knownPeers,
      backoff: this.internal.backoff,
    });
    this.redialer.start();
    this.knownPeersTask = repeatingTask(() => this.saveKnownPeers(), this.internal.knownPeersSaveIntervalMs ?? 60_000);
    this.knownPeersTask.start();

    this.log.info(
      {
        peer_id: this.peerId,
        mode: cfg.node.mode,
        listen: this.listenAddrs(),
        dht: PROTOCOL_DHT,
        bootstrap: cfg.network.bootstrap_peers.length,
        known_peers: this.knownPeers.length,
      },
      "p2p network started",
    );
  }

  async stop(): Promise<void> {
    if (this.starting) await this.starting.catch(() => undefined);
    await this.shutdown();
  }

  private async shutdown(): Promise<void> {
    const lib = this.lib;
    if (!this.running || !lib) return;
    this.running = false;
    this.knownPeersTask?.stop();
    this.redialer?.stop();
    await this.saveKnownPeers().catch((err) => this.log.warn({ err: errorMessage(err) }, "could not save known peers"));
    // libp2p stops every service, the advertisement publisher included (it aborts and awaits a publish in flight).
    const stopped = await Promise.race([Promise.resolve(lib.stop()).then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]).catch(
      (err) => {
        this.log.warn({ err: errorMessage(err) }, "libp2p stop failed");
        return true;
      },
    );
    if (!stopped) this.log.warn({ timeout_ms: STOP_TIMEOUT_MS }, "libp2p did not stop in time; continuing shutdown");
    this.connMetrics?.dispose();
    this.wsListen?.dispose();
    this.wsListen = undefined;
    this.relayMonitor?.dispose();
    this.validation?.dispose();
    this.roomMetricsInstance?.dispose();
    this.log.info({ peer_id: this.peerId }, "p2p network stopped");
  }

  // --- advertisement -----------------------------------------------------------------------------

  publishNow(): Promise<void> {
    if (this.cfg.node.mode === "bootstrap") return Promise.resolve();
    const publisher = this.running ? this.lib?.services.advertPublisher : undefined;
    if (!publisher) return Promise.reject(new AgoraError("P2P", "cannot publish: the network node is not running"));
    return publisher.publishNow();
  }

  async announceDraining(): Promise<void> {
    if (this.cfg.node.mode === "bootstrap") return;
    const publisher = this.running ? this.lib?.services.advertPublisher : undefined;
    if (!publisher) throw new AgoraError("P2P", "cannot publish: the network node is not running");
    await publisher.announceDraining();
  }

  async announceDrainCancelled(): Promise<void> {
    if (this.cfg.node.mode === "bootstrap") return;
    const publisher = this.running ? this.lib?.services.advertPublisher : undefined;
    if (!publisher) throw new AgoraError("P2P", "cannot publish: the network node is not running");
    await publisher.announceDrainCancelled();
  }

  // --- rooms -------------------------------------------------------------------------------------

  get rooms(): RoomDirectory | undefined {
    return this.running ? this.lib?.services.roomDirectory : undefined;
  }

  get roomMetrics(): RoomMetrics | undefined {
    return this.running ? this.roomMetricsInstance : undefined;
  }

  // --- discovery ---------------------------------------------------------------------------------

  async discover(q: DiscoverQuery): Promise<RankedNode[]> {
    const lib = this.lib;
    if (!this.running || !lib || !this.validation) throw new AgoraError("P2P", "cannot discover: the network node is not running");
    return runDiscovery(
      {
        libp2p: lib,
        validation: this.validation,
        logger: this.log,
        preferGroup: this.cfg.node.group,
        selfRecord: () => lib.services.advertPublisher?.current() ?? null,
      },
      q,
    );
  }

  // --- connections -------------------------------------------------------------------------------

  setMaxConnections(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new AgoraError("BAD_REQUEST", `max connections must be a positive integer, got ${n}`);
    this.maxConnections = n;
    this.lib?.services.connectionLimits.setMaxConnections(n);
  }

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
        byPeer.set(id, {
          peer_id: id,
          addrs: [c.remoteAddr.toString()],
          direction: c.direction,
          opened_at: c.timeline.open,
          latency_ms: rtt,
          relayed,
        });
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

  // --- status ------------------------------------------------------------------------------------

  status(): NetworkStatus {
    const lib = this.lib;
    const dht = lib?.services.dht as (KadDHT & Partial<SingleKadDHT>) | undefined;
    return {
      peer_id: this.peerId,
      listen_addrs: this.running ? this.listenAddrs() : [],
      reachability: (this.running && lib?.services.reachability.status()) || "unknown",
      upnp: this.cfg.network.enable_upnp,
      dht: {
        protocol: PROTOCOL_DHT,
        mode: dht && this.running ? dht.getMode() : "server",
        routing_table_size: (this.running && dht?.routingTable?.size) || 0,
      },
      bootstrap: {
        configured: this.cfg.network.bootstrap_peers.length,
        connected: this.running ? (this.redialer?.connectedBootstrapCount() ?? 0) : 0,
      },
      known_peers: this.knownPeers.length,
      advertisement: lib?.services.advertPublisher?.current() ?? null,
      last_published_at: lib?.services.advertPublisher?.lastPublishedAt() ?? null,
      relay:
        this.cfg.node.mode === "relay"
          ? (this.relayMonitor?.stats() ?? { enabled: true, reservations: 0, circuits: 0, bytes_relayed: 0 })
          : null,
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
      let peer: Awaited<ReturnType<typeof lib.peerStore.get>>;
      try {
        peer = await lib.peerStore.get(c.remotePeer as PeerId);
      } catch {
        continue;
      }
      // Only Agora DHT servers help a node rejoin; clients and transient discover nodes do not.
      if (!peer.protocols.includes(PROTOCOL_DHT)) continue;
      const addrs = peer.addresses
        .map((a) => a.multiaddr)
        .filter((ma) => !isCircuit(ma))
        .map((ma) => stripOwnPeerId(ma.toString(), id));
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
