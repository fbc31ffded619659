/**
 * 16-bit PCM WAV read/write for the join client, loadgen and tests.
 *
 * Hand-written on purpose (it is ~250 lines): the npm candidates don't fit. `wavefile` and `node-wav` read
 * and write whole files only, and the join client must write its output continuously, with a header that
 * is valid at every moment (so a killed client still leaves a playable file); `wav` streams but is a
 * Node-streams API unmaintained since 2018. We also want errors that name the file and exactly what is
 * wrong, as typed AgoraErrors.
 *
 * Reading accepts RIFF/WAVE, PCM 16-bit (format 1, or WAVE_FORMAT_EXTENSIBLE with the PCM sub-format),
 * any channel count (downmixed to mono by averaging) and any sample rate from 8 kHz to 192 kHz (resampled
 * to 48 kHz with a windowed-sinc filter). Anything else is rejected with a clear message.
 */
import { closeSync, fstatSync, openSync, readFileSync, writeSync } from "node:fs";
import { AgoraError, errorMessage } from "../errors";

export const WAV_TARGET_RATE = 48_000;
const WAVE_FORMAT_PCM = 1;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
const HEADER_BYTES = 44;

export class WavError extends AgoraError {
  readonly file: string;
  constructor(file: string, message: string, cause?: unknown) {
    super("USAGE", message, { where: file, cause });
    this.name = "WavError";
    this.file = file;
  }
}

export interface WavInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  /** frames (samples per channel) in the file */
  frames: number;
}

export interface DecodedWav extends WavInfo {
  /** interleaved samples as stored */
  data: Int16Array;
}

/** Parses a 16-bit PCM WAV held in memory. `file` names the source in errors. */
export function decodeWav(bytes: Uint8Array, file: string): DecodedWav {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (o: number) => String.fromCharCode(bytes[o]!, bytes[o + 1]!, bytes[o + 2]!, bytes[o + 3]!);
  if (bytes.length < 12) throw new WavError(file, `not a WAV file: ${bytes.length} bytes is too short for a RIFF header`);
  if (tag(0) !== "RIFF")
    throw new WavError(file, tag(0) === "RIFX" ? "big-endian RIFX WAV is not supported" : "not a WAV file: no RIFF header");
  if (tag(8) !== "WAVE") throw new WavError(file, `not a WAV file: RIFF type is "${tag(8)}", expected "WAVE"`);
  let fmt: { format: number; channels: number; sampleRate: number; bits: number; blockAlign: number } | undefined;
  let data: { offset: number; length: number } | undefined;
  let o = 12;
  while (o + 8 <= bytes.length) {
    const id = tag(o);
    let size = view.getUint32(o + 4, true);
    const body = o + 8;
    if (id === "fmt ") {
      if (size < 16 || body + size > bytes.length) throw new WavError(file, `fmt chunk of ${size} bytes is truncated`);
      let format = view.getUint16(body, true);
      const bits = view.getUint16(body + 14, true);
      if (format === WAVE_FORMAT_EXTENSIBLE) {
        if (size < 40) throw new WavError(file, "WAVE_FORMAT_EXTENSIBLE fmt chunk is truncated");
        format = view.getUint16(body + 24, true); // first two bytes of the sub-format GUID
      }
      fmt = {
        format,
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        blockAlign: view.getUint16(body + 12, true),
        bits,
      };
    } else if (id === "data") {
      // Streaming writers that died leave 0 or 0xFFFFFFFF here; take what is actually in the file.
      if (size === 0 || size === 0xffffffff || body + size > bytes.length) size = bytes.length - body;
      data = { offset: body, length: size };
      if (fmt) break;
    }
    o = body + size + (size & 1); // chunks are word-aligned
  }
  if (!fmt) throw new WavError(file, "no fmt chunk");
  if (!data) throw new WavError(file, "no data chunk");
  if (fmt.format !== WAVE_FORMAT_PCM)
    throw new WavError(
      file,
      `unsupported encoding: format tag ${fmt.format}${fmt.format === 3 ? " (32-bit float)" : ""}; only 16-bit integer PCM is supported (convert with e.g. sox in.wav -b 16 out.wav)`,
    );
  if (fmt.bits !== 16)
    throw new WavError(
      file,
      `unsupported sample size: ${fmt.bits}-bit; only 16-bit PCM is supported (convert with e.g. sox in.wav -b 16 out.wav)`,
    );
  if (fmt.channels < 1 || fmt.channels > 8) throw new WavError(file, `unsupported channel count ${fmt.channels} (1-8 supported)`);
  if (fmt.sampleRate < 8000 || fmt.sampleRate > 192_000)
    throw new WavError(file, `unsupported sample rate ${fmt.sampleRate} Hz (8000-192000 Hz supported)`);
  if (fmt.blockAlign !== fmt.channels * 2)
    throw new WavError(file, `inconsistent fmt chunk: block align ${fmt.blockAlign} for ${fmt.channels} channel(s) of 16 bits`);
  const frames = Math.floor(data.length / fmt.blockAlign);
  const samples = new Int16Array(frames * fmt.channels);
  // Copy little-endian samples; DataView keeps this correct on any host endianness.
  for (let i = 0, p = data.offset; i < samples.length; i++, p += 2) samples[i] = view.getInt16(p, true);
  return { sampleRate: fmt.sampleRate, channels: fmt.channels, bitsPerSample: 16, frames, data: samples };
}

