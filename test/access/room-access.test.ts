/**
 * The room service's side of access control (docs/access.md), in process with the routing fake engine so
 * each test sees exactly which frames reach the mix: grants checked on JOIN (FORBIDDEN counted by reason),
 * listeners' and muted speakers' audio dropped, and signed moderation (mute, remove, ban, promote, lock,
 * end) with the rights a moderator's delegation gives and no more. Expiry runs on an injected wall clock.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Registry } from "prom-client";
import { issueGrant, ownedRoomId, Role, signerFromRawPrivateKey, toHex } from "../../src/access";
import { AudioRemoteError, AudioSession, createClientNode, joinRoom, type RoomConnection, WireErrorCode } from "../../src/client";
import { silentLogger } from "../../src/log";
import { Capability, encodeMessage, ModerateAction } from "../../src/protocol";
import { AudioRoomService } from "../../src/rooms";
import { createServerNode, FakeMediaEngine, metricValue, OPUS_TOC_20MS, waitFor } from "../helpers/net-fakes";

setDefaultTimeout(30_000);

const HOUR = 3_600_000;
let wall = Date.UTC(2026, 0, 1);
let server: Libp2p;
let addr: Multiaddr;
let engine: FakeMediaEngine;
let registry: Registry;
let service: AudioRoomService;

interface Person {
  key: PrivateKey;
  pub: Uint8Array;
  node: Libp2p;
}
const people: Person[] = [];
async function person(): Promise<Person> {
  const key = await generateKeyPair("Ed25519");
  const p = { key, pub: signerFromRawPrivateKey(key.raw).publicKey, node: await createClientNode({ privateKey: key }) };
  people.push(p);
  return p;
}

let ownerKey: PrivateKey;
let owner: ReturnType<typeof signerFromRawPrivateKey>;
let alice: Person; // speaker
let bob: Person; // listener
let mod: Person; // delegated moderator
let boss: Person; // the owner itself, joined as moderator

beforeAll(async () => {
  ({ node: server, addr } = await createServerNode());
  engine = new FakeMediaEngine();
  registry = new Registry();
  service = new AudioRoomService({ libp2p: server, engine, registry, logger: silentLogger(), wallClock: () => wall });
  await service.start();
  ownerKey = await generateKeyPair("Ed25519");
  owner = signerFromRawPrivateKey(ownerKey.raw);
  alice = await person();
  bob = await person();
  mod = await person();
  boss = { key: ownerKey, pub: owner.publicKey, node: await createClientNode({ privateKey: ownerKey }) };
  people.push(boss);
});

afterAll(async () => {
  await service?.stop();
  for (const p of people) await p.node.stop();
  await server?.stop();
});

let roomN = 0;
const newRoom = () => ownedRoomId(`r${++roomN}`, owner.publicKey);
const grant = (room: string, role: number, p?: Person, ttl = HOUR) =>
  issueGrant(owner, { room, role, expiresAt: wall + ttl, ...(p ? { subject: p.pub } : {}) });
const opus = (n: number) => Uint8Array.of(OPUS_TOC_20MS, n & 0xff, 1, 2, 3);

function open(p: Person, room: string, g?: Uint8Array): Promise<AudioSession> {
  return AudioSession.open({
    libp2p: p.node,
    target: addr,
    room,
    ...(g ? { grant: g } : {}),
    capabilities: Capability.ACCESS_CONTROL,
    onAccess: () => {},
  });
}

async function refusal(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AudioRemoteError) return { code: err.wireCode, message: err.message };
    throw err;
  }
  throw new Error("the join was accepted");
}

const denied = (reason: string) => metricValue(registry, "agora_access_denied_total", { reason });
const pushedBy = (pid: string) => engine.pushed.filter((f) => f.participant === pid).length;

describe("JOIN to an owned room", () => {
  test("open rooms still take anyone, as speakers; owned ones refuse a JOIN without a grant", async () => {
    const s = await open(alice, "open-room");
    expect(s.joined.role).toBe(Role.SPEAKER);
    expect(s.joined.capabilities! & Capability.ACCESS_CONTROL).toBe(Capability.ACCESS_CONTROL);
    await s.leave();
    const before = await denied("no_grant");
    const r = await refusal(open(alice, newRoom()));
    expect(r.code).toBe(WireErrorCode.FORBIDDEN);
    expect(r.message).toMatch(/must carry a grant/);
    expect(await denied("no_grant")).toBe(before + 1);
  });

  test("forged, expired, wrong-room, wrongly bound and revoked grants are FORBIDDEN, each counted; a valid one joins with its role", async () => {
    const room = newRoom();
    const forged = grant(room, Role.SPEAKER);
    forged[forged.length - 1] = forged[forged.length - 1]! ^ 1;
    const cases: [string, Uint8Array, Person][] = [
      ["bad_signature", forged, alice],
      ["expired", issueGrant(owner, { room, role: Role.SPEAKER, expiresAt: wall - 1 }), alice],
      ["wrong_room", grant(newRoom(), Role.SPEAKER), alice],
      ["wrong_peer", grant(room, Role.SPEAKER, bob), alice],
      ["malformed", Uint8Array.of(1, 9, 9), alice],
    ];
    for (const [reason, g, who] of cases) {
      const before = await denied(reason);
      const r = await refusal(open(who, room, g));
      expect(r.code).toBe(WireErrorCode.FORBIDDEN);
      expect(await denied(reason)).toBe(before + 1);
    }
    const ok = await open(alice, room, grant(room, Role.SPEAKER, alice));
    expect(ok.joined.role).toBe(Role.SPEAKER);
    await ok.leave();
    const l = await open(bob, room, grant(room, Role.LISTENER));
    expect(l.joined.role).toBe(Role.LISTENER);
    await l.leave();
  });

  test("a grant expires on the node's clock", async () => {
    const room = newRoom();
    const g = grant(room, Role.SPEAKER, alice, 1000);
    (await open(alice, room, g)).abort("done");
    wall += 1000;
    expect((await refusal(open(alice, room, g))).message).toMatch(/expired/);
  });
});

describe("roles in the mixer", () => {
  test("a listener's audio never reaches the mix, even when its client sends it; a speaker's does", async () => {
    const room = newRoom();
    const speaker = await open(alice, room, grant(room, Role.SPEAKER, alice));
    const listener = await open(bob, room, grant(room, Role.LISTENER, bob));
    const dropped = await metricValue(registry, "agora_audio_net_frames_dropped_total", { reason: "listener" });
    for (let i = 0; i < 20; i++) {
      listener.sendAudio({ seq: i, timestamp: i * 960, payload: opus(i) });
      speaker.sendAudio({ seq: i, timestamp: i * 960, payload: opus(i) });
    }
    await waitFor(() => pushedBy(speaker.participantId) === 20, "the speaker's 20 frames");
    await waitFor(() => listener.framesSent === 20, "the listener's frames to leave");
    const deadline = performance.now() + 10_000;
    while ((await metricValue(registry, "agora_audio_net_frames_dropped_total", { reason: "listener" })) < dropped + 20) {
      if (performance.now() > deadline) throw new Error("listener frames not dropped");
      await Bun.sleep(10);
    }
    expect(pushedBy(listener.participantId)).toBe(0);
    await speaker.leave();
    await listener.leave();
  });

  test("the SDK does not send a listener's audio", async () => {
    const room = newRoom();
    const conn = await joinRoom({ node: addr, room, grant: grant(room, Role.LISTENER), libp2p: bob.node });
    expect(conn.role).toBe("listener");
    for (let i = 0; i < 5; i++) expect(conn.sendOpus(opus(i))).toBe(true);
    expect(pushedBy(conn.participantId)).toBe(0);
    await conn.leave();
  });
});

describe("moderation", () => {
  async function join(p: Person, room: string, role: number, g?: Uint8Array): Promise<RoomConnection> {
    return joinRoom({ node: addr, room, grant: g ?? grant(room, role, p), libp2p: p.node, identity: p.key });
  }

  test("a moderator mutes and unmutes a speaker: the mute is server-side and told to the room", async () => {
    const room = newRoom();
    const m = await join(mod, room, Role.MODERATOR);
    const a = await join(alice, room, Role.SPEAKER);
    const seen: string[] = [];
    a.on("moderation", (e) => seen.push(`${e.action}:${e.self}`));
    expect(await m.moderate("MUTE", a.participantId)).toEqual({ code: 0, message: "muted" });
    await waitFor(() => a.muted, "the mute notice");
    expect(seen).toEqual(["MUTE:true"]);
    const before = pushedBy(a.participantId);
    a.sendOpus(opus(1)); // the SDK withholds it
    expect(await m.moderate("UNMUTE", a.participantId)).toMatchObject({ code: 0 });
    await waitFor(() => !a.muted, "the unmute notice");
    a.sendOpus(opus(2));
    await waitFor(() => pushedBy(a.participantId) === before + 1, "the unmuted frame");
    await a.leave();
    await m.leave();
  });

  test("a muted speaker's raw frames are dropped by the server", async () => {
    const room = newRoom();
    const m = await join(mod, room, Role.MODERATOR);
    const raw = await open(alice, room, grant(room, Role.SPEAKER, alice));
    expect(await m.moderate("MUTE", raw.participantId)).toMatchObject({ code: 0 });
    const before = await metricValue(registry, "agora_audio_net_frames_dropped_total", { reason: "muted" });
    for (let i = 0; i < 5; i++) raw.sendAudio({ seq: i, timestamp: i * 960, payload: opus(i) });
    const deadline = performance.now() + 10_000;
    while ((await metricValue(registry, "agora_audio_net_frames_dropped_total", { reason: "muted" })) < before + 5) {
      if (performance.now() > deadline) throw new Error("muted frames not dropped");
      await Bun.sleep(10);
    }
    expect(pushedBy(raw.participantId)).toBe(0);
    await raw.leave();
    await m.leave();
  });

  test("a removed participant is out and cannot rejoin with the same grant; a key ban holds for any grant", async () => {
    const room = newRoom();
    const m = await join(mod, room, Role.MODERATOR);
    const aliceGrant = grant(room, Role.SPEAKER, alice);
    const a = await join(alice, room, Role.SPEAKER, aliceGrant);
    const left = new Promise<number | undefined>((resolve) =>
      a.on("left", ({ error }) => resolve(error instanceof AudioRemoteError ? error.wireCode : undefined)),
    );
    expect(await m.moderate("REMOVE", a.participantId)).toMatchObject({ code: 0, message: "removed" });
    expect(await left).toBe(WireErrorCode.FORBIDDEN);
    expect((await refusal(join(alice, room, Role.SPEAKER, aliceGrant))).message).toMatch(/revoked/);
    // A new grant from the owner (another expiry: the same fields would sign to the same grant, the same
    // id) admits her again; then a key ban refuses every grant for her key.
    const again = await join(alice, room, Role.SPEAKER, grant(room, Role.SPEAKER, alice, HOUR + 1));
    expect(await m.moderate("BAN_KEY", again.participantId, wall + HOUR)).toMatchObject({ code: 0 });
    await waitFor(() => !again.isOpen, "the banned participant's removal");
    expect((await refusal(join(alice, room, Role.SPEAKER))).message).toMatch(/revoked|banned/);
    expect((await refusal(join(alice, room, Role.LISTENER, grant(room, Role.LISTENER)))).message).toMatch(/banned/);
    await m.leave();
  });

  test("promote: a listener becomes a speaker and is mixed", async () => {
    const room = newRoom();
    const m = await join(mod, room, Role.MODERATOR);
    const b = await join(bob, room, Role.LISTENER);
    b.sendOpus(opus(1));
    expect(await m.moderate("PROMOTE", b.participantId)).toMatchObject({ code: 0 });
    await waitFor(() => b.role === "speaker", "the promotion notice");
    b.sendOpus(opus(2));
    await waitFor(() => pushedBy(b.participantId) === 1, "the promoted listener's frame");
    await b.leave();
    await m.leave();
  });

  test("lock admits moderators only; end removes everyone and keeps the room locked", async () => {
    const room = newRoom();
    const m = await join(mod, room, Role.MODERATOR);
    const a = await join(alice, room, Role.SPEAKER);
    expect(await m.moderate("LOCK")).toMatchObject({ code: 0 });
    const before = await denied("locked");
    expect((await refusal(join(bob, room, Role.LISTENER))).message).toMatch(/locked/);
    expect(await denied("locked")).toBe(before + 1);
    const boss1 = await join(boss, room, Role.MODERATOR);
    const ends = [a, m, boss1].map((c) => new Promise<void>((resolve) => c.on("left", () => resolve())));
    expect(await boss1.moderate("END")).toMatchObject({ code: 0 });
    await Promise.all(ends);
    expect((await refusal(join(alice, room, Role.SPEAKER))).message).toMatch(/locked/);
  });

  test("a moderator cannot exceed the owner's delegation; signatures and request ids are checked", async () => {
    const room = newRoom();
    const modGrant = grant(room, Role.MODERATOR, mod);
    // The delegated moderator's own delegate (a listener) cannot moderate at all.
    const sub = issueGrant(signerFromRawPrivateKey(mod.key.raw), {
      room,
      role: Role.LISTENER,
      expiresAt: wall + HOUR,
      subject: bob.pub,
      parent: modGrant,
    });
    const m = await join(mod, room, Role.MODERATOR, modGrant);
    const top = await join(boss, room, Role.MODERATOR);
    const b = await join(bob, room, Role.LISTENER, sub);
    expect(b.role).toBe("listener");
    // the delegated moderator cannot act on the owner
    expect(await m.moderate("REMOVE", top.participantId)).toMatchObject({ code: WireErrorCode.FORBIDDEN });
    // a listener (and a speaker) cannot moderate
    expect(await b.moderate("MUTE", m.participantId)).toMatchObject({ code: WireErrorCode.FORBIDDEN });
    // the owner can act on the delegated moderator
    expect(await top.moderate("MUTE", m.participantId)).toMatchObject({ code: 0 });
    // a forged signature and a replayed request id are refused, on the raw wire
    const raw = await open(mod, room, modGrant);
    const got: unknown[] = [];
    (raw as unknown as { opts: { onAccess: (x: unknown) => void } }).opts.onAccess = (x) => got.push(x);
    const sig = new Uint8Array(64);
    raw.sendModerate({ type: "MODERATE", requestId: 1, action: ModerateAction.LOCK, target: "", until: 0, signature: sig });
    await waitFor(() => got.length === 1, "the answer to a forged MODERATE");
    expect(got[0]).toMatchObject({ type: "MODERATE_RESULT", requestId: 1, code: WireErrorCode.FORBIDDEN });
    const { signModerate } = await import("../../src/access");
    const signed = signModerate(
      signerFromRawPrivateKey(mod.key.raw),
      { room, participantId: raw.participantId },
      { requestId: 5, action: ModerateAction.UNLOCK, target: "", until: 0 },
    );
    raw.sendModerate(signed);
    raw.sendModerate(signed);
    await waitFor(() => got.filter((x) => (x as { type: string }).type === "MODERATE_RESULT").length === 3, "both answers");
    const results = got.filter((x) => (x as { type: string }).type === "MODERATE_RESULT") as { code: number; message: string }[];
    expect(results[1]!.code).toBe(0);
    expect(results[2]).toMatchObject({ code: WireErrorCode.FORBIDDEN, message: expect.stringMatching(/already used/) });
    expect(await metricValue(registry, "agora_access_moderation_total", { result: "bad_signature" })).toBeGreaterThan(0);
    for (const c of [b, top, m]) await c.leave();
    await raw.leave();
    expect(toHex(mod.pub)).toHaveLength(64);
  });

  test("MODERATE on a 1.0.0 session is a protocol error", async () => {
    const s = await AudioSession.open({ libp2p: alice.node, target: addr, room: "open-room", protocol: "/agora/audio/1.0.0" });
    const closed = new Promise<unknown>(
      (resolve) => ((s as unknown as { opts: { onClose: (e: unknown) => void } }).opts.onClose = resolve),
    );
    (s as unknown as { queue: { send: (b: Uint8Array, a: boolean) => void } }).queue.send(
      encodeMessage({ type: "MODERATE", requestId: 1, action: 6, target: "", until: 0, signature: new Uint8Array(64) }),
      false,
    );
    const err = await closed;
    expect(err).toBeInstanceOf(AudioRemoteError);
    expect((err as AudioRemoteError).wireCode).toBe(WireErrorCode.MALFORMED);
  });
});

describe("handover to a successor mixer", () => {
  test("roles survive as the grants say, promotions and mutes as carried, bans through the shared revocations; nothing more", async () => {
    const { MemoryRevocationStore } = await import("../../src/access");
    const records = new MemoryRevocationStore(); // stands for the room record both mixers read
    const first = await createServerNode();
    const second = await createServerNode();
    const e1 = new FakeMediaEngine();
    const e2 = new FakeMediaEngine();
    const token = Uint8Array.of(7, 7, 7);
    let carried: ReturnType<AudioRoomService["accessSnapshot"]> | undefined;
    const m1 = new AudioRoomService({
      libp2p: first.node,
      engine: e1,
      registry: new Registry(),
      logger: silentLogger(),
      wallClock: () => wall,
      revocations: records,
    });
    // The successor trusts only the token the placement subsystem verified (here: these exact bytes).
    const m2 = new AudioRoomService({
      libp2p: second.node,
      engine: e2,
      registry: new Registry(),
      logger: silentLogger(),
      wallClock: () => wall,
      revocations: records,
      carriedAccess: (_room, t) => (Buffer.from(t).equals(Buffer.from(token)) ? carried : undefined),
    });
    await m1.start();
    await m2.start();
    try {
      const room = newRoom();
      const g = {
        mod: grant(room, Role.MODERATOR, mod),
        alice: grant(room, Role.SPEAKER, alice),
        bob: grant(room, Role.LISTENER, bob),
        boss: grant(room, Role.LISTENER, boss),
      };
      const at = (target: Multiaddr, p: Person, gr: Uint8Array, moveToken?: Uint8Array) =>
        AudioSession.open({
          libp2p: p.node,
          target,
          room,
          grant: gr,
          ...(moveToken ? { moveToken } : {}),
          capabilities: Capability.ACCESS_CONTROL,
          onAccess: () => {},
        });
      const m = await joinRoom({ node: first.addr, room, grant: g.mod, libp2p: mod.node, identity: mod.key });
      const a = await at(first.addr, alice, g.alice);
      const b = await at(first.addr, bob, g.bob);
      const x = await at(first.addr, boss, g.boss);
      expect(await m.moderate("PROMOTE", b.participantId)).toMatchObject({ code: 0 });
      expect(await m.moderate("MUTE", a.participantId)).toMatchObject({ code: 0 });
      expect(await m.moderate("REMOVE", x.participantId)).toMatchObject({ code: 0 });
      expect(await m.moderate("LOCK")).toMatchObject({ code: 0 });
      carried = m1.accessSnapshot(room);
      expect(carried).toMatchObject({ room, locked: true });
      expect(carried.participants).toHaveLength(2);
      // Everyone rejoins at the successor with its grant and the token.
      const a2 = await at(second.addr, alice, g.alice, token);
      const b2 = await at(second.addr, bob, g.bob, token);
      const m2s = await at(second.addr, mod, g.mod, token);
      expect([a2.joined.role, b2.joined.role, m2s.joined.role]).toEqual([Role.SPEAKER, Role.SPEAKER, Role.MODERATOR]);
      // the mute holds: alice's frames are dropped; bob (promoted) is mixed
      a2.sendAudio({ seq: 1, timestamp: 960, payload: opus(1) });
      b2.sendAudio({ seq: 1, timestamp: 960, payload: opus(1) });
      await waitFor(() => e2.pushed.some((f) => f.participant === b2.participantId), "the promoted listener's frame at the successor");
      expect(e2.pushed.some((f) => f.participant === a2.participantId)).toBe(false);
      // the removed one stays out (the revocation is in the shared record), the lock holds for newcomers,
      // and a token does not turn an unknown grant into anything: bob's second grant is a listener's, locked out
      expect(await refusal(at(second.addr, boss, g.boss, token))).toMatchObject({ code: WireErrorCode.FORBIDDEN });
      const bobOther = grant(room, Role.LISTENER, bob, HOUR + 5);
      expect((await refusal(at(second.addr, bob, bobOther, token))).message).toMatch(/locked/);
      // a wrong token: exactly the grant's role (bob is a listener again), whatever the hook would carry
      carried = { room, locked: false, participants: [{ linkId: "00", promoted: true, muted: false }] };
      const mUnlock = await joinRoom({ node: second.addr, room, grant: g.mod, libp2p: mod.node, identity: mod.key });
      expect(await mUnlock.moderate("UNLOCK")).toMatchObject({ code: 0 });
      const b3 = await at(second.addr, bob, bobOther, Uint8Array.of(1));
      expect(b3.joined.role).toBe(Role.LISTENER);
      for (const c of [a, b, a2, b2, m2s, b3]) c.abort("done");
      await m.leave();
      await mUnlock.leave();
    } finally {
      await m1.stop();
      await m2.stop();
      await first.node.stop();
      await second.node.stop();
    }
  });
});
