/* The Gaussian model of embeddings (runtime/nn/gaussian.c): the fit against
 * a double reference written here (maximum-likelihood covariance, fixed
 * shrinkage, the inverse checked by cov * precision = I), the Mahalanobis
 * distance against the reference quadratic form, its backward against
 * central finite differences of the kernel's own forward, and the errors
 * (too few rows, a singular covariance, NaN, bad shapes). scikit-learn's
 * Ledoit-Wolf value is checked by tests/lua/test_anomaly_nn.lua. */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/nn.h"

#define N 12
#define D 4

static void fill(mrt_tensor *t, const double *v)
{
    float *p = (float *)t->storage->data + t->offset;
    for (int64_t i = 0; i < mrt_tensor_numel(t); i++) p[i] = (float)v[i];
}

static float at(const mrt_tensor *t, int64_t i) { return ((const float *)t->storage->data + t->offset)[i]; }

/* Correlated rows with distinct column offsets, from a local LCG. */
static void sample(double *x, int64_t n, int64_t d, uint64_t seed)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        double z[16];
        for (int64_t j = 0; j < d; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            z[j] = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
        }
        for (int64_t j = 0; j < d; j++) x[i * d + j] = j + z[j] + 0.5 * z[(j + 1) % d];
    }
}

START_TEST(fit_matches_the_reference_covariance_and_its_inverse)
{
    double x[N * D], mean[D] = {0}, s[D * D] = {0};
    sample(x, N, D, 7);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) mean[j] += x[i * D + j] / N;
    for (int i = 0; i < N; i++)
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) s[a * D + b] += (x[i * D + a] - mean[a]) * (x[i * D + b] - mean[b]) / N;
    double trace = 0;
    for (int j = 0; j < D; j++) trace += s[j * D + j];
    mrt_tensor xt = {0}, m = {0}, cov = {0}, prec = {0};
    TU_ALLOC(&xt, MRT_F32, N, D);
    fill(&xt, x);
    double used = -1;
    TU_OK(mrt_gaussian_fit(&xt, 0.25, &m, &cov, &prec, &used));
    ck_assert(used == 0.25);
    for (int j = 0; j < D; j++) ck_assert_double_eq_tol(at(&m, j), mean[j], 1e-5);
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double want = 0.75 * s[a * D + b] + (a == b ? 0.25 * trace / D : 0);
            ck_assert_double_eq_tol(at(&cov, a * D + b), want, 1e-5);
            double id = 0;
            for (int k = 0; k < D; k++) id += (double)at(&cov, a * D + k) * at(&prec, k * D + b);
            ck_assert_double_eq_tol(id, a == b ? 1 : 0, 1e-4);
        }
    /* Ledoit-Wolf picks a value in [0, 1] and says which. */
    mrt_tensor m2 = {0}, c2 = {0}, p2 = {0};
    TU_OK(mrt_gaussian_fit(&xt, -1, &m2, &c2, &p2, &used));
    ck_assert(used >= 0 && used <= 1);
    mrt_tensor_release(&m2);
    mrt_tensor_release(&c2);
    mrt_tensor_release(&p2);
    mrt_tensor_release(&xt);
    mrt_tensor_release(&m);
    mrt_tensor_release(&cov);
    mrt_tensor_release(&prec);
}
END_TEST

typedef struct {
    mrt_tensor q, mean, prec, dist;
    double w[5];
} objective;

static double forward_sum(objective *o)
{
    mrt_tensor d = {0};
    TU_OK(mrt_mahalanobis_forward(&o->q, &o->mean, &o->prec, &d));
    double sum = 0;
    for (int i = 0; i < 5; i++) sum += o->w[i] * at(&d, i);
    mrt_tensor_release(&d);
    return sum;
}

