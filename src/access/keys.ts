/**
 * Raw Ed25519 keys (32-byte public keys, the same keys as libp2p peer ids) signed and verified with
 * node:crypto: synchronous, so a mixer verifies a grant inside the JOIN handler without yielding the event
 * loop between checks and state changes. libp2p's PrivateKey signs asynchronously on some platforms.
 */
import type * as NodeCrypto from "node:crypto";
import type { KeyObject } from "node:crypto";

let nodeCrypto: typeof NodeCrypto | undefined;
/**
 * node:crypto, looked up at first use rather than imported: the SDK's browser bundle reaches this module
 * (grants in JOIN) and a browser has no node:crypto; there, signing and verifying throw USAGE-like errors.
 */
function crypto(): typeof NodeCrypto {
  nodeCrypto ??= globalThis.process?.getBuiltinModule?.("node:crypto") as typeof NodeCrypto | undefined;
  if (!nodeCrypto) throw new TypeError("Ed25519 signing and verification need node:crypto (Bun or Node), not available here");
  return nodeCrypto;
}

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;

// DER prefixes of an Ed25519 SubjectPublicKeyInfo and PKCS#8 private key (RFC 8410), followed by the 32 raw bytes.
// Plain bytes, not Buffer: a browser bundle evaluates this module too (it has no global Buffer).
const SPKI_PREFIX = fromHex("302a300506032b6570032100");
const PKCS8_PREFIX = fromHex("302e020100300506032b657004220420");

/** Something that signs with an Ed25519 key: its raw public key and a synchronous `sign`. */
export interface GrantSigner {
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

/**
 * A signer from a raw Ed25519 private key: the 32-byte seed, or libp2p's 64-byte form (seed ‖ public key,
 * `privateKey.raw` of an Ed25519 PrivateKey).
 */
export function signerFromRawPrivateKey(raw: Uint8Array): GrantSigner {
  if (raw.length !== 32 && raw.length !== 64) throw new TypeError(`Ed25519 private key must be 32 or 64 bytes, got ${raw.length}`);
  const { createPrivateKey, createPublicKey, sign } = crypto();
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw.subarray(0, 32)]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  const publicKey = new Uint8Array(spki.subarray(SPKI_PREFIX.length));
  if (raw.length === 64 && !Buffer.from(raw.subarray(32)).equals(publicKey))
    throw new TypeError("Ed25519 private key: its public half does not match the seed");
  return { publicKey, sign: (message) => new Uint8Array(sign(null, message, key)) };
}

const publicKeys = new Map<string, KeyObject>();

/** Verifies an Ed25519 signature; false (never a throw) for a malformed key or signature. */
export function verifyEd25519(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== ED25519_PUBLIC_KEY_BYTES || signature.length !== ED25519_SIGNATURE_BYTES) return false;
  const hex = toHex(publicKey);
  try {
    const { createPublicKey, verify } = crypto();
    let key = publicKeys.get(hex);
    if (!key) {
      key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: "der", type: "spki" });
      // A small cache: owners and moderators recur; the bound keeps a stream of fresh keys from growing it.
      if (publicKeys.size >= 1024) publicKeys.clear();
      publicKeys.set(hex, key);
    }
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(crypto().createHash("sha256").update(bytes).digest());
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
