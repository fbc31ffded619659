/**
 * Access grants: who may be in an owned room and with which role, signed by the room's owner or by a
 * moderator the owner delegated to, verified offline by any mixer. Binary, versioned and canonical (one
 * byte string per grant; the decoder rejects anything else), specified in docs/access.md with test vectors.
 *
 *   grant = version:u8 (1) | count:u8 (1-4) | link × count
 *   link  = roomLen:u8 | room | role:u8 | expiresAt:u64 (unix ms) | issuer[32] | bound:u8 (0|1)
 *           | subject[32] (when bound) | signature[64]
 *
 * The signature of a link is Ed25519 by `issuer` over "agora-grant/1" ‖ 0x00 ‖ the link's bytes before
 * the signature (the domain prefix keeps a grant from being confused with anything else the same key signs:
 * peer keys also sign libp2p records and Noise handshakes). Link 0 is issued by the owner named in the room
 * id; link i > 0 is issued by the subject of link i − 1, which must be a bound moderator link; the last link
 * is the participant's grant.
 */

import { base64url } from "multiformats/bases/base64";
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES, type GrantSigner, sha256, toHex, verifyEd25519 } from "./keys";
import { isRoomOwner, roomOwnership } from "./owned-room";
import type { RevocationCheck } from "./revocations";

export const GRANT_VERSION = 1;
export const MAX_GRANT_LINKS = 4;
export const GRANT_SIGNATURE_DOMAIN = "agora-grant/1";

/** Roles, ordered: a higher role includes the rights of the lower ones. Also the JOINED `role` byte. */
export const Role = { LISTENER: 1, SPEAKER: 2, MODERATOR: 3 } as const;
export type RoleName = "listener" | "speaker" | "moderator";
export const ROLE_NAMES: Record<number, RoleName> = { 1: "listener", 2: "speaker", 3: "moderator" };

export function roleFromName(name: string): number | undefined {
  const e = Object.entries(ROLE_NAMES).find(([, n]) => n === name);
  return e ? Number(e[0]) : undefined;
}

export interface GrantLink {
  room: string;
  role: number;
  /** unix ms after which the link is void */
  expiresAt: number;
  issuer: Uint8Array;
  /** the key the link is bound to; undefined = bearer */
  subject?: Uint8Array;
  signature: Uint8Array;
}

export interface Grant {
  links: GrantLink[];
  /** the canonical bytes this grant was decoded from (or encoded to) */
  bytes: Uint8Array;
}

/** Why a grant is refused: the `reason` label of agora_access_denied_total, and the ERROR FORBIDDEN text. */
export type GrantFailure =
  | "malformed"
  | "wrong_room"
  | "wrong_owner"
  | "bad_signature"
  | "broken_chain"
  | "exceeds_parent"
  | "expired"
  | "wrong_peer"
  | "revoked";

export class GrantError extends Error {
  constructor(
    readonly reason: GrantFailure,
    message: string,
  ) {
    super(message);
    this.name = "GrantError";
  }
}

const ascii = new TextEncoder();
const DOMAIN = ascii.encode(`${GRANT_SIGNATURE_DOMAIN}\0`);
const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function linkBodySize(l: Omit<GrantLink, "signature">): number {
  return 1 + l.room.length + 1 + 8 + ED25519_PUBLIC_KEY_BYTES + 1 + (l.subject ? ED25519_PUBLIC_KEY_BYTES : 0);
}

/** The bytes of a link before its signature. */
export function encodeLinkBody(l: Omit<GrantLink, "signature">): Uint8Array {
  if (!ROOM_RE.test(l.room)) throw new TypeError(`grant room "${l.room}" is not a room id`);
  if (!ROLE_NAMES[l.role]) throw new TypeError(`grant role ${l.role} is not 1 (listener), 2 (speaker) or 3 (moderator)`);
  if (!Number.isSafeInteger(l.expiresAt) || l.expiresAt < 0) throw new TypeError(`grant expiry ${l.expiresAt} is not a unix time in ms`);
  if (l.issuer.length !== ED25519_PUBLIC_KEY_BYTES) throw new TypeError("grant issuer must be a 32-byte Ed25519 key");
  if (l.subject && l.subject.length !== ED25519_PUBLIC_KEY_BYTES) throw new TypeError("grant subject must be a 32-byte Ed25519 key");
  const out = new Uint8Array(linkBodySize(l));
  const view = new DataView(out.buffer);
  let o = 0;
  out[o++] = l.room.length;
  out.set(ascii.encode(l.room), o);
  o += l.room.length;
  out[o++] = l.role;
  view.setBigUint64(o, BigInt(l.expiresAt));
  o += 8;
  out.set(l.issuer, o);
  o += 32;
  out[o++] = l.subject ? 1 : 0;
  if (l.subject) out.set(l.subject, o);
  return out;
}

