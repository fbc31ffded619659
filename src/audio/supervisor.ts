/**
 * WorkerSupervisor: spawns the media worker, watches it, and replaces it when it dies (as mediasoup's
 * Worker watches its process, but restarting instead of only reporting).
 *
 * A worker generation is one Bun Worker with its own inbound/outbound rings, heartbeat counter and
 * WorkerChannel. Spawning is synchronous up to the init message, so whatever the engine changes
 * before a spawn is in the restore list it is asked for (`init()`), and whatever it changes after is
 * posted behind the init to the new worker: nothing falls in between.
 *
 * A worker that reports an uncaught error, exits, or stops advancing its shared heartbeat counter is
 * declared dead (`died`), terminated, and replaced; `restarted` follows once the replacement has
 * acknowledged its init. Deaths soon after a start count as a crash loop and back off exponentially.
 *
 * Events (typed): `spawned` (a new generation exists: attach to its channel), `retiring` (a generation
 * is about to be terminated: last chance to drain its outbound ring), `died` (reason), `restarted`
 * (ms the restart took, generation number).
 */

import { EventEmitter } from "node:events";
import { readdirSync } from "node:fs";
import { AgoraError, errorMessage } from "../errors";
import type { Logger } from "../log";
import { WorkerChannel } from "./channel";
import { loadCoreModule } from "./core";
import { createRingBuffer, RingReader, RingWriter } from "./rings";
import type { RestoreRoom, UdpDatagramSession, WorkerDatagramConfig, WorkerSettings } from "./worker-protocol";

export const DEFAULT_RING_BYTES = 4 * 1024 * 1024;
export const INIT_TIMEOUT_MS = 10_000;
const WATCHDOG_PERIOD_MS = 100;
/** A worker that dies within this long after its start counts as a crash loop: back off. */
const CRASH_LOOP_WINDOW_MS = 5_000;
const MAX_BACKOFF_MS = 5_000;

/**
 * The root of the files a compiled executable embeds, from a module URL inside it: /$bunfs/root on Linux
 * and macOS, B:/~BUN/root on Windows. Undefined when running from source.
 */
export function embeddedRoot(moduleUrl: string): string | undefined {
  if (moduleUrl.includes("/$bunfs/")) return "/$bunfs/root";
  if (/(^|\/)B:[\\/]~BUN[\\/]/i.test(moduleUrl)) return "B:/~BUN/root";
  return undefined;
}

/** Where the worker entry is: next to this file under bun run/test; inside a compiled executable, the
 * copy `bun build --compile … src/audio/worker.ts` embedded (…/audio/worker.js under embeddedRoot).
 * The environment variable AGORA_MEDIA_WORKER overrides both (a path or URL). */
export function resolveWorkerUrl(): string {
  const override = process.env.AGORA_MEDIA_WORKER;
  if (override) return override;
  const root = embeddedRoot(import.meta.url);
  if (!root) return new URL("./worker.ts", import.meta.url).href;
  let found: string | undefined;
  try {
    const entries = readdirSync(root, { recursive: true }) as string[];
    for (const e of entries) {
      const p = e.replaceAll("\\", "/");
      if (p === "audio/worker.js" || p.endsWith("/audio/worker.js")) {
        if (!found || p.length < found.length) found = p;
      }
    }
  } catch {
    /* fall through to the error below */
  }
  if (!found) {
    throw new AgoraError(
      "MEDIA_ENGINE",
      "the media worker is not embedded in this executable: build it with `bun build --compile src/main.ts src/audio/worker.ts`",
    );
  }
  return `${root}/${found}`;
}

/** One spawned worker and what belongs to it alone. */
export interface WorkerGeneration {
  /** 1 for the first worker, +1 per spawn (a replacement whose init failed counts too). */
  readonly generation: number;
  readonly worker: Worker;
  readonly channel: WorkerChannel;
  /** Control → worker audio. */
  readonly inbound: RingWriter;
  /** Worker → control audio. */
  readonly outbound: RingReader;
  readonly heartbeat: Int32Array;
  readonly startedAt: number;
  /** the port of its voice datagram socket, once its init succeeded (when it was given one to bind) */
  udpPort?: number;
}

/** What a (re)started worker begins with. */
export interface WorkerInit {
  settings: WorkerSettings;
  rooms: RestoreRoom[];
  datagrams?: WorkerDatagramConfig;
  udpSessions?: UdpDatagramSession[];
}

