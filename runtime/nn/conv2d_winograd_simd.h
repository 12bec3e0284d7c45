/* The Winograd F(4x4, 3x3) and F(2x2, 3x3) tile transforms for one vector
 * ISA, written once over a vector of LANES floats: conv2d_winograd_avx2.c
 * and conv2d_winograd_avx512.c each define the vector type and operations
 * and the (de)interleaving shuffles, then include this file. The F(4x4)
 * case is described here; F(2x2) is the same with tiles 2 apart, patches 4
 * wide and a stride-2 de-interleave (see conv2d_winograd.c for the
 * algorithm).
 *
 * Each call transforms LANES horizontally adjacent tiles, one per vector
 * lane. The tiles' input patches overlap (stride 4, width 6), so a row of
 * 4 LANES input floats is de-interleaved into the 4 "phase" vectors
 * p_r[l] = row[4l + r], and columns 4 and 5 of every patch are phases 0 and
 * 1 of the same row read 4 floats further on. Everything after that is
 * lane-wise arithmetic in one fixed order of operations (the same adds,
 * subtracts and fused multiply-adds for every ISA, so every version gives
 * the same bits), and the outputs land in natural tile order. Partial
 * chunks still load and store all lanes (AMD's masked stores are
 * microcoded and were the slowest instruction here); the caller's layout
 * makes that safe (see mrt_wino_kernels).
 *
 * The including file provides: VEC, LANES, SIMD (the target attribute),
 * VADD, VSUB, VMUL, VFMADD(a, b, c) = a b + c, VFNMADD(a, b, c) = c - a b,
 * VSET1, VZERO, VLOADU, VSTOREU, and
 *   deinterleave4(row, &p0, &p1, &p2, &p3)  p_r[l] = row[4l + r]
 *   deinterleave2(row, &p0, &p1)            phases 0 and 1 only
 *   interleave4(y0, y1, y2, y3, out)        out[4l + r] = y_r[l]
 *   deinterleave2x(row, &p0, &p1)           p_r[l] = row[2l + r]
 *   interleave2x(y0, y1, out)               out[2l + r] = y_r[l]
 * It is not a public header: it has no include guard, on purpose. */

#define ROWLEN (4 * LANES + 4) /* input floats one F(4x4) chunk row reads */
#define ROWLEN2 (2 * LANES + 2) /* (F(2x2)) */

/* Zero row for patch rows that fall in the padding (long enough for both
 * tile sizes). */
static const float zero_row[ROWLEN];

/* Row iy of the plane from column ix0 on, len <= ROWLEN floats: the plane
 * itself where the row lies inside it, else buf (zero-filled past the
 * edges), or zeros for a row outside. */
static inline const float *patch_row(const float *plane, int64_t h, int64_t w, int64_t iy, int64_t ix0,
                                     int64_t len, float *buf)
{
    if (iy < 0 || iy >= h) return zero_row;
    if (ix0 >= 0 && ix0 + len <= w) return plane + iy * w + ix0;
    mrt_wino_load_row(buf, plane + iy * w, w, ix0, len);
    return buf;
}

/* B^T applied to 6 vectors: out[k] = sum_i BT[k][i] d[i]. */
SIMD static inline void bt6(const VEC *d, VEC *out)
{
    const VEC four = VSET1(4.0f), five = VSET1(5.0f);
    const VEC two = VSET1(2.0f);
    VEC d4md2 = VSUB(d[4], d[2]);
    VEC d3md1 = VSUB(d[3], d[1]);
    out[0] = VFMADD(four, d[0], VFNMADD(five, d[2], d[4]));
    out[1] = VFNMADD(four, VADD(d[1], d[2]), VADD(d[3], d[4]));
    out[2] = VFMADD(four, VSUB(d[1], d[2]), VSUB(d[4], d[3]));
    out[3] = VFMADD(two, d3md1, d4md2);
    out[4] = VFNMADD(two, d3md1, d4md2);
    out[5] = VFMADD(four, d[1], VFNMADD(five, d[3], d[5]));
}

/* A^T applied to 6 vectors: out[i] = sum_k AT[i][k] m[k], i = 0..3. */
SIMD static inline void at6(const VEC *m, VEC *out)
{
    const VEC two = VSET1(2.0f), four = VSET1(4.0f);
    const VEC eight = VSET1(8.0f);
    VEC s12 = VADD(m[1], m[2]), d12 = VSUB(m[1], m[2]);
    VEC s34 = VADD(m[3], m[4]), d34 = VSUB(m[3], m[4]);
    out[0] = VADD(VADD(m[0], s12), s34);
    out[1] = VFMADD(two, d34, d12);
    out[2] = VFMADD(four, s34, s12);
    out[3] = VADD(VFMADD(eight, d34, d12), m[5]);
}

