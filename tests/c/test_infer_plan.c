/* The inference plan (machrt/infer_plan.h) against a direct double-precision
 * reference written here: convolution, batch norm in evaluation mode,
 * ReLU, residual sum and max pooling, on a small ResNet-shaped graph with
 * a stride-2 block, a 1x1 downsample, odd sizes and batch 1. */
#include <stdlib.h>
#include "check_util.h"
#include "machrt/infer_plan.h"

static uint32_t lcg = 1;
static float frand(void) /* uniform in [-1, 1) */
{
    lcg = lcg * 1664525u + 1013904223u;
    return (float)((lcg >> 8) * (1.0 / 8388608.0) - 1.0);
}

typedef struct {
    int cin, cout, k, s, p;
    float *w, *gamma, *beta, *mean, *var;
} conv_spec;

static void spec_init(conv_spec *c, int cin, int cout, int k, int s, int p)
{
    *c = (conv_spec){cin, cout, k, s, p, NULL, NULL, NULL, NULL, NULL};
    const size_t nw = (size_t)cout * cin * k * k;
    c->w = malloc(sizeof(float) * nw);
    for (size_t i = 0; i < nw; i++) c->w[i] = frand() / sqrtf((float)(cin * k * k));
    c->gamma = malloc(sizeof(float) * cout);
    c->beta = malloc(sizeof(float) * cout);
    c->mean = malloc(sizeof(float) * cout);
    c->var = malloc(sizeof(float) * cout);
    for (int o = 0; o < cout; o++) {
        c->gamma[o] = 1.0f + 0.5f * frand();
        c->beta[o] = 0.2f * frand();
        c->mean[o] = 0.2f * frand();
        c->var[o] = 0.75f + 0.5f * frand();
    }
}

static void spec_free(conv_spec *c)
{
    free(c->w); free(c->gamma); free(c->beta); free(c->mean); free(c->var);
}

/* y = relu?(bn(conv(x)) + residual?), all N x C x H x W in double. */
static double *ref_conv(const conv_spec *c, const double *x, int n, int h, int w, const double *residual,
                        int relu, int *oh, int *ow)
{
    *oh = (h + 2 * c->p - c->k) / c->s + 1;
    *ow = (w + 2 * c->p - c->k) / c->s + 1;
    double *y = calloc((size_t)n * c->cout * *oh * *ow, sizeof(double));
    for (int b = 0; b < n; b++)
        for (int o = 0; o < c->cout; o++) {
            const double scale = c->gamma[o] / sqrt((double)c->var[o] + 1e-5);
            for (int i = 0; i < *oh; i++)
                for (int j = 0; j < *ow; j++) {
                    double acc = 0;
                    for (int ci = 0; ci < c->cin; ci++)
                        for (int u = 0; u < c->k; u++)
                            for (int v = 0; v < c->k; v++) {
                                const int yy = i * c->s - c->p + u, xx = j * c->s - c->p + v;
                                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                                acc += c->w[((o * c->cin + ci) * c->k + u) * c->k + v] *
                                       x[((size_t)(b * c->cin + ci) * h + yy) * w + xx];
                            }
                    const size_t at = ((size_t)(b * c->cout + o) * *oh + i) * *ow + j;
                    double r = (acc - c->mean[o]) * scale + c->beta[o];
                    if (residual) r += residual[at];
                    y[at] = relu && r < 0 ? 0 : r;
                }
        }
    return y;
}

static double *ref_maxpool(const double *x, int n, int ch, int h, int w, int k, int s, int p, int *oh, int *ow)
{
    *oh = (h + 2 * p - k) / s + 1;
    *ow = (w + 2 * p - k) / s + 1;
    double *y = malloc(sizeof(double) * (size_t)n * ch * *oh * *ow);
    for (int bc = 0; bc < n * ch; bc++)
        for (int i = 0; i < *oh; i++)
            for (int j = 0; j < *ow; j++) {
                double m = -INFINITY;
                for (int u = 0; u < k; u++)
                    for (int v = 0; v < k; v++) {
                        const int yy = i * s - p + u, xx = j * s - p + v;
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w && x[((size_t)bc * h + yy) * w + xx] > m)
                            m = x[((size_t)bc * h + yy) * w + xx];
                    }
                y[((size_t)bc * *oh + i) * *ow + j] = m;
            }
    return y;
}

