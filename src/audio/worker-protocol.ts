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

/** The worker's own UDP socket for voice datagrams (datagram-io.ts). */
export interface WorkerDatagramConfig {
  hostname: string;
  /** 0: an ephemeral port (the first worker's; a restarted worker binds the same one again) */
  port: number;
  /**
   * The node's shared UDP socket (node.listen_port), whose public mapping STUN learns: STUN messages on it
   * are handed to the control thread in one `udpStun` message per tick, and the control thread's STUN sends
   * come back as `udpSend` requests. Without it every datagram is judged as voice.
   */
  stun?: boolean;
}

/** Datagrams as Bun's `sendMany` takes them: `[data, port, address, data, port, address, …]`. */
export type DatagramTriples = Array<Uint8Array | number | string>;

/** What survives a worker restart of one session's datagram state (from the last udpSync). */
export interface UdpSessionState {
  sessionId: number;
  /** authenticated datagrams received (the count in the server's UDP_REPORT) */
  received: number;
  /** ms since the last authenticated datagram (-1: none yet) */
  rxAgeMs: number;
  /** the server's next datagram counter */
  txCounter: number;
  /** highest client counter authenticated (-1: none) */
  rxHighest: number;
  /** authenticated voice datagrams dropped because the participant may not speak (listener, muted) */
  silenced: number;
  /** the client's bound address, once learnt */
  address?: string;
  port?: number;
}

/** A session the worker carries datagrams for: voice of `participant` (a worker handle). */
export interface UdpDatagramSession {
  sessionId: number;
  participant: number;
  key: Uint8Array;
  /** the client announced VOICE_ACTIVITY: its datagrams' voice bit reaches the core */
  trustVoice: boolean;
  /** restored after a worker restart */
  state?: UdpSessionState;
}

export interface UdpSyncReply {
  sessions: UdpSessionState[];
  /** drops since the last sync, by reason */
  dropped: Partial<Record<string, number>>;
  received: number;
  sent: number;
  /** datagrams the kernel refused to send */
  sendRefused: number;
  /** audio frames pushed into the core from datagrams */
  framesIn: number;
}

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
      /** the worker binds this socket for voice datagrams; the init's reply is its port */
      datagrams?: WorkerDatagramConfig;
      udpSessions?: UdpDatagramSession[];
    }
  | { t: "udpInstall"; id: number; session: UdpDatagramSession }
  | { t: "udpRemove"; id: number; sessionId: number }
  /** the control thread's STUN datagrams, sent from the shared socket (WorkerDatagramConfig.stun) */
  | { t: "udpSend"; id: number; packets: DatagramTriples }
  /** the clients' UDP_REPORT counts since the last sync ([sessionId, received]); the reply is a UdpSyncReply */
  | { t: "udpSync"; id: number; reports: Array<[number, number]> }
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
  /** Recipient-frames sent as voice datagrams by the worker itself (not through the ring). */
  datagramsDelivered?: number;
}

export type FromWorker =
  | { t: "reply"; id: number; ok: true; result?: unknown }
  | { t: "reply"; id: number; ok: false; error: string }
  | TickReport
  /** the STUN messages that arrived on the shared socket during one tick (WorkerDatagramConfig.stun) */
  | { t: "udpStun"; packets: DatagramTriples }
  | { t: "log"; level: "debug" | "info" | "warn" | "error"; msg: string; fields?: Record<string, unknown> };
