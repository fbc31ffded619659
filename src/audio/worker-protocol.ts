/**
 * Messages between the control thread (channel.ts, supervisor.ts) and the media worker (worker.ts).
 * Control messages are id-tagged requests, each answered by one `reply`; audio never travels here
 * (see rings.ts).
 * Kept apart from worker.ts so the engine can import the types without running worker code.
 */
import type { CoreParticipantStats, RoomConfig, RoomCounters } from "./core";

/** The worker applies settings to every room exactly as the core takes them. */
export type WorkerSettings = RoomConfig;

/** A room the worker must (re)create at init: used on first start (none) and after a restart. */
export interface RestoreRoom {
  room: number;
  /** Sequence number of the first frame this room sends, so receivers see no jump after a restart. */
  seqBase: number;
  participants: number[];
  /** Mix controls that differ from the defaults (listen-only participants, per-listener gains, priority). */
  controls?: RoomControls;
}

/** A room's mix controls as the worker applies them; handles, not ids. */
export interface RoomControls {
  /** participants that may not speak */
  listenOnly: number[];
  /** per listener: [source handle, gain] pairs (the complete set) */
  gains: Array<{ participant: number; gains: Array<[number, number]> }>;
  /** the priority speaker and the gain everyone else gets while it talks */
  priority?: { participant: number; duckGain: number };
}

/** Test hooks: die by an uncaught error, exit the thread, hang for good, or stall once for 400 ms (ticks are skipped). */
export type CrashMode = "throw" | "exit" | "hang" | "stall";

export type ToWorker =
  | {
      t: "init";
      id: number;
      module?: WebAssembly.Module;
      inbound: SharedArrayBuffer;
      outbound: SharedArrayBuffer;
      /** Int32[4]: [0] ticks done (the watchdog's heartbeat). */
      heartbeat: SharedArrayBuffer;
      settings: WorkerSettings;
      rooms: RestoreRoom[];
      testHooks: boolean;
    }
  | { t: "createRoom"; id: number; room: number; seqBase: number }
  | { t: "removeRoom"; id: number; room: number }
  | { t: "join"; id: number; room: number; participant: number }
  | { t: "leave"; id: number; room: number; participant: number }
  | { t: "settings"; id: number; settings: WorkerSettings }
  | { t: "canSpeak"; id: number; participant: number; canSpeak: boolean }
  /** Replaces the listener's whole set of per-source gains. */
  | { t: "mixGains"; id: number; participant: number; gains: Array<[number, number]> }
  /** participant 0: no priority speaker */
  | { t: "priority"; id: number; room: number; participant: number; duckGain: number }
  | { t: "stats"; id: number }
  | { t: "crash"; id: number; mode: CrashMode }
  | { t: "stop"; id: number };

export type ToWorkerRequest = ToWorker extends infer M ? (M extends { id: number } ? Omit<M, "id"> : never) : never;

export interface WorkerParticipantStats extends CoreParticipantStats {
  participant: number;
}

export interface WorkerRoomStats {
  room: number;
  counters: RoomCounters;
  participants: WorkerParticipantStats[];
}

export interface TickReport {
  t: "tick";
  /** Duration of each tick run since the last report (normally one), seconds. */
  tickSeconds: number[];
  concealed: number;
  late: number;
  /** Recipient-frames written to the outbound ring / dropped because it was full. */
  delivered: number;
  outboundDropped: number;
  /** Inbound frames for participants the worker does not know (left already). */
  unknownDropped: number;
  /** Ticks skipped because the worker fell more than a few ticks behind real time. */
  skipped: number;
  /** Opus decodes run, and frames left undecoded (flagged silent, unable to reach a mix). */
  decodes?: number;
  undecoded?: number;
}

export type FromWorker =
  | { t: "reply"; id: number; ok: true; result?: unknown }
  | { t: "reply"; id: number; ok: false; error: string }
  | TickReport
  | { t: "log"; level: "debug" | "info" | "warn" | "error"; msg: string; fields?: Record<string, unknown> };
