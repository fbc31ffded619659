/**
 * The signed node advertisement: the record each dedicated/relay node stores in the DHT under
 * `/agora/nodes/<region>/<peer-id>` (seed 000, "Node Discovery"), and the one function every DHT server,
 * every discovering client and the direct-fetch protocol use to decide whether such a record is acceptable.
 *
 * Trust model: the record is self-signed by the node's libp2p Ed25519 key, and the key is not carried in the
 * record: it is recovered from the peer id in the DHT key (Ed25519 peer ids are an identity multihash of the
 * public key). So nobody but the holder of that key can produce a record under that key, and the record
 * cannot be replayed under another region or another peer's key. What the node says about itself (load,
 * reputation) is still only a claim: clients must treat it as a hint, never as proof.
 */
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr } from "@multiformats/multiaddr";
import { AgoraError } from "../errors";
import { LABEL_PATTERN, REGION_TOKEN_PATTERN } from "../protocol";
import { canonicalJson } from "./canonical";

export type NodeStatus = "online" | "degraded" | "draining";
export const NODE_STATUSES: readonly NodeStatus[] = ["online", "degraded", "draining"];

/** The record, field for field as stored in the DHT (JSON). */
export interface NodeAdvertisement {
  /** libp2p peer id (Ed25519, `12D3KooW…`); equals the last segment of the DHT key and identifies the signer. */
  peer_id: string;
  /** agora-node version string. */
  version: string;
  /** Equals the region segment of the DHT key. */
  region: string;
  /** "mixer", "relay" … */
  capabilities: string[];
  max_clients: number;
  current_load: number;
  uptime_seconds: number;
  /**
   * 0..1, self-reported: 0.5 × availability + 0.5 × stability, where availability is the fraction of the node's
   * last 20 heartbeats that reached at least one DHT peer and stability is min(1, uptime / 7 days). A node that
   * just started therefore reports about 0.5; one up for a week whose heartbeats all land reports 1.
   */
  reputation: number;
  /** Unix time in seconds (fractional: millisecond precision) when this record was signed. */
  last_seen: number;
  /**
   * Multiaddrs to dial, without the trailing /p2p/<peer-id> (name and shape as in seed 000). The last entry may
   * be the node's UDP endpoint as STUN learned it, `/ip4/<ip>/udp/<port>` (only when AutoNAT confirmed the IP).
   */
  listen_addr: string[];
  group: string;
  labels: string[];
  status: NodeStatus;
  cpu_percent: number;
  mem_percent: number;
  /** Strictly increasing per node across restarts (milliseconds since the epoch, bumped when needed). */
  seq: number;
  /** 3 × heartbeat interval: past last_seen + ttl_seconds the node is offline and the record is rejected. */
  ttl_seconds: number;
  /** base64 Ed25519 signature over SIGNATURE_DOMAIN + canonicalJson(all other fields). */
  signature: string;
}

export type UnsignedAdvertisement = Omit<NodeAdvertisement, "signature">;

/** DHT namespace: kad-dht picks validators and selectors by the first key segment. */
export const AGORA_NAMESPACE = "agora";
export const ADVERT_KEY_PREFIX = `/${AGORA_NAMESPACE}/nodes/`;
/** Records (encoded JSON) larger than this are rejected everywhere. */
export const MAX_RECORD_BYTES = 4096;
/** How far in the future last_seen may be: tolerates unsynchronised clocks between signer and verifier. */
export const MAX_CLOCK_SKEW_SECONDS = 30;
/** Upper bound on ttl_seconds (3 × the largest heartbeat_interval the config allows), so no record lives for ever. */
export const MAX_TTL_SECONDS = 3 * 3600;
/**
 * Domain separation: the signed bytes can never be mistaken for another message signed by the same node key
 * (libp2p peer records, noise handshakes, a future record type).
 */
export const SIGNATURE_DOMAIN = "agora-node-advertisement/v1\n";

const TOKEN = REGION_TOKEN_PATTERN;
const LABEL = LABEL_PATTERN;

