/* Convolution and linear layers (runtime/nn/conv2d*.c, linear.c, workspace.c).
 *
 * Every algorithm path is checked against a naive direct convolution written
 * here with double accumulation, forward and backward; the backward is also
 * checked against central finite differences of the forward. The kernels'
 * error is bounded relative to sum |w * x| of the terms each output sums,
 * which bounds any order of summation. Paths the dispatcher would not pick on
 * small shapes are forced through mrt_conv2d_*_opts. */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/nn.h"
#include "../../runtime/nn/conv2d.h"
#include "../../runtime/cpu/cpu_features.h"
#include "../../runtime/cpu/gemm.h"

/* im2col / 1x1: float sums of up to a few thousand terms; measured worst
 * ~3e-7 (random-walk rounding), bound kept well above for other BLAS builds. */
#define GEMM_REL 1e-5
/* Winograd F(4x4, 3x3): the transforms scale values by up to 8 * 8 before
 * the GEMM and back after; measured worst ~3e-6 up to 512 channels. */
#define WINO_REL 5e-5
/* Winograd F(2x2, 3x3): transform constants 1 and 1/2, errors like a direct
 * sum's. */
#define WINO2_REL 2e-5
#define ABS_TOL 1e-6

typedef struct {
    int64_t n, c, h, w, o, kh, kw;
    int sh, sw, ph, pw;
    int bias;
} conv_case;

static int64_t out_size(int64_t in, int64_t k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* ---- tensors <-> doubles ----------------------------------------------------- */

static double *to_doubles(const mrt_tensor *t) {
    int64_t n = tu_numel(t);
    double *a = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    ck_assert_ptr_nonnull(a);
    for (int64_t i = 0; i < n; i++) a[i] = tu_get(t, i);
    return a;
}

static double *zeros_d(int64_t n) {
    double *a = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    ck_assert_ptr_nonnull(a);
    return a;
}

/* ---- naive references -------------------------------------------------------- */

static void ref_forward(const conv_case *k, const double *x, const double *w, const double *b,
                        double *y, double *bound) {
    const int64_t oh = out_size(k->h, k->kh, k->sh, k->ph), ow = out_size(k->w, k->kw, k->sw, k->pw);
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double s = b ? b[o] : 0.0, a = b ? fabs(b[o]) : 0.0;
                    for (int64_t c = 0; c < k->c; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iy = oy * k->sh - k->ph + i, ix = ox * k->sw - k->pw + j;
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                                double t = w[((o * k->c + c) * k->kh + i) * k->kw + j] *
                                           x[((n * k->c + c) * k->h + iy) * k->w + ix];
                                s += t;
                                a += fabs(t);
                            }
                    int64_t idx = ((n * k->o + o) * oh + oy) * ow + ox;
                    y[idx] = s;
                    bound[idx] = a;
                }
}

static void ref_backward(const conv_case *k, const double *x, const double *w, const double *dy,
                         double *dx, double *dxb, double *dw, double *dwb, double *db,
                         double *dbb) {
    const int64_t oh = out_size(k->h, k->kh, k->sh, k->ph), ow = out_size(k->w, k->kw, k->sw, k->pw);
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double g = dy[((n * k->o + o) * oh + oy) * ow + ox];
                    db[o] += g;
                    dbb[o] += fabs(g);
                    for (int64_t c = 0; c < k->c; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iy = oy * k->sh - k->ph + i, ix = ox * k->sw - k->pw + j;
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                                int64_t wi = ((o * k->c + c) * k->kh + i) * k->kw + j;
                                int64_t xi = ((n * k->c + c) * k->h + iy) * k->w + ix;
                                dx[xi] += w[wi] * g;
                                dxb[xi] += fabs(w[wi] * g);
                                dw[wi] += x[xi] * g;
                                dwb[wi] += fabs(x[xi] * g);
                            }
                }
}

/* Largest |got - want| / (bound + ABS_TOL / rel) over all elements, so that a
 * result passes when it is <= rel. */
static double worst_ratio(const mrt_tensor *got, const double *want, const double *bound,
                          double rel, int64_t *where) {
    double worst = 0.0;
    int64_t n = tu_numel(got);
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(tu_get(got, i) - want[i]) / (bound[i] + ABS_TOL / rel);
        if (isnan(e)) e = INFINITY;
        if (e > worst) {
            worst = e;
            *where = i;
        }
    }
    return worst;
}

#define ASSERT_CLOSE(got, want, bound, rel, what, k, algo, nb)                                   \
    do {                                                                                        \
        int64_t at_ = 0;                                                                        \
        double r_ = worst_ratio((got), (want), (bound), (rel), &at_);                           \
        ck_assert_msg(r_ <= (rel),                                                              \
                      "%s (%s, block %d) N%lld C%lld %lldx%lld O%lld k%lldx%lld s%dx%d p%dx%d: " \
                      "error ratio %.3g > %.3g at %lld (got %.9g want %.9g)",                   \
                      (what), mrt_conv_algo_name(algo), (int)(nb), (long long)(k)->n,           \
                      (long long)(k)->c, (long long)(k)->h, (long long)(k)->w,                  \
                      (long long)(k)->o, (long long)(k)->kh, (long long)(k)->kw, (k)->sh,       \
                      (k)->sw, (k)->ph, (k)->pw, r_, (double)(rel), (long long)at_,             \
                      tu_get((got), at_), (want)[at_]);                                         \
    } while (0)

static mrt_conv_geom geom_of(const conv_case *k) {
    mrt_conv_geom g = {k->n, k->c, k->h, k->w, k->o, k->kh, k->kw,
                       out_size(k->h, k->kh, k->sh, k->ph), out_size(k->w, k->kw, k->sw, k->pw),
                       k->sh, k->sw, k->ph, k->pw};
    return g;
}

static mrt_conv2d_params params_of(const conv_case *k) {
    mrt_conv2d_params p = {k->sh, k->sw, k->ph, k->pw, 0};
    return p;
}

static double rel_of(mrt_conv_algo a)
{
    return a == MRT_CONV_WINOGRAD ? WINO_REL : a == MRT_CONV_WINOGRAD2 ? WINO2_REL : GEMM_REL;
}

static int is_wino(mrt_conv_algo a) { return a == MRT_CONV_WINOGRAD || a == MRT_CONV_WINOGRAD2; }

/* Inputs of a case, filled deterministically. */
typedef struct {
    mrt_tensor x, w, b;
} operands;

static void make_operands(const conv_case *k, uint64_t seed, operands *op) {
    memset(op, 0, sizeof *op);
    TU_ALLOC(&op->x, MRT_F32, k->n, k->c, k->h, k->w);
    TU_ALLOC(&op->w, MRT_F32, k->o, k->c, k->kh, k->kw);
    tu_fill_uniform(&op->x, seed, -1.0, 1.0);
    tu_fill_uniform(&op->w, seed + 1, -0.5, 0.5);
    if (k->bias) {
        TU_ALLOC(&op->b, MRT_F32, k->o);
        tu_fill_uniform(&op->b, seed + 2, -1.0, 1.0);
    }
}

static void free_operands(operands *op) {
    mrt_tensor_release(&op->x);
    mrt_tensor_release(&op->w);
    mrt_tensor_release(&op->b);
}

static const mrt_conv_algo ALGOS[] = {MRT_CONV_AUTO, MRT_CONV_IM2COL, MRT_CONV_GEMM1X1,
                                      MRT_CONV_WINOGRAD, MRT_CONV_WINOGRAD2, MRT_CONV_ONEDNN};
#define N_ALGOS 6
static const int64_t BLOCKS[] = {0, 1, 2, 5};
#define N_BLOCKS 4

/* ---- forward ------------------------------------------------------------------- */

static const conv_case FWD_CASES[] = {
    /* n  c  h   w   o  kh kw sh sw ph pw bias */
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1, 0},
    {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1},
    {3, 5, 11, 13, 6, 3, 3, 1, 1, 0, 0, 0},
    {2, 4, 9, 10, 3, 3, 3, 1, 1, 2, 2, 1},
    {2, 3, 9, 11, 5, 3, 3, 2, 2, 1, 1, 1},
    {3, 4, 8, 8, 7, 1, 1, 1, 1, 0, 0, 1},
    {2, 6, 9, 7, 5, 1, 1, 2, 2, 0, 0, 0},
    {2, 1, 19, 23, 8, 7, 7, 2, 2, 3, 3, 0},
    {1, 2, 12, 15, 3, 7, 7, 1, 1, 3, 3, 1},
    {2, 3, 10, 12, 4, 3, 1, 1, 2, 1, 0, 1},
    {2, 2, 7, 8, 3, 2, 4, 3, 1, 0, 2, 0},
    {1, 3, 5, 6, 2, 5, 5, 1, 1, 0, 0, 1},
    {5, 3, 4, 5, 4, 3, 3, 1, 1, 1, 1, 0},
    /* Winograd: a tile row longer than one 16-tile chunk, partial tiles;
     * unequal paddings; outputs smaller than one tile */
    {2, 2, 6, 70, 3, 3, 3, 1, 1, 1, 1, 1},
    {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 0, 1},
    {2, 3, 6, 8, 4, 3, 3, 1, 1, 0, 2, 0},
    {2, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, 1},
    {1, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1},
    /* the shapes of a ResNet in miniature: 16+ channels so AUTO picks Winograd */
    {3, 16, 9, 14, 24, 3, 3, 1, 1, 1, 1, 0},
    {2, 16, 8, 13, 32, 1, 1, 2, 2, 0, 0, 0},
    /* large enough for the threaded loops (MRT_CONV_PAR_MIN) */
    {4, 32, 12, 20, 32, 3, 3, 1, 1, 1, 1, 1},
    {4, 8, 12, 14, 8, 3, 3, 2, 2, 1, 1, 1},
    {4, 16, 10, 12, 16, 1, 1, 1, 1, 0, 0, 1},
};
#define N_FWD ((int)(sizeof FWD_CASES / sizeof FWD_CASES[0]))

