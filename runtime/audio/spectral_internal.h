/* Internal: framing and FFT plans shared by stft.c and mel.c.
 *
 * A framer turns sample positions into windowed FFT inputs: it folds the
 * center padding (reflect or constant) and the window into one pass, so no
 * padded copy of the signal is ever made. */
#ifndef MACHRT_AUDIO_SPECTRAL_INTERNAL_H
#define MACHRT_AUDIO_SPECTRAL_INTERNAL_H

#include <fftw3.h>
#include "machrt/spectral.h"

typedef struct mrt_framer {
    mrt_stft_config cfg;
    int n_freqs;       /* n_fft / 2 + 1 */
    int pad;           /* samples of padding on each side (0 without center) */
    int wl, wr;        /* window support [wl, wr) inside a frame */
    float *window;     /* n_fft values (fftwf_malloc), zero outside the support */
    fftwf_plan plan;   /* shared r2c plan of size n_fft, owned by the cache */
} mrt_framer;

/* Checks `c` (messages start with `what`), builds the window and fetches the
 * plan. On failure nothing is left to free. */
mrt_status mrt_framer_init(mrt_framer *f, const mrt_stft_config *c, const char *what);
void mrt_framer_free(mrt_framer *f);

/* The r2c plan for size n, made on first use and then shared (FFTW's
 * planner is not thread-safe; executing a plan on new arrays is). The plan
 * was made on fftwf_malloc'd out-of-place arrays: execute it only on such
 * arrays, input n floats, output n / 2 + 1 complex. */
mrt_status mrt_fft_plan_r2c(int n, fftwf_plan *out);

/* Checks `wave` ({n} or {B, n}, float32, long enough for the framing) and
 * makes `contig` a contiguous view or copy of it. *batched says whether it
 * had a batch dimension. Messages start with `what` and name `wave`. */
mrt_status mrt_framer_wave(const mrt_framer *f, const char *what, const mrt_tensor *wave,
                           mrt_tensor *contig, int64_t *batch, int64_t *n, int *batched);

/* Writes the windowed frame t of x (n samples) into buf (n_fft floats,
 * zero outside the window support). */
void mrt_framer_frame(const mrt_framer *f, const float *x, int64_t n, int64_t t, float *buf);

#endif
