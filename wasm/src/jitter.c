/*
 * Adaptive jitter buffer. See jitter.h for the contract.
 *
 * Everything is measured as a playout delay, in ms, against the fastest recent packet (as NetEq does):
 *
 *   d   = arrival − media time of a packet (relative transit delay, any constant offset);
 *   base = min d over the last ~2 s: the transit of the fastest recent packet;
 *   J   = 97th percentile of (d − base) over the last 2 s, newer packets weighing more (fast attack: two
 *         slow packets lift it at once; slow decay: it falls back within 1-2 s of calm);
 *   P   = now − media time of the frame at next_seq − base: the playout delay. A packet is in time iff
 *         its own (d − base) ≤ P.
 *
 * Target: P ≥ T = clamp(J + margin, jitter_min − 1 frame, jitter_max − 1 frame). The tick quantises P
 * to the phase between packet arrivals and our tick plus whole frames, so in steady state P sits in
 * [T, T + 20 ms): a buffer of one frame when J is small (the frame that has arrived by its tick), which
 * is what jitter_min_ms 20 means. Reported as a depth: target_frames = floor(T / 20) + 1.
 *
 * Growing: an underrun while P < T is stretched (the frame is concealed without consuming its number,
 * the late packet then plays one frame later); while P < T for 200 ms in a speech pause a concealment
 * frame is inserted. An underrun while P ≥ T is the tail the percentile deliberately leaves out: it is
 * concealed, the timeline holds and the packet counts as late.
 *
 * Shrinking: when P ≥ T + one frame for 200 ms, the caller is asked to drop a frame (jb->shrink). It
 * prefers a quiet one, but during continuous talk drops one anyway, every 100 ms while 3 frames or more
 * over the target, every 200 ms for the last ones; the caller decodes both frames and cross-fades them
 * into one tick, so there is no click. (Re)starting playout deeper than the target (a burst after a
 * stall, the first packets) skips straight to the target: nothing was playing.
 */
#include "jitter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* After this many concealed frames with nothing buffered the sender is treated as paused (DTX,
 * mute, network stall): we stop inventing audio and re-anchor on its next packet. 100 ms matches
 * the point where Opus PLC has faded to silence anyway. */
#define JB_MAX_EMPTY_CONCEAL 5
/* Packets this far in the past are not late: the sender restarted its sequence numbers. */
#define JB_FAR_PAST (JB_SLOTS * 4)
/* A media-time jump larger than this (10 s) is a sender restart, not jitter. */
#define JB_TS_JUMP 480000
/* Playout ticks after a (re)start during which every underrun stretches the buffer (no data yet). */
#define JB_SETTLE_TICKS 25
/* Loss is reported over the last 5-10 s. */
#define JB_LOSS_PERIOD 250

/* Jitter estimate: this percentile of the delays above the baseline (see update_estimate). */
#define JB_QUANTILE 0.97
/* Recomputed at least every 100 ms (the decay), and at once after a packet above it. */
#define JB_EST_PERIOD 5
/* Added to the estimate. The percentile already leaves room; the baseline race (a packet stamped just
 * before a tick but drained after it) is microseconds. */
#define JB_MARGIN_MS 0.0

/* Shrink: P ≥ T + 1 frame for 200 ms, then a quiet frame is dropped, at most one every 40 ms. Without
 * one, a frame mid-speech is dropped anyway after 160 ms of offers declined (longer than a syllable, so
 * speech with gaps loses gap frames only), or after 60 ms when 3 frames or more over the target (a stall
 * left a lot to shed: latency first). So continuous talk sheds a large excess at one frame per 100 ms,
 * the last frames at one per 200 ms. */
#define JB_SHRINK_SUSTAIN 10
#define JB_SPACING_QUIET 2
#define JB_SHRINK_WAIT_QUIET 8
#define JB_SHRINK_WAIT_FAST 3
#define JB_FAST_EXCESS_FRAMES 3
/* A frame of excess means P ≥ T + 20 ms + this: a packet arriving exactly at its tick is not excess. */
#define JB_SHRINK_HYST_MS 1.0
/* Grow in a pause: P < T for 200 ms. */
#define JB_GROW_SUSTAIN 10

