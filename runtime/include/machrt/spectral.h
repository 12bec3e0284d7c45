/* The spectral front end: STFT (FFTW3), mel filterbank, power mel
 * spectrogram and decibels, with torchaudio's semantics.
 *
 * What "torchaudio's semantics" pins down (torchaudio 0.13,
 * transforms.MelSpectrogram / functional.melscale_fbanks / AmplitudeToDB):
 *  - periodic Hann window of win_length samples, zero-padded on both sides
 *    to n_fft (left pad (n_fft - win_length) / 2) as torch.stft does;
 *  - center = 1 pads n_fft / 2 samples on each side (reflect or constant),
 *    so T = 1 + (n + 2 * (n_fft / 2) - n_fft) / hop frames (1 + n / hop for
 *    an even n_fft: 431 for 10 s at 22050 Hz with hop 512);
 *  - frequency bins at linspace(0, sample_rate / 2 (integer division),
 *    n_fft / 2 + 1); triangular filters between n_mels + 2 points equally
 *    spaced on the HTK or Slaney mel scale; filters with no bin inside them
 *    (e.g. entirely above Nyquist when f_max > sample_rate / 2) are all
 *    zero, and a warning is printed once per process to stderr;
 *  - power = 2 gives |X|^2, power = 1 gives |X|, other p > 0 gives |X|^p;
 *  - dB = multiplier * log10(max(x, 1e-10)), with top_db clamping every
 *    group of the last three dimensions (the whole tensor when it has at
 *    most two) at its maximum minus top_db.
 *
 * Everything is float32 in and out. FFT plans are made once per size and
 * shared (see stft.c); a batch runs in parallel over clips and frames and
 * gives the same numbers for any thread count. */
#ifndef MACHRT_SPECTRAL_H
#define MACHRT_SPECTRAL_H

#include <stdint.h>
#include "machrt/tensor.h"

typedef enum { MRT_PAD_REFLECT = 0, MRT_PAD_CONSTANT = 1 } mrt_pad_mode;
typedef enum { MRT_MEL_HTK = 0, MRT_MEL_SLANEY = 1 } mrt_mel_scale;
typedef enum { MRT_MEL_NORM_NONE = 0, MRT_MEL_NORM_SLANEY = 1 } mrt_mel_norm;

typedef struct mrt_stft_config {
    int n_fft;
    int win_length;   /* <= n_fft */
    int hop_length;   /* >= 1 */
    int center;       /* pad n_fft / 2 on both sides */
    mrt_pad_mode pad_mode;
} mrt_stft_config;

typedef struct mrt_mel_config {
    mrt_stft_config stft;
    int64_t sample_rate;
    double f_min, f_max;  /* Hz; f_min < f_max; f_max may exceed Nyquist */
    int n_mels;
    double power;         /* > 0 */
    mrt_mel_scale mel_scale;
    mrt_mel_norm norm;
} mrt_mel_config;

/* ---- STFT ------------------------------------------------------------- */

/* torchaudio's Spectrogram defaults for n_fft: win_length = n_fft,
 * hop = win_length / 2, center, reflect. */
void mrt_stft_config_init(mrt_stft_config *c, int n_fft);
/* Checks the settings; messages start with `what` ("MelSpectrogram: ...")
 * and name the parameter. */
mrt_status mrt_stft_config_check(const mrt_stft_config *c, const char *what);
/* The analysis window of the settings: n_fft values, a periodic Hann of
 * win_length samples (evaluated in double, rounded once) centred in n_fft,
 * zero outside. The CPU framing and the CUDA front end both use it. */
void mrt_stft_window(const mrt_stft_config *c, float *w);
/* Number of frames for n samples (0 when n is too short without center). */
int64_t mrt_stft_frames(int64_t n, int n_fft, int hop_length, int center);
/* The shortest signal the settings accept (reflect padding needs more than
 * n_fft / 2 samples, no centering needs n_fft). */
int64_t mrt_stft_min_length(const mrt_stft_config *c);

/* Complex STFT of `wave` ({n} or {B, n}, float32) as real pairs:
 * out = {[B,] n_fft / 2 + 1, T, 2} (torch.view_as_real(torch.stft(...))).
 * Mostly for tests and inspection: the mel path below never materialises it. */
mrt_status mrt_stft(const mrt_stft_config *c, const mrt_tensor *wave, mrt_tensor *out);

/* ---- mel filterbank --------------------------------------------------- */

/* torchaudio.functional.melscale_fbanks: out = {n_freqs, n_mels}. Bad
 * settings fail with messages prefixed by "melscale_fbanks". */
mrt_status mrt_mel_fbanks(int n_freqs, double f_min, double f_max, int n_mels,
                          int64_t sample_rate, mrt_mel_norm norm, mrt_mel_scale scale,
                          mrt_tensor *out);
double mrt_hz_to_mel(double hz, mrt_mel_scale scale);
double mrt_mel_to_hz(double mel, mrt_mel_scale scale);

/* ---- mel spectrogram -------------------------------------------------- */

/* torchaudio.transforms.MelSpectrogram's defaults for `sample_rate`:
 * n_fft 400, win_length 400, hop 200, f_min 0, f_max sample_rate / 2,
 * 128 mels, power 2, center, reflect, HTK, no norm. */
void mrt_mel_config_init(mrt_mel_config *c, int64_t sample_rate);
/* Checks the settings; messages start with "MelSpectrogram: ". */
mrt_status mrt_mel_config_check(const mrt_mel_config *c);

/* A prepared transform: window, sparse filterbank and FFT plan. Immutable
 * after creation, so one object may run on several threads at once. */
typedef struct mrt_mel_spec mrt_mel_spec;

mrt_status mrt_mel_spec_new(const mrt_mel_config *c, mrt_mel_spec **out);
void mrt_mel_spec_free(mrt_mel_spec *m); /* NULL is fine */
const mrt_mel_config *mrt_mel_spec_config(const mrt_mel_spec *m);
/* Filters that are all zero (no frequency bin inside them). */
int mrt_mel_spec_zero_filters(const mrt_mel_spec *m);
/* From now on no MelSpectrogram construction prints the all-zero filter
 * warning: for callers that say it in their own words, or have said it. */
void mrt_mel_quiet_zero_filter_warning(void);
/* wave {n} -> out {n_mels, T}; wave {B, n} -> out {B, n_mels, T}. `out`
 * follows the output convention of tensor.h. */
mrt_status mrt_mel_spec_forward(const mrt_mel_spec *m, const mrt_tensor *wave, mrt_tensor *out);
/* The dense filterbank {n_freqs, n_mels}, as torchaudio's MelScale.fb. */
mrt_status mrt_mel_spec_filterbank(const mrt_mel_spec *m, mrt_tensor *out);

/* ---- decibels --------------------------------------------------------- */

/* out = multiplier * log10(max(x, 1e-10)), then, when top_db >= 0, clamped
 * from below at (group maximum - top_db) with torchaudio's grouping (see the
 * top of this file). multiplier is 10 for power, 20 for magnitude. `out`
 * may be `x` (in place). */
mrt_status mrt_amplitude_to_db(const mrt_tensor *x, double multiplier, double top_db,
                               mrt_tensor *out);

#endif
