/**
 * A plausible /api/status for tests of the HTTP layer: one typed object, so a field added to the model is
 * added here once, not to every fake source.
 */
import type { StatusReport } from "../../src/http";

export function fakeStatus(overrides: Partial<StatusReport> = {}): StatusReport {
  return {
    name: "test <node>",
    version: "0.1.0",
    mode: "dedicated",
    state: "ready",
    peer_id: "12D3KooWTest",
    region: "eu-west",
    group: "default",
    labels: [],
    capabilities: ["mixer"],
    started_at: new Date().toISOString(),
    uptime_seconds: 3725,
    load: { current_load: 3, max_clients: 100, cpu_percent: 5, mem_percent: 40, rss_bytes: 50e6 },
    limits: { max_connections: 100, max_mixers: 5, drain_timeout_seconds: 30 },
    rooms_active: 1,
    participants: 3,
    peers_connected: 2,
    network: { listen_addrs: ["/ip4/127.0.0.1/tcp/7001"], reachability: "private" },
    turn: { enabled: false, url: "", username: "", password: "" },
    stun_servers: [],
    stun: null,
    drain: null,
    media: { worker_restarts: 0 },
    discovery: {
      bootstrap_configured: 2,
      bootstrap_connected: 1,
      known_peers: 4,
      routing_table_size: 7,
      publishes: true,
      last_published_at: new Date(Date.now() - 12_000).toISOString(),
      isolated: false,
    },
    relay: null,
    ...overrides,
  };
}
