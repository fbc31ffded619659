/**
 * Against a real STUN server (coturn, STUN-only, on 127.0.0.1): the StunService learns its socket's address,
 * and the compiled node does the same from its UDP socket on the P2P port's number, showing it in
 * /api/status and `agora-node status`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { silentLogger } from "../../src/log";
import { bindUdp, StunService } from "../../src/stun";
import { eventually, freePort, type NodeHandle, runCli, startNode } from "../helpers/node-process";
import { coturnAvailable, type StunServerHandle, startCoturn } from "../helpers/stun-server";

const servers: StunServerHandle[] = [];
let node: NodeHandle | undefined;

beforeAll(async () => {
  if (!coturnAvailable()) return;
  servers.push(await startCoturn({ port: await freePort() }), await startCoturn({ port: await freePort() }));
}, 40_000);

afterAll(async () => {
  node?.cleanup();
  await Promise.all(servers.map((s) => s.stop()));
});

describe.skipIf(!coturnAvailable())("STUN against coturn", () => {
  test("the service learns 127.0.0.1:<its port>, endpoint-independent across two servers", async () => {
    const endpoint = await bindUdp("127.0.0.1", 0);
    const registry = new Registry();
    const service = new StunService({
      servers: servers.map((s) => s.label),
      listenAddr: "127.0.0.1",
      listenPort: 0,
      endpoint,
      logger: silentLogger(),
      registry,
    });
    try {
      await service.start();
      const r = await service.refresh();
      expect(r.servers.map((s) => s.ok)).toEqual([true, true]);
      expect(r).toMatchObject({ public_address: "127.0.0.1", public_port: endpoint.local.port, mapping: "endpoint-independent" });
      expect((await registry.getSingleMetricAsString("agora_stun_responses_rejected_total")).match(/ [1-9]\d*$/m)).toBeNull();
    } finally {
      await service.stop();
      endpoint.close();
    }
  });

  test("the node binds UDP on its listen port, learns its mapping and shows it in /api/status and status", async () => {
    node = await startNode({ env: { AGORA_NETWORK_STUN_SERVERS: servers.map((s) => s.label).join(",") } });
    const h = node;
    type Status = {
      stun: {
        local_port: number;
        public_address: string | null;
        public_port: number | null;
        mapping: string;
        servers: { ok: boolean }[];
      } | null;
    };
    const status = await eventually(
      async () => {
        const s = (await (await fetch(`${h.dashboardUrl}/api/status`)).json()) as Status;
        return s.stun?.mapping === "endpoint-independent" ? s : undefined;
      },
      20_000,
      "the node's STUN result",
    );
    expect(status.stun).toMatchObject({ local_port: h.p2pPort, public_address: "127.0.0.1", public_port: h.p2pPort });
    expect(status.stun!.servers.map((s) => s.ok)).toEqual([true, true]);
    const cli = await runCli(["status", "--endpoint", h.dashboardUrl]);
    expect(cli.stdout).toContain(
      `public udp   127.0.0.1:${h.p2pPort} → UDP ${h.p2pPort}, endpoint-independent mapping, 2/2 servers answering`,
    );
    const html = await (await fetch(h.dashboardUrl)).text();
    expect(html).toContain(`127.0.0.1:${h.p2pPort} → UDP ${h.p2pPort}`);
    const metrics = await (await fetch(h.metricsUrl)).text();
    expect(metrics).toContain(`agora_stun_requests_total{server="${servers[0]!.label}"}`);
    const promtool = Bun.which("promtool");
    if (promtool) {
      const lint = Bun.spawnSync([promtool, "check", "metrics"], {
        stdin: new TextEncoder().encode(metrics),
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(lint.stdout.toString() + lint.stderr.toString()).not.toMatch(/agora_stun/);
    }
  }, 40_000);
});