START_TEST(test_forward_against_naive) {
    const conv_case *k = &FWD_CASES[_i];
    mrt_conv_geom g = geom_of(k);
    mrt_conv2d_params p = params_of(k);
    operands op;
    make_operands(k, 100 + (uint64_t)_i, &op);
    double *x = to_doubles(&op.x), *w = to_doubles(&op.w), *b = k->bias ? to_doubles(&op.b) : NULL;
    int64_t ny = k->n * k->o * g.oh * g.ow;
    double *ref = zeros_d(ny), *bound = zeros_d(ny);
    ref_forward(k, x, w, b, ref, bound);
    mrt_workspace ws = {0};
    for (int a = 0; a < N_ALGOS; a++) {
        if (!mrt_conv2d_algo_supports(ALGOS[a], &g)) continue;
        mrt_conv_algo used = ALGOS[a] == MRT_CONV_AUTO ? mrt_conv2d_choose(&g, 0) : ALGOS[a];
        /* Winograd: the AVX2 transforms (where the CPU has them) and the
         * portable ones. */
        for (int v = 0; v < (is_wino(used) ? 2 : 1) * N_BLOCKS; v++) {
            const int bi = v % N_BLOCKS;
            /* AUTO and oneDNN: only their own block choice; portable
             * transforms: two */
            if ((ALGOS[a] == MRT_CONV_AUTO && v > 0) || (v >= N_BLOCKS && bi > 1)) continue;
            if (ALGOS[a] == MRT_CONV_ONEDNN && v > 0) continue;
            mrt_conv2d_opts opts = {ALGOS[a], BLOCKS[bi], v / N_BLOCKS};
            mrt_tensor y = {0};
            TU_OK(mrt_conv2d_forward_opts(&op.x, &op.w, k->bias ? &op.b : NULL, &p, &y, &ws,
                                          &opts));
            TU_ASSERT_SHAPE(&y, k->n, k->o, g.oh, g.ow);
            ASSERT_CLOSE(&y, ref, bound, rel_of(used), "forward", k, ALGOS[a], BLOCKS[bi]);
            mrt_tensor_release(&y);
        }
    }
    /* The public entry point (automatic choice, no workspace given). */
    mrt_tensor y = {0};
    TU_OK(mrt_conv2d_forward(&op.x, &op.w, k->bias ? &op.b : NULL, &p, &y, NULL));
    ASSERT_CLOSE(&y, ref, bound, rel_of(mrt_conv2d_choose(&g, 0)), "forward", k, MRT_CONV_AUTO, 0);
    mrt_tensor_release(&y);
    mrt_workspace_free(&ws);
    free(x);
    free(w);
    free(b);
    free(ref);
    free(bound);
    free_operands(&op);
}
END_TEST

/* Strided input, weight and bias views, and preallocated outputs (strided,
 * or contiguous with stale contents) give the result of contiguous operands. */
START_TEST(test_forward_views) {
    static const conv_case cases[] = {
        {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1},
        {2, 16, 6, 9, 16, 3, 3, 1, 1, 1, 1, 1},
        {3, 4, 8, 8, 7, 1, 1, 1, 1, 0, 0, 1},
    };
    for (int ci = 0; ci < 3; ci++) {
        const conv_case *k = &cases[ci];
        mrt_conv_geom g = geom_of(k);
        mrt_conv2d_params p = params_of(k);
        operands op;
        make_operands(k, 7 + (uint64_t)ci, &op);
        mrt_tensor ref = {0};
        TU_OK(mrt_conv2d_forward(&op.x, &op.w, &op.b, &p, &ref, NULL));

        /* x as an NHWC buffer seen through a permutation; w narrowed out of a
         * wider tensor; b every other element of a longer vector. */
        mrt_tensor xh = {0}, xv = {0}, wbig = {0}, wv = {0}, bbig = {0}, bv = {0};
        TU_ALLOC(&xh, MRT_F32, k->n, k->h, k->w, k->c);
        const int perm[4] = {0, 3, 1, 2};
        TU_OK(mrt_view_permute(&xh, perm, &xv));
        TU_OK(mrt_tensor_copy(&xv, &op.x));
        TU_ALLOC(&wbig, MRT_F32, k->o, k->c + 2, k->kh, k->kw);
        TU_OK(mrt_view_narrow(&wbig, 1, 1, k->c, &wv));
        TU_OK(mrt_tensor_copy(&wv, &op.w));
        TU_ALLOC(&bbig, MRT_F32, k->o, 2);
        TU_OK(mrt_view_select(&bbig, 1, 1, &bv));
        TU_OK(mrt_tensor_copy(&bv, &op.b));
        ck_assert(!mrt_tensor_is_contiguous(&xv));
        ck_assert(!mrt_tensor_is_contiguous(&wv));
        ck_assert(!mrt_tensor_is_contiguous(&bv));

        /* y: a strided view into a larger buffer */
        mrt_tensor ybig = {0}, yv = {0};
        TU_ALLOC(&ybig, MRT_F32, k->n, k->o, g.oh, g.ow + 3);
        TU_OK(mrt_tensor_fill(&ybig, 77.0));
        TU_OK(mrt_view_narrow(&ybig, 3, 2, g.ow, &yv));
        TU_OK(mrt_conv2d_forward(&xv, &wv, &bv, &p, &yv, NULL));
        ck_assert_msg(tu_max_abs_diff(&yv, &ref) == 0.0, "strided operands differ by %g",
                      tu_max_abs_diff(&yv, &ref));
        /* the columns outside the view are untouched */
        for (int64_t i = 0; i < tu_numel(&ybig); i++) {
            int64_t col = i % (g.ow + 3);
            if (col < 2 || col >= 2 + g.ow) ck_assert(tu_get(&ybig, i) == 77.0);
        }
        /* preallocated contiguous y with stale contents */
        mrt_tensor y2 = {0};
        TU_ALLOC(&y2, MRT_F32, k->n, k->o, g.oh, g.ow);
        TU_OK(mrt_tensor_fill(&y2, NAN));
        TU_OK(mrt_conv2d_forward(&op.x, &op.w, &op.b, &p, &y2, NULL));
        ck_assert(tu_max_abs_diff(&y2, &ref) == 0.0);
        mrt_tensor_release(&y2);
        mrt_tensor_release(&yv);
        mrt_tensor_release(&ybig);
        mrt_tensor_release(&bv);
        mrt_tensor_release(&bbig);
        mrt_tensor_release(&wv);
        mrt_tensor_release(&wbig);
        mrt_tensor_release(&xv);
        mrt_tensor_release(&xh);
        mrt_tensor_release(&ref);
        free_operands(&op);
    }
}
END_TEST

/* ---- backward against the naive backward ------------------------------------- */

static const conv_case BWD_CASES[] = {
    {3, 5, 11, 13, 6, 3, 3, 1, 1, 1, 1, 1},
    {2, 4, 9, 10, 3, 3, 3, 1, 1, 2, 2, 1},
    {3, 3, 10, 9, 5, 3, 3, 1, 1, 0, 0, 0},
    {3, 3, 9, 11, 5, 3, 3, 2, 2, 1, 1, 1},
    {3, 4, 8, 8, 7, 1, 1, 1, 1, 0, 0, 1},
    {3, 6, 9, 7, 5, 1, 1, 2, 2, 0, 0, 0},
    {2, 1, 19, 23, 8, 7, 7, 2, 2, 3, 3, 1},
    {2, 3, 10, 12, 4, 3, 1, 1, 2, 1, 0, 1},
    {2, 2, 7, 8, 3, 2, 4, 3, 1, 0, 2, 0},
    {2, 2, 6, 70, 3, 3, 3, 1, 1, 1, 1, 1},
    {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 0, 1},
    {2, 3, 6, 8, 4, 3, 3, 1, 1, 0, 2, 0},
    {2, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, 1},
    {1, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1},
    {3, 16, 9, 14, 24, 3, 3, 1, 1, 1, 1, 0},
    {5, 16, 8, 13, 32, 1, 1, 2, 2, 0, 0, 1},
    /* large enough for the threaded loops (MRT_CONV_PAR_MIN) */
    {4, 32, 12, 20, 32, 3, 3, 1, 1, 1, 1, 1},
    {4, 8, 12, 14, 8, 3, 3, 2, 2, 1, 1, 1},
    {4, 16, 10, 12, 16, 1, 1, 1, 1, 0, 0, 1},
};
#define N_BWD ((int)(sizeof BWD_CASES / sizeof BWD_CASES[0]))

