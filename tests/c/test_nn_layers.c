/* Layer kernels other than convolution and linear: batch norm, ReLU, max /
 * average / GeM pooling, dropout and the losses.
 *
 * Each forward is checked against a naive double-precision reference written
 * here; each backward against central finite differences, twice:
 *  - of the double reference (h = 1e-5: truncation ~h^2, rounding ~1e-16/h,
 *    so the reference gradient is good to ~1e-9 relative and the float32
 *    kernel must match it to 1e-4 of the gradient's scale), and
 *  - of the kernel's own float32 forward (h = 1e-2: rounding noise of the
 *    float32 outputs is ~1e-6 / 2h ~ 1e-4 relative, truncation ~1e-4, so
 *    2e-3 of the gradient's scale), which ties forward and backward of the
 *    same code together.
 * Non-smooth points (ReLU at 0, ties of max pooling, GeM's clamp at eps) are
 * kept further than h away from every input.
 *
 * Finally tests/fixtures/layers.safetensors (tests/fixtures/
 * gen_layer_fixtures.py, PyTorch in float64) is matched to 1e-5 relative. */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/nn.h"
#include "machrt/rng.h"
#include "machrt/safetensors.h"
#include "../../runtime/nn/batchnorm_simd.h"

/* float32 kernel against a double reference of the same formula. */
#define FWD_REL 2e-6
#define FWD_ABS 2e-6 /* times the largest |reference| value */
/* Kernel backward against finite differences of the double reference. */
#define GRAD_REL 1e-4
#define GRAD_ABS 1e-5
#define REF_H 1e-5
/* Kernel backward against finite differences of the kernel itself. */
#define SELF_REL 2e-3
#define SELF_ABS 2e-3
#define SELF_H 1e-2
/* PyTorch fixtures. */
#define FIX_REL 1e-5
#define FIX_ABS 1e-6

/* ---- helpers ------------------------------------------------------------- */

static mrt_tensor new_f32(int ndim, const int64_t *shape)
{
    mrt_tensor t = {0};
    tu_alloc_or_fail(&t, MRT_F32, ndim, shape);
    return t;
}
#define NEW(...) new_f32(TU_SHAPE(__VA_ARGS__))

/* An N,C,H,W view over N,H,W,C storage: every stride differs from the
 * contiguous layout, so the kernels' strided paths run. */
static mrt_tensor new_nhwc_view(int64_t n, int64_t c, int64_t h, int64_t w)
{
    mrt_tensor base = NEW(n, h, w, c), v = {0};
    static const int order[4] = {0, 3, 1, 2};
    TU_OK(mrt_view_permute(&base, order, &v));
    mrt_tensor_release(&base);
    ck_assert(!mrt_tensor_is_contiguous(&v) || c == 1);
    return v;
}

static mrt_tensor new4(int strided, int64_t n, int64_t c, int64_t h, int64_t w)
{
    return strided ? new_nhwc_view(n, c, h, w) : NEW(n, c, h, w);
}

static double *to_dbl(const mrt_tensor *t)
{
    int64_t n = tu_numel(t);
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < n; i++) v[i] = tu_get(t, i);
    return v;
}

static double max_abs(const double *v, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(v[i]) > m) m = fabs(v[i]);
    return m;
}

/* Every element: |got - want| <= rel |want| + abs_frac * max |want|. */
static void expect_close(const char *what, const mrt_tensor *got, const double *want, int64_t n,
                         double rel, double abs_frac)
{
    ck_assert_msg(tu_numel(got) == n, "%s: %lld elements, expected %lld", what,
                  (long long)tu_numel(got), (long long)n);
    double scale = max_abs(want, n);
    for (int64_t i = 0; i < n; i++) {
        double g = tu_get(got, i);
        ck_assert_msg(fabs(g - want[i]) <= rel * fabs(want[i]) + abs_frac * scale + 1e-30,
                      "%s[%lld]: got %.9g, want %.9g (scale %.3g)", what, (long long)i, g,
                      want[i], scale);
    }
}

static void expect_bits_equal(const char *what, const mrt_tensor *a, const mrt_tensor *b)
{
    int64_t n = tu_numel(a);
    ck_assert_int_eq(n, tu_numel(b));
    for (int64_t i = 0; i < n; i++) {
        float x = (float)tu_get(a, i), y = (float)tu_get(b, i);
        ck_assert_msg(memcmp(&x, &y, sizeof x) == 0, "%s[%lld]: %.9g vs %.9g", what,
                      (long long)i, x, y);
    }
}

/* sum_i r_i * y_i: the scalar whose gradient the backward passes compute
 * when dy = r. */
static double dot_t(const mrt_tensor *y, const double *r)
{
    double s = 0.0;
    for (int64_t i = 0; i < tu_numel(y); i++) s += r[i] * tu_get(y, i);
    return s;
}

static double dot_d(const double *y, const double *r, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += r[i] * y[i];
    return s;
}

static void fill_from(mrt_tensor *t, const double *v)
{
    for (int64_t i = 0; i < tu_numel(t); i++) tu_set(t, i, v[i]);
}

static double *rand_dbl(int64_t n, uint64_t seed, double lo, double hi)
{
    double *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    tu_rng r = tu_rng_seed(seed);
    for (int64_t i = 0; i < n; i++) v[i] = tu_rng_uniform(&r, lo, hi);
    return v;
}

/* Central difference of f in *v (double). */
typedef double (*objective_fn)(void *ctx);
static double fd_dbl(objective_fn f, void *ctx, double *v, double h)
{
    double s = *v;
    *v = s + h;
    double a = f(ctx);
    *v = s - h;
    double b = f(ctx);
    *v = s;
    return (a - b) / (2.0 * h);
}

/* The same on a float32 element of a tensor: the step actually taken is
 * what float rounding made of it. */
static double fd_f32(objective_fn f, void *ctx, mrt_tensor *t, int64_t i, double h)
{
    double s = tu_get(t, i);
    float up = (float)(s + h), dn = (float)(s - h);
    tu_set(t, i, up);
    double a = f(ctx);
    tu_set(t, i, dn);
    double b = f(ctx);
    tu_set(t, i, s);
    return (a - b) / ((double)up - (double)dn);
}

static size_t idx4(const int64_t *s, int64_t n, int64_t c, int64_t h, int64_t w)
{
    return (size_t)(((n * s[1] + c) * s[2] + h) * s[3] + w);
}

/* ======================= batch norm ====================================== */

/* Reference: two-pass mean and biased variance per channel in double. */
static void ref_bn(const double *x, const int64_t *s, const double *w, const double *b, int training,
                   const double *rm, const double *rv, double eps, double *y, double *mean,
                   double *var)
{
    const int64_t N = s[0], C = s[1], H = s[2], W = s[3], cnt = N * H * W;
    for (int64_t c = 0; c < C; c++) {
        double m, v;
        if (training) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t ww = 0; ww < W; ww++) acc += x[idx4(s, n, c, h, ww)];
            m = acc / (double)cnt;
            acc = 0.0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t ww = 0; ww < W; ww++) {
                        double d = x[idx4(s, n, c, h, ww)] - m;
                        acc += d * d;
                    }
            v = acc / (double)cnt;
        } else {
            m = rm[c];
            v = rv[c];
        }
        if (mean) mean[c] = m;
        if (var) var[c] = v;
        double is = 1.0 / sqrt(v + eps);
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t ww = 0; ww < W; ww++) {
                    size_t k = idx4(s, n, c, h, ww);
                    y[k] = (x[k] - m) * is * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
                }
    }
}

typedef struct {
    int64_t shape[4];
    int training;
    double eps;
    /* double reference state */
    double *x, *w, *b, *rm, *rv, *r, *y;
    /* kernel state */
    mrt_tensor tx, tw, tb, trm, trv;
} bn_case;

static void bn_case_init(bn_case *k, int strided, int training, int64_t n, int64_t c, int64_t h,
                         int64_t w, uint64_t seed)
{
    memset(k, 0, sizeof *k);
    int64_t s[4] = {n, c, h, w};
    memcpy(k->shape, s, sizeof s);
    k->training = training;
    k->eps = 1e-5;
    int64_t numel = n * c * h * w;
    k->tx = new4(strided, n, c, h, w);
    k->tw = NEW(c);
    k->tb = NEW(c);
    k->trm = NEW(c);
    k->trv = NEW(c);
    tu_fill_uniform(&k->tx, seed, -2.0, 2.0);
    /* Per-channel offsets and scales: statistics differ between channels. */
    for (int64_t i = 0; i < numel; i++) {
        int64_t ch = (i / (h * w)) % c;
        tu_set(&k->tx, i, tu_get(&k->tx, i) * (0.5 + 0.3 * (double)ch) + 1.5 * (double)ch - 1.0);
    }
    tu_fill_uniform(&k->tw, seed + 1, 0.5, 1.5);
    tu_fill_uniform(&k->tb, seed + 2, -0.5, 0.5);
    tu_fill_uniform(&k->trm, seed + 3, -0.3, 0.3);
    tu_fill_uniform(&k->trv, seed + 4, 0.5, 1.5);
    k->x = to_dbl(&k->tx);
    k->w = to_dbl(&k->tw);
    k->b = to_dbl(&k->tb);
    k->rm = to_dbl(&k->trm);
    k->rv = to_dbl(&k->trv);
    k->r = rand_dbl(numel, seed + 5, -1.0, 1.0);
    k->y = malloc((size_t)numel * sizeof *k->y);
}

static void bn_case_free(bn_case *k)
{
    free(k->x), free(k->w), free(k->b), free(k->rm), free(k->rv), free(k->r), free(k->y);
    mrt_tensor_release(&k->tx), mrt_tensor_release(&k->tw), mrt_tensor_release(&k->tb);
    mrt_tensor_release(&k->trm), mrt_tensor_release(&k->trv);
}

static double bn_ref_objective(void *ctx)
{
    bn_case *k = ctx;
    ref_bn(k->x, k->shape, k->w, k->b, k->training, k->rm, k->rv, k->eps, k->y, NULL, NULL);
    return dot_d(k->y, k->r, k->shape[0] * k->shape[1] * k->shape[2] * k->shape[3]);
}

static double bn_kernel_objective(void *ctx)
{
    bn_case *k = ctx;
    mrt_tensor y = {0};
    /* Running statistics change on each training call but do not enter y. */
    TU_OK(mrt_batchnorm2d_forward(&k->tx, &k->tw, &k->tb, &k->trm, &k->trv, k->training, 0.1,
                                  k->eps, &y, NULL, NULL));
    double v = dot_t(&y, k->r);
    mrt_tensor_release(&y);
    return v;
}

