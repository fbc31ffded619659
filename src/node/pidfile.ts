/**
 * PID file and data-directory lock. A PID file that names a dead process (or one that is not agora-node)
 * is stale and replaced; a live agora-node on the same data directory makes a second start fail.
 * The lock is taken with O_EXCL so two nodes starting at the same instant cannot both win.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { AgoraError } from "../errors";
import { hasPosixModes, unrestrictedWarning } from "./permissions";

export function readPid(pidFile: string): number | undefined {
  try {
    const text = readFileSync(pidFile, "utf8").trim();
    const pid = Number(text);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** True when pid is alive and looks like an agora-node (guards against PID reuse after a reboot). */
export function isAgoraProcess(pid: number): boolean {
  if (!processAlive(pid)) return false;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return /agora|src\/main\.ts/.test(cmdline);
  } catch {
    return true; // no /proc: trust the liveness check
  }
}

export interface PidLock {
  pidFile: string;
  /** A stale PID file was replaced. */
  replacedStale?: number;
  /** Set where the data directory cannot be restricted to 0700 (no POSIX modes: Windows). */
  permissionWarning?: string;
  release(): void;
}

/** `platform` is injectable so the no-POSIX-modes path is testable anywhere. */
export function acquirePidLock(pidFile: string, dataDir: string, platform: NodeJS.Platform = process.platform): PidLock {
  mkdirSync(dirname(pidFile), { recursive: true, mode: 0o700 });
  // The PID file itself is meant to be world-readable; what the 0700 protects is the directory it lives in.
  const permissionWarning = hasPosixModes(platform) ? undefined : unrestrictedWarning("data directory", dataDir, 0o700, platform);
  let replacedStale: number | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(pidFile, "wx", 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return {
        pidFile,
        replacedStale,
        permissionWarning,
        release() {
          if (readPid(pidFile) === process.pid) {
            try {
              unlinkSync(pidFile);
            } catch {
              /* already removed */
            }
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST")
        throw new AgoraError("STATE_IO", `cannot create PID file: ${(err as Error).message}`, { where: pidFile, cause: err });
      const pid = readPid(pidFile);
      if (pid !== undefined && pid !== process.pid && isAgoraProcess(pid))
        throw new AgoraError(
          "DATA_DIR_LOCKED",
          `another agora-node (pid ${pid}) is running on data directory ${dataDir}; stop it first (agora-node stop) or give this one another node.data_dir`,
          { where: pidFile },
        );
      replacedStale = pid ?? -1;
      try {
        unlinkSync(pidFile);
      } catch {
        /* a racing starter removed it; retry */
      }
    }
  }
  throw new AgoraError("DATA_DIR_LOCKED", "could not take the PID file lock (another node is starting?)", { where: pidFile });
}
