/**
 * The running node: composes config, identity, metrics, HTTP, the libp2p network and (in dedicated mode)
 * the media engine with its audio room service, and owns the node's state machine:
 *   starting → ready → draining → stopping.
 * It is also the DashboardSource the HTTP layer reads from.
 */
import { hostname } from "node:os";
import { Counter, type Registry } from "prom-client";
import { createMediaEngine, type MediaEngine, mediaMetrics } from "../audio";
import { type AgoraConfig, type LoadedConfig, maskSecrets, restartRequiredChanges, specFor } from "../config";
import { AgoraError, errorMessage, isAddressInUse, portInUse } from "../errors";
import {
  DashboardServer,
  type DashboardSource,
  type DiscoverParams,
  type DiscoveryReport,
  type HistorySample,
  MetricsServer,
  type NodeState,
  type PeerReport,
  participantReport,
  type RelayReport,
  type ReloadReport,
  type RoomReport,
  type StatusReport,
} from "../http";
import type { LogHandle, LogLevel } from "../log";
import { createNodeMetrics, type NodeMetrics } from "../metrics";
import { createNetworkNode, type LoadFigures, type NetworkNode } from "../p2p";
import { AudioRoomService, UdpVoiceEndpoint } from "../rooms";
import { StunService } from "../stun";
import { type Identity, loadOrCreateIdentity } from "./identity";
import { Lifecycle, type Service } from "./lifecycle";
import { acquirePidLock, type PidLock } from "./pidfile";
import { createRoomPlacement, RecordRevocations, type RoomPlacementWiring } from "./room-placement";
import { type ServiceNotifier, systemdNotifier } from "./sd-notify";
import { SystemSampler } from "./system";

export const CAPABILITIES: Record<AgoraConfig["node"]["mode"], string[]> = {
  dedicated: ["mixer"],
  relay: ["relay"],
  bootstrap: ["bootstrap"],
};

const HISTORY_INTERVAL_MS = 2_000;
const HISTORY_SAMPLES = 300; // 10 minutes
const ANNOUNCE_WAIT_MS = 3_000;

export interface NodeRuntimeOptions {
  loaded: LoadedConfig;
  /** Re-reads file + environment + the original CLI overrides (SIGHUP, POST /api/reload). */
  reloadConfig: () => LoadedConfig;
  logs: LogHandle;
  version: string;
  /** systemd notifications (READY, RELOADING, STOPPING, WATCHDOG); from $NOTIFY_SOCKET by default. */
  notifier?: ServiceNotifier;
}

function service(name: string, start: () => Promise<void> | void, stop: () => Promise<void> | void): Service {
  return { name, start: async () => void (await start()), stop: async () => void (await stop()) };
}

export class NodeRuntime implements DashboardSource {
  private config: AgoraConfig;
  private readonly log;
  private readonly lifecycle;
  private readonly sampler = new SystemSampler();
  private stateValue: NodeState = "starting";
  private startingReason = "starting";
  private readonly startedAt = Date.now();
  private identity?: Identity;
  private metrics?: NodeMetrics;
  private network?: NetworkNode;
  private stun?: StunService;
  private corsRefusedTotal?: Counter<"reason">;
  private media?: MediaEngine;
  private rooms_?: AudioRoomService;
  private placement?: RoomPlacementWiring;
  private placementTimer?: ReturnType<typeof setInterval>;
  /** Participants per open room on this node (from the room service), and rooms whose claim is in flight. */
  private readonly roomCounts = new Map<string, number>();
  private readonly roomClaims = new Set<string>();
  private pidLock?: PidLock;
  private dashboard?: DashboardServer;
  private historyTimer?: ReturnType<typeof setInterval>;
  private readonly historyRing: HistorySample[] = [];
  private drainStartedAt: number | null = null;
  private drainDeadline: number | null = null;
  private drainWaiter?: Promise<void>;
  private drainCancelled = false;
  /** aborted when the drain is cancelled: the handover stops looking for successors */
  private drainAbort?: AbortController;
  private readonly notifier: ServiceNotifier;

  constructor(private readonly opts: NodeRuntimeOptions) {
    this.config = opts.loaded.config;
    this.log = opts.logs.logger;
    this.lifecycle = new Lifecycle(this.log);
    this.notifier = opts.notifier ?? systemdNotifier(this.log);
  }

