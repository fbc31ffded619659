/**
 * bench/mixer-latency: latency ADDED by the mixer on loopback, p50 and p99, against the direct path.
 *
 *   bun bench/mixer-latency.ts [--duration 20] [--rooms 4] [--participants 3] [--probe-period-ms 250]
 *                              [--jitter-min-ms N]   (engine jitter-buffer floor; default: config default)
 *                              [--background N [--background-procs 4] [--background-nice 19]]
 *                              [--transport udp|stream] [--mixer binary|inproc] [--vad on|off]
 *
 * `--background N` measures at a given load: N more participants in one room of the same mixer (3 talkers,
 * everyone else an open silent microphone, frames flagged by voice activity, each on its own libp2p connection, from `--background-procs`
 * loadgen processes, bench/loadgen-worker.ts, as in bench/capacity.ts), joined before and running through
 * both measurements, at nice 19 unless `--background-nice` says otherwise (they stand in for clients on other
 * machines: see main). The target is stated at 80 % of the capacity bench/capacity.ts found.
 * AGORA_BENCH_STATS=1 prints on stderr the node's view of the probe rooms every 2 s (jitter-buffer depth,
 * target, jitter estimate, mean jitter, late frames per participant) and its tick-duration histogram after
 * the mixer run.
 *
 * The mixer is the compiled node (`--mixer binary`, the default: dist/agora-node on its defaults but for the
 * jitter floor and the per-address limits a bench from a few loopback addresses needs), or with `--mixer
 * inproc` a server subprocess's libp2p node with the real media engine behind AudioRoomService. The direct
 * path's echo protocol, which reflects AUDIO frames untouched, runs in a server subprocess of its own: with
 * the mixer under load, an echo on the mixer's own control thread would time that thread's stalls too, which
 * voice by datagram never meets. This process then runs the loadgen probe measurement (see
 * src/protocol/protocol.md, "Measuring latency") twice over the same kind of connection:
 *   direct: each probe speaker's frames come straight back from the echo protocol (no jitter buffer, no mix);
 *   mixer:  rooms × participants through the mixer; the probe listener hears the speaker in its mix-minus.
 * Added latency = mixer − direct at each percentile. Targets: added p50 ≤ 30 ms, p99 ≤ 60 ms.
 *
 * `--transport` (default udp) is how the mixer path's voice travels, the probes' and the background's alike:
 * "udp" is what clients get by default, encrypted datagrams carried by the media worker on a socket of its own
 * (the engine's datagram plane, as the node runs it), the stream for control; "stream" is voice on the libp2p
 * stream. The direct path is always the stream echo: its loopback hop costs a fraction of a millisecond more
 * than a datagram's, so on udp the added figure is, if anything, understated by that much.
 * Prints a table, then ONE JSON line.
 */

import { join } from "node:path";
import type { Libp2p, Stream } from "@libp2p/interface";
import { Registry } from "prom-client";
import { type LatencySummary, type LoadgenReport, lossPercent, runLoadgen, type VoiceTransport } from "../src/client";
import { defaultConfig } from "../src/config/schema";
import { createLogger, silentLogger } from "../src/log";
import {
  CHANNELS,
  CODEC_OPUS,
  chunkBytes,
  encodeAudio,
  encodeMessage,
  FRAME_SAMPLES,
  MessageDecoder,
  SAMPLE_RATE,
  WIRE_VERSION,
} from "../src/protocol";
import { AudioRoomService, UdpVoiceEndpoint } from "../src/rooms";
import { agoraTransportStack } from "../src/transport";
import { startNode } from "../test/helpers/node-process";
import { choiceArg, positiveArg } from "./args";
import type { LoadgenWorkerEvent, LoadgenWorkerSpec } from "./loadgen-worker";
import { loopbackLoadLimits, metricValue } from "./node-load";

const ECHO_PROTOCOL = "/agora/audio-echo/1.0.0";

