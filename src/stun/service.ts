/**
 * The node's STUN service (Startable): owns (or is handed) the node's UDP socket, asks every configured
 * `network.stun_servers` entry for the socket's public mapping at start and then every `intervalMs`
 * (5 min), sooner with backoff after a failure, and keeps the answers:
 *
 *   public address/port  the first server (config order) with an answer; a server that stops answering
 *                        keeps its last good answer, marked ok=false with the error
 *   mapping              endpoint-independent when ≥ 2 servers in one round saw the same address and port,
 *                        endpoint-dependent when they differ (a symmetric NAT: the public port is useless
 *                        to peers), unknown with fewer than 2 answers
 *
 * `advertisableAddrs` gives the UDP address for the advertisement only when AutoNAT confirmed the same
 * public IP: one STUN server's word alone is not enough to publish.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { Registry } from "prom-client";
import { errorMessage } from "../errors";
import type { StunMappingBehaviour, StunReport, StunServerReport } from "../http";
import type { Logger } from "../log";
import { type BindingAnswer, type Clock, StunClient, type StunMetrics, StunRequestError, stunMetrics, systemClock } from "./client";
import { bindUdp, type UdpEndpoint, type UdpPeer } from "./udp";

export interface StunServiceOptions {
  /** `host:port` entries (validated by the config schema); IPv6 literals in brackets. */
  servers: readonly string[];
  /** Where to bind the UDP socket when none is injected: node.listen_addr and node.listen_port. */
  listenAddr: string;
  listenPort: number;
  /** An already-bound socket to use (and not close); otherwise the service binds and owns one. */
  endpoint?: UdpEndpoint;
  logger: Logger;
  registry: Registry;
  clock?: Clock;
  /** Host name → addresses (default: the system resolver). */
  resolve?: (host: string) => Promise<string[]>;
  /** Between successful rounds (default 5 min). */
  intervalMs?: number;
  /** First retry after a failed round, doubling up to intervalMs (default 5 s). */
  retryMinMs?: number;
  /** Per-transaction RTO and retransmissions (defaults 500 ms, 2: given up after 3.5 s). */
  rtoMs?: number;
  retransmits?: number;
}

interface ServerState {
  label: string;
  host: string;
  port: number;
  report: StunServerReport;
}

export type StunChangeListener = (report: StunReport) => void;

/** "host:port" or "[v6]:port" → parts. */
export function parseHostPort(entry: string): { host: string; port: number } {
  const i = entry.lastIndexOf(":");
  const host = entry.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  return { host, port: Number(entry.slice(i + 1)) };
}

const DEFAULT_INTERVAL_MS = 5 * 60_000;
const DEFAULT_RETRY_MIN_MS = 5_000;

export class StunService {
  readonly name = "stun";
  private endpointValue?: UdpEndpoint;
  private ownsEndpoint = false;
  private client?: StunClient;
  private readonly metrics: StunMetrics;
  private readonly clock: Clock;
  private readonly servers: ServerState[];
  private timer: unknown;
  private running = false;
  private retryMs: number;
  private mapping: StunMappingBehaviour = "unknown";
  private checkedAt: number | null = null;
  private nextCheckAt: number | null = null;
  private currentRound?: Promise<StunReport>;
  private autonatAgrees = false;
  private readonly listeners = new Set<StunChangeListener>();
  private lastKey = "";

  constructor(private readonly opts: StunServiceOptions) {
    this.metrics = stunMetrics(opts.registry);
    this.clock = opts.clock ?? systemClock;
    this.retryMs = opts.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
    this.servers = opts.servers.map((label) => {
      const { host, port } = parseHostPort(label);
      return {
        label,
        host,
        port,
        report: { server: label, ok: false, address: null, port: null, rtt_ms: null, error: null, last_ok_at: null },
      };
    });
  }

  /** The node's UDP socket (for the media endpoint to share); undefined before start. */
  get endpoint(): UdpEndpoint | undefined {
    return this.endpointValue;
  }

  async start(): Promise<void> {
    if (this.opts.endpoint) this.endpointValue = this.opts.endpoint;
    else {
      this.endpointValue = await bindUdp(this.opts.listenAddr, this.opts.listenPort);
      this.ownsEndpoint = true;
    }
    this.client = new StunClient(this.endpointValue, {
      clock: this.clock,
      rtoMs: this.opts.rtoMs,
      retransmits: this.opts.retransmits,
      metrics: this.metrics,
      onReject: (reason, message, from) =>
        this.opts.logger.debug({ reason, from: `${from.address}:${from.port}` }, `STUN response ignored: ${message}`),
    });
    this.endpointValue.onError((err) =>
      this.opts.logger.debug({ err: errorMessage(err) }, "UDP socket error (a STUN server's port is closed?)"),
    );
    this.running = true;
    // The first round runs in the background: start-up must not wait for (possibly unreachable) servers.
    if (this.servers.length > 0) void this.refresh();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.clock.clearTimeout(this.timer);
    this.client?.close();
    await this.currentRound?.catch(() => undefined);
    if (this.ownsEndpoint) this.endpointValue?.close();
    this.endpointValue = undefined;
    this.ownsEndpoint = false;
  }