  get peerId(): string {
    return this.identity?.peerId ?? "";
  }

  dashboardUrl(): string | undefined {
    return this.dashboard?.url();
  }

  async start(): Promise<void> {
    const c = this.config;
    // The watchdog runs from the first moment: a start that hangs is as dead as a node that hangs.
    this.notifier.startWatchdog();
    try {
      await this.lifecycle.start(
        service(
          "pidfile",
          () => {
            this.pidLock = acquirePidLock(c.node.pid_file, c.node.data_dir);
            if (this.pidLock.replacedStale !== undefined)
              this.log.warn({ pid_file: c.node.pid_file, stale_pid: this.pidLock.replacedStale }, "replaced a stale PID file");
            if (this.pidLock.permissionWarning) this.log.warn({ data_dir: c.node.data_dir }, this.pidLock.permissionWarning);
          },
          () => this.pidLock?.release(),
        ),
      );
      this.startingReason = "loading identity";
      this.identity = await loadOrCreateIdentity(c.identity.key_file);
      if (this.identity.created)
        this.log.info({ key_file: c.identity.key_file, peer_id: this.identity.peerId }, "created a new node identity");
      if (this.identity.permissionWarning) this.log.warn(this.identity.permissionWarning);

      this.metrics = createNodeMetrics(
        { version: this.opts.version, mode: c.node.mode, region: c.node.region, peer_id: this.identity.peerId },
        this.startedAt,
      );
      // The seed's audio series exist in every mode (zero on relay and bootstrap nodes), so one dashboard
      // and one set of alerts serve the whole mesh.
      mediaMetrics(this.metrics.registry);
      this.corsRefusedTotal = new Counter({
        name: "agora_http_cors_refused_total",
        help: "Cross-origin preflights refused, by reason (origin not listed, path not read-only, method, header)",
        labelNames: ["reason"] as const,
        registers: [this.metrics.registry],
      });

      // HTTP first, so /health answers 503 "starting" while the network comes up.
      if (c.dashboard.enabled) {
        const dashboard = new DashboardServer(this, c.dashboard.listen_addr, c.dashboard.port);
        await this.lifecycle.start(dashboard);
        this.dashboard = dashboard;
      }
      if (c.metrics.enabled) {
        const m = this.metrics;
        await this.lifecycle.start(new MetricsServer(m.render, m.contentType, c.metrics.listen_addr, c.metrics.port, c.metrics.endpoint));
      }

      this.startingReason = "joining the network";
      // Voice datagrams are carried by the media worker, which owns their socket, so the main thread keeps only
      // control (src/audio/datagram-io.ts): by default the node's UDP socket on the P2P port's number, shared
      // with STUN (the mapping STUN learns is the one clients reach; the worker hands STUN's messages back and
      // sends STUN's requests), or one of their own when audio.udp_port names another port.
      const voiceInWorker = c.node.mode === "dedicated" && c.audio.udp_enabled;
      const ownVoicePort = voiceInWorker && this.ownVoicePort(c);
      const sharedVoice = voiceInWorker && !ownVoicePort;
      if (c.node.mode === "dedicated")
        this.media = createMediaEngine({
          settings: this.mediaSettings(c),
          logger: this.log.child({ subsystem: "audio" }),
          registry: this.metrics.registry,
          // Room statistics feed the roster's speaking flags (protocol.md "Roster"): 4 refreshes a second.
          statsIntervalMs: 250,
          ...(ownVoicePort ? { datagrams: { hostname: c.audio.udp_listen_addr, port: c.audio.udp_port } } : {}),
          ...(sharedVoice ? { datagrams: { hostname: c.node.listen_addr, port: c.node.listen_port, stun: true } } : {}),
        });
      const media = this.media;
      const startMedia = async (): Promise<void> => {
        if (!media) return;
        this.startingReason = "starting the media engine";
        await this.lifecycle.start(
          service(
            "media",
            () =>
              media.start().catch((err) => {
                if (ownVoicePort && isAddressInUse(err)) throw portInUse("audio.udp_port", c.audio.udp_listen_addr, c.audio.udp_port, err);
                if (sharedVoice && isAddressInUse(err)) throw portInUse("node.listen_port", c.node.listen_addr, c.node.listen_port, err);
                throw err;
              }),
            () => media.stop(),
          ),
        );
      };
      // The node's UDP socket on the P2P port's number: STUN's own on the main thread, or the media worker's.
      const stun = new StunService({
        servers: c.network.stun_servers,
        listenAddr: c.node.listen_addr,
        listenPort: c.node.listen_port,
        ...(sharedVoice && media?.datagrams?.socket ? { endpoint: media.datagrams.socket } : {}),
        logger: this.log.child({ subsystem: "stun" }),
        registry: this.metrics.registry,
      });
      this.stun = stun;
      this.network = createNetworkNode({
        config: c,
        privateKey: this.identity.privateKey,
        logger: this.log.child({ subsystem: "p2p" }),
        registry: this.metrics.registry,
        dataDir: c.node.data_dir,
        version: this.opts.version,
        capabilities: CAPABILITIES[c.node.mode],
        load: () => this.loadFigures(),
        extraAddrs: (autonatIps) => stun.advertisableAddrs(autonatIps),
      });
      const network = this.network;
      await this.lifecycle.start(
        service(
          "p2p",
          async () => {
            try {
              await network.start();
            } catch (err) {
              // libp2p's own message spans lines with a stack trace; the operator needs the key and the port.
              if (isAddressInUse(err) && c.network.ws_port !== 0 && new RegExp(`:${c.network.ws_port}\\b`).test(errorMessage(err)))
                throw portInUse("network.ws_port", c.network.ws_listen_addr, c.network.ws_port, err);
              if (isAddressInUse(err)) throw portInUse("node.listen_port", c.node.listen_addr, c.node.listen_port, err);
              throw err;
            }
          },
          () => network.stop(),
        ),
      );
      // The worker binds the shared socket before STUN runs on it.
      if (sharedVoice) await startMedia();
      await this.lifecycle.start(stun);
      stun.onChange(() => void network.publishNow().catch(() => undefined));

      if (media) {
        if (!sharedVoice) await startMedia();
        const udp = c.audio.udp_enabled ? this.voiceDatagramEndpoint(c, this.metrics.registry) : undefined;
        // The room directory's placement (claims, REDIRECT, handover) runs where the network hosts rooms.
        const directory = this.network.rooms;
        // Owned rooms' revocations live in the room records, so a ban holds wherever the room moves.
        const revocations = directory ? new RecordRevocations(directory, this.log.child({ subsystem: "rooms" })) : undefined;
        this.placement = directory
          ? createRoomPlacement({
              network: this.network,
              directory,
              privateKey: this.identity.privateKey,
              region: c.node.region,
              registry: this.metrics.registry,
              logger: this.log.child({ subsystem: "rooms" }),
              revocations,
            })
          : undefined;
        const rooms = new AudioRoomService({
          libp2p: this.network.libp2p,
          host: this.placement?.host,
          ...(revocations ? { revocations } : {}),
          engine: media,
          ...udp,
          logger: this.log.child({ subsystem: "rooms" }),
          registry: this.metrics.registry,
          bitrate: c.audio.bitrate,
          limits: {
            peerMaxStreams: c.audio.max_streams_per_peer,
            ipMaxStreams: c.audio.max_streams_per_ip,
            peerJoinsPerSecond: c.audio.joins_per_second_per_peer,
            peerJoinBurst: 4 * c.audio.joins_per_second_per_peer,
            ipJoinsPerSecond: c.audio.joins_per_second_per_ip,
            ipJoinBurst: 4 * c.audio.joins_per_second_per_ip,
          },
          onRoomParticipants: (room, n) => this.onRoomParticipants(room, n),
        });
        this.rooms_ = rooms;
        await this.lifecycle.start(
          service(
            "audio-rooms",
            () => rooms.start(),
            () => rooms.stop(),
          ),
        );
        const placement = this.placement;
        if (placement) {
          // Re-resolve hosted rooms often enough that a lost claim (a healed partition) moves within seconds.
          const beatMs = Math.min(5_000, c.network.heartbeat_interval * 1000);
          this.placementTimer = setInterval(() => void placement.beat(rooms.hostedRooms()), beatMs);
          this.placementTimer.unref?.();
        }
      }

      if (this.isolated(c.network.bootstrap_peers.length, this.network.status().known_peers))
        this.log.warn(
          { bootstrap_peers: 0, known_peers: 0 },
          "no bootstrap peers configured and no known peers: no other node can find this one (set network.bootstrap_peers)",
        );
      this.sampleHistory();
      this.historyTimer = setInterval(() => this.sampleHistory(), HISTORY_INTERVAL_MS);
      this.historyTimer.unref?.();
      this.stateValue = "ready";
      this.log.info(
        {
          mode: c.node.mode,
          peer_id: this.identity.peerId,
          listen: this.network.listenAddrs(),
          dashboard: this.dashboard?.url(),
          metrics: c.metrics.enabled ? `http://${c.metrics.listen_addr}:${c.metrics.port}${c.metrics.endpoint}` : undefined,
          data_dir: c.node.data_dir,
        },
        "agora-node ready",
      );
      this.notifier.ready(this.readyStatus());
    } catch (err) {
      this.notifier.status(`failed to start: ${errorMessage(err)}`);
      this.stateValue = "stopping";
      await this.lifecycle.stopAll();
      throw err;
    }
  }

