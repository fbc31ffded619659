/**
 * One audio protocol session from the browser, on a libp2p connection the page owns: JOIN, JOINED, AUDIO
 * both ways, PING/PONG (answering the server's, sending our own for RTT and as keepalive), LEAVE.
 * The wire codec and the real-time send queue are the protocol subsystem's, shared with the node and the SDK.
 */
import type { Libp2p, Stream } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import {
  AUDIO_PROTOCOLS,
  Capability,
  chunkBytes,
  encodeAudio,
  encodeMessage,
  errorCodeName,
  FRAME_SAMPLES,
  type JoinedMessage,
  MessageDecoder,
  OutboundQueue,
  type RosterEntry,
  type RosterMessage,
  WIRE_VERSION,
  WIRE_VERSION_1_1,
  type WireMessage,
  wireVersionForProtocol,
} from "../../protocol";

export interface CallSessionOptions {
  libp2p: Libp2p;
  target: Multiaddr;
  room: string;
  name: string;
  onAudio(seq: number, timestamp: number, payload: Uint8Array, receivedAt: number): void;
  /** The room's participants with speaking flags (ROSTER, on a 1.1.0 session whose server offers it). */
  onRoster?(entries: RosterEntry[], total: number): void;
  onClose(reason: string | undefined): void;
  timeoutMs?: number;
}

export class CallSession {
  private readonly queue: OutboundQueue;
  private seq = (Math.random() * 0x1_0000_0000) >>> 0;
  private timestamp = (Math.random() * 0x1_0000_0000) >>> 0;
  private nonce = 0;
  private readonly pings = new Map<number, number>();
  private open = true;
  rttMs: number | undefined;
  framesSent = 0;
  framesReceived = 0;

  private constructor(
    private readonly stream: Stream,
    readonly joined: JoinedMessage,
    private readonly opts: CallSessionOptions,
    /** the handshake's decoder: bytes after JOINED may already be buffered in it */
    private readonly decoder: MessageDecoder,
  ) {
    this.queue = new OutboundQueue(stream, 10);
  }

  static async open(opts: CallSessionOptions): Promise<CallSession> {
    const signal = AbortSignal.timeout(opts.timeoutMs ?? 10_000);
    const stream = await opts.libp2p.dialProtocol(opts.target, [...AUDIO_PROTOCOLS], { signal });
    const version = wireVersionForProtocol(stream.protocol ?? "") ?? WIRE_VERSION;
    let session: CallSession | undefined;
    const early: WireMessage[] = [];
    const decoder = new MessageDecoder();
    let got = false;
    let resolveJoined: (m: JoinedMessage) => void = () => {};
    const joined = await new Promise<JoinedMessage>((resolve, reject) => {
      const fail = (why: string) => {
        stream.abort(new Error(why));
        reject(new Error(why));
      };
      const onAbort = () => fail(`no JOINED within ${opts.timeoutMs ?? 10_000} ms`);
      signal.addEventListener("abort", onAbort, { once: true });
      resolveJoined = (m) => {
        signal.removeEventListener("abort", onAbort);
        resolve(m);
      };
      stream.addEventListener("message", (evt) => {
        if (session) return session.onBytes(chunkBytes(evt.data));
        const { messages, error } = decoder.push(chunkBytes(evt.data));
        for (const m of messages) {
          if (got) early.push(m);
          else if (m.type === "JOINED") {
            got = true;
            resolveJoined(m);
          } else if (m.type === "ERROR") fail(`server error ${errorCodeName(m.code)}: ${m.message}`);
          else early.push(m);
        }
        if (error && !got) fail(error.message);
      });
      stream.addEventListener("close", () => {
        if (session) session.finish("the node closed the audio stream");
        else reject(new Error("the node closed the audio stream before JOINED"));
      });
      const ext = version >= WIRE_VERSION_1_1 && opts.onRoster ? { capabilities: Capability.ROSTER } : {};
      stream.send(encodeMessage({ type: "JOIN", version, room: opts.room, name: opts.name, ...ext }));
    });
    session = new CallSession(stream, joined, opts, decoder);
    // Whatever followed JOINED in the same chunk (AUDIO, a PING) belongs to the session.
    for (const m of early.splice(0)) session.onMessage(m);
    return session;
  }

