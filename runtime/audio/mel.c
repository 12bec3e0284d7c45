/* Mel filterbank, power mel spectrogram and decibels (torchaudio semantics,
 * see spectral.h).
 *
 * The mel spectrogram never materialises the full power spectrogram. A
 * batch is cut into work items of one clip x MEL_BLOCK consecutive frames;
 * each item windows and transforms its frames, keeps their power spectra in
 * a small bin-major tile (n_freqs x MEL_BLOCK floats, cache-resident) and
 * projects that tile onto the filters before moving on. The projection
 * visits only the bins inside each triangle: a filter is stored as its first
 * bin and its weights, so the work is about 2 multiply-adds per bin and
 * frame, instead of n_mels per bin for the dense product torchaudio does.
 * Every output element is computed by exactly one item in a fixed order,
 * so results do not depend on the thread count. */
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "machrt/backend.h"
#include "spectral_internal.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Frames per work item: the tile of 1025 bins x 16 frames is 64 KiB for
 * n_fft 2048, which stays in L2 next to the FFT buffers, and 16 lanes
 * vectorise the projection's inner loop. */
#define MEL_BLOCK 16
_Static_assert(MEL_BLOCK % 4 == 0, "the tile is filled four columns at a time");

/* ---- mel scales (torchaudio.functional._hz_to_mel / _mel_to_hz) ---------- */

#define SLANEY_F_SP (200.0 / 3.0)
#define SLANEY_MIN_LOG_HZ 1000.0
#define SLANEY_MIN_LOG_MEL (SLANEY_MIN_LOG_HZ / SLANEY_F_SP)

static double slaney_logstep(void) { return log(6.4) / 27.0; }

double mrt_hz_to_mel(double hz, mrt_mel_scale scale)
{
    if (scale == MRT_MEL_HTK) return 2595.0 * log10(1.0 + hz / 700.0);
    if (hz >= SLANEY_MIN_LOG_HZ)
        return SLANEY_MIN_LOG_MEL + log(hz / SLANEY_MIN_LOG_HZ) / slaney_logstep();
    return hz / SLANEY_F_SP;
}

double mrt_mel_to_hz(double mel, mrt_mel_scale scale)
{
    if (scale == MRT_MEL_HTK) return 700.0 * (pow(10.0, mel / 2595.0) - 1.0);
    if (mel >= SLANEY_MIN_LOG_MEL)
        return SLANEY_MIN_LOG_HZ * exp(slaney_logstep() * (mel - SLANEY_MIN_LOG_MEL));
    return SLANEY_F_SP * mel;
}

/* ---- filterbank --------------------------------------------------------- */

