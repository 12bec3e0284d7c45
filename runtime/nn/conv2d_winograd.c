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
 * F(4x4, 3x3) loses a few bits against direct summation (the transform
 * constants reach 8 and 1/24); relative errors stay around 1e-5 of the
 * output scale for the channel counts of a ResNet, which training does not
 * notice. The tests bound it.
 *
 * Work is done for groups of `nb` tile rows (T = nb * tiles per row; a tile
 * row is 4 output rows of one image, and a group may span images) in three
 * phases: transforms as OpenMP loops over (image, channel) planes, then the
 * 36 GEMMs as an OpenMP loop over xi, each a single-threaded sgemm (OpenBLAS
 * runs single-threaded inside a parallel region). Every GEMM is computed by
 * one thread in a fixed order, so results do not depend on the thread count. */
#include <cblas.h>
#include <string.h>
#include "conv2d.h"

#define NXI 36    /* 6x6 transformed positions */
#define LANES 16  /* tiles of one tile row transformed together */
#define LCOLS (4 * LANES + 2) /* input columns those tiles read */

/* Tiles per group (when the batch has them). With few channels the
 * transforms, which stream V and M, weigh most and smaller groups keep V and
 * M nearer the core; with many channels the GEMMs dominate and want long
 * rows, and V and M outgrow the caches whatever the group. Every group also
 * costs three barriers. (Measured with bench/conv_layers on the ResNet34
 * shapes, 2 threads: 64 and 128 channels best at 400-900 tiles, 256 and 512
 * with the whole batch.) */
#define WINO_FEW_CHANNELS 256 /* input + output channels */
#define WINO_TILES_FEW 512
#define WINO_TILES_MANY 2048

/* One transform problem: a stride-1 3x3 convolution from `cin` channels of
 * h x w to `cout` channels of oh x ow (the forward pass, or dX's). */
typedef struct {
    int64_t n, cin, cout, h, w, oh, ow, ph, pw;
    int64_t th, tw; /* tile rows and columns per image */
} wgeom;

static wgeom wgeom_fwd(const mrt_conv_geom *g)
{
    wgeom q = {g->n, g->c, g->o, g->h, g->w, g->oh, g->ow, g->ph, g->pw, 0, 0};
    q.th = (q.oh + 3) / 4;
    q.tw = (q.ow + 3) / 4;
    return q;
}

/* dX = conv(dY, rot180(W) with channels swapped, padding 2 - pad). */
static wgeom wgeom_dx(const mrt_conv_geom *g)
{
    wgeom q = {g->n, g->o, g->c, g->oh, g->ow, g->h, g->w, 2 - g->ph, 2 - g->pw, 0, 0};
    q.th = (q.oh + 3) / 4;
    q.tw = (q.ow + 3) / 4;
    return q;
}

