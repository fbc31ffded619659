/**
 * Relay mode: the circuit relay v2 server, sized for voice, and its metrics.
 *
 * libp2p's defaults (128 KiB and 2 minutes per circuit, 15 reservations) are meant for hole-punching
 * bootstraps and end a voice call within seconds, so every limit comes from `[relay]`:
 *
 * | config                    | enforced by                                                             |
 * |---------------------------|-------------------------------------------------------------------------|
 * | max_reservations          | libp2p reservation store (RESERVATION_REFUSED past it)                  |
 * | reservation_ttl           | libp2p reservation store                                                |
 * | max_circuit_duration      | libp2p (per circuit); 0 = unlimited                                     |
 * | max_circuit_bytes         | libp2p (per circuit); 0 = unlimited. libp2p counts ONE budget for both  |
 * |                           | directions, so it is given 2 × the configured per-direction value       |
 * |                           | (moved off [2^31, 2^32), which libp2p's protobuf runtime mis-encodes).  |
 * | max_reservations_per_peer | here, connection gater: reservations held by the same IP address        |
 * | max_circuits              | here, connection gater: circuits open at once on this relay             |
 *
 * Relayed bytes: libp2p's relay pipes the two halves of a circuit internally and exposes no counter, so the
 * node's libp2p Metrics implementation calls `trackStream` for every protocol stream it opens, and this
 * module counts the bytes of the relay's outbound STOP streams: each circuit has exactly one, and every byte
 * relayed in either direction crosses it (plus the ~100 bytes of the STOP handshake, which are counted too).
 *
 * Clients: a relayed connection that carries limits is "limited" in libp2p; a protocol handler must be
 * registered with `runOnLimitedConnection: true` (and streams opened with it) to run over a relay.
 */
import type { CircuitRelayServerInit, CircuitRelayService } from "@libp2p/circuit-relay-v2";
import type { ConnectionGater, Libp2p, PeerId, Stream } from "@libp2p/interface";
import { tryGetNetConfig } from "@libp2p/utils";
import type { Multiaddr } from "@multiformats/multiaddr";
import { Counter, Gauge, type Registry } from "prom-client";
import type { AgoraConfig } from "../config";

export const RELAY_HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop";
export const RELAY_STOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/stop";
/** Pass these when registering a handler or opening a stream that must also work through a relay. */
export const RELAYED_STREAM_OPTIONS = { runOnLimitedConnection: true } as const;

/** setTimeout (behind AbortSignal.timeout) overflows past 2^31-1 ms; "unlimited" duration is clamped to this (~24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** "Unlimited" data is this (2^63-1), which protobuf's uint64 carries and no circuit reaches. */
export const UNLIMITED_BYTES = 2n ** 63n - 1n;

export type RelayConfig = AgoraConfig["relay"];

// The relay takes nothing from src/p2p (which assembles it): the two address checks it needs are here.
const isRelayed = (ma: Multiaddr) => ma.getComponents().some((c) => c.name === "p2p-circuit");
const ipOf = (ma: Multiaddr) => {
  const net = tryGetNetConfig(ma);
  return net?.type === "ip4" || net?.type === "ip6" ? net.host : undefined;
};

/**
 * protons-runtime 7.1.2 (circuit-relay-v2's protobuf runtime) mis-encodes uint64 values in [2^31, 2^32):
 * their LongBits keeps the low word signed, so 2 GiB goes on the wire as garbage and the client cannot
 * parse the reservation at all ("invalid wire type"). The default (2 × 1 GiB) is exactly 2^31. Values in
 * that range are moved to the nearer safe boundary: 2^31 - 1 (one byte less) or 2^32.
 */
export function wireSafeUint64(v: bigint): bigint {
  const lo = 2n ** 31n;
  const hi = 2n ** 32n;
  if (v < lo || v >= hi) return v;
  return v - (lo - 1n) <= hi - v ? lo - 1n : hi;
}

/** The circuitRelayServer() options for `[relay]`. */
export function relayServerInit(cfg: RelayConfig): CircuitRelayServerInit {
  const unlimited = cfg.max_circuit_duration === 0 && cfg.max_circuit_bytes === 0;
  return {
    reservations: {
      maxReservations: cfg.max_reservations,
      reservationTtl: cfg.reservation_ttl * 1000,
      // With both limits off, no limit at all: relayed connections are then not even "limited" for clients.
      applyDefaultLimit: !unlimited,
      // A duration of 0 would abort every circuit at once (AbortSignal.timeout(0)), so "unlimited" is the
      // longest timer; the circuit still ends when its reservation lapses unrefreshed.
      defaultDurationLimit: cfg.max_circuit_duration === 0 ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, cfg.max_circuit_duration * 1000),
      defaultDataLimit: cfg.max_circuit_bytes === 0 ? UNLIMITED_BYTES : wireSafeUint64(BigInt(cfg.max_circuit_bytes) * 2n),
    },
    // Each circuit uses one STOP stream per destination connection; allow as many as the relay has circuits.
    maxOutboundStopStreams: Math.max(cfg.max_circuits, 1),
  };
}

