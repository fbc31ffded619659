/**
 * WorkerSupervisor with the real media worker: the typed `died`/`restarted` events for each way a
 * worker dies (the crash test hooks), the restore list asked for at every spawn, requests pending at a
 * death rejected at once, and init failures that leave no worker behind. Waits are bounded polls.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { WorkerChannelClosedError } from "../../src/audio/channel";
import { type WorkerGeneration, type WorkerInit, WorkerSupervisor } from "../../src/audio/supervisor";
import type { RestoreRoom, WorkerRoomStats } from "../../src/audio/worker-protocol";
import { AgoraError } from "../../src/errors";
import { silentLogger } from "../../src/log";
import { waitFor } from "./media-helpers";

const settings = { topK: 3, sharedEncode: true, bitrate: 32000, complexity: 5, jitterMinMs: 20, jitterMaxMs: 200, fec: false };
const throwingWorker = new URL("./fixtures/throwing-worker.ts", import.meta.url).href;
const supervisors: WorkerSupervisor[] = [];

afterEach(async () => {
  for (const s of supervisors.splice(0)) await s.stop();
});

interface Recorded {
  sup: WorkerSupervisor;
  died: string[];
  restarted: Array<{ ms: number; generation: number }>;
  spawned: WorkerGeneration[];
  inits: RestoreRoom[][];
}

function supervise(rooms: () => RestoreRoom[] = () => [], over: Partial<ConstructorParameters<typeof WorkerSupervisor>[0]> = {}): Recorded {
  const r: Recorded = { died: [], restarted: [], spawned: [], inits: [] } as unknown as Recorded;
  r.sup = new WorkerSupervisor({
    logger: silentLogger(),
    testHooks: true,
    init: (): WorkerInit => {
      const list = rooms();
      r.inits.push(list);
      return { settings, rooms: list };
    },
    ...over,
  });
  r.sup.on("died", (reason) => r.died.push(reason));
  r.sup.on("restarted", (ms, generation) => r.restarted.push({ ms, generation }));
  r.sup.on("spawned", (gen) => r.spawned.push(gen));
  supervisors.push(r.sup);
  return r;
}

/** Resolves once the worker thread has closed (terminated or exited). */
function closedSignal(w: Worker): { closed: boolean } {
  const s = { closed: false };
  w.addEventListener("close", () => {
    s.closed = true;
  });
  return s;
}

