/**
 * The libp2p transport stack of every Agora node and client: TCP, Noise, Yamux, with the two Bun fixes
 * (see tcp.ts and noise.ts). Spread it into createLibp2p's options so no node is ever built with the
 * plain, broken-under-Bun transports.
 */
import { yamux } from "@chainsafe/libp2p-yamux";
import type { Libp2pOptions } from "libp2p";
import { agoraNoise } from "./noise";
import { agoraTcp } from "./tcp";

/**
 * Largest yamux data frame we send. A receiver delivers nothing of a frame before all of it has arrived, so
 * the frame is the unit of store-and-forward on a relay hop and of head-of-line blocking between streams
 * sharing a connection (a voice stream behind a bulk one). Without the patch in patches/ yamux ignored this
 * and sent frames as large as the send window (up to 16 MiB): relayed throughput was half of direct.
 * 16 KiB is rust-yamux's choice; bench/relay.ts measured 16 and 64 KiB alike (97 % of direct), and the
 * smaller frame keeps a voice frame's wait behind another stream's frame to ≈ 1.3 ms at 100 Mbit/s.
 */
export const YAMUX_MAX_FRAME_BYTES = 16 * 1024;

/**
 * Largest yamux receive window a stream grows to (yamux's default is 16 MiB). It must not exceed what a
 * paused stream may hold (`maxReadBufferLength`, 4 MiB), because a paused stream still receives whatever
 * window it had granted: the relay pauses a circuit's source while the destination is slow (see
 * patches/@libp2p%2Fcircuit-relay-v2…), and with 16 MiB windows that would reset healthy circuits.
 * 4 MiB still carries ≈ 335 Mbit/s per stream at 100 ms RTT.
 */
export const YAMUX_MAX_WINDOW_BYTES = 4 * 1024 * 1024;

/** Spread into createLibp2p's options (typed so the SDK's declaration files can name it). */
export type AgoraTransportStack = Required<Pick<Libp2pOptions, "transports" | "connectionEncrypters">> & {
  streamMuxers: ReturnType<typeof yamux>[];
};

export function agoraTransportStack(): AgoraTransportStack {
  return {
    transports: [agoraTcp()],
    connectionEncrypters: [agoraNoise()],
    streamMuxers: [
      yamux({
        maxMessageSize: YAMUX_MAX_FRAME_BYTES,
        streamOptions: { maxStreamWindowSize: YAMUX_MAX_WINDOW_BYTES, maxReadBufferLength: YAMUX_MAX_WINDOW_BYTES },
      }),
    ],
  };
}
