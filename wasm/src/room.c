/*
 * One mixing room. Per 20 ms tick (am_room_tick):
 *
 *  1. every participant's jitter buffer yields a packet, an FEC recovery, a concealment or silence,
 *     which its own Opus decoder turns into 960 samples (decoder state stays continuous, PLC is the
 *     real Opus PLC);
 *     when the buffer is a frame over its target, two consecutive frames are decoded and cross-faded
 *     into one (in a quiet frame when possible) to shed 20 ms of latency without a click;
 *  2. talk detection: frame energy against a tracked noise floor, 40 ms attack, 300 ms hangover;
 *  3. the top-K talkers (ranked by smoothed level, incumbents favoured by 6 dB so the set does not
 *     flap) are mixed; entering or leaving the mix is a 20 ms gain ramp, never a click;
 *  4. sum S = Σ contributions in int32; a mixed participant hears S − own (mix-minus, exact in int32);
 *     every mix goes through its own soft limiter to int16;
 *  5. SHARED ENCODE: mixed participants get a personal encoder; everyone else receives the single
 *     shared encoding of S, which is correct for them because they are not in S.
 *
 * Decode skipping (voice-activity flags, am_room_push_flags). A participant whose frames say "no voice"
 * and who has no chance to reach a mix (not talking, not a top-K candidate, not fading out) is not
 * decoded: its packet still goes through the jitter buffer (timing, loss, latency shrink stay exact) and
 * the last one is kept. The flag is a hint, never trusted for ranking:
 *  - a flagged-speaking frame is decoded and ranked by its measured level, so silence flagged as voice
 *    never takes a top-K slot;
 *  - a few flagged-silent participants per tick are decoded anyway (round robin, am_room_set_vad); one
 *    with energy becomes a candidate on that frame and is decoded from then on like any talker.
 * Decoder continuity: Opus prediction needs the frames before; after skipped frames the decoder is reset
 * and the last skipped packet decoded (and thrown away) first, so the resumed stream starts from a primed
 * state (no PLC run, no burst), then the usual 2.5 ms onset ramp.
 *
 * Per-listener rules (am_room_set_gain): a listener with a gain for some source (0 = muted for it only)
 * gets a personal mix S - own + sum((g - 1) * source) while one of those sources is mixed (the personal
 * encoder then follows the same hold/release rules as a talker's); everyone else keeps the shared encode. A priority
 * speaker (am_room_set_priority) ducks everyone else inside S itself, so it costs no extra encode.
 *
 * Encoder continuity. The client's decoder carries state from the stream it has been receiving, so
 * switching a participant between streams must not break prediction:
 *  - shared → personal (a listener starts talking): the new personal encoder is a byte copy of the
 *    shared encoder (OpusEncoder holds no pointers except to static mode tables), so the client's
 *    decoder sees one continuous encoder whose input merely stops containing the participant;
 *  - personal → shared: decoder state cannot be copied back, so the personal encoder is kept for at
 *    least 1 s after the participant leaves the mix and released only when nobody is being mixed
 *    (the switch then happens on silence), or after 5 s at the latest.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agora_media.h"
#include "jitter.h"
#include "limiter.h"
#include "opus.h"

#define HOLD_MIN_TICKS 50
#define HOLD_MAX_TICKS 250
#define VAD_ATTACK 2
#define VAD_HANGOVER 15
#define VAD_ABS_FLOOR_DB -55.0f
#define VAD_MARGIN_DB 9.0f
#define NOISE_MIN_DB -90.0f
#define NOISE_MAX_DB -35.0f
#define NOISE_RISE_DB 0.02f /* per frame: 1 dB/s, slow enough that a talker never becomes "noise" */
#define INCUMBENT_BONUS_DB 6.0f
#define SILENT_DB -120.0f
#define ONSET_RAMP 120      /* samples */
#define QUIET_BELOW_DB 15.0f /* a frame this far under the talker's smoothed level is a good place to drop */
#define PRIORITY_BONUS_DB 100.0f /* a talking priority speaker always wins a top-K slot */
#define DEFAULT_PROBE_PERIOD 25 /* ticks: every skipped participant is probed twice a second */
#define MAX_PROBE_PERIOD 500

typedef struct MixRule {
  int src;    /* source slot */
  float gain; /* target */
  float cur;  /* applied at the end of the last tick (ramps towards gain) */
} MixRule;

typedef struct MixOut {
  OpusEncoder *enc;
  Limiter lim;
  int16_t pcm[AM_FRAME];
  uint8_t pkt[AM_MAX_PACKET];
} MixOut;

