/**
 * Network metrics on the node's registry:
 *   agora_connections_total{type="incoming"|"outgoing"}   counter, connections opened
 *   agora_connections_active{type}                        gauge, connections open now (read at scrape time)
 * plus libp2p's own metrics (@libp2p/prometheus-metrics) on the same registry.
 */
import type { ComponentLogger, Connection, Libp2p, Metrics, Stream } from "@libp2p/interface";
import { prometheusMetrics } from "@libp2p/prometheus-metrics";
import { Counter, Gauge, Registry } from "prom-client";

type ConnType = "incoming" | "outgoing";
const typeOf = (c: Connection): ConnType => (c.direction === "inbound" ? "incoming" : "outgoing");

export class ConnectionMetrics {
  private readonly total: Counter<"type">;
  private readonly active: Gauge<"type">;
  private libp2p?: Libp2p;
  private readonly onOpen = (evt: CustomEvent<Connection>) => this.total.inc({ type: typeOf(evt.detail) });

  constructor(private readonly registry: Registry) {
    const self = this;
    this.total = new Counter({
      name: "agora_connections_total",
      help: "P2P connections opened, by direction (incoming: accepted, outgoing: dialed)",
      labelNames: ["type"] as const,
      registers: [registry],
    });
    this.active = new Gauge({
      name: "agora_connections_active",
      help: "P2P connections currently open, by direction",
      labelNames: ["type"] as const,
      registers: [registry],
      collect() {
        const n = { incoming: 0, outgoing: 0 };
        for (const c of self.libp2p?.getConnections() ?? []) n[typeOf(c)]++;
        this.set({ type: "incoming" }, n.incoming);
        this.set({ type: "outgoing" }, n.outgoing);
      },
    });
    for (const type of ["incoming", "outgoing"] as const) this.total.inc({ type }, 0);
  }

  attach(libp2p: Libp2p): void {
    this.libp2p = libp2p;
    libp2p.addEventListener("connection:open", this.onOpen);
  }

  dispose(): void {
    this.libp2p?.removeEventListener("connection:open", this.onOpen);
    for (const m of [this.total, this.active]) {
      const name = (m as unknown as { name: string }).name;
      if (this.registry.getSingleMetric(name) === m) this.registry.removeSingleMetric(name);
    }
  }
}

/** Time units promtool wants as seconds; libp2p exports some metrics in these. */
const NON_BASE_UNIT = /_(milliseconds|microseconds|nanoseconds|ms|us|ns)(_|$)/;

/**
 * How a libp2p metric name is exported so the node's /metrics passes `promtool check metrics`:
 * - a gauge named `…_total` (libp2p uses gauges for current counts) loses the `_total` suffix, which
 *   Prometheus reserves for counters: libp2p_tcp_inbound_connections_total → libp2p_tcp_inbound_connections
 *   (…_kad_bucket_total → …_kad_buckets, since _bucket/_count/_sum are reserved for histograms);
 * - a metric in milliseconds (or µs, ns) is not exported at all: renaming cannot fix a unit, and these are
 *   kad-dht/connection-monitor timing internals. It is registered on a private registry instead.
 * Counters keep their names. Returns null for "do not export".
 */
export function lintSafeMetricName(name: string, kind: "gauge" | "counter" | "histogram" | "summary"): string | null {
  if (NON_BASE_UNIT.test(name)) return null;
  if (kind !== "counter" && name.endsWith("_total")) {
    const base = name.slice(0, -"_total".length);
    // …_kad_bucket_total would become …_kad_bucket, a suffix Prometheus reserves for histograms.
    return /_(bucket|count|sum)$/.test(base) ? `${base}s` : base;
  }
  return name;
}

const REGISTER_KINDS = {
  registerMetric: "gauge",
  registerMetricGroup: "gauge",
  registerCounter: "counter",
  registerCounterGroup: "counter",
  registerHistogram: "histogram",
  registerHistogramGroup: "histogram",
  registerSummary: "summary",
  registerSummaryGroup: "summary",
} as const;

