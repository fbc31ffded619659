/**
 * Move tokens: what a host hands each participant in a MOVE so the successor admits them at once, even
 * before it has seen the `handing-over` record in the DHT. Byte layout (protocol.md, "Move token"):
 *
 *   version:u8 (1) | expiresAtMs:u64 | epoch:u32 | roomLen:u8 room | issuerLen:u8 issuer |
 *   successorLen:u8 successor | participantLen:u8 participant | signature[64]
 *
 * Version 2 (owned rooms, docs/access.md) adds, before the signature, what of the participant's access
 * state is not in its grant: `access:u8` (bit 0 promoted, bit 1 muted, bit 2 room locked) and
 * `grantLinkId[16]` (the participant grant's last link id). The successor applies it on top of the grant it
 * verifies again, never beyond it.
 *
 * `issuer` is the old host's peer id; the signature is Ed25519 by its key over MOVE_TOKEN_DOMAIN followed by
 * every byte before the signature. The successor checks the signature against the key inside the issuer's
 * peer id (Ed25519 peer ids embed it), that the issuer is the room's host in the record it resolved, that the
 * token names itself and the joining peer, and that it has not expired.
 */
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { errorMessage } from "../errors";
import { MAX_MOVE_TOKEN_BYTES } from "../protocol";

export const MOVE_TOKEN_VERSION = 1;
export const MOVE_TOKEN_DOMAIN = "agora-move-token/v1\n";
/** How long a token is accepted: a client follows a MOVE within a second or two; 30 s covers a slow dial. */
export const MOVE_TOKEN_TTL_MS = 30_000;
const SIGNATURE_BYTES = 64;

/** Version 2: the participant's access state beyond its grant (see src/access/handover.ts). */
export interface MoveTokenAccess {
  promoted: boolean;
  muted: boolean;
  /** the room is locked (moved participants were inside; newcomers need a moderator grant) */
  locked: boolean;
  /** the participant grant's last link id, 32 hex characters */
  grantLinkId: string;
}

export interface MoveTokenClaims {
  room: string;
  epoch: number;
  /** the old host (signer) */
  issuer: string;
  successor: string;
  /** the participant's libp2p peer id (the connection the JOIN arrives on) */
  participant: string;
  expiresAtMs: number;
  access?: MoveTokenAccess;
}

const ACCESS_BYTES = 1 + 16;

/** Why a token was not accepted: the `result` label of agora_rooms_move_tokens_total (besides "accepted"). */
export type MoveTokenRejection =
  | "malformed"
  | "bad_signature"
  | "expired"
  | "wrong_successor"
  | "wrong_participant"
  | "wrong_room"
  | "not_host";

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

function body(c: MoveTokenClaims): Uint8Array {
  const parts = [c.room, c.issuer, c.successor, c.participant].map((s) => enc.encode(s));
  for (const p of parts) if (p.length === 0 || p.length > 255) throw new RangeError("move token field must be 1-255 bytes");
  const out = new Uint8Array(1 + 8 + 4 + parts.reduce((n, p) => n + 1 + p.length, 0) + (c.access ? ACCESS_BYTES : 0));
  const view = new DataView(out.buffer);
  out[0] = c.access ? 2 : MOVE_TOKEN_VERSION;
  view.setBigUint64(1, BigInt(Math.max(0, Math.floor(c.expiresAtMs))));
  view.setUint32(9, c.epoch >>> 0);
  let o = 13;
  for (const p of parts) {
    out[o++] = p.length;
    out.set(p, o);
    o += p.length;
  }
  if (c.access) {
    if (!/^[0-9a-f]{32}$/.test(c.access.grantLinkId)) throw new RangeError("move token grantLinkId must be 32 hex characters");
    out[o++] = (c.access.promoted ? 1 : 0) | (c.access.muted ? 2 : 0) | (c.access.locked ? 4 : 0);
    out.set(Buffer.from(c.access.grantLinkId, "hex"), o);
  }
  return out;
}

