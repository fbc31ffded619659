/** The provider refresher service on virtual time: runs at start, again every interval, and stop cancels. */
import { afterEach, describe, expect, test } from "bun:test";
import { silentLogger } from "../../src/log";
import { namespaceCid } from "../../src/p2p/namespaces";
import { ACKED_ENOUGH, ProviderRefresher, type ProviderRefresherComponents, providerRefresher } from "../../src/p2p/provider-refresher";
import { settle, until, useVirtualTime } from "./virtual-time";

interface Call {
  cid: string;
  signal?: AbortSignal;
}

/** A DHT whose provide() records each call; `hang` keeps it running until its signal aborts. */
function fakeDht(hang = false) {
  const calls: Call[] = [];
  const dht = {
    async *provide(cid: { toString(): string }, opts: { signal?: AbortSignal } = {}) {
      calls.push({ cid: cid.toString(), signal: opts.signal });
      if (hang) {
        await new Promise<void>((_, reject) => opts.signal?.addEventListener("abort", () => reject(opts.signal!.reason), { once: true }));
      }
      yield { name: "PEER_RESPONSE", messageName: "ADD_PROVIDER" };
    },
  };
  return { calls, dht: dht as unknown as ProviderRefresherComponents["dht"] };
}

const NAMESPACES = ["/agora/region/eu-west", "/agora/all"];

describe("provider refresher service", () => {
  let clock: ReturnType<typeof useVirtualTime>;
  afterEach(() => clock?.restore());

  test("provides every namespace at start, then again every interval", async () => {
    clock = useVirtualTime();
    const { calls, dht } = fakeDht();
    const svc = providerRefresher({ logger: silentLogger(), namespaces: NAMESPACES, intervalMs: 1_000, timeoutMs: 500 })({ dht });
    expect(svc).toBeInstanceOf(ProviderRefresher);
    await svc.start();
    await settle();
    expect(calls.length).toBe(0); // nothing before libp2p's afterStart: the DHT may not be up yet
    await svc.afterStart();
    await until("first round", () => svc.completedRounds() === 1);
    const cids = await Promise.all(NAMESPACES.map(async (ns) => (await namespaceCid(ns)).toString()));
    expect(calls.map((c) => c.cid).sort()).toEqual(cids.sort());
    await clock.advance(999);
    expect(svc.completedRounds()).toBe(1);
    await clock.advance(1);
    await until("second round", () => svc.completedRounds() === 2);
    await clock.advance(1_000);
    await until("third round", () => svc.completedRounds() === 3);
    expect(calls.length).toBe(3 * NAMESPACES.length);
    await svc.beforeStop();
    await svc.stop();
    expect(svc.isStarted()).toBe(false);
  });

  test("stop aborts the round in flight and nothing runs afterwards", async () => {
    clock = useVirtualTime();
    const { calls, dht } = fakeDht(true);
    const svc = providerRefresher({ logger: silentLogger(), namespaces: NAMESPACES, intervalMs: 1_000, timeoutMs: 60_000 })({ dht });
    await svc.start();
    await svc.afterStart();
    await until("round in flight", () => calls.length === NAMESPACES.length);
    expect(calls.every((c) => c.signal && !c.signal.aborted)).toBe(true);
    await svc.beforeStop();
    expect(calls.every((c) => c.signal!.aborted)).toBe(true);
    await svc.stop();
    await settle();
    await clock.advance(100_000); // past the round's own 60 s timeout too
    expect(calls.length).toBe(NAMESPACES.length);
    expect(clock.pendingTimers()).toBe(0);
  });

  test("backs off while rounds reach enough DHT servers, and a poorly acknowledged round brings the base pace back", async () => {
    clock = useVirtualTime();
    let acks = ACKED_ENOUGH;
    const calls: number[] = [];
    const dht = {
      async *provide() {
        calls.push(Date.now());
        for (let i = 0; i < acks; i++) yield { name: "PEER_RESPONSE", messageName: "ADD_PROVIDER" };
      },
    } as unknown as ProviderRefresherComponents["dht"];
    const svc = providerRefresher({
      logger: silentLogger(),
      namespaces: ["/agora/all"],
      intervalMs: 1_000,
      maxIntervalMs: 4_000,
      timeoutMs: 500,
    })({ dht });
    await svc.start();
    await svc.afterStart();
    const t0 = Date.now();
    await until("first round", () => svc.completedRounds() === 1);
    expect(svc.intervalMs()).toBe(2_000);
    // rounds at 0, 2 s, 6 s, 10 s (capped at 4 s); the 1 s ticks between them do nothing
    for (const [at, rounds] of [
      [1_000, 1],
      [2_000, 2],
      [5_000, 2],
      [6_000, 3],
      [9_000, 3],
      [10_000, 4],
    ] as const) {
      await clock.advance(t0 + at - Date.now());
      await settle();
      expect(svc.completedRounds()).toBe(rounds);
    }
    expect(svc.intervalMs()).toBe(4_000);
    // a round that reaches fewer servers (a routing table emptied, a partition): every tick again
    acks = ACKED_ENOUGH - 1;
    await clock.advance(4_000);
    await until("fifth round", () => svc.completedRounds() === 5);
    expect(svc.intervalMs()).toBe(1_000);
    await clock.advance(1_000);
    await until("sixth round", () => svc.completedRounds() === 6);
    expect(calls.map((t) => t - t0)).toEqual([0, 2_000, 6_000, 10_000, 14_000, 15_000]);
    await svc.beforeStop();
    await svc.stop();
  });

  test("a round that overruns its timeout is aborted, and the next one still runs", async () => {
    clock = useVirtualTime();
    const { calls, dht } = fakeDht(true);
    const svc = providerRefresher({ logger: silentLogger(), namespaces: ["/agora/all"], intervalMs: 1_000, timeoutMs: 100 })({ dht });
    await svc.start();
    await svc.afterStart();
    await until("round in flight", () => calls.length === 1);
    await clock.advance(100);
    await until("timed out", () => calls[0]!.signal!.aborted);
    await clock.advance(1_000);
    await until("next round", () => calls.length === 2);
    await svc.stop();
  });
});
