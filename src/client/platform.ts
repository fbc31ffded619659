/**
 * What the SDK needs from the runtime it runs in: a libp2p node to dial with and the Opus codec. Bun and
 * Node get TCP + agora-node's noise/yamux and the media core read from disk (installed by index.ts); a
 * browser gets WebSockets + stock noise/yamux and the media core fetched over HTTP (installed by
 * browser.ts). RoomConnection asks here instead of importing either, so a browser bundle never pulls
 * node-only code (node:crypto, prom-client, Bun.file).
 */
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { AgoraError } from "../errors";
import type { OpusCodec } from "../protocol";
import type { RoomLocator } from "./navigator";

export interface ClientPlatform {
  /** "native" (Bun, Node) or "browser" */
  readonly name: string;
  /** a private dial-only libp2p node (the caller stops it), with the given key or a fresh one */
  createNode(privateKey?: PrivateKey): Promise<Libp2p>;
  /** the Opus codec (loaded once, on first use) */
  loadCodec(): Promise<OpusCodec>;
  /**
   * Join by name without a `locator`: a room locator over the DHT behind `bootstrap` (Bun and Node load the
   * network subsystem on demand; a browser has no DHT client and throws USAGE: give `node` or a `locator`).
   */
  createRoomLocator(bootstrap: string[]): Promise<RoomLocator & { libp2p: Libp2p; stop(): Promise<void> }>;
}

let installed: ClientPlatform | undefined;

/** Sets the runtime's platform; the SDK's entry points (index.ts, browser.ts) call it when loaded. */
export function installClientPlatform(platform: ClientPlatform): void {
  installed = platform;
}

export function clientPlatform(): ClientPlatform {
  if (!installed)
    throw new AgoraError(
      "USAGE",
      "agora client: no platform installed; import the SDK through its entry (src/client or src/client/browser)",
    );
  return installed;
}