int64_t mrt_conv_wino_block(const mrt_conv_geom *g)
{
    wgeom q = wgeom_fwd(g);
    int64_t target = g->c + g->o <= WINO_FEW_CHANNELS ? WINO_TILES_FEW : WINO_TILES_MANY;
    int64_t nb = (target + q.tw - 1) / q.tw;
    if (nb > g->n * q.th) nb = g->n * q.th;
    return nb < 1 ? 1 : nb;
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

/* Scratch of one transform-GEMM-transform pass: U | V | M. */
static size_t pass_floats(const wgeom *q, int64_t nb)
{
    wlayout l = layout(q, nb);
    return mrt_conv_align16(NXI * u_stride(q)) + mrt_conv_align16(NXI * xi_stride(&l, q->cin)) +
           mrt_conv_align16(NXI * xi_stride(&l, q->cout));
}

size_t mrt_conv_wino_fwd_scratch(const mrt_conv_geom *g, int64_t nb)
{
    wgeom q = wgeom_fwd(g);
    return pass_floats(&q, nb);
}

size_t mrt_conv_wino_bwd_scratch(const mrt_conv_geom *g, int64_t nb, int want_dx, int want_dw)
{
    wgeom f = wgeom_fwd(g), d = wgeom_dx(g);
    /* dW needs V (input transform), Yt (gradient transform) and dU: the
     * same three sizes as a forward pass. dX needs a pass on dY; its tiles
     * cover the input plane, which can hold more tiles than the output. */
    size_t a = want_dw ? pass_floats(&f, nb) : 0;
    size_t b = want_dx ? pass_floats(&d, nb) : 0;
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
    float mv[NXI][LANES], s[6][4][LANES], line[4 * LANES];
    for (int xi = 0; xi < NXI; xi++) {
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

static const mrt_wino_kernels portable_kernels = {"portable", LANES, input_chunk, output_chunk,
                                                  grad_chunk};

static const mrt_wino_kernels *pick_kernels(int portable)
{
    const mrt_wino_kernels *k = portable ? NULL : mrt_wino_kernels_avx2();
    return k ? k : &portable_kernels;
}

/* Weight transforms, 8 kernels at a time (one per lane) so that the
 * arithmetic vectorises and each of the 36 outputs is stored as 8
 * consecutive floats. Multiplications by 1/6, 1/12, 1/24 rather than
 * divisions: a division costs an order of magnitude more and the last-bit
 * difference is far below the algorithm's own rounding. */
#define KL 8
static const float C4 = 1.0f / 4.0f, C6 = 1.0f / 6.0f, C12 = 1.0f / 12.0f, C24 = 1.0f / 24.0f;

/* u[xi * stride + l] = (G g_l G^T)[k][j] (xi = 6k + j) for the kernels
 * g_l = src + l * lstride (row-major 3x3; rotated by 180 degrees when rot),
 * l < cnt. */
static void kernel_transform8(const float *src, int64_t lstride, int rot, int cnt, float *u,
                              size_t stride)
{
    float g[9][KL], t[6][3][KL], out[NXI][KL];
    for (int l = 0; l < KL; l++)
        for (int e = 0; e < 9; e++) g[e][l] = l < cnt ? src[l * lstride + (rot ? 8 - e : e)] : 0.0f;
    for (int j = 0; j < 3; j++) {
#pragma omp simd
        for (int l = 0; l < KL; l++) {
            float g0 = g[j][l], g1 = g[3 + j][l], g2 = g[6 + j][l];
            t[0][j][l] = g0 * C4;
            t[1][j][l] = -(g0 + g1 + g2) * C6;
            t[2][j][l] = -(g0 - g1 + g2) * C6;
            t[3][j][l] = g0 * C24 + g1 * C12 + g2 * C6;
            t[4][j][l] = g0 * C24 - g1 * C12 + g2 * C6;
            t[5][j][l] = g2;
        }
    }
    for (int r = 0; r < 6; r++) {
#pragma omp simd
        for (int l = 0; l < KL; l++) {
            float g0 = t[r][0][l], g1 = t[r][1][l], g2 = t[r][2][l];
            out[6 * r + 0][l] = g0 * C4;
            out[6 * r + 1][l] = -(g0 + g1 + g2) * C6;
            out[6 * r + 2][l] = -(g0 - g1 + g2) * C6;
            out[6 * r + 3][l] = g0 * C24 + g1 * C12 + g2 * C6;
            out[6 * r + 4][l] = g0 * C24 - g1 * C12 + g2 * C6;
            out[6 * r + 5][l] = g2;
        }
    }
    for (int xi = 0; xi < NXI; xi++)
        memcpy(u + (size_t)xi * stride, out[xi], sizeof(float) * (size_t)cnt);
}

/* dw[l * 9 ..] (3x3) += G^T du_l G for the cnt consecutive kernels whose
 * du[xi] are read `stride` apart. */
static void kernel_grad8(const float *du, size_t stride, int cnt, float *dw)
{
    float d[NXI][KL], t[6][3][KL], out[9][KL];
    for (int xi = 0; xi < NXI; xi++)
        for (int l = 0; l < KL; l++) d[xi][l] = l < cnt ? du[(size_t)xi * stride + l] : 0.0f;
    for (int k = 0; k < 6; k++) {
#pragma omp simd
        for (int l = 0; l < KL; l++) {
            float u0 = d[6 * k][l], u1 = d[6 * k + 1][l], u2 = d[6 * k + 2][l];
            float u3 = d[6 * k + 3][l], u4 = d[6 * k + 4][l], u5 = d[6 * k + 5][l];
            t[k][0][l] = u0 * C4 - (u1 + u2) * C6 + (u3 + u4) * C24;
            t[k][1][l] = (u2 - u1) * C6 + (u3 - u4) * C12;
            t[k][2][l] = (u3 + u4 - u1 - u2) * C6 + u5;
        }
    }
    for (int j = 0; j < 3; j++) {
#pragma omp simd
        for (int l = 0; l < KL; l++) {
            float u0 = t[0][j][l], u1 = t[1][j][l], u2 = t[2][j][l];
            float u3 = t[3][j][l], u4 = t[4][j][l], u5 = t[5][j][l];
            out[0 * 3 + j][l] = u0 * C4 - (u1 + u2) * C6 + (u3 + u4) * C24;
            out[1 * 3 + j][l] = (u2 - u1) * C6 + (u3 - u4) * C12;
            out[2 * 3 + j][l] = (u3 + u4 - u1 - u2) * C6 + u5;
        }
    }
    for (int l = 0; l < cnt; l++)
        for (int e = 0; e < 9; e++) dw[l * 9 + e] += out[e][l];
}

/* ---- passes ---------------------------------------------------------------- */

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
            k->input(plane, q->h, q->w, 4 * ty - q->ph, 4 * tx - q->pw, cnt,
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
            k->grad(plane, q->oh, q->ow, 4 * ty, 4 * tx, cnt,
                    v + (size_t)o * lay->tp + (size_t)t0, stride);
        }
    }
}

/* Channel tasks are scheduled dynamically: on a shared machine a thread
 * that loses its core for a while then delays only its current channel. */
static void transform_input(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                            const float *x, int64_t r0, int64_t br, float *v)
{
#pragma omp parallel for schedule(dynamic, 1) if (NXI * q->cin * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t c = 0; c < q->cin; c++) input_rows(k, q, lay, x, r0, br, c, v);
}

/* dW's two transforms in one loop (one barrier): V of x, Yt of dy. */
static void transform_input_grad(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                                 const float *x, const float *dy, int64_t r0, int64_t br,
                                 float *v, float *yt)
{
#pragma omp parallel for schedule(dynamic, 1) \
    if (NXI * (q->cin + q->cout) * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t t = 0; t < q->cin + q->cout; t++) {
        if (t < q->cin) input_rows(k, q, lay, x, r0, br, t, v);
        else grad_rows(k, q, lay, dy, r0, br, t - q->cin, yt);
    }
}

/* The output rows of tile rows r0 .. from M[xi][o][t]. */
static void transform_output(const mrt_wino_kernels *k, const wgeom *q, const wlayout *lay,
                             const float *m, const float *bias, int64_t r0, int64_t br, float *y)
{
    const size_t stride = xi_stride(lay, q->cout);
#pragma omp parallel for schedule(dynamic, 1) if (NXI * q->cout * (int64_t)lay->t > MRT_CONV_PAR_MIN)
    for (int64_t o = 0; o < q->cout; o++) {
        const float bv = bias ? bias[o] : 0.0f;
        for (int64_t r = r0; r < r0 + br; r++) {
            const int64_t n = r / q->th, ty = r % q->th;
            float *plane = y + (n * q->cout + o) * q->oh * q->ow;
            for (int64_t tx = 0; tx < q->tw; tx += k->lanes) {
                int cnt = (int)(q->tw - tx < k->lanes ? q->tw - tx : k->lanes);
                int64_t t0 = (r - r0) * q->tw + tx;
                k->output(m + (size_t)o * lay->tp + (size_t)t0, stride, cnt, bv, plane, q->oh,
                          q->ow, 4 * ty, 4 * tx);
            }
        }
    }
}

/* u[xi][cout][cin] for the forward pass (rot = 0: u[o][c] from w[o][c]) or
 * for dX (rot = 1: cout = C, cin = O, u[c][o] from w[o][c] rotated). */
static void transform_weights(const wgeom *q, int rot, const float *w, float *u)
{
    const size_t stride = u_stride(q);
    const int64_t n = q->cout * q->cin;
#pragma omp parallel for schedule(static) if (NXI * n > MRT_CONV_PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += KL) {
        const int cnt = (int)(n - i0 < KL ? n - i0 : KL);
        if (!rot) {
            kernel_transform8(w + i0 * 9, 9, 0, cnt, u + i0, stride);
        } else {
            /* consecutive (c, o) pairs, o fastest: the source kernels are
             * C*9 floats apart within one c, so split where c changes */
            for (int64_t i = i0; i < i0 + cnt;) {
                const int64_t c = i / q->cin, o = i % q->cin;
                const int seg = (int)(q->cin - o < i0 + cnt - i ? q->cin - o : i0 + cnt - i);
                kernel_transform8(w + (o * q->cout + c) * 9, q->cout * 9, 1, seg, u + i, stride);
                i += seg;
            }
        }
    }
}

