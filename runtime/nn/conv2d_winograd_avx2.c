/* AVX2 + FMA versions of the Winograd F(4x4, 3x3) and F(2x2, 3x3) tile
 * transforms (see conv2d_winograd.c for the algorithm), used when the CPU has
 * them. The F(4x4) case is described here; F(2x2) is the same with tiles 2
 * apart, patches 4 wide and a stride-2 de-interleave.
 *
 * Each call transforms 8 horizontally adjacent tiles, one per vector lane.
 * The tiles' input patches overlap (stride 4, width 6), so a row of 32 input
 * floats is de-interleaved into the 4 "phase" vectors p_r[l] = row[4l + r]
 * with 12 shuffles (an 8x4 transpose), and columns 4 and 5 of every patch are
 * phases 0 and 1 of the same row read 4 floats further on. Everything after
 * that is lane-wise arithmetic, and the outputs land in natural tile order.
 * Partial chunks still load and store all 8 lanes (AMD's masked stores are
 * microcoded and were the slowest instruction here); the caller's layout
 * makes that safe (see mrt_wino_kernels).
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
#define ROWLEN 36 /* input floats one 8-tile chunk row reads */

/* Zero row for patch rows that fall in the padding (long enough for both
 * tile sizes). */
static const float zero_row[ROWLEN];

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

/* B^T applied to 6 vectors: out[k] = sum_i BT[k][i] d[i]. */
AVX2 static inline void bt6(const __m256 *d, __m256 *out)
{
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
    const __m256 two = _mm256_set1_ps(2.0f);
    __m256 d4md2 = _mm256_sub_ps(d[4], d[2]);
    __m256 d3md1 = _mm256_sub_ps(d[3], d[1]);
    out[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    out[1] = _mm256_fnmadd_ps(four, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4]));
    out[2] = _mm256_fmadd_ps(four, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
    out[3] = _mm256_fmadd_ps(two, d3md1, d4md2);
    out[4] = _mm256_fnmadd_ps(two, d3md1, d4md2);
    out[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

/* A^T applied to 6 vectors: out[i] = sum_k AT[i][k] m[k], i = 0..3. */
AVX2 static inline void at6(const __m256 *m, __m256 *out)
{
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f);
    const __m256 eight = _mm256_set1_ps(8.0f);
    __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
    __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
    out[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
    out[1] = _mm256_fmadd_ps(two, d34, d12);
    out[2] = _mm256_fmadd_ps(four, s34, s12);
    out[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, d34, d12), m[5]);
}

/* A applied to 4 vectors: out[k] = sum_i A[k][i] v[i], k = 0..5. */
AVX2 static inline void a4(const __m256 *v, __m256 *out)
{
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f);
    const __m256 eight = _mm256_set1_ps(8.0f);
    __m256 s02 = _mm256_add_ps(v[0], v[2]), s13 = _mm256_add_ps(v[1], v[3]);
    __m256 e = _mm256_fmadd_ps(four, v[2], v[0]), f = _mm256_fmadd_ps(eight, v[3], _mm256_mul_ps(two, v[1]));
    out[0] = v[0];
    out[1] = _mm256_add_ps(s02, s13);
    out[2] = _mm256_sub_ps(s02, s13);
    out[3] = _mm256_add_ps(e, f);
    out[4] = _mm256_sub_ps(e, f);
    out[5] = v[3];
}

AVX2 static void input_chunk8(const float *plane, int64_t h, int64_t w, int64_t iy0, int64_t ix0,
                              int cnt, float *v, size_t stride)
{
    float buf[6][ROWLEN];
    __m256 e[6][6];
    const int inside = ix0 >= 0 && ix0 + ROWLEN <= w;
    for (int i = 0; i < 6; i++) {
        const int64_t iy = iy0 + i;
        const float *row;
        if (iy < 0 || iy >= h) {
            row = zero_row;
        } else if (inside) {
            row = plane + iy * w + ix0;
        } else {
            mrt_wino_load_row(buf[i], plane + iy * w, w, ix0, ROWLEN);
            row = buf[i];
        }
        __m256 d[6];
        deinterleave4(row, &d[0], &d[1], &d[2], &d[3]);
        deinterleave2(row + 4, &d[4], &d[5]);
        bt6(d, e[i]); /* along the patch row: (d B)[i][l] */
    }
    (void)cnt; /* all 8 lanes are stored: see mrt_wino_kernels */
    for (int l = 0; l < 6; l++) {
        __m256 col[6], out[6];
        for (int i = 0; i < 6; i++) col[i] = e[i][l];
        bt6(col, out); /* down the columns: (B^T d B)[k][l] */
        for (int k = 0; k < 6; k++) _mm256_storeu_ps(v + (size_t)(6 * k + l) * stride, out[k]);
    }
}

