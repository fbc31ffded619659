/**
 * The room directory as a libp2p service (mixer nodes): publishes the room records of the rooms this node
 * hosts (room-record.ts) in the DHT at claim time and then every `intervalMs`, resolves where any room lives,
 * provides the region's room namespace while it hosts rooms, and serves its hosted rooms' records over
 * `/agora/rooms/1.0.0` so `agora-node rooms` can list them (a DHT cannot enumerate keys).
 *
 * What it does not do: decide where a room should go (placement), redirect joiners or move participants.
 * Those build on claim/update/release/resolve and on the handover counters kept here per room.
 *
 * Liveness: a record's ttl is 3 × intervalMs. A host that dies stops re-signing, so its record is refused
 * everywhere (stale) within 3 intervals; resolve() also ignores records whose last_seen is older than 3 of
 * its own intervals, whatever ttl they claim. The heartbeat runs on an injectable clock (tests: virtual time).
 */
import type { AbortOptions, PeerId, PrivateKey, Startable, Stream } from "@libp2p/interface";
import type { AddressManager, Registrar } from "@libp2p/interface-internal";
import type { KadDHT } from "@libp2p/kad-dht";
import { isLoopback } from "@libp2p/utils";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { stripOwnPeerId } from "./addrs";
import { canonicalJson } from "./canonical";
import { namespaceCid } from "./namespaces";
import type { HandoverDirection, RoomMetrics } from "./room-metrics";
import {
  compareRoomRecords,
  encodeRoomRecord,
  MAX_EPOCH,
  MAX_ROOM_ADDRS,
  MAX_ROOM_RECORD_BYTES,
  type RoomRecord,
  type RoomRevocation,
  type RoomStatus,
  roomRecordKey,
  roomRecordKeyBytes,
  signRoomRecord,
  type UnsignedRoomRecord,
  verifyRoomRecord,
} from "./room-record";
import { readAll } from "./stream-util";

/** Lists a host's hosted room records (room-list protocol, docs/room-record.md). */
export const PROTOCOL_ROOMS = "/agora/rooms/1.0.0";
/** Providers of this content id (per region) are hosts that host at least one room of the region. */
export function roomsRegionNamespace(region: string): string {
  return `/agora/rooms-region/${region}`;
}
/** Records in one room-list answer at most (the busiest rooms first), and its size bound. */
export const MAX_LISTED_ROOMS = 64;
export const MAX_ROOM_LIST_BYTES = 256 * 1024;
/** Rooms one node hosts at most (claims beyond are refused): bounds its heartbeat and the DHT servers' quota. */
export const MAX_HOSTED_ROOMS = 256;

/** Wall time and timers the heartbeat uses; the real clock by default, a virtual one in tests. */
export interface RoomClock {
  /** Unix milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemRoomClock: RoomClock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface RoomDirectoryComponents {
  peerId: PeerId;
  privateKey: PrivateKey;
  addressManager: Pick<AddressManager, "getAddresses">;
  registrar: Pick<Registrar, "handle" | "unhandle">;
  dht: Pick<KadDHT, "put" | "get" | "provide">;
}

export interface RoomDirectoryInit {
  logger: Logger;
  /** This node's region: rooms it creates belong to it. */
  region: string;
  /** Time between re-publishes of hosted rooms' records; ttl = 3 × this. */
  intervalMs: number;
  metrics: RoomMetrics;
  clock?: RoomClock;
  /** Addresses put in records (default: the node's own, loopback only when nothing else exists). */
  addrs?: () => string[];
  /** One put/get gives up after this long (default: min(10 s, 2 × interval), at least 2 s). */
  timeoutMs?: number;
}

/** What a claim or an update says about the room. */
export interface RoomClaimOptions {
  epoch: number;
  participants?: number;
  status?: RoomStatus;
  /** Required with status "handing-over". */
  successor?: string;
  /** Default true (open room). */
  open?: boolean;
  /** Default: this node's region (the region the room was created in; keep the record's on takeover). */
  region?: string;
  revocations?: RoomRevocation[];
}

export interface ResolveRoomOptions {
  signal?: AbortSignal;
  /** Valid answers collected before the lookup stops early (default 3). */
  quorum?: number;
}

/** Per-room view for /api/rooms. */
export interface HostedRoomInfo {
  room: string;
  hosted_here: boolean;
  epoch: number;
  status: RoomStatus;
  participants: number;
  handovers_in: number;
  handovers_out: number;
  last_published_at: number | null;
}