#define JB_SAMPLES_PER_FRAME (JB_FRAME_MS * 48)

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline JbSlot *slot_of(Jb *jb, uint32_t seq) { return &jb->slots[seq & (JB_SLOTS - 1)]; }
static inline int slot_has(Jb *jb, uint32_t seq) {
  JbSlot *s = slot_of(jb, seq);
  return s->valid && s->seq == seq;
}
/* Unwrapped media time (samples) of a packet timestamp, on the clock of last_ts_ext. */
static inline int64_t ts_ext(const Jb *jb, uint32_t ts) { return jb->last_ts_ext + sdiff(ts, jb->last_ts); }

static void update_target(Jb *jb) {
  double lo = (double)((jb->min_frames - 1) * JB_FRAME_MS);
  double hi = (double)((jb->max_frames - 1) * JB_FRAME_MS);
  double t = jb->jitter_est_ms + JB_MARGIN_MS;
  if (t < lo) t = lo;
  if (t > hi) t = hi;
  jb->target_ms = t;
  int f = (int)floor(t / JB_FRAME_MS) + 1;
  if (f < jb->min_frames) f = jb->min_frames;
  if (f > jb->max_frames) f = jb->max_frames;
  jb->target_frames = f;
}

void jb_set_limits(Jb *jb, int min_ms, int max_ms) {
  int mn = (min_ms + JB_FRAME_MS - 1) / JB_FRAME_MS;
  int mx = max_ms / JB_FRAME_MS;
  if (mn < 1) mn = 1; /* a frame must have arrived before its tick: one frame is the floor */
  if (mx > JB_SLOTS - 16) mx = JB_SLOTS - 16;
  if (mx < mn) mx = mn;
  jb->min_frames = mn;
  jb->max_frames = mx;
  update_target(jb);
}

void jb_init(Jb *jb, int min_ms, int max_ms) {
  memset(jb, 0, sizeof *jb);
  jb_set_limits(jb, min_ms, max_ms);
}

void jb_free(Jb *jb) {
  for (int i = 0; i < JB_SLOTS; i++) {
    free(jb->slots[i].data);
    jb->slots[i].data = NULL;
  }
}

static void flush(Jb *jb) {
  for (int i = 0; i < JB_SLOTS; i++) jb->slots[i].valid = 0;
  jb->count = 0;
}

/* ---- jitter estimate ---- */

/*
 * Weighted percentile of the delays above the baseline over the last JB_JIT_WINDOW packets, weights
 * falling linearly with age from 1 (newest) to 1/N (oldest): a triangular window. Fast attack: two fresh
 * slow packets already hold more than the 3 % tail (1.5 of ~50), so the estimate rises at once. Slow but
 * bounded decay: after the network calms down, the old delays lose weight packet by packet and are gone
 * after 2 s (e.g. 60 ms of jitter is forgotten to < 20 ms in ~1.6 s), never tens of seconds.
 */
static void update_estimate(Jb *jb) {
  jb->est_dirty = 0;
  jb->est_tick = 0;
  int n = jb->jit_n;
  double est = 0;
  if (n > 0) {
    const double N = JB_JIT_WINDOW;
    /* Σ (N − age) / N for age 0..n−1 */
    double total = ((double)n * N - (double)n * (double)(n - 1) / 2.0) / N;
    double budget = (1.0 - JB_QUANTILE) * total, acc = 0;
    uint8_t used[JB_JIT_WINDOW];
    memset(used, 0, sizeof used);
    /* Largest first until the tail weighs more than the budget; usually two or three passes. */
    for (int iter = 0; iter < n; iter++) {
      int best = -1;
      float bv = -1.0f;
      for (int i = 0; i < n; i++)
        if (!used[i] && jb->jit[i] > bv) {
          bv = jb->jit[i];
          best = i;
        }
      used[best] = 1;
      int age = (jb->jit_pos - 1 - best + JB_JIT_WINDOW) % JB_JIT_WINDOW;
      acc += (N - (double)age) / N;
      if (acc > budget) {
        est = bv;
        break;
      }
    }
  }
  jb->jitter_est_ms = est;
  update_target(jb);
}

/* The baseline restarts (new epoch) when the media clock may have jumped: a restart after a pause (a
 * sender that stopped its clock while muted) or a resync. The jitter window is kept: it describes
 * the path, not the clock. */
