/**
 * The room record: where a room lives. Stored in the DHT under `/agora/rooms/<room-id>` by the mixer that
 * hosts the room, re-signed every heartbeat, and the one function every DHT server, every resolving node and
 * every client uses to decide whether such a record is acceptable and which of two is the better claim.
 * docs/room-record.md is the format's specification (with a test vector).
 *
 * Trust model: the record is signed by the host it names (`host`, an Ed25519 peer id that embeds its public
 * key), so nobody but the holder of that key can say "this room is on my node". Unlike an advertisement, the
 * key does not name the signer: any mixer may claim any room. Two live claims of one room are resolved by
 * compareRoomRecords(), the same on every node: higher epoch, then (same host) higher seq, then (different
 * hosts, equal epoch) the lower sha256(room "\n" host). A claim with a higher epoch is believed: the epoch is
 * what a successor raises when it takes a room over, and no node can check whether the takeover was deserved
 * (owned rooms carry their own authority: the access-control fields, `revocations` and later ones).
 */
import { createHash } from "node:crypto";
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { AgoraError } from "../errors";
import { PEER_ID_PATTERN, REGION_TOKEN_PATTERN, ROOM_ID_PATTERN } from "../protocol";
import {
  AGORA_NAMESPACE,
  canonicalText,
  decodeUtf8,
  fail,
  isMultiaddrText,
  MAX_CLOCK_SKEW_SECONDS,
  MAX_TTL_SECONDS,
  num,
  RecordRejectedError,
  type RejectReason,
  str,
} from "./advertisement";
import { canonicalJson } from "./canonical";

export type RoomStatus = "active" | "handing-over";
export const ROOM_STATUSES: readonly RoomStatus[] = ["active", "handing-over"];

/** One revoked grant of an owned room (filled in by access control; reserved and validated here). */
export interface RoomRevocation {
  /** Lowercase hex id of the revoked grant, 1–64 characters. */
  id: string;
  /** Unix milliseconds until which the revocation holds (the revoked grant's own expiry). */
  until: number;
}

/** The record, field for field as stored in the DHT (canonical JSON). */
export interface RoomRecord {
  /** Room id (ROOM_ID_PATTERN); equals the last segment of the DHT key. */
  room: string;
  /** The region the room was created in: it stays there through handovers. */
  region: string;
  /** Peer id of the hosting mixer (Ed25519, `12D3KooW…`): the signer. */
  host: string;
  /** Multiaddrs to dial the host, without /p2p/<peer-id> (at most 16). */
  addrs: string[];
  /** Participants in the room at signing time. */
  participants: number;
  /** u32, incremented on every handover (and on every re-home after a host's death). */
  epoch: number;
  /** Strictly increasing per host (milliseconds since the epoch, bumped when needed). */
  seq: number;
  /** Unix time in seconds (millisecond precision) when this record was signed. */
  last_seen: number;
  /** 3 × the host's record interval: past last_seen + ttl_seconds the record is not live and is refused. */
  ttl_seconds: number;
  status: RoomStatus;
  /** Peer id of the mixer taking the room over: present exactly when status is "handing-over". */
  successor?: string;
  /** true: anyone may join (open room); false: an owned room (access control decides who). */
  open: boolean;
  /** Reserved for access control: at most 64 revoked grants, covered by the signature like every field. */
  revocations?: RoomRevocation[];
  /** base64 Ed25519 signature over ROOM_SIGNATURE_DOMAIN + canonicalJson(all other fields). */
  signature: string;
}

export type UnsignedRoomRecord = Omit<RoomRecord, "signature">;

export const ROOM_KEY_PREFIX = `/${AGORA_NAMESPACE}/rooms/`;
/**
 * Encoded records larger than this are refused everywhere. A full record (16 addresses, 64 revocations) is
 * about 7.5 KiB; a usual one (no revocations) under 1 KiB.
 */
export const MAX_ROOM_RECORD_BYTES = 8192;
export const MAX_ROOM_ADDRS = 16;
export const MAX_REVOCATIONS = 64;
export const MAX_EPOCH = 0xffff_ffff;
export const MAX_PARTICIPANTS = 1_000_000;
/** Domain separation from advertisements and anything else the node key signs. */
export const ROOM_SIGNATURE_DOMAIN = "agora-room-record/v1\n";