/** Same wire as the audio protocol; JOIN → JOINED, every AUDIO reflected as is, PING → PONG. */
function echoHandler(stream: Stream): void {
  const decoder = new MessageDecoder();
  stream.addEventListener("message", (evt) => {
    const { messages, error } = decoder.push(chunkBytes(evt.data));
    try {
      for (const m of messages) {
        if (m.type === "JOIN")
          stream.send(
            encodeMessage({
              type: "JOINED",
              version: WIRE_VERSION,
              participantId: "echo",
              sampleRate: SAMPLE_RATE,
              channels: CHANNELS,
              frameSamples: FRAME_SAMPLES,
              codec: CODEC_OPUS,
              bitrate: 32_000,
              serverTimeMs: Date.now(),
            }),
          );
        else if (m.type === "AUDIO") stream.send(encodeAudio(m));
        else if (m.type === "PING") stream.send(encodeMessage({ type: "PONG", nonce: m.nonce }));
        else if (m.type === "LEAVE") void stream.close().catch(() => {});
      }
    } catch {
      stream.abort(new Error("echo send failed"));
    }
    if (error) stream.abort(error);
  });
  stream.addEventListener("remoteCloseWrite", () => void stream.close().catch(() => {}));
}

async function serve(): Promise<void> {
  const { createLibp2p } = await import("libp2p");
  const { identify } = await import("@libp2p/identify");
  const { createMediaEngine } = await import("../src/audio");
  const log = createLogger({ level: "warn", format: "json", stdout: process.stderr }).logger;
  const node: Libp2p = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    services: { identify: identify() },
    // The background load is one connection per participant from a few loopback addresses: libp2p's
    // default of 300 connections (and 5 new ones per second per address) would turn the probes' dials away.
    connectionManager: { maxConnections: 4096, inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 1000 },
  });
  await node.handle(ECHO_PROTOCOL, (stream) => echoHandler(stream), { maxInboundStreams: 4096 });
  if (process.argv.includes("--echo-only")) {
    // The direct path's server alone, idle but for the probes (the mixer is the compiled node).
    process.stdout.write(`${JSON.stringify({ addr: node.getMultiaddrs()[0]!.toString() })}\n`);
    const stopEcho = async () => {
      await node.stop();
      process.exit(0);
    };
    process.on("SIGTERM", () => void stopEcho());
    process.stdin.on("end", () => void stopEcho());
    process.stdin.resume();
    return;
  }
  const cfg = defaultConfig();
  const registry = new Registry();
  const engine = await createMediaEngine({
    settings: {
      topKSpeakers: cfg.audio.top_k_speakers,
      sharedEncode: cfg.audio.shared_encode,
      bitrate: cfg.audio.bitrate,
      jitterMinMs: positiveArg("jitter-min-ms", cfg.audio.jitter_min_ms, true),
      jitterMaxMs: cfg.audio.jitter_max_ms,
      maxRooms: 100,
      maxParticipants: 2000,
    },
    logger: log,
    registry,
    // Voice datagrams in the media worker, on a socket of their own (as the node with audio.udp_port set).
    datagrams: { hostname: "127.0.0.1", port: 0 },
  });
  await engine.start();
  const plane = engine.datagrams;
  if (!plane) throw new Error("the media engine has no datagram plane");
  const udp = new UdpVoiceEndpoint({ plane, planeAddress: "127.0.0.1", registry, logger: log });
  // The background load comes from a few loopback addresses: per-IP limits sized for it.
  const service = new AudioRoomService({
    libp2p: node,
    engine,
    registry,
    logger: log,
    udp,
    udpAddrs: ["127.0.0.1"],
    limits: { maxStreamsPerConnection: 4096, ipMaxStreams: 4096, ipJoinsPerSecond: 1000, ipJoinBurst: 1000 },
  });
  await service.start();
  process.stdout.write(`${JSON.stringify({ addr: node.getMultiaddrs()[0]!.toString() })}\n`);
  // Engine view of the mixer run (jitter-buffer depth per participant), for diagnosing latency.
  const statsTimer = setInterval(() => {
    const rooms = engine.rooms().filter((r) => r.id.startsWith("bench-"));
    if (rooms.length > 0 && process.env.AGORA_BENCH_STATS)
      process.stderr.write(
        `${rooms.map((r) => `${r.id}: ${r.participants.map((p) => `${p.bufferDepthMs.toFixed(0)}/${p.jitterMs.toFixed(1)}`).join(" ")}`).join(" | ")}\n`,
      );
  }, 2000);
  statsTimer.unref();
  const stop = async () => {
    await service.stop();
    await engine.stop();
    await node.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.stdin.on("end", () => void stop());
  process.stdin.resume();
}

