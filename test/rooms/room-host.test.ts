/**
 * Room placement on real libp2p nodes in one process: three mixers (AudioRoomService + RoomHost over a shared
 * in-memory directory), participants joining by name through RoomNavigator. Claims, REDIRECTs, drain
 * handover with move tokens, lost claims after a partition, and forged MOVE/REDIRECT/tokens.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { createLibp2p } from "libp2p";
import { Registry } from "prom-client";
import { type AudioSession, type MixerCandidate, type RoomLocator, RoomNavigator } from "../../src/client";
import { silentLogger } from "../../src/log";
import {
  AUDIO_PROTOCOL,
  AUDIO_PROTOCOL_1_1,
  Capability,
  encodeMessage,
  MoveReason,
  rankPlacement,
  WIRE_VERSION_1_1,
} from "../../src/protocol";
import { AudioRoomService, decodeMoveToken, RoomHost, type RoomHostRecord, signMoveToken } from "../../src/rooms";
import { agoraTransportStack } from "../../src/transport";
import { createBareClientNode, FakeMediaEngine, metricValue, openRaw, waitFor } from "../helpers/net-fakes";
import { MemoryRoomDirectory } from "../helpers/room-directory";
import { VirtualClock } from "../helpers/virtual-clock";

setDefaultTimeout(30_000);

interface Mixer {
  node: Libp2p;
  key: PrivateKey;
  peer: string;
  addr: string;
  engine: FakeMediaEngine;
  registry: Registry;
  host: RoomHost;
  service: AudioRoomService;
}

const stops: (() => unknown)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

async function mixerNode(): Promise<{ node: Libp2p; key: PrivateKey }> {
  const key = await generateKeyPair("Ed25519");
  const node = await createLibp2p({
    privateKey: key,
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    services: { identify: identify() },
  });
  stops.push(() => node.stop());
  return { node, key };
}

async function network(n: number, dir = new MemoryRoomDirectory()): Promise<{ dir: MemoryRoomDirectory; mixers: Mixer[] }> {
  const mixers: Mixer[] = [];
  const dead = new Set<string>();
  for (let i = 0; i < n; i++) {
    const { node, key } = await mixerNode();
    const peer = node.peerId.toString();
    const addr = node
      .getMultiaddrs()
      .find((a) => a.toString().includes("/ip4/127.0.0.1/"))!
      .toString()
      .replace(/\/p2p\/.*$/, "");
    const engine = new FakeMediaEngine(1000);
    const registry = new Registry();
    const host = new RoomHost({
      directory: dir.port(peer, "eu-west", () => [addr]),
      selfPeerId: peer,
      privateKey: key,
      region: "eu-west",
      selfAddrs: () => [addr],
      candidates: async () => dir.mixers.filter((m) => !dead.has(m.peer_id)),
      isAlive: async (p) => !dead.has(p) && dir.mixers.some((m) => m.peer_id === p),
      registry,
      logger: silentLogger(),
    });
    const service = new AudioRoomService({ libp2p: node, engine, registry, logger: silentLogger(), host });
    await service.start();
    stops.push(() => service.stop());
    mixers.push({ node, key, peer, addr, engine, registry, host, service });
    dir.mixers.push({
      peer_id: peer,
      region: "eu-west",
      status: "online",
      capabilities: ["mixer"],
      current_load: 0,
      max_clients: 100,
      listen_addr: [addr],
    });
  }
  return { dir, mixers };
}

async function client(): Promise<Libp2p> {
  const c = await createBareClientNode();
  stops.push(() => c.stop());
  return c;
}

function byPeer(mixers: Mixer[], peer: string | undefined): Mixer {
  const m = mixers.find((x) => x.peer === peer);
  if (!m) throw new Error(`no mixer ${peer}`);
  return m;
}

function members(m: Mixer, room: string): number {
  return m.service.hostedRooms().get(room) ?? 0;
}

describe("room host: placement, REDIRECT, claims", () => {
  test("a participant joining by name lands on the placement's mixer, which claims the room (epoch 1 in JOINED)", async () => {
    const { dir, mixers } = await network(3);
    const nav = new RoomNavigator({ libp2p: await client(), room: "standup", locator: dir.locator(), region: "eu-west" });
    const s = await nav.open({});
    const expected = rankPlacement("standup", "eu-west", dir.mixers)[0]!.peer_id;
    expect(nav.host).toBe(expected);
    expect(s.joined.capabilities! & Capability.ROOM_DIRECTORY).toBe(Capability.ROOM_DIRECTORY);
    expect(s.joined.epoch).toBe(1);
    await waitFor(() => dir.winner("standup")?.host === expected, "the claim in the directory");
    expect(byPeer(mixers, expected).host.rooms()).toEqual([{ room: "standup", epoch: 1 }]);
    await s.leave();
    await waitFor(() => dir.winner("standup") === undefined, "the record released when the room emptied");
  });

  test("a mixer that does not host the room REDIRECTs to the live host; the client follows once", async () => {
    const { dir, mixers } = await network(3);
    const [first, other] = rankPlacement("r-redirect", "eu-west", dir.mixers);
    // The room already lives on the placement's second choice (claimed earlier, e.g. before a restart).
    const hostM = byPeer(mixers, other!.peer_id);
    const a = new RoomNavigator({ libp2p: await client(), room: "r-redirect", locator: dir.locator(), region: "eu-west" });
    await dir.port(hostM.peer, "eu-west", () => [hostM.addr]).claim("r-redirect", 3, 0);
    const s = await a.open({});
    expect(a.host).toBe(hostM.peer);
    expect(a.stats.redirectsFollowed).toBe(0); // resolve found the record first
    // A participant that (wrongly) dials the first choice is redirected.
    const firstM = byPeer(mixers, first!.peer_id);
    // force the first dial to the first choice: a locator that hides the record on its first call
    let calls = 0;
    const hiding = {
      resolve: async (room: string) => (calls++ === 0 ? undefined : dir.locator().resolve(room)),
      mixers: dir.locator().mixers,
    };
    const c = new RoomNavigator({ libp2p: await client(), room: "r-redirect", locator: hiding, region: "eu-west" });
    const sc = await c.open({});
    expect(c.host).toBe(hostM.peer);
    expect(c.stats.redirectsFollowed).toBe(1);
    expect(await metricValue(firstM.registry, "agora_audio_net_joins_total", { result: "redirect" })).toBe(1);
    expect(sc.joined.epoch).toBe(3);
    expect(members(hostM, "r-redirect")).toBe(2);
    expect(members(firstM, "r-redirect")).toBe(0);
    await s.leave();
    await sc.leave();
  });

  test("concurrent first joiners through different views all land on one mixer", async () => {
    const { dir, mixers } = await network(3);
    const navs: RoomNavigator[] = [];
    const sessions: AudioSession[] = [];
    const lib = await client();
    // Ten joiners at once; half of them see the mixers in another order (the rule ignores order).
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const locator = dir.locator();
        const nav = new RoomNavigator({
          libp2p: lib,
          room: "crowd",
          locator: { resolve: locator.resolve, mixers: async (r) => (i % 2 ? (await locator.mixers(r)).reverse() : locator.mixers(r)) },
          region: "eu-west",
        });
        navs.push(nav);
        sessions.push(await nav.open({}));
      }),
    );
    const hosts = new Set(navs.map((n) => n.host));
    expect(hosts.size).toBe(1);
    expect(members(byPeer(mixers, [...hosts][0]), "crowd")).toBe(10);
    await Promise.all(sessions.map((s) => s.leave()));
  });

  test("a 1.0.0 client (or one without ROOM_DIRECTORY) is served where it asks, and gets no REDIRECT", async () => {
    const { dir, mixers } = await network(2);
    const [, other] = rankPlacement("legacy", "eu-west", dir.mixers);
    const hostM = byPeer(mixers, other!.peer_id);
    await dir.port(hostM.peer, "eu-west", () => [hostM.addr]).claim("legacy", 1, 0);
    const elsewhere = mixers.find((m) => m !== hostM)!;
    const raw = await openRaw(await client(), elsewhere.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL);
    raw.send(encodeMessage({ type: "JOIN", version: 1, room: "legacy", name: "" }));
    await waitFor(() => raw.messages.length > 0, "an answer");
    expect(raw.messages[0]!.type).toBe("JOINED");
    const raw11 = await openRaw(await client(), elsewhere.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL_1_1);
    raw11.send(encodeMessage({ type: "JOIN", version: WIRE_VERSION_1_1, room: "legacy", name: "", capabilities: 0 }));
    await waitFor(() => raw11.messages.length > 0, "an answer");
    expect(raw11.messages[0]!.type).toBe("JOINED");
    raw.stream.abort(new Error("done"));
    raw11.stream.abort(new Error("done"));
  });
});

describe("room host: handover", () => {
  test("drain: every participant gets MOVE with a token, joins the successor before leaving, none dropped", async () => {
    const { dir, mixers } = await network(3);
    const lib = await client();
    const navs: RoomNavigator[] = [];
    const moved: AudioSession[] = [];
    const closedWithError: string[] = [];
    for (let i = 0; i < 5; i++) {
      const nav = new RoomNavigator({ libp2p: lib, room: "drain-me", locator: dir.locator(), region: "eu-west" });
      await nav.open({ onMoved: (s) => moved.push(s), onClose: (e) => e && closedWithError.push(e.message) });
      navs.push(nav);
    }
    const oldHost = byPeer(mixers, navs[0]!.host);
    const succPeer = rankPlacement("drain-me", "eu-west", dir.mixers, [oldHost.peer])[0]!.peer_id;
    const succ = byPeer(mixers, succPeer);
    oldHost.service.setDraining(true);
    expect(await oldHost.host.handOverAll()).toEqual(["drain-me"]);
    expect(dir.records.get("drain-me")?.get(oldHost.peer)?.status).toBe("handing-over");
    await waitFor(() => moved.length === 5, "all five moved");
    await waitFor(() => members(oldHost, "drain-me") === 0, "the old host empty");
    expect(members(succ, "drain-me")).toBe(5);
    expect(navs.every((n) => n.host === succPeer)).toBe(true);
    expect(closedWithError).toEqual([]);
    // each followed MOVE's phases are recorded beside its gap (bench/rooms reports the tail by phase)
    await waitFor(() => navs.every((n) => n.stats.movePhasesMs.length === 1), "each move's phases recorded");
    for (const n of navs) {
      const [ph] = n.stats.movePhasesMs;
      expect(ph!.joinMs).toBeGreaterThanOrEqual(0);
      expect(ph!.firstFrameMs).toBeGreaterThanOrEqual(0);
      expect(ph!.gapMs).toBe(n.stats.moveGapsMs[0]!);
    }
    // the first token makes the successor the host; later joiners may be admitted as the host's own room
    expect(await metricValue(succ.registry, "agora_rooms_move_tokens_total", { result: "accepted" })).toBeGreaterThanOrEqual(1);
    expect(succ.host.epochOf("drain-me")).toBe(2);
    expect(moved.every((s) => s.joined.epoch === 2)).toBe(true);
    await waitFor(() => dir.winner("drain-me")?.host === succPeer, "the successor's record wins");
    expect(dir.winner("drain-me")?.epoch).toBe(2);
    // A late joiner that reaches the draining host is sent to the successor.
    const raw = await openRaw(lib, oldHost.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL_1_1);
    raw.send(encodeMessage({ type: "JOIN", version: 2, room: "drain-me", name: "", capabilities: Capability.ROOM_DIRECTORY }));
    await waitFor(() => raw.messages.length > 0, "an answer");
    expect(raw.messages[0]).toMatchObject({ type: "REDIRECT", hostPeerId: succPeer, epoch: 2 });
    for (const n of navs) await n.session?.leave();
  });

  test("a MOVE switches at a successor frame that comes while the old host's frames still flow: old frames read after a stalled loop are played, no hole", async () => {
    const { dir, mixers } = await network(2);
    const lib = await client();
    const clock = new VirtualClock();
    const heard: number[] = []; // the first payload byte of each delivered frame: 1 old host, 2 successor
    let moved: AudioSession | undefined;
    const nav = new RoomNavigator({ libp2p: lib, room: "switch", locator: dir.locator(), region: "eu-west", clock });
    await nav.open({ clock, onAudio: (f) => heard.push(f.payload[0]!), onMoved: (s) => (moved = s) });
    const oldHost = byPeer(mixers, nav.host);
    const succ = mixers.find((m) => m !== oldHost)!;
    oldHost.service.setDraining(true);
    expect(await oldHost.host.handOverAll()).toEqual(["switch"]);
    await waitFor(() => moved !== undefined, "moved to the successor");
    const frame = (from: number, seq: number) => ({ seq, timestamp: seq * 960, payload: new Uint8Array([from, 0, 0]) });
    const emitOld = (seq: number) => oldHost.engine.emit("switch", oldHost.engine.members("switch")[0]!, frame(1, seq));
    const emitNew = (seq: number) => succ.engine.emit("switch", succ.engine.members("switch")[0]!, frame(2, seq));
    emitOld(1);
    await waitFor(() => heard.length === 1, "an old frame");
    await clock.advance(20);
    emitOld(2);
    await waitFor(() => heard.length === 2, "a second old frame");
    // The client's loop stalls 200 ms; then the successor's first frame is read before an old one queued
    // behind it. Switching there would leave that old frame unplayed: a 200 ms hole.
    await clock.advance(200);
    emitNew(1);
    await waitFor(() => moved!.framesReceived === 1, "the successor's first frame read");
    expect(heard).toEqual([1, 1]); // passed over: the old host's frames were not flowing as far as we know
    emitOld(3);
    await waitFor(() => heard.length === 3, "the queued old frame played");
    await clock.advance(20);
    emitNew(2);
    await waitFor(() => heard.length === 4, "the switch");
    expect(heard).toEqual([1, 1, 1, 2]);
    expect(nav.stats.moveGapsMs).toEqual([20]);
    await waitFor(() => members(oldHost, "switch") === 0, "the old host left");
    await nav.session?.leave();
  });

  test("a MOVE whose old host has stopped sending switches at the successor's third frame at the latest", async () => {
    const { dir, mixers } = await network(2);
    const lib = await client();
    const clock = new VirtualClock();
    const heard: number[] = [];
    let moved: AudioSession | undefined;
    const nav = new RoomNavigator({ libp2p: lib, room: "stopped", locator: dir.locator(), region: "eu-west", clock });
    await nav.open({ clock, onAudio: (f) => heard.push(f.payload[0]!), onMoved: (s) => (moved = s) });
    const oldHost = byPeer(mixers, nav.host);
    const succ = mixers.find((m) => m !== oldHost)!;
    oldHost.service.setDraining(true);
    expect(await oldHost.host.handOverAll()).toEqual(["stopped"]);
    await waitFor(() => moved !== undefined, "moved to the successor");
    const frame = (from: number, seq: number) => ({ seq, timestamp: seq * 960, payload: new Uint8Array([from, 0, 0]) });
    oldHost.engine.emit("stopped", oldHost.engine.members("stopped")[0]!, frame(1, 1));
    await waitFor(() => heard.length === 1, "an old frame");
    await clock.advance(500); // the old host sends nothing more
    for (let seq = 1; seq <= 3; seq++) {
      succ.engine.emit("stopped", succ.engine.members("stopped")[0]!, frame(2, seq));
      await waitFor(() => moved!.framesReceived === seq, `successor frame ${seq} read`);
      if (seq < 3) await clock.advance(20);
    }
    await waitFor(() => heard.length === 2, "the switch");
    expect(heard).toEqual([1, 2]);
    expect(nav.stats.moveGapsMs).toEqual([540]);
    await nav.session?.leave();
  });

  test("drained back: A hands the room to B, the drain is cancelled, B drains and the rule picks A again: everyone moves to A", async () => {
    // Repeated drain series (bench/rooms): A still marks the room as handed to B (a participant that cannot
    // follow MOVE keeps the room open there), so B's MOVE with a newer epoch must make A the host again,
    // not be REDIRECTed back to B (which redirected to A: a drain in which nobody moved).
    const { dir, mixers } = await network(2);
    const lib = await client();
    const navs: RoomNavigator[] = [];
    let moves = 0;
    for (let i = 0; i < 3; i++) {
      const nav = new RoomNavigator({ libp2p: lib, room: "ping-pong", locator: dir.locator(), region: "eu-west" });
      await nav.open({ onMoved: () => moves++ });
      navs.push(nav);
    }
    const a = byPeer(mixers, navs[0]!.host);
    const b = mixers.find((m) => m !== a)!;
    // a 1.0.0-style participant (no ROOM_DIRECTORY) on A: not moved, the room stays open on A
    const stay = await openRaw(lib, a.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL);
    stay.send(encodeMessage({ type: "JOIN", version: 1, room: "ping-pong", name: "stays" }));
    await waitFor(() => stay.messages.some((m) => m.type === "JOINED"), "the staying participant joined A");
    a.service.setDraining(true);
    expect(await a.host.handOverAll()).toEqual(["ping-pong"]);
    await waitFor(() => moves === 3 && navs.every((n) => n.host === b.peer), "all three on B");
    a.service.setDraining(false); // the drain is cancelled
    expect(a.host.rooms()).toContainEqual({ room: "ping-pong", epoch: 1, leaving: b.peer });
    b.service.setDraining(true);
    expect(await b.host.handOverAll()).toEqual(["ping-pong"]);
    await waitFor(() => moves === 6 && navs.every((n) => n.host === a.peer), "all three back on A", 15_000);
    expect(a.host.rooms()).toContainEqual({ room: "ping-pong", epoch: 3 });
    expect(navs.reduce((n, x) => n + x.stats.redirectLoops + x.stats.redirectsRefused, 0)).toBe(0);
    // A now hands it over again on its next drain (no stale mark suppresses the MOVE)
    b.service.setDraining(false);
    a.service.setDraining(true);
    await waitFor(() => navs.every((n) => n.session?.isOpen && n.host === a.peer), "settled on A");
    expect(await a.host.handOverAll()).toEqual(["ping-pong"]);
    await waitFor(() => moves === 9 && navs.every((n) => n.host === b.peer), "all three on B again", 15_000);
    stay.stream.abort(new Error("done"));
    for (const n of navs) await n.session?.leave();
  });

  test("lost claim (both sides of a partition hosted the room): the loser MOVEs its participants to the winner", async () => {
    const { dir, mixers } = await network(2);
    const [a, b] = mixers as [Mixer, Mixer];
    dir.sides.set(a.peer, 1);
    dir.sides.set(b.peer, 2);
    const lib = await client();
    // each side's participant only knows its side's mixer: the other is unreachable during the partition
    const mixersA = dir.mixers.filter((m) => m.peer_id === a.peer);
    const mixersB = dir.mixers.filter((m) => m.peer_id === b.peer);
    const navA = new RoomNavigator({
      libp2p: lib,
      room: "split",
      locator: { ...dir.locator(a.peer), mixers: async () => mixersA },
      region: "eu-west",
    });
    const navB = new RoomNavigator({
      libp2p: lib,
      room: "split",
      locator: { ...dir.locator(b.peer), mixers: async () => mixersB },
      region: "eu-west",
    });
    await navA.open({});
    await navB.open({});
    expect(navA.host).toBe(a.peer);
    expect(navB.host).toBe(b.peer);
    // heal: both records become visible; the winner is the directory's (equal epochs: the smaller peer id)
    dir.sides.clear();
    const winner = dir.winner("split")!.host;
    const loser = winner === a.peer ? b : a;
    await Promise.all(mixers.map((m) => m.host.reconcile()));
    await waitFor(() => navA.host === winner && navB.host === winner, "both participants on the winner");
    // the old session is left once the winner's first frame arrives (the fake engine sends none: after 1 s)
    await waitFor(() => members(loser, "split") === 0, "the loser empty");
    expect(members(byPeer(mixers, winner), "split")).toBe(2);
    expect(await metricValue(loser.registry, "agora_rooms_host_claims_total", { result: "lost" })).toBe(1);
    await navA.session?.leave();
    await navB.session?.leave();
  });
});

describe("room host: hostile input", () => {
  test("a forged move token (signed by a peer that is not the host) is refused, counted, and the JOIN is redirected", async () => {
    const { dir, mixers } = await network(2);
    const lib = await client();
    const nav = new RoomNavigator({ libp2p: lib, room: "guarded", locator: dir.locator(), region: "eu-west" });
    const s = await nav.open({});
    const hostM = byPeer(mixers, nav.host);
    const other = mixers.find((m) => m !== hostM)!;
    const thief = await generateKeyPair("Ed25519");
    const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
    const token = await signMoveToken(thief, {
      room: "guarded",
      epoch: 9,
      issuer: peerIdFromPrivateKey(thief).toString(),
      successor: other.peer,
      participant: lib.peerId.toString(),
      expiresAtMs: Date.now() + 10_000,
    });
    expect(decodeMoveToken(token)?.claims.epoch).toBe(9);
    const raw = await openRaw(lib, other.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL_1_1);
    raw.send(
      encodeMessage({ type: "JOIN", version: 2, room: "guarded", name: "", capabilities: Capability.ROOM_DIRECTORY, moveToken: token }),
    );
    await waitFor(() => raw.messages.length > 0, "an answer");
    expect(raw.messages[0]).toMatchObject({ type: "REDIRECT", hostPeerId: hostM.peer });
    expect(await metricValue(other.registry, "agora_rooms_move_tokens_total", { result: "not_host" })).toBe(1);
    // Tokens for someone else, or garbage, are refused the same way.
    const stolen = await signMoveToken(hostM.key, {
      room: "guarded",
      epoch: 2,
      issuer: hostM.peer,
      successor: other.peer,
      participant: "12D3KooWSomeoneElseaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      expiresAtMs: Date.now() + 10_000,
    });
    for (const bad of [stolen, new Uint8Array([1, 2, 3])]) {
      const r = await openRaw(lib, other.node.getMultiaddrs()[0]!, AUDIO_PROTOCOL_1_1);
      r.send(
        encodeMessage({ type: "JOIN", version: 2, room: "guarded", name: "", capabilities: Capability.ROOM_DIRECTORY, moveToken: bad }),
      );
      await waitFor(() => r.messages.length > 0, "an answer");
      expect(r.messages[0]!.type).toBe("REDIRECT");
    }
    expect(await metricValue(other.registry, "agora_rooms_move_tokens_total", { result: "wrong_participant" })).toBe(1);
    expect(await metricValue(other.registry, "agora_rooms_move_tokens_total", { result: "malformed" })).toBe(1);
    expect(members(other, "guarded")).toBe(0);
    expect(members(hostM, "guarded")).toBe(1);
    await s.leave();
  });

  test("a hostile mixer's MOVE for another room and its unconfirmed REDIRECT are refused and counted", async () => {
    const { dir } = await network(1);
    const { node: evil } = await mixerNode();
    const evilPeer = evil.peerId.toString();
    const evilAddr = evil
      .getMultiaddrs()[0]!
      .toString()
      .replace(/\/p2p\/.*$/, "");
    let mode: "redirect" | "move" = "redirect";
    await evil.handle(AUDIO_PROTOCOL_1_1, (stream) => {
      stream.addEventListener("message", () => {
        if (mode === "redirect") {
          stream.send(encodeMessage({ type: "REDIRECT", room: "target", epoch: 50, hostPeerId: evilPeer, addrs: [evilAddr] }));
          return;
        }
        stream.send(
          encodeMessage({
            type: "JOINED",
            version: 2,
            participantId: "p1",
            sampleRate: 48000,
            channels: 1,
            frameSamples: 960,
            codec: 1,
            bitrate: 32000,
            serverTimeMs: Date.now(),
            capabilities: Capability.ROOM_DIRECTORY,
          }),
        );
        const move = {
          type: "MOVE" as const,
          epoch: 7,
          successorPeerId: evilPeer,
          addrs: [evilAddr],
          token: new Uint8Array([1]),
          reason: MoveReason.DRAIN,
        };
        stream.send(encodeMessage({ ...move, room: "another-room" }));
      });
    });
    const evilCand: MixerCandidate = { ...dir.mixers[0]!, peer_id: evilPeer, listen_addr: [evilAddr] };
    const locator = { resolve: dir.locator().resolve, mixers: async () => [evilCand] };
    const nav = new RoomNavigator({ libp2p: await client(), room: "target", locator, region: "eu-west" });
    await expect(nav.open({})).rejects.toThrow(/REDIRECT from .* to itself: refused/);
    expect(nav.stats.redirectsRefused).toBe(1);
    mode = "move";
    const nav2 = new RoomNavigator({ libp2p: await client(), room: "target", locator, region: "eu-west" });
    const s = await nav2.open({});
    await waitFor(() => nav2.stats.movesRefused === 1, "the MOVE for another room refused");
    expect(nav2.stats.movesFollowed).toBe(0);
    expect(s.isOpen).toBe(true);
    s.abort("done");
  });
  test("a hostile rule's-first mixer REDIRECTing where no record confirms, or into a loop, is left out: every participant ends on one real mixer", async () => {
    const { dir, mixers } = await network(2);
    const evils = await Promise.all([mixerNode(), mixerNode()]);
    const evilIds = evils.map((e) => e.node.peerId.toString());
    const evilCands: MixerCandidate[] = evils.map((e, i) => ({
      ...dir.mixers[0]!,
      peer_id: evilIds[i]!,
      listen_addr: [
        e.node
          .getMultiaddrs()[0]!
          .toString()
          .replace(/\/p2p\/.*$/, ""),
      ],
    }));
    const all = [...dir.mixers, ...evilCands];
    // a room the first hostile peer ranks first for, the second one second
    let room = "";
    for (let i = 0; !room; i++) {
      const r = rankPlacement(`lure-${i}`, "eu-west", all).map((c) => c.peer_id);
      if (r[0] === evilIds[0] && r[1] === evilIds[1]) room = `lure-${i}`;
    }
    const realFirst = rankPlacement(room, "eu-west", dir.mixers)[0]!.peer_id;
    const decoy = dir.mixers.find((m) => m.peer_id !== realFirst)!;
    let mode: "astray" | "loop" = "astray";
    for (const [i, e] of evils.entries())
      await e.node.handle(AUDIO_PROTOCOL_1_1, (stream) => {
        stream.addEventListener("message", () => {
          // astray: to a real mixer that does not host the room; loop: to the other hostile peer
          const to = mode === "astray" ? decoy : evilCands[1 - i]!;
          stream.send(encodeMessage({ type: "REDIRECT", room, epoch: 3, hostPeerId: to.peer_id, addrs: to.listen_addr }));
        });
      });
    const base = dir.locator();
    const lib = await client();
    const join = async (locator: RoomLocator) => {
      const nav = new RoomNavigator({ libp2p: lib, room, locator, region: "eu-west", maxHops: 4 });
      await nav.open({});
      return nav;
    };
    const poisoned: RoomLocator = { resolve: base.resolve, mixers: async () => all.map((m) => ({ ...m })) };
    const n1 = await join(poisoned);
    const n2 = await join(poisoned);
    expect(n1.host).toBe(realFirst);
    expect(n2.host).toBe(realFirst);
    expect(n1.stats.redirectsRefused).toBe(2); // both hostile peers lie: each is left out in turn
    expect(members(byPeer(mixers, decoy.peer_id), room)).toBe(0);
    expect(members(byPeer(mixers, realFirst), room)).toBe(2);
    // The loop: the second hostile peer also holds a (self-signed, valid-looking) record of the room, so
    // each REDIRECT is "confirmed" (one by the record, one by the rule) until the hop bound.
    mode = "loop";
    const looped: RoomLocator = {
      resolve: async () => ({ host: evilIds[1]!, addrs: evilCands[1]!.listen_addr, epoch: 3, status: "active" }),
      mixers: poisoned.mixers,
    };
    const n3 = await join(looped);
    expect(n3.stats.redirectLoops).toBe(1);
    expect(n3.host).toBe(realFirst);
    expect(members(byPeer(mixers, realFirst), room)).toBe(3);
    for (const n of [n1, n2, n3]) await n.session?.leave();
  });

  test("the rule's first mixer admits a new room without waiting out the lookup, and moves it when a newer live record shows up", async () => {
    const key = await generateKeyPair("Ed25519");
    const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
    const self = peerIdFromPrivateKey(key).toString();
    const other = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const cand = (peer_id: string) => ({
      peer_id,
      region: "eu-west",
      status: "online",
      capabilities: ["mixer"],
      current_load: 0,
      max_clients: 10,
      listen_addr: ["/ip4/127.0.0.1/tcp/1"],
    });
    let answer: (r: RoomHostRecord | undefined) => void = () => {};
    const claims: number[] = [];
    const moved: string[] = [];
    const registry = new Registry();
    const host = new RoomHost({
      directory: {
        resolve: () => new Promise((res) => (answer = res)),
        claim: async (_room, epoch) => void claims.push(epoch),
        handOver: async () => {},
        release: async () => {},
      },
      selfPeerId: self,
      privateKey: key,
      region: "eu-west",
      selfAddrs: () => [],
      candidates: async () => [cand(self), cand(other)],
      isAlive: async () => true,
      registry,
      logger: silentLogger(),
      fastAdmitMs: 50,
    });
    host.bind({
      hostedRooms: () => new Map(),
      move: async (_room, t) => {
        moved.push(t.successorPeerId);
        return 1;
      },
    });
    let room = "";
    for (let i = 0; !room; i++)
      if (rankPlacement(`fresh-${i}`, "eu-west", [cand(self), cand(other)])[0]!.peer_id === self) room = `fresh-${i}`;
    // the lookup never answers in time: admitted at once, claimed at epoch 1
    expect(await host.decide(room, "p1")).toEqual({ kind: "admit", epoch: 1 });
    expect(claims).toEqual([1]);
    // ...and later finds the room living on `other` with a newer epoch: the participants move there
    answer({ room, region: "eu-west", host: other, addrs: ["/ip4/127.0.0.1/tcp/1"], epoch: 4, status: "active" });
    await waitFor(() => moved.length === 1, "participants moved to the live host");
    expect(moved).toEqual([other]);
    expect(host.rooms()).toContainEqual({ room, epoch: 1, leaving: other });
    // a mixer that is not the rule's first waits for the lookup (which here says: nothing)
    let notFirst = "";
    for (let i = 0; !notFirst; i++)
      if (rankPlacement(`fresh-${i}`, "eu-west", [cand(self), cand(other)])[0]!.peer_id === other) notFirst = `fresh-${i}`;
    let settled = false;
    const d = host.decide(notFirst, "p2").then((x) => {
      settled = true;
      return x;
    });
    await Bun.sleep(150);
    expect(settled).toBe(false);
    answer(undefined);
    expect(await d).toEqual({ kind: "admit", epoch: 1 });
  });

  test("two mixers that both take themselves for the rule's first (different mixer lists) admit at once; the loser moves right after its claim", async () => {
    const dir = new MemoryRoomDirectory();
    const hosts: { peer: string; host: RoomHost; moved: string[] }[] = [];
    for (let i = 0; i < 2; i++) {
      const key = await generateKeyPair("Ed25519");
      const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
      const peer = peerIdFromPrivateKey(key).toString();
      const port = dir.port(peer, "eu-west", () => ["/ip4/127.0.0.1/tcp/1"]);
      const slow = {
        ...port,
        resolve: async (room: string) => {
          await Bun.sleep(400);
          return port.resolve(room);
        },
      };
      const me = {
        peer_id: peer,
        region: "eu-west",
        status: "online",
        capabilities: ["mixer"],
        current_load: 0,
        max_clients: 10,
        listen_addr: [],
      };
      const moved: string[] = [];
      const host = new RoomHost({
        directory: slow,
        selfPeerId: peer,
        privateKey: key,
        region: "eu-west",
        selfAddrs: () => [],
        // each sees only itself (a partial discovery), so each is the rule's first in its own view
        candidates: async () => [me],
        isAlive: async () => true,
        isMixer: async () => true,
        registry: new Registry(),
        logger: silentLogger(),
        fastAdmitMs: 50,
      });
      host.bind({
        hostedRooms: () => new Map([["both", 1]]),
        move: async (_room, t) => {
          moved.push(t.successorPeerId);
          return 1;
        },
      });
      hosts.push({ peer, host, moved });
    }
    const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
    expect(await Promise.all([a.host.decide("both", "p1"), b.host.decide("both", "p2")])).toEqual([
      { kind: "admit", epoch: 1 },
      { kind: "admit", epoch: 1 },
    ]);
    const winner = dir.winner("both")!.host;
    const loser = winner === a.peer ? b : a;
    await waitFor(() => loser.moved.length === 1, "the loser moved its participants to the winner", 10_000);
    expect(loser.moved).toEqual([winner]);
    expect((winner === a.peer ? a : b).moved).toEqual([]);
  });

  test("a move token from the host before last's successor is accepted when the lookup finds only that older handing-over record", async () => {
    const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const issuerKey = await generateKeyPair("Ed25519");
    const issuer = peerIdFromPrivateKey(issuerKey).toString();
    const older = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const registry = new Registry();
    const host = new RoomHost({
      directory: {
        // a stale server: the host before the issuer, handing over to the issuer at epoch 5
        resolve: async (room) => ({ room, region: "eu-west", host: older, addrs: [], epoch: 5, status: "handing-over", successor: issuer }),
        claim: async () => {},
        handOver: async () => {},
        release: async () => {},
      },
      selfPeerId: self,
      privateKey: key,
      region: "eu-west",
      selfAddrs: () => [],
      candidates: async () => [],
      isAlive: async () => true,
      isMixer: async (p) => p === issuer || p === older,
      registry,
      logger: silentLogger(),
    });
    const token = await signMoveToken(issuerKey, {
      room: "chain",
      epoch: 7,
      issuer,
      successor: self,
      participant: "p1",
      expiresAtMs: Date.now() + 10_000,
    });
    expect(await host.decide("chain", "p1", token)).toEqual({ kind: "admit", epoch: 7 });
    expect(await metricValue(registry, "agora_rooms_move_tokens_total", { result: "accepted" })).toBe(1);
    // the same record does not vouch for a token of anyone else
    const otherKey = await generateKeyPair("Ed25519");
    const other = peerIdFromPrivateKey(otherKey).toString();
    const forged = await signMoveToken(otherKey, {
      room: "chain2",
      epoch: 9,
      issuer: other,
      successor: self,
      participant: "p2",
      expiresAtMs: Date.now() + 10_000,
    });
    expect((await host.decide("chain2", "p2", forged)).kind).toBe("redirect");
    expect(await metricValue(registry, "agora_rooms_move_tokens_total", { result: "not_host" })).toBe(1);
  });

  test("a room record naming a peer that is no mixer of the region is not obeyed: the JOIN is admitted and the room claimed over it", async () => {
    const key = await generateKeyPair("Ed25519");
    const { peerIdFromPrivateKey } = await import("@libp2p/peer-id");
    const self = peerIdFromPrivateKey(key).toString();
    const squatterKey = await generateKeyPair("Ed25519");
    const squatter = peerIdFromPrivateKey(squatterKey).toString();
    const registry = new Registry();
    const claims: number[] = [];
    const host = new RoomHost({
      directory: {
        resolve: async (room) => ({ room, region: "eu-west", host: squatter, addrs: ["/ip4/127.0.0.1/tcp/1"], epoch: 7, status: "active" }),
        claim: async (_room, epoch) => void claims.push(epoch),
        handOver: async () => {},
        release: async () => {},
      },
      selfPeerId: self,
      privateKey: key,
      region: "eu-west",
      selfAddrs: () => [],
      candidates: async () => [
        { peer_id: self, region: "eu-west", status: "online", capabilities: ["mixer"], current_load: 0, max_clients: 10, listen_addr: [] },
      ],
      isAlive: async () => true,
      registry,
      logger: silentLogger(),
    });
    expect(await host.decide("squatted", "p1")).toEqual({ kind: "admit", epoch: 8 });
    expect(claims).toEqual([8]);
    expect(await metricValue(registry, "agora_rooms_host_claims_total", { result: "taken_over_not_mixer" })).toBe(1);
    // a genuine move token of the squatter (its own record names it) is refused too: it is no mixer
    const token = await signMoveToken(squatterKey, {
      room: "tokened",
      epoch: 9,
      issuer: squatter,
      successor: self,
      participant: "p2",
      expiresAtMs: Date.now() + 10_000,
    });
    expect(await host.decide("tokened", "p2", token)).toEqual({ kind: "admit", epoch: 8 });
    expect(await metricValue(registry, "agora_rooms_move_tokens_total", { result: "not_host" })).toBe(1);
    expect(await metricValue(registry, "agora_rooms_move_tokens_total", { result: "accepted" })).toBe(0);
  });
});