START_TEST(test_backward_against_naive) {
    const conv_case *k = &BWD_CASES[_i];
    mrt_conv_geom g = geom_of(k);
    mrt_conv2d_params p = params_of(k);
    operands op;
    make_operands(k, 300 + (uint64_t)_i, &op);
    mrt_tensor dy = {0};
    TU_ALLOC(&dy, MRT_F32, k->n, k->o, g.oh, g.ow);
    tu_fill_uniform(&dy, 400 + (uint64_t)_i, -1.0, 1.0);
    double *x = to_doubles(&op.x), *w = to_doubles(&op.w), *dyd = to_doubles(&dy);
    int64_t nx = tu_numel(&op.x), nw = tu_numel(&op.w);
    double *dx = zeros_d(nx), *dxb = zeros_d(nx), *dw = zeros_d(nw), *dwb = zeros_d(nw);
    double *db = zeros_d(k->o), *dbb = zeros_d(k->o);
    ref_backward(k, x, w, dyd, dx, dxb, dw, dwb, db, dbb);
    mrt_workspace ws = {0};
    for (int a = 0; a < N_ALGOS; a++) {
        if (!mrt_conv2d_algo_supports(ALGOS[a], &g)) continue;
        mrt_conv_algo used = ALGOS[a] == MRT_CONV_AUTO ? mrt_conv2d_choose(&g, 1) : ALGOS[a];
        for (int v = 0; v < (is_wino(used) ? 2 : 1) * N_BLOCKS; v++) {
            const int bi = v % N_BLOCKS;
            /* AUTO and oneDNN: only their own block choice; portable
             * transforms: two */
            if ((ALGOS[a] == MRT_CONV_AUTO && v > 0) || (v >= N_BLOCKS && bi > 1)) continue;
            if (ALGOS[a] == MRT_CONV_ONEDNN && v > 0) continue;
            mrt_conv2d_opts opts = {ALGOS[a], BLOCKS[bi], v / N_BLOCKS};
            mrt_tensor gx = {0}, gw = {0}, gb = {0};
            TU_ALLOC(&gw, MRT_F32, k->o, k->c, k->kh, k->kw);
            TU_ALLOC(&gb, MRT_F32, k->o);
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &gx, &gw, &gb, &ws, &opts));
            TU_ASSERT_SHAPE(&gx, k->n, k->c, k->h, k->w);
            double rel = rel_of(used);
            ASSERT_CLOSE(&gx, dx, dxb, rel, "dx", k, ALGOS[a], BLOCKS[bi]);
            ASSERT_CLOSE(&gw, dw, dwb, rel, "dw", k, ALGOS[a], BLOCKS[bi]);
            ASSERT_CLOSE(&gb, db, dbb, GEMM_REL, "db", k, ALGOS[a], BLOCKS[bi]);
            mrt_tensor_release(&gx);
            mrt_tensor_release(&gw);
            mrt_tensor_release(&gb);
        }
    }
    mrt_workspace_free(&ws);
    free(x);
    free(w);
    free(dyd);
    free(dx);
    free(dxb);
    free(dw);
    free(dwb);
    free(db);
    free(dbb);
    mrt_tensor_release(&dy);
    free_operands(&op);
}
END_TEST

/* ---- backward against finite differences -------------------------------------- */

/* L = sum(y * r) in double: dL/dy = r. */
static double loss_of(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                      const mrt_conv2d_params *p, const mrt_tensor *r,
                      const mrt_conv2d_opts *opts, mrt_workspace *ws) {
    mrt_tensor y = {0};
    TU_OK(mrt_conv2d_forward_opts(x, w, b, p, &y, ws, opts));
    double s = 0.0;
    for (int64_t i = 0; i < tu_numel(&y); i++) s += tu_get(&y, i) * tu_get(r, i);
    mrt_tensor_release(&y);
    return s;
}

/* Central differences of L along every element of t, against grad. The
 * convolution is linear in each operand, so the difference quotient has no
 * truncation error and a large step keeps the float rounding of L small
 * relative to it; a step of 1/4 is exact in float. Tolerance: relative to
 * the gradient, plus the rounding of L (|L|-scale * float eps / step). */
static void check_fd(const char *what, mrt_tensor *t, const mrt_tensor *grad, const mrt_tensor *x,
                     const mrt_tensor *w, const mrt_tensor *b, const mrt_conv2d_params *p,
                     const mrt_tensor *r, const mrt_conv2d_opts *opts, mrt_workspace *ws,
                     double scale) {
    const double h = 0.25;
    for (int64_t i = 0; i < tu_numel(t); i++) {
        double v = tu_get(t, i);
        tu_set(t, i, v + h);
        double lp = loss_of(x, w, b, p, r, opts, ws);
        tu_set(t, i, v - h);
        double lm = loss_of(x, w, b, p, r, opts, ws);
        tu_set(t, i, v);
        double fd = (lp - lm) / (2.0 * h), an = tu_get(grad, i);
        double tol = 1e-3 * fabs(fd) + 2e-5 * scale / h + 1e-6;
        ck_assert_msg(fabs(fd - an) <= tol, "%s[%lld] (%s): finite difference %.9g, analytic %.9g",
                      what, (long long)i, mrt_conv_algo_name(opts->algo), fd, an);
    }
}

static const conv_case FD_CASES[] = {
    {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1},
    {2, 2, 6, 5, 3, 3, 3, 2, 2, 1, 1, 1},
    {2, 3, 4, 5, 2, 1, 1, 1, 1, 0, 0, 1},
    {2, 3, 5, 5, 2, 1, 1, 2, 2, 0, 0, 0},
    {1, 1, 9, 8, 3, 7, 7, 2, 2, 3, 3, 1},
    {2, 2, 6, 7, 3, 3, 3, 1, 1, 0, 0, 1},
    {1, 2, 5, 9, 2, 3, 3, 1, 1, 2, 2, 0},
};
#define N_FD ((int)(sizeof FD_CASES / sizeof FD_CASES[0]))

START_TEST(test_backward_finite_differences) {
    const conv_case *k = &FD_CASES[_i];
    mrt_conv_geom g = geom_of(k);
    mrt_conv2d_params p = params_of(k);
    operands op;
    make_operands(k, 500 + (uint64_t)_i, &op);
    mrt_tensor r = {0};
    TU_ALLOC(&r, MRT_F32, k->n, k->o, g.oh, g.ow);
    tu_fill_uniform(&r, 600 + (uint64_t)_i, -1.0, 1.0);
    mrt_workspace ws = {0};
    for (int v = 1; v < N_ALGOS + 2; v++) {
        /* the last two rounds: both Winograds with the portable transforms */
        const int a = v < N_ALGOS ? v : v - 2, portable = v >= N_ALGOS;
        if (!mrt_conv2d_algo_supports(ALGOS[a], &g)) continue;
        mrt_conv2d_opts opts = {ALGOS[a], 1, portable};
        mrt_tensor gx = {0}, gw = {0}, gb = {0};
        TU_ALLOC(&gw, MRT_F32, k->o, k->c, k->kh, k->kw);
        TU_ALLOC(&gb, MRT_F32, k->o);
        TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &r, &p, &gx, &gw, k->bias ? &gb : NULL,
                                       &ws, &opts));
        const mrt_tensor *b = k->bias ? &op.b : NULL;
        double scale = fabs(loss_of(&op.x, &op.w, b, &p, &r, &opts, &ws)) + 1.0;
        check_fd("dx", &op.x, &gx, &op.x, &op.w, b, &p, &r, &opts, &ws, scale);
        check_fd("dw", &op.w, &gw, &op.x, &op.w, b, &p, &r, &opts, &ws, scale);
        if (k->bias) check_fd("db", &op.b, &gb, &op.x, &op.w, b, &p, &r, &opts, &ws, scale);
        mrt_tensor_release(&gx);
        mrt_tensor_release(&gw);
        mrt_tensor_release(&gb);
    }
    mrt_workspace_free(&ws);
    mrt_tensor_release(&r);
    free_operands(&op);
}
END_TEST

/* ---- accumulation and optional gradients -------------------------------------- */

