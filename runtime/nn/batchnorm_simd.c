/* The contiguous row loops of batch normalisation in portable C, AVX2 and
 * AVX-512 (see batchnorm_simd.h for why they agree bit for bit). */
#include <string.h>
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

/* ---- AVX2: eight ymm accumulators of 4 doubles per sum -------------------------- */

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static void shifted_sums_avx2(const float *p, int64_t len, double k, double *s1, double *s2)
{
    __m256d a[L / 4], b[L / 4];
    for (int v = 0; v < L / 4; v++) a[v] = b[v] = _mm256_setzero_pd();
    const __m256d kk = _mm256_set1_pd(k);
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int v = 0; v < L / 4; v++) {
            const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p + i + 4 * v)), kk);
            a[v] = _mm256_add_pd(a[v], d);
            b[v] = _mm256_add_pd(b[v], _mm256_mul_pd(d, d));
        }
    double la[L], lb[L];
    for (int v = 0; v < L / 4; v++) _mm256_storeu_pd(la + 4 * v, a[v]), _mm256_storeu_pd(lb + 4 * v, b[v]);
    tail_sums(p, i, len, k, la, lb);
    fold(la, lb, s1, s2);
}

AVX2 static void grad_sums_avx2(const float *x, const float *g, int64_t len, double mean, double *s1,
                                double *s2)
{
    __m256d a[L / 4], b[L / 4];
    for (int v = 0; v < L / 4; v++) a[v] = b[v] = _mm256_setzero_pd();
    const __m256d mm = _mm256_set1_pd(mean);
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int v = 0; v < L / 4; v++) {
            const __m256d gv = _mm256_cvtps_pd(_mm_loadu_ps(g + i + 4 * v));
            const __m256d xv = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * v)), mm);
            a[v] = _mm256_add_pd(a[v], gv);
            b[v] = _mm256_add_pd(b[v], _mm256_mul_pd(gv, xv));
        }
    double la[L], lb[L];
    for (int v = 0; v < L / 4; v++) _mm256_storeu_pd(la + 4 * v, a[v]), _mm256_storeu_pd(lb + 4 * v, b[v]);
    tail_grad(x, g, i, len, mean, la, lb);
    fold(la, lb, s1, s2);
}

AVX2 static void normalize_avx2(const float *x, float *y, int64_t len, float mh, float ml, float a, float b)
{
    NORMALIZE_BODY
}

AVX2 static void grad_input_avx2(const float *x, const float *g, float *d, int64_t len, float m, float g0,
                                 float k, float a)
{
    GRAD_INPUT_BODY
}

/* ---- AVX-512 ------------------------------------------------------------------- */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static void shifted_sums_avx512(const float *p, int64_t len, double k, double *s1, double *s2)
{
    __m512d a[L / 8], b[L / 8];
    for (int v = 0; v < L / 8; v++) a[v] = b[v] = _mm512_setzero_pd();
    const __m512d kk = _mm512_set1_pd(k);
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int v = 0; v < L / 8; v++) {
            const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(p + i + 8 * v)), kk);
            a[v] = _mm512_add_pd(a[v], d);
            b[v] = _mm512_add_pd(b[v], _mm512_mul_pd(d, d));
        }
    double la[L], lb[L];
    for (int v = 0; v < L / 8; v++) _mm512_storeu_pd(la + 8 * v, a[v]), _mm512_storeu_pd(lb + 8 * v, b[v]);
    tail_sums(p, i, len, k, la, lb);
    fold(la, lb, s1, s2);
}

AVX512 static void grad_sums_avx512(const float *x, const float *g, int64_t len, double mean, double *s1,
                                    double *s2)
{
    __m512d a[L / 8], b[L / 8];
    for (int v = 0; v < L / 8; v++) a[v] = b[v] = _mm512_setzero_pd();
    const __m512d mm = _mm512_set1_pd(mean);
    int64_t i = 0;
    for (; i + L <= len; i += L)
        for (int v = 0; v < L / 8; v++) {
            const __m512d gv = _mm512_cvtps_pd(_mm256_loadu_ps(g + i + 8 * v));
            const __m512d xv = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * v)), mm);
            a[v] = _mm512_add_pd(a[v], gv);
            b[v] = _mm512_add_pd(b[v], _mm512_mul_pd(gv, xv));
        }
    double la[L], lb[L];
    for (int v = 0; v < L / 8; v++) _mm512_storeu_pd(la + 8 * v, a[v]), _mm512_storeu_pd(lb + 8 * v, b[v]);
    tail_grad(x, g, i, len, mean, la, lb);
    fold(la, lb, s1, s2);
}

AVX512 static void normalize_avx512(const float *x, float *y, int64_t len, float mh, float ml, float a,
                                    float b)
{
    NORMALIZE_BODY
}

AVX512 static void grad_input_avx512(const float *x, const float *g, float *d, int64_t len, float m,
                                     float g0, float k, float a)
{
    GRAD_INPUT_BODY
}

static const mrt_bn_kernels avx2 = {"avx2", shifted_sums_avx2, grad_sums_avx2, normalize_avx2,
                                    grad_input_avx2};
static const mrt_bn_kernels avx512 = {"avx512f", shifted_sums_avx512, grad_sums_avx512, normalize_avx512,
                                      grad_input_avx512};
#endif

static const mrt_bn_kernels portable = {"portable", shifted_sums_c, grad_sums_c, normalize_c, grad_input_c};

const mrt_bn_kernels *mrt_bn_kernels_pick(const char *name)
{
    if (name && strcmp(name, "portable") == 0) return &portable;
#ifndef HAVE_X86_VERSIONS
    return name ? NULL : &portable;
#else
    const unsigned f = mrt_cpu_features();
    const mrt_bn_kernels *best = (f & MRT_CPU_AVX512F) ? &avx512 : (f & MRT_CPU_AVX2) ? &avx2 : &portable;
    if (!name) return best;
    if (strcmp(name, "avx2") == 0) return (f & MRT_CPU_AVX2) ? &avx2 : NULL;
    if (strcmp(name, "avx512f") == 0) return (f & MRT_CPU_AVX512F) ? &avx512 : NULL;
    return NULL;
#endif
}
