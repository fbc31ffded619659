/**
 * Revocations of an owned room: grant link ids (32 hex chars) and banned keys (64 hex chars), each until a
 * unix ms time. They belong in the room record (its signed `revocations` field, at most 64 entries), so a
 * banned grant is refused on any mixer the room moves to; the room service only talks to this interface, so
 * the record store can implement it once the room directory lands. The in-memory list here is what a
 * mixer holds meanwhile (and the shape the record field carries).
 */

export const MAX_REVOCATIONS_PER_ROOM = 64;
export const MAX_REVOCATION_ID_CHARS = 64;
/** Rooms whose lists one in-memory store holds: anyone can own rooms, so the number of lists is bounded too. */
export const MAX_REVOCATION_ROOMS = 10_000;
const ID_RE = /^[0-9a-f]{1,64}$/;

export interface Revocation {
  /** a grant link id (32 hex chars) or a raw Ed25519 key in hex (64 chars) */
  id: string;
  /** unix ms; the entry is void (and dropped) after it */
  until: number;
}

export type RevocationCheck = (id: string, nowMs: number) => boolean;

/** What the room service needs: to ask, to add, to list (the record publisher copies the list). */
export interface RevocationStore {
  isRevoked(room: string, id: string, nowMs: number): boolean;
  /** Adds (or extends) an entry; returns false when the list is full of entries outliving it. */
  revoke(room: string, entry: Revocation, nowMs: number): boolean;
  list(room: string, nowMs: number): Revocation[];
}

export function checkRevocation(entry: Revocation): string | undefined {
  if (typeof entry.id !== "string" || !ID_RE.test(entry.id))
    return `revocation id must be 1-${MAX_REVOCATION_ID_CHARS} lowercase hex characters`;
  if (!Number.isSafeInteger(entry.until) || entry.until <= 0) return "revocation until must be a unix time in ms";
  return undefined;
}

export class MemoryRevocationStore implements RevocationStore {
  private readonly rooms = new Map<string, Map<string, number>>();

  constructor(private readonly maxRooms = MAX_REVOCATION_ROOMS) {}

  isRevoked(room: string, id: string, nowMs: number): boolean {
    const until = this.rooms.get(room)?.get(id);
    return until !== undefined && until > nowMs;
  }

  revoke(room: string, entry: Revocation, nowMs: number): boolean {
    const err = checkRevocation(entry);
    if (err) throw new TypeError(err);
    let m = this.rooms.get(room);
    if (!m) {
      if (this.rooms.size >= this.maxRooms) this.evictRoom(nowMs);
      m = new Map();
      this.rooms.set(room, m);
    }
    for (const [id, until] of m) if (until <= nowMs) m.delete(id);
    const prev = m.get(entry.id);
    if (prev !== undefined) {
      m.set(entry.id, Math.max(prev, entry.until));
      return true;
    }
    if (m.size >= MAX_REVOCATIONS_PER_ROOM) {
      // Full: the entry that lapses first makes room, if it lapses before the new one.
      let soonest: [string, number] | undefined;
      for (const e of m) if (!soonest || e[1] < soonest[1]) soonest = e;
      if (!soonest || soonest[1] >= entry.until) return false;
      m.delete(soonest[0]);
    }
    m.set(entry.id, entry.until);
    return true;
  }

  /** Makes room for one more list: drops lists whose entries all lapsed, else the oldest list. */
  private evictRoom(nowMs: number): void {
    for (const [room, m] of this.rooms) if ([...m.values()].every((until) => until <= nowMs)) this.rooms.delete(room);
    if (this.rooms.size >= this.maxRooms) this.rooms.delete(this.rooms.keys().next().value!);
  }

  list(room: string, nowMs: number): Revocation[] {
    const m = this.rooms.get(room);
    if (!m) return [];
    return [...m].filter(([, until]) => until > nowMs).map(([id, until]) => ({ id, until }));
  }
}
