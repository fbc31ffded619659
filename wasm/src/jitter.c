/*
 * Adaptive jitter buffer. See jitter.h for the contract.
 *
 * Target: the playout delay needed so that ~98 % of packets arrive in time. For every packet we keep
 * its relative transit delay (arrival time minus media time); the spread between the smallest and the
 * 98th-percentile delay over the last JB_DELAY_WINDOW packets is the jitter we must absorb. One frame
 * is added because packet arrival and our tick have an arbitrary phase. The target is clamped to
 * [jitter_min_ms, jitter_max_ms] and moved one frame at a time, preferably while the participant is
 * not talking (a concealment frame is inserted to grow, a decoded frame is dropped to shrink).
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
/* Recompute the target every half second. */
#define JB_TARGET_PERIOD 25
/* Playout ticks after a (re)start during which every underrun grows the buffer (no data yet). */
#define JB_SETTLE_TICKS 25
/* Continuous talk: a one- or two-frame excess is dropped mid-speech only after this long (10 s). */
#define JB_FORCED_SHRINK_TICKS 500
/* Loss is reported over the last 5-10 s. */
#define JB_LOSS_PERIOD 250

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline JbSlot *slot_of(Jb *jb, uint32_t seq) { return &jb->slots[seq & (JB_SLOTS - 1)]; }

void jb_set_limits(Jb *jb, int min_ms, int max_ms) {
  int mn = (min_ms + JB_FRAME_MS - 1) / JB_FRAME_MS;
  int mx = max_ms / JB_FRAME_MS;
  if (mn < 1) mn = 1; /* a frame must have arrived before its tick: one frame is the floor */
  if (mx > JB_SLOTS - 16) mx = JB_SLOTS - 16;
  if (mx < mn) mx = mn;
  jb->min_frames = mn;
  jb->max_frames = mx;
  if (jb->target_frames < mn) jb->target_frames = mn;
  if (jb->target_frames > mx) jb->target_frames = mx;
}

void jb_init(Jb *jb, int min_ms, int max_ms) {
  memset(jb, 0, sizeof *jb);
  jb_set_limits(jb, min_ms, max_ms);
  jb->target_frames = jb->min_frames;
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

/* Start (or restart) playout at `seq`: prefill up to the target before playing. */
static void anchor(Jb *jb, uint32_t seq, double arrival_ms) {
  flush(jb);
  jb->last_played_seq = seq - 1;
  jb->started = 1;
  jb->playing = 0;
  jb->paused = 0;
  jb->next_seq = seq;
  jb->max_seq = seq;
  jb->first_arrival_ms = arrival_ms;
  jb->empty_run = 0;
  jb->covered = 0;
  jb->playing_ticks = 0;
  jb->old_run = 0;
  jb->excess_run = 0;
  jb->shortfall_run = 0;
  /* The restart point counts as the continuation of the stream, not as a gap. */
  jb->expected += 1;
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
      /* Sender restart: the old delays refer to another clock. */
      jb->delay_n = 0;
      jb->delay_pos = 0;
      jb->last_ts_ext = 0;
    } else {
      double d = (arrival_ms - jb->last_arrival_ms) - (double)dts / 48.0;
      if (d < 0) d = -d;
      jb->jitter_ms += (d - jb->jitter_ms) / 16.0;
      jb->last_ts_ext += dts;
    }
    jb->last_ts = ts;
    jb->last_arrival_ms = arrival_ms;
  }
  jb->delays[jb->delay_pos] = arrival_ms - (double)jb->last_ts_ext / 48.0;
  jb->delay_pos = (jb->delay_pos + 1) % JB_DELAY_WINDOW;
  if (jb->delay_n < JB_DELAY_WINDOW) jb->delay_n++;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void update_target(Jb *jb) {
  if (jb->delay_n < 8) return; /* not enough data yet: keep the current target */
  double tmp[JB_DELAY_WINDOW];
  int n = jb->delay_n;
  memcpy(tmp, jb->delays, (size_t)n * sizeof(double));
  qsort(tmp, (size_t)n, sizeof(double), cmp_double);
  int hi = (int)(0.98 * (double)(n - 1) + 0.5);
  double spread = tmp[hi] - tmp[0];
  int frames = (int)ceil(spread / JB_FRAME_MS - 1e-9) + 1;
  if (frames < jb->min_frames) frames = jb->min_frames;
  if (frames > jb->max_frames) frames = jb->max_frames;
  jb->target_frames = frames;
}

