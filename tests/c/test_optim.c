/* Check suite for the optimizer kernels (runtime/optim).
 *
 * Two independent references:
 *  - PyTorch: tests/fixtures/optim.safetensors (gen_optim_fixtures.py) holds
 *    initial values, three steps of gradients, and torch.optim's weights
 *    after those steps; the kernels must land within 1e-5.
 *  - A naive double-precision transcription of each update rule written
 *    here, run side by side with the float32 kernels on random data, both on
 *    small buffers and on ones large enough to take the OpenMP path.
 * Plus thread-count independence, argument checking, and that a rejected
 * call leaves every buffer untouched. */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/optim.h"
#include "machrt/safetensors.h"

/* ---- helpers --------------------------------------------------------------- */

static void alloc1(mrt_tensor *t, int64_t n) { tu_alloc_or_fail(t, MRT_F32, 1, &n); }

static float *f32(const mrt_tensor *t) { return (float *)t->storage->data + t->offset; }

/* |got - want| <= tol * (1 + |want|) for every element. */
static void assert_close_buf(const float *got, const double *want, int64_t n, double tol,
                             const char *what)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                      "%s[%lld] = %.9g, expected %.9g", what, (long long)i, got[i], want[i]);
}

/* ---- naive double references --------------------------------------------------- */

typedef struct {
    double *p, *m, *v, *vmax, *buf;
} ref_state;

static void ref_adamw(ref_state *r, const double *g, int64_t n, const mrt_adamw_config *c,
                      int64_t step)
{
    double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
    for (int64_t i = 0; i < n; i++) {
        r->p[i] *= 1.0 - c->lr * c->weight_decay;
        r->m[i] = c->beta1 * r->m[i] + (1.0 - c->beta1) * g[i];
        r->v[i] = c->beta2 * r->v[i] + (1.0 - c->beta2) * g[i] * g[i];
        double v = r->v[i];
        if (c->amsgrad) {
            if (r->vmax[i] > v) v = r->vmax[i];
            r->vmax[i] = v;
        }
        r->p[i] -= c->lr / bc1 * r->m[i] / (sqrt(v) / sqrt(bc2) + c->eps);
    }
}

static void ref_sgd(ref_state *r, const double *g, int64_t n, const mrt_sgd_config *c, int first)
{
    for (int64_t i = 0; i < n; i++) {
        double d = g[i] + c->weight_decay * r->p[i];
        if (c->momentum != 0.0) {
            r->buf[i] = first ? d : c->momentum * r->buf[i] + (1.0 - c->dampening) * d;
            d = c->nesterov ? d + c->momentum * r->buf[i] : r->buf[i];
        }
        r->p[i] -= c->lr * d;
    }
}

/* ---- kernels vs the double reference --------------------------------------------- */

static const mrt_adamw_config ADAMW_CASES[] = {
    {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0},
    {5e-2, 0.8, 0.9, 1e-6, 0.1, 0},
    {5e-2, 0.8, 0.9, 1e-6, 1e-2, 1},
    {1e-2, 0.0, 0.5, 1e-3, 0.0, 1},
};
#define N_ADAMW_CASES (int)(sizeof ADAMW_CASES / sizeof ADAMW_CASES[0])

static const mrt_sgd_config SGD_CASES[] = {
    {0.1, 0.0, 0.0, 0.0, 0},
    {0.1, 0.0, 0.0, 1e-2, 0},
    {0.1, 0.9, 0.0, 0.0, 0},
    {0.1, 0.9, 0.3, 1e-2, 0},
    {0.05, 0.9, 0.0, 1e-2, 1},
};
#define N_SGD_CASES (int)(sizeof SGD_CASES / sizeof SGD_CASES[0])

/* Small (serial) and large (parallel) buffers. */
static const int64_t SIZES[] = {1, 37, 200003};

/* Runs `steps` updates of the kernel and of the reference on the same random
 * data; the gradient's scale changes per step so AMSGrad's maximum matters. */
