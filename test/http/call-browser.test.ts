/**
 * The dashboard's test-call page in a real browser against the compiled binary: Debian's Chromium with a
 * fake microphone (a WAV of a 660 Hz tone) opens /call (behind the admin token: through /login), joins a
 * room over the node's /ws listener, and a CLI `join` client (a binary process sending a 440 Hz WAV and
 * recording what it hears) joins the same room. The CLI's recording must hold the browser's tone and the
 * browser's received audio (window.__agoraCall.received()) the CLI's, each with its own tone at least
 * 26 dB lower. A second test proves echo mode: alone in a room, the browser hears its own tone come back
 * through the node on the hidden echo participant.
 *
 * Waits are conditions with deadlines (a busy machine joins slowly); tones are measured where the
 * recording holds them, found from the signal. Screenshots go to test-output/.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { readWav, writeWav } from "../../src/client";
import { launchChromium } from "../helpers/browser";
import { db, goertzelPower, tone } from "../helpers/net-fakes";
import { eventually, freePort, type NodeHandle, ROOT, runCli, startNode } from "../helpers/node-process";

const TOKEN = "call-test-token-0123456789";
const BROWSER_HZ = 660;
const CLI_HZ = 440;
const OUT = join(ROOT, "test-output");

let dir: string;
let profile: string;
let node: NodeHandle;
let wsPort: number;
let browser: BrowserContext;

interface CallState {
  phase: string;
  error: string;
  participantId: string;
  framesSent: number;
  framesReceived: number;
  framesDecoded: number;
  echoFramesReceived: number;
  echoLoudFrames: number;
  encodeErrors: number;
  decodeErrors: number;
  roster?: { entries: { participantId: string; name: string; speaking: boolean }[]; total: number };
}
type CallHook = { state: CallState; received(): string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "agora-call-"));
  profile = mkdtempSync(join(tmpdir(), "agora-chromium-"));
  mkdirSync(OUT, { recursive: true });
  writeWav(join(dir, "browser.wav"), tone(BROWSER_HZ, 10, 8000));
  writeWav(join(dir, "cli.wav"), tone(CLI_HZ, 8, 8000));
  wsPort = await freePort();
  node = await startNode({
    // Not the repository: the page's script and worklet are embedded in the binary, not read from src/.
    cwd: dir,
    env: {
      AGORA_NETWORK_WS_PORT: String(wsPort),
      AGORA_DASHBOARD_AUTH_TOKEN: TOKEN,
      // Room for late frames on a busy machine (as test/realtime/e2e-tones.test.ts): latency, not dropouts.
      AGORA_AUDIO_JITTER_MIN_MS: "100",
      AGORA_AUDIO_JITTER_MAX_MS: "600",
    },
  });
  browser = await launchChromium(profile, { fakeAudioCapture: join(dir, "browser.wav") });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  node?.cleanup();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function callState(page: Page): Promise<CallState> {
  return page.evaluate(() => (window as unknown as { __agoraCall: CallHook }).__agoraCall.state);
}

async function signIn(page: Page): Promise<void> {
  // Without the session cookie the page redirects to the login form.
  await page.goto(`${node.dashboardUrl}/call`);
  if (new URL(page.url()).pathname === "/call") return; // signed in by an earlier test (same browser context)
  expect(new URL(page.url()).pathname).toBe("/login");
  await page.fill("input[name=token]", TOKEN);
  await Promise.all([page.waitForURL((u) => u.pathname === "/"), page.click("button[type=submit]")]);
}

async function joinCall(page: Page, room: string, echo: boolean): Promise<void> {
  await page.goto(`${node.dashboardUrl}/call?room=${room}&name=browser&echo=${echo ? 1 : 0}&processing=0`);
  expect(new URL(page.url()).pathname).toBe("/call");
  await page.waitForFunction(() => (window as unknown as { __agoraCall?: unknown }).__agoraCall !== undefined, undefined, {
    timeout: 15_000,
  });
  await page.click("#join");
  await page.waitForFunction(
    () => ["joined", "error"].includes((window as unknown as { __agoraCall: CallHook }).__agoraCall.state.phase),
    undefined,
    { timeout: 30_000 },
  );
  const s = await callState(page);
  expect(s.error).toBe("");
  expect(s.phase).toBe("joined");
}

/**
 * Mean powers of `want` and `other` over the part of `samples` where `want` sounds (from the first to the
 * last 20 ms block within 30 dB of its loudest, less 500 ms of start), and how many blocks hold `want` at
 * more than a quarter of the amplitude sent (2000 of 8000: within 12 dB). On a busy machine the node's
 * jitter buffer conceals late frames, so the span has holes; those lower both means alike.
 */
