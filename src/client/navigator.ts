/**
 * RoomNavigator: join a room by name and stay with it (protocol.md, "Room placement"). It finds the room's
 * host (its live record, or the placement rule over the region's mixers), opens the session announcing
 * Capability.ROOM_DIRECTORY, follows REDIRECTs that a verified record confirms (bounded hops), and on a MOVE
 * from its host opens the session on the successor BEFORE leaving the old one (make-before-break), so the
 * audio gap is one switch, not a reconnect. When the host vanishes, `hostLost()` excludes it and the next
 * `open()` computes the same successor every other participant computes.
 *
 * It takes a RoomLocator (record resolve + the region's mixers), so it needs nothing of the node: the SDK's
 * locator over the DHT lives in src/p2p and is loaded on demand.
 */
import type { Libp2p } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { type Multiaddr, multiaddr } from "@multiformats/multiaddr";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import {
  type AudioFrame,
  Capability,
  type MoveMessage,
  type PlacementCandidate,
  type RedirectMessage,
  rankPlacement,
  WireErrorCode,
} from "../protocol";
import { type Clock, realClock, type TimerHandle } from "./clock";
import { quietLogger } from "./quiet-log";
import { AudioRedirectError, AudioRemoteError, AudioSession, type AudioSessionOptions } from "./session";

/**
 * How long a join waits for the room's record before it dials the placement rule's first mixer. A live
 * record answers well within it (its first copy, quorum 1; or the locator's cache); a new room's lookup
 * answers only when its walk ends (100–300 ms on a 10-node loopback network), and the rule's first mixer does
 * the same lookup itself before it admits (and REDIRECTs when the room lives elsewhere), so waiting longer
 * here only put the two lookups one after the other. A wrong guess costs one REDIRECT.
 */
export const RESOLVE_HEAD_START_MS = 50;
/**
 * While a MOVE is followed, the old host's frames count as still flowing when the last came this recently
 * (two frame times); the switch to the successor then happens at its next frame.
 */
const SWITCH_FLOWING_MS = 40;
/** The switch happens at the successor's third frame at the latest (the old host may have stopped for good). */
const SWITCH_WAIT_FRAMES = 3;
/** Re-placements after refused REDIRECTs (each leaves the mixers that sent them out). */
const MAX_REFUSAL_RETRIES = 2;
/** Record hosts that refused the dial (gone since the record was read) before the join gives up. */
const MAX_GONE_HOST_RETRIES = 2;

/** A REDIRECT refused (unconfirmed, for another room, a loop): `peers` are the mixers that sent them. */
export class PlacementRefusedError extends AgoraError {
  constructor(
    message: string,
    readonly peers: string[],
  ) {
    super("P2P", message);
    this.name = "PlacementRefusedError";
  }
}

/** A live room record as a client sees it (verified by the locator). */
export interface LocatedRoom {
  host: string;
  addrs: string[];
  epoch: number;
  status?: "active" | "handing-over";
  successor?: string;
}

export interface MixerCandidate extends PlacementCandidate {
  listen_addr: string[];
}

/** Where rooms and mixers are found: the DHT through a node of the network (src/p2p), or a fake in tests. */
export interface RoomLocator {
  /**
   * The room's live, verified record, or undefined when it has none. `fresh`: not from a cache of recent
   * answers (a REDIRECT's confirmation looks for a record newer than the one this client went by).
   */
  resolve(room: string, opts?: { fresh?: boolean }): Promise<LocatedRoom | undefined>;
  /** The live mixers of `region` (or of every region, when undefined) from verified advertisements. */
  mixers(region: string | undefined): Promise<MixerCandidate[]>;
}

export interface RoomNavigatorOptions {
  libp2p: Libp2p;
  room: string;
  locator: RoomLocator;
  /** the room's region; default: the region of the first mixer the locator returns (sorted by peer id) */
  region?: string;
  /** REDIRECTs followed per join before it is taken for a loop (default 4) */
  maxHops?: number;
  /** how long a mixer the placement rule chose may take to answer (default PLACEMENT_DIAL_TIMEOUT_MS) */
  probeTimeoutMs?: number;
  logger?: Logger;
  clock?: Clock;
}

/** `capabilities` are announced besides ROOM_DIRECTORY, which a navigated session always announces. */
export type NavigatedSessionOptions = Omit<AudioSessionOptions, "libp2p" | "target" | "room" | "moveToken" | "onControl" | "onOpenPhase">;

