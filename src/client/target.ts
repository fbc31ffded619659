/**
 * How a dial target is named: a fixed multiaddr, or a function asked again on every (re)connect so
 * re-homing can swap the node. Runtime-neutral (browser included).
 */
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { AgoraError, errorMessage } from "../errors";

export type DialTarget = string | Multiaddr;
/** A fixed multiaddr or a function asked again on every (re)connect, so re-homing can swap the node. */
export type DialTargetProvider = DialTarget | (() => DialTarget | Promise<DialTarget>);

export async function resolveTarget(p: DialTargetProvider): Promise<Multiaddr> {
  const t = typeof p === "function" ? await p() : p;
  if (typeof t !== "string") return t;
  try {
    return multiaddr(t);
  } catch (err) {
    throw new AgoraError("USAGE", `invalid node multiaddr "${t}": ${errorMessage(err)}`);
  }
}
