/**
 * RoomRegistry: the engine's authoritative list of rooms and participants, apart from any worker.
 *
 * Rooms and participants get small integer handles (what the worker and the rings carry); the registry
 * maps them back to ids and sinks. It enforces the capacity limits (node.max_mixers,
 * node.max_connections), and keeps what must survive a worker restart: each room's sequence number
 * (the replacement continues where the dead worker stopped, counting the ticks it missed) and each
 * participant's worker-side counters of earlier generations (the worker's restart from zero).
 */
import { AgoraError } from "../errors";
import type { FrameSink, ParticipantStats, RoomStats } from "./types";
import type { RestoreRoom, RoomControls, WorkerParticipantStats, WorkerRoomStats } from "./worker-protocol";

const TICK_MS = 20;

export interface ParticipantEntry {
  readonly id: string;
  readonly handle: number;
  readonly room: RoomEntry;
  readonly sink: FrameSink;
  packetsIn: number;
  packetsOut: number;
  /** Worker-side counters of previous worker generations (they restart from zero after a restart). */
  baseConcealed: number;
  baseLate: number;
  last?: WorkerParticipantStats;
  sinkErrors: number;
  /** false: a listener (never mixed). */
  canSpeak: boolean;
  /** What this participant hears of other participants (by id), when not 1. */
  readonly gains: Map<string, number>;
}

export interface RoomEntry {
  readonly id: string;
  readonly handle: number;
  readonly createdAt: number;
  readonly participants: Map<string, ParticipantEntry>;
  /** Sequence number of the last frame drained for this room, and when (for restarts). */
  lastSeq: number;
  lastSeqAt: number;
  seqBase: number;
  /** The priority speaker (an id) and the gain everyone else gets while it talks. */
  priority?: { participantId: string; duckGain: number };
}

export interface RoomLimits {
  maxRooms: number;
  maxParticipants: number;
}

export interface RoomRegistryOptions {
  /** Monotonic ms clock of noteFrame/restoreList (default performance.now). */
  now?: () => number;
  /** Wall clock of createdAt (default Date.now). */
  wallClock?: () => number;
  /** Uniform [0, 1) source of the random initial sequence numbers (default Math.random). */
  random?: () => number;
}

export interface JoinResult {
  room: RoomEntry;
  participant: ParticipantEntry;
  /** The join created the room (the worker must create it too). */
  createdRoom: boolean;
}

export interface LeaveResult {
  room: RoomEntry;
  participant: ParticipantEntry;
  /** It was the last participant: the room is gone. */
  removedRoom: boolean;
}

export class RoomRegistry {
  private readonly roomsById = new Map<string, RoomEntry>();
  private readonly roomsByHandle = new Map<number, RoomEntry>();
  private readonly partsByHandle = new Map<number, ParticipantEntry>();
  private nextRoomHandle = 1;
  private nextPartHandle = 1;
  private participants = 0;
  private readonly now: () => number;
  private readonly wallClock: () => number;
  private readonly random: () => number;