  private onBytes(bytes: Uint8Array): void {
    const { messages, error } = this.decoder.push(bytes);
    for (const m of messages) this.onMessage(m);
    if (error) this.finish(`malformed message from the node: ${error.message}`, true);
  }

  private onMessage(m: WireMessage): void {
    const now = performance.now();
    switch (m.type) {
      case "AUDIO":
        this.framesReceived++;
        this.opts.onAudio(m.seq, m.timestamp, m.payload, now);
        return;
      case "PING":
        this.queue.send(encodeMessage({ type: "PONG", nonce: m.nonce }), false);
        return;
      case "PONG": {
        const at = this.pings.get(m.nonce);
        if (at === undefined) return;
        this.pings.delete(m.nonce);
        const rtt = now - at;
        this.rttMs = this.rttMs === undefined ? rtt : this.rttMs * 0.8 + rtt * 0.2;
        return;
      }
      case "ERROR":
        this.finish(`server error ${errorCodeName(m.code)}: ${m.message}`, true);
        return;
      case "ROSTER":
        if (this.rosterOffered) this.onRoster(m);
        else this.finish("unexpected ROSTER from the node", true);
        return;
      default:
        this.finish(`unexpected ${m.type} from the node`, true);
    }
  }

  private get rosterOffered(): boolean {
    return (
      this.joined.version >= WIRE_VERSION_1_1 &&
      this.opts.onRoster !== undefined &&
      ((this.joined.capabilities ?? 0) & Capability.ROSTER) !== 0
    );
  }

  /** Snapshot pages of one revision, until complete; then SPEAKING updates of that revision (protocol.md "Roster"). */
  private rosterPages: { rev: number; listed: number; total: number; entries: RosterEntry[] } | undefined;
  private roster: { rev: number; total: number; entries: RosterEntry[] } | undefined;
  private onRoster(m: RosterMessage): void {
    if (m.kind === "snapshot") {
      if (m.index === 0) this.rosterPages = { rev: m.rev, listed: m.listed, total: m.total, entries: [] };
      const pages = this.rosterPages;
      // A page of another revision or out of order: wait for the next snapshot.
      if (!pages || pages.rev !== m.rev || pages.entries.length !== m.index) return;
      pages.entries.push(...m.entries);
      if (pages.entries.length < pages.listed) return;
      this.roster = { rev: pages.rev, total: pages.total, entries: pages.entries };
      this.rosterPages = undefined;
    } else {
      if (!this.roster || this.roster.rev !== m.rev) return;
      this.roster.entries = this.roster.entries.map((e, i) => ({ ...e, speaking: m.speaking[i] ?? false }));
    }
    this.opts.onRoster?.(this.roster.entries, this.roster.total);
  }

  get isOpen(): boolean {
    return this.open;
  }

  sendOpus(payload: Uint8Array): boolean {
    if (!this.open) return false;
    const ok = this.queue.send(encodeAudio({ seq: this.seq, timestamp: this.timestamp, payload }), true);
    this.seq = (this.seq + 1) >>> 0;
    this.timestamp = (this.timestamp + FRAME_SAMPLES) >>> 0;
    if (ok) this.framesSent++;
    return ok;
  }

  ping(): void {
    if (!this.open) return;
    this.nonce = (this.nonce + 1) >>> 0;
    this.pings.set(this.nonce, performance.now());
    if (this.pings.size > 16) this.pings.delete(this.pings.keys().next().value!);
    this.queue.send(encodeMessage({ type: "PING", nonce: this.nonce }), false);
  }

  async leave(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    this.queue.close();
    try {
      this.stream.send(encodeMessage({ type: "LEAVE" }));
      await this.stream.close({ signal: AbortSignal.timeout(2_000) });
    } catch {
      this.stream.abort(new Error("leave timed out"));
    }
    this.opts.onClose(undefined);
  }

  private finish(reason: string, abort = false): void {
    if (!this.open) return;
    this.open = false;
    this.queue.close();
    if (abort) this.stream.abort(new Error(reason));
    this.opts.onClose(reason);
  }
}
