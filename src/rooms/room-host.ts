/**
 * RoomHost: this mixer's side of the room directory (protocol.md, "Room placement"). It decides, for each
 * JOIN of a directory-aware client, whether this node serves the room (claiming it in the directory when no
 * live host has it) or REDIRECTs to the live host; on drain it hands each hosted room to the successor the
 * placement rule picks without this node (record `handing-over`, MOVE with a signed token to everyone); on
 * its heartbeat it re-resolves its rooms, and when a competing live record wins (concurrent first claims, a
 * healed partition) it MOVEs its participants to the winner.
 *
 * The directory itself (record codec, signing, DHT put/get, heartbeat republish) is the RoomDirectory port;
 * this class only applies the placement policy on top of it.
 */
import type { PrivateKey } from "@libp2p/interface";
import { Counter, type Registry } from "prom-client";
import { errorMessage } from "../errors";
import type { Logger } from "../log";
import { MoveReason, type PlacementCandidate, rankPlacement } from "../protocol";
import { MOVE_TOKEN_TTL_MS, type MoveTokenAccess, type MoveTokenRejection, signMoveToken, verifyMoveToken } from "./move-token";

/**
 * After a lost claim's MOVE, participants still here this long later did not follow it: the heartbeat looks
 * the room up again and moves them to its current host (a MOVE is followed within about a second).
 */
export const LOST_MOVE_RETRY_MS = 4_000;

/** A verified, live room record as the directory resolved it. */
export interface RoomHostRecord {
  room: string;
  region: string;
  /** hosting mixer's peer id (the record's signer) */
  host: string;
  /** its multiaddrs (text) */
  addrs: string[];
  epoch: number;
  status: "active" | "handing-over";
  successor?: string;
}

/** What RoomHost needs from the room directory (src/p2p RoomDirectory through the runtime; in-memory in tests). */
export interface RoomDirectoryPort {
  /**
   * The winning live record of `room` by the record selector, or undefined. `quick`: a JOIN waits on it, so
   * the first valid answer will do (the heartbeat's reconcile asks for more and corrects a wrong choice).
   */
  resolve(room: string, opts?: { quick?: boolean }): Promise<RoomHostRecord | undefined>;
  /** Publishes this node as the room's host (`active`) with `epoch`; the directory keeps republishing it. */
  claim(room: string, epoch: number, participants: number): Promise<void>;
  /** Publishes the record `handing-over` to `successor` with `epoch`. */
  handOver(room: string, epoch: number, successor: string, participants: number): Promise<void>;
  /** Stops publishing the room (it emptied or moved). */
  release(room: string): Promise<void>;
  /** Counters kept by the directory (agora_rooms_redirects_total, agora_rooms_handovers_total{direction}). */
  countRedirect?(): void;
  countHandover?(room: string, direction: "in" | "out"): void;
}

/** What RoomHost needs from the audio service: the rooms it serves and a way to tell their participants. */
export interface RoomMembers {
  /** Rooms with directory-aware participants joined here, with their count. */
  hostedRooms(): Map<string, number>;
  /**
   * Sends MOVE to every directory-aware participant of `room`; `token(peer, access)` signs one per
   * participant, with its access state beyond its grant in owned rooms (version 2 tokens).
   */
  move(
    room: string,
    target: { successorPeerId: string; addrs: string[]; epoch: number; reason: number },
    token: (participantPeer: string, access?: MoveTokenAccess) => Promise<Uint8Array>,
  ): Promise<number>;
}

export interface RoomHostOptions {
  directory: RoomDirectoryPort;
  selfPeerId: string;
  privateKey: PrivateKey;
  region: string;
  /** this node's dialable addresses (text multiaddrs without /p2p/) */
  selfAddrs(): string[];
  /** the region's mixers from discovered signed advertisements (live ones; this node may be among them) */
  candidates(): Promise<(PlacementCandidate & { listen_addr: string[] })[]>;
  /** whether a peer answers (ping, bounded): a record whose host does not is treated as dead */
  isAlive(peer: string, addrs: string[]): Promise<boolean>;
  registry: Registry;
  logger: Logger;
  now?: () => number;
}

/** `carried`: the access state a verified version 2 move token carried for this participant. */
export type JoinDecision =
  | { kind: "admit"; epoch: number; carried?: MoveTokenAccess }
  | { kind: "redirect"; hostPeerId: string; addrs: string[]; epoch: number };

