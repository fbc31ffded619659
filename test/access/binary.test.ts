/**
 * Access control in the compiled binary (issue 14): owned rooms made and granted with `agora-node room`,
 * JOINs without and with grants (forged, expired, wrong room, revoked, valid) refused with FORBIDDEN and
 * counted by reason, a listener's tone that never reaches anyone through the real mixer, and a moderator
 * that mutes and removes a speaker who then cannot rejoin with the same grant.
 *
 * Real time (the mixer runs on its own clock): every wait is a condition with a deadline. One libp2p node
 * per participant key, reused, since the node takes at most 5 new connections per second from one address.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { grantFromString, grantToString, Role } from "../../src/access";
import {
  AudioRemoteError,
  AudioSession,
  createClientNode,
  joinRoom,
  loadOpusCodec,
  readWav,
  runJoinClient,
  WireErrorCode,
  writeWav,
} from "../../src/client";
import { silentLogger } from "../../src/log";
import { readIdentity } from "../../src/node";
import { Capability } from "../../src/protocol";
import { db, goertzelPower, tone } from "../helpers/net-fakes";
import { eventually, type NodeHandle, runCli, startNode, tempDir } from "../helpers/node-process";

setDefaultTimeout(180_000);

let h: NodeHandle;
let addr: string;
let dir: string;
let ownerKey: string;
let room: string;
interface Who {
  key: PrivateKey;
  peerId: string;
  node: Libp2p;
}
const who: Record<string, Who> = {};

async function cli(args: string[]): Promise<string> {
  const r = await runCli(args, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`agora-node ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

async function grant(
  role: string,
  opts: { peer?: string; expires?: string; room?: string } = {},
): Promise<{ grant: string; expires_at: string }> {
  const args = ["room", "grant", "--room", opts.room ?? room, "--key-file", ownerKey, "--role", role, "--json"];
  if (opts.peer) args.push("--peer", opts.peer);
  if (opts.expires) args.push("--expires", opts.expires);
  return JSON.parse(await cli(args));
}

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(h.metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

function open(w: Who, g?: string, r = room): Promise<AudioSession> {
  return AudioSession.open({
    libp2p: w.node,
    target: multiaddr(addr),
    room: r,
    ...(g ? { grant: grantFromString(g) } : {}),
    capabilities: Capability.ACCESS_CONTROL,
    onAccess: () => {},
    timeoutMs: 20_000,
  });
}

async function refused(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AudioRemoteError && err.wireCode === WireErrorCode.FORBIDDEN) return err.message;
    throw err;
  }
  throw new Error("JOIN was accepted");
}

beforeAll(async () => {
  h = await startNode();
  addr = await h.multiaddr();
  dir = tempDir();
  ownerKey = join(dir, "owner.key");
  const created = JSON.parse(await cli(["room", "create", "--name", "talk", "--key-file", ownerKey, "--json"]));
  room = created.room;
  expect(room).toMatch(/^talk--[a-z2-7]{26}$/);
  // The owner key file is created once; the same name gives the same id again.
  expect(await cli(["room", "create", "--name", "talk", "--key-file", ownerKey])).toBe(room);
  for (const name of ["alice", "lis", "rec", "mod"]) {
    const file = join(dir, `${name}.key`);
    const out = JSON.parse(await cli(["identity", "new", "--key-file", file, "--json"]));
    const key = readIdentity(file).privateKey;
    who[name] = { key, peerId: out.peer_id, node: await createClientNode({ privateKey: key }) };
  }
});

afterAll(async () => {
  for (const w of Object.values(who)) await w.node.stop();
  await h?.stop();
  h?.cleanup();
});

describe("joining an owned room", () => {
  test("without a grant, forged, expired, wrong room, revoked: FORBIDDEN, counted; a valid grant joins with its role", async () => {
    const a = who.alice!;
    expect(await refused(open(a))).toMatch(/must carry a grant/);

    const valid = await grant("speaker", { peer: a.peerId, expires: "2h" });
    const forged = grantFromString(valid.grant);
    forged[forged.length - 5] = forged[forged.length - 5]! ^ 0x10;
    expect(await refused(open(a, grantToString(forged)))).toMatch(/signature/);

    const short = await grant("speaker", { expires: "1s" });
    await eventually(() => Date.now() > Date.parse(short.expires_at) + 50, 10_000, "the 1 s grant to expire", 50);
    expect(await refused(open(a, short.grant))).toMatch(/expired/);

    const otherRoom = await cli(["room", "create", "--name", "other", "--key-file", ownerKey]);
    const elsewhere = await grant("speaker", { room: otherRoom });
    expect(await refused(open(a, elsewhere.grant))).toMatch(/room/);

    const boundToOther = await grant("speaker", { peer: who.rec!.peerId });
    expect(await refused(open(a, boundToOther.grant))).toMatch(/bound to another/);

    const revoked = await grant("speaker");
    const ok = await open(a, revoked.grant);
    expect(ok.joined.role).toBe(Role.SPEAKER);
    await ok.leave();
    const rv = JSON.parse(
      await cli(["room", "revoke", "--room", room, "--key-file", ownerKey, "--grant", revoked.grant, "--node", addr, "--json"]),
    );
    expect(rv).toMatchObject({ sent: true, code: 0 });
    expect(await refused(open(a, revoked.grant))).toMatch(/revoked/);

    // The valid, bound grant through the CLI join client (its key file makes the peer id the grant names).
    const j = await runCli(
      ["join", "--room", room, "--node", addr, "--grant", valid.grant, "--key-file", join(dir, "alice.key"), "--duration", "1"],
      {
        timeoutMs: 60_000,
      },
    );
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout.trim().split("\n").at(-1)!)).toMatchObject({ role: "speaker" });
    // A JOIN without a grant gets the same answer from the CLI: exit 1 with the reason.
    const no = await runCli(["join", "--room", room, "--node", addr, "--duration", "1"], { timeoutMs: 60_000 });
    expect(no.code).toBe(1);
    expect(no.stderr).toMatch(/FORBIDDEN/);

    for (const [reason, n] of [
      ["no_grant", 2],
      ["bad_signature", 1],
      ["expired", 1],
      ["wrong_room", 1],
      ["wrong_peer", 1],
      ["revoked", 1],
    ] as const)
      expect(await metric("agora_access_denied_total", `reason="${reason}"`)).toBe(n);
  });
});

describe("roles through the real mixer", () => {
  test("a listener's tone never reaches anyone, even when its client sends it", async () => {
    writeWav(join(dir, "440.wav"), tone(440, 3, 8000));
    const speakerGrant = (await grant("speaker", { peer: who.alice!.peerId })).grant;
    const listenerGrant = (await grant("listener")).grant;
    const dropsBefore = await metric("agora_audio_net_frames_dropped_total", 'reason="listener"');
    // The listener: a raw session that sends a 660 Hz tone regardless of its role (the SDK would not).
    const lis = await open(who.lis!, listenerGrant);
    expect(lis.joined.role).toBe(Role.LISTENER);
    const codec = await loadOpusCodec();
    const enc = codec.encoder(32_000);
    const pcm660 = tone(660, 6, 8000);
    let k = 0;
    const t0 = performance.now();
    const sender = setInterval(() => {
      // paced against the wall clock: send what is due
      while (k < 300 && performance.now() - t0 >= k * 20) {
        lis.sendAudio({ seq: k, timestamp: k * 960, payload: enc.encode(pcm660.subarray(k * 960, (k + 1) * 960)).slice() });
        k++;
      }
    }, 10);
    const common = { node: addr, room, logger: silentLogger(), tailMs: 600, jitterMs: 300 };
    try {
      // The receiver records until the speaker is done (a condition, not a fixed time: joins are slow when busy).
      const stopReceiver = new AbortController();
      const receiving = runJoinClient({
        ...common,
        grant: grantFromString(listenerGrant),
        libp2p: who.rec!.node,
        signal: stopReceiver.signal,
        output: join(dir, "r.wav"),
      });
      const speaker = await runJoinClient({
        ...common,
        grant: grantFromString(speakerGrant),
        identity: who.alice!.key,
        input: join(dir, "440.wav"),
        output: join(dir, "a.wav"),
      }).finally(() => stopReceiver.abort());
      const receiver = await receiving;
      expect(speaker.role).toBe("speaker");
      expect(receiver.role).toBe("listener");
      expect(speaker.framesSent).toBe(150);
    } finally {
      clearInterval(sender);
      enc.destroy();
      await lis.leave();
    }
    const r = readWav(join(dir, "r.wav")).samples;
    const a = readWav(join(dir, "a.wav")).samples;
    const p440 = goertzelPower(r, 440);
    // The speaker is heard (its tone covers part of the recording: far above a silent one), the listener by
    // nobody: not the receiver, not the speaker.
    expect(db(p440 / goertzelPower(tone(440, 1, 8000), 440))).toBeGreaterThan(-25);
    expect(db(goertzelPower(r, 660) / p440)).toBeLessThan(-40);
    expect(db(goertzelPower(a, 660) / p440)).toBeLessThan(-40);
    expect(await metric("agora_audio_net_frames_dropped_total", 'reason="listener"')).toBeGreaterThanOrEqual(dropsBefore + 100);
  });
});

describe("moderation", () => {
  test("a moderator mutes and removes a speaker; the removed one cannot rejoin with the same grant", async () => {
    const modGrant = (await grant("moderator", { peer: who.mod!.peerId })).grant;
    const aliceGrant = (await grant("speaker", { peer: who.alice!.peerId, expires: "3h" })).grant;
    const m = await joinRoom({ node: addr, room, grant: modGrant, libp2p: who.mod!.node, identity: who.mod!.key });
    expect(m.role).toBe("moderator");
    const a = await open(who.alice!, aliceGrant);
    const closed = new Promise<unknown>(
      (resolve) => ((a as unknown as { opts: { onClose: (e: unknown) => void } }).opts.onClose = resolve),
    );
    const opus = Uint8Array.of(0xf8, 1, 2, 3);
    let seq = 0;
    const send = (n: number) => {
      for (let i = 0; i < n; i++) a.sendAudio({ seq: seq, timestamp: seq++ * 960, payload: opus });
    };
    const mutedBefore = await metric("agora_audio_net_frames_dropped_total", 'reason="muted"');
    expect(await m.moderate("MUTE", a.participantId)).toEqual({ code: 0, message: "muted" });
    send(10);
    await eventually(
      async () => (await metric("agora_audio_net_frames_dropped_total", 'reason="muted"')) >= mutedBefore + 10,
      20_000,
      "the muted frames to be dropped",
    );
    expect(await m.moderate("REMOVE", a.participantId)).toMatchObject({ code: 0, message: "removed" });
    const err = await closed;
    expect(err).toBeInstanceOf(AudioRemoteError);
    expect((err as AudioRemoteError).wireCode).toBe(WireErrorCode.FORBIDDEN);
    expect(await refused(open(who.alice!, aliceGrant))).toMatch(/revoked/);
    expect(await metric("agora_access_moderation_total", 'action="remove",result="ok"')).toBe(1);
    await m.leave();
  });
});
