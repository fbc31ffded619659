/**
 * RoomRegistry on its own (no worker): handles, capacity and input errors, leave, sequence-number
 * continuation across a restart (on an injected clock), and the counters' baselines across worker
 * generations.
 */
import { describe, expect, test } from "bun:test";
import { RoomRegistry } from "../../src/audio/room-registry";
import type { WorkerParticipantStats } from "../../src/audio/worker-protocol";
import { AgoraError } from "../../src/errors";

const roomy = { maxRooms: 10, maxParticipants: 100 };
const sink = () => {};

function thrown(fn: () => unknown): AgoraError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AgoraError);
    return err as AgoraError;
  }
  throw new Error("expected an AgoraError");
}

function workerStats(participant: number, over: Partial<WorkerParticipantStats> = {}): WorkerParticipantStats {
  return {
    participant,
    speaking: true,
    personalMix: false,
    jitterMs: 3,
    bufferDepthMs: 40,
    lossPercent: 1,
    packetsIn: 999, // the worker's view; the registry reports its own
    packetsOut: 999,
    concealed: 0,
    late: 0,
    targetMs: 40,
    jitterEstimateMs: 12.5,
    levelDb: -20,
    inMix: true,
    duplicates: 0,
    fecRecovered: 0,
    dropped: 0,
    invalid: 0,
    resyncs: 0,
    decodeErrors: 0,
    decodes: 0,
    skipped: 0,
    probes: 0,
    ...over,
  };
}

