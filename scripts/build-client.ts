/**
 * Builds the participant SDK package (packages/client, `@agora/client`) from src/client:
 *   dist/bun/index.js     bun build --target bun      (src/client/index.ts; npm dependencies stay imports)
 *   dist/node/index.js    bun build --target node     (the same entry for Node ≥ 20, see the README)
 *   dist/browser/index.js bun build --target browser  (src/client/browser.ts, self-contained ESM)
 *   dist/types/…          tsc --emitDeclarationOnly   (client/index.d.ts, client/browser.d.ts)
 * each with the wasm media core (agora_media-<hash>.wasm) beside the bundle, and code split so discover()'s
 * network subsystem and the codec load only when used. Checks that every package a bundle imports is a
 * dependency of packages/client/package.json with the root's exact version, and that the browser bundle
 * holds no Node builtin. Usage: bun scripts/build-client.ts
 */
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { buildWasm, ROOT } from "./lib/compile";

const PKG = join(ROOT, "packages", "client");
const DIST = join(PKG, "dist");
const rootPkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string> };
const clientPkg = JSON.parse(readFileSync(join(PKG, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
const external = Object.keys(rootPkg.dependencies);

buildWasm("wasm");
rmSync(DIST, { recursive: true, force: true });
const t0 = performance.now();

async function bundle(target: "bun" | "node" | "browser", entry: string): Promise<string[]> {
  const out = await Bun.build({
    entrypoints: [join(ROOT, "src", "client", entry)],
    outdir: join(DIST, target),
    target,
    format: "esm",
    splitting: true,
    // Browsers get one self-contained module graph; Bun and Node resolve the npm packages themselves.
    external: target === "browser" ? [] : external,
    naming: { entry: "index.[ext]", chunk: "[name]-[hash].[ext]", asset: "[name]-[hash].[ext]" },
    sourcemap: "linked",
  });
  if (!out.success) throw new Error(`build-client: ${target} bundle failed:\n${out.logs.map(String).join("\n")}`);
  return out.outputs.map((o) => o.path);
}

const files = [...(await bundle("bun", "index.ts")), ...(await bundle("node", "index.ts")), ...(await bundle("browser", "browser.ts"))];

const tsc = Bun.spawnSync([process.execPath, "x", "tsc", "-p", join(PKG, "tsconfig.json")], {
  cwd: ROOT,
  stdout: "inherit",
  stderr: "inherit",
});
if (tsc.exitCode !== 0) throw new Error("build-client: tsc --emitDeclarationOnly failed");

// Every bare import of the Bun/Node bundles must be a declared dependency (same version as the root).
const problems: string[] = [];
const BARE = /(?:^|[\s;])(?:import|export)\s[^"'`]*?from\s*"([^".][^"]*)"|import\(\s*"([^".][^"]*)"\s*\)|^import\s*"([^".][^"]*)"/gm;
for (const f of files.filter((p) => p.endsWith(".js"))) {
  const text = readFileSync(f, "utf8");
  for (const m of text.matchAll(BARE)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    if (spec.startsWith("node:") || spec.startsWith("bun:") || spec === "bun") {
      if (f.includes(`${join(DIST, "browser")}/`)) problems.push(`${f}: the browser bundle imports ${spec}`);
      continue;
    }
    const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
    const want = rootPkg.dependencies[name];
    const have = clientPkg.dependencies?.[name];
    if (have !== want) problems.push(`${f}: imports ${spec}; packages/client/package.json must depend on ${name}@${want} (has ${have})`);
  }
}
if (problems.length) {
  for (const p of [...new Set(problems)]) console.error(`build-client: ${p}`);
  process.exit(1);
}
for (const t of ["bun", "node", "browser"]) {
  const dir = join(DIST, t);
  if (!readdirSync(dir).some((f) => f.endsWith(".wasm"))) throw new Error(`build-client: no media core beside ${dir}/index.js`);
}
if (!existsSync(join(DIST, "types", "client", "index.d.ts")) || !existsSync(join(DIST, "types", "client", "browser.d.ts")))
  throw new Error("build-client: declarations missing");
console.error(`build-client: wrote ${DIST} (bun, node, browser, types) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
