/* Philox4x32-10 and the tensor fills: known answers, reproducibility across
 * thread counts and strides, and the moments of each distribution. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "machrt/rng.h"

static void alloc1(mrt_tensor *t, int64_t n)
{
    *t = (mrt_tensor){0};
    ck_assert_int_eq(mrt_tensor_alloc(t, MRT_F32, 1, &n), MRT_OK);
}

static void alloc2(mrt_tensor *t, int64_t r, int64_t c)
{
    int64_t shape[2] = {r, c};
    *t = (mrt_tensor){0};
    ck_assert_int_eq(mrt_tensor_alloc(t, MRT_F32, 2, shape), MRT_OK);
}

static void assert_same(const mrt_tensor *a, const mrt_tensor *b, int64_t n)
{
    ck_assert(memcmp(mrt_f32(a), mrt_f32(b), (size_t)n * sizeof(float)) == 0);
}

/* ---- Philox known answers (Random123 kat_vectors) ---------------------- */

static void check_block(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                        uint32_t e0, uint32_t e1, uint32_t e2, uint32_t e3)
{
    const uint32_t ctr[4] = {c0, c1, c2, c3}, key[2] = {k0, k1};
    uint32_t out[4];
    mrt_philox4x32_block(ctr, key, out);
    ck_assert_uint_eq(out[0], e0);
    ck_assert_uint_eq(out[1], e1);
    ck_assert_uint_eq(out[2], e2);
    ck_assert_uint_eq(out[3], e3);
}

START_TEST(kat_zero)
{
    check_block(0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8);
    uint32_t out[4];
    mrt_philox4x32(0, 0, out);
    ck_assert_uint_eq(out[0], 0x6627e8d5);
    ck_assert_uint_eq(out[3], 0x9b00dbd8);
}
END_TEST

START_TEST(kat_ones)
{
    check_block(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
                0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd);
}
END_TEST

START_TEST(kat_pi)
{
    check_block(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
                0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1);
}
END_TEST

START_TEST(counter_word_order)
{
    /* The 64-bit counter and seed map low word first, high counter words 0. */
    const uint32_t ctr[4] = {0x243f6a88, 0x85a308d3, 0, 0}, key[2] = {0xa4093822, 0x299f31d0};
    uint32_t a[4], b[4];
    mrt_philox4x32_block(ctr, key, a);
    mrt_philox4x32(0x85a308d3243f6a88ull, 0x299f31d0a4093822ull, b);
    ck_assert(memcmp(a, b, sizeof a) == 0);
}
END_TEST

/* ---- reproducibility --------------------------------------------------- */

START_TEST(same_seed_same_values)
{
    mrt_rng r1, r2, r3;
    mrt_rng_init(&r1, 42);
    mrt_rng_init(&r2, 42);
    mrt_rng_init(&r3, 43);
    mrt_tensor a, b, c;
    alloc1(&a, 5000);
    alloc1(&b, 5000);
    alloc1(&c, 5000);
    ck_assert_int_eq(mrt_rng_normal(&r1, &a, 0, 1), MRT_OK);
    ck_assert_int_eq(mrt_rng_normal(&r2, &b, 0, 1), MRT_OK);
    ck_assert_int_eq(mrt_rng_normal(&r3, &c, 0, 1), MRT_OK);
    assert_same(&a, &b, 5000);
    ck_assert(memcmp(mrt_f32(&a), mrt_f32(&c), 5000 * sizeof(float)) != 0);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
    mrt_tensor_release(&c);
}
END_TEST

START_TEST(default_generator)
{
    mrt_rng r;
    mrt_rng_init(&r, 7);
    mrt_rng_default_seed(7);
    ck_assert_uint_eq(mrt_rng_default()->offset, 0);
    mrt_tensor a, b;
    alloc1(&a, 100);
    alloc1(&b, 100);
    ck_assert_int_eq(mrt_rng_uniform(mrt_rng_default(), &a, 0, 1), MRT_OK);
    ck_assert_int_eq(mrt_rng_uniform(&r, &b, 0, 1), MRT_OK);
    assert_same(&a, &b, 100);
    ck_assert_uint_eq(mrt_rng_default()->offset, 100);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
}
END_TEST

/* Large enough for the parallel path, with chunks that end mid-row. */
#define BIG_R 301
#define BIG_C 333

