/**
 * RosterPublisher: keeps each room's participant list (join order, display names) and tells subscribed
 * sessions (1.1.0 + Capability.ROSTER) who is there and who speaks, as protocol.md "Roster" describes.
 *
 * State-based rather than event-based: a session is sent the difference between what it last got and
 * the room's state now, at most once per `intervalMs` (200 ms: ≤ 5 updates/s), so a burst of joins,
 * leaves or speaking changes costs one update, a session whose send queue is backed up is simply skipped
 * until it drains (it gets the then-current state, never a backlog), and nothing is queued per change.
 * Pages of a snapshot are encoded once per room and revision and shared by every subscriber.
 */
import { Counter, type Registry } from "prom-client";
import { encodeMessage, encodeRosterSnapshot, MAX_ROSTER_LISTED, type RosterEntry } from "../protocol";

export interface RosterMember {
  readonly participantId: string;
  readonly name: string;
  /** receives ROSTER messages (both sides announced Capability.ROSTER) */
  readonly subscribed: boolean;
  /** false while the session's send queue holds anything (the update waits, superseded by later state) */
  canSend(): boolean;
  /** queues one control message */
  send(bytes: Uint8Array): void;
}

export interface RosterPublisherOptions {
  registry: Registry;
  /** monotonic ms */
  now: () => number;
  /** speaking participant ids by room (the media engine's latest room statistics) */
  speaking: () => Map<string, Set<string>>;
  /** minimum spacing of updates to one session (default 200 ms) */
  intervalMs?: number;
}

interface RoomRoster {
  readonly members: Set<RosterMember>;
  rev: number;
  /** speaking flags of the listed members, as a "0101…" key */
  speakingKey: string;
  subscribers: number;
  /** snapshot pages of (rev, speakingKey), built on first need */
  pages?: { key: string; bytes: Uint8Array[] };
}

interface Delivery {
  sentAt: number;
  rev: number;
  speakingKey: string;
}

export class RosterPublisher {
  private readonly rooms = new Map<string, RoomRoster>();
  private readonly deliveries = new Map<RosterMember, Delivery>();
  private readonly intervalMs: number;
  private readonly sent: Counter<"kind">;
  private readonly deferred: Counter;
  private timer: ReturnType<typeof setInterval> | undefined;
  private subscribers = 0;
  /** speaking ids of the last tick: a join reuses them instead of asking the engine (a burst of joins stays O(n)) */
  private lastSpeaking = new Map<string, Set<string>>();

  constructor(private readonly opts: RosterPublisherOptions) {
    this.intervalMs = opts.intervalMs ?? 200;
    this.sent =
      (opts.registry.getSingleMetric("agora_audio_roster_messages_sent_total") as Counter<"kind"> | undefined) ??
      new Counter({
        name: "agora_audio_roster_messages_sent_total",
        help: "ROSTER messages sent to participants, by kind (snapshot pages, speaking updates)",
        labelNames: ["kind"],
        registers: [opts.registry],
      });
    this.deferred =
      (opts.registry.getSingleMetric("agora_audio_roster_updates_deferred_total") as Counter | undefined) ??
      new Counter({
        name: "agora_audio_roster_updates_deferred_total",
        help: "Roster updates put off because the participant's send queue was backed up (sent later, current)",
        registers: [opts.registry],
      });
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A participant joined `room` (after its JOINED was queued): a subscriber gets the snapshot at once. */
  add(room: string, member: RosterMember): void {
    let r = this.rooms.get(room);
    if (!r) {
      r = { members: new Set(), rev: 0, speakingKey: "", subscribers: 0 };
      this.rooms.set(room, r);
    }
    r.members.add(member);
    r.rev = (r.rev + 1) >>> 0;
    r.speakingKey = this.speakingKeyOf(r, this.lastSpeaking.get(room));
    if (!member.subscribed) return;
    r.subscribers++;
    this.subscribers++;
    const d: Delivery = { sentAt: Number.NEGATIVE_INFINITY, rev: -1, speakingKey: "" };
    this.deliveries.set(member, d);
    this.deliver(r, member, d, this.opts.now());
  }

  remove(room: string, member: RosterMember): void {
    const r = this.rooms.get(room);
    if (!r?.members.delete(member)) return;
    r.rev = (r.rev + 1) >>> 0;
    if (this.deliveries.delete(member)) {
      r.subscribers--;
      this.subscribers--;
    }
    if (r.members.size === 0) this.rooms.delete(room);
  }

  /** Sends what changed to every subscriber not updated within the interval. Runs every `intervalMs`. */
  tick(): void {
    if (this.subscribers === 0) return;
    const now = this.opts.now();
    const speaking = this.opts.speaking();
    this.lastSpeaking = speaking;
    for (const [room, r] of this.rooms) {
      if (r.subscribers === 0) continue;
      r.speakingKey = this.speakingKeyOf(r, speaking.get(room));
      for (const m of r.members) {
        const d = this.deliveries.get(m);
        if (d && now - d.sentAt >= this.intervalMs - 1) this.deliver(r, m, d, now);
      }
    }
  }

  private speakingKeyOf(r: RoomRoster, speaking: Set<string> | undefined): string {
    let key = "";
    for (const m of r.members) {
      if (key.length >= MAX_ROSTER_LISTED) break;
      key += speaking?.has(m.participantId) ? "1" : "0";
    }
    return key;
  }

  private deliver(r: RoomRoster, m: RosterMember, d: Delivery, now: number): void {
    const membership = d.rev !== r.rev;
    if (!membership && d.speakingKey === r.speakingKey) return;
    if (!m.canSend()) {
      this.deferred.inc();
      return;
    }
    if (membership) {
      const pages = this.pagesOf(r);
      for (const page of pages) m.send(page);
      this.sent.inc({ kind: "snapshot" }, pages.length);
    } else {
      m.send(encodeMessage({ type: "ROSTER", kind: "speaking", rev: r.rev, speaking: [...r.speakingKey].map((c) => c === "1") }));
      this.sent.inc({ kind: "speaking" });
    }
    d.sentAt = now;
    d.rev = r.rev;
    d.speakingKey = r.speakingKey;
  }

  private pagesOf(r: RoomRoster): Uint8Array[] {
    const key = `${r.rev}:${r.speakingKey}`;
    if (r.pages?.key === key) return r.pages.bytes;
    const entries: RosterEntry[] = [];
    let i = 0;
    for (const m of r.members) {
      if (i >= MAX_ROSTER_LISTED) break;
      entries.push({ participantId: m.participantId, name: m.name, speaking: r.speakingKey[i] === "1" });
      i++;
    }
    const bytes = encodeRosterSnapshot(r.rev, Math.min(r.members.size, 0xffff), entries);
    r.pages = { key, bytes };
    return bytes;
  }
}