typedef struct AmPart {
  uint32_t handle;
  OpusDecoder *dec;
  Jb jb;
  int16_t pcm[AM_FRAME];     /* decoded input of this tick */
  int16_t contrib[AM_FRAME]; /* what it adds to the mix this tick (pcm × fade gain) */
  int has_audio;
  float level_db, smooth_db, noise_db;
  int above, hang, speaking, candidate;
  int in_topk;
  float mix_gain; /* 0..1 at the end of the last tick */
  float mix_gain_prev; /* at its start (before this tick's ramp) */
  int in_mix;     /* contributes to S this tick (selected, or fading out) */
  MixOut *personal;
  int hold;       /* ticks since it last needed a personal mix */
  int got_shared; /* received the shared packet in the previous tick */
  uint32_t packets_in, packets_out, invalid, decode_errors;
  int can_speak;
  uint8_t last_flags;  /* flags of the last frame pulled */
  int skipping;        /* frames pulled without decoding since the last decode */
  int probe_now;       /* picked by this tick's round-robin probe */
  int skip_len;        /* the last packet pulled without decoding (decoder warm-up on resume) */
  uint8_t skip_pkt[AM_MAX_PACKET];
  MixRule rules[AM_MAX_RULES];
  int nrules;
  uint32_t decodes, skipped, probes;
} AmPart;

struct AmRoom {
  AmPart **parts;
  int cap, count;
  int topk, shared_on, bitrate, complexity, jmin, jmax, fec;
  MixOut shared;
  int shared_valid; /* the shared encoder encoded the previous tick */
  MixOut **pool;
  int pool_n, pool_cap;
  int enc_size;
  int32_t sum[AM_FRAME];
  int32_t tmp[AM_FRAME];
  int32_t *outs;
  uint32_t *recips;
  const uint8_t **out_pkt; /* native-width copies of the descriptor pointers */
  int *out_first;
  double counters[AM_RC_COUNT];
  int skip_on, probe_period, probe_cursor;
  double probe_credit; /* probes owed: skipped participants / probe_period per tick, accumulated */
  int priority;                 /* slot, or -1 */
  float duck_gain, duck_cur;    /* what others are scaled by while the priority speaker is mixed; now */
};

static void enc_apply(OpusEncoder *e, int bitrate, int complexity, int fec) {
  opus_encoder_ctl(e, OPUS_SET_BITRATE(bitrate));
  opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(complexity));
  opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(fec));
  opus_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(fec ? 10 : 0));
  opus_encoder_ctl(e, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
}

static OpusEncoder *enc_new(int bitrate, int complexity, int fec) {
  int err = 0;
  OpusEncoder *e = opus_encoder_create(AM_SAMPLE_RATE, 1, OPUS_APPLICATION_VOIP, &err);
  if (err != OPUS_OK || !e) return NULL;
  enc_apply(e, bitrate, complexity, fec);
  return e;
}

static MixOut *mix_acquire(AmRoom *r) {
  if (r->pool_n > 0) return r->pool[--r->pool_n];
  MixOut *m = (MixOut *)calloc(1, sizeof *m);
  if (!m) return NULL;
  m->enc = enc_new(r->bitrate, r->complexity, r->fec);
  if (!m->enc) {
    free(m);
    return NULL;
  }
  lim_init(&m->lim);
  return m;
}

static void mix_destroy(MixOut *m) {
  opus_encoder_destroy(m->enc);
  free(m);
}

/* Released encoders are pooled: creating an Opus encoder costs far more than resetting one. */
static void mix_release(AmRoom *r, MixOut *m) {
  int keep = r->topk * 2 + 4;
  if (r->pool_n >= keep) {
    mix_destroy(m);
    return;
  }
  if (r->pool_n == r->pool_cap) {
    int nc = r->pool_cap ? r->pool_cap * 2 : 8;
    MixOut **np = (MixOut **)realloc(r->pool, (size_t)nc * sizeof *np);
    if (!np) {
      mix_destroy(m);
      return;
    }
    r->pool = np;
    r->pool_cap = nc;
  }
  r->pool[r->pool_n++] = m;
}

AmRoom *am_room_create(void) {
  AmRoom *r = (AmRoom *)calloc(1, sizeof *r);
  if (!r) return NULL;
  r->topk = 3;
  r->shared_on = 1;
  r->bitrate = 32000;
  r->complexity = 10;
  r->jmin = 20;
  r->jmax = 200;
  r->fec = 0;
  r->skip_on = 1;
  r->probe_period = DEFAULT_PROBE_PERIOD;
  r->priority = -1;
  r->duck_gain = 0.25f;
  r->duck_cur = 1.0f;
  r->shared.enc = enc_new(r->bitrate, r->complexity, r->fec);
  if (!r->shared.enc) {
    free(r);
    return NULL;
  }
  lim_init(&r->shared.lim);
  r->enc_size = opus_encoder_get_size(1);
  return r;
}

static void part_free(AmRoom *r, AmPart *p) {
  if (p->personal) mix_release(r, p->personal);
  opus_decoder_destroy(p->dec);
  jb_free(&p->jb);
  free(p);
}

void am_room_destroy(AmRoom *r) {
  if (!r) return;
  for (int i = 0; i < r->cap; i++)
    if (r->parts[i]) part_free(r, r->parts[i]);
  for (int i = 0; i < r->pool_n; i++) mix_destroy(r->pool[i]);
  opus_encoder_destroy(r->shared.enc);
  free(r->pool);
  free(r->parts);
  free(r->outs);
  free(r->recips);
  free((void *)r->out_pkt);
  free(r->out_first);
  free(r);
}

