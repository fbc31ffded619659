/**
 * Standalone Opus encoder/decoder (48 kHz mono, 20 ms frames) over the same wasm module as the mixer,
 * for in-process use: the join client, tests, tools. All codecs created by createOpusCodec() in one
 * thread share one wasm instance; each encoder/decoder owns its state in it until destroy().
 */
import { AgoraError } from "../errors";
import type { OpusCodec, OpusDecoder, OpusEncoder, OpusEncoderOptions } from "../protocol";
import { FRAME_SAMPLES, MAX_PACKET, MediaCore } from "./core";

export type { OpusCodec, OpusDecoder, OpusEncoder, OpusEncoderOptions };

let corePromise: Promise<MediaCore> | undefined;

function sharedCore(): Promise<MediaCore> {
  corePromise ??= MediaCore.create().catch((err: unknown) => {
    corePromise = undefined;
    throw err;
  });
  return corePromise;
}

// Frees codec state that was never destroyed explicitly (a leak is bounded by the GC, not forever).
const leaks = new FinalizationRegistry<() => void>((release) => release());

// One core per module given by a caller that loads the wasm itself (a browser fetches it; no Bun.file there).
const coresByModule = new WeakMap<WebAssembly.Module, Promise<MediaCore>>();

function coreFor(module: WebAssembly.Module): Promise<MediaCore> {
  let p = coresByModule.get(module);
  if (!p) {
    p = MediaCore.create(module);
    coresByModule.set(module, p);
  }
  return p;
}

/** `module`: the compiled media core (default: the embedded wasm file, read with Bun.file). */
export async function createOpusCodec(module?: WebAssembly.Module): Promise<OpusCodec> {
  const core = await (module ? coreFor(module) : sharedCore());
  const x = core.x;
  return {
    encoder(bitrate: number, options: OpusEncoderOptions = {}): OpusEncoder {
      const complexity = options.complexity ?? 10;
      if (!Number.isInteger(bitrate) || bitrate < 6000 || bitrate > 510000) {
        throw new AgoraError("MEDIA_ENGINE", `Opus bitrate ${bitrate} out of range 6000..510000`);
      }
      if (!Number.isInteger(complexity) || complexity < 0 || complexity > 10) {
        throw new AgoraError("MEDIA_ENGINE", `Opus complexity ${complexity} out of range 0..10`);
      }
      let enc = x.am_enc_create(bitrate, complexity, options.fec ? 1 : 0);
      if (!enc) throw new AgoraError("MEDIA_ENGINE", "could not create an Opus encoder");
      const token = {};
      const ptr = enc;
      leaks.register(token, () => x.am_enc_destroy(ptr), token);
      const live = (): number => {
        if (!enc) throw new AgoraError("MEDIA_ENGINE", "Opus encoder used after destroy()");
        return enc;
      };
      return {
        encode(pcm: Int16Array): Uint8Array {
          const e = live();
          if (pcm.length !== FRAME_SAMPLES) {
            throw new AgoraError("MEDIA_ENGINE", `encode needs ${FRAME_SAMPLES} samples (20 ms at 48 kHz), got ${pcm.length}`);
          }
          core.heapI16().set(pcm, core.scratchPcm / 2);
          const n = x.am_enc_encode(e, core.scratchPcm, core.scratchPacket, MAX_PACKET);
          if (n < 0) throw new AgoraError("MEDIA_ENGINE", `Opus encode failed (error ${n})`);
          return core.heapU8().slice(core.scratchPacket, core.scratchPacket + n);
        },
        setBitrate(b: number): void {
          if (x.am_enc_set_bitrate(live(), b) < 0) throw new AgoraError("MEDIA_ENGINE", `Opus bitrate ${b} rejected`);
        },
        destroy(): void {
          if (!enc) return;
          x.am_enc_destroy(enc);
          leaks.unregister(token);
          enc = 0;
        },
      };
    },

    decoder(): OpusDecoder {
      let dec = x.am_dec_create();
      if (!dec) throw new AgoraError("MEDIA_ENGINE", "could not create an Opus decoder");
      const token = {};
      const ptr = dec;
      leaks.register(token, () => x.am_dec_destroy(ptr), token);
      const run = (packet: Uint8Array | null, fec: boolean): Int16Array => {
        if (!dec) throw new AgoraError("MEDIA_ENGINE", "Opus decoder used after destroy()");
        let data = 0;
        let len = 0;
        if (packet && packet.length > 0) {
          data = core.putPacket(packet);
          len = packet.length;
        }
        const n = x.am_dec_decode(dec, data, len, core.scratchPcm, fec ? 1 : 0);
        if (n !== FRAME_SAMPLES) {
          throw new AgoraError(
            "MEDIA_ENGINE",
            n === -2 ? "Opus packet is not a 20 ms frame" : `Opus decode failed (error ${n}): malformed packet`,
          );
        }
        return core.heapI16().slice(core.scratchPcm / 2, core.scratchPcm / 2 + FRAME_SAMPLES);
      };
      return {
        decode: (packet) => run(packet, false),
        decodeFec: (next) => run(next, true),
        destroy(): void {
          if (!dec) return;
          x.am_dec_destroy(dec);
          leaks.unregister(token);
          dec = 0;
        },
      };
    },
  };
}
