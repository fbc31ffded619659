/**
 * The media worker (a Bun Worker; also an entrypoint of the compiled executable). It owns the wasm core
 * and a drift-free 20 ms clock. Each tick it drains the inbound ring into the rooms' jitter buffers,
 * runs every room's mixer, writes the encoded frames into the outbound ring and posts ONE small report
 * (which is also the control thread's cue to drain the ring). The rooms run in slices of about 0.5 ms with
 * the event loop between them, so voice datagrams, which this thread receives, are timestamped when they
 * arrive and not after the whole tick (tick-slices.ts). A shared heartbeat counter lets the
 * control thread detect a hung worker without relying on message delivery.
 *
 * Any exception escaping a tick is fatal on purpose: after a wasm trap the core's memory may be
 * inconsistent, so the engine's supervisor restarts a fresh worker and restores the rooms.
 */
import { errorMessage } from "../errors";
import { type CoreRoom, MediaCore } from "./core";
import { WorkerDatagramIO } from "./datagram-io";
import { type InboundRecord, RingReader, RingWriter, readInbound, writeOutbound } from "./rings";
import { runSliced, type SliceClock } from "./tick-slices";
import type { CrashMode, FromWorker, RestoreRoom, ToWorker, WorkerRoomStats, WorkerSettings } from "./worker-protocol";

declare const self: Worker;

const TICK_MS = 20;
/** Ticks run back to back at most when late; beyond that the clock jumps ahead (and counts it). */
const MAX_CATCHUP = 3;
/** Frames for a participant whose join message has not arrived yet wait this many ticks. */
const PENDING_TICKS = 50;
const PENDING_MAX = 4096;

interface WRoom {
  handle: number;
  core: CoreRoom;
  seq: number;
  concealed: number;
  late: number;
  decodes: number;
  undecoded: number;
  participants: Set<number>;
}
interface WPart {
  room: WRoom;
  slot: number;
}
interface Pending {
  rec: InboundRecord;
  payload: Uint8Array;
  tick: number;
}

let core: MediaCore | undefined;
let inbound: RingReader | undefined;
let outbound: RingWriter | undefined;
let heartbeat: Int32Array | undefined;
let settings: WorkerSettings | undefined;
let testHooks = false;
const rooms = new Map<number, WRoom>();
const parts = new Map<number, WPart>();
/** Highest participant handle ever joined: larger unknown handles are joins still in flight. */
let maxJoined = 0;
let pending: Pending[] = [];
let stopped = false;
let timer: ReturnType<typeof setTimeout> | undefined;
let origin = 0;
let ticksDone = 0;
const emptyReport = () => ({
  concealed: 0,
  late: 0,
  delivered: 0,
  outboundDropped: 0,
  unknownDropped: 0,
  skipped: 0,
  decodes: 0,
  undecoded: 0,
  datagramsDelivered: 0,
});
let report = emptyReport();
/** Voice datagrams, when the engine gave this worker a UDP socket (datagram-io.ts). */
let dgram: WorkerDatagramIO | undefined;
/** Recipients of one output that get it by stream (the rest got a datagram). */
let streamRecipients = new Uint32Array(256);
const KEEPALIVE_EVERY_TICKS = 5;
const scratchRec: InboundRecord = { room: 0, participant: 0, seq: 0, ts: 0, arrivalMs: 0, flags: 0, payloadOffset: 0, payloadLength: 0 };

function post(m: FromWorker): void {
  self.postMessage(m);
}

function log(level: "debug" | "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>): void {
  post({ t: "log", level, msg, fields });
}

function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

function roomConfig(s: WorkerSettings) {
  return {
    topK: s.topK,
    sharedEncode: s.sharedEncode,
    bitrate: s.bitrate,
    complexity: s.complexity,
    jitterMinMs: s.jitterMinMs,
    jitterMaxMs: s.jitterMaxMs,
    fec: s.fec,
  };
}

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`media worker: ${what} used before init`);
  return v;
}

function createRoom(handle: number, seqBase: number): WRoom {
  const existing = rooms.get(handle);
  if (existing) return existing;
  const r: WRoom = {
    handle,
    core: need(core, "core").createRoom(roomConfig(need(settings, "settings"))),
    seq: seqBase >>> 0,
    concealed: 0,
    late: 0,
    decodes: 0,
    undecoded: 0,
    participants: new Set(),
  };
  rooms.set(handle, r);
  return r;
}