START_TEST(test_bn_forward)
{
    /* _i: bit 0 training, bit 1 strided input and output. */
    const int training = _i & 1, strided = (_i >> 1) & 1;
    bn_case k;
    bn_case_init(&k, strided, training, 3, 4, 5, 7, 100 + (uint64_t)_i);
    const int64_t C = 4, numel = 3 * 4 * 5 * 7, cnt = 3 * 5 * 7;
    double mean[4], var[4];
    ref_bn(k.x, k.shape, k.w, k.b, training, k.rm, k.rv, k.eps, k.y, mean, var);
    mrt_tensor y = strided ? new_nhwc_view(3, 4, 5, 7) : (mrt_tensor){0};
    mrt_tensor sm = {0}, si = {0};
    TU_OK(mrt_batchnorm2d_forward(&k.tx, &k.tw, &k.tb, &k.trm, &k.trv, training, 0.1, k.eps, &y,
                                  &sm, &si));
    TU_ASSERT_SHAPE(&y, 3, 4, 5, 7);
    TU_ASSERT_SHAPE(&sm, 4);
    TU_ASSERT_SHAPE(&si, 4);
    expect_close("y", &y, k.y, numel, FWD_REL, FWD_ABS);
    double invstd[4], rm_new[4], rv_new[4];
    for (int64_t c = 0; c < C; c++) {
        invstd[c] = 1.0 / sqrt(var[c] + k.eps);
        /* running = (1 - m) running + m batch, with the UNBIASED variance. */
        rm_new[c] = training ? 0.9 * k.rm[c] + 0.1 * mean[c] : k.rm[c];
        rv_new[c] = training ? 0.9 * k.rv[c] + 0.1 * var[c] * (double)cnt / (double)(cnt - 1)
                             : k.rv[c];
    }
    expect_close("save_mean", &sm, mean, C, FWD_REL, FWD_ABS);
    expect_close("save_invstd", &si, invstd, C, FWD_REL, 0.0);
    expect_close("running_mean", &k.trm, rm_new, C, FWD_REL, FWD_ABS);
    expect_close("running_var", &k.trv, rv_new, C, FWD_REL, 0.0);
    mrt_tensor_release(&y), mrt_tensor_release(&sm), mrt_tensor_release(&si);
    bn_case_free(&k);
}
END_TEST

START_TEST(test_bn_running_stats_exact_values)
{
    /* One channel, N*H*W = 4 values 1, 2, 3, 6: mean 3, biased var 3.5,
     * unbiased var 14/3. momentum 0.25 from running (1, 2). */
    mrt_tensor x = NEW(2, 1, 1, 2), rm = NEW(1), rv = NEW(1), y = {0}, sm = {0}, si = {0};
    const double v[4] = {1, 2, 3, 6};
    fill_from(&x, v);
    tu_set(&rm, 0, 1.0);
    tu_set(&rv, 0, 2.0);
    TU_OK(mrt_batchnorm2d_forward(&x, NULL, NULL, &rm, &rv, 1, 0.25, 0.0, &y, &sm, &si));
    ck_assert(fabs(tu_get(&rm, 0) - (0.75 * 1.0 + 0.25 * 3.0)) < 1e-6);
    ck_assert(fabs(tu_get(&rv, 0) - (0.75 * 2.0 + 0.25 * 14.0 / 3.0)) < 1e-6);
    ck_assert(fabs(tu_get(&sm, 0) - 3.0) < 1e-6);
    ck_assert(fabs(tu_get(&si, 0) - 1.0 / sqrt(3.5)) < 1e-6);
    /* No affine parameters: y is the standardised input. */
    for (int i = 0; i < 4; i++) ck_assert(fabs(tu_get(&y, i) - (v[i] - 3.0) / sqrt(3.5)) < 1e-6);
    mrt_tensor_release(&x), mrt_tensor_release(&rm), mrt_tensor_release(&rv);
    mrt_tensor_release(&y), mrt_tensor_release(&sm), mrt_tensor_release(&si);
}
END_TEST

START_TEST(test_bn_large_offset_stability)
{
    /* 442,368 values per channel (32 x 64 x 216: ResNet34's first block on
     * 10 s clips) with mean 1000 and spread 0.01: E[x^2] - E[x]^2 in float
     * would lose every digit of the variance. */
    const int64_t N = 32, C = 2, H = 64, W = 216, cnt = N * H * W;
    mrt_tensor x = NEW(N, C, H, W), y = {0}, sm = {0}, si = {0};
    tu_fill_uniform(&x, 7, -0.02, 0.02);
    float *px = mrt_f32(&x);
    for (int64_t i = 0; i < N * C * H * W; i++) px[i] += (i / (H * W)) % C ? -1000.0f : 1000.0f;
    TU_OK(mrt_batchnorm2d_forward(&x, NULL, NULL, NULL, NULL, 1, 0.1, 1e-12, &y, &sm, &si));
    for (int64_t c = 0; c < C; c++) {
        double m = 0.0, v = 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < H * W; k++) m += px[(n * C + c) * H * W + k];
        m /= (double)cnt;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < H * W; k++) {
                double d = px[(n * C + c) * H * W + k] - m;
                v += d * d;
            }
        v /= (double)cnt;
        ck_assert_msg(fabs(tu_get(&sm, c) - m) <= 1e-7 * fabs(m), "mean %.10g vs %.10g",
                      tu_get(&sm, c), m);
        double is = 1.0 / sqrt(v + 1e-12);
        ck_assert_msg(fabs(tu_get(&si, c) - is) <= 1e-5 * is, "invstd %.10g vs %.10g",
                      tu_get(&si, c), is);
        /* y ~ +-1.7: x * invstd (~9e4) minus mean * invstd would keep only
         * ~5e-3 of it in float. */
        const float *py = mrt_f32(&y);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < H * W; k += 97) {
                int64_t at = (n * C + c) * H * W + k;
                double want = (px[at] - m) * is;
                ck_assert_msg(fabs(py[at] - want) <= 1e-4, "y[%lld] %.7g vs %.7g", (long long)at,
                              py[at], want);
            }
    }
    mrt_tensor_release(&x), mrt_tensor_release(&y), mrt_tensor_release(&sm), mrt_tensor_release(&si);
}
END_TEST

START_TEST(test_bn_backward)
{
    /* _i: bit 0 training, bit 1 strided operands. */
    const int training = _i & 1, strided = (_i >> 1) & 1;
    bn_case k;
    bn_case_init(&k, strided, training, 2, 3, 4, 5, 200 + (uint64_t)_i);
    const int64_t C = 3, numel = 2 * 3 * 4 * 5;
    mrt_tensor y = {0}, sm = {0}, si = {0}, dy = new4(strided, 2, 3, 4, 5);
    fill_from(&dy, k.r);
    TU_OK(mrt_batchnorm2d_forward(&k.tx, &k.tw, &k.tb, &k.trm, &k.trv, training, 0.1, k.eps, &y,
                                  &sm, &si));
    mrt_tensor dx = strided ? new_nhwc_view(2, 3, 4, 5) : (mrt_tensor){0};
    mrt_tensor dw = NEW(C), db = NEW(C);
    TU_OK(mrt_batchnorm2d_backward(&k.tx, &dy, &k.tw, &sm, &si, training, &dx, &dw, &db));
    TU_ASSERT_SHAPE(&dx, 2, 3, 4, 5);

    /* Eval-mode references use the running statistics the forward used
     * (unchanged in eval). */
    double *gx = malloc((size_t)numel * sizeof *gx), gw[3], gb[3];
    for (int64_t i = 0; i < numel; i++) gx[i] = fd_dbl(bn_ref_objective, &k, &k.x[i], REF_H);
    for (int64_t c = 0; c < C; c++) {
        gw[c] = fd_dbl(bn_ref_objective, &k, &k.w[c], REF_H);
        gb[c] = fd_dbl(bn_ref_objective, &k, &k.b[c], REF_H);
    }
    expect_close("dx vs reference", &dx, gx, numel, GRAD_REL, GRAD_ABS);
    expect_close("dweight vs reference", &dw, gw, C, GRAD_REL, GRAD_ABS);
    expect_close("dbias vs reference", &db, gb, C, GRAD_REL, GRAD_ABS);

    for (int64_t i = 0; i < numel; i++) gx[i] = fd_f32(bn_kernel_objective, &k, &k.tx, i, SELF_H);
    for (int64_t c = 0; c < C; c++) {
        gw[c] = fd_f32(bn_kernel_objective, &k, &k.tw, c, SELF_H);
        gb[c] = fd_f32(bn_kernel_objective, &k, &k.tb, c, SELF_H);
    }
    expect_close("dx vs kernel", &dx, gx, numel, SELF_REL, SELF_ABS);
    expect_close("dweight vs kernel", &dw, gw, C, SELF_REL, SELF_ABS);
    expect_close("dbias vs kernel", &db, gb, C, SELF_REL, SELF_ABS);
    free(gx);
    mrt_tensor_release(&y), mrt_tensor_release(&sm), mrt_tensor_release(&si);
    mrt_tensor_release(&dy), mrt_tensor_release(&dx), mrt_tensor_release(&dw), mrt_tensor_release(&db);
    bn_case_free(&k);
}
END_TEST

START_TEST(test_bn_accumulate_and_alias)
{
    /* dweight/dbias add to what they hold; dx is overwritten; dx may be dy
     * and y may be x (in place). */
    const int training = _i;
    bn_case k;
    bn_case_init(&k, 0, training, 2, 3, 3, 4, 300 + (uint64_t)_i);
    const int64_t numel = 2 * 3 * 3 * 4;
    mrt_tensor y = {0}, sm = {0}, si = {0}, dy = NEW(2, 3, 3, 4);
    fill_from(&dy, k.r);
    mrt_tensor rm0 = {0}, rv0 = {0};
    TU_OK(mrt_tensor_clone(&rm0, &k.trm));
    TU_OK(mrt_tensor_clone(&rv0, &k.trv));
    TU_OK(mrt_batchnorm2d_forward(&k.tx, &k.tw, &k.tb, &k.trm, &k.trv, training, 0.1, k.eps, &y,
                                  &sm, &si));
    mrt_tensor dx1 = {0}, dw1 = NEW(3), db1 = NEW(3);
    TU_OK(mrt_batchnorm2d_backward(&k.tx, &dy, &k.tw, &sm, &si, training, &dx1, &dw1, &db1));

    mrt_tensor dx2 = NEW(2, 3, 3, 4), dw2 = NEW(3), db2 = NEW(3);
    TU_OK(mrt_tensor_fill(&dx2, 123.0));
    TU_OK(mrt_tensor_fill(&dw2, 0.5));
    TU_OK(mrt_tensor_fill(&db2, -0.25));
    TU_OK(mrt_batchnorm2d_backward(&k.tx, &dy, &k.tw, &sm, &si, training, &dx2, &dw2, &db2));
    expect_bits_equal("dx overwritten", &dx2, &dx1);
    for (int c = 0; c < 3; c++) {
        ck_assert(fabs(tu_get(&dw2, c) - (tu_get(&dw1, c) + 0.5)) < 1e-6);
        ck_assert(fabs(tu_get(&db2, c) - (tu_get(&db1, c) - 0.25)) < 1e-6);
    }
    /* dx written into dy. */
    mrt_tensor dyc = {0};
    TU_OK(mrt_tensor_clone(&dyc, &dy));
    TU_OK(mrt_batchnorm2d_backward(&k.tx, &dyc, &k.tw, &sm, &si, training, &dyc, NULL, NULL));
    expect_bits_equal("dx aliasing dy", &dyc, &dx1);
    /* In-place forward from the same running statistics. */
    mrt_tensor xc = {0};
    TU_OK(mrt_tensor_clone(&xc, &k.tx));
    TU_OK(mrt_batchnorm2d_forward(&xc, &k.tw, &k.tb, &rm0, &rv0, training, 0.1, k.eps, &xc, NULL,
                                  NULL));
    expect_bits_equal("y in place", &xc, &y);
    ck_assert_int_eq(tu_numel(&xc), numel);
    mrt_tensor ts[] = {y, sm, si, dy, rm0, rv0, dx1, dw1, db1, dx2, dw2, db2, dyc, xc};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
    bn_case_free(&k);
}
END_TEST