export interface NavigatorStats {
  redirectsFollowed: number;
  /** REDIRECTs not confirmed by a verified record, or for another room */
  redirectsRefused: number;
  /** joins given up after maxHops REDIRECTs */
  redirectLoops: number;
  movesFollowed: number;
  /** MOVEs not from the current host's session, for another room, or repeated */
  movesRefused: number;
  /** MOVEs accepted whose successor could not be joined (the session stayed on the old host) */
  movesFailed: number;
  /** why the last failed MOVE failed */
  lastMoveError?: string;
  /** per followed MOVE: ms between the last frame of the old session and the first of the new one */
  moveGapsMs: number[];
  /**
   * per followed MOVE, its phases (clock ms): MOVE received → JOINED by the successor (`joinMs`), JOINED →
   * its first frame (`firstFrameMs`, the 1 s fallback when none came), and the gap as in moveGapsMs
   */
  movePhasesMs: { joinMs: number; firstFrameMs: number; gapMs: number }[];
  /** mixers the placement rule chose that did not answer a dial: skipped for the next one by the rule */
  unreachableSkipped: number;
  /** where the time of the last successful open() went */
  lastOpen?: OpenPhases;
}

/** The phases of one open() (join by name), in ms of the navigator's clock. */
export interface OpenPhases {
  /** everything: open() called to the session joined */
  totalMs: number;
  /** choosing the first mixer to dial: the record lookup (or its head start) and the mixer list */
  placeMs: number;
  /** of placeMs: waiting for the region's mixer list (0 when the navigator had one) */
  mixersMs: number;
  /** the record lookup's own time, when it answered before the choice was made */
  resolveMs?: number;
  /** how the first mixer was chosen: the room's record, the rule after the lookup's head start or its empty answer, a failover */
  placedBy: "record" | "rule" | "failover";
  /** pinging the mixers the rule chose (a dead or cut-off one is skipped) */
  probeMs: number;
  /** dials and protocol negotiations, summed over the REDIRECTs followed */
  dialMs: number;
  /** JOIN to the mixer's answer (JOINED or REDIRECT), summed */
  answerMs: number;
  /** voice datagram setup after JOINED */
  datagramsMs: number;
  /** confirming REDIRECTs (a record lookup unless the rule already names the target) */
  verifyMs: number;
  redirects: number;
  /** placements tried (a refused REDIRECT or an unreachable mixer starts another) */
  attempts: number;
}

type OpenTally = Omit<OpenPhases, "totalMs">;

/**
 * A mixer the placement rule chose must answer a dial within this, or the next one by the rule is taken: a
 * partition cuts a side's participants off from the other side's mixers, and a dial into the cut would
 * otherwise wait out the session's whole join timeout, again on every retry.
 */
export const PLACEMENT_DIAL_TIMEOUT_MS = 3_000;
/** How long a mixer that did not answer stays out of this client's placement (a partition heals). */
export const UNREACHABLE_FOR_MS = 30_000;

/** libp2p's ping service, as far as the navigator uses it. */
interface Pinger {
  ping(peer: Multiaddr | Multiaddr[], options: { signal: AbortSignal }): Promise<number>;
}

/** In-flight probes per libp2p node and peer (see RoomNavigator.answers). */
const PROBES = new WeakMap<Libp2p, Map<string, Promise<boolean>>>();

interface Current {
  session: AudioSession;
  host: string;
  /** clock time of the last frame delivered from this session */
  lastFrameAt?: number;
}

/** `/…/p2p/<peer>` appended when missing; only addresses that parse. */
export function hostTargets(peer: string, addrs: readonly string[]): Multiaddr[] {
  const out: Multiaddr[] = [];
  for (const a of addrs) {
    try {
      const ma = multiaddr(a.includes("/p2p/") ? a : `${a}/p2p/${peer}`);
      if (ma.getComponents().some((c) => c.name === "udp")) continue; // STUN endpoint, not a libp2p transport
      out.push(ma);
    } catch {
      /* skip */
    }
  }
  return out;
}