describe("WorkerSupervisor", () => {
  const reasons = {
    throw: /^uncaught error in the media worker: /,
    exit: /^media worker exited \(code 70\)$/,
    hang: /^media worker heartbeat missing for \d+ ms$/,
  };
  for (const mode of ["throw", "exit", "hang"] as const) {
    test(`worker crash (${mode}): died(reason), then restarted(ms, generation 2) with the restore list asked again`, async () => {
      let rooms: RestoreRoom[] = [];
      const r = supervise(() => rooms);
      await r.sup.start();
      expect(r.sup.current?.generation).toBe(1);
      expect(r.inits).toEqual([[]]);
      const first = r.sup.current!;
      const firstClosed = closedSignal(first.worker);
      // What the engine would hand the replacement: a room created while the first worker ran.
      rooms = [{ room: 7, seqBase: 1234, participants: [3, 4] }];
      // Past the first tick, so a hang is judged by the heartbeat timeout rather than the init allowance.
      expect(await waitFor(() => Atomics.load(first.heartbeat, 0) > 0, 10_000)).toBe(true);
      await first.channel.request({ t: "crash", mode });
      // Requests keep coming while the worker dies: the ones it never answers must fail at its death,
      // with the channel's typed error, not hang until their (long) timeout.
      const outcomes: Array<Promise<string>> = [];
      while (r.died.length === 0 && outcomes.length < 2000) {
        outcomes.push(
          first.channel.request({ t: "stats" }, 60_000).then(
            () => "answered",
            (err: unknown) => (err instanceof WorkerChannelClosedError ? "closed" : `other: ${String(err)}`),
          ),
        );
        await Bun.sleep(5);
      }
      expect(await waitFor(() => r.died.length === 1, 15_000)).toBe(true);
      expect(r.died[0]).toMatch(reasons[mode]);
      expect(await waitFor(() => r.restarted.length === 1, 15_000)).toBe(true);
      expect(r.restarted[0]!.generation).toBe(2);
      expect(r.restarted[0]!.ms).toBeGreaterThanOrEqual(0);
      expect(r.died).toHaveLength(1);
      const settled = await Promise.all(outcomes);
      expect(settled.filter((s) => s !== "answered" && s !== "closed")).toEqual([]);
      if (mode === "hang") expect(settled).toContain("closed"); // a spinning worker answers nothing for 600 ms
      expect(first.channel.closed).toBe(true);
      expect(await waitFor(() => firstClosed.closed, 10_000)).toBe(true); // the old thread is gone
      // The replacement runs what the restore list said.
      expect(r.inits).toEqual([[], rooms]);
      const second = r.sup.current!;
      expect(second.generation).toBe(2);
      expect(r.spawned.map((g) => g.generation)).toEqual([1, 2]);
      const stats = (await second.channel.request({ t: "stats" })) as WorkerRoomStats[];
      expect(stats.map((s) => s.room)).toEqual([7]);
      expect(stats[0]!.participants.map((p) => p.participant).sort()).toEqual([3, 4]);
      expect(r.sup.healthy).toBe(true);
    });
  }

  test("listeners that throw (died, retiring) neither keep the dead worker alive nor stop the restart", async () => {
    const r = supervise();
    r.sup.on("died", () => {
      throw new Error("listener bug");
    });
    r.sup.on("retiring", () => {
      throw new Error("drain bug");
    });
    await r.sup.start();
    const first = r.sup.current!;
    const closed = closedSignal(first.worker);
    await first.channel.request({ t: "crash", mode: "exit" });
    expect(await waitFor(() => r.restarted.length === 1, 15_000)).toBe(true);
    expect(r.died).toHaveLength(1);
    expect(first.channel.closed).toBe(true);
    expect(await waitFor(() => closed.closed, 10_000)).toBe(true);
    expect(await r.sup.current!.channel.request({ t: "stats" })).toEqual([]);
  });

  test("stop: the worker is asked to stop, then terminated; no restart follows, and stop is idempotent", async () => {
    const r = supervise();
    const retired: number[] = [];
    r.sup.on("retiring", (gen) => retired.push(gen.generation));
    await r.sup.start();
    const gen = r.sup.current!;
    const closed = closedSignal(gen.worker);
    await r.sup.stop();
    await r.sup.stop();
    expect(retired).toEqual([1]);
    expect(r.sup.current).toBeUndefined();
    expect(gen.channel.closed).toBe(true);
    expect(await waitFor(() => closed.closed, 10_000)).toBe(true);
    await Bun.sleep(200);
    expect(r.died).toEqual([]);
    expect(r.spawned).toHaveLength(1);
  });

  test("init failure (a wasm module that is not the core): start rejects with a typed error, no worker is left", async () => {
    const notTheCore = new WebAssembly.Module(new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]));
    const r = supervise(undefined, { module: notTheCore });
    const closed: Array<{ closed: boolean }> = [];
    r.sup.on("spawned", (gen) => closed.push(closedSignal(gen.worker)));
    let err: unknown;
    try {
      await r.sup.start();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).code).toBe("MEDIA_ENGINE");
    expect((err as AgoraError).message).toMatch(/^media worker: /); // the worker's own answer, not a timeout
    expect(r.sup.current).toBeUndefined();
    expect(r.sup.healthy).toBe(false);
    expect(closed).toHaveLength(1);
    expect(await waitFor(() => closed[0]!.closed, 10_000)).toBe(true);
    expect(r.spawned[0]!.channel.closed).toBe(true);
  });

  test("init failure (a worker entry that throws at init): start rejects at once with a typed error, no worker is left", async () => {
    const r = supervise(undefined, { workerUrl: throwingWorker });
    const closed: Array<{ closed: boolean }> = [];
    r.sup.on("spawned", (gen) => closed.push(closedSignal(gen.worker)));
    const err = await r.sup.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgoraError);
    expect((err as AgoraError).code).toBe("MEDIA_ENGINE");
    // Failed by the worker's error event, not by the 10 s init timeout.
    expect((err as AgoraError).message).toContain("uncaught error in the media worker");
    expect((err as AgoraError).message).toContain("this worker refuses to initialise");
    expect(r.sup.current).toBeUndefined();
    expect(await waitFor(() => closed[0]?.closed === true, 10_000)).toBe(true);
    // Nothing left armed: no death, no restart, and it can be started again (and fail again the same way).
    await Bun.sleep(200);
    expect(r.died).toEqual([]);
    expect(r.restarted).toEqual([]);
    await expect(r.sup.start()).rejects.toThrow(/uncaught error in the media worker/);
    expect(r.spawned).toHaveLength(2);
  });
});
