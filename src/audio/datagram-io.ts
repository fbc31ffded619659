/**
 * Voice datagrams inside the media worker (protocol.md, "UDP datagrams"): the worker owns the UDP socket,
 * so a datagram is received, judged, opened and pushed into the core's jitter buffer on the thread that
 * mixes, and each mixed frame is sealed per recipient and sent in one `sendMany` batch per tick, without a
 * message or a ring record per frame. The control thread only installs sessions (id, key, participant;
 * engine.ts) and forwards the client's UDP_REPORT counts; it reads back, in one `udpSync` request every
 * 100 ms, each session's authenticated count and binding (for its own UDP_REPORT and idle timeout) and the
 * drop counters (for /metrics).
 *
 * Every datagram is judged in order of cost, as src/rooms/udp-voice.ts does on the control thread: length
 * and version marker, the source's token bucket, the session id, the bound source, the replay window, then
 * the AEAD and the Opus TOC check; nothing unauthenticated reaches the decoder.
 *
 * On the node's shared socket (node.listen_port, `stun` in the config) the STUN messages among them (rare:
 * the answers to the node's own binding requests) are the control thread's: they are collected and handed
 * over in one message per tick, at most STUN_PER_TICK of them (a flood of STUN-shaped garbage costs the
 * control thread nothing more), and the control thread's STUN requests are sent from this socket (sendRaw).
 * Voice datagrams never cross.
 */
import {
  checkOpusPacket,
  DATAGRAM_DROP_REASONS,
  DATAGRAM_TIMING,
  DatagramDirection,
  type DatagramDropReason,
  DatagramFlag,
  type DatagramKey,
  datagramKey,
  isStunMessage,
  MAX_DATAGRAM_BYTES,
  MAX_DATAGRAM_COUNTER,
  openDatagram,
  parseDatagramHeader,
  ReplayWindow,
  SourceRateLimiter,
  sealDatagram,
  UdpSendPolicy,
} from "../protocol";
import type { DatagramTriples, UdpDatagramSession, UdpSessionState, UdpSyncReply, WorkerDatagramConfig } from "./worker-protocol";

/** Sent after a worker restart above the last counter the control thread saw: the nonce never repeats. */
export const TX_COUNTER_RESTART_MARGIN = 1 << 16;
/** STUN messages handed to the control thread per 20 ms tick at most (2,500/s); the rest: `stun_overflow`. */
export const STUN_PER_TICK = 50;

interface DgSession {
  id: number;
  participant: number;
  key: DatagramKey;
  trustVoice: boolean;
  replay: ReplayWindow;
  policy: UdpSendPolicy;
  received: number;
  txCounter: number;
  lastTxAt: number;
  lastRxAt: number;
  boundAddress: string | undefined;
  boundPort: number;
  boundKey: string | undefined;
  /** voice datagrams dropped because the participant may not speak (counted for the control thread) */
  silenced: number;
}

/** Where an authenticated frame goes: the participant's jitter buffer. false: no such participant (left). */
export type PushToCore = (participant: number, seq: number, ts: number, payload: Uint8Array, vadFlags: number) => boolean;

const EMPTY = new Uint8Array(0);
/** Sealed datagrams of one tick are written into one arena: no buffer per datagram beyond the cipher's own. */
const ARENA_BYTES = 1 << 20;

export class WorkerDatagramIO {
  private socket: import("bun").udp.Socket<"uint8array"> | undefined;
  private readonly sessions = new Map<number, DgSession>();
  private readonly byParticipant = new Map<number, DgSession>();
  /** participants that may not speak (worker handles): their datagrams are dropped after authentication */
  private readonly listenOnly = new Set<number>();
  private readonly limiter = new SourceRateLimiter({ perSecond: 150, burst: 150, maxSources: 16_384 });
  private readonly nonce = Buffer.alloc(12);
  private readonly dropped = new Map<DatagramDropReason, number>();
  private received = 0;
  private sent = 0;
  private sendRefused = 0;
  private framesIn = 0;
  private arena = Buffer.allocUnsafe(ARENA_BYTES);
  private arenaUsed = 0;
  private batch: DatagramTriples = [];
  /** the shared socket's STUN messages of this tick, for the control thread */
  private stunIn: DatagramTriples = [];
  private stunShared = false;