async function main(): Promise<void> {
  const duration = positiveArg("duration", 20);
  // 4 rooms = 4 sender phases within the 20 ms frame (see loadgen), so the mixer-tick alignment averages out.
  const rooms = Math.round(positiveArg("rooms", 4));
  const participants = Math.max(2, Math.round(positiveArg("participants", 3)));
  const probePeriodMs = positiveArg("probe-period-ms", 250);

  const jitterMinMs = positiveArg("jitter-min-ms", defaultConfig().audio.jitter_min_ms, true);
  const background = Math.round(positiveArg("background", 0, true));
  const backgroundProcs = Math.max(1, Math.round(positiveArg("background-procs", 4)));
  // The background stands in for clients on machines of their own: on this one they must not take the CPU
  // the node and the probes need at the moment they need it, so they run at a lower priority (nice 19 by
  // default: they still get every idle cycle, and their loss against the wall clock, printed, shows whether
  // they kept up). --background-nice 0 runs them at the node's priority, as a second client process would.
  const backgroundNice = Math.min(19, Math.round(positiveArg("background-nice", 19, true)));
  // The probe rooms' participants flag their frames by voice activity, as the SDK's room clients do
  // (DEFAULT_ROOM_CAPABILITIES): the speaker's as voice, the two listeners' near-silence as silence. --vad off:
  // unflagged frames, as a 1.0.0 client sends them (every one decoded, every participant a mix candidate).
  const vad = choiceArg("vad", ["on", "off"]) === "on";
  const transport = choiceArg("transport", ["udp", "stream"]);
  const mixerKind = choiceArg("mixer", ["binary", "inproc"]);
  let background_: Background | undefined;
  // The compiled node as operators run it (its own defaults but for the jitter floor and the limits a bench
  // from a few loopback addresses needs), or the in-process server's engine.
  const binary =
    mixerKind === "binary"
      ? await startNode({
          args: [
            "--log-level",
            "warn",
            "--set",
            `audio.jitter_min_ms=${jitterMinMs}`,
            "--set",
            `node.max_connections=${background + 256}`,
            ...loopbackLoadLimits(background),
          ],
          timeoutMs: 60_000,
        })
      : undefined;
  const serverArgs = binary ? ["--serve", "--echo-only"] : ["--serve", "--jitter-min-ms", String(jitterMinMs)];
  const server = Bun.spawn([process.execPath, import.meta.path, ...serverArgs], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const killTimer = setTimeout(() => server.kill(), (duration * 2 + 120) * 1000);
  try {
    const reader = server.stdout.getReader();
    let buf = "";
    const deadline = Date.now() + 30_000;
    while (!buf.includes("\n")) {
      if (Date.now() > deadline) throw new Error("server did not start within 30 s");
      const { value, done } = await reader.read();
      if (done) throw new Error("server exited before printing its address");
      buf += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const echoAddr = (JSON.parse(buf.split("\n")[0]!) as { addr: string }).addr;
    const mixerAddr = binary ? await binary.multiaddr() : echoAddr;
    const logger = silentLogger();
    const common = { durationSec: duration, logger, probePeriodMs };
    if (background > 0)
      background_ = await startBackground(mixerAddr, background, backgroundProcs, duration * 2 + 60, transport, backgroundNice);
    // Direct path: one "room" per probe, each a single participant talking to the echo.
    const direct = await runLoadgen({ ...common, node: echoAddr, rooms, participants: 1, protocol: ECHO_PROTOCOL, roomPrefix: "echo" });
    const skippedBefore = binary ? await skippedTicks(binary.metricsUrl) : 0;
    // AGORA_BENCH_STATS=1: the node's view of the probe rooms every 2 s (jitter-buffer depth / target / jitter
    // estimate / mean jitter per participant, and late frames, from /api/rooms), as the in-process server prints its engine's.
    const statsTimer =
      binary && process.env.AGORA_BENCH_STATS
        ? setInterval(() => void printRoomStats(binary.dashboardUrl).catch(() => undefined), 2000)
        : undefined;
    const mixer = await runLoadgen({ ...common, node: mixerAddr, rooms, participants, roomPrefix: "bench", transport, voiceActivity: vad });
    clearInterval(statsTimer);
    if (binary && process.env.AGORA_BENCH_STATS) {
      const text = await (await fetch(binary.metricsUrl)).text();
      process.stderr.write(
        `${text
          .split("\n")
          .filter((l) => l.startsWith("agora_mixer_tick_seconds"))
          .join("\n")}\n`,
      );
    }
    // The node's own word on real time during the mixer run: ticks it could not run in time.
    const skipped = binary ? (await skippedTicks(binary.metricsUrl)) - skippedBefore : null;
    const bg = background_ ? await background_.stop() : undefined;
    report(
      direct,
      mixer,
      { duration, rooms, participants, probePeriodMs, jitterMinMs, background, backgroundNice, vad: vad ? 1 : 0 },
      transport,
      mixerKind,
      skipped,
      bg,
    );
  } finally {
    await background_?.stop();
    clearTimeout(killTimer);
    server.stdin.end();
    await Promise.race([server.exited, Bun.sleep(10_000)]);
    server.kill();
    await binary?.stop().catch(() => undefined);
    binary?.cleanup();
  }
}

async function printRoomStats(dashboardUrl: string): Promise<void> {
  const rooms = (await (await fetch(`${dashboardUrl}/api/rooms`)).json()) as {
    id: string;
    participants: { buffer_depth_ms: number; jitter_target_ms?: number; jitter_estimate_ms?: number; jitter_ms: number; late: number }[];
  }[];
  const line = rooms
    .filter((r) => r.id.startsWith("bench-"))
    .map(
      (r) =>
        `${r.id}: ${r.participants.map((p) => `${p.buffer_depth_ms.toFixed(0)}/${(p.jitter_target_ms ?? 0).toFixed(0)}/${(p.jitter_estimate_ms ?? 0).toFixed(1)}/${p.jitter_ms.toFixed(1)}/${p.late}`).join(" ")}`,
    )
    .join(" | ");
  process.stderr.write(`depth/target/estimate/jitter ms, late: ${line}\n`);
}

/** agora_mixer_ticks_skipped_total on the node's /metrics. */
async function skippedTicks(metricsUrl: string): Promise<number> {
  return metricValue(await (await fetch(metricsUrl)).text(), "agora_mixer_ticks_skipped_total");
}

interface BackgroundFigures {
  participants: number;
  joined: number;
  /** loss against the wall clock over the background participants' whole stay */
  dueLossPercent: number;
}

interface Background {
  stop(): Promise<BackgroundFigures>;
}

/**
 * Joins `n` background participants (one room, 3 talkers, silent microphones, per-participant connections)
 * from `procs` loadgen processes and resolves once all of them are sending; stop() ends them (LEAVE) and
 * returns their figures.
 */
async function startBackground(
  addr: string,
  n: number,
  procs: number,
  maxSec: number,
  transport: VoiceTransport,
  niceness: number,
): Promise<Background> {
  const worker = join(import.meta.dir, "loadgen-worker.ts");
  const count = Math.min(procs, n);
  const children = Array.from({ length: count }, (_, i) => {
    const share = Math.floor(n / count) + (i < n % count ? 1 : 0);
    const spec: LoadgenWorkerSpec = {
      node: addr,
      rooms: [{ id: "background-0", participants: share, talkers: i === 0 ? Math.min(3, share) : 0 }],
      durationSec: maxSec,
      warmupSec: 0,
      connections: "per-participant",
      localAddress: `127.0.0.${2 + i}`,
      silentMicrophones: true,
      // as bench/capacity measures its load (its default --vad on): frames flagged by voice activity
      voiceActivity: true,
      sessionOptions: { transport },
    };
    const cmd = [process.execPath, worker, JSON.stringify(spec)];
    const proc = Bun.spawn(niceness > 0 ? ["nice", "-n", String(niceness), ...cmd] : cmd, {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    });
    const events: LoadgenWorkerEvent[] = [];
    const done = (async () => {
      const reader = proc.stdout.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          events.push(JSON.parse(buf.slice(0, nl)) as LoadgenWorkerEvent);
          buf = buf.slice(nl + 1);
        }
      }
      await proc.exited;
    })();
    return { proc, events, done, share };
  });
  const has = (c: (typeof children)[number], e: string) => c.events.some((x) => x.event === e || x.event === "error");
  const deadline = Date.now() + (n / count) * 1000 + 120_000;
  while (!children.every((c) => has(c, "joined"))) {
    if (Date.now() > deadline) throw new Error("background participants did not join in time");
    await Bun.sleep(100);
  }
  for (const c of children) {
    c.proc.stdin.write("go\n");
    c.proc.stdin.flush();
  }
  let stopped: Promise<BackgroundFigures> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        for (const c of children) c.proc.stdin.end();
        await Promise.race([Promise.all(children.map((c) => c.done)), new Promise<void>((resolve) => setTimeout(resolve, 30_000).unref())]);
        for (const c of children) c.proc.kill();
        const reports = children.flatMap((c) => c.events.flatMap((e) => (e.event === "report" ? [e.report] : [])));
        const sum = (f: (r: LoadgenReport) => number) => reports.reduce((s, r) => s + f(r), 0);
        return {
          participants: n,
          joined: sum((r) => r.totals.joined),
          dueLossPercent: lossPercent(
            sum((r) => r.totals.framesDue),
            sum((r) => r.totals.framesReceived),
          ),
        };
      })();
      return stopped;
    },
  };
}

