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
import { waitFor } from "../helpers/net-fakes";

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (stops.length) await Promise.resolve(stops.pop()!()).catch(() => {});
});

type ConnectionMonitor = NonNullable<Parameters<typeof createLibp2p>[0]>["connectionMonitor"];

/** A node on the transport stack, stopped after the test; `ping` only when a ping service is given. */
async function makeNode(listen: string[], ping: ReturnType<typeof agoraPing> | undefined, connectionMonitor?: ConnectionMonitor) {
  const n = await createLibp2p({
    addresses: { listen },
    ...agoraTransportStack(),
    ...(connectionMonitor ? { connectionMonitor } : {}),
    services: { identify: identify(), ...(ping ? { ping } : {}) },
  });
  stops.push(() => n.stop());
  return n;
}

async function pair(pingService: () => ReturnType<typeof ping>, monitorMs?: number) {
  const monitor = monitorMs ? { pingInterval: monitorMs } : undefined;
  const server = await makeNode(["/ip4/127.0.0.1/tcp/0"], pingService(), monitor);
  const client = await makeNode([], pingService(), monitor);
  await client.dial(server.getMultiaddrs()[0]!);
  return { server, client };
}

const PING_PROTOCOL = "/ipfs/ping/1.0.0";

/**
 * A client with the given ping service, connected to a server that takes ping streams and never answers: a
 * ping's stream stays open until it is aborted, so pings overlap however slowly the machine runs (with an
 * echoing server a starved client may finish one ping before it opens the next). No connection monitor on
 * either side: its pings would be held too.
 */
async function pairWithSilentServer(pingService: () => ReturnType<typeof ping>) {
  const server = await makeNode(["/ip4/127.0.0.1/tcp/0"], undefined, { enabled: false });
  await server.handle(PING_PROTOCOL, () => {}, { maxInboundStreams: 4 * PING_STREAMS_PER_CONNECTION });
  const client = await makeNode([], pingService(), { enabled: false });
  const conn = await client.dial(server.getMultiaddrs()[0]!);
  const aborts = new AbortController();
  stops.push(() => aborts.abort());
  const openPings = () =>
    conn.streams.filter((s) => s.direction === "outbound" && s.protocol === PING_PROTOCOL && s.status === "open").length;
  /** Starts one ping that will not be answered; it settles when the test ends (aborted) or at once if refused. */
  const startPing = () =>
    client.services.ping.ping(server.peerId, { signal: aborts.signal }).then(
      () => "answered",
      (err: unknown) => String(err),
    );
  return { openPings, startPing };
}

describe("agoraPing", () => {
  test(`${PING_STREAMS_PER_CONNECTION} concurrent pings on one connection all succeed`, async () => {
    const ours = await pair(agoraPing);
    const results = await Promise.allSettled(
      Array.from({ length: PING_STREAMS_PER_CONNECTION }, () => ours.client.services.ping.ping(ours.server.peerId)),
    );
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
  });

  test(`${PING_STREAMS_PER_CONNECTION} pings may be open at once on one connection (plain ping: a second one is refused)`, async () => {
    // Ours: all of them open together, none refused; one more than that is refused (the limit is ours).
    const ours = await pairWithSilentServer(agoraPing);
    const held = Array.from({ length: PING_STREAMS_PER_CONNECTION }, () => ours.startPing());
    let settledEarly: string | undefined;
    for (const h of held) void h.then((r) => (settledEarly ??= r));
    await waitFor(
      () => ours.openPings() === PING_STREAMS_PER_CONNECTION || settledEarly !== undefined,
      `${PING_STREAMS_PER_CONNECTION} open ping streams`,
    );
    expect(settledEarly).toBeUndefined();
    expect(await ours.startPing()).toMatch(/Too many outbound protocol streams/);
    // The hazard it removes, shown with the library's defaults: while one ping waits for its answer, the next
    // is refused (the connection monitor's ping among them, which then aborts the connection).
    const plain = await pairWithSilentServer(() => ping());
    void plain.startPing();
    await waitFor(() => plain.openPings() === 1, "the first ping's stream");
    expect(await plain.startPing()).toMatch(/Too many outbound protocol streams/);
    expect(plain.openPings()).toBe(1);
  });

  test("explicit pings while the connection monitor pings never cost the connection", async () => {
    const { server, client } = await pair(agoraPing, 50);
    const conn = client.getConnections(server.peerId)[0]!;
    for (let i = 0; i < 20; i++) await Promise.all([1, 2].map(() => client.services.ping.ping(server.peerId)));
    expect(conn.status).toBe("open");
    expect(client.getConnections(server.peerId)).toContain(conn);
  });
});
