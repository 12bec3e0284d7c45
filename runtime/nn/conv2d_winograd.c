/* 3x3 stride-1 convolution by Winograd's minimal filtering, F(4x4, 3x3)
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * Each 4x4 output tile is Y = A^T [(G g G^T) .* (B^T d B)] A, with d the 6x6
 * input patch under the tile and g the 3x3 kernel. Summed over input
 * channels, the 36 element-wise products become 36 independent GEMMs
 *     M[xi][O][T] = U[xi][O][C] . V[xi][C][T]      (T = tiles, xi = 0..35)
 * which do 36 multiply-adds per 16 outputs where direct convolution (and
 * im2col) does 144: a 4x cut of the arithmetic, at the price of the three
 * transforms, which are O(C*T + O*T) and vectorise well.
 *
 * Backward:
 *  - dX is again a stride-1 3x3 convolution, of dY with the kernel rotated
 *    by 180 degrees and input/output channels swapped, padding 2 - pad; it
 *    runs through the same forward code.
 *  - dW follows from differentiating the formula above:
 *        dW[o][c] = G^T [ sum over tiles (A dY_t A^T) .* (B^T d_t B) ] G
 *    i.e. 36 GEMMs dU[xi][O][C] = Yt[xi][O][T] . V[xi][C][T]^T, then one
 *    small transform per (o, c).
 *
 * F(4x4, 3x3) loses a few bits against direct summation: the transforms
 * scale values up (constants up to 8 and 5, so the products summed by the
 * GEMMs are larger than the terms of the direct sum) and the float32 GEMM
 * sums then round on that larger scale. Simulated in numpy, the mean error is
 * 3.5x that of direct summation, and the float32 GEMM accumulation is most of
 * it (3x3 outputs from 64 channels: 5.2e-8 of the sum of the terms'
 * magnitudes, 3.0e-8 with the GEMM in float64, 1.7e-8 for a direct float32
 * sum). In the forward pass it flows through batch statistics into every
 * later layer, and three AdamW steps on a ResNet34 (which move a weight by
 * lr whatever the size of its gradient) follow PyTorch less closely
 * (tests/lua/test_resnet_torch: 125 of 3520 sampled weights off by more
 * than 1e-5, against 28 with an F(2x2, 3x3) forward; the test allows 6 %).
 * That is the spread a different sgemm kernel alone gives (117-128 of 3520
 * with OpenBLAS's Cooperlake kernels and the F(2x2) forward), while F(4x4)
 * makes a float32 ResNet34 training step 8-13 % faster (bench/train_step
 * --cpu-time, interleaved), so conv2d.c runs F(4x4, 3x3) both ways. The same
 * code also runs F(2x2, 3x3) (MRT_CONV_WINOGRAD2): 16 products per 4
 * outputs (a 2.25x cut instead of 4x), transform constants of 1 and 1/2,
 * and errors at the level of direct summation (1.2e-8 in the same
 * simulation). The code below is written for both tile
 * sizes m: patches of alpha = m + 2, alpha^2 = 36 or 16 GEMMs.
 *
 * Work is done for groups of `nb` tile rows (T = nb * tiles per row; a tile
 * row is m output rows of one image, and a group may span images): input
 * transform -> alpha^2 GEMMs -> output transform. Two schedules:
 *  - pipelines, when the batch has at least two groups per thread (the
 *    layers with 64 and 128 channels): each thread takes whole groups from
 *    an OpenMP loop and runs all three steps on them alone, with single-
 *    threaded sgemm (OpenBLAS runs single-threaded inside a parallel region)
 *    and its own V and M, which stay in its caches. One barrier per call,
 *    where a phase-by-phase schedule of these layers has dozens: on a
 *    shared machine each can cost a scheduler slice when the other thread
 *    has lost its core. (Measured on layer1: 1.25x faster than phases.)
 *  - phases, when there are few tiles (256 and 512 channels: 448 and 128
 *    tiles in the whole batch): the transforms run as OpenMP loops over
 *    channels, then the GEMMs as an OpenMP loop over xi, one thread each.
 * dW accumulates per thread (groups go to threads round-robin, statically)
 * and the per-thread sums are added in thread order, so a given thread
 * count always gives the same bits. */
#include "../cpu/cpu_features.h"
#include "../cpu/gemm.h"
#include <math.h>
#include <omp.h>
#include <string.h>
#include "conv2d.h"

#define NXI_MAX 36 /* (m+2)^2 transformed positions: 36 for m = 4, 16 for m = 2 */
#define LANES 16   /* tiles of one tile row transformed together (portable code) */
#define LCOLS (4 * LANES + 2) /* input columns those tiles read (m = 4) */
#define LCOLS2 (2 * LANES + 2) /* (m = 2) */

/* Group size. With few channels (64 and 128 in a ResNet34) the transforms,
 * which stream V and M, weigh as much as the GEMMs: groups are sized so that
 * one thread's V and M take about WINO_GROUP_BYTES, and each thread runs its
 * own groups (pipeline schedule, below). With many channels the GEMMs
 * dominate and want long rows, V and M outgrow the caches whatever the
 * group, and one group takes up to WINO_TILES_MANY tiles, as long as V and M
 * stay within WINO_PHASE_BYTES (a workspace bound only). (Measured with
 * bench/conv_layers, 2 threads, batch 32, F(4x4, 3x3): 64 channels best at
 * 108-216 tiles per group, 128 at 56-112, 256 and 512 with the whole batch,
 * 448 and 128 tiles.) */
#define WINO_FEW_CHANNELS 256 /* input + output channels */
#define WINO_GROUP_BYTES ((int64_t)3 << 20)
#define WINO_TILES_MANY 2048
#define WINO_PHASE_BYTES ((int64_t)48 << 20)

/* One transform problem: a stride-1 3x3 convolution from `cin` channels of
 * h x w to `cout` channels of oh x ow (the forward pass, or dX's), with
 * m x m output tiles. */
typedef struct {
    int64_t n, cin, cout, h, w, oh, ow, ph, pw;
    int64_t th, tw; /* tile rows and columns per image */
    int m, alpha, nxi; /* tile size, patch size m + 2, alpha^2 */
} wgeom;