/** What a link's signature covers: the domain prefix and the link body. */
export function linkSigningMessage(body: Uint8Array): Uint8Array {
  const m = new Uint8Array(DOMAIN.length + body.length);
  m.set(DOMAIN);
  m.set(body, DOMAIN.length);
  return m;
}

/** A link's id: the first 16 bytes of SHA-256 of its body, in hex (32 chars): what a revocation names. */
export function linkId(l: Omit<GrantLink, "signature">): string {
  return toHex(sha256(encodeLinkBody(l)).subarray(0, 16));
}

export function encodeGrant(links: GrantLink[]): Uint8Array {
  if (links.length < 1 || links.length > MAX_GRANT_LINKS)
    throw new TypeError(`a grant has 1-${MAX_GRANT_LINKS} links, got ${links.length}`);
  const parts = links.map((l) => {
    if (l.signature.length !== ED25519_SIGNATURE_BYTES) throw new TypeError("grant signature must be 64 bytes");
    return [encodeLinkBody(l), l.signature] as const;
  });
  const out = new Uint8Array(2 + parts.reduce((n, [b, s]) => n + b.length + s.length, 0));
  out[0] = GRANT_VERSION;
  out[1] = links.length;
  let o = 2;
  for (const [b, s] of parts) {
    out.set(b, o);
    out.set(s, o + b.length);
    o += b.length + s.length;
  }
  return out;
}

