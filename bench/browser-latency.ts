/**
 * bench/browser-latency: end-to-end latency of a browser participant on loopback, p50 and p99, both ways.
 *
 *   bun bench/browser-latency.ts [--duration 20] [--probe-period-ms 500]
 *
 * The compiled binary (dist/agora-node) runs a node with its WebSocket listener; Debian's Chromium (headless,
 * fake microphone) opens the dashboard's /call page and joins room "latency" over /ws; this process joins the
 * same room over TCP with the SDK (AudioSession, wasm libopus). Both sides send the loadgen's probe bursts
 * (100 ms of 1 kHz every probe period) and detect the other's onsets in what they receive, as protocol.md
 * "Measuring latency" describes:
 *   sdk → browser: send time of the burst's first frame here; arrival of the frame holding the onset in the
 *                  page (AUDIO message received, before WebCodecs decodes it) + the onset's offset in it;
 *   browser → sdk: the page's time of handing the burst's first frame to WebCodecs' AudioEncoder (so the
 *                  browser's encode and its WebSocket send are included); arrival here + offset.
 * Both include the node's jitter buffer, mixing-tick alignment and its Opus encode; neither includes capture
 * or playout buffering. The two processes' clocks are aligned by the page's performance.timeOrigin +
 * performance.now() against this process's, corrected by an offset measured with round trips (the lowest-RTT
 * one of 20). Probes of the first 2 s are not counted (jitter buffers settling). A reference row runs at the
 * same time on the same node: the same bursts between two SDK participants over TCP in a room of their own.
 * Table, then ONE JSON line.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AudioSession,
  createClientNode,
  FRAME_SAMPLES,
  type LatencySummary,
  loadOpusCodec,
  OnsetDetector,
  SAMPLE_RATE,
  summarize,
  writeWav,
} from "../src/client";
import { launchChromium } from "../test/helpers/browser";
import { freePort, startNode } from "../test/helpers/node-process";
import { positiveArg } from "./args";

const DURATION_S = positiveArg("duration", 20);
const PERIOD_MS = positiveArg("probe-period-ms", 500);
const SETTLE_MS = 2000;
const ROOM = "latency";
const BURST_FRAMES = 5;

const epoch = () => performance.timeOrigin + performance.now();

type Hook = {
  state: { phase: string; error: string; onsets: number[]; probeSentAt: number[]; framesSent: number; framesReceived: number };
  startProbe(periodMs: number): void;
  expectProbes(periodMs: number): void;
};

/** Latency of each onset against the latest burst sent before it (within one period), from `from` on. */
function match(sentAt: number[], onsets: number[], from: number): { latencies: number[]; unmatched: number } {
  const latencies: number[] = [];
  let unmatched = 0;
  for (const t of onsets) {
    if (t < from) continue;
    let best: number | undefined;
    for (const s of sentAt) if (s <= t && (best === undefined || s > best)) best = s;
    if (best === undefined || t - best >= PERIOD_MS) unmatched++;
    else latencies.push(t - best);
  }
  return { latencies, unmatched };
}