static wgeom make_wgeom(int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w, int64_t oh,
                        int64_t ow, int64_t ph, int64_t pw, int m)
{
    wgeom q = {n, cin, cout, h, w, oh, ow, ph, pw, (oh + m - 1) / m, (ow + m - 1) / m,
               m, m + 2, (m + 2) * (m + 2)};
    return q;
}

static wgeom wgeom_fwd(const mrt_conv_geom *g, int m)
{
    return make_wgeom(g->n, g->c, g->o, g->h, g->w, g->oh, g->ow, g->ph, g->pw, m);
}

/* dX = conv(dY, rot180(W) with channels swapped, padding 2 - pad). */
static wgeom wgeom_dx(const mrt_conv_geom *g, int m)
{
    return make_wgeom(g->n, g->o, g->c, g->oh, g->ow, g->h, g->w, 2 - g->ph, 2 - g->pw, m);
}

int64_t mrt_conv_wino_block(const mrt_conv_geom *g, int m)
{
    const wgeom q = wgeom_fwd(g, m);
    const int64_t per_tile = q.nxi * (int64_t)sizeof(float) * (g->c + g->o);
    const int64_t rows = g->n * q.th;
    int64_t nb;
    if (g->c + g->o <= WINO_FEW_CHANNELS) {
        nb = (WINO_GROUP_BYTES / per_tile + q.tw / 2) / q.tw;
    } else {
        nb = (WINO_TILES_MANY + q.tw - 1) / q.tw;
        int64_t cap = WINO_PHASE_BYTES / per_tile / q.tw;
        if (nb > cap) nb = cap;
    }
    if (nb < 1) nb = 1;
    if (nb > rows) nb = rows;
    /* as many groups, of even size */
    const int64_t groups = (rows + nb - 1) / nb;
    return (rows + groups - 1) / groups;
}

/* Layout of the transformed operands of a group of nb tile rows: rows of T
 * tiles, `tp` floats apart, and the 36 positions `rows * tp + PAD` apart.
 * The row padding takes the full-width stores of a partial chunk (see
 * mrt_wino_kernels); the extra line per position keeps the 36 streams the
 * transforms read and write out of each other's cache sets, which a
 * power-of-two distance (64 x 1024 tiles, say) would put in one set. */
#define PAD 16
typedef struct {
    size_t t, tp;
} wlayout;

static wlayout layout(const wgeom *q, int64_t nb)
{
    wlayout l;
    l.t = (size_t)(nb * q->tw);
    l.tp = l.t + PAD;
    return l;
}

static size_t xi_stride(const wlayout *l, int64_t rows) { return (size_t)rows * l->tp + PAD; }
static size_t u_stride(const wgeom *q) { return (size_t)(q->cout * q->cin) + PAD; }
static int64_t groups_of(const wgeom *q, int64_t nb) { return (q->n * q->th + nb - 1) / nb; }

/* Threads of the pipeline schedule, or 0 for the phase schedule. */
static int pipelines(const wgeom *q, int64_t nb)
{
    const int t = omp_get_max_threads();
    return t > 1 && groups_of(q, nb) >= 2 * (int64_t)t ? t : 0;
}

/* Per-thread scratch of one pass: V | M (or V | Yt). */
static size_t vm_floats(const wgeom *q, int64_t nb)
{
    wlayout l = layout(q, nb);
    return mrt_conv_align16((size_t)q->nxi * xi_stride(&l, q->cin)) +
           mrt_conv_align16((size_t)q->nxi * xi_stride(&l, q->cout));
}

static size_t u_floats(const wgeom *q) { return mrt_conv_align16((size_t)q->nxi * u_stride(q)); }

/* U (or the summed dU) once, then V and M (with dw: V, Yt and a dU
 * accumulator) per pipeline, or once for the phase schedule. */
static size_t pass_floats(const wgeom *q, int64_t nb, int dw)
{
    const int t = pipelines(q, nb);
    const size_t per = vm_floats(q, nb) + (dw ? u_floats(q) : 0);
    return t ? u_floats(q) + (size_t)t * per : u_floats(q) + vm_floats(q, nb);
}

size_t mrt_conv_wino_fwd_scratch(const mrt_conv_geom *g, int m, int64_t nb)
{
    wgeom q = wgeom_fwd(g, m);
    return pass_floats(&q, nb, 0);
}

size_t mrt_conv_wino_bwd_scratch(const mrt_conv_geom *g, int m, int64_t nb, int want_dx,
                                 int want_dw)
{
    wgeom f = wgeom_fwd(g, m), d = wgeom_dx(g, m);
    /* dW needs V (input transform), Yt (gradient transform) and dU: the
     * sizes of a forward pass. dX needs a pass on dY; its tiles cover the
     * input plane, which can hold more tiles than the output. */
    size_t a = want_dw ? pass_floats(&f, nb, 1) : 0;
    size_t b = want_dx ? pass_floats(&d, nb, 0) : 0;
    return a > b ? a : b;
}

/* ---- transforms ------------------------------------------------------------ */

void mrt_wino_load_row(float *dst, const float *row, int64_t w, int64_t ix0, int64_t len)
{
    int64_t lo = ix0 < 0 ? -ix0 : 0;
    int64_t hi = w - ix0 < len ? w - ix0 : len;
    if (hi < lo) hi = lo;
    if (lo > len) lo = hi = len;
    if (lo > 0) memset(dst, 0, sizeof(float) * (size_t)lo);
    if (hi > lo) memcpy(dst + lo, row + ix0 + lo, sizeof(float) * (size_t)(hi - lo));
    if (len > hi) memset(dst + hi, 0, sizeof(float) * (size_t)(len - hi));
}

/* V for one chunk of up to LANES tiles of one tile row of one plane:
 * v[(6k + l) * stride + lane] = (B^T d B)[k][l] of tile `lane`, whose patch
 * starts at input row iy0, column ix0 + 4 * lane. Vectorised across tiles:
 * the 6 rows are transformed column-wise over the whole padded strip, then
 * each row is de-interleaved into its 6 phase columns (q[j][lane] =
 * t[4 lane + j]) so that the second transform also runs across tiles. */
