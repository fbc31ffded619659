/**
 * The dashboard's test-call page (/call), bundled for the browser at build time (assets.ts) and served from
 * the binary. It joins a room over the node's WebSocket listener with stock js-libp2p (websockets, noise,
 * yamux), sends the microphone as Opus (WebCodecs AudioEncoder, 48 kHz mono, 20 ms frames) and plays the
 * room's mix through an AudioWorklet jitter buffer (worklet.ts).
 *
 * Echo mode goes through the node, not around it: a second, hidden participant ("<name> (echo)") joins the
 * same room and what it receives, the node's mix of everyone else, which includes you, is played 1 s late.
 * A local loop of the microphone would sound the same while the node was down; this way an operator alone
 * hears their voice only if it went up the WebSocket, through the node's jitter buffer, mixer and encoder,
 * and back. (The mixer never returns your own voice on your own session: mix-minus.)
 *
 * For tests and the latency bench the page exposes `window.__agoraCall` (state, statistics, the received
 * audio, onsets of tone bursts in it, and a probe mode that sends bursts instead of the microphone).
 */
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { webSockets } from "@libp2p/websockets";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { AudioSession, RosterView } from "../../client/portable";
import { Capability, FRAME_SAMPLES } from "../../protocol";
import { chooseAddress } from "./address";

const RATE = 48_000;
const FRAME = 960;
/** Playout jitter buffer of the room's mix: start at 60 ms, trim beyond 200 ms. */
const PLAYOUT_TARGET_MS = 60;
const PLAYOUT_MAX_MS = 200;
const ECHO_DELAY_MS = 1000;
/** Kept of the received mix for `__agoraCall.received()`: 60 s. */
const RECORD_SAMPLES = 60 * RATE;
/** Speaking: a 20 ms frame above -45 dBFS, held for 300 ms. */
const SPEAKING_RMS = 10 ** (-45 / 20);
const SPEAKING_HOLD_MS = 300;
/** Onset detection as the loadgen's (protocol.md "Measuring latency"): 1 ms blocks, loud after quiet. */
const ONSET_BLOCK = 48;
const ONSET_RMS = 4000 / 32768;

interface CallInfo {
  peer_id: string;
  ws_addrs: string[];
  default_room: string;
}

