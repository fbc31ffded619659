/**
 * The network node's one hook for the STUN-learned UDP endpoint (NetworkNodeOptions.extraAddrs): it is asked
 * with the public IPs AutoNAT confirmed, and what it returns ends the advertisement's listen_addr, after the
 * dialable addresses.
 */

import { afterAll, expect, test } from "bun:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { createNetworkNode, type NetworkNode } from "../../src/p2p";
import { cleanupDirs, tempDir, testConfig, waitFor } from "./helpers";

let node: NetworkNode | undefined;
afterAll(async () => {
  await node?.stop();
  cleanupDirs();
});

test("extraAddrs is asked with AutoNAT's confirmed IPs (none on loopback) and appended last", async () => {
  const dataDir = tempDir();
  const asked: string[][] = [];
  node = createNetworkNode({
    config: testConfig({}, dataDir),
    privateKey: await generateKeyPair("Ed25519"),
    logger: silentLogger(),
    registry: new Registry(),
    dataDir,
    version: "0.1.0-test",
    capabilities: ["mixer"],
    load: () => ({ current_load: 0, max_clients: 100, cpu_percent: 1, mem_percent: 1, status: "online" }),
    extraAddrs: (ips) => {
      asked.push(ips);
      return ["/ip4/203.0.113.7/udp/40123"];
    },
    internal: { listenPort: 0, relayClient: "never", autonat: false },
  });
  await node.start();
  await node.publishNow().catch(() => undefined);
  const rec = await waitFor("the advertisement", () => node!.status().advertisement);
  expect(rec.listen_addr.at(-1)).toBe("/ip4/203.0.113.7/udp/40123");
  expect(rec.listen_addr[0]).toMatch(/\/tcp\//);
  expect(asked.at(-1)).toEqual([]);
});