/** Why a record was refused; the value of the `reason` label of agora_dht_records_rejected_total. */
export type RejectReason =
  | "oversized"
  | "malformed"
  | "invalid_field"
  | "bad_key"
  | "key_mismatch"
  | "unsupported_key"
  | "bad_signature"
  | "stale"
  | "future"
  | "superseded"
  | "not_canonical"
  | "seq_conflict"
  | "signer_quota"
  | "store_full"
  // room records (room-record.ts): a claim that loses to the live one held for the room
  | "lower_epoch"
  | "claim_lost";

export const REJECT_REASONS: readonly RejectReason[] = [
  "oversized",
  "malformed",
  "invalid_field",
  "bad_key",
  "key_mismatch",
  "unsupported_key",
  "bad_signature",
  "stale",
  "future",
  "superseded",
  "not_canonical",
  "seq_conflict",
  "signer_quota",
  "store_full",
  "lower_epoch",
  "claim_lost",
];

/** A refused record. kad-dht treats any throw from a validator as "invalid record": never fatal to the node. */
export class RecordRejectedError extends AgoraError {
  readonly reason: RejectReason;
  constructor(reason: RejectReason, message: string, where?: string) {
    super("RECORD_INVALID", `${reason}: ${message}`, { where });
    this.name = "RecordRejectedError";
    this.reason = reason;
  }
}

export function advertisementKey(region: string, peerId: string): string {
  return `${ADVERT_KEY_PREFIX}${region}/${peerId}`;
}

export function advertisementKeyBytes(region: string, peerId: string): Uint8Array {
  return new TextEncoder().encode(advertisementKey(region, peerId));
}

/** `/agora/nodes/<region>/<peer-id>` → its parts; anything else in the namespace is refused. */
export function parseAdvertisementKey(key: string): { region: string; peerId: string } {
  const parts = key.split("/");
  if (parts.length !== 5 || parts[0] !== "" || parts[1] !== AGORA_NAMESPACE || parts[2] !== "nodes") {
    throw new RecordRejectedError("bad_key", `key ${JSON.stringify(key.slice(0, 200))} is not /agora/nodes/<region>/<peer-id>`);
  }
  const region = parts[3]!;
  const peerId = parts[4]!;
  if (!TOKEN.test(region)) throw new RecordRejectedError("bad_key", `region ${JSON.stringify(region.slice(0, 80))} in key is not a token`);
  if (!/^[1-9A-HJ-NP-Za-km-z]{40,60}$/.test(peerId)) throw new RecordRejectedError("bad_key", "peer id in key is not a base58 peer id");
  return { region, peerId };
}

/** The bytes that are signed: domain tag + canonical JSON of every field except `signature`. */
export function signingBytes(record: Record<string, unknown>): Uint8Array {
  const { signature: _omit, ...rest } = record;
  return new TextEncoder().encode(SIGNATURE_DOMAIN + canonicalJson(rest));
}

export async function signAdvertisement(unsigned: UnsignedAdvertisement, privateKey: PrivateKey): Promise<NodeAdvertisement> {
  if (privateKey.type !== "Ed25519") throw new AgoraError("P2P", `advertisements are signed with Ed25519 keys, not ${privateKey.type}`);
  const sig = await privateKey.sign(signingBytes(unsigned as unknown as Record<string, unknown>));
  return { ...unsigned, signature: Buffer.from(sig).toString("base64") };
}

/** The stored form: canonical JSON (signature included), so equal records are equal bytes. */
export function encodeAdvertisement(record: NodeAdvertisement): Uint8Array {
  return new TextEncoder().encode(canonicalJson(record));
}

export interface VerifyOptions {
  /** Unix seconds; defaults to the wall clock. */
  now?: number;
  /** Skip the freshness checks (stale/future): for tests of the other checks only. */
  ignoreTime?: boolean;
}

/**
 * Full check of one stored record against its key. Returns the typed record or throws RecordRejectedError.
 * Order: cheap structural checks, then the signature, then freshness, so "stale" always means "authentic
 * but old" and an operator reading the rejection counter can tell forgery from clock trouble.
 */
