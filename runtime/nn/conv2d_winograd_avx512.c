/* AVX-512 versions of the Winograd F(4x4, 3x3) and F(2x2, 3x3) tile
 * transforms, 16 tiles a call: the shuffles that (de)interleave 16 tiles'
 * rows; the arithmetic is conv2d_winograd_simd.h's, so they give the AVX2
 * versions' bits with twice the tiles per instruction.
 *
 * Lane-crossing shuffles are two-source permutes (vpermt2ps), which take
 * any 16 of 32 floats: a row of 64 is de-interleaved with two per phase and
 * a blend of the halves.
 *
 * The file is compiled for the baseline ISA; only these functions carry the
 * avx512f target attribute, and conv2d_winograd.c calls them only when
 * mrt_cpu_features() reports AVX-512F (with the OS saving ZMM state). */
#include <stdint.h>
#include <string.h>
#include "../cpu/cpu_features.h"
#include "conv2d.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

/* Permute indices into the 32 floats (a | b) of a two-source permute:
 *   PHASE[r][l] = 4 (l mod 8) + r        (phase r of 8 tiles, twice)
 *   PAIR[h][k]  = 16 (k odd) + 8 h + k/2 (interleave two vectors: half h)
 *   QUAD[q][..] = output floats 16 q .. 16 q + 15 of interleave4 out of the
 *                 pairs (y0, y1) and (y2, y3), q = 0, 1 (again for 2, 3)
 *   STRIDE2[r][l] = 2 l + r */
static const int32_t PHASE[4][16] = {
    {0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28},
    {1, 5, 9, 13, 17, 21, 25, 29, 1, 5, 9, 13, 17, 21, 25, 29},
    {2, 6, 10, 14, 18, 22, 26, 30, 2, 6, 10, 14, 18, 22, 26, 30},
    {3, 7, 11, 15, 19, 23, 27, 31, 3, 7, 11, 15, 19, 23, 27, 31},
};
static const int32_t PAIR[2][16] = {
    {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23},
    {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31},
};
static const int32_t QUAD[2][16] = {
    {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23},
    {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31},
};
static const int32_t STRIDE2[2][16] = {
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
};

AVX512 static inline __m512i idx(const int32_t *t) { return _mm512_loadu_si512((const void *)t); }

/* Phase r of the 64 floats a | b | c | d: 8 tiles from a | b, 8 from c | d. */
AVX512 static inline __m512 phase(__m512 a, __m512 b, __m512 c, __m512 d, int r)
{
    const __m512i i = idx(PHASE[r]);
    return _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(a, i, b), _mm512_permutex2var_ps(c, i, d));
}

/* p_r[l] = row[4l + r] for r = 0..3, l = 0..15. */
AVX512 static inline void deinterleave4(const float *row, __m512 *p0, __m512 *p1, __m512 *p2, __m512 *p3)
{
    __m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
    __m512 c = _mm512_loadu_ps(row + 32), d = _mm512_loadu_ps(row + 48);
    *p0 = phase(a, b, c, d, 0);
    *p1 = phase(a, b, c, d, 1);
    *p2 = phase(a, b, c, d, 2);
    *p3 = phase(a, b, c, d, 3);
}

/* Phases 0 and 1 only (patch columns 4 and 5 when called 4 floats on). */
AVX512 static inline void deinterleave2(const float *row, __m512 *p0, __m512 *p1)
{
    __m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
    __m512 c = _mm512_loadu_ps(row + 32), d = _mm512_loadu_ps(row + 48);
    *p0 = phase(a, b, c, d, 0);
    *p1 = phase(a, b, c, d, 1);
}

/* The inverse: out[4l + r] = y_r[l], 64 floats. */
AVX512 static inline void interleave4(__m512 y0, __m512 y1, __m512 y2, __m512 y3, float *out)
{
    const __m512i lo = idx(PAIR[0]), hi = idx(PAIR[1]);
    const __m512i q0 = idx(QUAD[0]), q1 = idx(QUAD[1]);
    __m512 z01a = _mm512_permutex2var_ps(y0, lo, y1), z01b = _mm512_permutex2var_ps(y0, hi, y1);
    __m512 z23a = _mm512_permutex2var_ps(y2, lo, y3), z23b = _mm512_permutex2var_ps(y2, hi, y3);
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(z01a, q0, z23a));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(z01a, q1, z23a));
    _mm512_storeu_ps(out + 32, _mm512_permutex2var_ps(z01b, q0, z23b));
    _mm512_storeu_ps(out + 48, _mm512_permutex2var_ps(z01b, q1, z23b));
}

/* p_r[l] = row[2l + r] for r = 0, 1, l = 0..15. */
AVX512 static inline void deinterleave2x(const float *row, __m512 *p0, __m512 *p1)
{
    __m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
    *p0 = _mm512_permutex2var_ps(a, idx(STRIDE2[0]), b);
    *p1 = _mm512_permutex2var_ps(a, idx(STRIDE2[1]), b);
}

/* The inverse: out[2l + r] = y_r[l], 32 floats. */
AVX512 static inline void interleave2x(__m512 y0, __m512 y1, float *out)
{
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(y0, idx(PAIR[0]), y1));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(y0, idx(PAIR[1]), y1));
}

#define VEC __m512
#define LANES 16
#define SIMD AVX512
#define SIMD_NAME "avx512f"
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VFMADD _mm512_fmadd_ps
#define VFNMADD _mm512_fnmadd_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VLOADU _mm512_loadu_ps
#define VSTOREU _mm512_storeu_ps
#include "conv2d_winograd_simd.h"

const mrt_wino_kernels *mrt_wino_kernels_avx512(int m)
{
    if (!(mrt_cpu_features() & MRT_CPU_AVX512F)) return NULL;
    return m == 2 ? &simd_f2 : &simd_f4;
}

#else

const mrt_wino_kernels *mrt_wino_kernels_avx512(int m)
{
    (void)m;
    return NULL;
}

#endif
