/**
 * systemd's notify protocol, from the receiving side: the test binds an AF_UNIX datagram socket as systemd
 * does (in python3, an implementation independent of the node's FFI code), starts the compiled binary with
 * NOTIFY_SOCKET and WATCHDOG_USEC, and reads READY=1, WATCHDOG=1, RELOADING=1 … READY=1 and STOPPING=1.
 * (No systemd runs as PID 1 in this container, so `systemd-run` cannot be used.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { silentLogger } from "../../src/log";
import { systemdNotifier, unixAddress, watchdogIntervalMs } from "../../src/node/sd-notify";
import { eventually, type NodeHandle, startNode, tempDir } from "../helpers/node-process";

const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
// Prints one JSON line per datagram received: the same receive side as systemd's notify socket.
const LISTENER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1].replace("@", "\\0", 1) if sys.argv[1].startswith("@") else sys.argv[1])
print(json.dumps("BOUND"), flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;

const procs: Subprocess[] = [];
const started: NodeHandle[] = [];
afterAll(() => {
  for (const h of started) h.cleanup();
  for (const p of procs) p.kill("SIGKILL");
});

interface Listener {
  messages: string[];
}

async function listen(address: string): Promise<Listener> {
  const proc = Bun.spawn([PYTHON, "-c", LISTENER, address], { stdout: "pipe", stderr: "inherit" });
  procs.push(proc);
  const l: Listener = { messages: [] };
  let bound = false;
  void (async () => {
    const dec = new TextDecoder();
    let buf = "";
    const reader = proc.stdout.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const msg = JSON.parse(buf.slice(0, nl)) as string;
        buf = buf.slice(nl + 1);
        if (msg === "BOUND") bound = true;
        else l.messages.push(msg);
      }
    }
  })();
  await eventually(() => bound, 10_000, "the notify socket to be bound");
  return l;
}

const fields = (m: string) => Object.fromEntries(m.split("\n").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));

describe("sd_notify", () => {
  test("addresses and watchdog period follow sd_notify(3)", () => {
    const path = unixAddress("/run/systemd/notify");
    expect(path.length).toBe(2 + "/run/systemd/notify".length + 1);
    expect([...path.addr.slice(0, 2)]).toEqual([1, 0]); // AF_UNIX, little endian
    const abs = unixAddress("@agora/notify");
    expect(abs.addr[2]).toBe(0);
    expect(abs.length).toBe(3 + "agora/notify".length);
    expect(() => unixAddress(`/${"x".repeat(200)}`)).toThrow("longer than a unix socket address allows");
    expect(watchdogIntervalMs({ WATCHDOG_USEC: "30000000" })).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "1" }, 2)).toBeUndefined();
    expect(watchdogIntervalMs({})).toBeUndefined();
    expect(systemdNotifier(silentLogger(), {}).enabled).toBe(false);
  });

  test("in-process: a path and an abstract socket both receive the datagram", async () => {
    for (const address of [join(tempDir(), "notify"), `@agora-test-${process.pid}-${Date.now()}`]) {
      const l = await listen(address);
      const n = systemdNotifier(silentLogger(), { NOTIFY_SOCKET: address });
      expect(n.enabled).toBe(true);
      n.ready("ready: test");
      await eventually(() => l.messages.length > 0, 5000, "a datagram");
      expect(l.messages[0]).toBe("READY=1\nSTATUS=ready: test");
      n.close();
    }
  });

  test("the binary: READY=1 once healthy, WATCHDOG=1 at half the period, RELOADING=1 then READY=1, STOPPING=1", async () => {
    const address = join(tempDir(), "notify");
    const l = await listen(address);
    const h = await startNode({ env: { NOTIFY_SOCKET: address, WATCHDOG_USEC: "400000" }, waitHealthy: false });
    started.push(h);
    const ready = await eventually(() => l.messages.find((m) => m.startsWith("READY=1")), 20_000, "READY=1");
    // READY=1 means ready: /health already answers 200 when systemd hears it.
    expect((await fetch(`${h.dashboardUrl}/health`)).status).toBe(200);
    expect(fields(ready).STATUS).toStartWith("ready: dedicated node 12D3KooW");
    await eventually(() => l.messages.filter((m) => m === "WATCHDOG=1").length >= 3, 10_000, "three WATCHDOG=1");

    h.proc.kill("SIGHUP");
    await eventually(() => l.messages.some((m) => m.startsWith("RELOADING=1")), 10_000, "RELOADING=1");
    const reloading = l.messages.findIndex((m) => m.startsWith("RELOADING=1"));
    expect(Number(fields(l.messages[reloading]!).MONOTONIC_USEC)).toBeGreaterThan(0);
    await eventually(() => l.messages.slice(reloading + 1).some((m) => m.startsWith("READY=1")), 10_000, "READY=1 after the reload");

    h.proc.kill("SIGTERM");
    expect(await h.exited).toBe(0);
    const stopping = l.messages.find((m) => m.startsWith("STOPPING=1"));
    expect(stopping).toBeDefined();
    expect(l.messages.indexOf(stopping!)).toBeGreaterThan(reloading);
  }, 60_000);

  test("without NOTIFY_SOCKET nothing is sent and the node runs as before", async () => {
    const h = await startNode();
    started.push(h);
    expect(await h.stop()).toBe(0);
    expect(h.logs()).not.toContain("systemd");
  });
});