/** Reads a WAV file as 48 kHz mono 16-bit samples: downmixes and resamples as needed. */
export function readWav(path: string): { samples: Int16Array; info: WavInfo } {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new WavError(path, `cannot read: ${errorMessage(err)}`, err);
  }
  const wav = decodeWav(bytes, path);
  const mono = downmix(wav.data, wav.channels);
  const samples = wav.sampleRate === WAV_TARGET_RATE ? mono : resample(mono, wav.sampleRate, WAV_TARGET_RATE);
  return { samples, info: { sampleRate: wav.sampleRate, channels: wav.channels, bitsPerSample: 16, frames: wav.frames } };
}

export function downmix(interleaved: Int16Array, channels: number): Int16Array {
  if (channels === 1) return interleaved;
  const frames = Math.floor(interleaved.length / channels);
  const out = new Int16Array(frames);
  for (let f = 0; f < frames; f++) {
    let sum = 0;
    for (let c = 0; c < channels; c++) sum += interleaved[f * channels + c]!;
    out[f] = Math.round(sum / channels);
  }
  return out;
}

/**
 * Band-limited resampling: Blackman-windowed sinc, cut off a little below the lower Nyquist frequency so
 * downsampling does not alias and upsampling does not image. ~32 taps per output sample: a minute of
 * 44.1 kHz input converts in well under a second, which is fine for a one-off file load.
 */
export function resample(input: Int16Array, fromRate: number, toRate: number): Int16Array {
  if (fromRate === toRate) return input.slice();
  const ratio = toRate / fromRate;
  const outLength = Math.floor(input.length * ratio);
  const out = new Int16Array(outLength);
  const cutoff = Math.min(1, ratio) * 0.94; // fraction of the input Nyquist frequency
  const halfWidth = Math.ceil(16 / cutoff); // in input samples
  for (let i = 0; i < outLength; i++) {
    const t = i / ratio;
    const center = Math.floor(t);
    let acc = 0;
    let norm = 0;
    for (let j = center - halfWidth + 1; j <= center + halfWidth; j++) {
      const x = t - j;
      const wpos = x / halfWidth; // -1..1
      if (wpos <= -1 || wpos >= 1) continue;
      const window = 0.42 + 0.5 * Math.cos(Math.PI * wpos) + 0.08 * Math.cos(2 * Math.PI * wpos);
      const arg = Math.PI * cutoff * x;
      const k = (arg === 0 ? 1 : Math.sin(arg) / arg) * window;
      norm += k;
      if (j >= 0 && j < input.length) acc += input[j]! * k;
    }
    // Normalising by the kernel sum keeps DC gain at exactly 1 whatever the fractional phase.
    const v = Math.round(acc / norm);
    out[i] = Math.min(32767, Math.max(-32768, v));
  }
  return out;
}

