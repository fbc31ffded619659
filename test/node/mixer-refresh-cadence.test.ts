/**
 * The mixer list's refresh cadence (src/node/room-placement.ts MixerRefreshCadence) on a manual clock: an idle
 * node backs off while its walks find the same mixers, and hosting, a JOIN, a changed list or a failed walk
 * bring the busy pace back. Then the wiring: idle heartbeats stop walking, a JOIN's rule check walks again.
 */
import { describe, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import {
  createRoomPlacement,
  IDLE_MIXER_REFRESH_MS,
  MIXER_DEMAND_MS,
  MIXER_REFRESH_MS,
  MixerRefreshCadence,
  mixerListNews,
} from "../../src/node/room-placement";
import { fakeDirectory, fakeNetwork, mixerAdvert } from "./placement-fakes";

const list = (...peers: string[]) =>
  peers.map((peer_id) => ({ peer_id, region: "eu-west", capabilities: ["mixer"], status: "online", current_load: 0, max_clients: 100 }));
const known = (...peers: string[]) => new Map(peers.map((p) => [p, true]));

describe("mixer list refresh cadence", () => {
  test("idle and unchanged: 5 s, 10 s, 20 s, then every 30 s", () => {
    let t = 0;
    const c = new MixerRefreshCadence(() => t);
    expect(c.due(false)).toBe(true);
    c.refreshed(true); // the first walk: everything is news
    expect(c.intervalMs(false)).toBe(MIXER_REFRESH_MS);
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      const from = t;
      while (!c.due(false)) t += 100;
      waits.push(t - from);
      c.refreshed(false);
    }
    expect(waits).toEqual([5_000, 10_000, 20_000, 30_000, 30_000]);
    expect(c.intervalMs(false)).toBe(IDLE_MIXER_REFRESH_MS);
  });

  test("hosting a room keeps the busy pace; a JOIN does for a minute", () => {
    let t = 0;
    const c = new MixerRefreshCadence(() => t);
    for (let i = 0; i < 4; i++) c.refreshed(false);
    expect(c.intervalMs(false)).toBe(IDLE_MIXER_REFRESH_MS);
    expect(c.intervalMs(true)).toBe(MIXER_REFRESH_MS);
    t = 4_999;
    expect(c.due(true)).toBe(false);
    t = 5_000;
    expect(c.due(true)).toBe(true);
    expect(c.due(false)).toBe(false);
    c.demand();
    expect(c.due(false)).toBe(true);
    t += MIXER_DEMAND_MS - 1;
    c.refreshed(false);
    t += MIXER_REFRESH_MS;
    expect(c.due(false)).toBe(false); // the demand is over: backed off again
    expect(c.intervalMs(false)).toBe(IDLE_MIXER_REFRESH_MS);
  });

  test("news or a failed walk starts the back-off over", () => {
    const c = new MixerRefreshCadence(() => 0);
    for (let i = 0; i < 4; i++) c.refreshed(false);
    expect(c.intervalMs(false)).toBe(IDLE_MIXER_REFRESH_MS);
    c.refreshed(true);
    expect(c.intervalMs(false)).toBe(MIXER_REFRESH_MS);
    c.refreshed(false);
    expect(c.intervalMs(false)).toBe(2 * MIXER_REFRESH_MS);
    c.refreshed(undefined);
    expect(c.intervalMs(false)).toBe(MIXER_REFRESH_MS);
  });

  test("news: a mixer not seen in the last minute, or one whose eligibility changed; fewer mixers (a timed-out walk) is none", () => {
    expect(mixerListNews(list("a", "b"), known("a", "b"), "eu-west")).toBe(false);
    expect(mixerListNews(list("b"), known("a", "b"), "eu-west")).toBe(false);
    expect(mixerListNews([], known("a", "b"), "eu-west")).toBe(false);
    expect(mixerListNews(list("a", "c"), known("a", "b"), "eu-west")).toBe(true);
    expect(mixerListNews(list("a"), new Map(), "eu-west")).toBe(true);
    const [a] = list("a");
    // a busy machine's degraded flag or load figure changes no placement ...
    expect(mixerListNews([{ ...a!, status: "degraded", current_load: 40 }], known("a"), "eu-west")).toBe(false);
    // ... a full mixer, or a draining one, does
    expect(mixerListNews([{ ...a!, current_load: 100 }], known("a"), "eu-west")).toBe(true);
    expect(mixerListNews([{ ...a!, status: "draining" }], known("a"), "eu-west")).toBe(true);
    expect(mixerListNews([a!], new Map([["a", false]]), "eu-west")).toBe(true);
  });
});

describe("placement wiring on the cadence", () => {
  test("idle heartbeats walk less and less; a JOIN's rule check refreshes the list behind its answer", async () => {
    const key = await generateKeyPair("Ed25519");
    const self = peerIdFromPrivateKey(key).toString();
    const other = peerIdFromPrivateKey(await generateKeyPair("Ed25519")).toString();
    let walks = 0;
    const network = fakeNetwork(self, async () => {
      walks++;
      return [mixerAdvert(self), mixerAdvert(other)];
    });
    const directory = fakeDirectory();
    let t = 0;
    const wiring = createRoomPlacement({
      network,
      directory,
      privateKey: key,
      region: "eu-west",
      registry: new Registry(),
      logger: silentLogger(),
      now: () => t,
    });
    wiring.host.bind({ hostedRooms: () => new Map(), move: async () => 0 });
    const settled = async (n: number) => {
      for (let i = 0; i < 200 && walks < n; i++) await new Promise<void>((r) => setImmediate(r));
      for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
    };
    await settled(1); // the walk at creation
    // a 2 s heartbeat for two minutes, no room, nobody asking
    const walkedAt: number[] = [];
    for (t = 2_000; t <= 110_000; t += 2_000) {
      const before = walks;
      await wiring.beat(new Map());
      await settled(before + 1);
      if (walks > before) walkedAt.push(t);
    }
    expect(walkedAt).toEqual([6_000, 16_000, 36_000, 66_000, 96_000]);
    // A JOIN at 111 s: its rule check answers from the list at hand (15 s old) and refreshes it behind.
    const before = walks;
    t = 111_000;
    await wiring.host.decide("new-room", "participant");
    await settled(before + 1);
    expect(walks).toBe(before + 1);
    // ... and the heartbeats walk at the busy pace for a minute.
    const busy: number[] = [];
    for (t = 112_000; t <= 130_000; t += 2_000) {
      const b = walks;
      await wiring.beat(new Map());
      await settled(b + 1);
      if (walks > b) busy.push(t);
    }
    expect(busy).toEqual([116_000, 122_000, 128_000]);
  });
});
