/** Small multiaddr helpers: address classes, listen addresses, stripping our own /p2p suffix. */
import { isIP } from "node:net";
import type { Multiaddr } from "@multiformats/multiaddr";
import { AgoraError } from "../errors";

const CIRCUIT = "/p2p-circuit";

export function isCircuit(ma: Multiaddr | string): boolean {
  return String(ma).includes(CIRCUIT);
}

/** The first ip4/ip6 value of a multiaddr, if any. */
export function ipOf(ma: Multiaddr): string | undefined {
  for (const c of ma.getComponents()) {
    if ((c.name === "ip4" || c.name === "ip6") && c.value) return c.value;
  }
  return undefined;
}

export function isLoopbackIp(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1";
}

/**
 * Not reachable from the public internet: loopback, RFC 1918, CGNAT (100.64/10), link-local, unspecified,
 * IPv6 ULA (fc00::/7) and link-local (fe80::/10).
 */
export function isPrivateIp(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a = 0, b = 0] = ip.split(".").map(Number);
    return a === 10 || a === 127 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  const v = ip.toLowerCase();
  if (v === "::1" || v === "::") return true;
  if (v.startsWith("::ffff:")) return isPrivateIp(v.slice(7));
  return /^f[cd]/.test(v) || /^fe[89ab]/.test(v);
}

/** True for addresses with a private/loopback IP; DNS names and addresses without an IP count as public. */
export function isPrivateAddr(ma: Multiaddr): boolean {
  const ip = ipOf(ma);
  return ip !== undefined && isPrivateIp(ip);
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
