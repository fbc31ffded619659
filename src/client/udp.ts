/**
 * The participant's side of voice datagrams (protocol.md, "UDP datagrams"): its own UDP socket, sending
 * first so the mixer learns the address its NAT maps us to, keepalives while idle, the replay window and
 * AEAD on what comes back, and the count of authenticated datagrams that the session reports on the stream.
 */
import { AgoraError, errorMessage } from "../errors";
import {
  type AudioFrame,
  DATAGRAM_TIMING,
  DatagramDirection,
  DatagramFlag,
  type DatagramKey,
  datagramKey,
  isIpLiteral,
  MAX_DATAGRAM_BYTES,
  MAX_DATAGRAM_COUNTER,
  openDatagram,
  parseDatagramHeader,
  ReplayWindow,
  sealDatagram,
  seqDiff,
  type UdpOffer,
  UdpReportSchedule,
  UdpSendPolicy,
} from "../protocol";

/** Datagrams dropped by the client, by reason (a listener of a hostile network path can read them). */
export interface ClientUdpStats {
  sent: number;
  received: number;
  dropped: number;
}

const EMPTY = new Uint8Array(0);

export class ClientUdpChannel {
  readonly policy = new UdpSendPolicy(DATAGRAM_TIMING);
  /** when our UDP_REPORT of `received` is due */
  readonly reports = new UdpReportSchedule();
  /** authenticated datagrams from the mixer (reported in UDP_REPORT) */
  received = 0;
  sent = 0;
  dropped = 0;
  lastTxAt = Number.NEGATIVE_INFINITY;
  private counter = 0;
  private readonly replay = new ReplayWindow(128);
  private readonly key: DatagramKey;
  private readonly nonce = Buffer.alloc(12);
  /** every datagram is sealed into this one buffer: the socket copies it out synchronously in send() */
  private readonly out = Buffer.allocUnsafe(MAX_DATAGRAM_BYTES);
  private readonly header = { flags: 0, sessionId: 0, counter: 0, seq: 0, timestamp: 0 };
  private closed = false;
  /** the mixer's address without an IPv4-mapped prefix */
  private readonly plainHost: string;

  private constructor(
    private readonly socket: import("bun").udp.ConnectedSocket<"uint8array">,
    private readonly offer: UdpOffer,
    readonly host: string,
    private readonly onFrame: (frame: AudioFrame) => void,
    /** false: deliver frames by their clear header without opening them (see AudioSessionOptions.openDatagrams) */
    private readonly openPayloads: boolean,
  ) {
    this.key = datagramKey(offer.key);
    this.plainHost = host.replace(/^::ffff:/, "");
  }

  /**
   * Binds an ephemeral socket of the mixer address's family; `host` is an IP literal. `openPayloads` false:
   * the mixer's datagrams are counted and delivered by their clear header (seq, timestamp, an empty payload)
   * without the AEAD open, for a load generator's participants that never play what they hear.
   */
  static async open(offer: UdpOffer, host: string, onFrame: (frame: AudioFrame) => void, openPayloads = true): Promise<ClientUdpChannel> {
    if (!isIpLiteral(host)) throw new AgoraError("USAGE", `voice datagram host "${host}" is not an IP address`);
    let channel: ClientUdpChannel | undefined;
    let socket: import("bun").udp.ConnectedSocket<"uint8array">;
    try {
      // Connected to the mixer's endpoint: the only peer of this socket. The kernel then keeps the route and
      // filters other sources, and a send names no address (a fifth less CPU per datagram, measured on
      // loopback); an ICMP unreachable surfaces as a failed send, which falls back to the stream.
      socket = await Bun.udpSocket({
        hostname: host.includes(":") ? "::" : "0.0.0.0",
        port: 0,
        connect: { hostname: host, port: offer.port },
        binaryType: "uint8array",
        socket: {
          data(_s, data, port, address) {
            channel?.onDatagram(data, port, address);
          },
          // ICMP unreachable (UDP blocked with a reject rule): the fallback notices by the missing reports.
          error() {},
        },
      });
    } catch (err) {
      throw new AgoraError("P2P", `cannot bind a UDP socket for voice datagrams: ${errorMessage(err)}`, { cause: err });
    }
    channel = new ClientUdpChannel(socket, offer, host, onFrame, openPayloads);
    return channel;
  }

