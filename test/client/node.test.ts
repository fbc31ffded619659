/**
 * The participant's libp2p node (src/client/node.ts) runs no connection monitor: libp2p's pings every
 * connection every 10 s, and its ping streams cost the node's control thread a stream each (40 per second
 * for 400 participants) while the audio session carries its own liveness.
 */
import { afterEach, expect, setDefaultTimeout, test } from "bun:test";
import { identify } from "@libp2p/identify";
import type { Libp2p } from "@libp2p/interface";
import { createLibp2p } from "libp2p";
import { createClientNode } from "../../src/client/node";
import { agoraTransportStack } from "../../src/transport";

setDefaultTimeout(60_000);

const PING_PROTOCOL = "/ipfs/ping/1.0.0";
const nodes: Libp2p[] = [];
afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
});

test("no connection-monitor pings from a client node over a monitor interval, and the connection stays", async () => {
  let inboundPings = 0;
  const server = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    ...agoraTransportStack(),
    // a server that only counts ping streams (and closes them): libp2p's monitor on the client would open one
    services: { identify: identify() },
    connectionMonitor: { enabled: false },
  });
  nodes.push(server);
  await server.handle(PING_PROTOCOL, (stream) => {
    inboundPings++;
    stream.abort(new Error("counted"));
  });
  const client = await createClientNode();
  nodes.push(client);
  const addr = server.getMultiaddrs().find((a) => a.toString().includes("/ip4/127.0.0.1/"))!;
  await client.dial(addr, { signal: AbortSignal.timeout(10_000) });
  // libp2p's monitor pings at 10 s; wait past that with margin (timers only run late on a busy machine, so
  // a monitor would have pinged by then)
  await new Promise((r) => setTimeout(r, 11_500));
  expect(inboundPings).toBe(0);
  expect(client.getConnections().length).toBe(1);
});