static void compare_adamw(const mrt_adamw_config *c, int64_t n, int steps)
{
    mrt_tensor p = {0}, g = {0}, m = {0}, v = {0}, vmax = {0};
    alloc1(&p, n), alloc1(&g, n), alloc1(&m, n), alloc1(&v, n), alloc1(&vmax, n);
    ref_state r = {calloc(n, 8), calloc(n, 8), calloc(n, 8), calloc(n, 8), NULL};
    double *gd = calloc(n, 8);
    tu_fill_uniform(&p, 11, -1, 1);
    for (int64_t i = 0; i < n; i++) r.p[i] = f32(&p)[i];
    for (int s = 1; s <= steps; s++) {
        tu_fill_uniform(&g, 100 + s, -1, 1);
        double scale = s % 2 ? 1.0 : 0.2;
        for (int64_t i = 0; i < n; i++) {
            f32(&g)[i] = (float)(f32(&g)[i] * scale);
            gd[i] = f32(&g)[i];
        }
        TU_OK(mrt_adamw_step(&p, &g, &m, &v, c->amsgrad ? &vmax : NULL, c, s));
        ref_adamw(&r, gd, n, c, s);
    }
    assert_close_buf(f32(&p), r.p, n, 1e-5, "param");
    assert_close_buf(f32(&m), r.m, n, 1e-5, "exp_avg");
    assert_close_buf(f32(&v), r.v, n, 1e-5, "exp_avg_sq");
    if (c->amsgrad) assert_close_buf(f32(&vmax), r.vmax, n, 1e-5, "max_exp_avg_sq");
    free(r.p), free(r.m), free(r.v), free(r.vmax), free(gd);
    mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&m);
    mrt_tensor_release(&v), mrt_tensor_release(&vmax);
}

START_TEST(test_adamw_vs_reference)
{
    for (size_t k = 0; k < sizeof SIZES / sizeof SIZES[0]; k++)
        compare_adamw(&ADAMW_CASES[_i], SIZES[k], 5);
}
END_TEST

static void compare_sgd(const mrt_sgd_config *c, int64_t n, int steps)
{
    mrt_tensor p = {0}, g = {0}, buf = {0};
    alloc1(&p, n), alloc1(&g, n), alloc1(&buf, n);
    ref_state r = {calloc(n, 8), NULL, NULL, NULL, calloc(n, 8)};
    double *gd = calloc(n, 8);
    tu_fill_uniform(&p, 12, -1, 1);
    tu_fill_uniform(&buf, 13, -5, 5); /* garbage: the first step must overwrite it */
    for (int64_t i = 0; i < n; i++) r.p[i] = f32(&p)[i];
    for (int s = 1; s <= steps; s++) {
        tu_fill_uniform(&g, 200 + s, -1, 1);
        for (int64_t i = 0; i < n; i++) gd[i] = f32(&g)[i];
        TU_OK(mrt_sgd_step(&p, &g, c->momentum != 0.0 ? &buf : NULL, c, s == 1));
        ref_sgd(&r, gd, n, c, s == 1);
    }
    assert_close_buf(f32(&p), r.p, n, 1e-5, "param");
    if (c->momentum != 0.0) assert_close_buf(f32(&buf), r.buf, n, 1e-5, "momentum_buf");
    free(r.p), free(r.buf), free(gd);
    mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&buf);
}

START_TEST(test_sgd_vs_reference)
{
    for (size_t k = 0; k < sizeof SIZES / sizeof SIZES[0]; k++)
        compare_sgd(&SGD_CASES[_i], SIZES[k], 5);
}
END_TEST

/* A hand-worked first AdamW step: bias correction makes it lr * sign(g)
 * (up to eps), whatever the gradient's size. */