typedef mrt_status (*fill_fn)(mrt_rng *, mrt_tensor *);
static mrt_status fill_uniform(mrt_rng *r, mrt_tensor *t) { return mrt_rng_uniform(r, t, -1, 1); }
static mrt_status fill_normal(mrt_rng *r, mrt_tensor *t) { return mrt_rng_normal(r, t, 0, 1); }
static mrt_status fill_bern(mrt_rng *r, mrt_tensor *t) { return mrt_rng_bernoulli(r, t, 0.5); }
static const fill_fn fills[] = {fill_uniform, fill_normal, fill_bern};

/* A transposed view of a fresh BIG_C x BIG_R buffer: logical shape
 * BIG_R x BIG_C, strides (1, BIG_R). */
static void transposed_view(mrt_tensor *base, mrt_tensor *view)
{
    alloc2(base, BIG_C, BIG_R);
    *view = (mrt_tensor){0};
    mrt_tensor_share(view, base);
    view->shape[0] = BIG_R;
    view->shape[1] = BIG_C;
    view->stride[0] = 1;
    view->stride[1] = BIG_R;
}

START_TEST(thread_count_independent)
{
    const int64_t n = BIG_R * BIG_C;
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        mrt_tensor a, b, ab, av, bb, bv;
        mrt_rng r;
        alloc1(&a, n);
        alloc1(&b, n);
        omp_set_num_threads(1);
        mrt_rng_init(&r, 1234);
        ck_assert_int_eq(fills[f](&r, &a), MRT_OK);
        omp_set_num_threads(4);
        mrt_rng_init(&r, 1234);
        ck_assert_int_eq(fills[f](&r, &b), MRT_OK);
        assert_same(&a, &b, n);

        transposed_view(&ab, &av);
        transposed_view(&bb, &bv);
        omp_set_num_threads(1);
        mrt_rng_init(&r, 99);
        ck_assert_int_eq(fills[f](&r, &av), MRT_OK);
        omp_set_num_threads(3);
        mrt_rng_init(&r, 99);
        ck_assert_int_eq(fills[f](&r, &bv), MRT_OK);
        assert_same(&ab, &bb, n);
        mrt_tensor_release(&a);
        mrt_tensor_release(&b);
        mrt_tensor_release(&av);
        mrt_tensor_release(&ab);
        mrt_tensor_release(&bv);
        mrt_tensor_release(&bb);
    }
}
END_TEST

START_TEST(offset_advances)
{
    mrt_rng r;
    mrt_rng_init(&r, 5);
    mrt_tensor a, b, all;
    alloc1(&a, 1000);
    alloc1(&b, 40000);
    alloc1(&all, 41000);
    ck_assert_int_eq(mrt_rng_uniform(&r, &a, 0, 1), MRT_OK);
    ck_assert_uint_eq(r.offset, 1000);
    ck_assert_int_eq(mrt_rng_uniform(&r, &b, 0, 1), MRT_OK);
    ck_assert_uint_eq(r.offset, 41000);
    ck_assert(memcmp(mrt_f32(&a), mrt_f32(&b), 1000 * sizeof(float)) != 0);
    mrt_rng_init(&r, 5);
    ck_assert_int_eq(mrt_rng_uniform(&r, &all, 0, 1), MRT_OK);
    ck_assert(memcmp(mrt_f32(&all), mrt_f32(&a), 1000 * sizeof(float)) == 0);
    ck_assert(memcmp(mrt_f32(&all) + 1000, mrt_f32(&b), 40000 * sizeof(float)) == 0);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
    mrt_tensor_release(&all);
}
END_TEST

