/**
 * The datastore under the node's libp2p (passed to createLibp2p as `datastore`, libp2p's public option): an
 * in-memory store, like libp2p's default, that bounds and cleans what the Agora DHT keeps for others.
 *
 * kad-dht 16 stores every record a validator let through with a plain `datastore.put` (PUT_VALUE handler,
 * its own put, read-repair) and serves a stored record for 48 h whatever the record says about its own
 * lifetime; provider records go through the same datastore. So the datastore is the one place every write
 * passes, and a wrapper around it is the supported hook (no kad-dht internals are touched).
 *
 * Records (`<prefix>/record/…`): only node advertisements (`/agora/nodes/<region>/<peer-id>`) are stored.
 * - at most `maxRecordsPerSigner` per signing peer (the peer id in the key, which the validator has proven
 *   to be the signer): a node has one region, the slack covers a region change within one TTL. Over the
 *   bound the signer's stalest record (smallest last_seen) goes, or the new one is refused if it is that one;
 * - at most `maxRecords` in total: over it the stalest record of any signer goes (or the new one is refused);
 * - a copy older than the stored one (lower seq) is refused, and at an equal seq only identical bytes are
 *   accepted: nobody can roll a stored record back or swap it for a variant;
 * - this node's own record is never replaced by a copy older than the last seq it published (`ownSeq`),
 *   and is exempt from the bounds;
 * - a record past last_seen + ttl_seconds is never served (get/has say "not found") and a sweep every
 *   `sweepIntervalMs` deletes it.
 * Room records (`/agora/rooms/<room-id>`, room-record.ts) are stored too, signed by the host they name (the
 * validator has proven it): at most `maxRoomRecordsPerSigner` per host (a mixer hosts many rooms), inside the
 * same total bound. A live stored room record is replaced only by a better claim (room-record.ts
 * roomReplacementRefusal: a lower epoch, a lost tie-break or an older seq is refused), so a PUT that kad-dht
 * does not run through the selector still cannot take a room from its host.
 * Providers (`<prefix>/provider/<cid>/<peer-id>`, written by the server with its own clock): at most
 * `maxProvidersPerPeer` per providing peer (a node provides its region, "all" and ≤ 16 capabilities) and
 * `maxProviders` in total; over either bound the oldest-written entry goes. Expiry stays kad-dht's
 * (provider validity, swept by its reprovider). Everything else (peer store …) passes through untouched.
 *
 * What the bounds cannot stop: peer ids are free, so a flood under many fresh keys can still displace honest
 * records (never beyond the total bound). Honest nodes re-publish every heartbeat, and discovery falls back to
 * fetching a provider's record directly (/agora/advert/1.0.0) when the DHT has no copy.
 */

import type { Startable } from "@libp2p/interface";
import { Record as DhtRecord } from "@libp2p/kad-dht";
import { BaseDatastore } from "datastore-core/base";
import { MemoryDatastore } from "datastore-core/memory";
import { Key, type KeyQuery, type Pair, type Query } from "interface-datastore";
import type { Registry } from "prom-client";
import { parseAdvertisementKey, RecordRejectedError, type RejectReason } from "./advertisement";
import { DhtStoreMetrics } from "./metrics";
import { isRoomRecordKey, parseRoomRecordKey, peekRoomClaim, type RoomClaim, roomReplacementRefusal } from "./room-record";

export interface DhtRecordStoreLimits {
  maxRecordsPerSigner: number;
  /** Room records per hosting peer (its signer). */
  maxRoomRecordsPerSigner: number;
  maxRecords: number;
  maxProvidersPerPeer: number;
  maxProviders: number;
  sweepIntervalMs: number;
}

/**
 * 8192 records of at most 4 KiB (the record limit) bound stored advertisements to ~36 MiB even when every one
 * is as large as allowed (real ones are ~1 KiB); 32768 provider entries (~250 bytes each) to ~8 MiB.
 */
export const DEFAULT_STORE_LIMITS: DhtRecordStoreLimits = {
  maxRecordsPerSigner: 4,
  maxRoomRecordsPerSigner: 256,
  maxRecords: 8192,
  maxProvidersPerPeer: 32,
  maxProviders: 32768,
  sweepIntervalMs: 10_000,
};

export interface DhtRecordStoreOptions {
  /** kad-dht's datastorePrefix (dht.ts). */
  prefix: string;
  /** This node's peer id: its own entries are exempt from the bounds. */
  selfPeerId: string;
  /** The highest seq this node has signed (persisted across restarts); none of its own copies below it are stored. */
  ownSeq?: () => number;
  limits?: Partial<DhtRecordStoreLimits>;
  /** Counts each refusal (agora_dht_records_rejected_total). */
  onReject?: (reason: RejectReason) => void;
  /** Counts each refusal of a room record (agora_rooms_records_rejected_total); onReject when omitted. */
  onRoomReject?: (reason: RejectReason) => void;
  /** Registry for agora_dht_store_*; registered on start, removed on stop. */
  registry?: Registry;
  /** Unix seconds; the wall clock by default (tests inject one). */
  now?: () => number;
}