int am_room_configure(AmRoom *r, int topk, int shared, int bitrate, int complexity, int jmin, int jmax, int fec) {
  if (!r || topk < 1 || topk > AM_MAX_TOPK || bitrate < 6000 || bitrate > 510000 || complexity < 0 ||
      complexity > 10 || jmin < 0 || jmax < jmin)
    return AM_ERR_ARG;
  int enc_changed = bitrate != r->bitrate || complexity != r->complexity || (fec != 0) != (r->fec != 0);
  r->topk = topk;
  r->shared_on = shared != 0;
  r->bitrate = bitrate;
  r->complexity = complexity;
  r->fec = fec != 0;
  r->jmin = jmin;
  r->jmax = jmax;
  if (enc_changed) {
    enc_apply(r->shared.enc, bitrate, complexity, r->fec);
    for (int i = 0; i < r->pool_n; i++) enc_apply(r->pool[i]->enc, bitrate, complexity, r->fec);
  }
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    jb_set_limits(&p->jb, jmin, jmax);
    if (enc_changed && p->personal) enc_apply(p->personal->enc, bitrate, complexity, r->fec);
  }
  return 0;
}

int am_room_add(AmRoom *r, uint32_t handle) {
  if (!r) return AM_ERR_ARG;
  int slot = -1;
  for (int i = 0; i < r->cap; i++)
    if (!r->parts[i]) {
      slot = i;
      break;
    }
  if (slot < 0) {
    int nc = r->cap ? r->cap * 2 : 8;
    AmPart **np = (AmPart **)realloc(r->parts, (size_t)nc * sizeof *np);
    if (!np) return AM_ERR_NOMEM;
    memset(np + r->cap, 0, (size_t)(nc - r->cap) * sizeof *np);
    r->parts = np;
    /* Output tables: at most one packet per participant plus the shared one. */
    int32_t *no = (int32_t *)realloc(r->outs, (size_t)(nc + 1) * 4 * sizeof(int32_t));
    if (!no) return AM_ERR_NOMEM;
    r->outs = no;
    uint32_t *nr = (uint32_t *)realloc(r->recips, (size_t)nc * sizeof(uint32_t));
    if (!nr) return AM_ERR_NOMEM;
    r->recips = nr;
    const uint8_t **npk = (const uint8_t **)realloc((void *)r->out_pkt, (size_t)(nc + 1) * sizeof *npk);
    if (!npk) return AM_ERR_NOMEM;
    r->out_pkt = npk;
    int *nf = (int *)realloc(r->out_first, (size_t)(nc + 1) * sizeof(int));
    if (!nf) return AM_ERR_NOMEM;
    r->out_first = nf;
    slot = r->cap;
    r->cap = nc;
  }
  AmPart *p = (AmPart *)calloc(1, sizeof *p);
  if (!p) return AM_ERR_NOMEM;
  int err = 0;
  p->dec = opus_decoder_create(AM_SAMPLE_RATE, 1, &err);
  if (err != OPUS_OK || !p->dec) {
    free(p);
    return AM_ERR_OPUS;
  }
  jb_init(&p->jb, r->jmin, r->jmax);
  p->handle = handle;
  p->level_db = SILENT_DB;
  p->smooth_db = SILENT_DB;
  p->noise_db = -70.0f;
  p->can_speak = 1;
  r->parts[slot] = p;
  r->count++;
  return slot;
}

static AmPart *part_at(AmRoom *r, int slot) {
  if (!r || slot < 0 || slot >= r->cap) return NULL;
  return r->parts[slot];
}

int am_room_remove(AmRoom *r, int slot) {
  AmPart *p = part_at(r, slot);
  if (!p) return AM_ERR_SLOT;
  part_free(r, p);
  r->parts[slot] = NULL;
  r->count--;
  /* The slot will be reused: nobody keeps a rule about it, and it is no longer the priority speaker. */
  for (int i = 0; i < r->cap; i++) {
    AmPart *q = r->parts[i];
    if (!q) continue;
    int k = 0;
    for (int j = 0; j < q->nrules; j++)
      if (q->rules[j].src != slot) q->rules[k++] = q->rules[j];
    q->nrules = k;
  }
  if (r->priority == slot) r->priority = -1;
  return 0;
}

int am_room_set_vad(AmRoom *r, int skip, int probe_period) {
  if (!r || probe_period < 0 || probe_period > MAX_PROBE_PERIOD) return AM_ERR_ARG;
  r->skip_on = skip != 0;
  r->probe_period = probe_period;
  r->probe_credit = 0.0;
  return 0;
}

int am_room_set_can_speak(AmRoom *r, int slot, int can_speak) {
  AmPart *p = part_at(r, slot);
  if (!p) return AM_ERR_SLOT;
  can_speak = can_speak != 0;
  if (p->can_speak && !can_speak) {
    /* Nothing it already sent is played: the buffer restarts empty when it may speak again. */
    jb_free(&p->jb);
    jb_init(&p->jb, r->jmin, r->jmax);
    p->skipping = 1;
    p->skip_len = 0;
  }
  p->can_speak = can_speak;
  return 0;
}

