/**
 * The participant's libp2p node in a browser: stock @libp2p/websockets, noise with its default (WebCrypto
 * and pure-JS) crypto, yamux, identify, ping. agora-node's own stack (src/transport) is not used here: it
 * exists for Bun's TCP and cipher gaps and pulls node:crypto.
 */
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { webSockets } from "@libp2p/websockets";
import { createLibp2p } from "libp2p";

/** A dial-only node over WebSockets (ws:// or wss://, the page's origin policy permitting). */
export async function createBrowserNode(privateKey?: PrivateKey): Promise<Libp2p> {
  return createLibp2p({
    // a participant key (grants bound to it, owned rooms) or a fresh one
    ...(privateKey ? { privateKey } : {}),
    addresses: { listen: [] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() },
    // A browser libp2p refuses private addresses by default (against DHT-learned addresses); this node
    // only dials the address the application names, which may well be a LAN or loopback node.
    connectionGater: { denyDialMultiaddr: () => false },
  });
}