function header(sampleRate: number, channels: number, dataBytes: number): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  const v = new DataView(h.buffer);
  const put = (o: number, s: string) => {
    for (let i = 0; i < 4; i++) h[o + i] = s.charCodeAt(i);
  };
  put(0, "RIFF");
  v.setUint32(4, 36 + dataBytes, true);
  put(8, "WAVE");
  put(12, "fmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, WAVE_FORMAT_PCM, true);
  v.setUint16(22, channels, true);
  v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * channels * 2, true);
  v.setUint16(32, channels * 2, true);
  v.setUint16(34, 16, true);
  put(36, "data");
  v.setUint32(40, dataBytes, true);
  return h;
}

function toLittleEndianBytes(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const v = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) v.setInt16(i * 2, samples[i]!, true);
  return out;
}

/** Encodes a complete WAV file in memory. */
export function encodeWav(samples: Int16Array, sampleRate = WAV_TARGET_RATE, channels = 1): Uint8Array {
  const body = toLittleEndianBytes(samples);
  const out = new Uint8Array(HEADER_BYTES + body.length);
  out.set(header(sampleRate, channels, body.length), 0);
  out.set(body, HEADER_BYTES);
  return out;
}

export function writeWav(path: string, samples: Int16Array, sampleRate = WAV_TARGET_RATE, channels = 1): void {
  const w = WavWriter.open(path, sampleRate, channels);
  try {
    w.write(samples);
  } finally {
    w.close();
  }
}

/**
 * Streaming WAV writer. Samples are buffered briefly and appended; the header's sizes are rewritten on
 * every flush, so the file on disk is always a complete, playable WAV of what has been written so far.
 */
export class WavWriter {
  private readonly pending: Int16Array[] = [];
  private pendingSamples = 0;
  private dataBytes = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sampleRate: number,
    readonly channels: number,
    /** flush after this many buffered samples (default: 250 ms) */
    private readonly flushSamples: number,
  ) {}

  static open(path: string, sampleRate = WAV_TARGET_RATE, channels = 1): WavWriter {
    let fd: number;
    try {
      fd = openSync(path, "w");
      writeSync(fd, header(sampleRate, channels, 0), 0, HEADER_BYTES, 0);
    } catch (err) {
      throw new WavError(path, `cannot write: ${errorMessage(err)}`, err);
    }
    return new WavWriter(path, fd, sampleRate, channels, Math.floor(sampleRate / 4) * channels);
  }

  /** Samples written so far (including buffered ones). */
  get samplesWritten(): number {
    return this.dataBytes / 2 + this.pendingSamples;
  }

  write(samples: Int16Array): void {
    if (this.closed) throw new WavError(this.path, "write after close");
    // Copy: callers hand in views of codec memory that the next decode overwrites.
    this.pending.push(samples.slice());
    this.pendingSamples += samples.length;
    if (this.pendingSamples >= this.flushSamples) this.flush();
  }

  flush(): void {
    if (this.closed || this.pendingSamples === 0) return;
    const all = new Int16Array(this.pendingSamples);
    let o = 0;
    for (const p of this.pending) {
      all.set(p, o);
      o += p.length;
    }
    this.pending.length = 0;
    this.pendingSamples = 0;
    const bytes = toLittleEndianBytes(all);
    try {
      writeSync(this.fd, bytes, 0, bytes.length, HEADER_BYTES + this.dataBytes);
      this.dataBytes += bytes.length;
      writeSync(this.fd, header(this.sampleRate, this.channels, this.dataBytes), 0, HEADER_BYTES, 0);
    } catch (err) {
      throw new WavError(this.path, `write failed: ${errorMessage(err)}`, err);
    }
  }

  close(): void {
    if (this.closed) return;
    try {
      this.flush();
    } finally {
      this.closed = true;
      try {
        closeSync(this.fd);
      } catch {
        /* already closed */
      }
    }
  }

  /** Size on disk (for tests of the continuously-valid header). */
  fileBytes(): number {
    return fstatSync(this.fd).size;
  }
}
