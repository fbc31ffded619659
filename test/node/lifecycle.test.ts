import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { acquirePidLock, createIdentity, Lifecycle, loadOrCreateIdentity, readIdentity, type Service } from "../../src/node";
import { startNode, tempDir } from "../helpers/node-process";

describe("Lifecycle", () => {
  test("stops in reverse order of start, and keeps stopping after a failure", async () => {
    const events: string[] = [];
    const svc = (name: string, failStop = false): Service => ({
      name,
      start: async () => void events.push(`start ${name}`),
      stop: async () => {
        events.push(`stop ${name}`);
        if (failStop) throw new Error("boom");
      },
    });
    const lc = new Lifecycle(silentLogger());
    await lc.start(svc("a"));
    await lc.start(svc("b", true));
    await lc.start(svc("c"));
    const failures = await lc.stopAll();
    expect(events).toEqual(["start a", "start b", "start c", "stop c", "stop b", "stop a"]);
    expect(failures).toEqual(["b"]);
  });

  test("a part that hangs on stop is given up after the timeout", async () => {
    const lc = new Lifecycle(silentLogger());
    await lc.start({ name: "stuck", start: async () => undefined, stop: () => new Promise(() => undefined) });
    expect(await lc.stopAll(50)).toEqual(["stuck"]);
  });
});

describe("identity", () => {
  test("is created with mode 0600 in new parent directories and reloads to the same PeerId", async () => {
    const file = join(tempDir(), "deep", "dir", "identity.key");
    const a = await loadOrCreateIdentity(file);
    expect(a.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const b = await loadOrCreateIdentity(file);
    expect(b.created).toBe(false);
    expect(b.peerId).toBe(a.peerId);
    expect(a.peerId).toStartWith("12D3KooW");
  });

  test("a corrupt key file is a clear error and is never overwritten", async () => {
    const file = join(tempDir(), "identity.key");
    writeFileSync(file, "garbage", { mode: 0o600 });
    await expect(loadOrCreateIdentity(file)).rejects.toThrow("identity key is corrupt");
    await expect(loadOrCreateIdentity(file)).rejects.toMatchObject({ code: "IDENTITY_CORRUPT" });
    let thrown: unknown;
    try {
      readIdentity(file);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(AgoraError);
    expect((thrown as AgoraError).code).toBe("IDENTITY_CORRUPT");
    expect(readFileSync(file, "utf8")).toBe("garbage");
    await expect(createIdentity(file)).rejects.toThrow("refusing to overwrite");
  });

  test("a readable-by-others key gets a warning", async () => {
    const file = join(tempDir(), "identity.key");
    await createIdentity(file);
    chmodSync(file, 0o644);
    expect(readIdentity(file).permissionWarning).toContain("chmod 600");
  });
});

describe("PID lock", () => {
  test("a stale PID file is replaced", () => {
    const dir = tempDir();
    const pidFile = join(dir, "agora-node.pid");
    writeFileSync(pidFile, "999999\n");
    const lock = acquirePidLock(pidFile, dir);
    expect(lock.replacedStale).toBe(999999);
    expect(readFileSync(pidFile, "utf8").trim()).toBe(String(process.pid));
    lock.release();
    expect(existsSync(pidFile)).toBe(false);
  });

  test("a live agora-node on the data dir refuses a second start, in process and as a second node", async () => {
    const first = await startNode({});
    try {
      const pidFile = join(first.dataDir, "agora-node.pid");
      expect(readFileSync(pidFile, "utf8").trim()).toBe(String(first.proc.pid));
      let thrown: unknown;
      try {
        acquirePidLock(pidFile, first.dataDir).release();
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(AgoraError);
      expect((thrown as AgoraError).code).toBe("DATA_DIR_LOCKED");
      expect((thrown as AgoraError).message).toContain(
        `another agora-node (pid ${first.proc.pid}) is running on data directory ${first.dataDir}`,
      );
      // a real second node on the same data directory: exit code 1, the same message, the lock untouched
      const second = await startNode({ dataDir: first.dataDir, waitHealthy: false, keepDataDir: true });
      expect(await second.exited).toBe(1);
      expect(second.logs()).toContain(`another agora-node (pid ${first.proc.pid}) is running on data directory ${first.dataDir}`);
      expect(readFileSync(pidFile, "utf8").trim()).toBe(String(first.proc.pid));
      expect(first.proc.exitCode).toBeNull();
    } finally {
      await first.stop();
      first.cleanup();
    }
  }, 60_000);

  test("garbage in the PID file counts as stale", () => {
    const dir = tempDir();
    const pidFile = join(dir, "agora-node.pid");
    writeFileSync(pidFile, "not a pid");
    const lock = acquirePidLock(pidFile, dir);
    expect(lock.replacedStale).toBe(-1);
    lock.release();
  });
});