export class RoomNavigator {
  readonly stats: NavigatorStats = {
    redirectsFollowed: 0,
    redirectsRefused: 0,
    redirectLoops: 0,
    movesFollowed: 0,
    movesRefused: 0,
    movesFailed: 0,
    moveGapsMs: [],
    movePhasesMs: [],
    unreachableSkipped: 0,
  };
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly excluded = new Set<string>();
  /** mixers chosen by the rule that did not answer a dial, until when (clock time) they are left out */
  private readonly unreachable = new Map<string, number>();
  private mixersCache: MixerCandidate[] | undefined;
  private region: string | undefined;
  private current: Current | undefined;
  private moving = false;
  /**
   * While switching: the session being left. Its frames are still played until the new session's first
   * frame arrives (then it is left), so the listener hears no hole while the successor's mix starts.
   */
  private previous: { current: Current; leave: () => void; movedAt: number; joinedAt?: number; newFrames?: number } | undefined;
  private sessionOpts: (NavigatedSessionOptions & { onMoved?: (s: AudioSession) => void }) | undefined;

  constructor(private readonly opts: RoomNavigatorOptions) {
    this.log = (opts.logger ?? quietLogger()).child({ component: "room-navigator", room: opts.room });
    this.clock = opts.clock ?? realClock;
    this.region = opts.region;
  }

  /** The host of the current session. */
  get host(): string | undefined {
    return this.current?.host;
  }

  get session(): AudioSession | undefined {
    return this.current?.session;
  }

  /**
   * Sends one frame on the current session and, while switching, on the one being left too: the old host
   * keeps mixing us for those still there (and for our own ear) until the successor's mix reaches us.
   */
  sendAudio(frame: AudioFrame): boolean {
    const prev = this.previous?.current.session;
    if (prev?.isOpen) prev.sendAudio(frame);
    return this.current?.session.sendAudio(frame) ?? false;
  }

  /** The host died (stream reset, silence): it is left out of placement from now on. */
  hostLost(peer?: string): void {
    const p = peer ?? this.current?.host;
    if (p) this.excluded.add(p);
    this.current = undefined;
  }

  /**
   * Joins the room where it lives, following REDIRECTs; `onMoved` is told when a MOVE switched the session
   * (the returned session is then closed by us, without an error).
   */
  async open(o: NavigatedSessionOptions & { onMoved?: (s: AudioSession) => void }): Promise<AudioSession> {
    this.sessionOpts = o;
    const t0 = this.clock.now();
    const tally: OpenTally = {
      placeMs: 0,
      mixersMs: 0,
      placedBy: "rule",
      probeMs: 0,
      dialMs: 0,
      answerMs: 0,
      datagramsMs: 0,
      verifyMs: 0,
      redirects: 0,
      attempts: 0,
    };
    let goneHosts = 0;
    let freshLookup = false;
    for (let attempt = 0; ; attempt++) {
      tally.attempts++;
      const placeAt = this.clock.now();
      const first = await this.placeTarget(tally, freshLookup);
      tally.placeMs += this.clock.now() - placeAt;
      // The rule's choice among the mixers this client can reach: one that does not answer (cut off by a
      // partition, or dead too) is skipped for the next. Every participant on the same side skips the same
      // ones, so they still meet on one mixer. A record's host is not probed: it REDIRECTs or is lost.
      let answered = true;
      if (first.byRule) {
        const probeAt = this.clock.now();
        answered = await this.answers(first.host, first.addrs);
        tally.probeMs += this.clock.now() - probeAt;
      }
      if (!answered) {
        if (o.signal?.aborted) throw new AgoraError("P2P", "join aborted");
        this.unreachable.set(first.host, this.clock.now() + UNREACHABLE_FOR_MS);
        this.stats.unreachableSkipped++;
        this.log.info({ mixer: first.host }, "the placement's mixer does not answer; trying the next by the rule");
        continue;
      }
      try {
        const session = await this.joinFollowing(first.host, first.addrs, undefined, tally);
        this.stats.lastOpen = { totalMs: this.clock.now() - t0, ...tally };
        return session;
      } catch (err) {
        // The record named a host that refuses the dial, or answers that it drains or shuts down: it is gone (or
        // going) since that record was read (a drained or killed host whose record a recent lookup, or the
        // DHT, still held; its room is on the successor already). Look again, afresh and without
        // it; if no record names another host, the rule places the room, as it does for everyone who finds
        // the host gone (its drain handed the room to the rule's next mixer).
        if (
          !first.byRule &&
          !(err instanceof PlacementRefusedError) &&
          err instanceof AgoraError &&
          (hostGone(err) || hostLeaving(err)) &&
          goneHosts++ < MAX_GONE_HOST_RETRIES &&
          !o.signal?.aborted
        ) {
          this.unreachable.set(first.host, this.clock.now() + UNREACHABLE_FOR_MS);
          this.log.info(
            { mixer: first.host, err: errorMessage(err) },
            hostLeaving(err)
              ? "the room record's host answers that it drains or shuts down; looking again"
              : "the room record's host refuses the dial; looking again",
          );
          freshLookup = true;
          continue;
        }
        // A mixer that REDIRECTed where no record confirms, or into a loop, is not trusted with this room
        // again: it is left out and the room placed without it, as every participant that meets it does
        // (they compute the same ranking), so they still end together on one host.
        if (!(err instanceof PlacementRefusedError) || attempt >= MAX_REFUSAL_RETRIES) throw err;
        for (const p of err.peers) this.excluded.add(p);
        this.log.warn({ err: err.message, excluded: err.peers }, "placement refused; placing the room without those mixers");
        const next = rankPlacement(this.opts.room, this.region ?? "", this.mixersCache ?? [], this.skipped())[0];
        if (!next) throw err;
      }
    }
  }

