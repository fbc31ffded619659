/**
 * Hostile peers against rooms that live in the network, with real processes of the compiled binary on
 * 127.0.0.1: a bootstrap and three mixers of one region, plus two in-test hostile libp2p peers that speak
 * `/agora/audio/1.1.0` (issue 12, point 7 and its Proof):
 *
 *  (a) a hostile "mixer" the placement rule ranks first (a participant's mixer list is poisoned with it)
 *      answers JOIN with a REDIRECT to a real mixer that does not host the room, or two of them REDIRECT to
 *      each other in a loop (each hop "confirmed", one by a record naming the second, one by the rule): the
 *      SDK navigator refuses, counts it, leaves them out of placement and ends on the real mixer the rule
 *      picks next, every participant on that one host, the decoy never holding the room;
 *  (b) a hostile peer JOINs a real mixer that is not the room's host with forged move tokens (wrong signer,
 *      issued by itself, other room, expired, other participant, other successor, garbage): each is refused
 *      (the JOIN is handled as one without a token: REDIRECT to the real host, protocol.md "Move token") and
 *      counted by reason in that binary's /metrics; the room stays where it is;
 *  (c) a MOVE for the room sent on another session (a hostile host of another room the same participant is
 *      in) is ignored and counted; the participant's audio on the real host goes on.
 *  (d) a peer that is no mixer publishes a valid, self-signed record of a new room naming itself (a squat):
 *      the real mixers do not obey it (the JOIN is admitted, the room claimed over it at a higher epoch,
 *      counted as `taken_over_not_mixer`), so the participant ends on the real host;
 *  (e) the `agora-node join --room R --bootstrap` binary meets a hostile peer that advertises itself as a
 *      mixer of the region (a full in-test Agora network node) and REDIRECTs astray: the join client refuses,
 *      reports it (`placementRefusals`) and ends on the real host;
 *
 * Busy-machine rules: every wait is a condition with a deadline.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { ping } from "@libp2p/ping";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { loadOpusCodec, type MixerCandidate, type OpusCodec, type RoomLocator, RoomNavigator } from "../../src/client";
import { silentLogger } from "../../src/log";
import { createRoomLocator, encodeRoomRecord, type RoomLocatorClient, roomRecordKey, signRoomRecord } from "../../src/p2p";
import {
  AUDIO_PROTOCOL_1_1,
  Capability,
  chunkBytes,
  encodeMessage,
  MessageDecoder,
  MoveReason,
  rankPlacement,
  type WireMessage,
} from "../../src/protocol";
import { signMoveToken } from "../../src/rooms";
import { agoraTransportStack } from "../../src/transport";
import { openRaw } from "../helpers/net-fakes";
import { eventually, type NodeHandle, runCli, startNode } from "../helpers/node-process";
import { Participant, stopParticipants } from "../helpers/room-participant";
import { cleanupDirs, startTestNode, type TestNode } from "../p2p/helpers";
import { RawDhtSession } from "../p2p/raw-dht";

setDefaultTimeout(120_000);

const HEARTBEAT_S = 2;
const REGION = "eu-west";
let boot: NodeHandle;
const mixers: NodeHandle[] = [];
let ids: string[] = [];
let codec: OpusCodec;
let loc: RoomLocatorClient;

/** What a hostile peer answers to a JOIN. */
type Mode = { kind: "astray"; to: MixerCandidate } | { kind: "redirect-to"; to: MixerCandidate } | { kind: "host-then-move"; move: string };

interface Hostile {
  node: Libp2p;
  key: PrivateKey;
  peer: string;
  cand: MixerCandidate;
  mode: Mode | undefined;
  joins: number;
}
const hostiles: Hostile[] = [];