START_TEST(test_adamw_first_step_is_sign)
{
    mrt_tensor p = {0}, g = {0}, m = {0}, v = {0};
    alloc1(&p, 3), alloc1(&g, 3), alloc1(&m, 3), alloc1(&v, 3);
    const float gv[3] = {4.0f, -0.001f, 250.0f};
    for (int i = 0; i < 3; i++) f32(&p)[i] = 1.0f, f32(&g)[i] = gv[i];
    mrt_adamw_config c = {0.01, 0.9, 0.999, 1e-12, 0.0, 0};
    TU_OK(mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    for (int i = 0; i < 3; i++)
        ck_assert_msg(fabs(f32(&p)[i] - (1.0 - 0.01 * (gv[i] > 0 ? 1 : -1))) < 1e-6,
                      "p[%d] = %.9g", i, f32(&p)[i]);
    mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&m), mrt_tensor_release(&v);
}
END_TEST

/* Elements go through SSE lanes or the scalar tail depending on where they
 * sit; either way the result must be the same to the bit. Here a 37-element
 * buffer is stepped whole, and again one 1-element view at a time (always
 * the scalar path), with amsgrad and a NaN in its running maximum. */
START_TEST(test_adamw_lanes_match_scalar)
{
    enum { N = 37 };
    mrt_tensor whole[5] = {{0}}, single[5] = {{0}};
    for (int k = 0; k < 5; k++) {
        alloc1(&whole[k], N);
        tu_fill_uniform(&whole[k], 60 + k, k == 0 || k == 1 ? -1 : 0, 1);
    }
    /* Where parameter and state start at 0 the result is the update itself,
     * so a difference in its last bit is not absorbed by adding it to p. */
    for (int64_t i = 0; i < N; i += 3)
        for (int k = 0; k < 5; k++)
            if (k != 1) f32(&whole[k])[i] = 0.0f;
    f32(&whole[4])[5] = NAN;
    f32(&whole[1])[9] = 0.0f;
    for (int k = 0; k < 5; k++) TU_OK(mrt_tensor_clone(&single[k], &whole[k]));
    mrt_adamw_config c = {1e-2, 0.9, 0.99, 1e-8, 1e-2, 1};
    /* whole/single: 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 max_exp_avg_sq */
    TU_OK(mrt_adamw_step(&whole[0], &whole[1], &whole[2], &whole[3], &whole[4], &c, 2));
    for (int64_t i = 0; i < N; i++) {
        mrt_tensor e[5] = {{0}};
        for (int k = 0; k < 5; k++) TU_OK(mrt_view_narrow(&single[k], 0, i, 1, &e[k]));
        TU_OK(mrt_adamw_step(&e[0], &e[1], &e[2], &e[3], &e[4], &c, 2));
        for (int k = 0; k < 5; k++) mrt_tensor_release(&e[k]);
    }
    for (int k = 0; k < 5; k += 1)
        for (int64_t i = 0; i < N; i++) {
            float a = f32(&whole[k])[i], b = f32(&single[k])[i];
            ck_assert_msg(memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)),
                          "buffer %d element %lld: %.9g (whole) vs %.9g (alone)", k,
                          (long long)i, a, b);
        }
    ck_assert_msg(isnan(f32(&whole[0])[5]), "a NaN in max_exp_avg_sq must reach the parameter");
    for (int k = 0; k < 5; k++) mrt_tensor_release(&whole[k]), mrt_tensor_release(&single[k]);
}
END_TEST

START_TEST(test_empty_buffers)
{
    mrt_tensor p = {0}, g = {0}, m = {0}, v = {0};
    alloc1(&p, 0), alloc1(&g, 0), alloc1(&m, 0), alloc1(&v, 0);
    mrt_adamw_config c = {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0};
    TU_OK(mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    mrt_sgd_config s = {0.1, 0.9, 0.0, 0.0, 0};
    TU_OK(mrt_sgd_step(&p, &g, &m, &s, 1));
    double sum = -1;
    TU_OK(mrt_sum_squares(&p, &sum));
    ck_assert(sum == 0.0);
    mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&m), mrt_tensor_release(&v);
}
END_TEST