interface Participant {
  id: string;
  name: string;
  speaking: boolean;
  self?: boolean;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const state = {
  phase: "idle" as "idle" | "connecting" | "joined" | "error" | "left",
  error: "",
  participantId: "",
  echoParticipantId: "",
  address: "",
  framesSent: 0,
  framesReceived: 0,
  framesDecoded: 0,
  decodeErrors: 0,
  encodeErrors: 0,
  echoFramesReceived: 0,
  /** echo frames that carried sound (above the speaking threshold): your voice came back through the node */
  echoLoudFrames: 0,
  rttMs: undefined as number | undefined,
  playout: {} as Record<string, { bufferedMs: number; underruns: number; dropped: number }>,
  participants: [] as Participant[],
  /** the node's ROSTER (1.1.0 with Capability.ROSTER): who is in the room, who speaks; undefined until one arrives */
  roster: undefined as { entries: { participantId: string; name: string; speaking: boolean }[]; total: number } | undefined,
  onsets: [] as number[],
  probeSentAt: [] as number[],
};

/** The last RECORD_SAMPLES of the decoded mix, as 16-bit samples (what the test analyses). */
const recording = new Int16Array(RECORD_SAMPLES);
let recorded = 0;

let node: Libp2p | undefined;
let main: AudioSession | undefined;
let echo: AudioSession | undefined;
let roster: RosterView | undefined;
/** seq and timestamp of our next AUDIO (random start, +1 and +960 per frame, as protocol.md asks) */
let txSeq = 0;
let txTimestamp = 0;
let ctx: AudioContext | undefined;
let mic: MediaStream | undefined;
let playout: AudioWorkletNode | undefined;
let encoder: AudioEncoder | undefined;
let pingTimer: ReturnType<typeof setInterval> | undefined;
let selfLoudAt = 0;
let mixLoudAt = 0;
let echoLoudAt = 0;
let probe: { periodFrames: number; frame: number } | undefined;
let onsetQuiet = 0;
let onsetQuietNeeded = Math.round(0.3 * RATE);

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function show(message: string, kind: "info" | "error" = "info"): void {
  const el = $("status");
  el.textContent = message;
  el.className = kind;
}

function fail(message: string): void {
  state.phase = "error";
  state.error = message;
  show(message, "error");
  render();
}

/** Why this browser cannot take part, or undefined. */
function missingFeature(): string | undefined {
  if (!window.isSecureContext)
    return 'The microphone and WebCodecs need a secure context: open the dashboard as http://127.0.0.1 or http://localhost (for a remote node, through an SSH tunnel: ssh -L <dashboard port>:127.0.0.1:<dashboard port> -L <ws port>:127.0.0.1:<ws port>), or over https behind a TLS reverse proxy (README, "wss").';
  if (!navigator.mediaDevices?.getUserMedia) return "This browser offers no microphone access (navigator.mediaDevices.getUserMedia).";
  if (typeof AudioEncoder === "undefined" || typeof AudioDecoder === "undefined")
    return "This browser has no WebCodecs audio (AudioEncoder/AudioDecoder): use Chromium 110+ or another browser with WebCodecs.";
  if (typeof AudioWorkletNode === "undefined") return "This browser has no AudioWorklet.";
  return undefined;
}

async function createNode(): Promise<Libp2p> {
  return createLibp2p({
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() },
    // A browser libp2p refuses private and loopback addresses by default; a node's dashboard is usually on one.
    connectionGater: { denyDialMultiaddr: () => false },
  });
}

function rmsOf(pcm: Float32Array): number {
  let s = 0;
  for (let i = 0; i < pcm.length; i++) s += pcm[i]! * pcm[i]!;
  return Math.sqrt(s / pcm.length);
}

/** 100 ms of 1 kHz at -6 dBFS, then silence, one period long (the loadgen's probe burst). */
function probeFrame(frameIndex: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(FRAME);
  if (frameIndex >= 5) return out;
  for (let i = 0; i < FRAME; i++) {
    const n = frameIndex * FRAME + i;
    out[i] = 0.5 * Math.sin((2 * Math.PI * 1000 * n) / RATE);
  }
  return out;
}

let captureTimestampUs = 0;
function onCaptured(frame: Float32Array<ArrayBuffer>): void {
  if (encoder?.state !== "configured" || !main?.isOpen) return;
  let pcm = frame;
  if (probe) {
    const k = probe.frame++ % probe.periodFrames;
    if (k === 0) {
      state.probeSentAt.push(epochMs());
      if (state.probeSentAt.length > 1000) state.probeSentAt.shift();
    }
    pcm = probeFrame(k);
  }
  if (rmsOf(pcm) > SPEAKING_RMS) selfLoudAt = performance.now();
  const data = new AudioData({
    format: "f32-planar",
    sampleRate: RATE,
    numberOfFrames: FRAME,
    numberOfChannels: 1,
    timestamp: captureTimestampUs,
    data: pcm,
  });
  captureTimestampUs += 20_000;
  encoder.encode(data);
  data.close();
}

function recordReceived(pcm: Float32Array): void {
  for (let i = 0; i < pcm.length; i++) {
    const v = Math.max(-1, Math.min(1, pcm[i]!));
    recording[recorded % RECORD_SAMPLES] = Math.round(v * 32767);
    recorded++;
  }
}