/**
 * libp2p's Prometheus metrics on `registry`, made lint-clean (lintSafeMetricName), with a hook on every
 * negotiated protocol stream (the relay counts its circuit bytes there).
 *
 * - collectDefaultMetrics: false — the node's metrics module already registers the process metrics on this
 *   registry; registering them twice throws.
 * - preserveExistingMetrics: true — otherwise @libp2p/prometheus-metrics clears prom-client's *global*
 *   registry, wiping metrics other code registered there.
 * Caveat: @libp2p/prometheus-metrics keeps a module-global name → metric map, so a second libp2p node in
 * the same process (tests) reuses the first one's libp2p_* metric objects; the agora_* metrics are per node.
 */
export function libp2pMetrics(registry: Registry, onStream?: (s: Stream) => void): (components: { logger: ComponentLogger }) => Metrics {
  const factory = prometheusMetrics({ registry, collectDefaultMetrics: false, preserveExistingMetrics: true });
  const quarantine = new Registry();
  return (components) => {
    const m = factory(components);
    const target = m as unknown as Record<string, (name: string, opts?: Record<string, unknown>) => unknown>;
    for (const [method, kind] of Object.entries(REGISTER_KINDS)) {
      const original = target[method];
      if (typeof original !== "function") continue;
      const bound = original.bind(m);
      target[method] = (name: string, opts: Record<string, unknown> = {}) => {
        const safe = lintSafeMetricName(name, kind);
        return safe === null ? bound(name, { ...opts, registry: quarantine }) : bound(safe, opts);
      };
    }
    if (onStream) {
      const track = m.trackProtocolStream.bind(m);
      m.trackProtocolStream = (stream: Stream) => {
        track(stream);
        onStream(stream);
      };
    }
    return m;
  };
}

export type StoreEvictionReason = "expired" | "signer_quota" | "store_full";
export const STORE_EVICTION_REASONS: readonly StoreEvictionReason[] = ["expired", "signer_quota", "store_full"];

/**
 * The DHT record store's figures (record-store.ts):
 *   agora_dht_store_evictions_total{kind="record"|"provider", reason}   counter, entries dropped by the store
 *   agora_dht_store_entries{kind}                                        gauge, entries held now
 * Refusals of incoming records are counted in agora_dht_records_rejected_total (validator.ts).
 */
export class DhtStoreMetrics {
  private readonly evictions: Counter<"kind" | "reason">;
  private readonly entries: Gauge<"kind">;

  constructor(
    private readonly registry: Registry,
    sizes: () => { record: number; provider: number },
  ) {
    this.evictions = new Counter({
      name: "agora_dht_store_evictions_total",
      help: "DHT entries this node dropped: expired (past last_seen + ttl_seconds, or provider validity), signer_quota (over the per-peer bound) or store_full (stalest entry, over the total bound)",
      labelNames: ["kind", "reason"] as const,
      registers: [registry],
    });
    this.entries = new Gauge({
      name: "agora_dht_store_entries",
      help: "DHT entries this node stores for others, by kind (record: node advertisements, provider: provider records)",
      labelNames: ["kind"] as const,
      registers: [registry],
      collect() {
        const s = sizes();
        this.set({ kind: "record" }, s.record);
        this.set({ kind: "provider" }, s.provider);
      },
    });
    for (const kind of ["record", "provider"] as const)
      for (const reason of STORE_EVICTION_REASONS) this.evictions.inc({ kind, reason }, 0);
  }

  evicted(kind: "record" | "provider", reason: StoreEvictionReason, n = 1): void {
    this.evictions.inc({ kind, reason }, n);
  }

  dispose(): void {
    for (const m of [this.evictions, this.entries]) {
      const name = (m as unknown as { name: string }).name;
      if (this.registry.getSingleMetric(name) === m) this.registry.removeSingleMetric(name);
    }
  }
}
