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
import { type AudioSession, type MixerCandidate, RoomNavigator } from "../../src/client";
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
import { AudioRoomService, decodeMoveToken, RoomHost, signMoveToken } from "../../src/rooms";
import { agoraTransportStack } from "../../src/transport";
import { createBareClientNode, FakeMediaEngine, metricValue, openRaw, waitFor } from "../helpers/net-fakes";
import { MemoryRoomDirectory } from "../helpers/room-directory";

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
    expect(await metricValue(succ.registry, "agora_rooms_move_tokens_total", { result: "accepted" })).toBe(5);
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
    expect(members(loser, "split")).toBe(0);
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
    await expect(nav.open({})).rejects.toThrow(/not confirmed by its record/);
    expect(nav.stats.redirectsRefused).toBe(1);
    mode = "move";
    const nav2 = new RoomNavigator({ libp2p: await client(), room: "target", locator, region: "eu-west" });
    const s = await nav2.open({});
    await waitFor(() => nav2.stats.movesRefused === 1, "the MOVE for another room refused");
    expect(nav2.stats.movesFollowed).toBe(0);
    expect(s.isOpen).toBe(true);
    s.abort("done");
  });
});