  /** Runs one round now (joins a round in progress); resolves with the report after it. */
  refresh(): Promise<StunReport> {
    if (this.currentRound) return this.currentRound;
    this.clock.clearTimeout(this.timer);
    this.nextCheckAt = null;
    const round = this.round().finally(() => {
      this.currentRound = undefined;
    });
    this.currentRound = round;
    return round;
  }

  private async round(): Promise<StunReport> {
    const answers = await Promise.all(this.servers.map((s) => this.probe(s)));
    if (!this.running) return this.report();
    this.checkedAt = this.clock.now();
    const fresh = answers.filter((a): a is BindingAnswer => a !== undefined);
    if (fresh.length >= 2) {
      const first = fresh[0]!.mapped;
      const same = fresh.every((a) => a.mapped.address === first.address && a.mapped.port === first.port);
      this.mapping = same ? "endpoint-independent" : "endpoint-dependent";
    }
    const failed = answers.some((a) => a === undefined);
    let delay: number;
    if (failed) {
      delay = this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, this.opts.intervalMs ?? DEFAULT_INTERVAL_MS);
    } else {
      this.retryMs = this.opts.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
      delay = this.opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    }
    this.nextCheckAt = this.checkedAt + delay;
    this.timer = this.clock.setTimeout(() => void this.refresh(), delay);
    const report = this.report();
    const key = `${report.public_address}|${report.public_port}|${report.mapping}`;
    if (key !== this.lastKey) {
      this.lastKey = key;
      this.opts.logger.info(
        { public_address: report.public_address, public_port: report.public_port, mapping: report.mapping, local_port: report.local_port },
        "STUN: public UDP mapping learned",
      );
      for (const l of this.listeners) l(report);
    }
    return report;
  }

  private async resolve(host: string): Promise<UdpPeer["address"]> {
    if (isIP(host)) return host;
    const family = this.endpointValue && isIP(this.endpointValue.local.address) === 6 && this.endpointValue.local.address !== "::" ? 6 : 4;
    if (this.opts.resolve) {
      const all = await this.opts.resolve(host);
      const pick = all.find((a) => isIP(a) === family) ?? all[0];
      if (!pick) throw new Error("no address");
      return pick;
    }
    return (await lookup(host, { family })).address;
  }

  private async probe(s: ServerState): Promise<BindingAnswer | undefined> {
    const client = this.client;
    if (!client) return undefined;
    let address: string;
    try {
      address = await this.resolve(s.host);
    } catch (err) {
      this.metrics.failures.inc({ server: s.label, reason: "dns" });
      this.fail(s, `cannot resolve ${s.host}: ${errorMessage(err)}`);
      return undefined;
    }
    try {
      const a = await client.binding({ address, port: s.port }, s.label);
      s.report = {
        server: s.label,
        ok: true,
        address: a.mapped.address,
        port: a.mapped.port,
        rtt_ms: a.rttMs,
        error: null,
        last_ok_at: new Date(this.clock.now()).toISOString(),
      };
      return a;
    } catch (err) {
      if (err instanceof StunRequestError && err.reason === "closed") return undefined;
      this.fail(s, errorMessage(err));
      return undefined;
    }
  }

  private fail(s: ServerState, error: string): void {
    // The last good answer stays: a server that is down says nothing new about our mapping.
    s.report = { ...s.report, ok: false, error };
    if (this.running) this.opts.logger.warn({ server: s.label, kept: s.report.address !== null }, `STUN server failed: ${error}`);
  }

  /** Subscribes to changes of public address, port or mapping behaviour; returns the unsubscribe function. */
  onChange(listener: StunChangeListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  report(): StunReport {
    const local = this.endpointValue?.local ?? { address: this.opts.listenAddr, port: this.opts.listenPort };
    const best = this.servers.find((s) => s.report.ok) ?? this.servers.find((s) => s.report.address !== null);
    return {
      local_address: local.address,
      local_port: local.port,
      public_address: best?.report.address ?? null,
      public_port: best?.report.port ?? null,
      mapping: this.mapping,
      autonat_agrees: this.autonatAgrees,
      checked_at: this.checkedAt === null ? null : new Date(this.checkedAt).toISOString(),
      next_check_at: this.nextCheckAt === null ? null : new Date(this.nextCheckAt).toISOString(),
      servers: this.servers.map((s) => ({ ...s.report })),
    };
  }

  /**
   * The UDP endpoint's multiaddr for the advertisement, given the public IPs AutoNAT has confirmed: empty
   * unless STUN's public address is one of them, and never for an endpoint-dependent mapping (its port is
   * only good for the STUN server that saw it).
   */
  advertisableAddrs(autonatConfirmedIps: readonly string[]): string[] {
    const r = this.report();
    this.autonatAgrees = r.public_address !== null && autonatConfirmedIps.includes(r.public_address);
    if (!this.autonatAgrees || r.public_port === null || r.mapping === "endpoint-dependent") return [];
    return [`/${isIP(r.public_address!) === 6 ? "ip6" : "ip4"}/${r.public_address}/udp/${r.public_port}`];
  }
}
