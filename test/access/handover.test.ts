/**
 * Roles across a handover with the real placement machinery in one process: three mixers (AudioRoomService
 * + RoomHost over the shared in-memory directory), participants joining an owned room by name through
 * RoomNavigator with their grants. A moderator promotes a listener, mutes a speaker, removes a third and
 * locks the room; the host drains; at the successor every participant has the role its grant gives, the
 * promotion and the mute that the version 2 move token carried, and no more; the lock holds for newcomers
 * and the removed grant is refused (the shared revocation store stands for the room record).
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { createLibp2p } from "libp2p";
import { Registry } from "prom-client";
import { issueGrant, MemoryRevocationStore, ownedRoomId, Role, signerFromRawPrivateKey, signModerate } from "../../src/access";
import { AudioRemoteError, type AudioSession, createClientNode, RoomNavigator, WireErrorCode } from "../../src/client";
import { silentLogger } from "../../src/log";
import { ModerateAction, type ModerateResultMessage, type ModerationMessage, rankPlacement } from "../../src/protocol";
import { AudioRoomService, decodeMoveToken, RoomHost, signMoveToken } from "../../src/rooms";
import { agoraTransportStack } from "../../src/transport";
import { FakeMediaEngine, OPUS_TOC_20MS, waitFor } from "../helpers/net-fakes";
import { MemoryRoomDirectory } from "../helpers/room-directory";

setDefaultTimeout(60_000);

const stops: (() => unknown)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

interface Mixer {
  peer: string;
  registry: Registry;
  engine: FakeMediaEngine;
  host: RoomHost;
  service: AudioRoomService;
}

async function network(n: number, revocations: MemoryRevocationStore): Promise<{ dir: MemoryRoomDirectory; mixers: Mixer[] }> {
  const dir = new MemoryRoomDirectory();
  const mixers: Mixer[] = [];
  for (let i = 0; i < n; i++) {
    const key = await generateKeyPair("Ed25519");
    const node = await createLibp2p({
      privateKey: key,
      addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
      ...agoraTransportStack(),
      services: { identify: identify() },
    });
    stops.push(() => node.stop());
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
      candidates: async () => dir.mixers,
      isAlive: async (p) => dir.mixers.some((m) => m.peer_id === p),
      registry,
      logger: silentLogger(),
    });
    const service = new AudioRoomService({ libp2p: node, engine, registry, logger: silentLogger(), host, revocations });
    await service.start();
    stops.push(() => service.stop());
    mixers.push({ peer, registry, engine, host, service });
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

interface Person {
  key: PrivateKey;
  pub: Uint8Array;
  node: Libp2p;
}
async function person(): Promise<Person> {
  const key = await generateKeyPair("Ed25519");
  const node = await createClientNode({ privateKey: key });
  stops.push(() => node.stop());
  return { key, pub: signerFromRawPrivateKey(key.raw).publicKey, node };
}

describe("handover of an owned room", () => {
  test("roles, promotion, mute and lock survive the MOVE as the grants and the signed token say; removed stays out", async () => {
    const revocations = new MemoryRevocationStore();
    const { dir, mixers } = await network(3, revocations);
    const ownerKey = await generateKeyPair("Ed25519");
    const owner = signerFromRawPrivateKey(ownerKey.raw);
    const room = ownedRoomId("handover", owner.publicKey);
    const expiresAt = Date.now() + 3_600_000;
    const grant = (role: number, p: Person) => issueGrant(owner, { room, role, expiresAt, subject: p.pub });
    const [mod, spk, lis, gone, late] = await Promise.all([person(), person(), person(), person(), person()]);

    const moved = new Map<Person, AudioSession>();
    const answers: ModerateResultMessage[] = [];
    const join = async (p: Person, role: number) => {
      const nav = new RoomNavigator({ libp2p: p.node, room, locator: dir.locator(), region: "eu-west" });
      const s = await nav.open({
        grant: grant(role, p),
        onAccess: (m: ModerateResultMessage | ModerationMessage) => m.type === "MODERATE_RESULT" && answers.push(m),
        onMoved: (x) => moved.set(p, x),
      });
      return { nav, s };
    };
    const m = await join(mod, Role.MODERATOR);
    const a = await join(spk, Role.SPEAKER);
    const b = await join(lis, Role.LISTENER);
    const g = await join(gone, Role.SPEAKER);
    expect([m.s.joined.role, a.s.joined.role, b.s.joined.role]).toEqual([Role.MODERATOR, Role.SPEAKER, Role.LISTENER]);
    const modSigner = signerFromRawPrivateKey(mod.key.raw);
    let id = 0;
    const moderate = async (action: number, target = "") => {
      const requestId = ++id;
      m.s.sendModerate(signModerate(modSigner, { room, participantId: m.s.participantId }, { requestId, action, target, until: 0 }));
      await waitFor(() => answers.some((x) => x.requestId === requestId), `the answer to request ${requestId}`);
      expect(answers.find((x) => x.requestId === requestId)!.code).toBe(0);
    };
    await moderate(ModerateAction.PROMOTE, b.s.participantId);
    await moderate(ModerateAction.MUTE, a.s.participantId);
    await moderate(ModerateAction.REMOVE, g.s.participantId);
    await moderate(ModerateAction.LOCK);

    const oldHost = mixers.find((x) => x.peer === m.nav.host)!;
    const succPeer = rankPlacement(room, "eu-west", dir.mixers, [oldHost.peer])[0]!.peer_id;
    const succ = mixers.find((x) => x.peer === succPeer)!;
    oldHost.service.setDraining(true);
    expect(await oldHost.host.handOverAll()).toEqual([room]);
    await waitFor(() => moved.size === 3, "moderator, speaker and listener moved");
    const [m2, a2, b2] = [moved.get(mod)!, moved.get(spk)!, moved.get(lis)!];
    // The roles are the grants' (re-verified at the successor), the promotion carried: listener → speaker.
    expect([m2.joined.role, a2.joined.role, b2.joined.role]).toEqual([Role.MODERATOR, Role.SPEAKER, Role.SPEAKER]);
    // The mute holds: the speaker's frame is dropped, the promoted listener's is mixed.
    const opus = Uint8Array.of(OPUS_TOC_20MS, 1, 2, 3);
    a2.sendAudio({ seq: 1, timestamp: 960, payload: opus });
    b2.sendAudio({ seq: 1, timestamp: 960, payload: opus });
    await waitFor(() => succ.engine.pushed.some((f) => f.participant === b2.participantId), "the promoted listener mixed at the successor");
    expect(succ.engine.pushed.some((f) => f.participant === a2.participantId)).toBe(false);
    // The lock holds for a newcomer; the removed grant is refused there too.
    const refusal = async (p: Person, role: number) => {
      try {
        await join(p, role);
      } catch (err) {
        if (err instanceof AudioRemoteError) return err;
        throw err;
      }
      throw new Error("joined");
    };
    expect((await refusal(late, Role.SPEAKER)).message).toMatch(/locked/);
    const again = await refusal(gone, Role.SPEAKER);
    expect(again.wireCode).toBe(WireErrorCode.FORBIDDEN);
    expect(again.message).toMatch(/revoked/);
    for (const s of [m2, a2, b2]) await s.leave();
  });

  test("version 2 move tokens: the access state round-trips, unknown access bits are refused, no access is version 1", async () => {
    const key = await generateKeyPair("Ed25519");
    const claims = {
      room: "r--aaaaaaaaaaaaaaaaaaaaaaaaaa",
      epoch: 2,
      issuer: "12D3KooWissuer",
      successor: "12D3KooWsucc",
      participant: "12D3KooWpart",
      expiresAtMs: 1,
      access: { promoted: true, muted: false, locked: true, grantLinkId: "ab".repeat(16) },
    };
    const t = await signMoveToken(key, claims);
    expect(t[0]).toBe(2);
    expect(decodeMoveToken(t)?.claims).toEqual(claims);
    const v1 = await signMoveToken(key, { ...claims, access: undefined });
    expect(v1[0]).toBe(1);
    expect(decodeMoveToken(v1)?.claims.access).toBeUndefined();
    const bad = t.slice();
    bad[t.length - 64 - 17] = 0x08; // an access bit that does not exist
    expect(decodeMoveToken(bad)).toBeUndefined();
  });
});
