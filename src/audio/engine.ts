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
 *
 * It composes three parts (the shape of mediasoup's Worker and Channel): WorkerSupervisor (supervisor.ts)
 * spawns, watches and restarts the worker; each worker generation's WorkerChannel (channel.ts) carries
 * the id-tagged requests; RoomRegistry (room-registry.ts) holds the rooms and participants. The engine
 * wires them, moves audio through the rings and keeps the metrics.
 */
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import type { WorkerChannel } from "./channel";
import { MAX_MIX_GAIN, MAX_MIX_RULES, MAX_PACKET, MAX_TOP_K, VadFlag } from "./core";
import { type DropReason, type MediaMetrics, mediaMetrics } from "./metrics";
import { readOutbound, writeInbound } from "./rings";
import { RoomRegistry } from "./room-registry";
import { type WorkerGeneration, WorkerSupervisor } from "./supervisor";
import type {
  AudioFrame,
  DatagramPlane,
  DatagramSessionState,
  DatagramSyncCounts,
  FrameSink,
  MediaEngine,
  MediaEngineOptions,
  MediaSettings,
  MixGain,
  MixGainsResult,
  RoomStats,
  SharedDatagramSocket,
} from "./types";
import type {
  CrashMode,
  DatagramTriples,
  TickReport,
  ToWorkerRequest,
  UdpDatagramSession,
  UdpSessionState,
  UdpSyncReply,
  WorkerDatagramConfig,
  WorkerRoomStats,
  WorkerSettings,
} from "./worker-protocol";

export { embeddedRoot, resolveWorkerUrl } from "./supervisor";

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
  /**
   * The media worker binds this UDP socket and carries voice datagrams itself (`datagrams` of the engine):
   * the control thread then handles no datagram and no per-frame message for them. With `stun` it is the
   * node's shared socket: `datagrams.socket` is the control thread's share (STUN in and out).
   */
  datagrams?: WorkerDatagramConfig;
}

/** How often the control thread syncs datagram state with the worker (reports in, counts and bindings out). */
const DATAGRAM_SYNC_MS = 100;

interface DatagramSessionEntry {
  roomId: string;
  participantId: string;
  key: Uint8Array;
  trustVoice: boolean;
  /** the worker's last report of it (kept for a restart) */
  worker?: UdpSessionState;
  state: DatagramSessionState;
}

type State = "idle" | "starting" | "running" | "stopping" | "stopped";

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

export class WorkerMediaEngine implements MediaEngine {
  private settings: MediaSettings;
  private readonly log: Logger;
  private readonly metrics: MediaMetrics;
  private readonly opts: WorkerMediaEngineOptions;
  private readonly testHooks: boolean;
  private readonly registry = new RoomRegistry();
  private readonly supervisor: WorkerSupervisor;

  private state: State = "idle";
  private statsTimer?: ReturnType<typeof setInterval>;
  private statsInFlight = false;
  private removeRoomSource?: () => void;
  private restartCount = 0;
  private pendingIn = 0;
  private lastRingWarn = 0;

  private readonly udpSessions = new Map<number, DatagramSessionEntry>();
  private udpReports = new Map<number, number>();
  private udpPort = 0;
  private udpSyncTimer?: ReturnType<typeof setInterval>;
  private udpSyncInFlight = false;
  private readonly udpListeners = new Set<(c: DatagramSyncCounts) => void>();
  private readonly stunReceivers = new Set<(data: Uint8Array, from: { address: string; port: number }) => void>();
  readonly datagrams?: DatagramPlane;