  /**
   * Keeps this node's room records in the DHT in step with its rooms: the first JOIN claims the room (epoch 1)
   * unless another live host holds it, every change updates the participant count on the next heartbeat,
   * the last LEAVE releases it. Placement (REDIRECT, handover) replaces the claim-on-first-JOIN part.
   */
  private onRoomParticipants(room: string, n: number): void {
    if (n === 0) this.roomCounts.delete(room);
    else this.roomCounts.set(room, n);
    const dir = this.network?.rooms;
    if (!dir) return;
    // Rooms placed by RoomHost (directory-aware joiners) are claimed, handed over and released by it; only
    // the count is kept here. Rooms that only older clients joined keep the claim-on-first-JOIN below.
    if (this.placement?.host.epochOf(room) !== undefined) {
      dir.setParticipants(room, n);
      return;
    }
    if (n === 0) {
      void dir.release(room).catch(() => undefined);
      return;
    }
    if (dir.current(room) || this.roomClaims.has(room)) {
      dir.setParticipants(room, n);
      return;
    }
    this.roomClaims.add(room);
    void (async () => {
      try {
        const live = await dir.resolve(room);
        // Still open here, and not claimed meanwhile?
        if (!this.roomCounts.has(room) || dir.current(room)) return;
        if (live && live.host !== this.peerId) {
          this.log.info({ room, host: live.host, epoch: live.epoch }, "room is hosted by another live mixer; not claiming it");
          return;
        }
        await dir.claim(room, { epoch: live?.epoch ?? 1, participants: this.roomCounts.get(room) ?? n });
        // The last participant may have left while the claim was being published.
        if (!this.roomCounts.has(room)) await dir.release(room);
      } catch (err) {
        this.log.warn({ room, err: errorMessage(err) }, "room claim failed");
      } finally {
        this.roomClaims.delete(room);
      }
    })();
  }

