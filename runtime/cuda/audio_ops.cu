/* The spectral front end on the device, with the CPU path's semantics
 * (runtime/audio/mel.c, spectral.h): framing with center padding (reflect
 * or constant) and the periodic Hann window, a batched cuFFT R2C, the power
 * |X|^p, the projection onto the same mel filterbank (a cuBLAS GEMM, always
 * fp32), and amplitude_to_db (NaN passes through; top_db per group).
 *
 * Frames are transformed FFT_FRAMES at a time with one plan per setting
 * (frames of all clips in a row; the last group is padded with zero
 * frames), so the plan and the scratch do not depend on the batch size.
 * The framing and the power use the CPU's per-element formulas (a single
 * multiply; re*re + im*im rounded as on the CPU); the FFT and the
 * projection sum in their own order, so results agree with the CPU to
 * float rounding, not bit for bit. */
#include "cuda_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <map>
#include <mutex>
#include <string>

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)blockDim.x * gridDim.x)

/* Frames per cuFFT execution: 512 frames of n_fft 2048 are 4 MiB in and
 * 4 MiB out. */
#define FFT_FRAMES 512

static mrt_status fft_check(const char *op, cufftResult r)
{
    if (r == CUFFT_SUCCESS) return MRT_OK;
    return mrt_fail(r == CUFFT_ALLOC_FAILED ? MRT_ERR_NOMEM : MRT_ERR_DEVICE,
                    "%s: cuFFT error %d", op, (int)r);
}

/* ---- per-setting device state: window, filterbank, plan ---------------------------- */

struct mel_state {
    float *window; /* n_fft */
    size_t window_cap;
    float *fbank;  /* {n_freqs, n_mels}, dense, as mrt_mel_spec_filterbank */
    size_t fbank_cap;
    cufftHandle plan; /* FFT_FRAMES transforms of n_fft */
};

static std::mutex state_lock;
static std::map<std::string, mel_state> states;

/* Everything the window, the filterbank and the plan depend on. */
static std::string state_key(const mrt_mel_config *c)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%d %d %lld %.17g %.17g %d %d %d", c->stft.n_fft,
             c->stft.win_length, (long long)c->sample_rate, c->f_min, c->f_max, c->n_mels,
             (int)c->mel_scale, (int)c->norm);
    return buf;
}

static mrt_status make_state(const mrt_mel_spec *m, mel_state *s)
{
    const char *what = "MelSpectrogram";
    const mrt_mel_config *c = mrt_mel_spec_config(m);
    const int n_fft = c->stft.n_fft, nf = n_fft / 2 + 1;
    mrt_tensor fb = {};
    float *win = (float *)malloc(sizeof(float) * (size_t)n_fft);
    if (!win) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for the window", what);
    mrt_stft_window(&c->stft, win);
    mrt_status st = mrt_mel_spec_filterbank(m, &fb);
    if (!st) st = mrt_cu_scratch(sizeof(float) * (size_t)n_fft, (void **)&s->window, &s->window_cap);
    if (!st) st = mrt_cu_scratch(sizeof(float) * (size_t)nf * (size_t)c->n_mels, (void **)&s->fbank,
                                 &s->fbank_cap);
    if (!st)
        st = mrt_cu_check(what, cudaMemcpyAsync(s->window, win, sizeof(float) * (size_t)n_fft,
                                                cudaMemcpyHostToDevice, mrt_cu_stream()));
    if (!st)
        st = mrt_cu_check(what, cudaMemcpyAsync(s->fbank, fb.storage->data,
                                                sizeof(float) * (size_t)nf * (size_t)c->n_mels,
                                                cudaMemcpyHostToDevice, mrt_cu_stream()));
    /* The sources are pageable host memory, freed below. */
    if (!st) st = mrt_cu_check(what, cudaStreamSynchronize(mrt_cu_stream()));
    if (!st) {
        int n[1] = {n_fft}, inembed[1] = {n_fft}, onembed[1] = {nf};
        st = fft_check(what, cufftPlanMany(&s->plan, 1, n, inembed, 1, n_fft, onembed, 1, nf,
                                           CUFFT_R2C, FFT_FRAMES));
        if (!st) st = fft_check(what, cufftSetStream(s->plan, mrt_cu_stream()));
    }
    free(win);
    mrt_tensor_release(&fb);
    return st;
}

static mrt_status get_state(const mrt_mel_spec *m, mel_state *out)
{
    std::lock_guard<std::mutex> g(state_lock);
    std::string key = state_key(mrt_mel_spec_config(m));
    auto it = states.find(key);
    if (it == states.end()) {
        mel_state s = {};
        mrt_status st = make_state(m, &s);
        if (st) {
            mrt_cu_scratch_free(s.window, s.window_cap);
            mrt_cu_scratch_free(s.fbank, s.fbank_cap);
            return st;
        }
        it = states.insert({key, s}).first;
    }
    *out = it->second;
    return MRT_OK;
}

