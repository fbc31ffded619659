/**
 * A participant for real-time audio tests and benches: sends a continuous tone as Opus every 20 ms and
 * decodes everything it receives, recording per received frame its arrival time and whether it held the
 * other participant's tone, so gaps in what one hears of another can be measured.
 */
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { AudioSession, type VoiceTransport } from "../../src/client";
import type { OpusCodec } from "../../src/protocol";
import { db, goertzelPower, rms, tone } from "./net-fakes";

export type ToneParticipant = Awaited<ReturnType<typeof toneParticipant>>;

export async function toneParticipant(
  codec: OpusCodec,
  libp2p: Libp2p,
  addr: string,
  room: string,
  sendFreq: number,
  heardFreq: number,
  opts: { protocol?: string; transport?: VoiceTransport } = {},
) {
  const decoder = codec.decoder();
  const encoder = codec.encoder(32_000);
  const pcm = tone(sendFreq, 4, 6000);
  const arrivals: Array<{ at: number; heard: boolean }> = [];
  const recent: Int16Array[] = [];
  const session = await AudioSession.open({
    libp2p,
    target: multiaddr(addr),
    room,
    ...(opts.protocol ? { protocol: opts.protocol } : {}),
    ...(opts.transport ? { transport: opts.transport } : {}),
    onAudio: (f, at) => {
      let out: Int16Array;
      try {
        out = decoder.decode(f.payload);
      } catch {
        return;
      }
      const heard = rms(out) > 300 && goertzelPower(out, heardFreq) > 4 * goertzelPower(out, sendFreq);
      arrivals.push({ at, heard });
      recent.push(out);
      if (recent.length > 50) recent.shift();
    },
  });
  let seq = 0;
  const timer = setInterval(() => {
    // 4 s of either tone is a whole number of periods, so looping it stays continuous
    const off = (seq % 200) * 960;
    session.sendAudio({ seq, timestamp: (seq * 960) >>> 0, payload: encoder.encode(pcm.subarray(off, off + 960)) });
    seq++;
  }, 20);
  return {
    session,
    arrivals,
    /** dB of the other's tone over our own in the last second received */
    toneDb(): number {
      const all = new Int16Array(recent.length * 960);
      for (let i = 0; i < recent.length; i++) all.set(recent[i]!, i * 960);
      return db(goertzelPower(all, heardFreq) / Math.max(1e-9, goertzelPower(all, sendFreq)));
    },
    /** longest time in [from, to] between two received frames */
    maxGap(from: number, to: number): number {
      let worst = 0;
      let last = from;
      for (const a of arrivals) {
        if (a.at < from || a.at > to) continue;
        worst = Math.max(worst, a.at - last);
        last = a.at;
      }
      return Math.max(worst, to - last);
    },
    /** longest time in [from, to] without a received frame that held the other's tone */
    maxUnheard(from: number, to: number): number {
      let worst = 0;
      let last = from;
      for (const a of arrivals) {
        if (a.at < from || a.at > to || !a.heard) continue;
        worst = Math.max(worst, a.at - last);
        last = a.at;
      }
      return Math.max(worst, to - last);
    },
    stop() {
      clearInterval(timer);
      session.abort("test over");
      encoder.destroy();
      decoder.destroy();
    },
  };
}