/** Onsets of tone bursts in the received mix, in epoch ms (arrival of the frame + the offset in it). */
function detectOnset(pcm: Float32Array, arrivedAtEpoch: number): void {
  for (let b = 0; b + ONSET_BLOCK <= pcm.length; b += ONSET_BLOCK) {
    let s = 0;
    for (let i = b; i < b + ONSET_BLOCK; i++) s += pcm[i]! * pcm[i]!;
    if (Math.sqrt(s / ONSET_BLOCK) > ONSET_RMS) {
      if (onsetQuiet >= onsetQuietNeeded) {
        state.onsets.push(arrivedAtEpoch + (b / RATE) * 1000);
        if (state.onsets.length > 1000) state.onsets.shift();
      }
      onsetQuiet = 0;
    } else onsetQuiet += ONSET_BLOCK;
  }
}

/** A WebCodecs decoder feeding one playout stream; `onPcm` sees every decoded frame with its arrival time. */
function streamDecoder(id: string, onPcm?: (pcm: Float32Array, arrivedAt: number) => void) {
  const arrivals = new Map<number, number>();
  const decoder = new AudioDecoder({
    output: (data) => {
      const pcm = new Float32Array(data.numberOfFrames);
      data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
      const arrivedAt = arrivals.get(data.timestamp) ?? epochMs();
      arrivals.delete(data.timestamp);
      data.close();
      onPcm?.(pcm, arrivedAt);
      playout?.port.postMessage({ kind: "pcm", id, pcm }, [pcm.buffer]);
    },
    error: (e) => {
      state.decodeErrors++;
      console.warn(`decoder ${id}: ${e.message}`);
    },
  });
  decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
  let ts = 0;
  return {
    decode(payload: Uint8Array, arrivedAt: number): void {
      if (decoder.state !== "configured") return;
      ts += 20_000;
      arrivals.set(ts, arrivedAt);
      if (arrivals.size > 100) arrivals.delete(arrivals.keys().next().value!);
      try {
        decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: ts, data: payload }));
      } catch {
        state.decodeErrors++;
      }
    },
    close(): void {
      if (decoder.state !== "closed") decoder.close();
    },
  };
}

let mainDecoder: ReturnType<typeof streamDecoder> | undefined;
let echoDecoder: ReturnType<typeof streamDecoder> | undefined;