START_TEST(test_backward_accumulates) {
    static const conv_case cases[] = {
        {3, 5, 7, 9, 6, 3, 3, 1, 1, 1, 1, 1},
        {3, 5, 7, 9, 6, 3, 3, 2, 2, 1, 1, 1},
        {3, 5, 7, 9, 6, 1, 1, 1, 1, 0, 0, 1},
    };
    for (int ci = 0; ci < 3; ci++) {
        const conv_case *k = &cases[ci];
        mrt_conv_geom g = geom_of(k);
        mrt_conv2d_params p = params_of(k);
        operands op;
        make_operands(k, 700 + (uint64_t)ci, &op);
        mrt_tensor dy = {0};
        TU_ALLOC(&dy, MRT_F32, k->n, k->o, g.oh, g.ow);
        tu_fill_uniform(&dy, 800 + (uint64_t)ci, -1.0, 1.0);
        for (int a = 1; a < N_ALGOS; a++) {
            if (!mrt_conv2d_algo_supports(ALGOS[a], &g)) continue;
            mrt_conv2d_opts opts = {ALGOS[a], 2, 0};
            mrt_tensor dx1 = {0}, dw1 = {0}, db1 = {0}, dx2 = {0}, dw2 = {0}, db2 = {0};
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx1, &dw1, &db1, NULL, &opts));
            /* dx is overwritten: stale contents in a preallocated dx do not
             * leak into the result; dw and db start from 1 and then add two
             * gradients. */
            TU_ALLOC(&dx2, MRT_F32, k->n, k->c, k->h, k->w);
            TU_OK(mrt_tensor_fill(&dx2, 1234.0));
            TU_ALLOC(&dw2, MRT_F32, k->o, k->c, k->kh, k->kw);
            TU_OK(mrt_tensor_fill(&dw2, 1.0));
            TU_ALLOC(&db2, MRT_F32, k->o);
            TU_OK(mrt_tensor_fill(&db2, 1.0));
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx2, &dw2, &db2, NULL, &opts));
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx2, &dw2, &db2, NULL, &opts));
            ck_assert_msg(tu_max_abs_diff(&dx1, &dx2) == 0.0, "%s: dx not overwritten",
                          mrt_conv_algo_name(ALGOS[a]));
            for (int64_t i = 0; i < tu_numel(&dw1); i++) {
                double want = 1.0 + 2.0 * tu_get(&dw1, i);
                ck_assert_msg(tu_close(tu_get(&dw2, i), want, 1e-6, 1e-6),
                              "%s: dw[%lld] = %.9g after two calls, expected %.9g",
                              mrt_conv_algo_name(ALGOS[a]), (long long)i, tu_get(&dw2, i), want);
            }
            for (int64_t i = 0; i < k->o; i++)
                ck_assert(tu_close(tu_get(&db2, i), 1.0 + 2.0 * tu_get(&db1, i), 1e-6, 1e-6));

            /* Gradients that are not asked for are skipped, the others are
             * unchanged by that. */
            mrt_tensor dx3 = {0}, dw3 = {0}, db3 = {0};
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx3, NULL, NULL, NULL, &opts));
            ck_assert(tu_max_abs_diff(&dx3, &dx1) == 0.0);
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, NULL, &dw3, NULL, NULL, &opts));
            ck_assert(tu_max_abs_diff(&dw3, &dw1) == 0.0);
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, NULL, NULL, &db3, NULL, &opts));
            ck_assert(tu_max_abs_diff(&db3, &db1) == 0.0);

            /* A strided dw (a view) accumulates like a contiguous one. */
            mrt_tensor wbig = {0}, dwv = {0};
            TU_ALLOC(&wbig, MRT_F32, k->o, k->c, k->kh, k->kw * 2);
            TU_OK(mrt_view_narrow(&wbig, 3, k->kw, k->kw, &dwv));
            TU_OK(mrt_tensor_fill(&dwv, 1.0));
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, NULL, &dwv, NULL, NULL, &opts));
            for (int64_t i = 0; i < tu_numel(&dw1); i++)
                ck_assert(tu_close(tu_get(&dwv, i), 1.0 + tu_get(&dw1, i), 1e-6, 1e-6));
            for (int64_t i = 0; i < tu_numel(&wbig); i++)
                if (i % (2 * k->kw) < k->kw) ck_assert(tu_get(&wbig, i) == 0.0);

            mrt_tensor_release(&dwv);
            mrt_tensor_release(&wbig);
            mrt_tensor_release(&dx3);
            mrt_tensor_release(&dw3);
            mrt_tensor_release(&db3);
            mrt_tensor_release(&dx1);
            mrt_tensor_release(&dw1);
            mrt_tensor_release(&db1);
            mrt_tensor_release(&dx2);
            mrt_tensor_release(&dw2);
            mrt_tensor_release(&db2);
        }
        mrt_tensor_release(&dy);
        free_operands(&op);
    }
}
END_TEST

/* Repeated calls give identical numbers (no race, no order that depends on
 * scheduling), and 1 and 2 threads agree to rounding. Bitwise agreement
 * across thread counts is not promised: OpenBLAS's sgemm rounds differently
 * depending on its thread setting, even where it then runs on one thread. */
START_TEST(test_repeatable_and_thread_counts) {
    /* big enough for the parallel loops and the per-xi GEMM loop to run threaded */
    const conv_case k = {4, 32, 16, 20, 32, 3, 3, 1, 1, 1, 1, 1};
    mrt_conv_geom g = geom_of(&k);
    mrt_conv2d_params p = params_of(&k);
    operands op;
    make_operands(&k, 900, &op);
    mrt_tensor dy = {0};
    TU_ALLOC(&dy, MRT_F32, k.n, k.o, g.oh, g.ow);
    tu_fill_uniform(&dy, 901, -1.0, 1.0);
    int saved = mrt_get_num_threads();
    for (int a = 1; a < N_ALGOS; a++) {
        if (!mrt_conv2d_algo_supports(ALGOS[a], &g)) continue;
        mrt_conv2d_opts opts = {ALGOS[a], 2, 0};
        const char *name = mrt_conv_algo_name(ALGOS[a]);
        /* runs 0 and 1: two threads; run 2: one thread */
        mrt_tensor y[3] = {{0}}, dx[3] = {{0}}, dw[3] = {{0}}, db[3] = {{0}};
        for (int t = 0; t < 3; t++) {
            mrt_set_num_threads(t == 2 ? 1 : 2);
            TU_OK(mrt_conv2d_forward_opts(&op.x, &op.w, &op.b, &p, &y[t], NULL, &opts));
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx[t], &dw[t], &db[t], NULL,
                                           &opts));
        }
        mrt_set_num_threads(saved);
        ck_assert_msg(tu_max_abs_diff(&y[0], &y[1]) == 0.0, "%s y not repeatable", name);
        ck_assert_msg(tu_max_abs_diff(&dx[0], &dx[1]) == 0.0, "%s dx not repeatable", name);
        ck_assert_msg(tu_max_abs_diff(&dw[0], &dw[1]) == 0.0, "%s dw not repeatable", name);
        ck_assert_msg(tu_max_abs_diff(&db[0], &db[1]) == 0.0, "%s db not repeatable", name);
        ck_assert_msg(tu_max_abs_diff(&y[0], &y[2]) <= 1e-4, "%s y 1 vs 2 threads", name);
        ck_assert_msg(tu_max_abs_diff(&dx[0], &dx[2]) <= 1e-4, "%s dx 1 vs 2 threads", name);
        ck_assert_msg(tu_max_abs_diff(&dw[0], &dw[2]) <= 1e-3, "%s dw 1 vs 2 threads", name);
        ck_assert_msg(tu_max_abs_diff(&db[0], &db[2]) == 0.0, "%s db 1 vs 2 threads", name);
        for (int t = 0; t < 3; t++) {
            mrt_tensor_release(&y[t]);
            mrt_tensor_release(&dx[t]);
            mrt_tensor_release(&dw[t]);
            mrt_tensor_release(&db[t]);
        }
    }
    mrt_set_num_threads(saved);
    mrt_tensor_release(&dy);
    free_operands(&op);
}
END_TEST

/* The dispatcher's choices for the shapes of the ResNet34 it serves. */
START_TEST(test_dispatch_choices) {
    const conv_case stem = {32, 1, 128, 431, 64, 7, 7, 2, 2, 3, 3, 0};
    const conv_case l1 = {32, 64, 32, 108, 64, 3, 3, 1, 1, 1, 1, 0};
    const conv_case l2s = {32, 64, 32, 108, 128, 3, 3, 2, 2, 1, 1, 0};
    const conv_case ds = {32, 64, 32, 108, 128, 1, 1, 2, 2, 0, 0, 0};
    const conv_case pw = {32, 64, 32, 108, 128, 1, 1, 1, 1, 0, 0, 0};
    const conv_case tiny = {2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 0};
    const conv_case pad3 = {2, 32, 8, 8, 32, 3, 3, 1, 1, 3, 3, 0};
    mrt_conv_geom g;
    /* fp32: machrt's own kernels everywhere (runtime/nn/conv2d.c says why) */
    g = geom_of(&stem);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), mrt_conv2d_choose_own(&g, 0));
    ck_assert_int_ne(mrt_conv2d_choose(&g, 0), MRT_CONV_ONEDNN);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_IM2COL);
    g = geom_of(&l1);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_WINOGRAD);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_WINOGRAD);
    g = geom_of(&l2s);
    ck_assert_int_ne(mrt_conv2d_choose(&g, 0), MRT_CONV_ONEDNN);
    ck_assert_int_ne(mrt_conv2d_choose(&g, 1), MRT_CONV_ONEDNN);
    g = geom_of(&ds);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_IM2COL);
    g = geom_of(&pw);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_GEMM1X1);
    g = geom_of(&tiny);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_IM2COL);
    g = geom_of(&pad3);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_IM2COL);
    ck_assert(!mrt_conv2d_algo_supports(MRT_CONV_WINOGRAD, &g));
    /* bf16: oneDNN's convolutions for every kernel larger than 1x1,
     * machrt's GEMMs for the 1x1 downsampling (README "Convolutions on the
     * CPU") */
    if (!mrt_cpu_gemm_set_bf16(1)) return;
    g = geom_of(&l1);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_ONEDNN);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_ONEDNN);
    g = geom_of(&l2s);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_ONEDNN);
    g = geom_of(&stem);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 0), MRT_CONV_ONEDNN);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_ONEDNN);
    g = geom_of(&ds);
    ck_assert_int_eq(mrt_conv2d_choose(&g, 1), MRT_CONV_IM2COL);
    mrt_cpu_gemm_set_bf16(0);
}
END_TEST

