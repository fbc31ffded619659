/**
 * Advertisement publisher as a libp2p service: builds, signs and stores this node's advertisement in the DHT
 * (key `/agora/node/<region>/<peer id>`) at start and then every heartbeat, serves the current record over
 * `/agora/advert/1.0.0`, and keeps the heartbeat history behind the availability half of `reputation`.
 *
 * Publishes are serialised: the heartbeat and an explicit publishNow() (drain, status changes) never overlap,
 * and a failed one never wedges the next.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type AbortOptions,
  type Libp2pEvents,
  type PeerId,
  type PrivateKey,
  type Startable,
  serviceDependencies,
  type TypedEventTarget,
} from "@libp2p/interface";
import type { AddressManager, Registrar } from "@libp2p/interface-internal";
import type { KadDHT } from "@libp2p/kad-dht";
import { isLoopback, isPrivate, type RepeatingTask, repeatingTask } from "@libp2p/utils";
import type { AgoraConfig } from "../config";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { REGION_TOKEN_PATTERN } from "../protocol";
import { writeFileAtomic } from "../state";
import { ipOf, isCircuit, stripOwnPeerId } from "./addrs";
import { serveAdvertisements, unserveAdvertisements } from "./advert-protocol";
import {
  advertisementKeyBytes,
  encodeAdvertisement,
  MAX_RECORD_BYTES,
  NODE_STATUSES,
  type NodeAdvertisement,
  type NodeStatus,
  signAdvertisement,
  type UnsignedAdvertisement,
} from "./advertisement";

export interface LoadFigures {
  current_load: number;
  max_clients: number;
  cpu_percent: number;
  mem_percent: number;
  status: "online" | "degraded" | "draining";
}

export interface AdvertPublisherComponents {
  peerId: PeerId;
  privateKey: PrivateKey;
  addressManager: Pick<AddressManager, "getAddresses" | "getAddressesWithMetadata">;
  registrar: Pick<Registrar, "handle" | "unhandle">;
  dht: Pick<KadDHT, "put">;
  /** `self:peer:update`: our addresses changed (a listener came up late, AutoNAT, UPnP): publish them. */
  events?: Pick<TypedEventTarget<Libp2pEvents>, "addEventListener" | "removeEventListener">;
}

export interface AdvertPublisherInit {
  config: AgoraConfig;
  logger: Logger;
  /** Where the last sequence number is persisted (it must grow across restarts). */
  dataDir: string;
  version: string;
  capabilities: string[];
  load: () => LoadFigures;
  /** Addresses added to the advertisement, given the public IPs AutoNAT confirmed (the STUN-learned UDP endpoint). */
  extraAddrs?: (autonatConfirmedIps: string[]) => string[];
  /** Time between heartbeats (default: network.heartbeat_interval). */
  intervalMs?: number;
}

/** Heartbeats remembered for the availability half of `reputation`. */
const HISTORY = 20;
const STABILITY_HORIZON_S = 7 * 86400;
const SEQ_FILE = "advertisement-seq.json";
/** How long stop() waits for a publish in flight (it is aborted first, so this is only a bound). */
const STOP_WAIT_MS = 2_000;
/** Address updates within this long of each other are published once. */
const ADDRESS_SETTLE_MS = 250;
export const TOKEN = REGION_TOKEN_PATTERN;

export class AdvertPublisher implements Startable {
  readonly [Symbol.toStringTag] = "@agora/advert-publisher";
  readonly [serviceDependencies]: string[] = ["@libp2p/kad-dht"];
  private readonly cfg: AgoraConfig;
  private readonly log: Logger;
  private readonly peerId: string;
  private readonly task: RepeatingTask;
  private running = false;
  private controller = new AbortController();
  private startedAt = Date.now();
  private record: NodeAdvertisement | null = null;
  private recordBytes: Uint8Array | null = null;
  private lastPublished: number | null = null;
  private lastSeq = 0;
  private draining = false;
  private chain: Promise<void> = Promise.resolve();
  private beating = false;
  private beatHeld = false;
  private readonly history: boolean[] = [];
  private lastLoad: LoadFigures | null = null;
  private seqWriteWarned = false;
  private addrTimer: ReturnType<typeof setTimeout> | undefined;
  /** Aborts the put in flight when a newer record makes it pointless. */
  private inflight: AbortController | undefined;

  constructor(
    private readonly components: AdvertPublisherComponents,
    private readonly init: AdvertPublisherInit,
  ) {
    this.cfg = init.config;
    this.log = init.logger;
    this.peerId = components.peerId.toString();
    const intervalMs = init.intervalMs ?? this.cfg.network.heartbeat_interval * 1000;
    this.task = repeatingTask(() => this.beat(), intervalMs, { runImmediately: true });
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.startedAt = Date.now();
    this.draining = false;
    this.lastSeq = this.loadSeq();
    this.controller = new AbortController();
    this.beatHeld = false;
    await serveAdvertisements(this.components.registrar, () => this.recordBytes);
    this.running = true;
  }

