/**
 * The node's Prometheus exposition (agora_* and libp2p_* metrics of a relay node that relayed a call)
 * passes `promtool check metrics`. The network runs in a child process so @libp2p/prometheus-metrics,
 * which keeps a module-global metric map, registers everything on that node's registry.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { lintSafeMetricName } from "../../src/p2p/metrics";
import { requireTool } from "../helpers/tools";

describe("libp2p metric names", () => {
  test("gauges lose _total, histogram suffixes are avoided, non-second time units are not exported", () => {
    expect(lintSafeMetricName("libp2p_tcp_inbound_connections_total", "gauge")).toBe("libp2p_tcp_inbound_connections");
    expect(lintSafeMetricName("libp2p_kad_dht_routing_table_kad_bucket_total", "gauge")).toBe("libp2p_kad_dht_routing_table_kad_buckets");
    expect(lintSafeMetricName("libp2p_noise_encrypted_packets_total", "counter")).toBe("libp2p_noise_encrypted_packets_total");
    expect(lintSafeMetricName("libp2p_connection_monitor_ping_time_milliseconds", "gauge")).toBeNull();
    expect(lintSafeMetricName("libp2p_dial_queue", "gauge")).toBe("libp2p_dial_queue");
  });
});

describe("exposition", () => {
  test("a relay node's /metrics passes promtool check metrics", () => {
    const promtool = requireTool("promtool", "prometheus");
    const dump = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "metrics-dump.ts")], {
      cwd: join(import.meta.dir, "..", ".."),
      timeout: 60_000,
    });
    expect(dump.exitCode).toBe(0);
    const [relayText] = dump.stdout.toString().split("\n#----\n");
    for (const name of [
      "agora_connections_total",
      "agora_connections_active",
      "agora_dht_records_rejected_total",
      "agora_rooms_records_rejected_total",
      "agora_relay_reservations_active",
      "agora_relay_circuits_active",
      "agora_relay_bytes_total",
      "libp2p_data_transfer_bytes_total",
      "libp2p_agora_dht_routing_table_size",
    ]) {
      expect(relayText).toContain(`# TYPE ${name} `);
    }
    expect(relayText).toMatch(/^agora_relay_bytes_total [1-9]\d*/m);
    const lint = Bun.spawnSync([promtool, "check", "metrics"], { stdin: Buffer.from(relayText!) });
    expect(lint.stdout.toString() + lint.stderr.toString()).toBe("");
    expect(lint.exitCode).toBe(0);
  }, 90_000);
});