  constructor(
    private readonly push: PushToCore,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get port(): number {
    return this.socket?.port ?? 0;
  }

  async bind(cfg: WorkerDatagramConfig): Promise<number> {
    this.stunShared = cfg.stun === true;
    this.socket = await Bun.udpSocket({
      hostname: cfg.hostname,
      port: cfg.port,
      binaryType: "uint8array",
      socket: {
        data: (_s, data, port, address) => this.onDatagram(data, port, address),
        // ICMP errors for one client's address: that client's send policy notices by its reports.
        error() {},
      },
    });
    return this.socket.port;
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }

  install(d: UdpDatagramSession): void {
    this.remove(d.sessionId);
    const s: DgSession = {
      id: d.sessionId,
      participant: d.participant,
      key: datagramKey(d.key),
      trustVoice: d.trustVoice,
      replay: new ReplayWindow(128),
      policy: new UdpSendPolicy(DATAGRAM_TIMING),
      received: d.state?.received ?? 0,
      txCounter: d.state ? Math.min(MAX_DATAGRAM_COUNTER + 1, d.state.txCounter + TX_COUNTER_RESTART_MARGIN) : 0,
      lastTxAt: Number.NEGATIVE_INFINITY,
      lastRxAt: Number.NEGATIVE_INFINITY,
      boundAddress: d.state?.address,
      boundPort: d.state?.port ?? 0,
      boundKey: d.state?.address !== undefined ? `${d.state.address}|${d.state.port}` : undefined,
      silenced: d.state?.silenced ?? 0,
    };
    // A restored session: everything up to the highest counter seen counts as seen (no replay after a restart).
    if (d.state && d.state.rxHighest >= 0)
      for (let c = Math.max(0, d.state.rxHighest - 127); c <= d.state.rxHighest; c++) s.replay.update(c);
    this.sessions.set(s.id, s);
    this.byParticipant.set(s.participant, s);
  }

  remove(sessionId: number): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.delete(sessionId);
    if (this.byParticipant.get(s.participant) === s) this.byParticipant.delete(s.participant);
  }

  /**
   * Access control's listen-only participants (a listener, a muted speaker): their voice datagrams are
   * authenticated (they still count for UDP_REPORT and keep the session alive) and then dropped before
   * anything else, as the stream path drops their frames; the core would not mix them either.
   */
  setCanSpeak(participant: number, canSpeak: boolean): void {
    if (canSpeak) this.listenOnly.delete(participant);
    else this.listenOnly.add(participant);
  }

  /** The client's UDP_REPORT (forwarded by the control thread): drives this session's send policy. */
  report(sessionId: number, received: number): void {
    this.sessions.get(sessionId)?.policy.report(received, this.now());
  }