  /** Mixers left out of placement: hosts lost, and those that recently did not answer a dial. */
  private skipped(): Set<string> {
    const now = this.clock.now();
    const out = new Set(this.excluded);
    for (const [peer, until] of this.unreachable) {
      if (until > now) out.add(peer);
      else this.unreachable.delete(peer);
    }
    return out;
  }

  /**
   * Whether `peer` answers within the probe timeout: a ping (libp2p's ping service, when the node has one;
   * else a dial). An open connection is no proof: one into a partition looks open until it times out. The
   * session then reuses the connection. Navigators sharing one libp2p node (a process with many
   * participants) share one probe per peer: one ping, not one per participant on the same connection.
   */
  private answers(peer: string, addrs: string[]): Promise<boolean> {
    const targets = hostTargets(peer, addrs);
    if (targets.length === 0) return Promise.resolve(true); // joinFollowing names the problem
    let probes = PROBES.get(this.opts.libp2p);
    if (!probes) {
      probes = new Map();
      PROBES.set(this.opts.libp2p, probes);
    }
    const running = probes.get(peer);
    if (running) return running;
    const timeout = AbortSignal.timeout(this.opts.probeTimeoutMs ?? PLACEMENT_DIAL_TIMEOUT_MS);
    const ping = (this.opts.libp2p.services as { ping?: Pinger } | undefined)?.ping;
    const target = targets.length === 1 ? targets[0]! : targets;
    const probe = (async () => {
      try {
        if (ping) await ping.ping(target, { signal: timeout });
        else await this.opts.libp2p.dial(target, { signal: timeout });
        return true;
      } catch (err) {
        // A peer without the ping protocol still answered the negotiation (as libp2p's monitor counts it).
        if ((err as Error)?.name === "UnsupportedProtocolError") return true;
        this.log.debug({ mixer: peer, err: errorMessage(err) }, "placement's mixer did not answer");
        return false;
      } finally {
        probes.delete(peer);
      }
    })();
    probes.set(peer, probe);
    return probe;
  }

  private async mixers(refresh = false): Promise<MixerCandidate[]> {
    if (!this.mixersCache || refresh) {
      const all = await this.opts.locator.mixers(this.region);
      this.mixersCache = all;
      if (this.region === undefined) {
        const sorted = [...all].filter((m) => m.capabilities.includes("mixer")).sort((a, b) => (a.peer_id < b.peer_id ? -1 : 1));
        this.region = sorted[0]?.region;
      }
    }
    return this.mixersCache;
  }

