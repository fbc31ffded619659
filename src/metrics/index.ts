/**
 * The node's Prometheus registry. Every subsystem registers its own metrics on the one Registry created
 * here (p2p: connections, DHT, relay; audio: packets, rooms, mixer); this module owns the node-level ones
 * and the process metrics. Output must pass `promtool check metrics` with no lint problem.
 */
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";

/** prom-client's default collectors export these gauges with a `_total` suffix, which promtool rejects. */
const LINT_FAILING_DEFAULTS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

export interface NodeInfo {
  version: string;
  mode: string;
  region: string;
  peer_id: string;
}

export interface NodeMetrics {
  registry: Registry;
  /** Prometheus text exposition. */
  render(): Promise<string>;
  contentType: string;
}

export function createNodeMetrics(info: NodeInfo, startedAt: number): NodeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);

  new Gauge({
    name: "agora_node_uptime_seconds",
    help: "Node uptime in seconds",
    registers: [registry],
    collect() {
      this.set((Date.now() - startedAt) / 1000);
    },
  });
  const nodeInfo = new Gauge({
    name: "agora_node_info",
    help: "Static facts about this node; the value is always 1",
    labelNames: ["version", "mode", "region", "peer_id"] as const,
    registers: [registry],
  });
  nodeInfo.set(info, 1);
  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
  };
}