static void input_chunk(const float *plane, int64_t h, int64_t w, int64_t iy0, int64_t ix0,
                        int cnt, float *v, size_t stride)
{
    float rows[6][LCOLS], t[6][LCOLS];
    for (int i = 0; i < 6; i++) {
        int64_t iy = iy0 + i;
        if (iy < 0 || iy >= h) memset(rows[i], 0, sizeof rows[i]);
        else mrt_wino_load_row(rows[i], plane + iy * w, w, ix0, LCOLS);
    }
#pragma omp simd
    for (int u = 0; u < LCOLS; u++) {
        float d0 = rows[0][u], d1 = rows[1][u], d2 = rows[2][u];
        float d3 = rows[3][u], d4 = rows[4][u], d5 = rows[5][u];
        t[0][u] = 4.0f * d0 - 5.0f * d2 + d4;
        t[1][u] = -4.0f * (d1 + d2) + d3 + d4;
        t[2][u] = 4.0f * (d1 - d2) - d3 + d4;
        t[3][u] = 2.0f * (d3 - d1) - d2 + d4;
        t[4][u] = 2.0f * (d1 - d3) - d2 + d4;
        t[5][u] = 4.0f * d1 - 5.0f * d3 + d5;
    }
    for (int k = 0; k < 6; k++) {
        float q[6][LANES], out[6][LANES];
        for (int l = 0; l < LANES; l++)
            for (int j = 0; j < 6; j++) q[j][l] = t[k][4 * l + j];
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float d0 = q[0][l], d1 = q[1][l], d2 = q[2][l];
            float d3 = q[3][l], d4 = q[4][l], d5 = q[5][l];
            out[0][l] = 4.0f * d0 - 5.0f * d2 + d4;
            out[1][l] = -4.0f * (d1 + d2) + d3 + d4;
            out[2][l] = 4.0f * (d1 - d2) - d3 + d4;
            out[3][l] = 2.0f * (d3 - d1) - d2 + d4;
            out[4][l] = 2.0f * (d1 - d3) - d2 + d4;
            out[5][l] = 4.0f * d1 - 5.0f * d3 + d5;
        }
        for (int j = 0; j < 6; j++)
            memcpy(v + (size_t)(6 * k + j) * stride, out[j], sizeof(float) * (size_t)cnt);
    }
}

/* y tile rows from M: y = A^T m A (+ bias) for up to LANES tiles, written
 * where they fall inside the oh x ow plane. */
static void output_chunk(const float *m, size_t stride, int cnt, float bias, float *plane,
                         int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    float mv[36][LANES], s[6][4][LANES], line[4 * LANES];
    for (int xi = 0; xi < 36; xi++) {
        memcpy(mv[xi], m + (size_t)xi * stride, sizeof(float) * (size_t)cnt);
        if (cnt < LANES) memset(mv[xi] + cnt, 0, sizeof(float) * (size_t)(LANES - cnt));
    }
    for (int k = 0; k < 6; k++) {
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float m0 = mv[6 * k][l], m1 = mv[6 * k + 1][l], m2 = mv[6 * k + 2][l];
            float m3 = mv[6 * k + 3][l], m4 = mv[6 * k + 4][l], m5 = mv[6 * k + 5][l];
            s[k][0][l] = m0 + m1 + m2 + m3 + m4;
            s[k][1][l] = (m1 - m2) + 2.0f * (m3 - m4);
            s[k][2][l] = (m1 + m2) + 4.0f * (m3 + m4);
            s[k][3][l] = (m1 - m2) + 8.0f * (m3 - m4) + m5;
        }
    }
    int64_t ncols = ow - ox0 < 4 * cnt ? ow - ox0 : 4 * cnt;
    for (int i = 0; i < 4 && oy0 + i < oh; i++) {
        for (int j = 0; j < 4; j++) {
            float r[LANES];
#pragma omp simd
            for (int l = 0; l < LANES; l++) {
                float m0 = s[0][j][l], m1 = s[1][j][l], m2 = s[2][j][l];
                float m3 = s[3][j][l], m4 = s[4][j][l], m5 = s[5][j][l];
                float val;
                if (i == 0) val = m0 + m1 + m2 + m3 + m4;
                else if (i == 1) val = (m1 - m2) + 2.0f * (m3 - m4);
                else if (i == 2) val = (m1 + m2) + 4.0f * (m3 + m4);
                else val = (m1 - m2) + 8.0f * (m3 - m4) + m5;
                r[l] = val + bias;
            }
            for (int l = 0; l < LANES; l++) line[4 * l + j] = r[l];
        }
        memcpy(plane + (oy0 + i) * ow + ox0, line, sizeof(float) * (size_t)ncols);
    }
}

/* Yt = A dY_t A^T for up to LANES 4x4 gradient tiles (zero beyond the
 * oh x ow plane), stored like V. */
static void grad_chunk(const float *plane, int64_t oh, int64_t ow, int64_t oy0, int64_t ox0,
                       int cnt, float *v, size_t stride)
{
    float line[4 * LANES], q[4][4][LANES], hcol[6][4][LANES];
    for (int i = 0; i < 4; i++) {
        if (oy0 + i < oh) mrt_wino_load_row(line, plane + (oy0 + i) * ow, ow, ox0, 4 * LANES);
        else memset(line, 0, sizeof line);
        for (int l = 0; l < LANES; l++)
            for (int j = 0; j < 4; j++) q[i][j][l] = line[4 * l + j];
    }
    /* Rows: A (6x4) applied over i. */
    for (int j = 0; j < 4; j++) {
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float v0 = q[0][j][l], v1 = q[1][j][l], v2 = q[2][j][l], v3 = q[3][j][l];
            hcol[0][j][l] = v0;
            hcol[1][j][l] = v0 + v1 + v2 + v3;
            hcol[2][j][l] = v0 - v1 + v2 - v3;
            hcol[3][j][l] = v0 + 2.0f * v1 + 4.0f * v2 + 8.0f * v3;
            hcol[4][j][l] = v0 - 2.0f * v1 + 4.0f * v2 - 8.0f * v3;
            hcol[5][j][l] = v3;
        }
    }
    /* Columns: A applied over j. */
    for (int k = 0; k < 6; k++) {
        float out[6][LANES];
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float v0 = hcol[k][0][l], v1 = hcol[k][1][l], v2 = hcol[k][2][l], v3 = hcol[k][3][l];
            out[0][l] = v0;
            out[1][l] = v0 + v1 + v2 + v3;
            out[2][l] = v0 - v1 + v2 - v3;
            out[3][l] = v0 + 2.0f * v1 + 4.0f * v2 + 8.0f * v3;
            out[4][l] = v0 - 2.0f * v1 + 4.0f * v2 - 8.0f * v3;
            out[5][l] = v3;
        }
        for (int j = 0; j < 6; j++)
            memcpy(v + (size_t)(6 * k + j) * stride, out[j], sizeof(float) * (size_t)cnt);
    }
}