/* ---- PyTorch fixtures ---------------------------------------------------------------- */

static mrt_named_tensor *fx;
static int fx_n;

static void load_fixtures(void)
{
    char path[1024];
    const char *dir = getenv("MACHRT_FIXTURES");
    snprintf(path, sizeof path, "%s/optim.safetensors", dir ? dir : "tests/fixtures");
    mrt_status st = mrt_safetensors_load(path, &fx, &fx_n, NULL);
    if (st) fx = NULL, fx_n = 0; /* each test then fails, naming the file */
}

static void free_fixtures(void)
{
    mrt_safetensors_free(fx, fx_n);
    fx = NULL;
    fx_n = 0;
}

static const mrt_tensor *fixture(const char *fmt, const char *a, int s)
{
    char name[128];
    if (s) snprintf(name, sizeof name, fmt, s, a);
    else snprintf(name, sizeof name, fmt, a);
    for (int i = 0; i < fx_n; i++)
        if (strcmp(fx[i].name, name) == 0) return &fx[i].tensor;
    ck_abort_msg("fixture tensor '%s' not found in tests/fixtures/optim.safetensors "
                 "(regenerate with tests/fixtures/gen_optim_fixtures.py)", name);
    return NULL;
}

static const char *const PARAMS[3] = {"w", "b", "k"};

typedef enum { ADAMW, SGD } rule;

typedef struct {
    const char *name;
    rule kind;
    mrt_adamw_config adamw[3]; /* per parameter: their group's settings */
    mrt_sgd_config sgd;
} fixture_case;

/* The configurations of gen_optim_fixtures.py. */
static const fixture_case FIXTURE_CASES[] = {
    {.name = "adamw", .kind = ADAMW,
     .adamw = {{1e-2, 0.9, 0.999, 1e-8, 0.1, 0}, {1e-2, 0.9, 0.999, 1e-8, 0.1, 0},
               {3e-3, 0.9, 0.999, 1e-8, 0.0, 0}}},
    {.name = "adamw_amsgrad", .kind = ADAMW,
     .adamw = {{5e-2, 0.8, 0.9, 1e-6, 1e-2, 1}, {5e-2, 0.8, 0.9, 1e-6, 1e-2, 1},
               {5e-2, 0.8, 0.9, 1e-6, 1e-2, 1}}},
    {.name = "sgd_plain", .kind = SGD, .sgd = {0.1, 0.0, 0.0, 1e-2, 0}},
    {.name = "sgd_momentum", .kind = SGD, .sgd = {0.1, 0.9, 0.0, 0.0, 0}},
    {.name = "sgd_dampening", .kind = SGD, .sgd = {0.1, 0.9, 0.3, 0.0, 0}},
    {.name = "sgd_nesterov", .kind = SGD, .sgd = {0.05, 0.9, 0.0, 1e-2, 1}},
};
#define N_FIXTURE_CASES (int)(sizeof FIXTURE_CASES / sizeof FIXTURE_CASES[0])

START_TEST(test_matches_pytorch)
{
    const fixture_case *fc = &FIXTURE_CASES[_i];
    for (int k = 0; k < 3; k++) {
        mrt_tensor p = {0}, m = {0}, v = {0}, vmax = {0};
        const mrt_tensor *init = fixture("init.%s", PARAMS[k], 0);
        TU_OK(mrt_tensor_clone(&p, init));
        TU_OK(mrt_tensor_alloc(&m, MRT_F32, p.ndim, p.shape));
        TU_OK(mrt_tensor_alloc(&v, MRT_F32, p.ndim, p.shape));
        TU_OK(mrt_tensor_alloc(&vmax, MRT_F32, p.ndim, p.shape));
        for (int s = 1; s <= 3; s++) {
            const mrt_tensor *g = fixture("grad.%d.%s", PARAMS[k], s);
            if (fc->kind == ADAMW)
                TU_OK(mrt_adamw_step(&p, g, &m, &v, &vmax, &fc->adamw[k], s));
            else
                TU_OK(mrt_sgd_step(&p, g, &m, &fc->sgd, s == 1));
        }
        char name[64];
        snprintf(name, sizeof name, "%s.%s", fc->name, PARAMS[k]);
        const mrt_tensor *want = fixture("%s", name, 0);
        double diff = tu_max_abs_diff(&p, want);
        ck_assert_msg(diff <= 1e-5, "%s: max |machrt - torch| = %g", name, diff);
        mrt_tensor_release(&p), mrt_tensor_release(&m), mrt_tensor_release(&v);
        mrt_tensor_release(&vmax);
    }
}
END_TEST