function removeRoom(handle: number): void {
  const r = rooms.get(handle);
  if (!r) return;
  for (const p of r.participants) parts.delete(p);
  r.core.destroy();
  rooms.delete(handle);
}

function join(roomHandle: number, participant: number): void {
  const r = rooms.get(roomHandle) ?? createRoom(roomHandle, 0);
  if (parts.has(participant)) return;
  const slot = r.core.add(participant);
  parts.set(participant, { room: r, slot });
  r.participants.add(participant);
  if (participant > maxJoined) maxJoined = participant;
  // Frames that overtook this join in the ring.
  if (pending.length > 0) {
    const rest: Pending[] = [];
    for (const p of pending) {
      if (p.rec.participant === participant) {
        r.core.push(slot, p.rec.seq, p.rec.ts, p.rec.arrivalMs, p.payload, p.rec.flags);
      } else {
        rest.push(p);
      }
    }
    pending = rest;
  }
}

function leave(participant: number): void {
  const p = parts.get(participant);
  if (!p) return;
  p.room.core.remove(p.slot);
  p.room.participants.delete(participant);
  parts.delete(participant);
  dgram?.setCanSpeak(participant, true);
}

function drainInbound(): void {
  const ring = need(inbound, "inbound ring");
  const rec = scratchRec;
  for (;;) {
    const off = ring.next();
    if (off < 0) break;
    readInbound(ring, off, rec);
    const payload = ring.bytes.subarray(rec.payloadOffset, rec.payloadOffset + rec.payloadLength);
    const p = parts.get(rec.participant);
    if (p) {
      // Late, duplicate and invalid packets are counted per participant by the core.
      p.room.core.push(p.slot, rec.seq, rec.ts, rec.arrivalMs, payload, rec.flags);
    } else if (rec.participant > maxJoined && pending.length < PENDING_MAX) {
      pending.push({ rec: { ...rec }, payload: payload.slice(), tick: ticksDone });
    } else {
      report.unknownDropped++;
    }
    ring.release();
  }
  if (pending.length > 0) {
    const before = pending.length;
    pending = pending.filter((p) => ticksDone - p.tick < PENDING_TICKS);
    report.unknownDropped += before - pending.length;
  }
}

/** An authenticated datagram's frame, straight into the participant's jitter buffer. */
function pushFromDatagram(participant: number, seq: number, ts: number, payload: Uint8Array, vadFlags: number): boolean {
  const p = parts.get(participant);
  if (!p) return false;
  p.room.core.push(p.slot, seq, ts, nowEpochMs(), payload, vadFlags);
  return true;
}

/** One output to its recipients: datagrams sealed per recipient, the rest (and dual sends) into the ring. */
function deliver(out: RingWriter, r: WRoom, ts: number, data: Uint8Array, recipients: Uint32Array, perfNow: number): void {
  if (!dgram) {
    const written = writeOutbound(out, r.handle, r.seq, ts, data, recipients);
    report.delivered += written;
    report.outboundDropped += recipients.length - written;
    return;
  }
  if (streamRecipients.length < recipients.length) streamRecipients = new Uint32Array(recipients.length * 2);
  let n = 0;
  for (let i = 0; i < recipients.length; i++) {
    const h = recipients[i]!;
    if (dgram.route(h, r.seq, ts, data, perfNow)) streamRecipients[n++] = h;
  }
  report.datagramsDelivered = (report.datagramsDelivered ?? 0) + recipients.length - n;
  if (n === 0) return;
  const list = streamRecipients.subarray(0, n);
  const written = writeOutbound(out, r.handle, r.seq, ts, data, list);
  report.delivered += written;
  report.outboundDropped += n - written;
}

/** One room's 20 ms of mixing: its outputs delivered, its counters into the report. */
function tickRoom(out: RingWriter, r: WRoom, perfNow: number): void {
  const n = r.core.tick(nowEpochMs());
  const ts = Math.imul(r.seq, 960) >>> 0;
  for (let i = 0; i < n; i++) {
    const o = r.core.output(i);
    deliver(out, r, ts, o.data, o.recipients, perfNow);
  }
  r.seq = (r.seq + 1) >>> 0;
  const c = r.core.counters();
  report.concealed += c.concealed - r.concealed;
  report.late += c.late - r.late;
  r.concealed = c.concealed;
  report.decodes += c.decodes - r.decodes;
  report.undecoded += c.skipped - r.undecoded;
  r.decodes = c.decodes;
  r.undecoded = c.skipped;
  r.late = c.late;
}