/* F(2x2, 3x3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 * A^T = [1 1 1 0; 0 1 -1 -1]. Same structure as the F(4x4) chunks above. */
static void input_chunk2(const float *plane, int64_t h, int64_t w, int64_t iy0, int64_t ix0,
                         int cnt, float *v, size_t stride)
{
    float rows[4][LCOLS2], t[4][LCOLS2];
    for (int i = 0; i < 4; i++) {
        int64_t iy = iy0 + i;
        if (iy < 0 || iy >= h) memset(rows[i], 0, sizeof rows[i]);
        else mrt_wino_load_row(rows[i], plane + iy * w, w, ix0, LCOLS2);
    }
#pragma omp simd
    for (int u = 0; u < LCOLS2; u++) {
        float d0 = rows[0][u], d1 = rows[1][u], d2 = rows[2][u], d3 = rows[3][u];
        t[0][u] = d0 - d2;
        t[1][u] = d1 + d2;
        t[2][u] = d2 - d1;
        t[3][u] = d1 - d3;
    }
    for (int k = 0; k < 4; k++) {
        float q[4][LANES], out[4][LANES];
        for (int l = 0; l < LANES; l++)
            for (int j = 0; j < 4; j++) q[j][l] = t[k][2 * l + j];
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float d0 = q[0][l], d1 = q[1][l], d2 = q[2][l], d3 = q[3][l];
            out[0][l] = d0 - d2;
            out[1][l] = d1 + d2;
            out[2][l] = d2 - d1;
            out[3][l] = d1 - d3;
        }
        for (int j = 0; j < 4; j++)
            memcpy(v + (size_t)(4 * k + j) * stride, out[j], sizeof(float) * (size_t)cnt);
    }
}

static void output_chunk2(const float *m, size_t stride, int cnt, float bias, float *plane,
                          int64_t oh, int64_t ow, int64_t oy0, int64_t ox0)
{
    float mv[16][LANES], s[4][2][LANES], line[2 * LANES];
    for (int xi = 0; xi < 16; xi++) {
        memcpy(mv[xi], m + (size_t)xi * stride, sizeof(float) * (size_t)cnt);
        if (cnt < LANES) memset(mv[xi] + cnt, 0, sizeof(float) * (size_t)(LANES - cnt));
    }
    for (int k = 0; k < 4; k++) {
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float m0 = mv[4 * k][l], m1 = mv[4 * k + 1][l], m2 = mv[4 * k + 2][l];
            float m3 = mv[4 * k + 3][l];
            s[k][0][l] = m0 + m1 + m2;
            s[k][1][l] = m1 - m2 - m3;
        }
    }
    int64_t ncols = ow - ox0 < 2 * cnt ? ow - ox0 : 2 * cnt;
    for (int i = 0; i < 2 && oy0 + i < oh; i++) {
        for (int j = 0; j < 2; j++) {
            float r[LANES];
#pragma omp simd
            for (int l = 0; l < LANES; l++) {
                float m0 = s[0][j][l], m1 = s[1][j][l], m2 = s[2][j][l], m3 = s[3][j][l];
                r[l] = (i == 0 ? m0 + m1 + m2 : m1 - m2 - m3) + bias;
            }
            for (int l = 0; l < LANES; l++) line[2 * l + j] = r[l];
        }
        memcpy(plane + (oy0 + i) * ow + ox0, line, sizeof(float) * (size_t)ncols);
    }
}

/* Yt = A dY_t A^T with A = [1 0; 1 1; 1 -1; 0 -1]. */
static void grad_chunk2(const float *plane, int64_t oh, int64_t ow, int64_t oy0, int64_t ox0,
                        int cnt, float *v, size_t stride)
{
    float line[2 * LANES], q[2][2][LANES], hcol[4][2][LANES];
    for (int i = 0; i < 2; i++) {
        if (oy0 + i < oh) mrt_wino_load_row(line, plane + (oy0 + i) * ow, ow, ox0, 2 * LANES);
        else memset(line, 0, sizeof line);
        for (int l = 0; l < LANES; l++)
            for (int j = 0; j < 2; j++) q[i][j][l] = line[2 * l + j];
    }
    for (int j = 0; j < 2; j++) {
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float v0 = q[0][j][l], v1 = q[1][j][l];
            hcol[0][j][l] = v0;
            hcol[1][j][l] = v0 + v1;
            hcol[2][j][l] = v0 - v1;
            hcol[3][j][l] = -v1;
        }
    }
    for (int k = 0; k < 4; k++) {
        float out[4][LANES];
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float v0 = hcol[k][0][l], v1 = hcol[k][1][l];
            out[0][l] = v0;
            out[1][l] = v0 + v1;
            out[2][l] = v0 - v1;
            out[3][l] = -v1;
        }
        for (int j = 0; j < 4; j++)
            memcpy(v + (size_t)(4 * k + j) * stride, out[j], sizeof(float) * (size_t)cnt);
    }
}

static const mrt_wino_kernels portable4 = {"portable", LANES, input_chunk, output_chunk,
                                           grad_chunk};
static const mrt_wino_kernels portable2 = {"portable", LANES, input_chunk2, output_chunk2,
                                           grad_chunk2};

const mrt_wino_kernels *mrt_wino_kernels_pick(const char *name, int m)
{
    return mrt_cpu_pick(name, m == 2 ? &portable2 : &portable4, mrt_wino_kernels_avx2(m),
                        mrt_wino_kernels_avx512(m));
}