int am_room_set_gain(AmRoom *r, int listener, int source, float gain) {
  AmPart *l = part_at(r, listener);
  if (!l || !part_at(r, source)) return AM_ERR_SLOT;
  if (!(gain >= 0.0f && gain <= AM_MAX_GAIN) || listener == source) return AM_ERR_ARG; /* also rejects NaN */
  for (int j = 0; j < l->nrules; j++)
    if (l->rules[j].src == source) {
      l->rules[j].gain = gain; /* gain 1: kept until its ramp is done, then pruned in the tick */
      return 0;
    }
  if (gain == 1.0f) return 0;
  if (l->nrules >= AM_MAX_RULES) return AM_ERR_ARG;
  l->rules[l->nrules++] = (MixRule){source, gain, 1.0f};
  return 0;
}

int am_room_clear_gains(AmRoom *r, int listener) {
  AmPart *l = part_at(r, listener);
  if (!l) return AM_ERR_SLOT;
  for (int j = 0; j < l->nrules; j++) l->rules[j].gain = 1.0f;
  return 0;
}

int am_room_set_priority(AmRoom *r, int slot, float duck_gain) {
  if (!r || !(duck_gain >= 0.0f && duck_gain <= 1.0f)) return AM_ERR_ARG;
  if (slot >= 0 && !part_at(r, slot)) return AM_ERR_SLOT;
  r->priority = slot < 0 ? -1 : slot;
  r->duck_gain = duck_gain;
  return 0;
}

int am_room_push(AmRoom *r, int slot, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len) {
  return am_room_push_flags(r, slot, seq, ts, arrival_ms, data, len, 0);
}

int am_room_push_flags(AmRoom *r, int slot, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len,
                       int flags) {
  AmPart *p = part_at(r, slot);
  if (!p) return AM_ERR_SLOT;
  p->packets_in++;
  if (!p->can_speak) return AM_PUSH_LISTEN_ONLY;
  /* Only well-formed 20 ms packets enter the buffer: anything else would desynchronise the
   * one-frame-per-tick playout (and overflow the 960-sample decode buffer). */
  if (len <= 0 || len > AM_MAX_PACKET || opus_packet_get_nb_samples(data, len, AM_SAMPLE_RATE) != AM_FRAME) {
    p->invalid++;
    return AM_PUSH_INVALID;
  }
  JbPushResult res = jb_push(&p->jb, seq, ts, arrival_ms, data, len, (uint8_t)(flags & (AM_VAD_VOICE | AM_VAD_KNOWN)));
  if (res == JB_PUSH_LATE) r->counters[AM_RC_LATE]++;
  switch (res) {
    case JB_PUSH_OK: return AM_PUSH_OK;
    case JB_PUSH_LATE: return AM_PUSH_LATE;
    case JB_PUSH_DUPLICATE: return AM_PUSH_DUPLICATE;
    case JB_PUSH_RESYNC: return AM_PUSH_RESYNC;
    default: return AM_ERR_NOMEM;
  }
}

static float frame_level_db(const int16_t *pcm) {
  int64_t e = 0;
  for (int i = 0; i < AM_FRAME; i++) e += (int32_t)pcm[i] * (int32_t)pcm[i];
  double ms = (double)e / AM_FRAME / (32768.0 * 32768.0);
  return (float)(10.0 * log10(ms + 1e-12));
}

/* A frame whose loss nobody would notice: below the talk threshold, or well under the talker's level. */
static int frame_quiet(const AmPart *p) {
  if (!p->speaking) return 1;
  float lvl = frame_level_db(p->pcm);
  float thr = p->noise_db + VAD_MARGIN_DB;
  if (thr < VAD_ABS_FLOOR_DB) thr = VAD_ABS_FLOOR_DB;
  return lvl <= thr || lvl <= p->smooth_db - QUIET_BELOW_DB;
}

/* Raised-cosine fade-in over one frame, g[i] from ~0 to ~1. */
static float xfade_gain[AM_FRAME];
static int xfade_ready;

/* Two consecutive frames played in the time of one: out = a faded out while b fades in. Starts exactly
 * where `a` starts (continuous with the previous frame) and ends where `b` ends (continuous with the
 * next), so the splice makes no click; on a steady tone the only trace is a brief level dip where the
 * two frames' phases disagree. */
static void crossfade(int16_t *a, const int16_t *b) {
  if (!xfade_ready) {
    for (int i = 0; i < AM_FRAME; i++) xfade_gain[i] = 0.5f - 0.5f * cosf((float)M_PI * ((float)i + 0.5f) / (float)AM_FRAME);
    xfade_ready = 1;
  }
  for (int i = 0; i < AM_FRAME; i++) {
    float g = xfade_gain[i];
    a[i] = (int16_t)lrintf((float)a[i] * (1.0f - g) + (float)b[i] * g);
  }
}

static int dec(AmPart *p, const uint8_t *data, int len, int16_t *pcm, int fec) {
  p->decodes++;
  return opus_decode(p->dec, data, len, pcm, AM_FRAME, fec);
}