async function join(): Promise<void> {
  const missing = missingFeature();
  if (missing) return fail(missing);
  const roomInput = $("room") as HTMLInputElement;
  const name = ($("name") as HTMLInputElement).value.trim() || "browser";
  const withEcho = ($("echo") as HTMLInputElement).checked;
  const processing = ($("processing") as HTMLInputElement).checked;
  state.phase = "connecting";
  state.error = "";
  render();
  show("Fetching the node's WebSocket address…");
  let info: CallInfo;
  try {
    const r = await fetch("/api/call", { headers: { accept: "application/json" } });
    if (!r.ok) return fail(`/api/call answered ${r.status}: ${(await r.text()).slice(0, 200)}`);
    info = (await r.json()) as CallInfo;
  } catch (e) {
    return fail(`cannot read /api/call: ${(e as Error).message}`);
  }
  // An empty field (Join clicked before the page had the node's default room) joins that default room.
  if (!roomInput.value.trim()) roomInput.value = info.default_room ?? "test-call";
  const room = roomInput.value.trim();
  const choice = chooseAddress(info.ws_addrs, location.protocol, location.hostname);
  if (!choice.addr) return fail(choice.why ?? "no address to dial");
  const target = choice.addr.includes("/p2p/") ? choice.addr : `${choice.addr}/p2p/${info.peer_id}`;
  state.address = target;
  try {
    show("Opening the microphone…");
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
    });
  } catch (e) {
    return fail(`no microphone: ${(e as Error).message} (allow the microphone for this page)`);
  }
  ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
  try {
    await ctx.audioWorklet.addModule("/call/worklet.js");
  } catch (e) {
    await teardown();
    return fail(`cannot load the playout worklet (/call/worklet.js): ${(e as Error).message}`);
  }
  playout = new AudioWorkletNode(ctx, "agora-playout", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
  playout.port.onmessage = (e) => {
    state.playout = e.data;
  };
  playout.connect(ctx.destination);
  playout.port.postMessage({ kind: "stream", id: "mix", targetMs: PLAYOUT_TARGET_MS, maxMs: PLAYOUT_MAX_MS });
  if (withEcho) playout.port.postMessage({ kind: "stream", id: "echo", targetMs: ECHO_DELAY_MS, maxMs: ECHO_DELAY_MS + PLAYOUT_MAX_MS });
  try {
    show(`Connecting to ${target}…`);
    node = await createNode();
    mainDecoder = streamDecoder("mix", (pcm, arrivedAt) => {
      state.framesDecoded++;
      if (rmsOf(pcm) > SPEAKING_RMS) mixLoudAt = performance.now();
      recordReceived(pcm);
      detectOnset(pcm, arrivedAt);
    });
    main = await AudioSession.open({
      libp2p: node,
      target: multiaddr(target),
      room,
      name,
      // The node's participant list with speaking flags (ROSTER), on a 1.1.0 session.
      capabilities: Capability.ROSTER,
      onAudio: (frame, receivedAt) => mainDecoder?.decode(frame.payload, performance.timeOrigin + receivedAt),
      onRoster: (m) => {
        const change = roster?.apply(m);
        if (change instanceof Error) {
          main?.abort(`bad ROSTER from the node: ${change.message}`);
          return;
        }
        if (roster)
          state.roster = {
            entries: roster.participants.map((p) => ({ participantId: p.id, name: p.name, speaking: p.speaking })),
            total: roster.total,
          };
      },
      // The node ended the session (an ERROR, a reset, the node stopping): release microphone and connection.
      onClose: (error) => {
        if (!error) return;
        void teardown();
        fail(`left the room: ${error.message}`);
      },
    });
    roster = new RosterView(main.joined.participantId);
    txSeq = (Math.random() * 0x1_0000_0000) >>> 0;
    txTimestamp = (Math.random() * 0x1_0000_0000) >>> 0;
    state.participantId = main.joined.participantId;
    if (withEcho) {
      echoDecoder = streamDecoder("echo", (pcm) => {
        if (rmsOf(pcm) <= SPEAKING_RMS) return;
        state.echoLoudFrames++;
        echoLoudAt = performance.now();
      });
      echo = await AudioSession.open({
        libp2p: node,
        target: multiaddr(target),
        room,
        name: `${name.slice(0, 50)} (echo)`,
        onAudio: (frame, receivedAt) => {
          state.echoFramesReceived++;
          echoDecoder?.decode(frame.payload, performance.timeOrigin + receivedAt);
        },
      });
      state.echoParticipantId = echo.joined.participantId;
    }
  } catch (e) {
    await teardown();
    return fail(
      `Could not join room "${room}" through ${target}: ${(e as Error).message}. The node's WebSocket listener must be reachable from this browser: it binds network.ws_listen_addr (127.0.0.1 unless network.ws_allow_insecure_public), so a dashboard reached through a tunnel or proxy needs the WebSocket port forwarded too.`,
    );
  }
  encoder = new AudioEncoder({
    output: (chunk) => {
      // The protocol carries 20 ms packets only; a packet of another length is not sent (and counted).
      if (chunk.duration && chunk.duration !== 20_000) {
        state.encodeErrors++;
        return;
      }
      const bytes = new Uint8Array(chunk.byteLength);
      chunk.copyTo(bytes);
      // A frame the send queue drops still takes its number: the node sees the gap as loss.
      main?.sendAudio({ seq: txSeq, timestamp: txTimestamp, payload: bytes });
      txSeq = (txSeq + 1) >>> 0;
      txTimestamp = (txTimestamp + FRAME_SAMPLES) >>> 0;
    },
    error: (e) => {
      state.encodeErrors++;
      console.warn(`encoder: ${e.message}`);
    },
  });
  const config: AudioEncoderConfig = {
    codec: "opus",
    sampleRate: RATE,
    numberOfChannels: 1,
    bitrate: main!.joined.bitrate || 32_000,
    // 20 ms frames, as the protocol requires: Chromium's default of the durations it offers (2.5, 5, 10, 20, 40
    // and 60 ms; media/audio/audio_opus_encoder.cc), set explicitly so a changed default cannot break the wire.
    opus: { frameDuration: 20_000, format: "opus" },
  } as AudioEncoderConfig;
  const support = await AudioEncoder.isConfigSupported(config);
  if (!support.supported) {
    await teardown();
    return fail("this browser's WebCodecs cannot encode Opus at 48 kHz mono with 20 ms frames");
  }
  encoder.configure(config);
  const capture = new AudioWorkletNode(ctx, "agora-capture", { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1 });
  capture.port.onmessage = (e) => onCaptured(e.data as Float32Array<ArrayBuffer>);
  ctx.createMediaStreamSource(mic).connect(capture);
  pingTimer = setInterval(() => {
    main?.ping();
    echo?.ping();
  }, 2_000);
  state.phase = "joined";
  show(
    `In room "${room}" as ${state.participantId} via ${target}${withEcho ? "; echo on: you hear yourself 1 s later, through the node" : ""}.`,
  );
  render();
}