/** Decodes a grant; throws GrantError("malformed") naming the field. Signatures are not checked here. */
export function decodeGrant(bytes: Uint8Array): Grant {
  const bad = (where: string, why: string): never => {
    throw new GrantError("malformed", `grant ${where}: ${why}`);
  };
  if (bytes.length < 2) bad("header", `${bytes.length} bytes, needs at least 2`);
  if (bytes[0] !== GRANT_VERSION) bad("version", `version ${bytes[0]} is not ${GRANT_VERSION}`);
  const count = bytes[1]!;
  if (count < 1 || count > MAX_GRANT_LINKS) bad("count", `${count} links, 1-${MAX_GRANT_LINKS} allowed`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const links: GrantLink[] = [];
  let o = 2;
  const need = (n: number, where: string) => {
    if (o + n > bytes.length) bad(where, `truncated (needs ${n} bytes, ${bytes.length - o} left)`);
  };
  for (let i = 0; i < count; i++) {
    const at = `link[${i}]`;
    need(1, `${at}.roomLength`);
    const roomLen = bytes[o++]!;
    need(roomLen, `${at}.room`);
    const room = String.fromCharCode(...bytes.subarray(o, o + roomLen));
    if (!ROOM_RE.test(room)) bad(`${at}.room`, "not a room id");
    o += roomLen;
    need(1 + 8 + 32 + 1, `${at}.role`);
    const role = bytes[o++]!;
    if (!ROLE_NAMES[role]) bad(`${at}.role`, `role ${role} is not 1, 2 or 3`);
    const expires = view.getBigUint64(o);
    o += 8;
    if (expires > BigInt(Number.MAX_SAFE_INTEGER)) bad(`${at}.expiresAt`, "beyond 2^53-1");
    const issuer = bytes.slice(o, o + 32);
    o += 32;
    const bound = bytes[o++]!;
    if (bound > 1) bad(`${at}.bound`, `flag ${bound} is not 0 or 1`);
    let subject: Uint8Array | undefined;
    if (bound) {
      need(32, `${at}.subject`);
      subject = bytes.slice(o, o + 32);
      o += 32;
    }
    need(64, `${at}.signature`);
    const signature = bytes.slice(o, o + 64);
    o += 64;
    links.push({ room, role, expiresAt: Number(expires), issuer, ...(subject ? { subject } : {}), signature });
  }
  if (o !== bytes.length) bad("end", `${bytes.length - o} trailing bytes`);
  return { links, bytes };
}

/** The printable form (CLI, SDK): base64url without padding of the binary grant. */
export function grantToString(bytes: Uint8Array): string {
  // multiformats rather than Buffer: the SDK's browser bundle prints and parses grants too
  return base64url.baseEncode(bytes);
}

export function grantFromString(text: string): Uint8Array {
  const t = text.trim();
  if (!/^[A-Za-z0-9_-]+$/.test(t)) throw new GrantError("malformed", "grant string is not base64url");
  try {
    return base64url.baseDecode(t);
  } catch {
    throw new GrantError("malformed", "grant string is not base64url");
  }
}

export interface IssueGrantOptions {
  room: string;
  role: number;
  expiresAt: number;
  /** bind to this participant key (raw 32-byte Ed25519); omitted = bearer grant */
  subject?: Uint8Array;
  /** the issuer's own grant when it is a delegated moderator (not the owner) */
  parent?: Uint8Array;
}

/**
 * Signs a grant. The owner signs a one-link grant; a moderator appends a link to its own grant (`parent`),
 * which must be a moderator grant bound to the moderator's key, for the same room, and outlive the new link:
 * checked here too, so a CLI user learns at once what a mixer would refuse.
 */
export function issueGrant(signer: GrantSigner, o: IssueGrantOptions): Uint8Array {
  const parentLinks = o.parent ? decodeGrant(o.parent).links : [];
  const body = {
    room: o.room,
    role: o.role,
    expiresAt: o.expiresAt,
    issuer: signer.publicKey,
    ...(o.subject ? { subject: o.subject } : {}),
  };
  const link: GrantLink = { ...body, signature: signer.sign(linkSigningMessage(encodeLinkBody(body))) };
  const links = [...parentLinks, link];
  if (parentLinks.length === 0 && !isRoomOwner(o.room, signer.publicKey))
    throw new GrantError(
      "wrong_owner",
      `the key is not the owner of room ${o.room} (its id names another key) and no parent grant was given`,
    );
  checkChainShape(links, o.room);
  return encodeGrant(links);
}

/** What a valid grant gives its holder. */
export interface VerifiedGrant {
  role: number;
  /** the earliest expiry in the chain: when the grant stops admitting */
  expiresAt: number;
  /** ids of every link (revoking any one of them voids this grant) */
  linkIds: string[];
  /** hex keys of every issuer and the final subject (banning any one voids this grant) */
  keys: string[];
  /** the final link's subject key when the grant is bound */
  subject?: Uint8Array;
}

export interface VerifyGrantOptions {
  room: string;
  /** wall clock, unix ms */
  now: number;
  /** raw Ed25519 key of the connection's remote peer (libp2p authenticated it) */
  remoteKey?: Uint8Array;
  revoked?: RevocationCheck;
}

/** Rules that need no signature check: rooms, delegation, roles and expiries never exceeding the parent's. */
function checkChainShape(links: GrantLink[], room: string): void {
  links.forEach((l, i) => {
    if (l.room !== room) throw new GrantError("wrong_room", `grant link ${i} is for room ${l.room}, not ${room}`);
  });
  for (let i = 1; i < links.length; i++) {
    const l = links[i]!;
    const parent = links[i - 1]!;
    if (parent.role !== Role.MODERATOR)
      throw new GrantError("broken_chain", `grant link ${i - 1} is a ${ROLE_NAMES[parent.role]} grant; only moderators delegate`);
    if (!parent.subject || !sameBytes(parent.subject, l.issuer))
      throw new GrantError("broken_chain", `grant link ${i} is not issued by the key link ${i - 1} is bound to`);
    if (l.role > parent.role) throw new GrantError("exceeds_parent", `grant link ${i} gives a higher role than its issuer holds`);
    if (l.expiresAt > parent.expiresAt) throw new GrantError("exceeds_parent", `grant link ${i} outlives its issuer's grant`);
  }
}

/**
 * Verifies a grant offline for a JOIN to `room`: the owner named by the room id signed link 0, each link is
 * signed by the key the previous one delegates to, nothing exceeds its parent, no link has expired or been
 * revoked, and a bound grant is bound to the connection's key. Throws GrantError with the reason.
 */
export function verifyGrant(bytes: Uint8Array, o: VerifyGrantOptions): VerifiedGrant {
  if (!roomOwnership(o.room).owned) throw new GrantError("wrong_room", `room ${o.room} is open: it takes no grant`);
  const { links } = decodeGrant(bytes);
  checkChainShape(links, o.room);
  if (!isRoomOwner(o.room, links[0]!.issuer)) throw new GrantError("wrong_owner", `grant is not issued by the owner of room ${o.room}`);
  for (let i = 0; i < links.length; i++) {
    const l = links[i]!;
    if (!verifyEd25519(l.issuer, linkSigningMessage(encodeLinkBody(l)), l.signature))
      throw new GrantError("bad_signature", `grant link ${i} has an invalid signature`);
  }
  const last = links[links.length - 1]!;
  const expiresAt = Math.min(...links.map((l) => l.expiresAt));
  if (o.now >= expiresAt) throw new GrantError("expired", `grant expired at ${new Date(expiresAt).toISOString()}`);
  if (last.subject && !(o.remoteKey && sameBytes(o.remoteKey, last.subject)))
    throw new GrantError("wrong_peer", "grant is bound to another participant key");
  const linkIds = links.map((l) => linkId(l));
  const keys = [...new Set([...links.map((l) => toHex(l.issuer)), ...(last.subject ? [toHex(last.subject)] : [])])];
  // The owner's own key is never revocable by the list (a moderator cannot ban the owner).
  const ownerHex = toHex(links[0]!.issuer);
  if (o.revoked)
    for (const id of [...linkIds, ...keys.filter((k) => k !== ownerHex)])
      if (o.revoked(id, o.now)) throw new GrantError("revoked", "grant (or a key it names) has been revoked");
  return { role: last.role, expiresAt, linkIds, keys, ...(last.subject ? { subject: last.subject } : {}) };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
