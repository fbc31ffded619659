/**
 * The Opus codec in a browser: the same wasm media core as the node (libopus 1.3.1), fetched over HTTP and
 * compiled once. By default it is fetched from beside the bundle (bundlers copy the .wasm next to the
 * script: `bun build --target browser` does); setMediaCoreSource() points it elsewhere or hands it
 * bytes or a compiled module.
 */
import wasmAsset from "../../wasm/build/agora_media.wasm" with { type: "file" };
import { createOpusCodec } from "../audio/portable";
import { AgoraError, errorMessage } from "../errors";
import type { OpusCodec } from "../protocol";

/** Where the media core comes from: a URL to fetch, its bytes, or a compiled module. */
export type MediaCoreSource = string | URL | BufferSource | WebAssembly.Module;

let source: MediaCoreSource | undefined;
let modulePromise: Promise<WebAssembly.Module> | undefined;

/** Sets where the media core (agora_media.wasm) is loaded from; call before the first codec use. */
export function setMediaCoreSource(s: MediaCoreSource): void {
  source = s;
  modulePromise = undefined;
}

/** The default URL: the bundled asset, resolved against the bundle's own URL. */
export function defaultMediaCoreUrl(): URL {
  return new URL(wasmAsset, import.meta.url);
}

async function compile(s: MediaCoreSource): Promise<WebAssembly.Module> {
  if (s instanceof WebAssembly.Module) return s;
  if (typeof s !== "string" && !(s instanceof URL)) return WebAssembly.compile(s);
  const url = s.toString();
  const res = await fetch(url);
  if (!res.ok) throw new AgoraError("MEDIA_ENGINE", `cannot fetch the media core ${url}: HTTP ${res.status}`);
  return WebAssembly.compile(await res.arrayBuffer());
}

/** The browser's codec: one compiled module, one wasm instance shared by every encoder/decoder. */
export async function loadBrowserOpusCodec(): Promise<OpusCodec> {
  modulePromise ??= compile(source ?? defaultMediaCoreUrl()).catch((err: unknown) => {
    modulePromise = undefined;
    throw err instanceof AgoraError
      ? err
      : new AgoraError("MEDIA_ENGINE", `cannot load the media core: ${errorMessage(err)}`, { cause: err });
  });
  return createOpusCodec(await modulePromise);
}