static mrt_status check_fbank_args(const char *what, int n_freqs, double f_min, double f_max,
                                   int n_mels, int64_t sample_rate, mrt_mel_norm norm,
                                   mrt_mel_scale scale)
{
    if (n_freqs < 1) return mrt_fail(MRT_ERR_ARG, "%s: n_freqs must be at least 1, got %d", what, n_freqs);
    if (n_mels < 1) return mrt_fail(MRT_ERR_ARG, "%s: n_mels must be at least 1, got %d", what, n_mels);
    if (sample_rate < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: sample_rate must be positive, got %" PRId64, what, sample_rate);
    if (!isfinite(f_min) || f_min < 0)
        return mrt_fail(MRT_ERR_ARG, "%s: f_min must be a non-negative frequency, got %g", what, f_min);
    if (!isfinite(f_max))
        return mrt_fail(MRT_ERR_ARG, "%s: f_max must be a finite frequency, got %g", what, f_max);
    if (f_min >= f_max)
        return mrt_fail(MRT_ERR_ARG, "%s: f_min (%g) must be less than f_max (%g)", what, f_min, f_max);
    if (scale != MRT_MEL_HTK && scale != MRT_MEL_SLANEY)
        return mrt_fail(MRT_ERR_ARG, "%s: unknown mel_scale %d", what, (int)scale);
    if (norm != MRT_MEL_NORM_NONE && norm != MRT_MEL_NORM_SLANEY)
        return mrt_fail(MRT_ERR_ARG, "%s: unknown norm %d", what, (int)norm);
    return MRT_OK;
}

/* Dense {n_freqs, n_mels} filterbank into fb, exactly torchaudio's formula
 * (fb = max(0, min(down, up)) over the n_mels + 2 mel points), evaluated
 * in double and rounded once. Returns the number of all-zero filters. */
static int build_fbank(int n_freqs, double f_min, double f_max, int n_mels, int64_t sample_rate,
                       mrt_mel_norm norm, mrt_mel_scale scale, float *fb, double *f_pts)
{
    const double m_min = mrt_hz_to_mel(f_min, scale), m_max = mrt_hz_to_mel(f_max, scale);
    const int np = n_mels + 2;
    for (int i = 0; i < np; i++)
        f_pts[i] = mrt_mel_to_hz(m_min + (m_max - m_min) * i / (np - 1), scale);
    /* torch.linspace(0, sample_rate // 2, n_freqs): integer division, as
     * torchaudio writes it. */
    const double top = (double)(sample_rate / 2);
    int zero = 0;
    for (int m = 0; m < n_mels; m++) {
        const double lo = f_pts[m], mid = f_pts[m + 1], hi = f_pts[m + 2];
        const double scale_m = norm == MRT_MEL_NORM_SLANEY ? 2.0 / (hi - lo) : 1.0;
        int any = 0;
        for (int k = 0; k < n_freqs; k++) {
            const double f = n_freqs > 1 ? top * k / (n_freqs - 1) : 0.0;
            const double down = (f - lo) / (mid - lo), up = (hi - f) / (hi - mid);
            double v = down < up ? down : up;
            if (!(v > 0.0)) v = 0.0;
            float w = (float)(v * scale_m);
            fb[(int64_t)k * n_mels + m] = w;
            any |= w != 0.0f;
        }
        zero += !any;
    }
    return zero;
}

static atomic_flag zero_filter_warned = ATOMIC_FLAG_INIT;

/* torchaudio warns (once per Python warning registry) when a filter is all
 * zero; the reference settings (f_max 16000 Hz at 22050 Hz) do that on
 * purpose, so say it once per process rather than on every construction. */
static void warn_zero_filters(int zero, int n_mels, int n_freqs, double f_max, int64_t sample_rate)
{
    if (zero == 0 || atomic_flag_test_and_set(&zero_filter_warned)) return;
    const double nyquist = (double)sample_rate / 2.0;
    if (f_max > nyquist)
        fprintf(stderr, "machrt: warning: %d of %d mel filters are all zero: f_max (%g Hz) is "
                "above the Nyquist frequency (%g Hz) of sample_rate %" PRId64 " (torchaudio "
                "gives the same zero filters; this warning is printed once)\n", zero, n_mels,
                f_max, nyquist, sample_rate);
    else
        fprintf(stderr, "machrt: warning: %d of %d mel filters are all zero: n_mels (%d) may "
                "be too high for n_freqs (%d) (this warning is printed once)\n", zero, n_mels,
                n_mels, n_freqs);
}

mrt_status mrt_mel_fbanks(int n_freqs, double f_min, double f_max, int n_mels,
                          int64_t sample_rate, mrt_mel_norm norm, mrt_mel_scale scale,
                          mrt_tensor *out)
{
    mrt_status st = check_fbank_args("melscale_fbanks", n_freqs, f_min, f_max, n_mels,
                                     sample_rate, norm, scale);
    if (st) return st;
    int64_t shape[2] = {n_freqs, n_mels};
    float *fb = malloc(sizeof(float) * (size_t)n_freqs * (size_t)n_mels);
    double *f_pts = malloc(sizeof(double) * (size_t)(n_mels + 2));
    if (!fb || !f_pts) {
        free(fb);
        free(f_pts);
        return mrt_fail(MRT_ERR_NOMEM, "melscale_fbanks: out of memory");
    }
    int zero = build_fbank(n_freqs, f_min, f_max, n_mels, sample_rate, norm, scale, fb, f_pts);
    warn_zero_filters(zero, n_mels, n_freqs, f_max, sample_rate);
    mrt_tensor src = {0};
    if (!(st = mrt_tensor_alloc_uninit(&src, MRT_F32, 2, shape))) {
        memcpy(mrt_f32(&src), fb, sizeof(float) * (size_t)n_freqs * (size_t)n_mels);
        if (!(st = mrt_tensor_prepare_out("melscale_fbanks", out, MRT_F32, 2, shape)))
            st = mrt_tensor_copy(out, &src);
    }
    mrt_tensor_release(&src);
    free(fb);
    free(f_pts);
    return st;
}

/* ---- the transform object ------------------------------------------------ */

struct mrt_mel_spec {
    mrt_mel_config cfg;
    mrt_framer fr;
    int n_freqs, n_mels;
    int zero_filters;
    int *first;      /* first bin of filter m */
    int *len;        /* bins in filter m (0 for an all-zero filter) */
    int64_t *woff;   /* offset of filter m's weights in `weights` */
    float *weights;  /* the non-zero span of every filter, back to back */
};

void mrt_mel_config_init(mrt_mel_config *c, int64_t sample_rate)
{
    mrt_stft_config_init(&c->stft, 400);
    c->sample_rate = sample_rate;
    c->f_min = 0.0;
    c->f_max = (double)(sample_rate / 2);
    c->n_mels = 128;
    c->power = 2.0;
    c->mel_scale = MRT_MEL_HTK;
    c->norm = MRT_MEL_NORM_NONE;
}

mrt_status mrt_mel_config_check(const mrt_mel_config *c)
{
    const char *what = "MelSpectrogram";
    mrt_status st = mrt_stft_config_check(&c->stft, what);
    if (st) return st;
    if (!(c->power > 0.0) || !isfinite(c->power))
        return mrt_fail(MRT_ERR_ARG, "%s: power must be positive (2 = power, 1 = magnitude), "
                        "got %g", what, c->power);
    return check_fbank_args(what, c->stft.n_fft / 2 + 1, c->f_min, c->f_max, c->n_mels,
                            c->sample_rate, c->norm, c->mel_scale);
}

void mrt_mel_spec_free(mrt_mel_spec *m)
{
    if (!m) return;
    mrt_framer_free(&m->fr);
    free(m->first);
    free(m->len);
    free(m->woff);
    free(m->weights);
    free(m);
}

mrt_status mrt_mel_spec_new(const mrt_mel_config *c, mrt_mel_spec **out)
{
    *out = NULL;
    mrt_status st = mrt_mel_config_check(c);
    if (st) return st;
    mrt_mel_spec *m = calloc(1, sizeof *m);
    if (!m) return mrt_fail(MRT_ERR_NOMEM, "MelSpectrogram: out of memory");
    m->cfg = *c;
    if ((st = mrt_framer_init(&m->fr, &c->stft, "MelSpectrogram"))) {
        free(m);
        return st;
    }
    const int nf = m->fr.n_freqs, nm = c->n_mels;
    m->n_freqs = nf;
    m->n_mels = nm;
    float *fb = malloc(sizeof(float) * (size_t)nf * (size_t)nm);
    double *f_pts = malloc(sizeof(double) * (size_t)(nm + 2));
    m->first = calloc((size_t)nm, sizeof *m->first);
    m->len = calloc((size_t)nm, sizeof *m->len);
    m->woff = calloc((size_t)nm, sizeof *m->woff);
    if (!fb || !f_pts || !m->first || !m->len || !m->woff) {
        st = mrt_fail(MRT_ERR_NOMEM, "MelSpectrogram: out of memory for the filterbank");
        goto fail;
    }
    m->zero_filters = build_fbank(nf, c->f_min, c->f_max, nm, c->sample_rate, c->norm,
                                  c->mel_scale, fb, f_pts);
    /* Sparse form: each triangle's span from its first to its last non-zero
     * bin (a triangle has no zeros inside its span). */
    int64_t total = 0;
    for (int j = 0; j < nm; j++) {
        int lo = -1, hi = -1;
        for (int k = 0; k < nf; k++) {
            if (fb[(int64_t)k * nm + j] != 0.0f) {
                if (lo < 0) lo = k;
                hi = k;
            }
        }
        m->first[j] = lo < 0 ? 0 : lo;
        m->len[j] = lo < 0 ? 0 : hi - lo + 1;
        m->woff[j] = total;
        total += m->len[j];
    }
    m->weights = malloc(sizeof(float) * (size_t)(total > 0 ? total : 1));
    if (!m->weights) {
        st = mrt_fail(MRT_ERR_NOMEM, "MelSpectrogram: out of memory for the filterbank");
        goto fail;
    }
    for (int j = 0; j < nm; j++)
        for (int i = 0; i < m->len[j]; i++)
            m->weights[m->woff[j] + i] = fb[(int64_t)(m->first[j] + i) * nm + j];
    free(fb);
    free(f_pts);
    warn_zero_filters(m->zero_filters, nm, nf, c->f_max, c->sample_rate);
    *out = m;
    return MRT_OK;
fail:
    free(fb);
    free(f_pts);
    mrt_mel_spec_free(m);
    return st;
}

const mrt_mel_config *mrt_mel_spec_config(const mrt_mel_spec *m) { return &m->cfg; }

int mrt_mel_spec_zero_filters(const mrt_mel_spec *m) { return m->zero_filters; }

void mrt_mel_quiet_zero_filter_warning(void) { atomic_flag_test_and_set(&zero_filter_warned); }

mrt_status mrt_mel_spec_filterbank(const mrt_mel_spec *m, mrt_tensor *out)
{
    int64_t shape[2] = {m->n_freqs, m->n_mels};
    mrt_tensor fb = {0};
    mrt_status st = mrt_tensor_alloc(&fb, MRT_F32, 2, shape);
    if (st) return st;
    float *p = mrt_f32(&fb);
    for (int j = 0; j < m->n_mels; j++)
        for (int i = 0; i < m->len[j]; i++)
            p[(int64_t)(m->first[j] + i) * m->n_mels + j] = m->weights[m->woff[j] + i];
    if (!(st = mrt_tensor_prepare_out("MelSpectrogram.filterbank", out, MRT_F32, 2, shape)))
        st = mrt_tensor_copy(out, &fb);
    mrt_tensor_release(&fb);
    return st;
}

/* ---- forward -------------------------------------------------------------- */

/* Power (|X|^p) of four frames' spectra into four adjacent columns of the
 * bin-major tile: one 16-byte store per bin instead of four scattered
 * ones. The x86-64 baseline (SSE2) path computes re*re + im*im in the same
 * order as the portable loop, so both give identical bits. */
static void power_columns4(fftwf_complex *const cx[4], int nf, double power, float *tile)
{
#ifdef __SSE2__
    for (int k = 0; k < nf; k++) {
        __m128 a = _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)cx[0][k]);
        a = _mm_loadh_pi(a, (const __m64 *)cx[1][k]);
        __m128 b = _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)cx[2][k]);
        b = _mm_loadh_pi(b, (const __m64 *)cx[3][k]);
        a = _mm_mul_ps(a, a);
        b = _mm_mul_ps(b, b);
        __m128 re2 = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 im2 = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm_store_ps(tile + (int64_t)k * MEL_BLOCK, _mm_add_ps(re2, im2));
    }