/* A applied to 4 vectors: out[k] = sum_i A[k][i] v[i], k = 0..5. */
SIMD static inline void a4(const VEC *v, VEC *out)
{
    const VEC two = VSET1(2.0f), four = VSET1(4.0f);
    const VEC eight = VSET1(8.0f);
    VEC s02 = VADD(v[0], v[2]), s13 = VADD(v[1], v[3]);
    VEC e = VFMADD(four, v[2], v[0]), f = VFMADD(eight, v[3], VMUL(two, v[1]));
    out[0] = v[0];
    out[1] = VADD(s02, s13);
    out[2] = VSUB(s02, s13);
    out[3] = VADD(e, f);
    out[4] = VSUB(e, f);
    out[5] = v[3];
}

SIMD static void input_chunk_f4(const float *plane, int64_t h, int64_t w, int64_t iy0, int64_t ix0,
                              int cnt, float *v, size_t stride)
{
    float buf[ROWLEN];
    VEC e[6][6];
    for (int i = 0; i < 6; i++) {
        const float *row = patch_row(plane, h, w, iy0 + i, ix0, ROWLEN, buf);
        VEC d[6];
        deinterleave4(row, &d[0], &d[1], &d[2], &d[3]);
        deinterleave2(row + 4, &d[4], &d[5]);
        bt6(d, e[i]); /* along the patch row: (d B)[i][l] */
    }
    (void)cnt; /* all lanes are stored: see mrt_wino_kernels */
    for (int l = 0; l < 6; l++) {
        VEC col[6], out[6];
        for (int i = 0; i < 6; i++) col[i] = e[i][l];
        bt6(col, out); /* down the columns: (B^T d B)[k][l] */
        for (int k = 0; k < 6; k++) VSTOREU(v + (size_t)(6 * k + l) * stride, out[k]);
    }
}

SIMD static void output_chunk_f4(const float *m, size_t stride, int cnt, float bias, float *plane,
                               int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    VEC s[6][4];
    for (int k = 0; k < 6; k++) {
        VEC row[6];
        for (int l = 0; l < 6; l++) row[l] = VLOADU(m + (size_t)(6 * k + l) * stride);
        at6(row, s[k]); /* along rows: (m A)[k][j] */
    }
    const VEC b = VSET1(bias);
    const int64_t ncols = ow - ox0 < 4 * cnt ? ow - ox0 : 4 * cnt;
    for (int j = 0; j < 4; j++) {
        /* reuse s[.][j] as the column to transform */
        VEC col[6], out[4];
        for (int k = 0; k < 6; k++) col[k] = s[k][j];
        at6(col, out); /* (A^T m A)[i][j], i = 0..3 */
        for (int i = 0; i < 4; i++) s[i][j] = VADD(out[i], b);
    }
    for (int i = 0; i < 4 && oy0 + i < oh; i++) {
        float *dst = plane + (oy0 + i) * ow + ox0;
        if (ncols == 4 * LANES) {
            interleave4(s[i][0], s[i][1], s[i][2], s[i][3], dst);
        } else {
            float line[4 * LANES];
            interleave4(s[i][0], s[i][1], s[i][2], s[i][3], line);
            memcpy(dst, line, sizeof(float) * (size_t)ncols);
        }
    }
}

SIMD static void grad_chunk_f4(const float *plane, int64_t oh, int64_t ow, int64_t oy0, int64_t ox0,
                             int cnt, float *v, size_t stride)
{
    float buf[4 * LANES];
    VEC q[4][4], hc[6][4];
    for (int i = 0; i < 4; i++) {
        const float *row = patch_row(plane, oh, ow, oy0 + i, ox0, 4 * LANES, buf);
        deinterleave4(row, &q[i][0], &q[i][1], &q[i][2], &q[i][3]);
    }
    for (int j = 0; j < 4; j++) {
        VEC col[4] = {q[0][j], q[1][j], q[2][j], q[3][j]}, out[6];
        a4(col, out); /* (A dY)[k][j] */
        for (int k = 0; k < 6; k++) hc[k][j] = out[k];
    }
    (void)cnt; /* all lanes are stored: see mrt_wino_kernels */
    for (int k = 0; k < 6; k++) {
        VEC out[6];
        a4(hc[k], out); /* (A dY A^T)[k][l] */
        for (int l = 0; l < 6; l++) VSTOREU(v + (size_t)(6 * k + l) * stride, out[l]);
    }
}

