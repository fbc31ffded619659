/**
 * WorkerMediaEngine: the control-plane side of the media plane. It owns the authoritative list of rooms,
 * participants and sinks; the media worker (worker.ts) owns the wasm core and the 20 ms clock.
 *
 *  - Audio crosses in bulk through two SharedArrayBuffer rings (rings.ts): pushFrame() appends to the
 *    inbound ring; each worker tick report triggers one drain of the outbound ring, which calls the
 *    participants' sinks. A frame of the shared mix is ONE AudioFrame object handed to every listener
 *    of that mix: sinks must treat frames as read-only.
 *  - Control messages (rooms, joins, settings, stats) are id-tagged requests with replies. join() and
 *    leave() are synchronous for callers: they update the engine's state at once and tell the worker
 *    asynchronously; frames that overtake a join in the ring are held by the worker until it arrives.
 *  - Supervision: a worker that reports an error, exits, or stops advancing its shared heartbeat
 *    counter is terminated and replaced; every room and participant (same ids, same sinks) is restored
 *    in the new worker's init message, and each room's sequence numbers continue where they stopped.
 *  - rooms() is synchronous: it answers from a stats snapshot polled from the worker every second.
 */
import { readdirSync } from "node:fs";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { loadCoreModule, MAX_PACKET, MAX_TOP_K } from "./core";
import { mediaMetrics, type DropReason, type MediaMetrics } from "./metrics";
import { createRingBuffer, readOutbound, RingReader, RingWriter, writeInbound } from "./rings";
import type { AudioFrame, FrameSink, MediaEngine, MediaEngineOptions, MediaSettings, ParticipantStats, RoomStats } from "./types";
import type {
  CrashMode,
  FromWorker,
  RestoreRoom,
  TickReport,
  ToWorker,
  ToWorkerRequest,
  WorkerParticipantStats,
  WorkerRoomStats,
  WorkerSettings,
} from "./worker-protocol";

export interface WorkerMediaEngineOptions extends MediaEngineOptions {
  /** Opus encoder complexity 0..10 of the mixes (default 10, libopus's default). */
  complexity?: number;
  /** In-band FEC on the frames we send (default off: libp2p streams are reliable, FEC would cost bits). */
  outputFec?: boolean;
  /** Enables crashWorker() for tests. Also enabled by the environment variable AGORA_MEDIA_TEST_HOOKS=1. */
  testHooks?: boolean;
  /** A worker whose heartbeat has not advanced for this long is declared hung (default 600 ms). */
  heartbeatTimeoutMs?: number;
  /** Stats poll period (default 1000 ms). */
  statsIntervalMs?: number;
  /** Capacity of each audio ring in bytes, a power of two (default 4 MiB). */
  ringBytes?: number;
  /** Worker entry override (default: src/audio/worker.ts, or its copy inside a compiled executable). */
  workerUrl?: string | URL;
}

interface PartEntry {
  id: string;
  handle: number;
  room: RoomEntry;
  sink: FrameSink;
  packetsIn: number;
  packetsOut: number;
  /** Worker-side counters of previous worker generations (they restart from zero after a restart). */
  baseConcealed: number;
  baseLate: number;
  last?: WorkerParticipantStats;
  sinkErrors: number;
}

interface RoomEntry {
  id: string;
  handle: number;
  createdAt: number;
  participants: Map<string, PartEntry>;
  /** Sequence number of the last frame drained for this room, and when (for restarts). */
  lastSeq: number;
  lastSeqAt: number;
  seqBase: number;
}

interface PendingRequest {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type State = "idle" | "starting" | "running" | "stopping" | "stopped";

const TICK_MS = 20;
const DEFAULT_RING_BYTES = 4 * 1024 * 1024;
const INIT_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 5_000;
const WATCHDOG_PERIOD_MS = 100;
/** A worker that dies within this long after its start counts as a crash loop: back off. */
const CRASH_LOOP_WINDOW_MS = 5_000;
const MAX_BACKOFF_MS = 5_000;

function validateSettings(s: MediaSettings): void {
  const bad = (what: string): never => {
    throw new AgoraError("MEDIA_ENGINE", `invalid media setting ${what}`);
  };
  const int = (v: number, lo: number, hi: number, name: string): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) bad(`${name}=${v} (expected an integer in ${lo}..${hi})`);
  };
  int(s.topKSpeakers, 1, MAX_TOP_K, "topKSpeakers");
  int(s.bitrate, 6000, 510000, "bitrate");
  int(s.jitterMinMs, 0, 1000, "jitterMinMs");
  int(s.jitterMaxMs, 20, 2000, "jitterMaxMs");
  if (s.jitterMaxMs < s.jitterMinMs) bad(`jitterMaxMs=${s.jitterMaxMs} is below jitterMinMs=${s.jitterMinMs}`);
  int(s.maxRooms, 0, 1_000_000, "maxRooms");
  int(s.maxParticipants, 0, 10_000_000, "maxParticipants");
  if (typeof s.sharedEncode !== "boolean") bad(`sharedEncode=${String(s.sharedEncode)} (expected a boolean)`);
}

