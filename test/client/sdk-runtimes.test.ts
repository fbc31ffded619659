/**
 * The built @agora/client package (scripts/build-client.ts → packages/client/dist) in its three runtimes,
 * each joining a room on a real compiled node and talking with a Bun participant (the package's bun
 * entry): Bun ↔ Bun over TCP, Node 20 ↔ Bun over TCP (fixtures/node-sdk.mjs), Chromium ↔ Bun with the
 * browser entry over the node's WebSocket listener. Every pair checks that each side's decoded mix holds
 * the other's tone, with its own well below (mix-minus), and that the roster names both and flags the
 * speaker.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext } from "playwright-core";
import type * as Sdk from "../../src/client";
import { launchChromium } from "../helpers/browser";
import { CLIENT_DIST as DIST, ensureClientPackage, packageConsumer } from "../helpers/client-package";
import { db, goertzelPower } from "../helpers/net-fakes";
import { freePort, type NodeHandle, startNode } from "../helpers/node-process";

let sdk: typeof Sdk;
let binary: NodeHandle;
let wsPort: number;
let tcpAddr: string;
let wsAddr: string;
/** a folder whose node_modules/@agora/client is the package: resolution through its `exports` */
let consumer: string;

beforeAll(async () => {
  ensureClientPackage();
  consumer = packageConsumer();
  sdk = (await import(join(DIST, "bun", "index.js"))) as typeof Sdk;
  wsPort = await freePort();
  binary = await startNode({ env: { AGORA_NETWORK_WS_PORT: String(wsPort) } });
  tcpAddr = await binary.multiaddr();
  wsAddr = `/ip4/127.0.0.1/tcp/${wsPort}/ws/p2p/${await binary.peerId()}`;
}, 180_000);

afterAll(() => {
  binary?.cleanup();
  if (consumer) rmSync(consumer, { recursive: true, force: true });
});

function tone(freq: number, seconds: number): Int16Array {
  const n = Math.round(seconds * 48_000);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(8000 * Math.sin((2 * Math.PI * freq * i) / 48_000));
  return out;
}

/** Sends `seconds` of a tone at the real pace (20 ms per frame, drift-free). */
async function sendTone(room: Sdk.RoomConnection, freq: number, seconds: number, stop?: () => boolean): Promise<void> {
  const signal = tone(freq, seconds);
  const t0 = performance.now();
  for (let k = 0; k * 960 < signal.length && !stop?.(); k++) {
    await room.sendPcm(signal.subarray(k * 960, (k + 1) * 960));
    const wait = t0 + (k + 1) * 20 - performance.now();
    if (wait > 0) await Bun.sleep(wait);
  }
}

