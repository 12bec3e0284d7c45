/* Cross entropy with an angular margin (runtime/nn/loss.c, the ArcFace and
 * AdaCos losses of modules/machrt/nn/margin.lua): the forward against a
 * double reference written here from the angles themselves (acos, then
 * cos(theta + m), log-sum-exp term by term), both branches of the margin
 * and AdaCos's rescaling; the backward against central finite differences
 * of that reference; in-place gradients; and the errors. The PyTorch
 * fixtures of tests/lua/test_anomaly_nn.lua check the same losses through
 * the Lua head. */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/nn.h"

#define N 5
#define C 4

static float *f32(mrt_tensor *t) { return (float *)t->storage->data + t->offset; }

/* The reference loss of one row, from the angles. */
static double ref_row(const double *z, int64_t y, const mrt_margin_ce_params *p)
{
    double u[C], c = z[y] / p->scale;
    c = c < -1 ? -1 : c > 1 ? 1 : c;
    const double theta = acos(c);
    for (int j = 0; j < C; j++) u[j] = z[j] / p->scale * p->out_scale;
    u[y] = theta + p->margin < M_PI ? p->out_scale * cos(theta + p->margin)
                                    : p->out_scale * (c - p->margin * sin(p->margin));
    double top = u[0], s = 0;
    for (int j = 1; j < C; j++) top = fmax(top, u[j]);
    for (int j = 0; j < C; j++) s += exp(u[j] - top);
    return top + log(s) - u[y];
}

static double ref_loss(const double *z, const int64_t *y, const mrt_margin_ce_params *p)
{
    double sum = 0;
    for (int i = 0; i < N; i++) sum += ref_row(z + i * C, y[i], p);
    return sum / N;
}

/* Cosines in (-1, 1) times the scale; row 3's true class at a cosine below
 * cos(pi - m) for m = 0.5 (theta + m past pi: the fallback branch). */
static void logits(double *z, double scale, uint64_t seed)
{
    tu_rng r = tu_rng_seed(seed);
    for (int k = 0; k < N * C; k++) z[k] = scale * tu_rng_uniform(&r, -0.95, 0.95);
    z[3 * C + 2] = scale * -0.97;
}

static const int64_t Y[N] = {0, 3, 1, 2, 1};

static void setup(mrt_tensor *zt, mrt_tensor *yt, const double *z)
{
    TU_ALLOC(zt, MRT_F32, N, C);
    TU_ALLOC(yt, MRT_I64, N);
    for (int k = 0; k < N * C; k++) f32(zt)[k] = (float)z[k];
    for (int i = 0; i < N; i++) ((int64_t *)yt->storage->data)[i] = Y[i];
}