static void reset_baseline(Jb *jb, int keep_last) {
  double last = jb->delays[(jb->delay_pos + JB_DELAY_WINDOW - 1) % JB_DELAY_WINDOW];
  jb->delay_n = 0;
  jb->delay_pos = 0;
  if (keep_last) {
    jb->delays[0] = last;
    jb->delay_n = 1;
    jb->delay_pos = 1;
    jb->base_ms = last;
  }
}

static void update_timing(Jb *jb, uint32_t ts, double arrival_ms) {
  if (!jb->have_last) {
    jb->have_last = 1;
    jb->last_ts = ts;
    jb->last_ts_ext = 0;
    jb->last_arrival_ms = arrival_ms;
  } else {
    int32_t dts = sdiff(ts, jb->last_ts);
    if (dts > JB_TS_JUMP || dts < -JB_TS_JUMP) {
      /* Sender restart: the old delays and playout position refer to another clock. */
      reset_baseline(jb, 0);
      jb->last_ts_ext = 0;
      jb->media_ok = 0; /* until a packet of the new clock is played (take) or anchors */
      jb->media_epoch_seq = jb->pending_seq;
    } else {
      double d = (arrival_ms - jb->last_arrival_ms) - (double)dts / 48.0;
      if (d < 0) d = -d;
      jb->jitter_ms += (d - jb->jitter_ms) / 16.0;
      jb->last_ts_ext += dts;
    }
    jb->last_ts = ts;
    jb->last_arrival_ms = arrival_ms;
  }
  double d = arrival_ms - (double)jb->last_ts_ext / 48.0;
  /* Sliding minimum: rescan only when the evicted value was the minimum. */
  int full = jb->delay_n == JB_DELAY_WINDOW;
  double evicted = jb->delays[jb->delay_pos];
  jb->delays[jb->delay_pos] = d;
  jb->delay_pos = (jb->delay_pos + 1) % JB_DELAY_WINDOW;
  if (!full) jb->delay_n++;
  if (jb->delay_n == 1) {
    jb->base_ms = d;
  } else if (d <= jb->base_ms) {
    jb->base_ms = d;
  } else if (full && evicted <= jb->base_ms) {
    double m = jb->delays[0];
    for (int i = 1; i < JB_DELAY_WINDOW; i++)
      if (jb->delays[i] < m) m = jb->delays[i];
    jb->base_ms = m;
  }
}

/* The newest packet's delay above the baseline joins the jitter window (after jb_push decided whether it
 * starts a new epoch: a restart point is at the baseline by definition). */
static void note_delay(Jb *jb) {
  if (jb->delay_n == 0) return;
  double d = jb->delays[(jb->delay_pos + JB_DELAY_WINDOW - 1) % JB_DELAY_WINDOW] - jb->base_ms;
  jb->jit[jb->jit_pos] = (float)d;
  jb->jit_pos = (jb->jit_pos + 1) % JB_JIT_WINDOW;
  if (jb->jit_n < JB_JIT_WINDOW) jb->jit_n++;
  if (d >= jb->jitter_est_ms + 1.0) jb->est_dirty = 1;
}

/* Playout delay of the frame at next_seq (see the top of the file); 0 when unknown. */
static int playout_delay(const Jb *jb, double now_ms, double *p) {
  if (!jb->media_ok || jb->delay_n == 0) return 0;
  *p = now_ms - (double)jb->next_media / 48.0 - jb->base_ms;
  return 1;
}

/* Start (or restart) playout at `seq` (the packet just pushed): prefill up to the target before playing. */
static void anchor(Jb *jb, uint32_t seq) {
  flush(jb);
  jb->last_played_seq = seq - 1;
  jb->started = 1;
  jb->playing = 0;
  jb->paused = 0;
  jb->next_seq = seq;
  jb->max_seq = seq;
  jb->next_media = jb->last_ts_ext;
  jb->media_ok = 1;
  reset_baseline(jb, 1);
  jb->empty_run = 0;
  jb->covered = 0;
  jb->playing_ticks = 0;
  jb->old_run = 0;
  jb->excess_run = 0;
  jb->shortfall_run = 0;
  jb->shrink = JB_SHRINK_NONE;
  jb->shrink_wait = 0;
  /* The restart point counts as the continuation of the stream, not as a gap. */
  jb->expected += 1;
}

static JbPushResult push(Jb *jb, uint32_t seq, const uint8_t *data, int len, uint32_t ts);

