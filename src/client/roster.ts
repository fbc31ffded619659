/**
 * The client's view of its room's roster (protocol.md "Roster"): reassembles paged snapshots, applies
 * SPEAKING bit sets to the snapshot they belong to, and says what changed so RoomConnection can emit
 * `participants` and `speaking` events. Pure (no I/O), so it is tested on its own.
 */
import { AgoraError } from "../errors";
import type { RosterEntry, RosterMessage } from "../protocol";

/** One participant of the room as the server lists it. */
export interface Participant {
  /** participant id (the server's, as in JOINED) */
  id: string;
  /** display name ("" = none) */
  name: string;
  speaking: boolean;
  /** this is us */
  self: boolean;
}

export interface RosterChange {
  /** membership or names changed (a new snapshot completed) */
  membership: boolean;
  /** participants whose speaking flag changed, with their new state */
  speaking: Participant[];
}

export class RosterView {
  /** the room's first (up to 256) participants in join order */
  participants: readonly Participant[] = [];
  /** everyone in the room, listed or not */
  total = 0;
  private rev: number | undefined;
  private pending: { rev: number; total: number; listed: number; entries: RosterEntry[] } | undefined;

  constructor(private readonly selfId: string) {}

  /** Applies one ROSTER message; returns what changed, or an AgoraError for one that does not fit. */
  apply(m: RosterMessage): RosterChange | AgoraError {
    if (m.kind === "speaking") {
      if (m.rev !== this.rev || this.pending) return { membership: false, speaking: [] }; // stale: the next snapshot supersedes it
      if (m.speaking.length !== this.participants.length)
        return new AgoraError(
          "WIRE_PROTOCOL",
          `ROSTER speaking update of ${m.speaking.length} flags for ${this.participants.length} participants`,
          {
            where: "roster.listed",
          },
        );
      return this.replace(
        this.participants.map((p, i) => ({ ...p, speaking: m.speaking[i]! })),
        this.total,
        false,
      );
    }
    if (m.index === 0) this.pending = { rev: m.rev, total: m.total, listed: m.listed, entries: [] };
    const p = this.pending;
    if (!p || p.rev !== m.rev || p.entries.length !== m.index || p.listed !== m.listed) {
      this.pending = undefined;
      return new AgoraError("WIRE_PROTOCOL", `ROSTER page ${m.index} of revision ${m.rev} out of sequence`, { where: "roster.index" });
    }
    p.entries.push(...m.entries);
    if (p.entries.length < p.listed) return { membership: false, speaking: [] };
    this.pending = undefined;
    this.rev = p.rev;
    return this.replace(
      p.entries.map((e) => ({ id: e.participantId, name: e.name, speaking: e.speaking, self: e.participantId === this.selfId })),
      p.total,
      true,
    );
  }

  private replace(next: Participant[], total: number, membership: boolean): RosterChange {
    const before = new Map(this.participants.map((p) => [p.id, p.speaking]));
    const speaking = next.filter((p) => (before.get(p.id) ?? false) !== p.speaking);
    // Someone who left while speaking stops speaking.
    const ids = new Set(next.map((p) => p.id));
    for (const p of this.participants) if (p.speaking && !ids.has(p.id)) speaking.push({ ...p, speaking: false });
    this.participants = Object.freeze(next.map((p) => Object.freeze(p)));
    this.total = total;
    return { membership, speaking };
  }
}
