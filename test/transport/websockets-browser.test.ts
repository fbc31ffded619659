/**
 * A real browser on the node's WebSocket listener: Debian's Chromium (headless, fresh profile) loads a page
 * running stock js-libp2p bundled with `bun build --target browser` (browser/ws-page.ts: @libp2p/websockets,
 * noise with its default browser crypto, yamux). It dials the listener's /ws address, pings, and pushes
 * 8 MiB through one stream; the listener answers the sha256 of what it received.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import type { BrowserContext } from "playwright-core";
import { agoraTransportStack, agoraWebSockets, type WsRejectReason } from "../../src/transport";
import { launchChromium } from "../helpers/browser";
import { freePort, type NodeHandle, startNode } from "../helpers/node-process";
import { serveBulk } from "../relay/bulk";

const BULK_BYTES = 8 * 1024 * 1024;
let node: Libp2p;
let browser: BrowserContext;
let site: ReturnType<typeof Bun.serve>;
let profile: string;
let binary: NodeHandle;
let binaryWsPort: number;
const rejected: WsRejectReason[] = [];

beforeAll(async () => {
  const built = await Bun.build({ entrypoints: [join(import.meta.dir, "browser", "ws-page.ts")], target: "browser", minify: true });
  if (!built.success) throw new Error(`browser bundle failed: ${built.logs.map(String).join("\n")}`);
  const script = await built.outputs[0]!.text();
  site = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) =>
      new URL(req.url).pathname === "/page.js"
        ? new Response(script, { headers: { "content-type": "text/javascript" } })
        : new Response('<!doctype html><meta charset="utf-8"><title>ws</title><script type="module" src="/page.js"></script>', {
            headers: { "content-type": "text/html" },
          }),
  });
  const stack = agoraTransportStack();
  node = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0/ws"] },
    ...stack,
    transports: [agoraWebSockets({ onReject: (r) => rejected.push(r) })],
    services: { ping: ping() },
  });
  await serveBulk(node);
  binaryWsPort = await freePort();
  binary = await startNode({ env: { AGORA_NETWORK_WS_PORT: String(binaryWsPort) } });
  profile = mkdtempSync(join(tmpdir(), "agora-chromium-"));
  browser = await launchChromium(profile);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  site?.stop(true);
  await node?.stop();
  binary?.cleanup();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("stock js-libp2p in Chromium dials /ws, pings, and sends 8 MiB intact", async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${site.port}/`);
  await page.waitForFunction(() => (globalThis as unknown as { agoraWsReady?: boolean }).agoraWsReady === true, undefined, {
    timeout: 15_000,
  });
  const addr = node.getMultiaddrs()[0]!.toString();
  expect(addr).toContain("/ws/p2p/");
  const result = await page.evaluate(
    ([a, n]) =>
      (globalThis as unknown as { agoraWsTest: (a: string, n: number) => Promise<Record<string, unknown>> }).agoraWsTest(
        a as string,
        n as number,
      ),
    [addr, BULK_BYTES] as const,
  );
  expect(result.remotePeer).toBe(node.peerId.toString());
  expect(result.rttMs as number).toBeGreaterThanOrEqual(0);
  expect(result.remoteDigest).toBe(result.localDigest as string);
  expect(errors).toEqual([]);
  expect(rejected).toEqual([]);
  console.log(
    `chromium over /ws: connect ${(result.connectMs as number).toFixed(0)} ms, ping ${result.rttMs} ms, 8 MiB in ${(result.bulkMs as number).toFixed(0)} ms`,
  );
  await page.close();
}, 90_000);

test("Chromium dials the compiled node's /ws address and pings it", async () => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${site.port}/`);
  await page.waitForFunction(() => (globalThis as unknown as { agoraWsReady?: boolean }).agoraWsReady === true, undefined, {
    timeout: 15_000,
  });
  const addr = `/ip4/127.0.0.1/tcp/${binaryWsPort}/ws/p2p/${await binary.peerId()}`;
  const result = await page.evaluate(
    (a) =>
      (
        globalThis as unknown as { agoraWsPing: (a: string) => Promise<{ rttMs: number; remotePeer: string; protocols: string[] }> }
      ).agoraWsPing(a),
    addr,
  );
  expect(result.remotePeer).toBe(await binary.peerId());
  expect(result.rttMs).toBeGreaterThanOrEqual(0);
  // identify ran over the WebSocket connection: the browser sees the node's audio protocol.
  expect(result.protocols.some((p) => p.startsWith("/agora/audio/"))).toBe(true);
  await page.close();
}, 60_000);
