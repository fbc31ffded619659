/**
 * RoomNavigator's placement among the mixers a client can reach: a mixer the rule chooses that does not
 * answer (cut off by a partition: a TCP peer that accepts and then says nothing, so a dial hangs rather than
 * failing fast) is skipped for the next one by the rule, within the probe timeout, instead of the session's
 * join timeout on every retry. Real libp2p mixers (AudioRoomService + RoomHost over an in-memory directory).
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { identify } from "@libp2p/identify";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { createLibp2p } from "libp2p";
import { Registry } from "prom-client";
import { createClientNode, type MixerCandidate, RoomNavigator } from "../../src/client";
import { RESOLVE_HEAD_START_MS } from "../../src/client/navigator";
import { silentLogger } from "../../src/log";
import { rankPlacement } from "../../src/protocol";
import { AudioRoomService, RoomHost } from "../../src/rooms";
import { agoraPing, agoraTransportStack } from "../../src/transport";
import { createBareClientNode, FakeMediaEngine } from "../helpers/net-fakes";
import { eventually } from "../helpers/node-process";
import { MemoryRoomDirectory } from "../helpers/room-directory";
import { VirtualClock } from "../helpers/virtual-clock";

setDefaultTimeout(30_000);

const stops: (() => unknown)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

function candidate(peer: string, addr: string): MixerCandidate {
  return {
    peer_id: peer,
    region: "eu-west",
    status: "online",
    capabilities: ["mixer"],
    current_load: 0,
    max_clients: 100,
    listen_addr: [addr],
  };
}

/** `othersAlive`: the mixer takes every recorded host for alive (else only itself), so it REDIRECTs to them. */
async function mixer(dir: MemoryRoomDirectory, othersAlive = false): Promise<string> {
  const key = await generateKeyPair("Ed25519");
  const node = await createLibp2p({
    privateKey: key,
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    services: { identify: identify(), ping: agoraPing() },
  });
  stops.push(() => node.stop());
  const peer = node.peerId.toString();
  const addr = node
    .getMultiaddrs()[0]!
    .toString()
    .replace(/\/p2p\/.*$/, "");
  const registry = new Registry();
  const host = new RoomHost({
    directory: dir.port(peer, "eu-west", () => [addr]),
    selfPeerId: peer,
    privateKey: key,
    region: "eu-west",
    selfAddrs: () => [addr],
    candidates: async () => dir.mixers,
    isAlive: async (p) => othersAlive || p === peer,
    registry,
    logger: silentLogger(),
  });
  const service = new AudioRoomService({ libp2p: node, engine: new FakeMediaEngine(1000), registry, logger: silentLogger(), host });
  await service.start();
  stops.push(() => service.stop());
  dir.mixers.push(candidate(peer, addr));
  return peer;
}