/* stem: conv 3->16 7x7 s2 p3 + bn + relu, maxpool 3x3 s2 p1;
 * block: conv 16->32 3x3 s2 + bn + relu, conv 32->32 3x3 + bn, plus the
 * downsample conv 16->32 1x1 s2 + bn, relu;
 * block: conv 32->32 3x3 + bn + relu, conv 32->32 3x3 + bn, plus its input, relu. */
enum { N_CONVS = 6 };
static const int geo[N_CONVS][5] = {{3, 16, 7, 2, 3}, {16, 32, 3, 2, 1}, {16, 32, 1, 2, 0},
                                    {32, 32, 3, 1, 1}, {32, 32, 3, 1, 1}, {32, 32, 3, 1, 1}};

static mrt_infer_plan *build(mrt_infer_precision prec, conv_spec *c, int winograd)
{
    mrt_infer_plan *p = NULL;
    TU_OK(mrt_infer_plan_new(prec, 3, &p));
    mrt_infer_plan_set_winograd(p, winograd);
    int v[8];
    mrt_infer_conv_geom g[N_CONVS];
    for (int i = 0; i < N_CONVS; i++)
        g[i] = (mrt_infer_conv_geom){geo[i][0], geo[i][1], geo[i][2], geo[i][2], geo[i][3], geo[i][3], geo[i][4], geo[i][4]};
    TU_OK(mrt_infer_plan_conv(p, "stem", 0, -1, &g[0], 1, &v[0]));
    TU_OK(mrt_infer_plan_maxpool(p, "pool", v[0], 3, 3, 2, 2, 1, 1, &v[1]));
    TU_OK(mrt_infer_plan_conv(p, "b1.conv1", v[1], -1, &g[1], 1, &v[2]));
    TU_OK(mrt_infer_plan_conv(p, "b1.down", v[1], -1, &g[2], 0, &v[3]));
    TU_OK(mrt_infer_plan_conv(p, "b1.conv2", v[2], v[3], &g[3], 1, &v[4]));
    TU_OK(mrt_infer_plan_conv(p, "b2.conv1", v[4], -1, &g[4], 1, &v[5]));
    TU_OK(mrt_infer_plan_conv(p, "b2.conv2", v[5], v[4], &g[5], 1, &v[6]));
    const int conv_values[N_CONVS] = {v[0], v[2], v[3], v[4], v[5], v[6]};
    for (int i = 0; i < N_CONVS; i++) {
        const mrt_infer_bn bn = {c[i].gamma, c[i].beta, c[i].mean, c[i].var, 1e-5};
        TU_OK(mrt_infer_plan_set_weights(p, conv_values[i], c[i].w, NULL, &bn));
    }
    return p;
}

static double *reference(conv_spec *c, const double *x, int n, int h, int w, int *oh, int *ow)
{
    int h1, w1, h2, w2, h3, w3, h4, w4;
    double *a = ref_conv(&c[0], x, n, h, w, NULL, 1, &h1, &w1);
    double *b = ref_maxpool(a, n, 16, h1, w1, 3, 2, 1, &h2, &w2);
    double *d = ref_conv(&c[2], b, n, h2, w2, NULL, 0, &h3, &w3);
    double *e = ref_conv(&c[1], b, n, h2, w2, NULL, 1, &h3, &w3);
    double *f = ref_conv(&c[3], e, n, h3, w3, d, 1, &h4, &w4);
    double *g = ref_conv(&c[4], f, n, h4, w4, NULL, 1, &h4, &w4);
    double *y = ref_conv(&c[5], g, n, h4, w4, f, 1, oh, ow);
    free(a); free(b); free(d); free(e); free(f); free(g);
    return y;
}