static void check_strided(int64_t rows, int64_t cols)
{
    /* Logical rows x cols view into a (cols+3) x (rows*2) buffer: transposed,
     * every other column, starting at an offset. */
    const int64_t brow = rows * 2, bcol = cols + 3;
    int64_t bshape[2] = {bcol, brow};
    mrt_tensor buf = {0}, view = {0}, ref;
    ck_assert_int_eq(mrt_tensor_alloc(&buf, MRT_F32, 2, bshape), MRT_OK);
    float *raw = mrt_f32(&buf);
    for (int64_t i = 0; i < bcol * brow; i++)
        raw[i] = -7.0f;
    mrt_tensor_share(&view, &buf);
    view.offset = buf.offset + 2 * brow + 1;
    view.shape[0] = rows;
    view.shape[1] = cols;
    view.stride[0] = 2;
    view.stride[1] = brow;
    ck_assert(!mrt_tensor_is_contiguous(&view));

    alloc1(&ref, rows * cols);
    mrt_rng r;
    mrt_rng_init(&r, 2024);
    ck_assert_int_eq(mrt_rng_normal(&r, &view, 0, 1), MRT_OK);
    ck_assert_uint_eq(r.offset, (uint64_t)(rows * cols));
    mrt_rng_init(&r, 2024);
    ck_assert_int_eq(mrt_rng_normal(&r, &ref, 0, 1), MRT_OK);

    const float *v = mrt_f32(&view), *e = mrt_f32(&ref);
    int64_t touched = 0, wrong = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            wrong += v[i * view.stride[0] + j * view.stride[1]] != e[i * cols + j];
            touched++;
        }
    ck_assert_int_eq(wrong, 0);
    int64_t untouched = 0;
    for (int64_t i = 0; i < bcol * brow; i++)
        untouched += raw[i] == -7.0f;
    ck_assert_int_eq(touched + untouched, bcol * brow);
    mrt_tensor_release(&view);
    mrt_tensor_release(&buf);
    mrt_tensor_release(&ref);
}

START_TEST(strided_view_small) { check_strided(13, 7); }
END_TEST

START_TEST(strided_view_large) { check_strided(257, 301); }
END_TEST

START_TEST(scalar_tensor)
{
    mrt_tensor s = {0};
    ck_assert_int_eq(mrt_tensor_alloc(&s, MRT_F32, 0, NULL), MRT_OK);
    mrt_rng r;
    mrt_rng_init(&r, 3);
    ck_assert_int_eq(mrt_rng_uniform(&r, &s, 10, 11), MRT_OK);
    ck_assert_uint_eq(r.offset, 1);
    ck_assert(mrt_f32(&s)[0] >= 10.0f && mrt_f32(&s)[0] < 11.0f);
    mrt_tensor_release(&s);
}
END_TEST

/* ---- distributions ----------------------------------------------------- */

#define NSAMP 1000000

static void moments(const float *x, int64_t n, double *mean, double *var)
{
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        s2 += (x[i] - *mean) * (x[i] - *mean);
    *var = s2 / (double)(n - 1);
}

