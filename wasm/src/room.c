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
  int in_mix;     /* contributes to S this tick (selected, or fading out) */
  MixOut *personal;
  int hold;       /* ticks since it last needed a personal mix */
  int got_shared; /* received the shared packet in the previous tick */
  uint32_t packets_in, packets_out, invalid, decode_errors;
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
  return 0;
}

int am_room_push(AmRoom *r, int slot, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data, int len) {
  AmPart *p = part_at(r, slot);
  if (!p) return AM_ERR_SLOT;
  p->packets_in++;
  /* Only well-formed 20 ms packets enter the buffer: anything else would desynchronise the
   * one-frame-per-tick playout (and overflow the 960-sample decode buffer). */
  if (len <= 0 || len > AM_MAX_PACKET || opus_packet_get_nb_samples(data, len, AM_SAMPLE_RATE) != AM_FRAME) {
    p->invalid++;
    return AM_PUSH_INVALID;
  }
  JbPushResult res = jb_push(&p->jb, seq, ts, arrival_ms, data, len);
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

static void decode_part(AmPart *p, double now_ms) {
  int had_audio = p->has_audio;
  JbOut warmup;
  JbOut o = jb_pull(&p->jb, now_ms, !p->speaking, &warmup);
  if (warmup.action == JB_PLAY) {
    /* The frame right before the playout point when playout (re)starts past skipped frames: decoded
     * and thrown away so the decoder's state leads into the first frame played. */
    if (opus_decode(p->dec, warmup.data, warmup.len, p->pcm, AM_FRAME, 0) < 0) p->decode_errors++;
  }
  int n;
  switch (o.action) {
    case JB_PLAY: n = opus_decode(p->dec, o.data, o.len, p->pcm, AM_FRAME, 0); break;
    case JB_FEC: n = opus_decode(p->dec, o.data, o.len, p->pcm, AM_FRAME, 1); break;
    case JB_PLC: n = opus_decode(p->dec, NULL, 0, p->pcm, AM_FRAME, 0); break;
    case JB_SILENCE:
    default:
      if (p->has_audio) memset(p->pcm, 0, sizeof p->pcm); /* once per silence, not per tick */
      p->has_audio = 0;
      return;
  }
  if (n != AM_FRAME) {
    /* A corrupt packet: conceal it instead. */
    p->decode_errors++;
    n = opus_decode(p->dec, NULL, 0, p->pcm, AM_FRAME, 0);
    if (n != AM_FRAME) {
      memset(p->pcm, 0, sizeof p->pcm);
      p->has_audio = 0;
      return;
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
      if (opus_decode(p->dec, nx.data, nx.len, next, AM_FRAME, 0) == AM_FRAME) crossfade(p->pcm, next);
      else p->decode_errors++;
    }
  }
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
    float s = p->smooth_db + (was ? INCUMBENT_BONUS_DB : 0.0f);
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

/* Adds p's faded input to the sum; returns whether it contributes. */
static int mix_in(AmRoom *r, AmPart *p) {
  float g0 = p->mix_gain, g1 = p->in_topk ? 1.0f : 0.0f;
  if (g0 == 0.0f && g1 == 0.0f) return 0;
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
  p->mix_gain = g1;
  for (int i = 0; i < AM_FRAME; i++) r->sum[i] += p->contrib[i];
  return 1;
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

  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    uint32_t concealed = p->jb.concealed;
    decode_part(p, now_ms);
    r->counters[AM_RC_CONCEALED] += (double)(p->jb.concealed - concealed);
    vad_update(p);
  }
  select_topk(r);

  memset(r->sum, 0, sizeof r->sum);
  int mixing = 0;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    p->in_mix = mix_in(r, p);
    mixing |= p->in_mix;
  }

  /* Who needs a personal encode this tick. */
  int shared_listeners = 0;
  for (int i = 0; i < r->cap; i++) {
    AmPart *p = r->parts[i];
    if (!p) continue;
    int need = !r->shared_on || p->in_mix;
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
    if (p->in_mix) {
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