interface RecordEntry {
  signer: string;
  seq: number;
  lastSeen: number;
  expires: number;
  /** Room records only: what the room selector compares. */
  room?: RoomClaim;
}

export class DhtRecordStore extends BaseDatastore implements Startable {
  readonly limits: DhtRecordStoreLimits;
  /** Synchronous underneath (a Map), which admission relies on: see put(). */
  private readonly inner = new MemoryDatastore();
  private readonly recordPrefix: string;
  private readonly providerPrefix: string;
  private readonly now: () => number;
  private readonly records = new Map<string, RecordEntry>();
  private readonly recordsBySigner = new Map<string, Set<string>>();
  /** Room records by hosting signer (a separate quota from advertisements). */
  private readonly roomsBySigner = new Map<string, Set<string>>();
  /** Provider entries in write order (re-written entries move to the end): the first is the oldest. */
  private readonly providers = new Map<string, string>();
  private readonly providersByPeer = new Map<string, Set<string>>();
  private metrics?: DhtStoreMetrics;
  private sweeper?: ReturnType<typeof setInterval>;

  constructor(private readonly opts: DhtRecordStoreOptions) {
    super();
    this.limits = { ...DEFAULT_STORE_LIMITS, ...opts.limits };
    this.recordPrefix = `${opts.prefix}/record/`;
    this.providerPrefix = `${opts.prefix}/provider/`;
    this.now = opts.now ?? (() => Date.now() / 1000);
  }

  start(): void {
    if (this.opts.registry && !this.metrics) this.metrics = new DhtStoreMetrics(this.opts.registry, () => this.sizes());
    this.sweeper ??= setInterval(() => this.sweep(), this.limits.sweepIntervalMs);
    (this.sweeper as { unref?: () => void }).unref?.();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.metrics?.dispose();
    this.metrics = undefined;
  }

  sizes(): { record: number; provider: number } {
    return { record: this.records.size, provider: this.providers.size };
  }

  /** Deletes every record past last_seen + ttl_seconds; returns how many went. */
  sweep(): number {
    const t = this.now();
    let n = 0;
    for (const [k, e] of this.records) {
      if (e.expires < t) {
        this.dropRecord(k);
        n++;
      }
    }
    if (n > 0) this.metrics?.evicted("record", "expired", n);
    return n;
  }

  // --- Datastore -------------------------------------------------------------------------------

  override async put(key: Key, val: Uint8Array): Promise<Key> {
    const k = key.toString();
    // Admission, index and write happen in one synchronous step (the inner store is a Map): with puts
    // interleaving (several streams at once), an entry evicted between its admission and its write would
    // otherwise be written after its eviction and stay, unindexed and unbounded.
    if (k.startsWith(this.recordPrefix)) this.admitRecord(k, val);
    else if (k.startsWith(this.providerPrefix)) this.admitProvider(k);
    this.inner.put(key, val);
    return key;
  }

  override async get(key: Key): Promise<Uint8Array> {
    this.hideIfExpired(key.toString());
    return this.inner.get(key);
  }

  override async has(key: Key): Promise<boolean> {
    this.hideIfExpired(key.toString());
    return this.inner.has(key);
  }

  override async delete(key: Key): Promise<void> {
    const k = key.toString();
    if (this.records.has(k)) this.dropRecord(k);
    else if (this.providers.has(k)) this.dropProvider(k);
    else await this.inner.delete(key);
  }

  override query(q: Query): AsyncGenerator<Pair> | Generator<Pair> {
    return this.inner.query(q);
  }

  override queryKeys(q: KeyQuery): AsyncGenerator<Key> | Generator<Key> {
    return this.inner.queryKeys(q);
  }

  // --- records ---------------------------------------------------------------------------------

  private refuse(reason: RejectReason, message: string): never {
    this.opts.onReject?.(reason);
    throw new RecordRejectedError(reason, message);
  }

  private hideIfExpired(k: string): void {
    const e = this.records.get(k);
    if (e && e.expires < this.now()) {
      this.dropRecord(k);
      this.metrics?.evicted("record", "expired");
    }
  }