/* ---- errors -------------------------------------------------------------------- */

START_TEST(test_conv_errors) {
    mrt_conv2d_params p = {1, 1, 1, 1, 0};
    mrt_tensor x = {0}, w = {0}, b = {0}, y = {0}, dy = {0}, x3 = {0}, xl = {0}, bad = {0};
    TU_ALLOC(&x, MRT_F32, 2, 3, 8, 9);
    TU_ALLOC(&w, MRT_F32, 4, 3, 3, 3);
    TU_ALLOC(&b, MRT_F32, 4);
    TU_ALLOC(&dy, MRT_F32, 2, 4, 8, 9);

    /* wrong channel count: both shapes named */
    TU_ALLOC(&bad, MRT_F32, 4, 5, 3, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x, &bad, NULL, &p, &y, NULL));
    TU_MSG_HAS("2x3x8x9");
    TU_MSG_HAS("4x5x3x3");
    TU_MSG_HAS("conv2d_forward");
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_backward(&x, &bad, &dy, &p, &y, NULL, NULL, NULL));
    TU_MSG_HAS("2x3x8x9");
    TU_MSG_HAS("4x5x3x3");
    TU_MSG_HAS("conv2d_backward");
    mrt_tensor_release(&bad);

    /* rank */
    TU_ALLOC(&x3, MRT_F32, 3, 8, 9);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x3, &w, NULL, &p, &y, NULL));
    TU_MSG_HAS("3x8x9");
    TU_MSG_HAS("4x3x3x3");
    TU_ALLOC(&bad, MRT_F32, 4, 3, 9);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x, &bad, NULL, &p, &y, NULL));
    TU_MSG_HAS("4x3x9");
    TU_MSG_HAS("2x3x8x9");
    mrt_tensor_release(&bad);

    /* input too small for the kernel */
    TU_ALLOC(&xl, MRT_F32, 2, 3, 2, 9);
    mrt_conv2d_params p0 = {1, 1, 0, 0, 0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&xl, &w, NULL, &p0, &y, NULL));
    TU_MSG_HAS("2x3x2x9");
    TU_MSG_HAS("4x3x3x3");

    /* bias does not match the weight */
    TU_ALLOC(&bad, MRT_F32, 5);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x, &w, &bad, &p, &y, NULL));
    TU_MSG_HAS("4x3x3x3");
    TU_MSG_HAS("5");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 4, 1);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x, &w, &bad, &p, &y, NULL));
    TU_MSG_HAS("4x1");
    mrt_tensor_release(&bad);

    /* preallocated output of the wrong shape */
    TU_ALLOC(&bad, MRT_F32, 2, 4, 8, 8);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_forward(&x, &w, &b, &p, &bad, NULL));
    TU_MSG_HAS("2x4x8x8");
    TU_MSG_HAS("2x4x8x9");
    mrt_tensor_release(&bad);

    /* backward: gradient of the wrong shape, dw / db / dx mismatches */
    TU_ALLOC(&bad, MRT_F32, 2, 4, 8, 7);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_backward(&x, &w, &bad, &p, &y, NULL, NULL, NULL));
    TU_MSG_HAS("2x4x8x7");
    TU_MSG_HAS("2x4x8x9");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 4, 3, 3, 2);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_backward(&x, &w, &dy, &p, NULL, &bad, NULL, NULL));
    TU_MSG_HAS("4x3x3x2");
    TU_MSG_HAS("4x3x3x3");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_backward(&x, &w, &dy, &p, NULL, NULL, &bad, NULL));
    TU_MSG_HAS("3");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 2, 3, 8, 8);
    TU_FAILS(MRT_ERR_SHAPE, mrt_conv2d_backward(&x, &w, &dy, &p, &bad, NULL, NULL, NULL));
    TU_MSG_HAS("2x3x8x8");
    mrt_tensor_release(&bad);

    /* bad parameters, dtype, released operands, forced algorithms */
    mrt_conv2d_params ps = {0, 1, 0, 0, 0};
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward(&x, &w, NULL, &ps, &y, NULL));
    mrt_conv2d_params pn = {1, 1, -1, 0, 0};
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward(&x, &w, NULL, &pn, &y, NULL));
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward(&x, &w, NULL, NULL, &y, NULL));
    TU_ALLOC(&bad, MRT_I64, 2, 3, 8, 9);
    TU_FAILS(MRT_ERR_DTYPE, mrt_conv2d_forward(&bad, &w, NULL, &p, &y, NULL));
    mrt_tensor_release(&bad);
    mrt_tensor empty = {0};
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward(&empty, &w, NULL, &p, &y, NULL));
    mrt_conv2d_opts o1 = {MRT_CONV_GEMM1X1, 0, 0};
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward_opts(&x, &w, NULL, &p, &y, NULL, &o1));
    TU_MSG_HAS("gemm1x1");
    mrt_conv2d_params p3 = {1, 1, 3, 3, 0};
    mrt_conv2d_opts ow = {MRT_CONV_WINOGRAD, 0, 0};
    TU_FAILS(MRT_ERR_ARG, mrt_conv2d_forward_opts(&x, &w, NULL, &p3, &y, NULL, &ow));
    TU_MSG_HAS("winograd");
    ck_assert_ptr_null(y.storage);

    mrt_tensor_release(&xl);
    mrt_tensor_release(&x3);
    mrt_tensor_release(&dy);
    mrt_tensor_release(&b);
    mrt_tensor_release(&w);
    mrt_tensor_release(&x);
}
END_TEST

/* An empty batch is not an error: the output is empty, nothing accumulates. */
START_TEST(test_empty_batch) {
    mrt_conv2d_params p = {1, 1, 1, 1, 0};
    mrt_tensor x = {0}, w = {0}, y = {0}, dx = {0}, dw = {0};
    TU_ALLOC(&x, MRT_F32, 0, 3, 8, 9);
    TU_ALLOC(&w, MRT_F32, 4, 3, 3, 3);
    TU_OK(mrt_conv2d_forward(&x, &w, NULL, &p, &y, NULL));
    TU_ASSERT_SHAPE(&y, 0, 4, 8, 9);
    TU_OK(mrt_conv2d_backward(&x, &w, &y, &p, &dx, &dw, NULL, NULL));
    TU_ASSERT_SHAPE(&dx, 0, 3, 8, 9);
    for (int64_t i = 0; i < tu_numel(&dw); i++) ck_assert(tu_get(&dw, i) == 0.0);
    mrt_tensor_release(&dw);
    mrt_tensor_release(&dx);
    mrt_tensor_release(&y);
    mrt_tensor_release(&w);
    mrt_tensor_release(&x);
}
END_TEST

/* ---- workspace ------------------------------------------------------------------ */

START_TEST(test_workspace) {
    mrt_workspace ws = {0};
    TU_OK(mrt_workspace_reserve(&ws, 100));
    ck_assert_ptr_nonnull(ws.data);
    ck_assert_uint_ge(ws.capacity, 100);
    ck_assert_uint_eq((uintptr_t)ws.data % 64, 0);
    ws.data[99] = 1.0f;
    float *first = ws.data;
    size_t cap = ws.capacity;
    /* never shrinks, and a smaller request keeps the block */
    TU_OK(mrt_workspace_reserve(&ws, 10));
    ck_assert_ptr_eq(ws.data, first);
    ck_assert_uint_eq(ws.capacity, cap);
    TU_OK(mrt_workspace_reserve(&ws, 100000));
    ck_assert_uint_ge(ws.capacity, 100000);
    ck_assert_uint_eq((uintptr_t)ws.data % 64, 0);
    ws.data[99999] = 2.0f;
    TU_OK(mrt_workspace_reserve(&ws, 0));
    ck_assert_uint_ge(ws.capacity, 100000);
    TU_FAILS(MRT_ERR_NOMEM, mrt_workspace_reserve(&ws, SIZE_MAX / 2));
    ck_assert_uint_ge(ws.capacity, 100000); /* a failed growth keeps the old block */
    mrt_workspace_free(&ws);
    ck_assert_ptr_null(ws.data);
    ck_assert_uint_eq(ws.capacity, 0);
    mrt_workspace_free(&ws); /* idempotent */
    TU_FAILS(MRT_ERR_ARG, mrt_workspace_reserve(NULL, 1));

    /* one workspace serves convolutions of different sizes in turn */
    mrt_conv2d_params p = {1, 1, 1, 1, 0};
    mrt_tensor xs = {0}, ws_ = {0}, xb = {0}, wb = {0}, y1 = {0}, y2 = {0}, r1 = {0}, r2 = {0};
    TU_ALLOC(&xs, MRT_F32, 1, 2, 4, 4);
    TU_ALLOC(&ws_, MRT_F32, 2, 2, 3, 3);
    TU_ALLOC(&xb, MRT_F32, 2, 16, 12, 12);
    TU_ALLOC(&wb, MRT_F32, 16, 16, 3, 3);
    tu_fill_uniform(&xs, 1, -1, 1);
    tu_fill_uniform(&ws_, 2, -1, 1);
    tu_fill_uniform(&xb, 3, -1, 1);
    tu_fill_uniform(&wb, 4, -1, 1);
    TU_OK(mrt_conv2d_forward(&xs, &ws_, NULL, &p, &r1, NULL));
    TU_OK(mrt_conv2d_forward(&xb, &wb, NULL, &p, &r2, NULL));
    TU_OK(mrt_conv2d_forward(&xs, &ws_, NULL, &p, &y1, &ws));
    size_t small = ws.capacity;
    TU_OK(mrt_conv2d_forward(&xb, &wb, NULL, &p, &y2, &ws));
    ck_assert_uint_gt(ws.capacity, small);
    mrt_tensor_release(&y1);
    TU_OK(mrt_conv2d_forward(&xs, &ws_, NULL, &p, &y1, &ws));
    ck_assert(tu_max_abs_diff(&y1, &r1) == 0.0);
    ck_assert(tu_max_abs_diff(&y2, &r2) == 0.0);
    mrt_workspace_free(&ws);
    mrt_tensor_release(&xs);
    mrt_tensor_release(&ws_);
    mrt_tensor_release(&xb);
    mrt_tensor_release(&wb);
    mrt_tensor_release(&y1);
    mrt_tensor_release(&y2);
    mrt_tensor_release(&r1);
    mrt_tensor_release(&r2);
}
END_TEST

