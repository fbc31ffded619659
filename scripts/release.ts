/**
 * Builds a release: agora-node for every platform an operator runs it on, from one machine.
 *
 *   bun scripts/release.ts [--targets linux-x64,linux-arm64,darwin-x64,darwin-arm64,windows-x64] [--out DIR] [--level 1-9]
 *   bun scripts/release.ts --fetch-only      (only download the target runtimes; scripts/setup.sh --test)
 *
 * Writes DIR/<version>/ (DIR defaults to dist/release), replacing what a previous run left there
 * (--level: the archives' deflate level, default 6; the tests use 1, which is 3x faster and 10 % bigger):
 *   agora-node-<version>-<target>.tar.gz   (windows-x64: .zip) holding agora-node-<version>-<target>/ with
 *                                          the executable, node.toml (the default config) and agora-node.service
 *   manifest.json                          version, commit, bun, the embedded wasm, per target the archive's
 *                                          size and sha256 and every file in it
 *   SHA256SUMS                             for `sha256sum -c SHA256SUMS`
 *
 * Reproducible inputs: the pinned Bun (this script refuses another), `bun install --frozen-lockfile`, the
 * wasm core built once and embedded in every target, each target's Bun runtime from its npm package at the
 * same pinned version with its registry sha512 checked (fetched once into .tools/cross/ and given to
 * `bun build --compile-executable-path`, so compiling never downloads), file times set to the commit time
 * (SOURCE_DATE_EPOCH overrides), sorted archive members with fixed owners.
 *
 * Windows archives are made with Debian's zip (scripts/setup.sh installs it): a zip of three files does not
 * justify an npm dependency in the lockfile of the node, and `zip -X` with a sorted file list and TZ=UTC is
 * deterministic.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import pkg from "../package.json";
import { VERSION } from "../src/version";
import { buildWasm, compileExecutable, gitCommit, output, ROOT, run } from "./lib/compile";

export const BUN_VERSION = "1.4.5";

interface TargetSpec {
  /** `bun build --target` */
  bunTarget: string;
  /** the npm package shipping that Bun runtime, and the registry's sha512 of its tarball at BUN_VERSION */
  npm: string;
  integrity: string;
  exe: string;
  archive: "tar.gz" | "zip";
  os: "linux" | "darwin" | "windows";
  arch: "x64" | "arm64";
}

export const TARGETS: Record<string, TargetSpec> = {
  "linux-x64": {
    bunTarget: "bun-linux-x64",
    npm: "@oven/bun-linux-x64",
    integrity: "sha512-IWX9BELoGHAUtMonkeSaNaZwXzRk+oDw6Mk+HBFXd3KHYIBNBsIGRupMZPcgNoDbJpLu6gAJjIoIVPZtt1aJ1g==",
    exe: "agora-node",
    archive: "tar.gz",
    os: "linux",
    arch: "x64",
  },
  "linux-arm64": {
    bunTarget: "bun-linux-arm64",
    npm: "@oven/bun-linux-aarch64",
    integrity: "sha512-4BXmsSKnjOrlGWqZV4x/oWa7AVoR+B6lCXddMzOAXBIm3t50eslg9wb66gmtW1AamEQ1l1CDvmmruysEhqOWMg==",
    exe: "agora-node",
    archive: "tar.gz",
    os: "linux",
    arch: "arm64",
  },
  "darwin-x64": {
    bunTarget: "bun-darwin-x64",
    npm: "@oven/bun-darwin-x64",
    integrity: "sha512-qkLPMGHZM9NI6CeHTWwVezzmlo6cC4Ta7yUAjYIWXS366qQcOlcp75t2uZyiuVRBMPS0h9qE0tCcvCHGaFqjJg==",
    exe: "agora-node",
    archive: "tar.gz",
    os: "darwin",
    arch: "x64",
  },
  "darwin-arm64": {
    bunTarget: "bun-darwin-arm64",
    npm: "@oven/bun-darwin-aarch64",
    integrity: "sha512-4MIFXHmctH2EhAxLXm2/qxNtv17dFtLJylvaOCsrgq6KSqHTs6eW5YSrJjRbJxYUJaR901fsN8JfZOa+CsWpWQ==",
    exe: "agora-node",
    archive: "tar.gz",
    os: "darwin",
    arch: "arm64",
  },
  "windows-x64": {
    bunTarget: "bun-windows-x64",
    npm: "@oven/bun-windows-x64",
    integrity: "sha512-FNvply651vcE/GHgNWz6mZvhmkwBuu8Hw54oNzA+CQog+HW+542rXQmZqNHRkFxazD9L3xi+iTtvO3engAgJfw==",
    exe: "agora-node.exe",
    archive: "zip",
    os: "windows",
    arch: "x64",
  },
};