AVX2 static void output_chunk8(const float *m, size_t stride, int cnt, float bias, float *plane,
                               int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    __m256 s[6][4];
    for (int k = 0; k < 6; k++) {
        __m256 row[6];
        for (int l = 0; l < 6; l++) row[l] = _mm256_loadu_ps(m + (size_t)(6 * k + l) * stride);
        at6(row, s[k]); /* along rows: (m A)[k][j] */
    }
    const __m256 b = _mm256_set1_ps(bias);
    const int64_t ncols = ow - ox0 < 4 * cnt ? ow - ox0 : 4 * cnt;
    for (int j = 0; j < 4; j++) {
        /* reuse s[.][j] as the column to transform */
        __m256 col[6], out[4];
        for (int k = 0; k < 6; k++) col[k] = s[k][j];
        at6(col, out); /* (A^T m A)[i][j], i = 0..3 */
        for (int i = 0; i < 4; i++) s[i][j] = _mm256_add_ps(out[i], b);
    }
    for (int i = 0; i < 4 && oy0 + i < oh; i++) {
        float *dst = plane + (oy0 + i) * ow + ox0;
        if (ncols == 32) {
            interleave4(s[i][0], s[i][1], s[i][2], s[i][3], dst);
        } else {
            float line[32];
            interleave4(s[i][0], s[i][1], s[i][2], s[i][3], line);
            memcpy(dst, line, sizeof(float) * (size_t)ncols);
        }
    }
}

AVX2 static void grad_chunk8(const float *plane, int64_t oh, int64_t ow, int64_t oy0, int64_t ox0,
                             int cnt, float *v, size_t stride)
{
    float buf[4][32];
    __m256 q[4][4], hc[6][4];
    const int inside = ox0 + 32 <= ow;
    for (int i = 0; i < 4; i++) {
        const float *row;
        if (oy0 + i >= oh) {
            row = zero_row;
        } else if (inside) {
            row = plane + (oy0 + i) * ow + ox0;
        } else {
            mrt_wino_load_row(buf[i], plane + (oy0 + i) * ow, ow, ox0, 32);
            row = buf[i];
        }
        deinterleave4(row, &q[i][0], &q[i][1], &q[i][2], &q[i][3]);
    }
    for (int j = 0; j < 4; j++) {
        __m256 col[4] = {q[0][j], q[1][j], q[2][j], q[3][j]}, out[6];
        a4(col, out); /* (A dY)[k][j] */
        for (int k = 0; k < 6; k++) hc[k][j] = out[k];
    }
    (void)cnt; /* all 8 lanes are stored: see mrt_wino_kernels */
    for (int k = 0; k < 6; k++) {
        __m256 out[6];
        a4(hc[k], out); /* (A dY A^T)[k][l] */
        for (int l = 0; l < 6; l++) _mm256_storeu_ps(v + (size_t)(6 * k + l) * stride, out[l]);
    }
}

/* ---- F(2x2, 3x3): tiles 2 apart, patches 4 wide ---------------------------- */

#define ROWLEN2 18 /* input floats one 8-tile chunk row reads */

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

/* B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
AVX2 static inline void bt4(const __m256 *d, __m256 *out)
{
    out[0] = _mm256_sub_ps(d[0], d[2]);
    out[1] = _mm256_add_ps(d[1], d[2]);
    out[2] = _mm256_sub_ps(d[2], d[1]);
    out[3] = _mm256_sub_ps(d[1], d[3]);
}

/* A^T = [1 1 1 0; 0 1 -1 -1] */
AVX2 static inline void at4(const __m256 *m, __m256 *out)
{
    out[0] = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
    out[1] = _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]);
}

/* A = [1 0; 1 1; 1 -1; 0 -1] */
AVX2 static inline void a2(const __m256 *v, __m256 *out)
{
    out[0] = v[0];
    out[1] = _mm256_add_ps(v[0], v[1]);
    out[2] = _mm256_sub_ps(v[0], v[1]);
    out[3] = _mm256_sub_ps(_mm256_setzero_ps(), v[1]);
}

