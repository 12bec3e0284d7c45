/* Convolution as matrix products: im2col + sgemm, and 1x1 convolutions as
 * plain GEMMs on the input.
 *
 * With K = C*KH*KW and P = OH*OW, one image is
 *     forward  Y[O][P]  = W[O][K] . col[K][P]
 *     backward dW[O][K] += dY[O][P] . col[K][P]^T
 *              dcol[K][P] = W[O][K]^T . dY[O][P],  dX = col2im(dcol)
 * where col holds every input value each output position reads.
 *
 * The batch is cut into chunks of `nb` images, and each chunk is one task of
 * an OpenMP loop that does its own im2col, a single-threaded sgemm (OpenBLAS
 * runs single-threaded inside a parallel region) and the scatter back to
 * NCHW, in a column buffer of its thread that stays in cache. Compared with
 * one multi-threaded sgemm per block this has one barrier per call instead
 * of several per block, and tasks are handed out dynamically, so a thread
 * that loses its core on a shared machine delays one chunk, not every
 * barrier. Deep layers have a small P (4x14 = 56 positions at layer4),
 * where a GEMM per image runs far below sgemm's peak, so there a chunk lays
 * several images side by side, col[K][nb*P], and scatters the product.
 *
 * With a single chunk (batch 1, say) the loop runs serially and sgemm uses
 * OpenBLAS's threads instead.
 *
 * dW: every thread accumulates its chunks into its own O x K buffer with
 * sgemm's beta = 1, and the buffers are added in thread order; chunks go to
 * threads round-robin (static), so a given thread count always sums in the
 * same order. */
#include "../cpu/gemm.h"
#include <omp.h>
#include <string.h>
#include "conv2d.h"

/* A chunk gets about this many output columns (nb*P): enough for a
 * single-threaded sgemm near its plateau on the ResNet shapes, small enough
 * that the column buffer stays in the L2/L3 caches and that a batch of 32
 * makes several chunks per thread (measured with bench/conv_layers). */
#define GEMM_COLS_TARGET 512

static int is_direct(mrt_conv_algo algo) { return algo == MRT_CONV_GEMM1X1; }

int64_t mrt_conv_gemm_block(const mrt_conv_geom *g, mrt_conv_algo algo)
{
    (void)algo;
    const int64_t P = g->oh * g->ow > 0 ? g->oh * g->ow : 1;
    int64_t nb = (GEMM_COLS_TARGET + P - 1) / P;
    if (nb >= g->n) return g->n > 0 ? g->n : 1;
    /* the same number of chunks with the images spread evenly over them */
    int64_t chunks = (g->n + nb - 1) / nb;
    return (g->n + chunks - 1) / chunks;
}

static int64_t chunks_of(const mrt_conv_geom *g, int64_t nb) { return (g->n + nb - 1) / nb; }

/* Threads that will run the chunk loop (1 when it runs serially). */
static int loop_threads(const mrt_conv_geom *g, int64_t nb)
{
    int t = omp_get_max_threads();
    int64_t chunks = chunks_of(g, nb);
    return chunks < 2 ? 1 : (chunks < t ? (int)chunks : t);
}

/* Per-thread scratch of the forward: col | tmp. */
static size_t fwd_thread_floats(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb)
{
    const size_t K = (size_t)(g->c * g->kh * g->kw), P = (size_t)(g->oh * g->ow);
    size_t col = (is_direct(algo) && nb == 1) ? 0 : K * (size_t)nb * P;
    size_t tmp = nb > 1 ? (size_t)g->o * (size_t)nb * P : 0;
    return mrt_conv_align16(col) + mrt_conv_align16(tmp);
}

