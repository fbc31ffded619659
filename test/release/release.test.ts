/**
 * scripts/release.ts, end to end: builds the targets that this machine can check (linux-arm64 runs under
 * qemu-user; the macOS and Windows executables are checked by their headers and contents), once, into a
 * temp directory, at deflate level 1 to keep the test short. linux-x64 is the binary every other
 * integration test runs. Needs qemu-user, libc6-arm64-cross and zip/unzip (scripts/setup.sh --test).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../scripts/release";
import { VERSION } from "../../src/version";
import { captureOutput, eventually, freePort, ROOT, tempDir } from "../helpers/node-process";

const TARGETS = ["linux-arm64", "darwin-arm64", "darwin-x64", "windows-x64"];
const QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"];
const PINNED_OPUS = /^OPUS_VERSION="([^"]+)"/m.exec(readFileSync(join(ROOT, "wasm", "build.sh"), "utf8"))![1]!;

const out = tempDir("agora-release-");
const dir = join(out, VERSION);
const unpacked = tempDir("agora-release-x-");
let manifest: Manifest;
let buildSeconds = 0;

async function run(
  cmd: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(cmd, { cwd: opts.cwd ?? ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: unpacked } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

function target(name: string) {
  const t = manifest.targets.find((x) => x.target === name);
  if (!t) throw new Error(`manifest.json has no ${name}`);
  return t;
}

const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

beforeAll(async () => {
  for (const tool of ["qemu-aarch64", "zip", "unzip", "sha256sum"])
    if (!Bun.which(tool)) throw new Error(`${tool} is missing: run scripts/setup.sh --test`);
  if (!existsSync("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1"))
    throw new Error("libc6-arm64-cross is missing: run scripts/setup.sh --test");
  const t0 = performance.now();
  const r = await run(
    [process.execPath, join(ROOT, "scripts", "release.ts"), "--targets", TARGETS.join(","), "--out", out, "--level", "1"],
    { timeoutMs: 600_000 },
  );
  buildSeconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`release.ts exited ${r.code}:\n${r.stderr}`);
  console.log(
    `release.ts --targets ${TARGETS.join(",")} --level 1: ${buildSeconds.toFixed(1)} s\n${r.stderr
      .split("\n")
      .filter((l) => /^ {2}|release: \d/.test(l))
      .join("\n")}`,
  );
  manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
  for (const t of manifest.targets) {
    const a = join(dir, t.archive);
    const x = t.archive.endsWith(".zip") ? await run(["unzip", "-q", a, "-d", unpacked]) : await run(["tar", "-xzf", a, "-C", unpacked]);
    if (x.code !== 0) throw new Error(`unpacking ${t.archive}: ${x.stderr}`);
  }
}, 600_000);

// Several hundred MiB of archives and executables: removed as soon as the file is done, not at exit.
const bulky: string[] = [out, unpacked];
afterAll(() => {
  for (const d of bulky) rmSync(d, { recursive: true, force: true });
});

describe("release directory", () => {
  test("sha256sum -c SHA256SUMS verifies every archive and the manifest", async () => {
    const r = await run(["sha256sum", "--strict", "-c", "SHA256SUMS"], { cwd: dir });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const checked = r.stdout.trim().split("\n").sort();
    expect(checked).toEqual([...manifest.targets.map((t) => `${t.archive}: OK`), "manifest.json: OK"].sort());
    expect(readdirSync(dir).sort()).toEqual(["SHA256SUMS", "manifest.json", ...manifest.targets.map((t) => t.archive)].sort());
  });

  test("the manifest names the version, the commit, the pinned bun and the requested targets", async () => {
    const head = (await run(["git", "rev-parse", "HEAD"])).stdout.trim();
    expect(manifest.version).toBe(VERSION);
    expect(manifest.commit.replace(/-dirty$/, "")).toBe(head);
    expect(manifest.bun).toBe("1.4.5");
    expect(manifest.targets.map((t) => t.target)).toEqual(TARGETS);
    const archives = Object.fromEntries(manifest.targets.map((t) => [t.target, t.archive]));
    expect(archives).toEqual({
      "linux-arm64": `agora-node-${VERSION}-linux-arm64.tar.gz`,
      "darwin-arm64": `agora-node-${VERSION}-darwin-arm64.tar.gz`,
      "darwin-x64": `agora-node-${VERSION}-darwin-x64.tar.gz`,
      "windows-x64": `agora-node-${VERSION}-windows-x64.zip`,
    });
  });

  test("each archive holds exactly the files the manifest lists: binary, default config, systemd unit", () => {
    const config = readFileSync(join(ROOT, "config", "node.toml"));
    const unit = readFileSync(join(ROOT, "systemd", "agora-node.service"));
    for (const t of manifest.targets) {
      const archive = readFileSync(join(dir, t.archive));
      expect(archive.length).toBe(t.size);
      expect(sha256(archive)).toBe(t.sha256);
      const top = `agora-node-${VERSION}-${t.target}`;
      const exe = t.target.startsWith("windows") ? "agora-node.exe" : "agora-node";
      expect(t.files.map((f) => f.path).sort()).toEqual([`${top}/${exe}`, `${top}/agora-node.service`, `${top}/node.toml`].sort());
      expect(readdirSync(join(unpacked, top)).sort()).toEqual([exe, "agora-node.service", "node.toml"].sort());
      for (const f of t.files) {
        const bytes = readFileSync(join(unpacked, f.path));
        expect({ path: f.path, size: bytes.length, sha256: sha256(bytes) }).toEqual({ path: f.path, size: f.size, sha256: f.sha256 });
        expect(statSync(join(unpacked, f.path)).mode & 0o777).toBe(f.mode);
      }
      expect(t.binary).toBe(`${top}/${exe}`);
      expect(target(t.target).files.find((f) => f.path === t.binary)!.mode).toBe(0o755);
      expect(readFileSync(join(unpacked, top, "node.toml")).equals(config)).toBe(true);
      expect(readFileSync(join(unpacked, top, "agora-node.service")).equals(unit)).toBe(true);
    }
  });
});

/** Reads the executable format from the header bytes (no `file`): what an OS loader would check first. */
function executableFormat(b: Buffer): string {
  if (b.readUInt32BE(0) === 0x7f454c46) {
    const cls = b[4] === 2 ? "64" : "32";
    const machine = b.readUInt16LE(18);
    const type = b.readUInt16LE(16);
    return `ELF${cls} ${{ 62: "x86-64", 183: "aarch64" }[machine] ?? machine.toString(16)} ${type === 2 ? "exec" : type === 3 ? "dyn" : type}`;
  }
  if (b.readUInt32LE(0) === 0xfeedfacf) {
    const cpu = b.readUInt32LE(4);
    const fileType = b.readUInt32LE(12);
    return `Mach-O64 ${{ 16777228: "arm64", 16777223: "x86_64" }[cpu] ?? cpu.toString(16)} ${fileType === 2 ? "execute" : fileType}`;
  }
  if (b.toString("latin1", 0, 2) === "MZ") {
    const pe = b.readUInt32LE(0x3c);
    if (b.toString("latin1", pe, pe + 4) !== "PE\0\0") return "MZ without PE";
    const machine = b.readUInt16LE(pe + 4);
    const optMagic = b.readUInt16LE(pe + 24);
    const subsystem = b.readUInt16LE(pe + 24 + 68);
    return `${optMagic === 0x20b ? "PE32+" : optMagic === 0x10b ? "PE32" : optMagic.toString(16)} ${machine === 0x8664 ? "x86-64" : machine.toString(16)} ${subsystem === 3 ? "console" : subsystem}`;
  }
  return "unknown";
}