  /** One line for `systemctl status`. */
  private readyStatus(): string {
    const c = this.config;
    return `ready: ${c.node.mode} node ${this.peerId}${this.dashboard ? `, dashboard ${this.dashboard.url()}` : ""}`;
  }

  /** audio.udp_port names a socket apart from the node's STUN one. */
  private ownVoicePort(c: AgoraConfig): boolean {
    return c.audio.udp_port !== 0 && !(c.audio.udp_port === c.node.listen_port && c.audio.udp_listen_addr === c.node.listen_addr);
  }

  /**
   * The room service's side of the voice datagrams the media worker carries: on the node's shared UDP socket
   * by default, on a socket of their own when audio.udp_port names another port.
   */
  private voiceDatagramEndpoint(c: AgoraConfig, registry: Registry): { udp: UdpVoiceEndpoint; udpAddrs: string[] } | undefined {
    const plane = this.media?.datagrams;
    if (!plane) return undefined;
    const addr = this.ownVoicePort(c) ? c.audio.udp_listen_addr : c.node.listen_addr;
    const udp = new UdpVoiceEndpoint({ plane, planeAddress: addr, registry, logger: this.log.child({ subsystem: "rooms" }) });
    return { udp, udpAddrs: addr === "0.0.0.0" || addr === "::" ? [] : [addr] };
  }