export interface RoomDirectoryEvents {
  /** A hosted room's claim lost to `winner` (a higher epoch or the tie-break): the room is no longer hosted here. */
  onClaimLost?: (room: string, winner: RoomRecord) => void;
}

interface Hosted {
  opts: Required<Pick<RoomClaimOptions, "epoch" | "participants" | "status" | "open" | "region">> & RoomClaimOptions;
  record: RoomRecord | null;
  bytes: Uint8Array | null;
  lastPublished: number | null;
}

export class RoomDirectory implements Startable {
  readonly [Symbol.toStringTag] = "@agora/room-directory";
  private readonly log: Logger;
  private readonly clock: RoomClock;
  private readonly selfId: string;
  private readonly hosted = new Map<string, Hosted>();
  /** Handover counters per room (kept after release so /api/rooms can show them; bounded). */
  private readonly handovers = new Map<string, { in: number; out: number }>();
  private running = false;
  private timer: unknown;
  private lastSeq = 0;
  private beating: Promise<void> | null = null;
  private controller = new AbortController();
  private listeners: RoomDirectoryEvents = {};

  constructor(
    private readonly components: RoomDirectoryComponents,
    private readonly init: RoomDirectoryInit,
  ) {
    if (!(init.intervalMs > 0)) throw new AgoraError("CONFIG_INVALID", "room record interval must be positive");
    this.log = init.logger;
    this.clock = init.clock ?? systemRoomClock;
    this.selfId = components.peerId.toString();
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.controller = new AbortController();
    await this.components.registrar.handle(PROTOCOL_ROOMS, (stream: Stream) => this.serveList(stream), {
      runOnLimitedConnection: true,
      maxInboundStreams: 4,
    });
    this.running = true;
    this.schedule();
  }

  beforeStop(): void {
    this.clock.clearTimeout(this.timer);
    this.controller.abort(new AgoraError("P2P", "the network node is stopping"));
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.clock.clearTimeout(this.timer);
    this.controller.abort(new AgoraError("P2P", "the network node is stopping"));
    await this.components.registrar.unhandle(PROTOCOL_ROOMS).catch(() => undefined);
  }

  isStarted(): boolean {
    return this.running;
  }

  /** Callbacks for placement/handover code (one set; later calls replace earlier ones). */
  on(events: RoomDirectoryEvents): void {
    this.listeners = events;
  }

  get intervalMs(): number {
    return this.init.intervalMs;
  }

  get metrics(): RoomMetrics {
    return this.init.metrics;
  }

  // --- hosting ---------------------------------------------------------------------------------

  /** Starts hosting `room`: signs its record and publishes it now, then on every heartbeat. Returns the record. */
  async claim(room: string, opts: RoomClaimOptions): Promise<RoomRecord> {
    if (!this.hosted.has(room) && this.hosted.size >= MAX_HOSTED_ROOMS)
      throw new AgoraError("CAPACITY", `this node already hosts ${MAX_HOSTED_ROOMS} rooms`);
    const opt = {
      ...opts,
      participants: opts.participants ?? 0,
      status: opts.status ?? "active",
      open: opts.open ?? true,
      region: opts.region ?? this.init.region,
    };
    checkClaim(room, opt, this.selfId);
    const h: Hosted = { opts: opt, record: null, bytes: null, lastPublished: null };
    this.hosted.set(room, h);
    const rec = await this.sign(room, h);
    await this.publish(room, h);
    return rec;
  }

  /** Changes what the record says (participants, status/successor, epoch …) and publishes it now. */
  async update(room: string, patch: Partial<RoomClaimOptions>): Promise<RoomRecord> {
    const h = this.hosted.get(room);
    if (!h) throw new AgoraError("P2P", `room ${room} is not hosted here`);
    const next = { ...h.opts, ...patch };
    if (patch.status === "active" && patch.successor === undefined) delete next.successor;
    checkClaim(room, next, this.selfId);
    h.opts = next;
    const rec = await this.sign(room, h);
    await this.publish(room, h);
    return rec;
  }

  /** Participants changed: the next heartbeat carries the new count (no publish of its own). */
  setParticipants(room: string, n: number): void {
    const h = this.hosted.get(room);
    if (h && Number.isSafeInteger(n) && n >= 0) h.opts.participants = n;
  }

  /**
   * Stops hosting `room`. Its last record is re-published with a 1 s ttl so it stops being live at once
   * rather than after 3 intervals (best effort: servers that miss it expire the old one in time).
   */
  async release(room: string): Promise<void> {
    const h = this.hosted.get(room);
    if (!h) return;
    this.hosted.delete(room);
    if (!this.running) return;
    try {
      const rec = await this.sign(room, { ...h, opts: { ...h.opts, participants: 0 } }, 1);
      await this.put(rec.room, encodeRoomRecord(rec));
    } catch (err) {
      this.log.debug({ room, err: errorMessage(err) }, "room release record not published");
    }
  }

