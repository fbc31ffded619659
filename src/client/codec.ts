/**
 * The codec the SDK uses unless given one: the media plane's wasm libopus, loaded on first use so that
 * network-only users (discover, control) never pay for it.
 */
import type { OpusCodec } from "../protocol";

export async function loadOpusCodec(): Promise<OpusCodec> {
  const { createOpusCodec } = await import("../audio");
  return createOpusCodec();
}