describe("executables", () => {
  test("each binary has its platform's format, a plausible size, the one wasm core and the commit", () => {
    const expected: Record<string, string> = {
      "linux-arm64": "ELF64 aarch64 exec",
      "darwin-arm64": "Mach-O64 arm64 execute",
      "darwin-x64": "Mach-O64 x86_64 execute",
      "windows-x64": "PE32+ x86-64 console",
    };
    const wasm = readFileSync(join(ROOT, "wasm", "build", "agora_media.wasm"));
    expect({ size: wasm.length, sha256: sha256(wasm) }).toEqual(manifest.wasm);
    for (const t of manifest.targets) {
      const bin = readFileSync(join(unpacked, t.binary));
      expect(`${t.target}: ${executableFormat(bin)}`).toBe(`${t.target}: ${expected[t.target]}`);
      // A Bun runtime (tens of MiB) plus the bundle; a few MiB would mean a bare script, not an executable.
      expect(bin.length).toBeGreaterThan(60 * 1048576);
      expect(bin.length).toBeLessThan(250 * 1048576);
      console.log(
        `${t.target}: ${executableFormat(bin)}, ${(bin.length / 1048576).toFixed(1)} MiB, archive ${(t.size / 1048576).toFixed(1)} MiB`,
      );
      expect(bin.indexOf(wasm)).toBeGreaterThan(0);
      expect(bin.indexOf(Buffer.from(`"${manifest.commit}"`))).toBeGreaterThan(0);
    }
  });
});