#else
    for (int k = 0; k < nf; k++)
        for (int q = 0; q < 4; q++)
            tile[(int64_t)k * MEL_BLOCK + q] = cx[q][k][0] * cx[q][k][0] + cx[q][k][1] * cx[q][k][1];
#endif
    if (power == 2.0) return;
    const int64_t cells = (int64_t)nf * MEL_BLOCK;
    if (power == 1.0) {
        for (int64_t i = 0; i < cells; i += MEL_BLOCK)
            for (int q = 0; q < 4; q++) tile[i + q] = sqrtf(tile[i + q]);
    } else {
        /* |X|^p = (|X|^2)^(p/2), as torch's abs().pow(p) up to rounding. */
        const float half = (float)(power / 2.0);
        for (int64_t i = 0; i < cells; i += MEL_BLOCK)
            for (int q = 0; q < 4; q++) tile[i + q] = powf(tile[i + q], half);
    }
}

/* Projects the tile (nb valid columns) onto the filters and stores the
 * result at y[j * T + t0 ...]. Accumulated in float: every term is
 * non-negative, so there is no cancellation and the relative error of a sum
 * of L terms is below L * 2^-24 (L is at most a few dozen bins for the
 * usual settings, far inside the 1e-4 the tests ask for). */
static void project_tile(const mrt_mel_spec *m, const float *tile, int nb, float *y, int64_t T)
{
    for (int j = 0; j < m->n_mels; j++) {
        float acc[MEL_BLOCK] __attribute__((aligned(16))) = {0};
        const float *w = m->weights + m->woff[j];
        const float *p = tile + (int64_t)m->first[j] * MEL_BLOCK;
        const int len = m->len[j];
#ifdef __SSE2__
        /* Four accumulators kept in registers (the generic loop reloads
         * them from the stack every bin); same operation order per lane. */
        __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < len; i++, p += MEL_BLOCK) {
            const __m128 wi = _mm_set1_ps(w[i]);
            a0 = _mm_add_ps(a0, _mm_mul_ps(wi, _mm_load_ps(p)));
            a1 = _mm_add_ps(a1, _mm_mul_ps(wi, _mm_load_ps(p + 4)));
            a2 = _mm_add_ps(a2, _mm_mul_ps(wi, _mm_load_ps(p + 8)));
            a3 = _mm_add_ps(a3, _mm_mul_ps(wi, _mm_load_ps(p + 12)));
        }
        _mm_store_ps(acc, a0);
        _mm_store_ps(acc + 4, a1);
        _mm_store_ps(acc + 8, a2);
        _mm_store_ps(acc + 12, a3);
#else
        for (int i = 0; i < len; i++, p += MEL_BLOCK) {
            const float wi = w[i];
            for (int c = 0; c < MEL_BLOCK; c++) acc[c] += wi * p[c];
        }
#endif
        float *row = y + (int64_t)j * T;
        for (int c = 0; c < nb; c++) row[c] = acc[c];
    }
}