function signed(bodyBytes: Uint8Array): Uint8Array {
  const d = enc.encode(MOVE_TOKEN_DOMAIN);
  const out = new Uint8Array(d.length + bodyBytes.length);
  out.set(d);
  out.set(bodyBytes, d.length);
  return out;
}

export async function signMoveToken(key: PrivateKey, claims: MoveTokenClaims): Promise<Uint8Array> {
  const b = body(claims);
  const sig = await key.sign(signed(b));
  const out = new Uint8Array(b.length + sig.length);
  out.set(b);
  out.set(sig, b.length);
  if (out.length > MAX_MOVE_TOKEN_BYTES) throw new RangeError(`move token of ${out.length} bytes exceeds ${MAX_MOVE_TOKEN_BYTES}`);
  return out;
}

/** Parses a token without checking it; undefined if it is not one. */
export function decodeMoveToken(token: Uint8Array): { claims: MoveTokenClaims; body: Uint8Array; signature: Uint8Array } | undefined {
  const version = token[0];
  if (token.length < 13 + 4 + SIGNATURE_BYTES || (version !== MOVE_TOKEN_VERSION && version !== 2)) return undefined;
  const tail = version === 2 ? ACCESS_BYTES : 0;
  const view = new DataView(token.buffer, token.byteOffset, token.byteLength);
  const expiresAtMs = Number(view.getBigUint64(1));
  const epoch = view.getUint32(9);
  let o = 13;
  const fields: string[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const n = token[o++]!;
      if (n === 0 || o + n > token.length - SIGNATURE_BYTES - tail) return undefined;
      fields.push(dec.decode(token.subarray(o, o + n)));
      o += n;
    }
  } catch {
    return undefined;
  }
  if (o !== token.length - SIGNATURE_BYTES - tail) return undefined;
  const [room, issuer, successor, participant] = fields as [string, string, string, string];
  let access: MoveTokenAccess | undefined;
  if (tail) {
    const flags = token[o]!;
    if (flags > 7) return undefined;
    access = {
      promoted: (flags & 1) !== 0,
      muted: (flags & 2) !== 0,
      locked: (flags & 4) !== 0,
      grantLinkId: Buffer.from(token.subarray(o + 1, o + ACCESS_BYTES)).toString("hex"),
    };
    o += ACCESS_BYTES;
  }
  return {
    claims: { room, epoch, issuer, successor, participant, expiresAtMs, ...(access ? { access } : {}) },
    body: token.subarray(0, o),
    signature: token.subarray(o),
  };
}

export interface MoveTokenExpectation {
  room: string;
  /** this node */
  successor: string;
  /** the joining peer */
  participant: string;
  nowMs: number;
}

/** Checks everything the token proves by itself; whether the issuer is the room's host is the caller's part. */
export async function verifyMoveToken(
  token: Uint8Array,
  want: MoveTokenExpectation,
): Promise<{ ok: true; claims: MoveTokenClaims } | { ok: false; reason: MoveTokenRejection; message: string }> {
  const parsed = decodeMoveToken(token);
  if (!parsed) return { ok: false, reason: "malformed", message: "not a version 1 or 2 move token" };
  const { claims } = parsed;
  if (claims.room !== want.room) return { ok: false, reason: "wrong_room", message: `token is for room ${claims.room}` };
  if (claims.successor !== want.successor) return { ok: false, reason: "wrong_successor", message: `token names ${claims.successor}` };
  if (claims.participant !== want.participant)
    return { ok: false, reason: "wrong_participant", message: `token was issued to ${claims.participant}` };
  if (claims.expiresAtMs <= want.nowMs) return { ok: false, reason: "expired", message: "token expired" };
  try {
    const key = peerIdFromString(claims.issuer).publicKey;
    if (!key) return { ok: false, reason: "bad_signature", message: "issuer peer id carries no public key" };
    if (!(await key.verify(signed(parsed.body), parsed.signature)))
      return { ok: false, reason: "bad_signature", message: "signature does not verify with the issuer's key" };
  } catch (err) {
    return { ok: false, reason: "bad_signature", message: `cannot verify: ${errorMessage(err)}` };
  }
  return { ok: true, claims };
}