  private mediaSettings(c: AgoraConfig) {
    return {
      topKSpeakers: c.audio.top_k_speakers,
      sharedEncode: c.audio.shared_encode,
      bitrate: c.audio.bitrate,
      jitterMinMs: c.audio.jitter_min_ms,
      jitterMaxMs: c.audio.jitter_max_ms,
      maxRooms: c.node.max_mixers,
      maxParticipants: c.node.max_connections,
    };
  }

  private loadFigures(): LoadFigures {
    const sys = this.sampler.sample();
    const c = this.config;
    const current = this.currentLoad();
    const status =
      this.stateValue === "draining" || this.stateValue === "stopping"
        ? "draining"
        : sys.cpu_percent > 90 || current >= c.node.max_connections
          ? "degraded"
          : "online";
    return {
      current_load: current,
      max_clients: c.node.max_connections,
      cpu_percent: sys.cpu_percent,
      mem_percent: sys.mem_percent,
      status,
    };
  }

  private currentLoad(): number {
    if (this.config.node.mode === "dedicated") return this.media?.participantCount() ?? 0;
    if (this.config.node.mode === "relay") return this.network?.status().relay?.circuits ?? 0;
    return this.network?.peers().length ?? 0;
  }

  private sampleHistory(): void {
    const sys = this.sampler.sample();
    this.historyRing.push({
      t: Date.now(),
      peers: this.network?.peers().length ?? 0,
      rooms: this.media?.rooms().length ?? 0,
      participants: this.media?.participantCount() ?? 0,
      cpu_percent: sys.cpu_percent,
      rss_mb: Math.round(sys.rss_bytes / 1048576),
    });
    if (this.historyRing.length > HISTORY_SAMPLES) this.historyRing.shift();
  }

  // --- DashboardSource -------------------------------------------------------------------------

  state(): NodeState {
    return this.stateValue;
  }

  notReadyReason(): string | undefined {
    if (this.stateValue === "starting") return this.startingReason;
    if (this.stateValue === "draining") return "draining: not accepting new rooms or participants";
    if (this.stateValue === "stopping") return "shutting down";
    return undefined;
  }

  authToken(): string {
    return this.config.dashboard.auth_token;
  }

  corsOrigins(): readonly string[] {
    return this.config.dashboard.cors_origins;
  }

  webSocketAddrs(): string[] {
    return (this.network?.listenAddrs() ?? []).filter((a) => /\/(ws|wss)(\/|$)/.test(a));
  }

  corsRefused(reason: "origin" | "path" | "method" | "header"): void {
    this.corsRefusedTotal?.inc({ reason });
  }

  status(): StatusReport {
    const c = this.config;
    const sys = this.sampler.sample();
    const masked = maskSecrets(c);
    const rooms = this.media?.rooms() ?? [];
    return {
      name: c.identity.name || hostname(),
      version: this.opts.version,
      mode: c.node.mode,
      state: this.stateValue,
      peer_id: this.peerId,
      region: c.node.region,
      group: c.node.group,
      labels: c.node.labels,
      capabilities: CAPABILITIES[c.node.mode],
      started_at: new Date(this.startedAt).toISOString(),
      uptime_seconds: Math.round((Date.now() - this.startedAt) / 1000),
      load: {
        current_load: this.currentLoad(),
        max_clients: c.node.max_connections,
        cpu_percent: sys.cpu_percent,
        mem_percent: sys.mem_percent,
        rss_bytes: sys.rss_bytes,
      },
      limits: { max_connections: c.node.max_connections, max_mixers: c.node.max_mixers, drain_timeout_seconds: c.node.drain_timeout },
      rooms_active: rooms.length,
      participants: this.media?.participantCount() ?? 0,
      peers_connected: this.network?.peers().length ?? 0,
      network: this.network ? (this.network.status() as unknown as Record<string, unknown>) : null,
      turn: masked.turn,
      stun_servers: c.network.stun_servers,
      stun: this.stun?.endpoint ? this.stun.report() : null,
      drain:
        this.drainStartedAt === null
          ? null
          : {
              started_at: new Date(this.drainStartedAt).toISOString(),
              deadline: this.drainDeadline === null ? null : new Date(this.drainDeadline).toISOString(),
            },
      media: this.media ? { worker_restarts: this.media.workerRestarts } : null,
      discovery: this.discoveryReport(),
      relay: this.relayReport(),
    };
  }

