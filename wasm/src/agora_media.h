/*
 * agora media core: the C API exported by wasm/build/agora_media.wasm (and linked natively for the
 * benchmark baseline). Everything is 48 kHz mono, 20 ms frames (960 samples).
 *
 * Two layers:
 *  - am_enc_* / am_dec_*: thin libopus wrappers (src/audio/codec.ts, used by the join client).
 *  - am_room_*: one mixing room: per participant an adaptive jitter buffer, Opus decoder with PLC
 *    and in-band FEC, talk detection; top-K speaker selection; mix-minus with int32 accumulation and
 *    a soft limiter; personal encodes for the top-K speakers and one shared encode for everyone else.
 *
 * Memory: pointers are wasm linear-memory offsets. Buffers passed in are only read during the call.
 * Output pointers (am_room_outputs, debug buffers) stay valid until the next call on the same room.
 */
#ifndef AGORA_MEDIA_H
#define AGORA_MEDIA_H

#include <stdint.h>

#if defined(__EMSCRIPTEN__)
#include <emscripten/emscripten.h>
#define AM_API EMSCRIPTEN_KEEPALIVE
#else
#define AM_API
#endif

#define AM_SAMPLE_RATE 48000
#define AM_FRAME 960
#define AM_FRAME_MS 20
#define AM_MAX_PACKET 1275
#define AM_MAX_TOPK 16

/* Error codes (negative returns). */
#define AM_ERR_NOMEM -1
#define AM_ERR_ARG -2
#define AM_ERR_OPUS -3
#define AM_ERR_SLOT -4

/* am_room_push results (non-negative). */
#define AM_PUSH_OK 0
#define AM_PUSH_LATE 1
#define AM_PUSH_DUPLICATE 2
#define AM_PUSH_RESYNC 3
#define AM_PUSH_INVALID 4 /* not a decodable 20 ms Opus packet */
#define AM_PUSH_LISTEN_ONLY 5 /* the participant may not speak (am_room_set_can_speak): counted, not buffered */

/* Voice-activity flags of am_room_push_flags (protocol 1.1.0 AUDIO_VAD). */
#define AM_VAD_VOICE 1 /* the sender's own VAD says the frame carries voice */
#define AM_VAD_KNOWN 2 /* the sender marks its frames: bit 0 is meaningful (else every frame is decoded) */

/* Per-listener mix rules: at most this many sources with a gain per listener; gains 0 (mute) .. 4 (+12 dB). */
#define AM_MAX_RULES 64
#define AM_MAX_GAIN 4.0f

/* Layout of am_room_stats() output (doubles). Keep in sync with src/audio/core.ts. */
enum {
  AM_ST_SPEAKING = 0,
  AM_ST_PERSONAL,
  AM_ST_JITTER_MS,
  AM_ST_DEPTH_MS,
  AM_ST_LOSS_PCT,
  AM_ST_PACKETS_IN,
  AM_ST_PACKETS_OUT,
  AM_ST_CONCEALED,
  AM_ST_LATE,
  AM_ST_TARGET_MS,
  AM_ST_LEVEL_DB,
  AM_ST_IN_MIX,
  AM_ST_DUPLICATES,
  AM_ST_FEC,
  AM_ST_DROPPED,
  AM_ST_INVALID,
  AM_ST_RESYNCS,
  AM_ST_DECODE_ERRORS,
  AM_ST_DECODES, /* opus_decode calls (frames, PLC, FEC, warm-ups) */
  AM_ST_SKIPPED, /* frames pulled but not decoded (flagged silent, no chance to reach a mix) */
  AM_ST_PROBES,  /* skipped-stream frames decoded anyway by the round-robin probe */
  AM_ST_JITTER_EST_MS, /* the arrival-jitter estimate the target follows (ms, fractional) */
  AM_ST_COUNT
};

/* Room-level counters (am_room_counters), cumulative. */
enum {
  AM_RC_TICKS = 0,
  AM_RC_ENCODES_PERSONAL,
  AM_RC_ENCODES_SHARED,
  AM_RC_ENCODER_CLONES,
  AM_RC_ENCODER_SWITCHES, /* personal → shared transitions */
  AM_RC_ENCODE_ERRORS,
  AM_RC_CONCEALED,      /* frames concealed (PLC or FEC) over all participants */
  AM_RC_LATE,           /* packets dropped as late over all participants */
  AM_RC_DECODES,        /* opus_decode calls over all participants */
  AM_RC_SKIPPED,        /* frames not decoded (flagged silent) */
  AM_RC_PROBES,         /* probe decodes of flagged-silent participants */
  AM_RC_COUNT
};

typedef struct AmRoom AmRoom;

