/**
 * `room create|grant|revoke`: owned rooms from the owner's key file (see docs/access.md). The key file is
 * the libp2p protobuf Ed25519 private key format of `identity new`; `room create` makes one if missing.
 */
import { existsSync } from "node:fs";
import { peerIdFromString } from "@libp2p/peer-id";
import {
  decodeGrant,
  GrantError,
  grantFromString,
  grantToString,
  isRoomOwner,
  issueGrant,
  linkId,
  ownedRoomId,
  ROLE_NAMES,
  Role,
  roleFromName,
  roomOwnership,
  signerFromRawPrivateKey,
} from "../access";
import { joinRoom } from "../client";
import { AgoraError, errorMessage } from "../errors";
import { createIdentity, readIdentity } from "../node";
import { checkRoomId } from "../protocol";
import { EXIT_FAILURE, EXIT_OK, type Parsed, requireFlag } from "./args";
import type { Io } from "./context";

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "2h", "7d" → ms. */
export function parseDurationFlag(name: string, v: unknown, fallbackMs: number): number {
  if (v === undefined) return fallbackMs;
  const m = typeof v === "string" ? /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(v.trim()) : null;
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : Number.NaN;
  if (!(ms >= 1000 && ms <= 366 * 86_400_000))
    throw new AgoraError("USAGE", `--${name}: expected a duration like 90s, 30m, 2h or 7d (1 s to 366 d), got "${String(v)}"`);
  return Math.round(ms);
}

function ownedRoomFlag(command: string, v: unknown): string {
  const room = requireFlag(command, "room", v);
  const err = checkRoomId(room);
  if (err) throw new AgoraError("USAGE", `${command} --room: ${err}`);
  if (!roomOwnership(room).owned)
    throw new AgoraError("USAGE", `${command} --room: "${room}" is an open room (owned room ids end in --<26-character owner key id>)`);
  return room;
}

function grantFlag(name: string, v: unknown): Uint8Array {
  try {
    const bytes = grantFromString(requireFlag("room", name, v));
    decodeGrant(bytes);
    return bytes;
  } catch (err) {
    if (err instanceof GrantError) throw new AgoraError("USAGE", `--${name}: ${err.message}`);
    throw err;
  }
}

export async function runRoom(p: Parsed, io: Io, now: () => number = Date.now): Promise<number> {
  const sub = p.positionals[0];
  const keyFile = requireFlag(`room ${sub ?? ""}`.trim(), "key-file", p.values["key-file"]);
  const json = p.values.json === true;
  if (sub === "create") {
    const name = requireFlag("room create", "name", p.values.name);
    const created = !existsSync(keyFile);
    const id = created ? await createIdentity(keyFile) : readIdentity(keyFile);
    if (id.permissionWarning) io.err(`warning: ${id.permissionWarning}`);
    let room: string;
    try {
      room = ownedRoomId(name, signerFromRawPrivateKey(id.privateKey.raw).publicKey);
    } catch (err) {
      throw new AgoraError("USAGE", `room create --name: ${errorMessage(err)}`);
    }
    io.out(json ? JSON.stringify({ room, owner_peer_id: id.peerId, key_file: keyFile, key_created: created }) : room);
    if (!json && created) io.err(`created owner key ${keyFile} (keep it: it is the room's owner)`);
    return EXIT_OK;
  }
  const signer = signerFromRawPrivateKey(readIdentity(keyFile).privateKey.raw);
  if (sub === "grant") {
    const room = ownedRoomFlag("room grant", p.values.room);
    const roleName = requireFlag("room grant", "role", p.values.role);
    const role = roleFromName(roleName);
    if (role === undefined) throw new AgoraError("USAGE", `room grant --role: expected listener, speaker or moderator, got "${roleName}"`);
    let subject: Uint8Array | undefined;
    if (p.values.peer !== undefined) {
      try {
        const peer = peerIdFromString(String(p.values.peer));
        if (peer.type !== "Ed25519") throw new Error(`is a ${peer.type} peer id, grants bind Ed25519 keys`);
        subject = peer.publicKey.raw;
      } catch (err) {
        throw new AgoraError("USAGE", `room grant --peer: "${String(p.values.peer)}" ${errorMessage(err)}`);
      }
    }
    const parent = p.values.parent !== undefined ? grantFlag("parent", p.values.parent) : undefined;
    const expiresAt = now() + parseDurationFlag("expires", p.values.expires, 86_400_000);
    let grant: Uint8Array;
    try {
      grant = issueGrant(signer, { room, role, expiresAt, ...(subject ? { subject } : {}), ...(parent ? { parent } : {}) });
    } catch (err) {
      if (err instanceof GrantError) throw new AgoraError("USAGE", `room grant: ${err.message}`);
      throw err;
    }
    const last = decodeGrant(grant).links.at(-1)!;
    io.out(
      json
        ? JSON.stringify({
            grant: grantToString(grant),
            id: linkId(last),
            room,
            role: ROLE_NAMES[role],
            expires_at: new Date(expiresAt).toISOString(),
            bound_to: p.values.peer ?? null,
          })
        : grantToString(grant),
    );
    return EXIT_OK;
  }
  if (sub === "revoke") {
    const room = ownedRoomFlag("room revoke", p.values.room);
    const grant = grantFlag("grant", p.values.grant);
    const { links } = decodeGrant(grant);
    if (links[0]!.room !== room) throw new AgoraError("USAGE", `room revoke --grant: the grant is for room ${links[0]!.room}, not ${room}`);
    const last = links.at(-1)!;
    const id = linkId(last);
    const until = p.values.until !== undefined ? now() + parseDurationFlag("until", p.values.until, 0) : last.expiresAt;
    const entry = { id, until };
    if (p.values.node === undefined) {
      // No node to tell: print the entry for the room record's `revocations` (what a mixer checks).
      io.out(json ? JSON.stringify({ room, revocation: entry, sent: false }) : JSON.stringify(entry));
      return EXIT_OK;
    }
    // Tell the hosting mixer now: join as a moderator and send a signed REVOKE. The owner issues itself a
    // short bound moderator grant; a delegated moderator passes its own (--parent).
    const parent = p.values.parent !== undefined ? grantFlag("parent", p.values.parent) : undefined;
    if (!parent && !isRoomOwner(room, signer.publicKey))
      throw new AgoraError("USAGE", "room revoke: the key file is not the room's owner; give --parent with your moderator grant");
    const identity = readIdentity(keyFile).privateKey;
    const modGrant = parent ?? issueGrant(signer, { room, role: Role.MODERATOR, expiresAt: now() + 300_000, subject: signer.publicKey });
    const conn = await joinRoom({ node: String(p.values.node), room, name: "revoke", grant: modGrant, identity, timeoutMs: 15_000 });
    try {
      const outcome = await conn.moderate("REVOKE", id, until);
      io.out(
        json
          ? JSON.stringify({ room, revocation: entry, sent: true, code: outcome.code, message: outcome.message })
          : JSON.stringify(entry),
      );
      if (outcome.code !== 0) {
        io.err(`agora-node: the node refused the revocation: ${outcome.message}`);
        return EXIT_FAILURE;
      }
      return EXIT_OK;
    } finally {
      await conn.leave().catch(() => {});
    }
  }
  throw new AgoraError("USAGE", `room: unknown subcommand "${sub}"; expected create, grant or revoke`);
}
