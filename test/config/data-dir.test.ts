import { describe, expect, test } from "bun:test";
import { defaultDataDir, type HostInfo } from "../../src/config/schema";

function host(platform: NodeJS.Platform, env: Record<string, string>, admin = false, home = "/home/ana"): HostInfo {
  return {
    platform,
    env,
    isAdmin: () => admin,
    homedir: () => {
      if (!home) throw new Error("no passwd entry");
      return home;
    },
  };
}

describe("defaultDataDir follows each OS's convention", () => {
  test("Linux: root → /var/lib/agora; a user → XDG_DATA_HOME or ~/.local/share (unchanged)", () => {
    expect(defaultDataDir(host("linux", { HOME: "/home/ana" }, true))).toBe("/var/lib/agora");
    expect(defaultDataDir(host("linux", { HOME: "/home/ana" }))).toBe("/home/ana/.local/share/agora-node");
    expect(defaultDataDir(host("linux", { HOME: "/home/ana", XDG_DATA_HOME: "/data/x" }))).toBe("/data/x/agora-node");
    // A relative XDG_DATA_HOME is invalid per the spec and ignored.
    expect(defaultDataDir(host("linux", { HOME: "/home/ana", XDG_DATA_HOME: "rel" }))).toBe("/home/ana/.local/share/agora-node");
    expect(defaultDataDir(host("linux", {}, false, "/home/pw"))).toBe("/home/pw/.local/share/agora-node");
    // No HOME and no passwd entry (a bare uid in a container).
    expect(defaultDataDir(host("linux", {}, false, ""))).toBe("/var/lib/agora");
  });

  test("macOS: ~/Library/Application Support/agora-node; root → /Library/Application Support", () => {
    expect(defaultDataDir(host("darwin", { HOME: "/Users/ana", XDG_DATA_HOME: "/ignored" }))).toBe(
      "/Users/ana/Library/Application Support/agora-node",
    );
    expect(defaultDataDir(host("darwin", { HOME: "/var/root" }, true))).toBe("/Library/Application Support/agora-node");
  });

  test("Windows: an administrator → %ProgramData%\\agora; a user → %LOCALAPPDATA%\\agora-node", () => {
    const env = {
      ProgramData: "D:\\ProgramData",
      LOCALAPPDATA: "C:\\Users\\ana\\AppData\\Local",
      USERPROFILE: "C:\\Users\\ana",
      HOME: "/ignored",
    };
    expect(defaultDataDir(host("win32", env, true))).toBe("D:\\ProgramData\\agora");
    expect(defaultDataDir(host("win32", env))).toBe("C:\\Users\\ana\\AppData\\Local\\agora-node");
    expect(defaultDataDir(host("win32", { USERPROFILE: "C:\\Users\\bo" }))).toBe("C:\\Users\\bo\\AppData\\Local\\agora-node");
    expect(defaultDataDir(host("win32", {}, true))).toBe("C:\\ProgramData\\agora");
    expect(defaultDataDir(host("win32", {}, false, ""))).toBe("C:\\ProgramData\\agora");
  });

  test("the isAdmin probe runs only when it matters and the default is the current host's", () => {
    let probes = 0;
    const h = host("linux", { HOME: "/home/ana" });
    h.isAdmin = () => {
      probes++;
      return false;
    };
    defaultDataDir(h);
    expect(probes).toBe(1);
    expect(defaultDataDir()).toBe(
      process.getuid?.() === 0 ? "/var/lib/agora" : defaultDataDir(host("linux", process.env as Record<string, string>)),
    );
  });
});