/** Power (dB) of both tones in the last `frames` decoded frames. */
function levels(pcm: Int16Array[], listenHz: number, ownHz: number, frames = 50) {
  const tail = pcm.slice(-frames);
  const all = new Int16Array(tail.length * 960);
  tail.forEach((p, i) => {
    all.set(p, i * 960);
  });
  return { listenDb: db(goertzelPower(all, listenHz) + 1e-12), ownDb: db(goertzelPower(all, ownHz) + 1e-12) };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/**
 * A Bun participant (the package's bun entry) that records what it hears and who it saw speaking (events
 * and the roster's flags), and sends `freq` from start() until stop().
 */
async function bunParticipant(room: string, name: string, freq: number) {
  // Generous bound: on this busy machine a handshake next to running audio has taken several seconds.
  const conn = await sdk.joinRoom({ node: tcpAddr, room, name, decode: true, timeoutMs: 30_000 });
  const heard: Int16Array[] = [];
  /** frames received while a participant of that name was listed (another runtime's stay in the room) */
  const heardWhile = new Map<string, Int16Array[]>();
  const sawSpeaking = new Set<string>();
  conn.on("pcm", (e) => {
    heard.push(e.pcm);
    for (const p of conn.participants) {
      if (p.speaking) sawSpeaking.add(p.name);
      if (!p.self) heardWhile.set(p.name, [...(heardWhile.get(p.name) ?? []), e.pcm].slice(-200));
    }
  });
  conn.on("speaking", (e) => {
    if (e.speaking) sawSpeaking.add(e.participant.name);
  });
  let stopped = false;
  let sending: Promise<void> | undefined;
  return {
    conn,
    heard,
    heardWhile,
    sawSpeaking,
    start() {
      sending = sendTone(conn, freq, 60, () => stopped);
    },
    async stop() {
      stopped = true;
      await sending;
      await conn.leave();
    },
  };
}

describe("@agora/client", () => {
  test("Bun: two participants exchange tones through the node; roster and speaking flags", async () => {
    const a = await bunParticipant("rt-bun", "bun-a", 440);
    const b = await bunParticipant("rt-bun", "bun-b", 660);
    a.start();
    b.start();
    try {
      // 2 s of both talking: each mix is the other's tone
      await waitFor(() => a.heard.length >= 150 && b.heard.length >= 150, "3 s of decoded mix at both");
      const atA = levels(a.heard, 660, 440);
      const atB = levels(b.heard, 440, 660);
      console.log(
        `bun: a hears b at ${atA.listenDb.toFixed(1)} dB, own ${atA.ownDb.toFixed(1)} dB; b hears a at ${atB.listenDb.toFixed(1)} dB, own ${atB.ownDb.toFixed(1)} dB`,
      );
      expect(atA.listenDb - atA.ownDb).toBeGreaterThan(20);
      expect(atB.listenDb - atB.ownDb).toBeGreaterThan(20);
      await waitFor(() => a.conn.participants.length === 2 && a.conn.participants.every((p) => p.speaking), "both listed as speaking");
      expect(a.conn.participants.map((p) => p.name)).toEqual(["bun-a", "bun-b"]);
      expect([...a.sawSpeaking].sort()).toEqual(["bun-a", "bun-b"]);
    } finally {
      await a.stop();
      await b.stop();
    }
  }, 90_000);

  test("Bun: discover() through a bootstrap address finds the node, and joinRoom joins it by room name (README flow)", async () => {
    const peerId = await binary.peerId();
    let found: Awaited<ReturnType<typeof sdk.discover>>[number] | undefined;
    for (const deadline = performance.now() + 30_000; !found && performance.now() < deadline; ) {
      const nodes = await sdk.discover({ bootstrap: [tcpAddr], region: "default", timeoutMs: 5_000 }).catch(() => []);
      found = nodes.find((n) => n.advertisement.peer_id === peerId);
      if (!found) await Bun.sleep(200);
    }
    expect(found).toBeDefined();
    const { listen_addr, peer_id } = found!.advertisement;
    const tcp = listen_addr.find((a) => a.startsWith("/ip4/127.0.0.1/tcp/") && !a.includes("/ws"))!;
    const room = await sdk.joinRoom({ node: `${tcp}/p2p/${peer_id}`, room: "rt-discovered", name: "found", timeoutMs: 30_000 });
    await waitFor(() => room.participants.length === 1, "our own roster entry");
    expect(room.participants[0]).toMatchObject({ name: "found", self: true });
    await room.leave();
  }, 60_000);

  test("Node (the machine's, v20): the built package joins over TCP and exchanges tones with Bun", async () => {
    const nodeBin = Bun.which("node");
    expect(nodeBin).toBeTruthy();
    const bun = await bunParticipant("rt-node", "bun", 440);
    bun.start();
    try {
      const fixture = join(consumer, "node-sdk.mjs");
      await Bun.write(fixture, Bun.file(join(import.meta.dir, "fixtures", "node-sdk.mjs")));
      const proc = Bun.spawn([nodeBin!, fixture, tcpAddr, "rt-node", "660", "440", "4"], { cwd: consumer, stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
      const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
      clearTimeout(timer);
      expect({ code, err: err.slice(0, 2000) }).toEqual({ code: 0, err: expect.any(String) });
      console.log(`node fixture: ${out.trim().split("\n").pop()}`);
      const r = JSON.parse(out.trim().split("\n").pop()!) as {
        node: string;
        framesReceived: number;
        listenDb: number;
        ownDb: number;
        participants: string[];
        sawSpeaking: string[];
      };
      const atBun = levels(bun.heardWhile.get("node") ?? [], 660, 440);
      console.log(
        `node ${r.node}: ${r.framesReceived} frames, hears bun at ${r.listenDb.toFixed(1)} dB, own ${r.ownDb.toFixed(1)} dB; bun hears node at ${atBun.listenDb.toFixed(1)} dB, own ${atBun.ownDb.toFixed(1)} dB`,
      );
      expect(r.framesReceived).toBeGreaterThan(100);
      expect(r.listenDb - r.ownDb).toBeGreaterThan(20);
      expect(r.participants).toEqual(["bun", "node"]);
      expect(atBun.listenDb - atBun.ownDb).toBeGreaterThan(20);
      expect(r.sawSpeaking).toContain("bun");
      expect(bun.sawSpeaking.has("node")).toBe(true);
    } finally {
      await bun.stop();
    }
  }, 120_000);

  describe("Chromium", () => {
    let browser: BrowserContext;
    let site: ReturnType<typeof Bun.serve>;
    let profile: string;

    beforeAll(async () => {
      // The package's browser entry as built (bun build --target browser), with its media core beside it.
      site = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: (req) => {
          const path = new URL(req.url).pathname;
          if (path === "/")
            return new Response('<!doctype html><meta charset="utf-8"><title>sdk</title>', { headers: { "content-type": "text/html" } });
          const file = Bun.file(join(DIST, "browser", path.slice(1).replace(/\.\./g, "")));
          return file.exists().then((yes) => (yes ? new Response(file) : new Response("not found", { status: 404 })));
        },
      });
      profile = mkdtempSync(join(tmpdir(), "agora-chromium-"));
      browser = await launchChromium(profile);
    }, 60_000);

    afterAll(async () => {
      await browser?.close();
      site?.stop(true);
      if (profile) rmSync(profile, { recursive: true, force: true });
    });

    test("the browser entry joins over /ws and exchanges tones with Bun; roster and speaking in the page", async () => {
      const bun = await bunParticipant("rt-browser", "bun", 440);
      bun.start();
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      try {
        await page.goto(`http://127.0.0.1:${site.port}/`);
        const r = await page.evaluate(
          async ([addr, moduleUrl]) => {
            const sdk = await import(moduleUrl as string);
            const room = await sdk.joinRoom({ node: addr, room: "rt-browser", name: "chromium", decode: true, timeoutMs: 30_000 });
            const heard: Int16Array[] = [];
            const sawSpeaking = new Set<string>();
            room.on("pcm", (e: { pcm: Int16Array }) => {
              heard.push(e.pcm);
              for (const p of room.participants as { name: string; speaking: boolean }[]) if (p.speaking) sawSpeaking.add(p.name);
            });
            const goertzel = (x: Int16Array, f: number) => {
              const c = 2 * Math.cos((2 * Math.PI * f) / 48000);
              let s1 = 0;
              let s2 = 0;
              for (let i = 0; i < x.length; i++) {
                const s0 = x[i]! + c * s1 - s2;
                s2 = s1;
                s1 = s0;
              }
              return 10 * Math.log10((s1 * s1 + s2 * s2 - c * s1 * s2) / (x.length * x.length) + 1e-12);
            };
            const t0 = performance.now();
            let n = 0;
            // 3 s at least, and on until 100 frames of mix were decoded (bounded at 15 s)
            for (let k = 0; k < 150 || (heard.length < 100 && k < 750); k++) {
              const pcm = new Int16Array(960);
              for (let i = 0; i < 960; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 660 * n++) / 48000));
              await room.sendPcm(pcm);
              const wait = t0 + (k + 1) * 20 - performance.now();
              if (wait > 0) await new Promise((res) => setTimeout(res, wait));
            }
            const tail = heard.slice(-50);
            const all = new Int16Array(tail.length * 960);
            tail.forEach((p, i) => {
              all.set(p, i * 960);
            });
            const participants = room.participants.map((p: { name: string }) => p.name);
            await room.leave();
            return {
              frames: heard.length,
              listenDb: goertzel(all, 440),
              ownDb: goertzel(all, 660),
              participants,
              sawSpeaking: [...sawSpeaking],
            };
          },
          [wsAddr, `http://127.0.0.1:${site.port}/index.js`] as const,
        );
        const atBun = levels(bun.heardWhile.get("chromium") ?? [], 660, 440);
        console.log(
          `chromium: ${r.frames} frames, hears bun at ${r.listenDb.toFixed(1)} dB, own ${r.ownDb.toFixed(1)} dB; bun hears chromium at ${atBun.listenDb.toFixed(1)} dB, own ${atBun.ownDb.toFixed(1)} dB`,
        );
        expect(errors).toEqual([]);
        expect(r.frames).toBeGreaterThan(100);
        expect(r.listenDb - r.ownDb).toBeGreaterThan(20);
        expect(r.participants).toEqual(["bun", "chromium"]);
        expect(atBun.listenDb - atBun.ownDb).toBeGreaterThan(20);
        expect(r.sawSpeaking).toContain("bun");
        expect(bun.sawSpeaking.has("chromium")).toBe(true);
      } finally {
        await page.close();
        await bun.stop();
      }
    }, 120_000);
  });
});