/** Where the worker entry is: next to this file under bun run/test; inside a compiled executable, the
 * copy `bun build --compile … src/audio/worker.ts` embedded (…/audio/worker.js in the /$bunfs tree).
 * The environment variable AGORA_MEDIA_WORKER overrides both (a path or URL). */
export function resolveWorkerUrl(): string {
  const override = process.env.AGORA_MEDIA_WORKER;
  if (override) return override;
  if (!import.meta.url.includes("/$bunfs/")) return new URL("./worker.ts", import.meta.url).href;
  const root = "/$bunfs/root";
  let found: string | undefined;
  try {
    const entries = readdirSync(root, { recursive: true }) as string[];
    for (const e of entries) {
      const p = e.replaceAll("\\", "/");
      if (p === "audio/worker.js" || p.endsWith("/audio/worker.js")) {
        if (!found || p.length < found.length) found = p;
      }
    }
  } catch {
    /* fall through to the error below */
  }
  if (!found) {
    throw new AgoraError(
      "MEDIA_ENGINE",
      "the media worker is not embedded in this executable: build it with `bun build --compile src/main.ts src/audio/worker.ts`",
    );
  }
  return `${root}/${found}`;
}

export class WorkerMediaEngine implements MediaEngine {
  private settings: MediaSettings;
  private readonly log: Logger;
  private readonly metrics: MediaMetrics;
  private readonly opts: WorkerMediaEngineOptions;
  private readonly testHooks: boolean;
  private readonly heartbeatTimeoutMs: number;
  private readonly ringBytes: number;

  private state: State = "idle";
  private worker?: Worker;
  private generation = 0;
  private inWriter?: RingWriter;
  private outReader?: RingReader;
  private heartbeat?: Int32Array;
  private beat = { value: -1, at: 0 };
  private workerStartedAt = 0;
  private restarting = false;
  private crashStreak = 0;
  private module?: WebAssembly.Module;
  private workerUrl?: string | URL;
  private nextId = 1;
  private readonly pending = new Map<number, PendingRequest>();
  private watchdog?: ReturnType<typeof setInterval>;
  private statsTimer?: ReturnType<typeof setInterval>;
  private statsInFlight = false;
  private removeRoomSource?: () => void;

  private readonly roomsById = new Map<string, RoomEntry>();
  private readonly roomsByHandle = new Map<number, RoomEntry>();
  private readonly partsByHandle = new Map<number, PartEntry>();
  private nextRoomHandle = 1;
  private nextPartHandle = 1;
  private participants = 0;
  private restartCount = 0;
  private pendingIn = 0;
  private lastRingWarn = 0;

  constructor(opts: WorkerMediaEngineOptions) {
    validateSettings(opts.settings);
    this.opts = opts;
    this.settings = { ...opts.settings };
    this.log = opts.logger;
    this.metrics = mediaMetrics(opts.registry);
    this.testHooks = opts.testHooks ?? process.env.AGORA_MEDIA_TEST_HOOKS === "1";
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 600;
    this.ringBytes = opts.ringBytes ?? DEFAULT_RING_BYTES;
    if (opts.complexity !== undefined && (!Number.isInteger(opts.complexity) || opts.complexity < 0 || opts.complexity > 10)) {
      throw new AgoraError("MEDIA_ENGINE", `invalid Opus complexity ${opts.complexity} (0..10)`);
    }
  }

  get workerRestarts(): number {
    return this.restartCount;
  }

