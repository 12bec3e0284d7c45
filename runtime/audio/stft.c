/* STFT on FFTW3 (single precision, real-to-complex), framed as torch.stft.
 *
 * Plans are made once per FFT size and kept for the life of the process in
 * a small cache: planning is far slower than one transform and FFTW's
 * planner is not thread-safe, so creation is serialized by a mutex, while
 * execution runs on any number of threads through fftwf_execute_dft_r2c on
 * per-thread buffers (FFTW documents the new-array execute functions as
 * thread-safe).
 *
 * Plans use FFTW_ESTIMATE. FFTW_MEASURE was measured on the reference size
 * (2048): about 0.2 s of planning for a transform about 10 % faster, but the
 * plan it picks depends on timings, so two runs of the same script could
 * round differently. The front end must give the same numbers on every run
 * (DESIGN.md, "Reproducible"), and ESTIMATE's plan is a pure function of
 * the size and the CPU. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "spectral_internal.h"

/* ---- plan cache --------------------------------------------------------- */

typedef struct plan_entry {
    int n;
    fftwf_plan plan;
    struct plan_entry *next;
} plan_entry;

static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static plan_entry *plans;

mrt_status mrt_fft_plan_r2c(int n, fftwf_plan *out)
{
    mrt_status st = MRT_OK;
    pthread_mutex_lock(&plan_lock);
    plan_entry *e = plans;
    while (e && e->n != n) e = e->next;
    if (!e) {
        /* Plan on scratch arrays of the kind the callers execute on
         * (fftwf_malloc'd, so equally aligned, and out-of-place). */
        float *in = fftwf_malloc(sizeof(float) * (size_t)n);
        fftwf_complex *cx = fftwf_malloc(sizeof(fftwf_complex) * (size_t)(n / 2 + 1));
        e = malloc(sizeof *e);
        fftwf_plan p = in && cx && e ? fftwf_plan_dft_r2c_1d(n, in, cx, FFTW_ESTIMATE) : NULL;
        fftwf_free(in);
        fftwf_free(cx);
        if (!p) {
            free(e);
            e = NULL;
            st = mrt_fail(MRT_ERR_NOMEM, "stft: could not make an FFT plan of size %d", n);
        } else {
            e->n = n;
            e->plan = p;
            e->next = plans;
            plans = e;
        }
    }
    if (e) *out = e->plan;
    pthread_mutex_unlock(&plan_lock);
    return st;
}

/* ---- settings ------------------------------------------------------------- */

void mrt_stft_config_init(mrt_stft_config *c, int n_fft)
{
    c->n_fft = n_fft;
    c->win_length = n_fft;
    c->hop_length = n_fft / 2 > 0 ? n_fft / 2 : 1;
    c->center = 1;
    c->pad_mode = MRT_PAD_REFLECT;
}