  /** The room's live host (unless excluded), else the placement rule's first mixer (`byRule`). */
  private async placeTarget(tally?: OpenTally, fresh = false): Promise<{ host: string; addrs: string[]; byRule?: boolean }> {
    const skipped = this.skipped();
    if (this.excluded.size > 0 && this.mixersCache) {
      // Failover: every participant computes the successor from its cached mixer list without the dead host,
      // at once (a record walk now would wait on the dead peer); the successor's claim settles the record.
      const [best] = rankPlacement(this.opts.room, this.region ?? "", this.mixersCache, skipped);
      if (tally) tally.placedBy = "failover";
      if (best) return { host: best.peer_id, addrs: best.listen_addr, byRule: true };
    }
    const lookupAt = this.clock.now();
    const lookup = this.opts.locator.resolve(this.opts.room, fresh ? { fresh: true } : undefined).then(
      (rec) => {
        if (tally) tally.resolveMs = this.clock.now() - lookupAt;
        return rec;
      },
      (err) => {
        this.log.debug({ err: errorMessage(err) }, "room record lookup failed; placing by rule");
        return undefined;
      },
    );
    // A new room has no record, and its lookup answers only at its bound: with a mixer list at hand, the
    // rule's first mixer is dialled once the lookup has had a head start. That mixer REDIRECTs to the live
    // host if the room lives elsewhere (the redirect is verified against the record), so nothing is split.
    const mixersAt = this.clock.now();
    const cached = this.mixersCache ?? (await this.mixers().catch(() => undefined));
    if (tally) tally.mixersMs += this.clock.now() - mixersAt;
    const headStart = cached && cached.length > 0 ? rankPlacement(this.opts.room, this.region ?? "", cached, skipped)[0] : undefined;
    let headStartTimer: TimerHandle | undefined;
    const rec = headStart
      ? await Promise.race([
          lookup,
          new Promise<"late">((res) => {
            headStartTimer = this.clock.setTimeout(() => res("late"), RESOLVE_HEAD_START_MS, { unref: true });
          }),
        ])
      : await lookup;
    this.clock.clearTimeout(headStartTimer);
    if (tally) tally.placedBy = rec && rec !== "late" && !skipped.has(rec.host) ? "record" : "rule";
    if (rec === "late") return { host: headStart!.peer_id, addrs: headStart!.listen_addr, byRule: true };
    if (rec && !skipped.has(rec.host)) {
      if (rec.status === "handing-over" && rec.successor && !skipped.has(rec.successor)) {
        const succ = (await this.mixers()).find((m) => m.peer_id === rec.successor);
        if (succ) return { host: succ.peer_id, addrs: succ.listen_addr };
      }
      return { host: rec.host, addrs: rec.addrs };
    }
    // A client that just connected may find no mixer on its first walk (its routing table is still
    // filling): a few bounded retries before giving up.
    for (let attempt = 0; attempt < 6; attempt++) {
      if (attempt > 0) await new Promise((res) => setTimeout(res, 250 * attempt));
      const retryAt = this.clock.now();
      const cands = await this.mixers(attempt > 0).catch(() => []);
      if (tally) tally.mixersMs += this.clock.now() - retryAt;
      const [best] = rankPlacement(this.opts.room, this.region ?? "", cands, skipped);
      if (best) return { host: best.peer_id, addrs: best.listen_addr, byRule: true };
    }
    throw new AgoraError("P2P", `no live mixer can host room ${this.opts.room}${this.region ? ` in region ${this.region}` : ""}`);
  }