export interface WorkerSupervisorEvents {
  spawned: [gen: WorkerGeneration];
  retiring: [gen: WorkerGeneration];
  died: [reason: string];
  restarted: [ms: number, generation: number];
}

export interface WorkerSupervisorOptions {
  logger: Logger;
  /** Asked at every spawn, synchronously before the init message is posted. */
  init: () => WorkerInit;
  /** Worker entry (default: resolveWorkerUrl()). */
  workerUrl?: string | URL;
  /** The compiled wasm core handed to every worker (default: the embedded one). */
  module?: WebAssembly.Module;
  /** Capacity of each audio ring in bytes, a power of two (default 4 MiB). */
  ringBytes?: number;
  /** A worker whose heartbeat has not advanced for this long is declared hung (default 600 ms). */
  heartbeatTimeoutMs?: number;
  /** Lets the worker honour crash requests (tests). */
  testHooks?: boolean;
}

type SupervisorState = "idle" | "starting" | "running" | "stopping" | "stopped";

export class WorkerSupervisor extends EventEmitter<WorkerSupervisorEvents> {
  private readonly log: Logger;
  private readonly heartbeatTimeoutMs: number;
  private readonly ringBytes: number;
  private state: SupervisorState = "idle";
  private gen?: WorkerGeneration;
  private generations = 0;
  private module?: WebAssembly.Module;
  private workerUrl?: string | URL;
  private beat = { value: -1, at: 0 };
  private restarting = false;
  private crashStreak = 0;
  private watchdog?: ReturnType<typeof setInterval>;

  constructor(private readonly opts: WorkerSupervisorOptions) {
    super();
    this.log = opts.logger;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 600;
    this.ringBytes = opts.ringBytes ?? DEFAULT_RING_BYTES;
  }

  /** The live worker generation; undefined while none is (between a death and its replacement, when stopped). */
  get current(): WorkerGeneration | undefined {
    return this.gen;
  }

  /** Running and not in the middle of a restart. */
  get healthy(): boolean {
    return this.state === "running" && !this.restarting;
  }

  get workerEntry(): string | URL | undefined {
    return this.workerUrl;
  }

  /** Spawns the first worker and waits for its init. On failure nothing is left running. */
  async start(): Promise<void> {
    if (this.state === "running") return;
    if (this.state !== "idle" && this.state !== "stopped") {
      throw new AgoraError("MEDIA_ENGINE", `media worker supervisor cannot start while ${this.state}`);
    }
    this.state = "starting";
    try {
      this.module = this.opts.module ?? (await loadCoreModule());
      this.workerUrl = this.opts.workerUrl ?? resolveWorkerUrl();
      await this.spawn();
    } catch (err) {
      this.state = "idle";
      this.retire("media worker failed to start");
      throw err instanceof AgoraError
        ? err
        : new AgoraError("MEDIA_ENGINE", `media worker failed to start: ${errorMessage(err)}`, { cause: err });
    }
    this.watchdog = setInterval(() => this.checkHeartbeat(), WATCHDOG_PERIOD_MS);
    this.state = "running";
  }

  /**
   * Asks the worker to stop (up to `graceMs`), then terminates it; no restart happens from here on.
   * A restart under way is abandoned.
   */
  async stop(reason = "media engine stopped", graceMs = 1000): Promise<void> {
    if (this.state !== "running" && this.state !== "starting") return;
    this.state = "stopping";
    clearInterval(this.watchdog);
    const gen = this.gen;
    if (gen) {
      try {
        await gen.channel.request({ t: "stop" }, graceMs);
      } catch (err) {
        this.log.debug({ err: errorMessage(err) }, "media worker did not acknowledge stop; terminating it");
      }
    }
    this.retire(reason);
    this.state = "stopped";
  }