/* The forward algorithm on a wgeom whose transformed kernels u[xi][cout][cin]
 * are ready: input -> V, 36 GEMMs -> M, M -> output. */
static void run_pass(const mrt_wino_kernels *k, const wgeom *q, int64_t nb, const float *u,
                     const float *in, const float *bias, float *out, float *v, float *m)
{
    const wlayout lay = layout(q, nb);
    const size_t us = u_stride(q), vs = xi_stride(&lay, q->cin), ms = xi_stride(&lay, q->cout);
    /* The output transform reads whole chunks, up to lanes - 1 tiles past a
     * row's end: the padding must hold finite numbers. GEMMs never write it. */
    for (int xi = 0; xi < NXI; xi++)
        for (int64_t o = 0; o < q->cout; o++)
            memset(m + (size_t)xi * ms + (size_t)o * lay.tp + lay.t, 0, sizeof(float) * PAD);
    const int64_t rows = q->n * q->th;
    for (int64_t r0 = 0; r0 < rows; r0 += nb) {
        const int64_t br = rows - r0 < nb ? rows - r0 : nb;
        const int64_t T = br * q->tw;
        transform_input(k, q, &lay, in, r0, br, v);
#pragma omp parallel for schedule(dynamic, 1) if (q->cout * q->cin * T > MRT_CONV_PAR_MIN)
        for (int xi = 0; xi < NXI; xi++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)q->cout, (int)T,
                        (int)q->cin, 1.0f, u + (size_t)xi * us, (int)q->cin, v + (size_t)xi * vs,
                        (int)lay.tp, 0.0f, m + (size_t)xi * ms, (int)lay.tp);
        transform_output(k, q, &lay, m, bias, r0, br, out);
    }
}