/* A second copy of a frame this buffer already holds or held (played, concealed over or skipped after it
 * arrived): the same frame sent both by stream and by datagram while a participant's path switches (a
 * TCP retransmission can deliver the stream's copy hundreds of ms after the datagram's). Its arrival says
 * nothing about how late frames come, only how late the slower path is, so it is dropped before it reaches
 * the timing: it must not raise the target. A slot keeps its seq after being emptied until a packet 128
 * seqs later reuses it. */
static int is_copy(const Jb *jb, uint32_t seq) {
  if (!jb->started) return 0;
  const JbSlot *s = &jb->slots[seq & (JB_SLOTS - 1)];
  if (s->cap == 0 || s->seq != seq) return 0;
  if (s->valid) return 1;
  /* emptied: only a copy if that frame's turn has passed (otherwise the slot is stale from an earlier
   * epoch and this is the frame itself) */
  int32_t d = sdiff(seq, jb->next_seq);
  return d < 0 && d > -JB_SLOTS;
}

JbPushResult jb_push(Jb *jb, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len, uint8_t flags) {
  if (len <= 0 || len > 0xffff) return JB_PUSH_NOMEM;
  if (is_copy(jb, seq)) {
    jb->duplicates++;
    return JB_PUSH_DUPLICATE;
  }
  jb->pending_flags = flags;
  /* Late packets count for jitter too: their lateness is exactly what the target must absorb. */
  jb->pending_seq = seq;
  update_timing(jb, ts, arrival_ms);
  JbPushResult res = push(jb, seq, data, len, ts);
  note_delay(jb);
  return res;
}

static JbPushResult push(Jb *jb, uint32_t seq, const uint8_t *data, int len, uint32_t ts) {
  JbPushResult res = JB_PUSH_OK;

  if (!jb->started) {
    anchor(jb, seq);
  } else {
    int32_t d = sdiff(seq, jb->next_seq);
    if (d < -JB_FAR_PAST) {
      /* One stray ancient packet is late; several in a row mean the sender restarted. */
      if (++jb->old_run < 3) {
        jb->late++;
        jb->received_total++;
        return JB_PUSH_LATE;
      }
      jb->resyncs++;
      anchor(jb, seq);
      res = JB_PUSH_RESYNC;
    } else if (jb->paused) {
      /* Relative to the last frame really played, not to next_seq: the frames concealed just before
       * the pause were never heard, so a talk spurt resuming right after them is not late. */
      if (sdiff(seq, jb->last_played_seq) <= 0) {
        jb->late++;
        jb->received_total++;
        return JB_PUSH_LATE;
      }
      anchor(jb, seq); /* talk spurt after a pause: prefill again */
    } else if (d < 0) {
      if (!jb->playing && sdiff(jb->max_seq, seq) < JB_SLOTS - 1) {
        /* Still prefilling and an earlier packet overtook: start playout from it instead. */
        jb->next_seq = seq;
        jb->next_media = jb->last_ts_ext;
      } else {
        jb->old_run = 0;
        jb->late++;
        jb->received_total++;
        return JB_PUSH_LATE;
      }
    } else if (d >= JB_SLOTS) {
      /* Further ahead than the buffer can hold: a huge gap. Restart there rather than stall. */
      jb->resyncs++;
      anchor(jb, seq);
      res = JB_PUSH_RESYNC;
    }
  }
  jb->old_run = 0;

  JbSlot *s = slot_of(jb, seq);
  if (s->valid && s->seq == seq) {
    jb->duplicates++;
    return JB_PUSH_DUPLICATE;
  }
  if (s->valid) jb->count--; /* stale occupant (cannot normally happen: slots are emptied on play) */
  if (s->cap < len) {
    uint8_t *p = (uint8_t *)realloc(s->data, (size_t)len);
    if (!p) return JB_PUSH_NOMEM;
    s->data = p;
    s->cap = (uint16_t)len;
  }
  memcpy(s->data, data, (size_t)len);
  s->len = (uint16_t)len;
  s->seq = seq;
  s->ts = ts;
  s->flags = jb->pending_flags;
  s->valid = 1;
  jb->count++;
  int32_t adv = sdiff(seq, jb->max_seq);
  if (adv > 0) {
    jb->expected += adv;
    jb->max_seq = seq;
  }
  jb->received++;
  jb->received_total++;
  return res;
}

int jb_depth(const Jb *jb) {
  if (!jb->started || jb->paused || jb->count == 0) return 0;
  int32_t d = sdiff(jb->max_seq, jb->next_seq);
  return d < 0 ? 0 : d + 1;
}

