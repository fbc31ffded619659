import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json";
import { main } from "../../src/cli";
import { COMMANDS } from "../../src/cli/args";
import { releaseTarget, type VersionInfo } from "../../src/cli/version";
import { BUILD_COMMIT, VERSION } from "../../src/version";
import { ROOT, runCli } from "../helpers/node-process";

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s), env: {} }, out, err };
}

/** The libopus version wasm/build.sh pins (and compiles in as PACKAGE_VERSION). */
const PINNED_OPUS = /^OPUS_VERSION="([^"]+)"/m.exec(readFileSync(join(ROOT, "wasm", "build.sh"), "utf8"))![1]!;

test("src/version.ts matches package.json", () => {
  expect(VERSION).toBe(pkg.version);
});

test("from source the commit is unknown (only a build embeds one)", () => {
  expect(BUILD_COMMIT).toBe("unknown");
});

test("release target names: Node's win32 is windows", () => {
  expect(releaseTarget("win32", "x64")).toBe("windows-x64");
  expect(releaseTarget("darwin", "arm64")).toBe("darwin-arm64");
  expect(releaseTarget("linux", "arm64")).toBe("linux-arm64");
});

describe("agora-node version", () => {
  test("--json: version, commit, target, bun and the libopus of the wasm core", async () => {
    const c = capture();
    expect(await main(["version", "--json"], c.io)).toBe(0);
    const info = JSON.parse(c.out.join("")) as VersionInfo;
    expect(info).toEqual({ version: VERSION, commit: "unknown", target: releaseTarget(), bun: Bun.version, libopus: PINNED_OPUS });
    expect(c.err).toEqual([]);
  });

  test("plain: one human line; --version stays the bare number; listed in the help", async () => {
    let c = capture();
    expect(await main(["version"], c.io)).toBe(0);
    expect(c.out).toEqual([`agora-node ${VERSION} (commit unknown, ${releaseTarget()}, bun ${Bun.version}, libopus ${PINNED_OPUS})`]);
    c = capture();
    expect(await main(["--version"], c.io)).toBe(0);
    expect(c.out).toEqual([`agora-node ${VERSION}`]);
    c = capture();
    expect(await main(["--help"], c.io)).toBe(0);
    expect(c.out.join("\n")).toMatch(/^ {2}version +print the version, commit/m);
    expect(COMMANDS.some((x) => x.name === "version")).toBe(true);
    c = capture();
    expect(await main(["version", "extra"], c.io)).toBe(2);
  });

  test("the compiled binary embeds the commit it was built from", async () => {
    const head = Bun.spawnSync(["git", "rev-parse", "HEAD"], { cwd: ROOT }).stdout.toString().trim();
    const r = await runCli(["version", "--json"]);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout) as VersionInfo;
    // A build from a worktree with uncommitted changes says so; either way it names HEAD at build time,
    // which is HEAD now unless someone committed since the last build.
    expect(info.commit).toMatch(/^[0-9a-f]{40}(-dirty)?$/);
    if (!info.commit.startsWith(head))
      console.warn(`dist/agora-node was built at ${info.commit}, HEAD is ${head}: rebuild with scripts/build.ts`);
    expect(info.libopus).toBe(PINNED_OPUS);
    expect(info.target).toBe(releaseTarget());
  });
});