  /** Decides whether the record may be stored (throws RecordRejectedError if not) and indexes it. */
  private admitRecord(k: string, val: Uint8Array): void {
    let dhtKey: string;
    let value: Uint8Array;
    try {
      const rec = DhtRecord.deserialize(val);
      dhtKey = new TextDecoder().decode(rec.key);
      value = rec.value;
    } catch {
      this.refuse("malformed", "not a DHT record");
    }
    if (isRoomRecordKey(dhtKey)) {
      this.admitRoomRecord(k, dhtKey, value);
      return;
    }
    let signer: string;
    try {
      signer = parseAdvertisementKey(dhtKey).peerId;
    } catch {
      this.refuse(
        "unsupported_key",
        `this DHT stores only node advertisements and room records, not ${JSON.stringify(dhtKey.slice(0, 80))}`,
      );
    }
    const adv = peekAdvertisement(value);
    if (!adv) this.refuse("malformed", "record value is not an advertisement");
    const t = this.now();
    const entry: RecordEntry = { signer, seq: adv.seq, lastSeen: adv.last_seen, expires: adv.last_seen + adv.ttl_seconds };
    if (entry.expires < t) this.refuse("stale", "record has expired");

    const isSelf = signer === this.opts.selfPeerId;
    const ownSeq = isSelf ? (this.opts.ownSeq?.() ?? 0) : 0;
    if (isSelf && entry.seq < ownSeq) this.refuse("superseded", `seq ${entry.seq} is older than the seq ${ownSeq} this node published`);

    const old = this.records.get(k);
    if (old && old.expires >= t) {
      if (entry.seq < old.seq) this.refuse("superseded", `seq ${entry.seq} is older than the stored seq ${old.seq}`);
      if (entry.seq === old.seq && !this.sameValue(k, value))
        this.refuse("seq_conflict", `seq ${entry.seq} is already stored with different bytes`);
    }

    this.records.set(k, entry);
    let mine = this.recordsBySigner.get(signer);
    if (!mine) {
      mine = new Set();
      this.recordsBySigner.set(signer, mine);
    }
    mine.add(k);
    if (isSelf) return;

    if (mine.size > this.limits.maxRecordsPerSigner) {
      const victim = stalest(mine, this.records, () => true);
      if (victim === k)
        this.undo(k, old, "signer_quota", `peer ${signer} already has ${this.limits.maxRecordsPerSigner} fresher records stored`);
      this.dropRecord(victim!);
      this.metrics?.evicted("record", "signer_quota");
    }
    if (this.records.size > this.limits.maxRecords) {
      const victim = stalest(this.records.keys(), this.records, (e) => e.signer !== this.opts.selfPeerId);
      if (victim === k) this.undo(k, old, "store_full", `the store holds ${this.limits.maxRecords} fresher records`);
      if (victim !== undefined) {
        this.dropRecord(victim);
        this.metrics?.evicted("record", "store_full");
      }
    }
  }

  private refuseRoom(reason: RejectReason, message: string): never {
    (this.opts.onRoomReject ?? this.opts.onReject)?.(reason);
    throw new RecordRejectedError(reason, message);
  }

  /** Room records: the host named in the record signs it (the validator checked); the selector order guards it. */
  private admitRoomRecord(k: string, dhtKey: string, value: Uint8Array): void {
    try {
      parseRoomRecordKey(dhtKey);
    } catch (err) {
      this.refuseRoom("bad_key", (err as Error).message);
    }
    const claim = peekRoomClaim(value);
    if (!claim) this.refuseRoom("malformed", "record value is not a room record");
    const t = this.now();
    const entry: RecordEntry = {
      signer: claim.host,
      seq: claim.seq,
      lastSeen: claim.last_seen,
      expires: claim.last_seen + claim.ttl_seconds,
      room: { room: claim.room, host: claim.host, epoch: claim.epoch, seq: claim.seq, last_seen: claim.last_seen },
    };
    if (entry.expires < t) this.refuseRoom("stale", "room record has expired");
    const old = this.records.get(k);
    if (old?.room && old.expires >= t) {
      const why = roomReplacementRefusal(old.room, entry.room!);
      if (why) this.refuseRoom(why.reason, why.message);
      if (old.room.host === claim.host && old.seq === claim.seq && !this.sameValue(k, value))
        this.refuseRoom("seq_conflict", `seq ${claim.seq} is already stored with different bytes`);
    }
    if (old) this.unindexRecord(k);
    const mine = this.indexRecord(k, entry);
    // A refused newcomer gives the key back to the record it would have replaced (its bytes are untouched).
    const giveBack = () => {
      this.unindexRecord(k);
      if (old) this.indexRecord(k, old);
    };
    if (entry.signer === this.opts.selfPeerId) return;
    if (mine.size > this.limits.maxRoomRecordsPerSigner) {
      const victim = stalest(mine, this.records, () => true);
      if (victim === k) {
        giveBack();
        this.refuseRoom(
          "signer_quota",
          `host ${entry.signer} already has ${this.limits.maxRoomRecordsPerSigner} fresher room records stored`,
        );
      }
      this.dropRecord(victim!);
      this.metrics?.evicted("record", "signer_quota");
    }
    if (this.records.size > this.limits.maxRecords) {
      const victim = stalest(this.records.keys(), this.records, (e) => e.signer !== this.opts.selfPeerId);
      if (victim === k) {
        giveBack();
        this.refuseRoom("store_full", `the store holds ${this.limits.maxRecords} fresher records`);
      }
      if (victim !== undefined) {
        this.dropRecord(victim);
        this.metrics?.evicted("record", "store_full");
      }
    }
  }

