/**
 * `/agora/advert/1.0.0`: ask a node for its current signed advertisement. The answer is the stored record
 * bytes, verified by the caller exactly like a DHT record (signature, freshness, key consistency), so the
 * transport adds no trust. discover() uses it when it cannot build the DHT key itself (a query without a
 * region: the key contains the region) and as a fallback when a DHT get finds nothing.
 *
 * Wire: the requester opens the stream and closes its writing side; the node writes the record (≤ 4 KiB)
 * and closes. No record (not published yet) = the stream is closed empty.
 */
import type { Libp2p, PeerId, Stream } from "@libp2p/interface";
import type { Registrar } from "@libp2p/interface-internal";
import { advertisementKey, MAX_RECORD_BYTES, type NodeAdvertisement, verifyAdvertisementRecord } from "./advertisement";
import { PROTOCOL_ADVERT } from "./namespaces";
import { readAll } from "./stream-util";

export async function serveAdvertisements(registrar: Pick<Registrar, "handle">, current: () => Uint8Array | null): Promise<void> {
  await registrar.handle(
    PROTOCOL_ADVERT,
    async (stream: Stream) => {
      const signal = AbortSignal.timeout(5_000);
      try {
        const rec = current();
        if (rec) stream.send(rec);
        await stream.close({ signal });
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      }
    },
    // A NAT'd node reachable only through a relay must still answer.
    { runOnLimitedConnection: true, maxInboundStreams: 4 },
  );
}

export async function unserveAdvertisements(registrar: Pick<Registrar, "unhandle">): Promise<void> {
  await registrar.unhandle(PROTOCOL_ADVERT);
}

/** Fetches a peer's record bytes (unverified). Throws on timeout, protocol error or an oversized answer. */
export async function fetchAdvertisement(libp2p: Libp2p, peer: PeerId, signal: AbortSignal): Promise<Uint8Array | null> {
  const stream = await libp2p.dialProtocol(peer, PROTOCOL_ADVERT, { signal, runOnLimitedConnection: true });
  // Start reading before anything else is awaited: see stream-util.ts for why.
  const reading = readAll(stream, MAX_RECORD_BYTES, signal);
  try {
    await stream.close({ signal });
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
  }
  const bytes = await reading;
  return bytes.byteLength > 0 ? bytes : null;
}

/**
 * The peer's own current advertisement over /agora/advert/1.0.0, verified (signature, key built from the
 * claimed region and the peer we talked to, so a node can only ever hand out its own record; freshness); null
 * when it serves none or none that verifies. `verify` defaults to the record validator; discovery passes its
 * counting one, which reports unparseable bytes as malformed (their key then names region "unknown").
 */
export async function fetchVerifiedAdvertisement(
  libp2p: Libp2p,
  peer: PeerId,
  signal: AbortSignal,
  verify: (key: string, bytes: Uint8Array) => Promise<NodeAdvertisement> = verifyAdvertisementRecord,
): Promise<NodeAdvertisement | null> {
  let bytes: Uint8Array | null;
  try {
    bytes = await fetchAdvertisement(libp2p, peer, signal);
  } catch {
    return null;
  }
  if (!bytes) return null;
  let region = "unknown";
  try {
    const o = JSON.parse(new TextDecoder().decode(bytes)) as { region?: unknown };
    if (typeof o.region === "string") region = o.region;
  } catch {
    /* the validator refuses (and counts) it as malformed */
  }
  try {
    return await verify(advertisementKey(region, peer.toString()), bytes);
  } catch {
    return null;
  }
}