interface HostedRoom {
  epoch: number;
  /** set once the room is being handed over or moved away: no second hand-over, no re-claim */
  leaving?: { to: string; epoch: number; lost?: { at: number } };
  /** the old host that handed the room to us with move tokens (later tokens from it still carry access) */
  from?: string;
}

interface RoomHostMetrics {
  claims: Counter<"result">;
  moveTokens: Counter<"result">;
}

function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[] = []): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: [registry] });
}

export class RoomHost {
  private readonly hosted = new Map<string, HostedRoom>();
  /** in-flight decisions per room: concurrent JOINs of one room share one resolve/claim */
  private readonly pending = new Map<string, Promise<JoinDecision>>();
  private readonly metrics: RoomHostMetrics;
  private readonly log: Logger;
  private readonly now: () => number;
  private members?: RoomMembers;

  constructor(private readonly opts: RoomHostOptions) {
    this.log = opts.logger.child({ component: "room-host" });
    this.now = opts.now ?? Date.now;
    this.metrics = {
      claims: counter(opts.registry, "agora_rooms_host_claims_total", "Room claims by this node, by result (claimed, taken_over, lost)", [
        "result",
      ]),
      moveTokens: counter(
        opts.registry,
        "agora_rooms_move_tokens_total",
        "Move tokens presented in JOIN, by result (accepted or why not)",
        ["result"],
      ),
    };
  }

  bind(members: RoomMembers): void {
    this.members = members;
  }

  /** Rooms this node hosts in the directory, with their epoch. */
  rooms(): { room: string; epoch: number; leaving?: string }[] {
    return [...this.hosted].map(([room, h]) => ({ room, epoch: h.epoch, ...(h.leaving ? { leaving: h.leaving.to } : {}) }));
  }

  epochOf(room: string): number | undefined {
    return this.hosted.get(room)?.epoch;
  }

  /**
   * Decides a JOIN of a directory-aware client. Never throws: a directory that cannot be reached admits the
   * participant here (serving beats refusing; the heartbeat's reconcile moves the room if it turns out to
   * live elsewhere).
   */
  async decide(room: string, participantPeer: string, moveToken?: Uint8Array): Promise<JoinDecision> {
    const h = this.hosted.get(room);
    if (h && !h.leaving) {
      // Already ours (an earlier moved participant made it so): a later participant's token from the same
      // old host still carries its access state.
      if (moveToken && h.from) {
        const v = await verifyMoveToken(moveToken, {
          room,
          successor: this.opts.selfPeerId,
          participant: participantPeer,
          nowMs: this.now(),
        });
        // Counted like the first token, so every moved participant's token shows in the metric.
        this.countToken(!v.ok ? v.reason : v.claims.issuer === h.from ? "accepted" : "not_host");
        if (v.ok && v.claims.issuer === h.from && v.claims.access) return { kind: "admit", epoch: h.epoch, carried: v.claims.access };
      }
      return { kind: "admit", epoch: h.epoch };
    }
    if (h?.leaving) return this.redirectTo(h.leaving.to, h.leaving.epoch, room);
    if (moveToken) {
      const verdict = await this.checkToken(room, participantPeer, moveToken);
      if (verdict) return verdict;
    }
    let p = this.pending.get(room);
    if (!p) {
      p = this.resolveOrClaim(room).finally(() => this.pending.delete(room));
      this.pending.set(room, p);
    }
    return p;
  }

  private async redirectTo(peer: string, epoch: number, room: string): Promise<JoinDecision> {
    const cands = await this.opts.candidates().catch(() => []);
    const addrs = cands.find((c) => c.peer_id === peer)?.listen_addr ?? [];
    this.log.debug({ room, host: peer }, "JOIN redirected to the room's successor");
    return { kind: "redirect", hostPeerId: peer, addrs, epoch };
  }