/* The transforms for a pass over tile rows of q->tw tiles. 16 lanes pay
 * only on rows of more than 8 tiles: on narrower ones (a ResNet34's last
 * two stages, 4 to 7 tiles) half of them idle, and the AVX2 transforms
 * measured faster there (bench/conv_layers, one thread, CPU time: l3 and
 * l4 backward 36 and 46 ms with AVX2, 40-43 and 48-51 with AVX-512), while
 * the wider rows of the first stages gain (l1 backward 61 -> 52-55 ms). */
static const mrt_wino_kernels *pick_kernels(int portable, const wgeom *q)
{
    if (portable) return mrt_wino_kernels_pick("portable", q->m);
    const mrt_wino_kernels *k = q->tw <= 8 ? mrt_wino_kernels_pick("avx2", q->m) : NULL;
    return k ? k : mrt_wino_kernels_pick(NULL, q->m);
}

/* Weight transforms, `kl` kernels at a time (one per lane: 8, or 16 with
 * AVX-512) so that the arithmetic vectorises and each of the alpha^2
 * outputs is stored as kl consecutive floats. G is alpha x 3, row-major. */
#define KL_MAX 16
static const float G4[6 * 3] = {1.0f / 4,  0.0f,       0.0f,       -1.0f / 6, -1.0f / 6,
                                -1.0f / 6, -1.0f / 6,  1.0f / 6,   -1.0f / 6, 1.0f / 24,
                                1.0f / 12, 1.0f / 6,   1.0f / 24,  -1.0f / 12, 1.0f / 6,
                                0.0f,      0.0f,       1.0f};
static const float G2[4 * 3] = {1.0f, 0.0f,  0.0f, 0.5f, 0.5f, 0.5f,
                                0.5f, -0.5f, 0.5f, 0.0f, 0.0f, 1.0f};

/* The bodies below are inlined with the patch size a (4 or 6) and the lane
 * count kl as constants, so that every loop but the lanes' unrolls; the
 * lanes vectorise. */
#define INLINE_BODY static inline __attribute__((always_inline))

/* u[xi * stride + l] = (G g_l G^T)[r][s] (xi = alpha r + s) for the kernels
 * g_l = src + l * lstride (row-major 3x3; rotated by 180 degrees when rot),
 * l < cnt <= kl. */
INLINE_BODY void kernel_transform_body(const int a, const int kl, const float *src, int64_t lstride,
                                       int rot, int cnt, float *u, size_t stride)
{
    const float *G = a == 4 ? G2 : G4;
    float g[9][KL_MAX], t[6][3][KL_MAX], out[NXI_MAX][KL_MAX];
    for (int l = 0; l < kl; l++)
        for (int e = 0; e < 9; e++) g[e][l] = l < cnt ? src[l * lstride + (rot ? 8 - e : e)] : 0.0f;
#pragma GCC unroll 6
    for (int r = 0; r < a; r++)
#pragma GCC unroll 3
        for (int j = 0; j < 3; j++) {
            const float c0 = G[r * 3], c1 = G[r * 3 + 1], c2 = G[r * 3 + 2];
#pragma omp simd
            for (int l = 0; l < kl; l++) t[r][j][l] = c0 * g[j][l] + c1 * g[3 + j][l] + c2 * g[6 + j][l];
        }
#pragma GCC unroll 6
    for (int r = 0; r < a; r++)
#pragma GCC unroll 6
        for (int c = 0; c < a; c++) {
            const float c0 = G[c * 3], c1 = G[c * 3 + 1], c2 = G[c * 3 + 2];
#pragma omp simd
            for (int l = 0; l < kl; l++)
                out[a * r + c][l] = t[r][0][l] * c0 + t[r][1][l] * c1 + t[r][2][l] * c2;
        }
    /* a constant length when the lanes are full, so the copies inline */
    if (cnt == kl)
        for (int xi = 0; xi < a * a; xi++) memcpy(u + (size_t)xi * stride, out[xi], sizeof(float) * (size_t)kl);
    else
        for (int xi = 0; xi < a * a; xi++)
            memcpy(u + (size_t)xi * stride, out[xi], sizeof(float) * (size_t)cnt);
}

/* dw[l * 9 ..] (3x3) += G^T du_l G for the cnt <= kl consecutive kernels
 * whose du[xi] are read `stride` apart. */
INLINE_BODY void kernel_grad_body(const int a, const int kl, const float *du, size_t stride, int cnt,
                                  float *dw)
{
    const float *G = a == 4 ? G2 : G4;
    float d[NXI_MAX][KL_MAX], t[6][3][KL_MAX], out[9][KL_MAX];
    for (int xi = 0; xi < a * a; xi++)
        for (int l = 0; l < kl; l++) d[xi][l] = l < cnt ? du[(size_t)xi * stride + l] : 0.0f;
    /* t[k][j] = sum_s du[k][s] G[s][j] */
#pragma GCC unroll 6
    for (int k = 0; k < a; k++)
#pragma GCC unroll 3
        for (int j = 0; j < 3; j++) {
#pragma omp simd
            for (int l = 0; l < kl; l++) {
                float acc = 0.0f;
#pragma GCC unroll 6
                for (int c = 0; c < a; c++) acc += d[a * k + c][l] * G[c * 3 + j];
                t[k][j][l] = acc;
            }
        }
    /* out[i][j] = sum_k G[k][i] t[k][j] */
#pragma GCC unroll 3
    for (int i = 0; i < 3; i++)
#pragma GCC unroll 3
        for (int j = 0; j < 3; j++) {
#pragma omp simd
            for (int l = 0; l < kl; l++) {
                float acc = 0.0f;
#pragma GCC unroll 6
                for (int k = 0; k < a; k++) acc += G[k * 3 + i] * t[k][j][l];
                out[i * 3 + j][l] = acc;
            }
        }
    for (int l = 0; l < cnt; l++)
        for (int e = 0; e < 9; e++) dw[l * 9 + e] += out[e][l];
}