/* ---- linear --------------------------------------------------------------------- */

static void ref_linear(int64_t n, int64_t in, int64_t out, const double *x, const double *w,
                       const double *b, double *y, double *bound) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0, a = b ? fabs(b[o]) : 0.0;
            for (int64_t k = 0; k < in; k++) {
                s += x[i * in + k] * w[o * in + k];
                a += fabs(x[i * in + k] * w[o * in + k]);
            }
            y[i * out + o] = s;
            bound[i * out + o] = a;
        }
}

static double lin_worst(const mrt_tensor *got, const double *want, const double *bound) {
    int64_t at = 0;
    return worst_ratio(got, want, bound, GEMM_REL, &at);
}

START_TEST(test_linear_forward_backward) {
    static const int64_t shapes[][4] = {/* n, in, out, bias */
                                        {1, 1, 1, 1}, {4, 7, 3, 1}, {32, 512, 4, 1},
                                        {5, 9, 11, 0}, {3, 64, 130, 1}};
    for (int si = 0; si < 5; si++) {
        const int64_t n = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        const int bias = (int)shapes[si][3];
        mrt_tensor x = {0}, w = {0}, b = {0}, dy = {0}, y = {0}, dx = {0}, dw = {0}, db = {0};
        TU_ALLOC(&x, MRT_F32, n, in);
        TU_ALLOC(&w, MRT_F32, out, in);
        TU_ALLOC(&b, MRT_F32, out);
        TU_ALLOC(&dy, MRT_F32, n, out);
        tu_fill_uniform(&x, 10 + (uint64_t)si, -1, 1);
        tu_fill_uniform(&w, 20 + (uint64_t)si, -1, 1);
        tu_fill_uniform(&b, 30 + (uint64_t)si, -1, 1);
        tu_fill_uniform(&dy, 40 + (uint64_t)si, -1, 1);
        double *xd = to_doubles(&x), *wd = to_doubles(&w), *bd = to_doubles(&b),
               *dyd = to_doubles(&dy);
        double *yr = zeros_d(n * out), *yb = zeros_d(n * out);
        ref_linear(n, in, out, xd, wd, bias ? bd : NULL, yr, yb);
        TU_OK(mrt_linear_forward(&x, &w, bias ? &b : NULL, &y));
        TU_ASSERT_SHAPE(&y, n, out);
        ck_assert_msg(lin_worst(&y, yr, yb) <= GEMM_REL, "linear forward %lldx%lldx%lld",
                      (long long)n, (long long)in, (long long)out);

        /* backward against the same sums written out */
        double *dxr = zeros_d(n * in), *dxb = zeros_d(n * in), *dwr = zeros_d(out * in),
               *dwb = zeros_d(out * in), *dbr = zeros_d(out), *dbb = zeros_d(out);
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < out; o++) {
                double g = dyd[i * out + o];
                dbr[o] += g;
                dbb[o] += fabs(g);
                for (int64_t k = 0; k < in; k++) {
                    dxr[i * in + k] += g * wd[o * in + k];
                    dxb[i * in + k] += fabs(g * wd[o * in + k]);
                    dwr[o * in + k] += g * xd[i * in + k];
                    dwb[o * in + k] += fabs(g * xd[i * in + k]);
                }
            }
        TU_ALLOC(&dw, MRT_F32, out, in);
        TU_ALLOC(&db, MRT_F32, out);
        TU_OK(mrt_linear_backward(&x, &w, &dy, &dx, &dw, &db));
        ck_assert(lin_worst(&dx, dxr, dxb) <= GEMM_REL);
        ck_assert(lin_worst(&dw, dwr, dwb) <= GEMM_REL);
        ck_assert(lin_worst(&db, dbr, dbb) <= GEMM_REL);
        /* accumulation: a second call doubles dw and db, dx is overwritten */
        mrt_tensor dx1 = {0};
        TU_OK(mrt_tensor_clone(&dx1, &dx));
        TU_OK(mrt_tensor_fill(&dx, 99.0));
        TU_OK(mrt_linear_backward(&x, &w, &dy, &dx, &dw, &db));
        ck_assert(tu_max_abs_diff(&dx, &dx1) == 0.0);
        for (int64_t i = 0; i < out * in; i++) dwr[i] *= 2, dwb[i] *= 2;
        for (int64_t i = 0; i < out; i++) dbr[i] *= 2, dbb[i] *= 2;
        ck_assert(lin_worst(&dw, dwr, dwb) <= GEMM_REL);
        ck_assert(lin_worst(&db, dbr, dbb) <= GEMM_REL);

        /* finite differences of L = sum(y * dy) along x and w (linear in
         * each, so exact up to rounding) */
        if (n * in <= 64) {
            for (int which = 0; which < 2; which++) {
                mrt_tensor *t = which == 0 ? &x : &w;
                mrt_tensor gx = {0}, gw = {0};
                TU_ALLOC(&gw, MRT_F32, out, in);
                TU_OK(mrt_linear_backward(&x, &w, &dy, &gx, &gw, NULL));
                const mrt_tensor *grad = which == 0 ? &gx : &gw;
                for (int64_t i = 0; i < tu_numel(t); i++) {
                    double v = tu_get(t, i), l[2];
                    for (int sgn = 0; sgn < 2; sgn++) {
                        mrt_tensor yy = {0};
                        tu_set(t, i, v + (sgn ? -0.25 : 0.25));
                        TU_OK(mrt_linear_forward(&x, &w, bias ? &b : NULL, &yy));
                        l[sgn] = 0.0;
                        for (int64_t j = 0; j < n * out; j++) l[sgn] += tu_get(&yy, j) * dyd[j];
                        mrt_tensor_release(&yy);
                    }
                    tu_set(t, i, v);
                    double fd = (l[0] - l[1]) / 0.5;
                    ck_assert_msg(fabs(fd - tu_get(grad, i)) <= 1e-4 * (fabs(fd) + 1.0),
                                  "linear %s[%lld]: fd %.9g analytic %.9g", which ? "dw" : "dx",
                                  (long long)i, fd, tu_get(grad, i));
                }
                mrt_tensor_release(&gx);
                mrt_tensor_release(&gw);
            }
        }
        mrt_tensor_release(&dx1);
        free(xd);
        free(wd);
        free(bd);
        free(dyd);
        free(yr);
        free(yb);
        free(dxr);
        free(dxb);
        free(dwr);
        free(dwb);
        free(dbr);
        free(dbb);
        mrt_tensor_release(&x);
        mrt_tensor_release(&w);
        mrt_tensor_release(&b);
        mrt_tensor_release(&dy);
        mrt_tensor_release(&y);
        mrt_tensor_release(&dx);
        mrt_tensor_release(&dw);
        mrt_tensor_release(&db);
    }
}
END_TEST

