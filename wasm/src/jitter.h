/*
 * Adaptive jitter buffer for one participant's incoming Opus stream (48 kHz, 20 ms frames).
 *
 * The buffer only orders and times packets; decoding (and therefore PLC/FEC) is done by the caller
 * (core.c), which asks once per 20 ms tick what to play. Keeping decode out of here lets the caller
 * keep one decoder per participant and decode dropped frames too, so decoder state stays continuous.
 *
 * Sequence numbers are uint32 and wrap; every comparison goes through a signed 32-bit difference.
 */
#ifndef AGORA_JITTER_H
#define AGORA_JITTER_H

#include <stdint.h>

#define JB_FRAME_MS 20
/* Power of two, larger than the largest target (jitter_max_ms 2000 → 100 frames) plus headroom. */
#define JB_SLOTS 128
/* Window of relative transit delays the target is computed from (≈ 2.5 s of packets). */
#define JB_DELAY_WINDOW 128

typedef enum {
  JB_SILENCE = 0, /* nothing to play (not started / paused): the caller outputs silence, no decode */
  JB_PLAY = 1,    /* decode `data` normally */
  JB_FEC = 2,     /* the frame is missing but the next one is here: decode `data` with decode_fec=1 */
  JB_PLC = 3,     /* the frame is missing: decode NULL (packet loss concealment) */
} JbAction;

typedef struct {
  JbAction action;
  const uint8_t *data;
  int len;
} JbOut;

typedef struct {
  uint32_t seq;
  uint32_t ts;
  uint16_t len;
  uint16_t cap;
  uint8_t valid;
  uint8_t *data;
} JbSlot;

/* Result of jb_push, also what the caller counts. */
typedef enum {
  JB_PUSH_OK = 0,
  JB_PUSH_LATE = 1,      /* its frame was already played or concealed: dropped */
  JB_PUSH_DUPLICATE = 2, /* already buffered: dropped */
  JB_PUSH_RESYNC = 3,    /* a jump too large to buffer: the buffer was flushed and restarted at it */
  JB_PUSH_NOMEM = 4,
} JbPushResult;

typedef struct {
  JbSlot slots[JB_SLOTS];
  int started;        /* at least one packet seen */
  int playing;        /* playout running (else prefilling up to the target) */
  int paused;         /* the sender went quiet: nothing played until its next packet */
  uint32_t next_seq;  /* the sequence number the next tick plays */
  uint32_t max_seq;   /* highest sequence number received */
  uint32_t last_played_seq; /* the last frame decoded from a real packet */
  int count;          /* packets currently buffered */
  double first_arrival_ms; /* arrival of the first packet of the current prefill */
  int empty_run;      /* consecutive ticks with nothing buffered while playing */
  int covered;        /* frames of the current underrun already filled by concealment */
  int playing_ticks;  /* ticks since playout (re)started */
  int old_run;        /* consecutive packets far in the past (sender restarted its sequence) */

  /* Interarrival jitter, RFC 3550 §6.4.1, in ms. */
  double jitter_ms;
  double last_arrival_ms;
  uint32_t last_ts;
  int64_t last_ts_ext; /* last_ts unwrapped: media time of the last packet, in samples */
  int have_last;

  /* Relative transit delays (arrival - media time) of recent packets: the target is their spread. */
  double delays[JB_DELAY_WINDOW];
  int delay_n, delay_pos;
  int target_frames;  /* current playout target */
  int min_frames, max_frames;
  int target_tick;    /* ticks since the target was last recomputed */
  int excess_run;     /* ticks the buffer has been deeper than the target */
  int shortfall_run;  /* ticks the buffer has been shallower than the target */
  double depth_avg_frames; /* smoothed depth, reported as bufferDepthMs */

  /* Counters (cumulative for the participant's lifetime). */
  uint32_t received, late, duplicates, concealed, fec, resyncs, dropped;
  /* Loss: packets expected (highest seq advances, gaps included) and received; reported over a
   * sliding window of 5-10 s between two snapshots so an old burst does not mark a stream forever. */
  int64_t expected, received_total;
  int64_t snap_expected[2], snap_received[2];
  int snap_ticks;
} Jb;

void jb_init(Jb *jb, int min_ms, int max_ms);
void jb_free(Jb *jb);
void jb_set_limits(Jb *jb, int min_ms, int max_ms);
JbPushResult jb_push(Jb *jb, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len);
/* Frames buffered from next_seq up to the newest packet (gaps included). */
int jb_depth(const Jb *jb);
/*
 * What to play this tick. `may_adapt` is true when the participant is not talking, so that
 * inserting or dropping a frame to move towards the target is inaudible.
 * `*discard` is set to one extra frame the caller must decode and throw away (shrinking latency)
 * before decoding the returned one; JbOut.action is then the frame to play.
 */
JbOut jb_pull(Jb *jb, double now_ms, int may_adapt, JbOut *discard);
double jb_loss_percent(const Jb *jb);

#endif
