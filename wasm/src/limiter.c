#include "limiter.h"

#include <math.h>

/* -1 dBFS: the level the gain aims for and where the soft knee begins. */
#define LIM_THRESHOLD 29204.0f
/* The knee approaches but never reaches this: the int16 rail is never touched. */
#define LIM_CEIL 32766.0f
/* Attack ramp length (1 ms at 48 kHz): short enough to catch transients, long enough not to click. */
#define LIM_ATTACK 48
/* Per-20-ms-frame release step: 1 - exp(-20 ms / 150 ms). */
#define LIM_RELEASE 0.1248f

void lim_init(Limiter *l) { l->gain = 1.0f; }

static inline int16_t soft(float v) {
  float a = v < 0 ? -v : v;
  if (a > LIM_THRESHOLD) {
    a = LIM_THRESHOLD + (LIM_CEIL - LIM_THRESHOLD) * tanhf((a - LIM_THRESHOLD) / (LIM_CEIL - LIM_THRESHOLD));
    v = v < 0 ? -a : a;
  }
  return (int16_t)lrintf(v);
}

int32_t lim_process(Limiter *l, const int32_t *in, int16_t *out, int n) {
  int32_t peak = 0;
  for (int i = 0; i < n; i++) {
    int32_t a = in[i] < 0 ? -in[i] : in[i];
    if (a > peak) peak = a;
  }
  float g0 = l->gain;
  float gd = (float)peak > LIM_THRESHOLD ? LIM_THRESHOLD / (float)peak : 1.0f;
  if (gd >= 1.0f && g0 >= 1.0f) {
    /* Transparent: the common case for quiet mixes. */
    for (int i = 0; i < n; i++) out[i] = (int16_t)in[i];
    l->gain = 1.0f;
    return peak;
  }
  float g1;
  int ramp;
  if (gd < g0) {
    g1 = gd; /* attack */
    ramp = LIM_ATTACK < n ? LIM_ATTACK : n;
  } else {
    g1 = g0 + (gd - g0) * LIM_RELEASE; /* release, spread over the whole block */
    if (g1 > 0.9999f) g1 = 1.0f;
    ramp = n;
  }
  float step = (g1 - g0) / (float)ramp;
  float g = g0;
  for (int i = 0; i < n; i++) {
    if (i < ramp) g += step;
    else g = g1;
    out[i] = soft((float)in[i] * g);
  }
  l->gain = g1;
  return peak;
}