  private async joinFollowing(host: string, addrs: string[], moveToken: Uint8Array | undefined, tally?: OpenTally): Promise<AudioSession> {
    const maxHops = this.opts.maxHops ?? 4;
    const o = this.sessionOpts!;
    let target = { host, addrs };
    let dialRetries = 0;
    /** the mixers that REDIRECTed this join */
    const chain = new Set<string>();
    for (let hop = 0; ; hop++) {
      const targets = hostTargets(target.host, target.addrs);
      if (targets.length === 0) throw new AgoraError("P2P", `no dialable address for mixer ${target.host}`);
      const thisHost = target.host;
      let session: AudioSession | undefined;
      try {
        session = await AudioSession.open({
          ...o,
          libp2p: this.opts.libp2p,
          target: targets.length === 1 ? targets[0]! : targets,
          room: this.opts.room,
          // access control too when the caller handles its messages (a grant, the moderation notices)
          capabilities: Capability.ROOM_DIRECTORY | (o.capabilities ?? 0) | (o.onAccess ? Capability.ACCESS_CONTROL : 0),
          ...(moveToken ? { moveToken } : {}),
          onOpenPhase: (phase, ms) => {
            if (!tally) return;
            if (phase === "dial") tally.dialMs += ms;
            else if (phase === "answer") tally.answerMs += ms;
            else tally.datagramsMs += ms;
          },
          onAudio: (frame, at) => this.onAudio(session, frame, at),
          onControl: (m) => this.onMove(session, m),
          onClose: (err) => {
            // A session we left behind (moved away) ends quietly; only the current one's end is news.
            if (session && this.current?.session !== session) return;
            o.onClose?.(err);
          },
        });
      } catch (err) {
        if (!(err instanceof AudioRedirectError)) {
          // A dial that lost a race with a closing connection gets another try (bounded), not an error. A host
          // that refuses connections is gone: no retry (open() looks again).
          if (
            err instanceof AgoraError &&
            err.code === "P2P" &&
            !hostGone(err) &&
            dialRetries++ < 4 &&
            !(this.sessionOpts?.signal?.aborted ?? false)
          ) {
            // A connection whose muxer already closed is still handed out until libp2p notices: drop it,
            // so the retry dials afresh (every stream on it is dead anyway).
            if (/muxer is "closed"/.test(err.message)) await this.hangUp(target.host);
            await new Promise((res) => setTimeout(res, 150 * 2 ** dialRetries));
            hop--;
            continue;
          }
          throw err;
        }
        chain.add(thisHost);
        if (hop + 1 >= maxHops) {
          this.stats.redirectLoops++;
          throw new PlacementRefusedError(`room ${this.opts.room}: more than ${maxHops} REDIRECTs, giving up (a redirect loop)`, [
            ...chain,
          ]);
        }
        const verifyAt = this.clock.now();
        target = await this.verifyRedirect(err.redirect, thisHost);
        if (tally) {
          tally.verifyMs += this.clock.now() - verifyAt;
          tally.redirects++;
        }
        moveToken = undefined;
        continue;
      }
      this.current = { session, host: thisHost };
      return session;
    }
  }

  private async hangUp(peer: string): Promise<void> {
    try {
      const id = peerIdFromString(peer);
      for (const c of this.opts.libp2p.getConnections(id)) await c.close().catch(() => c.abort(new Error("muxer closed")));
    } catch {
      /* nothing to drop */
    }
  }

  /**
   * A REDIRECT is followed only to the host a verified record names (the redirecting mixer could lie). The
   * claim behind it may still be on its way through the DHT: the record is looked up a few times.
   */
  private async verifyRedirect(r: RedirectMessage, from: string): Promise<{ host: string; addrs: string[] }> {
    if (r.room !== this.opts.room) {
      this.stats.redirectsRefused++;
      throw new PlacementRefusedError(`REDIRECT from ${from} for room ${r.room} while joining ${this.opts.room}: refused`, [from]);
    }
    if (this.excluded.has(r.hostPeerId) || r.hostPeerId === from) {
      this.stats.redirectsRefused++;
      throw new PlacementRefusedError(
        `REDIRECT from ${from} of room ${this.opts.room} to ${r.hostPeerId === from ? "itself" : `${r.hostPeerId}, a mixer left out of placement`}: refused`,
        [from],
      );
    }
    // The rule's own choice needs no record: this client would have gone there anyway.
    const cands = this.mixersCache ?? [];
    const [ruled] = rankPlacement(this.opts.room, this.region ?? "", cands, this.excluded);
    if (ruled && ruled.peer_id === r.hostPeerId && r.hostPeerId !== from) {
      this.stats.redirectsFollowed++;
      return { host: ruled.peer_id, addrs: r.addrs.length > 0 ? r.addrs : ruled.listen_addr };
    }
    for (let attempt = 0; attempt < 8; attempt++) {
      const rec = await this.opts.locator.resolve(this.opts.room, { fresh: true }).catch(() => undefined);
      if (rec && rec.host === r.hostPeerId && rec.host !== from) {
        this.stats.redirectsFollowed++;
        this.log.debug({ host: rec.host, epoch: rec.epoch }, "following REDIRECT");
        return { host: rec.host, addrs: r.addrs.length > 0 ? r.addrs : rec.addrs };
      }
      await new Promise((res) => setTimeout(res, 100 * (attempt + 1)));
    }
    this.stats.redirectsRefused++;
    throw new PlacementRefusedError(
      `REDIRECT from ${from} of room ${this.opts.room} to ${r.hostPeerId} is not confirmed by its record: refused`,
      [from],
    );
  }