export async function verifyAdvertisementRecord(
  key: Uint8Array | string,
  value: Uint8Array,
  opts: VerifyOptions = {},
): Promise<NodeAdvertisement> {
  if (value.byteLength > MAX_RECORD_BYTES) {
    throw new RecordRejectedError("oversized", `record is ${value.byteLength} bytes, the limit is ${MAX_RECORD_BYTES}`);
  }
  const keyText = typeof key === "string" ? key : decodeUtf8(key, "bad_key");
  const { region, peerId } = parseAdvertisementKey(keyText);

  let parsed: unknown;
  const text = decodeUtf8(value, "malformed");
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    if (err instanceof RecordRejectedError) throw err;
    throw new RecordRejectedError("malformed", "record is not valid JSON");
  }
  const rec = checkFields(parsed);
  // One content, one byte string: padding, duplicate keys, reordered fields or another spelling of a number
  // would let anyone swap a node's stored copy for a variant with the same signature and seq.
  if (canonicalText(parsed) !== text) {
    throw new RecordRejectedError("not_canonical", "record bytes are not the canonical JSON of their content (docs/advertisement.md)");
  }

  if (rec.peer_id !== peerId)
    throw new RecordRejectedError("key_mismatch", `record peer_id ${rec.peer_id} differs from the key's ${peerId}`);
  if (rec.region !== region)
    throw new RecordRejectedError("key_mismatch", `record region "${rec.region}" differs from the key's "${region}"`);

  let pid: ReturnType<typeof peerIdFromString>;
  try {
    pid = peerIdFromString(peerId);
  } catch {
    throw new RecordRejectedError("bad_key", "peer id in key does not decode");
  }
  if (pid.type !== "Ed25519" || pid.publicKey == null) {
    // RSA peer ids hash the key instead of embedding it: the record could not be verified without fetching it.
    throw new RecordRejectedError("unsupported_key", `peer id type ${pid.type} does not embed its public key`);
  }
  // Buffer's base64 decoder silently skips junk, so check the exact shape of 64 bytes in padded base64.
  if (!/^[A-Za-z0-9+/]{86}==$/.test(rec.signature)) {
    throw new RecordRejectedError("bad_signature", "signature is not 64 bytes of base64");
  }
  const sig = Buffer.from(rec.signature, "base64");
  let ok = false;
  try {
    ok = await pid.publicKey.verify(signingBytes(rec as unknown as Record<string, unknown>), sig);
  } catch {
    ok = false;
  }
  if (!ok) throw new RecordRejectedError("bad_signature", `signature does not verify with the key of ${peerId}`);

  if (opts.ignoreTime !== true) checkFreshness(rec, opts.now ?? Date.now() / 1000);
  return rec;
}

/** Throws "stale" past last_seen + ttl_seconds and "future" beyond the allowed clock skew. */
export function checkFreshness(rec: Pick<NodeAdvertisement, "last_seen" | "ttl_seconds">, nowSeconds: number): void {
  if (rec.last_seen > nowSeconds + MAX_CLOCK_SKEW_SECONDS) {
    throw new RecordRejectedError(
      "future",
      `last_seen is ${(rec.last_seen - nowSeconds).toFixed(1)} s in the future (skew limit ${MAX_CLOCK_SKEW_SECONDS} s)`,
    );
  }
  // Deliberately no skew allowance here: "offline after 3 missed heartbeats" must hold for short intervals too.
  if (rec.last_seen + rec.ttl_seconds < nowSeconds) {
    throw new RecordRejectedError("stale", `record expired ${(nowSeconds - rec.last_seen - rec.ttl_seconds).toFixed(1)} s ago`);
  }
}

/** True when the record is past its TTL at `nowSeconds` (no throw). */
export function isExpired(rec: Pick<NodeAdvertisement, "last_seen" | "ttl_seconds">, nowSeconds = Date.now() / 1000): boolean {
  return rec.last_seen + rec.ttl_seconds < nowSeconds;
}