/* max |plan - reference| over max |reference| for an n x 3 x h x w input */
static double plan_error(mrt_infer_plan *p, conv_spec *c, int n, int h, int w)
{
    const size_t nx = (size_t)n * 3 * h * w;
    float *x = malloc(sizeof(float) * nx);
    double *xd = malloc(sizeof(double) * nx);
    for (size_t i = 0; i < nx; i++) xd[i] = x[i] = frand();
    int oh, ow;
    double *ref = reference(c, xd, n, h, w, &oh, &ow);
    int64_t shape[4];
    TU_OK(mrt_infer_plan_output_shape(p, n, h, w, shape));
    ck_assert_int_eq(shape[0], n);
    ck_assert_int_eq(shape[1], 32);
    ck_assert_int_eq(shape[2], oh);
    ck_assert_int_eq(shape[3], ow);
    const size_t ny = (size_t)n * 32 * oh * ow;
    float *y = malloc(sizeof(float) * ny);
    TU_OK(mrt_infer_plan_forward(p, x, n, 3, h, w, y, ny));
    double err = 0, big = 0;
    for (size_t i = 0; i < ny; i++) {
        err = fmax(err, fabs(y[i] - ref[i]));
        big = fmax(big, fabs(ref[i]));
    }
    free(x); free(xd); free(ref); free(y);
    return err / big;
}

static conv_spec specs[N_CONVS];

/* fp32 tolerance, of the largest output. Direct convolutions: 1e-5.
 * Winograd F(4x4, 3x3) sums products scaled up by its transforms (constants
 * up to 8), which rounds some 3.5x coarser than a direct float32 sum
 * (runtime/nn/conv2d_winograd.c), over five such layers here: 3e-5. */
static double fp32_tol(int winograd) { return winograd ? 3e-5 : 1e-5; }

static void setup(void)
{
    lcg = 7;
    for (int i = 0; i < N_CONVS; i++) spec_init(&specs[i], geo[i][0], geo[i][1], geo[i][2], geo[i][3], geo[i][4]);
}

static void teardown(void)
{
    for (int i = 0; i < N_CONVS; i++) spec_free(&specs[i]);
}

static const int shapes[][3] = {{2, 29, 35}, {1, 16, 16}, {3, 33, 21}};

START_TEST(test_fp32_matches_reference)
{
    for (int winograd = 0; winograd <= 1; winograd++) {
        mrt_infer_plan *p = build(MRT_INFER_F32, specs, winograd);
        const double err = plan_error(p, specs, shapes[_i][0], shapes[_i][1], shapes[_i][2]);
        ck_assert_msg(err < fp32_tol(winograd), "fp32 (winograd %d): %.3e of the largest output", winograd, err);
        mrt_infer_plan_free(p);
    }
}
END_TEST

/* bf16 activations and weights: 8 significant bits, rounded at each of the
 * seven layers; 3e-2 of the largest output is a few units of bf16's
 * 2^-8 relative step accumulated over the depth. */
START_TEST(test_bf16_near_reference)
{
    mrt_infer_plan *p = build(MRT_INFER_BF16, specs, 1);
    const double err = plan_error(p, specs, shapes[_i][0], shapes[_i][1], shapes[_i][2]);
    ck_assert_msg(err < 3e-2 && err > 0, "bf16: %.3e of the largest output", err);
    mrt_infer_plan_free(p);
}
END_TEST

START_TEST(test_no_reorders_between_layers)
{
    for (int prec = 0; prec <= (mrt_infer_bf16_supported() ? 1 : 0); prec++) {
        mrt_infer_plan *p = build((mrt_infer_precision)prec, specs, 1);
        int reorders = -1;
        char text[4096];
        TU_OK(mrt_infer_plan_describe(p, 2, 40, 40, &reorders, text, sizeof text));
        /* machrt's Winograd (CPUs without AVX-512) takes nchw, the other
         * layers keep oneDNN's layout: the values they hand over are
         * reordered (here b1.conv1's and b1.down's, before the first
         * Winograd layer), and, these being all, nowhere after */
        const char *own = strstr(text, "machrt winograd");
        if (prec == MRT_INFER_F32 && own) {
            ck_assert_msg(reorders == 2, "%d reorders:\n%s", reorders, text);
            const char *r = text, *last = NULL;
            while ((r = strstr(r, "\nreorder: "))) last = r++;
            ck_assert_msg(last && last < own, "a reorder after the first Winograd layer:\n%s", text);
        } else {
            ck_assert_msg(reorders == 0, "precision %d: %d reorders:\n%s", prec, reorders, text);
        }
        ck_assert_ptr_nonnull(strstr(text, "b2.conv2: "));
        /* fp32 3x3 stride-1 layers run Winograd: oneDNN's (jit_wino_*) with
         * AVX-512, machrt's own without */
        if (prec == MRT_INFER_F32) {
            const char *line = strstr(text, "b2.conv2: ");
            const char *end = strchr(line, '\n');
            const char *wino = strstr(line, "wino");
            ck_assert_msg(wino && (!end || wino < end), "b2.conv2 is not Winograd:\n%s", text);
        }
        mrt_infer_plan_free(p);
    }
}
END_TEST