START_TEST(test_bn_thread_count_independence)
{
    /* Large enough for the parallel path; 1 and 3 threads split the work
     * differently, the bits must not change. */
    const int64_t N = 8, C = 5, H = 24, W = 40;
    mrt_tensor x = NEW(N, C, H, W), dy = NEW(N, C, H, W), w = NEW(C), b = NEW(C);
    tu_fill_uniform(&x, 11, -3.0, 5.0);
    tu_fill_uniform(&dy, 12, -1.0, 1.0);
    tu_fill_uniform(&w, 13, 0.5, 1.5);
    tu_fill_uniform(&b, 14, -1.0, 1.0);
    mrt_tensor y[2] = {{0}}, sm[2] = {{0}}, si[2] = {{0}}, dx[2] = {{0}}, dw[2], db[2], rm[2], rv[2];
    int saved = mrt_get_num_threads();
    for (int r = 0; r < 2; r++) {
        mrt_set_num_threads(r == 0 ? 1 : 3);
        dw[r] = NEW(C), db[r] = NEW(C), rm[r] = NEW(C), rv[r] = NEW(C);
        TU_OK(mrt_tensor_fill(&rv[r], 1.0));
        TU_OK(mrt_batchnorm2d_forward(&x, &w, &b, &rm[r], &rv[r], 1, 0.1, 1e-5, &y[r], &sm[r], &si[r]));
        TU_OK(mrt_batchnorm2d_backward(&x, &dy, &w, &sm[r], &si[r], 1, &dx[r], &dw[r], &db[r]));
    }
    mrt_set_num_threads(saved);
    expect_bits_equal("y", &y[0], &y[1]);
    expect_bits_equal("save_mean", &sm[0], &sm[1]);
    expect_bits_equal("save_invstd", &si[0], &si[1]);
    expect_bits_equal("running_var", &rv[0], &rv[1]);
    expect_bits_equal("dx", &dx[0], &dx[1]);
    expect_bits_equal("dweight", &dw[0], &dw[1]);
    expect_bits_equal("dbias", &db[0], &db[1]);
    for (int r = 0; r < 2; r++) {
        mrt_tensor ts[] = {y[r], sm[r], si[r], dx[r], dw[r], db[r], rm[r], rv[r]};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
    }
    mrt_tensor_release(&x), mrt_tensor_release(&dy), mrt_tensor_release(&w), mrt_tensor_release(&b);
}
END_TEST

/* N x C x 1 x 1 in one of three layouts, holding src's values: 0 rows
 * (contiguous), 1 rows of a wider buffer (row stride 2C), 2 channel-major
 * (channel stride N). 0 and 1 take the row walk, 2 the plane walk. */
static mrt_tensor bn_rows_layout_copy(const mrt_tensor *src, int layout)
{
    const int64_t N = src->shape[0], C = src->shape[1];
    mrt_tensor v = {0};
    if (layout == 0) {
        v = NEW(N, C, 1, 1);
    } else if (layout == 1) {
        mrt_tensor base = NEW(N, 2 * C, 1, 1);
        TU_OK(mrt_view_narrow(&base, 1, C / 2, C, &v));
        mrt_tensor_release(&base);
    } else {
        static const int order[4] = {1, 0, 2, 3};
        mrt_tensor base = NEW(C, N, 1, 1);
        TU_OK(mrt_view_permute(&base, order, &v));
        mrt_tensor_release(&base);
    }
    for (int64_t i = 0; i < N * C; i++) tu_set(&v, i, tu_get(src, i));
    return v;
}

typedef struct {
    mrt_tensor y, sm, si, rm, rv, dx, dw, db;
} bn_rows_result;

static void bn_rows_run(const mrt_tensor *x, const mrt_tensor *dy, const mrt_tensor *w,
                        const mrt_tensor *b, int training, int layout, bn_rows_result *r)
{
    const int64_t C = x->shape[1];
    memset(r, 0, sizeof *r);
    mrt_tensor xl = bn_rows_layout_copy(x, layout), dyl = bn_rows_layout_copy(dy, layout);
    r->rm = NEW(C), r->rv = NEW(C), r->dw = NEW(C), r->db = NEW(C);
    tu_fill_uniform(&r->rm, 41, -0.3, 0.3);
    tu_fill_uniform(&r->rv, 42, 0.5, 1.5);
    r->y = bn_rows_layout_copy(x, layout);
    r->dx = bn_rows_layout_copy(x, layout);
    TU_OK(mrt_batchnorm2d_forward(&xl, w, b, &r->rm, &r->rv, training, 0.01, 1e-3, &r->y, &r->sm,
                                  &r->si));
    TU_OK(mrt_batchnorm2d_backward(&xl, &dyl, w, &r->sm, &r->si, training, &r->dx, &r->dw, &r->db));
    mrt_tensor_release(&xl), mrt_tensor_release(&dyl);
}

static void bn_rows_expect_equal(const bn_rows_result *a, const bn_rows_result *b)
{
    expect_bits_equal("y", &a->y, &b->y);
    expect_bits_equal("save_mean", &a->sm, &b->sm);
    expect_bits_equal("save_invstd", &a->si, &b->si);
    expect_bits_equal("running_mean", &a->rm, &b->rm);
    expect_bits_equal("running_var", &a->rv, &b->rv);
    expect_bits_equal("dx", &a->dx, &b->dx);
    expect_bits_equal("dweight", &a->dw, &b->dw);
    expect_bits_equal("dbias", &a->db, &b->db);
}

static void bn_rows_free(bn_rows_result *r)
{
    mrt_tensor ts[] = {r->y, r->sm, r->si, r->rm, r->rv, r->dx, r->dw, r->db};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}

START_TEST(test_bn_rows_match_planes)
{
    /* nn.BatchNorm1d's N x C x 1 x 1 input takes the row walk when its
     * channels are contiguous: the same bits as the plane walk, in training
     * and evaluation, with a row stride wider than C, and for a channel
     * count that leaves a partial block (70) and one above the parallel
     * threshold (512 x 128). */
    const int training = _i & 1, big = (_i >> 1) & 1;
    const int64_t N = big ? 512 : 37, C = big ? 128 : 70;
    mrt_tensor x = NEW(N, C, 1, 1), dy = NEW(N, C, 1, 1), w = NEW(C), b = NEW(C);
    tu_fill_uniform(&x, 51, -3.0, 5.0);
    for (int64_t i = 0; i < N * C; i++) tu_set(&x, i, tu_get(&x, i) * 0.01 + (double)(i % C) * 40.0);
    tu_fill_uniform(&dy, 52, -1.0, 1.0);
    tu_fill_uniform(&w, 53, 0.5, 1.5);
    tu_fill_uniform(&b, 54, -1.0, 1.0);
    bn_rows_result planes, rows, wide;
    bn_rows_run(&x, &dy, &w, &b, training, 2, &planes);
    bn_rows_run(&x, &dy, &w, &b, training, 0, &rows);
    bn_rows_run(&x, &dy, &w, &b, training, 1, &wide);
    bn_rows_expect_equal(&rows, &planes);
    bn_rows_expect_equal(&wide, &planes);
    bn_rows_free(&planes), bn_rows_free(&rows), bn_rows_free(&wide);
    mrt_tensor_release(&x), mrt_tensor_release(&dy), mrt_tensor_release(&w), mrt_tensor_release(&b);
}
END_TEST

START_TEST(test_bn_rows_threads_and_alias)
{
    /* The row walk gives the same bits on 1 and 3 threads, in place (y = x,
     * dx = dy) as out of place, and matches the double reference. */
    const int64_t N = 512, C = 128;
    mrt_tensor x = NEW(N, C, 1, 1), dy = NEW(N, C, 1, 1), w = NEW(C), b = NEW(C);
    tu_fill_uniform(&x, 61, -2.0, 2.0);
    tu_fill_uniform(&dy, 62, -1.0, 1.0);
    tu_fill_uniform(&w, 63, 0.5, 1.5);
    tu_fill_uniform(&b, 64, -1.0, 1.0);
    int saved = mrt_get_num_threads();
    bn_rows_result r[2];
    for (int k = 0; k < 2; k++) {
        mrt_set_num_threads(k == 0 ? 1 : 3);
        bn_rows_run(&x, &dy, &w, &b, 1, 0, &r[k]);
    }
    mrt_set_num_threads(saved);
    bn_rows_expect_equal(&r[0], &r[1]);

    const int64_t shape[4] = {N, C, 1, 1};
    double *xd = to_dbl(&x), *wd = to_dbl(&w), *bd = to_dbl(&b), *yd = malloc((size_t)(N * C) * sizeof *yd);
    double rm[128] = {0}, rv[128];
    for (int c = 0; c < 128; c++) rv[c] = 1.0;
    ref_bn(xd, shape, wd, bd, 1, rm, rv, 1e-3, yd, NULL, NULL);
    expect_close("y vs reference", &r[0].y, yd, N * C, FWD_REL, FWD_ABS);

    mrt_tensor xc = {0}, dyc = {0}, rm1 = NEW(C), rv1 = NEW(C), sm = {0}, si = {0};
    tu_fill_uniform(&rm1, 41, -0.3, 0.3);
    tu_fill_uniform(&rv1, 42, 0.5, 1.5);
    TU_OK(mrt_tensor_clone(&xc, &x));
    TU_OK(mrt_tensor_clone(&dyc, &dy));
    TU_OK(mrt_batchnorm2d_forward(&xc, &w, &b, &rm1, &rv1, 1, 0.01, 1e-3, &xc, &sm, &si));
    expect_bits_equal("y in place", &xc, &r[0].y);
    TU_OK(mrt_batchnorm2d_backward(&x, &dyc, &w, &sm, &si, 1, &dyc, NULL, NULL));
    expect_bits_equal("dx into dy", &dyc, &r[0].dx);
    mrt_tensor_release(&dyc);
    TU_OK(mrt_tensor_clone(&dyc, &dy));
    TU_OK(mrt_batchnorm2d_backward(&x, &dyc, &w, &sm, &si, 0, &dyc, NULL, NULL));
    for (int64_t i = 0; i < N * C; i += 101) {
        const double want = (double)(float)tu_get(&dy, i) *
                            (double)(float)(tu_get(&w, i % C) * tu_get(&si, i % C));
        ck_assert_msg(fabs(tu_get(&dyc, i) - want) <= 1e-6 * fabs(want) + 1e-12,
                      "evaluation dx[%lld] %.9g vs %.9g", (long long)i, tu_get(&dyc, i), want);
    }
    free(xd), free(wd), free(bd), free(yd);
    bn_rows_free(&r[0]), bn_rows_free(&r[1]);
    mrt_tensor ts[] = {x, dy, w, b, xc, dyc, rm1, rv1, sm, si};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_bn_errors)
{
    mrt_tensor x = NEW(2, 4, 3, 3), x3 = NEW(2, 4, 9), xi = {0}, w = NEW(4), w5 = NEW(5);
    mrt_tensor rm = NEW(4), rv = NEW(4), one = NEW(1, 4, 1, 1), ybad = NEW(2, 4, 3, 4);
    mrt_tensor y = {0}, sm = {0}, si = {0};
    TU_ALLOC(&xi, MRT_I64, 2, 4, 3, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&x3, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &y, NULL, NULL));
    TU_MSG_HAS("batchnorm2d_forward");
    TU_MSG_HAS("2x4x9");
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&x, &w5, &w, &rm, &rv, 1, 0.1, 1e-5, &y, NULL, NULL));
    TU_MSG_HAS("weight");
    TU_MSG_HAS("2x4x3x3");
    TU_MSG_HAS("5");
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&x, &w, &w, &rm, &w5, 1, 0.1, 1e-5, &y, NULL, NULL));
    TU_MSG_HAS("running_var");
    TU_FAILS(MRT_ERR_DTYPE, mrt_batchnorm2d_forward(&xi, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &y, NULL, NULL));
    TU_MSG_HAS("int64");
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&one, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &y, NULL, NULL));
    TU_MSG_HAS("1x4x1x1");
    /* ... but one value per channel is fine in evaluation. */
    TU_OK(mrt_batchnorm2d_forward(&one, &w, &w, &rm, &rv, 0, 0.1, 1e-5, &y, NULL, NULL));
    mrt_tensor_release(&y);
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&x, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &ybad, NULL, NULL));
    TU_MSG_HAS("2x4x3x4");
    TU_MSG_HAS("2x4x3x3");
    TU_FAILS(MRT_ERR_ARG, mrt_batchnorm2d_forward(&x, &w, &w, NULL, NULL, 0, 0.1, 1e-5, &y, NULL, NULL));
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_forward(&x, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &y, &w5, NULL));
    TU_MSG_HAS("save_mean");
    /* A failed call allocates nothing. */
    ck_assert_ptr_null(y.storage);
    TU_OK(mrt_batchnorm2d_forward(&x, &w, &w, &rm, &rv, 1, 0.1, 1e-5, &y, &sm, &si));
    mrt_tensor dx = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_backward(&x, &ybad, &w, &sm, &si, 1, &dx, NULL, NULL));
    TU_MSG_HAS("batchnorm2d_backward");
    TU_MSG_HAS("2x4x3x4");
    TU_FAILS(MRT_ERR_SHAPE, mrt_batchnorm2d_backward(&x, &y, &w, &sm, &si, 1, &dx, &w5, NULL));
    TU_MSG_HAS("dweight");
    TU_FAILS(MRT_ERR_DTYPE, mrt_batchnorm2d_backward(&x, &xi, &w, &sm, &si, 1, &dx, NULL, NULL));
    ck_assert_ptr_null(dx.storage);
    mrt_tensor ts[] = {x, x3, xi, w, w5, rm, rv, one, ybad, y, sm, si};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= ReLU ============================================ */