AVX2 static void input_chunk8_2(const float *plane, int64_t h, int64_t w, int64_t iy0,
                                int64_t ix0, int cnt, float *v, size_t stride)
{
    float buf[4][ROWLEN2];
    __m256 e[4][4];
    const int inside = ix0 >= 0 && ix0 + ROWLEN2 <= w;
    for (int i = 0; i < 4; i++) {
        const int64_t iy = iy0 + i;
        const float *row;
        if (iy < 0 || iy >= h) {
            row = zero_row;
        } else if (inside) {
            row = plane + iy * w + ix0;
        } else {
            mrt_wino_load_row(buf[i], plane + iy * w, w, ix0, ROWLEN2);
            row = buf[i];
        }
        __m256 d[4];
        deinterleave2x(row, &d[0], &d[1]);
        deinterleave2x(row + 2, &d[2], &d[3]);
        bt4(d, e[i]);
    }
    (void)cnt; /* all 8 lanes are stored: see mrt_wino_kernels */
    for (int l = 0; l < 4; l++) {
        __m256 col[4] = {e[0][l], e[1][l], e[2][l], e[3][l]}, out[4];
        bt4(col, out);
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(v + (size_t)(4 * k + l) * stride, out[k]);
    }
}

AVX2 static void output_chunk8_2(const float *m, size_t stride, int cnt, float bias, float *plane,
                                 int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    __m256 s[4][2];
    for (int k = 0; k < 4; k++) {
        __m256 row[4];
        for (int l = 0; l < 4; l++) row[l] = _mm256_loadu_ps(m + (size_t)(4 * k + l) * stride);
        at4(row, s[k]);
    }
    const __m256 b = _mm256_set1_ps(bias);
    __m256 y[2][2];
    for (int j = 0; j < 2; j++) {
        __m256 col[4] = {s[0][j], s[1][j], s[2][j], s[3][j]}, out[2];
        at4(col, out);
        y[0][j] = _mm256_add_ps(out[0], b);
        y[1][j] = _mm256_add_ps(out[1], b);
    }
    const int64_t ncols = ow - ox0 < 2 * cnt ? ow - ox0 : 2 * cnt;
    for (int i = 0; i < 2 && oy0 + i < oh; i++) {
        float *dst = plane + (oy0 + i) * ow + ox0;
        if (ncols == 16) {
            interleave2x(y[i][0], y[i][1], dst);
        } else {
            float line[16];
            interleave2x(y[i][0], y[i][1], line);
            memcpy(dst, line, sizeof(float) * (size_t)ncols);
        }
    }
}

AVX2 static void grad_chunk8_2(const float *plane, int64_t oh, int64_t ow, int64_t oy0,
                               int64_t ox0, int cnt, float *v, size_t stride)
{
    float buf[2][16];
    __m256 q[2][2], hc[4][2];
    const int inside = ox0 + 16 <= ow;
    for (int i = 0; i < 2; i++) {
        const float *row;
        if (oy0 + i >= oh) {
            row = zero_row;
        } else if (inside) {
            row = plane + (oy0 + i) * ow + ox0;
        } else {
            mrt_wino_load_row(buf[i], plane + (oy0 + i) * ow, ow, ox0, 16);
            row = buf[i];
        }
        deinterleave2x(row, &q[i][0], &q[i][1]);
    }
    for (int j = 0; j < 2; j++) {
        __m256 col[2] = {q[0][j], q[1][j]}, out[4];
        a2(col, out);
        for (int k = 0; k < 4; k++) hc[k][j] = out[k];
    }
    (void)cnt; /* all 8 lanes are stored: see mrt_wino_kernels */
    for (int k = 0; k < 4; k++) {
        __m256 out[4];
        a2(hc[k], out);
        for (int l = 0; l < 4; l++) _mm256_storeu_ps(v + (size_t)(4 * k + l) * stride, out[l]);
    }
}

static const mrt_wino_kernels avx2_f4 = {"avx2", 8, input_chunk8, output_chunk8, grad_chunk8};
static const mrt_wino_kernels avx2_f2 = {"avx2", 8, input_chunk8_2, output_chunk8_2,
                                         grad_chunk8_2};

const mrt_wino_kernels *mrt_wino_kernels_avx2(int m)
{
    if (!(mrt_cpu_features() & MRT_CPU_AVX2)) return NULL;
    return m == 2 ? &avx2_f2 : &avx2_f4;
}

#else

const mrt_wino_kernels *mrt_wino_kernels_avx2(int m)
{
    (void)m;
    return NULL;
}

#endif
