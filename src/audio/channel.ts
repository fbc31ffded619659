/**
 * WorkerChannel: the control messages to ONE media worker generation (as mediasoup's Channel is to its
 * worker process). It tags each request with an id, routes the worker's `reply` back to the waiting
 * promise, times requests out, and hands the worker's unsolicited messages (tick reports, logs) to its
 * listeners. Audio never travels here: it crosses in bulk through the SharedArrayBuffer rings.
 *
 * Closing the channel (engine stop, worker death) rejects every request still waiting with a
 * WorkerChannelClosedError at once, instead of leaving each to its timeout; later requests are refused
 * the same way, and whatever the old worker still posts is ignored. A replacement worker gets a new
 * channel, so a late reply can never be taken for the answer to a request of another generation.
 */
import { EventEmitter } from "node:events";
import { AgoraError, errorMessage } from "../errors";
import type { DatagramTriples, FromWorker, TickReport, ToWorker, ToWorkerRequest } from "./worker-protocol";

/** What the channel needs of a worker: a Bun Worker, or a fake in tests. */
export interface WorkerPort {
  postMessage(message: unknown): void;
  addEventListener(type: "message", listener: (e: MessageEvent) => void): void;
  removeEventListener(type: "message", listener: (e: MessageEvent) => void): void;
}

export type WorkerLogMessage = Extract<FromWorker, { t: "log" }>;

export interface WorkerChannelEvents {
  /** The worker's per-tick report (also the cue to drain the outbound ring). */
  tick: [report: TickReport];
  /** A structured log line from the worker. */
  log: [entry: WorkerLogMessage];
  /** STUN messages from the shared UDP socket, one batch per tick that had any. */
  udpStun: [packets: DatagramTriples];
  /** A notify() the worker refused or did not answer in time (not emitted for a closed channel). */
  notifyFailed: [err: AgoraError, request: ToWorkerRequest["t"]];
}

/** Every request still waiting when the channel closed, and every request made after. */
export class WorkerChannelClosedError extends AgoraError {
  constructor(reason: string) {
    super("MEDIA_ENGINE", reason);
    this.name = "WorkerChannelClosedError";
  }
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

interface PendingRequest {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class WorkerChannel extends EventEmitter<WorkerChannelEvents> {
  private readonly pending = new Map<number, PendingRequest>();
  private nextId = 1;
  private closedReason: string | undefined;
  private readonly onMessage = (e: MessageEvent) => this.dispatch(e.data as FromWorker);

  constructor(
    private readonly port: WorkerPort,
    private readonly defaultTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
  ) {
    super();
    port.addEventListener("message", this.onMessage);
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Requests waiting for their reply. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Sends `msg` with a fresh id; resolves with the worker's result, rejects on its error, on timeout or on close. */
  request(msg: ToWorkerRequest, timeoutMs = this.defaultTimeoutMs): Promise<unknown> {
    if (this.closedReason !== undefined) return Promise.reject(new WorkerChannelClosedError(this.closedReason));
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AgoraError("MEDIA_ENGINE", `media worker did not answer ${msg.t} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.port.postMessage({ ...msg, id } as ToWorker);
      } catch (err) {
        this.settle(id)?.reject(
          new AgoraError("MEDIA_ENGINE", `cannot send ${msg.t} to the media worker: ${errorMessage(err)}`, { cause: err }),
        );
      }
    });
  }

  /**
   * Fire-and-forget request: nobody waits for it. A failure is reported as `notifyFailed` unless the
   * channel closed meanwhile (then the state it carried travels in the next worker's restore list).
   */
  notify(msg: ToWorkerRequest): void {
    if (this.closedReason !== undefined) return;
    this.request(msg).catch((err: unknown) => {
      if (this.closedReason === undefined) {
        const e = err instanceof AgoraError ? err : new AgoraError("MEDIA_ENGINE", errorMessage(err), { cause: err });
        this.emit("notifyFailed", e, msg.t);
      }
    });
  }

  /** Rejects every pending request with `reason`, refuses new ones, and stops listening to the worker. Idempotent. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.port.removeEventListener("message", this.onMessage);
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(new WorkerChannelClosedError(reason));
  }

  private settle(id: number): PendingRequest | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  private dispatch(m: FromWorker): void {
    if (this.closedReason !== undefined) return;
    switch (m.t) {
      case "reply": {
        const p = this.settle(m.id);
        if (!p) return; // timed out already: the caller has its answer
        if (m.ok) p.resolve(m.result);
        else p.reject(new AgoraError("MEDIA_ENGINE", `media worker: ${m.error}`));
        return;
      }
      case "tick":
        this.emit("tick", m);
        return;
      case "log":
        this.emit("log", m);
        return;
      case "udpStun":
        this.emit("udpStun", m.packets);
        return;
    }
  }
}
