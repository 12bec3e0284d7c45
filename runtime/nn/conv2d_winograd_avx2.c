/* AVX2 + FMA versions of the Winograd F(4x4, 3x3) and F(2x2, 3x3) tile
 * transforms, 8 tiles a call: the shuffles that (de)interleave 8 tiles'
 * rows; the arithmetic is conv2d_winograd_simd.h's.
 *
 * The file is compiled for the baseline ISA; only these functions carry the
 * avx2/fma target attribute, and conv2d_winograd.c calls them only when
 * mrt_cpu_features() reports AVX2 and FMA. */
#include <string.h>
#include "../cpu/cpu_features.h"
#include "conv2d.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* p_r[l] = row[4l + r] for r = 0..3, l = 0..7. */
AVX2 static inline void deinterleave4(const float *row, __m256 *p0, __m256 *p1, __m256 *p2,
                                      __m256 *p3)
{
    __m256 a = _mm256_loadu_ps(row), b = _mm256_loadu_ps(row + 8);
    __m256 c = _mm256_loadu_ps(row + 16), d = _mm256_loadu_ps(row + 24);
    /* tiles (0|4), (1|5), (2|6), (3|7) in the two 128-bit halves */
    __m256 t04 = _mm256_permute2f128_ps(a, c, 0x20), t15 = _mm256_permute2f128_ps(a, c, 0x31);
    __m256 t26 = _mm256_permute2f128_ps(b, d, 0x20), t37 = _mm256_permute2f128_ps(b, d, 0x31);
    /* then the 4x4 transpose inside each half */
    __m256 u0 = _mm256_unpacklo_ps(t04, t15), u1 = _mm256_unpackhi_ps(t04, t15);
    __m256 u2 = _mm256_unpacklo_ps(t26, t37), u3 = _mm256_unpackhi_ps(t26, t37);
    *p0 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(1, 0, 1, 0));
    *p1 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(3, 2, 3, 2));
    *p2 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(1, 0, 1, 0));
    *p3 = _mm256_shuffle_ps(u1, u3, _MM_SHUFFLE(3, 2, 3, 2));
}

/* Phases 0 and 1 only (patch columns 4 and 5 when called 4 floats on). */
AVX2 static inline void deinterleave2(const float *row, __m256 *p0, __m256 *p1)
{
    __m256 a = _mm256_loadu_ps(row), b = _mm256_loadu_ps(row + 8);
    __m256 c = _mm256_loadu_ps(row + 16), d = _mm256_loadu_ps(row + 24);
    __m256 t04 = _mm256_permute2f128_ps(a, c, 0x20), t15 = _mm256_permute2f128_ps(a, c, 0x31);
    __m256 t26 = _mm256_permute2f128_ps(b, d, 0x20), t37 = _mm256_permute2f128_ps(b, d, 0x31);
    __m256 u0 = _mm256_unpacklo_ps(t04, t15), u2 = _mm256_unpacklo_ps(t26, t37);
    *p0 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(1, 0, 1, 0));
    *p1 = _mm256_shuffle_ps(u0, u2, _MM_SHUFFLE(3, 2, 3, 2));
}

/* The inverse: out[4l + r] = y_r[l], 32 floats. */
AVX2 static inline void interleave4(__m256 y0, __m256 y1, __m256 y2, __m256 y3, float *out)
{
    __m256 t0 = _mm256_unpacklo_ps(y0, y1), t1 = _mm256_unpackhi_ps(y0, y1);
    __m256 t2 = _mm256_unpacklo_ps(y2, y3), t3 = _mm256_unpackhi_ps(y2, y3);
    __m256 u04 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u15 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u26 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u37 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(u04, u15, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(u26, u37, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(u04, u15, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(u26, u37, 0x31));
}

/* p_r[l] = row[2l + r] for r = 0, 1, l = 0..7. */
AVX2 static inline void deinterleave2x(const float *row, __m256 *p0, __m256 *p1)
{
    __m256 a = _mm256_loadu_ps(row), b = _mm256_loadu_ps(row + 8);
    /* (a0 a2 b0 b2 | a4 a6 b4 b6), then the 64-bit pairs put in order */
    __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *p0 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
    *p1 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The inverse: out[2l + r] = y_r[l], 16 floats. */
AVX2 static inline void interleave2x(__m256 y0, __m256 y1, float *out)
{
    __m256 lo = _mm256_unpacklo_ps(y0, y1), hi = _mm256_unpackhi_ps(y0, y1);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

#define VEC __m256
#define LANES 8
#define SIMD AVX2
#define SIMD_NAME "avx2"
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VFMADD _mm256_fmadd_ps
#define VFNMADD _mm256_fnmadd_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VLOADU _mm256_loadu_ps
#define VSTOREU _mm256_storeu_ps
#include "conv2d_winograd_simd.h"

const mrt_wino_kernels *mrt_wino_kernels_avx2(int m)
{
    if (!(mrt_cpu_features() & MRT_CPU_AVX2)) return NULL;
    return m == 2 ? &simd_f2 : &simd_f4;
}

#else

const mrt_wino_kernels *mrt_wino_kernels_avx2(int m)
{
    (void)m;
    return NULL;
}

#endif
