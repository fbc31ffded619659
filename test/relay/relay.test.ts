/**
 * Circuit relay v2 with Agora's limits: a peer with no listen address at all (so nobody can dial it
 * directly) is reached through a relay node, with a voice-sized transfer well past libp2p's default
 * 128 KiB circuit limit; the [relay] limits themselves are enforced (bytes, circuits, reservations per IP).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { CircuitRelayService } from "@libp2p/circuit-relay-v2";
import type { Libp2p } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { defaultConfig } from "../../src/config/schema";
import type { RelayListen } from "../../src/p2p/relay-listen";
import { MAX_TIMER_MS, relayServerInit, UNLIMITED_BYTES, wireSafeUint64 } from "../../src/relay";
import { cleanupDirs, metricValue, startTestNode, stopAll, type TestNode, waitFor } from "../p2p/helpers";
import { sendBulk, serveBulk } from "./bulk";

setDefaultTimeout(45_000);
afterAll(() => cleanupDirs());

/** `/ip4/127.0.0.1/tcp/<relay port>` itself or anything below it (…/p2p/<relay>, …/p2p-circuit/…). */
function isRelayAddr(ma: string, relay: TestNode): boolean {
  const tcpPart = relay.addr.split("/p2p/")[0]!;
  return ma === tcpPart || ma.startsWith(`${tcpPart}/`);
}

/**
 * A node with no TCP listener, reachable only through a reservation on `relay`. With `isolated`, a
 * connection gater also stops it from dialing anyone but the relay, so it cannot open a direct connection
 * to a peer either (otherwise it could: it has no listener, but it can dial out).
 */
async function behindRelay(relay: TestNode, region = "nat-zone", isolated = false): Promise<TestNode> {
  const n = await startTestNode({
    region,
    bootstrap: [relay.addr],
    internal: {
      listenAddrs: [`${relay.addr}/p2p-circuit`],
      ...(isolated ? { connectionGater: { denyDialMultiaddr: (ma: Multiaddr) => !isRelayAddr(ma.toString(), relay) } } : {}),
    },
  });
  await waitFor("relay reservation", () => n.node.listenAddrs().some((a) => a.includes("/p2p-circuit")), 15_000);
  await serveBulk(n.node.libp2p);
  return n;
}

describe("relay limits from [relay]", () => {
  test("defaults are sized for calls, not libp2p's 128 KiB / 2 min", () => {
    const init = relayServerInit(defaultConfig().relay);
    expect(init.reservations).toMatchObject({
      maxReservations: 256,
      reservationTtl: 3_600_000,
      applyDefaultLimit: true,
      defaultDurationLimit: 14_400_000,
      // 1 GiB per direction; libp2p counts both directions in one budget; 2^31 itself is mis-encoded on the
      // wire by libp2p's protobuf runtime, so one byte less
      defaultDataLimit: 2n * 1073741824n - 1n,
    });
    expect(init.maxOutboundStopStreams).toBe(512);
  });

  test("budgets libp2p's protobuf runtime would mis-encode are moved to the nearest safe value", () => {
    expect(wireSafeUint64(2n ** 31n - 1n)).toBe(2n ** 31n - 1n);
    expect(wireSafeUint64(2n ** 31n)).toBe(2n ** 31n - 1n);
    expect(wireSafeUint64(2n ** 31n + 2n ** 29n)).toBe(2n ** 31n - 1n);
    expect(wireSafeUint64(2n ** 32n - 5n)).toBe(2n ** 32n);
    expect(wireSafeUint64(2n ** 32n)).toBe(2n ** 32n);
    expect(wireSafeUint64(5n)).toBe(5n);
  });

  test("0 means unlimited without tripping libp2p (no zero-length timers)", () => {
    const c = defaultConfig().relay;
    const one = relayServerInit({ ...c, max_circuit_duration: 0 });
    expect(one.reservations?.defaultDurationLimit).toBe(MAX_TIMER_MS);
    expect(one.reservations?.applyDefaultLimit).toBe(true);
    const two = relayServerInit({ ...c, max_circuit_bytes: 0 });
    expect(two.reservations?.defaultDataLimit).toBe(UNLIMITED_BYTES);
    const none = relayServerInit({ ...c, max_circuit_duration: 0, max_circuit_bytes: 0 });
    expect(none.reservations?.applyDefaultLimit).toBe(false);
  });
});