  private discoveryReport(): DiscoveryReport {
    const net = this.network?.status();
    const configured = this.config.network.bootstrap_peers.length;
    const known = net?.known_peers ?? 0;
    return {
      bootstrap_configured: configured,
      bootstrap_connected: net?.bootstrap.connected ?? 0,
      known_peers: known,
      routing_table_size: net?.dht.routing_table_size ?? 0,
      publishes: this.config.node.mode !== "bootstrap",
      last_published_at: net?.last_published_at ? new Date(net.last_published_at).toISOString() : null,
      isolated: this.isolated(configured, known),
    };
  }

  /**
   * A node nobody can find: no bootstrap peer to join through, no remembered peer, no connection. A
   * bootstrap node is exempt: the first one of a network starts that way, and others list it.
   */
  private isolated(bootstrapConfigured: number, knownPeers: number): boolean {
    return (
      this.config.node.mode !== "bootstrap" && bootstrapConfigured === 0 && knownPeers === 0 && (this.network?.peers().length ?? 0) === 0
    );
  }

  private relayReport(): RelayReport | null {
    const r = this.network?.status().relay;
    if (this.config.node.mode !== "relay") return null;
    return { reservations: r?.reservations ?? 0, circuits: r?.circuits ?? 0, bytes_relayed: r?.bytes_relayed ?? 0 };
  }

  peers(): PeerReport[] {
    return this.network?.peers() ?? [];
  }

  rooms(): RoomReport[] {
    const directory = new Map((this.network?.rooms?.info() ?? []).map((d) => [d.room, d]));
    const dirReport = (id: string): RoomReport["directory"] => {
      const d = directory.get(id);
      if (!d) return undefined;
      return {
        hosted_here: d.hosted_here,
        epoch: d.epoch,
        status: d.status,
        handovers_in: d.handovers_in,
        handovers_out: d.handovers_out,
        last_published_at: d.last_published_at === null ? null : new Date(d.last_published_at).toISOString(),
      };
    };
    const open = (this.media?.rooms() ?? []).map((r) => ({
      id: r.id,
      created_at: r.createdAt,
      participants: r.participants.map(participantReport),
      directory: dirReport(r.id),
    }));
    // Rooms the directory knows that are not open here (handed over, claim pending): listed with no participants.
    const openIds = new Set(open.map((r) => r.id));
    const others = [...directory.keys()]
      .filter((id) => !openIds.has(id))
      .map((id) => ({ id, created_at: 0, participants: [], directory: dirReport(id) }));
    return [...open, ...others];
  }

  history(): HistorySample[] {
    return [...this.historyRing];
  }

  async discover(q: DiscoverParams): Promise<unknown[]> {
    if (!this.network) throw new AgoraError("SHUTTING_DOWN", "the network is not running");
    return this.network.discover(q);
  }

