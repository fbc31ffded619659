/**
 * Rooms that live in the network, with real processes of the compiled binary on 127.0.0.1: a bootstrap and
 * three mixers of one region; participants join by name (SDK navigator over a DHT client: one process holds
 * many participants, as loadgen does). Real media engine and real Opus on both sides.
 *
 * Busy-machine rules: every wait is a condition with a deadline; the audio gap of a handover is measured
 * and reported (console), its ≤ 200 ms p99 target is a benchmark figure (bench/rooms.ts), not asserted here
 * beyond "no reconnect, no session lost".
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { loadOpusCodec, type OpusCodec } from "../../src/client";
import { silentLogger } from "../../src/log";
import { createRoomLocator, type RoomLocatorClient } from "../../src/p2p";
import { FRAME_SAMPLES, rankPlacement } from "../../src/protocol";
import { goertzelPower } from "../helpers/net-fakes";
import { eventually, type NodeHandle, startNode } from "../helpers/node-process";
import { Participant, stopParticipants } from "../helpers/room-participant";

setDefaultTimeout(120_000);

const HEARTBEAT_S = 2;
const REGION = "eu-west";
let boot: NodeHandle;
let bootAddr: string;
const mixers: NodeHandle[] = [];
let codec: OpusCodec;
const locators: RoomLocatorClient[] = [];

async function startMixer(): Promise<NodeHandle> {
  return startNode({
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
      "--set",
      "audio.max_streams_per_ip=2000",
    ],
  });
}

async function locator(bootstrap = [bootAddr]): Promise<RoomLocatorClient> {
  const l = await createRoomLocator({ bootstrap, logger: silentLogger() });
  locators.push(l);
  return l;
}

async function api(h: NodeHandle, path: string): Promise<unknown> {
  return (await fetch(`${h.dashboardUrl}${path}`)).json();
}

async function peerIds(): Promise<string[]> {
  return Promise.all(mixers.map((m) => m.peerId()));
}

async function mixerOf(peer: string | undefined): Promise<NodeHandle> {
  const ids = await peerIds();
  const i = ids.indexOf(peer ?? "");
  if (i < 0) throw new Error(`no mixer ${peer}`);
  return mixers[i]!;
}

beforeAll(async () => {
  codec = await loadOpusCodec();
  boot = await startNode({ args: ["--mode", "bootstrap", "--heartbeat-interval", `${HEARTBEAT_S}s`] });
  bootAddr = await boot.multiaddr();
  mixers.push(...(await Promise.all([startMixer(), startMixer(), startMixer(), startMixer()])));
  const l = await locator();
  await eventually(async () => (await l.mixers(REGION)).length === 4, 40_000, "four mixers discoverable", 300);
}, 90_000);

afterAll(async () => {
  await stopParticipants();
  for (const l of locators) await l.stop().catch(() => {});
  for (const m of mixers) m.cleanup();
  boot?.cleanup();
});

describe("rooms in the network (binary processes)", () => {
  test("20 participants started together through three different entry nodes all land on one mixer and hear each other", async () => {
    const ids = await peerIds();
    // Uneven load: other rooms on two of the mixers.
    // Three entry nodes: each third of the crowd uses another mixer as its bootstrap.
    const entries: RoomLocatorClient[] = [];
    for (let i = 0; i < 3; i++) entries.push(await locator([await mixers[i]!.multiaddr()]));
    // each entry's client is connected: it sees the region's four mixers
    for (const e of entries) await eventually(async () => (await e.mixers(REGION)).length === 4, 30_000, "an entry's mixers", 300);
    const loadLoc = entries[0]!;
    const load: Participant[] = [];
    for (const [room, n] of [
      ["other-a", 6],
      ["other-b", 3],
    ] as const)
      for (let i = 0; i < n; i++) load.push(new Participant(codec, loadLoc.libp2p, loadLoc, REGION, room, undefined));
    await Promise.all(load.map((p) => p.join()));
    const freqs = [440, 660, 880];
    const crowd = Array.from(
      { length: 20 },
      (_, i) => new Participant(codec, entries[i % 3]!.libp2p, entries[i % 3]!, REGION, "crowd", i < 3 ? freqs[i] : undefined, i === 19),
    );
    await Promise.all(crowd.map((p) => p.join()));
    // Joiners whose discovery saw different mixers may split at first; the losing claim MOVEs its
    // participants to the winner on its next heartbeat (one host within seconds).
    const host = await eventually(
      () => {
        const hosts = new Set(crowd.map((p) => p.nav.host));
        return hosts.size === 1 && [...hosts][0];
      },
      15_000,
      "all 20 on one host",
    );
    const split = crowd.filter((p) => p.moves > 0).length;
    console.log(`crowd: 20 on ${host}; ${split} moved there after a split claim`);
    expect(ids).toContain(host);
    expect(crowd.reduce((n, p) => n + p.nav.stats.redirectsRefused + p.nav.stats.redirectLoops, 0)).toBe(0);
    // The host's dashboard has the room with all 20.
    const hostNode = await mixerOf(host);
    await eventually(
      async () =>
        ((await api(hostNode, "/api/rooms")) as { id: string; participants: unknown[] }[]).some(
          (r) => r.id === "crowd" && r.participants.length === 20,
        ),
      15_000,
      "the host lists 20 participants in the room",
    );
    // The listener (no tone of its own) hears all three tones at once.
    await eventually(
      () => {
        const last = crowd[19]!.pcm.slice(-50);
        if (last.length < 50) return false;
        const all = new Int16Array(last.length * FRAME_SAMPLES);
        for (const [i, b] of last.entries()) all.set(b, i * FRAME_SAMPLES);
        const powers = freqs.map((f) => goertzelPower(all, f));
        const off = goertzelPower(all, 1234);
        return powers.every((p) => p > 100 * off);
      },
      20_000,
      "the listener hearing 440, 660 and 880 Hz",
      200,
    );
    await Promise.all([...crowd, ...load].map((p) => p.stop()));
  });

  test("the host drains with 10 talking: all on the successor before the old host exits, none dropped; gap reported", async () => {
    const l = locators[0]!;
    const ps = Array.from({ length: 10 }, (_, i) => new Participant(codec, l.libp2p, l, REGION, "drain-room", 300 + 50 * i));
    await Promise.all(ps.map((p) => p.join()));
    const host = ps[0]!.nav.host!;
    expect(ps.every((p) => p.nav.host === host)).toBe(true);
    const mixs = await eventually(
      async () => {
        const all = (await l.mixers(REGION)).filter((m) => m.peer_id !== host);
        return all.length === 3 && all;
      },
      20_000,
      "the other three mixers discovered",
      300,
    );
    const successor = rankPlacement("drain-room", REGION, mixs)[0]!.peer_id;
    await eventually(() => ps.every((p) => p.frames > 25), 15_000, "audio flowing to every participant");
    for (const p of ps) p.measureGaps = true;
    const old = await mixerOf(host);
    const idx = mixers.indexOf(old);
    const t0 = performance.now();
    const code = await old.stop("SIGTERM");
    const exitedAt = performance.now();
    expect(code).toBe(0);
    const newHosts = new Set(ps.map((p) => p.nav.host));
    expect(newHosts.size).toBe(1);
    expect(newHosts.has(host)).toBe(false);
    expect(ps.every((p) => p.moves >= 1)).toBe(true);
    if (!newHosts.has(successor)) console.log(`drain: the host chose ${[...newHosts][0]}, the test's view of the rule ${successor}`);
    expect(ps.every((p) => p.movedAt[0]! <= exitedAt)).toBe(true);
    expect(ps.reduce((n, p) => n + p.lost, 0)).toBe(0);
    const gaps = ps.flatMap((p) => p.nav.stats.moveGapsMs);
    await eventually(() => ps.every((p) => p.frames > 0 && performance.now() - p.lastFrameAt < 500), 10_000, "audio from the successor");
    const largest = Math.max(...ps.map((p) => p.maxGapMs));
    console.log(
      `drain handover: 10 moved in ${exitedAt - t0} ms (old host exit); switch gaps ms ${JSON.stringify(gaps.map(Math.round))}; largest inter-frame gap per participant ${Math.round(largest)} ms`,
    );
    await Promise.all(ps.map((p) => p.stop()));
    mixers[idx] = await startMixer();
    await eventually(async () => (await l.mixers(REGION)).length === 4, 40_000, "the restarted mixer discoverable", 300);
  });

  test("the host is SIGKILLed: every participant is on one successor within 5 s", async () => {
    const l = locators[0]!;
    const ps = Array.from({ length: 6 }, (_, i) => new Participant(codec, l.libp2p, l, REGION, "kill-room", 500 + 70 * i));
    await Promise.all(ps.map((p) => p.join()));
    const host = ps[0]!.nav.host!;
    const dead = await mixerOf(host);
    const idx = mixers.indexOf(dead);
    const t0 = Date.now();
    dead.proc.kill("SIGKILL");
    await eventually(() => ps.every((p) => p.lost > 0), 10_000, "every session lost");
    await Promise.all(ps.map((p) => p.failover()));
    const rehomed = Date.now() - t0;
    const firstHosts = new Set(ps.map((p) => p.nav.host));
    // Participants whose mixer lists differed (a discovery that missed the mixer restarted by the test before)
    // may re-home on different successors; the losing claim MOVEs its participants to the winner on its next
    // heartbeat. The figure is "together again", so that is what is waited for and timed.
    const successor = await eventually(
      () => {
        const hosts = new Set(ps.map((p) => p.nav.host));
        return hosts.size === 1 && [...hosts][0];
      },
      15_000,
      "all 6 on one successor",
    );
    const reunited = Date.now() - t0;
    expect(successor).not.toBe(host);
    console.log(`SIGKILL: re-homed after ${rehomed} ms on ${firstHosts.size} host(s)`);
    await eventually(() => ps.every((p) => performance.now() - p.lastFrameAt < 500), 10_000, "audio from the successor");
    console.log(`SIGKILL: all 6 on ${successor} after ${reunited} ms`);
    expect(reunited).toBeLessThan(5_000 + 5_000); // 5 s is the target; bound generously for a busy machine (bench measures)
    await Promise.all(ps.map((p) => p.stop()));
    mixers[idx] = await startMixer();
  });
});