/* Strided operands and outputs give the contiguous results. */
START_TEST(test_linear_views) {
    mrt_tensor x = {0}, w = {0}, b = {0}, dy = {0};
    TU_ALLOC(&x, MRT_F32, 6, 5);
    TU_ALLOC(&w, MRT_F32, 4, 5);
    TU_ALLOC(&b, MRT_F32, 4);
    TU_ALLOC(&dy, MRT_F32, 6, 4);
    tu_fill_uniform(&x, 1, -1, 1);
    tu_fill_uniform(&w, 2, -1, 1);
    tu_fill_uniform(&b, 3, -1, 1);
    tu_fill_uniform(&dy, 4, -1, 1);
    mrt_tensor y = {0}, dx = {0}, dw = {0}, db = {0};
    TU_OK(mrt_linear_forward(&x, &w, &b, &y));
    TU_OK(mrt_linear_backward(&x, &w, &dy, &dx, &dw, &db));

    /* x stored transposed, w in a wider buffer, y and dx as transposed views */
    mrt_tensor xt = {0}, xv = {0}, wbig = {0}, wv = {0}, ybuf = {0}, yv = {0}, dxbuf = {0},
               dxv = {0}, dwbuf = {0}, dwv = {0};
    TU_ALLOC(&xt, MRT_F32, 5, 6);
    TU_OK(mrt_view_transpose(&xt, 0, 1, &xv));
    TU_OK(mrt_tensor_copy(&xv, &x));
    TU_ALLOC(&wbig, MRT_F32, 4, 8);
    TU_OK(mrt_view_narrow(&wbig, 1, 2, 5, &wv));
    TU_OK(mrt_tensor_copy(&wv, &w));
    TU_ALLOC(&ybuf, MRT_F32, 4, 6);
    TU_OK(mrt_view_transpose(&ybuf, 0, 1, &yv));
    TU_ALLOC(&dxbuf, MRT_F32, 5, 6);
    TU_OK(mrt_view_transpose(&dxbuf, 0, 1, &dxv));
    TU_ALLOC(&dwbuf, MRT_F32, 5, 4);
    TU_OK(mrt_view_transpose(&dwbuf, 0, 1, &dwv));
    TU_OK(mrt_linear_forward(&xv, &wv, &b, &yv));
    ck_assert(tu_max_abs_diff(&yv, &y) == 0.0);
    TU_OK(mrt_linear_backward(&xv, &wv, &dy, &dxv, &dwv, NULL));
    ck_assert(tu_max_abs_diff(&dxv, &dx) == 0.0);
    ck_assert(tu_max_abs_diff(&dwv, &dw) == 0.0);
    mrt_tensor tensors[] = {x, w, b, dy, y, dx, dw, db, xt, xv, wbig, wv, ybuf, yv, dxbuf, dxv,
                            dwbuf, dwv};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) mrt_tensor_release(&tensors[i]);
}
END_TEST

START_TEST(test_linear_errors) {
    mrt_tensor x = {0}, w = {0}, b = {0}, y = {0}, dy = {0}, bad = {0};
    TU_ALLOC(&x, MRT_F32, 3, 5);
    TU_ALLOC(&w, MRT_F32, 4, 5);
    TU_ALLOC(&b, MRT_F32, 4);
    TU_ALLOC(&dy, MRT_F32, 3, 4);
    TU_ALLOC(&bad, MRT_F32, 4, 6);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_forward(&x, &bad, NULL, &y));
    TU_MSG_HAS("3x5");
    TU_MSG_HAS("4x6");
    TU_MSG_HAS("linear_forward");
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_backward(&x, &bad, &dy, &y, NULL, NULL));
    TU_MSG_HAS("3x5");
    TU_MSG_HAS("4x6");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 3, 5, 1);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_forward(&bad, &w, NULL, &y));
    TU_MSG_HAS("3x5x1");
    TU_MSG_HAS("4x5");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 5);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_forward(&x, &w, &bad, &y));
    TU_MSG_HAS("4x5");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 3, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_backward(&x, &w, &bad, NULL, NULL, NULL));
    TU_MSG_HAS("3x3");
    TU_MSG_HAS("3x4");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 5, 4);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_backward(&x, &w, &dy, NULL, &bad, NULL));
    TU_MSG_HAS("5x4");
    TU_MSG_HAS("4x5");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_F32, 4, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_linear_forward(&x, &w, &b, &bad));
    TU_MSG_HAS("4x3");
    TU_MSG_HAS("3x4");
    mrt_tensor_release(&bad);
    TU_ALLOC(&bad, MRT_I64, 3, 5);
    TU_FAILS(MRT_ERR_DTYPE, mrt_linear_forward(&bad, &w, NULL, &y));
    mrt_tensor_release(&bad);
    ck_assert_ptr_null(y.storage);
    mrt_tensor_release(&x);
    mrt_tensor_release(&w);
    mrt_tensor_release(&b);
    mrt_tensor_release(&dy);
}
END_TEST

/* A 3x3 stride-1 forward runs Winograd F(4x4) in training and inference
 * alike: both give that algorithm's bits, and stay within rounding of the
 * more exact F(2x2). */
START_TEST(test_forward_uses_f4x4)
{
    mrt_tensor x = {0}, w = {0}, y_train = {0}, y_infer = {0}, y_f4 = {0}, y_f2 = {0};
    TU_ALLOC(&x, MRT_F32, 2, 16, 9, 11);
    TU_ALLOC(&w, MRT_F32, 16, 16, 3, 3);
    tu_fill_uniform(&x, 7, -1, 1);
    tu_fill_uniform(&w, 8, -0.3, 0.3);
    mrt_conv2d_params train = {1, 1, 1, 1, 0}, infer = {1, 1, 1, 1, 1};
    mrt_conv2d_opts f4 = {.algo = MRT_CONV_WINOGRAD}, f2 = {.algo = MRT_CONV_WINOGRAD2};
    TU_OK(mrt_conv2d_forward(&x, &w, NULL, &train, &y_train, NULL));
    TU_OK(mrt_conv2d_forward(&x, &w, NULL, &infer, &y_infer, NULL));
    TU_OK(mrt_conv2d_forward_opts(&x, &w, NULL, &train, &y_f4, NULL, &f4));
    TU_OK(mrt_conv2d_forward_opts(&x, &w, NULL, &train, &y_f2, NULL, &f2));
    int64_t n = mrt_tensor_numel(&y_infer);
    double maxdiff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert(mrt_f32(&y_infer)[i] == mrt_f32(&y_f4)[i]);
        ck_assert(mrt_f32(&y_train)[i] == mrt_f32(&y_f4)[i]);
        double d = fabs((double)mrt_f32(&y_f4)[i] - mrt_f32(&y_f2)[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs(mrt_f32(&y_f2)[i]) > scale) scale = fabs(mrt_f32(&y_f2)[i]);
    }
    ck_assert_msg(maxdiff > 0 && maxdiff <= 1e-5 * scale, "F(4x4) vs F(2x2): %g of %g", maxdiff, scale);
    mrt_tensor_release(&x);
    mrt_tensor_release(&w);
    mrt_tensor_release(&y_train);
    mrt_tensor_release(&y_infer);
    mrt_tensor_release(&y_f4);
    mrt_tensor_release(&y_f2);
}
END_TEST

/* ---- run-time CPU features ------------------------------------------------------ */

/* The probe's AVX2 agrees with the compiler's own cpuid check. */
START_TEST(test_avx2_probe_agrees)
{
    /* Check forks each test, so the probe below is this process's first. */
    unsetenv("MACHRT_CPU_FEATURES");
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const int want = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const int want = 0;
#endif
    ck_assert_int_eq((mrt_cpu_features() & MRT_CPU_AVX2) != 0, want);
    ck_assert_int_eq(mrt_wino_kernels_avx2(4) != NULL, want);
}
END_TEST

/* MACHRT_CPU_FEATURES=-avx2 hides AVX2: Winograd's transforms are then the
 * portable ones, so the default dispatch gives the bits of portable = 1
 * (with AVX2 visible its tile transforms use FMA and round differently). */
START_TEST(test_hidden_avx2_runs_portable)
{
    setenv("MACHRT_CPU_FEATURES", "-avx2", 1);
    ck_assert_int_eq(mrt_cpu_features() & MRT_CPU_AVX2, 0);
    ck_assert(mrt_wino_kernels_avx2(4) == NULL && mrt_wino_kernels_avx2(2) == NULL);
    const conv_case k = {3, 16, 9, 14, 24, 3, 3, 1, 1, 1, 1, 1};
    const mrt_conv_geom g = geom_of(&k);
    const mrt_conv2d_params p = params_of(&k);
    operands op;
    make_operands(&k, 900, &op);
    mrt_tensor dy = {0};
    TU_ALLOC(&dy, MRT_F32, k.n, k.o, g.oh, g.ow);
    tu_fill_uniform(&dy, 901, -1.0, 1.0);
    mrt_workspace ws = {0};
    const mrt_conv_algo algos[] = {MRT_CONV_WINOGRAD, MRT_CONV_WINOGRAD2};
    for (int a = 0; a < 2; a++) {
        mrt_tensor y[2] = {{0}}, dx[2] = {{0}}, dw[2] = {{0}};
        for (int portable = 0; portable < 2; portable++) {
            const mrt_conv2d_opts opts = {algos[a], 0, portable};
            TU_ALLOC(&y[portable], MRT_F32, k.n, k.o, g.oh, g.ow);
            TU_ALLOC(&dx[portable], MRT_F32, k.n, k.c, k.h, k.w);
            TU_ALLOC(&dw[portable], MRT_F32, k.o, k.c, k.kh, k.kw);
            /* dW accumulates */
            for (int64_t i = 0; i < tu_numel(&dw[portable]); i++) tu_set(&dw[portable], i, 0.0);
            TU_OK(mrt_conv2d_forward_opts(&op.x, &op.w, &op.b, &p, &y[portable], &ws, &opts));
            TU_OK(mrt_conv2d_backward_opts(&op.x, &op.w, &dy, &p, &dx[portable], &dw[portable],
                                           NULL, &ws, &opts));
        }
        const mrt_tensor *pairs[3][2] = {{&y[0], &y[1]}, {&dx[0], &dx[1]}, {&dw[0], &dw[1]}};
        for (int t = 0; t < 3; t++)
            for (int64_t i = 0; i < tu_numel(pairs[t][0]); i++)
                ck_assert_msg(tu_get(pairs[t][0], i) == tu_get(pairs[t][1], i),
                              "%s output %d [%lld]: %.9g (default) != %.9g (portable)",
                              mrt_conv_algo_name(algos[a]), t, (long long)i,
                              tu_get(pairs[t][0], i), tu_get(pairs[t][1], i));
        for (int i = 0; i < 2; i++) {
            mrt_tensor_release(&y[i]);
            mrt_tensor_release(&dx[i]);
            mrt_tensor_release(&dw[i]);
        }
    }
    mrt_workspace_free(&ws);
    mrt_tensor_release(&dy);
    free_operands(&op);
}
END_TEST