/* The two weight transforms, compiled three times: for the baseline ISA
 * (SSE2, each 8-lane loop as two 4-float halves), with AVX2's 256-bit
 * vectors (each 8-lane loop one vector) and with AVX-512's (16 lanes). They
 * multiply and add alike (no FMA: ISO C contracts nothing), so all three
 * give the same bits. */
#define WEIGHT_KERNELS(suffix, target, kl)                                                             \
    target static void kernel_transform_##suffix(int alpha, const float *src, int64_t lstride, int rot, \
                                                 int cnt, float *u, size_t stride)                    \
    {                                                                                                  \
        if (alpha == 6) kernel_transform_body(6, kl, src, lstride, rot, cnt, u, stride);               \
        else kernel_transform_body(4, kl, src, lstride, rot, cnt, u, stride);                          \
    }                                                                                                  \
    target static void kernel_grad_##suffix(int alpha, const float *du, size_t stride, int cnt,        \
                                            float *dw)                                                 \
    {                                                                                                  \
        if (alpha == 6) kernel_grad_body(6, kl, du, stride, cnt, dw);                                  \
        else kernel_grad_body(4, kl, du, stride, cnt, dw);                                             \
    }                                                                                                  \
    static const mrt_wino_weight_kernels weight_##suffix = {#suffix, kl, kernel_transform_##suffix,    \
                                                            kernel_grad_##suffix};

WEIGHT_KERNELS(portable, , 8)
#if defined(__x86_64__) && defined(__GNUC__)
WEIGHT_KERNELS(avx2, __attribute__((target("avx2"))), 8)
WEIGHT_KERNELS(avx512f, __attribute__((target("avx512f"))), 16)
#endif

const mrt_wino_weight_kernels *mrt_wino_weight_kernels_pick(const char *name)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return mrt_cpu_pick(name, &weight_portable, &weight_avx2, &weight_avx512f);
#else
    return mrt_cpu_pick(name, &weight_portable, NULL, NULL);
#endif
}

static const mrt_wino_weight_kernels *pick_weight_kernels(int portable)
{
    return mrt_wino_weight_kernels_pick(portable ? "portable" : NULL);
}

/* ---- passes ---------------------------------------------------------------- */

/* `par`: run the loop threaded (phase schedule) or serially (inside a
 * pipeline, which is itself one thread of a parallel loop). */

/* V[xi][c][t] of channel c for the global tile rows r0 .. r0+br-1 (row r =
 * image r / th, tile row r % th) of a cin x h x w input. Tiles are walked in
 * increasing order, so a partial chunk's extra stores land on tiles this same
 * call writes next, or in the row padding: channels can run in parallel. */
static void input_rows(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                       const float *x, int64_t r0, int64_t br, int64_t c, float *v)
{
    const size_t stride = xi_stride(lay, q->cin);
    for (int64_t r = r0; r < r0 + br; r++) {
        const int64_t n = r / q->th, ty = r % q->th;
        const float *plane = x + (n * q->cin + c) * q->h * q->w;
        for (int64_t tx = 0; tx < q->tw; tx += k->lanes) {
            int cnt = (int)(q->tw - tx < k->lanes ? q->tw - tx : k->lanes);
            int64_t t0 = (r - r0) * q->tw + tx;
            k->input(plane, q->h, q->w, q->m * ty - q->ph, q->m * tx - q->pw, cnt,
                     v + (size_t)c * lay->tp + (size_t)t0, stride);
        }
    }
}

/* Yt[xi][o][t] of output channel o from the gradient, as above. */
static void grad_rows(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                      const float *dy, int64_t r0, int64_t br, int64_t o, float *v)
{
    const size_t stride = xi_stride(lay, q->cout);
    for (int64_t r = r0; r < r0 + br; r++) {
        const int64_t n = r / q->th, ty = r % q->th;
        const float *plane = dy + (n * q->cout + o) * q->oh * q->ow;
        for (int64_t tx = 0; tx < q->tw; tx += k->lanes) {
            int cnt = (int)(q->tw - tx < k->lanes ? q->tw - tx : k->lanes);
            int64_t t0 = (r - r0) * q->tw + tx;
            k->grad(plane, q->oh, q->ow, q->m * ty, q->m * tx, cnt,
                    v + (size_t)o * lay->tp + (size_t)t0, stride);
        }
    }
}

/* y = relu?(y + residual?) over len floats. ReLU is written as a compare
 * and select, not fmaxf: at -O2 gcc keeps fmaxf a library call per element
 * (it must honour fmaxf's NaN rules), which cost ~9 % of a ResNet34 plan.
 * The select gives the same result, NaN included (NaN > 0 is false: 0, as
 * fmaxf(NaN, 0)), and compiles to maxps. */
static inline float relu1(float v) { return v > 0.0f ? v : 0.0f; }

static void epilogue_span(const mrt_wino_epilogue *ep, float *y, const float *res, int64_t len)
{
    if (res && ep->relu) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) y[i] = relu1(y[i] + res[i]);
    } else if (res) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) y[i] += res[i];
    } else if (ep->relu) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) y[i] = relu1(y[i]);
    }
}

/* Output rows of channel o for tile rows r0 .. from M[xi][o][t]. */
static void output_rows(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                        const float *m, const float *bias, const mrt_wino_epilogue *ep, int64_t r0,
                        int64_t br, int64_t o, float *y)
{
    const size_t stride = xi_stride(lay, q->cout);
    const float bv = bias ? bias[o] : 0.0f;
    for (int64_t r = r0; r < r0 + br; r++) {
        const int64_t n = r / q->th, ty = r % q->th;
        float *plane = y + (n * q->cout + o) * q->oh * q->ow;
        for (int64_t tx = 0; tx < q->tw; tx += k->lanes) {
            int cnt = (int)(q->tw - tx < k->lanes ? q->tw - tx : k->lanes);
            int64_t t0 = (r - r0) * q->tw + tx;
            k->output(m + (size_t)o * lay->tp + (size_t)t0, stride, cnt, bv, plane, q->oh, q->ow,
                      q->m * ty, q->m * tx);
        }
        if (ep) {
            /* the tile row's output lines, still in cache: one contiguous span */
            const int64_t y0 = q->m * ty, y1 = y0 + q->m < q->oh ? y0 + q->m : q->oh;
            const int64_t at = y0 * q->ow, len = (y1 - y0) * q->ow;
            epilogue_span(ep, plane + at, ep->residual ? ep->residual + (plane - y) + at : NULL, len);
        }
    }
}

