/**
 * The STUN service against scriptable UDP servers on 127.0.0.1: honest, silent, lying (wrong transaction id,
 * bad fingerprint, garbage) and disagreeing servers, on a manual clock so nothing depends on machine speed.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import type { Logger } from "../../src/log";
import { bindUdp, encodeBindingSuccess, StunService, type UdpEndpoint } from "../../src/stun";
import { fakeStunServer, honest, ManualClock, txidOf, until } from "./helpers";

function captureLogger() {
  const warnings: string[] = [];
  const infos: string[] = [];
  const logger = {
    warn: (_o: unknown, msg?: string) => void warnings.push(String(msg ?? _o)),
    info: (_o: unknown, msg?: string) => void infos.push(String(msg ?? _o)),
    debug: () => undefined,
    child: () => logger,
  } as unknown as Logger;
  return { logger, warnings, infos };
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (m?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val))
    .reduce((s, v) => s + v.value, 0);
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(servers: string[], opts: { endpoint?: UdpEndpoint } = {}) {
  const clock = new ManualClock();
  const registry = new Registry();
  const log = captureLogger();
  const endpoint = opts.endpoint ?? (await bindUdp("127.0.0.1", 0));
  const service = new StunService({
    servers,
    listenAddr: "127.0.0.1",
    listenPort: 0,
    endpoint,
    logger: log.logger,
    registry,
    clock,
    intervalMs: 300_000,
    retryMinMs: 5_000,
    rtoMs: 500,
    retransmits: 2,
  });
  cleanups.push(
    () => endpoint.close(),
    () => service.stop(),
  );
  return { clock, registry, log, endpoint, service };
}

async function server(reply = honest) {
  const s = await fakeStunServer(reply);
  cleanups.push(() => s.close());
  return s;
}

describe("StunService", () => {
  test("learns the socket's mapping from a server and reports it; the first round starts with start()", async () => {
    const a = await server();
    const { service, endpoint, registry } = await setup([a.label]);
    await service.start();
    await until(() => service.report().checked_at !== null, "the first round");
    const r = service.report();
    expect(r).toMatchObject({
      public_address: "127.0.0.1",
      public_port: endpoint.local.port,
      local_port: endpoint.local.port,
      mapping: "unknown",
    });
    expect(r.servers[0]).toMatchObject({ server: a.label, ok: true, address: "127.0.0.1", port: endpoint.local.port, error: null });
    expect(await metric(registry, "agora_stun_requests_total", { server: a.label })).toBe(1);
  });

  test("two servers that see the same address and port: endpoint-independent; different ports: endpoint-dependent", async () => {
    const a = await server();
    const b = await server();
    const { service } = await setup([a.label, b.label]);
    await service.start();
    expect((await service.refresh()).mapping).toBe("endpoint-independent");
    // b now claims another public port, as a symmetric NAT would give per destination.
    b.setReply((req, from) => [
      encodeBindingSuccess(txidOf(req), { family: "IPv4", address: from.address, port: from.port === 65000 ? 65001 : 65000 }),
    ]);
    const r = await service.refresh();
    expect(r.mapping).toBe("endpoint-dependent");
    // The first server in config order names the public address.
    expect(r.public_port).toBe(r.servers[0]!.port);
    // An endpoint-dependent mapping is never advertised, even when AutoNAT agrees on the IP.
    expect(service.advertisableAddrs(["127.0.0.1"])).toEqual([]);
  });

  test("wrong transaction id, bad fingerprint, garbage and error-free junk are ignored and counted; the real answer is taken", async () => {
    const a = await server((req, from) => {
      const txid = txidOf(req);
      const otherTxid = txid.map((b) => b ^ 0xff);
      const lie = { family: "IPv4" as const, address: "6.6.6.6", port: 666 };
      const badFp = encodeBindingSuccess(txid, lie);
      badFp[badFp.length - 1]! ^= 1;
      const truncated = encodeBindingSuccess(txid, lie).subarray(0, 30);
      return [
        encodeBindingSuccess(otherTxid, lie),
        badFp,
        truncated,
        new TextEncoder().encode("not stun at all"),
        encodeBindingSuccess(txid, { family: "IPv4", address: from.address, port: from.port }),
      ];
    });
    const { service, registry, endpoint } = await setup([a.label]);
    await service.start();
    const r = await service.refresh();
    expect(r.public_address).toBe("127.0.0.1");
    expect(r.public_port).toBe(endpoint.local.port);
    expect(await metric(registry, "agora_stun_responses_rejected_total", { reason: "transaction" })).toBeGreaterThanOrEqual(1);
    expect(await metric(registry, "agora_stun_responses_rejected_total", { reason: "fingerprint" })).toBeGreaterThanOrEqual(1);
    expect(await metric(registry, "agora_stun_responses_rejected_total", { reason: "malformed" })).toBeGreaterThanOrEqual(2);
  });

  test("a liar that only sends bad answers never sets the address; the transaction times out on the clock", async () => {
    const a = await server((req) => {
      const bad = encodeBindingSuccess(txidOf(req), { family: "IPv4", address: "6.6.6.6", port: 666 });
      bad[bad.length - 1]! ^= 1;
      return [bad];
    });
    const { service, registry, clock, log } = await setup([a.label]);
    await service.start();
    // Retransmissions follow the clock: 3 sends (0, 500, 1500 ms), given up at 3500 ms.
    await until(() => a.requests === 1, "the first request");
    clock.advance(500);
    await until(() => a.requests === 2, "the first retransmission");
    clock.advance(1000);
    await until(() => a.requests === 3, "the second retransmission");
    expect(log.warnings).toEqual([]);
    clock.advance(1999);
    expect(service.report().checked_at).toBeNull();
    clock.advance(1);
    await until(() => service.report().checked_at !== null, "the round to end");
    const r = service.report();
    expect(r.public_address).toBeNull();
    expect(r.servers[0]).toMatchObject({ ok: false, address: null });
    expect(r.servers[0]!.error).toContain("no STUN answer");
    expect(log.warnings.some((w) => w.includes("STUN server failed"))).toBe(true);
    expect(await metric(registry, "agora_stun_failures_total", { reason: "timeout" })).toBe(1);
    expect(await metric(registry, "agora_stun_responses_rejected_total", { reason: "fingerprint" })).toBe(3);
  });

  test("a server that stops answering: timeout, warning, the last good answer kept; retries back off, then the interval resumes", async () => {
    const a = await server();
    const { service, clock, log, endpoint } = await setup([a.label]);
    await service.start();
    await until(() => service.report().checked_at !== null, "the first round");
    // Success: the next round is one interval away.
    expect(clock.nextIn()).toBe(300_000);
    a.setReply(() => undefined);
    clock.advance(300_000);
    await until(() => a.requests === 2, "the second round's request");
    clock.advance(3_500);
    await until(() => service.report().servers[0]!.ok === false, "the timeout");
    const r = service.report();
    expect(r.public_address).toBe("127.0.0.1");
    expect(r.public_port).toBe(endpoint.local.port);
    expect(r.servers[0]!.address).toBe("127.0.0.1");
    expect(log.warnings.some((w) => w.includes("STUN server failed"))).toBe(true);
    // Failure: retry after 5 s, then 10 s (backoff), each a full transaction of 3 sends.
    expect(clock.nextIn()).toBe(5_000);
    clock.advance(5_000);
    // Round 2 sent 3 (requests 2..4); the retry's first send is the 5th.
    await until(() => a.requests === 5, "the first retry");
    clock.advance(3_500);
    await until(() => clock.nextIn() === 10_000, "the doubled backoff");
    // The server comes back: the next retry succeeds and the interval is back to 5 min.
    a.setReply(honest);
    clock.advance(10_000);
    await until(() => service.report().servers[0]!.ok, "recovery");
    await until(() => clock.nextIn() === 300_000, "the interval after recovery");
  });

  test("a server whose port is closed (ICMP unreachable): a timeout on the clock, no uncaught socket error", async () => {
    const closed = await bindUdp("127.0.0.1", 0);
    const port = closed.local.port;
    closed.close();
    const { service, clock, registry } = await setup([`127.0.0.1:${port}`]);
    await service.start();
    // Let the kernel's ICMP answers for all three sends arrive before the timeout.
    await until(() => clock.nextIn() === 500, "the first send");
    await Bun.sleep(20);
    clock.advance(500);
    await Bun.sleep(20);
    clock.advance(1000);
    await Bun.sleep(20);
    clock.advance(2000);
    await until(() => service.report().checked_at !== null, "the round to end");
    expect(service.report().servers[0]!.error).toContain("no STUN answer");
    expect(await metric(registry, "agora_stun_failures_total", { reason: "timeout" })).toBe(1);
  });

  test("advertisableAddrs: the UDP address only when AutoNAT confirmed the same IP", async () => {
    const a = await server((req) => [encodeBindingSuccess(txidOf(req), { family: "IPv4", address: "203.0.113.7", port: 40123 })]);
    const { service } = await setup([a.label]);
    await service.start();
    await service.refresh();
    expect(service.advertisableAddrs([])).toEqual([]);
    expect(service.report().autonat_agrees).toBe(false);
    expect(service.advertisableAddrs(["198.51.100.1"])).toEqual([]);
    expect(service.advertisableAddrs(["198.51.100.1", "203.0.113.7"])).toEqual(["/ip4/203.0.113.7/udp/40123"]);
    expect(service.report().autonat_agrees).toBe(true);
  });

  test("an unresolvable host is a dns failure, not a crash; the other server still answers", async () => {
    const a = await server();
    const clock = new ManualClock();
    const registry = new Registry();
    const log = captureLogger();
    const endpoint = await bindUdp("127.0.0.1", 0);
    const service = new StunService({
      servers: ["stun.invalid:3478", a.label],
      listenAddr: "127.0.0.1",
      listenPort: 0,
      endpoint,
      logger: log.logger,
      registry,
      clock,
      resolve: async (host) => {
        throw new Error(`ENOTFOUND ${host}`);
      },
    });
    cleanups.push(
      () => endpoint.close(),
      () => service.stop(),
    );
    await service.start();
    const r = await service.refresh();
    expect(r.servers[0]).toMatchObject({ server: "stun.invalid:3478", ok: false });
    expect(r.servers[0]!.error).toContain("cannot resolve stun.invalid");
    expect(r.servers[1]!.ok).toBe(true);
    expect(await metric(registry, "agora_stun_failures_total", { reason: "dns" })).toBeGreaterThanOrEqual(1);
  });

  test("the socket is shared: non-STUN datagrams from elsewhere reach other receivers and are not counted", async () => {
    const { service, registry, endpoint } = await setup([]);
    await service.start();
    const got: string[] = [];
    endpoint.onDatagram((d) => got.push(new TextDecoder().decode(d)));
    const peer = await bindUdp("127.0.0.1", 0);
    cleanups.push(() => peer.close());
    peer.send(new TextEncoder().encode("media frame"), endpoint.local);
    await until(() => got.length === 1, "the media datagram");
    expect(got).toEqual(["media frame"]);
    expect(await metric(registry, "agora_stun_responses_rejected_total")).toBe(0);
  });
});
