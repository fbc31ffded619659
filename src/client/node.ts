/**
 * The participant's libp2p node (dial only: no listen address) and how a dial target is named: a fixed
 * multiaddr, or a function asked again on every (re)connect so re-homing can swap the node.
 */
import { identify } from "@libp2p/identify";
import type { Libp2p } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { AgoraError, errorMessage } from "../errors";
import { agoraTcp, agoraTransportStack } from "../transport";

export type DialTarget = string | Multiaddr;
/** A fixed multiaddr or a function asked again on every (re)connect, so re-homing can swap the node. */
export type DialTargetProvider = DialTarget | (() => DialTarget | Promise<DialTarget>);

export interface ClientNodeOptions {
  /**
   * Source IP of outgoing TCP connections (net.connect's `localAddress`, which @libp2p/tcp passes through
   * from `dialOpts`). A load generator gives each of its processes its own loopback address (127.0.0.x)
   * so that the node's per-IP limits see one host per process, as they would see real clients.
   */
  localAddress?: string;
}

/** Minimal dial-only node: tcp, noise, yamux, identify, ping. No listen address. */
export async function createClientNode(opts: ClientNodeOptions = {}): Promise<Libp2p> {
  // Bun needs the p2p subsystem's transport and encrypter (tcp abort crash, noise cipher gap): see there.
  const stack = agoraTransportStack();
  if (opts.localAddress !== undefined) {
    // TCPSocketOptions does not declare localAddress, but its fields are spread into net.connect().
    const dialOpts = { localAddress: opts.localAddress } as NonNullable<Parameters<typeof agoraTcp>[0]>["dialOpts"];
    stack.transports = [agoraTcp({ dialOpts })];
  }
  return createLibp2p({
    addresses: { listen: [] },
    ...stack,
    services: { identify: identify(), ping: ping() },
  });
}

export async function resolveTarget(p: DialTargetProvider): Promise<Multiaddr> {
  const t = typeof p === "function" ? await p() : p;
  if (typeof t !== "string") return t;
  try {
    return multiaddr(t);
  } catch (err) {
    throw new AgoraError("USAGE", `invalid node multiaddr "${t}": ${errorMessage(err)}`);
  }
}
