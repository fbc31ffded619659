/**
 * agoraPing: concurrent pings on one connection (libp2p's connection monitor plus an explicit liveness check
 * or a client's probe) all go through. With @libp2p/ping's own limits (1 outbound stream per connection) the
 * second fails with "Too many outbound protocol streams", and when the failing one is the monitor's, it
 * aborts the connection and every audio stream on it (seen in the partition test: participants' sessions
 * reset by a ping collision).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import { agoraPing, agoraTransportStack, PING_STREAMS_PER_CONNECTION } from "../../src/transport";

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

async function pair(pingService: () => ReturnType<typeof ping>, monitorMs?: number) {
  const make = async (listen: string[]) => {
    const n = await createLibp2p({
      addresses: { listen },
      ...agoraTransportStack(),
      ...(monitorMs ? { connectionMonitor: { pingInterval: monitorMs } } : {}),
      services: { identify: identify(), ping: pingService() },
    });
    stops.push(() => n.stop());
    return n;
  };
  const server = await make(["/ip4/127.0.0.1/tcp/0"]);
  const client = await make([]);
  await client.dial(server.getMultiaddrs()[0]!);
  return { server, client };
}

describe("agoraPing", () => {
  test(`${PING_STREAMS_PER_CONNECTION} concurrent pings on one connection all succeed (plain ping: only one does)`, async () => {
    const ours = await pair(agoraPing);
    const results = await Promise.allSettled(
      Array.from({ length: PING_STREAMS_PER_CONNECTION }, () => ours.client.services.ping.ping(ours.server.peerId)),
    );
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    // The hazard it removes, shown with the library's defaults.
    const plain = await pair(() => ping());
    const plainResults = await Promise.allSettled(
      Array.from({ length: PING_STREAMS_PER_CONNECTION }, () => plain.client.services.ping.ping(plain.server.peerId)),
    );
    expect(plainResults.some((r) => r.status === "rejected" && /Too many outbound protocol streams/.test(String(r.reason)))).toBe(true);
  });

  test("explicit pings while the connection monitor pings never cost the connection", async () => {
    const { server, client } = await pair(agoraPing, 50);
    const conn = client.getConnections(server.peerId)[0]!;
    for (let i = 0; i < 20; i++) await Promise.all([1, 2].map(() => client.services.ping.ping(server.peerId)));
    expect(conn.status).toBe("open");
    expect(client.getConnections(server.peerId)).toContain(conn);
  });
});