const REVOCATION_ID = /^[0-9a-f]{1,64}$/;

export function roomRecordKey(room: string): string {
  return `${ROOM_KEY_PREFIX}${room}`;
}

export function roomRecordKeyBytes(room: string): Uint8Array {
  return new TextEncoder().encode(roomRecordKey(room));
}

export function isRoomRecordKey(key: string): boolean {
  return key.startsWith(ROOM_KEY_PREFIX);
}

/** `/agora/rooms/<room-id>` → the room id; anything else is refused. */
export function parseRoomRecordKey(key: string): string {
  const parts = key.split("/");
  if (parts.length !== 4 || parts[0] !== "" || parts[1] !== AGORA_NAMESPACE || parts[2] !== "rooms") {
    throw new RecordRejectedError("bad_key", `key ${JSON.stringify(key.slice(0, 200))} is not /agora/rooms/<room-id>`);
  }
  const room = parts[3]!;
  if (!ROOM_ID_PATTERN.test(room))
    throw new RecordRejectedError("bad_key", `room id ${JSON.stringify(room.slice(0, 80))} in key is invalid`);
  return room;
}

/** The bytes that are signed: domain tag + canonical JSON of every field except `signature`. */
export function roomSigningBytes(record: Record<string, unknown>): Uint8Array {
  const { signature: _omit, ...rest } = record;
  return new TextEncoder().encode(ROOM_SIGNATURE_DOMAIN + canonicalJson(rest));
}

export async function signRoomRecord(unsigned: UnsignedRoomRecord, privateKey: PrivateKey): Promise<RoomRecord> {
  if (privateKey.type !== "Ed25519") throw new AgoraError("P2P", `room records are signed with Ed25519 keys, not ${privateKey.type}`);
  const sig = await privateKey.sign(roomSigningBytes(unsigned as unknown as Record<string, unknown>));
  return { ...unsigned, signature: Buffer.from(sig).toString("base64") };
}

/** The stored form: canonical JSON (signature included), so equal records are equal bytes. */
export function encodeRoomRecord(record: RoomRecord): Uint8Array {
  return new TextEncoder().encode(canonicalJson(record));
}

export interface RoomVerifyOptions {
  /** Unix seconds; defaults to the wall clock. */
  now?: number;
  /** Skip the freshness checks (stale/future): for tests of the other checks only. */
  ignoreTime?: boolean;
}

/**
 * Full check of one record against its key: size, key, JSON, fields, canonical bytes, signature by the host
 * it names, freshness (in that order, so "stale" always means "authentic but old"). Returns the typed record
 * or throws RecordRejectedError.
 */
export async function verifyRoomRecord(key: Uint8Array | string, value: Uint8Array, opts: RoomVerifyOptions = {}): Promise<RoomRecord> {
  if (value.byteLength > MAX_ROOM_RECORD_BYTES) {
    throw new RecordRejectedError("oversized", `room record is ${value.byteLength} bytes, the limit is ${MAX_ROOM_RECORD_BYTES}`);
  }
  const keyText = typeof key === "string" ? key : decodeUtf8(key, "bad_key");
  const room = parseRoomRecordKey(keyText);
  const text = decodeUtf8(value, "malformed");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new RecordRejectedError("malformed", "room record is not valid JSON");
  }
  const rec = checkRoomFields(parsed);
  if (canonicalText(parsed) !== text) {
    throw new RecordRejectedError("not_canonical", "room record bytes are not the canonical JSON of their content (docs/room-record.md)");
  }
  if (rec.room !== room) throw new RecordRejectedError("key_mismatch", `record room "${rec.room}" differs from the key's "${room}"`);

  let pid: ReturnType<typeof peerIdFromString>;
  try {
    pid = peerIdFromString(rec.host);
  } catch {
    throw new RecordRejectedError("invalid_field", "host is not a decodable peer id");
  }
  if (pid.type !== "Ed25519" || pid.publicKey == null) {
    throw new RecordRejectedError("unsupported_key", `host peer id type ${pid.type} does not embed its public key`);
  }
  if (!/^[A-Za-z0-9+/]{86}==$/.test(rec.signature)) throw new RecordRejectedError("bad_signature", "signature is not 64 bytes of base64");
  let ok = false;
  try {
    ok = await pid.publicKey.verify(roomSigningBytes(rec as unknown as Record<string, unknown>), Buffer.from(rec.signature, "base64"));
  } catch {
    ok = false;
  }
  if (!ok) throw new RecordRejectedError("bad_signature", `signature does not verify with the key of the host ${rec.host}`);
  if (opts.ignoreTime !== true) checkRoomFreshness(rec, opts.now ?? Date.now() / 1000);
  return rec;
}