START_TEST(distance_matches_the_quadratic_form_and_its_gradient_finite_differences)
{
    double x[N * D], q[5 * D];
    sample(x, N, D, 11);
    sample(q, 5, D, 12);
    objective o = {.w = {1, -0.5, 2, 0.7, 1.3}};
    mrt_tensor xt = {0}, cov = {0};
    TU_ALLOC(&xt, MRT_F32, N, D);
    fill(&xt, x);
    TU_OK(mrt_gaussian_fit(&xt, 0.1, &o.mean, &cov, &o.prec, NULL));
    TU_ALLOC(&o.q, MRT_F32, 5, D);
    fill(&o.q, q);
    TU_OK(mrt_mahalanobis_forward(&o.q, &o.mean, &o.prec, &o.dist));
    for (int i = 0; i < 5; i++) {
        double form = 0;
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++)
                form += ((double)at(&o.q, i * D + a) - at(&o.mean, a)) * at(&o.prec, a * D + b) *
                        ((double)at(&o.q, i * D + b) - at(&o.mean, b));
        ck_assert_double_eq_tol(at(&o.dist, i), sqrt(form), 1e-5 * (1 + sqrt(form)));
    }
    mrt_tensor g = {0}, dx = {0};
    TU_ALLOC(&g, MRT_F32, 5);
    fill(&g, o.w);
    TU_OK(mrt_mahalanobis_backward(&o.q, &o.mean, &o.prec, &o.dist, &g, &dx));
    float *qp = (float *)o.q.storage->data;
    for (int k = 0; k < 5 * D; k++) {
        const float old = qp[k], h = 1e-2f;
        qp[k] = old + h;
        double up = forward_sum(&o);
        qp[k] = old - h;
        double down = forward_sum(&o);
        qp[k] = old;
        ck_assert_double_eq_tol(at(&dx, k), (up - down) / (2 * h), 2e-3 * (1 + fabs(at(&dx, k))));
    }
    mrt_tensor_release(&g);
    mrt_tensor_release(&dx);
    mrt_tensor_release(&xt);
    mrt_tensor_release(&cov);
    mrt_tensor_release(&o.q);
    mrt_tensor_release(&o.mean);
    mrt_tensor_release(&o.prec);
    mrt_tensor_release(&o.dist);
}
END_TEST

START_TEST(errors_name_what_cannot_be_done)
{
    mrt_tensor one = {0}, same = {0}, bad = {0}, m = {0}, c = {0}, p = {0};
    TU_ALLOC(&one, MRT_F32, 1, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_gaussian_fit(&one, -1, &m, &c, &p, NULL));
    TU_MSG_HAS("at least 2 rows");
    TU_ALLOC(&same, MRT_F32, 4, 3);
    TU_OK(mrt_tensor_fill(&same, 1.0));
    TU_FAILS(MRT_ERR_ARG, mrt_gaussian_fit(&same, 0, &m, &c, &p, NULL));
    TU_MSG_HAS("singular");
    ck_assert_ptr_null(m.storage); /* a failed fit leaves its outputs empty */
    TU_FAILS(MRT_ERR_ARG, mrt_gaussian_fit(&same, 1.5, &m, &c, &p, NULL));
    TU_MSG_HAS("shrinkage");
    TU_ALLOC(&bad, MRT_F32, 4, 3);
    ((float *)bad.storage->data)[7] = NAN;
    TU_FAILS(MRT_ERR_ARG, mrt_gaussian_fit(&bad, 0.5, &m, &c, &p, NULL));
    TU_MSG_HAS("row 3");
    TU_OK(mrt_tensor_fill(&bad, 0.0));
    ((float *)bad.storage->data)[0] = 1;
    TU_OK(mrt_gaussian_fit(&bad, 0.5, &m, &c, &p, NULL));
    mrt_tensor d = {0}, wide = {0};
    TU_ALLOC(&wide, MRT_F32, 2, 4);
    TU_FAILS(MRT_ERR_SHAPE, mrt_mahalanobis_forward(&wide, &m, &p, &d));
    TU_MSG_HAS("2x4");
    ck_assert_ptr_null(d.storage);
    mrt_tensor_release(&wide);
    mrt_tensor_release(&one);
    mrt_tensor_release(&same);
    mrt_tensor_release(&bad);
    mrt_tensor_release(&m);
    mrt_tensor_release(&c);
    mrt_tensor_release(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_gaussian");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, fit_matches_the_reference_covariance_and_its_inverse);
    tcase_add_test(tc, distance_matches_the_quadratic_form_and_its_gradient_finite_differences);
    tcase_add_test(tc, errors_name_what_cannot_be_done);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
