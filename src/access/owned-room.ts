/**
 * Owned room ids: `<name>--<owner key id>`, where the key id is the first 16 bytes (128 bits) of
 * SHA-256(owner's raw 32-byte Ed25519 public key) in lowercase RFC 4648 base32 without padding (26
 * characters). The id fits the room-id alphabet (`[A-Za-z0-9._-]`, 64 characters), so the name has at
 * most 36 characters. Every room id ending in `--` + 26 base32 characters is owned: that form is reserved,
 * nobody can hold an open room that looks owned.
 *
 * Why 128 bits are enough: claiming someone's room needs a key whose hash matches their id in 128 bits, a
 * second preimage (about 2^128 hashes; against all N rooms at once 2^128 / N). A collision (2^64) only gives
 * an attacker two keys of its own for one room, which claims nothing from anyone else.
 */
import { base32 } from "multiformats/bases/base32";
import { checkRoomId, MAX_ROOM_ID_LENGTH } from "../protocol";
import { ED25519_PUBLIC_KEY_BYTES, sha256 } from "./keys";

export const OWNER_KEY_ID_CHARS = 26;
export const OWNED_ROOM_SEPARATOR = "--";
export const MAX_OWNED_ROOM_NAME_LENGTH = MAX_ROOM_ID_LENGTH - OWNED_ROOM_SEPARATOR.length - OWNER_KEY_ID_CHARS;
const OWNED_RE = /^(.+)--([a-z2-7]{26})$/;

/** The 26-character key id of an owner's raw Ed25519 public key. */
export function ownerKeyId(publicKey: Uint8Array): string {
  if (publicKey.length !== ED25519_PUBLIC_KEY_BYTES) throw new TypeError(`owner key must be 32 bytes, got ${publicKey.length}`);
  return base32.baseEncode(sha256(publicKey).subarray(0, 16));
}

/** `<name>--<key id>`; throws a TypeError naming what is wrong with the name. */
export function ownedRoomId(name: string, ownerPublicKey: Uint8Array): string {
  if (name.length === 0 || name.length > MAX_OWNED_ROOM_NAME_LENGTH)
    throw new TypeError(`owned room name must be 1-${MAX_OWNED_ROOM_NAME_LENGTH} characters, got ${name.length}`);
  const id = `${name}${OWNED_ROOM_SEPARATOR}${ownerKeyId(ownerPublicKey)}`;
  const err = checkRoomId(id);
  if (err) throw new TypeError(`owned room name "${name}": ${err}`);
  return id;
}

export type RoomOwnership = { owned: false } | { owned: true; name: string; keyId: string };

export function roomOwnership(room: string): RoomOwnership {
  const m = OWNED_RE.exec(room);
  return m ? { owned: true, name: m[1]!, keyId: m[2]! } : { owned: false };
}

/** Whether `publicKey` is the owner key the room id names. */
export function isRoomOwner(room: string, publicKey: Uint8Array): boolean {
  const o = roomOwnership(room);
  return o.owned && publicKey.length === ED25519_PUBLIC_KEY_BYTES && ownerKeyId(publicKey) === o.keyId;
}
