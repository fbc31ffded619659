/**
 * Stock js-libp2p under Node.js (the machine's, Debian's Node 20) dials the WebSocket listener and pings.
 * js-libp2p 3 expects Node 22+: on Node 20 it needs `--experimental-websocket` (no global WebSocket) and a
 * Promise.withResolvers polyfill (fixtures/node-dial.mjs); this test proves that is all it needs.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import { agoraTransportStack, agoraWebSockets } from "../../src/transport";
import { ROOT } from "../helpers/node-process";

let server: Libp2p;

beforeAll(async () => {
  const stack = agoraTransportStack();
  server = await createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0/ws"] },
    ...stack,
    transports: [agoraWebSockets()],
    services: { ping: ping() },
  });
});

afterAll(async () => {
  await server?.stop();
});

test("Node's js-libp2p dials /ws and pings", async () => {
  const nodeBin = Bun.which("node");
  expect(nodeBin).toBeTruthy();
  const proc = Bun.spawn(
    [nodeBin!, "--experimental-websocket", join(import.meta.dir, "fixtures", "node-dial.mjs"), server.getMultiaddrs()[0]!.toString()],
    {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  clearTimeout(timer);
  expect({ code, err: err.slice(0, 2000) }).toEqual({ code: 0, err: expect.any(String) });
  const result = JSON.parse(out.trim().split("\n").pop()!) as { node: string; rtt: number };
  console.log(`node ${result.node}: ping over /ws ${result.rtt} ms`);
  expect(result.rtt).toBeGreaterThanOrEqual(0);
}, 40_000);