  // ---- lifecycle ----------------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.state === "running") return;
    if (this.state !== "idle" && this.state !== "stopped") {
      throw new AgoraError("MEDIA_ENGINE", `media engine cannot start while ${this.state}`);
    }
    this.state = "starting";
    try {
      this.module = await loadCoreModule();
      this.workerUrl = this.opts.workerUrl ?? resolveWorkerUrl();
      await this.spawn();
    } catch (err) {
      this.state = "idle";
      this.killWorker();
      throw err instanceof AgoraError ? err : new AgoraError("MEDIA_ENGINE", `media worker failed to start: ${errorMessage(err)}`, { cause: err });
    }
    this.removeRoomSource = this.metrics.addRoomSource(() => this.roomsById.size);
    this.watchdog = setInterval(() => this.checkHeartbeat(), WATCHDOG_PERIOD_MS);
    this.statsTimer = setInterval(() => void this.pollStats(), this.opts.statsIntervalMs ?? 1000);
    this.state = "running";
    this.log.info({ worker: String(this.workerUrl), settings: this.settings }, "media engine started");
  }

  async stop(): Promise<void> {
    if (this.state !== "running" && this.state !== "starting") return;
    this.state = "stopping";
    clearInterval(this.watchdog);
    clearInterval(this.statsTimer);
    try {
      await this.request({ t: "stop" }, 1000);
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, "media worker did not acknowledge stop; terminating it");
    }
    this.drainOutbound();
    this.killWorker();
    this.failPending("media engine stopped");
    this.removeRoomSource?.();
    this.state = "stopped";
    this.log.info({ rooms: this.roomsById.size, participants: this.participants }, "media engine stopped");
  }

  private assertRunning(): void {
    if (this.state === "running") return;
    if (this.state === "stopping" || this.state === "stopped") throw new AgoraError("SHUTTING_DOWN", "media engine is stopped");
    throw new AgoraError("NOT_RUNNING", "media engine is not started");
  }

  // ---- worker management --------------------------------------------------------------------------

  private workerSettings(): WorkerSettings {
    return {
      topK: this.settings.topKSpeakers,
      sharedEncode: this.settings.sharedEncode,
      bitrate: this.settings.bitrate,
      complexity: this.opts.complexity ?? 10,
      jitterMinMs: this.settings.jitterMinMs,
      jitterMaxMs: this.settings.jitterMaxMs,
      fec: this.opts.outputFec ?? false,
    };
  }

  /** Room list for a (re)started worker; sequence numbers continue across the gap. */
  private restoreList(): RestoreRoom[] {
    const now = performance.now();
    const list: RestoreRoom[] = [];
    for (const r of this.roomsById.values()) {
      if (r.lastSeqAt > 0) {
        const missed = Math.max(0, Math.round((now - r.lastSeqAt) / TICK_MS));
        r.seqBase = (r.lastSeq + 1 + missed) >>> 0;
      }
      list.push({ room: r.handle, seqBase: r.seqBase, participants: [...r.participants.values()].map((p) => p.handle) });
    }
    return list;
  }

  private async spawn(): Promise<void> {
    const gen = ++this.generation;
    const inbound = createRingBuffer(this.ringBytes);
    const outbound = createRingBuffer(this.ringBytes);
    const heartbeat = new SharedArrayBuffer(16);
    const url = this.workerUrl ?? resolveWorkerUrl();
    const w = new Worker(url);
    // Everything below up to postMessage(init) is synchronous: a join() racing with a restart either
    // lands in the restore list or is posted after init to this worker, never lost in between.
    this.worker = w;
    this.inWriter = new RingWriter(inbound);
    this.outReader = new RingReader(outbound);
    this.heartbeat = new Int32Array(heartbeat);
    this.beat = { value: -1, at: performance.now() };
    this.workerStartedAt = performance.now();
    w.onmessage = (e: MessageEvent<FromWorker>) => {
      if (gen === this.generation) this.onMessage(e.data);
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      if (gen === this.generation) this.onWorkerFailure(`uncaught error in the media worker: ${e.message}`);
    };
    w.addEventListener("close", (e: Event) => {
      const code = (e as CloseEvent).code;
      if (gen === this.generation) this.onWorkerFailure(`media worker exited (code ${code})`);
    });
    const settings = this.workerSettings();
    await this.request(
      { t: "init", module: this.module, inbound, outbound, heartbeat, settings, rooms: this.restoreList(), testHooks: this.testHooks },
      INIT_TIMEOUT_MS,
    );
  }

  private killWorker(): void {
    const w = this.worker;
    this.worker = undefined;
    // Frames pushed until the next worker exists are dropped (counted), not queued into a dead ring.
    this.inWriter = undefined;
    this.outReader = undefined;
    this.generation++;
    if (w) {
      w.onmessage = null;
      w.onerror = null;
      w.terminate();
    }
  }

  private failPending(reason: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new AgoraError("MEDIA_ENGINE", reason));
      this.pending.delete(id);
    }
  }

  private onWorkerFailure(reason: string): void {
    if (this.state === "starting" || this.restarting) {
      // A worker dying during its init: fail the pending init now rather than at its timeout.
      this.failPending(reason);
      return;
    }
    this.onWorkerDeath(reason);
  }

  private onWorkerDeath(reason: string): void {
    if (this.state !== "running" || this.restarting) return;
    this.restarting = true;
    const quick = performance.now() - this.workerStartedAt < CRASH_LOOP_WINDOW_MS;
    this.crashStreak = quick ? this.crashStreak + 1 : 1;
    this.log.error(
      { reason, restarts: this.restartCount + 1, rooms: this.roomsById.size, participants: this.participants },
      "media worker died; restarting it and restoring every room",
    );
    this.drainOutbound();
    this.killWorker();
    this.failPending("media worker restarted");
    // Worker-side counters restart from zero: fold what we know into the participants' baselines.
    for (const p of this.partsByHandle.values()) {
      if (p.last) {
        p.baseConcealed += p.last.concealed;
        p.baseLate += p.last.late;
        p.last = { ...p.last, concealed: 0, late: 0 };
      }
    }
    this.restartCount++;
    this.metrics.restarts.inc();
    const t0 = performance.now();
    void (async () => {
      let backoff = this.crashStreak > 2 ? Math.min(MAX_BACKOFF_MS, 100 * 2 ** (this.crashStreak - 2)) : 0;
      while (this.state === "running") {
        if (backoff > 0) await Bun.sleep(backoff);
        if (this.state !== "running") break;
        try {
          await this.spawn();
          if (this.state !== "running") {
            this.killWorker(); // stopped while the replacement was starting
            break;
          }
          this.log.info(
            { ms: Math.round(performance.now() - t0), rooms: this.roomsById.size, participants: this.participants },
            "media worker restarted; rooms restored",
          );
          break;
        } catch (err) {
          this.log.error({ err: errorMessage(err) }, "media worker restart failed; retrying");
          this.killWorker();
          backoff = Math.min(MAX_BACKOFF_MS, Math.max(100, backoff * 2));
        }
      }
      this.restarting = false;
    })();
  }

  private checkHeartbeat(): void {
    if (this.state !== "running" || this.restarting || !this.heartbeat) return;
    const v = Atomics.load(this.heartbeat, 0);
    const now = performance.now();
    if (v !== this.beat.value) {
      this.beat = { value: v, at: now };
      return;
    }
    // Before the first tick, allow the (longer) init; afterwards, the heartbeat timeout.
    const limit = v <= 0 ? INIT_TIMEOUT_MS : this.heartbeatTimeoutMs;
    if (now - this.beat.at > limit) {
      this.onWorkerDeath(`media worker heartbeat missing for ${Math.round(now - this.beat.at)} ms`);
    }
  }

  private request(msg: ToWorkerRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    const w = this.worker;
    if (!w) return Promise.reject(new AgoraError("MEDIA_ENGINE", "no media worker"));
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AgoraError("MEDIA_ENGINE", `media worker did not answer ${msg.t} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      w.postMessage({ ...msg, id } as ToWorker);
    });
  }

  /** Fire-and-forget request: failures are logged (the restore path repairs a lost one). */
  private send(msg: ToWorkerRequest): void {
    if (!this.worker) return; // restarting: the restore list carries the change
    this.request(msg).catch((err: unknown) => {
      if (this.state === "running" && !this.restarting) this.log.warn({ err: errorMessage(err), request: msg.t }, "media worker request failed");
    });
  }

  private onMessage(m: FromWorker): void {
    switch (m.t) {
      case "tick":
        this.onTick(m);
        return;
      case "reply": {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.ok) p.resolve(m.result);
        else p.reject(new AgoraError("MEDIA_ENGINE", `media worker: ${m.error}`));
        return;
      }
      case "log":
        this.log[m.level]({ ...m.fields, subsystem: "media-worker" }, m.msg);
        return;
    }
  }

  private onTick(r: TickReport): void {
    for (const s of r.tickSeconds) this.metrics.tickSeconds.observe(s);
    if (r.concealed > 0) this.metrics.concealed.inc(r.concealed);
    if (r.late > 0) this.metrics.late.inc(r.late);
    if (r.unknownDropped > 0) this.metrics.dropped.inc({ reason: "unknown_participant" }, r.unknownDropped);
    if (r.outboundDropped > 0) {
      this.metrics.dropped.inc({ reason: "ring_full" }, r.outboundDropped);
      this.warnRing("outbound", r.outboundDropped);
    }
    if (r.skipped > 0) this.metrics.ticksSkipped.inc(r.skipped);
    if (r.skipped > 0) this.log.warn({ skipped: r.skipped }, "mixer fell behind real time; skipped ticks");
    if (this.pendingIn > 0) {
      this.metrics.packets.inc({ direction: "in" }, this.pendingIn);
      this.pendingIn = 0;
    }
    this.drainOutbound();
  }

  private drainOutbound(): void {
    const ring = this.outReader;
    if (!ring) return;
    let delivered = 0;
    const now = performance.now();
    for (;;) {
      const off = ring.next();
      if (off < 0) break;
      const rec = readOutbound(ring, off);
      const room = this.roomsByHandle.get(rec.room);
      if (room) {
        room.lastSeq = rec.seq;
        room.lastSeqAt = now;
      }
      const frame: AudioFrame = { seq: rec.seq, timestamp: rec.ts, payload: rec.payload };
      for (let i = 0; i < rec.recipientCount; i++) {
        const p = this.partsByHandle.get(ring.view.getUint32(rec.recipientsOffset + i * 4, true));
        if (!p) continue;
        p.packetsOut++;
        delivered++;
        try {
          p.sink(frame);
        } catch (err) {
          if (p.sinkErrors++ % 500 === 0) {
            this.log.warn({ err: errorMessage(err), room: p.room.id, participant: p.id, errors: p.sinkErrors }, "frame sink threw");
          }
        }
      }
      ring.release();
    }
    if (delivered > 0) this.metrics.packets.inc({ direction: "out" }, delivered);
  }

  private warnRing(which: string, dropped: number): void {
    const now = performance.now();
    if (now - this.lastRingWarn < 5000) return;
    this.lastRingWarn = now;
    this.log.warn({ ring: which, dropped }, "audio ring full: frames dropped (the consumer is not keeping up)");
  }

  private async pollStats(): Promise<void> {
    if (this.state !== "running" || this.restarting || this.statsInFlight) return;
    this.statsInFlight = true;
    try {
      await this.refreshStats();
    } catch (err) {
      if (this.state === "running" && !this.restarting) this.log.debug({ err: errorMessage(err) }, "stats poll failed");
    } finally {
      this.statsInFlight = false;
    }
  }

  // ---- MediaEngine --------------------------------------------------------------------------------

  join(roomId: string, participantId: string, sink: FrameSink): void {
    this.assertRunning();
    if (typeof roomId !== "string" || roomId.length === 0) throw new AgoraError("BAD_REQUEST", "room id must be a non-empty string");
    if (typeof participantId !== "string" || participantId.length === 0) throw new AgoraError("BAD_REQUEST", "participant id must be a non-empty string");
    if (typeof sink !== "function") throw new AgoraError("BAD_REQUEST", "sink must be a function");
    let room = this.roomsById.get(roomId);
    if (room?.participants.has(participantId)) {
      throw new AgoraError("BAD_REQUEST", `participant ${participantId} is already in room ${roomId}`);
    }
    if (this.participants >= this.settings.maxParticipants) {
      throw new AgoraError(
        "CAPACITY",
        `this node is at its participant limit (${this.settings.maxParticipants}, node.max_connections); join another node`,
      );
    }
    if (!room) {
      if (this.roomsById.size >= this.settings.maxRooms) {
        throw new AgoraError(
          "CAPACITY",
          `this node already mixes its maximum of ${this.settings.maxRooms} rooms (node.max_mixers); room ${roomId} cannot be created here, join another node`,
        );
      }
      room = {
        id: roomId,
        handle: this.nextRoomHandle++,
        createdAt: Date.now(),
        participants: new Map(),
        lastSeq: 0,
        lastSeqAt: 0,
        // Random initial sequence number (as RTP does), so a re-created room is not mistaken for the old one.
        seqBase: (Math.random() * 0x1_0000_0000) >>> 0,
      };
      this.roomsById.set(roomId, room);
      this.roomsByHandle.set(room.handle, room);
      this.send({ t: "createRoom", room: room.handle, seqBase: room.seqBase });
    }
    const p: PartEntry = {
      id: participantId,
      handle: this.nextPartHandle++,
      room,
      sink,
      packetsIn: 0,
      packetsOut: 0,
      baseConcealed: 0,
      baseLate: 0,
      sinkErrors: 0,
    };
    room.participants.set(participantId, p);
    this.partsByHandle.set(p.handle, p);
    this.participants++;
    this.send({ t: "join", room: room.handle, participant: p.handle });
  }

  leave(roomId: string, participantId: string): void {
    const room = this.roomsById.get(roomId);
    const p = room?.participants.get(participantId);
    if (!room || !p) return; // idempotent: a stream closing twice must not throw
    room.participants.delete(participantId);
    this.partsByHandle.delete(p.handle);
    this.participants--;
    if (this.state !== "running") {
      if (room.participants.size === 0) this.dropRoom(room);
      return;
    }
    this.send({ t: "leave", room: room.handle, participant: p.handle });
    if (room.participants.size === 0) {
      this.dropRoom(room);
      this.send({ t: "removeRoom", room: room.handle });
    }
  }

  private dropRoom(room: RoomEntry): void {
    this.roomsById.delete(room.id);
    this.roomsByHandle.delete(room.handle);
  }

  pushFrame(roomId: string, participantId: string, frame: AudioFrame): void {
    const p = this.roomsById.get(roomId)?.participants.get(participantId);
    if (!p) return this.drop("unknown_participant");
    if (this.state !== "running" || !this.inWriter) return this.drop("not_running");
    const len = frame.payload.length;
    if (len === 0 || len > MAX_PACKET) return this.drop("invalid");
    const arrival = performance.timeOrigin + performance.now();
    if (!writeInbound(this.inWriter, p.room.handle, p.handle, frame.seq, frame.timestamp, arrival, frame.payload)) {
      this.warnRing("inbound", 1);
      return this.drop("ring_full");
    }
    p.packetsIn++;
    this.pendingIn++;
  }

  private drop(reason: DropReason): void {
    this.metrics.dropped.inc({ reason });
  }

  participantCount(): number {
    return this.participants;
  }

  rooms(): RoomStats[] {
    const out: RoomStats[] = [];
    for (const r of this.roomsById.values()) {
      out.push({ id: r.id, createdAt: r.createdAt, participants: [...r.participants.values()].map((p) => this.participantStats(p)) });
    }
    return out;
  }

  /** Like rooms(), after fetching fresh figures from the worker (dashboards, tests). */
  async refreshStats(): Promise<RoomStats[]> {
    if (this.state === "running" && !this.restarting) {
      const snap = (await this.request({ t: "stats" })) as WorkerRoomStats[];
      for (const room of snap) {
        for (const s of room.participants) {
          const p = this.partsByHandle.get(s.participant);
          if (!p) continue;
          p.last = s;
          this.metrics.jitterDepthSeconds.observe(s.bufferDepthMs / 1000);
        }
      }
    }
    return this.rooms();
  }

  private participantStats(p: PartEntry): ParticipantStats {
    const s = p.last;
    return {
      id: p.id,
      speaking: s?.speaking ?? false,
      personalMix: s?.personalMix ?? false,
      jitterMs: s?.jitterMs ?? 0,
      bufferDepthMs: s?.bufferDepthMs ?? 0,
      lossPercent: s?.lossPercent ?? 0,
      packetsIn: p.packetsIn,
      packetsOut: p.packetsOut,
      concealed: p.baseConcealed + (s?.concealed ?? 0),
      late: p.baseLate + (s?.late ?? 0),
      jitterTargetMs: s?.targetMs ?? 0,
    };
  }

  updateSettings(partial: Partial<MediaSettings>): void {
    const next = { ...this.settings, ...partial };
    validateSettings(next);
    this.settings = next;
    if (this.state === "running") this.send({ t: "settings", settings: this.workerSettings() });
    this.log.info({ settings: next }, "media settings updated");
  }

  /** Current settings (a copy). */
  currentSettings(): MediaSettings {
    return { ...this.settings };
  }

  /**
   * TEST HOOK: makes the worker die (`throw`: uncaught error, `exit`: thread exit, `hang`: busy loop so
   * only the heartbeat watchdog can notice). Only with testHooks / AGORA_MEDIA_TEST_HOOKS=1.
   */
  async crashWorker(mode: CrashMode = "throw"): Promise<void> {
    if (!this.testHooks) throw new AgoraError("MEDIA_ENGINE", "crashWorker() needs testHooks (or AGORA_MEDIA_TEST_HOOKS=1)");
    this.assertRunning();
    await this.request({ t: "crash", mode });
  }
}
