/**
 * Noise encryption that works under Bun.
 *
 * @chainsafe/libp2p-noise encrypts frames of 1200 bytes or more with node:crypto's "chacha20-poly1305",
 * which Bun does not implement ("Unknown cipher"): every larger message (a 4 KiB DHT record, any audio or
 * relay stream of real size) kills the connection. Its WebAssembly ChaCha20-Poly1305 (the one it already
 * uses below 1200 bytes, and for Electron, which has the same gap) is used for every frame instead.
 * Measured under Bun on a loopback bulk transfer: wasm ≈ 45 MiB/s vs ≈ 26 MiB/s for the pure-JS @noble
 * implementation (which wins a tight encrypt/decrypt micro-benchmark on large frames but loses end to end,
 * presumably to allocation). Hashing and X25519 stay on node:crypto, which Bun has.
 *
 * Every libp2p node in agora-node must use `agoraNoise()` instead of `noise()`.
 */
import { noise } from "@chainsafe/libp2p-noise";
import { asCrypto, defaultCrypto } from "@chainsafe/libp2p-noise/crypto";

export const bunSafeNoiseCrypto: typeof defaultCrypto = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: asCrypto.chaCha20Poly1305Encrypt,
  chaCha20Poly1305Decrypt: asCrypto.chaCha20Poly1305Decrypt,
};

export function agoraNoise(): ReturnType<typeof noise> {
  return noise({ crypto: bunSafeNoiseCrypto });
}