describe("linux-arm64 under qemu-user", () => {
  const bin = () => join(unpacked, target("linux-arm64").binary);

  test("--version and version --json", async () => {
    const v = await run([...QEMU, bin(), "--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(`agora-node ${VERSION}`);
    const j = await run([...QEMU, bin(), "version", "--json"]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual({
      version: VERSION,
      commit: manifest.commit,
      target: "linux-arm64",
      bun: "1.4.5",
      libopus: PINNED_OPUS,
    });
  }, 180_000);

  test("config validate on the default config of the archive", async () => {
    const toml = join(unpacked, `agora-node-${VERSION}-linux-arm64`, "node.toml");
    const r = await run([...QEMU, bin(), "config", "validate", toml]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${toml}: valid`);
  }, 180_000);

  test("start → /health 200 → SIGTERM → exit 0", async () => {
    const dataDir = tempDir();
    const [p2p, dashboard, metrics] = [await freePort(), await freePort(), await freePort()];
    const t0 = performance.now();
    const proc = Bun.spawn(
      [
        ...QEMU,
        bin(),
        "start",
        "--data-dir",
        dataDir,
        "--listen-addr",
        "127.0.0.1",
        "--listen-port",
        String(p2p),
        "--dashboard-port",
        String(dashboard),
        "--metrics-port",
        String(metrics),
        "--log-format",
        "json",
      ],
      { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dataDir }, stdin: "ignore", stdout: "pipe", stderr: "pipe" },
    );
    const output = captureOutput(proc);
    try {
      // Emulation is several times slower than native: a generous deadline, polled.
      await eventually(
        async () => {
          if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode} before /health answered:\n${output()}`);
          const r = await fetch(`http://127.0.0.1:${dashboard}/health`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
          return r?.status === 200;
        },
        150_000,
        `/health 200 from the arm64 node\n${output()}`,
        200,
      ).catch((err) => {
        if (proc.exitCode !== null) throw new Error(`the arm64 node exited ${proc.exitCode}:\n${output()}`);
        throw err;
      });
      console.log(`linux-arm64 under qemu: start → /health 200 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      expect(output()).toContain("agora-node ready");
      expect(output()).toContain("media engine started");
      const ts = performance.now();
      proc.kill("SIGTERM");
      const code = await Promise.race([proc.exited, Bun.sleep(90_000).then(() => "timeout" as const)]);
      console.log(`linux-arm64 under qemu: SIGTERM → exit in ${((performance.now() - ts) / 1000).toFixed(1)} s`);
      expect(code).toBe(0);
      expect(existsSync(join(dataDir, "agora-node.pid"))).toBe(false);
    } finally {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    }
  }, 300_000);
});

test("a second build from the same commit is byte-identical (reproducible archives)", async () => {
  const again = tempDir("agora-release-again-");
  bulky.push(again);
  const r = await run([process.execPath, join(ROOT, "scripts", "release.ts"), "--targets", "linux-arm64", "--out", again, "--level", "1"], {
    timeoutMs: 300_000,
  });
  expect(r.code).toBe(0);
  const second = JSON.parse(readFileSync(join(again, VERSION, "manifest.json"), "utf8")) as Manifest;
  expect(second.targets[0]!.sha256).toBe(target("linux-arm64").sha256);
}, 300_000);

test("release.ts rejects unknown targets with the list of valid ones", async () => {
  const r = await run([process.execPath, join(ROOT, "scripts", "release.ts"), "--targets", "linux-x64,amiga-m68k", "--out", out]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('unknown target "amiga-m68k"; expected some of linux-x64, linux-arm64, darwin-x64, darwin-arm64, windows-x64');
});