/* ---- kernels ------------------------------------------------------------------------- */

struct frame_geom {
    int64_t total; /* frames of all clips */
    int64_t T;     /* frames per clip */
    int64_t n;     /* samples per clip */
    int n_fft, hop, pad, wl, wr, reflect;
};

/* Windowed frames f0 .. f0 + FFT_FRAMES - 1 (of all clips in a row) into
 * buf, as mrt_framer_frame writes one; frames past the end are zero. */
__global__ void k_frames(frame_geom g, int64_t f0, const float *x, const float *win, float *buf)
{
    GRID_STRIDE(i, (int64_t)FFT_FRAMES * g.n_fft)
    {
        const int64_t f = f0 + i / g.n_fft;
        const int j = (int)(i % g.n_fft);
        float v = 0.0f;
        if (f < g.total && j >= g.wl && j < g.wr) {
            const int64_t b = f / g.T, t = f % g.T;
            const int64_t s = t * g.hop - g.pad + j;
            const float *xb = x + b * g.n;
            float a;
            if (s >= 0 && s < g.n) a = xb[s];
            else if (!g.reflect) a = 0.0f;
            else a = xb[s < 0 ? -s : 2 * (g.n - 1) - s];
            v = __fmul_rn(win[j], a);
        }
        buf[i] = v;
    }
}

/* |X|^p of `rows` spectra into rows f0.. of P ({frames, n_freqs}). */
__global__ void k_power(int64_t rows, int nf, int mode, float half, const cufftComplex *cx,
                        float *P)
{
    GRID_STRIDE(i, rows * nf)
    {
        const cufftComplex z = cx[i];
        float p = __fadd_rn(__fmul_rn(z.x, z.x), __fmul_rn(z.y, z.y));
        if (mode == 1) p = sqrtf(p);
        else if (mode == 2) p = powf(p, half);
        P[i] = p;
    }
}

/* y = multiplier * log10(max(x, 1e-10)); NaN passes through. */
__global__ void k_db(int64_t n, float mul, const float *x, float *y)
{
    GRID_STRIDE(i, n)
    {
        const float v = x[i];
        y[i] = __fmul_rn(mul, log10f(v > 1e-10f || v != v ? v : 1e-10f));
    }
}

/* floor[g] = max of group g (NaN skipped, as the CPU's loop) - top_db. One
 * thread per group: top_db is a rare setting, kept simple. */
__global__ void k_group_floor(int64_t ngroups, int64_t group, float top_db, const float *y,
                              float *floor_db)
{
    GRID_STRIDE(g, ngroups)
    {
        const float *yg = y + g * group;
        float mx = -INFINITY;
        for (int64_t i = 0; i < group; i++) mx = yg[i] > mx ? yg[i] : mx;
        floor_db[g] = mx - top_db;
    }
}

__global__ void k_clamp_floor(int64_t n, int64_t group, const float *floor_db, float *y)
{
    GRID_STRIDE(i, n)
    {
        const float f = floor_db[i / group];
        y[i] = y[i] < f ? f : y[i];
    }
}

/* ---- the backend functions -------------------------------------------------------------- */

/* A contiguous result: `out` (allocated by the op) itself when it is
 * contiguous, else a new device tensor copied into `out` by finish_out. */
static mrt_status begin_out(mrt_tensor *out, int nd, const int64_t *sh, mrt_tensor *res)
{
    if (mrt_tensor_is_contiguous(out)) {
        mrt_tensor_share(res, out);
        return MRT_OK;
    }
    return mrt_tensor_alloc_on(res, MRT_F32, nd, sh, MRT_CUDA);
}

static mrt_status finish_out(mrt_status st, mrt_tensor *out, mrt_tensor *res)
{
    if (!st && res->storage != out->storage) st = mrt_cu_copy(out, res);
    mrt_tensor_release(res);
    return st;
}

