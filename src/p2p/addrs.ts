/**
 * Small multiaddr helpers: listen addresses, relay paths, stripping our own /p2p suffix. Address classes
 * (private, loopback) come from @libp2p/utils (`isPrivate`, `isLoopback`), not from here.
 */
import { isIP } from "node:net";
import { tryGetNetConfig } from "@libp2p/utils";
import type { Multiaddr } from "@multiformats/multiaddr";
import { AgoraError } from "../errors";

const CIRCUIT = "/p2p-circuit";

export function isCircuit(ma: Multiaddr | string): boolean {
  return String(ma).includes(CIRCUIT);
}

/** The IP a multiaddr starts with, if it starts with one (not for DNS names). */
export function ipOf(ma: Multiaddr): string | undefined {
  const net = tryGetNetConfig(ma);
  return net?.type === "ip4" || net?.type === "ip6" ? net.host : undefined;
}

export function tcpListenAddr(host: string, port: number): string {
  const fam = isIP(host);
  if (fam === 0) throw new AgoraError("CONFIG_INVALID", `node.listen_addr "${host}" is not an IP address`);
  return `/ip${fam}/${host}/tcp/${port}`;
}

/** `/ip4/…/tcp/…/p2p/<self>` → `/ip4/…/tcp/…` (only our own trailing id; relay paths keep theirs). */
export function stripOwnPeerId(ma: string, self: string): string {
  const suffix = `/p2p/${self}`;
  return ma.endsWith(suffix) ? ma.slice(0, -suffix.length) : ma;
}