/**
 * A tick returns the thread to the event loop whenever it has worked this long, between two rooms, so a
 * datagram arriving meanwhile is received and timestamped within about this long (tick-slices.ts).
 */
const SLICE_MS = 0.5;
const sliceClock: SliceClock = { now: () => performance.now(), defer: (f) => setImmediate(f) };
/** Ticks run since the timer last fired (the catch-up after a late timer), and their durations. */
let ranThisWake = 0;
let durations: number[] = [];

function tickFailed(err: unknown): never {
  log("error", "mixer tick failed; the media worker stops and will be restarted", { err: errorMessage(err) });
  throw err;
}

function beginTick(): void {
  const t0 = performance.now();
  try {
    drainInbound();
  } catch (err) {
    tickFailed(err);
  }
  // Idle ticks (no room) still drain the inbound ring but are not reported: they would only dilute the
  // tick-duration histogram and cost a message every 20 ms.
  const busy = rooms.size > 0;
  const out = need(outbound, "outbound ring");
  runSliced<WRoom>(
    {
      items: [...rooms.values()],
      live: (r) => rooms.get(r.handle) === r,
      run: (r) => {
        try {
          tickRoom(out, r, performance.now());
        } catch (err) {
          tickFailed(err);
        }
      },
      beforeYield: () => dgram?.flush(),
      finish: () => {
        if (!dgram) return;
        if (ticksDone % KEEPALIVE_EVERY_TICKS === 0) dgram.keepalives(performance.now());
        dgram.flush();
        const stun = dgram.takeStun();
        if (stun) post({ t: "udpStun", packets: stun });
      },
      done: (workMs) => {
        if (busy) durations.push(workMs / 1000);
        ticksDone++;
        ranThisWake++;
        afterTick();
      },
      cancelled: () => stopped,
    },
    sliceClock,
    SLICE_MS,
    performance.now() - t0,
  );
}

/** Another tick when one is due (catching up at most MAX_CATCHUP), else the report and the timer. */
function afterTick(): void {
  if (stopped) return;
  if (origin + (ticksDone + 1) * TICK_MS <= performance.now() && ranThisWake <= MAX_CATCHUP) {
    beginTick();
    return;
  }
  if (heartbeat) Atomics.store(heartbeat, 0, ticksDone | 0);
  if (durations.length > 0 || report.unknownDropped > 0) {
    post({ t: "tick", tickSeconds: durations, ...report });
    report = emptyReport();
    durations = [];
  }
  const next = origin + (ticksDone + 1) * TICK_MS;
  timer = setTimeout(loop, Math.max(0, next - performance.now()));
}

function loop(): void {
  if (stopped) return;
  const behind = Math.floor((performance.now() - (origin + (ticksDone + 1) * TICK_MS)) / TICK_MS);
  if (behind > MAX_CATCHUP) {
    // Far behind (the machine stalled): running every missed tick would only add latency.
    ticksDone += behind - MAX_CATCHUP;
    report.skipped += behind - MAX_CATCHUP;
  }
  ranThisWake = 0;
  afterTick();
}

function statsSnapshot(): WorkerRoomStats[] {
  const out: WorkerRoomStats[] = [];
  for (const r of rooms.values()) {
    const participants = [];
    for (const handle of r.participants) {
      const p = parts.get(handle);
      const s = p ? r.core.stats(p.slot) : null;
      if (s) participants.push({ participant: handle, ...s });
    }
    out.push({ room: r.handle, counters: r.core.counters(), participants });
  }
  return out;
}

function applySettings(s: WorkerSettings): void {
  settings = s;
  for (const r of rooms.values()) r.core.configure(roomConfig(s));
}

/** Starts the worker; its port for voice datagrams when it was given a socket to bind. */
async function init(m: Extract<ToWorker, { t: "init" }>): Promise<number | undefined> {
  core = await MediaCore.create(m.module);
  if (m.datagrams) {
    dgram = new WorkerDatagramIO(pushFromDatagram);
    await dgram.bind(m.datagrams);
  }
  inbound = new RingReader(m.inbound);
  outbound = new RingWriter(m.outbound);
  heartbeat = new Int32Array(m.heartbeat);
  settings = m.settings;
  testHooks = m.testHooks;
  restore(m.rooms);
  for (const u of m.udpSessions ?? []) dgram?.install(u);
  origin = performance.now();
  ticksDone = 0;
  timer = setTimeout(loop, TICK_MS);
  return dgram?.port;
}

