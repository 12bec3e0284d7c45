/* The worker pool and the tensor cache of the C core: results taken by id
 * whatever order workers finish in, job and start-up errors reported,
 * pending jobs freed on close; the cache shares, keeps first entries and
 * counts hits and misses. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_util.h"
#include "machrt/cache.h"
#include "machrt/pool.h"

/* A job's argument and result: a number; negative numbers fail. */
static long payloads_live;

static long *new_number(long v)
{
    long *p = malloc(sizeof *p);
    *p = v;
    __atomic_add_fetch(&payloads_live, 1, __ATOMIC_SEQ_CST);
    return p;
}

static void free_number(void *p)
{
    __atomic_sub_fetch(&payloads_live, 1, __ATOMIC_SEQ_CST);
    free(p);
}

typedef struct {
    int fail_on_worker; /* 0: none */
} test_ctx;

static char *start(void *ctx, int index, void **state)
{
    const test_ctx *c = ctx;
    *state = NULL;
    if (index == c->fail_on_worker) return strdup("worker refused to start");
    int *w = malloc(sizeof *w);
    *w = index;
    *state = w;
    return NULL;
}

/* Squares the number; earlier jobs sleep longer, so they finish last. */
static char *run(void *state, void *arg, void **result)
{
    long v = *(long *)arg;
    free_number(arg);
    if (v < 0) return strdup("negative input");
    usleep((useconds_t)(1000 * (10 - v % 10)));
    *result = new_number(v * v);
    return NULL;
}

static void stop(void *state) { free(state); }

static const mrt_pool_ops OPS = {start, run, stop, free_number};

START_TEST(results_are_taken_by_id_whatever_the_finishing_order)
{
    test_ctx ctx = {0};
    mrt_pool *p;
    TU_OK(mrt_pool_new(&OPS, &ctx, 4, &p));
    ck_assert_int_eq(mrt_pool_workers(p), 4);
    for (long id = 1; id <= 12; id++) TU_OK(mrt_pool_submit(p, id, new_number(id)));
    long *dup = new_number(3);
    TU_FAILS(MRT_ERR_ARG, mrt_pool_submit(p, 3, dup)); /* 3 is queued, not taken */
    TU_MSG_HAS("already submitted");
    free_number(dup);
    for (long id = 12; id >= 1; id--) {
        void *r;
        char *err;
        TU_OK(mrt_pool_take(p, id, &r, &err));
        ck_assert_ptr_null(err);
        ck_assert_int_eq(*(long *)r, id * id);
        free_number(r);
    }
    void *r;
    char *err;
    TU_FAILS(MRT_ERR_INDEX, mrt_pool_take(p, 5, &r, &err));
    TU_MSG_HAS("job 5");
    mrt_pool_free(p);
}
END_TEST

START_TEST(a_failing_job_reports_its_message_and_the_pool_goes_on)
{
    test_ctx ctx = {0};
    mrt_pool *p;
    TU_OK(mrt_pool_new(&OPS, &ctx, 2, &p));
    TU_OK(mrt_pool_submit(p, 1, new_number(-1)));
    TU_OK(mrt_pool_submit(p, 2, new_number(2)));
    void *r;
    char *err;
    TU_OK(mrt_pool_take(p, 1, &r, &err));
    ck_assert_ptr_null(r);
    ck_assert_str_eq(err, "negative input");
    free(err);
    TU_OK(mrt_pool_take(p, 2, &r, &err));
    ck_assert_int_eq(*(long *)r, 4);
    free_number(r);
    mrt_pool_free(p);
}
END_TEST

START_TEST(start_up_failures_and_bad_sizes_are_errors)
{
    test_ctx ctx = {3};
    mrt_pool *p = (mrt_pool *)&ctx;
    TU_FAILS(MRT_ERR_ARG, mrt_pool_new(&OPS, &ctx, 4, &p));
    TU_MSG_HAS("worker refused to start");
    ck_assert_ptr_null(p);
    TU_FAILS(MRT_ERR_ARG, mrt_pool_new(&OPS, &ctx, 0, &p));
    TU_MSG_HAS("between 1 and");
    TU_FAILS(MRT_ERR_ARG, mrt_pool_new(&OPS, &ctx, MRT_POOL_MAX_WORKERS + 1, &p));
}
END_TEST

START_TEST(closing_frees_jobs_never_taken)
{
    payloads_live = 0;
    test_ctx ctx = {0};
    mrt_pool *p;
    TU_OK(mrt_pool_new(&OPS, &ctx, 2, &p));
    for (long id = 1; id <= 20; id++) TU_OK(mrt_pool_submit(p, id, new_number(id)));
    mrt_pool_free(p); /* some ran, some did not: every payload is freed */
    ck_assert_int_eq(payloads_live, 0);
    mrt_pool_free(NULL);
}
END_TEST

START_TEST(cache_shares_keeps_the_first_and_counts)
{
    mrt_cache_clear();
    mrt_tensor a = {0}, b = {0}, got = {0};
    TU_ALLOC(&a, MRT_F32, 10);
    TU_ALLOC(&b, MRT_F32, 3);
    mrt_f32(&a)[0] = 1.5f;
    const char key[] = {'k', '\0', 'x'}; /* keys may hold NULs */
    ck_assert_int_eq(mrt_cache_get(key, sizeof key, &got), 0);
    ck_assert_ptr_null(got.storage);
    TU_OK(mrt_cache_put(key, sizeof key, &a));
    TU_OK(mrt_cache_put(key, sizeof key, &b)); /* kept: the first */
    ck_assert_int_eq(mrt_cache_get(key, 1, &got), 0); /* "k" alone is another key */
    ck_assert_int_eq(mrt_cache_get(key, sizeof key, &got), 1);
    ck_assert_ptr_eq(got.storage, a.storage);
    ck_assert(mrt_f32(&got)[0] == 1.5f);
    mrt_cache_stats s;
    mrt_cache_get_stats(&s);
    ck_assert_uint_eq(s.entries, 1);
    ck_assert_uint_eq(s.bytes, 10 * sizeof(float));
    ck_assert_uint_eq(s.hits, 1);
    ck_assert_uint_eq(s.misses, 2);
    mrt_tensor_release(&got);
    mrt_tensor_release(&a);
    mrt_cache_clear();
    mrt_cache_get_stats(&s);
    ck_assert_uint_eq(s.entries + s.bytes + s.hits + s.misses, 0);
    ck_assert_int_eq(mrt_cache_get(key, sizeof key, &got), 0);
    mrt_tensor empty = {0};
    TU_FAILS(MRT_ERR_ARG, mrt_cache_put("e", 1, &empty));
    mrt_tensor_release(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, results_are_taken_by_id_whatever_the_finishing_order);
    tcase_add_test(tc, a_failing_job_reports_its_message_and_the_pool_goes_on);
    tcase_add_test(tc, start_up_failures_and_bad_sizes_are_errors);
    tcase_add_test(tc, closing_frees_jobs_never_taken);
    tcase_add_test(tc, cache_shares_keeps_the_first_and_counts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
