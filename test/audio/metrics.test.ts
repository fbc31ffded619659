/**
 * Mixer health under load is visible (issue 11, point 6): skipped ticks are counted, and the tick-duration
 * histogram reaches 1 s so a p99 above 50 ms is read as such rather than clipped to the last bucket.
 */
import { afterAll, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { createMediaEngine, type MediaEngine, mediaMetrics, type WorkerMediaEngine } from "../../src/audio";
import { silentLogger } from "../../src/log";
import { mediaSettings } from "./media-helpers";

const engines: MediaEngine[] = [];
afterAll(async () => {
  for (const e of engines) await e.stop();
});

test("tick-duration buckets go up to 1 s", async () => {
  const registry = new Registry();
  const m = mediaMetrics(registry);
  m.tickSeconds.observe(0.3);
  const text = await registry.metrics();
  expect(text).toContain('agora_mixer_tick_seconds_bucket{le="0.25"} 0');
  expect(text).toContain('agora_mixer_tick_seconds_bucket{le="0.5"} 1');
  expect(text).toContain('agora_mixer_tick_seconds_bucket{le="1"} 1');
});

test("a worker that falls behind real time counts its skipped ticks in agora_mixer_ticks_skipped_total", async () => {
  const registry = new Registry();
  // A generous heartbeat timeout: the 400 ms stall must be a stall, not a restart, however busy the machine.
  const engine = createMediaEngine({
    settings: mediaSettings(),
    logger: silentLogger(),
    registry,
    testHooks: true,
    heartbeatTimeoutMs: 10_000,
  });
  engines.push(engine);
  await engine.start();
  expect(await registry.metrics()).toContain("agora_mixer_ticks_skipped_total 0");
  engine.join("stall-room", "p1", () => {}); // ticks are reported while a room is busy
  await (engine as WorkerMediaEngine).crashWorker("stall");
  const skipped = async () => Number(/agora_mixer_ticks_skipped_total (\d+)/.exec(await registry.metrics())?.[1] ?? 0);
  const deadline = Date.now() + 20_000;
  while ((await skipped()) < 10 && Date.now() < deadline) await Bun.sleep(20);
  // 400 ms is 20 ticks; the worker catches up a few and skips the rest.
  expect(await skipped()).toBeGreaterThanOrEqual(10);
  expect(engine.workerRestarts).toBe(0);
});
