/**
 * The built @agora/client package: its entry files exist, `exports` resolves per runtime (bun, node,
 * browser), each entry imports without pulling in any node code (room server, media engine, network node:
 * discover()'s network subsystem is a separate chunk loaded on first call), the browser bundle holds no
 * Node builtin, and the wasm codec loads from beside the bundle whatever the working directory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CLIENT_DIST, CLIENT_PKG, ensureClientPackage, packageConsumer } from "../helpers/client-package";

/** Names only the node's own subsystems define: a bundle holding one of them carries server code. */
const SERVER_MARKERS = [
  "class AudioRoomService",
  "class RosterPublisher",
  "class WorkerMediaEngine",
  "function createNetworkNode",
  "function startRuntime",
];

let consumer: string;

beforeAll(() => {
  ensureClientPackage();
  consumer = packageConsumer();
}, 180_000);

afterAll(() => {
  if (consumer) rmSync(consumer, { recursive: true, force: true });
});

/** The entry file and every chunk it imports statically (not through import()), transitively. */
function staticGraph(dir: string, entry = "index.js"): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(join(dir, file), "utf8");
    for (const m of text.matchAll(/(?:^|[\s;])(?:import|export)\s[^"'`]*?from\s*"\.\/([^"]+)"|^import\s*"\.\/([^"]+)"/gm))
      visit(m[1] ?? m[2]!);
  };
  visit(entry);
  return [...seen];
}

function run(cmd: string[], cwd = consumer): { code: number; out: string; err: string } {
  const r = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("@agora/client package", () => {
  test("entry files, declarations and the media core are built", () => {
    for (const f of ["bun/index.js", "node/index.js", "browser/index.js", "types/client/index.d.ts", "types/client/browser.d.ts"])
      expect(existsSync(join(CLIENT_DIST, f))).toBe(true);
    for (const t of ["bun", "node", "browser"])
      expect(readdirSync(join(CLIENT_DIST, t)).some((f) => /^agora_media-.*\.wasm$/.test(f))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(CLIENT_PKG, "package.json"), "utf8"));
    expect(pkg.name).toBe("@agora/client");
    expect(pkg.type).toBe("module");
    expect(Object.keys(pkg.exports["."])).toEqual(["types", "browser", "bun", "node", "default"]);
    for (const target of Object.values(pkg.exports["."]) as string[]) expect(existsSync(join(CLIENT_PKG, target))).toBe(true);
    const dts = readFileSync(join(CLIENT_DIST, "types", "client", "room.d.ts"), "utf8");
    for (const name of ["participants", "speaking", "moved", "joined", "left", "error"]) expect(dts).toContain(`${name}:`);
  });

  test("exports resolves to the bun entry under Bun and the node entry under Node", () => {
    const bun = run([process.execPath, "-e", 'console.log(import.meta.resolve("@agora/client"))']);
    expect(bun.out.trim()).toEndWith("/packages/client/dist/bun/index.js");
    const node = run(["node", "--input-type=module", "-e", 'console.log(import.meta.resolve("@agora/client"))']);
    expect({ code: node.code, err: node.err }).toEqual({ code: 0, err: "" });
    expect(node.out.trim()).toEndWith("/packages/client/dist/node/index.js");
  });

  test("no entry carries node code in its static graph; discover's network subsystem is a lazy chunk", () => {
    for (const t of ["bun", "node", "browser"]) {
      const dir = join(CLIENT_DIST, t);
      const files = staticGraph(dir);
      const text = files.map((f) => readFileSync(join(dir, f), "utf8")).join("\n");
      for (const marker of SERVER_MARKERS)
        expect({ target: t, marker, found: text.includes(marker) }).toEqual({ target: t, marker, found: false });
      expect(text).toContain("class RoomConnection");
      if (t === "browser") {
        expect(text).not.toMatch(/from\s*"node:|require\("node:|from\s*"prom-client"/);
        expect(text).toContain("createBrowserNode");
      }
    }
    // The Bun/Node entries reach the network subsystem only through import() (discover()).
    const all = readdirSync(join(CLIENT_DIST, "bun")).filter((f) => f.endsWith(".js"));
    const lazy = all.filter((f) => !staticGraph(join(CLIENT_DIST, "bun")).includes(f));
    expect(lazy.some((f) => readFileSync(join(CLIENT_DIST, "bun", f), "utf8").includes("kad-dht"))).toBe(true);
  });

  test("importing the package under Bun loads only its static graph (no network subsystem chunk)", () => {
    const probe = `
      const sdk = await import("@agora/client");
      const loaded = Object.keys(require.cache).filter((k) => k.includes("/packages/client/dist/"));
      console.log(JSON.stringify({ loaded: loaded.map((k) => k.split("/dist/")[1]), exports: typeof sdk.joinRoom }));
    `;
    const r = run([process.execPath, "-e", probe]);
    expect(r.code).toBe(0);
    const { loaded, exports } = JSON.parse(r.out.trim().split("\n").pop()!) as { loaded: string[]; exports: string };
    expect(exports).toBe("function");
    expect(loaded.sort()).toEqual(
      staticGraph(join(CLIENT_DIST, "bun"))
        .map((f) => `bun/${f}`)
        .sort(),
    );
  });

  test("a browser bundle of the package (bun build --target browser) takes the browser entry", async () => {
    const entry = join(consumer, "page.ts");
    await Bun.write(entry, 'import { joinRoom, createBrowserNode } from "@agora/client";\nconsole.log(joinRoom, createBrowserNode);\n');
    const out = await Bun.build({ entrypoints: [entry], target: "browser" });
    expect(out.success).toBe(true);
    const js = await out.outputs.find((o) => o.kind === "entry-point")!.text();
    expect(js).toContain("createBrowserNode");
    expect(js).not.toContain("class AudioRoomService");
  });

  test("the codec loads from beside the bundle under Bun and Node, from another working directory", () => {
    const probe = (spec: string) => `
      const { loadOpusCodec, FRAME_SAMPLES } = await import(${JSON.stringify(spec)});
      const codec = await loadOpusCodec();
      const enc = codec.encoder(32000);
      const dec = codec.decoder();
      let e = 0;
      for (let k = 0; k < 10; k++) {
        const pcm = new Int16Array(FRAME_SAMPLES);
        for (let i = 0; i < FRAME_SAMPLES; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * (k * FRAME_SAMPLES + i)) / 48000));
        const out = dec.decode(enc.encode(pcm));
        if (k >= 5) for (const s of out) e += s * s;
      }
      console.log(JSON.stringify({ rms: Math.sqrt(e / (5 * FRAME_SAMPLES)) }));
    `;
    const bun = run([process.execPath, "-e", probe(join(CLIENT_DIST, "bun", "index.js"))], "/");
    expect({ code: bun.code, err: bun.err.slice(0, 1000) }).toEqual({ code: 0, err: expect.any(String) });
    expect(JSON.parse(bun.out.trim()).rms).toBeGreaterThan(3000);
    const node = run(["node", "--input-type=module", "-e", probe(join(CLIENT_DIST, "node", "index.js"))], "/");
    expect({ code: node.code, err: node.err.slice(0, 1000) }).toEqual({ code: 0, err: "" });
    expect(JSON.parse(node.out.trim()).rms).toBeGreaterThan(3000);
  });
});
