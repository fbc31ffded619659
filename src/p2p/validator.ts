/**
 * kad-dht validator and selector for the `agora` key namespace (kad-dht picks them by the first key segment).
 *
 * The validator runs on every DHT server that is asked to store a record (PUT_VALUE handler) and on every
 * node that receives a record in a GET_VALUE answer; kad-dht turns a throw into "record refused" (the PUT
 * stream is reset, the GET answer is dropped), so a hostile record never crashes a node. Every refusal is
 * counted in agora_dht_records_rejected_total{reason}.
 *
 * js kad-dht's PUT handler overwrites whatever it stored before, valid or not, without consulting the selector
 * (go-libp2p does consult it). A peer could therefore replay a node's older, still-unexpired record and roll
 * replicas back. The validator closes that gap itself: it remembers the highest seq it has accepted per key
 * (until that record expires) and refuses lower ones as "superseded".
 *
 * The namespace holds two record types, told apart by the second key segment: node advertisements
 * (`/agora/nodes/…`, advertisement.ts) and room records (`/agora/rooms/…`, room-record.ts). Room records get
 * the same guard with the room selector's order (a lower epoch, a lost tie-break or an older seq of the same
 * host is refused while the better claim is live) and are counted in agora_rooms_records_rejected_total.
 */
import type { SelectFn, ValidateFn } from "@libp2p/kad-dht";
import { Counter, type Registry } from "prom-client";
import {
  AGORA_NAMESPACE,
  type NodeAdvertisement,
  peekSeq,
  REJECT_REASONS,
  RecordRejectedError,
  type RejectReason,
  verifyAdvertisementRecord,
} from "./advertisement";
import { RoomMetrics } from "./room-metrics";
import {
  isRoomRecordKey,
  type RoomClaim,
  type RoomRecord,
  roomReplacementRefusal,
  selectRoomRecord,
  verifyRoomRecord,
} from "./room-record";

export const REJECTED_METRIC = "agora_dht_records_rejected_total";

/** Bound on remembered keys: each entry is ~150 bytes, so the guard costs at most ~1.5 MB. */
const MAX_GUARD_ENTRIES = 10_000;

export interface RecordValidationOptions {
  /** Where agora_dht_records_rejected_total lives; a private registry when omitted. */
  registry?: Registry;
  /** Unix seconds; the wall clock by default (tests inject one). */
  now?: () => number;
  /** Where room-record refusals are counted (agora_rooms_records_rejected_total); a private one when omitted. */
  roomMetrics?: RoomMetrics;
}

export interface RecordValidation {
  validators: Record<string, ValidateFn>;
  selectors: Record<string, SelectFn>;
  /** Same checks as the DHT validator, returning the typed record; also used for directly fetched records. */
  verify(key: Uint8Array | string, value: Uint8Array): Promise<NodeAdvertisement>;
  /** Index of the best of several valid records for one key: highest seq, then newest last_seen. */
  select(records: Uint8Array[]): number;
  rejected(reason: RejectReason): number;
  /** Counts a refusal decided elsewhere (the DHT record store: quotas, rollbacks, seq conflicts). */
  countRejection(reason: RejectReason): void;
  /** Same checks as the DHT validator for a room record (`/agora/rooms/<room>`), returning the typed record. */
  verifyRoom(key: Uint8Array | string, value: Uint8Array): Promise<RoomRecord>;
  /** Index of the best of several valid records of one room (room-record.ts compareRoomRecords). */
  selectRoom(records: Uint8Array[]): number;
  /** Counts a room-record refusal decided elsewhere (the DHT record store). */
  countRoomRejection(reason: RejectReason): void;
  readonly roomMetrics: RoomMetrics;
  /** Unregister the metric (node stop), so a later node can register it again on the same registry. */
  dispose(): void;
}