/* The global norm clip_grad_norm computes from per-buffer sums of squares. */
START_TEST(test_sum_squares_matches_clip_norm)
{
    double total = 0.0;
    for (int k = 0; k < 3; k++) {
        double s;
        TU_OK(mrt_sum_squares(fixture("grad.%d.%s", PARAMS[k], 1), &s));
        total += s;
    }
    double want = tu_get(fixture("%s", "clip.total_norm", 0), 0);
    ck_assert_msg(fabs(sqrt(total) - want) <= 1e-6 * want, "norm %.9g, torch %.9g", sqrt(total),
                  want);
}
END_TEST

/* ---- sum of squares ------------------------------------------------------------------- */

START_TEST(test_sum_squares_vs_naive)
{
    for (size_t k = 0; k < sizeof SIZES / sizeof SIZES[0]; k++) {
        int64_t n = SIZES[k] * 3; /* 600009: several blocks, parallel */
        mrt_tensor t = {0};
        alloc1(&t, n);
        tu_fill_uniform(&t, 31 + k, -2, 2);
        double want = 0.0, got = -1;
        for (int64_t i = 0; i < n; i++) want += (double)f32(&t)[i] * f32(&t)[i];
        TU_OK(mrt_sum_squares(&t, &got));
        ck_assert_msg(fabs(got - want) <= 1e-12 * want, "n %lld: %.17g vs %.17g", (long long)n,
                      got, want);
        mrt_tensor_release(&t);
    }
}
END_TEST

/* ---- thread-count independence --------------------------------------------------------- */

START_TEST(test_thread_count_independence)
{
    const int64_t n = 300007;
    const int saved = mrt_get_num_threads();
    float *result[2];
    double sums[2];
    for (int run = 0; run < 2; run++) {
        mrt_set_num_threads(run == 0 ? 1 : 4);
        mrt_tensor p = {0}, g = {0}, m = {0}, v = {0}, vmax = {0}, buf = {0};
        alloc1(&p, n), alloc1(&g, n), alloc1(&m, n), alloc1(&v, n), alloc1(&vmax, n);
        alloc1(&buf, n);
        tu_fill_uniform(&p, 41, -1, 1);
        mrt_adamw_config ac = {1e-2, 0.9, 0.99, 1e-8, 1e-2, 1};
        mrt_sgd_config sc = {0.1, 0.9, 0.0, 1e-3, 1};
        for (int s = 1; s <= 3; s++) {
            tu_fill_uniform(&g, 50 + s, -1, 1);
            TU_OK(mrt_adamw_step(&p, &g, &m, &v, &vmax, &ac, s));
            TU_OK(mrt_sgd_step(&p, &g, &buf, &sc, s == 1));
        }
        TU_OK(mrt_sum_squares(&p, &sums[run]));
        result[run] = malloc((size_t)n * sizeof(float));
        memcpy(result[run], f32(&p), (size_t)n * sizeof(float));
        mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&m);
        mrt_tensor_release(&v), mrt_tensor_release(&vmax), mrt_tensor_release(&buf);
    }
    mrt_set_num_threads(saved);
    ck_assert_msg(memcmp(result[0], result[1], (size_t)n * sizeof(float)) == 0,
                  "1 and 4 threads give different parameters");
    ck_assert_msg(sums[0] == sums[1], "sum_squares: %.17g (1 thread) vs %.17g (4)", sums[0],
                  sums[1]);
    free(result[0]), free(result[1]);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------------ */

