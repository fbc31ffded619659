/**
 * The node's libp2p WebSocket listener (network.ws_*): the multiaddr it listens on, the transport bounded
 * against bad input (src/transport/websockets.ts) and the metric counting what it rejects.
 */
import { isIP } from "node:net";
import { Counter, type Registry } from "prom-client";
import type { AgoraConfig } from "../config";
import { AgoraError } from "../errors";
import type { Logger } from "../log";
import { agoraWebSockets, WS_REJECT_REASONS } from "../transport";

export interface WebSocketListen {
  /** `/ip4/…/tcp/…/ws` (wss is a TLS reverse proxy's job: see the README). */
  listenAddr: string;
  transport: ReturnType<typeof agoraWebSockets>;
  dispose(): void;
}

/** Undefined when network.ws_port is 0 (and no override); `portOverride` 0 = an ephemeral port. */
export function webSocketListen(
  cfg: AgoraConfig["network"],
  registry: Registry,
  log: Logger,
  portOverride?: number,
): WebSocketListen | undefined {
  const port = portOverride ?? cfg.ws_port;
  if (portOverride === undefined && port === 0) return undefined;
  const fam = isIP(cfg.ws_listen_addr);
  if (fam === 0) throw new AgoraError("CONFIG_INVALID", `network.ws_listen_addr "${cfg.ws_listen_addr}" is not an IP address`);
  const rejected = new Counter({
    name: "agora_ws_connections_rejected_total",
    help: "WebSocket (libp2p /ws) connections closed for bad input, by reason",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  for (const reason of WS_REJECT_REASONS) rejected.inc({ reason }, 0);
  const transport = agoraWebSockets({
    onReject: (reason, remote) => {
      rejected.inc({ reason });
      log.debug({ reason, remote }, "websocket connection rejected");
    },
  });
  return {
    listenAddr: `/ip${fam}/${cfg.ws_listen_addr}/tcp/${port}/ws`,
    transport,
    dispose: () => registry.removeSingleMetric("agora_ws_connections_rejected_total"),
  };
}
