/*
 * Soft limiter for the int32 mix sums: turns a sum of int16 sources into int16 without ever
 * hard-clipping. A per-stream gain follows the frame peak (fast attack over 1 ms, 150 ms release)
 * so loud moments are turned down instead of flattened, and a tanh knee above -1 dBFS catches the
 * few samples the attack ramp lets through. Output magnitude is always < 32767.
 */
#ifndef AGORA_LIMITER_H
#define AGORA_LIMITER_H

#include <stdint.h>

typedef struct {
  float gain; /* current gain, 1 = transparent */
} Limiter;

void lim_init(Limiter *l);
/* Processes one block; returns the input peak (absolute). */
int32_t lim_process(Limiter *l, const int32_t *in, int16_t *out, int n);

#endif