  /** The first heartbeat needs the DHT and the listeners (its addresses), started alongside this service. */
  afterStart(): void {
    if (!this.running) return;
    this.task.start();
    this.components.events?.addEventListener("self:peer:update", this.onAddressesChanged);
  }

  /**
   * A listener that reports its address after start (the WebSocket one does), or an address AutoNAT or UPnP
   * confirms later, would otherwise wait a whole heartbeat to be advertised. A burst of updates (several
   * listeners at start) becomes one publish ADDRESS_SETTLE_MS later, and only when the list really changed.
   */
  private readonly onAddressesChanged = (): void => {
    if (!this.running || this.addrTimer) return;
    this.addrTimer = setTimeout(() => {
      this.addrTimer = undefined;
      if (!this.running || !this.record) return;
      const now = this.withExtraAddrs(this.advertisedAddrs());
      if (JSON.stringify(now) === JSON.stringify(this.record.listen_addr)) return;
      // The put in flight carries the old addresses (and may wait out its timeout on a node with no DHT
      // peers yet): the new record supersedes it.
      this.inflight?.abort(new AgoraError("P2P", "superseded by a record with new addresses"));
      void this.publishNow().catch((err) =>
        this.log.debug({ err: errorMessage(err) }, "advertisement republish after an address change failed"),
      );
    }, ADDRESS_SETTLE_MS);
  };

