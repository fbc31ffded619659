import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { acquirePidLock, createIdentity, hasPosixModes, loadOrCreateIdentity, readIdentity } from "../../src/node";
import { tempDir } from "../helpers/node-process";

describe("file permissions where POSIX modes do not exist", () => {
  test("only Windows lacks POSIX modes", () => {
    expect(hasPosixModes("win32")).toBe(false);
    for (const p of ["linux", "darwin", "freebsd"] as const) expect(hasPosixModes(p)).toBe(true);
  });

  test("identity key: on Windows it is created and read, with a warning naming the file and the ACL fix", async () => {
    const dir = tempDir();
    const keyFile = join(dir, "sub", "identity.key");
    const created = await createIdentity(keyFile, "win32");
    expect(created.created).toBe(true);
    expect(created.permissionWarning).toContain(keyFile);
    expect(created.permissionWarning).toContain("no POSIX file modes");
    expect(created.permissionWarning).toContain("icacls");
    const read = readIdentity(keyFile, "win32");
    expect(read.peerId).toBe(created.peerId);
    expect(read.permissionWarning).toContain("no POSIX file modes");
    // Windows reports 0666-ish modes for every file: no false "readable by others; chmod 600" advice there.
    chmodSync(keyFile, 0o644);
    expect(readIdentity(keyFile, "win32").permissionWarning).not.toContain("chmod 600");
    expect((await loadOrCreateIdentity(keyFile, "win32")).permissionWarning).toContain("no POSIX file modes");
  });

  test("identity key on Linux: 0600 and silent; readable by others → the chmod advice", async () => {
    const keyFile = join(tempDir(), "identity.key");
    const created = await createIdentity(keyFile, "linux");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(created.permissionWarning).toBeUndefined();
    expect(readIdentity(keyFile, "linux").permissionWarning).toBeUndefined();
    chmodSync(keyFile, 0o640);
    expect(readIdentity(keyFile, "linux").permissionWarning).toContain("chmod 600");
  });

  test("PID lock: taken on Windows with a warning about the data directory; none on Linux", () => {
    const dataDir = join(tempDir(), "data");
    const win = acquirePidLock(join(dataDir, "agora-node.pid"), dataDir, "win32");
    expect(existsSync(win.pidFile)).toBe(true);
    expect(win.permissionWarning).toContain(`data directory ${dataDir}`);
    expect(win.permissionWarning).toContain("no POSIX file modes");
    win.release();
    expect(existsSync(win.pidFile)).toBe(false);
    const lin = acquirePidLock(join(dataDir, "agora-node.pid"), dataDir, "linux");
    expect(lin.permissionWarning).toBeUndefined();
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    lin.release();
  });
});