extern "C" mrt_status mrt_cu_mel_forward(const mrt_mel_spec *m, const mrt_tensor *wave,
                                         mrt_tensor *out)
{
    const char *what = "MelSpectrogram";
    mrt_status st;
    const mrt_mel_config *c = mrt_mel_spec_config(m);
    const int batched = wave->ndim == 2;
    const int64_t batch = batched ? wave->shape[0] : 1, n = wave->shape[wave->ndim - 1];
    const int64_t T = mrt_stft_frames(n, c->stft.n_fft, c->stft.hop_length, c->stft.center);
    const int nf = c->stft.n_fft / 2 + 1, nm = c->n_mels;
    int64_t shape[3] = {batch, nm, T};
    const int64_t *sh = batched ? shape : shape + 1;
    const int nd = batched ? 3 : 2;
    mrt_tensor res = {};
    if ((st = begin_out(out, nd, sh, &res))) return st;
    const int64_t total = batch * T;
    if (total == 0) return finish_out(MRT_OK, out, &res);

    mel_state s;
    if ((st = get_state(m, &s))) return finish_out(st, out, &res);
    frame_geom g;
    g.total = total;
    g.T = T;
    g.n = n;
    g.n_fft = c->stft.n_fft;
    g.hop = c->stft.hop_length;
    g.pad = c->stft.center ? c->stft.n_fft / 2 : 0;
    g.wl = (c->stft.n_fft - c->stft.win_length) / 2;
    g.wr = g.wl + c->stft.win_length;
    g.reflect = c->stft.pad_mode == MRT_PAD_REFLECT;
    const int mode = c->power == 2.0 ? 0 : c->power == 1.0 ? 1 : 2;
    const float half = (float)(c->power / 2.0);

    float *frames = NULL, *P = NULL;
    cufftComplex *cx = NULL;
    size_t cap_f = 0, cap_c = 0, cap_p = 0;
    st = mrt_cu_scratch(sizeof(float) * (size_t)FFT_FRAMES * (size_t)g.n_fft, (void **)&frames,
                        &cap_f);
    if (!st) st = mrt_cu_scratch(sizeof(cufftComplex) * (size_t)FFT_FRAMES * (size_t)nf,
                                 (void **)&cx, &cap_c);
    if (!st) st = mrt_cu_scratch(sizeof(float) * (size_t)total * (size_t)nf, (void **)&P, &cap_p);
    const float *x = mrt_cu_f32(wave);
    for (int64_t f0 = 0; !st && f0 < total; f0 += FFT_FRAMES) {
        const int64_t rows = total - f0 < FFT_FRAMES ? total - f0 : FFT_FRAMES;
        MRT_LAUNCH(k_frames, mrt_cu_blocks((int64_t)FFT_FRAMES * g.n_fft), MRT_CU_THREADS,
                   mrt_cu_stream(), g, f0, x, s.window, frames);
        st = mrt_cu_launched(what);
        if (!st) st = fft_check(what, cufftExecR2C(s.plan, frames, cx));
        if (!st) {
            MRT_LAUNCH(k_power, mrt_cu_blocks(rows * nf), MRT_CU_THREADS, mrt_cu_stream(), rows,
                       nf, mode, half, cx, P + f0 * nf);
            st = mrt_cu_launched(what);
        }
    }
    /* Clip b: y_b {n_mels, T} = fbank^T {n_mels, n_freqs} x P_b^T {n_freqs, T}. */
    if (!st)
        st = mrt_cu_gemm_fp32(what, 1, 1, nm, T, nf, 1.0f, s.fbank, nm, 0, P, nf, T * nf, 0.0f,
                              mrt_cu_f32(&res), T, (int64_t)nm * T, batch);
    mrt_cu_scratch_free(frames, cap_f);
    mrt_cu_scratch_free(cx, cap_c);
    mrt_cu_scratch_free(P, cap_p);
    return finish_out(st, out, &res);
}

extern "C" mrt_status mrt_cu_amplitude_to_db(const mrt_tensor *x, double multiplier,
                                             double top_db, mrt_tensor *out)
{
    const char *what = "amplitude_to_db";
    mrt_status st;
    /* Copy the header first: `out` may be `x` (in place). */
    mrt_tensor xv = *x, src = {}, res = {};
    if ((st = mrt_tensor_contiguous(&xv, &src))) return st;
    if ((st = begin_out(out, xv.ndim, xv.shape, &res))) {
        mrt_tensor_release(&src);
        return st;
    }
    const int64_t n = mrt_tensor_numel(&xv);
    float *y = mrt_cu_f32(&res);
    if (n > 0) {
        MRT_LAUNCH(k_db, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, (float)multiplier,
                   mrt_cu_f32(&src), y);
        st = mrt_cu_launched(what);
    }
    if (!st && top_db >= 0 && n > 0) {
        /* torchaudio's grouping, as the CPU path: the last three dimensions. */
        int64_t group = 1;
        for (int d = xv.ndim - 1; d >= 0 && d >= xv.ndim - 3; d--) group *= xv.shape[d];
        const int64_t ngroups = n / group;
        float *floor_db = NULL;
        size_t cap = 0;
        if (!(st = mrt_cu_scratch(sizeof(float) * (size_t)ngroups, (void **)&floor_db, &cap))) {
            MRT_LAUNCH(k_group_floor, mrt_cu_blocks(ngroups), MRT_CU_THREADS, mrt_cu_stream(),
                       ngroups, group, (float)top_db, y, floor_db);
            MRT_LAUNCH(k_clamp_floor, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, group,
                       floor_db, y);
            st = mrt_cu_launched(what);
            mrt_cu_scratch_free(floor_db, cap);
        }
    }
    mrt_tensor_release(&src);
    return finish_out(st, out, &res);
}

void mrt_cu_register_audio_ops(mrt_backend *b)
{
    b->audio.mel_forward = mrt_cu_mel_forward;
    b->audio.amplitude_to_db = mrt_cu_amplitude_to_db;
}
