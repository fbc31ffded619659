/**
 * The participant's libp2p node (dial only: no listen address) and how a dial target is named: a fixed
 * multiaddr, or a function asked again on every (re)connect so re-homing can swap the node.
 */
import { identify } from "@libp2p/identify";
import type { Libp2p, PrivateKey } from "@libp2p/interface";
import { ping } from "@libp2p/ping";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { createLibp2p } from "libp2p";
import { AgoraError, errorMessage } from "../errors";
import { agoraTransportStack } from "../transport";

export type DialTarget = string | Multiaddr;
/** A fixed multiaddr or a function asked again on every (re)connect, so re-homing can swap the node. */
export type DialTargetProvider = DialTarget | (() => DialTarget | Promise<DialTarget>);

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

export async function resolveTarget(p: DialTargetProvider): Promise<Multiaddr> {
  const t = typeof p === "function" ? await p() : p;
  if (typeof t !== "string") return t;
  try {
    return multiaddr(t);
  } catch (err) {
    throw new AgoraError("USAGE", `invalid node multiaddr "${t}": ${errorMessage(err)}`);
  }
}
