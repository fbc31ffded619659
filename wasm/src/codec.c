/*
 * Standalone Opus encoder/decoder wrappers (src/audio/codec.ts) and the benchmark helpers that must
 * run identically in wasm and natively (bench/mixer.ts compares the two on the same frames).
 */
#include <math.h>
#include <stdlib.h>

#include "agora_media.h"
#include "opus.h"

void *am_alloc(int bytes) { return bytes > 0 ? malloc((size_t)bytes) : NULL; }
void am_free(void *p) { free(p); }
const char *am_opus_version(void) { return opus_get_version_string(); }

void *am_enc_create(int bitrate, int complexity, int fec) {
  if (bitrate < 6000 || bitrate > 510000 || complexity < 0 || complexity > 10) return NULL;
  int err = 0;
  OpusEncoder *e = opus_encoder_create(AM_SAMPLE_RATE, 1, OPUS_APPLICATION_VOIP, &err);
  if (err != OPUS_OK || !e) return NULL;
  opus_encoder_ctl(e, OPUS_SET_BITRATE(bitrate));
  opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(complexity));
  opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(fec != 0));
  opus_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(fec ? 10 : 0));
  return e;
}

int am_enc_set_bitrate(void *enc, int bitrate) {
  return opus_encoder_ctl((OpusEncoder *)enc, OPUS_SET_BITRATE(bitrate)) == OPUS_OK ? 0 : AM_ERR_ARG;
}

int am_enc_encode(void *enc, const int16_t *pcm, uint8_t *out, int max_len) {
  int n = opus_encode((OpusEncoder *)enc, pcm, AM_FRAME, out, max_len);
  return n < 0 ? AM_ERR_OPUS : n;
}

void am_enc_destroy(void *enc) { opus_encoder_destroy((OpusEncoder *)enc); }

void *am_dec_create(void) {
  int err = 0;
  OpusDecoder *d = opus_decoder_create(AM_SAMPLE_RATE, 1, &err);
  return err == OPUS_OK ? d : NULL;
}

int am_dec_decode(void *dec, const uint8_t *data, int len, int16_t *pcm, int fec) {
  if (data && len > 0) {
    /* Never let a 40/60/120 ms packet write past the caller's 960-sample buffer. */
    if (opus_packet_get_nb_samples(data, len, AM_SAMPLE_RATE) != AM_FRAME) return AM_ERR_ARG;
  } else {
    data = NULL;
    len = 0;
  }
  int n = opus_decode((OpusDecoder *)dec, data, len, pcm, AM_FRAME, fec && data ? 1 : 0);
  return n < 0 ? AM_ERR_OPUS : n;
}

void am_dec_destroy(void *dec) { opus_decoder_destroy((OpusDecoder *)dec); }

int am_packet_samples(const uint8_t *data, int len) {
  int n = opus_packet_get_nb_samples(data, len, AM_SAMPLE_RATE);
  return n < 0 ? AM_ERR_ARG : n;
}

/* xorshift32: deterministic across platforms. */
static uint32_t rnd(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

void am_bench_signal(int16_t *out, int frames, int kind, uint32_t seed) {
  uint32_t s = seed ? seed : 0x9e3779b9u;
  int n = frames * AM_FRAME;
  if (kind == 1) {
    /* Background: white noise around -60 dBFS, what an idle open microphone sends. */
    for (int i = 0; i < n; i++) out[i] = (int16_t)((int32_t)(rnd(&s) % 65u) - 32);
    return;
  }
  /* A voiced talker: a glottal-like harmonic series on a gliding 100-220 Hz pitch with two formant
   * bumps, syllable envelope at ~4 Hz and pauses, plus breath noise. Enough structure that Opus works
   * as hard as on speech (SILK/hybrid mode decisions, pitch analysis). */
  double phase = 0.0;
  double f0base = 110.0 + (double)(rnd(&s) % 100u);
  for (int i = 0; i < n; i++) {
    double t = (double)i / AM_SAMPLE_RATE;
    double f0 = f0base * (1.0 + 0.12 * sin(2 * M_PI * 0.7 * t) + 0.03 * sin(2 * M_PI * 5.5 * t));
    phase += 2 * M_PI * f0 / AM_SAMPLE_RATE;
    if (phase > 2 * M_PI) phase -= 2 * M_PI;
    double v = 0.0;
    for (int h = 1; h <= 24; h++) {
      double fh = f0 * h;
      if (fh > 7000.0) break;
      double formant = 1.0 / (1.0 + pow((fh - 600.0) / 250.0, 2)) + 0.6 / (1.0 + pow((fh - 1800.0) / 400.0, 2));
      v += (0.25 / h + formant) * sin(phase * h);
    }
    double syl = 0.5 + 0.5 * sin(2 * M_PI * 3.9 * t);
    double sentence = fmod(t, 3.0) < 2.4 ? 1.0 : 0.05; /* pauses between sentences */
    double noise = ((double)(rnd(&s) % 2001u) - 1000.0) / 1000.0;
    double y = 3000.0 * v * syl * sentence + 150.0 * noise;
    if (y > 32000.0) y = 32000.0;
    if (y < -32000.0) y = -32000.0;
    out[i] = (int16_t)lrint(y);
  }
}

int am_bench_encode(void *enc, const int16_t *pcm, int frames, uint8_t *scratch) {
  int total = 0;
  for (int f = 0; f < frames; f++) {
    int n = opus_encode((OpusEncoder *)enc, pcm + (size_t)f * AM_FRAME, AM_FRAME, scratch, AM_MAX_PACKET);
    if (n < 0) return AM_ERR_OPUS;
    total += n;
  }
  return total;
}