  /**
   * Enters draining: /health turns 503 at once, no new rooms or joins are accepted, the advertisement says
   * "draining"; resolves when the last participant left or node.drain_timeout passed.
   */
  drain(): Promise<void> {
    if (this.drainWaiter) return this.drainWaiter;
    this.stateValue = "draining";
    this.drainCancelled = false;
    this.drainStartedAt = Date.now();
    const timeoutMs = this.config.node.drain_timeout * 1000;
    this.drainDeadline = this.drainStartedAt + timeoutMs;
    this.rooms_?.setDraining(true);
    this.notifier.status(`draining: ${this.media?.participantCount() ?? 0} participants, deadline in ${this.config.node.drain_timeout}s`);
    this.log.info(
      { participants: this.media?.participantCount() ?? 0, drain_timeout_s: this.config.node.drain_timeout },
      "draining: no new rooms or participants",
    );
    const announce = this.network
      ?.announceDraining()
      .catch((err) => this.log.warn({ err: errorMessage(err) }, "could not publish draining status"));
    // Clients should see "draining" before the node leaves, but a DHT with no reachable peers must not
    // hold the shutdown hostage: the announcement gets a bounded wait, in parallel with the drain.
    const announced = (this.network?.peers().length ?? 0) === 0 ? Promise.resolve() : Promise.race([announce, Bun.sleep(ANNOUNCE_WAIT_MS)]);
    this.drainWaiter = (async () => {
      try {
        // Rooms with a successor move there (the drain need not wait for them to empty); participants that
        // stay (no successor in the region, clients that cannot follow a MOVE) are waited for as before,
        // up to node.drain_timeout.
        if (this.placement && this.rooms_) await this.handOverRooms(this.placement, this.rooms_);
        await this.waitForEmptyRooms();
      } finally {
        await announced;
      }
    })();
    return this.drainWaiter;
  }

  /**
   * Drain with a room directory: each hosted room goes to its successor (MOVE with tokens); the drain is over
   * when no moved participant is left here (they joined the successor), bounded by node.drain_timeout.
   * Participants that were not moved (no successor, 1.0.0 clients) are then waited for by waitForEmptyRooms.
   */
  private async handOverRooms(placement: RoomPlacementWiring, rooms: AudioRoomService): Promise<void> {
    // Successors are picked at once from every mixer this node knows to be live (connected mixers' own
    // advertisements, the last list, recent walks), not after a fresh walk: on a busy machine a walk may take
    // its whole bound and find none. Only a try that finds none walks afresh (the handover's retries): a
    // walk's CPU beside the switch would delay this host's last frames to the moving participants.
    const cancelled = new AbortController();
    this.drainAbort = cancelled;
    const moved = await placement.host.handOverAll({ deadlineMs: this.drainDeadline ?? Date.now(), signal: cancelled.signal });
    this.log.info({ rooms: moved.length, participants: rooms.movingParticipants() }, "draining: rooms handed over to their successors");
    while (!this.drainCancelled) {
      const left = rooms.movingParticipants();
      if (left === 0) {
        this.log.info({ rooms: moved }, "drained: every moved participant is on the successor");
        return;
      }
      if (Date.now() >= this.drainDeadline!) {
        this.log.warn({ participants: left }, "drain timeout reached before every participant moved");
        return;
      }
      await Bun.sleep(50);
    }
  }

  private async waitForEmptyRooms(): Promise<void> {
    while (!this.drainCancelled) {
      const left = this.media?.participantCount() ?? 0;
      if (left === 0) {
        this.log.info("drained: no participants left");
        return;
      }
      if (Date.now() >= this.drainDeadline!) {
        this.log.warn({ participants: left }, "drain timeout reached; remaining participants will be disconnected");
        return;
      }
      await Bun.sleep(100);
    }
  }

  cancelDrain(): boolean {
    if (this.stateValue !== "draining") return false;
    this.drainCancelled = true;
    this.drainAbort?.abort();
    this.drainAbort = undefined;
    this.drainWaiter = undefined;
    this.drainStartedAt = null;
    this.drainDeadline = null;
    this.rooms_?.setDraining(false);
    this.stateValue = "ready";
    // At once, not at the next heartbeat: discovery drops draining nodes, and a region's next drain picks
    // its successor from what discovery finds.
    void this.network
      ?.announceDrainCancelled()
      .catch((err) => this.log.warn({ err: errorMessage(err) }, "could not publish the cancelled drain's status"));
    this.notifier.status(this.readyStatus());
    this.log.info("drain cancelled; accepting rooms again");
    return true;
  }

  /** Graceful shutdown: drain, then stop every part in reverse order. */
  async shutdown(): Promise<void> {
    // STOPPING=1 only here: a drain through POST /api/drain can be cancelled, a shutdown cannot.
    this.notifier.stopping(`stopping: draining up to ${this.config.node.drain_timeout}s`);
    if (this.stateValue === "ready" || this.stateValue === "draining") {
      if (this.drainCancelled) this.drainWaiter = undefined;
      await this.drain();
    }
    this.stateValue = "stopping";
    clearInterval(this.historyTimer);
    clearInterval(this.placementTimer);
    const failures = await this.lifecycle.stopAll();
    this.notifier.close();
    this.log.info({ failures }, failures.length ? "stopped with errors" : "stopped");
  }