  /** Takes back the index entry of a refused record (the stored bytes are untouched) and refuses it. */
  private undo(k: string, old: RecordEntry | undefined, reason: RejectReason, message: string): never {
    if (old) this.records.set(k, old);
    else this.unindexRecord(k);
    this.refuse(reason, message);
  }

  private sameValue(k: string, value: Uint8Array): boolean {
    try {
      const stored = this.inner.get(keyOf(k)) as Uint8Array;
      return Buffer.from(DhtRecord.deserialize(stored).value).equals(Buffer.from(value));
    } catch {
      return false;
    }
  }

  private indexRecord(k: string, entry: RecordEntry): Set<string> {
    this.records.set(k, entry);
    const index = entry.room ? this.roomsBySigner : this.recordsBySigner;
    let mine = index.get(entry.signer);
    if (!mine) {
      mine = new Set();
      index.set(entry.signer, mine);
    }
    mine.add(k);
    return mine;
  }

  private unindexRecord(k: string): void {
    const e = this.records.get(k);
    if (!e) return;
    this.records.delete(k);
    const index = e.room ? this.roomsBySigner : this.recordsBySigner;
    const mine = index.get(e.signer);
    mine?.delete(k);
    if (mine?.size === 0) index.delete(e.signer);
  }

  private dropRecord(k: string): void {
    this.unindexRecord(k);
    this.inner.delete(keyOf(k));
  }

  // --- providers -------------------------------------------------------------------------------

  private admitProvider(k: string): void {
    const peer = k.slice(k.lastIndexOf("/") + 1);
    // Re-written (refreshed) entries move to the end of the write order.
    this.providers.delete(k);
    this.providers.set(k, peer);
    let mine = this.providersByPeer.get(peer);
    if (!mine) {
      mine = new Set();
      this.providersByPeer.set(peer, mine);
    }
    mine.delete(k);
    mine.add(k);
    if (peer === this.opts.selfPeerId) return;
    if (mine.size > this.limits.maxProvidersPerPeer) {
      this.dropProvider(mine.values().next().value!);
      this.metrics?.evicted("provider", "signer_quota");
    }
    if (this.providers.size > this.limits.maxProviders) {
      for (const [victim, owner] of this.providers) {
        if (owner === this.opts.selfPeerId) continue;
        this.dropProvider(victim);
        this.metrics?.evicted("provider", "store_full");
        break;
      }
    }
  }

  private dropProvider(k: string): void {
    const peer = this.providers.get(k);
    this.providers.delete(k);
    if (peer !== undefined) {
      const mine = this.providersByPeer.get(peer);
      mine?.delete(k);
      if (mine?.size === 0) this.providersByPeer.delete(peer);
    }
    this.inner.delete(keyOf(k));
  }
}

export function createDhtRecordStore(opts: DhtRecordStoreOptions): DhtRecordStore {
  return new DhtRecordStore(opts);
}

/** The entry with the smallest last_seen among `keys` that `eligible` accepts (ties: the first one). */
function stalest(keys: Iterable<string>, records: Map<string, RecordEntry>, eligible: (e: RecordEntry) => boolean): string | undefined {
  let best: string | undefined;
  let bestSeen = Infinity;
  for (const k of keys) {
    const e = records.get(k);
    if (!e || !eligible(e)) continue;
    if (e.lastSeen < bestSeen) {
      best = k;
      bestSeen = e.lastSeen;
    }
  }
  return best;
}

function peekAdvertisement(value: Uint8Array): { seq: number; last_seen: number; ttl_seconds: number } | null {
  try {
    const o = JSON.parse(new TextDecoder().decode(value)) as Record<string, unknown>;
    if (typeof o.seq !== "number" || typeof o.last_seen !== "number" || typeof o.ttl_seconds !== "number") return null;
    return { seq: o.seq, last_seen: o.last_seen, ttl_seconds: o.ttl_seconds };
  } catch {
    return null;
  }
}

function keyOf(s: string): Key {
  return new Key(s, false);
}
