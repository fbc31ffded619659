/**
 * Room placement: which mixer hosts a room that has no live room record. Every participant and every node
 * computes it the same way from the same inputs, so concurrent first joiners pick the same mixer without
 * talking to each other (rendezvous, or highest-random-weight, hashing: Thaler & Ravishankar 1998). The rule
 * also picks the successor of a host that drains or dies (the same ranking without that host), so a room
 * moves as little as possible when the set of mixers changes: only the rooms of the host that left move.
 *
 * Exact rule (protocol.md, "Room placement", has test vectors):
 *   weight(room, peer) = first 8 bytes, big-endian u64, of SHA-256(UTF-8 "agora-room-placement/v1\n" + room + "\n" + peer)
 * where `peer` is the base58btc text form of the mixer's peer id. Candidates are the mixers of the room's
 * region whose advertisement is live, not `draining`, lists the `mixer` capability and has room capacity
 * (`current_load < max_clients`). Highest weight first; equal weights (never seen in practice) by the peer id
 * that sorts first as bytes. Pure and synchronous: the SDK uses it in browsers too (no node:crypto).
 */
import { sha256 } from "@noble/hashes/sha2.js";

export const PLACEMENT_DOMAIN = "agora-room-placement/v1\n";

/** What placement needs from a mixer's signed advertisement (field names as in the record). */
export interface PlacementCandidate {
  peer_id: string;
  region: string;
  status: string;
  capabilities: readonly string[];
  current_load: number;
  max_clients: number;
}

const encoder = new TextEncoder();

/** The rendezvous weight of `peerId` for `room` (an unsigned 64-bit integer). */
export function placementWeight(room: string, peerId: string): bigint {
  const digest = sha256(encoder.encode(`${PLACEMENT_DOMAIN}${room}\n${peerId}`));
  let w = 0n;
  for (let i = 0; i < 8; i++) w = (w << 8n) | BigInt(digest[i]!);
  return w;
}

/** Whether a mixer may be chosen for a room of `region` (live is the caller's part: only verified records). */
export function isPlacementCandidate(c: PlacementCandidate, region: string): boolean {
  return (
    c.region === region &&
    c.status !== "draining" &&
    c.capabilities.includes("mixer") &&
    Number.isFinite(c.current_load) &&
    c.current_load < c.max_clients
  );
}

function compareIds(a: string, b: string): number {
  // The ids are ASCII (base58btc), so code-unit order is byte order.
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The eligible candidates for `room` in `region`, best first, without those in `exclude` (the host that
 * drains or died). Duplicates of one peer id count once (the first one given).
 */
export function rankPlacement<C extends PlacementCandidate>(
  room: string,
  region: string,
  candidates: readonly C[],
  exclude: Iterable<string> = [],
): C[] {
  const excluded = new Set(exclude);
  const seen = new Set<string>();
  const weighted: { c: C; w: bigint }[] = [];
  for (const c of candidates) {
    if (excluded.has(c.peer_id) || seen.has(c.peer_id) || !isPlacementCandidate(c, region)) continue;
    seen.add(c.peer_id);
    weighted.push({ c, w: placementWeight(room, c.peer_id) });
  }
  weighted.sort((a, b) => (a.w > b.w ? -1 : a.w < b.w ? 1 : compareIds(a.c.peer_id, b.c.peer_id)));
  return weighted.map((x) => x.c);
}

/** The mixer that should host `room`, or undefined when no candidate is eligible. */
export function placeRoom<C extends PlacementCandidate>(
  room: string,
  region: string,
  candidates: readonly C[],
  exclude: Iterable<string> = [],
): C | undefined {
  return rankPlacement(room, region, candidates, exclude)[0];
}