/* Consume the frame at next_seq: the packet, else FEC from the next packet, else PLC. */
static JbOut take(Jb *jb) {
  JbOut out = {JB_PLC, NULL, 0};
  JbSlot *s = slot_of(jb, jb->next_seq);
  /* Frames missing for good whose time an underrun concealment already filled: skip them. */
  while (jb->covered > 0 && !(s->valid && s->seq == jb->next_seq)) {
    jb->covered--;
    jb->next_seq++;
    jb->next_media += JB_SAMPLES_PER_FRAME;
    s = slot_of(jb, jb->next_seq);
  }
  jb->covered = 0;
  if (s->valid && s->seq == jb->next_seq) {
    out.action = JB_PLAY;
    jb->last_played_seq = jb->next_seq;
    out.data = s->data; /* stays valid for this tick: pushes only happen between ticks */
    out.len = s->len;
    out.flags = s->flags;
    s->valid = 0;
    jb->count--;
    if (jb->media_ok) {
      jb->next_media += JB_SAMPLES_PER_FRAME;
    } else if (sdiff(s->seq, jb->media_epoch_seq) >= 0) {
      /* The first packet on the sender's new clock (timestamp jump): the playout position from it. */
      jb->next_media = ts_ext(jb, s->ts) + JB_SAMPLES_PER_FRAME;
      jb->media_ok = 1;
    }
  } else {
    jb->concealed++;
    jb->next_media += JB_SAMPLES_PER_FRAME;
    JbSlot *n = slot_of(jb, jb->next_seq + 1);
    if (n->valid && n->seq == jb->next_seq + 1) {
      /* Opus in-band FEC: the next packet may carry a low-bitrate copy of this frame. Without one,
       * libopus falls back to PLC by itself. */
      out.action = JB_FEC;
      out.data = n->data;
      out.len = n->len;
      out.flags = n->flags;
      jb->fec++;
    }
  }
  jb->next_seq++;
  return out;
}

/* Skips frames (without playing them) while the playout delay stays a frame or more over the target and
 * something remains to play (by depth when the playout delay is unknown, right after a timestamp jump).
 * The last packet skipped right before the new playout point is returned in *warmup for the caller to
 * decode (decoder state), if any. */
static int over_target(const Jb *jb, double now_ms) {
  double p;
  if (playout_delay(jb, now_ms, &p)) return p - JB_FRAME_MS >= jb->target_ms;
  return jb_depth(jb) > jb->target_frames;
}

static void skip_to_target(Jb *jb, double now_ms, JbOut *warmup) {
  while (jb_depth(jb) > 1 && over_target(jb, now_ms)) {
    JbSlot *s = slot_of(jb, jb->next_seq);
    warmup->action = JB_SILENCE;
    warmup->data = NULL;
    warmup->len = 0;
    if (s->valid && s->seq == jb->next_seq) {
      s->valid = 0;
      jb->count--;
      warmup->action = JB_PLAY;
      warmup->data = s->data; /* the slot keeps its buffer until a later push reuses it */
      warmup->len = s->len;
      warmup->flags = s->flags;
    }
    jb->next_seq++;
    jb->next_media += JB_SAMPLES_PER_FRAME;
    jb->dropped++;
  }
  jb->covered = 0;
}

