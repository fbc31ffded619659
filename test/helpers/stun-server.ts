/**
 * A real STUN server for tests: Debian's coturn (`turnserver`) in STUN-only mode, as a child process with no
 * config file, no TURN relay, no TLS/DTLS/TCP listener, no CLI and a throw-away database, on one UDP port.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { bindUdp, decodeResponse, encodeBindingRequest } from "../../src/stun";
import { captureOutput, tempDir } from "./node-process";

export const TURNSERVER = "/usr/bin/turnserver";

export function coturnAvailable(): boolean {
  return existsSync(TURNSERVER);
}

export interface StunServerHandle {
  host: string;
  port: number;
  /** host:port, as network.stun_servers takes it */
  label: string;
  stop(): Promise<void>;
  logs(): string;
}

export async function startCoturn(opts: { host?: string; port: number; exec?: string[] }): Promise<StunServerHandle> {
  const host = opts.host ?? "127.0.0.1";
  const dir = tempDir("agora-coturn-");
  const proc = Bun.spawn(
    [
      ...(opts.exec ?? []),
      TURNSERVER,
      "-n", // no configuration file
      "--stun-only",
      "--no-tls",
      "--no-dtls",
      "--no-tcp",
      "--no-cli",
      "--no-rfc5780",
      "--no-software-attribute",
      "--listening-ip",
      host,
      "--listening-port",
      String(opts.port),
      "--db",
      join(dir, "turndb"),
      "--pidfile",
      join(dir, "turnserver.pid"),
      "--log-file",
      "stdout",
      "--simple-log",
    ],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  const captured = captureOutput(proc);
  const handle: StunServerHandle = {
    host,
    port: opts.port,
    label: `${host}:${opts.port}`,
    logs: captured,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      await proc.exited;
      clearTimeout(t);
    },
  };
  // Ready when it answers a Binding request (polled, bounded); only possible from the server's namespace
  // when `exec` puts it elsewhere, so then the caller waits by its own means.
  if (!opts.exec) {
    const probe = await bindUdp("127.0.0.1", 0);
    try {
      const deadline = Date.now() + 15_000;
      let answered = false;
      probe.onDatagram((d) => {
        try {
          answered ||= decodeResponse(d).kind === "success";
        } catch {}
      });
      while (!answered) {
        if (proc.exitCode !== null) throw new Error(`turnserver exited (${proc.exitCode}): ${captured().slice(-2000)}`);
        if (Date.now() > deadline) throw new Error(`turnserver did not answer on ${handle.label}: ${captured().slice(-2000)}`);
        probe.send(encodeBindingRequest(crypto.getRandomValues(new Uint8Array(12))), { address: host, port: opts.port });
        await Bun.sleep(50);
      }
    } catch (err) {
      await handle.stop();
      throw err;
    } finally {
      probe.close();
    }
  }
  return handle;
}