/* Weights set again reach plans already built for a shape. */
START_TEST(test_new_weights_reach_built_shapes)
{
    mrt_infer_plan *p = build(MRT_INFER_F32, specs, 1);
    ck_assert(plan_error(p, specs, 2, 29, 35) < fp32_tol(1));
    for (int i = 0; i < N_CONVS; i++)
        for (int o = 0; o < specs[i].cout; o++) specs[i].mean[o] += 0.3f;
    const double stale = plan_error(p, specs, 2, 29, 35);
    ck_assert_msg(stale > 1e-3, "the old weights should not match: %.3e", stale);
    const int conv_values[N_CONVS] = {1, 3, 4, 5, 6, 7};
    for (int i = 0; i < N_CONVS; i++) {
        const mrt_infer_bn bn = {specs[i].gamma, specs[i].beta, specs[i].mean, specs[i].var, 1e-5};
        TU_OK(mrt_infer_plan_set_weights(p, conv_values[i], specs[i].w, NULL, &bn));
    }
    ck_assert(plan_error(p, specs, 2, 29, 35) < fp32_tol(1));
    /* more shapes than are kept, then the first again */
    for (int k = 0; k < 6; k++) ck_assert(plan_error(p, specs, 1 + k % 2, 20 + k, 24) < fp32_tol(1));
    ck_assert(plan_error(p, specs, 2, 29, 35) < fp32_tol(1));
    mrt_infer_plan_free(p);
}
END_TEST

/* A residual sum without ReLU, and paddings 1 and 0 (the Winograd epilogue's
 * other case, and a plane the tiles overhang), 3x3 stride 1 throughout. */
START_TEST(test_residual_without_relu)
{
    conv_spec a, b, c;
    spec_init(&a, 3, 8, 3, 1, 1);
    spec_init(&b, 8, 8, 3, 1, 1);
    spec_init(&c, 8, 8, 3, 1, 0);
    for (int winograd = 0; winograd <= 1; winograd++) {
        mrt_infer_plan *p = NULL;
        TU_OK(mrt_infer_plan_new(MRT_INFER_F32, 3, &p));
        mrt_infer_plan_set_winograd(p, winograd);
        const mrt_infer_conv_geom ga = {3, 8, 3, 3, 1, 1, 1, 1}, gc = {8, 8, 3, 3, 1, 1, 0, 0};
        int va, vb, vc;
        TU_OK(mrt_infer_plan_conv(p, "a", 0, -1, &ga, 1, &va));
        TU_OK(mrt_infer_plan_conv(p, "b", va, va, &(mrt_infer_conv_geom){8, 8, 3, 3, 1, 1, 1, 1}, 0, &vb));
        TU_OK(mrt_infer_plan_conv(p, "c", vb, -1, &gc, 0, &vc));
        const conv_spec *sp[3] = {&a, &b, &c};
        const int vals[3] = {va, vb, vc};
        for (int i = 0; i < 3; i++) {
            const mrt_infer_bn bn = {sp[i]->gamma, sp[i]->beta, sp[i]->mean, sp[i]->var, 1e-5};
            TU_OK(mrt_infer_plan_set_weights(p, vals[i], sp[i]->w, NULL, &bn));
        }
        const int n = 2, h = 13, w = 22;
        const size_t nx = (size_t)n * 3 * h * w;
        float *x = malloc(sizeof(float) * nx);
        double *xd = malloc(sizeof(double) * nx);
        for (size_t i = 0; i < nx; i++) xd[i] = x[i] = frand();
        int h1, w1, h2, w2;
        double *ra = ref_conv(&a, xd, n, h, w, NULL, 1, &h1, &w1);
        double *rb = ref_conv(&b, ra, n, h1, w1, ra, 0, &h1, &w1);
        double *rc = ref_conv(&c, rb, n, h1, w1, NULL, 0, &h2, &w2);
        const size_t ny = (size_t)n * 8 * h2 * w2;
        float *y = malloc(sizeof(float) * ny);
        TU_OK(mrt_infer_plan_forward(p, x, n, 3, h, w, y, ny));
        double err = 0, big = 0;
        for (size_t i = 0; i < ny; i++) {
            err = fmax(err, fabs(y[i] - rc[i]));
            big = fmax(big, fabs(rc[i]));
        }
        ck_assert_msg(err / big < fp32_tol(winograd), "winograd %d: %.3e of the largest output", winograd,
                      err / big);
        free(x); free(xd); free(ra); free(rb); free(rc); free(y);
        mrt_infer_plan_free(p);
    }
    spec_free(&a); spec_free(&b); spec_free(&c);
}
END_TEST