/* ---- standalone codec ---- */
AM_API void *am_enc_create(int bitrate, int complexity, int fec);
AM_API int am_enc_set_bitrate(void *enc, int bitrate);
/* pcm: AM_FRAME samples. Returns packet length or a negative error. */
AM_API int am_enc_encode(void *enc, const int16_t *pcm, uint8_t *out, int max_len);
AM_API void am_enc_destroy(void *enc);
AM_API void *am_dec_create(void);
/* data NULL / len 0 = lost packet (PLC). fec=1 decodes the FEC copy of the previous frame that
 * `data` (the packet after the lost one) may carry. Returns samples (AM_FRAME) or a negative error. */
AM_API int am_dec_decode(void *dec, const uint8_t *data, int len, int16_t *pcm, int fec);
AM_API void am_dec_destroy(void *dec);
/* Samples in a packet at 48 kHz, or a negative error (malformed). */
AM_API int am_packet_samples(const uint8_t *data, int len);
AM_API void *am_alloc(int bytes);
AM_API void am_free(void *p);
/* The linked libopus's version string ("libopus 1.3.1"), NUL-terminated, static: `agora-node version`. */
AM_API const char *am_opus_version(void);

/* ---- rooms ---- */
AM_API AmRoom *am_room_create(void);
AM_API void am_room_destroy(AmRoom *room);
/* topk 1..16; shared 0/1; bitrate bit/s; complexity 0..10; jitter bounds in ms; fec 0/1 (in-band
 * FEC on the encodes we send). Applies to existing encoders immediately. */
AM_API int am_room_configure(AmRoom *room, int topk, int shared, int bitrate, int complexity, int jitter_min_ms,
                             int jitter_max_ms, int fec);
/* Adds a participant identified by `handle` (opaque to the core, echoed in outputs). Returns its slot. */
AM_API int am_room_add(AmRoom *room, uint32_t handle);
AM_API int am_room_remove(AmRoom *room, int slot);
AM_API int am_room_push(AmRoom *room, int slot, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data,
                        int len);
/* am_room_push with the sender's voice-activity flags (AM_VAD_*); am_room_push is flags 0 (unknown). */
AM_API int am_room_push_flags(AmRoom *room, int slot, uint32_t seq, uint32_t ts, double arrival_ms, const uint8_t *data,
                              int len, int flags);
/* Decode skipping: skip 0/1 (default 1). Each flagged-silent participant is still decoded once every
 * probe_period ticks (default 25 = 500 ms, 0..500, 0 = never), round robin spread over the ticks, so a
 * client whose flag lies is heard within that period. */
AM_API int am_room_set_vad(AmRoom *room, int skip, int probe_period_ticks);
/* can_speak 0: a listener. Its packets are counted and dropped, it is never decoded nor mixed. Default 1. */
AM_API int am_room_set_can_speak(AmRoom *room, int slot, int can_speak);
/* What `listener` hears of `source`: gain 0 (muted for this listener only) .. AM_MAX_GAIN; 1 removes the
 * rule. A listener with rules gets a personal mix (its own encoder). Changes ramp over one frame. */
AM_API int am_room_set_gain(AmRoom *room, int listener, int source, float gain);
AM_API int am_room_clear_gains(AmRoom *room, int listener);
/* Priority speaker (slot, or -1 for none): favoured for a top-K slot, and while it is mixed everyone
 * else is scaled by duck_gain (0..1, e.g. 0.25 = -12 dB) in every mix, ramped over a frame. */
AM_API int am_room_set_priority(AmRoom *room, int slot, float duck_gain);

/*
 * Runs one 20 ms tick: pulls, decodes and conceals every participant, selects the speakers, mixes and
 * encodes. Returns the number of output packets; am_room_outputs() then points at that many
 * descriptors of 4 int32: {length, data pointer, recipient count, recipient pointer (uint32 handles)}.
 * Every participant is the recipient of exactly one packet per tick.
 */
AM_API int am_room_tick(AmRoom *room, double now_ms);
AM_API const int32_t *am_room_outputs(AmRoom *room);
/* The same as one am_room_outputs() descriptor, with native pointers (for native callers). */
int am_room_output(AmRoom *room, int i, const uint8_t **data, int *len, const uint32_t **recips, int *nrecip);
AM_API int am_room_stats(AmRoom *room, int slot, double *out);
AM_API const double *am_room_counters(AmRoom *room);
/* Test hooks: the PCM mix sent to `slot` in the last tick (before encoding), and its decoded input. */
AM_API const int16_t *am_room_debug_mix(AmRoom *room, int slot);
AM_API const int16_t *am_room_debug_input(AmRoom *room, int slot);

/* ---- benchmark helpers (same code natively and in wasm) ---- */
/* Deterministic speech-like test signal: `kind` 0 = voiced talker, 1 = quiet background noise. */
AM_API void am_bench_signal(int16_t *out, int frames, int kind, uint32_t seed);
/* Encodes `frames` consecutive frames; returns the total bytes produced (so nothing is optimised away). */
AM_API int am_bench_encode(void *enc, const int16_t *pcm, int frames, uint8_t *scratch);

#endif
