/**
 * Enumeration keys. A DHT cannot list keys by prefix, so every publishing node also announces itself as a
 * *provider* of a few well-known content ids: one for its region, one per capability, one for "any node".
 * discover() asks the DHT for the providers of the most specific of these and then fetches each provider's
 * signed advertisement. The CIDs are sha256 of a namespace string (CIDv1, raw codec).
 */
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import { sha256 } from "multiformats/hashes/sha2";

export const PROTOCOL_DHT = "/agora/kad/1.0.0";
/** Direct fetch of a node's current signed advertisement (used when the region, hence the DHT key, is unknown). */
export const PROTOCOL_ADVERT = "/agora/advert/1.0.0";

export function regionNamespace(region: string): string {
  return `/agora/region/${region}`;
}

export function capabilityNamespace(capability: string): string {
  return `/agora/capability/${capability}`;
}

/** Provided by every publishing node: lets a client enumerate without any filter. */
export const ALL_NODES_NAMESPACE = "/agora/all";

export async function namespaceCid(namespace: string): Promise<CID> {
  const digest = await sha256.digest(new TextEncoder().encode(namespace));
  return CID.createV1(raw.code, digest);
}
