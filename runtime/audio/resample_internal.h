/* Internal: the resamplers behind mrt_audio_resample (resample.c holds the
 * checks, the shapes and the rows in parallel; each resampler its rows). */
#ifndef MACHRT_AUDIO_RESAMPLE_INTERNAL_H
#define MACHRT_AUDIO_RESAMPLE_INTERNAL_H

#include <stdint.h>
#include "machrt/audio_io.h"

/* Greatest common divisor of two positive sample rates. */
int64_t mrt_rate_gcd(int64_t a, int64_t b);

/* torchaudio's windowed-sinc resampler (resample_sinc.c): the polyphase
 * filter bank of one rate pair, made once and applied to every row. */
typedef struct mrt_sinc_bank mrt_sinc_bank;

/* Builds the filter bank for `from` -> `to` Hz (from != to). Refuses a rate
 * pair whose bank would not fit in a few hundred MiB (MRT_ERR_ARG naming
 * both rates). */
mrt_status mrt_sinc_bank_make(int from, int to, mrt_sinc_bank **out);

/* One row: `n` input frames into `m` output frames (m no more than
 * mrt_audio_resampled_length(n, from, to)). Thread-safe on a shared bank. */
void mrt_sinc_bank_apply(const mrt_sinc_bank *bank, const float *in, int64_t n, float *out,
                         int64_t m);

void mrt_sinc_bank_free(mrt_sinc_bank *bank);

#endif