  private onAudio(session: AudioSession | undefined, frame: AudioFrame, at: number): void {
    const cur = this.current;
    const prev = this.previous;
    if (prev && session === prev.current.session) {
      // make-before-break: the old host's mix until the new one's first frame
      prev.current.lastFrameAt = at;
      this.sessionOpts?.onAudio?.(frame, at);
      return;
    }
    if (!cur || session !== cur.session) return; // a stray session
    if (prev) {
      // The switch happens at a successor frame that comes while the old host's frames still flow: no hole.
      // When the last old frame is older than that, this new one may only have been read before old ones
      // queued behind it (a busy client's event loop stalled): up to SWITCH_WAIT_FRAMES new frames are
      // passed over while the old host's mix still plays; a switch at the first one left those queued old
      // frames unplayed, a hole as long as the stall.
      const sinceOld = Math.max(0, at - (prev.current.lastFrameAt ?? at));
      prev.newFrames = (prev.newFrames ?? 0) + 1;
      if (sinceOld > SWITCH_FLOWING_MS && prev.newFrames < SWITCH_WAIT_FRAMES) return;
      this.recordMoveGap(prev, at, sinceOld);
      prev.leave();
    }
    cur.lastFrameAt = at;
    this.sessionOpts?.onAudio?.(frame, at);
  }

  private recordMoveGap(prev: { movedAt: number; joinedAt?: number }, at: number, gapMs: number): void {
    this.stats.moveGapsMs.push(gapMs);
    const joinedAt = prev.joinedAt ?? at;
    this.stats.movePhasesMs.push({ joinMs: joinedAt - prev.movedAt, firstFrameMs: at - joinedAt, gapMs });
  }

  /** MOVE: accepted only on the current host's session, for our room, once. Make-before-break. */
  private onMove(session: AudioSession | undefined, m: MoveMessage): void {
    const cur = this.current;
    if (!cur || session !== cur.session || m.room !== this.opts.room || this.moving || m.successorPeerId === cur.host) {
      this.stats.movesRefused++;
      this.log.warn({ room: m.room, successor: m.successorPeerId }, "MOVE refused (not from the room's current host session)");
      return;
    }
    this.moving = true;
    const old = cur;
    void (async () => {
      try {
        // Set before the new session exists, so frames of both are told apart from its first one on.
        let left = false;
        const leave = () => {
          if (left) return;
          left = true;
          this.clock.clearTimeout(deadline);
          if (this.previous?.current === old) this.previous = undefined;
          void old.session.leave().catch(() => {});
        };
        // The new host's mix may take a moment to start: the old session is left at its first frame, or
        // after a second at the latest.
        let deadline: TimerHandle | undefined;
        const switching = { current: old, leave, movedAt: this.clock.now() } as NonNullable<typeof this.previous>;
        this.previous = switching;
        try {
          await this.joinFollowing(m.successorPeerId, m.addrs, m.token);
        } catch (err) {
          this.previous = undefined;
          throw err;
        }
        switching.joinedAt = this.clock.now();
        deadline = this.clock.setTimeout(() => {
          if (this.previous?.current === old) {
            const now = this.clock.now();
            this.recordMoveGap(switching, now, Math.max(0, now - (old.lastFrameAt ?? 0)));
          }
          leave();
        }, 1_000);
        this.stats.movesFollowed++;
        this.log.info({ from: old.host, to: this.current?.host, epoch: m.epoch, reason: m.reason }, "moved to the room's new host");
        this.sessionOpts?.onMoved?.(this.current!.session);
      } catch (err) {
        // The old host still serves us; if it goes, the caller's reconnect re-homes by the rule.
        this.log.warn({ err: errorMessage(err), successor: m.successorPeerId }, "could not join the successor; staying");
        this.stats.movesFailed++;
        this.stats.lastMoveError = errorMessage(err);
        this.current = old;
      } finally {
        this.moving = false;
      }
    })();
  }
}

/** The dial was refused outright (nothing listens there any more), not lost in a race or a timeout. */
function hostGone(err: AgoraError): boolean {
  return err.code === "P2P" && /ECONNREFUSED/.test(err.message);
}

/** The host answered the JOIN that it drains or shuts down: its rooms are handed over, or about to be. */
function hostLeaving(err: AgoraError): boolean {
  return err instanceof AudioRemoteError && (err.wireCode === WireErrorCode.DRAINING || err.wireCode === WireErrorCode.SHUTTING_DOWN);
}
