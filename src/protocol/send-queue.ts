/**
 * Real-time send policy on top of a libp2p stream's backpressure, shared by the room service and the
 * clients. The wire codec (wire.ts) says what the bytes are; this file says what happens when the
 * transport cannot take them as fast as they come.
 */
/** `message` events carry a Uint8Array or a Uint8ArrayList; both have a `subarray()` giving contiguous bytes. */
export function chunkBytes(data: { subarray(): Uint8Array }): Uint8Array {
  return data.subarray();
}

/** The part of a libp2p `Stream` the outbound queue needs (structural, so tests can fake it). */
export interface DrainableStream {
  readonly writableNeedsDrain: boolean;
  readonly writeStatus: string;
  send(data: Uint8Array): boolean;
  addEventListener(type: "drain", listener: () => void): void;
  removeEventListener(type: "drain", listener: () => void): void;
}

/**
 * Real-time send queue on top of a stream's backpressure. While the transport says "drain needed", messages
 * wait here; when more than `capacity` are waiting, the OLDEST droppable one (audio) is discarded: late
 * audio is worth less than current audio, and an unbounded queue would turn a slow receiver into ever
 * growing latency and memory. Control messages (PONG, ERROR) are never dropped. Nothing is passed to
 * `stream.send` while it needs a drain, so the stream's own buffer holds at most one message.
 */
export class OutboundQueue {
  private readonly queue: { bytes: Uint8Array; droppable: boolean }[] = [];
  private listening = false;
  private closed = false;
  /** audio messages discarded because the peer could not keep up */
  dropped = 0;
  sent = 0;

  constructor(
    private readonly stream: DrainableStream,
    private readonly capacity: number,
    private readonly onDrop?: () => void,
  ) {}

  get depth(): number {
    return this.queue.length;
  }

  /** Returns false when the stream can no longer be written (the caller should tear the session down). */
  send(bytes: Uint8Array, droppable = true): boolean {
    if (this.closed || this.stream.writeStatus !== "writable") return false;
    if (this.queue.length === 0 && !this.stream.writableNeedsDrain) return this.write(bytes);
    if (this.queue.length >= this.capacity) {
      const i = this.queue.findIndex((e) => e.droppable);
      if (i >= 0) {
        this.queue.splice(i, 1);
        this.dropped++;
        this.onDrop?.();
      } else if (droppable) {
        // Queue full of control messages: drop the new audio instead.
        this.dropped++;
        this.onDrop?.();
        return true;
      }
    }
    this.queue.push({ bytes, droppable });
    if (!this.listening) {
      this.listening = true;
      this.stream.addEventListener("drain", this.flush);
    }
    return true;
  }

  private write(bytes: Uint8Array): boolean {
    try {
      this.stream.send(bytes);
      this.sent++;
      return true;
    } catch {
      // send throws once the write end is closed/reset; the 'close' event tears the session down.
      this.close();
      return false;
    }
  }

  private readonly flush = (): void => {
    while (this.queue.length > 0 && !this.stream.writableNeedsDrain && !this.closed) {
      if (this.stream.writeStatus !== "writable") {
        this.close();
        return;
      }
      const e = this.queue.shift()!;
      if (!this.write(e.bytes)) return;
    }
    if (this.queue.length === 0 && this.listening) {
      this.listening = false;
      this.stream.removeEventListener("drain", this.flush);
    }
  };

  close(): void {
    this.closed = true;
    this.queue.length = 0;
    if (this.listening) {
      this.listening = false;
      this.stream.removeEventListener("drain", this.flush);
    }
  }
}