async function hostilePeer(): Promise<Hostile> {
  const key = await generateKeyPair("Ed25519");
  const node = await createLibp2p({
    privateKey: key,
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    // it answers pings, so a mixer's liveness check of a record naming it passes
    services: { identify: identify(), ping: ping() },
  });
  const peer = peerIdFromPrivateKey(key).toString();
  const addr = node
    .getMultiaddrs()
    .find((a) => a.toString().includes("/ip4/127.0.0.1/"))!
    .toString()
    .replace(/\/p2p\/.*$/, "");
  const h: Hostile = {
    node,
    key,
    peer,
    // what it would advertise: an idle mixer of the region
    cand: {
      peer_id: peer,
      region: REGION,
      status: "online",
      capabilities: ["mixer"],
      current_load: 0,
      max_clients: 1000,
      listen_addr: [addr],
    },
    mode: undefined,
    joins: 0,
  };
  await node.handle(AUDIO_PROTOCOL_1_1, (stream) => {
    const dec = new MessageDecoder();
    stream.addEventListener("message", (evt) => {
      const msgs: WireMessage[] = dec.push(chunkBytes(evt.data)).messages;
      const join = msgs.find((m) => m.type === "JOIN");
      if (join?.type !== "JOIN" || !h.mode) return;
      h.joins++;
      const m = h.mode;
      if (m.kind === "astray" || m.kind === "redirect-to") {
        stream.send(encodeMessage({ type: "REDIRECT", room: join.room, epoch: 5, hostPeerId: m.to.peer_id, addrs: m.to.listen_addr }));
        return;
      }
      stream.send(
        encodeMessage({
          type: "JOINED",
          version: 2,
          participantId: `evil-${h.joins}`,
          sampleRate: 48000,
          channels: 1,
          frameSamples: 960,
          codec: 1,
          bitrate: 32000,
          serverTimeMs: Date.now(),
          capabilities: Capability.ROOM_DIRECTORY,
        }),
      );
      // a MOVE for another room (the one its participant is in on a real host), on this session
      stream.send(
        encodeMessage({
          type: "MOVE",
          room: m.move,
          epoch: 99,
          successorPeerId: h.peer,
          addrs: h.cand.listen_addr,
          token: new Uint8Array([1]),
          reason: MoveReason.DRAIN,
        }),
      );
    });
  });
  hostiles.push(h);
  return h;
}

async function metric(h: NodeHandle, name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(" ").pop()) : 0;
}

async function roomOn(h: NodeHandle, room: string): Promise<{ participants: unknown[]; directory?: { hosted_here: boolean } } | undefined> {
  const rooms = (await (await fetch(`${h.dashboardUrl}/api/rooms`)).json()) as {
    id: string;
    participants: unknown[];
    directory?: { hosted_here: boolean };
  }[];
  return rooms.find((r) => r.id === room);
}

const mixerOf = (peer: string | undefined): NodeHandle => {
  const i = ids.indexOf(peer ?? "");
  if (i < 0) throw new Error(`no mixer ${peer}`);
  return mixers[i]!;
};

let evil0: Hostile;
let evil1: Hostile;
let ROOM = "";
let realFirst = "";
let decoy: MixerCandidate;
let real: MixerCandidate[] = [];
const crowd: Participant[] = [];
let advertised: TestNode | undefined;

beforeAll(async () => {
  codec = await loadOpusCodec();
  boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  const bootAddr = await boot.multiaddr();
  const mixer = () =>
    startNode({
      args: ["--mode", "dedicated", "--region", REGION, "--heartbeat-interval", `${HEARTBEAT_S}s`, "--bootstrap", bootAddr],
    });
  mixers.push(...(await Promise.all([mixer(), mixer(), mixer()])));
  ids = await Promise.all(mixers.map((m) => m.peerId()));
  loc = await createRoomLocator({ bootstrap: [bootAddr], logger: silentLogger() });
  real = await eventually(
    async () => {
      const ms = await loc.mixers(REGION);
      return ms.length === 3 && ms;
    },
    60_000,
    "three mixers discoverable",
    300,
  );
  evil0 = await hostilePeer();
  evil1 = await hostilePeer();
  // a room the first hostile peer ranks first for and the second one second
  for (let i = 0; !ROOM; i++) {
    const r = rankPlacement(`lure-${i}`, REGION, [...real, evil0.cand, evil1.cand]).map((c) => c.peer_id);
    if (r[0] === evil0.peer && r[1] === evil1.peer) ROOM = `lure-${i}`;
  }
  realFirst = rankPlacement(ROOM, REGION, real)[0]!.peer_id;
  decoy = real.find((m) => m.peer_id !== realFirst)!;
}, 120_000);