  constructor(opts: RoomRegistryOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.wallClock = opts.wallClock ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  get roomCount(): number {
    return this.roomsById.size;
  }

  get participantCount(): number {
    return this.participants;
  }

  room(roomId: string): RoomEntry | undefined {
    return this.roomsById.get(roomId);
  }

  roomByHandle(handle: number): RoomEntry | undefined {
    return this.roomsByHandle.get(handle);
  }

  participant(roomId: string, participantId: string): ParticipantEntry | undefined {
    return this.roomsById.get(roomId)?.participants.get(participantId);
  }

  participantByHandle(handle: number): ParticipantEntry | undefined {
    return this.partsByHandle.get(handle);
  }

  /** Adds a participant, creating its room on first join. Throws BAD_REQUEST or CAPACITY (nothing changed then). */
  join(roomId: string, participantId: string, sink: FrameSink, limits: RoomLimits): JoinResult {
    if (typeof roomId !== "string" || roomId.length === 0) throw new AgoraError("BAD_REQUEST", "room id must be a non-empty string");
    if (typeof participantId !== "string" || participantId.length === 0)
      throw new AgoraError("BAD_REQUEST", "participant id must be a non-empty string");
    if (typeof sink !== "function") throw new AgoraError("BAD_REQUEST", "sink must be a function");
    let room = this.roomsById.get(roomId);
    if (room?.participants.has(participantId)) {
      throw new AgoraError("BAD_REQUEST", `participant ${participantId} is already in room ${roomId}`);
    }
    if (this.participants >= limits.maxParticipants) {
      throw new AgoraError(
        "CAPACITY",
        `this node is at its participant limit (${limits.maxParticipants}, node.max_connections); join another node`,
      );
    }
    const createdRoom = !room;
    if (!room) {
      if (this.roomsById.size >= limits.maxRooms) {
        throw new AgoraError(
          "CAPACITY",
          `this node already mixes its maximum of ${limits.maxRooms} rooms (node.max_mixers); room ${roomId} cannot be created here, join another node`,
        );
      }
      room = {
        id: roomId,
        handle: this.nextRoomHandle++,
        createdAt: this.wallClock(),
        participants: new Map(),
        lastSeq: 0,
        lastSeqAt: 0,
        // Random initial sequence number (as RTP does), so a re-created room is not mistaken for the old one.
        seqBase: (this.random() * 0x1_0000_0000) >>> 0,
      };
      this.roomsById.set(roomId, room);
      this.roomsByHandle.set(room.handle, room);
    }
    const participant: ParticipantEntry = {
      id: participantId,
      handle: this.nextPartHandle++,
      room,
      sink,
      packetsIn: 0,
      packetsOut: 0,
      baseConcealed: 0,
      baseLate: 0,
      sinkErrors: 0,
      canSpeak: true,
      gains: new Map(),
    };
    room.participants.set(participantId, participant);
    this.partsByHandle.set(participant.handle, participant);
    this.participants++;
    return { room, participant, createdRoom };
  }

  /** Removes a participant (and its room when it was the last); undefined when it is not there (idempotent). */
  leave(roomId: string, participantId: string): LeaveResult | undefined {
    const room = this.roomsById.get(roomId);
    const participant = room?.participants.get(participantId);
    if (!room || !participant) return undefined;
    room.participants.delete(participantId);
    this.partsByHandle.delete(participant.handle);
    this.participants--;
    // Nobody keeps a rule about someone who left (a later participant may reuse nothing, but stale rules
    // would be restored after a worker restart).
    for (const other of room.participants.values()) other.gains.delete(participantId);
    if (room.priority?.participantId === participantId) room.priority = undefined;
    const removedRoom = room.participants.size === 0;
    if (removedRoom) {
      this.roomsById.delete(room.id);
      this.roomsByHandle.delete(room.handle);
    }
    return { room, participant, removedRoom };
  }

  /** A frame of room `handle` with sequence number `seq` was drained now (where a restart continues from). */
  noteFrame(handle: number, seq: number): void {
    const room = this.roomsByHandle.get(handle);
    if (!room) return;
    room.lastSeq = seq;
    room.lastSeqAt = this.now();
  }

  /**
   * The rooms a (re)started worker must run. Sequence numbers continue across the gap: after the last
   * frame drained, one number per 20 ms tick the dead worker did not mix.
   */
  restoreList(): RestoreRoom[] {
    const now = this.now();
    const list: RestoreRoom[] = [];
    for (const r of this.roomsById.values()) {
      if (r.lastSeqAt > 0) {
        const missed = Math.max(0, Math.round((now - r.lastSeqAt) / TICK_MS));
        r.seqBase = (r.lastSeq + 1 + missed) >>> 0;
      }
      const controls = roomControls(r);
      list.push({
        room: r.handle,
        seqBase: r.seqBase,
        participants: [...r.participants.values()].map((p) => p.handle),
        ...(controls ? { controls } : {}),
      });
    }
    return list;
  }

  /** The worker generation died: its counters restart from zero, so what it counted joins the baselines. */
  foldBaselines(): void {
    for (const p of this.partsByHandle.values()) {
      if (p.last) {
        p.baseConcealed += p.last.concealed;
        p.baseLate += p.last.late;
        p.last = { ...p.last, concealed: 0, late: 0 };
      }
    }
  }

  /** Takes a worker stats snapshot; returns the participant figures that matched a known participant. */
  applyWorkerStats(snapshot: WorkerRoomStats[]): WorkerParticipantStats[] {
    const applied: WorkerParticipantStats[] = [];
    for (const room of snapshot) {
      for (const s of room.participants) {
        const p = this.partsByHandle.get(s.participant);
        if (!p) continue;
        p.last = s;
        applied.push(s);
      }
    }
    return applied;
  }

  stats(): RoomStats[] {
    const out: RoomStats[] = [];
    for (const r of this.roomsById.values()) {
      out.push({ id: r.id, createdAt: r.createdAt, participants: [...r.participants.values()].map(participantStats) });
    }
    return out;
  }
}

/** The room's mix controls as handles, or undefined when everything is at its default. */
export function roomControls(r: RoomEntry): RoomControls | undefined {
  const listenOnly: number[] = [];
  const gains: RoomControls["gains"] = [];
  for (const p of r.participants.values()) {
    if (!p.canSpeak) listenOnly.push(p.handle);
    if (p.gains.size === 0) continue;
    const list: Array<[number, number]> = [];
    for (const [id, g] of p.gains) {
      const src = r.participants.get(id);
      if (src) list.push([src.handle, g]);
    }
    gains.push({ participant: p.handle, gains: list });
  }
  const prio = r.priority && r.participants.get(r.priority.participantId);
  const priority = prio ? { participant: prio.handle, duckGain: r.priority!.duckGain } : undefined;
  if (listenOnly.length === 0 && gains.length === 0 && !priority) return undefined;
  return { listenOnly, gains, ...(priority ? { priority } : {}) };
}

function participantStats(p: ParticipantEntry): ParticipantStats {
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
    jitterEstimateMs: s?.jitterEstimateMs ?? 0,
  };
}
