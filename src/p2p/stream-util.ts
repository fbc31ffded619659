/**
 * Reading a libp2p 3.x stream to its end, safely.
 *
 * Pitfall: a stream's async iterator only ends on a 'close' or 'remoteCloseWrite' event that happens while
 * it is iterating. If the remote wrote and closed while the reader was still awaiting something else (even
 * its own `stream.close()`), those events are gone, the data sits in the read buffer, and `for await` waits
 * for ever; `abort()` does not wake it either because the stream is already closed. `readableEnded` is no
 * help: a freshly negotiated outbound stream can report true while data is still to come (multistream-select
 * read ahead). So: attach the listeners first, and call the stream done when the remote has closed its
 * writing side (or the stream is closed) and the read buffer is empty, checked on every event.
 */
import type { Stream } from "@libp2p/interface";

export function readAll(stream: Stream, maxBytes: number, signal: AbortSignal): Promise<Uint8Array> {
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let settled = false;
    const cleanup = () => {
      settled = true;
      stream.removeEventListener("message", onMessage);
      stream.removeEventListener("end", check);
      stream.removeEventListener("remoteCloseWrite", check);
      stream.removeEventListener("close", onClose);
      signal.removeEventListener("abort", onAbort);
    };
    const finish = () => {
      if (settled) return;
      cleanup();
      const out = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        out.set(c, off);
        off += c.byteLength;
      }
      resolve(out);
    };
    const fail = (err: Error) => {
      if (settled) return;
      cleanup();
      stream.abort(err);
      reject(err);
    };
    /** Nothing more can arrive and nothing is waiting to be dispatched. */
    const check = () => {
      if ((stream.remoteWriteStatus === "closed" || stream.status !== "open") && stream.readBufferLength === 0) finish();
    };
    const onMessage = (evt: Event) => {
      const data = (evt as Event & { data: Uint8Array | { subarray(): Uint8Array } }).data;
      const bytes = data instanceof Uint8Array ? data : data.subarray();
      size += bytes.byteLength;
      if (size > maxBytes) return fail(new Error(`answer exceeds ${maxBytes} bytes`));
      chunks.push(bytes);
      check();
    };
    const onClose = (evt: Event) => {
      const err = (evt as Event & { error?: Error }).error;
      if (err) fail(err);
      else check();
    };
    const onAbort = () => fail(signal.reason instanceof Error ? signal.reason : new Error("read timed out"));
    if (signal.aborted) return onAbort();
    stream.addEventListener("message", onMessage);
    stream.addEventListener("end", check);
    stream.addEventListener("remoteCloseWrite", check);
    stream.addEventListener("close", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
    // Everything may already be over (buffered data, if any, is dispatched in a microtask and re-checks).
    check();
  });
}