function tonePowers(samples: Int16Array, want: number, other: number): { want: number; other: number; loudBlocks: number } {
  const blocks: number[] = [];
  for (let b = 0; b + 960 <= samples.length; b += 960) blocks.push(goertzelPower(samples.subarray(b, b + 960), want));
  const peak = Math.max(0, ...blocks);
  const on = blocks.map((p) => p > peak / 1000);
  const first = on.indexOf(true) + 25;
  const last = on.lastIndexOf(true) - 5;
  if (peak === 0 || last <= first) return { want: 0, other: 0, loudBlocks: 0 };
  const span = samples.subarray(first * 960, (last + 1) * 960);
  const loudBlocks = blocks.slice(first, last + 1).filter((p) => p > 2000 ** 2 / 2).length;
  return { want: goertzelPower(span, want), other: goertzelPower(span, other), loudBlocks };
}

test("browser on /call and a CLI join client hear each other's tone, each without its own", async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await signIn(page);
  await joinCall(page, "call-proof", false);
  // The browser is sending its tone before the CLI joins.
  await eventually(async () => (await callState(page)).framesSent > 50, 20_000, "the browser sending audio");
  const addr = await node.multiaddr();
  const output = join(dir, "cli-heard.wav");
  const cliRun = runCli(
    [
      "join",
      "--node",
      addr,
      "--room",
      "call-proof",
      "--input",
      join(dir, "cli.wav"),
      "--output",
      output,
      "--duration",
      "9",
      "--name",
      "cli",
    ],
    { timeoutMs: 60_000 },
  );
  // The node's ROSTER reaches the page: both participants, the CLI flagged speaking while its tone plays.
  const roster = await eventually(
    async () => {
      const r = (await callState(page)).roster;
      return r?.entries.some((e) => e.name === "cli" && e.speaking) ? r : undefined;
    },
    30_000,
    "the CLI speaking in the page's roster",
  );
  expect(roster.entries.map((e) => e.name).sort()).toEqual(["browser", "cli"]);
  const shot = join(OUT, "call-page-joined.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot of the call page: ${shot}`);
  const cli = await cliRun;
  expect(cli.code).toBe(0);
  const heardByCli = readWav(output).samples;
  copyFileSync(output, join(OUT, "call-cli-heard.wav"));
  const cliSide = tonePowers(heardByCli, BROWSER_HZ, CLI_HZ);
  const b64 = await page.evaluate(() => (window as unknown as { __agoraCall: CallHook }).__agoraCall.received());
  const raw = Buffer.from(b64, "base64");
  const heardByBrowser = new Int16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  const browserSide = tonePowers(heardByBrowser, CLI_HZ, BROWSER_HZ);
  writeWav(join(OUT, "call-browser-heard.wav"), heardByBrowser);
  console.log(
    `recordings: ${join(OUT, "call-cli-heard.wav")} (what the CLI heard), ${join(OUT, "call-browser-heard.wav")} (what the browser heard)`,
  );
  const s = await callState(page);
  console.log(
    `CLI heard the browser's ${BROWSER_HZ} Hz in ${cliSide.loudBlocks} blocks, own ${CLI_HZ} Hz ${db(cliSide.want / Math.max(cliSide.other, 1e-9)).toFixed(1)} dB lower; ` +
      `browser heard the CLI's ${CLI_HZ} Hz in ${browserSide.loudBlocks} blocks, own ${BROWSER_HZ} Hz ${db(browserSide.want / Math.max(browserSide.other, 1e-9)).toFixed(1)} dB lower ` +
      `(browser sent ${s.framesSent}, received ${s.framesReceived}, decoded ${s.framesDecoded} frames)`,
  );
  // Each tone heard for at least 1 s (50 blocks) within 12 dB of the level sent …
  expect(cliSide.loudBlocks).toBeGreaterThanOrEqual(50);
  expect(browserSide.loudBlocks).toBeGreaterThanOrEqual(50);
  // … and each side's own tone at least 26 dB below it.
  expect(db(cliSide.want / Math.max(cliSide.other, 1e-9))).toBeGreaterThanOrEqual(26);
  expect(db(browserSide.want / Math.max(browserSide.other, 1e-9))).toBeGreaterThanOrEqual(26);
  expect(errors).toEqual([]);
  // The call is still up (a session that ended by itself would be phase "error"), every packet 20 ms and decodable.
  expect(s.phase).toBe("joined");
  expect(s.encodeErrors).toBe(0);
  expect(s.decodeErrors).toBe(0);
  await page.click("#leave");
  await page.waitForFunction(() => (window as unknown as { __agoraCall: CallHook }).__agoraCall.state.phase === "left", undefined, {
    timeout: 10_000,
  });
  await page.close();
}, 180_000);