export function checkRoomFreshness(rec: Pick<RoomRecord, "last_seen" | "ttl_seconds">, nowSeconds: number): void {
  if (rec.last_seen > nowSeconds + MAX_CLOCK_SKEW_SECONDS) {
    throw new RecordRejectedError(
      "future",
      `last_seen is ${(rec.last_seen - nowSeconds).toFixed(1)} s in the future (skew limit ${MAX_CLOCK_SKEW_SECONDS} s)`,
    );
  }
  if (rec.last_seen + rec.ttl_seconds < nowSeconds) {
    throw new RecordRejectedError("stale", `room record expired ${(nowSeconds - rec.last_seen - rec.ttl_seconds).toFixed(1)} s ago`);
  }
}

/** What the selector compares; a stored record's summary (record-store.ts) carries the same. */
export type RoomClaim = Pick<RoomRecord, "room" | "host" | "epoch" | "seq" | "last_seen">;

/**
 * The stable tie-break between two hosts claiming a room at the same epoch: the lower sha256 of
 * `room "\n" host` (UTF-8) wins. It depends on nothing a host controls per publish (not seq, participants or
 * time), so re-publishing cannot win a tie, and every node computes it alike. Lowercase hex.
 */
export function roomTieBreak(room: string, host: string): string {
  return createHash("sha256").update(`${room}\n${host}`, "utf8").digest("hex");
}

/**
 * Orders two valid claims of one room: > 0 when `a` is the better one, < 0 when `b` is, 0 when equal.
 * 1. higher epoch; 2. same host: higher seq, then newer last_seen (its latest statement, whatever its
 * status); 3. different hosts: the lower roomTieBreak.
 */
export function compareRoomRecords(a: RoomClaim, b: RoomClaim): number {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? 1 : -1;
  if (a.host === b.host) {
    if (a.seq !== b.seq) return a.seq > b.seq ? 1 : -1;
    return a.last_seen === b.last_seen ? 0 : a.last_seen > b.last_seen ? 1 : -1;
  }
  const ta = roomTieBreak(a.room, a.host);
  const tb = roomTieBreak(b.room, b.host);
  return ta === tb ? 0 : ta < tb ? 1 : -1;
}

/**
 * Why `incoming` is refused when `held` is the live record it would replace, or null if it may replace it.
 * Equal seq from the same host is accepted only as the same bytes (the caller compares them).
 */
export function roomReplacementRefusal(held: RoomClaim, incoming: RoomClaim): { reason: RejectReason; message: string } | null {
  if (incoming.epoch < held.epoch) {
    return { reason: "lower_epoch", message: `epoch ${incoming.epoch} is lower than the live epoch ${held.epoch} of room ${held.room}` };
  }
  if (incoming.epoch > held.epoch) return null;
  if (incoming.host === held.host) {
    if (incoming.seq < held.seq) return { reason: "superseded", message: `seq ${incoming.seq} is older than the held seq ${held.seq}` };
    return null;
  }
  if (compareRoomRecords(incoming, held) < 0) {
    return {
      reason: "claim_lost",
      message: `room ${held.room} is held at epoch ${held.epoch} by ${held.host}, which wins the tie-break over ${incoming.host}`,
    };
  }
  return null;
}

/** Best-effort parse of a (validated) record's comparison fields, for selectors and stores; null if unparsable. */
export function peekRoomClaim(value: Uint8Array): (RoomClaim & { ttl_seconds: number }) | null {
  try {
    const o = JSON.parse(new TextDecoder().decode(value)) as Record<string, unknown>;
    if (
      typeof o.room !== "string" ||
      typeof o.host !== "string" ||
      typeof o.epoch !== "number" ||
      typeof o.seq !== "number" ||
      typeof o.last_seen !== "number" ||
      typeof o.ttl_seconds !== "number"
    )
      return null;
    return { room: o.room, host: o.host, epoch: o.epoch, seq: o.seq, last_seen: o.last_seen, ttl_seconds: o.ttl_seconds };
  } catch {
    return null;
  }
}