function report(
  direct: LoadgenReport,
  mixer: LoadgenReport,
  params: Record<string, number>,
  transport: VoiceTransport,
  mixerKind: string,
  skippedTicksDuringMixerRun: number | null,
  background?: BackgroundFigures,
): void {
  const d = direct.latencyMs;
  const m = mixer.latencyMs;
  const diff = (k: keyof LatencySummary) =>
    m[k] !== null && d[k] !== null ? Math.round(((m[k] as number) - (d[k] as number)) * 10) / 10 : null;
  const added = { p50: diff("p50"), p90: diff("p90"), p99: diff("p99") };
  const targets = { p50: 30, p99: 60 };
  const pass = added.p50 !== null && added.p99 !== null && added.p50 <= targets.p50 && added.p99 <= targets.p99;
  const fmt = (v: number | null) => (v === null ? "-" : v.toFixed(1).padStart(7));
  console.log(
    `mixer latency on loopback (${mixerKind === "binary" ? "the compiled node" : "in-process engine"}), voice by ${transport}: ${params.rooms} rooms × ${params.participants} participants, ${params.duration} s per path, engine jitter_min_ms ${params.jitterMinMs}, voice-activity flags ${params.vad ? "on" : "off"}${background ? `, background load ${background.joined}/${background.participants} participants at nice ${params.backgroundNice} (loss ${background.dueLossPercent} %)` : ""}`,
  );
  console.log("path          samples     p50     p90     p99     max   loss%");
  console.log(
    `direct (echo) ${String(d.samples).padStart(7)} ${fmt(d.p50)} ${fmt(d.p90)} ${fmt(d.p99)} ${fmt(d.max)} ${direct.totals.lossPercent.toFixed(2).padStart(7)}`,
  );
  console.log(
    `mixer         ${String(m.samples).padStart(7)} ${fmt(m.p50)} ${fmt(m.p90)} ${fmt(m.p99)} ${fmt(m.max)} ${mixer.totals.lossPercent.toFixed(2).padStart(7)}`,
  );
  for (const r of mixer.perRoom) {
    const l = r.latencyMs;
    console.log(
      `  ${r.room.padEnd(11)} ${String(l.samples).padStart(7)} ${fmt(l.p50)} ${fmt(l.p90)} ${fmt(l.p99)} ${fmt(l.max)} ${r.lossPercent.toFixed(2).padStart(7)}`,
    );
  }
  console.log(
    `added         ${"".padStart(7)} ${fmt(added.p50)} ${fmt(added.p90)} ${fmt(added.p99)}          (targets p50 ≤ ${targets.p50}, p99 ≤ ${targets.p99} ms: ${pass ? "PASS" : "FAIL"})`,
  );
  if (skippedTicksDuringMixerRun !== null)
    console.log(`mixer ticks skipped by the node during the mixer run: ${skippedTicksDuringMixerRun}`);
  console.log(
    JSON.stringify({
      bench: "mixer-latency",
      params,
      transport,
      mixer_process: mixerKind,
      skipped_ticks_during_mixer_run: skippedTicksDuringMixerRun,
      direct: { latencyMs: d, lossPercent: direct.totals.lossPercent, joined: direct.totals.joined },
      mixer: {
        latencyMs: m,
        lossPercent: mixer.totals.lossPercent,
        joined: mixer.totals.joined,
        unmatched: mixer.perRoom.reduce((n, r) => n + r.probesUnmatched, 0),
      },
      ...(background ? { background } : {}),
      addedMs: added,
      targetsMs: targets,
      pass,
    }),
  );
}

if (process.argv.includes("--serve")) await serve();
else await main();
