/**
 * Which of the node's WebSocket addresses the test-call page dials, or why it cannot (kept apart from
 * page.ts, which runs on load, so tests can import it).
 */
/**
 * The WebSocket address to dial: on an https page only a TLS one (/wss, /tls/ws), since browsers refuse
 * ws:// there; otherwise the one on the host the page came from, else a loopback one, else the first.
 */
export function chooseAddress(addrs: string[], pageProtocol: string, pageHost: string): { addr?: string; why?: string } {
  const tls = (a: string) => /\/(wss|tls\/ws)(\/|$)/.test(a);
  const ws = addrs.filter((a) => /\/(ws|wss)(\/|$)/.test(a));
  if (ws.length === 0)
    return {
      why: "This node has no WebSocket listener, so a browser cannot reach it: set network.ws_port (e.g. 7002) and restart the node.",
    };
  if (pageProtocol === "https:") {
    const secure = ws.filter(tls);
    if (secure.length === 0)
      return {
        why: `This page is served over https, and browsers refuse plain ws:// from an https page. The node listens on ${ws[0]} (plain ws): put a TLS reverse proxy in front of it (README: Caddy or nginx snippet) and list the proxy's public /tls/ws address in network.announce_addrs.`,
      };
    return { addr: secure[0] };
  }
  const host = (a: string) => a.split("/")[2] ?? "";
  const plain = ws.filter((a) => !tls(a));
  const candidates = plain.length > 0 ? plain : ws;
  return {
    addr:
      candidates.find((a) => host(a) === pageHost) ??
      candidates.find((a) => ["127.0.0.1", "::1", "localhost"].includes(host(a))) ??
      candidates[0],
  };
}
