/**
 * STUN client transactions over the node's UDP socket (RFC 5389 §7.2.1): a Binding request is retransmitted
 * after RTO, 2·RTO, 4·RTO … and given up when the last wait ends. A response is taken only when its
 * transaction id is one we sent (96 random bits: an off-path liar cannot guess it) and its FINGERPRINT, when
 * present, verifies; anything else is dropped and counted. Timing runs on an injected clock.
 */
import { Counter, type Registry } from "prom-client";
import {
  decodeResponse,
  encodeBindingRequest,
  looksLikeStun,
  type MappedAddress,
  randomTransactionId,
  StunDecodeError,
  type StunRejectReason,
} from "./message";
import type { UdpEndpoint, UdpPeer } from "./udp";

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export type StunFailureReason = "timeout" | "dns" | "send" | "error_response" | "closed";

export class StunRequestError extends Error {
  constructor(
    readonly reason: StunFailureReason,
    message: string,
  ) {
    super(message);
    this.name = "StunRequestError";
  }
}

export interface StunMetrics {
  requests: Counter<"server">;
  failures: Counter<"server" | "reason">;
  rejected: Counter<"reason">;
}

const REJECT_REASONS: readonly StunRejectReason[] = ["malformed", "fingerprint", "transaction", "not_a_response", "no_address"];

/** agora_stun_requests_total{server}, agora_stun_failures_total{server,reason}, agora_stun_responses_rejected_total{reason}. */
export function stunMetrics(registry: Registry): StunMetrics {
  const existing = registry.getSingleMetric("agora_stun_requests_total");
  if (existing)
    return {
      requests: existing as Counter<"server">,
      failures: registry.getSingleMetric("agora_stun_failures_total") as Counter<"server" | "reason">,
      rejected: registry.getSingleMetric("agora_stun_responses_rejected_total") as Counter<"reason">,
    };
  const rejected = new Counter({
    name: "agora_stun_responses_rejected_total",
    help: "Datagrams that looked like STUN responses but were dropped: malformed, bad fingerprint, unknown transaction id, not a response, no mapped address",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  for (const reason of REJECT_REASONS) rejected.inc({ reason }, 0);
  return {
    requests: new Counter({
      name: "agora_stun_requests_total",
      help: "STUN Binding transactions started, by server (retransmissions not counted)",
      labelNames: ["server"] as const,
      registers: [registry],
    }),
    failures: new Counter({
      name: "agora_stun_failures_total",
      help: "STUN Binding transactions that failed, by server and reason (timeout, dns, send, error_response)",
      labelNames: ["server", "reason"] as const,
      registers: [registry],
    }),
    rejected,
  };
}

export interface BindingAnswer {
  mapped: MappedAddress;
  via: "xor-mapped" | "mapped";
  rttMs: number;
}

export interface StunClientOptions {
  clock?: Clock;
  /** First retransmission timeout (RFC 5389: 500 ms). */
  rtoMs?: number;
  /** Retransmissions after the first send; the wait doubles each time. */
  retransmits?: number;
  metrics: StunMetrics;
  /** Called for each dropped datagram (for a debug log). */
  onReject?: (reason: StunRejectReason, message: string, from: UdpPeer) => void;
}

interface Transaction {
  server: UdpPeer;
  label: string;
  sentAt: number;
  timer: unknown;
  resolve(a: BindingAnswer): void;
  reject(e: StunRequestError): void;
}

const hexOf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

export class StunClient {
  private readonly pending = new Map<string, Transaction>();
  private readonly clock: Clock;
  private readonly rtoMs: number;
  private readonly retransmits: number;
  private readonly off: () => void;

  constructor(
    private readonly endpoint: UdpEndpoint,
    private readonly opts: StunClientOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.rtoMs = opts.rtoMs ?? 500;
    this.retransmits = opts.retransmits ?? 2;
    this.off = endpoint.onDatagram((data, from) => this.receive(data, from));
  }

  /** Transactions in flight (tests wait on this instead of sleeping). */
  get inFlight(): number {
    return this.pending.size;
  }

  /** One Binding transaction to `server`; `label` names the server in metrics and errors (its host:port). */
  binding(server: UdpPeer, label: string): Promise<BindingAnswer> {
    const txid = randomTransactionId();
    const key = hexOf(txid);
    const request = encodeBindingRequest(txid);
    this.opts.metrics.requests.inc({ server: label });
    return new Promise<BindingAnswer>((resolve, reject) => {
      const tx: Transaction = { server, label, sentAt: this.clock.now(), timer: undefined, resolve, reject };
      this.pending.set(key, tx);
      let sends = 0;
      const sendNext = () => {
        if (!this.pending.has(key)) return;
        if (sends > this.retransmits) {
          this.finish(
            key,
            new StunRequestError("timeout", `no STUN answer from ${label} in ${this.rtoMs * (2 ** (this.retransmits + 1) - 1)} ms`),
          );
          return;
        }
        try {
          this.endpoint.send(request, server);
        } catch (err) {
          this.finish(key, new StunRequestError("send", `cannot send to ${label}: ${(err as Error).message}`));
          return;
        }
        tx.timer = this.clock.setTimeout(sendNext, this.rtoMs * 2 ** sends);
        sends++;
      };
      sendNext();
    });
  }

  private finish(key: string, outcome: BindingAnswer | StunRequestError): void {
    const tx = this.pending.get(key);
    if (!tx) return;
    this.pending.delete(key);
    this.clock.clearTimeout(tx.timer);
    if (outcome instanceof StunRequestError) {
      if (outcome.reason !== "closed") this.opts.metrics.failures.inc({ server: tx.label, reason: outcome.reason });
      tx.reject(outcome);
    } else tx.resolve(outcome);
  }

  private reject(reason: StunRejectReason, message: string, from: UdpPeer): void {
    this.opts.metrics.rejected.inc({ reason });
    this.opts.onReject?.(reason, message, from);
  }

  private fromAServer(from: UdpPeer): boolean {
    for (const tx of this.pending.values()) if (tx.server.port === from.port && tx.server.address === from.address) return true;
    return false;
  }

  private receive(data: Uint8Array, from: UdpPeer): void {
    if (!looksLikeStun(data)) {
      // Not STUN: the media path's business, unless it came from a server we are asking.
      if (this.fromAServer(from)) this.reject("malformed", "not a STUN message", from);
      return;
    }
    let msg: ReturnType<typeof decodeResponse>;
    try {
      msg = decodeResponse(data);
    } catch (err) {
      if (err instanceof StunDecodeError) this.reject(err.reason, err.message, from);
      else this.reject("malformed", (err as Error).message, from);
      return;
    }
    const key = hexOf(msg.transactionId);
    const tx = this.pending.get(key);
    if (!tx) {
      this.reject("transaction", `transaction id ${key} is not one we sent`, from);
      return;
    }
    if (msg.kind === "error") {
      this.finish(key, new StunRequestError("error_response", `${tx.label} answered ${msg.code} ${msg.reason}`.trim()));
      return;
    }
    this.finish(key, { mapped: msg.mapped, via: msg.via, rttMs: this.clock.now() - tx.sentAt });
  }

  close(): void {
    this.off();
    for (const key of [...this.pending.keys()]) this.finish(key, new StunRequestError("closed", "STUN client closed"));
  }
}