export interface RelayStats {
  enabled: true;
  reservations: number;
  circuits: number;
  bytes_relayed: number;
}

/**
 * Counts reservations, circuits and relayed bytes, and enforces the per-IP reservation and circuit limits
 * through the connection gater. Created before libp2p (the gater is a libp2p option) and attached after.
 */
export class RelayMonitor {
  private libp2p?: Libp2p;
  private service?: CircuitRelayService;
  private bytes = 0;
  private readonly registry?: Registry;
  private readonly bytesCounter: Counter;
  private readonly refused: Counter<"reason">;
  private readonly gauges: Gauge[];

  constructor(
    private readonly cfg: RelayConfig,
    registry?: Registry,
  ) {
    this.registry = registry;
    const registers = registry ? [registry] : [];
    const self = this;
    this.gauges = [
      new Gauge({
        name: "agora_relay_reservations_active",
        help: "Circuit relay reservations currently held on this relay",
        registers,
        collect() {
          this.set(self.reservations());
        },
      }),
      new Gauge({
        name: "agora_relay_circuits_active",
        help: "Relayed connections (circuits) currently open through this relay",
        registers,
        collect() {
          this.set(self.circuits());
        },
      }),
    ];
    this.bytesCounter = new Counter({
      name: "agora_relay_bytes_total",
      help: "Bytes relayed through this relay's circuits, both directions (includes the STOP handshake)",
      registers,
    });
    this.refused = new Counter({
      name: "agora_relay_refused_total",
      help: "Relay requests refused by Agora's limits, by reason",
      labelNames: ["reason"] as const,
      registers,
    });
    for (const reason of ["reservations_per_peer", "max_circuits"]) this.refused.inc({ reason }, 0);
  }

  attach(libp2p: Libp2p, service: CircuitRelayService): void {
    this.libp2p = libp2p;
    this.service = service;
  }

  reservations(): number {
    return this.service?.reservations.size ?? 0;
  }

  /** Open circuits = the relay's outbound STOP streams (one per circuit) across all connections. */
  circuits(): number {
    let n = 0;
    for (const conn of this.libp2p?.getConnections() ?? []) {
      for (const s of conn.streams) if (s.protocol === RELAY_STOP_PROTOCOL && s.direction === "outbound" && s.status === "open") n++;
    }
    return n;
  }

  bytesRelayed(): number {
    return this.bytes;
  }

  stats(): RelayStats {
    return { enabled: true, reservations: this.reservations(), circuits: this.circuits(), bytes_relayed: this.bytes };
  }

  /** Called by the metrics hook for every negotiated protocol stream; counts the circuit halves only. */
  trackStream(stream: Stream): void {
    if (stream.protocol !== RELAY_STOP_PROTOCOL || stream.direction !== "outbound") return;
    const add = (n: number) => {
      this.bytes += n;
      this.bytesCounter.inc(n);
    };
    // Wrap rather than listen: a 'message' listener would start the stream flowing before the relay reads
    // the STOP response (the same reason @libp2p/prometheus-metrics wraps dispatchEvent).
    const dispatch = stream.dispatchEvent.bind(stream);
    stream.dispatchEvent = (evt: Event) => {
      if (evt.type === "message") {
        const data = (evt as Event & { data?: { byteLength: number } }).data;
        if (data) add(data.byteLength);
      }
      return dispatch(evt);
    };
    const send = stream.send.bind(stream);
    stream.send = (buf) => {
      add(buf.byteLength);
      return send(buf);
    };
  }

  /** Gater hooks, bound late to the libp2p node and relay service. */
  gater(): Pick<ConnectionGater, "denyInboundRelayReservation" | "denyOutboundRelayedConnection"> {
    return {
      denyInboundRelayReservation: (source: PeerId) => {
        const service = this.service;
        const libp2p = this.libp2p;
        if (!service || !libp2p) return false;
        // A refresh of an existing reservation is always allowed.
        if (service.reservations.has(source)) return false;
        const conn = libp2p.getConnections(source).find((c) => !isRelayed(c.remoteAddr));
        const ip = conn ? ipOf(conn.remoteAddr) : undefined;
        if (!ip) return false;
        let held = 0;
        for (const [, r] of service.reservations) if (ipOf(r.addr) === ip) held++;
        if (held >= this.cfg.max_reservations_per_peer) {
          this.refused.inc({ reason: "reservations_per_peer" });
          return true;
        }
        return false;
      },
      denyOutboundRelayedConnection: () => {
        if (this.circuits() >= this.cfg.max_circuits) {
          this.refused.inc({ reason: "max_circuits" });
          return true;
        }
        return false;
      },
    };
  }

  /** Unregister the metrics (node stop) so a later node can register them again. */
  dispose(): void {
    if (!this.registry) return;
    for (const m of [...this.gauges, this.bytesCounter, this.refused]) {
      const name = (m as unknown as { name: string }).name;
      if (this.registry.getSingleMetric(name) === m) this.registry.removeSingleMetric(name);
    }
  }
}