START_TEST(forward_and_backward_match_the_angle_reference_and_finite_differences)
{
    /* ArcFace at scale 30 with margins 0.5 and 0.2; AdaCos (no margin) from 10 to 7.5. */
    const mrt_margin_ce_params cases[] = {{30, 0.5, 30}, {30, 0.2, 30}, {10, 0, 7.5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const mrt_margin_ce_params *p = &cases[c];
        double z[N * C];
        logits(z, p->scale, 11 + c);
        for (int k = 0; k < N * C; k++) z[k] = (double)(float)z[k]; /* what the kernel sees */
        mrt_tensor zt = {0}, yt = {0}, g = {0};
        setup(&zt, &yt, z);
        double loss = 0;
        TU_OK(mrt_margin_cross_entropy_forward(&zt, &yt, p, &loss));
        const double want = ref_loss(z, Y, p);
        ck_assert_msg(tu_close(loss, want, 1e-12, 1e-12), "case %zu: loss %.15g, reference %.15g", c,
                      loss, want);
        TU_OK(mrt_margin_cross_entropy_backward(&zt, &yt, p, &g));
        TU_ASSERT_SHAPE(&g, N, C);
        const double h = 1e-5 * p->scale;
        for (int k = 0; k < N * C; k++) {
            double zp[N * C], zm[N * C];
            memcpy(zp, z, sizeof z);
            memcpy(zm, z, sizeof z);
            zp[k] += h;
            zm[k] -= h;
            const double fd = (ref_loss(zp, Y, p) - ref_loss(zm, Y, p)) / (2 * h);
            ck_assert_msg(tu_close(f32(&g)[k], fd, 1e-4, 1e-7), "case %zu, logit %d: %.8g vs %.8g", c,
                          k, (double)f32(&g)[k], fd);
        }
        /* In place: the gradient written over the logits is the same. */
        TU_OK(mrt_margin_cross_entropy_backward(&zt, &yt, p, &zt));
        ck_assert(tu_max_abs_diff(&zt, &g) == 0);
        mrt_tensor_release(&zt);
        mrt_tensor_release(&yt);
        mrt_tensor_release(&g);
    }
}
END_TEST

START_TEST(margin_zero_at_the_same_scale_is_plain_cross_entropy)
{
    double z[N * C];
    logits(z, 30, 5);
    mrt_tensor zt = {0}, yt = {0}, g = {0}, g_ce = {0};
    setup(&zt, &yt, z);
    const mrt_margin_ce_params p = {30, 0, 30};
    double loss = 0, ce = 0;
    TU_OK(mrt_margin_cross_entropy_forward(&zt, &yt, &p, &loss));
    TU_OK(mrt_cross_entropy_forward(&zt, &yt, &ce));
    ck_assert_msg(tu_close(loss, ce, 1e-12, 1e-12), "%.15g vs %.15g", loss, ce);
    TU_OK(mrt_margin_cross_entropy_backward(&zt, &yt, &p, &g));
    TU_OK(mrt_cross_entropy_backward(&zt, &yt, &g_ce));
    ck_assert(tu_max_abs_diff(&g, &g_ce) < 1e-7);
    mrt_tensor_release(&zt);
    mrt_tensor_release(&yt);
    mrt_tensor_release(&g);
    mrt_tensor_release(&g_ce);
}
END_TEST

START_TEST(errors_name_what_is_wrong)
{
    double z[N * C];
    logits(z, 30, 7);
    mrt_tensor zt = {0}, yt = {0}, g = {0}, ft = {0};
    setup(&zt, &yt, z);
    double loss = 0;
    const mrt_margin_ce_params wide = {30, 2.0, 30}, zero = {0, 0.5, 30}, ok = {30, 0.5, 30};
    TU_FAILS(MRT_ERR_ARG, mrt_margin_cross_entropy_forward(&zt, &yt, &wide, &loss));
    TU_MSG_HAS("margin must be in [0, pi/2)");
    TU_FAILS(MRT_ERR_ARG, mrt_margin_cross_entropy_backward(&zt, &yt, &zero, &g));
    TU_MSG_HAS("scale must be a positive finite number");
    ck_assert_ptr_null(g.storage);
    TU_FAILS(MRT_ERR_ARG, mrt_margin_cross_entropy_forward(&zt, &yt, NULL, &loss));
    ((int64_t *)yt.storage->data)[2] = C;
    TU_FAILS(MRT_ERR_INDEX, mrt_margin_cross_entropy_forward(&zt, &yt, &ok, &loss));
    TU_MSG_HAS("row 3");
    TU_ALLOC(&ft, MRT_F32, N, C);
    TU_FAILS(MRT_ERR_DTYPE, mrt_margin_cross_entropy_forward(&zt, &ft, &ok, &loss));
    TU_MSG_HAS("int64 class indices");
    mrt_tensor_release(&zt);
    mrt_tensor_release(&yt);
    mrt_tensor_release(&ft);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_margin");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, forward_and_backward_match_the_angle_reference_and_finite_differences);
    tcase_add_test(tc, margin_zero_at_the_same_scale_is_plain_cross_entropy);
    tcase_add_test(tc, errors_name_what_is_wrong);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
