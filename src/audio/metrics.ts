/**
 * Prometheus metrics of the media plane (names fixed by the project; all pass `promtool check metrics`).
 *
 *   agora_audio_packets_total{direction="in"|"out"}  counter   frames accepted from participants /
 *                                                               frames handed to participants' sinks
 *   agora_rooms_active                               gauge     rooms currently mixed
 *   agora_mixer_tick_seconds                         histogram wall time of one 20 ms worker tick (all rooms);
 *                                                               buckets up to 1 s so an overloaded mixer's
 *                                                               p99 is read, not clipped at the last bucket
 *   agora_mixer_ticks_skipped_total                  counter   20 ms ticks never run because the worker fell
 *                                                               more than 3 ticks behind real time (each one
 *                                                               is 20 ms of audio no participant received)
 *   agora_jitter_buffer_depth_seconds                histogram per-participant jitter-buffer depth, sampled
 *                                                               once per stats poll (every second) for
 *                                                               every participant: the distribution over
 *                                                               participants and time, not one average
 *   agora_audio_packets_concealed_total              counter   frames concealed (Opus PLC or FEC)
 *   agora_audio_packets_late_total                   counter   packets dropped for arriving after their
 *                                                               playout time
 *   agora_mixer_decodes_total                        counter   Opus decodes run by the mixer (frames, PLC,
 *                                                               FEC, warm-ups)
 *   agora_mixer_frames_undecoded_total               counter   frames not decoded: flagged silent by their
 *                                                               sender (AUDIO_VAD) with no chance to be mixed
 *   agora_media_worker_restarts_total                counter   media worker restarts after a crash/hang
 *   agora_audio_packets_dropped_total{reason}        counter   frames dropped before the mixer
 *
 * Several engines may share one Registry (tests, a restarted engine): the metrics are created once per
 * registry and shared; the rooms gauge sums every live engine.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export type DropReason = "unknown_participant" | "ring_full" | "invalid" | "not_running";

export interface MediaMetrics {
  packets: Counter<"direction">;
  tickSeconds: Histogram;
  ticksSkipped: Counter;
  jitterDepthSeconds: Histogram;
  concealed: Counter;
  late: Counter;
  decodes: Counter;
  undecoded: Counter;
  restarts: Counter;
  dropped: Counter<"reason">;
  /** Adds a source to agora_rooms_active; returns its removal. */
  addRoomSource(count: () => number): () => void;
}

const perRegistry = new WeakMap<Registry, MediaMetrics>();

export function mediaMetrics(registry: Registry): MediaMetrics {
  const existing = perRegistry.get(registry);
  if (existing) return existing;
  const sources = new Set<() => number>();
  const metrics: MediaMetrics = {
    packets: new Counter({
      name: "agora_audio_packets_total",
      help: "Opus frames received from participants (in) and sent to them (out)",
      labelNames: ["direction"] as const,
      registers: [registry],
    }),
    tickSeconds: new Histogram({
      name: "agora_mixer_tick_seconds",
      help: "Duration of one 20 ms mixer tick over all rooms; above 0.02 the mixer falls behind real time",
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    ticksSkipped: new Counter({
      name: "agora_mixer_ticks_skipped_total",
      help: "Mixer ticks skipped because the media worker fell more than 3 ticks (60 ms) behind real time",
      registers: [registry],
    }),
    jitterDepthSeconds: new Histogram({
      name: "agora_jitter_buffer_depth_seconds",
      help: "Jitter buffer depth per participant, sampled every second",
      buckets: [0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2],
      registers: [registry],
    }),
    concealed: new Counter({
      name: "agora_audio_packets_concealed_total",
      help: "Lost or missing frames concealed with Opus PLC or in-band FEC",
      registers: [registry],
    }),
    late: new Counter({
      name: "agora_audio_packets_late_total",
      help: "Frames that arrived after their playout time and were dropped",
      registers: [registry],
    }),
    decodes: new Counter({
      name: "agora_mixer_decodes_total",
      help: "Opus decodes run by the mixer (received frames, concealment, warm-ups)",
      registers: [registry],
    }),
    undecoded: new Counter({
      name: "agora_mixer_frames_undecoded_total",
      help: "Received frames the mixer did not decode: flagged silent by their sender and unable to reach a mix",
      registers: [registry],
    }),
    restarts: new Counter({
      name: "agora_media_worker_restarts_total",
      help: "Restarts of the media worker after it crashed or stopped responding",
      registers: [registry],
    }),
    dropped: new Counter({
      name: "agora_audio_packets_dropped_total",
      help: "Frames dropped before reaching the mixer (unknown participant, full ring, invalid, engine stopped)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    addRoomSource(count) {
      sources.add(count);
      return () => sources.delete(count);
    },
  };
  new Gauge({
    name: "agora_rooms_active",
    help: "Rooms currently being mixed",
    registers: [registry],
    collect() {
      let n = 0;
      for (const s of sources) n += s();
      this.set(n);
    },
  });
  // Export zeroes from the start so dashboards and rate() see the series before the first packet.
  metrics.packets.inc({ direction: "in" }, 0);
  metrics.packets.inc({ direction: "out" }, 0);
  perRegistry.set(registry, metrics);
  return metrics;
}
