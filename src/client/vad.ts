/**
 * The sender side of voice activity (protocol 1.1.0 AUDIO_VAD): a simple energy gate on the PCM we encode.
 * The mixer only uses the flag to skip decoding silence and always measures what it does decode, so the
 * gate errs towards "voice": a low threshold, a 2-frame onset is not needed (the first loud frame counts),
 * and a 300 ms hangover so word endings and short pauses stay flagged.
 */
import { FRAME_SAMPLES } from "../protocol";

/** dBFS above which a frame is voice: well over an idle microphone's noise (about -60), under soft speech. */
export const VOICE_GATE_DB = -50;
/** Frames a gate stays open after the last loud frame (300 ms). */
export const VOICE_HANGOVER_FRAMES = 15;

export class VoiceGate {
  private hang = 0;

  constructor(
    private readonly thresholdDb = VOICE_GATE_DB,
    private readonly hangoverFrames = VOICE_HANGOVER_FRAMES,
  ) {}

  /** Whether this 20 ms frame (or the ones just before it) carries voice. */
  update(pcm: Int16Array): boolean {
    let e = 0;
    const n = Math.min(pcm.length, FRAME_SAMPLES);
    for (let i = 0; i < n; i++) e += pcm[i]! * pcm[i]!;
    const level = 10 * Math.log10(e / Math.max(1, n) / (32768 * 32768) + 1e-12);
    if (level > this.thresholdDb) this.hang = this.hangoverFrames;
    else if (this.hang > 0) this.hang--;
    return this.hang > 0;
  }
}