JbOut jb_pull(Jb *jb, double now_ms, int may_adapt, JbOut *warmup) {
  JbOut out = {JB_SILENCE, NULL, 0};
  warmup->action = JB_SILENCE;
  warmup->data = NULL;
  warmup->len = 0;
  if (jb->shrink != JB_SHRINK_NONE) jb->shrink_wait++; /* offered last tick, declined (not quiet) */
  jb->shrink = JB_SHRINK_NONE;

  if (++jb->snap_ticks >= JB_LOSS_PERIOD) {
    jb->snap_ticks = 0;
    jb->snap_expected[0] = jb->snap_expected[1];
    jb->snap_received[0] = jb->snap_received[1];
    jb->snap_expected[1] = jb->expected;
    jb->snap_received[1] = jb->received_total;
  }
  if (jb->est_dirty || ++jb->est_tick >= JB_EST_PERIOD) update_estimate(jb);
  if (jb->since_drop < 1000000) jb->since_drop++;
  if (!jb->started || jb->paused) {
    jb->depth_avg_frames *= 0.9;
    return out;
  }

  int depth = jb_depth(jb);
  jb->depth_avg_frames += 0.1 * ((double)depth - jb->depth_avg_frames);
  double p = 0;
  int have_p = playout_delay(jb, now_ms, &p);
  if (have_p) jb->playout_ms = p;

  if (!jb->playing) {
    if (jb->count > 0 && (!have_p || p >= jb->target_ms)) {
      jb->playing = 1;
      /* Start at the target, not deeper: a burst (first packets, the end of a stall) would otherwise
       * be played back at the full depth it arrived with. */
      skip_to_target(jb, now_ms, warmup);
      have_p = playout_delay(jb, now_ms, &p);
      depth = jb_depth(jb);
      jb->depth_avg_frames = depth;
    } else {
      return out;
    }
  }

  jb->playing_ticks++;
  if (jb->count == 0) {
    /* Nothing buffered: the next packet is late or lost, or the sender paused. */
    jb->excess_run = 0;
    if (++jb->empty_run > JB_MAX_EMPTY_CONCEAL) {
      jb->paused = 1;
      jb->playing = 0;
      jb->covered = 0;
      return out;
    }
    jb->concealed++;
    out.action = JB_PLC;
    if (jb->playing_ticks <= JB_SETTLE_TICKS || (have_p && p < jb->target_ms)) {
      /* The buffer is below its target (or still settling): conceal WITHOUT consuming the sequence
       * number. A merely late packet then plays next tick, and the buffer has grown by the frame it
       * was missing; if it never comes, take() skips the frames this concealment covered. */
      jb->covered++;
    } else {
      /* At its target already: a spike beyond it is what the target deliberately leaves out (the
       * ~3 % tail). Conceal and move on, keeping the timeline; the packet will count as late, and the
       * estimate takes its delay into account when it arrives. */
      jb->next_seq++;
      jb->next_media += JB_SAMPLES_PER_FRAME;
    }
    return out;
  }
  jb->empty_run = 0;

  jb->excess_run = have_p && p - JB_FRAME_MS >= jb->target_ms + JB_SHRINK_HYST_MS ? jb->excess_run + 1 : 0;
  jb->shortfall_run = have_p && p < jb->target_ms ? jb->shortfall_run + 1 : 0;

  if (depth > jb->max_frames + 2) {
    /* Far more than the largest target (a burst after a stall of the mixer itself): skip straight back
     * to the target. Audible, but bounded latency matters more than one glitch. */
    skip_to_target(jb, now_ms, warmup);
    jb->excess_run = 0;
  } else if (jb->shortfall_run >= JB_GROW_SUSTAIN && may_adapt) {
    /* Grow by one frame in a pause: play a concealment frame without consuming anything. */
    jb->shortfall_run = 0;
    out.action = JB_PLC;
    return out;
  }

  if (jb->excess_run == 0) jb->shrink_wait = 0;

  int big = have_p && p - JB_FAST_EXCESS_FRAMES * JB_FRAME_MS >= jb->target_ms + JB_SHRINK_HYST_MS;
  out = take(jb);
  if (out.action == JB_PLAY && jb->excess_run >= JB_SHRINK_SUSTAIN && jb->since_drop >= JB_SPACING_QUIET &&
      slot_has(jb, jb->next_seq))
    jb->shrink = jb->shrink_wait >= (big ? JB_SHRINK_WAIT_FAST : JB_SHRINK_WAIT_QUIET) ? JB_SHRINK_FORCED : JB_SHRINK_QUIET;
  return out;
}

int jb_drop_next(Jb *jb, JbOut *out) {
  if (jb->shrink == JB_SHRINK_NONE || !slot_has(jb, jb->next_seq)) return 0;
  *out = take(jb);
  jb->shrink = JB_SHRINK_NONE;
  jb->shrink_wait = 0;
  jb->dropped++;
  jb->since_drop = 0;
  return 1;
}

double jb_loss_percent(const Jb *jb) {
  int64_t exp = jb->expected - jb->snap_expected[0];
  int64_t rec = jb->received_total - jb->snap_received[0];
  if (exp <= 0) return 0.0;
  double loss = 100.0 * (double)(exp - rec) / (double)exp;
  if (loss < 0) loss = 0;
  if (loss > 100) loss = 100;
  return loss;
}
