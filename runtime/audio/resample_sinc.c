/* torchaudio's default resampler, as torchaudio.functional.resample runs it
 * on a float32 wave (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99;
 * torchaudio/functional/functional.py, _get_sinc_resample_kernel and
 * _apply_sinc_resample_kernel). The reference recipe was trained on its
 * output, which keeps more of the band near the source's Nyquist frequency
 * than libsoxr does (README, "audio.resampler").
 *
 * The algorithm: the rates are reduced by their gcd to orig : new. Output
 * frame k * new + j (phase j) is the dot product of input frames
 * k * orig - width ... k * orig + width + orig - 1 with phase j's filter,
 *   t = base * (i / orig - j / new),  clamped to [-6, 6],
 *   tap = sinc(pi t) * cos(pi t / 12)^2 * base / orig,
 * where base = min(orig, new) * 0.99 and width = ceil(6 * orig / base);
 * frames outside the input are zero. The output has
 * ceil(frames * new / orig) frames (mrt_audio_resampled_length).
 *
 * The taps are computed with torchaudio's float32 operations in its order,
 * so they differ from its kernel only where its vectorised sin and cos round
 * differently (an ulp). The dot products are summed in double, torchaudio's
 * conv1d in float32 in an order of its own: outputs differ by float32
 * rounding (about 1e-7 of the signal).
 *
 * One departure, far below float32 resolution: torchaudio's filter for a
 * phase spans 2 * width + orig taps, but where |t| reaches 6 the clamp makes
 * a tap cos(pi / 2)^2 * sinc(6 pi) in float32, about 1e-22. Only the taps
 * that can lie inside the window (plus two on either side) are kept, so a
 * phase has about 2 * width taps rather than 2 * width + orig: 15 rather
 * than 334 for 16000 -> 22050 Hz, and a bank that fits for rates with a
 * small gcd (44101 -> 22050 Hz: 22050 phases of 31 taps), where torchaudio's
 * would need 22050 x 44127.
 *
 * One length torchaudio computes differently: it takes the ceiling of
 * new * frames / orig after rounding the quotient to float32, which for
 * outputs past 2^24 frames (6 min at 44.1 kHz) can be a frame off the exact
 * ceiling used here (2 -> 1 Hz on 33554438 frames: torchaudio 16777220,
 * exact 16777219). */
#include "resample_internal.h"

#include <math.h>
#include <stdlib.h>

#define LOWPASS_FILTER_WIDTH 6
#define ROLLOFF 0.99
/* Taps kept past the window's edge on either side: t is rounded in float32,
 * so the edge found in double may be off by a fraction of a frame. */
#define EDGE_MARGIN 2
/* 256 MiB of taps: far above any common rate pair (16000 -> 22050 Hz needs
 * 441 x 19), a bound on what a pair with gcd 1 at MHz rates would ask. */
#define MAX_BANK_TAPS ((int64_t)64 << 20)

struct mrt_sinc_bank {
    int64_t orig, new_rate;  /* the rates over their gcd */
    int64_t *first;          /* per phase: its first tap's input frame, from k * orig */
    int64_t *start;          /* per phase: its first tap in `taps` */
    int *count;              /* per phase: its taps */
    float *taps;
};

/* Tap i (input frame k * orig + i) of phase j, as _get_sinc_resample_kernel
 * computes it for float32: every product and quotient rounded to float32,
 * Python scalars converted to float32 first. */
static float sinc_tap(int64_t i, int64_t j, float orig, float new_rate, float base, float scale)
{
    const float pi = (float)M_PI, lw = (float)LOWPASS_FILTER_WIDTH;
    float t = (float)(-j) / new_rate + (float)i / orig;
    t *= base;
    if (t < -lw) t = -lw;
    if (t > lw) t = lw;
    float window = cosf(t * pi / lw / 2.0f);
    window = window * window;
    t *= pi;
    float kernel = t == 0.0f ? 1.0f : sinf(t) / t;
    return kernel * (window * scale);
}

static mrt_status too_large(int from, int to, int64_t g)
{
    return mrt_fail(MRT_ERR_ARG, "audio.resample: resampler 'torchaudio' from %d Hz to %d Hz "
                    "needs a filter bank of more than %lld taps (the rates' greatest common "
                    "divisor is only %lld); use resampler 'soxr'", from, to,
                    (long long)MAX_BANK_TAPS, (long long)g);
}

