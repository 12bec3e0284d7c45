/* Batch normalisation of N x C rows (see batchnorm_rows.h).
 *
 * The sums take the channels in blocks of CHANNEL_BLOCK: a block's running
 * sums stay in registers while the rows stream past, and blocks are the
 * parallel items. The elementwise passes split the rows. Loops carry `omp
 * simd` because outputs may alias inputs element for element. */
#include "batchnorm_rows.h"

#define CHANNEL_BLOCK 32

static inline float *row_at(const mrt_tensor *t, int64_t n)
{
    return mrt_f32(t) + n * t->stride[0];
}

int mrt_bn_rows_layout(const mrt_tensor *const *ops, int nops)
{
    for (int k = 0; k < nops; k++) {
        const mrt_tensor *t = ops[k];
        if (t->shape[2] != 1 || t->shape[3] != 1) return 0;
        if (t->shape[1] > 1 && t->stride[1] != 1) return 0;
    }
    return 1;
}

/* Whether a pass over N x C elements in `items` parallel items is worth a
 * parallel region. */
static inline int worth_threads(int64_t N, int64_t C, int64_t items)
{
    return N * C >= BN_PARALLEL_MIN && items > 1;
}

void mrt_bn_rows_shifted_sums(const mrt_tensor *x, double *s1, double *s2)
{
    const int64_t N = x->shape[0], C = x->shape[1];
    const int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static) if (worth_threads(N, C, blocks))
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * CHANNEL_BLOCK;
        const int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;
        double k[CHANNEL_BLOCK], a[CHANNEL_BLOCK] = {0}, b[CHANNEL_BLOCK] = {0};
        const float *first = row_at(x, 0) + c0;
        for (int64_t j = 0; j < len; j++) k[j] = (double)first[j];
        for (int64_t n = 0; n < N; n++) {
            const float *r = row_at(x, n) + c0;
#pragma omp simd
            for (int64_t j = 0; j < len; j++) {
                const double d = (double)r[j] - k[j];
                a[j] += d;
                b[j] += d * d;
            }
        }
        for (int64_t j = 0; j < len; j++) s1[c0 + j] = a[j], s2[c0 + j] = b[j];
    }
}

void mrt_bn_rows_normalize(const mrt_tensor *x, const mrt_tensor *y, const float *a,
                           const float *b, const float *mh, const float *ml)
{
    const int64_t N = x->shape[0], C = x->shape[1];
#pragma omp parallel for schedule(static) if (worth_threads(N, C, N))
    for (int64_t n = 0; n < N; n++) {
        const float *xr = row_at(x, n);
        float *yr = row_at(y, n);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = ((xr[c] - mh[c]) - ml[c]) * a[c] + b[c];
    }
}

void mrt_bn_rows_grad_sums(const mrt_tensor *x, const mrt_tensor *dy, const double *mean,
                           double *s1, double *s2)
{
    const int64_t N = x->shape[0], C = x->shape[1];
    const int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static) if (worth_threads(N, C, blocks))
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * CHANNEL_BLOCK;
        const int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;
        double a[CHANNEL_BLOCK] = {0}, b[CHANNEL_BLOCK] = {0};
        const double *m = mean + c0;
        for (int64_t n = 0; n < N; n++) {
            const float *xr = row_at(x, n) + c0, *gr = row_at(dy, n) + c0;
#pragma omp simd
            for (int64_t j = 0; j < len; j++) {
                const double g = (double)gr[j];
                a[j] += g;
                b[j] += g * ((double)xr[j] - m[j]);
            }
        }
        for (int64_t j = 0; j < len; j++) s1[c0 + j] = a[j], s2[c0 + j] = b[j];
    }
}

void mrt_bn_rows_grad_input(const mrt_tensor *x, const mrt_tensor *dy, const mrt_tensor *dx,
                            const float *m, const float *g0, const float *k, const float *a)
{
    const int64_t N = dy->shape[0], C = dy->shape[1];
#pragma omp parallel for schedule(static) if (worth_threads(N, C, N))
    for (int64_t n = 0; n < N; n++) {
        const float *gr = row_at(dy, n);
        float *dr = row_at(dx, n);
        if (g0) {
            const float *xr = row_at(x, n);
#pragma omp simd
            for (int64_t c = 0; c < C; c++) dr[c] = (gr[c] - g0[c] - (xr[c] - m[c]) * k[c]) * a[c];
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) dr[c] = gr[c] * a[c];
        }
    }
}