mrt_status mrt_mel_spec_forward(const mrt_mel_spec *m, const mrt_tensor *wave, mrt_tensor *out)
{
    const char *what = "MelSpectrogram";
    mrt_tensor x = {0};
    int64_t batch, n;
    int batched;
    const mrt_tensor *const devs[] = {wave, out};
    mrt_device device;
    mrt_status st = mrt_common_device(what, devs, 2, &device);
    if (st) return st;
    if ((st = mrt_framer_wave(&m->fr, what, wave, &x, &batch, &n, &batched))) return st;
    const mrt_stft_config *c = &m->cfg.stft;
    const int64_t T = mrt_stft_frames(n, c->n_fft, c->hop_length, c->center);
    const int nf = m->n_freqs, nm = m->n_mels;
    int64_t shape[3] = {batch, nm, T};
    int64_t *sh = batched ? shape : shape + 1;
    int nd = batched ? 3 : 2;
    mrt_tensor res = {0};
    if ((st = mrt_tensor_prepare_out_on(what, out, MRT_F32, nd, sh, device))) goto done;
    if (device != MRT_CPU) {
        /* Checked and contiguous on its device, out allocated: the
         * device's front end. */
        MRT_BACKEND_CALL(st, what, device, audio, mel_forward, (m, &x, out));
        goto done;
    }
    /* Written through a contiguous result; copied when the caller's output
     * is a strided view. */
    const int direct = mrt_tensor_is_contiguous(out);
    if (direct) mrt_tensor_share(&res, out);
    else if ((st = mrt_tensor_alloc_uninit(&res, MRT_F32, nd, sh))) goto done;

    const float *xs = mrt_f32(&x);
    float *ys = mrt_f32(&res);
    const int64_t nblocks = (T + MEL_BLOCK - 1) / MEL_BLOCK;
    const int64_t items = batch * nblocks;
    int failed = 0;
#pragma omp parallel if (batch * T * (int64_t)c->n_fft > 65536)
    {
        /* Per-thread buffers, each its own fftwf_malloc block: the plan may
         * only run on arrays aligned as the ones it was made on. Zeroed:
         * spectra of columns past the last frame of a short block are
         * stale or zero, summed and then dropped by the projection, so
         * they must at least be finite. */
        float *in = fftwf_malloc(sizeof(float) * (size_t)c->n_fft);
        float *tile = fftwf_malloc(sizeof(float) * (size_t)nf * MEL_BLOCK);
        fftwf_complex *cx[4];
        int ok = in && tile;
        for (int q = 0; q < 4; q++) {
            cx[q] = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
            ok = ok && cx[q];
            if (cx[q]) memset(cx[q], 0, sizeof(fftwf_complex) * (size_t)nf);
        }
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(tile, 0, sizeof(float) * (size_t)nf * MEL_BLOCK);
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            const int64_t b = it / nblocks, t0 = (it % nblocks) * MEL_BLOCK;
            const int nb = (int)(T - t0 < MEL_BLOCK ? T - t0 : MEL_BLOCK);
            const float *xb = xs + b * n;
            for (int col = 0; col < nb; col += 4) {
                for (int q = 0; q < 4 && col + q < nb; q++) {
                    mrt_framer_frame(&m->fr, xb, n, t0 + col + q, in);
                    fftwf_execute_dft_r2c(m->fr.plan, in, cx[q]);
                }
                power_columns4(cx, nf, m->cfg.power, tile + col);
            }
            project_tile(m, tile, nb, ys + b * nm * T + t0, T);
        }
        fftwf_free(in);
        fftwf_free(tile);
        for (int q = 0; q < 4; q++) fftwf_free(cx[q]);
    }
    if (failed) st = mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for the frame buffers", what);
    else if (!direct) st = mrt_tensor_copy(out, &res);