const dir = mkdtempSync(join(tmpdir(), "agora-browser-latency-"));
const silence = new Int16Array(SAMPLE_RATE * 2);
writeWav(join(dir, "silence.wav"), silence);
const wsPort = await freePort();
const node = await startNode({ cwd: dir, env: { AGORA_NETWORK_WS_PORT: String(wsPort) } });
const profile = mkdtempSync(join(tmpdir(), "agora-chromium-"));
const browser = await launchChromium(profile, { fakeAudioCapture: join(dir, "silence.wav") });
let exitCode = 0;
try {
  const page = await browser.newPage();
  await page.goto(`${node.dashboardUrl}/call?room=${ROOM}&name=browser&echo=0&processing=0`);
  await page.waitForFunction(() => (window as unknown as { __agoraCall?: Hook }).__agoraCall !== undefined, undefined, { timeout: 15_000 });
  await page.click("#join");
  await page.waitForFunction(
    () => ["joined", "error"].includes((window as unknown as { __agoraCall: Hook }).__agoraCall.state.phase),
    undefined,
    {
      timeout: 30_000,
    },
  );
  const joinedState = await page.evaluate(() => (window as unknown as { __agoraCall: Hook }).__agoraCall.state);
  if (joinedState.phase !== "joined") throw new Error(`the browser could not join: ${joinedState.error}`);

  // Clock offset page − here, from the round trip with the lowest RTT.
  let offset = 0;
  let bestRtt = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 20; i++) {
    const t0 = epoch();
    const pageNow = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t1 = epoch();
    if (t1 - t0 < bestRtt) {
      bestRtt = t1 - t0;
      offset = pageNow - (t0 + t1) / 2;
    }
  }

  const codec = await loadOpusCodec();
  const libp2p = await createClientNode();
  const decoder = codec.decoder();
  const detector = new OnsetDetector((PERIOD_MS - BURST_FRAMES * 20) / 2);
  const sdkOnsets: number[] = [];
  const session = await AudioSession.open({
    libp2p,
    target: await node.multiaddr(),
    room: ROOM,
    name: "sdk",
    onAudio: (frame, receivedAt) => {
      const pcm = decoder.decode(frame.payload);
      const at = detector.feed(pcm);
      if (at >= 0) sdkOnsets.push(performance.timeOrigin + receivedAt + (at / SAMPLE_RATE) * 1000);
    },
  });
  // Reference on the same node at the same time: the same bursts between two SDK participants over TCP, in a
  // room of their own ("latency-ref"), so "what the browser adds" is read off one run on one machine state.
  const refDecoder = codec.decoder();
  const refDetector = new OnsetDetector((PERIOD_MS - BURST_FRAMES * 20) / 2);
  const refOnsets: number[] = [];
  const refSender = await AudioSession.open({ libp2p, target: await node.multiaddr(), room: `${ROOM}-ref`, name: "ref-sender" });
  const refListener = await AudioSession.open({
    libp2p,
    target: await node.multiaddr(),
    room: `${ROOM}-ref`,
    name: "ref-listener",
    onAudio: (frame, receivedAt) => {
      const at = refDetector.feed(refDecoder.decode(frame.payload));
      if (at >= 0) refOnsets.push(performance.timeOrigin + receivedAt + (at / SAMPLE_RATE) * 1000);
    },
  });
  const encoder = codec.encoder(session.joined.bitrate);
  const periodFrames = Math.round(PERIOD_MS / 20);
  const burst = (k: number) => {
    const pcm = new Int16Array(FRAME_SAMPLES);
    if (k < BURST_FRAMES)
      for (let i = 0; i < FRAME_SAMPLES; i++)
        pcm[i] = Math.round(16_000 * Math.sin((2 * Math.PI * 1000 * (k * FRAME_SAMPLES + i)) / SAMPLE_RATE));
    return encoder.encode(pcm);
  };
  const sdkSentAt: number[] = [];
  await page.evaluate((p) => {
    const h = (window as unknown as { __agoraCall: Hook }).__agoraCall;
    h.startProbe(p);
    h.expectProbes(p);
  }, PERIOD_MS);
  const startedAt = epoch();
  let seq = 1;
  let ts = 0;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const t0 = performance.now();
    const tick = setInterval(() => {
      const due = Math.floor((performance.now() - t0) / 20);
      for (; sent <= due; sent++) {
        const k = sent % periodFrames;
        if (k === 0) sdkSentAt.push(epoch());
        ts += FRAME_SAMPLES;
        const frame = { seq: seq++, timestamp: ts, payload: burst(k) };
        session.sendAudio(frame);
        refSender.sendAudio(frame);
      }
      if (sent % 100 === 0) for (const s of [session, refSender, refListener]) s.ping(); // keepalive (protocol.md: at least one per 5 s)
      if (performance.now() - t0 > DURATION_S * 1000) {
        clearInterval(tick);
        resolve();
      }
    }, 5);
  });
  const pageState = await page.evaluate(() => (window as unknown as { __agoraCall: Hook }).__agoraCall.state);
  await Promise.all([session.leave(), refSender.leave(), refListener.leave()]);
  await libp2p.stop();
  refDecoder.destroy();
  encoder.destroy();
  decoder.destroy();

  const from = startedAt + SETTLE_MS;
  const toBrowser = match(
    sdkSentAt,
    pageState.onsets.map((t) => t - offset),
    from,
  );
  const fromBrowser = match(
    pageState.probeSentAt.map((t) => t - offset),
    sdkOnsets,
    from,
  );
  const reference = match(sdkSentAt, refOnsets, from);
  const rows: { direction: string; summary: LatencySummary; unmatched: number }[] = [
    { direction: "sdk → browser", summary: summarize(toBrowser.latencies), unmatched: toBrowser.unmatched },
    { direction: "browser → sdk", summary: summarize(fromBrowser.latencies), unmatched: fromBrowser.unmatched },
    { direction: "sdk → sdk (tcp)", summary: summarize(reference.latencies), unmatched: reference.unmatched },
  ];
  const load =
    (
      await Bun.file("/proc/loadavg")
        .text()
        .catch(() => "")
    ).split(" ")[0] ?? "?";
  console.log(
    `browser participant latency, loopback (Chromium ${browser.browser()?.version() ?? "?"} over /ws, SDK over TCP; ${DURATION_S} s, probe every ${PERIOD_MS} ms; clock offset ${offset.toFixed(2)} ms ± ${(bestRtt / 2).toFixed(2)}; load ${load})`,
  );
  console.log("direction        probes    p50 ms    p90 ms    p99 ms    max ms   unmatched");
  const f = (v: number | null) => (v === null ? "-" : v.toFixed(1)).padStart(9);
  for (const r of rows)
    console.log(
      `${r.direction.padEnd(15)} ${String(r.summary.samples).padStart(7)} ${f(r.summary.p50)} ${f(r.summary.p90)} ${f(r.summary.p99)} ${f(r.summary.max)} ${String(r.unmatched).padStart(11)}`,
    );
  console.log(
    JSON.stringify({
      bench: "browser-latency",
      durationS: DURATION_S,
      probePeriodMs: PERIOD_MS,
      clockOffsetMs: offset,
      clockUncertaintyMs: bestRtt / 2,
      loadavg1: Number(load),
      sdkToBrowser: { ...rows[0]!.summary, unmatched: rows[0]!.unmatched },
      browserToSdk: { ...rows[1]!.summary, unmatched: rows[1]!.unmatched },
      sdkToSdkTcp: { ...rows[2]!.summary, unmatched: rows[2]!.unmatched },
      browserFrames: { sent: pageState.framesSent, received: pageState.framesReceived },
    }),
  );
} catch (err) {
  console.error(`browser-latency: ${(err as Error).message}`);
  exitCode = 1;
} finally {
  await browser.close();
  node.cleanup();
  rmSync(profile, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
