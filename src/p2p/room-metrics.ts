/**
 * Room metrics, defined here once for everything that decides about rooms (the DHT validator and record store
 * for records, the room directory for claims, placement and handover code for redirects and moves):
 *   agora_rooms_records_rejected_total{reason}   room records (`/agora/rooms/…`) refused by this node
 *   agora_rooms_claims_lost_total                rooms this node claimed and found held by a better claim
 *   agora_rooms_redirects_total                  JOINs answered with REDIRECT (the room is hosted elsewhere)
 *   agora_rooms_handovers_total{direction}       rooms handed over to another host ("out") or taken over ("in")
 * Without a registry (a transient client) the counters exist but are not exported.
 */
import { Counter, type Registry } from "prom-client";
import { REJECT_REASONS, type RejectReason } from "./advertisement";

export const ROOM_REJECTED_METRIC = "agora_rooms_records_rejected_total";
export type HandoverDirection = "in" | "out";

export class RoomMetrics {
  readonly rejected: Counter<"reason">;
  readonly claimsLost: Counter;
  readonly redirects: Counter;
  readonly handovers: Counter<"direction">;
  private readonly counts = new Map<RejectReason, number>();

  constructor(private readonly registry?: Registry) {
    const registers = registry ? [registry] : [];
    this.rejected = new Counter({
      name: ROOM_REJECTED_METRIC,
      help: "Room records (/agora/rooms/...) refused by this node, by reason",
      labelNames: ["reason"] as const,
      registers,
    });
    for (const r of REJECT_REASONS) this.rejected.inc({ reason: r }, 0);
    this.claimsLost = new Counter({
      name: "agora_rooms_claims_lost_total",
      help: "Room claims of this node that lost to a better claim (higher epoch or the tie-break)",
      registers,
    });
    this.redirects = new Counter({
      name: "agora_rooms_redirects_total",
      help: "JOINs this node answered with REDIRECT because another live mixer hosts the room",
      registers,
    });
    this.handovers = new Counter({
      name: "agora_rooms_handovers_total",
      help: "Room handovers: out = this node handed a room to a successor, in = this node took a room over",
      labelNames: ["direction"] as const,
      registers,
    });
    for (const direction of ["in", "out"] as const) this.handovers.inc({ direction }, 0);
  }

  countRejection(reason: RejectReason): void {
    this.rejected.inc({ reason });
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
  }

  /** Room records refused for `reason` so far (tests, status). */
  rejectedCount(reason: RejectReason): number {
    return this.counts.get(reason) ?? 0;
  }

  dispose(): void {
    if (!this.registry) return;
    for (const m of [this.rejected, this.claimsLost, this.redirects, this.handovers]) {
      const name = (m as unknown as { name: string }).name;
      if (this.registry.getSingleMetric(name) === m) this.registry.removeSingleMetric(name);
    }
  }
}