  private async spawn(): Promise<void> {
    const inbound = createRingBuffer(this.ringBytes);
    const outbound = createRingBuffer(this.ringBytes);
    const heartbeat = new SharedArrayBuffer(16);
    const w = new Worker(this.workerUrl ?? resolveWorkerUrl());
    // Everything below up to the init request is synchronous: a change racing with a restart either
    // lands in the restore list or is posted after init to this worker, never lost in between.
    const now = performance.now();
    const gen: WorkerGeneration = {
      generation: ++this.generations,
      worker: w,
      channel: new WorkerChannel(w),
      inbound: new RingWriter(inbound),
      outbound: new RingReader(outbound),
      heartbeat: new Int32Array(heartbeat),
      startedAt: now,
    };
    this.gen = gen;
    this.beat = { value: -1, at: now };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      if (gen === this.gen) this.onWorkerFailure(`uncaught error in the media worker: ${e.message}`);
    };
    w.addEventListener("close", (e: Event) => {
      const code = (e as CloseEvent).code;
      if (gen === this.gen) this.onWorkerFailure(`media worker exited (code ${code})`);
    });
    this.emit("spawned", gen);
    const { settings, rooms, datagrams, udpSessions } = this.opts.init();
    const udpPort = await gen.channel.request(
      {
        t: "init",
        module: this.module,
        inbound,
        outbound,
        heartbeat,
        settings,
        rooms,
        testHooks: this.opts.testHooks ?? false,
        ...(datagrams ? { datagrams, udpSessions: udpSessions ?? [] } : {}),
      },
      INIT_TIMEOUT_MS,
    );
    if (typeof udpPort === "number") gen.udpPort = udpPort;
  }

  /** Terminates the current worker (after `retiring`) and closes its channel with `reason`. */
  private retire(reason: string): void {
    const gen = this.gen;
    if (!gen) return;
    // Frames pushed until the next worker exists are dropped (counted), not queued into a dead ring.
    this.gen = undefined;
    this.notify("retiring", gen);
    gen.worker.onerror = null;
    gen.channel.close(reason);
    gen.worker.terminate();
  }

  private onWorkerFailure(reason: string): void {
    if (this.state === "starting" || this.restarting) {
      // A worker dying during its init: fail the pending init now rather than at its timeout.
      this.gen?.channel.close(reason);
      return;
    }
    this.onWorkerDeath(reason);
  }

  private onWorkerDeath(reason: string): void {
    if (this.state !== "running" || this.restarting) return;
    this.restarting = true;
    const quick = performance.now() - (this.gen?.startedAt ?? 0) < CRASH_LOOP_WINDOW_MS;
    this.crashStreak = quick ? this.crashStreak + 1 : 1;
    this.retire(`media worker died: ${reason}`);
    this.notify("died", reason);
    const t0 = performance.now();
    void (async () => {
      let backoff = this.crashStreak > 2 ? Math.min(MAX_BACKOFF_MS, 100 * 2 ** (this.crashStreak - 2)) : 0;
      while (this.state === "running") {
        if (backoff > 0) await Bun.sleep(backoff);
        if (this.state !== "running") break;
        try {
          await this.spawn();
          if (this.state !== "running") {
            this.retire("media engine stopped"); // stopped while the replacement was starting
            break;
          }
          this.restarting = false;
          this.notify("restarted", Math.round(performance.now() - t0), this.generations);
          break;
        } catch (err) {
          this.log.error({ err: errorMessage(err) }, "media worker restart failed; retrying");
          this.retire("media worker restart failed");
          backoff = Math.min(MAX_BACKOFF_MS, Math.max(100, backoff * 2));
        }
      }
      this.restarting = false;
    })();
  }

  /** Emits to the listeners; one that throws is logged, never allowed to stop a retirement or a restart. */
  private notify<E extends keyof WorkerSupervisorEvents>(event: E, ...args: WorkerSupervisorEvents[E]): void {
    try {
      (this.emit as (e: E, ...a: WorkerSupervisorEvents[E]) => boolean)(event, ...args);
    } catch (err) {
      this.log.error({ err: errorMessage(err), event }, "media worker supervisor listener threw");
    }
  }

  private checkHeartbeat(): void {
    const gen = this.gen;
    if (this.state !== "running" || this.restarting || !gen) return;
    const v = Atomics.load(gen.heartbeat, 0);
    const now = performance.now();
    if (v !== this.beat.value) {
      this.beat = { value: v, at: now };
      return;
    }
    // Before the first tick, allow the (longer) init; afterwards, the heartbeat timeout.
    const limit = v <= 0 ? INIT_TIMEOUT_MS : this.heartbeatTimeoutMs;
    if (now - this.beat.at > limit) {
      this.onWorkerDeath(`media worker heartbeat missing for ${Math.round(now - this.beat.at)} ms`);
    }
  }
}