async function teardown(): Promise<void> {
  clearInterval(pingTimer);
  await Promise.allSettled([main?.leave(), echo?.leave()]);
  main = echo = undefined;
  roster = undefined;
  state.participantId = state.echoParticipantId = "";
  state.roster = undefined;
  if (encoder && encoder.state !== "closed") encoder.close();
  encoder = undefined;
  mainDecoder?.close();
  echoDecoder?.close();
  mainDecoder = echoDecoder = undefined;
  for (const t of mic?.getTracks() ?? []) t.stop();
  mic = undefined;
  await ctx?.close().catch(() => undefined);
  ctx = undefined;
  playout = undefined;
  await Promise.resolve(node?.stop()).catch(() => undefined);
  node = undefined;
}

async function leave(): Promise<void> {
  await teardown();
  state.phase = "left";
  show("Left the room.");
  render();
}

/**
 * The participant list: the node's ROSTER when it sends one (speaking = the mixer's talk detection), else
 * (a node without ROSTER) what the page knows itself: you, the echo participant, and the mix.
 */
function participants(): Participant[] {
  const now = performance.now();
  const you = `${($("name") as HTMLInputElement).value || "browser"} (you)`;
  const selfSpeaking = now - selfLoudAt < SPEAKING_HOLD_MS;
  // The echo participant never sends; it is "speaking" while what it plays back (1 s later) carries sound.
  const echoPlaying = now - echoLoudAt < ECHO_DELAY_MS + SPEAKING_HOLD_MS && now - echoLoudAt > 0;
  if (state.roster && state.participantId) {
    const list = state.roster.entries.map((e) => {
      const self = e.participantId === state.participantId;
      const echoing = e.participantId === state.echoParticipantId;
      return {
        id: e.participantId,
        name: self ? you : echoing ? "echo (plays the room back 1 s late)" : e.name || e.participantId,
        speaking: e.speaking || (self && selfSpeaking) || (echoing && echoPlaying),
        self,
      };
    });
    const more = state.roster.total - state.roster.entries.length;
    if (more > 0) list.push({ id: "more", name: `… and ${more} more`, speaking: false, self: false });
    return list;
  }
  const list: Participant[] = [];
  if (state.participantId) list.push({ id: state.participantId, name: you, speaking: selfSpeaking, self: true });
  if (state.echoParticipantId)
    list.push({ id: state.echoParticipantId, name: "echo (plays the room back 1 s late)", speaking: echoPlaying });
  if (state.participantId) list.push({ id: "mix", name: "everyone else (the node's mix)", speaking: now - mixLoudAt < SPEAKING_HOLD_MS });
  return list;
}