JbPushResult jb_push(Jb *jb, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len) {
  JbPushResult res = JB_PUSH_OK;
  if (len <= 0 || len > 0xffff) return JB_PUSH_NOMEM;
  /* Late packets count for jitter too: their lateness is exactly what the target must absorb. */
  update_timing(jb, ts, arrival_ms);

  if (!jb->started) {
    anchor(jb, seq, arrival_ms);
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
      anchor(jb, seq, arrival_ms);
      res = JB_PUSH_RESYNC;
    } else if (jb->paused) {
      /* Relative to the last frame really played, not to next_seq: the frames concealed just before
       * the pause were never heard, so a talk spurt resuming right after them is not late. */
      if (sdiff(seq, jb->last_played_seq) <= 0) {
        jb->late++;
        jb->received_total++;
        return JB_PUSH_LATE;
      }
      anchor(jb, seq, arrival_ms); /* talk spurt after a pause: prefill again */
    } else if (d < 0) {
      if (!jb->playing && sdiff(jb->max_seq, seq) < JB_SLOTS - 1) {
        /* Still prefilling and an earlier packet overtook: start playout from it instead. */
        jb->next_seq = seq;
      } else {
        jb->old_run = 0;
        jb->late++;
        jb->received_total++;
        jb->target_tick = JB_TARGET_PERIOD; /* a late packet is direct evidence: re-target next tick */
        return JB_PUSH_LATE;
      }
    } else if (d >= JB_SLOTS) {
      /* Further ahead than the buffer can hold: a huge gap. Restart there rather than stall. */
      jb->resyncs++;
      anchor(jb, seq, arrival_ms);
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
    s = slot_of(jb, jb->next_seq);
  }
  jb->covered = 0;
  if (s->valid && s->seq == jb->next_seq) {
    out.action = JB_PLAY;
    jb->last_played_seq = jb->next_seq;
    out.data = s->data; /* stays valid for this tick: pushes only happen between ticks */
    out.len = s->len;
    s->valid = 0;
    jb->count--;
  } else {
    jb->concealed++;
    JbSlot *n = slot_of(jb, jb->next_seq + 1);
    if (n->valid && n->seq == jb->next_seq + 1) {
      /* Opus in-band FEC: the next packet may carry a low-bitrate copy of this frame. Without one,
       * libopus falls back to PLC by itself. */
      out.action = JB_FEC;
      out.data = n->data;
      out.len = n->len;
      jb->fec++;
    }
  }
  jb->next_seq++;
  return out;
}

JbOut jb_pull(Jb *jb, double now_ms, int may_adapt, JbOut *discard) {
  JbOut out = {JB_SILENCE, NULL, 0};
  discard->action = JB_SILENCE;
  discard->data = NULL;
  discard->len = 0;

  if (++jb->snap_ticks >= JB_LOSS_PERIOD) {
    jb->snap_ticks = 0;
    jb->snap_expected[0] = jb->snap_expected[1];
    jb->snap_received[0] = jb->snap_received[1];
    jb->snap_expected[1] = jb->expected;
    jb->snap_received[1] = jb->received_total;
  }
  if (++jb->target_tick >= JB_TARGET_PERIOD) {
    jb->target_tick = 0;
    update_target(jb);
  }
  if (!jb->started || jb->paused) {
    jb->depth_avg_frames *= 0.9;
    return out;
  }

  int depth = jb_depth(jb);
  jb->depth_avg_frames += 0.1 * ((double)depth - jb->depth_avg_frames);

  if (!jb->playing) {
    if (jb->count > 0 &&
        (depth >= jb->target_frames || now_ms - jb->first_arrival_ms >= (double)(jb->target_frames * JB_FRAME_MS))) {
      jb->playing = 1;
    } else {
      return out;
    }
  }

  jb->playing_ticks++;
  if (jb->count == 0) {
    /* Nothing buffered: the next packet is late or lost, or the sender paused. */
    if (++jb->empty_run > JB_MAX_EMPTY_CONCEAL) {
      jb->paused = 1;
      jb->playing = 0;
      jb->covered = 0;
      return out;
    }
    jb->concealed++;
    out.action = JB_PLC;
    if (jb->playing_ticks <= JB_SETTLE_TICKS || jb->depth_avg_frames + 0.5 < (double)jb->target_frames) {
      /* The buffer is below its target (or still settling): conceal WITHOUT consuming the sequence
       * number. A merely late packet then plays next tick, and the buffer has grown by the frame it
       * was missing; if it never comes, take() skips the frames this concealment covered. */
      jb->covered++;
    } else {
      /* At its target already: a spike beyond it is what the target deliberately leaves out (the
       * ~2 % tail). Conceal and move on, keeping the timeline; the packet will count as late, and the
       * target is recomputed at once from its delay. */
      jb->next_seq++;
    }
    return out;
  }
  jb->empty_run = 0;

  jb->excess_run = depth > jb->target_frames + 1 ? jb->excess_run + 1 : 0;
  jb->shortfall_run = depth < jb->target_frames ? jb->shortfall_run + 1 : 0;

  if (depth > jb->max_frames + 2) {
    /* A burst after a stall left far more than the largest target: skip straight back to the
     * target. Audible, but bounded latency matters more than one glitch. */
    while (jb_depth(jb) > jb->target_frames) {
      JbSlot *s = slot_of(jb, jb->next_seq);
      if (s->valid && s->seq == jb->next_seq) {
        s->valid = 0;
        jb->count--;
      }
      jb->next_seq++;
      jb->dropped++;
    }
    jb->excess_run = 0;
  } else if (jb->excess_run >= JB_TARGET_PERIOD &&
             (may_adapt || jb->excess_run >= JB_FORCED_SHRINK_TICKS || depth > jb->target_frames + 4)) {
    /* Shrink by one frame: the caller decodes it (decoder continuity) but does not play it. Done in a
     * pause when possible: a dropped frame mid-word (or mid-note) is a phase jump. During continuous
     * talk only a large excess, or a small one lasting 10 s, is worth that glitch. */
    *discard = take(jb);
    if (discard->action != JB_PLAY) {
      /* Skipping a gap needs no decode and is not a concealment. */
      if (discard->action == JB_FEC) jb->fec--;
      jb->concealed--;
      discard->action = JB_SILENCE;
      discard->data = NULL;
      discard->len = 0;
    }
    jb->dropped++;
    jb->excess_run = 0;
    if (jb->count == 0) {
      out.action = JB_PLC;
      jb->concealed++;
      jb->next_seq++;
      return out;
    }
  } else if (jb->shortfall_run >= 10 && may_adapt) {
    /* Grow by one frame: play a concealment frame without consuming anything. */
    jb->shortfall_run = 0;
    out.action = JB_PLC;
    return out;
  }
  return take(jb);
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