  /** Before the DHT stops: no new heartbeat, and the one in flight is aborted rather than left to fail. */
  beforeStop(): void {
    this.task.stop();
    this.components.events?.removeEventListener("self:peer:update", this.onAddressesChanged);
    clearTimeout(this.addrTimer);
    this.addrTimer = undefined;
    this.controller.abort(new AgoraError("P2P", "the network node is stopping"));
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.task.stop();
    this.components.events?.removeEventListener("self:peer:update", this.onAddressesChanged);
    clearTimeout(this.addrTimer);
    this.addrTimer = undefined;
    this.controller.abort(new AgoraError("P2P", "the network node is stopping"));
    // A publish in flight must never outlive stop().
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.chain, new Promise<void>((r) => (timer = setTimeout(r, STOP_WAIT_MS)))]);
    clearTimeout(timer);
    await unserveAdvertisements(this.components.registrar).catch(() => undefined);
  }

  isStarted(): boolean {
    return this.running;
  }

  /** The current signed record (also what /agora/advert/1.0.0 serves), null before the first publish. */
  current(): NodeAdvertisement | null {
    return this.record;
  }

  /** The highest sequence number this node has used for its record (persisted across restarts). */
  ownSeq(): number {
    return this.lastSeq;
  }

  /** When a put was last accepted by at least one DHT peer. */
  lastPublishedAt(): number | null {
    return this.lastPublished;
  }

  publishNow(): Promise<void> {
    if (!this.running) return Promise.reject(new AgoraError("P2P", "cannot publish: the network node is not running"));
    const next = this.chain.then(() => this.publishOnce());
    // The chain itself never rejects, so one failure cannot wedge later heartbeats.
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** From now on every record says "draining"; publishes one right away. */
  async announceDraining(): Promise<void> {
    this.draining = true;
    await this.publishNow();
  }

  /**
   * The drain was cancelled: records say the load's status again, and one is published right away. Without
   * this the flag stuck, so a node whose drain was cancelled advertised "draining" until it restarted, and
   * discovery (which drops draining nodes) never listed it again: a series of drains and cancels emptied the
   * region of successors (bench/rooms stopped at drain 9 with "no successor mixer").
   */
  async announceDrainCancelled(): Promise<void> {
    if (!this.draining) return;
    this.draining = false;
    await this.publishNow();
  }

  /**
   * One heartbeat. repeatingTask counts its interval from the end of a run, but a heartbeat's period must
   * count from its start: a put that takes long (a loaded machine, a slow DHT) must not stretch the period
   * past the record's TTL (3 heartbeats). So the task only starts a publish and returns; a beat that comes
   * while one is still running is held and runs as soon as it ends (never two at once, never a backlog).
   */
  private beat(): void {
    if (this.beating) {
      this.beatHeld = true;
      return;
    }
    this.beating = true;
    void this.publishNow()
      .catch((err) => {
        if (this.running) this.log.warn({ err: errorMessage(err) }, "advertisement heartbeat failed");
      })
      .finally(() => {
        this.beating = false;
        if (this.beatHeld && this.running) {
          this.beatHeld = false;
          this.beat();
        }
      });
  }

  private loadSeq(): number {
    try {
      const o = JSON.parse(readFileSync(join(this.init.dataDir, SEQ_FILE), "utf8")) as { seq?: unknown };
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
      writeFileAtomic(join(this.init.dataDir, SEQ_FILE), `${JSON.stringify({ seq })}\n`, 0o600);
    } catch (err) {
      if (!this.seqWriteWarned)
        this.log.warn(
          { err: errorMessage(err), data_dir: this.init.dataDir },
          "cannot persist the advertisement sequence number; relying on the clock",
        );
      this.seqWriteWarned = true;
    }
    return seq;
  }

  private currentLoad(): LoadFigures {
    let l: LoadFigures;
    try {
      l = this.init.load();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "load figures unavailable; advertising the last known ones as degraded");
      l = {
        ...(this.lastLoad ?? { current_load: 0, max_clients: this.cfg.node.max_connections, cpu_percent: 0, mem_percent: 0 }),
        status: "degraded",
      };
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
    if (this.cfg.network.announce_addrs.length > 0) return this.cfg.network.announce_addrs.map((a) => stripOwnPeerId(a, this.peerId));
    const all = this.components.addressManager.getAddresses();
    // Loopback addresses only help when nothing else exists (single-host test networks).
    const nonLoopback = all.filter((ma) => !isLoopback(ma));
    const chosen = nonLoopback.length > 0 ? nonLoopback : all;
    return [...new Set(chosen.map((ma) => stripOwnPeerId(ma.toString(), this.peerId)))].slice(0, 16);
  }

  /** Appends init.extraAddrs (after the dialable ones: clients dial the first address). */
  private withExtraAddrs(addrs: string[]): string[] {
    if (!this.init.extraAddrs) return addrs;
    const confirmed = this.components.addressManager
      .getAddressesWithMetadata()
      .filter((a) => a.verified && !isCircuit(a.multiaddr) && !isPrivate(a.multiaddr))
      .map((a) => ipOf(a.multiaddr));
    const extra = this.init.extraAddrs([...new Set(confirmed.filter((ip): ip is string => ip !== undefined))]);
    return [...new Set([...addrs.slice(0, 16 - Math.min(extra.length, 4)), ...extra.slice(0, 4)])];
  }

  private buildUnsigned(): UnsignedAdvertisement {
    const load = this.currentLoad();
    const uptime = Math.floor((Date.now() - this.startedAt) / 1000);
    const status: NodeStatus = this.draining ? "draining" : load.status;
    return {
      peer_id: this.peerId,
      version: this.init.version.slice(0, 64),
      region: this.cfg.node.region,
      capabilities: this.init.capabilities.filter((c) => TOKEN.test(c)).slice(0, 16),
      max_clients: load.max_clients,
      current_load: load.current_load,
      uptime_seconds: uptime,
      reputation: this.reputation(uptime),
      last_seen: Math.round(Date.now()) / 1000,
      listen_addr: this.withExtraAddrs(this.advertisedAddrs()),
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
      const rec = await signAdvertisement(u, this.components.privateKey);
      const bytes = encodeAdvertisement(rec);
      if (bytes.byteLength <= MAX_RECORD_BYTES) return { rec, bytes };
      if (u.labels.length > 0) u = { ...u, labels: u.labels.slice(0, -1) };
      else if (u.listen_addr.length > 1) u = { ...u, listen_addr: u.listen_addr.slice(0, -1) };
      else throw new AgoraError("P2P", `advertisement does not fit in ${MAX_RECORD_BYTES} bytes`);
      this.log.warn({ bytes: bytes.byteLength }, "advertisement too large; dropping labels/addresses to fit");
    }
  }

  private async publishOnce(opts: AbortOptions = {}): Promise<void> {
    if (!this.running) return;
    const { rec, bytes } = await this.signFitting(this.buildUnsigned());
    // Served by /agora/advert/1.0.0 right away, whatever the DHT does.
    this.record = rec;
    this.recordBytes = bytes;
    const key = advertisementKeyBytes(rec.region, this.peerId);
    const timeoutMs = Math.min(30_000, Math.max(2_000, this.cfg.network.heartbeat_interval * 2000));
    const superseded = new AbortController();
    this.inflight = superseded;
    const signal = AbortSignal.any([
      this.controller.signal,
      superseded.signal,
      AbortSignal.timeout(timeoutMs),
      ...(opts.signal ? [opts.signal] : []),
    ]);
    let stored = 0;
    let failed = 0;
    try {
      for await (const ev of this.components.dht.put(key, bytes, { signal })) {
        if (
          ev.name === "PEER_RESPONSE" &&
          ev.messageName === "PUT_VALUE" &&
          ev.record &&
          Buffer.compare(Buffer.from(ev.record.value), Buffer.from(bytes)) === 0
        )
          stored++;
        else if (ev.name === "QUERY_ERROR") failed++;
      }
    } catch (err) {
      // Timeout with no DHT peers yet, or shutdown: not an error worth more than debug, the next beat retries.
      this.log.debug({ err: errorMessage(err), stored }, "advertisement put ended early");
    }
    if (this.inflight === superseded) this.inflight = undefined;
    this.history.push(stored > 0);
    if (this.history.length > HISTORY) this.history.shift();
    if (stored > 0) this.lastPublished = Date.now();
    this.log.debug(
      { seq: rec.seq, status: rec.status, stored, failed },
      stored > 0 ? "advertisement published" : "advertisement reached no DHT peer",
    );
  }
}

export function advertPublisher(init: AdvertPublisherInit): (components: AdvertPublisherComponents) => AdvertPublisher {
  return (components) => new AdvertPublisher(components, init);
}
