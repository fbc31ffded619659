/**
 * Reading a libp2p 3.x stream to its end, safely, with @libp2p/utils' `byteStream`.
 *
 * Pitfall: a stream's async iterator only ends on a 'close' or 'remoteCloseWrite' event that happens while
 * it is iterating. If the remote wrote and closed while the reader was still awaiting something else (even
 * its own `stream.close()`), those events are gone, the data sits in the read buffer, and `for await` waits
 * for ever. `byteStream` attaches its listeners when it is created and calls the stream ended when the
 * remote has closed its writing side and the read buffer is empty, so: create it before awaiting anything.
 */
import type { Stream } from "@libp2p/interface";
import { byteStream } from "@libp2p/utils";

export function readAll(stream: Stream, maxBytes: number, signal: AbortSignal): Promise<Uint8Array> {
  // Created synchronously, before the caller awaits anything (see above).
  const bytes = byteStream(stream, { maxBufferSize: maxBytes });
  return (async () => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for (;;) {
        // Everything buffered so far, or null once the remote has closed and nothing is left.
        const chunk = await bytes.read({ signal });
        if (chunk === null) return joinChunks(chunks, size);
        size += chunk.byteLength;
        if (size > maxBytes) throw new Error(`answer exceeds ${maxBytes} bytes`);
        chunks.push(chunk.subarray());
      }
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      stream.abort(e);
      throw e;
    }
  })();
}

/** Concatenates without node:buffer, so this module also runs in a browser (the SDK, the WebSocket tests). */
function joinChunks(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}
