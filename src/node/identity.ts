/**
 * The node's Ed25519 libp2p identity, persisted as the libp2p protobuf private-key encoding (the format
 * Kubo and js-libp2p use), mode 0600 (where the OS has POSIX modes: see permissions.ts). A corrupt or
 * unreadable file is an error and is never overwritten: replacing it would silently change the node's
 * PeerId and orphan its DHT records.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import type { PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { AgoraError } from "../errors";
import { writeFileAtomic } from "../state";
import { hasPosixModes, unrestrictedWarning } from "./permissions";

export interface Identity {
  privateKey: PrivateKey;
  peerId: string;
  keyFile: string;
  created: boolean;
  /** Set when the file is readable by group or others, or the OS cannot say (no POSIX modes). */
  permissionWarning?: string;
}

/** `platform` is injectable so the no-POSIX-modes path is testable anywhere. */
export function readIdentity(keyFile: string, platform: NodeJS.Platform = process.platform): Identity {
  let bytes: Uint8Array;
  let mode: number;
  try {
    const st = statSync(keyFile);
    if (!st.isFile()) throw new AgoraError("IDENTITY_IO", "is not a regular file", { where: keyFile });
    if (st.size > 4096)
      throw new AgoraError("IDENTITY_CORRUPT", `is ${st.size} bytes, too large for a key; refusing to use or replace it`, {
        where: keyFile,
      });
    mode = st.mode & 0o777;
    bytes = readFileSync(keyFile);
  } catch (err) {
    if (err instanceof AgoraError) throw err;
    throw new AgoraError("IDENTITY_IO", `cannot read identity key: ${(err as Error).message}`, { where: keyFile, cause: err });
  }
  let privateKey: PrivateKey;
  try {
    privateKey = privateKeyFromProtobuf(bytes);
  } catch (err) {
    throw new AgoraError(
      "IDENTITY_CORRUPT",
      `identity key is corrupt (${(err as Error).message}); it was left untouched. Restore it from a backup, or move it away to create a new identity (the PeerId will change)`,
      { where: keyFile, cause: err },
    );
  }
  if (privateKey.type !== "Ed25519")
    throw new AgoraError("IDENTITY_CORRUPT", `identity key is ${privateKey.type}, expected Ed25519; left untouched`, { where: keyFile });
  return {
    privateKey,
    peerId: peerIdFromPrivateKey(privateKey).toString(),
    keyFile,
    created: false,
    permissionWarning: !hasPosixModes(platform)
      ? unrestrictedWarning("identity key", keyFile, 0o600, platform)
      : (mode & 0o077) !== 0
        ? `${keyFile} is readable by others (mode ${mode.toString(8)}); chmod 600 it`
        : undefined,
  };
}

export async function createIdentity(keyFile: string, platform: NodeJS.Platform = process.platform): Promise<Identity> {
  if (existsSync(keyFile)) throw new AgoraError("IDENTITY_IO", "already exists; refusing to overwrite an identity", { where: keyFile });
  const privateKey = await generateKeyPair("Ed25519");
  try {
    writeFileAtomic(keyFile, privateKeyToProtobuf(privateKey), 0o600);
  } catch (err) {
    throw new AgoraError("IDENTITY_IO", `cannot write identity key: ${(err as Error).message}`, { where: keyFile, cause: err });
  }
  // The mode asked for is only a wish where the OS or the file system has no POSIX modes: check what stuck.
  let permissionWarning: string | undefined;
  if (!hasPosixModes(platform) || (statSync(keyFile).mode & 0o077) !== 0)
    permissionWarning = unrestrictedWarning("identity key", keyFile, 0o600, platform);
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), keyFile, created: true, permissionWarning };
}

/** Loads the identity, creating it (and its parent directories) on first start. */
export async function loadOrCreateIdentity(keyFile: string, platform: NodeJS.Platform = process.platform): Promise<Identity> {
  if (existsSync(keyFile)) return readIdentity(keyFile, platform);
  return createIdentity(keyFile, platform);
}
