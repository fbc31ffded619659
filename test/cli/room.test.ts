/** `agora-node room create|grant|revoke` in process, on a fixed clock: ids, grants, delegation, errors. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { decodeGrant, grantFromString, Role, roomOwnership, signerFromRawPrivateKey, verifyGrant } from "../../src/access";
import { main } from "../../src/cli";
import { parseCommand } from "../../src/cli/args";
import { parseDurationFlag, runRoom } from "../../src/cli/room";
import { readIdentity } from "../../src/node";
import { tempDir } from "../helpers/node-process";

const NOW = Date.UTC(2026, 0, 1);

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s), env: {} }, out, err };
}

async function room(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const c = capture();
  const p = parseCommand(["room", ...args]);
  if (!("command" in p)) throw new Error("not a command");
  const code = await runRoom(p, c.io, () => NOW);
  return { code, out: c.out, err: c.err };
}

describe("agora-node room", () => {
  test("create makes the key once and prints the same id; grant and delegated grant verify; bad flags are usage errors", async () => {
    const dir = tempDir();
    const owner = join(dir, "owner.key");
    const made = await room(["create", "--name", "standup", "--key-file", owner]);
    expect(made.code).toBe(0);
    const id = made.out[0]!;
    expect(roomOwnership(id).owned).toBe(true);
    expect(made.err.join()).toMatch(/created owner key/);
    expect((await room(["create", "--name", "standup", "--key-file", owner])).out[0]).toBe(id);

    // a moderator bound to its own key, who then grants a listener with its own key file
    const modFile = join(dir, "mod.key");
    await main(["identity", "new", "--key-file", modFile], capture().io);
    const modKey = readIdentity(modFile).privateKey;
    const modPeer = peerIdFromPrivateKey(modKey).toString();
    const g = JSON.parse(
      (await room(["grant", "--room", id, "--key-file", owner, "--role", "moderator", "--peer", modPeer, "--expires", "2h", "--json"]))
        .out[0]!,
    );
    expect(g).toMatchObject({ room: id, role: "moderator", expires_at: new Date(NOW + 7_200_000).toISOString(), bound_to: modPeer });
    const modPub = signerFromRawPrivateKey(modKey.raw).publicKey;
    expect(verifyGrant(grantFromString(g.grant), { room: id, now: NOW, remoteKey: modPub }).role).toBe(Role.MODERATOR);
    const sub = await room(["grant", "--room", id, "--key-file", modFile, "--role", "listener", "--parent", g.grant, "--expires", "30m"]);
    expect(sub.code).toBe(0);
    const chain = decodeGrant(grantFromString(sub.out[0]!));
    expect(chain.links).toHaveLength(2);
    expect(verifyGrant(chain.bytes, { room: id, now: NOW }).expiresAt).toBe(NOW + 1_800_000);

    // the moderator cannot give more than it has, nor issue without its grant; the flags name what is wrong
    expect(
      (
        await room(["grant", "--room", id, "--key-file", modFile, "--role", "speaker", "--parent", g.grant, "--expires", "3h"]).catch(
          (e) => e,
        )
      ).message,
    ).toMatch(/outlives/);
    expect((await room(["grant", "--room", id, "--key-file", modFile, "--role", "speaker"]).catch((e) => e)).message).toMatch(
      /not the owner/,
    );
    expect((await room(["grant", "--room", id, "--key-file", owner, "--role", "boss"]).catch((e) => e)).message).toMatch(/--role/);
    expect((await room(["grant", "--room", "open-room", "--key-file", owner, "--role", "speaker"]).catch((e) => e)).message).toMatch(
      /open room/,
    );
    expect(
      (await room(["grant", "--room", id, "--key-file", owner, "--role", "speaker", "--peer", "nope"]).catch((e) => e)).message,
    ).toMatch(/--peer/);
    expect((await room(["create", "--name", "x".repeat(40), "--key-file", owner]).catch((e) => e)).message).toMatch(/1-36/);

    // revoke without a node prints the record entry: the last link's id until the grant's expiry
    const rv = JSON.parse((await room(["revoke", "--room", id, "--key-file", owner, "--grant", sub.out[0]!])).out[0]!);
    expect(rv).toEqual({ id: expect.stringMatching(/^[0-9a-f]{32}$/), until: NOW + 1_800_000 });
    const other = (await room(["create", "--name", "other", "--key-file", owner])).out[0]!;
    expect((await room(["revoke", "--room", other, "--key-file", owner, "--grant", sub.out[0]!]).catch((e) => e)).message).toMatch(
      /is for room/,
    );
  });

  test("durations", () => {
    expect(parseDurationFlag("expires", "90s", 0)).toBe(90_000);
    expect(parseDurationFlag("expires", "2h", 0)).toBe(7_200_000);
    expect(parseDurationFlag("expires", "7d", 0)).toBe(604_800_000);
    expect(parseDurationFlag("expires", undefined, 5)).toBe(5);
    for (const bad of ["2", "0s", "-1h", "1y", "400d"]) expect(() => parseDurationFlag("expires", bad, 0)).toThrow(/--expires/);
  });

  test("usage errors exit 2 through main", async () => {
    const c = capture();
    expect(await main(["room", "grant", "--room", "r", "--role", "speaker"], c.io)).toBe(2);
    expect(c.err.join()).toMatch(/--key-file/);
  });
});