START_TEST(test_relu)
{
    const int strided = _i;
    mrt_tensor x = new4(strided, 2, 3, 4, 5), y = {0}, dy = new4(strided, 2, 3, 4, 5);
    const int64_t n = 120;
    tu_fill_uniform(&x, 21, -2.0, 2.0);
    tu_fill_uniform(&dy, 22, -1.0, 1.0);
    /* Keep every input at least 0.05 from 0 (the kink) for the differences. */
    for (int64_t i = 0; i < n; i++) {
        double v = tu_get(&x, i);
        if (fabs(v) < 0.05) tu_set(&x, i, v < 0 ? -0.05 - fabs(v) : 0.05 + v);
    }
    double *xv = to_dbl(&x), *r = to_dbl(&dy), want[120], gx[120];
    TU_OK(mrt_relu_forward(&x, &y));
    for (int64_t i = 0; i < n; i++) want[i] = xv[i] > 0 ? xv[i] : 0.0;
    expect_close("relu y", &y, want, n, 0.0, 0.0);
    mrt_tensor dx = {0};
    TU_OK(mrt_relu_backward(&y, &dy, &dx));
    for (int64_t i = 0; i < n; i++) {
        /* d relu / dx by central differences on the reference. */
        double h = 1e-3, a = xv[i] + h, b = xv[i] - h;
        gx[i] = r[i] * ((a > 0 ? a : 0) - (b > 0 ? b : 0)) / (2 * h);
    }
    expect_close("relu dx", &dx, gx, n, 1e-6, 0.0);
    /* In place: y == x, then dx == dy. */
    mrt_tensor xc = {0}, dyc = {0};
    TU_OK(mrt_tensor_clone(&xc, &x));
    TU_OK(mrt_relu_forward(&xc, &xc));
    expect_bits_equal("relu in place", &xc, &y);
    TU_OK(mrt_tensor_clone(&dyc, &dy));
    TU_OK(mrt_relu_backward(&xc, &dyc, &dyc));
    expect_bits_equal("relu backward in place", &dyc, &dx);
    free(xv), free(r);
    mrt_tensor ts[] = {x, y, dy, dx, xc, dyc};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_relu_special_and_errors)
{
    mrt_tensor x = NEW(5), y = {0}, bad = NEW(4), xi = {0};
    const double v[5] = {NAN, INFINITY, -INFINITY, -0.0, 3.0};
    fill_from(&x, v);
    TU_OK(mrt_relu_forward(&x, &y));
    ck_assert(isnan(tu_get(&y, 0))); /* NaN propagates, as torch.relu */
    ck_assert(tu_get(&y, 1) == INFINITY);
    ck_assert(tu_get(&y, 2) == 0.0 && tu_get(&y, 3) == 0.0 && tu_get(&y, 4) == 3.0);
    mrt_tensor dx = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_relu_backward(&y, &bad, &dx));
    TU_MSG_HAS("relu_backward");
    TU_MSG_HAS("4");
    TU_MSG_HAS("5");
    TU_FAILS(MRT_ERR_SHAPE, mrt_relu_forward(&x, &bad));
    TU_MSG_HAS("relu_forward");
    TU_ALLOC(&xi, MRT_I64, 5);
    TU_FAILS(MRT_ERR_DTYPE, mrt_relu_forward(&xi, &y));
    TU_FAILS(MRT_ERR_DTYPE, mrt_relu_backward(&y, &xi, &dx));
    mrt_tensor ts[] = {x, y, bad, xi};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= max pooling ===================================== */

static void ref_maxpool(const double *x, const int64_t *s, const mrt_pool2d_params *p, int64_t OH,
                        int64_t OW, double *y, int64_t *idx)
{
    for (int64_t n = 0; n < s[0]; n++)
        for (int64_t c = 0; c < s[1]; c++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double best = -INFINITY;
                    int64_t where = -1;
                    for (int64_t i = 0; i < p->kernel_h; i++)
                        for (int64_t j = 0; j < p->kernel_w; j++) {
                            int64_t h = oh * p->stride_h - p->pad_h + i;
                            int64_t w = ow * p->stride_w - p->pad_w + j;
                            if (h < 0 || h >= s[2] || w < 0 || w >= s[3]) continue; /* -inf */
                            double v = x[idx4(s, n, c, h, w)];
                            if (where < 0 || v > best) best = v, where = h * s[3] + w;
                        }
                    size_t k = (size_t)(((n * s[1] + c) * OH + oh) * OW + ow);
                    y[k] = best;
                    idx[k] = where;
                }
}

static const mrt_pool2d_params POOLS[] = {
    {3, 3, 2, 2, 1, 1}, /* ResNet's stem */
    {2, 2, 2, 2, 0, 0},
    {3, 3, 1, 1, 1, 1},
    {2, 3, 1, 2, 1, 1},
    {3, 2, 3, 1, 0, 1},
    {3, 3, 3, 3, 1, 1},
    {1, 1, 2, 3, 0, 0},
};
#define N_POOLS ((int)(sizeof POOLS / sizeof POOLS[0]))

typedef struct {
    mrt_tensor x;
    const mrt_pool2d_params *p;
    double *r;
} maxpool_ctx;

static double maxpool_kernel_objective(void *ctx)
{
    maxpool_ctx *k = ctx;
    mrt_tensor y = {0}, idx = {0};
    TU_OK(mrt_maxpool2d_forward(&k->x, k->p, &y, &idx));
    double v = dot_t(&y, k->r);
    mrt_tensor_release(&y), mrt_tensor_release(&idx);
    return v;
}

START_TEST(test_maxpool)
{
    const mrt_pool2d_params *p = &POOLS[_i / 2];
    const int strided = _i % 2;
    /* W = 23: several vector steps along an output row, and a ragged end. */
    const int64_t N = 2, C = 3, H = 7, W = 23, s[4] = {N, C, H, W};
    const int64_t OH = (H + 2 * p->pad_h - p->kernel_h) / p->stride_h + 1;
    const int64_t OW = (W + 2 * p->pad_w - p->kernel_w) / p->stride_w + 1;
    const int64_t nx = N * C * H * W, ny = N * C * OH * OW;
    /* Distinct values 1/16 apart (a shuffled ramp, negative too): no ties,
     * and differences with h = 1e-2 never change which one is largest. */
    mrt_tensor x = new4(strided, N, C, H, W);
    double *xv = malloc((size_t)nx * sizeof *xv);
    for (int64_t i = 0; i < nx; i++) xv[i] = (double)i / 16.0 - 10.0;
    tu_rng rg = tu_rng_seed(31 + (uint64_t)_i);
    for (int64_t i = nx - 1; i > 0; i--) {
        int64_t j = tu_rng_u32(&rg) % (uint64_t)(i + 1);
        double t = xv[i];
        xv[i] = xv[j], xv[j] = t;
    }
    fill_from(&x, xv);
    double *yw = malloc((size_t)ny * sizeof *yw);
    int64_t *iw = malloc((size_t)ny * sizeof *iw);
    ref_maxpool(xv, s, p, OH, OW, yw, iw);
    mrt_tensor y = strided ? new_nhwc_view(N, C, OH, OW) : (mrt_tensor){0}, idx = {0};
    TU_OK(mrt_maxpool2d_forward(&x, p, &y, &idx));
    TU_ASSERT_SHAPE(&y, N, C, OH, OW);
    ck_assert_int_eq(idx.dtype, MRT_I64);
    expect_close("maxpool y", &y, yw, ny, 0.0, 0.0);
    for (int64_t i = 0; i < ny; i++)
        ck_assert_msg((int64_t)tu_get(&idx, i) == iw[i], "index[%lld] %lld, want %lld",
                      (long long)i, (long long)tu_get(&idx, i), (long long)iw[i]);

    /* Backward: the reference scatters dy to the argmax positions. */
    double *r = rand_dbl(ny, 41 + (uint64_t)_i, -1.0, 1.0), *gx = calloc((size_t)nx, sizeof *gx);
    mrt_tensor dy = new4(strided, N, C, OH, OW), dx = strided ? new_nhwc_view(N, C, H, W) : (mrt_tensor){0};
    fill_from(&dy, r);
    if (strided) TU_OK(mrt_tensor_fill(&dx, 99.0)); /* must be overwritten */
    TU_OK(mrt_maxpool2d_backward(&dy, &idx, strided ? 0 : H, strided ? 0 : W, &dx));
    TU_ASSERT_SHAPE(&dx, N, C, H, W);
    for (int64_t k = 0; k < ny; k++) {
        int64_t plane = k / (OH * OW);
        gx[plane * H * W + iw[k]] += r[k];
    }
    expect_close("maxpool dx", &dx, gx, nx, 1e-6, 1e-7);
    maxpool_ctx ctx = {x, p, r};
    for (int64_t i = 0; i < nx; i++) gx[i] = fd_f32(maxpool_kernel_objective, &ctx, &ctx.x, i, SELF_H);
    expect_close("maxpool dx vs kernel", &dx, gx, nx, SELF_REL, 1e-5);
    free(xv), free(yw), free(iw), free(r), free(gx);
    mrt_tensor ts[] = {x, y, idx, dy, dx};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_maxpool_tiny_planes)
{
    /* Planes as small as the kernel allows: kernel offsets that fall past
     * the edge for every output must read nothing. */
    static const mrt_pool2d_params ps[] = {
        {3, 3, 2, 2, 1, 1}, {2, 2, 2, 2, 1, 1}, {3, 3, 1, 1, 1, 1}, {3, 3, 3, 3, 1, 1}, {1, 1, 2, 2, 0, 0},
    };
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++)
        for (int64_t H = 1; H <= 4; H++)
            for (int64_t W = 1; W <= 4; W++) {
                const mrt_pool2d_params *p = &ps[k];
                if (H + 2 * p->pad_h < p->kernel_h || W + 2 * p->pad_w < p->kernel_w) continue;
                const int64_t s[4] = {1, 2, H, W};
                const int64_t OH = (H + 2 * p->pad_h - p->kernel_h) / p->stride_h + 1;
                const int64_t OW = (W + 2 * p->pad_w - p->kernel_w) / p->stride_w + 1;
                mrt_tensor x = NEW(1, 2, H, W), y = {0}, idx = {0};
                tu_fill_uniform(&x, (uint64_t)(100 * k + 10 * H + W), -3.0, -1.0);
                double *xv = to_dbl(&x), yw[32];
                int64_t iw[32];
                ref_maxpool(xv, s, p, OH, OW, yw, iw);
                TU_OK(mrt_maxpool2d_forward(&x, p, &y, &idx));
                TU_ASSERT_SHAPE(&y, 1, 2, OH, OW);
                for (int64_t i = 0; i < 2 * OH * OW; i++) {
                    ck_assert_msg(tu_get(&y, i) == yw[i] && (int64_t)tu_get(&idx, i) == iw[i],
                                  "pool %zu, %lldx%lld, output %lld: %g@%lld, want %g@%lld", k,
                                  (long long)H, (long long)W, (long long)i, tu_get(&y, i),
                                  (long long)tu_get(&idx, i), yw[i], (long long)iw[i]);
                }
                free(xv);
                mrt_tensor_release(&x), mrt_tensor_release(&y), mrt_tensor_release(&idx);
            }
}
END_TEST