  /** The current signed record of a hosted room, or undefined. */
  current(room: string): RoomRecord | undefined {
    return this.hosted.get(room)?.record ?? undefined;
  }

  /** Rooms hosted here, with their current records. */
  hostedRooms(): RoomRecord[] {
    return [...this.hosted.values()].flatMap((h) => (h.record ? [h.record] : []));
  }

  /** For placement/handover code: counts a handover of `room` (metric and per-room counter). */
  countHandover(room: string, direction: HandoverDirection): void {
    this.init.metrics.handovers.inc({ direction });
    let c = this.handovers.get(room);
    if (!c) {
      c = { in: 0, out: 0 };
      this.handovers.set(room, c);
      if (this.handovers.size > 4 * MAX_HOSTED_ROOMS) {
        for (const k of this.handovers.keys()) {
          if (!this.hosted.has(k)) {
            this.handovers.delete(k);
            break;
          }
        }
      }
    }
    c[direction]++;
  }

  /** For the REDIRECT code: counts one redirect (agora_rooms_redirects_total). */
  countRedirect(): void {
    this.init.metrics.redirects.inc();
  }

  /** Rooms this node hosts or has handed over, for /api/rooms. */
  info(): HostedRoomInfo[] {
    const out: HostedRoomInfo[] = [];
    for (const [room, h] of this.hosted) {
      const c = this.handovers.get(room);
      out.push({
        room,
        hosted_here: true,
        epoch: h.opts.epoch,
        status: h.opts.status,
        participants: h.opts.participants,
        handovers_in: c?.in ?? 0,
        handovers_out: c?.out ?? 0,
        last_published_at: h.lastPublished,
      });
    }
    for (const [room, c] of this.handovers) {
      if (this.hosted.has(room)) continue;
      out.push({
        room,
        hosted_here: false,
        epoch: 0,
        status: "active",
        participants: 0,
        handovers_in: c.in,
        handovers_out: c.out,
        last_published_at: null,
      });
    }
    return out.sort((a, b) => (a.room < b.room ? -1 : a.room > b.room ? 1 : 0));
  }

  // --- resolving -------------------------------------------------------------------------------

