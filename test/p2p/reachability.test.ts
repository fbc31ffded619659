/** The reachability service: public / private / unknown from the address manager and inbound connections. */
import { afterEach, describe, expect, test } from "bun:test";
import type { Connection } from "@libp2p/interface";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { type ReachabilityComponents, reachability } from "../../src/p2p/reachability";
import { useVirtualTime } from "./virtual-time";

interface Addr {
  multiaddr: Multiaddr;
  verified: boolean;
  expires: number;
}

function fakes(addrs: Addr[]) {
  const target = new EventTarget();
  const components = {
    addressManager: { getAddressesWithMetadata: () => addrs },
    events: target,
  } as unknown as ReachabilityComponents;
  const inbound = (remote: string) =>
    target.dispatchEvent(
      new CustomEvent("connection:open", { detail: { direction: "inbound", remoteAddr: multiaddr(remote) } as unknown as Connection }),
    );
  return { components, inbound, target };
}

const addr = (s: string, verified = false, expires = 0): Addr => ({ multiaddr: multiaddr(s), verified, expires });

describe("reachability service", () => {
  let clock: ReturnType<typeof useVirtualTime>;
  afterEach(() => clock?.restore());

  test("no public candidate: unknown during the grace period, private after it", () => {
    clock = useVirtualTime();
    const { components } = fakes([addr("/ip4/192.168.1.5/tcp/4001"), addr("/ip4/127.0.0.1/tcp/4001")]);
    const r = reachability({ graceMs: 30_000 })(components);
    expect(r.status()).toBe("unknown"); // not started
    r.start();
    expect(r.status()).toBe("unknown");
    void clock.advance(29_999);
    expect(r.status()).toBe("unknown");
    void clock.advance(1);
    expect(r.status()).toBe("private");
    r.stop();
    expect(r.status()).toBe("unknown");
  });

  test("a verified public address is public; failed verification of every candidate is private", () => {
    expect(reachability()(fakes([addr("/ip4/8.8.8.8/tcp/4001", true)]).components).status()).toBe("unknown"); // not started
    const verified = reachability()(fakes([addr("/ip4/8.8.8.8/tcp/4001", true)]).components);
    verified.start();
    expect(verified.status()).toBe("public");
    const failed = reachability()(fakes([addr("/ip4/8.8.8.8/tcp/4001", false, Date.now() + 1000)]).components);
    failed.start();
    expect(failed.status()).toBe("private");
    const pending = reachability()(fakes([addr("/ip4/8.8.8.8/tcp/4001", false, 0)]).components);
    pending.start();
    expect(pending.status()).toBe("unknown");
  });

  test("relay circuit addresses and private addresses are not candidates", () => {
    const r = reachability({ graceMs: 0 })(
      fakes([
        addr("/ip4/8.8.8.8/tcp/4001/p2p/12D3KooWKDStZZgYnA7uRggHUq1EZyxtknJX2q8AziLsnaTSswaf/p2p-circuit", true),
        addr("/ip4/10.1.2.3/tcp/1", true),
      ]).components,
    );
    r.start();
    expect(r.status()).toBe("private");
  });

  test("an inbound direct connection from a public IP makes the node public; private, relayed or outbound ones do not", () => {
    const { components, inbound, target } = fakes([]);
    const r = reachability({ graceMs: 0 })(components);
    r.start();
    inbound("/ip4/192.168.1.9/tcp/5555");
    inbound("/ip4/8.8.4.4/tcp/1/p2p/12D3KooWKDStZZgYnA7uRggHUq1EZyxtknJX2q8AziLsnaTSswaf/p2p-circuit");
    inbound("/dns4/example.org/tcp/1");
    target.dispatchEvent(
      new CustomEvent("connection:open", { detail: { direction: "outbound", remoteAddr: multiaddr("/ip4/8.8.4.4/tcp/1") } }),
    );
    expect(r.status()).toBe("private");
    inbound("/ip4/8.8.4.4/tcp/5555");
    expect(r.status()).toBe("public");
    r.stop();
    // a restart starts over, and while stopped nothing is listened to
    inbound("/ip4/8.8.4.4/tcp/5556");
    r.start();
    expect(r.status()).toBe("private");
  });
});