/** A peer behind a partition: TCP accepts, then nothing ever comes back. */
async function blackHole(): Promise<{ peer: string; addr: string }> {
  const sockets: Socket[] = [];
  const srv: Server = createServer((s) => sockets.push(s));
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  stops.push(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  const port = (srv.address() as { port: number }).port;
  return { peer: peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString(), addr: `/ip4/127.0.0.1/tcp/${port}` };
}

describe("RoomNavigator: placement among the mixers it can reach", () => {
  test("the rule's first choice does not answer: both joiners skip it within the probe timeout and meet on the next", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir);
    await mixer(dir);
    const hole = await blackHole();
    dir.mixers.push(candidate(hole.peer, hole.addr));
    // A room whose first choice by the rule is the unreachable one.
    let room = "";
    for (let i = 0; !room; i++) if (rankPlacement(`cut-${i}`, "eu-west", dir.mixers)[0]!.peer_id === hole.peer) room = `cut-${i}`;
    const next = rankPlacement(room, "eu-west", dir.mixers)[1]!.peer_id;
    const navs = await Promise.all(
      [0, 1].map(async () => {
        const lib = await createBareClientNode();
        stops.push(() => lib.stop());
        return new RoomNavigator({ libp2p: lib, room, locator: dir.locator(), region: "eu-west", probeTimeoutMs: 500 });
      }),
    );
    const t0 = performance.now();
    await Promise.all(navs.map((n) => n.open({})));
    const ms = performance.now() - t0;
    for (const n of navs) {
      expect(n.host).toBe(next);
      expect(n.stats.unreachableSkipped).toBe(1);
    }
    // The probe's bound, not the session's 10 s join timeout (generous for a busy machine).
    expect(ms).toBeLessThan(8_000);
    for (const n of navs) await n.session?.leave();
  });

  test("after a lost host, the failover skips an unreachable successor too; a reachable first choice is not skipped", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir);
    await mixer(dir);
    const hole = await blackHole();
    dir.mixers.push(candidate(hole.peer, hole.addr));
    // First choice a real mixer, second the unreachable one, third the other real mixer.
    let room = "";
    for (let i = 0; !room; i++) {
      const r = rankPlacement(`fail-${i}`, "eu-west", dir.mixers);
      if (r[0]!.peer_id !== hole.peer && r[1]!.peer_id === hole.peer) room = `fail-${i}`;
    }
    const [first, , third] = rankPlacement(room, "eu-west", dir.mixers);
    const lib = await createBareClientNode();
    stops.push(() => lib.stop());
    const nav = new RoomNavigator({ libp2p: lib, room, locator: dir.locator(), region: "eu-west", probeTimeoutMs: 500 });
    await nav.open({});
    expect(nav.host).toBe(first!.peer_id);
    expect(nav.stats.unreachableSkipped).toBe(0);
    // The host is lost for us (a partition): the rule without it names the unreachable one, then the third.
    await nav.session?.leave();
    nav.hostLost();
    await nav.open({});
    expect(nav.host).toBe(third!.peer_id);
    expect(nav.stats.unreachableSkipped).toBe(1);
    await nav.session?.leave();
  });

  test("twelve participants on one libp2p node (one process, one connection) share one probe: none skips a live mixer", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir);
    await mixer(dir);
    const lib = await createClientNode();
    stops.push(() => lib.stop());
    const first = rankPlacement("crowd", "eu-west", dir.mixers)[0]!.peer_id;
    const navs = Array.from(
      { length: 12 },
      () => new RoomNavigator({ libp2p: lib, room: "crowd", locator: dir.locator(), region: "eu-west" }),
    );
    // Their first placement has no record yet: each probes the rule's choice at the same moment. Separate
    // pings would exceed the connection's ping streams, fail, and send them elsewhere.
    await Promise.all(navs.map((n) => n.open({})));
    for (const n of navs) {
      expect(n.host).toBe(first);
      expect(n.stats.unreachableSkipped).toBe(0);
    }
    for (const n of navs) await n.session?.leave();
  });

  test("the last open's phases: placed by the rule, then by the record, then through a REDIRECT", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir, true);
    await mixer(dir, true);
    const [first, second] = rankPlacement("phases", "eu-west", dir.mixers);
    const lib = await createBareClientNode();
    stops.push(() => lib.stop());
    // A first joiner whose list has only the rule's second mixer: the room lives there.
    const only = { ...dir.locator(), mixers: async () => dir.mixers.filter((m) => m.peer_id === second!.peer_id) };
    const a = new RoomNavigator({ libp2p: lib, room: "phases", locator: only, region: "eu-west" });
    await a.open({});
    expect(a.host).toBe(second!.peer_id);
    const pa = a.stats.lastOpen!;
    expect(pa.placedBy).toBe("rule");
    expect(pa.redirects).toBe(0);
    expect(pa.attempts).toBe(1);
    expect(pa.dialMs).toBeGreaterThan(0);
    expect(pa.placeMs + pa.probeMs + pa.dialMs + pa.answerMs + pa.datagramsMs).toBeLessThanOrEqual(pa.totalMs + 1);
    // A second one finds the record and goes there directly.
    const b = new RoomNavigator({ libp2p: lib, room: "phases", locator: dir.locator(), region: "eu-west" });
    await b.open({});
    expect(b.host).toBe(second!.peer_id);
    expect(b.stats.lastOpen).toMatchObject({ placedBy: "record", redirects: 0, probeMs: 0 });
    expect(b.stats.lastOpen!.resolveMs).toBeDefined();
    // A third one's lookup misses the record: the rule's first mixer REDIRECTs it, the record confirms.
    let lookups = 0;
    const late = { ...dir.locator(), resolve: async (room: string) => (lookups++ === 0 ? undefined : dir.locator().resolve(room)) };
    const c = new RoomNavigator({ libp2p: lib, room: "phases", locator: late, region: "eu-west" });
    await c.open({});
    expect(c.host).toBe(second!.peer_id);
    expect(first!.peer_id).not.toBe(second!.peer_id);
    const pc = c.stats.lastOpen!;
    expect(pc).toMatchObject({ placedBy: "rule", redirects: 1, attempts: 1 });
    expect(pc.totalMs).toBeGreaterThanOrEqual(pc.placeMs + pc.probeMs + pc.dialMs + pc.answerMs + pc.verifyMs - 1);
    for (const n of [a, b, c]) await n.session?.leave();
  });
  test("a lookup that has not answered holds the join only for the head start, on the navigator's clock; then the rule's first mixer", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir);
    await mixer(dir);
    const [first] = rankPlacement("head-start", "eu-west", dir.mixers);
    const lib = await createBareClientNode();
    stops.push(() => lib.stop());
    const clock = new VirtualClock();
    // A new room's lookup: its walk has not ended yet (it never does here).
    const slow = { ...dir.locator(), resolve: () => new Promise<undefined>(() => {}) };
    const nav = new RoomNavigator({ libp2p: lib, room: "head-start", locator: slow, region: "eu-west", clock });
    let opened = false;
    const open = nav.open({}).then(() => {
      opened = true;
    });
    await eventually(
      () => clock.pending().some((t) => t.ms === RESOLVE_HEAD_START_MS),
      10_000,
      "the head start's timer on the navigator's clock",
    );
    expect(opened).toBe(false);
    expect(lib.getConnections().length).toBe(0);
    await clock.advance(RESOLVE_HEAD_START_MS);
    await open;
    expect(nav.host).toBe(first!.peer_id);
    expect(nav.stats.lastOpen).toMatchObject({ placedBy: "rule", redirects: 0 });
    expect(nav.stats.lastOpen!.resolveMs).toBeUndefined();
    await nav.session?.leave();
  });

  test("a record naming a host that is gone (a stale cached lookup) is looked up again afresh, not retried to an error", async () => {
    const dir = new MemoryRoomDirectory();
    await mixer(dir);
    await mixer(dir);
    const lib = await createBareClientNode();
    stops.push(() => lib.stop());
    const a = new RoomNavigator({ libp2p: lib, room: "gone", locator: dir.locator(), region: "eu-west" });
    await a.open({});
    // A port nothing listens on any more: the host that record names drained and exited.
    const srv = createServer();
    await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((res) => srv.close(() => res()));
    const gone = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    const asked: boolean[] = [];
    const stale = {
      ...dir.locator(),
      resolve: async (room: string, o?: { fresh?: boolean }) => {
        asked.push(o?.fresh === true);
        if (!o?.fresh) return { host: gone, addrs: [`/ip4/127.0.0.1/tcp/${port}`], epoch: 1, status: "active" as const };
        return dir.locator().resolve(room);
      },
    };
    const b = new RoomNavigator({ libp2p: lib, room: "gone", locator: stale, region: "eu-west" });
    await b.open({});
    expect(b.host).toBe(a.host);
    expect(asked).toEqual([false, true]);
    expect(b.stats.lastOpen).toMatchObject({ placedBy: "record", attempts: 2 });
    for (const n of [a, b]) await n.session?.leave();
  });
});