START_TEST(test_maxpool_ties_padding_nan)
{
    /* All equal: every window's first in-window position wins (PyTorch). */
    mrt_pool2d_params p = {3, 3, 2, 2, 1, 1};
    mrt_tensor x = NEW(1, 1, 4, 4), y = {0}, idx = {0};
    TU_OK(mrt_tensor_fill(&x, -5.0)); /* negative: padding (-inf) must not win */
    TU_OK(mrt_maxpool2d_forward(&x, &p, &y, &idx));
    TU_ASSERT_SHAPE(&y, 1, 1, 2, 2);
    const int64_t want[4] = {0, 1, 4, 5};
    for (int i = 0; i < 4; i++) {
        ck_assert(tu_get(&y, i) == -5.0);
        ck_assert_int_eq((int64_t)tu_get(&idx, i), want[i]);
    }
    /* Two equal maxima in one window: the first in row-major order. */
    tu_set(&x, 5, 2.0);  /* (1,1) */
    tu_set(&x, 6, 2.0);  /* (1,2) */
    tu_set(&x, 9, 2.0);  /* (2,1) */
    TU_OK(mrt_maxpool2d_forward(&x, &p, &y, &idx));
    ck_assert_int_eq((int64_t)tu_get(&idx, 0), 5);
    ck_assert_int_eq((int64_t)tu_get(&idx, 1), 5);
    ck_assert_int_eq((int64_t)tu_get(&idx, 2), 5);
    ck_assert_int_eq((int64_t)tu_get(&idx, 3), 5);
    /* NaN propagates. */
    tu_set(&x, 15, NAN);
    TU_OK(mrt_maxpool2d_forward(&x, &p, &y, &idx));
    ck_assert(isnan(tu_get(&y, 3)));
    ck_assert_int_eq((int64_t)tu_get(&idx, 3), 15);
    /* Indices are optional for inference. */
    mrt_tensor y2 = {0};
    TU_OK(mrt_maxpool2d_forward(&x, &p, &y2, NULL));
    ck_assert(tu_get(&y2, 0) == 2.0);
    mrt_tensor_release(&x), mrt_tensor_release(&y), mrt_tensor_release(&idx), mrt_tensor_release(&y2);
}
END_TEST

START_TEST(test_maxpool_overlap_accumulates)
{
    /* Stride 1 with kernel 3: one maximum serves several windows and its
     * gradient is the sum of theirs. */
    mrt_pool2d_params p = {3, 3, 1, 1, 1, 1};
    mrt_tensor x = NEW(1, 1, 3, 3), y = {0}, idx = {0}, dy = NEW(1, 1, 3, 3), dx = {0};
    tu_set(&x, 4, 10.0); /* centre: the maximum of all 9 windows */
    TU_OK(mrt_maxpool2d_forward(&x, &p, &y, &idx));
    TU_OK(mrt_tensor_fill(&dy, 0.5));
    TU_OK(mrt_maxpool2d_backward(&dy, &idx, 3, 3, &dx));
    for (int i = 0; i < 9; i++) ck_assert(tu_get(&dx, i) == (i == 4 ? 4.5 : 0.0));
    mrt_tensor ts[] = {x, y, idx, dy, dx};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_maxpool_errors)
{
    mrt_pool2d_params p = {3, 3, 2, 2, 1, 1}, bigpad = {3, 3, 2, 2, 2, 2}, zero = {0, 3, 1, 1, 0, 0};
    mrt_tensor x = NEW(1, 2, 1, 1), x3 = NEW(2, 5, 5), ok = NEW(1, 2, 6, 6), y = {0}, idx = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_maxpool2d_forward(&x, &(mrt_pool2d_params){3, 3, 2, 2, 0, 0}, &y, &idx));
    TU_MSG_HAS("maxpool2d_forward");
    TU_MSG_HAS("1x2x1x1");
    TU_FAILS(MRT_ERR_SHAPE, mrt_maxpool2d_forward(&x3, &p, &y, &idx));
    TU_MSG_HAS("2x5x5");
    TU_FAILS(MRT_ERR_ARG, mrt_maxpool2d_forward(&ok, &bigpad, &y, &idx));
    TU_FAILS(MRT_ERR_ARG, mrt_maxpool2d_forward(&ok, &zero, &y, &idx));
    mrt_tensor ybad = NEW(1, 2, 4, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_maxpool2d_forward(&ok, &p, &ybad, &idx));
    TU_MSG_HAS("1x2x4x3");
    TU_MSG_HAS("1x2x3x3");
    ck_assert_ptr_null(idx.storage);
    TU_OK(mrt_maxpool2d_forward(&ok, &p, &y, &idx));
    mrt_tensor dx = {0};
    TU_FAILS(MRT_ERR_DTYPE, mrt_maxpool2d_backward(&y, &y, 6, 6, &dx));
    TU_FAILS(MRT_ERR_SHAPE, mrt_maxpool2d_backward(&ybad, &idx, 6, 6, &dx));
    TU_MSG_HAS("1x2x4x3");
    /* An index outside the plane is an error, not a stray write. */
    mrt_i64(&idx)[3] = 36;
    TU_FAILS(MRT_ERR_INDEX, mrt_maxpool2d_backward(&y, &idx, 6, 6, &dx));
    TU_MSG_HAS("36");
    ck_assert_ptr_null(dx.storage);
    mrt_i64(&idx)[3] = 0;
    mrt_tensor dx5 = NEW(1, 2, 5, 6);
    TU_FAILS(MRT_ERR_SHAPE, mrt_maxpool2d_backward(&y, &idx, 6, 6, &dx5));
    TU_FAILS(MRT_ERR_ARG, mrt_maxpool2d_backward(&y, &idx, 0, 6, &dx));
    mrt_tensor ts[] = {x, x3, ok, y, idx, ybad, dx5};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= global average pooling ========================== */

START_TEST(test_avgpool_global)
{
    const int strided = _i;
    const int64_t N = 2, C = 3, H = 5, W = 7, nx = N * C * H * W;
    mrt_tensor x = new4(strided, N, C, H, W), y = {0}, dy = NEW(N, C), dx = {0};
    tu_fill_uniform(&x, 51, -2.0, 3.0);
    tu_fill_uniform(&dy, 52, -1.0, 1.0);
    double *xv = to_dbl(&x), yw[6], gx[210];
    for (int64_t pl = 0; pl < N * C; pl++) {
        double s = 0.0;
        for (int64_t k = 0; k < H * W; k++) s += xv[pl * H * W + k];
        yw[pl] = s / (double)(H * W);
    }
    TU_OK(mrt_avgpool_global_forward(&x, &y));
    TU_ASSERT_SHAPE(&y, N, C);
    expect_close("avgpool y", &y, yw, N * C, FWD_REL, FWD_ABS);
    if (strided) dx = new_nhwc_view(N, C, H, W);
    TU_OK(mrt_avgpool_global_backward(&dy, strided ? 0 : H, strided ? 0 : W, &dx));
    TU_ASSERT_SHAPE(&dx, N, C, H, W);
    for (int64_t i = 0; i < nx; i++) gx[i] = tu_get(&dy, i / (H * W)) / (double)(H * W);
    expect_close("avgpool dx", &dx, gx, nx, FWD_REL, 0.0);
    mrt_tensor bad = NEW(N, C, 1);
    TU_FAILS(MRT_ERR_SHAPE, mrt_avgpool_global_forward(&x, &bad));
    TU_MSG_HAS("avgpool_global_forward");
    TU_MSG_HAS("2x3x1");
    TU_FAILS(MRT_ERR_SHAPE, mrt_avgpool_global_backward(&bad, H, W, &dx));
    TU_MSG_HAS("2x3x1");
    mrt_tensor empty = NEW(2, 3, 0, 4), ye = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_avgpool_global_forward(&empty, &ye));
    free(xv);
    mrt_tensor ts[] = {x, y, dy, dx, bad, empty};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= GeM pooling ===================================== */

static void ref_gem(const double *x, const int64_t *s, double p, double eps, double *y)
{
    const int64_t hw = s[2] * s[3];
    for (int64_t pl = 0; pl < s[0] * s[1]; pl++) {
        double acc = 0.0;
        for (int64_t k = 0; k < hw; k++) {
            double v = x[pl * hw + k];
            acc += pow(v < eps ? eps : v, p);
        }
        y[pl] = pow(acc / (double)hw, 1.0 / p);
    }
}

typedef struct {
    int64_t shape[4];
    double eps;
    double *x, p, *r, y[64];
    mrt_tensor tx, tp;
} gem_ctx;

static double gem_ref_objective(void *ctx)
{
    gem_ctx *k = ctx;
    ref_gem(k->x, k->shape, k->p, k->eps, k->y);
    return dot_d(k->y, k->r, k->shape[0] * k->shape[1]);
}

static double gem_kernel_objective(void *ctx)
{
    gem_ctx *k = ctx;
    mrt_tensor y = {0};
    TU_OK(mrt_gem_forward(&k->tx, &k->tp, k->eps, &y));
    double v = dot_t(&y, k->r);
    mrt_tensor_release(&y);
    return v;
}

