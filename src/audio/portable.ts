/**
 * The part of the media plane's face that runs in any JavaScript runtime, a browser included: the
 * standalone Opus codec over a media core module the caller compiled (no Bun API, no Node builtin, no
 * worker, no metrics). Everything else of src/audio is reached through index.ts.
 */

export type { OpusCodec, OpusDecoder, OpusEncoder, OpusEncoderOptions } from "./codec";
export { createOpusCodec } from "./codec";