static void keep_skipped(AmPart *p, const JbOut *o) {
  if (o->action != JB_PLAY || o->len <= 0 || o->len > AM_MAX_PACKET) return;
  memcpy(p->skip_pkt, o->data, (size_t)o->len);
  p->skip_len = o->len;
}

/* Whether this frame may stay undecoded: the sender flags it silent and the participant cannot reach a
 * mix this tick. Everything the ranking needs is decoded. */
static int may_skip(const AmRoom *r, const AmPart *p, const JbOut *o) {
  if (!r->skip_on || p->probe_now) return 0;
  uint8_t f = o->action == JB_PLAY || o->action == JB_FEC ? o->flags : p->last_flags;
  if (!(f & AM_VAD_KNOWN) || (f & AM_VAD_VOICE)) return 0;
  return !p->speaking && !p->candidate && !p->in_topk && p->mix_gain == 0.0f;
}

/* Returns 1 when the frame was decoded (or is silence), 0 when it was skipped. */
static int decode_part(AmRoom *r, AmPart *p, double now_ms) {
  int had_audio = p->has_audio;
  JbOut warmup;
  JbOut o = jb_pull(&p->jb, now_ms, !p->speaking, &warmup);
  if (o.action == JB_PLAY || o.action == JB_FEC) p->last_flags = o.flags;
  if (o.action != JB_SILENCE && may_skip(r, p, &o)) {
    if (warmup.action == JB_PLAY) keep_skipped(p, &warmup);
    keep_skipped(p, &o);
    /* The buffer's latency shrink still happens: a skipped frame is quiet by definition. */
    JbOut nx;
    if (o.action == JB_PLAY && p->jb.shrink != JB_SHRINK_NONE && jb_drop_next(&p->jb, &nx)) keep_skipped(p, &nx);
    if (p->has_audio) memset(p->pcm, 0, sizeof p->pcm);
    p->has_audio = 0;
    p->skipping++;
    p->skipped++;
    return 0;
  }
  if (o.action != JB_SILENCE && p->skipping) {
    /* Resuming after skipped frames: a primed decoder instead of one predicting from stale state. */
    opus_decoder_ctl(p->dec, OPUS_RESET_STATE);
    if (p->skip_len > 0 && dec(p, p->skip_pkt, p->skip_len, p->pcm, 0) < 0) p->decode_errors++;
    p->skipping = 0;
    p->skip_len = 0;
    had_audio = 0;
  }
  if (warmup.action == JB_PLAY) {
    /* The frame right before the playout point when playout (re)starts past skipped frames: decoded
     * and thrown away so the decoder's state leads into the first frame played. */
    if (dec(p, warmup.data, warmup.len, p->pcm, 0) < 0) p->decode_errors++;
  }
  int n;
  switch (o.action) {
    case JB_PLAY: n = dec(p, o.data, o.len, p->pcm, 0); break;
    case JB_FEC: n = dec(p, o.data, o.len, p->pcm, 1); break;
    case JB_PLC: n = dec(p, NULL, 0, p->pcm, 0); break;
    case JB_SILENCE:
    default:
      if (p->has_audio) memset(p->pcm, 0, sizeof p->pcm); /* once per silence, not per tick */
      p->has_audio = 0;
      return 1;
  }
  if (n != AM_FRAME) {
    /* A corrupt packet: conceal it instead. */
    p->decode_errors++;
    n = dec(p, NULL, 0, p->pcm, 0);
    if (n != AM_FRAME) {
      memset(p->pcm, 0, sizeof p->pcm);
      p->has_audio = 0;
      return 1;
    }
  }
  p->has_audio = 1;
  if (!had_audio) {
    /* Playout resumes after silence (a pause, a stall) possibly mid-waveform: a 2.5 ms fade-in instead
     * of a step. */
    for (int i = 0; i < ONSET_RAMP; i++) p->pcm[i] = (int16_t)lrintf((float)p->pcm[i] * ((float)(i + 1) / (ONSET_RAMP + 1)));
  }
  /* Latency shrink: the buffer is a frame over its target. Drop one in a quiet frame, or anyway after a
   * while (continuous talk). The next frame is decoded too (decoder continuity) and both are played in
   * this tick's 20 ms, cross-faded. */
  if (o.action == JB_PLAY && p->jb.shrink != JB_SHRINK_NONE && (p->jb.shrink == JB_SHRINK_FORCED || frame_quiet(p))) {
    JbOut nx;
    if (jb_drop_next(&p->jb, &nx)) {
      int16_t next[AM_FRAME];
      if (dec(p, nx.data, nx.len, next, 0) == AM_FRAME) crossfade(p->pcm, next);
      else p->decode_errors++;
    }
  }
  return 1;
}

/* A skipped frame tells the ranking nothing new: not a candidate, and the smoothed level restarts from
 * the next measured frame. The noise floor keeps its value (it was never measured on this silence). */
static void vad_skipped(AmPart *p) {
  p->level_db = SILENT_DB;
  p->smooth_db = SILENT_DB;
  p->above = 0;
  p->candidate = 0;
}

