/* The contiguous row loops of batch normalisation in portable C, AVX2 and
 * AVX-512 (see batchnorm_simd.h for why they agree bit for bit). */
#include "../cpu/cpu_features.h"
#include "batchnorm_simd.h"

#define L BN_SUM_LANES

static void fold(const double *a, const double *b, double *s1, double *s2)
{
    for (int j = 0; j < L; j++) *s1 += a[j], *s2 += b[j];
}

/* ---- portable ---------------------------------------------------------------- */

/* The tail of a row goes to lane 0, in every version. */
static void tail_sums(const float *p, int64_t i, int64_t len, double k, double *a, double *b)
{
    for (; i < len; i++) {
        const double d = (double)p[i] - k;
        a[0] += d;
        b[0] += d * d;
    }
}

static void tail_grad(const float *x, const float *g, int64_t i, int64_t len, double mean, double *a,
                      double *b)
{
    for (; i < len; i++) {
        const double gv = (double)g[i];
        a[0] += gv;
        b[0] += gv * ((double)x[i] - mean);
    }
}


static void shifted_sums_c(const float *p, int64_t len, double k, double *s1, double *s2)
{
    double a[L] = {0}, b[L] = {0};
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int j = 0; j < L; j++) {
            const double d = (double)p[i + j] - k;
            a[j] += d;
            b[j] += d * d;
        }
    tail_sums(p, i, len, k, a, b);
    fold(a, b, s1, s2);
}

static void grad_sums_c(const float *x, const float *g, int64_t len, double mean, double *s1, double *s2)
{
    double a[L] = {0}, b[L] = {0};
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int j = 0; j < L; j++) {
            const double gv = (double)g[i + j];
            a[j] += gv;
            b[j] += gv * ((double)x[i + j] - mean);
        }
    tail_grad(x, g, i, len, mean, a, b);
    fold(a, b, s1, s2);
}

/* The elementwise loops carry `omp simd`: outputs may alias inputs element
 * for element, which stops the compiler vectorising them on its own. */
#define NORMALIZE_BODY                                                      \
    _Pragma("omp simd") for (int64_t i = 0; i < len; i++) y[i] = ((x[i] - mh) - ml) * a + b;
#define GRAD_INPUT_BODY                                                     \
    _Pragma("omp simd") for (int64_t i = 0; i < len; i++) d[i] = (g[i] - g0 - (x[i] - m) * k) * a;

static void normalize_c(const float *x, float *y, int64_t len, float mh, float ml, float a, float b)
{
    NORMALIZE_BODY
}

static void grad_input_c(const float *x, const float *g, float *d, int64_t len, float m, float g0, float k,
                         float a)
{
    GRAD_INPUT_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_VERSIONS 1

/* The four loops for one vector ISA: the sums in L / W accumulators of W
 * doubles each, fed W floats converted to double (LOAD_PD); the elementwise
 * loops as the portable ones, compiled for TARGET. */
#define ROW_VERSIONS(sfx, TARGET, VD, W, ZERO, SET1, SUB, ADD, MUL, LOAD_PD, STORE)                        \
    TARGET static void shifted_sums_##sfx(const float *p, int64_t len, double k, double *s1, double *s2)      \
    {                                                                                                         \
        VD a[L / W], b[L / W];                                                                                \
        for (int v = 0; v < L / W; v++) a[v] = b[v] = ZERO();                                                 \
        const VD kk = SET1(k);                                                                                \
        int64_t i = 0;                                                                                        \
        for (; i + L <= len; i += L)                                                                          \
            for (int v = 0; v < L / W; v++) {                                                                 \
                const VD d = SUB(LOAD_PD(p + i + W * v), kk);                                                 \
                a[v] = ADD(a[v], d);                                                                          \
                b[v] = ADD(b[v], MUL(d, d));                                                                  \
            }                                                                                                 \
        double la[L], lb[L];                                                                                  \
        for (int v = 0; v < L / W; v++) STORE(la + W * v, a[v]), STORE(lb + W * v, b[v]);                     \
        tail_sums(p, i, len, k, la, lb);                                                                      \
        fold(la, lb, s1, s2);                                                                                 \
    }                                                                                                         \
    TARGET static void grad_sums_##sfx(const float *x, const float *g, int64_t len, double mean, double *s1,  \
                                       double *s2)                                                            \
    {                                                                                                         \
        VD a[L / W], b[L / W];                                                                                \
        for (int v = 0; v < L / W; v++) a[v] = b[v] = ZERO();                                                 \
        const VD mm = SET1(mean);                                                                             \
        int64_t i = 0;                                                                                        \
        for (; i + L <= len; i += L)                                                                          \
            for (int v = 0; v < L / W; v++) {                                                                 \
                const VD gv = LOAD_PD(g + i + W * v);                                                         \
                const VD xv = SUB(LOAD_PD(x + i + W * v), mm);                                                \
                a[v] = ADD(a[v], gv);                                                                         \
                b[v] = ADD(b[v], MUL(gv, xv));                                                                \
            }                                                                                                 \
        double la[L], lb[L];                                                                                  \
        for (int v = 0; v < L / W; v++) STORE(la + W * v, a[v]), STORE(lb + W * v, b[v]);                     \
        tail_grad(x, g, i, len, mean, la, lb);                                                                \
        fold(la, lb, s1, s2);                                                                                 \
    }                                                                                                         \
    TARGET static void normalize_##sfx(const float *x, float *y, int64_t len, float mh, float ml, float a,    \
                                       float b)                                                               \
    {                                                                                                         \
        NORMALIZE_BODY                                                                                        \
    }                                                                                                         \
    TARGET static void grad_input_##sfx(const float *x, const float *g, float *d, int64_t len, float m,       \
                                        float g0, float k, float a)                                           \
    {                                                                                                         \
        GRAD_INPUT_BODY                                                                                       \
    }

/* AVX2: eight ymm accumulators of 4 doubles per sum; AVX-512: four zmm of 8. */
#define AVX2_LOAD_PD(q) _mm256_cvtps_pd(_mm_loadu_ps(q))
#define AVX512_LOAD_PD(q) _mm512_cvtps_pd(_mm256_loadu_ps(q))
ROW_VERSIONS(avx2, __attribute__((target("avx2,fma"))), __m256d, 4, _mm256_setzero_pd, _mm256_set1_pd,
              _mm256_sub_pd, _mm256_add_pd, _mm256_mul_pd, AVX2_LOAD_PD, _mm256_storeu_pd)
ROW_VERSIONS(avx512, __attribute__((target("avx512f"))), __m512d, 8, _mm512_setzero_pd, _mm512_set1_pd,
              _mm512_sub_pd, _mm512_add_pd, _mm512_mul_pd, AVX512_LOAD_PD, _mm512_storeu_pd)

static const mrt_bn_kernels avx2 = {"avx2", shifted_sums_avx2, grad_sums_avx2, normalize_avx2,
                                    grad_input_avx2};
static const mrt_bn_kernels avx512 = {"avx512f", shifted_sums_avx512, grad_sums_avx512, normalize_avx512,
                                      grad_input_avx512};
#endif

static const mrt_bn_kernels portable = {"portable", shifted_sums_c, grad_sums_c, normalize_c, grad_input_c};

const mrt_bn_kernels *mrt_bn_kernels_pick(const char *name)
{
#ifdef HAVE_X86_VERSIONS
    return mrt_cpu_pick(name, &portable, &avx2, &avx512);
#else
    return mrt_cpu_pick(name, &portable, NULL, NULL);
#endif
}
