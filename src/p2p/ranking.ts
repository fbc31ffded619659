/**
 * Ranking of discovered nodes: lower score is better.
 *
 *   score = latency component + load score (+ status penalty)
 *   latency component = RTT in ms / 1000      (1 ms ≙ 0.1 % load; 100 ms ≙ 10 % load)
 *   load score        = current_load / max_clients + CPU penalty + memory penalty      (seed 002)
 *     CPU    > 80 % +0.5, > 60 % +0.2,  > 40 % +0.05
 *     memory > 85 % +0.4, > 70 % +0.15, > 50 % +0.05
 *
 * Seed 002's worked example gives node A (40 peers, CPU 85 %, memory 60 %) 0.4 + 0.5 + 0.15 = 1.05, but its own
 * table gives memory 60 % +0.05 (0.15 starts above 70 %), so A scores 0.95 here. The table is the rule; the
 * example's conclusion (A is avoided, B and C tie at 0.5) holds either way.
 *
 * Units: the score is dimensionless, in "fractions of a full node": a load ratio of 1 (full) is 1.0, and
 * latency is converted at 1 ms = 0.001 (so a 100 ms RTT weighs as much as 10 % load).
 *
 * Nodes that did not answer a ping within discovery's reach timeout are kept (their record is fresh, so they
 * were alive a heartbeat ago) but rank after every node that did answer, whatever the scores: a fake record
 * claiming zero load cannot outrank a reachable node. Among themselves their score includes
 * UNKNOWN_LATENCY_PENALTY (the cost of a 1 s RTT). Degraded nodes pay DEGRADED_PENALTY. Ties (equal score)
 * go to the preferred group, then to the lexically smaller group, then the smaller peer id (deterministic).
 */
import type { NodeAdvertisement } from "./advertisement";

export const UNKNOWN_LATENCY_PENALTY = 1;
export const DEGRADED_PENALTY = 0.25;
/** Scores closer than this are a tie (floating-point sums of the penalties). */
const TIE_EPSILON = 1e-9;

export interface RankedNode {
  advertisement: NodeAdvertisement;
  latency_ms: number | null;
  score: number;
  reasons: string[];
}

export type LoadInputs = Pick<NodeAdvertisement, "current_load" | "max_clients" | "cpu_percent" | "mem_percent">;

export function cpuPenalty(cpu: number): number {
  return cpu > 80 ? 0.5 : cpu > 60 ? 0.2 : cpu > 40 ? 0.05 : 0;
}

export function memPenalty(mem: number): number {
  return mem > 85 ? 0.4 : mem > 70 ? 0.15 : mem > 50 ? 0.05 : 0;
}

/** Rounds away float noise (0.4 + 0.5 + 0.05 = 0.9500000000000001) so scores print and compare cleanly. */
function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function fmt(x: number): string {
  return String(round(x));
}

/** Seed 002's load score with the reasons that make it up. */
export function loadScore(a: LoadInputs): { score: number; reasons: string[] } {
  const reasons: string[] = [];
  // A node advertising no capacity is as good as full.
  const ratio = a.max_clients > 0 ? a.current_load / a.max_clients : 1;
  reasons.push(`load ${a.current_load}/${a.max_clients} (+${fmt(ratio)})`);
  const cpu = cpuPenalty(a.cpu_percent);
  if (cpu > 0) reasons.push(`cpu ${round(a.cpu_percent)}% (+${cpu})`);
  const mem = memPenalty(a.mem_percent);
  if (mem > 0) reasons.push(`mem ${round(a.mem_percent)}% (+${mem})`);
  return { score: round(ratio + cpu + mem), reasons };
}

/** Full score of one node: latency component first in the reasons, then load, then status. */
export function scoreNode(adv: NodeAdvertisement, latencyMs: number | null): { score: number; reasons: string[] } {
  const reasons: string[] = [];
  let score = 0;
  if (latencyMs === null) {
    score += UNKNOWN_LATENCY_PENALTY;
    reasons.push(`latency unknown: no ping answer (+${UNKNOWN_LATENCY_PENALTY})`);
  } else {
    const l = Math.max(0, latencyMs) / 1000;
    score += l;
    reasons.push(`latency ${round(latencyMs)} ms (+${fmt(l)})`);
  }
  const load = loadScore(adv);
  score += load.score;
  reasons.push(...load.reasons);
  if (adv.status === "degraded") {
    score += DEGRADED_PENALTY;
    reasons.push(`status degraded (+${DEGRADED_PENALTY})`);
  }
  return { score: round(score), reasons };
}

export interface RankOptions {
  /** Wins ties over other groups (the client's own or requested group). */
  preferGroup?: string;
}

export function compareRanked(a: RankedNode, b: RankedNode, opts: RankOptions = {}): number {
  const ua = a.latency_ms === null;
  const ub = b.latency_ms === null;
  if (ua !== ub) return ua ? 1 : -1;
  if (Math.abs(a.score - b.score) > TIE_EPSILON) return a.score - b.score;
  const ga = a.advertisement.group;
  const gb = b.advertisement.group;
  if (opts.preferGroup !== undefined && ga !== gb) {
    if (ga === opts.preferGroup) return -1;
    if (gb === opts.preferGroup) return 1;
  }
  if (ga !== gb) return ga < gb ? -1 : 1;
  const pa = a.advertisement.peer_id;
  const pb = b.advertisement.peer_id;
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

/** Scores and sorts best first. */
export function rankNodes(items: { advertisement: NodeAdvertisement; latency_ms: number | null }[], opts: RankOptions = {}): RankedNode[] {
  return items
    .map((it) => ({ advertisement: it.advertisement, latency_ms: it.latency_ms, ...scoreNode(it.advertisement, it.latency_ms) }))
    .sort((a, b) => compareRanked(a, b, opts));
}