/* Picks this tick's probes: the next participants (round robin) whose frames are being skipped, as many
 * as keep each of them probed once per probe_period ticks (spread evenly over the ticks). */
static void pick_probes(AmRoom *r) {
  if (!r->skip_on || r->probe_period <= 0 || r->cap == 0) return;
  int skipping = 0;
  for (int i = 0; i < r->cap; i++)
    if (r->parts[i] && r->parts[i]->skipping && r->parts[i]->can_speak) skipping++;
  if (skipping == 0) {
    r->probe_credit = 0.0;
    return;
  }
  r->probe_credit += (double)skipping / r->probe_period;
  int left = (int)r->probe_credit;
  r->probe_credit -= left;
  int i = r->probe_cursor % r->cap;
  for (int walked = 0; walked < r->cap && left > 0; walked++, i = (i + 1) % r->cap) {
    AmPart *p = r->parts[i];
    if (!p || !p->skipping || !p->can_speak) continue;
    p->probe_now = 1;
    left--;
  }
  r->probe_cursor = i;
}

static void vad_update(AmPart *p) {
  float lvl = SILENT_DB;
  if (p->has_audio) lvl = frame_level_db(p->pcm);
  p->level_db = lvl;
  if (lvl < p->noise_db) p->noise_db = lvl; /* minimum tracking: fall at once ... */
  else p->noise_db += NOISE_RISE_DB;        /* ... rise slowly */
  if (p->noise_db < NOISE_MIN_DB) p->noise_db = NOISE_MIN_DB;
  if (p->noise_db > NOISE_MAX_DB) p->noise_db = NOISE_MAX_DB;
  float thr = p->noise_db + VAD_MARGIN_DB;
  if (thr < VAD_ABS_FLOOR_DB) thr = VAD_ABS_FLOOR_DB;
  int above = lvl > thr;
  p->above = above ? p->above + 1 : 0;
  if (p->above >= VAD_ATTACK) {
    p->speaking = 1;
    p->hang = VAD_HANGOVER;
  } else if (p->speaking && !above) {
    if (--p->hang <= 0) p->speaking = 0;
  }
  /* Mixing starts on the first loud frame (no clipped word onsets); "speaking" needs two. */
  p->candidate = p->speaking || above;
  p->smooth_db = p->smooth_db <= SILENT_DB ? lvl : 0.7f * p->smooth_db + 0.3f * lvl;
}

static void select_topk(AmRoom *r) {
  int best[AM_MAX_TOPK];
  float score[AM_MAX_TOPK];
  int nb = 0, k = r->topk;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    int was = p->in_topk;
    p->in_topk = 0;
    if (!p->candidate) continue;
    float s = p->smooth_db + (was ? INCUMBENT_BONUS_DB : 0.0f) + (i == r->priority ? PRIORITY_BONUS_DB : 0.0f);
    if (nb == k && s <= score[nb - 1]) continue; /* ties keep the earlier slot: deterministic */
    int j = nb < k ? nb++ : k - 1;
    while (j > 0 && score[j - 1] < s) {
      best[j] = best[j - 1];
      score[j] = score[j - 1];
      j--;
    }
    best[j] = i;
    score[j] = s;
  }
  for (int j = 0; j < nb; j++) r->parts[best[j]]->in_topk = 1;
}

/* Adds p's faded input (scaled by the priority duck, d0 → d1 over the frame) to the sum; returns whether
 * it contributes. */
static int mix_in(AmRoom *r, AmPart *p, float d0, float d1) {
  float m0 = p->mix_gain, m1 = p->in_topk ? 1.0f : 0.0f;
  if (m0 == 0.0f && m1 == 0.0f) return 0;
  float g0 = m0 * d0, g1 = m1 * d1;
  if (!p->has_audio) {
    memset(p->contrib, 0, sizeof p->contrib);
  } else if (g0 == 1.0f && g1 == 1.0f) {
    memcpy(p->contrib, p->pcm, sizeof p->contrib);
  } else {
    float step = (g1 - g0) / AM_FRAME, g = g0;
    for (int i = 0; i < AM_FRAME; i++) {
      g += step;
      p->contrib[i] = (int16_t)lrintf((float)p->pcm[i] * g);
    }
  }
  p->mix_gain_prev = m0;
  p->mix_gain = m1;
  for (int i = 0; i < AM_FRAME; i++) r->sum[i] += p->contrib[i];
  return 1;
}

/* Whether a rule of p changes what it hears this tick: its source is mixed (or a ramp is still running).
 * Rules back at gain 1 with no ramp left are pruned here. A listener without a personal encoder hears the
 * shared mix, i.e. every rule at 1. */
static int rules_active(AmRoom *r, AmPart *p) {
  int active = 0, k = 0;
  for (int j = 0; j < p->nrules; j++) {
    MixRule *u = &p->rules[j];
    if (!p->personal) u->cur = 1.0f;
    if (u->gain == 1.0f && u->cur == 1.0f) continue;
    AmPart *src = part_at(r, u->src);
    if (src && src->in_mix) active = 1;
    p->rules[k++] = *u;
  }
  p->nrules = k;
  return active;
}