describe("relayed voice-sized transfer", () => {
  test("two peers that cannot dial each other exchange 2 MiB through the relay", async () => {
    const relay = await startTestNode({ mode: "relay", region: "eu-west" });
    const hidden = await behindRelay(relay, "nat-zone", true);
    const caller = await startTestNode({ region: "eu-west", bootstrap: [relay.addr] });
    try {
      // The hidden peer has no listener (a direct dial has nothing to go to) and may only dial the relay.
      expect(hidden.node.listenAddrs().every((a) => a.includes("/p2p-circuit"))).toBe(true);
      await expect(hidden.node.libp2p.dial(multiaddr(caller.addr), { signal: AbortSignal.timeout(3_000) })).rejects.toThrow();
      await expect(
        caller.node.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/1/p2p/${hidden.node.peerId}`), { signal: AbortSignal.timeout(3_000) }),
      ).rejects.toThrow();

      const conn = await caller.node.libp2p.dial(multiaddr(`${relay.addr}/p2p-circuit/p2p/${hidden.node.peerId}`), {
        signal: AbortSignal.timeout(10_000),
        force: true,
      });
      expect(conn.remoteAddr.toString()).toContain("/p2p-circuit");
      expect(conn.limits).toBeDefined(); // Agora's relay sets (large) limits, so the connection is "limited"
      expect(caller.node.peers().find((p) => p.peer_id === hidden.node.peerId)?.relayed).toBe(true);
      await waitFor("circuit counted", async () => (await metricValue(relay.registry, "agora_relay_circuits_active")) === 1);
      expect(relay.node.status().relay).toMatchObject({ enabled: true, reservations: 1, circuits: 1 });
      expect(await metricValue(relay.registry, "agora_relay_reservations_active")).toBe(1);

      const twoMiB = randomBytes(2 * 1024 * 1024);
      await sendBulk(conn, twoMiB);
      const relayed = relay.node.status().relay!.bytes_relayed;
      expect(relayed).toBeGreaterThanOrEqual(twoMiB.byteLength);
      expect(relayed).toBeLessThan(twoMiB.byteLength * 1.1); // framing overhead only
      expect(await metricValue(relay.registry, "agora_relay_bytes_total")).toBe(relayed);
      // a second call on the same circuit works too
      await sendBulk(conn, randomBytes(300 * 1024));

      await conn.close();
      await waitFor("circuit closed", async () => (await metricValue(relay.registry, "agora_relay_circuits_active")) === 0);
    } finally {
      await stopAll([caller, hidden, relay]);
    }
  });

  test("relayClient 'always': a node finds a relay among its peers and reserves a slot by itself", async () => {
    const relay = await startTestNode({ mode: "relay" });
    const n = await startTestNode({ bootstrap: [relay.addr], internal: { relayClient: "always" } });
    try {
      const addr = await waitFor(
        "automatic reservation",
        () => n.node.listenAddrs().find((a) => a.startsWith(`${relay.addr}/p2p-circuit`)),
        20_000,
      );
      expect(addr).toEndWith(`/p2p-circuit/p2p/${n.node.peerId}`);
      expect(relay.node.status().relay!.reservations).toBe(1);
    } finally {
      await stopAll([n, relay]);
    }
  });

  test("relayClient 'auto': a node that is not publicly reachable reserves a slot on a relay, a reachable one does not", async () => {
    const relay = await startTestNode({ mode: "relay" });
    const auto = { relayClient: "auto", reachabilityGraceMs: 300, relayCheckIntervalMs: 200, autonat: false } as const;
    // Only a LAN address (announced, so the node's own view is exactly that): "private" after the grace period.
    const natted = await startTestNode({ bootstrap: [relay.addr], announce: ["/ip4/192.168.77.10/tcp/4001"], internal: auto });
    // The same LAN address plus a public one (an announce address is taken on trust): "public", no relay needed.
    const reachable = await startTestNode({
      bootstrap: [relay.addr],
      announce: ["/ip4/192.168.77.11/tcp/4001", "/ip4/8.8.8.8/tcp/4001"],
      internal: auto,
    });
    const listener = (n: TestNode) => (n.node.libp2p as Libp2p<{ relayListen: RelayListen }>).services.relayListen;
    const reservations = () => (relay.node.libp2p as Libp2p<{ relay: CircuitRelayService }>).services.relay.reservations;
    try {
      await waitFor("reservation of the unreachable node", () => reservations().has(peerIdFromString(natted.node.peerId)), 20_000);
      expect(natted.node.status().reachability).toBe("private");
      expect(listener(natted).isListening()).toBe(true);
      const checked = listener(reachable).checks();
      await waitFor("more checks on the reachable node", () => listener(reachable).checks() >= checked + 3);
      expect(reachable.node.status().reachability).toBe("public");
      expect(listener(reachable).isListening()).toBe(false);
      expect(reservations().has(peerIdFromString(reachable.node.peerId))).toBe(false);
      expect(relay.node.status().relay!.reservations).toBe(1);
    } finally {
      await stopAll([natted, reachable, relay]);
    }
  });

  test("a node behind a relay is discoverable and reachable via its advertised circuit address", async () => {
    const relay = await startTestNode({ mode: "relay", region: "eu-west" });
    const hidden = await behindRelay(relay, "hidden-zone");
    const client = await startTestNode({ region: "eu-west", bootstrap: [relay.addr] });
    try {
      await waitFor("hidden node published", () => hidden.node.status().last_published_at !== null);
      const found = await waitFor("discovered", async () => {
        const r = await client.node.discover({ region: "hidden-zone" });
        return r.length === 1 ? r : null;
      });
      expect(found[0]!.advertisement.listen_addr.every((a) => a.includes("/p2p-circuit"))).toBe(true);
      expect(found[0]!.latency_ms).not.toBeNull();
    } finally {
      await stopAll([client, hidden, relay]);
    }
  });

  test("max_circuit_bytes cuts a circuit that exceeds it", async () => {
    const relay = await startTestNode({ mode: "relay", relay: { max_circuit_bytes: 64 * 1024 } });
    const hidden = await behindRelay(relay);
    const caller = await startTestNode({ bootstrap: [relay.addr] });
    try {
      const conn = await caller.node.libp2p.dial(multiaddr(`${relay.addr}/p2p-circuit/p2p/${hidden.node.peerId}`), {
        signal: AbortSignal.timeout(10_000),
        force: true,
      });
      await sendBulk(conn, randomBytes(16 * 1024)); // within the limit
      await expect(sendBulk(conn, randomBytes(512 * 1024), 15_000)).rejects.toThrow();
    } finally {
      await stopAll([caller, hidden, relay]);
    }
  });

  test("max_circuits refuses circuits beyond the limit", async () => {
    const relay = await startTestNode({ mode: "relay", relay: { max_circuits: 1 } });
    const hidden = await behindRelay(relay);
    const first = await startTestNode({ bootstrap: [relay.addr] });
    const second = await startTestNode({ bootstrap: [relay.addr] });
    try {
      const circuit = `${relay.addr}/p2p-circuit/p2p/${hidden.node.peerId}`;
      const c1 = await first.node.libp2p.dial(multiaddr(circuit), { signal: AbortSignal.timeout(10_000), force: true });
      await sendBulk(c1, randomBytes(1024));
      await expect(second.node.libp2p.dial(multiaddr(circuit), { signal: AbortSignal.timeout(10_000), force: true })).rejects.toThrow();
      expect(await metricValue(relay.registry, "agora_relay_refused_total", { reason: "max_circuits" })).toBe(1);
      await c1.close();
      await waitFor("circuit released", () => relay.node.status().relay!.circuits === 0);
      const c2 = await second.node.libp2p.dial(multiaddr(circuit), { signal: AbortSignal.timeout(10_000), force: true });
      await sendBulk(c2, randomBytes(1024));
    } finally {
      await stopAll([first, second, hidden, relay]);
    }
  });

  test("max_reservations_per_peer limits reservations from one IP address", async () => {
    const relay = await startTestNode({ mode: "relay", relay: { max_reservations_per_peer: 1 } });
    const one = await behindRelay(relay);
    try {
      // A second peer from the same IP (127.0.0.1) is refused; an explicitly configured relay listen address
      // that cannot be reserved is a start failure, like a TCP port that cannot be bound.
      await expect(
        startTestNode({ bootstrap: [relay.addr], internal: { listenAddrs: [`${relay.addr}/p2p-circuit`] } }),
      ).rejects.toMatchObject({
        code: "LISTEN_FAILED",
        message: expect.stringContaining("PERMISSION_DENIED"),
      });
      expect(await metricValue(relay.registry, "agora_relay_refused_total", { reason: "reservations_per_peer" })).toBe(1);
      expect(relay.node.status().relay!.reservations).toBe(1);
      expect(one.node.listenAddrs().some((a) => a.includes("/p2p-circuit"))).toBe(true);
    } finally {
      await stopAll([one, relay]);
    }
  });
});
