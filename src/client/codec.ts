/**
 * The codec the SDK uses under Bun and Node unless given one: the media plane's wasm libopus, loaded on
 * first use so that network-only users (discover, control) never pay for it.
 *
 * The media core is read here rather than by src/audio's loader because that one resolves the file with
 * Bun.file against the working directory: right inside the source tree and the compiled executable, wrong
 * in the built package (dist/…/agora_media-<hash>.wasm sits beside the bundle) and absent under Node.
 */
import wasmAsset from "../../wasm/build/agora_media.wasm" with { type: "file" };
import { AgoraError, errorMessage } from "../errors";
import type { OpusCodec } from "../protocol";

let modulePromise: Promise<WebAssembly.Module> | undefined;

async function compileMediaCore(): Promise<WebAssembly.Module> {
  // A bundle names its copy relative to itself; the source tree and the executable give an absolute path.
  const path = wasmAsset.startsWith(".") ? decodeURIComponent(new URL(wasmAsset, import.meta.url).pathname) : wasmAsset;
  try {
    const bytes = typeof Bun !== "undefined" ? await Bun.file(path).arrayBuffer() : await (await import("node:fs/promises")).readFile(path);
    return await WebAssembly.compile(bytes);
  } catch (err) {
    throw new AgoraError("MEDIA_ENGINE", `cannot load the media core ${path}: ${errorMessage(err)} (run wasm/build.sh)`, { cause: err });
  }
}

export async function loadOpusCodec(): Promise<OpusCodec> {
  const { createOpusCodec } = await import("../audio/portable");
  modulePromise ??= compileMediaCore().catch((err: unknown) => {
    modulePromise = undefined;
    throw err;
  });
  return createOpusCodec(await modulePromise);
}