/* p just got a personal encoder (a clone of the shared one): a rule whose source enters the mix in this
 * very tick applies at once (the source fades in anyway); one whose source was already audible ramps. */
static void rules_enter(AmRoom *r, AmPart *p) {
  for (int j = 0; j < p->nrules; j++) {
    AmPart *src = part_at(r, p->rules[j].src);
    if (src && src->mix_gain_prev == 0.0f) p->rules[j].cur = p->rules[j].gain;
  }
}

/* r->tmp = what listener p hears with its rules: S - own + sum over its rules of (gain - 1) * source, each
 * rule's gain ramped from the last tick's value. Rules back at gain 1 are pruned. */
static void personal_mix(AmRoom *r, AmPart *p) {
  if (p->in_mix)
    for (int s = 0; s < AM_FRAME; s++) r->tmp[s] = r->sum[s] - p->contrib[s];
  else
    memcpy(r->tmp, r->sum, sizeof r->tmp);
  int k = 0;
  for (int j = 0; j < p->nrules; j++) {
    MixRule *u = &p->rules[j];
    AmPart *src = part_at(r, u->src);
    if (src && src->in_mix && (u->cur != 1.0f || u->gain != 1.0f)) {
      float a0 = u->cur - 1.0f, a1 = u->gain - 1.0f;
      if (a0 == a1) {
        for (int s = 0; s < AM_FRAME; s++) r->tmp[s] += (int32_t)lrintf(a1 * (float)src->contrib[s]);
      } else {
        float step = (a1 - a0) / AM_FRAME, a = a0;
        for (int s = 0; s < AM_FRAME; s++) {
          a += step;
          r->tmp[s] += (int32_t)lrintf(a * (float)src->contrib[s]);
        }
      }
    }
    u->cur = u->gain;
    if (u->gain != 1.0f) p->rules[k++] = *u;
  }
  p->nrules = k;
}

/* Records one output packet. Descriptor pointers are wasm32 offsets (what core.ts reads); native
 * callers use am_room_output() instead. */
static void emit(AmRoom *r, int *nout, const uint8_t *pkt, int len, int first_recip, int nrecip) {
  int32_t *d = r->outs + (*nout) * 4;
  d[0] = len;
  d[1] = (int32_t)(intptr_t)pkt;
  d[2] = nrecip;
  d[3] = (int32_t)(intptr_t)(r->recips + first_recip);
  r->out_pkt[*nout] = pkt;
  r->out_first[*nout] = first_recip;
  (*nout)++;
}

int am_room_tick(AmRoom *r, double now_ms) {
  if (!r) return AM_ERR_ARG;
  r->counters[AM_RC_TICKS]++;

  pick_probes(r);
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    if (!p->can_speak) {
      /* A listener: never decoded, never ranked. */
      if (p->has_audio) memset(p->pcm, 0, sizeof p->pcm);
      p->has_audio = 0;
      p->speaking = 0;
      p->hang = 0;
      vad_skipped(p);
      continue;
    }
    uint32_t concealed = p->jb.concealed, decodes = p->decodes;
    int probe = p->probe_now;
    int decoded = decode_part(r, p, now_ms);
    p->probe_now = 0;
    r->counters[AM_RC_CONCEALED] += (double)(p->jb.concealed - concealed);
    r->counters[AM_RC_DECODES] += (double)(p->decodes - decodes);
    if (decoded) {
      vad_update(p);
      if (probe) {
        p->probes++;
        r->counters[AM_RC_PROBES]++;
      }
    } else {
      vad_skipped(p);
      r->counters[AM_RC_SKIPPED]++;
    }
  }
  select_topk(r);

  /* Priority ducking: everyone else is scaled while the priority speaker is in the mix. */
  AmPart *prio = r->priority >= 0 ? r->parts[r->priority] : NULL;
  float d0 = r->duck_cur, d1 = prio && prio->in_topk ? r->duck_gain : 1.0f;
  r->duck_cur = d1;
  memset(r->sum, 0, sizeof r->sum);
  int mixing = 0;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    p->in_mix = p == prio ? mix_in(r, p, 1.0f, 1.0f) : mix_in(r, p, d0, d1);
    mixing |= p->in_mix;
  }

  /* Who needs a personal encode this tick. */
  int shared_listeners = 0;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    int need = !r->shared_on || p->in_mix || rules_active(r, p);
    if (need) {
      p->hold = 0;
      if (!p->personal) {
        MixOut *m = mix_acquire(r);
        if (m) {
          if (p->got_shared && r->shared_valid) {
            memcpy(m->enc, r->shared.enc, (size_t)r->enc_size);
            m->lim = r->shared.lim;
            r->counters[AM_RC_ENCODER_CLONES]++;
          } else {
            opus_encoder_ctl(m->enc, OPUS_RESET_STATE);
            lim_init(&m->lim);
          }
          p->personal = m;
          rules_enter(r, p);
        }
      }
    } else if (p->personal) {
      p->hold++;
      if ((p->hold >= HOLD_MIN_TICKS && !mixing) || p->hold >= HOLD_MAX_TICKS) {
        mix_release(r, p->personal);
        p->personal = NULL;
        r->counters[AM_RC_ENCODER_SWITCHES]++;
      }
    }
    /* A mixed participant whose encoder could not be allocated gets nothing rather than its own
     * voice back. */
    if (!p->personal && !p->in_mix) shared_listeners++;
  }

  int nout = 0, nrecip = 0;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    p->got_shared = 0;
    MixOut *m = p->personal;
    if (!m) continue;
    if (p->nrules > 0) {
      personal_mix(r, p);
      lim_process(&m->lim, r->tmp, m->pcm, AM_FRAME);
    } else if (p->in_mix) {
      for (int s = 0; s < AM_FRAME; s++) r->tmp[s] = r->sum[s] - p->contrib[s];
      lim_process(&m->lim, r->tmp, m->pcm, AM_FRAME);
    } else {
      lim_process(&m->lim, r->sum, m->pcm, AM_FRAME);
    }
    int len = opus_encode(m->enc, m->pcm, AM_FRAME, m->pkt, AM_MAX_PACKET);
    r->counters[AM_RC_ENCODES_PERSONAL]++;
    if (len <= 0) {
      r->counters[AM_RC_ENCODE_ERRORS]++;
      continue;
    }
    r->recips[nrecip] = p->handle;
    emit(r, &nout, m->pkt, len, nrecip, 1);
    nrecip++;
    p->packets_out++;
  }

  r->shared_valid = 0;
  if (shared_listeners > 0) {
    lim_process(&r->shared.lim, r->sum, r->shared.pcm, AM_FRAME);
    int len = opus_encode(r->shared.enc, r->shared.pcm, AM_FRAME, r->shared.pkt, AM_MAX_PACKET);
    r->counters[AM_RC_ENCODES_SHARED]++;
    if (len > 0) {
      r->shared_valid = 1;
      int first = nrecip;
      for (int i = 0; i < r->cap; i++) {
        AmPart *p = r->parts[i];
        if (!p || p->personal || p->in_mix) continue;
        r->recips[nrecip++] = p->handle;
        p->got_shared = 1;
        p->packets_out++;
      }
      emit(r, &nout, r->shared.pkt, len, first, nrecip - first);
    } else {
      r->counters[AM_RC_ENCODE_ERRORS]++;
    }
  }
  return nout;
}