/** What manifest.json says about one file of an archive. */
export interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
  mode: number;
}

export interface ManifestTarget {
  target: string;
  os: string;
  arch: string;
  bun_target: string;
  archive: string;
  size: number;
  sha256: string;
  /** the executable's entry in files */
  binary: string;
  files: ManifestFile[];
}

export interface Manifest {
  name: "agora-node";
  version: string;
  commit: string;
  bun: string;
  source_date_epoch: number;
  /** the one media core embedded in every target */
  wasm: { size: number; sha256: string };
  targets: ManifestTarget[];
}

/** Where target runtimes are kept; AGORA_RELEASE_RUNTIMES moves them (e.g. a CI cache). */
const CROSS = resolve(process.env.AGORA_RELEASE_RUNTIMES || join(ROOT, ".tools", "cross"));

function fail(message: string, code = 1): never {
  console.error(`release: ${message}`);
  process.exit(code);
}

function sha256(path: string): string {
  const h = new Bun.CryptoHasher("sha256");
  h.update(readFileSync(path));
  return h.digest("hex");
}

function hostTarget(): string {
  return `${process.platform === "win32" ? "windows" : process.platform}-${process.arch}`;
}

/**
 * The Bun runtime a target's executable is built on. The host's own target uses this Bun; the others come
 * from their npm package (npm pack: the registry tarball as is, no install scripts, no platform check),
 * checked against the pinned sha512 and unpacked once into .tools/cross/<package>-<version>/ (or
 * $AGORA_RELEASE_RUNTIMES/…).
 */