/* Per-thread scratch of the backward: col | dyg | dW accumulator. */
static size_t bwd_thread_floats(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                                int want_dx, int want_dw)
{
    const size_t K = (size_t)(g->c * g->kh * g->kw), P = (size_t)(g->oh * g->ow);
    int need_col = (want_dx || want_dw) && !(is_direct(algo) && nb == 1);
    size_t col = need_col ? K * (size_t)nb * P : 0;
    size_t dyg = nb > 1 ? (size_t)g->o * (size_t)nb * P : 0;
    size_t acc = want_dw ? (size_t)g->o * K : 0;
    return mrt_conv_align16(col) + mrt_conv_align16(dyg) + mrt_conv_align16(acc);
}

size_t mrt_conv_gemm_fwd_scratch(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb)
{
    return (size_t)loop_threads(g, nb) * fwd_thread_floats(g, algo, nb);
}

size_t mrt_conv_gemm_bwd_scratch(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                                 int want_dx, int want_dw)
{
    return (size_t)loop_threads(g, nb) * bwd_thread_floats(g, algo, nb, want_dx, want_dw);
}

/* Range [lo, hi) of output columns ox whose input column ox*sw - pw + j lies
 * inside [0, W): everything outside reads the zero padding. */
static void valid_range(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t j,
                        int64_t *lo, int64_t *hi)
{
    int64_t off = pad - j; /* ox*stride >= off */
    int64_t l = off > 0 ? (off + stride - 1) / stride : 0;
    int64_t last = in - 1 + pad - j; /* ox*stride <= last */
    int64_t h = last >= 0 ? last / stride + 1 : 0;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col[r][b*P + oy*OW + ox] = x[n0+b][c][oy*sh - ph + i][ox*sw - pw + j] (or 0)
 * for r = (c, i, j), ld = bn*P. */
static void im2col(const mrt_conv_geom *g, const float *x, int64_t n0, int64_t bn, float *col)
{
    const int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, ld = bn * P;
    const int64_t HW = g->h * g->w;
    for (int64_t b = 0; b < bn; b++) {
        for (int64_t r = 0; r < K; r++) {
            const int64_t c = r / (g->kh * g->kw), i = (r / g->kw) % g->kh, j = r % g->kw;
            const float *xp = x + ((n0 + b) * g->c + c) * HW;
            float *dst = col + r * ld + b * P;
            int64_t lo, hi;
            valid_range(g->ow, g->w, g->sw, g->pw, j, &lo, &hi);
            for (int64_t oy = 0; oy < g->oh; oy++, dst += g->ow) {
                const int64_t iy = oy * g->sh - g->ph + i;
                if (iy < 0 || iy >= g->h || lo == hi) {
                    memset(dst, 0, sizeof(float) * (size_t)g->ow);
                    continue;
                }
                const float *src = xp + iy * g->w - g->pw + j;
                if (lo > 0) memset(dst, 0, sizeof(float) * (size_t)lo);
                if (g->sw == 1) {
                    memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
                } else {
                    for (int64_t ox = lo; ox < hi; ox++) dst[ox] = src[ox * g->sw];
                }
                if (hi < g->ow) memset(dst + hi, 0, sizeof(float) * (size_t)(g->ow - hi));
            }
        }
    }
}

/* The adjoint of im2col: dx[n0+b][c] = the values of the rows of channel c
 * put back where im2col read them (overwrites the planes). */
static void col2im(const mrt_conv_geom *g, const float *col, int64_t n0, int64_t bn, float *dx)
{
    const int64_t KK = g->kh * g->kw, P = g->oh * g->ow, ld = bn * P;
    const int64_t HW = g->h * g->w;
    for (int64_t b = 0; b < bn; b++) {
        for (int64_t c = 0; c < g->c; c++) {
            float *xp = dx + ((n0 + b) * g->c + c) * HW;
            memset(xp, 0, sizeof(float) * (size_t)HW);
            for (int64_t k = 0; k < KK; k++) {
                const int64_t i = k / g->kw, j = k % g->kw;
                const float *src = col + (c * KK + k) * ld + b * P;
                int64_t lo, hi;
                valid_range(g->ow, g->w, g->sw, g->pw, j, &lo, &hi);
                for (int64_t oy = 0; oy < g->oh; oy++, src += g->ow) {
                    const int64_t iy = oy * g->sh - g->ph + i;
                    if (iy < 0 || iy >= g->h) continue;
                    float *dst = xp + iy * g->w - g->pw + j;
                    if (g->sw == 1) {
                        for (int64_t ox = lo; ox < hi; ox++) dst[ox] += src[ox];
                    } else {
                        for (int64_t ox = lo; ox < hi; ox++) dst[ox * g->sw] += src[ox];
                    }
                }
            }
        }
    }
}

/* y[n0+b][o][:] = tmp[o][b*P : (b+1)*P] + bias[o]. */
static void scatter_out(const mrt_conv_geom *g, const float *tmp, const float *bias, int64_t n0,
                        int64_t bn, float *y)
{
    const int64_t P = g->oh * g->ow, ld = bn * P;
    for (int64_t b = 0; b < bn; b++) {
        for (int64_t o = 0; o < g->o; o++) {
            const float *src = tmp + o * ld + b * P;
            float *dst = y + ((n0 + b) * g->o + o) * P;
            if (bias) {
                const float bv = bias[o];
                for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bv;
            } else {
                memcpy(dst, src, sizeof(float) * (size_t)P);
            }
        }
    }
}

/* dyg[o][b*P : (b+1)*P] = dy[n0+b][o][:]: a chunk's gradient laid out as its
 * GEMMs read it. */
static void gather_dy(const mrt_conv_geom *g, const float *dy, int64_t n0, int64_t bn, float *dyg)
{
    const int64_t P = g->oh * g->ow, ld = bn * P;
    for (int64_t b = 0; b < bn; b++)
        for (int64_t o = 0; o < g->o; o++)
            memcpy(dyg + o * ld + b * P, dy + ((n0 + b) * g->o + o) * P, sizeof(float) * (size_t)P);
}

/* Whether the chunk loop runs threaded: more than one chunk and enough
 * work to pay for waking the other threads. */
static int threaded(const mrt_conv_geom *g, int64_t nb)
{
    return chunks_of(g, nb) > 1 &&
           g->n * g->o * g->oh * g->ow * g->c * g->kh * g->kw > MRT_CONV_PAR_MIN;
}

void mrt_conv_gemm_forward(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                           const float *x, const float *w, const float *bias, float *y,
                           float *scratch)
{
    const int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, chunks = chunks_of(g, nb);
    const int direct = is_direct(algo);
    const size_t per_thread = fwd_thread_floats(g, algo, nb);
    const size_t col_floats = mrt_conv_align16((direct && nb == 1) ? 0 : (size_t)(K * nb * P));
    /* num_threads: the scratch holds loop_threads() per-thread areas */
#pragma omp parallel for schedule(dynamic, 1) num_threads(loop_threads(g, nb)) if (threaded(g, nb))
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t n0 = ch * nb, bn = g->n - n0 < nb ? g->n - n0 : nb, cols = bn * P;
        float *col = scratch + (size_t)omp_get_thread_num() * per_thread;
        float *tmp = col + col_floats;
        const float *b_op;
        if (direct && bn == 1) {
            b_op = x + n0 * g->c * g->h * g->w;
        } else {
            im2col(g, x, n0, bn, col);
            b_op = col;
        }
        if (bn == 1) {
            float *y_n = y + n0 * g->o * P;
            mrt_cpu_gemm(CblasNoTrans, CblasNoTrans, (int)g->o, (int)P, (int)K, 1.0f,
                         w, (int)K, b_op, (int)P, 0.0f, y_n, (int)P);
            if (bias)
                for (int64_t o = 0; o < g->o; o++)
                    for (int64_t p = 0; p < P; p++) y_n[o * P + p] += bias[o];
        } else {
            mrt_cpu_gemm(CblasNoTrans, CblasNoTrans, (int)g->o, (int)cols, (int)K,
                         1.0f, w, (int)K, b_op, (int)cols, 0.0f, tmp, (int)cols);
            scatter_out(g, tmp, bias, n0, bn, y);
        }
    }
}

