/*
 * Adaptive jitter buffer for one participant's incoming Opus stream (48 kHz, 20 ms frames).
 *
 * The buffer only orders and times packets; decoding (and therefore PLC/FEC) is done by the caller
 * (room.c), which asks once per 20 ms tick what to play. Keeping decode out of here lets the caller
 * keep one decoder per participant and decode dropped frames too, so decoder state stays continuous.
 *
 * Sequence numbers are uint32 and wrap; every comparison goes through a signed 32-bit difference.
 */
#ifndef AGORA_JITTER_H
#define AGORA_JITTER_H

#include <stdint.h>

#define JB_FRAME_MS 20
/* Power of two, larger than the largest target (jitter_max_ms 2000 → 100 frames) plus headroom: the
 * largest target is capped at JB_SLOTS − 16 frames. */
#define JB_SLOTS 128
/* Window of relative transit delays the transit baseline (fastest recent packet) is taken from:
 * 100 packets ≈ 2 s. */
#define JB_DELAY_WINDOW 100
/* Delays above the baseline the jitter estimate is a weighted percentile of: the last 100 packets (2 s). */
#define JB_JIT_WINDOW 100

typedef enum {
  JB_SILENCE = 0, /* nothing to play (not started, prefilling, paused): the caller outputs silence, no decode */
  JB_PLAY = 1,    /* decode `data` normally */
  JB_FEC = 2,     /* the frame is missing but the next one is here: decode `data` with decode_fec=1 */
  JB_PLC = 3,     /* the frame is missing, or the buffer grows by one: decode NULL (packet loss concealment) */
} JbAction;

typedef struct {
  JbAction action;
  const uint8_t *data;
  int len;
  uint8_t flags; /* the packet's sender flags (room.c: voice activity), as given to jb_push */
} JbOut;

typedef struct {
  uint32_t seq;
  uint32_t ts;
  uint16_t len;
  uint16_t cap;
  uint8_t valid;
  uint8_t flags;
  uint8_t *data;
} JbSlot;

/* Result of jb_push, also what the caller counts. */
typedef enum {
  JB_PUSH_OK = 0,
  JB_PUSH_LATE = 1,      /* its frame was already played or concealed (or a stray packet from far in the past): dropped */
  JB_PUSH_DUPLICATE = 2, /* already buffered, or already received and its turn passed: dropped, its timing ignored */
  JB_PUSH_RESYNC = 3,    /* a jump too large to buffer, or a sender that restarted its sequence numbers:
                          * the buffer was flushed and restarted at it */
  JB_PUSH_NOMEM = 4,     /* length not in 1..65535, or no memory for it: dropped */
} JbPushResult;

/* What jb_pull asks of the caller after the frame it returned (see jb_drop_next). */
typedef enum {
  JB_SHRINK_NONE = 0,
  JB_SHRINK_QUIET = 1,  /* the playout delay has been a frame or more over target_ms for 200 ms: drop the
                         * next frame if this one is quiet */
  JB_SHRINK_FORCED = 2, /* offered and declined long enough (160 ms; 60 ms at 3+ frames over): drop the next
                         * frame even mid-speech */
} JbShrink;

typedef struct {
  JbSlot slots[JB_SLOTS];
  int started;        /* at least one packet seen */
  int playing;        /* playout running (else prefilling up to the target) */
  int paused;         /* the sender went quiet: nothing played until its next packet */
  uint32_t next_seq;  /* the sequence number the next tick plays */
  uint32_t max_seq;   /* highest sequence number received */
  uint32_t last_played_seq; /* the last frame decoded from a real packet */
  int count;          /* packets currently buffered */
  int empty_run;      /* consecutive ticks with nothing buffered while playing */
  int covered;        /* frames of the current underrun already filled by concealment */
  int playing_ticks;  /* ticks since playout (re)started */
  int old_run;        /* consecutive packets far in the past (sender restarted its sequence) */

  /* Interarrival jitter, RFC 3550 §6.4.1, in ms (reported; the target uses the window below). */
  double jitter_ms;
  double last_arrival_ms;
  uint32_t last_ts;
  int64_t last_ts_ext; /* last_ts unwrapped: media time of the last packet, in samples */
  int have_last;

  /* Relative transit delays d = arrival − media time (ms) of the last JB_DELAY_WINDOW packets of the
   * current epoch; their minimum is the baseline: the transit of the fastest recent packet. */
  double delays[JB_DELAY_WINDOW];
  int delay_n, delay_pos;
  double base_ms;

  /* Delays above the baseline of the last JB_JIT_WINDOW packets (kept across epochs: they describe the
   * path, not the clock). Their high percentile, newer packets weighing more, is the jitter to absorb. */
  float jit[JB_JIT_WINDOW];
  int jit_n, jit_pos;
  double jitter_est_ms; /* that percentile */
  int est_dirty;        /* a packet arrived above it: recompute at the next tick (fast attack) */
  int est_tick;

  /* Playout position: media time (samples, same unwrapped clock as last_ts_ext) of the frame at
   * next_seq. Playout delay P = now − media − base_ms: how long after the fastest possible arrival a
   * frame is played. P ≥ the jitter quantile means ~all packets arrive in time. */
  int64_t next_media;
  int media_ok;            /* 0 after a timestamp jump, until a packet of the new clock plays */
  uint32_t media_epoch_seq; /* the first packet of the new clock */
  uint32_t pending_seq;     /* the packet jb_push is processing */
  uint8_t pending_flags;    /* and its flags */
  double playout_ms; /* last P measured (diagnostics) */

  double target_ms;   /* playout delay aimed at: clamp(jitter quantile + margin) */
  int target_frames;  /* the same as a buffer depth (reported): the depth the fastest packets see */
  int min_frames, max_frames;
  int excess_run;     /* ticks P has been ≥ one frame (+ 1 ms hysteresis) over target_ms */
  int shortfall_run;  /* ticks P has been under target_ms */
  int since_drop;     /* ticks since the last frame dropped to shrink */
  JbShrink shrink;    /* set by jb_pull: whether the caller should drop the next frame */
  int shrink_wait;    /* ticks a shrink has been offered and declined (no quiet frame) */
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
/* `flags` are stored with the packet and handed back in JbOut.flags (opaque to the buffer). */
JbPushResult jb_push(Jb *jb, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len, uint8_t flags);
/* Frames buffered from next_seq up to the newest packet (gaps included). */
int jb_depth(const Jb *jb);
/*
 * What to play this tick. `may_adapt` is true when the participant is not talking, so that inserting a
 * concealment frame to grow towards the target is inaudible.
 * `*warmup` is set to a frame the caller should decode and throw away before decoding the returned one:
 * the last frame skipped when the buffer skips to its target (playout (re)starting deeper than the
 * target, or a burst far beyond the largest target), so the decoder leads into the frame played.
 * Afterwards `jb->shrink` says whether the buffer wants to lose a frame (see jb_drop_next).
 */
JbOut jb_pull(Jb *jb, double now_ms, int may_adapt, JbOut *warmup);
/*
 * Shrinking by one frame: when jb->shrink is set (after a jb_pull that returned JB_PLAY) and the caller
 * decides to drop, this consumes the NEXT frame too and returns 1 with it in `*out`; the caller decodes it
 * (decoder continuity) and cross-fades it into the frame it is playing, so two frames of media are played
 * in one tick. Returns 0 (nothing consumed) when the next frame is not buffered or no shrink is wanted.
 */
int jb_drop_next(Jb *jb, JbOut *out);
double jb_loss_percent(const Jb *jb);

#endif