test("a Join clicked before the page has heard from the node joins the room named in the address", async () => {
  const page = await browser.newPage();
  await signIn(page);
  // The page's first request to /api/call (its start-up) is held until after the click: a busy machine's
  // order of events, where the room used to be filled in only when that answer came (Join then joined "").
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let first = true;
  await page.route("**/api/call", async (route) => {
    if (first) {
      first = false;
      await held;
    }
    await route.continue();
  });
  try {
    await page.goto(`${node.dashboardUrl}/call?room=call-early&name=early&processing=0`);
    await page.waitForFunction(() => (window as unknown as { __agoraCall?: unknown }).__agoraCall !== undefined, undefined, {
      timeout: 15_000,
    });
    await page.click("#join");
    await page.waitForFunction(
      () => ["joined", "error"].includes((window as unknown as { __agoraCall: CallHook }).__agoraCall.state.phase),
      undefined,
      { timeout: 30_000 },
    );
    release();
    const s = await callState(page);
    expect(s.error).toBe("");
    expect(s.phase).toBe("joined");
    const rooms = (await (await fetch(`${node.dashboardUrl}/api/rooms`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      id: string;
    }[];
    expect(rooms.map((r) => r.id)).toContain("call-early");
    await page.evaluate(() => (window as unknown as { __agoraCall: { leave(): Promise<void> } }).__agoraCall.leave());
  } finally {
    release();
    await page.close();
  }
});

test("echo mode: alone in a room, the browser hears its own tone come back through the node", async () => {
  const page = await browser.newPage();
  await signIn(page);
  await joinCall(page, "call-echo", true);
  await eventually(async () => (await callState(page)).echoLoudFrames > 50, 30_000, "the browser's tone on the echo participant");
  const shot = join(OUT, "call-page-echo.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot of the call page in echo mode: ${shot}`);
  const s = await callState(page);
  // The room's mix for the browser itself holds nobody (mix-minus: the echo participant sends nothing).
  expect(s.echoFramesReceived).toBeGreaterThan(50);
  await page.close();
}, 120_000);

/** agora_ws_connections_rejected_total by reason, from the node's /metrics. */
async function wsRejected(): Promise<Record<string, number>> {
  const text = await (await fetch(node.metricsUrl)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^agora_ws_connections_rejected_total\{reason="([a-z_]+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

test("bad input from a browser (an oversized message, garbage, idle sockets) is closed and counted; a call in progress is not disturbed", async () => {
  const caller = await browser.newPage();
  await signIn(caller);
  await joinCall(caller, "call-abuse", true);
  await eventually(async () => (await callState(caller)).echoLoudFrames > 25, 30_000, "the caller hearing its echo");
  const before = await wsRejected();
  const attacker = await browser.newPage();
  await attacker.goto(`${node.dashboardUrl}/call`);
  const url = `ws://127.0.0.1:${wsPort}/`;
  // All from page JavaScript, as a hostile page could: the browser's WebSocket API only sends well-formed frames.
  const codes = await attacker.evaluate(async (u) => {
    // Bounded: a socket the node left open shows as -1 after 20 s (and fails the test), not as a hang.
    const closeCode = (ws: WebSocket) =>
      new Promise<number>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve(-2);
        ws.addEventListener("close", (e) => resolve(e.code));
        setTimeout(() => resolve(-1), 20_000);
      });
    const open = (u2: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(u2);
        ws.binaryType = "arraybuffer";
        ws.onopen = () => resolve(ws);
        ws.onerror = () => reject(new Error("websocket failed to open"));
        setTimeout(() => reject(new Error("websocket did not open within 10 s")), 10_000);
      });
    const big = await open(u);
    const bigClosed = closeCode(big);
    big.send(new Uint8Array(2 * 1024 * 1024)); // above the 1 MiB message limit
    const garbage = await open(u);
    const garbageClosed = closeCode(garbage);
    garbage.send("this is not multistream-select");
    const idle = await Promise.all(Array.from({ length: 12 }, () => open(u)));
    const idleClosed = idle.map(closeCode);
    return { big: await bigClosed, garbage: await garbageClosed, idle: await Promise.all(idleClosed) };
  }, url);
  console.log(`close codes: ${JSON.stringify(codes)}`);
  expect(codes.big).toBe(1009);
  expect(codes.garbage).not.toBe(-1);
  expect(codes.idle).toHaveLength(12);
  expect(codes.idle).not.toContain(-1);
  let last = "";
  const after = await eventually(
    async () => {
      const r = await wsRejected();
      const d = (k: string) => (r[k] ?? 0) - (before[k] ?? 0);
      // The oversized message by its close code; the garbage and the 12 idle sockets each as a failed or timed
      // out handshake, or refused at once beyond the pending limit.
      const rest = d("handshake_failed") + d("handshake_timeout") + d("too_many_pending");
      last = JSON.stringify(Object.fromEntries(Object.keys(r).map((k) => [k, d(k)])));
      return d("frame_too_large") >= 1 && rest >= 13 ? r : undefined;
    },
    15_000,
    "the rejections counted in agora_ws_connections_rejected_total",
  ).catch((err) => {
    throw new Error(`${(err as Error).message}; counted: ${last}`);
  });
  console.log(
    `rejected by reason during the abuse: ${JSON.stringify(Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)])))}`,
  );
  // The call went on: still joined, its echo still arriving with its tone.
  const mid = (await callState(caller)).echoLoudFrames;
  await eventually(async () => (await callState(caller)).echoLoudFrames > mid + 50, 30_000, "the caller's echo continuing");
  expect((await callState(caller)).phase).toBe("joined");
  await attacker.close();
  await caller.close();
}, 120_000);

test("a node without a WebSocket listener: the page says so and how to turn it on", async () => {
  const plain = await startNode({ cwd: dir });
  try {
    const page = await browser.newPage();
    await page.goto(`${plain.dashboardUrl}/call`);
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.includes("network.ws_port"), undefined, {
      timeout: 15_000,
    });
    await page.click("#join");
    await page.waitForFunction(() => (window as unknown as { __agoraCall: CallHook }).__agoraCall.state.phase === "error", undefined, {
      timeout: 15_000,
    });
    expect((await callState(page)).error).toContain("no WebSocket listener");
    const shot = join(OUT, "call-page-no-listener.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot of the call page without a WebSocket listener: ${shot}`);
    await page.close();
  } finally {
    plain.cleanup();
  }
}, 60_000);