  async reload(): Promise<ReloadReport> {
    // A node already stopping tells systemd nothing more than STOPPING=1.
    const tell = this.stateValue !== "stopping";
    if (tell) this.notifier.reloading();
    try {
      return this.reloadNow();
    } finally {
      // Back to READY=1 whatever the outcome: a rejected config leaves the running one in force.
      if (tell) this.notifier.ready(this.stateValue === "ready" ? this.readyStatus() : this.stateValue);
    }
  }

  private reloadNow(): ReloadReport {
    let next: LoadedConfig;
    try {
      next = this.opts.reloadConfig();
    } catch (err) {
      const errors = errorMessage(err).split("\n");
      this.log.error({ errors }, "config reload rejected; keeping the running config");
      return { ok: false, applied: [], restart_required: [], errors };
    }
    for (const w of next.warnings) this.log.warn({ source: w.source, key: w.path }, w.message);
    const { live, restart } = restartRequiredChanges(this.config, next.config);
    // Every key the schema marks live is copied into the running config; the others keep their running
    // value until a restart. Then each changed key's effect is applied (see LIVE_EFFECTS).
    const effects = new Set<LiveEffect>();
    for (const path of live) {
      const spec = specFor(path)!;
      const running = this.config[spec.section] as unknown as Record<string, unknown>;
      const value = (next.config[spec.section] as unknown as Record<string, unknown>)[spec.key];
      running[spec.key] = Array.isArray(value) ? [...value] : value;
      effects.add(liveEffectOf(path));
    }
    for (const effect of effects) this.applyLiveEffect(effect);
    if (restart.length) this.log.warn({ keys: restart }, "changed keys need a restart to take effect");
    this.log.info({ applied: live }, "config reloaded");
    return { ok: true, applied: live, restart_required: restart, errors: [] };
  }

  private applyLiveEffect(effect: LiveEffect): void {
    const c = this.config;
    switch (effect) {
      case "log-level":
        this.opts.logs.setLevel(c.logging.level as LogLevel);
        return;
      case "limits":
        this.network?.setMaxConnections(c.node.max_connections);
        this.media?.updateSettings(this.mediaSettings(c));
        // The advertisement carries max_clients: publish the new figure now, not at the next heartbeat.
        void this.network?.publishNow().catch(() => undefined);
        return;
      case "media":
        this.media?.updateSettings(this.mediaSettings(c));
        // The bitrate the room service suggests to new participants in JOINED follows audio.bitrate.
        this.rooms_?.updateSettings({ bitrate: c.audio.bitrate });
        return;
      case "read-on-use":
        return;
    }
  }
}

/**
 * What applying a changed live key takes. "read-on-use": the running config is read where the value is
 * used (drain timeout when a drain starts, admin token per request), so copying it is the whole effect.
 */
export type LiveEffect = "log-level" | "limits" | "media" | "read-on-use";

/** The effect of each live key of the schema; a live key missing here fails the reload test. */
export const LIVE_EFFECTS: Readonly<Record<string, LiveEffect>> = {
  "logging.level": "log-level",
  "node.max_connections": "limits",
  "node.max_mixers": "limits",
  "node.drain_timeout": "read-on-use",
  "audio.top_k_speakers": "media",
  "audio.shared_encode": "media",
  "audio.bitrate": "media",
  "audio.jitter_min_ms": "media",
  "audio.jitter_max_ms": "media",
  "dashboard.auth_token": "read-on-use",
  "dashboard.auth_token_file": "read-on-use",
  // The CORS plugin asks corsOrigins() per request.
  "dashboard.cors_origins": "read-on-use",
};

function liveEffectOf(path: string): LiveEffect {
  const effect = LIVE_EFFECTS[path];
  if (!effect)
    throw new AgoraError("INTERNAL", `config key ${path} is marked live but has no live effect (src/node/runtime.ts LIVE_EFFECTS)`);
  return effect;
}
