/**
 * Roles across a handover between real processes of the compiled binary: a bootstrap and three mixers of one
 * region; an owner's participants join an owned room by name (SDK navigator, each with its own key and a
 * grant bound to it). A moderator promotes a listener, mutes a speaker, removes a third and locks the room;
 * the host drains (SIGTERM). At the successor every participant has what its grant gives plus the
 * promotion and mute the signed move token carried, and no more: the untouched listener is still a listener,
 * the muted speaker's audio is dropped there, the lock refuses a newcomer, and the removed one's grant is refused there (revocations travel in the room
 * record).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { issueGrant, ownedRoomId, Role, signerFromRawPrivateKey, signModerate } from "../../src/access";
import { AudioRemoteError, type AudioSession, createClientNode, RoomNavigator } from "../../src/client";
import { silentLogger } from "../../src/log";
import { createRoomLocator, type RoomLocatorClient } from "../../src/p2p";
import { ModerateAction, type ModerateResultMessage, type ModerationMessage } from "../../src/protocol";
import { OPUS_TOC_20MS } from "../helpers/net-fakes";
import { eventually, type NodeHandle, startNode } from "../helpers/node-process";

setDefaultTimeout(120_000);

const REGION = "eu-west";
const HEARTBEAT_S = 2;
let boot: NodeHandle;
let bootAddr: string;
const mixers: NodeHandle[] = [];
let loc: RoomLocatorClient;
const nodes: Libp2p[] = [];

beforeAll(async () => {
  boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  bootAddr = await boot.multiaddr();
  const mixer = () =>
    startNode({
      args: [
        "--mode",
        "dedicated",
        "--region",
        REGION,
        "--heartbeat-interval",
        `${HEARTBEAT_S}s`,
        "--bootstrap",
        bootAddr,
        "--set",
        "node.drain_timeout=30",
      ],
    });
  mixers.push(...(await Promise.all([mixer(), mixer(), mixer()])));
  loc = await createRoomLocator({ bootstrap: [bootAddr], logger: silentLogger() });
  await eventually(async () => (await loc.mixers(REGION)).length === 3, 40_000, "three mixers discoverable", 300);
}, 90_000);

afterAll(async () => {
  for (const n of nodes) await Promise.resolve(n.stop()).catch(() => {});
  await loc?.stop().catch(() => {});
  for (const m of mixers) m.cleanup();
  boot?.cleanup();
});

interface Person {
  key: PrivateKey;
  pub: Uint8Array;
  node: Libp2p;
}
async function person(): Promise<Person> {
  const key = await generateKeyPair("Ed25519");
  const node = await createClientNode({ privateKey: key });
  nodes.push(node);
  return { key, pub: signerFromRawPrivateKey(key.raw).publicKey, node };
}

async function metric(h: NodeHandle, name: string, label: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(name) && line.includes(label)) sum += Number(line.split(" ").at(-1));
  return sum;
}

describe("an owned room moves between binary mixers", () => {
  test("roles, promotion, mute and lock survive the drain as the grants and the signed token say, not more", async () => {
    const ownerKey = await generateKeyPair("Ed25519");
    const owner = signerFromRawPrivateKey(ownerKey.raw);
    const room = ownedRoomId("roles", owner.publicKey);
    const expiresAt = Date.now() + 3_600_000;
    const grant = (role: number, p: Person) => issueGrant(owner, { room, role, expiresAt, subject: p.pub });
    const [mod, spk, lis, quiet, late, gone] = await Promise.all([person(), person(), person(), person(), person(), person()]);
    const moved = new Map<Person, AudioSession>();
    const answers: ModerateResultMessage[] = [];
    const navs: RoomNavigator[] = [];
    const join = async (p: Person, role: number) => {
      const nav = new RoomNavigator({ libp2p: p.node, room, locator: loc, region: REGION });
      navs.push(nav);
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
    const q = await join(quiet, Role.LISTENER);
    const g = await join(gone, Role.SPEAKER);
    expect([m.s.joined.role, a.s.joined.role, b.s.joined.role, q.s.joined.role]).toEqual([
      Role.MODERATOR,
      Role.SPEAKER,
      Role.LISTENER,
      Role.LISTENER,
    ]);
    expect(new Set(navs.map((n) => n.host)).size).toBe(1);
    const signer = signerFromRawPrivateKey(mod.key.raw);
    let id = 0;
    const moderate = async (action: number, target = "") => {
      const requestId = ++id;
      m.s.sendModerate(signModerate(signer, { room, participantId: m.s.participantId }, { requestId, action, target, until: 0 }));
      await eventually(() => answers.some((x) => x.requestId === requestId), 15_000, `the answer to request ${requestId}`);
      expect(answers.find((x) => x.requestId === requestId)!.code).toBe(0);
    };
    await moderate(ModerateAction.PROMOTE, b.s.participantId);
    await moderate(ModerateAction.MUTE, a.s.participantId);
    await moderate(ModerateAction.REMOVE, g.s.participantId);
    await moderate(ModerateAction.LOCK);

    const ids = await Promise.all(mixers.map((x) => x.peerId()));
    const oldHost = mixers[ids.indexOf(m.nav.host!)]!;
    oldHost.proc.kill("SIGTERM"); // drains: hands the room over, then exits
    await eventually(() => moved.size === 4, 30_000, "all four moved to the successor");
    const [m2, a2, b2, q2] = [moved.get(mod)!, moved.get(spk)!, moved.get(lis)!, moved.get(quiet)!];
    const newHostPeer = m.nav.host!;
    expect(newHostPeer).not.toBe(ids[mixers.indexOf(oldHost)]);
    expect([m, a, b, q].every((x) => x.nav.host === newHostPeer)).toBe(true);
    // The grants' roles, re-verified at the successor, plus the carried promotion; the other listener stays one.
    expect([m2.joined.role, a2.joined.role, b2.joined.role, q2.joined.role]).toEqual([
      Role.MODERATOR,
      Role.SPEAKER,
      Role.SPEAKER,
      Role.LISTENER,
    ]);
    const succ = mixers[ids.indexOf(newHostPeer)]!;
    // The mute holds there: the muted speaker's frames are dropped as "muted".
    const opus = Uint8Array.of(OPUS_TOC_20MS, 1, 2, 3);
    for (let i = 0; i < 5; i++) a2.sendAudio({ seq: 100 + i, timestamp: (100 + i) * 960, payload: opus });
    await eventually(
      async () => (await metric(succ, "agora_audio_net_frames_dropped_total", 'reason="muted"')) >= 5,
      15_000,
      "the successor dropping the muted speaker's frames",
    );
    // The lock holds for a newcomer at the successor.
    let refused: unknown;
    try {
      await join(late, Role.SPEAKER);
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(AudioRemoteError);
    expect((refused as AudioRemoteError).message).toMatch(/locked/);
    // The removed participant's grant is revoked in the room record: refused at the successor too.
    let again: unknown;
    try {
      await join(gone, Role.SPEAKER);
    } catch (err) {
      again = err;
    }
    expect(again).toBeInstanceOf(AudioRemoteError);
    expect((again as AudioRemoteError).message).toMatch(/revoked|removed|banned/);
    for (const s of [m2, a2, b2, q2]) await s.leave();
  });
});