function render(): void {
  state.participants = participants();
  state.rttMs = main?.rttMs;
  state.framesSent = main?.framesSent ?? state.framesSent;
  state.framesReceived = main?.framesReceived ?? state.framesReceived;
  const ul = $("participants");
  ul.replaceChildren(
    ...state.participants.map((p) => {
      const li = document.createElement("li");
      li.className = p.speaking ? "speaking" : "";
      li.textContent = `${p.speaking ? "● " : "○ "}${p.name}`;
      li.title = p.id;
      return li;
    }),
  );
  const mix = state.playout.mix;
  $("stats").textContent = [
    `sent ${state.framesSent} frames, received ${state.framesReceived}, decoded ${state.framesDecoded}`,
    state.rttMs === undefined ? "" : `rtt ${state.rttMs.toFixed(1)} ms`,
    mix ? `playout ${mix.bufferedMs.toFixed(0)} ms buffered, ${mix.underruns} underruns` : "",
    state.decodeErrors + state.encodeErrors > 0 ? `codec errors ${state.decodeErrors + state.encodeErrors}` : "",
  ]
    .filter(Boolean)
    .join(" · ");
  ($("join") as HTMLButtonElement).disabled = state.phase === "connecting" || state.phase === "joined";
  ($("leave") as HTMLButtonElement).disabled = state.phase !== "joined";
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const hook = {
  state,
  join,
  leave,
  /** The received mix so far (at most the last 60 s) as base64 of 16-bit little-endian samples. */
  received(): string {
    const n = Math.min(recorded, RECORD_SAMPLES);
    const out = new Int16Array(n);
    const start = recorded - n;
    for (let i = 0; i < n; i++) out[i] = recording[(start + i) % RECORD_SAMPLES]!;
    return base64(new Uint8Array(out.buffer));
  },
  /** Sends 100 ms bursts every `periodMs` instead of the microphone (latency probes). */
  startProbe(periodMs: number): void {
    probe = { periodFrames: Math.round(periodMs / 20), frame: 0 };
    onsetQuietNeeded = Math.round((((periodMs - 100) / 2) * RATE) / 1000);
  },
  /** Onset detection of received bursts, with the quiet needed before one (half the gap between bursts). */
  expectProbes(periodMs: number): void {
    onsetQuietNeeded = Math.round((((periodMs - 100) / 2) * RATE) / 1000);
  },
};
(window as unknown as { __agoraCall: typeof hook }).__agoraCall = hook;

function init(): void {
  const params = new URLSearchParams(location.search);
  // The room named in the address is set at once: a Join clicked before /api/call answers (a busy machine)
  // joined room "" and failed. Only the node's default room waits for that answer.
  const roomInput = $("room") as HTMLInputElement;
  if (!roomInput.value && params.get("room")) roomInput.value = params.get("room")!;
  fetch("/api/call")
    .then((r) => (r.ok ? (r.json() as Promise<CallInfo>) : undefined))
    .then((info) => {
      if (!roomInput.value) roomInput.value = info?.default_room ?? "test-call";
      const choice = info ? chooseAddress(info.ws_addrs, location.protocol, location.hostname) : { why: "cannot read /api/call" };
      if (choice.why) show(choice.why, "error");
      else show(missingFeature() ?? `Ready to join through ${choice.addr}.`, missingFeature() ? "error" : "info");
    })
    .catch((e) => show(`cannot read /api/call: ${(e as Error).message}`, "error"));
  if (params.get("name")) ($("name") as HTMLInputElement).value = params.get("name")!;
  if (params.get("echo")) ($("echo") as HTMLInputElement).checked = params.get("echo") === "1";
  if (params.get("processing") === "0") ($("processing") as HTMLInputElement).checked = false;
  $("join").addEventListener("click", () => void join());
  $("leave").addEventListener("click", () => void leave());
  setInterval(render, 250);
  render();
}

init();