START_TEST(test_bad_calls_fail_with_a_message)
{
    mrt_infer_plan *p = build(MRT_INFER_F32, specs, 1);
    float x[3 * 5 * 5] = {0}, y[128];
    TU_FAILS(MRT_ERR_SHAPE, mrt_infer_plan_forward(p, x, 1, 1, 5, 5, y, 32));
    ck_assert_ptr_nonnull(strstr(mrt_last_error(), "has 1 channels, the plan takes 3"));
    TU_FAILS(MRT_ERR_SHAPE, mrt_infer_plan_forward(p, x, 1, 3, 0, 5, y, 32));
    ck_assert_ptr_nonnull(strstr(mrt_last_error(), "is empty"));
    TU_FAILS(MRT_ERR_SHAPE, mrt_infer_plan_forward(p, x, 1, 3, 5, 5, y, 31));
    TU_FAILS(MRT_ERR_INDEX, mrt_infer_plan_set_weights(p, 2, specs[0].w, NULL, NULL)); /* the max pool */
    mrt_infer_conv_geom g = {16, 8, 3, 3, 1, 1, 1, 1};
    int v;
    TU_FAILS(MRT_ERR_SHAPE, mrt_infer_plan_conv(p, "wrong", 7, -1, &g, 1, &v)); /* 32 channels in */
    ck_assert_ptr_nonnull(strstr(mrt_last_error(), "wrong expects 16 input channels"));
    TU_FAILS(MRT_ERR_INDEX, mrt_infer_plan_conv(p, "nowhere", 42, -1, &g, 1, &v));
    mrt_infer_plan_free(p);
    TU_OK(mrt_infer_plan_new(MRT_INFER_F32, 3, &p));
    g = (mrt_infer_conv_geom){3, 8, 3, 3, 1, 1, 0, 0};
    TU_OK(mrt_infer_plan_conv(p, "unset", 0, -1, &g, 1, &v));
    TU_FAILS(MRT_ERR_ARG, mrt_infer_plan_forward(p, x, 1, 3, 5, 5, y, 8 * 9));
    ck_assert_ptr_nonnull(strstr(mrt_last_error(), "unset has no weights"));
    TU_OK(mrt_infer_plan_set_weights(p, v, specs[1].w, NULL, NULL));
    TU_OK(mrt_infer_plan_forward(p, x, 1, 3, 5, 5, y, 8 * 9));
    TU_FAILS(MRT_ERR_SHAPE, mrt_infer_plan_forward(p, x, 1, 3, 2, 5, y, 8 * 3));
    ck_assert_ptr_nonnull(strstr(mrt_last_error(), "too small: unset gets 2x5"));
    mrt_infer_plan_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("infer_plan");
    TCase *t = tcase_create("infer_plan");
    tcase_set_timeout(t, 120);
    tcase_add_checked_fixture(t, setup, teardown);
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    tcase_add_loop_test(t, test_fp32_matches_reference, 0, nshapes);
    if (mrt_infer_bf16_supported())
        tcase_add_loop_test(t, test_bf16_near_reference, 0, nshapes);
    else
        tu_skip(nshapes, "test_infer_plan: bf16 plans: this CPU has neither avx512_bf16 nor AMX");
    tcase_add_test(t, test_no_reorders_between_layers);
    tcase_add_test(t, test_new_weights_reach_built_shapes);
    tcase_add_test(t, test_residual_without_relu);
    tcase_add_test(t, test_bad_calls_fail_with_a_message);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    const int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