/** Index of the best of several valid records of one room (the kad-dht selector); unparsable ones rank last. */
export function selectRoomRecord(records: Uint8Array[]): number {
  let best = -1;
  let bestClaim: RoomClaim | null = null;
  records.forEach((r, i) => {
    const c = peekRoomClaim(r);
    if (!c) return;
    if (!bestClaim || compareRoomRecords(c, bestClaim) > 0) {
      best = i;
      bestClaim = c;
    }
  });
  return Math.max(best, 0);
}

/** Every field present and well-typed; unknown extra fields are allowed (the signature covers them). */
export function checkRoomFields(parsed: unknown): RoomRecord {
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new RecordRejectedError("malformed", "room record is not a JSON object");
  }
  const o = parsed as Record<string, unknown>;
  str(o, "room", 64, ROOM_ID_PATTERN);
  str(o, "region", 63, REGION_TOKEN_PATTERN);
  const host = str(o, "host", 64, PEER_ID_PATTERN);
  const addrs = o.addrs;
  if (!Array.isArray(addrs)) fail("addrs", "must be an array of multiaddr strings");
  if (addrs.length > MAX_ROOM_ADDRS) fail("addrs", `must have at most ${MAX_ROOM_ADDRS} entries`);
  for (const a of addrs) if (!isMultiaddrText(a)) fail("addrs", `has an invalid entry ${JSON.stringify(String(a).slice(0, 80))}`);
  num(o, "participants", 0, MAX_PARTICIPANTS, true);
  num(o, "epoch", 0, MAX_EPOCH, true);
  num(o, "seq", 0, Number.MAX_SAFE_INTEGER, true);
  num(o, "last_seen", 0, 1e11);
  const ttl = num(o, "ttl_seconds", 0, MAX_TTL_SECONDS);
  if (ttl <= 0) fail("ttl_seconds", "must be positive");
  const status = str(o, "status", 16);
  if (!ROOM_STATUSES.includes(status as RoomStatus)) fail("status", `must be one of ${ROOM_STATUSES.join(", ")}`);
  if (status === "handing-over") {
    const successor = str(o, "successor", 64, PEER_ID_PATTERN);
    if (successor === host) fail("successor", "must differ from host");
  } else if (o.successor !== undefined) {
    fail("successor", 'is only allowed when status is "handing-over"');
  }
  if (typeof o.open !== "boolean") fail("open", "must be true or false");
  if (o.revocations !== undefined) {
    const list = o.revocations;
    if (!Array.isArray(list)) fail("revocations", "must be an array");
    if (list.length > MAX_REVOCATIONS) fail("revocations", `must have at most ${MAX_REVOCATIONS} entries`);
    list.forEach((e, i) => {
      if (e === null || typeof e !== "object" || Array.isArray(e)) fail(`revocations[${i}]`, "must be an object {id, until}");
      const entry = e as Record<string, unknown>;
      const keys = Object.keys(entry);
      if (keys.length !== 2 || !keys.includes("id") || !keys.includes("until")) fail(`revocations[${i}]`, "must have exactly id and until");
      if (typeof entry.id !== "string" || !REVOCATION_ID.test(entry.id)) fail(`revocations[${i}].id`, "must be 1-64 lowercase hex digits");
      if (typeof entry.until !== "number" || !Number.isSafeInteger(entry.until) || entry.until < 0)
        fail(`revocations[${i}].until`, "must be a non-negative integer (unix ms)");
    });
  }
  str(o, "signature", 128);
  return o as unknown as RoomRecord;
}

/** True when the record is past its TTL at `nowSeconds`. */
export function isRoomRecordExpired(rec: Pick<RoomRecord, "last_seen" | "ttl_seconds">, nowSeconds = Date.now() / 1000): boolean {
  return rec.last_seen + rec.ttl_seconds < nowSeconds;
}