export function canonicalText(parsed: unknown): string | null {
  try {
    return canonicalJson(parsed);
  } catch {
    return null;
  }
}

export function decodeUtf8(bytes: Uint8Array, reason: RejectReason): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new RecordRejectedError(reason, "not valid UTF-8");
  }
}

export function fail(field: string, why: string): never {
  throw new RecordRejectedError("invalid_field", `${field} ${why}`);
}

export function num(o: Record<string, unknown>, f: string, min: number, max: number, integer = false): number {
  const v = o[f];
  if (typeof v !== "number" || !Number.isFinite(v)) fail(f, "must be a number");
  if (integer && !Number.isSafeInteger(v)) fail(f, "must be an integer");
  if (v < min || v > max) fail(f, `must be within ${min}..${max}`);
  return v;
}

export function str(o: Record<string, unknown>, f: string, maxLen: number, pattern?: RegExp): string {
  const v = o[f];
  if (typeof v !== "string") fail(f, "must be a string");
  if (v.length > maxLen) fail(f, `must be at most ${maxLen} characters`);
  if (pattern && !pattern.test(v)) fail(f, `has an invalid value ${JSON.stringify(v.slice(0, 80))}`);
  return v;
}

function strList(o: Record<string, unknown>, f: string, maxItems: number, check: (s: string) => boolean): string[] {
  const v = o[f];
  if (!Array.isArray(v)) fail(f, "must be an array of strings");
  if (v.length > maxItems) fail(f, `must have at most ${maxItems} entries`);
  for (const item of v) {
    if (typeof item !== "string" || !check(item)) fail(f, `has an invalid entry ${JSON.stringify(String(item).slice(0, 80))}`);
  }
  return v as string[];
}

/** Field checks shared with the other signed records of src/p2p (room-record.ts). */
export function isMultiaddrText(s: unknown): boolean {
  if (typeof s !== "string" || s.length > 512 || !s.startsWith("/")) return false;
  try {
    multiaddr(s);
    return true;
  } catch {
    return false;
  }
}

/** Every field present and well-typed; unknown extra fields are allowed (they are covered by the signature). */
function checkFields(parsed: unknown): NodeAdvertisement {
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new RecordRejectedError("malformed", "record is not a JSON object");
  }
  const o = parsed as Record<string, unknown>;
  str(o, "peer_id", 64);
  str(o, "version", 64);
  str(o, "region", 63, TOKEN);
  strList(o, "capabilities", 16, (s) => TOKEN.test(s));
  num(o, "max_clients", 0, 1e9, true);
  num(o, "current_load", 0, 1e9, true);
  num(o, "uptime_seconds", 0, 1e11);
  num(o, "reputation", 0, 1);
  num(o, "last_seen", 0, 1e11);
  strList(o, "listen_addr", 32, isMultiaddrText);
  str(o, "group", 63, TOKEN);
  strList(o, "labels", 32, (s) => LABEL.test(s));
  const status = str(o, "status", 16);
  if (!NODE_STATUSES.includes(status as NodeStatus)) fail("status", `must be one of ${NODE_STATUSES.join(", ")}`);
  num(o, "cpu_percent", 0, 100);
  num(o, "mem_percent", 0, 100);
  num(o, "seq", 0, Number.MAX_SAFE_INTEGER, true);
  const ttl = num(o, "ttl_seconds", 0, MAX_TTL_SECONDS);
  if (ttl <= 0) fail("ttl_seconds", "must be positive");
  str(o, "signature", 128);
  return o as unknown as NodeAdvertisement;
}

/** Best-effort parse for selectors: records have already been validated; anything unparsable ranks last. */
export function peekSeq(value: Uint8Array): { seq: number; last_seen: number } | null {
  try {
    const o = JSON.parse(new TextDecoder().decode(value)) as Record<string, unknown>;
    if (typeof o.seq !== "number" || typeof o.last_seen !== "number") return null;
    return { seq: o.seq, last_seen: o.last_seen };
  } catch {
    return null;
  }
}