  constructor(opts: WorkerMediaEngineOptions) {
    validateSettings(opts.settings);
    this.opts = opts;
    this.settings = { ...opts.settings };
    this.log = opts.logger;
    this.metrics = mediaMetrics(opts.registry);
    this.testHooks = opts.testHooks ?? process.env.AGORA_MEDIA_TEST_HOOKS === "1";
    if (opts.complexity !== undefined && (!Number.isInteger(opts.complexity) || opts.complexity < 0 || opts.complexity > 10)) {
      throw new AgoraError("MEDIA_ENGINE", `invalid Opus complexity ${opts.complexity} (0..10)`);
    }
    this.supervisor = new WorkerSupervisor({
      logger: this.log,
      init: () => ({
        settings: this.workerSettings(),
        rooms: this.registry.restoreList(),
        // A restarted worker binds the port the first one got (clients were told it in JOINED).
        ...(opts.datagrams
          ? {
              datagrams: { ...opts.datagrams, port: this.udpPort || opts.datagrams.port },
              udpSessions: this.udpRestoreList(),
            }
          : {}),
      }),
      workerUrl: opts.workerUrl,
      ringBytes: opts.ringBytes,
      heartbeatTimeoutMs: opts.heartbeatTimeoutMs,
      testHooks: this.testHooks,
    });
    if (opts.datagrams) this.datagrams = this.datagramPlane();
    this.supervisor.on("spawned", (gen) => this.attach(gen));
    this.supervisor.on("retiring", (gen) => this.drainOutbound(gen));
    this.supervisor.on("died", (reason) => this.onWorkerDied(reason));
    this.supervisor.on("restarted", (ms) => {
      this.log.info(
        { ms, rooms: this.registry.roomCount, participants: this.registry.participantCount },
        "media worker restarted; rooms restored",
      );
    });
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
      await this.supervisor.start(); // leaves no worker behind when it fails
    } catch (err) {
      this.state = "idle";
      throw err;
    }
    this.removeRoomSource = this.metrics.addRoomSource(() => this.registry.roomCount);
    this.statsTimer = setInterval(() => void this.pollStats(), this.opts.statsIntervalMs ?? 1000);
    if (this.opts.datagrams) {
      this.udpPort = this.supervisor.current?.udpPort ?? 0;
      this.udpSyncTimer = setInterval(() => void this.syncDatagrams(), DATAGRAM_SYNC_MS);
    }
    this.state = "running";
    this.log.info({ worker: String(this.supervisor.workerEntry), settings: this.settings }, "media engine started");
  }

  async stop(): Promise<void> {
    if (this.state !== "running" && this.state !== "starting") return;
    this.state = "stopping";
    clearInterval(this.statsTimer);
    clearInterval(this.udpSyncTimer);
    await this.supervisor.stop("media engine stopped"); // the last frames are drained as it retires the worker
    this.removeRoomSource?.();
    this.state = "stopped";
    this.log.info({ rooms: this.registry.roomCount, participants: this.registry.participantCount }, "media engine stopped");
  }

  private assertRunning(): void {
    if (this.state === "running") return;
    if (this.state === "stopping" || this.state === "stopped") throw new AgoraError("SHUTTING_DOWN", "media engine is stopped");
    throw new AgoraError("NOT_RUNNING", "media engine is not started");
  }

  // ---- worker generations -------------------------------------------------------------------------

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

  /** A new worker generation: listen to its channel (before its init is posted). */
  private attach(gen: WorkerGeneration): void {
    const channel: WorkerChannel = gen.channel;
    channel.on("tick", (r) => this.onTick(r, gen));
    channel.on("log", (m) => this.log[m.level]({ ...m.fields, subsystem: "media-worker" }, m.msg));
    channel.on("udpStun", (packets) => this.onStun(packets));
    channel.on("notifyFailed", (err, request) => {
      if (this.state === "running" && this.supervisor.healthy) this.log.warn({ err: err.message, request }, "media worker request failed");
    });
  }

  private onWorkerDied(reason: string): void {
    this.log.error(
      { reason, restarts: this.restartCount + 1, rooms: this.registry.roomCount, participants: this.registry.participantCount },
      "media worker died; restarting it and restoring every room",
    );
    // Worker-side counters restart from zero: fold what we know into the participants' baselines.
    this.registry.foldBaselines();
    this.restartCount++;
    this.metrics.restarts.inc();
  }

  private request(msg: ToWorkerRequest): Promise<unknown> {
    const channel = this.supervisor.current?.channel;
    if (!channel) return Promise.reject(new AgoraError("MEDIA_ENGINE", "no media worker"));
    return channel.request(msg);
  }

  /** Fire-and-forget request: failures are logged (the restore path repairs a lost one). */
  private send(msg: ToWorkerRequest): void {
    // No worker (restarting): the restore list carries the change.
    this.supervisor.current?.channel.notify(msg);
  }

  // ---- voice datagrams in the worker ---------------------------------------------------------------

  private datagramPlane(): DatagramPlane {
    const engine = this;
    const socket = this.opts.datagrams?.stun ? this.sharedSocket(this.opts.datagrams.hostname) : undefined;
    return {
      ...(socket ? { socket } : {}),
      get port() {
        return engine.udpPort;
      },
      install: (roomId, participantId, session) => this.installDatagramSession(roomId, participantId, session),
      remove: (sessionId) => {
        if (!this.udpSessions.delete(sessionId)) return;
        this.udpReports.delete(sessionId);
        if (this.state === "running") this.send({ t: "udpRemove", sessionId });
      },
      report: (sessionId, received) => {
        if (this.udpSessions.has(sessionId)) this.udpReports.set(sessionId, received);
      },
      state: (sessionId) => this.udpSessions.get(sessionId)?.state,
      onSync: (listener) => {
        this.udpListeners.add(listener);
        return () => this.udpListeners.delete(listener);
      },
    };
  }

  /** The control thread's share of the worker-owned shared socket: STUN's messages in, its requests out. */
  private sharedSocket(hostname: string): SharedDatagramSocket {
    const engine = this;
    return {
      get local() {
        return { address: hostname, port: engine.udpPort };
      },
      // one request per STUN transaction (a few per 5 minutes): no batching needed
      send: (data, to) => this.send({ t: "udpSend", packets: [data, to.port, to.address] }),
      sendMany: (packets) => {
        if (packets.length > 0) this.send({ t: "udpSend", packets });
        return packets.length / 3;
      },
      onDatagram: (receiver) => {
        this.stunReceivers.add(receiver);
        return () => void this.stunReceivers.delete(receiver);
      },
      onError: () => () => undefined,
      close: () => this.stunReceivers.clear(),
    };
  }

  private onStun(packets: DatagramTriples): void {
    for (let i = 0; i + 2 < packets.length; i += 3) {
      const data = packets[i] as Uint8Array;
      const from = { port: packets[i + 1] as number, address: packets[i + 2] as string };
      for (const r of this.stunReceivers) {
        try {
          r(data, from);
        } catch (err) {
          this.log.debug({ err: errorMessage(err) }, "STUN receiver of the shared socket threw");
        }
      }
    }
  }

  private installDatagramSession(
    roomId: string,
    participantId: string,
    d: { sessionId: number; key: Uint8Array; trustVoice: boolean },
  ): void {
    this.assertRunning();
    const p = this.registry.participant(roomId, participantId);
    if (!p) throw new AgoraError("BAD_REQUEST", `participant ${participantId} is not in room ${roomId}`);
    const entry: DatagramSessionEntry = {
      roomId,
      participantId,
      key: Uint8Array.from(d.key),
      trustVoice: d.trustVoice,
      state: { received: 0, lastRxAt: Number.NEGATIVE_INFINITY, bound: false, silenced: 0 },
    };
    this.udpSessions.set(d.sessionId, entry);
    this.send({ t: "udpInstall", session: { sessionId: d.sessionId, participant: p.handle, key: entry.key, trustVoice: d.trustVoice } });
  }

  /** Every session whose participant is still here, with the state the worker last reported (a restart). */
  private udpRestoreList(): UdpDatagramSession[] {
    const out: UdpDatagramSession[] = [];
    for (const [sessionId, e] of this.udpSessions) {
      const p = this.registry.participant(e.roomId, e.participantId);
      if (!p) continue;
      out.push({ sessionId, participant: p.handle, key: e.key, trustVoice: e.trustVoice, ...(e.worker ? { state: e.worker } : {}) });
    }
    return out;
  }

  private async syncDatagrams(): Promise<void> {
    if (this.state !== "running" || !this.supervisor.healthy || this.udpSyncInFlight) return;
    this.udpSyncInFlight = true;
    const reports = [...this.udpReports];
    this.udpReports = new Map();
    try {
      const r = (await this.request({ t: "udpSync", reports })) as UdpSyncReply;
      const now = performance.now();
      for (const w of r.sessions) {
        const e = this.udpSessions.get(w.sessionId);
        if (!e) continue;
        e.worker = w;
        e.state.received = w.received;
        e.state.bound = w.address !== undefined;
        e.state.silenced = w.silenced;
        if (w.rxAgeMs >= 0) e.state.lastRxAt = now - w.rxAgeMs;
      }
      if (r.framesIn > 0) this.metrics.packets.inc({ direction: "in" }, r.framesIn);
      const counts: DatagramSyncCounts = { dropped: r.dropped, received: r.received, sent: r.sent, sendRefused: r.sendRefused };
      for (const l of this.udpListeners) {
        try {
          l(counts);
        } catch (err) {
          this.log.warn({ err: errorMessage(err) }, "datagram sync listener failed");
        }
      }
    } catch (err) {
      if (this.state === "running" && this.supervisor.healthy) this.log.debug({ err: errorMessage(err) }, "datagram sync failed");
    } finally {
      this.udpSyncInFlight = false;
    }
  }

  private onTick(r: TickReport, gen: WorkerGeneration): void {
    if (r.datagramsDelivered) this.metrics.packets.inc({ direction: "out" }, r.datagramsDelivered);
    for (const s of r.tickSeconds) this.metrics.tickSeconds.observe(s);
    if (r.concealed > 0) this.metrics.concealed.inc(r.concealed);
    if (r.late > 0) this.metrics.late.inc(r.late);
    if (r.decodes) this.metrics.decodes.inc(r.decodes);
    if (r.undecoded) this.metrics.undecoded.inc(r.undecoded);
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
    this.drainOutbound(gen);
  }

  private drainOutbound(gen: WorkerGeneration): void {
    const ring = gen.outbound;
    let delivered = 0;
    for (;;) {
      const off = ring.next();
      if (off < 0) break;
      const rec = readOutbound(ring, off);
      this.registry.noteFrame(rec.room, rec.seq);
      const frame: AudioFrame = { seq: rec.seq, timestamp: rec.ts, payload: rec.payload };
      for (let i = 0; i < rec.recipientCount; i++) {
        const p = this.registry.participantByHandle(ring.view.getUint32(rec.recipientsOffset + i * 4, true));
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
    if (this.state !== "running" || !this.supervisor.healthy || this.statsInFlight) return;
    this.statsInFlight = true;
    try {
      await this.refreshStats();
    } catch (err) {
      if (this.state === "running" && this.supervisor.healthy) this.log.debug({ err: errorMessage(err) }, "stats poll failed");
    } finally {
      this.statsInFlight = false;
    }
  }

  // ---- MediaEngine --------------------------------------------------------------------------------

  join(roomId: string, participantId: string, sink: FrameSink): void {
    this.assertRunning();
    const { room, participant, createdRoom } = this.registry.join(roomId, participantId, sink, this.settings);
    if (createdRoom) this.send({ t: "createRoom", room: room.handle, seqBase: room.seqBase });
    this.send({ t: "join", room: room.handle, participant: participant.handle });
  }

  leave(roomId: string, participantId: string): void {
    const left = this.registry.leave(roomId, participantId);
    if (!left || this.state !== "running") return; // idempotent: a stream closing twice must not throw
    this.send({ t: "leave", room: left.room.handle, participant: left.participant.handle });
    if (left.removedRoom) this.send({ t: "removeRoom", room: left.room.handle });
  }

  pushFrame(roomId: string, participantId: string, frame: AudioFrame): void {
    const p = this.registry.participant(roomId, participantId);
    if (!p) {
      this.drop("unknown_participant");
      return;
    }
    const gen = this.supervisor.current;
    if (this.state !== "running" || !gen) {
      this.drop("not_running");
      return;
    }
    const len = frame.payload.length;
    if (len === 0 || len > MAX_PACKET) {
      this.drop("invalid");
      return;
    }
    const arrival = performance.timeOrigin + performance.now();
    const flags = frame.voice === undefined ? 0 : frame.voice ? VadFlag.KNOWN | VadFlag.VOICE : VadFlag.KNOWN;
    if (!writeInbound(gen.inbound, p.room.handle, p.handle, frame.seq, frame.timestamp, arrival, frame.payload, flags)) {
      this.warnRing("inbound", 1);
      this.drop("ring_full");
      return;
    }
    p.packetsIn++;
    this.pendingIn++;
  }

  setCanSpeak(roomId: string, participantId: string, canSpeak: boolean): void {
    const p = this.mustParticipant(roomId, participantId);
    if (p.canSpeak === canSpeak) return;
    p.canSpeak = canSpeak;
    this.send({ t: "canSpeak", participant: p.handle, canSpeak });
  }

  setMixGains(roomId: string, listenerId: string, gains: readonly MixGain[]): MixGainsResult {
    const p = this.mustParticipant(roomId, listenerId);
    if (!Array.isArray(gains) || gains.length > MAX_MIX_RULES)
      throw new AgoraError(
        "BAD_REQUEST",
        `mix gains: at most ${MAX_MIX_RULES} entries, got ${Array.isArray(gains) ? gains.length : typeof gains}`,
      );
    for (const [i, g] of gains.entries()) {
      if (typeof g?.gain !== "number" || !(g.gain >= 0 && g.gain <= MAX_MIX_GAIN))
        throw new AgoraError("BAD_REQUEST", `mix gains[${i}]: gain must be 0..${MAX_MIX_GAIN}, got ${String(g?.gain)}`);
    }
    const next = new Map<string, number>();
    const unknown: string[] = [];
    const handles: Array<[number, number]> = [];
    for (const g of gains) {
      const src = p.room.participants.get(g.participantId);
      if (!src || src === p) {
        unknown.push(String(g.participantId));
        continue;
      }
      if (g.gain === 1 || next.has(src.id)) continue;
      next.set(src.id, g.gain);
      handles.push([src.handle, g.gain]);
    }
    p.gains.clear();
    for (const [id, g] of next) p.gains.set(id, g);
    this.send({ t: "mixGains", participant: p.handle, gains: handles });
    return { applied: handles.length, unknown };
  }

  setPrioritySpeaker(roomId: string, participantId: string | undefined, duckDb = 12): void {
    const room = this.registry.room(roomId);
    if (!room) throw new AgoraError("BAD_REQUEST", `no room ${roomId}`);
    if (!Number.isFinite(duckDb) || duckDb < 0 || duckDb > 60)
      throw new AgoraError("BAD_REQUEST", `priority ducking must be 0..60 dB, got ${duckDb}`);
    const duckGain = 10 ** (-duckDb / 20);
    if (participantId === undefined) {
      room.priority = undefined;
      this.send({ t: "priority", room: room.handle, participant: 0, duckGain });
      return;
    }
    const p = this.mustParticipant(roomId, participantId);
    room.priority = { participantId, duckGain };
    this.send({ t: "priority", room: room.handle, participant: p.handle, duckGain });
  }

  private mustParticipant(roomId: string, participantId: string) {
    const p = this.registry.participant(roomId, participantId);
    if (!p) throw new AgoraError("BAD_REQUEST", `no participant ${participantId} in room ${roomId}`);
    return p;
  }

  private drop(reason: DropReason): void {
    this.metrics.dropped.inc({ reason });
  }

  participantCount(): number {
    return this.registry.participantCount;
  }

  rooms(): RoomStats[] {
    return this.registry.stats();
  }

  /** Like rooms(), after fetching fresh figures from the worker (dashboards, tests). */
  async refreshStats(): Promise<RoomStats[]> {
    if (this.state === "running" && this.supervisor.healthy) {
      const snap = (await this.request({ t: "stats" })) as WorkerRoomStats[];
      for (const s of this.registry.applyWorkerStats(snap)) this.metrics.jitterDepthSeconds.observe(s.bufferDepthMs / 1000);
    }
    return this.rooms();
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