  private async checkToken(room: string, participantPeer: string, token: Uint8Array): Promise<JoinDecision | undefined> {
    const v = await verifyMoveToken(token, { room, successor: this.opts.selfPeerId, participant: participantPeer, nowMs: this.now() });
    if (!v.ok) {
      this.countToken(v.reason);
      this.log.info({ room, peer: participantPeer, reason: v.reason }, `move token refused: ${v.message}`);
      return undefined;
    }
    // The token is genuine; is its issuer the room's host? The record says so (active, or handing over to
    // us). While the issuer's record is not visible here yet, its own signed word that we are the successor
    // is accepted only if nobody else holds a live record with a higher epoch.
    const rec = await this.opts.directory.resolve(room, { quick: true }).catch(() => undefined);
    const issuerHosts =
      rec === undefined ||
      (rec.host === v.claims.issuer && rec.epoch <= v.claims.epoch) ||
      (rec.host === this.opts.selfPeerId && rec.epoch >= v.claims.epoch - 1);
    if (!issuerHosts) {
      this.countToken("not_host");
      this.log.info({ room, issuer: v.claims.issuer, host: rec?.host }, "move token issued by a peer that is not the room's host");
      return undefined;
    }
    this.countToken("accepted");
    const epoch = Math.max(v.claims.epoch, rec?.epoch ?? 0);
    if (!this.hosted.has(room)) {
      this.hosted.set(room, { epoch, from: v.claims.issuer });
      this.opts.directory.countHandover?.(room, "in");
      this.log.info({ room, epoch, from: v.claims.issuer }, "room handed over to this node");
      void this.publishClaim(room, epoch);
    }
    return { kind: "admit", epoch, ...(v.claims.access ? { carried: v.claims.access } : {}) };
  }

  /** The audio service answered a JOIN with REDIRECT. */
  redirected(): void {
    this.opts.directory.countRedirect?.();
  }

  private countToken(result: MoveTokenRejection | "accepted"): void {
    this.metrics.moveTokens.inc({ result });
  }

  private async resolveOrClaim(room: string): Promise<JoinDecision> {
    let rec: RoomHostRecord | undefined;
    try {
      rec = await this.opts.directory.resolve(room, { quick: true });
    } catch (err) {
      this.log.warn({ room, err: errorMessage(err) }, "room directory unreachable; serving the room here");
    }
    const self = this.opts.selfPeerId;
    if (rec && rec.host !== self) {
      const toUs = rec.status === "handing-over" && rec.successor === self;
      if (!toUs) {
        if (await this.opts.isAlive(rec.host, rec.addrs).catch(() => false)) {
          return { kind: "redirect", hostPeerId: rec.host, addrs: rec.addrs, epoch: rec.epoch };
        }
        this.log.info({ room, host: rec.host, epoch: rec.epoch }, "room's recorded host does not answer; claiming it");
      }
    }
    const epoch = rec ? (rec.host === self ? rec.epoch : rec.epoch + 1) : 1;
    const existing = this.hosted.get(room);
    if (existing) return { kind: "admit", epoch: existing.epoch };
    this.hosted.set(room, { epoch });
    this.metrics.claims.inc({ result: rec && rec.host !== self ? "taken_over" : "claimed" });
    this.log.info({ room, epoch, previous: rec?.host }, "room claimed");
    void this.publishClaim(room, epoch);
    return { kind: "admit", epoch };
  }

  private async publishClaim(room: string, epoch: number): Promise<void> {
    try {
      await this.opts.directory.claim(room, epoch, this.members?.hostedRooms().get(room) ?? 0);
    } catch (err) {
      this.log.warn({ room, err: errorMessage(err) }, "could not publish room claim (the heartbeat retries)");
    }
  }

  /** The room's last directory-aware participant left: stop publishing it. */
  roomEmptied(room: string): void {
    const h = this.hosted.get(room);
    if (!h) return;
    this.hosted.delete(room);
    void this.opts.directory.release(room).catch((err) => this.log.debug({ room, err: errorMessage(err) }, "room release failed"));
  }

  /**
   * Drain: every hosted room goes to the successor the placement rule picks without this node: record
   * `handing-over`, then MOVE with a token to each participant. Rooms without an eligible successor stay
   * (their participants are disconnected when the node stops). Returns the rooms handed over.
   */
  async handOverAll(): Promise<string[]> {
    const cands = await this.opts.candidates().catch((err) => {
      this.log.warn({ err: errorMessage(err) }, "no mixers discovered for the handover");
      return [];
    });
    const moved: string[] = [];
    await Promise.all(
      [...this.hosted].map(async ([room, h]) => {
        if (h.leaving) return;
        const [succ] = rankPlacement(room, this.opts.region, cands, [this.opts.selfPeerId]);
        if (!succ) {
          this.log.warn({ room }, "no successor mixer for the room; its participants stay until the node stops");
          return;
        }
        // The record says handing-over at the current epoch; the successor claims epoch + 1 (the MOVE and the
        // token carry it). Equal epochs of two hosts are decided by the tie-break, which could prefer the old
        // host's handing-over record over the successor's claim: one epoch apart, the successor always wins.
        const epoch = h.epoch + 1;
        h.leaving = { to: succ.peer_id, epoch };
        const participants = this.members?.hostedRooms().get(room) ?? 0;
        // Published beside the MOVEs, not before them: the tokens prove the handover to the successor, and
        // a DHT put can take a while on a busy network.
        void this.opts.directory
          .handOver(room, h.epoch, succ.peer_id, participants)
          .catch((err) => this.log.warn({ room, err: errorMessage(err) }, "could not publish the handing-over record"));
        await this.moveRoom(room, succ.peer_id, succ.listen_addr, epoch, MoveReason.DRAIN);
        this.opts.directory.countHandover?.(room, "out");
        moved.push(room);
      }),
    );
    return moved;
  }