void mrt_conv_gemm_backward(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                            const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *scratch)
{
    const int64_t K = g->c * g->kh * g->kw, P = g->oh * g->ow, chunks = chunks_of(g, nb);
    const int direct = is_direct(algo);
    const int par = threaded(g, nb);
    const int nthreads = par ? loop_threads(g, nb) : 1;
    const size_t per_thread = bwd_thread_floats(g, algo, nb, dx != NULL, dw != NULL);
    const int need_col = !(direct && nb == 1);
    const size_t col_floats = mrt_conv_align16(need_col ? (size_t)(K * nb * P) : 0);
    const size_t dyg_floats = mrt_conv_align16(nb > 1 ? (size_t)(g->o * nb * P) : 0);

    if (dw) {
        /* Serially, chunks accumulate straight into dw; threaded, each
         * thread into its own buffer, added to dw in thread order below.
         * All buffers are cleared first: the team may get fewer threads
         * than asked for (inside another parallel region, say). */
        if (par)
            for (int t = 0; t < nthreads; t++)
                memset(scratch + (size_t)t * per_thread + col_floats + dyg_floats, 0,
                       sizeof(float) * (size_t)(g->o * K));
#pragma omp parallel num_threads(nthreads) if (par)
        {
            float *col = scratch + (size_t)omp_get_thread_num() * per_thread;
            float *dyg = col + col_floats;
            float *acc = par ? dyg + dyg_floats : dw;
#pragma omp for schedule(static, 1)
            for (int64_t ch = 0; ch < chunks; ch++) {
                const int64_t n0 = ch * nb, bn = g->n - n0 < nb ? g->n - n0 : nb, cols = bn * P;
                const float *dyb = dy + n0 * g->o * P;
                if (bn > 1) {
                    gather_dy(g, dy, n0, bn, dyg);
                    dyb = dyg;
                }
                const float *b_op = x + n0 * g->c * g->h * g->w;
                if (!(direct && bn == 1)) {
                    im2col(g, x, n0, bn, col);
                    b_op = col;
                }
                mrt_cpu_gemm(CblasNoTrans, CblasTrans, (int)g->o, (int)K, (int)cols,
                             1.0f, dyb, (int)cols, b_op, (int)cols, 1.0f, acc, (int)K);
            }
        }
        if (par) {
            const int64_t n = g->o * K;
#pragma omp parallel for schedule(static) if (n * nthreads > MRT_CONV_PAR_MIN)
            for (int64_t i = 0; i < n; i++) {
                float s = 0.0f;
                for (int t = 0; t < nthreads; t++)
                    s += scratch[(size_t)t * per_thread + col_floats + dyg_floats + (size_t)i];
                dw[i] += s;
            }
        }
    }
    if (dx) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (par)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t n0 = ch * nb, bn = g->n - n0 < nb ? g->n - n0 : nb, cols = bn * P;
            float *col = scratch + (size_t)omp_get_thread_num() * per_thread;
            float *dyg = col + col_floats;
            const float *dyb = dy + n0 * g->o * P;
            if (bn > 1) {
                gather_dy(g, dy, n0, bn, dyg);
                dyb = dyg;
            }
            if (direct && bn == 1) {
                /* 1x1, stride 1, no padding: col2im is the identity, so the
                 * product lands in dx directly. */
                mrt_cpu_gemm(CblasTrans, CblasNoTrans, (int)K, (int)P, (int)g->o,
                             1.0f, w, (int)K, dyb, (int)P, 0.0f, dx + n0 * g->c * g->h * g->w,
                             (int)P);
            } else {
                mrt_cpu_gemm(CblasTrans, CblasNoTrans, (int)K, (int)cols,
                             (int)g->o, 1.0f, w, (int)K, dyb, (int)cols, 0.0f, col, (int)cols);
                col2im(g, col, n0, bn, dx);
            }
        }
    }
}
