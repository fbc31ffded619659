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

/** How long the rule's first mixer waits for a record lookup before admitting a JOIN (see fastAdmitMs). */
const FAST_ADMIT_MS = 300;
/**
 * After a lost claim's MOVE, participants still here this long later did not follow it: the heartbeat looks
 * the room up again and moves them to its current host (a MOVE is followed within about a second).
 */
export const LOST_MOVE_RETRY_MS = 4_000;
/** A drain that found no successor looks again after this, doubling up to 8× (until the drain timeout). */
export const HANDOVER_RETRY_MS = 250;
/** How long a drain waits on one source of successors before going on without it. */
const POOL_SOURCE_MS = 2_000;

/** `p`, or `fallback` when it rejects or takes longer than `ms`. */
function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.catch(() => fallback),
    new Promise<T>((res) => {
      timer = setTimeout(() => res(fallback), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

type Candidate = PlacementCandidate & { listen_addr: string[] };

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
  /**
   * Mixers seen by recent discoveries (not only the last): a drain whose current list has no eligible
   * successor (a busy machine's walk found part of the region) picks from these rather than send no MOVE.
   */
  recentCandidates?(): (PlacementCandidate & { listen_addr: string[] })[];
  /**
   * Every mixer this node knows to be live right now, for a drain's successor, without a DHT walk: the
   * peers it is connected to that serve a fresh advertisement (their own word on draining), then the last
   * list and recent walks. A walk made during the drain may find none of them on a busy machine.
   */
  knownMixers?(): Promise<(PlacementCandidate & { listen_addr: string[] })[]>;
  /** A fresh discovery (bounded): a drain that found no successor waits on it before it looks again. */
  refreshCandidates?(): Promise<void>;
  /** whether a peer answers (ping, bounded): a record whose host does not is treated as dead */
  isAlive(peer: string, addrs: string[]): Promise<boolean>;
  /**
   * Whether `peer` is a mixer of this region (a live signed advertisement with the `mixer` capability; the
   * wiring may refresh its list once for an unknown peer). A room record or a move token naming a host that
   * is not one is not obeyed. Default: listed in `candidates()`.
   */
  isMixer?(peer: string): Promise<boolean>;
  /**
   * The rule's first mixer admits a JOIN of a room it knows nothing of once the record lookup has taken this
   * long (default 300 ms), and confirms behind: a live record of another host found later moves the room
   * there (as a lost claim does). A new room has no record to find; waiting out the lookup's bound made the
   * join of a new room take seconds.
   */
  fastAdmitMs?: number;
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
  /** claims being published (a fast admit confirms once its claim is out) */
  private readonly claimed = new Map<string, Promise<void>>();
  private readonly metrics: RoomHostMetrics;
  private readonly log: Logger;
  private readonly now: () => number;
  private members?: RoomMembers;

  constructor(private readonly opts: RoomHostOptions) {
    this.log = opts.logger.child({ component: "room-host" });
    this.now = opts.now ?? Date.now;
    this.metrics = {
      claims: counter(
        opts.registry,
        "agora_rooms_host_claims_total",
        "Room claims by this node, by result (claimed, taken_over a dead host's room, taken_over_not_mixer a record naming a peer that is no mixer of the region, lost)",
        ["result"],
      ),
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
    if (h?.leaving) {
      // The room may come back: we handed it to X, X now drains and the rule picks us again. X's genuine
      // token with a newer epoch than our handover's makes us the host again; without this check the stale
      // `leaving` mark (our moved participants' old sessions are still closing) REDIRECTed the MOVEd
      // participants back to X, which redirected them here: a drain in which nobody moved.
      if (moveToken) {
        const back = await this.checkToken(room, participantPeer, moveToken, h);
        if (back) return back;
      }
      return this.redirectTo(h.leaving.to, h.leaving.epoch, room);
    }
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

  private isMixer(peer: string): Promise<boolean> {
    if (this.opts.isMixer) return this.opts.isMixer(peer).catch(() => false);
    return this.opts
      .candidates()
      .then((cs) => cs.some((c) => c.peer_id === peer && c.capabilities.includes("mixer")))
      .catch(() => false);
  }

  /**
   * `stale`: our entry for a room we handed over; the token must then come from the host we handed it to,
   * with a newer epoch than that handover's.
   */
  private async checkToken(
    room: string,
    participantPeer: string,
    token: Uint8Array,
    stale?: HostedRoom,
  ): Promise<JoinDecision | undefined> {
    const v = await verifyMoveToken(token, { room, successor: this.opts.selfPeerId, participant: participantPeer, nowMs: this.now() });
    if (!v.ok) {
      this.countToken(v.reason);
      this.log.info({ room, peer: participantPeer, reason: v.reason }, `move token refused: ${v.message}`);
      return undefined;
    }
    if (stale?.leaving && (v.claims.issuer !== stale.leaving.to || v.claims.epoch <= stale.leaving.epoch)) {
      this.countToken("not_host");
      this.log.info({ room, issuer: v.claims.issuer, to: stale.leaving.to }, "move token for a room we handed to another host: refused");
      return undefined;
    }
    // The token is genuine; is its issuer the room's host? The record says so (active, or handing over to
    // us). While the issuer's record is not visible here yet, its own signed word that we are the successor
    // is accepted only if nobody else holds a live record with a higher epoch.
    const rec = await this.opts.directory.resolve(room, { quick: true }).catch(() => undefined);
    // Without a visible record the issuer's word is taken only if it is a mixer of the region: any peer can
    // sign a token naming itself as issuer, and would otherwise make this node host (and claim, at the
    // token's epoch) any room whose record a lookup did not find in time.
    // A record naming the issuer counts only if the issuer is a mixer too (a record is self-signed).
    const issuerHosts =
      rec === undefined
        ? await this.isMixer(v.claims.issuer)
        : (rec.host === v.claims.issuer && rec.epoch <= v.claims.epoch && (await this.isMixer(v.claims.issuer))) ||
          (rec.host === this.opts.selfPeerId && rec.epoch >= v.claims.epoch - 1) ||
          // A lookup that found the host before the issuer (its handing-over record naming the issuer as
          // successor, an older epoch): the room went on to the issuer, whose claim is not visible here yet.
          (rec.status === "handing-over" &&
            rec.successor === v.claims.issuer &&
            rec.epoch < v.claims.epoch &&
            (await this.isMixer(v.claims.issuer)));
    if (!issuerHosts) {
      this.countToken("not_host");
      this.log.info({ room, issuer: v.claims.issuer, host: rec?.host }, "move token issued by a peer that is not the room's host");
      return undefined;
    }
    this.countToken("accepted");
    const epoch = Math.max(v.claims.epoch, rec?.epoch ?? 0);
    const prior = this.hosted.get(room);
    if (!prior || prior.leaving) {
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
    const self = this.opts.selfPeerId;
    const lookup = this.opts.directory.resolve(room, { quick: true }).then(
      (rec) => ({ rec }),
      (err) => {
        this.log.warn({ room, err: errorMessage(err) }, "room directory unreachable; serving the room here");
        return { rec: undefined as RoomHostRecord | undefined };
      },
    );
    // The rule's first mixer need not wait for a lookup that a new room answers only at its bound.
    const ruleFirst = await this.isRuleFirst(room);
    const fast = ruleFirst
      ? await Promise.race([lookup, new Promise<undefined>((res) => setTimeout(res, this.opts.fastAdmitMs ?? FAST_ADMIT_MS))])
      : await lookup;
    if (fast === undefined) {
      const d = this.claimHere(room, undefined);
      void (async () => {
        await this.confirmFastClaim(room, (await lookup).rec);
        // Two mixers whose mixer lists differ may both take themselves for the rule's first and admit at
        // once: once our claim is out, one look at the winning record settles it (the loser moves its
        // participants now, not a heartbeat later).
        await this.claimed.get(room);
        await new Promise((res) => setTimeout(res, this.opts.fastAdmitMs ?? FAST_ADMIT_MS));
        await this.reconcileRoom(room);
      })().catch((err) => this.log.debug({ room, err: errorMessage(err) }, "fast claim confirmation failed"));
      return d;
    }
    const rec = fast.rec;
    if (rec && rec.host !== self) {
      const toUs = rec.status === "handing-over" && rec.successor === self;
      if (!toUs) {
        if (await this.obeys(room, rec)) return { kind: "redirect", hostPeerId: rec.host, addrs: rec.addrs, epoch: rec.epoch };
      }
    }
    return this.claimHere(room, rec);
  }

  private async isRuleFirst(room: string): Promise<boolean> {
    const cands = await this.opts.candidates().catch(() => []);
    return rankPlacement(room, this.opts.region, cands)[0]?.peer_id === this.opts.selfPeerId;
  }

  /** Whether a record of another host is to be obeyed: its host answers and is a mixer of the region. */
  private async obeys(room: string, rec: RoomHostRecord): Promise<boolean> {
    if (!(await this.opts.isAlive(rec.host, rec.addrs).catch(() => false))) {
      this.log.info({ room, host: rec.host, epoch: rec.epoch }, "room's recorded host does not answer; claiming it");
      return false;
    }
    if (!(await this.isMixer(rec.host))) {
      this.metrics.claims.inc({ result: "taken_over_not_mixer" });
      this.log.warn(
        { room, host: rec.host, epoch: rec.epoch },
        "room record names a peer that is no mixer of the region: not obeyed, claiming the room",
      );
      return false;
    }
    return true;
  }

  private claimHere(room: string, rec: RoomHostRecord | undefined): JoinDecision {
    const self = this.opts.selfPeerId;
    const epoch = rec ? (rec.host === self ? rec.epoch : rec.epoch + 1) : 1;
    const existing = this.hosted.get(room);
    if (existing && !existing.leaving) return { kind: "admit", epoch: existing.epoch };
    this.hosted.set(room, { epoch });
    this.metrics.claims.inc({ result: rec && rec.host !== self ? "taken_over" : "claimed" });
    this.log.info({ room, epoch, previous: rec?.host }, "room claimed");
    const put = this.publishClaim(room, epoch);
    this.claimed.set(room, put);
    void put.finally(() => {
      if (this.claimed.get(room) === put) this.claimed.delete(room);
    });
    return { kind: "admit", epoch };
  }

  /**
   * A fast-admitted room's lookup came back: a live record of another host with a newer epoch than our
   * claim means the room lives there (we were the rule's first, but it was placed while we were away):
   * our participants move there, as on a lost claim. Equal epochs are the directory selector's to settle
   * (the claim's put and the heartbeat's reconcile).
   */
  private async confirmFastClaim(room: string, rec: RoomHostRecord | undefined): Promise<void> {
    const h = this.hosted.get(room);
    if (!rec || !h || h.leaving || rec.host === this.opts.selfPeerId || rec.epoch <= h.epoch) return;
    if (rec.status === "handing-over" && rec.successor === this.opts.selfPeerId) return;
    if (!(await this.obeys(room, rec))) {
      h.epoch = Math.max(h.epoch, rec.epoch + 1);
      void this.publishClaim(room, h.epoch);
      return;
    }
    this.moveToWinner(room, rec);
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
   * Mixers a drain may hand a room to, freshest knowledge first (rankPlacement keeps a peer's first entry):
   * the live ones this node knows without a walk (knownMixers: their own current word), the current list,
   * recent walks. A peer whose own fresh advertisement says draining is left out whatever an older list says.
   */
  private async successorPool(): Promise<Candidate[]> {
    const started = this.now();
    // Each source is bounded here too: on a starved node a lookup's own timers fire late, and the drain's
    // first MOVE must not wait on the slowest source (the next try asks again).
    const [known, listed] = await Promise.all([
      this.opts.knownMixers ? within(this.opts.knownMixers(), POOL_SOURCE_MS, []) : [],
      within(this.opts.candidates(), POOL_SOURCE_MS, []),
    ]);
    const recent = this.opts.recentCandidates?.() ?? [];
    const heard = new Set(known.map((c) => c.peer_id));
    const pool = [...known, ...[...listed, ...recent].filter((c) => !heard.has(c.peer_id))];
    this.log.info(
      { known: known.length, listed: listed.length, recent: recent.length, ms: Math.round(this.now() - started) },
      "successor candidates for the handover",
    );
    return pool;
  }

  /**
   * Drain: every hosted room goes to the successor the placement rule picks without this node: record
   * `handing-over`, then MOVE with a token to each participant. The successor comes from every mixer this
   * node knows to be live (successorPool), looked up at once; a room with none is looked up again (a fresh
   * discovery between tries, backing off) until `deadlineMs` (the drain timeout, on this host's clock) or
   * `signal` (the drain was cancelled). Rooms still without one stay (their participants are disconnected
   * when the node stops). Returns the rooms handed over.
   */
  async handOverAll(o: { deadlineMs?: number; signal?: AbortSignal } = {}): Promise<string[]> {
    const moved: string[] = [];
    let rooms = [...this.hosted].filter(([, h]) => !h.leaving).map(([room]) => room);
    for (let attempt = 0; rooms.length > 0; attempt++) {
      const pool = await this.successorPool();
      const left: string[] = [];
      await Promise.all(
        rooms.map(async (room) => {
          if (await this.handOverRoom(room, pool)) moved.push(room);
          else if (this.hosted.get(room) && !this.hosted.get(room)?.leaving) left.push(room);
        }),
      );
      rooms = left;
      if (rooms.length === 0 || o.signal?.aborted) break;
      const wait = Math.min(HANDOVER_RETRY_MS * 2 ** Math.min(attempt, 3), (o.deadlineMs ?? 0) - this.now());
      if (wait <= 0) break;
      this.log.warn({ rooms, attempt: attempt + 1 }, "no successor mixer for the room yet; looking again");
      await Promise.all([
        this.opts.refreshCandidates?.().catch(() => undefined),
        new Promise<void>((res) => {
          const t = setTimeout(res, wait);
          o.signal?.addEventListener(
            "abort",
            () => {
              clearTimeout(t);
              res();
            },
            { once: true },
          );
        }),
      ]);
      if (o.signal?.aborted) break;
    }
    for (const room of rooms) this.log.warn({ room }, "no successor mixer for the room; its participants stay until the node stops");
    return moved;
  }

  /**
   * Hands one room to the best successor in `pool`; false when there is none. A list entry is not pinged
   * first: on a starved node (bench/rooms at load 45) the pings timed out for one live mixer after another,
   * and the drain took 9 s to find one; the list is a heartbeat's discovery old, which pinged each.
   */
  private async handOverRoom(room: string, pool: Candidate[]): Promise<boolean> {
    const h = this.hosted.get(room);
    if (!h || h.leaving) return false;
    const succ = rankPlacement(room, this.opts.region, pool, [this.opts.selfPeerId])[0];
    if (!succ) return false;
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
    return true;
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
    void this.obeys(room, winner).then((ok) => {
      if (ok) this.moveToWinner(room, winner);
      else if (!h.leaving) {
        h.epoch = Math.max(h.epoch, winner.epoch + 1);
        void this.publishClaim(room, h.epoch);
      }
    });
  }

  private moveToWinner(room: string, winner: RoomHostRecord): void {
    const h = this.hosted.get(room);
    if (!h || h.leaving) return;
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
    for (const room of [...this.hosted.keys()]) await this.reconcileRoom(room);
  }

  private async reconcileRoom(room: string): Promise<void> {
    const self = this.opts.selfPeerId;
    const h = this.hosted.get(room);
    if (!h) return;
    if (h.leaving) {
      // A lost claim's participants that are still here after a while could not follow the MOVE (the
      // winner had moved on and REDIRECTed them, a redirect their record did not confirm): without this
      // they stayed on a host that no longer reconciles, a split for good. The room is looked up afresh
      // and they are moved to whoever holds it now. (A drain's handover is not retried: it ends anyway.)
      if (!h.leaving.lost || this.now() - h.leaving.lost.at < LOST_MOVE_RETRY_MS) return;
      this.log.info({ room, to: h.leaving.to }, "participants still here after the lost claim's MOVE; moving them again");
      h.leaving = undefined;
    }
    let rec: RoomHostRecord | undefined;
    try {
      rec = await this.opts.directory.resolve(room);
    } catch {
      return;
    }
    if (h.leaving || this.hosted.get(room) !== h) return;
    if (!rec || rec.host === self) {
      if (!rec || rec.epoch < h.epoch) void this.publishClaim(room, h.epoch);
      return;
    }
    if (rec.status === "handing-over" && rec.successor === self) return;
    if (!(await this.obeys(room, rec))) {
      // Our claim lost to a host that is gone (or is no mixer): take the room over with a higher epoch.
      h.epoch = Math.max(h.epoch, rec.epoch + 1);
      void this.publishClaim(room, h.epoch);
      return;
    }
    if (h.leaving) return;
    this.metrics.claims.inc({ result: "lost" });
    this.log.warn({ room, winner: rec.host, epoch: rec.epoch, ours: h.epoch }, "another live host won the room; moving participants");
    h.leaving = { to: rec.host, epoch: rec.epoch, lost: { at: this.now() } };
    await this.moveRoom(room, rec.host, rec.addrs, rec.epoch, MoveReason.CLAIM_LOST);
    this.opts.directory.countHandover?.(room, "out");
  }
}