mrt_status mrt_stft_config_check(const mrt_stft_config *c, const char *what)
{
    if (c->n_fft < 1) return mrt_fail(MRT_ERR_ARG, "%s: n_fft must be at least 1, got %d", what, c->n_fft);
    /* FFTW handles any size, but a window of more than 2^20 samples (a
     * minute at 16 kHz) is a unit mistake, and the mel path keeps a tile of
     * 16 spectra per thread (64 MiB at that size). */
    if (c->n_fft > (1 << 20))
        return mrt_fail(MRT_ERR_ARG, "%s: n_fft %d is too large (at most %d)", what, c->n_fft, 1 << 20);
    if (c->win_length < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: win_length must be at least 1, got %d", what, c->win_length);
    if (c->win_length > c->n_fft)
        return mrt_fail(MRT_ERR_ARG, "%s: n_fft (%d) must be at least win_length (%d)", what,
                        c->n_fft, c->win_length);
    if (c->hop_length < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: hop_length must be positive, got %d", what, c->hop_length);
    if (c->pad_mode != MRT_PAD_REFLECT && c->pad_mode != MRT_PAD_CONSTANT)
        return mrt_fail(MRT_ERR_ARG, "%s: unknown pad_mode %d", what, (int)c->pad_mode);
    return MRT_OK;
}

int64_t mrt_stft_frames(int64_t n, int n_fft, int hop_length, int center)
{
    if (n_fft < 1 || hop_length < 1 || n < 0) return 0;
    /* padded - n_fft without forming padded = n + 2 (n_fft / 2), which
     * overflows for n near INT64_MAX. */
    const int64_t short_by = center ? n_fft - 2 * (int64_t)(n_fft / 2) : n_fft;
    if (n < short_by) return 0;
    return 1 + (n - short_by) / hop_length;
}

int64_t mrt_stft_min_length(const mrt_stft_config *c)
{
    if (!c->center) return c->n_fft;
    /* torch pads through F.pad: reflect needs the pad to be smaller than the
     * signal; constant padding only needs enough for one frame. */
    if (c->pad_mode == MRT_PAD_REFLECT) return c->n_fft / 2 + 1;
    int64_t need = c->n_fft - 2 * (int64_t)(c->n_fft / 2);
    return need > 1 ? need : 1;
}

/* ---- framing -------------------------------------------------------------- */

void mrt_stft_window(const mrt_stft_config *c, float *w)
{
    const int wl = (c->n_fft - c->win_length) / 2;
    /* Periodic Hann (torch.hann_window(win_length), periodic=True),
     * evaluated in double and rounded once. */
    for (int j = 0; j < c->n_fft; j++) w[j] = 0.0f;
    for (int i = 0; i < c->win_length; i++)
        w[wl + i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / c->win_length));
}

mrt_status mrt_framer_init(mrt_framer *f, const mrt_stft_config *c, const char *what)
{
    memset(f, 0, sizeof *f);
    mrt_status st = mrt_stft_config_check(c, what);
    if (st) return st;
    f->cfg = *c;
    f->n_freqs = c->n_fft / 2 + 1;
    f->pad = c->center ? c->n_fft / 2 : 0;
    f->wl = (c->n_fft - c->win_length) / 2;
    f->wr = f->wl + c->win_length;
    f->window = fftwf_malloc(sizeof(float) * (size_t)c->n_fft);
    if (!f->window) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for the window", what);
    mrt_stft_window(c, f->window);
    if ((st = mrt_fft_plan_r2c(c->n_fft, &f->plan))) {
        mrt_framer_free(f);
        return st;
    }
    return MRT_OK;
}

void mrt_framer_free(mrt_framer *f)
{
    if (!f) return;
    fftwf_free(f->window);
    f->window = NULL;
    f->plan = NULL; /* owned by the cache */
}

static const char *pad_mode_name(mrt_pad_mode m) { return m == MRT_PAD_REFLECT ? "reflect" : "constant"; }

mrt_status mrt_framer_wave(const mrt_framer *f, const char *what, const mrt_tensor *wave,
                           mrt_tensor *contig, int64_t *batch, int64_t *n, int *batched)
{
    char s[MRT_SHAPE_STRLEN];
    if (!wave->storage) return mrt_fail(MRT_ERR_ARG, "%s: wave has been released", what);
    if (wave->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: wave must be float32, got %s (convert with :float())",
                        what, mrt_dtype_name(wave->dtype));
    if (wave->ndim != 1 && wave->ndim != 2)
        return mrt_fail(MRT_ERR_SHAPE, "%s: wave must be {frames} or {B, frames}, got a %d-d "
                        "tensor (%s)", what, wave->ndim,
                        mrt_shape_str(wave->ndim, wave->shape, s, sizeof s));
    *batched = wave->ndim == 2;
    *batch = *batched ? wave->shape[0] : 1;
    *n = wave->shape[wave->ndim - 1];
    int64_t need = mrt_stft_min_length(&f->cfg);
    if (*n < need) {
        if (!f->cfg.center)
            return mrt_fail(MRT_ERR_SHAPE, "%s: wave has %" PRId64 " samples, fewer than n_fft "
                            "(%d) needed for one frame without center", what, *n, f->cfg.n_fft);
        if (f->cfg.pad_mode == MRT_PAD_REFLECT)
            return mrt_fail(MRT_ERR_SHAPE, "%s: wave has %" PRId64 " samples, too short for "
                            "reflect padding of n_fft // 2 = %d samples on each side (needs at "
                            "least %" PRId64 " samples; pad_mode = \"constant\" accepts shorter "
                            "clips)", what, *n, f->pad, need);
        return mrt_fail(MRT_ERR_SHAPE, "%s: wave has %" PRId64 " samples, too short for one "
                        "frame of n_fft %d with %s padding", what, *n, f->cfg.n_fft,
                        pad_mode_name(f->cfg.pad_mode));
    }
    return mrt_tensor_contiguous(wave, contig);
}

void mrt_framer_frame(const mrt_framer *f, const float *x, int64_t n, int64_t t, float *buf)
{
    const float *w = f->window;
    const int wl = f->wl, wr = f->wr;
    /* Signal index of frame position j is first + j. */
    const int64_t first = t * f->cfg.hop_length - f->pad;
    for (int j = 0; j < wl; j++) buf[j] = 0.0f;
    for (int j = wr; j < f->cfg.n_fft; j++) buf[j] = 0.0f;
    if (first + wl >= 0 && first + wr <= n) {
        /* Interior frame (all but the first and last few): one vectorisable
         * multiply, no padding logic. */
        const float *xs = x + first;
#pragma omp simd
        for (int j = wl; j < wr; j++) buf[j] = w[j] * xs[j];
        return;
    }
    const int reflect = f->cfg.pad_mode == MRT_PAD_REFLECT;
    for (int j = wl; j < wr; j++) {
        int64_t i = first + j;
        float v;
        if (i >= 0 && i < n) v = x[i];
        else if (!reflect) v = 0.0f;
        /* One reflection suffices: the pad is shorter than the signal
         * (checked by mrt_framer_wave), as F.pad requires. */
        else v = x[i < 0 ? -i : 2 * (n - 1) - i];
        buf[j] = w[j] * v;
    }
}

/* ---- complex STFT ------------------------------------------------------ */

mrt_status mrt_stft(const mrt_stft_config *c, const mrt_tensor *wave, mrt_tensor *out)
{
    mrt_framer f;
    mrt_status st = mrt_framer_init(&f, c, "stft");
    if (st) return st;
    mrt_tensor x = {0};
    int64_t batch, n;
    int batched;
    if ((st = mrt_framer_wave(&f, "stft", wave, &x, &batch, &n, &batched))) {
        mrt_framer_free(&f);
        return st;
    }
    const int64_t T = mrt_stft_frames(n, c->n_fft, c->hop_length, c->center);
    const int nf = f.n_freqs;
    int64_t shape[4] = {batch, nf, T, 2};
    int64_t *sh = batched ? shape : shape + 1;
    int nd = batched ? 4 : 3;
    /* Written through a contiguous result; copied when the caller's output
     * is a strided view. */
    mrt_tensor res = {0};
    if ((st = mrt_tensor_prepare_out("stft", out, MRT_F32, nd, sh))) goto done;
    const int direct = mrt_tensor_is_contiguous(out);
    if (direct) mrt_tensor_share(&res, out);
    else if ((st = mrt_tensor_alloc_uninit(&res, MRT_F32, nd, sh))) goto done;
    const float *xs = mrt_f32(&x);
    float *ys = mrt_f32(&res);
    int failed = 0;
    const int64_t items = batch * T;
#pragma omp parallel if (items * (int64_t)c->n_fft > 65536)
    {
        float *in = fftwf_malloc(sizeof(float) * (size_t)c->n_fft);
        fftwf_complex *cx = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
        if (!in || !cx) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!in || !cx) continue;
            int64_t b = it / T, t = it % T;
            mrt_framer_frame(&f, xs + b * n, n, t, in);
            fftwf_execute_dft_r2c(f.plan, in, cx);
            float *y = ys + b * (int64_t)nf * T * 2 + t * 2;
            for (int k = 0; k < nf; k++) {
                y[(int64_t)k * T * 2] = cx[k][0];
                y[(int64_t)k * T * 2 + 1] = cx[k][1];
            }
        }
        fftwf_free(in);
        fftwf_free(cx);
    }
    if (failed) st = mrt_fail(MRT_ERR_NOMEM, "stft: out of memory for the frame buffers");
    else if (!direct) st = mrt_tensor_copy(out, &res);
done:
    mrt_tensor_release(&res);
    mrt_tensor_release(&x);
    mrt_framer_free(&f);
    return st;
}