/* Every rejected call must leave the parameter as it was. */
static void assert_untouched(const mrt_tensor *p, float value)
{
    for (int64_t i = 0; i < tu_numel(p); i++)
        ck_assert_msg(f32(p)[i] == value, "a rejected call changed param[%lld]", (long long)i);
}

START_TEST(test_adamw_errors)
{
    mrt_tensor p = {0}, g = {0}, m = {0}, v = {0}, small = {0}, l = {0}, mat = {0}, tr = {0};
    alloc1(&p, 6), alloc1(&g, 6), alloc1(&m, 6), alloc1(&v, 6), alloc1(&small, 5);
    TU_ALLOC(&l, MRT_I64, 6);
    TU_ALLOC(&mat, MRT_F32, 2, 3);
    TU_OK(mrt_view_transpose(&mat, 0, 1, &tr));
    TU_OK(mrt_tensor_fill(&p, 1.0));
    TU_OK(mrt_tensor_fill(&g, 1.0));
    const mrt_adamw_config ok = {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0};
    mrt_adamw_config c;

    TU_FAILS(MRT_ERR_SHAPE, mrt_adamw_step(&p, &small, &m, &v, NULL, &ok, 1));
    TU_MSG_HAS("grad");
    TU_MSG_HAS("5");
    TU_FAILS(MRT_ERR_SHAPE, mrt_adamw_step(&p, &g, &m, &small, NULL, &ok, 1));
    TU_MSG_HAS("exp_avg_sq");
    TU_FAILS(MRT_ERR_DTYPE, mrt_adamw_step(&l, &g, &m, &v, NULL, &ok, 1));
    TU_MSG_HAS("float32");
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &tr, &m, &v, NULL, &ok, 1));
    TU_MSG_HAS("grad must be contiguous");
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&tr, &tr, &tr, &tr, NULL, &ok, 1));
    TU_MSG_HAS("param must be contiguous");
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, NULL, &v, NULL, &ok, 1));
    TU_MSG_HAS("exp_avg");
    c = ok, c.amsgrad = 1;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("max_exp_avg_sq");
    c = ok, c.lr = -1e-3;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("lr");
    c = ok, c.lr = NAN;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    c = ok, c.beta1 = 1.0;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("beta1");
    c = ok, c.beta2 = -0.1;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("beta2");
    c = ok, c.eps = -1;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("eps");
    c = ok, c.weight_decay = -1;
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &c, 1));
    TU_MSG_HAS("weight_decay");
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &ok, 0));
    TU_MSG_HAS("step");
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, NULL, 1));
    assert_untouched(&p, 1.0f);

    mrt_tensor_release(&g);
    TU_FAILS(MRT_ERR_ARG, mrt_adamw_step(&p, &g, &m, &v, NULL, &ok, 1));
    TU_MSG_HAS("released");
    assert_untouched(&p, 1.0f);
    mrt_tensor_release(&p), mrt_tensor_release(&m), mrt_tensor_release(&v);
    mrt_tensor_release(&small), mrt_tensor_release(&l), mrt_tensor_release(&tr);
    mrt_tensor_release(&mat);
}
END_TEST

