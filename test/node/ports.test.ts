/**
 * Integration: a second node on a port the first one holds fails at start with one PORT_IN_USE line naming
 * the setting, the port and the address, for each of the three listeners, and for the UDP socket on the P2P
 * port's number (the media worker's, shared with STUN). (Bun and Elysia turn SO_REUSEPORT
 * on by default: the second node would otherwise start and the kernel would split requests between both.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { freePort, type NodeHandle, startNode } from "../helpers/node-process";

const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
});

async function secondNodeFails(ports: { p2p?: number; dashboard?: number; metrics?: number }): Promise<{ code: number; logs: string }> {
  const h = await startNode({ ports, waitHealthy: false });
  started.push(h);
  const timer = setTimeout(() => h.proc.kill("SIGKILL"), 20_000);
  const code = await h.exited;
  clearTimeout(timer);
  return { code, logs: h.logs() };
}

describe("two nodes on one port", () => {
  test("dashboard, metrics and P2P ports in use: PORT_IN_USE naming the setting, one line, no stack", async () => {
    const first = await startNode();
    started.push(first);
    const cases = [
      { setting: "dashboard.port", port: first.dashboardPort, ports: { dashboard: first.dashboardPort } },
      { setting: "metrics.port", port: first.metricsPort, ports: { metrics: first.metricsPort } },
      { setting: "node.listen_port", port: first.p2pPort, ports: { p2p: first.p2pPort } },
    ];
    for (const c of cases) {
      const r = await secondNodeFails({ dashboard: await freePort(), metrics: await freePort(), p2p: await freePort(), ...c.ports });
      expect(r.code).not.toBe(0);
      const line = `agora-node: ${c.setting} ${c.port} on 127.0.0.1 is in use`;
      expect(r.logs).toContain(line);
      const printed = r.logs.split("\n").filter((l) => l.startsWith("agora-node:"));
      expect(printed).toHaveLength(1);
      expect(r.logs).not.toMatch(/^\s+at /m);
      const fatal = r.logs
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .find((l) => l.msg === "failed to start");
      expect(fatal?.code).toBe("PORT_IN_USE");
    }
    // The first node still answers alone.
    expect((await fetch(`${first.dashboardUrl}/health`)).status).toBe(200);
    expect(await first.stop()).toBe(0);
  }, 90_000);

  test("the P2P port's number taken for UDP only: the media worker cannot bind the shared socket, PORT_IN_USE node.listen_port", async () => {
    const port = await freePort();
    const squatter = await Bun.udpSocket({ hostname: "127.0.0.1", port });
    try {
      const r = await secondNodeFails({ dashboard: await freePort(), metrics: await freePort(), p2p: port });
      expect(r.code).not.toBe(0);
      expect(r.logs).toContain(`agora-node: node.listen_port ${port} on 127.0.0.1 is in use`);
      expect(r.logs.split("\n").filter((l) => l.startsWith("agora-node:"))).toHaveLength(1);
    } finally {
      squatter.close();
    }
  }, 60_000);
});