START_TEST(test_gem)
{
    /* _i: bit 0 strided, bit 1 selects p (3, the reference run's start, or
     * 1.7 after some learning). */
    const int strided = _i & 1;
    const double p = (_i >> 1) ? 1.7 : 3.0;
    const int64_t N = 2, C = 3, H = 4, W = 5, nx = N * C * H * W, ny = N * C;
    gem_ctx k = {.shape = {N, C, H, W}, .eps = 0.1, .p = p};
    k.tx = new4(strided, N, C, H, W);
    k.tp = NEW(1);
    tu_set(&k.tp, 0, p);
    k.p = tu_get(&k.tp, 0);
    /* ReLU-like input with a good share below eps (clamped: zero gradient);
     * nothing within 0.03 of eps, so differences never cross the clamp. */
    tu_fill_uniform(&k.tx, 61 + (uint64_t)_i, -1.0, 2.0);
    for (int64_t i = 0; i < nx; i++) {
        double v = tu_get(&k.tx, i);
        if (v < 0.0) tu_set(&k.tx, i, 0.0);
        else if (fabs(v - k.eps) < 0.03) tu_set(&k.tx, i, k.eps + 0.05);
    }
    k.x = to_dbl(&k.tx);
    k.r = rand_dbl(ny, 71 + (uint64_t)_i, -1.0, 1.0);
    double yw[6];
    ref_gem(k.x, k.shape, k.p, k.eps, yw);
    mrt_tensor y = {0}, dy = NEW(N, C), dx = {0}, dp = NEW(1);
    TU_OK(mrt_gem_forward(&k.tx, &k.tp, k.eps, &y));
    TU_ASSERT_SHAPE(&y, N, C);
    expect_close("gem y", &y, yw, ny, FWD_REL, FWD_ABS);
    fill_from(&dy, k.r);
    if (strided) dx = new_nhwc_view(N, C, H, W);
    TU_OK(mrt_gem_backward(&k.tx, &k.tp, k.eps, &y, &dy, &dx, &dp));
    double *gx = malloc((size_t)nx * sizeof *gx);
    for (int64_t i = 0; i < nx; i++) gx[i] = fd_dbl(gem_ref_objective, &k, &k.x[i], REF_H);
    double gp = fd_dbl(gem_ref_objective, &k, &k.p, REF_H);
    expect_close("gem dx vs reference", &dx, gx, nx, GRAD_REL, GRAD_ABS);
    expect_close("gem dp vs reference", &dp, &gp, 1, GRAD_REL, 0.0);
    int zero_grads = 0;
    for (int64_t i = 0; i < nx; i++)
        if (k.x[i] < k.eps) {
            ck_assert_msg(tu_get(&dx, i) == 0.0, "clamped input %lld has gradient %g",
                          (long long)i, tu_get(&dx, i));
            zero_grads++;
        }
    ck_assert_int_gt(zero_grads, 10);
    for (int64_t i = 0; i < nx; i++) gx[i] = fd_f32(gem_kernel_objective, &k, &k.tx, i, SELF_H);
    gp = fd_f32(gem_kernel_objective, &k, &k.tp, 0, SELF_H);
    expect_close("gem dx vs kernel", &dx, gx, nx, SELF_REL, SELF_ABS);
    expect_close("gem dp vs kernel", &dp, &gp, 1, SELF_REL, 0.0);
    /* dp accumulates; dx is overwritten. */
    double dp1 = tu_get(&dp, 0);
    mrt_tensor dx2 = NEW(N, C, H, W);
    TU_OK(mrt_tensor_fill(&dx2, 7.0));
    TU_OK(mrt_gem_backward(&k.tx, &k.tp, k.eps, &y, &dy, &dx2, &dp));
    ck_assert(fabs(tu_get(&dp, 0) - 2.0 * dp1) <= 1e-6 * fabs(dp1));
    expect_bits_equal("gem dx overwritten", &dx2, &dx);
    free(gx), free(k.x), free(k.r);
    mrt_tensor ts[] = {k.tx, k.tp, y, dy, dx, dp, dx2};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_gem_errors)
{
    mrt_tensor x = NEW(2, 3, 4, 4), p = NEW(1), p2 = NEW(2), y = {0}, bad = NEW(3, 2), dx = {0};
    tu_set(&p, 0, 3.0);
    TU_FAILS(MRT_ERR_SHAPE, mrt_gem_forward(&x, &p2, 1e-6, &y));
    TU_MSG_HAS("gem_forward");
    TU_MSG_HAS("2");
    TU_FAILS(MRT_ERR_ARG, mrt_gem_forward(&x, &p, 0.0, &y));
    TU_FAILS(MRT_ERR_SHAPE, mrt_gem_forward(&x, &p, 1e-6, &bad));
    TU_MSG_HAS("3x2");
    TU_MSG_HAS("2x3");
    TU_OK(mrt_gem_forward(&x, &p, 1e-6, &y));
    TU_FAILS(MRT_ERR_SHAPE, mrt_gem_backward(&x, &p, 1e-6, &y, &bad, &dx, NULL));
    TU_MSG_HAS("gem_backward");
    TU_MSG_HAS("3x2");
    TU_FAILS(MRT_ERR_SHAPE, mrt_gem_backward(&x, &p, 1e-6, &y, &y, &dx, &p2));
    TU_MSG_HAS("dp");
    tu_set(&p, 0, 0.0);
    TU_FAILS(MRT_ERR_ARG, mrt_gem_forward(&x, &p, 1e-6, &y));
    ck_assert_ptr_null(dx.storage);
    mrt_tensor ts[] = {x, p, p2, y, bad};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= dropout ========================================= */

START_TEST(test_dropout_statistics_and_mask)
{
    const double prob = 0.3;
    const int64_t R = 64, K = 1024, n = R * K; /* above the RNG's parallel threshold */
    mrt_tensor x = NEW(R, K), y = {0}, mask = {0};
    tu_fill_uniform(&x, 81, -2.0, 2.0);
    mrt_rng rng;
    mrt_rng_init(&rng, 1234);
    TU_OK(mrt_dropout_forward(&x, prob, &rng, &y, &mask));
    ck_assert_uint_eq(rng.offset, (uint64_t)n); /* one draw per element */
    const float scale = (float)(1.0 / (1.0 - prob));
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        float m = mrt_f32(&mask)[i];
        ck_assert_msg(m == 0.0f || m == scale, "mask[%lld] = %.9g", (long long)i, m);
        kept += m != 0.0f;
        ck_assert(mrt_f32(&y)[i] == mrt_f32(&x)[i] * m);
    }
    /* Kept fraction ~ Binomial(n, 0.7)/n: sd 0.0018; 5 sd. */
    double frac = (double)kept / (double)n, sd = sqrt(prob * (1 - prob) / (double)n);
    ck_assert_msg(fabs(frac - (1 - prob)) < 5 * sd, "kept fraction %.5f", frac);
    /* The mask is mrt_rng_bernoulli(1 - prob) from the same generator state,
     * scaled: reproducible from the seed alone. */
    mrt_tensor b = NEW(R, K);
    mrt_rng r2;
    mrt_rng_init(&r2, 1234);
    TU_OK(mrt_rng_bernoulli(&r2, &b, 1 - prob));
    for (int64_t i = 0; i < n; i++) ck_assert(mrt_f32(&mask)[i] == mrt_f32(&b)[i] * scale);
    /* Same seed, 1 and 3 threads: the same mask and output. The next draw
     * from the generator differs. */
    int saved = mrt_get_num_threads();
    mrt_tensor y1 = {0}, y3 = {0}, m1 = {0}, m3 = {0}, m2 = {0};
    mrt_set_num_threads(1);
    mrt_rng_init(&r2, 1234);
    TU_OK(mrt_dropout_forward(&x, prob, &r2, &y1, &m1));
    mrt_set_num_threads(3);
    mrt_rng_init(&r2, 1234);
    TU_OK(mrt_dropout_forward(&x, prob, &r2, &y3, &m3));
    TU_OK(mrt_dropout_forward(&x, prob, &r2, &y3, &m2));
    mrt_set_num_threads(saved);
    expect_bits_equal("mask, 1 thread", &m1, &mask);
    expect_bits_equal("mask, 3 threads", &m3, &mask);
    expect_bits_equal("y, 1 thread", &y1, &y);
    int differ = 0;
    for (int64_t i = 0; i < n; i++) differ += mrt_f32(&m2)[i] != mrt_f32(&mask)[i];
    ck_assert_int_gt(differ, n / 10);
    mrt_tensor ts[] = {x, y, mask, b, y1, y3, m1, m3, m2};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_dropout_backward_and_views)
{
    /* Strided input and in-place forward; backward is dy * mask. */
    mrt_tensor base = NEW(6, 5), x = {0}, y = {0}, mask = {0}, dy = NEW(5, 6), dx = {0};
    tu_fill_uniform(&base, 91, -1.0, 1.0);
    TU_OK(mrt_view_transpose(&base, 0, 1, &x));
    tu_fill_uniform(&dy, 92, -1.0, 1.0);
    mrt_rng rng;
    mrt_rng_init(&rng, 5);
    TU_OK(mrt_dropout_forward(&x, 0.5, &rng, &y, &mask));
    TU_ASSERT_SHAPE(&mask, 5, 6);
    for (int64_t i = 0; i < 30; i++) {
        double m = tu_get(&mask, i);
        ck_assert(m == 0.0 || m == 2.0);
        ck_assert(tu_get(&y, i) == tu_get(&x, i) * m);
    }
    TU_OK(mrt_dropout_backward(&dy, &mask, &dx));
    for (int64_t i = 0; i < 30; i++) ck_assert(tu_get(&dx, i) == tu_get(&dy, i) * tu_get(&mask, i));
    TU_OK(mrt_dropout_backward(&dy, &mask, &dy)); /* in place */
    expect_bits_equal("dropout backward in place", &dy, &dx);
    mrt_rng_init(&rng, 5);
    mrt_tensor m2 = {0};
    TU_OK(mrt_dropout_forward(&x, 0.5, &rng, &x, &m2)); /* y == x */
    expect_bits_equal("dropout in place", &x, &y);
    mrt_tensor bad = NEW(6, 5);
    TU_FAILS(MRT_ERR_SHAPE, mrt_dropout_backward(&dy, &bad, &dx));
    TU_MSG_HAS("dropout_backward");
    TU_MSG_HAS("6x5");
    TU_MSG_HAS("5x6");
    TU_FAILS(MRT_ERR_SHAPE, mrt_dropout_forward(&x, 0.5, &rng, &bad, NULL));
    TU_MSG_HAS("dropout_forward");
    TU_FAILS(MRT_ERR_ARG, mrt_dropout_forward(&x, 1.5, &rng, &y, NULL));
    TU_FAILS(MRT_ERR_ARG, mrt_dropout_forward(&x, NAN, &rng, &y, NULL));
    mrt_tensor ts[] = {base, x, y, mask, dy, dx, m2, bad};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_dropout_extremes)
{
    mrt_tensor x = NEW(3, 4), y = {0}, mask = {0};
    tu_fill_uniform(&x, 95, -1.0, 1.0);
    tu_set(&x, 0, INFINITY);
    tu_set(&x, 1, NAN);
    mrt_rng rng;
    mrt_rng_init(&rng, 9);
    /* prob 0: an identity copy; nothing drawn. */
    TU_OK(mrt_dropout_forward(&x, 0.0, &rng, &y, &mask));
    ck_assert_uint_eq(rng.offset, 0);
    for (int64_t i = 0; i < 12; i++) {
        float a = (float)tu_get(&y, i), b = (float)tu_get(&x, i);
        ck_assert(memcmp(&a, &b, sizeof a) == 0);
        ck_assert(tu_get(&mask, i) == 1.0);
    }
    /* prob 1: zeros, even for inf and NaN inputs. */
    TU_OK(mrt_dropout_forward(&x, 1.0, &rng, &y, &mask));
    ck_assert_uint_eq(rng.offset, 0);
    for (int64_t i = 0; i < 12; i++) ck_assert(tu_get(&y, i) == 0.0 && tu_get(&mask, i) == 0.0);
    /* No mask wanted (inference of a training-mode graph): still works. */
    mrt_tensor y2 = {0};
    TU_OK(mrt_dropout_forward(&x, 0.5, &rng, &y2, NULL));
    ck_assert_uint_eq(rng.offset, 12);
    mrt_tensor ts[] = {x, y, mask, y2};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= losses ========================================== */

/* log(1 + e^a) straight from the definition: fine in double for |a| <= 700. */
static double softplus_naive(double a) { return log1p(exp(a)); }

/* BCE from its textbook definition: -t log s(z) - (1-t) log(1 - s(z)),
 * with log s(z) = -softplus(-z) and log(1 - s(z)) = -softplus(z). */
static double ref_bce(const double *z, const double *t, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += t[i] * softplus_naive(-z[i]) + (1 - t[i]) * softplus_naive(z[i]);
    return s / (double)n;
}

/* Cross entropy with log(sum(exp(z))) taken directly (no max shift):
 * exp(100) is still far from double overflow. */
static double ref_ce(const double *z, int64_t N, int64_t C, const int64_t *index, const double *prob)
{
    double s = 0.0;
    for (int64_t i = 0; i < N; i++) {
        double e = 0.0;
        for (int64_t j = 0; j < C; j++) e += exp(z[i * C + j]);
        double lse = log(e);
        if (index) {
            s += lse - z[i * C + index[i]];
        } else {
            for (int64_t j = 0; j < C; j++) s -= prob[i * C + j] * (z[i * C + j] - lse);
        }
    }
    return s / (double)N;
}

typedef struct {
    double *z, *t;
    int64_t n, N, C;
    const int64_t *index;
} loss_ctx;

static double bce_objective(void *ctx)
{
    loss_ctx *k = ctx;
    return ref_bce(k->z, k->t, k->n);
}

static double ce_objective(void *ctx)
{
    loss_ctx *k = ctx;
    return ref_ce(k->z, k->N, k->C, k->index, k->index ? NULL : k->t);
}

START_TEST(test_bce)
{
    /* _i = 1: extreme logits (+-100, +-30, 0) among ordinary ones. */
    const int64_t R = 4, K = 6, n = R * K;
    mrt_tensor z = NEW(R, K), t = NEW(R, K), dz = {0};
    tu_fill_uniform(&z, 101, -4.0, 4.0);
    tu_fill_uniform(&t, 102, 0.0, 1.0);
    tu_set(&t, 0, 0.0), tu_set(&t, 1, 1.0), tu_set(&t, 2, 1.0), tu_set(&t, 3, 0.0);
    if (_i) {
        const double ext[6] = {100, -100, 100, -100, 30, -30};
        for (int i = 0; i < 6; i++) tu_set(&z, i, ext[i]);
        tu_set(&z, 6, 0.0);
    }
    loss_ctx k = {to_dbl(&z), to_dbl(&t), n, 0, 0, NULL};
    double loss = NAN;
    TU_OK(mrt_bce_logits_forward(&z, &t, &loss));
    double want = ref_bce(k.z, k.t, n);
    ck_assert_msg(isfinite(loss) && fabs(loss - want) <= 1e-12 * fabs(want), "bce %.17g vs %.17g",
                  loss, want);
    TU_OK(mrt_bce_logits_backward(&z, &t, &dz));
    double g[24];
    for (int64_t i = 0; i < n; i++) g[i] = fd_dbl(bce_objective, &k, &k.z[i], REF_H);
    expect_close("bce dlogits", &dz, g, n, GRAD_REL, GRAD_ABS);
    if (_i) {
        /* Saturated: z = 100 with t = 0 costs 100/n, gradient 1/n exactly
         * (to float); z = -100 with t = 1 likewise, gradient -1/n. */
        ck_assert(tu_get(&dz, 0) == (double)(float)(1.0 / n));
        ck_assert(tu_get(&dz, 1) == (double)(float)(-1.0 / n));
        ck_assert(fabs(tu_get(&dz, 2)) < 1e-40 && fabs(tu_get(&dz, 3)) < 1e-40);
    }
    /* In place: dlogits written over the logits. */
    mrt_tensor zc = {0};
    TU_OK(mrt_tensor_clone(&zc, &z));
    TU_OK(mrt_bce_logits_backward(&zc, &t, &zc));
    expect_bits_equal("bce backward in place", &zc, &dz);
    free(k.z), free(k.t);
    mrt_tensor ts[] = {z, t, dz, zc};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_bce_all_extreme)
{
    /* Only +-100 logits with matching targets: each element costs
     * log(1 + e^-100) = 3.72e-44 (log1p keeps it; log(1 + e^-100) in
     * double would round it to 0); mismatched targets cost 100. */
    mrt_tensor z = NEW(2, 2), t = NEW(2, 2);
    const double zv[4] = {100, -100, 100, -100}, right[4] = {1, 0, 1, 0}, wrong[4] = {0, 1, 0, 1};
    fill_from(&z, zv);
    fill_from(&t, right);
    double loss;
    TU_OK(mrt_bce_logits_forward(&z, &t, &loss));
    ck_assert_msg(fabs(loss - exp(-100.0)) <= 1e-12 * exp(-100.0), "loss %.17g", loss);
    fill_from(&t, wrong);
    TU_OK(mrt_bce_logits_forward(&z, &t, &loss));
    ck_assert_msg(fabs(loss - 100.0) < 1e-12, "loss %.17g", loss);
    mrt_tensor_release(&z), mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_cross_entropy)
{
    /* _i: bit 0 probability targets (else class indices), bit 1 extreme
     * logits, bit 2 transposed (strided) logits. */
    const int prob = _i & 1, extreme = (_i >> 1) & 1, strided = (_i >> 2) & 1;
    const int64_t N = 5, C = 4, n = N * C;
    mrt_tensor z = {0}, zbase = strided ? NEW(C, N) : NEW(N, C);
    if (strided) TU_OK(mrt_view_transpose(&zbase, 0, 1, &z));
    else mrt_tensor_share(&z, &zbase);
    tu_fill_uniform(&z, 111 + (uint64_t)_i, -3.0, 3.0);
    if (extreme) {
        tu_set(&z, 1, 100.0), tu_set(&z, 6, -100.0), tu_set(&z, 8, 100.0), tu_set(&z, 11, -100.0);
        tu_set(&z, 12, 100.0), tu_set(&z, 13, 100.0);
    }
    int64_t index[5] = {1, 0, 3, 2, 0};
    mrt_tensor t = {0};
    if (prob) {
        t = NEW(N, C);
        tu_fill_uniform(&t, 121, 0.0, 1.0);
        /* Rows sum to 0.6, 0.8, ... 1.4: PyTorch takes unnormalised
         * probability targets as they are, and so must the gradient. */
        for (int64_t i = 0; i < N; i++) {
            double s = 0;
            for (int64_t j = 0; j < C; j++) s += tu_get(&t, i * C + j);
            for (int64_t j = 0; j < C; j++)
                tu_set(&t, i * C + j, tu_get(&t, i * C + j) / s * (0.6 + 0.2 * (double)i));
        }
    } else {
        TU_ALLOC(&t, MRT_I64, 5);
        for (int i = 0; i < 5; i++) mrt_i64(&t)[i] = index[i];
    }
    loss_ctx k = {to_dbl(&z), prob ? to_dbl(&t) : NULL, n, N, C, prob ? NULL : index};
    double loss = NAN;
    TU_OK(mrt_cross_entropy_forward(&z, &t, &loss));
    double want = ref_ce(k.z, N, C, k.index, k.t);
    ck_assert_msg(isfinite(loss) && fabs(loss - want) <= 1e-10 * fabs(want) + 1e-12,
                  "ce %.17g vs %.17g", loss, want);
    mrt_tensor dz = {0};
    TU_OK(mrt_cross_entropy_backward(&z, &t, &dz));
    TU_ASSERT_SHAPE(&dz, N, C);
    double g[20];
    for (int64_t i = 0; i < n; i++) g[i] = fd_dbl(ce_objective, &k, &k.z[i], REF_H);
    expect_close("ce dlogits", &dz, g, n, GRAD_REL, GRAD_ABS);
    /* Each row's gradient sums to 0: sum(t) * sum(softmax) - sum(t). */
    for (int64_t i = 0; i < N; i++) {
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += tu_get(&dz, i * C + j);
        ck_assert_msg(fabs(s) < 1e-6, "row %lld gradient sums to %g", (long long)i, s);
    }
    free(k.z), free(k.t);
    mrt_tensor ts[] = {z, zbase, t, dz};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_loss_errors)
{
    mrt_tensor z = NEW(3, 4), t = NEW(3, 5), t1 = NEW(3), ti = {0}, ti2 = {0}, zi = {0}, z3 = NEW(3, 4, 1);
    TU_ALLOC(&ti, MRT_I64, 3);
    TU_ALLOC(&ti2, MRT_I64, 2);
    TU_ALLOC(&zi, MRT_I64, 3, 4);
    double loss;
    mrt_tensor dz = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_bce_logits_forward(&z, &t, &loss));
    TU_MSG_HAS("bce_logits_forward");
    TU_MSG_HAS("3x5");
    TU_MSG_HAS("3x4");
    TU_FAILS(MRT_ERR_SHAPE, mrt_bce_logits_backward(&z, &t, &dz));
    TU_MSG_HAS("bce_logits_backward");
    TU_FAILS(MRT_ERR_DTYPE, mrt_bce_logits_forward(&zi, &z, &loss));
    TU_FAILS(MRT_ERR_DTYPE, mrt_bce_logits_forward(&z, &zi, &loss));
    TU_FAILS(MRT_ERR_SHAPE, mrt_cross_entropy_forward(&z, &t, &loss));
    TU_MSG_HAS("cross_entropy_forward");
    TU_MSG_HAS("3x5");
    TU_FAILS(MRT_ERR_SHAPE, mrt_cross_entropy_forward(&z, &ti2, &loss));
    TU_MSG_HAS("2");
    TU_MSG_HAS("3x4");
    TU_FAILS(MRT_ERR_SHAPE, mrt_cross_entropy_forward(&z3, &ti, &loss));
    TU_MSG_HAS("3x4x1");
    TU_FAILS(MRT_ERR_DTYPE, mrt_cross_entropy_forward(&zi, &ti, &loss));
    TU_FAILS(MRT_ERR_DTYPE, mrt_cross_entropy_forward(&z, &t1, &loss)); /* float class ids */
    mrt_i64(&ti)[1] = 4;
    TU_FAILS(MRT_ERR_INDEX, mrt_cross_entropy_forward(&z, &ti, &loss));
    TU_MSG_HAS("row 2");
    mrt_i64(&ti)[1] = -1;
    TU_FAILS(MRT_ERR_INDEX, mrt_cross_entropy_backward(&z, &ti, &dz));
    ck_assert_ptr_null(dz.storage);
    mrt_tensor empty = NEW(0, 4), te = NEW(0, 4);
    TU_FAILS(MRT_ERR_SHAPE, mrt_bce_logits_forward(&empty, &te, &loss));
    mrt_tensor ts[] = {z, t, t1, ti, ti2, zi, z3, empty, te};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ======================= PyTorch fixtures ================================ */

static mrt_named_tensor *fx;
static int fx_n;

static void fixtures_load(void)
{
    char path[512];
    const char *dir = getenv("MACHRT_FIXTURES");
    snprintf(path, sizeof path, "%s/layers.safetensors", dir ? dir : "tests/fixtures");
    TU_OK(mrt_safetensors_load(path, &fx, &fx_n, NULL));
}

static void fixtures_free(void)
{
    mrt_safetensors_free(fx, fx_n);
    fx = NULL;
    fx_n = 0;
}

static const mrt_tensor *fixture(const char *name)
{
    for (int i = 0; i < fx_n; i++)
        if (strcmp(fx[i].name, name) == 0) return &fx[i].tensor;
    ck_abort_msg("fixture tensor '%s' missing (regenerate with gen_layer_fixtures.py)", name);
    return NULL;
}

static mrt_tensor fixture_copy(const char *name)
{
    mrt_tensor t = {0};
    TU_OK(mrt_tensor_clone(&t, fixture(name)));
    return t;
}

/* got against the named fixture, to FIX_REL relative (floor: FIX_ABS of the
 * fixture's largest magnitude). */
static void match(const mrt_tensor *got, const char *name)
{
    const mrt_tensor *want = fixture(name);
    tu_assert_shape(got, want->ndim, want->shape);
    double *w = to_dbl(want);
    expect_close(name, got, w, tu_numel(want), FIX_REL, FIX_ABS);
    free(w);
}

static void match_value(double got, const char *name)
{
    double w = tu_get(fixture(name), 0);
    ck_assert_msg(fabs(got - w) <= FIX_REL * fabs(w), "%s: got %.9g, want %.9g", name, got, w);
}

START_TEST(test_fixture_batchnorm)
{
    const mrt_tensor *x = fixture("bn.x"), *dy = fixture("bn.dy");
    const mrt_tensor *w = fixture("bn.weight"), *b = fixture("bn.bias");
    for (int training = 1; training >= 0; training--) {
        const char *mode = training ? "bn.train." : "bn.eval.";
        char name[64];
        mrt_tensor rm = fixture_copy("bn.running_mean"), rv = fixture_copy("bn.running_var");
        mrt_tensor y = {0}, sm = {0}, si = {0}, dx = {0}, dw = NEW(3), db = NEW(3);
        TU_OK(mrt_batchnorm2d_forward(x, w, b, &rm, &rv, training, 0.1, 1e-5, &y, &sm, &si));
        TU_OK(mrt_batchnorm2d_backward(x, dy, w, &sm, &si, training, &dx, &dw, &db));
#define M(t, field) (snprintf(name, sizeof name, "%s%s", mode, field), match(t, name))
        M(&y, "y");
        M(&dx, "dx");
        M(&dw, "dweight");
        M(&db, "dbias");
        if (training) {
            M(&sm, "save_mean");
            M(&si, "save_invstd");
            M(&rm, "running_mean");
            M(&rv, "running_var");
        }
#undef M
        mrt_tensor ts[] = {rm, rv, y, sm, si, dx, dw, db};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
    }
}
END_TEST

START_TEST(test_fixture_pooling)
{
    mrt_pool2d_params p = {3, 3, 2, 2, 1, 1};
    const mrt_tensor *x = fixture("maxpool.x");
    mrt_tensor y = {0}, idx = {0}, dx = {0};
    TU_OK(mrt_maxpool2d_forward(x, &p, &y, &idx));
    match(&y, "maxpool.y");
    const mrt_tensor *wi = fixture("maxpool.indices");
    tu_assert_shape(&idx, wi->ndim, wi->shape);
    for (int64_t i = 0; i < tu_numel(wi); i++)
        ck_assert_msg(tu_get(&idx, i) == tu_get(wi, i), "maxpool.indices[%lld]: %g vs %g",
                      (long long)i, tu_get(&idx, i), tu_get(wi, i));
    TU_OK(mrt_maxpool2d_backward(fixture("maxpool.dy"), &idx, x->shape[2], x->shape[3], &dx));
    match(&dx, "maxpool.dx");

    mrt_tensor ya = {0}, dxa = {0};
    const mrt_tensor *xa = fixture("avgpool.x");
    TU_OK(mrt_avgpool_global_forward(xa, &ya));
    match(&ya, "avgpool.y");
    TU_OK(mrt_avgpool_global_backward(fixture("avgpool.dy"), xa->shape[2], xa->shape[3], &dxa));
    match(&dxa, "avgpool.dx");
    mrt_tensor ts[] = {y, idx, dx, ya, dxa};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_fixture_gem)
{
    const char *names[2] = {"gem", "gem2"};
    for (int k = 0; k < 2; k++) {
        char n[32];
#define F(field) (snprintf(n, sizeof n, "%s.%s", names[k], field), fixture(n))
        const mrt_tensor *x = F("x"), *p = F("p"), *dy = F("dy");
        double eps = tu_get(F("eps"), 0);
        mrt_tensor y = {0}, dx = {0}, dp = NEW(1);
        TU_OK(mrt_gem_forward(x, p, eps, &y));
        TU_OK(mrt_gem_backward(x, p, eps, &y, dy, &dx, &dp));
#define M(t, field) (snprintf(n, sizeof n, "%s.%s", names[k], field), match(t, n))
        M(&y, "y");
        M(&dx, "dx");
        M(&dp, "dp");
#undef M
#undef F
        mrt_tensor_release(&y), mrt_tensor_release(&dx), mrt_tensor_release(&dp);
    }
}
END_TEST

START_TEST(test_fixture_losses)
{
    double loss;
    mrt_tensor d1 = {0}, d2 = {0}, d3 = {0};
    const mrt_tensor *z = fixture("bce.logits"), *t = fixture("bce.target");
    TU_OK(mrt_bce_logits_forward(z, t, &loss));
    match_value(loss, "bce.loss");
    TU_OK(mrt_bce_logits_backward(z, t, &d1));
    match(&d1, "bce.dlogits");
    const mrt_tensor *zc = fixture("ce.logits");
    TU_OK(mrt_cross_entropy_forward(zc, fixture("ce.target_index"), &loss));
    match_value(loss, "ce.loss_index");
    TU_OK(mrt_cross_entropy_backward(zc, fixture("ce.target_index"), &d2));
    match(&d2, "ce.dlogits_index");
    TU_OK(mrt_cross_entropy_forward(zc, fixture("ce.target_prob"), &loss));
    match_value(loss, "ce.loss_prob");
    TU_OK(mrt_cross_entropy_backward(zc, fixture("ce.target_prob"), &d3));
    match(&d3, "ce.dlogits_prob");
    mrt_tensor_release(&d1), mrt_tensor_release(&d2), mrt_tensor_release(&d3);
}
END_TEST

/* The vector versions of batch norm's row loops give the portable loops'
 * bits: sums, normalisation and the input gradient, at lengths around the
 * 32 lanes (tails included), with a large offset, and in place. */
static const char *const bn_versions[] = {"avx2", "avx512f"};

START_TEST(test_bn_kernels_agree_bitwise)
{
    const mrt_bn_kernels *ref = mrt_bn_kernels_pick("portable");
    const mrt_bn_kernels *k = mrt_bn_kernels_pick(bn_versions[_i]);
    ck_assert_ptr_nonnull(ref);
    ck_assert_ptr_nonnull(k);
    static const int64_t lens[] = {0, 1, 7, 31, 32, 33, 95, 216, 1000, 4097};
    tu_rng r = tu_rng_seed(41);
    enum { MAX = 4097 };
    static float x[MAX], g[MAX], y1[MAX], y2[MAX], d1[MAX], d2[MAX];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        for (int64_t i = 0; i < n; i++) {
            x[i] = (float)(1000.0 + tu_rng_uniform(&r, -3, 3));
            g[i] = (float)tu_rng_uniform(&r, -1, 1);
        }
        double a1 = 0.5, b1 = 0.25, a2 = 0.5, b2 = 0.25;
        ref->shifted_sums(x, n, 1000.5, &a1, &b1);
        k->shifted_sums(x, n, 1000.5, &a2, &b2);
        ck_assert_msg(a1 == a2 && b1 == b2, "%s shifted sums, len %lld: %.17g %.17g against %.17g %.17g",
                      k->name, (long long)n, a2, b2, a1, b1);
        a1 = a2 = 0.0, b1 = b2 = 0.0;
        ref->grad_sums(x, g, n, 999.75, &a1, &b1);
        k->grad_sums(x, g, n, 999.75, &a2, &b2);
        ck_assert_msg(a1 == a2 && b1 == b2, "%s grad sums, len %lld", k->name, (long long)n);
        ref->normalize(x, y1, n, 1000.0f, 0.125f, 1.5f, -0.25f);
        k->normalize(x, y2, n, 1000.0f, 0.125f, 1.5f, -0.25f);
        ck_assert_msg(n == 0 || memcmp(y1, y2, sizeof(float) * (size_t)n) == 0, "%s normalize, len %lld",
                      k->name, (long long)n);
        memcpy(y2, x, sizeof(float) * (size_t)n); /* in place: y is x */
        k->normalize(y2, y2, n, 1000.0f, 0.125f, 1.5f, -0.25f);
        ck_assert_msg(n == 0 || memcmp(y1, y2, sizeof(float) * (size_t)n) == 0, "%s normalize in place",
                      k->name);
        ref->grad_input(x, g, d1, n, 1000.0f, 0.01f, 0.3f, 2.0f);
        memcpy(d2, g, sizeof(float) * (size_t)n); /* in place: d is g */
        k->grad_input(x, d2, d2, n, 1000.0f, 0.01f, 0.3f, 2.0f);
        ck_assert_msg(n == 0 || memcmp(d1, d2, sizeof(float) * (size_t)n) == 0, "%s grad input, len %lld",
                      k->name, (long long)n);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_layers");

    TCase *bn = tcase_create("batchnorm");
    /* Generous: sanitizer builds run the 900k-element stability case slowly. */
    tcase_set_timeout(bn, 60);
    tcase_add_loop_test(bn, test_bn_forward, 0, 4);
    tcase_add_test(bn, test_bn_running_stats_exact_values);
    tcase_add_test(bn, test_bn_large_offset_stability);
    tcase_add_loop_test(bn, test_bn_backward, 0, 4);
    tcase_add_loop_test(bn, test_bn_accumulate_and_alias, 0, 2);
    tcase_add_test(bn, test_bn_thread_count_independence);
    tcase_add_loop_test(bn, test_bn_rows_match_planes, 0, 4);
    tcase_add_test(bn, test_bn_rows_threads_and_alias);
    tcase_add_test(bn, test_bn_errors);
    /* main runs before any test; a version this CPU lacks is left out */
    for (int v = 0; v < 2; v++) {
        if (mrt_bn_kernels_pick(bn_versions[v]))
            tcase_add_loop_test(bn, test_bn_kernels_agree_bitwise, v, v + 1);
        else {
            char why[128];
            snprintf(why, sizeof why, "test_nn_layers: batch norm's %s loops: this CPU has no %s", bn_versions[v],
                     bn_versions[v]);
            tu_skip(1, why);
        }
    }
    suite_add_tcase(s, bn);

    TCase *act = tcase_create("relu");
    tcase_add_loop_test(act, test_relu, 0, 2);
    tcase_add_test(act, test_relu_special_and_errors);
    suite_add_tcase(s, act);

    TCase *pool = tcase_create("pooling");
    tcase_set_timeout(pool, 60);
    tcase_add_loop_test(pool, test_maxpool, 0, 2 * N_POOLS);
    tcase_add_test(pool, test_maxpool_tiny_planes);
    tcase_add_test(pool, test_maxpool_ties_padding_nan);
    tcase_add_test(pool, test_maxpool_overlap_accumulates);
    tcase_add_test(pool, test_maxpool_errors);
    tcase_add_loop_test(pool, test_avgpool_global, 0, 2);
    tcase_add_loop_test(pool, test_gem, 0, 4);
    tcase_add_test(pool, test_gem_errors);
    suite_add_tcase(s, pool);

    TCase *dr = tcase_create("dropout");
    tcase_set_timeout(dr, 60);
    tcase_add_test(dr, test_dropout_statistics_and_mask);
    tcase_add_test(dr, test_dropout_backward_and_views);
    tcase_add_test(dr, test_dropout_extremes);
    suite_add_tcase(s, dr);

    TCase *loss = tcase_create("losses");
    tcase_add_loop_test(loss, test_bce, 0, 2);
    tcase_add_test(loss, test_bce_all_extreme);
    tcase_add_loop_test(loss, test_cross_entropy, 0, 8);
    tcase_add_test(loss, test_loss_errors);
    suite_add_tcase(s, loss);

    TCase *fxc = tcase_create("pytorch_fixtures");
    tcase_add_checked_fixture(fxc, fixtures_load, fixtures_free);
    tcase_add_test(fxc, test_fixture_batchnorm);
    tcase_add_test(fxc, test_fixture_pooling);
    tcase_add_test(fxc, test_fixture_gem);
    tcase_add_test(fxc, test_fixture_losses);
    suite_add_tcase(s, fxc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