afterAll(async () => {
  await stopParticipants();
  await loc?.stop().catch(() => {});
  for (const h of hostiles) await Promise.resolve(h.node.stop()).catch(() => {});
  await advertised?.node.stop().catch(() => {});
  cleanupDirs();
  for (const m of mixers) m.cleanup();
  boot?.cleanup();
});

/** The real locator, but its mixer list also holds the hostile peers (as if they advertised themselves). */
function poisoned(resolve: RoomLocator["resolve"] = (room) => loc.resolve(room)): RoomLocator {
  return { resolve, mixers: async (region) => [...(await loc.mixers(region)), evil0.cand, evil1.cand] };
}

describe("hostile peers against binary mixers", () => {
  test("(a) REDIRECTs astray and in a loop are refused and counted; every participant ends on the one real host", async () => {
    evil0.mode = { kind: "astray", to: decoy };
    evil1.mode = { kind: "astray", to: decoy };
    const [p1, p2] = [
      new Participant(codec, loc.libp2p, poisoned(), REGION, ROOM, 440),
      new Participant(codec, loc.libp2p, poisoned(), REGION, ROOM, 660),
    ];
    crowd.push(p1, p2);
    await p1.join();
    await p2.join();
    // The first joiner meets both liars: the rule's first (evil0), then, with it left out, evil1.
    expect(p1.nav.host).toBe(realFirst);
    expect(p1.nav.stats.redirectsRefused).toBe(2);
    expect(p1.nav.stats.redirectsFollowed).toBe(0);
    // The second finds the room's record (the real host's claim) or meets the liars the same way.
    expect(p2.nav.host).toBe(realFirst);
    expect([0, 2]).toContain(p2.nav.stats.redirectsRefused);
    expect(evil0.joins).toBe(1 + p2.nav.stats.redirectsRefused / 2);
    // The loop: evil1 also holds a record of the room (what its own self-signed record would say), so each
    // hop is "confirmed" (to evil1 by the record, to evil0 by the rule) until the hop bound.
    evil0.mode = { kind: "redirect-to", to: evil1.cand };
    evil1.mode = { kind: "redirect-to", to: evil0.cand };
    const looped = poisoned(async () => ({ host: evil1.peer, addrs: evil1.cand.listen_addr, epoch: 5, status: "active" }));
    const p3 = new Participant(codec, loc.libp2p, looped, REGION, ROOM, 880, true);
    crowd.push(p3);
    await p3.join();
    expect(p3.nav.stats.redirectLoops).toBe(1);
    expect(p3.nav.host).toBe(realFirst);
    // one host: the real mixer the rule picks among the real ones, with all three; its record resolves
    const host = mixerOf(realFirst);
    await eventually(async () => (await roomOn(host, ROOM))?.participants.length === 3, 15_000, "the real host lists all three");
    await eventually(async () => (await loc.resolve(ROOM))?.host === realFirst, 30_000, "the room's record names the real host", 300);
    for (const m of mixers.filter((x) => x !== host)) expect((await roomOn(m, ROOM))?.participants.length ?? 0).toBe(0);
    expect(await metric(host, "agora_rooms_host_claims_total", 'result="claimed"')).toBeGreaterThanOrEqual(1);
    await eventually(() => crowd.every((p) => p.frames > 25), 20_000, "audio flowing to the three", 100);
  });

  test("(b) forged move tokens presented to a mixer that is not the host are refused (REDIRECT to the host) and counted by reason", async () => {
    const other = mixerOf(decoy.peer_id);
    const me = evil0.peer;
    const base = { room: ROOM, epoch: 2, issuer: realFirst, successor: decoy.peer_id, participant: me, expiresAtMs: Date.now() + 20_000 };
    const cases: [string, Uint8Array][] = [
      // signed by evil1 while naming the real host as issuer
      ["bad_signature", await signMoveToken(evil1.key, base)],
      // evil1's own genuine token: it is not the room's host (nor a mixer)
      ["not_host", await signMoveToken(evil1.key, { ...base, issuer: evil1.peer })],
      ["wrong_room", await signMoveToken(evil1.key, { ...base, room: "another-room" })],
      ["expired", await signMoveToken(evil1.key, { ...base, expiresAtMs: Date.now() - 1 })],
      ["wrong_participant", await signMoveToken(evil1.key, { ...base, participant: evil1.peer })],
      ["wrong_successor", await signMoveToken(evil1.key, { ...base, successor: realFirst })],
      ["malformed", new Uint8Array([1, 2, 3])],
    ];
    for (const [reason, token] of cases) {
      const before = await metric(other, "agora_rooms_move_tokens_total", `result="${reason}"`);
      const raw = await openRaw(evil0.node, multiaddr(await other.multiaddr()), AUDIO_PROTOCOL_1_1);
      raw.send(
        encodeMessage({ type: "JOIN", version: 2, room: ROOM, name: "thief", capabilities: Capability.ROOM_DIRECTORY, moveToken: token }),
      );
      const answer = await eventually(() => raw.messages[0], 15_000, `an answer to the ${reason} token`, 20);
      expect({ reason, answer }).toMatchObject({ reason, answer: { type: "REDIRECT", hostPeerId: realFirst } });
      await eventually(
        async () => (await metric(other, "agora_rooms_move_tokens_total", `result="${reason}"`)) === before + 1,
        10_000,
        `the ${reason} token counted in /metrics`,
      );
      raw.stream.abort(new Error("done"));
    }
    expect(await metric(other, "agora_rooms_move_tokens_total", 'result="accepted"')).toBe(0);
    // the room did not move: the decoy holds nothing, the host still has the three, the record names it
    expect((await roomOn(other, ROOM))?.participants.length ?? 0).toBe(0);
    expect((await roomOn(mixerOf(realFirst), ROOM))?.participants.length).toBe(3);
    expect((await loc.resolve(ROOM))?.host).toBe(realFirst);
    expect(crowd.every((p) => p.nav.host === realFirst && p.lost === 0)).toBe(true);
  });

  test("(c) a MOVE for the room on another session (from a peer that is not its host) is ignored and counted; audio goes on", async () => {
    // The same participant (one libp2p peer) is also in a side room that a hostile peer hosts; that peer
    // sends a MOVE for the main room on the side session.
    evil0.mode = { kind: "host-then-move", move: ROOM };
    const side = new RoomNavigator({
      libp2p: loc.libp2p,
      room: "side-room",
      region: REGION,
      locator: { resolve: async () => undefined, mixers: async () => [evil0.cand] },
    });
    const s = await side.open({});
    await eventually(() => side.stats.movesRefused === 1, 10_000, "the MOVE for another room refused on the side session", 20);
    expect(side.stats.movesFollowed).toBe(0);
    expect(s.isOpen).toBe(true);
    // nobody in the main room moved, and the listener keeps hearing from the real host
    const frames = crowd.map((p) => p.frames);
    await eventually(() => crowd.every((p, i) => p.frames > frames[i]! + 25), 15_000, "audio still flowing in the main room", 100);
    expect(crowd.every((p) => p.moves === 0 && p.nav.stats.movesRefused === 0 && p.nav.host === realFirst && p.lost === 0)).toBe(true);
    s.abort("done");
  });

  test("(d) a room squatted by a non-mixer's self-signed record: the real mixers claim over it; the participant ends on the real host", async () => {
    const squat = "squatted-room";
    const servers = [boot, ...mixers];
    const record = encodeRoomRecord(
      await signRoomRecord(
        {
          room: squat,
          region: REGION,
          host: evil1.peer,
          addrs: evil1.cand.listen_addr,
          participants: 1,
          epoch: 5,
          seq: 1,
          last_seen: Date.now() / 1000,
          ttl_seconds: 3600,
          status: "active",
          open: true,
        },
        evil1.key,
      ),
    );
    // It is a valid record (signed by the host it names): the DHT servers store it.
    let stored = 0;
    for (const h of servers) {
      const session = new RawDhtSession(evil1.node, multiaddr(await h.multiaddr()));
      if (await session.put(roomRecordKey(squat), record).catch(() => false)) stored++;
      session.close();
    }
    expect(stored).toBeGreaterThan(0);
    evil1.mode = { kind: "astray", to: decoy };
    const ruled = rankPlacement(squat, REGION, real)[0]!.peer_id;
    const p = new Participant(codec, loc.libp2p, loc, REGION, squat, 550);
    await p.join();
    expect(p.nav.host).toBe(ruled);
    const host = mixerOf(ruled);
    // counted when the host's lookup finds the squat's record (at once, or behind a fast admit)
    await eventually(
      async () => (await metric(host, "agora_rooms_host_claims_total", 'result="taken_over_not_mixer"')) >= 1,
      20_000,
      "the squat's record counted as not obeyed",
      200,
    );
    // its claim (epoch 6) beats the squat's record everywhere
    await eventually(
      async () => {
        const r = await loc.resolve(squat);
        return r?.host === ruled && r.epoch > 5;
      },
      20_000,
      "the real host's claim resolves over the squat",
      200,
    );
    await eventually(() => p.frames > 25, 15_000, "audio from the real host", 100);
    await p.stop();
  });

  test("(e) the join binary meets an advertised hostile mixer that REDIRECTs astray: refused, reported, and it ends on the real host", async () => {
    // A hostile peer that is a full Agora network node advertising itself as a mixer of the region, with an
    // audio handler that answers every JOIN with a REDIRECT to a real mixer that does not host the room.
    advertised = await startTestNode({ mode: "dedicated", region: REGION, bootstrap: [await boot.multiaddr()], heartbeat: HEARTBEAT_S });
    const evilPeer = advertised.node.peerId;
    let evilJoins = 0;
    let target: MixerCandidate | undefined;
    await advertised.node.libp2p.handle(AUDIO_PROTOCOL_1_1, (stream) => {
      const dec = new MessageDecoder();
      stream.addEventListener("message", (evt) => {
        const join = dec.push(chunkBytes(evt.data)).messages.find((m) => m.type === "JOIN");
        if (join?.type !== "JOIN" || !target) return;
        evilJoins++;
        stream.send(encodeMessage({ type: "REDIRECT", room: join.room, epoch: 5, hostPeerId: target.peer_id, addrs: target.listen_addr }));
      });
    });
    const withEvil = await eventually(
      async () => {
        const ms = await loc.mixers(REGION);
        return ms.some((m) => m.peer_id === evilPeer) && ms;
      },
      60_000,
      "the hostile mixer discoverable",
      300,
    );
    let room = "";
    for (let i = 0; !room; i++) if (rankPlacement(`cli-lure-${i}`, REGION, withEvil)[0]?.peer_id === evilPeer) room = `cli-lure-${i}`;
    const ruled = rankPlacement(room, REGION, real)[0]!.peer_id;
    target = real.find((m) => m.peer_id !== ruled)!;
    // The join client's own discovery may miss the hostile peer on its first walk (then it never meets it):
    // a second run, then it must have.
    let summary: { host?: string; placementRefusals: number } | undefined;
    for (let run = 0; run < 2 && evilJoins === 0; run++) {
      const r = await runCli(["join", "--room", room, "--bootstrap", await boot.multiaddr(), "--region", REGION, "--duration", "2"], {
        timeoutMs: 90_000,
      });
      expect(r.code).toBe(0);
      summary = JSON.parse(r.stdout.trim().split("\n").pop()!) as typeof summary;
      expect(summary!.host).toBe(ruled);
    }
    expect(evilJoins).toBeGreaterThanOrEqual(1);
    expect(summary!.placementRefusals).toBeGreaterThanOrEqual(1);
    expect(summary!.host).toBe(ruled);
  });
});