  private drop(reason: DatagramDropReason): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
  }

  onDatagram(data: Uint8Array, port: number, address: string): void {
    if (this.stunShared && isStunMessage(data)) {
      if (this.stunIn.length < STUN_PER_TICK * 3) this.stunIn.push(data.slice(), port, address);
      else this.drop("stun_overflow");
      return;
    }
    const reason = this.accept(data, port, address);
    if (reason !== undefined) this.drop(reason);
  }

  private accept(data: Uint8Array, port: number, address: string): DatagramDropReason | undefined {
    const header = parseDatagramHeader(data);
    if (typeof header === "string") return header;
    const now = this.now();
    const sourceKey = `${address}|${port}`;
    if (!this.limiter.take(sourceKey, now)) return "rate_limited";
    const s = this.sessions.get(header.sessionId);
    if (!s) return "unknown_session";
    if (s.boundKey !== undefined && s.boundKey !== sourceKey) return "unbound_source";
    const replay = s.replay.check(header.counter);
    if (replay !== "ok") return replay;
    const plain = openDatagram(s.key, DatagramDirection.CLIENT_TO_SERVER, data, header.counter, this.nonce);
    if (!plain) return "auth_failed";
    s.replay.update(header.counter);
    if (s.boundKey === undefined) {
      s.boundAddress = address;
      s.boundPort = port;
      s.boundKey = sourceKey;
    }
    s.received = (s.received + 1) >>> 0;
    s.lastRxAt = now;
    this.received++;
    if ((header.flags & DatagramFlag.KEEPALIVE) !== 0) return undefined;
    if (this.listenOnly.has(s.participant)) {
      s.silenced++;
      return undefined;
    }
    if (checkOpusPacket(plain) !== undefined) return "invalid_opus";
    // VadFlag.KNOWN (2) | VOICE (1) only from a client that announced it means it (as the stream path)
    const vad = s.trustVoice ? 2 | ((header.flags & DatagramFlag.VOICE) !== 0 ? 1 : 0) : 0;
    if (this.push(s.participant, header.seq, header.timestamp, plain, vad)) this.framesIn++;
    return undefined;
  }

  /**
   * For one recipient of a mixed frame: seals and queues it as a datagram when its session's policy says so.
   * Returns true when the frame must (also) go by stream: no datagram session, not bound yet, the policy
   * is on the stream or dual-sending, or this direction's counter is used up.
   */
  route(participant: number, seq: number, ts: number, payload: Uint8Array, now: number): boolean {
    const s = this.byParticipant.get(participant);
    if (!s || s.boundKey === undefined || !this.socket) return true;
    const r = s.policy.route(now);
    if (!r.datagram) return true;
    if (!this.queue(s, 0, seq, ts, payload, now)) return true;
    return r.stream;
  }

  private queue(s: DgSession, flags: number, seq: number, ts: number, payload: Uint8Array, now: number): boolean {
    if (s.txCounter > MAX_DATAGRAM_COUNTER || s.boundAddress === undefined) return false;
    if (this.arenaUsed + MAX_DATAGRAM_BYTES > this.arena.length) {
      // The batch still refers to the old arena: start a new one rather than overwrite it.
      this.arena = Buffer.allocUnsafe(ARENA_BYTES);
      this.arenaUsed = 0;
    }
    const into = this.arena.subarray(this.arenaUsed);
    const bytes = sealDatagram(
      s.key,
      DatagramDirection.SERVER_TO_CLIENT,
      { flags, sessionId: s.id, counter: s.txCounter++, seq, timestamp: ts },
      payload,
      this.nonce,
      into,
    );
    this.arenaUsed += bytes.length;
    s.lastTxAt = now;
    this.batch.push(bytes, s.boundPort, s.boundAddress);
    return true;
  }

  /** Keepalives to bound sessions nothing was sent to for a report interval (the client's NAT mapping). */
  keepalives(now: number): void {
    for (const s of this.sessions.values())
      if (s.boundKey !== undefined && now - s.lastTxAt >= DATAGRAM_TIMING.reportIntervalMs)
        this.queue(s, DatagramFlag.KEEPALIVE, 0, 0, EMPTY, now);
  }

  /** Sends what this tick queued in one batch; a datagram the kernel refuses costs only its recipient. */
  flush(): void {
    const batch = this.batch;
    this.arenaUsed = 0;
    if (batch.length === 0 || !this.socket) {
      this.batch = [];
      return;
    }
    this.batch = [];
    this.sendRefused += this.sendBatch(batch);
    this.sent += batch.length / 3;
  }

  /** `sendMany` that skips a datagram the kernel refuses and sends the rest; returns how many were refused. */
  private sendBatch(batch: DatagramTriples): number {
    const socket = this.socket;
    const total = batch.length / 3;
    if (!socket || total === 0) return total;
    let done = 0;
    let refused = 0;
    try {
      while (done < total) {
        done += socket.sendMany(done === 0 ? batch : batch.slice(done * 3));
        if (done < total) {
          refused++;
          done++;
        }
      }
    } catch {
      refused += total - done;
    }
    return refused;
  }

  /** The control thread's datagrams (STUN requests) from this socket; not counted as voice. */
  sendRaw(packets: DatagramTriples): void {
    this.sendBatch(packets);
  }

  /** The STUN messages received since the last call, for the control thread (undefined: none). */
  takeStun(): DatagramTriples | undefined {
    if (this.stunIn.length === 0) return undefined;
    const packets = this.stunIn;
    this.stunIn = [];
    return packets;
  }

  /** Counters since the last sync and every session's state (the control thread keeps them for a restart). */
  sync(): UdpSyncReply {
    const now = this.now();
    this.limiter.prune(now);
    const sessions: UdpSessionState[] = [];
    for (const s of this.sessions.values())
      sessions.push({
        sessionId: s.id,
        received: s.received,
        rxAgeMs: s.lastRxAt === Number.NEGATIVE_INFINITY ? -1 : Math.round(now - s.lastRxAt),
        txCounter: s.txCounter,
        rxHighest: s.replay.highestCounter,
        silenced: s.silenced,
        ...(s.boundAddress !== undefined ? { address: s.boundAddress, port: s.boundPort } : {}),
      });
    const dropped: Partial<Record<DatagramDropReason, number>> = {};
    for (const r of DATAGRAM_DROP_REASONS) {
      const n = this.dropped.get(r);
      if (n) dropped[r] = n;
    }
    const reply: UdpSyncReply = {
      sessions,
      dropped,
      received: this.received,
      sent: this.sent,
      sendRefused: this.sendRefused,
      framesIn: this.framesIn,
    };
    this.dropped.clear();
    this.received = this.sent = this.sendRefused = this.framesIn = 0;
    return reply;
  }
}
