/**
 * A participant for integration tests and benches that join rooms by name: a RoomNavigator, a 20 ms sender
 * of a pre-encoded tone, and what it received (frame times, the largest inter-frame gap, decoded PCM).
 */
import type { Libp2p } from "@libp2p/interface";
import type { AudioSession, OpusCodec, OpusDecoder, RoomLocator } from "../../src/client";
import { RoomNavigator } from "../../src/client";
import { FRAME_SAMPLES } from "../../src/protocol";
import { tone } from "./net-fakes";

const running: Participant[] = [];

export async function stopParticipants(): Promise<void> {
  for (const p of running.splice(0)) await p.stop().catch(() => {});
}

/** One participant: a navigator, a 20 ms sender of its tone, and what it received. */
export class Participant {
  readonly nav: RoomNavigator;
  session: AudioSession | undefined;
  lost = 0;
  moves = 0;
  movedAt: number[] = [];
  frames = 0;
  lastFrameAt = 0;
  maxGapMs = 0;
  /** decoded PCM of the last frames (for tone checks) */
  pcm: Int16Array[] = [];
  private timer: ReturnType<typeof setInterval> | undefined;
  private seq = (Math.random() * 2 ** 32) >>> 0;
  private readonly dec: OpusDecoder;
  private readonly frames50: Uint8Array[] = [];
  private k = 0;
  measureGaps = false;

  constructor(
    codec: OpusCodec,
    libp2p: Libp2p,
    loc: RoomLocator,
    region: string,
    room: string,
    readonly freq: number | undefined,
    readonly keepPcm = false,
  ) {
    this.nav = new RoomNavigator({ libp2p, room, locator: loc, region });
    this.dec = codec.decoder();
    // One second of the tone (or silence) encoded once and sent in a loop: encoding 20 participants live
    // would cost more CPU than the nodes under test.
    const enc = codec.encoder(32_000);
    const src = freq ? tone(freq, 1, 6000) : new Int16Array(50 * FRAME_SAMPLES);
    for (let k = 0; k < 50; k++) this.frames50.push(enc.encode(src.subarray(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)).slice());
    enc.destroy();
    running.push(this);
  }

  async join(): Promise<void> {
    this.session = await this.nav.open(this.sessionOptions());
    this.timer = setInterval(() => {
      const payload = this.frames50[this.k % 50]!;
      this.k++;
      this.nav.sendAudio({ seq: this.seq, timestamp: (this.seq * FRAME_SAMPLES) >>> 0, payload });
      this.seq = (this.seq + 1) >>> 0;
      if (this.k % 50 === 0) this.session?.ping();
    }, 20);
  }

  /** What join and failover open the session with: frames counted, MOVEs followed, a lost session counted. */
  private sessionOptions(): Parameters<RoomNavigator["open"]>[0] {
    return {
      onAudio: (f, at) => {
        if (this.measureGaps && this.lastFrameAt > 0) this.maxGapMs = Math.max(this.maxGapMs, at - this.lastFrameAt);
        this.lastFrameAt = at;
        this.frames++;
        if (this.keepPcm) {
          this.pcm.push(this.dec.decode(f.payload));
          if (this.pcm.length > 100) this.pcm.shift();
        }
      },
      onMoved: (s) => {
        this.session = s;
        this.moves++;
        this.movedAt.push(performance.now());
      },
      onClose: (err) => {
        if (err) this.lost++;
      },
    };
  }

  /** after a session lost while its host lives on (a connection reset): rejoin where the room lives now */
  rejoin(): Promise<void> {
    return this.reopen("rejoin");
  }

  /**
   * after a lost host: rejoin the rule's successor (what RoomConnection and the join client do), with the
   * same handlers as join (a later MOVE is followed and counted, a later loss counted)
   */
  failover(): Promise<void> {
    this.nav.hostLost();
    return this.reopen("failover");
  }

  /** up to 10 tries, 100 ms apart (a busy machine's successor may still be claiming the room) */
  private async reopen(what: string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      try {
        this.session = await this.nav.open(this.sessionOptions());
        return;
      } catch {
        await Bun.sleep(100);
      }
    }
    throw new Error(`${what} did not succeed`);
  }

  private stopped = false;

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    await this.session?.leave().catch(() => {});
    this.dec.destroy();
  }
}