void mrt_conv_wino_forward(const mrt_conv_geom *g, int64_t nb, int portable, const float *x,
                           const float *w, const float *bias, float *y, float *scratch)
{
    const mrt_wino_kernels *k = pick_kernels(portable);
    const wgeom q = wgeom_fwd(g);
    const wlayout lay = layout(&q, nb);
    float *u = scratch;
    float *v = u + mrt_conv_align16(NXI * u_stride(&q));
    float *m = v + mrt_conv_align16(NXI * xi_stride(&lay, q.cin));
    transform_weights(&q, 0, w, u);
    run_pass(k, &q, nb, u, x, bias, y, v, m);
}

void mrt_conv_wino_backward(const mrt_conv_geom *g, int64_t nb, int portable, const float *x,
                            const float *w, const float *dy, float *dx, float *dw,
                            float *scratch)
{
    const mrt_wino_kernels *k = pick_kernels(portable);
    if (dw) {
        const wgeom q = wgeom_fwd(g);
        const wlayout lay = layout(&q, nb);
        const size_t us = u_stride(&q), vs = xi_stride(&lay, q.cin), ys = xi_stride(&lay, q.cout);
        float *du = scratch;
        float *v = du + mrt_conv_align16(NXI * us);
        float *yt = v + mrt_conv_align16(NXI * vs);
        const int64_t rows = q.n * q.th;
        for (int64_t r0 = 0; r0 < rows; r0 += nb) {
            const int64_t br = rows - r0 < nb ? rows - r0 : nb;
            const int64_t T = br * q.tw;
            transform_input_grad(k, &q, &lay, x, dy, r0, br, v, yt);
            /* beta = 0 on the first group starts dU from zero. */
            const float beta = r0 == 0 ? 0.0f : 1.0f;
#pragma omp parallel for schedule(dynamic, 1) if (q.cout * q.cin * T > MRT_CONV_PAR_MIN)
            for (int xi = 0; xi < NXI; xi++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)q.cout, (int)q.cin,
                            (int)T, 1.0f, yt + (size_t)xi * ys, (int)lay.tp,
                            v + (size_t)xi * vs, (int)lay.tp, beta, du + (size_t)xi * us,
                            (int)q.cin);
        }
        const int64_t n = q.cout * q.cin;
#pragma omp parallel for schedule(static) if (NXI * n > MRT_CONV_PAR_MIN)
        for (int64_t i0 = 0; i0 < n; i0 += KL)
            kernel_grad8(du + i0, us, (int)(n - i0 < KL ? n - i0 : KL), dw + i0 * 9);
    }
    if (dx) {
        const wgeom q = wgeom_dx(g);
        const wlayout lay = layout(&q, nb);
        float *u = scratch;
        float *v = u + mrt_conv_align16(NXI * u_stride(&q));
        float *m = v + mrt_conv_align16(NXI * xi_stride(&lay, q.cin));
        transform_weights(&q, 1, w, u);
        run_pass(k, &q, nb, u, dy, NULL, dx, v, m);
    }
}
