/**
 * Types shared by the node's media plane, the room server and the participant SDK: the encoded frame as the
 * wire carries it, and the Opus codec contract. The wasm libopus in src/audio implements the codec; the
 * SDK and tests may bring any implementation with this shape.
 */

/** One encoded Opus frame (48 kHz mono, 20 ms) as carried on the wire. */
export interface AudioFrame {
  /** uint32, wraps; per sender */
  seq: number;
  /** uint32 sample clock at 48 kHz (increments by 960 per 20 ms frame); wraps */
  timestamp: number;
  payload: Uint8Array;
  /**
   * The sender's voice-activity flag (protocol 1.1.0 AUDIO_VAD, or the UDP datagram header): true = voice,
   * false = silence (the mixer may skip decoding it), absent = unknown (always decoded).
   */
  voice?: boolean;
}

export interface OpusEncoder {
  /** 960 samples (20 ms at 48 kHz, mono) → one Opus packet (a fresh copy). */
  encode(pcm: Int16Array): Uint8Array;
  setBitrate(bitrate: number): void;
  destroy(): void;
}

export interface OpusDecoder {
  /**
   * One packet → 960 samples (a fresh array). `null` = the packet was lost: Opus packet loss concealment.
   * Throws AgoraError("MEDIA_ENGINE") on a malformed packet or one that is not 20 ms long.
   */
  decode(packet: Uint8Array | null): Int16Array;
  /**
   * The frame BEFORE `next` was lost: recover it from `next`'s in-band FEC (falls back to PLC when
   * `next` carries none). Decode `next` itself afterwards as usual.
   */
  decodeFec(next: Uint8Array): Int16Array;
  destroy(): void;
}

export interface OpusEncoderOptions {
  /** 0..10, default 10 (libopus default). */
  complexity?: number;
  /** In-band FEC (LBRR) for lossy transports; default off. */
  fec?: boolean;
}

export interface OpusCodec {
  encoder(bitrate: number, options?: OpusEncoderOptions): OpusEncoder;
  decoder(): OpusDecoder;
}
