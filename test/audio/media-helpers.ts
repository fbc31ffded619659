/** Signal helpers for the media-plane tests: tones, Goertzel power, SNR, engine settings. */
import type { MediaSettings } from "../../src/audio";

export const SR = 48_000;
export const FRAME = 960;

/** One 20 ms frame `index` of a sine at `hz` (continuous phase across frames). */
export function toneFrame(hz: number, index: number, amplitude = 8000): Int16Array {
  const out = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * hz * (index * FRAME + i)) / SR));
  return out;
}

/** Square-ish full-scale wave: the worst case for a limiter (its peak is its RMS). */
export function squareFrame(hz: number, index: number, amplitude = 32000): Int16Array {
  const out = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) {
    const s = Math.sin((2 * Math.PI * hz * (index * FRAME + i)) / SR);
    out[i] = s >= 0 ? amplitude : -amplitude;
  }
  return out;
}

export function concat(frames: Int16Array[]): Int16Array {
  const out = new Int16Array(frames.length * FRAME);
  for (const [i, f] of frames.entries()) out.set(f, i * FRAME);
  return out;
}

/** Goertzel: power of `hz` in `x` (normalised by length², so comparable across lengths). */
export function goertzel(x: ArrayLike<number>, hz: number, sr = SR): number {
  const w = (2 * Math.PI * hz) / sr;
  const c = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < x.length; i++) {
    const s0 = x[i]! + c * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const p = s1 * s1 + s2 * s2 - c * s1 * s2;
  return p / (x.length * x.length);
}

export function db(ratio: number): number {
  return 10 * Math.log10(Math.max(ratio, 1e-30));
}

export function rms(x: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) e += x[i]! * x[i]!;
  return Math.sqrt(e / Math.max(1, x.length));
}

export function peak(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return m;
}

/** The frequency (step `step` Hz) with the most Goertzel power in [lo, hi]. */
export function dominantHz(x: ArrayLike<number>, lo: number, hi: number, step = 2): number {
  let best = lo;
  let bestP = -1;
  for (let f = lo; f <= hi; f += step) {
    const p = goertzel(x, f);
    if (p > bestP) {
      bestP = p;
      best = f;
    }
  }
  return best;
}

/**
 * SNR of `decoded` against `ref` after compensating the codec delay: the lag in [0, maxLag] with the
 * best correlation is used (Opus adds a few ms of look-ahead).
 */
export function snrDb(ref: Int16Array, decoded: Int16Array, maxLag = 960): { snr: number; lag: number } {
  let bestLag = 0;
  let best = -Infinity;
  const n = ref.length - maxLag;
  for (let lag = 0; lag <= maxLag; lag++) {
    let c = 0;
    for (let i = 0; i < n; i += 4) c += ref[i]! * decoded[i + lag]!;
    if (c > best) {
      best = c;
      bestLag = lag;
    }
  }
  let sig = 0;
  let err = 0;
  for (let i = 0; i < n; i++) {
    const d = ref[i]! - decoded[i + bestLag]!;
    sig += ref[i]! * ref[i]!;
    err += d * d;
  }
  return { snr: db(sig / Math.max(err, 1)), lag: bestLag };
}

export function mediaSettings(over: Partial<MediaSettings> = {}): MediaSettings {
  return {
    topKSpeakers: 3,
    sharedEncode: true,
    bitrate: 32000,
    jitterMinMs: 20,
    jitterMaxMs: 200,
    maxRooms: 5,
    maxParticipants: 100,
    ...over,
  };
}

/** Polls `cond` every 20 ms until it holds or `timeoutMs` passes (a bound for waiting, not a timing assertion). */
export async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await Bun.sleep(20);
  }
  return cond();
}

/** Frequencies of fskFrame: 16 tones 100 Hz apart, each a whole number of cycles per 10 ms. */
export const FSK_TONES = 16;
const fskHz = (symbol: number) => 500 + 100 * symbol;

/**
 * Frame `index` of a "numbered" continuous tone: frame k is a sine at 500 + 100·(k mod 16) Hz. Every
 * frequency has a whole number of cycles per frame, so the phase is 0 at every frame boundary and the
 * signal never steps (continuous talk, no pauses). fskSymbol() reads k mod 16 back from decoded audio,
 * which tells which input frame a tick played: latency measured on the audio itself.
 */
export function fskFrame(index: number, amplitude = 8000): Int16Array {
  const hz = fskHz(index % FSK_TONES);
  const out = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * hz * i) / SR));
  return out;
}

/** The fskFrame symbol (k mod 16) dominating a decoded frame, read after the codec delay (samples 400-879). */
export function fskSymbol(decoded: Int16Array): number {
  const x = decoded.subarray(400, 880);
  let best = 0;
  let bestP = -1;
  for (let s = 0; s < FSK_TONES; s++) {
    const p = goertzel(x, fskHz(s));
    if (p > bestP) {
      bestP = p;
      best = s;
    }
  }
  return best;
}

/** Largest sample-to-sample step: a click is a step far above what the signal's own slope allows. */
export function maxStep(x: ArrayLike<number>, prev?: number): number {
  let m = prev === undefined ? 0 : Math.abs(x[0]! - prev);
  for (let i = 1; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - x[i - 1]!));
  return m;
}