/* The AVX-512 tile transforms (16 tiles a call) give the AVX2 ones' bits (8
 * tiles a call, run twice): input, output and gradient transforms of both
 * tile sizes, full and partial chunks, at the plane's edges (padding rows
 * and columns, clipped outputs) and inside. */
static void fill_floats(float *p, size_t n, uint64_t seed)
{
    tu_rng r = tu_rng_seed(seed);
    for (size_t i = 0; i < n; i++) p[i] = (float)tu_rng_uniform(&r, -1.0, 1.0);
}

/* The first cnt tiles of two transforms' outputs (stride apart per
 * position) are the same floats. */
static void same_tiles(const char *what, int m, int y, int x, const float *v1, const float *v2, int stride,
                       int cnt)
{
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++)
        for (int l = 0; l < cnt; l++)
            ck_assert_msg(v1[xi * stride + l] == v2[xi * stride + l],
                          "F(%dx%d) %s at (%d, %d), xi %d tile %d: %.9g against %.9g", m, m, what, y, x, xi, l,
                          v2[xi * stride + l], v1[xi * stride + l]);
}

START_TEST(test_wino_avx512_agrees_with_avx2)
{
    enum { H = 13, W = 150, NXI = 36, STRIDE = 40 };
    static float plane[H * W], v1[NXI * STRIDE], v2[NXI * STRIDE], o1[H * W], o2[H * W];
    fill_floats(plane, H * W, 7);
    for (int m = 2; m <= 4; m += 2) {
        const mrt_wino_kernels *a = mrt_wino_kernels_pick("avx2", m);
        const mrt_wino_kernels *b = mrt_wino_kernels_pick("avx512f", m);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(a->lanes, 8);
        ck_assert_int_eq(b->lanes, 16);
        /* (y0, x0, tiles): top-left padding, inside, bottom rows past the
         * plane, a partial chunk reaching past the right edge */
        const int spots[][3] = {{-1, -1, 16}, {3, 5, 16}, {H - 2, 40, 11}, {4, W - 9 * m + 1, 9}, {0, 0, 3}};
        for (size_t si = 0; si < sizeof spots / sizeof spots[0]; si++) {
            const int y0 = spots[si][0], x0 = spots[si][1], cnt = spots[si][2];
            const int rest = cnt > 8 ? cnt - 8 : 0, first = cnt > 8 ? 8 : cnt;
            memset(v1, 0, sizeof v1);
            memset(v2, 0, sizeof v2);
            a->input(plane, H, W, y0, x0, first, v1, STRIDE);
            if (rest) a->input(plane, H, W, y0, x0 + 8 * m, rest, v1 + 8, STRIDE);
            b->input(plane, H, W, y0, x0, cnt, v2, STRIDE);
            same_tiles("input", m, y0, x0, v1, v2, STRIDE, cnt);
            /* gradient transform of the same spot (output coordinates) */
            const int gy = y0 < 0 ? 0 : y0, gx = x0 < 0 ? 0 : x0;
            memset(v1, 0, sizeof v1);
            memset(v2, 0, sizeof v2);
            a->grad(plane, H, W, gy, gx, first, v1, STRIDE);
            if (rest) a->grad(plane, H, W, gy, gx + 8 * m, rest, v1 + 8, STRIDE);
            b->grad(plane, H, W, gy, gx, cnt, v2, STRIDE);
            same_tiles("gradient", m, gy, gx, v1, v2, STRIDE, cnt);
            /* output transform of random M into a plane, clipped */
            float mm[NXI * STRIDE];
            fill_floats(mm, NXI * STRIDE, 100 + si);
            memset(o1, 0, sizeof o1);
            memset(o2, 0, sizeof o2);
            a->output(mm, STRIDE, first, 0.25f, o1, H, W, gy, gx);
            if (rest) a->output(mm + 8, STRIDE, rest, 0.25f, o1, H, W, gy, gx + 8 * m);
            b->output(mm, STRIDE, cnt, 0.25f, o2, H, W, gy, gx);
            ck_assert_msg(memcmp(o1, o2, sizeof o1) == 0, "F(%dx%d) output at (%d, %d) differs", m, m, gy, gx);
        }
    }
}
END_TEST

/* The kernel transforms give the same bits in every version (portable C,
 * AVX2 with 8 lanes, AVX-512 with 16): both patch sizes, rotated or not,
 * kernel counts that leave a partial last call. */
static void weight_pass(const mrt_wino_weight_kernels *k, int alpha, int rot, const float *w, int n,
                        float *u, size_t stride, const float *du, float *dw)
{
    for (int i0 = 0; i0 < n; i0 += k->lanes) {
        const int cnt = n - i0 < k->lanes ? n - i0 : k->lanes;
        k->transform(alpha, w + (size_t)i0 * 9, 9, rot, cnt, u + i0, stride);
        k->grad(alpha, du + i0, stride, cnt, dw + (size_t)i0 * 9);
    }
}

START_TEST(test_wino_weight_kernels_agree)
{
    enum { N = 37, STRIDE = 48, NXI = 36 };
    static float w[N * 9], du[NXI * STRIDE], u0[NXI * STRIDE], u1[NXI * STRIDE], dw0[N * 9], dw1[N * 9];
    fill_floats(w, N * 9, 21);
    fill_floats(du, NXI * STRIDE, 22);
    const mrt_wino_weight_kernels *ref = mrt_wino_weight_kernels_pick("portable");
    const char *const names[] = {"avx2", "avx512f"};
    for (int v = 0; v < 2; v++) {
        const mrt_wino_weight_kernels *k = mrt_wino_weight_kernels_pick(names[v]);
        ck_assert_ptr_nonnull(k);
        for (int alpha = 4; alpha <= 6; alpha += 2)
            for (int rot = 0; rot < 2; rot++) {
                memset(u0, 0, sizeof u0);
                memset(u1, 0, sizeof u1);
                fill_floats(dw0, N * 9, 23);
                memcpy(dw1, dw0, sizeof dw0);
                weight_pass(ref, alpha, rot, w, N, u0, STRIDE, du, dw0);
                weight_pass(k, alpha, rot, w, N, u1, STRIDE, du, dw1);
                ck_assert_msg(memcmp(u0, u1, sizeof u0) == 0, "%s transform, alpha %d rot %d", k->name, alpha, rot);
                ck_assert_msg(memcmp(dw0, dw1, sizeof dw0) == 0, "%s gradient, alpha %d", k->name, alpha);
            }
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("nn_conv");

    /* Generous timeouts: sanitizer builds run several times slower. */
    TCase *fw = tcase_create("conv_forward");
    tcase_set_timeout(fw, 60);
    tcase_add_loop_test(fw, test_forward_against_naive, 0, N_FWD);
    tcase_add_test(fw, test_forward_views);
    tcase_add_test(fw, test_dispatch_choices);
    suite_add_tcase(s, fw);

    TCase *bw = tcase_create("conv_backward");
    tcase_set_timeout(bw, 60);
    tcase_add_loop_test(bw, test_backward_against_naive, 0, N_BWD);
    tcase_add_loop_test(bw, test_backward_finite_differences, 0, N_FD);
    tcase_add_test(bw, test_backward_accumulates);
    tcase_add_test(bw, test_repeatable_and_thread_counts);
    suite_add_tcase(s, bw);

    TCase *er = tcase_create("conv_errors");
    tcase_set_timeout(er, 60);
    tcase_add_test(er, test_conv_errors);
    tcase_add_test(er, test_empty_batch);
    tcase_add_test(er, test_workspace);
    tcase_add_test(er, test_forward_uses_f4x4);
    suite_add_tcase(s, er);

    TCase *cf = tcase_create("cpu_features");
    tcase_set_timeout(cf, 60);
    tcase_add_test(cf, test_avx2_probe_agrees);
    tcase_add_test(cf, test_hidden_avx2_runs_portable);
    /* Asked of the compiler, not of mrt_cpu_features: the tests above need
     * their probe to be the first of their (forked) process. */
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                       __builtin_cpu_supports("fma");
#else
    const int avx512 = 0;
#endif
    if (avx512) {
        tcase_add_test(cf, test_wino_avx512_agrees_with_avx2);
        tcase_add_test(cf, test_wino_weight_kernels_agree);
    } else {
        tu_skip(2, "test_nn_conv: Winograd's AVX-512 transforms against the AVX2 and portable ones: this CPU has no "
                   "avx512f");
    }
    suite_add_tcase(s, cf);

    TCase *li = tcase_create("linear");
    tcase_set_timeout(li, 60);
    tcase_add_test(li, test_linear_forward_backward);
    tcase_add_test(li, test_linear_views);
    tcase_add_test(li, test_linear_errors);
    suite_add_tcase(s, li);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