const int32_t *am_room_outputs(AmRoom *r) { return r ? r->outs : NULL; }

int am_room_output(AmRoom *r, int i, const uint8_t **data, int *len, const uint32_t **recips, int *nrecip) {
  if (!r || i < 0) return AM_ERR_ARG;
  const int32_t *d = r->outs + i * 4;
  *data = r->out_pkt[i];
  *len = d[0];
  *recips = r->recips + r->out_first[i];
  *nrecip = d[2];
  return 0;
}

const double *am_room_counters(AmRoom *r) { return r ? r->counters : NULL; }

int am_room_stats(AmRoom *r, int slot, double *out) {
  AmPart *p = part_at(r, slot);
  if (!p) return AM_ERR_SLOT;
  const Jb *jb = &p->jb;
  out[AM_ST_SPEAKING] = p->speaking;
  out[AM_ST_PERSONAL] = p->personal != NULL;
  out[AM_ST_JITTER_MS] = jb->jitter_ms;
  out[AM_ST_DEPTH_MS] = jb->depth_avg_frames * JB_FRAME_MS;
  out[AM_ST_LOSS_PCT] = jb_loss_percent(jb);
  out[AM_ST_PACKETS_IN] = p->packets_in;
  out[AM_ST_PACKETS_OUT] = p->packets_out;
  out[AM_ST_CONCEALED] = jb->concealed;
  out[AM_ST_LATE] = jb->late;
  out[AM_ST_TARGET_MS] = jb->target_frames * JB_FRAME_MS;
  out[AM_ST_LEVEL_DB] = p->level_db;
  out[AM_ST_IN_MIX] = p->in_mix;
  out[AM_ST_DUPLICATES] = jb->duplicates;
  out[AM_ST_FEC] = jb->fec;
  out[AM_ST_DROPPED] = jb->dropped;
  out[AM_ST_INVALID] = p->invalid;
  out[AM_ST_RESYNCS] = jb->resyncs;
  out[AM_ST_DECODE_ERRORS] = p->decode_errors;
  out[AM_ST_DECODES] = p->decodes;
  out[AM_ST_SKIPPED] = p->skipped;
  out[AM_ST_PROBES] = p->probes;
  out[AM_ST_JITTER_EST_MS] = jb->jitter_est_ms;
  return AM_ST_COUNT;
}

const int16_t *am_room_debug_mix(AmRoom *r, int slot) {
  AmPart *p = part_at(r, slot);
  if (!p) return NULL;
  return p->personal ? p->personal->pcm : r->shared.pcm;
}

const int16_t *am_room_debug_input(AmRoom *r, int slot) {
  AmPart *p = part_at(r, slot);
  return p ? p->pcm : NULL;
}