/* Channel tasks are handed out dynamically: on a shared machine a thread
 * that loses its core for a while then delays only its current channel. */
static void transform_input(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                            const float *x, int64_t r0, int64_t br, float *v, int par)
{
#pragma omp parallel for schedule(dynamic, 1) \
    if (par && q->nxi * q->cin * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t c = 0; c < q->cin; c++) input_rows(k, q, lay, x, r0, br, c, v);
}

/* dW's two transforms in one loop: V of x, Yt of dy. */
static void transform_input_grad(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                                 const float *x, const float *dy, int64_t r0, int64_t br,
                                 float *v, float *yt, int par)
{
#pragma omp parallel for schedule(dynamic, 1) \
    if (par && q->nxi * (q->cin + q->cout) * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t t = 0; t < q->cin + q->cout; t++) {
        if (t < q->cin) input_rows(k, q, lay, x, r0, br, t, v);
        else grad_rows(k, q, lay, dy, r0, br, t - q->cin, yt);
    }
}

static void transform_output(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                             const float *m, const float *bias, const mrt_wino_epilogue *ep,
                             int64_t r0, int64_t br, float *y, int par)
{
#pragma omp parallel for schedule(dynamic, 1) \
    if (par && q->nxi * q->cout * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t o = 0; o < q->cout; o++) output_rows(k, q, lay, m, bias, ep, r0, br, o, y);
}

/* M[xi] = U[xi] . V[xi] for the T tiles of a group. */
static void gemms_fwd(const wgeom *q, const wlayout *lay, int64_t T, const float *u,
                      const float *v, float *m, int par)
{
    const size_t us = u_stride(q), vs = xi_stride(lay, q->cin), ms = xi_stride(lay, q->cout);
#pragma omp parallel for schedule(dynamic, 1) if (par && q->cout * q->cin * T > MRT_CONV_PAR_MIN)
    for (int xi = 0; xi < q->nxi; xi++)
        mrt_cpu_gemm(CblasNoTrans, CblasNoTrans, (int)q->cout, (int)T, (int)q->cin,
                     1.0f, u + (size_t)xi * us, (int)q->cin, v + (size_t)xi * vs, (int)lay->tp,
                     0.0f, m + (size_t)xi * ms, (int)lay->tp);
}

/* dU[xi] = beta dU[xi] + Yt[xi] . V[xi]^T for the T tiles of a group. */
static void gemms_dw(const wgeom *q, const wlayout *lay, int64_t T, const float *yt,
                     const float *v, float beta, float *du, int par)
{
    const size_t us = u_stride(q), vs = xi_stride(lay, q->cin), ys = xi_stride(lay, q->cout);
#pragma omp parallel for schedule(dynamic, 1) if (par && q->cout * q->cin * T > MRT_CONV_PAR_MIN)
    for (int xi = 0; xi < q->nxi; xi++)
        mrt_cpu_gemm(CblasNoTrans, CblasTrans, (int)q->cout, (int)q->cin, (int)T,
                     1.0f, yt + (size_t)xi * ys, (int)lay->tp, v + (size_t)xi * vs, (int)lay->tp,
                     beta, du + (size_t)xi * us, (int)q->cin);
}

/* The output transform reads whole chunks, up to lanes - 1 tiles past a
 * row's end: that padding must hold finite numbers, and GEMMs never write
 * it. */
static void clear_m_padding(const wgeom *q, const wlayout *lay, float *m)
{
    const size_t ms = xi_stride(lay, q->cout);
    for (int xi = 0; xi < q->nxi; xi++)
        for (int64_t o = 0; o < q->cout; o++)
            memset(m + (size_t)xi * ms + (size_t)o * lay->tp + lay->t, 0, sizeof(float) * PAD);
}

/* u[xi][cout][cin] for the forward pass (rot = 0: u[o][c] from w[o][c]) or
 * for dX (rot = 1: cout = C, cin = O, u[c][o] from w[o][c] rotated). */
static void transform_weights(const mrt_wino_weight_kernels *wk, const wgeom *q, int rot, const float *w,
                              float *u)
{
    const size_t stride = u_stride(q);
    const int64_t n = q->cout * q->cin;
    const int kl = wk->lanes;
#pragma omp parallel for schedule(static) if (q->nxi * n > MRT_CONV_PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += kl) {
        const int cnt = (int)(n - i0 < kl ? n - i0 : kl);
        if (!rot) {
            wk->transform(q->alpha, w + i0 * 9, 9, 0, cnt, u + i0, stride);
        } else {
            /* consecutive (c, o) pairs, o fastest: the source kernels are
             * C*9 floats apart within one c, so split where c changes */
            for (int64_t i = i0; i < i0 + cnt;) {
                const int64_t c = i / q->cin, o = i % q->cin;
                const int seg = (int)(q->cin - o < i0 + cnt - i ? q->cin - o : i0 + cnt - i);
                wk->transform(q->alpha, w + (o * q->cout + c) * 9, q->cout * 9, 1, seg, u + i, stride);
                i += seg;
            }
        }
    }
}

/* The forward algorithm on a wgeom whose transformed kernels u are ready:
 * input -> V, 36 GEMMs -> M, M -> output, for every group. `work` holds V | M
 * per pipeline (or once, for the phase schedule). */