  get localPort(): number {
    return this.socket.port;
  }

  /** Seals and sends one frame (undefined: a keepalive); false when this direction has used up its counter. */
  send(frame: AudioFrame | undefined, now: number): boolean {
    if (this.closed || this.counter > MAX_DATAGRAM_COUNTER) return false;
    const header = this.header;
    header.flags = frame ? (frame.voice ? DatagramFlag.VOICE : 0) : DatagramFlag.KEEPALIVE;
    header.sessionId = this.offer.sessionId;
    header.counter = this.counter++;
    header.seq = frame?.seq ?? 0;
    header.timestamp = frame?.timestamp ?? 0;
    const bytes = sealDatagram(this.key, DatagramDirection.CLIENT_TO_SERVER, header, frame?.payload ?? EMPTY, this.nonce, this.out);
    try {
      // false: the send buffer is full; the caller sends this frame on the stream instead
      if (!this.socket.send(bytes)) return false;
    } catch {
      return false;
    }
    this.sent++;
    this.lastTxAt = now;
    return true;
  }

  private onDatagram(data: Uint8Array, port: number, address: string): void {
    if (this.closed) return;
    // Only the mixer's endpoint; anything else on our ephemeral port is noise. (The plain comparison first:
    // no string is built per datagram unless the socket reports the address in its IPv4-mapped form.)
    if (port !== this.offer.port || (address !== this.host && address.replace(/^::ffff:/, "") !== this.plainHost)) {
      this.dropped++;
      return;
    }
    const header = parseDatagramHeader(data);
    if (typeof header === "string" || header.sessionId !== this.offer.sessionId || this.replay.check(header.counter) !== "ok") {
      this.dropped++;
      return;
    }
    const plain = this.openPayloads ? openDatagram(this.key, DatagramDirection.SERVER_TO_CLIENT, data, header.counter, this.nonce) : EMPTY;
    if (!plain) {
      this.dropped++;
      return;
    }
    this.replay.update(header.counter);
    this.received = (this.received + 1) >>> 0;
    if ((header.flags & DatagramFlag.KEEPALIVE) !== 0) return;
    this.onFrame({ seq: header.seq, timestamp: header.timestamp, payload: plain, voice: (header.flags & DatagramFlag.VOICE) !== 0 });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}

/**
 * Which received seqs were already delivered, for frames that arrive both by stream and by datagram while
 * a direction switches: the last `size` seqs below the highest (older ones are the jitter buffer's "late").
 */
export class RecentSeqs {
  private highest: number | undefined;
  private readonly seen: Uint8Array;

  constructor(private readonly size = 128) {
    this.seen = new Uint8Array(size);
  }

  /** true the first time a seq is offered (within the window), false for a repeat. */
  first(seq: number): boolean {
    seq >>>= 0;
    if (this.highest === undefined) {
      this.highest = seq;
      this.seen[seq % this.size] = 1;
      return true;
    }
    const d = seqDiff(seq, this.highest);
    if (d > 0) {
      if (d >= this.size) this.seen.fill(0);
      else for (let i = 1; i <= d; i++) this.seen[(this.highest + i) % this.size] = 0;
      this.highest = seq;
      this.seen[seq % this.size] = 1;
      return true;
    }
    // Too old to tell (a restarted sender, or a very late frame): let the jitter buffer decide.
    if (-d >= this.size) return true;
    const slot = seq % this.size;
    if (this.seen[slot]) return false;
    this.seen[slot] = 1;
    return true;
  }
}