  private async moveRoom(room: string, to: string, addrs: string[], epoch: number, reason: number): Promise<number> {
    if (!this.members) return 0;
    const issuer = this.opts.selfPeerId;
    const n = await this.members.move(room, { successorPeerId: to, addrs, epoch, reason }, (participant, access) =>
      signMoveToken(this.opts.privateKey, {
        room,
        epoch,
        issuer,
        successor: to,
        participant,
        expiresAtMs: this.now() + MOVE_TOKEN_TTL_MS,
        ...(access ? { access } : {}),
      }),
    );
    this.log.info({ room, to, epoch, participants: n, reason }, "room moved");
    return n;
  }

  /** The directory found a better live claim than ours (its put was refused): move our participants there. */
  claimLost(room: string, winner: RoomHostRecord): void {
    const h = this.hosted.get(room);
    if (!h || h.leaving || winner.host === this.opts.selfPeerId) return;
    this.metrics.claims.inc({ result: "lost" });
    this.log.warn({ room, winner: winner.host, epoch: winner.epoch }, "room claim lost; moving participants to the winner");
    h.leaving = { to: winner.host, epoch: winner.epoch, lost: { at: this.now() } };
    void this.moveRoom(room, winner.host, winner.addrs, winner.epoch, MoveReason.CLAIM_LOST).then(() =>
      this.opts.directory.countHandover?.(room, "out"),
    );
  }

  /**
   * Heartbeat: re-resolve every hosted room. When the winning record names another live host (a concurrent
   * claim or the other side of a healed partition won by the selector's rule), move our participants there.
   * When our record is missing or outdated, claim again.
   */
  async reconcile(): Promise<void> {
    const self = this.opts.selfPeerId;
    for (const [room, h] of [...this.hosted]) {
      if (h.leaving) {
        // A lost claim's participants that are still here after a while could not follow the MOVE (the
        // winner had moved on and REDIRECTed them, a redirect their record did not confirm): without this
        // they stayed on a host that no longer reconciles, a split for good. The room is looked up afresh
        // and they are moved to whoever holds it now. (A drain's handover is not retried: it ends anyway.)
        if (!h.leaving.lost || this.now() - h.leaving.lost.at < LOST_MOVE_RETRY_MS) continue;
        this.log.info({ room, to: h.leaving.to }, "participants still here after the lost claim's MOVE; moving them again");
        h.leaving = undefined;
      }
      let rec: RoomHostRecord | undefined;
      try {
        rec = await this.opts.directory.resolve(room);
      } catch {
        continue;
      }
      if (!rec || rec.host === self) {
        if (!rec || rec.epoch < h.epoch) void this.publishClaim(room, h.epoch);
        continue;
      }
      if (rec.status === "handing-over" && rec.successor === self) continue;
      if (!(await this.opts.isAlive(rec.host, rec.addrs).catch(() => false))) {
        // Our claim lost to a host that is gone: take the room over with a higher epoch.
        h.epoch = Math.max(h.epoch, rec.epoch + 1);
        void this.publishClaim(room, h.epoch);
        continue;
      }
      this.metrics.claims.inc({ result: "lost" });
      this.log.warn({ room, winner: rec.host, epoch: rec.epoch, ours: h.epoch }, "another live host won the room; moving participants");
      h.leaving = { to: rec.host, epoch: rec.epoch, lost: { at: this.now() } };
      await this.moveRoom(room, rec.host, rec.addrs, rec.epoch, MoveReason.CLAIM_LOST);
      this.opts.directory.countHandover?.(room, "out");
    }
  }
}