START_TEST(uniform_moments)
{
    mrt_tensor t;
    alloc1(&t, NSAMP);
    mrt_rng r;
    mrt_rng_init(&r, 11);
    ck_assert_int_eq(mrt_rng_uniform(&r, &t, -2.0, 3.0), MRT_OK);
    const float *x = mrt_f32(&t);
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < NSAMP; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    ck_assert(lo >= -2.0f && hi < 3.0f);
    ck_assert(lo < -1.99f && hi > 2.99f);
    double mean, var;
    moments(x, NSAMP, &mean, &var);
    /* Standard errors: 0.0014 for the mean, 0.0019 for the variance. */
    ck_assert_double_eq_tol(mean, 0.5, 0.01);
    ck_assert_double_eq_tol(var, 25.0 / 12.0, 0.015);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(uniform_upper_bound_excluded)
{
    /* With [1, 2) float rounding would map the top draws onto 2.0 itself. */
    mrt_tensor t;
    alloc1(&t, NSAMP);
    mrt_rng r;
    mrt_rng_init(&r, 12);
    ck_assert_int_eq(mrt_rng_uniform(&r, &t, 1.0, 2.0), MRT_OK);
    const float *x = mrt_f32(&t);
    int64_t outside = 0;
    for (int64_t i = 0; i < NSAMP; i++)
        outside += !(x[i] >= 1.0f && x[i] < 2.0f);
    ck_assert_int_eq(outside, 0);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(normal_moments)
{
    mrt_tensor t;
    alloc1(&t, NSAMP);
    mrt_rng r;
    mrt_rng_init(&r, 13);
    ck_assert_int_eq(mrt_rng_normal(&r, &t, 0.0, 1.0), MRT_OK);
    const float *x = mrt_f32(&t);
    double mean, var;
    moments(x, NSAMP, &mean, &var);
    ck_assert_double_eq_tol(mean, 0.0, 0.005);
    ck_assert_double_eq_tol(sqrt(var), 1.0, 0.005);
    int64_t within1 = 0, nonfinite = 0;
    for (int64_t i = 0; i < NSAMP; i++) {
        nonfinite += !isfinite(x[i]);
        within1 += fabsf(x[i]) < 1.0f;
    }
    ck_assert_int_eq(nonfinite, 0);
    /* P(|z| < 1) = 0.6827 */
    ck_assert_double_eq_tol((double)within1 / NSAMP, 0.6827, 0.003);

    ck_assert_int_eq(mrt_rng_normal(&r, &t, 1.5, 2.0), MRT_OK);
    moments(x, NSAMP, &mean, &var);
    ck_assert_double_eq_tol(mean, 1.5, 0.01);
    ck_assert_double_eq_tol(sqrt(var), 2.0, 0.01);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(bernoulli_rate)
{
    mrt_tensor t;
    alloc1(&t, NSAMP);
    mrt_rng r;
    mrt_rng_init(&r, 14);
    ck_assert_int_eq(mrt_rng_bernoulli(&r, &t, 0.3), MRT_OK);
    const float *x = mrt_f32(&t);
    int64_t ones = 0, other = 0;
    for (int64_t i = 0; i < NSAMP; i++) {
        other += x[i] != 0.0f && x[i] != 1.0f;
        ones += x[i] == 1.0f;
    }
    ck_assert_int_eq(other, 0);
    ck_assert_double_eq_tol((double)ones / NSAMP, 0.3, 0.003);

    ck_assert_int_eq(mrt_rng_bernoulli(&r, &t, 0.0), MRT_OK);
    ones = 0;
    for (int64_t i = 0; i < NSAMP; i++)
        ones += x[i] == 1.0f;
    ck_assert_int_eq(ones, 0);
    ck_assert_int_eq(mrt_rng_bernoulli(&r, &t, 1.0), MRT_OK);
    ones = 0;
    for (int64_t i = 0; i < NSAMP; i++)
        ones += x[i] == 1.0f;
    ck_assert_int_eq(ones, NSAMP);
    mrt_tensor_release(&t);
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(rejects_bad_input)
{
    mrt_rng r;
    mrt_rng_init(&r, 1);
    int64_t n = 10;
    mrt_tensor i64 = {0}, f, empty = {0};
    ck_assert_int_eq(mrt_tensor_alloc(&i64, MRT_I64, 1, &n), MRT_OK);
    alloc1(&f, 10);
    ck_assert_int_eq(mrt_rng_uniform(&r, &i64, 0, 1), MRT_ERR_DTYPE);
    ck_assert(strstr(mrt_last_error(), "float32") != NULL);
    ck_assert_int_eq(mrt_rng_normal(&r, &i64, 0, 1), MRT_ERR_DTYPE);
    ck_assert_int_eq(mrt_rng_bernoulli(&r, &i64, 0.5), MRT_ERR_DTYPE);
    ck_assert_int_eq(mrt_rng_uniform(&r, &empty, 0, 1), MRT_ERR_ARG);
    ck_assert_int_eq(mrt_rng_uniform(&r, &f, 1, 0), MRT_ERR_ARG);
    ck_assert_int_eq(mrt_rng_uniform(&r, &f, 0, INFINITY), MRT_ERR_ARG);
    ck_assert_int_eq(mrt_rng_normal(&r, &f, 0, -1), MRT_ERR_ARG);
    ck_assert_int_eq(mrt_rng_bernoulli(&r, &f, 1.5), MRT_ERR_ARG);
    ck_assert_int_eq(mrt_rng_bernoulli(&r, &f, NAN), MRT_ERR_ARG);
    ck_assert_uint_eq(r.offset, 0);
    mrt_tensor_release(&i64);
    mrt_tensor_release(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("philox");
    tcase_add_test(tc, kat_zero);
    tcase_add_test(tc, kat_ones);
    tcase_add_test(tc, kat_pi);
    tcase_add_test(tc, counter_word_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("reproducible");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_seed_same_values);
    tcase_add_test(tc, default_generator);
    tcase_add_test(tc, thread_count_independent);
    tcase_add_test(tc, offset_advances);
    tcase_add_test(tc, strided_view_small);
    tcase_add_test(tc, strided_view_large);
    tcase_add_test(tc, scalar_tensor);
    suite_add_tcase(s, tc);

    tc = tcase_create("distributions");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, uniform_moments);
    tcase_add_test(tc, uniform_upper_bound_excluded);
    tcase_add_test(tc, normal_moments);
    tcase_add_test(tc, bernoulli_rate);
    tcase_add_test(tc, rejects_bad_input);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