export function createRecordValidation(opts: RecordValidationOptions = {}): RecordValidation {
  const now = opts.now ?? (() => Date.now() / 1000);
  const registry = opts.registry;
  const counter = new Counter({
    name: REJECTED_METRIC,
    help: "DHT records in the agora namespace refused by this node, by reason",
    labelNames: ["reason"] as const,
    registers: registry ? [registry] : [],
  });
  // Export every reason at 0 so rate() and alerts work before the first rejection.
  for (const r of REJECT_REASONS) counter.inc({ reason: r }, 0);
  const counts = new Map<RejectReason, number>();

  /** key → highest accepted seq and when that record expires (unix seconds). Map order = insertion (LRU-ish). */
  const highest = new Map<string, { seq: number; expires: number }>();

  const roomMetrics = opts.roomMetrics ?? new RoomMetrics();
  /** room key → the best live claim accepted (same order as the selector) and when it expires. */
  const bestRoom = new Map<string, { claim: RoomClaim; expires: number }>();

  function countRejection(reason: RejectReason): void {
    counter.inc({ reason });
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }

  function reject(err: unknown): never {
    const reason: RejectReason = err instanceof RecordRejectedError ? err.reason : "malformed";
    countRejection(reason);
    throw err instanceof RecordRejectedError ? err : new RecordRejectedError("malformed", String(err));
  }

  async function verify(key: Uint8Array | string, value: Uint8Array): Promise<NodeAdvertisement> {
    const keyText = typeof key === "string" ? key : new TextDecoder().decode(key);
    let rec: NodeAdvertisement;
    try {
      rec = await verifyAdvertisementRecord(keyText, value, { now: now() });
    } catch (err) {
      return reject(err);
    }
    const t = now();
    const seen = highest.get(keyText);
    if (seen && seen.expires >= t && rec.seq < seen.seq) {
      return reject(
        new RecordRejectedError("superseded", `seq ${rec.seq} is older than the seq ${seen.seq} already accepted for this key`),
      );
    }
    if (!seen || rec.seq >= seen.seq || seen.expires < t) {
      highest.delete(keyText);
      highest.set(keyText, { seq: rec.seq, expires: rec.last_seen + rec.ttl_seconds });
      if (highest.size > MAX_GUARD_ENTRIES) prune(t);
    }
    return rec;
  }

  async function verifyRoom(key: Uint8Array | string, value: Uint8Array): Promise<RoomRecord> {
    const keyText = typeof key === "string" ? key : new TextDecoder().decode(key);
    const refuse = (err: unknown): never => {
      const e = err instanceof RecordRejectedError ? err : new RecordRejectedError("malformed", String(err));
      roomMetrics.countRejection(e.reason);
      throw e;
    };
    let rec: RoomRecord;
    try {
      rec = await verifyRoomRecord(keyText, value, { now: now() });
    } catch (err) {
      return refuse(err);
    }
    const t = now();
    const held = bestRoom.get(keyText);
    if (held && held.expires >= t) {
      const why = roomReplacementRefusal(held.claim, rec);
      if (why) return refuse(new RecordRejectedError(why.reason, why.message));
    }
    bestRoom.delete(keyText);
    bestRoom.set(keyText, {
      claim: { room: rec.room, host: rec.host, epoch: rec.epoch, seq: rec.seq, last_seen: rec.last_seen },
      expires: rec.last_seen + rec.ttl_seconds,
    });
    if (bestRoom.size > MAX_GUARD_ENTRIES) {
      for (const [k, v] of bestRoom) if (v.expires < t) bestRoom.delete(k);
      while (bestRoom.size > MAX_GUARD_ENTRIES) {
        const first = bestRoom.keys().next().value;
        if (first === undefined) break;
        bestRoom.delete(first);
      }
    }
    return rec;
  }

  function prune(t: number): void {
    for (const [k, v] of highest) if (v.expires < t) highest.delete(k);
    // Still too many live keys (a flood of distinct valid keys): forget the oldest-inserted ones.
    while (highest.size > MAX_GUARD_ENTRIES) {
      const first = highest.keys().next().value;
      if (first === undefined) break;
      highest.delete(first);
    }
  }

  function select(records: Uint8Array[]): number {
    let best = -1;
    let bestSeq = -Infinity;
    let bestSeen = -Infinity;
    records.forEach((r, i) => {
      const p = peekSeq(r);
      if (!p) return;
      if (p.seq > bestSeq || (p.seq === bestSeq && p.last_seen > bestSeen)) {
        best = i;
        bestSeq = p.seq;
        bestSeen = p.last_seen;
      }
    });
    // kad-dht indexes the array with the answer; every record it passes has been validated, so -1 cannot
    // really happen, but 0 is the safe answer if it did.
    return Math.max(best, 0);
  }

  return {
    validators: {
      [AGORA_NAMESPACE]: async (key: Uint8Array, value: Uint8Array) => {
        if (isRoomRecordKey(new TextDecoder().decode(key))) await verifyRoom(key, value);
        else await verify(key, value);
      },
    },
    selectors: {
      [AGORA_NAMESPACE]: (key: Uint8Array, records: Uint8Array[]) =>
        isRoomRecordKey(new TextDecoder().decode(key)) ? selectRoomRecord(records) : select(records),
    },
    verify,
    select,
    rejected: (reason) => counts.get(reason) ?? 0,
    countRejection,
    verifyRoom,
    selectRoom: selectRoomRecord,
    countRoomRejection: (reason) => roomMetrics.countRejection(reason),
    roomMetrics,
    dispose() {
      if (registry && registry.getSingleMetric(REJECTED_METRIC) === counter) registry.removeSingleMetric(REJECTED_METRIC);
    },
  };
}
