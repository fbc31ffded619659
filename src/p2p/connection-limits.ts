/**
 * Live connection limit as a (tiny) libp2p service: libp2p only exposes setMaxConnections on its connection
 * manager, which a service receives as a component; the node's facade goes through this instead of reaching
 * into libp2p's internals.
 */
import type { ConnectionManager } from "@libp2p/interface-internal";

export interface ConnectionLimitsComponents {
  connectionManager: Pick<ConnectionManager, "getMaxConnections" | "setMaxConnections">;
}

export class ConnectionLimits {
  readonly [Symbol.toStringTag] = "@agora/connection-limits";

  constructor(private readonly components: ConnectionLimitsComponents) {}

  getMaxConnections(): number {
    return this.components.connectionManager.getMaxConnections();
  }

  setMaxConnections(n: number): void {
    this.components.connectionManager.setMaxConnections(n);
  }
}

export function connectionLimits(): (components: ConnectionLimitsComponents) => ConnectionLimits {
  return (components) => new ConnectionLimits(components);
}