  /** The best live record of `room` (this node's own claim included), or undefined. */
  async resolve(room: string, opts: ResolveRoomOptions = {}): Promise<RoomRecord | undefined> {
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(this.timeoutMs()), ...(opts.signal ? [opts.signal] : [])]);
    const found = await resolveRoomRecord(this.components.dht, room, {
      signal,
      quorum: opts.quorum,
      nowMs: this.clock.now(),
      maxAgeMs: 3 * this.init.intervalMs,
    });
    const own = this.hosted.get(room)?.record ?? undefined;
    if (own && (!found || compareRoomRecords(own, found) > 0)) return own;
    return found;
  }

  // --- internals -------------------------------------------------------------------------------

  private timeoutMs(): number {
    return this.init.timeoutMs ?? Math.min(10_000, Math.max(2_000, 2 * this.init.intervalMs));
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = this.clock.setTimeout(() => {
      // Never two heartbeats at once; a slow one delays the next by at most its own overrun.
      if (!this.beating) this.beating = this.beat().finally(() => (this.beating = null));
      this.schedule();
    }, this.init.intervalMs);
  }

  /** One heartbeat: re-sign and publish every hosted room, and keep the region's provider record fresh. */
  async beat(): Promise<void> {
    const rooms = [...this.hosted.keys()];
    await Promise.all(
      rooms.map(async (room) => {
        const h = this.hosted.get(room);
        if (!h) return;
        try {
          await this.sign(room, h);
          await this.publish(room, h);
        } catch (err) {
          this.log.debug({ room, err: errorMessage(err) }, "room record heartbeat failed");
        }
      }),
    );
  }

  private nextSeq(): number {
    const seq = Math.max(this.lastSeq + 1, Math.floor(this.clock.now()));
    this.lastSeq = seq;
    return seq;
  }

  private recordAddrs(): string[] {
    if (this.init.addrs) return this.init.addrs().slice(0, MAX_ROOM_ADDRS);
    const all = this.components.addressManager.getAddresses();
    const nonLoopback = all.filter((ma) => !isLoopback(ma));
    const chosen = nonLoopback.length > 0 ? nonLoopback : all;
    return [...new Set(chosen.map((ma) => stripOwnPeerId(ma.toString(), this.selfId)))].slice(0, MAX_ROOM_ADDRS);
  }

  private async sign(room: string, h: Hosted, ttlSeconds?: number): Promise<RoomRecord> {
    const o = h.opts;
    const unsigned: UnsignedRoomRecord = {
      room,
      region: o.region,
      host: this.selfId,
      addrs: this.recordAddrs(),
      participants: o.participants,
      epoch: o.epoch,
      seq: this.nextSeq(),
      last_seen: Math.round(this.clock.now()) / 1000,
      ttl_seconds: ttlSeconds ?? Math.min(3 * 3600, (3 * this.init.intervalMs) / 1000),
      status: o.status,
      ...(o.status === "handing-over" ? { successor: o.successor } : {}),
      open: o.open,
      ...(o.revocations !== undefined ? { revocations: o.revocations } : {}),
    };
    let u = unsigned;
    for (;;) {
      const rec = await signRoomRecord(u, this.components.privateKey);
      const bytes = encodeRoomRecord(rec);
      if (bytes.byteLength <= MAX_ROOM_RECORD_BYTES) {
        if (ttlSeconds === undefined) {
          h.record = rec;
          h.bytes = bytes;
        }
        return rec;
      }
      if (u.addrs.length <= 1) throw new AgoraError("P2P", `room record of ${room} does not fit in ${MAX_ROOM_RECORD_BYTES} bytes`);
      u = { ...u, addrs: u.addrs.slice(0, -1) };
    }
  }

  private async publish(room: string, h: Hosted): Promise<void> {
    if (!h.bytes || !h.record) return;
    let stored = 0;
    try {
      stored = await this.put(room, h.bytes);
    } catch (err) {
      // Our own store refuses the put when it holds a better claim: find out whether the room is lost.
      this.log.debug({ room, err: errorMessage(err) }, "room record put refused");
    }
    if (stored > 0) h.lastPublished = this.clock.now();
    else await this.checkClaim(room, h);
    // The first room of a region makes this node a provider of the region's room namespace.
    void this.provideRegion(h.opts.region);
  }

  /** After a put no server took: a better claim may hold the room. */
  private async checkClaim(room: string, h: Hosted): Promise<void> {
    let best: RoomRecord | undefined;
    try {
      best = await resolveRoomRecord(this.components.dht, room, {
        signal: AbortSignal.any([this.controller.signal, AbortSignal.timeout(this.timeoutMs())]),
        nowMs: this.clock.now(),
        maxAgeMs: 3 * this.init.intervalMs,
      });
    } catch {
      return;
    }
    if (!best || !h.record || best.host === this.selfId || compareRoomRecords(best, h.record) <= 0) return;
    if (this.hosted.get(room) !== h) return;
    this.hosted.delete(room);
    this.init.metrics.claimsLost.inc();
    this.log.info({ room, epoch: h.record.epoch, winner: best.host, winner_epoch: best.epoch }, "room claim lost");
    this.listeners.onClaimLost?.(room, best);
  }

  private provided = new Map<string, number>();

  private async provideRegion(region: string): Promise<void> {
    const now = this.clock.now();
    const last = this.provided.get(region);
    // Provider records live 15 min by default; refreshed at most once per interval (and at least every 5 min).
    if (last !== undefined && now - last < Math.min(this.init.intervalMs, 5 * 60_000)) return;
    this.provided.set(region, now);
    try {
      const cid = await namespaceCid(roomsRegionNamespace(region));
      const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(this.timeoutMs())]);
      for await (const _ev of this.components.dht.provide(cid, { signal })) {
        /* drain */
      }
    } catch (err) {
      this.log.debug({ region, err: errorMessage(err) }, "room region provide ended early");
    }
  }

  private async put(room: string, bytes: Uint8Array, opts: AbortOptions = {}): Promise<number> {
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(this.timeoutMs()), ...(opts.signal ? [opts.signal] : [])]);
    let stored = 0;
    try {
      for await (const ev of this.components.dht.put(roomRecordKeyBytes(room), bytes, { signal })) {
        if (
          ev.name === "PEER_RESPONSE" &&
          ev.messageName === "PUT_VALUE" &&
          ev.record &&
          Buffer.from(ev.record.value).equals(Buffer.from(bytes))
        )
          stored++;
      }
    } catch (err) {
      if (stored === 0 && !signal.aborted) throw err;
    }
    return stored;
  }

  private async serveList(stream: Stream): Promise<void> {
    try {
      const recs = this.hostedRooms()
        .sort((a, b) => b.participants - a.participants)
        .slice(0, MAX_LISTED_ROOMS);
      stream.send(new TextEncoder().encode(canonicalJson({ rooms: recs })));
      await stream.close({ signal: AbortSignal.timeout(5_000) });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

function checkClaim(room: string, o: RoomClaimOptions, self: string): void {
  if (!Number.isSafeInteger(o.epoch) || o.epoch < 0 || o.epoch > MAX_EPOCH)
    throw new AgoraError("BAD_REQUEST", `epoch must be a u32, got ${o.epoch}`);
  if (o.status === "handing-over" && (o.successor === undefined || o.successor === self))
    throw new AgoraError("BAD_REQUEST", `room ${room}: handing-over needs a successor other than this node`);
  if (o.status !== "handing-over" && o.successor !== undefined)
    throw new AgoraError("BAD_REQUEST", `room ${room}: a successor is only given with status handing-over`);
}

export function roomDirectory(init: RoomDirectoryInit): (components: RoomDirectoryComponents) => RoomDirectory {
  return (components) => new RoomDirectory(components, init);
}

// --- resolving, for nodes and clients alike --------------------------------------------------------

export interface ResolveRoomRecordOptions {
  signal: AbortSignal;
  quorum?: number;
  /** Unix ms "now" (default: the wall clock). */
  nowMs?: number;
  /** Records whose last_seen is older than this are not live, whatever their ttl (default: their ttl only). */
  maxAgeMs?: number;
}

/**
 * Looks `room` up in the DHT: collects up to `quorum` answers (or what the walk finds before it ends or the
 * signal fires), verifies each (signature, fields, freshness), drops those not live, and returns the best by
 * the selector's order. Any DHT handle (a server's or a client-mode one) will do.
 */
export async function resolveRoomRecord(
  dht: Pick<KadDHT, "get">,
  room: string,
  opts: ResolveRoomRecordOptions,
): Promise<RoomRecord | undefined> {
  const key = roomRecordKey(room);
  const quorum = Math.max(1, opts.quorum ?? 3);
  const stop = new AbortController();
  const values: Uint8Array[] = [];
  try {
    for await (const ev of dht.get(new TextEncoder().encode(key), { signal: AbortSignal.any([opts.signal, stop.signal]) })) {
      if (ev.name === "PEER_RESPONSE" && ev.record) values.push(ev.record.value);
      else if (ev.name === "VALUE") values.push(ev.value);
      if (values.length >= quorum) break;
    }
  } catch {
    // not found, timeout, aborted: use what arrived
  } finally {
    stop.abort();
  }
  const nowMs = opts.nowMs ?? Date.now();
  let best: RoomRecord | undefined;
  for (const v of values) {
    let rec: RoomRecord;
    try {
      rec = await verifyRoomRecord(key, v, { now: nowMs / 1000 });
    } catch {
      continue;
    }
    if (opts.maxAgeMs !== undefined && rec.last_seen * 1000 < nowMs - opts.maxAgeMs) continue;
    if (!best || compareRoomRecords(rec, best) > 0) best = rec;
  }
  return best;
}

/** Asks a host for its hosted rooms' records (unverified bytes are verified here; only the host's own pass). */
export async function fetchHostedRooms(
  libp2p: { dialProtocol: (peer: PeerId, protocol: string, opts: AbortOptions & { runOnLimitedConnection?: boolean }) => Promise<Stream> },
  peer: PeerId,
  signal: AbortSignal,
  nowMs = Date.now(),
): Promise<RoomRecord[]> {
  const stream = await libp2p.dialProtocol(peer, PROTOCOL_ROOMS, { signal, runOnLimitedConnection: true });
  const reading = readAll(stream, MAX_ROOM_LIST_BYTES, signal);
  try {
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
  }
  const bytes = await reading;
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new AgoraError("P2P", `room list from ${peer} is not JSON`);
  }
  const list = (parsed as { rooms?: unknown })?.rooms;
  if (!Array.isArray(list)) throw new AgoraError("P2P", `room list from ${peer} has no rooms array`);
  const out: RoomRecord[] = [];
  for (const item of list.slice(0, MAX_LISTED_ROOMS)) {
    const room = (item as { room?: unknown })?.room;
    if (typeof room !== "string") continue;
    try {
      const rec = await verifyRoomRecord(roomRecordKey(room), new TextEncoder().encode(canonicalJson(item)), { now: nowMs / 1000 });
      if (rec.host === peer.toString()) out.push(rec);
    } catch {
      /* a bad entry is skipped; the rest of the list stands */
    }
  }
  return out;
}
