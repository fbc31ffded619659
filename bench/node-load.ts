/**
 * What the benches that drive the compiled node share: the limits a load from a few loopback addresses
 * needs, and reading one figure from the node's /metrics text.
 */

/**
 * `--set` arguments for a node that `participants` bench clients join from a few loopback addresses (and,
 * with shared connections, from one peer): per-peer and per-IP stream limits sized for them, join rates
 * no bench ramp reaches. Everything else stays at the node's defaults.
 */
export function loopbackLoadLimits(participants: number): string[] {
  return [
    "--set",
    `audio.max_streams_per_peer=${Math.max(64, participants)}`,
    "--set",
    `audio.max_streams_per_ip=${Math.max(256, participants)}`,
    "--set",
    "audio.joins_per_second_per_peer=1000",
    "--set",
    "audio.joins_per_second_per_ip=1000",
  ];
}

/** One sample of the Prometheus text: `name` with exactly these `labels` (as written, e.g. 'direction="in"'); 0 when absent. */
export function metricValue(text: string, name: string, labels = ""): number {
  const re = new RegExp(`^${name}${labels ? `\\{${labels}\\}` : ""} ([0-9.e+-]+)$`, "m");
  return Number(re.exec(text)?.[1] ?? 0);
}
