/**
 * The participant's libp2p node under Bun and Node (dial only: no listen address). The browser's is in
 * browser-node.ts; how targets are named is in target.ts (re-exported here for the CLI clients).
 */
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { createLibp2p } from "libp2p";
import { agoraPing, agoraTcp, agoraTransportStack } from "../transport";

export { type DialTarget, type DialTargetProvider, resolveTarget } from "./target";

export interface ClientNodeOptions {
  /**
   * Source IP of outgoing TCP connections (net.connect's `localAddress`, which @libp2p/tcp passes through
   * from `dialOpts`). A load generator gives each of its processes its own loopback address (127.0.0.x)
   * so that the node's per-IP limits see one host per process, as they would see real clients.
   */
  localAddress?: string;
  /** fixes the node's peer id (a participant whose grant is bound to its key); default a fresh key */
  privateKey?: PrivateKey;
}

/** Minimal dial-only node: tcp, noise, yamux, identify, ping. No listen address. */
export async function createClientNode(opts: ClientNodeOptions = {}): Promise<Libp2p> {
  const { privateKey } = opts;
  // Bun needs the p2p subsystem's transport and encrypter (tcp abort crash, noise cipher gap): see there.
  const stack = agoraTransportStack();
  if (opts.localAddress !== undefined) {
    // TCPSocketOptions does not declare localAddress, but its fields are spread into net.connect().
    const dialOpts = { localAddress: opts.localAddress } as NonNullable<Parameters<typeof agoraTcp>[0]>["dialOpts"];
    stack.transports = [agoraTcp({ dialOpts })];
  }
  return createLibp2p({
    ...(privateKey ? { privateKey } : {}),
    addresses: { listen: [] },
    ...stack,
    services: { identify: identify(), ping: agoraPing() },
    // No connection monitor (libp2p pings every connection every 10 s and aborts one whose ping is slow):
    // the audio session has its own liveness on the same connection (PING, UDP_REPORT, the 15 s idle rule),
    // and on a busy client or node a ping stream (open, negotiate, echo, close: about 16 frames) that took too
    // long aborted the connection and its healthy session with it. Each one also cost the node a stream on
    // its control thread: 40 per second for 400 participants. The node still pings its side (src/p2p).
    connectionMonitor: { enabled: false },
  });
}