static void run_pass(const mrt_wino_kernels *k, const wgeom *q, int64_t nb, const float *u,
                     const float *in, const float *bias, const mrt_wino_epilogue *ep, float *out,
                     float *work)
{
    const wlayout lay = layout(q, nb);
    const int64_t rows = q->n * q->th, groups = groups_of(q, nb);
    const size_t per = vm_floats(q, nb);
    const size_t m_off = mrt_conv_align16((size_t)q->nxi * xi_stride(&lay, q->cin));
    const int nt = pipelines(q, nb);
    if (nt) {
#pragma omp parallel num_threads(nt) if (q->nxi * (q->cin + q->cout) * rows * q->tw > MRT_CONV_PAR_MIN)
        {
            float *v = work + (size_t)omp_get_thread_num() * per, *m = v + m_off;
            clear_m_padding(q, &lay, m);
#pragma omp for schedule(dynamic, 1)
            for (int64_t gi = 0; gi < groups; gi++) {
                const int64_t r0 = gi * nb, br = rows - r0 < nb ? rows - r0 : nb;
                transform_input(k, q, &lay, in, r0, br, v, 0);
                gemms_fwd(q, &lay, br * q->tw, u, v, m, 0);
                transform_output(k, q, &lay, m, bias, ep, r0, br, out, 0);
            }
        }
        return;
    }
    float *v = work, *m = work + m_off;
    clear_m_padding(q, &lay, m);
    for (int64_t r0 = 0; r0 < rows; r0 += nb) {
        const int64_t br = rows - r0 < nb ? rows - r0 : nb;
        transform_input(k, q, &lay, in, r0, br, v, 1);
        gemms_fwd(q, &lay, br * q->tw, u, v, m, 1);
        transform_output(k, q, &lay, m, bias, ep, r0, br, out, 1);
    }
}

void mrt_conv_wino_forward(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                           const float *x, const float *w, const float *bias, float *y,
                           float *scratch)
{
    const wgeom q = wgeom_fwd(g, m);
    const mrt_wino_kernels *k = pick_kernels(portable, &q);
    float *u = scratch;
    transform_weights(pick_weight_kernels(portable), &q, 0, w, u);
    run_pass(k, &q, nb, u, x, bias, NULL, y, u + u_floats(&q));
}

/* Inference: the kernels transformed once, the pass run many times. */
size_t mrt_conv_wino_weights_floats(const mrt_conv_geom *g, int m)
{
    const wgeom q = wgeom_fwd(g, m);
    return u_floats(&q);
}

void mrt_conv_wino_weights(const mrt_conv_geom *g, int m, const float *w, float *u)
{
    const wgeom q = wgeom_fwd(g, m);
    transform_weights(pick_weight_kernels(0), &q, 0, w, u);
}

size_t mrt_conv_wino_fused_scratch(const mrt_conv_geom *g, int m, int64_t nb)
{
    const wgeom q = wgeom_fwd(g, m);
    return pass_floats(&q, nb, 0) - u_floats(&q);
}

void mrt_conv_wino_forward_fused(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                                 const float *x, const float *u, const float *bias,
                                 const mrt_wino_epilogue *ep, float *y, float *scratch)
{
    const wgeom q = wgeom_fwd(g, m);
    run_pass(pick_kernels(portable, &q), &q, nb, u, x, bias, ep, y, scratch);
}

/* dU summed over all tile groups into du (36 x cout x cin); `work` holds,
 * per pipeline, V | Yt | that pipeline's dU (or V | Yt once). */
static void accumulate_du(const mrt_wino_kernels *k, const wgeom *q, int64_t nb, const float *x,
                          const float *dy, float *du, float *work)
{
    const wlayout lay = layout(q, nb);
    const int64_t rows = q->n * q->th, groups = groups_of(q, nb);
    const size_t vm = vm_floats(q, nb), per = vm + u_floats(q);
    const size_t y_off = mrt_conv_align16((size_t)q->nxi * xi_stride(&lay, q->cin));
    const size_t us = u_stride(q);
    const int nt = pipelines(q, nb);
    if (!nt) {
        float *v = work, *yt = work + y_off;
        for (int64_t r0 = 0; r0 < rows; r0 += nb) {
            const int64_t br = rows - r0 < nb ? rows - r0 : nb;
            transform_input_grad(k, q, &lay, x, dy, r0, br, v, yt, 1);
            /* beta = 0 on the first group starts dU from zero */
            gemms_dw(q, &lay, br * q->tw, yt, v, r0 == 0 ? 0.0f : 1.0f, du, 1);
        }
        return;
    }
    /* Groups go round-robin to the threads that actually run (a team can be
     * smaller than asked for); each starts its own sum with beta = 0 on its
     * first group, and the sums are added in thread order. */
    int team = 1;
#pragma omp parallel num_threads(nt) if (q->nxi * (q->cin + q->cout) * rows * q->tw > MRT_CONV_PAR_MIN)
    {
        const int tid = omp_get_thread_num(), size = omp_get_num_threads();
#pragma omp single
        team = size;
        float *v = work + (size_t)tid * per, *yt = v + y_off, *mine = v + vm;
        for (int64_t gi = tid; gi < groups; gi += size) {
            const int64_t r0 = gi * nb, br = rows - r0 < nb ? rows - r0 : nb;
            transform_input_grad(k, q, &lay, x, dy, r0, br, v, yt, 0);
            gemms_dw(q, &lay, br * q->tw, yt, v, gi == tid ? 0.0f : 1.0f, mine, 0);
        }
    }
    const int used = groups < team ? (int)groups : team;
    const size_t n = (size_t)q->nxi * us;
#pragma omp parallel for schedule(static) if ((int64_t)n > MRT_CONV_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int t = 0; t < used; t++) s += work[(size_t)t * per + vm + i];
        du[i] = s;
    }
}

void mrt_conv_wino_backward(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                            const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *scratch)
{
    const mrt_wino_weight_kernels *wk = pick_weight_kernels(portable);
    if (dw) {
        const wgeom q = wgeom_fwd(g, m);
        const size_t us = u_stride(&q);
        float *du = scratch;
        accumulate_du(pick_kernels(portable, &q), &q, nb, x, dy, du, scratch + u_floats(&q));
        const int64_t n = q.cout * q.cin;
#pragma omp parallel for schedule(static) if (q.nxi * n > MRT_CONV_PAR_MIN)
        for (int64_t i0 = 0; i0 < n; i0 += wk->lanes)
            wk->grad(q.alpha, du + i0, us, (int)(n - i0 < wk->lanes ? n - i0 : wk->lanes), dw + i0 * 9);
    }
    if (dx) {
        const wgeom q = wgeom_dx(g, m);
        float *u = scratch;
        transform_weights(wk, &q, 1, w, u);
        run_pass(pick_kernels(portable, &q), &q, nb, u, dy, NULL, NULL, dx, u + u_floats(&q));
    }
}