export function targetRuntime(name: string): string {
  const t = TARGETS[name]!;
  if (name === hostTarget()) return process.execPath;
  const dir = join(CROSS, `${t.npm.replace("@", "").replace("/", "-")}-${BUN_VERSION}`);
  const exe = join(dir, "package", "bin", t.os === "windows" ? "bun.exe" : "bun");
  const stamp = join(dir, ".verified");
  if (existsSync(exe) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === t.integrity) return exe;
  mkdirSync(CROSS, { recursive: true });
  const spec = `${t.npm}@${BUN_VERSION}`;
  console.error(`release: fetching the ${name} runtime (${spec}) from npm`);
  const tgzName = output(["npm", "pack", spec, "--pack-destination", CROSS, "--silent"], CROSS);
  if (!tgzName) fail(`npm pack ${spec} failed (is npm installed and the registry reachable?)`);
  const tgz = join(CROSS, basename(tgzName.split("\n").pop()!.trim()));
  const got = `sha512-${new Bun.CryptoHasher("sha512").update(readFileSync(tgz)).digest("base64")}`;
  if (got !== t.integrity) {
    rmSync(tgz, { force: true });
    fail(`${spec}: sha512 mismatch, expected ${t.integrity}, got ${got} (tarball removed)`);
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  run(["tar", "-xzf", tgz, "-C", dir, "package/bin", "package/package.json"], `unpacking ${spec}`);
  rmSync(tgz);
  writeFileSync(stamp, `${t.integrity}\n`);
  return exe;
}

/** tar.gz with sorted members, fixed owner and times (GNU tar, gzip -n: no name or time in the header). */
function writeTarGz(stagingParent: string, dirName: string, out: string, epoch: number, level: number): void {
  run(
    [
      "bash",
      "-c",
      'set -o pipefail; tar --sort=name --mtime="@$1" --owner=0 --group=0 --numeric-owner --format=gnu -cf - -C "$2" "$3" | gzip -n "-$5" > "$4"',
      "tar",
      String(epoch),
      stagingParent,
      dirName,
      out,
      String(level),
    ],
    `archiving ${basename(out)}`,
  );
}

/** zip with a sorted file list, no directory entries, no extra (uid/time) fields, times in UTC. */
function writeZip(stagingParent: string, dirName: string, files: string[], out: string, level: number): void {
  if (!output(["zip", "-v"])) fail("zip is missing: apt-get install zip (scripts/setup.sh --test installs it)");
  rmSync(out, { force: true });
  const r = Bun.spawnSync(["zip", "-X", "-D", "-q", `-${level}`, out, ...files.map((f) => `${dirName}/${f}`).sort()], {
    cwd: stagingParent,
    env: { ...process.env, TZ: "UTC" },
    stdout: "inherit",
    stderr: "inherit",
  });
  if (r.exitCode !== 0) fail(`zip failed for ${out}`);
}

function parseReleaseArgs(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    options: {
      targets: { type: "string" },
      out: { type: "string" },
      level: { type: "string" },
      "fetch-only": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}

function parseOptions(argv: string[]): { targets: string[]; out: string; level: number; fetchOnly: boolean } {
  let v: ReturnType<typeof parseReleaseArgs>;
  try {
    v = parseReleaseArgs(argv);
  } catch (err) {
    fail(`${(err as Error).message}; usage: bun scripts/release.ts [--targets a,b] [--out DIR] [--level 1-9] [--fetch-only]`, 2);
  }
  if (v.help) {
    console.log(
      `usage: bun scripts/release.ts [--targets ${Object.keys(TARGETS).join(",")}] [--out DIR (default dist/release)] [--level 1-9 (default 6)] [--fetch-only]`,
    );
    process.exit(0);
  }
  const targets =
    v.targets === undefined
      ? Object.keys(TARGETS)
      : v.targets
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean);
  const unknown = targets.filter((t) => !(t in TARGETS));
  if (unknown.length || targets.length === 0)
    fail(
      `--targets: unknown target ${unknown.map((u) => `"${u}"`).join(", ") || "(none given)"}; expected some of ${Object.keys(TARGETS).join(", ")}`,
      2,
    );
  const level = Number(v.level ?? 6);
  if (!Number.isInteger(level) || level < 1 || level > 9) fail(`--level: expected an integer 1..9, got "${v.level}"`, 2);
  return {
    targets: [...new Set(targets)],
    out: resolve(v.out ?? join(ROOT, "dist", "release")),
    level,
    fetchOnly: v["fetch-only"] === true,
  };
}

function main(): void {
  const opts = parseOptions(process.argv.slice(2));
  if (Bun.version !== BUN_VERSION)
    fail(
      `this is bun ${Bun.version}; releases are built with bun ${BUN_VERSION} (.tools/node_modules/@oven/bun-linux-x64/bin/bun, installed by scripts/setup.sh)`,
    );
  if (pkg.version !== VERSION) fail(`package.json says ${pkg.version}, src/version.ts says ${VERSION}`);
  const t0 = performance.now();
  const runtimes = Object.fromEntries(opts.targets.map((t) => [t, targetRuntime(t)]));
  if (opts.fetchOnly) return; // targetRuntime said what it fetched

  run([process.execPath, "install", "--frozen-lockfile"], "bun install --frozen-lockfile");
  const wasm = buildWasm("wasm");
  const commit = gitCommit();
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? output(["git", "log", "-1", "--format=%ct"]) ?? Math.floor(Date.now() / 1000));
  const outDir = join(opts.out, VERSION);
  rmSync(outDir, { recursive: true, force: true });
  const staging = join(outDir, ".staging");
  mkdirSync(staging, { recursive: true });

  const manifest: Manifest = {
    name: "agora-node",
    version: VERSION,
    commit,
    bun: Bun.version,
    source_date_epoch: epoch,
    wasm: { size: statSync(wasm).size, sha256: sha256(wasm) },
    targets: [],
  };
  const timings: { target: string; compileS: number; archiveS: number; binary: number; archive: number }[] = [];
  for (const name of opts.targets) {
    const t = TARGETS[name]!;
    const dirName = `agora-node-${VERSION}-${name}`;
    const dir = join(staging, dirName);
    mkdirSync(dir, { recursive: true });
    const tc = performance.now();
    const exe = compileExecutable({ outfile: join(dir, t.exe), target: t.bunTarget, executablePath: runtimes[name], commit });
    const compileS = (performance.now() - tc) / 1000;
    copyFileSync(join(ROOT, "config", "node.toml"), join(dir, "node.toml"));
    copyFileSync(join(ROOT, "systemd", "agora-node.service"), join(dir, "agora-node.service"));
    const files: ManifestFile[] = [];
    for (const f of [t.exe, "agora-node.service", "node.toml"]) {
      const p = join(dir, f);
      const mode = p === exe ? 0o755 : 0o644;
      chmodSync(p, mode);
      utimesSync(p, epoch, epoch);
      files.push({ path: `${dirName}/${f}`, size: statSync(p).size, sha256: sha256(p), mode });
    }
    utimesSync(dir, epoch, epoch);
    const archive = `${dirName}.${t.archive}`;
    const ta = performance.now();
    if (t.archive === "zip")
      writeZip(
        staging,
        dirName,
        files.map((f) => basename(f.path)),
        join(outDir, archive),
        opts.level,
      );
    else writeTarGz(staging, dirName, join(outDir, archive), epoch, opts.level);
    const archiveS = (performance.now() - ta) / 1000;
    const archivePath = join(outDir, archive);
    manifest.targets.push({
      target: name,
      os: t.os,
      arch: t.arch,
      bun_target: t.bunTarget,
      archive,
      size: statSync(archivePath).size,
      sha256: sha256(archivePath),
      binary: `${dirName}/${t.exe}`,
      files,
    });
    timings.push({ target: name, compileS, archiveS, binary: statSync(exe).size, archive: statSync(archivePath).size });
    // The host's own executable can be run: a release whose binary does not start is not a release.
    if (name === hostTarget()) {
      const r = Bun.spawnSync([exe, "version", "--json"], { stdout: "pipe", stderr: "inherit" });
      const info = r.exitCode === 0 ? (JSON.parse(r.stdout.toString()) as { commit: string; target: string }) : undefined;
      if (!info || info.commit !== commit || info.target !== name)
        fail(`${exe} version --json: exit ${r.exitCode}, ${r.stdout.toString().trim()}`);
    }
    rmSync(dir, { recursive: true });
  }
  rmSync(staging, { recursive: true, force: true });

  writeFileSync(join(outDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  const sums = [
    ...manifest.targets.map((t) => [t.archive, t.sha256] as const),
    ["manifest.json", sha256(join(outDir, "manifest.json"))] as const,
  ]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([f, h]) => `${h}  ${f}\n`)
    .join("");
  writeFileSync(join(outDir, "SHA256SUMS"), sums);

  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  console.error(`release: agora-node ${VERSION} (${commit}) in ${outDir}`);
  console.error("  target         compile  archive  binary       archive");
  for (const t of timings)
    console.error(
      `  ${t.target.padEnd(13)}  ${t.compileS.toFixed(1).padStart(5)} s  ${t.archiveS.toFixed(1).padStart(5)} s  ${mib(t.binary).padStart(10)}  ${mib(t.archive).padStart(10)}`,
    );
  console.error(`release: ${opts.targets.length} target(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

if (import.meta.main) main();
