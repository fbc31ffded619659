/**
 * The participant's libp2p node under Bun and Node (dial only: no listen address). The browser's is in
 * browser-node.ts; how targets are named is in target.ts (re-exported here for the CLI clients).
 */
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { createLibp2p } from "libp2p";
import { agoraTransportStack } from "../transport";

export { type DialTarget, type DialTargetProvider, resolveTarget } from "./target";

/**
 * Minimal dial-only node: tcp, noise, yamux, identify, ping. No listen address. `privateKey` fixes its peer
 * id (a participant whose grant is bound to its key); default a fresh key.
 */
export async function createClientNode(privateKey?: PrivateKey): Promise<Libp2p> {
  return createLibp2p({
    ...(privateKey ? { privateKey } : {}),
    addresses: { listen: [] },
    // Bun needs the p2p subsystem's transport and encrypter (tcp abort crash, noise cipher gap): see there.
    ...agoraTransportStack(),
    services: { identify: identify(), ping: ping() },
  });
}