done:
    mrt_tensor_release(&res);
    mrt_tensor_release(&x);
    return st;
}

/* ---- decibels ------------------------------------------------------------- */

#define DB_AMIN 1e-10f

#ifdef __SSE2__
/* Natural log of four floats, each >= DB_AMIN (normal, positive), or +inf,
 * or NaN (both returned unchanged). Cephes' logf: split x = m * 2^e with m
 * in [sqrt(1/2), sqrt(2)), then a degree-9 polynomial in m - 1; within 2
 * ulp of the true log, i.e. about 1e-6 dB at any level, where glibc's
 * scalar log10f costs about four times as much per element. */
static inline __m128 log_ps(__m128 x)
{
    const __m128 one = _mm_set1_ps(1.0f);
    const __m128 special = _mm_cmpnlt_ps(x, _mm_set1_ps(INFINITY)); /* inf or NaN */
    __m128i bits = _mm_castps_si128(x);
    __m128i e = _mm_sub_epi32(_mm_srli_epi32(bits, 23), _mm_set1_epi32(126));
    /* Mantissa as a float in [0.5, 1). */
    __m128 m = _mm_or_ps(_mm_and_ps(x, _mm_castsi128_ps(_mm_set1_epi32(0x007fffff))),
                         _mm_set1_ps(0.5f));
    __m128 ef = _mm_cvtepi32_ps(e);
    /* m < sqrt(1/2): use 2m and e - 1, so m - 1 stays in [-0.29, 0.41). */
    const __m128 small = _mm_cmplt_ps(m, _mm_set1_ps(0.707106781186547524f));
    ef = _mm_sub_ps(ef, _mm_and_ps(one, small));
    m = _mm_add_ps(_mm_sub_ps(m, one), _mm_and_ps(m, small));
    const __m128 z = _mm_mul_ps(m, m);
    __m128 y = _mm_set1_ps(7.0376836292e-2f);
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(-1.1514610310e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(1.1676998740e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(-1.2420140846e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(1.4249322787e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(-1.6668057665e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(2.0000714765e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(-2.4999993993e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, m), _mm_set1_ps(3.3333331174e-1f));
    y = _mm_mul_ps(_mm_mul_ps(y, m), z);
    y = _mm_add_ps(y, _mm_mul_ps(ef, _mm_set1_ps(-2.12194440e-4f)));
    y = _mm_sub_ps(y, _mm_mul_ps(z, _mm_set1_ps(0.5f)));
    __m128 r = _mm_add_ps(_mm_add_ps(m, y), _mm_mul_ps(ef, _mm_set1_ps(0.693359375f)));
    return _mm_or_ps(_mm_and_ps(special, x), _mm_andnot_ps(special, r));
}

/* y = mul * log10(max(a, amin)) for 4 floats; NaN passes through. */
static inline __m128 db_ps(__m128 a, __m128 k)
{
    const __m128 amin = _mm_set1_ps(DB_AMIN);
    const __m128 nan = _mm_cmpunord_ps(a, a);
    a = _mm_or_ps(_mm_and_ps(nan, a), _mm_andnot_ps(nan, _mm_max_ps(a, amin)));
    return _mm_mul_ps(log_ps(a), k);
}
#endif

/* The dB conversion of n contiguous values (the clamp and the log; top_db
 * is applied by the caller). Every element goes through the same code
 * path (the tail through a padded vector), so its value does not depend on
 * where a thread's chunk starts. */
static void db_run(const float *a, float *y, int64_t n, double multiplier)
{
#ifdef __SSE2__
    const __m128 k = _mm_set1_ps((float)(multiplier / M_LN10));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, db_ps(_mm_loadu_ps(a + i), k));
    if (i < n) {
        float buf[4] = {1.0f, 1.0f, 1.0f, 1.0f};
        for (int64_t j = i; j < n; j++) buf[j - i] = a[j];
        _mm_storeu_ps(buf, db_ps(_mm_loadu_ps(buf), k));
        for (int64_t j = i; j < n; j++) y[j] = buf[j - i];
    }
#else
    const float mul = (float)multiplier;
    for (int64_t i = 0; i < n; i++) {
        const float v = a[i];
        /* NaN passes through, as torch.clamp lets it. */
        y[i] = mul * log10f(v > DB_AMIN || v != v ? v : DB_AMIN);
    }
#endif
}

mrt_status mrt_amplitude_to_db(const mrt_tensor *x, double multiplier, double top_db,
                               mrt_tensor *out)
{
    const char *what = "amplitude_to_db";
    if (!x->storage) return mrt_fail(MRT_ERR_ARG, "%s: tensor has been released", what);
    if (x->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: expected a float32 tensor, got %s (convert with "
                        ":float())", what, mrt_dtype_name(x->dtype));
    if (!isfinite(multiplier) || multiplier <= 0)
        return mrt_fail(MRT_ERR_ARG, "%s: multiplier must be positive, got %g", what, multiplier);
    if (!(top_db < 0) && !isfinite(top_db))
        return mrt_fail(MRT_ERR_ARG, "%s: top_db must be a finite number of dB, got %g", what, top_db);
    mrt_device device;
    MRT_OP_DEVICE(what, &device, x, out);
    /* Copy the header first: `out` may be `x` (in place). */
    mrt_tensor xv = *x, src = {0}, res = {0};
    mrt_status st = mrt_tensor_prepare_out_on(what, out, MRT_F32, xv.ndim, xv.shape, device);
    if (st) return st;
    if (device != MRT_CPU) {
        MRT_BACKEND_CALL(st, what, device, audio, amplitude_to_db, (x, multiplier, top_db, out));
        return st;
    }
    if ((st = mrt_tensor_contiguous(&xv, &src))) return st;
    const int direct = mrt_tensor_is_contiguous(out);
    if (direct) mrt_tensor_share(&res, out);
    else if ((st = mrt_tensor_alloc_uninit(&res, MRT_F32, xv.ndim, xv.shape))) goto done;

    const int64_t n = mrt_tensor_numel(&xv);
    const float *a = mrt_f32(&src);
    float *y = mrt_f32(&res);
    /* Chunks of 16 KiB: a multiple of the vector width, so only the last
     * chunk has a tail. */
    const int64_t chunk = 4096, nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t ci = 0; ci < nchunks; ci++) {
        const int64_t i0 = ci * chunk, len = n - i0 < chunk ? n - i0 : chunk;
        db_run(a + i0, y + i0, len, multiplier);
    }
    if (top_db >= 0 && n > 0) {
        /* torchaudio's grouping: the last three dimensions form one group
         * (it reads a 3-d input as channels x freq x time), a tensor of at
         * most two dimensions is one group. */
        int64_t group = 1;
        for (int d = xv.ndim - 1; d >= 0 && d >= xv.ndim - 3; d--) group *= xv.shape[d];
        const int64_t ngroups = n / group;
        for (int64_t g = 0; g < ngroups; g++) {
            float *yg = y + g * group;
            float mx = -INFINITY;
#pragma omp parallel for reduction(max : mx) schedule(static) if (group > 65536)
            for (int64_t i = 0; i < group; i++) mx = yg[i] > mx ? yg[i] : mx;
            const float floor_db = mx - (float)top_db;
#pragma omp parallel for schedule(static) if (group > 65536)
            for (int64_t i = 0; i < group; i++) yg[i] = yg[i] < floor_db ? floor_db : yg[i];
        }
    }
    if (!direct) st = mrt_tensor_copy(out, &res);
done:
    mrt_tensor_release(&res);
    mrt_tensor_release(&src);
    return st;
}
