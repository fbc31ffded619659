/**
 * RosterPublisher on a virtual clock: the snapshot on join, coalesced updates (one per 200 ms per session
 * however many changes), speaking updates from the engine's stats, backpressure, the 256 bound.
 */
import { expect, test } from "bun:test";
import { Registry } from "prom-client";
import { decodeMessage, LENGTH_PREFIX_BYTES, MAX_ROSTER_LISTED, type RosterMessage } from "../../src/protocol";
import { type RosterMember, RosterPublisher } from "../../src/rooms/roster";

interface FakeMember extends RosterMember {
  got: RosterMessage[];
  blocked: boolean;
}

function member(id: string, name = "", subscribed = true): FakeMember {
  const m: FakeMember = {
    participantId: id,
    name,
    subscribed,
    got: [],
    blocked: false,
    canSend: () => !m.blocked,
    send(bytes) {
      const r = decodeMessage(bytes.subarray(LENGTH_PREFIX_BYTES));
      if (!r.ok) throw r.error;
      m.got.push(r.value as RosterMessage);
    },
  };
  return m;
}

function setup() {
  let now = 0;
  const speaking = new Map<string, Set<string>>();
  const registry = new Registry();
  const pub = new RosterPublisher({ registry, now: () => now, speaking: () => speaking, intervalMs: 200 });
  return {
    pub,
    speaking,
    registry,
    advance(ms: number) {
      now += ms;
      pub.tick();
    },
  };
}

const ids = (m: RosterMessage) => (m.kind === "snapshot" ? m.entries.map((e) => e.participantId) : []);

test("a subscriber gets the snapshot at once on join, others see the change on their next update", () => {
  const { pub, advance } = setup();
  const a = member("pa", "Ann");
  pub.add("r", a);
  expect(a.got).toHaveLength(1);
  expect(a.got[0]).toMatchObject({
    kind: "snapshot",
    total: 1,
    listed: 1,
    index: 0,
    entries: [{ participantId: "pa", name: "Ann", speaking: false }],
  });
  advance(200);
  const b = member("pb", "Bob");
  pub.add("r", b);
  expect(ids(b.got[0]!)).toEqual(["pa", "pb"]);
  expect(a.got).toHaveLength(1); // not yet: coalesced into the next tick
  advance(200);
  expect(a.got).toHaveLength(2);
  expect(ids(a.got[1]!)).toEqual(["pa", "pb"]);
  expect(a.got[1]!.rev).toBe(b.got[0]!.rev);
  // A 1.0.0 (or non-announcing) participant is listed but never sent anything.
  const c = member("pc", "", false);
  pub.add("r", c);
  advance(200);
  expect(c.got).toEqual([]);
  expect(ids(a.got.at(-1)!)).toEqual(["pa", "pb", "pc"]);
  pub.remove("r", b);
  advance(200);
  expect(ids(a.got.at(-1)!)).toEqual(["pa", "pc"]);
});

test("many changes within one interval are one update; at most one update per 200 ms per session", () => {
  const { pub, speaking, advance } = setup();
  const a = member("pa");
  pub.add("r", a);
  const sentAt: number[] = [0];
  let t = 0;
  for (let i = 0; i < 100; i++) {
    // every 20 ms something changes: a join/leave or a speaking flip
    if (i % 2 === 0) pub.add("r", member(`q${i}`));
    speaking.set("r", new Set(i % 3 === 0 ? ["pa"] : []));
    const before = a.got.length;
    t += 20;
    advance(20);
    if (a.got.length > before) sentAt.push(t);
  }
  for (let i = 1; i < sentAt.length; i++) expect(sentAt[i]! - sentAt[i - 1]!).toBeGreaterThanOrEqual(200);
  expect(sentAt.length).toBeLessThanOrEqual(1 + Math.floor(t / 200));
  expect(sentAt.length).toBeGreaterThanOrEqual(Math.floor(t / 200) - 1);
  // the last update holds the final membership
  const last = a.got.at(-1)!;
  expect(last.kind).toBe("snapshot");
  expect(ids(last)).toHaveLength(51);
});

test("speaking-only changes are SPEAKING updates over the snapshot's order", () => {
  const { pub, speaking, advance } = setup();
  const a = member("pa");
  const b = member("pb");
  pub.add("r", a);
  pub.add("r", b);
  advance(200);
  const n = a.got.length;
  speaking.set("r", new Set(["pb"]));
  advance(200);
  expect(a.got.length).toBe(n + 1);
  expect(a.got.at(-1)).toEqual({ type: "ROSTER", kind: "speaking", rev: a.got[n - 1]!.rev, speaking: [false, true] });
  expect(b.got.at(-1)).toEqual({ type: "ROSTER", kind: "speaking", rev: a.got[n - 1]!.rev, speaking: [false, true] });
  advance(200); // nothing changed: nothing sent
  expect(a.got.length).toBe(n + 1);
  speaking.set("r", new Set());
  advance(200);
  expect(a.got.at(-1)).toMatchObject({ kind: "speaking", speaking: [false, false] });
});

test("a backed-up session is skipped and later gets the current state, not a backlog", async () => {
  const { pub, advance, registry } = setup();
  const a = member("pa");
  pub.add("r", a);
  a.blocked = true;
  for (let i = 0; i < 10; i++) {
    pub.add("r", member(`q${i}`));
    advance(200);
  }
  expect(a.got).toHaveLength(1);
  a.blocked = false;
  advance(200);
  expect(a.got).toHaveLength(2);
  expect(ids(a.got[1]!)).toHaveLength(11);
  const deferred = await registry.getSingleMetric("agora_audio_roster_updates_deferred_total")!.get();
  expect(deferred.values[0]!.value).toBe(10);
});

test("rooms are separate and a roster lists at most 256 participants (total counts all)", () => {
  const { pub, advance } = setup();
  const other = member("px");
  pub.add("other", other);
  for (let i = 0; i < 300; i++) pub.add("big", member(`p${i}`, `name ${i}`, i === 299));
  advance(200);
  expect(ids(other.got.at(-1)!)).toEqual(["px"]);
  const pages = (pubMember: FakeMember) => pubMember.got.filter((m) => m.kind === "snapshot");
  const last = member("late");
  pub.add("big", last);
  const got = pages(last);
  const listed = got.flatMap((m) => (m.kind === "snapshot" ? m.entries : []));
  expect(listed).toHaveLength(MAX_ROSTER_LISTED);
  expect(got.every((m) => m.kind === "snapshot" && m.total === 301 && m.listed === MAX_ROSTER_LISTED)).toBe(true);
  // the late joiner is 301st: not listed, but counted
  expect(listed.some((e) => e.participantId === "late")).toBe(false);
});