function restore(list: RestoreRoom[]): void {
  for (const r of list) {
    createRoom(r.room, r.seqBase);
    for (const p of r.participants) join(r.room, p);
    const c = r.controls;
    if (!c) continue;
    for (const p of c.listenOnly) setCanSpeak(p, false);
    for (const g of c.gains) setMixGains(g.participant, g.gains);
    if (c.priority) setPriority(r.room, c.priority.participant, c.priority.duckGain);
  }
}

function setCanSpeak(participant: number, canSpeak: boolean): void {
  const p = parts.get(participant);
  if (p) p.room.core.setCanSpeak(p.slot, canSpeak);
  // its datagrams too: dropped before they reach the core (the stream path drops them on the control thread)
  if (p) dgram?.setCanSpeak(participant, canSpeak);
}

/** Replaces the listener's gains; sources that are not (or no longer) in its room are skipped. */
function setMixGains(participant: number, gains: Array<[number, number]>): void {
  const p = parts.get(participant);
  if (!p) return;
  p.room.core.clearGains(p.slot);
  for (const [source, gain] of gains) {
    const s = parts.get(source);
    if (s && s.room === p.room && s.slot !== p.slot) p.room.core.setGain(p.slot, s.slot, gain);
  }
}

function setPriority(roomHandle: number, participant: number, duckGain: number): void {
  const r = rooms.get(roomHandle);
  if (!r) return;
  const p = participant ? parts.get(participant) : undefined;
  r.core.setPriority(p && p.room === r ? p.slot : -1, duckGain);
}

function crash(mode: CrashMode): void {
  if (!testHooks) throw new Error("crash test hook is disabled (enable testHooks / AGORA_MEDIA_TEST_HOOKS=1)");
  switch (mode) {
    case "throw":
      setTimeout(() => {
        throw new Error("media worker crash requested by the test hook");
      }, 0);
      return;
    case "exit":
      setTimeout(() => process.exit(70), 0);
      return;
    case "hang":
      setTimeout(() => {
        const until = Number.POSITIVE_INFINITY;
        while (performance.now() < until) {
          /* spin: the heartbeat stops, the supervisor must notice */
        }
      }, 0);
      return;
    case "stall":
      setTimeout(() => {
        // As a loaded machine would: the mixer falls 20 ticks behind once, then skips what it cannot catch up.
        const until = performance.now() + 400;
        while (performance.now() < until) {
          /* spin */
        }
      }, 0);
      return;
  }
}

function handle(m: ToWorker): unknown {
  switch (m.t) {
    case "init":
      return undefined; // handled in onmessage
    case "createRoom":
      createRoom(m.room, m.seqBase);
      return undefined;
    case "removeRoom":
      removeRoom(m.room);
      return undefined;
    case "join":
      join(m.room, m.participant);
      return undefined;
    case "leave":
      leave(m.participant);
      return undefined;
    case "settings":
      applySettings(m.settings);
      return undefined;
    case "canSpeak":
      setCanSpeak(m.participant, m.canSpeak);
      return undefined;
    case "mixGains":
      setMixGains(m.participant, m.gains);
      return undefined;
    case "priority":
      setPriority(m.room, m.participant, m.duckGain);
      return undefined;
    case "stats":
      return statsSnapshot();
    case "udpInstall":
      need(dgram, "datagram socket").install(m.session);
      return undefined;
    case "udpRemove":
      dgram?.remove(m.sessionId);
      return undefined;
    case "udpSend":
      need(dgram, "datagram socket").sendRaw(m.packets);
      return undefined;
    case "udpSync": {
      const d = need(dgram, "datagram socket");
      for (const [sessionId, received] of m.reports) d.report(sessionId, received);
      return d.sync();
    }
    case "crash":
      crash(m.mode);
      return undefined;
    case "stop":
      stopped = true;
      if (timer) clearTimeout(timer);
      for (const h of [...rooms.keys()]) removeRoom(h);
      dgram?.close();
      return undefined;
  }
}

let ready: Promise<void> = Promise.resolve();

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  if (m.t === "init") {
    ready = init(m).then(
      (udpPort) => post({ t: "reply", id: m.id, ok: true, result: udpPort }),
      (err: unknown) => {
        post({ t: "reply", id: m.id, ok: false, error: errorMessage(err) });
        throw err;
      },
    );
    return;
  }
  void ready.then(() => {
    try {
      const result = handle(m);
      post({ t: "reply", id: m.id, ok: true, result });
    } catch (err) {
      post({ t: "reply", id: m.id, ok: false, error: errorMessage(err) });
    }
  });
};