START_TEST(test_sgd_errors)
{
    mrt_tensor p = {0}, g = {0}, buf = {0}, small = {0};
    alloc1(&p, 4), alloc1(&g, 4), alloc1(&buf, 4), alloc1(&small, 3);
    TU_OK(mrt_tensor_fill(&p, 2.0));
    TU_OK(mrt_tensor_fill(&g, 1.0));
    const mrt_sgd_config ok = {0.1, 0.9, 0.0, 0.0, 0};
    mrt_sgd_config c;

    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, NULL, &ok, 1));
    TU_MSG_HAS("momentum_buf");
    TU_FAILS(MRT_ERR_SHAPE, mrt_sgd_step(&p, &g, &small, &ok, 1));
    TU_FAILS(MRT_ERR_SHAPE, mrt_sgd_step(&p, &small, &buf, &ok, 1));
    c = ok, c.lr = -0.1;
    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, &buf, &c, 1));
    TU_MSG_HAS("lr");
    c = ok, c.momentum = -0.5;
    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, &buf, &c, 1));
    TU_MSG_HAS("momentum");
    c = ok, c.weight_decay = -1;
    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, &buf, &c, 1));
    c = ok, c.nesterov = 1, c.dampening = 0.1;
    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, &buf, &c, 1));
    TU_MSG_HAS("nesterov");
    c = ok, c.nesterov = 1, c.momentum = 0.0;
    TU_FAILS(MRT_ERR_ARG, mrt_sgd_step(&p, &g, NULL, &c, 1));
    TU_MSG_HAS("nesterov");
    assert_untouched(&p, 2.0f);

    /* Without momentum no buffer is needed. */
    c = ok, c.momentum = 0.0;
    TU_OK(mrt_sgd_step(&p, &g, NULL, &c, 1));
    assert_untouched(&p, 1.9f);
    mrt_tensor_release(&p), mrt_tensor_release(&g), mrt_tensor_release(&buf);
    mrt_tensor_release(&small);
}
END_TEST

START_TEST(test_sum_squares_errors)
{
    mrt_tensor mat = {0}, tr = {0}, l = {0}, released = {0};
    TU_ALLOC(&mat, MRT_F32, 2, 3);
    TU_ALLOC(&l, MRT_I64, 3);
    TU_OK(mrt_view_transpose(&mat, 0, 1, &tr));
    double s;
    TU_FAILS(MRT_ERR_ARG, mrt_sum_squares(&tr, &s));
    TU_MSG_HAS("contiguous");
    TU_FAILS(MRT_ERR_DTYPE, mrt_sum_squares(&l, &s));
    TU_FAILS(MRT_ERR_ARG, mrt_sum_squares(&released, &s));
    TU_FAILS(MRT_ERR_ARG, mrt_sum_squares(&mat, NULL));
    mrt_tensor_release(&mat), mrt_tensor_release(&tr), mrt_tensor_release(&l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");

    TCase *ref = tcase_create("reference");
    /* Generous: sanitizer builds run the 200k-element cases several times slower. */
    tcase_set_timeout(ref, 60);
    tcase_add_loop_test(ref, test_adamw_vs_reference, 0, N_ADAMW_CASES);
    tcase_add_loop_test(ref, test_sgd_vs_reference, 0, N_SGD_CASES);
    tcase_add_test(ref, test_adamw_first_step_is_sign);
    tcase_add_test(ref, test_adamw_lanes_match_scalar);
    tcase_add_test(ref, test_empty_buffers);
    tcase_add_test(ref, test_sum_squares_vs_naive);
    tcase_add_test(ref, test_thread_count_independence);
    suite_add_tcase(s, ref);

    TCase *torch = tcase_create("pytorch");
    tcase_set_timeout(torch, 60); /* as above: the fixture cases are as large */
    tcase_add_unchecked_fixture(torch, load_fixtures, free_fixtures);
    tcase_add_loop_test(torch, test_matches_pytorch, 0, N_FIXTURE_CASES);
    tcase_add_test(torch, test_sum_squares_matches_clip_norm);
    suite_add_tcase(s, torch);

    TCase *err = tcase_create("errors");
    tcase_add_test(err, test_adamw_errors);
    tcase_add_test(err, test_sgd_errors);
    tcase_add_test(err, test_sum_squares_errors);
    suite_add_tcase(s, err);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
