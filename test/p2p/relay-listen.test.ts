/**
 * Relay `auto` mode, the relay auto-listen service with fake components on virtual time: it listens on
 * /p2p-circuit once the node is not publicly reachable and has a LAN address, and not otherwise. (The
 * same with real nodes and a real relay: test/relay/relay.test.ts.)
 */
import { afterEach, describe, expect, test } from "bun:test";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { silentLogger } from "../../src/log";
import type { ReachabilityStatus } from "../../src/p2p/reachability";
import { type RelayListenComponents, relayListen } from "../../src/p2p/relay-listen";
import { until, useVirtualTime } from "./virtual-time";

function fakes(o: { status: ReachabilityStatus; addrs: string[]; listenFails?: number }) {
  const state = { status: o.status, addrs: o.addrs.map((a) => multiaddr(a)), listened: [] as string[][], fails: o.listenFails ?? 0 };
  const components: RelayListenComponents = {
    reachability: { status: () => state.status },
    addressManager: { getAddresses: () => state.addrs },
    transportManager: {
      listen: async (addrs: Multiaddr[]) => {
        state.listened.push(addrs.map(String));
        if (state.fails-- > 0) throw new Error("no relay found");
      },
    },
  };
  return { components, state };
}

const LAN = "/ip4/192.168.1.20/tcp/4001";
const LOOPBACK = "/ip4/127.0.0.1/tcp/4001";

async function started(components: RelayListenComponents, intervalMs = 1_000) {
  const svc = relayListen({ logger: silentLogger(), intervalMs })(components);
  svc.start();
  svc.afterStart();
  return svc;
}

describe("relay auto-listen service (relay client 'auto')", () => {
  let clock: ReturnType<typeof useVirtualTime>;
  afterEach(() => clock?.restore());

  test("private with a LAN address: listens on /p2p-circuit at the first check, once", async () => {
    clock = useVirtualTime();
    const { components, state } = fakes({ status: "private", addrs: [LAN, LOOPBACK] });
    const svc = await started(components);
    await clock.advance(999);
    expect(svc.checks()).toBe(0); // the first check waits one interval (the reachability grace)
    await clock.advance(1);
    await until("first check", () => svc.checks() === 1);
    expect(state.listened).toEqual([["/p2p-circuit"]]);
    expect(svc.isListening()).toBe(true);
    await clock.advance(1_000);
    await until("second check", () => svc.checks() === 2);
    expect(state.listened.length).toBe(1);
    svc.stop();
  });

  test("publicly reachable or still unknown: never listens on a relay", async () => {
    clock = useVirtualTime();
    for (const status of ["public", "unknown"] as const) {
      const { components, state } = fakes({ status, addrs: [LAN] });
      const svc = await started(components);
      await clock.advance(1_000);
      await clock.advance(1_000);
      await until("two checks", () => svc.checks() >= 2);
      expect(state.listened).toEqual([]);
      expect(svc.isListening()).toBe(false);
      svc.stop();
    }
  });

  test("loopback-only (a single-host setup): never listens on a relay, even when private", async () => {
    clock = useVirtualTime();
    const { components, state } = fakes({ status: "private", addrs: [LOOPBACK, "/ip6/::1/tcp/4001"] });
    const svc = await started(components);
    await clock.advance(1_000);
    await clock.advance(1_000);
    await until("two checks", () => svc.checks() >= 2);
    expect(state.listened).toEqual([]);
    svc.stop();
  });

  test("becomes private later: listens at the next check", async () => {
    clock = useVirtualTime();
    const { components, state } = fakes({ status: "unknown", addrs: [LAN] });
    const svc = await started(components);
    await clock.advance(1_000);
    await until("first check", () => svc.checks() === 1);
    expect(state.listened).toEqual([]);
    state.status = "private";
    await clock.advance(1_000);
    await until("second check", () => svc.checks() === 2);
    expect(state.listened).toEqual([["/p2p-circuit"]]);
    svc.stop();
  });

  test("a failed listen is retried at the next check", async () => {
    clock = useVirtualTime();
    const { components, state } = fakes({ status: "private", addrs: [LAN], listenFails: 1 });
    const svc = await started(components);
    await clock.advance(1_000);
    await until("first check", () => svc.checks() === 1);
    expect(svc.isListening()).toBe(false);
    await clock.advance(1_000);
    await until("second check", () => svc.checks() === 2);
    expect(state.listened.length).toBe(2);
    expect(svc.isListening()).toBe(true);
    svc.stop();
  });

  test("stop cancels: no check runs after it", async () => {
    clock = useVirtualTime();
    const { components, state } = fakes({ status: "private", addrs: [LAN] });
    const svc = await started(components);
    svc.beforeStop();
    svc.stop();
    await clock.advance(10_000);
    expect(svc.checks()).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
    expect(state.listened).toEqual([]);
  });
});