describe("RoomRegistry", () => {
  test("the first join creates the room; handles are unique and map back to their entries", () => {
    const reg = new RoomRegistry({ wallClock: () => 1_700_000_000_000, random: () => 0.5 });
    const a = reg.join("r1", "a", sink, roomy);
    const b = reg.join("r1", "b", sink, roomy);
    const c = reg.join("r2", "a", sink, roomy); // same participant id in another room: another participant
    expect([a.createdRoom, b.createdRoom, c.createdRoom]).toEqual([true, false, true]);
    expect(a.room).toBe(b.room);
    expect(a.room.handle).not.toBe(c.room.handle);
    expect(new Set([a, b, c].map((j) => j.participant.handle)).size).toBe(3);
    expect(reg.roomByHandle(c.room.handle)).toBe(c.room);
    expect(reg.participantByHandle(b.participant.handle)).toBe(b.participant);
    expect(reg.participant("r2", "a")).toBe(c.participant);
    expect(reg.room("r1")!.createdAt).toBe(1_700_000_000_000);
    expect(a.room.seqBase).toBe(0x8000_0000);
    expect(reg.roomCount).toBe(2);
    expect(reg.participantCount).toBe(3);
  });

  test("bad input and capacity are refused with typed errors naming the limit, and change nothing", () => {
    const reg = new RoomRegistry();
    const limits = { maxRooms: 1, maxParticipants: 2 };
    reg.join("r1", "p1", sink, limits);
    expect(thrown(() => reg.join("", "p", sink, limits)).code).toBe("BAD_REQUEST");
    expect(thrown(() => reg.join("r1", "", sink, limits)).code).toBe("BAD_REQUEST");
    expect(thrown(() => reg.join("r1", "p", "nope" as never, limits)).message).toBe("sink must be a function");
    const dup = thrown(() => reg.join("r1", "p1", sink, limits));
    expect(dup.code).toBe("BAD_REQUEST");
    expect(dup.message).toBe("participant p1 is already in room r1");
    const rooms = thrown(() => reg.join("r2", "p2", sink, limits));
    expect(rooms.code).toBe("CAPACITY");
    expect(rooms.message).toContain("maximum of 1 rooms (node.max_mixers)");
    expect(rooms.message).toContain("room r2 cannot be created here");
    reg.join("r1", "p2", sink, limits); // an existing room is not a new mixer
    const parts = thrown(() => reg.join("r1", "p3", sink, limits));
    expect(parts.code).toBe("CAPACITY");
    expect(parts.message).toContain("participant limit (2, node.max_connections)");
    expect(reg.roomCount).toBe(1);
    expect(reg.participantCount).toBe(2);
    expect(reg.room("r2")).toBeUndefined();
    // Limits are whatever the caller passes now: raising them admits more.
    reg.join("r2", "p3", sink, { maxRooms: 2, maxParticipants: 3 });
    expect(reg.roomCount).toBe(2);
  });

  test("leave is idempotent; the last leave removes the room and its handles; a re-created room is new", () => {
    let rnd = 0.25;
    const reg = new RoomRegistry({ random: () => rnd });
    const a = reg.join("r", "a", sink, roomy);
    const b = reg.join("r", "b", sink, roomy);
    const first = reg.leave("r", "a")!;
    expect(first.removedRoom).toBe(false);
    expect(first.participant).toBe(a.participant);
    expect(reg.leave("r", "a")).toBeUndefined();
    expect(reg.leave("nowhere", "a")).toBeUndefined();
    expect(reg.participantByHandle(a.participant.handle)).toBeUndefined();
    expect(reg.participantCount).toBe(1);
    const last = reg.leave("r", "b")!;
    expect(last.removedRoom).toBe(true);
    expect(reg.room("r")).toBeUndefined();
    expect(reg.roomByHandle(b.room.handle)).toBeUndefined();
    expect(reg.roomCount).toBe(0);
    expect(reg.stats()).toEqual([]);
    rnd = 0.75;
    const again = reg.join("r", "a", sink, roomy);
    expect(again.createdRoom).toBe(true);
    expect(again.room.handle).not.toBe(a.room.handle);
    expect(again.participant.handle).not.toBe(a.participant.handle);
    expect(again.room.seqBase).not.toBe(a.room.seqBase); // receivers do not take it for the old room
  });

  test("restore list: sequence numbers continue after the last drained frame plus the ticks missed (uint32 wrap)", () => {
    let now = 10_000;
    const reg = new RoomRegistry({ now: () => now, random: () => 0.1 });
    const r1 = reg.join("r1", "a", sink, roomy).room;
    reg.join("r1", "b", sink, roomy);
    const r2 = reg.join("r2", "c", sink, roomy).room;
    const r3 = reg.join("r3", "d", sink, roomy).room;
    const untouched = r3.seqBase;
    reg.noteFrame(r1.handle, 500);
    reg.noteFrame(r2.handle, 0xffff_fffe);
    reg.noteFrame(999, 1); // unknown handle (room gone): ignored
    now += 200; // 10 ticks without a worker
    const list = reg.restoreList();
    expect(list).toEqual([
      { room: r1.handle, seqBase: 511, participants: [1, 2] },
      { room: r2.handle, seqBase: (0xffff_fffe + 1 + 10) >>> 0, participants: [3] },
      { room: r3.handle, seqBase: untouched, participants: [4] }, // never drained: its first number stands
    ]);
    expect(list[1]!.seqBase).toBe(9);
    // A restart right after a frame skips nothing.
    reg.noteFrame(r1.handle, 600);
    expect(reg.restoreList()[0]!.seqBase).toBe(601);
  });

  test("baselines: counters of dead worker generations are kept, and not counted twice", () => {
    const reg = new RoomRegistry();
    const { participant } = reg.join("r", "a", sink, roomy);
    participant.packetsIn = 70;
    participant.packetsOut = 80;
    const h = participant.handle;
    const applied = reg.applyWorkerStats([
      { room: 1, counters: {} as never, participants: [workerStats(h, { concealed: 5, late: 2 }), workerStats(4242)] },
    ]);
    expect(applied.map((s) => s.participant)).toEqual([h]); // unknown handles are skipped
    const one = () => reg.stats()[0]!.participants[0]!;
    expect(one()).toEqual({
      id: "a",
      speaking: true,
      personalMix: false,
      jitterMs: 3,
      bufferDepthMs: 40,
      lossPercent: 1,
      packetsIn: 70,
      packetsOut: 80,
      concealed: 5,
      late: 2,
      jitterTargetMs: 40,
      jitterEstimateMs: 12.5,
    });
    reg.foldBaselines(); // the worker died
    expect([one().concealed, one().late]).toEqual([5, 2]);
    reg.foldBaselines(); // and its replacement too, before any stats: nothing new to add
    expect([one().concealed, one().late]).toEqual([5, 2]);
    reg.applyWorkerStats([{ room: 1, counters: {} as never, participants: [workerStats(h, { concealed: 3, late: 1 })] }]);
    expect([one().concealed, one().late]).toEqual([8, 3]);
    const fresh = reg.join("r", "b", sink, roomy).participant;
    expect(reg.stats()[0]!.participants.find((p) => p.id === "b")).toMatchObject({
      speaking: false,
      concealed: 0,
      jitterTargetMs: 0,
      jitterEstimateMs: 0,
    });
    expect(fresh.baseConcealed).toBe(0);
  });
});

describe("RoomRegistry mix controls", () => {
  test("the restore list carries listen-only participants, gains and the priority speaker; a leave drops rules about it", () => {
    const reg = new RoomRegistry({ random: () => 0.5 });
    const a = reg.join("r", "a", sink, roomy).participant;
    const b = reg.join("r", "b", sink, roomy).participant;
    const c = reg.join("r", "c", sink, roomy).participant;
    expect(reg.restoreList()[0]!.controls).toBeUndefined(); // all defaults: nothing extra to restore
    a.gains.set("b", 0);
    a.gains.set("c", 0.5);
    c.canSpeak = false;
    a.room.priority = { participantId: "b", duckGain: 0.25 };
    expect(reg.restoreList()[0]!.controls).toEqual({
      listenOnly: [c.handle],
      gains: [
        {
          participant: a.handle,
          gains: [
            [b.handle, 0],
            [c.handle, 0.5],
          ],
        },
      ],
      priority: { participant: b.handle, duckGain: 0.25 },
    });
    reg.leave("r", "b");
    expect([...a.gains.keys()]).toEqual(["c"]);
    expect(a.room.priority).toBeUndefined();
    expect(reg.restoreList()[0]!.controls).toEqual({
      listenOnly: [c.handle],
      gains: [{ participant: a.handle, gains: [[c.handle, 0.5]] }],
    });
  });
});
