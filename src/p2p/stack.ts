/**
 * The libp2p transport stack of every Agora node and client: TCP, Noise, Yamux, with the two Bun fixes
 * (see tcp.ts and noise.ts). Spread it into createLibp2p's options so no node is ever built with the
 * plain, broken-under-Bun transports.
 */
import { yamux } from "@chainsafe/libp2p-yamux";
import { agoraNoise } from "./noise";
import { agoraTcp } from "./tcp";

export function agoraTransportStack() {
  return {
    transports: [agoraTcp()],
    connectionEncrypters: [agoraNoise()],
    streamMuxers: [yamux()],
  };
}