/* ---- F(2x2, 3x3): tiles 2 apart, patches 4 wide ---------------------------- */


/* B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
SIMD static inline void bt4(const VEC *d, VEC *out)
{
    out[0] = VSUB(d[0], d[2]);
    out[1] = VADD(d[1], d[2]);
    out[2] = VSUB(d[2], d[1]);
    out[3] = VSUB(d[1], d[3]);
}

/* A^T = [1 1 1 0; 0 1 -1 -1] */
SIMD static inline void at4(const VEC *m, VEC *out)
{
    out[0] = VADD(VADD(m[0], m[1]), m[2]);
    out[1] = VSUB(VSUB(m[1], m[2]), m[3]);
}

/* A = [1 0; 1 1; 1 -1; 0 -1] */
SIMD static inline void a2(const VEC *v, VEC *out)
{
    out[0] = v[0];
    out[1] = VADD(v[0], v[1]);
    out[2] = VSUB(v[0], v[1]);
    out[3] = VSUB(VZERO(), v[1]);
}

SIMD static void input_chunk_f2(const float *plane, int64_t h, int64_t w, int64_t iy0,
                                int64_t ix0, int cnt, float *v, size_t stride)
{
    float buf[ROWLEN2];
    VEC e[4][4];
    for (int i = 0; i < 4; i++) {
        const float *row = patch_row(plane, h, w, iy0 + i, ix0, ROWLEN2, buf);
        VEC d[4];
        deinterleave2x(row, &d[0], &d[1]);
        deinterleave2x(row + 2, &d[2], &d[3]);
        bt4(d, e[i]);
    }
    (void)cnt; /* all lanes are stored: see mrt_wino_kernels */
    for (int l = 0; l < 4; l++) {
        VEC col[4] = {e[0][l], e[1][l], e[2][l], e[3][l]}, out[4];
        bt4(col, out);
        for (int k = 0; k < 4; k++) VSTOREU(v + (size_t)(4 * k + l) * stride, out[k]);
    }
}

SIMD static void output_chunk_f2(const float *m, size_t stride, int cnt, float bias, float *plane,
                                 int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    VEC s[4][2];
    for (int k = 0; k < 4; k++) {
        VEC row[4];
        for (int l = 0; l < 4; l++) row[l] = VLOADU(m + (size_t)(4 * k + l) * stride);
        at4(row, s[k]);
    }
    const VEC b = VSET1(bias);
    VEC y[2][2];
    for (int j = 0; j < 2; j++) {
        VEC col[4] = {s[0][j], s[1][j], s[2][j], s[3][j]}, out[2];
        at4(col, out);
        y[0][j] = VADD(out[0], b);
        y[1][j] = VADD(out[1], b);
    }
    const int64_t ncols = ow - ox0 < 2 * cnt ? ow - ox0 : 2 * cnt;
    for (int i = 0; i < 2 && oy0 + i < oh; i++) {
        float *dst = plane + (oy0 + i) * ow + ox0;
        if (ncols == 2 * LANES) {
            interleave2x(y[i][0], y[i][1], dst);
        } else {
            float line[2 * LANES];
            interleave2x(y[i][0], y[i][1], line);
            memcpy(dst, line, sizeof(float) * (size_t)ncols);
        }
    }
}

SIMD static void grad_chunk_f2(const float *plane, int64_t oh, int64_t ow, int64_t oy0,
                               int64_t ox0, int cnt, float *v, size_t stride)
{
    float buf[2 * LANES];
    VEC q[2][2], hc[4][2];
    for (int i = 0; i < 2; i++) {
        const float *row = patch_row(plane, oh, ow, oy0 + i, ox0, 2 * LANES, buf);
        deinterleave2x(row, &q[i][0], &q[i][1]);
    }
    for (int j = 0; j < 2; j++) {
        VEC col[2] = {q[0][j], q[1][j]}, out[4];
        a2(col, out);
        for (int k = 0; k < 4; k++) hc[k][j] = out[k];
    }
    (void)cnt; /* all lanes are stored: see mrt_wino_kernels */
    for (int k = 0; k < 4; k++) {
        VEC out[4];
        a2(hc[k], out);
        for (int l = 0; l < 4; l++) VSTOREU(v + (size_t)(4 * k + l) * stride, out[l]);
    }
}

static const mrt_wino_kernels simd_f4 = {SIMD_NAME, LANES, input_chunk_f4, output_chunk_f4, grad_chunk_f4};
static const mrt_wino_kernels simd_f2 = {SIMD_NAME, LANES, input_chunk_f2, output_chunk_f2, grad_chunk_f2};