void mrt_sinc_bank_free(mrt_sinc_bank *bank)
{
    if (!bank) return;
    free(bank->first);
    free(bank->start);
    free(bank->count);
    free(bank->taps);
    free(bank);
}

mrt_status mrt_sinc_bank_make(int from, int to, mrt_sinc_bank **out)
{
    *out = NULL;
    const int64_t g = mrt_rate_gcd(from, to);
    const int64_t orig = from / g, new_rate = to / g;
    const double base = (double)(orig < new_rate ? orig : new_rate) * ROLLOFF;
    const int64_t width = (int64_t)ceil((double)(LOWPASS_FILTER_WIDTH * orig) / base);
    const double half = (double)LOWPASS_FILTER_WIDTH * (double)orig / base;

    /* Each phase keeps at most 2 * half + 2 * EDGE_MARGIN + 3 taps. */
    if ((double)new_rate * (2.0 * half + 2 * EDGE_MARGIN + 3) > (double)MAX_BANK_TAPS)
        return too_large(from, to, g);
    mrt_sinc_bank *b = calloc(1, sizeof *b);
    if (!b) return mrt_fail(MRT_ERR_NOMEM, "audio.resample: out of memory");
    b->orig = orig;
    b->new_rate = new_rate;
    b->first = malloc(sizeof *b->first * (size_t)new_rate);
    b->start = malloc(sizeof *b->start * (size_t)new_rate);
    b->count = malloc(sizeof *b->count * (size_t)new_rate);
    if (!b->first || !b->start || !b->count) {
        mrt_sinc_bank_free(b);
        return mrt_fail(MRT_ERR_NOMEM, "audio.resample: out of memory");
    }
    int64_t total = 0;
    for (int64_t j = 0; j < new_rate; j++) {
        /* Phase j's window is centred on input frame orig * j / new. */
        double centre = (double)orig * (double)j / (double)new_rate;
        int64_t lo = (int64_t)floor(centre - half) - EDGE_MARGIN;
        int64_t hi = (int64_t)ceil(centre + half) + EDGE_MARGIN;
        if (lo < -width) lo = -width;
        if (hi > width + orig - 1) hi = width + orig - 1;
        b->first[j] = lo;
        b->start[j] = total;
        b->count[j] = (int)(hi - lo + 1);
        total += hi - lo + 1;
    }
    b->taps = malloc(sizeof *b->taps * (size_t)total);
    if (!b->taps) {
        mrt_sinc_bank_free(b);
        return mrt_fail(MRT_ERR_NOMEM, "audio.resample: out of memory for a filter bank of "
                        "%lld taps", (long long)total);
    }
    const float of = (float)orig, nf = (float)new_rate, bf = (float)base;
    const float scale = (float)(base / (double)orig);
    for (int64_t j = 0; j < new_rate; j++)
        for (int c = 0; c < b->count[j]; c++)
            b->taps[b->start[j] + c] = sinc_tap(b->first[j] + c, j, of, nf, bf, scale);
    *out = b;
    return MRT_OK;
}

/* The dot product of `len` taps w with frames x, in double; four sums so
 * that the adds need not wait on one another. */
static float dot(const float *x, const float *w, int len)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= len; i += 4) {
        s0 += (double)x[i] * w[i];
        s1 += (double)x[i + 1] * w[i + 1];
        s2 += (double)x[i + 2] * w[i + 2];
        s3 += (double)x[i + 3] * w[i + 3];
    }
    for (; i < len; i++) s0 += (double)x[i] * w[i];
    return (float)((s0 + s1) + (s2 + s3));
}

void mrt_sinc_bank_apply(const mrt_sinc_bank *bank, const float *in, int64_t n, float *out,
                         int64_t m)
{
    const int64_t orig = bank->orig, new_rate = bank->new_rate;
    for (int64_t q0 = 0; q0 < m; q0 += new_rate) {
        const int64_t k = q0 / new_rate;
        const int64_t phases = m - q0 < new_rate ? m - q0 : new_rate;
        for (int64_t j = 0; j < phases; j++) {
            const int64_t at = k * orig + bank->first[j];
            const int64_t count = bank->count[j];
            /* Taps over frames before 0 or past the end meet zeros: only
             * taps [a, c) see the input. */
            int64_t a = at < 0 ? -at : 0, c = n - at < count ? n - at : count;
            out[q0 + j] = c <= a ? 0.0f : dot(in + at + a, bank->taps + bank->start[j] + a, (int)(c - a));
        }
    }
}
