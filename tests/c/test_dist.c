/* Check suite for runtime/dist in one process (no MPI launcher): rank 0 of
 * 1, every collective a checked no-op, launcher detection, the reducer's
 * bucket checks and round bookkeeping, and the bad-argument messages. The
 * collectives across ranks are tested under mpirun (tests/lua/test_dist_mpi.lua). */
#include <stdlib.h>

#include "check_util.h"
#include "machrt/dist.h"

static void clear_launcher(void)
{
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMIX_RANK");
    unsetenv("PMI_SIZE");
}

START_TEST(test_local_process_is_rank_0_of_1)
{
    clear_launcher();
    TU_OK(mrt_dist_init(MRT_DIST_AUTO));
    ck_assert_int_eq(mrt_dist_active(), 0);
    ck_assert_int_eq(mrt_dist_rank(), 0);
    ck_assert_int_eq(mrt_dist_size(), 1);
    TU_OK(mrt_dist_init(MRT_DIST_NONE));
    TU_OK(mrt_dist_barrier());
    TU_OK(mrt_dist_finalize());
}
END_TEST

START_TEST(test_mpi_mode_needs_a_launcher)
{
    clear_launcher();
    TU_FAILS(MRT_ERR_ARG, mrt_dist_init(MRT_DIST_MPI));
    TU_MSG_HAS("not started by an MPI launcher");
    TU_MSG_HAS("OMPI_COMM_WORLD_SIZE");
}
END_TEST

START_TEST(test_launcher_detection)
{
    clear_launcher();
    ck_assert_ptr_null(mrt_dist_launcher_variable());
    setenv("PMI_SIZE", "4", 1);
    ck_assert_str_eq(mrt_dist_launcher_variable(), "PMI_SIZE");
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    ck_assert_str_eq(mrt_dist_launcher_variable(), "OMPI_COMM_WORLD_SIZE");
    setenv("OMPI_COMM_WORLD_SIZE", "", 1);
    ck_assert_str_eq(mrt_dist_launcher_variable(), "PMI_SIZE"); /* empty is unset */
    clear_launcher();
}
END_TEST

START_TEST(test_names)
{
    mrt_dist_op op;
    mrt_dist_mode mode;
    const char *ops[] = {"sum", "mean", "max", "min"};
    for (int i = 0; i < 4; i++) {
        TU_OK(mrt_dist_op_parse(ops[i], &op));
        ck_assert_int_eq(op, i);
        ck_assert_str_eq(mrt_dist_op_name(op), ops[i]);
    }
    TU_FAILS(MRT_ERR_ARG, mrt_dist_op_parse("avg", &op));
    TU_MSG_HAS("unknown reduction 'avg'");
    TU_OK(mrt_dist_mode_parse("none", &mode));
    ck_assert_int_eq(mode, MRT_DIST_NONE);
    TU_FAILS(MRT_ERR_ARG, mrt_dist_mode_parse("nccl", &mode));
    TU_MSG_HAS("unknown mode 'nccl'");
}
END_TEST

START_TEST(test_local_collectives_keep_values)
{
    float v[3] = {1.5f, -2.0f, 4.0f};
    for (int op = MRT_DIST_SUM; op <= MRT_DIST_MIN; op++) {
        TU_OK(mrt_dist_allreduce(v, 3, (mrt_dist_op)op));
        ck_assert(v[0] == 1.5f && v[1] == -2.0f && v[2] == 4.0f);
    }
    TU_OK(mrt_dist_broadcast(v, sizeof v, 0));
    ck_assert(v[2] == 4.0f);
    TU_OK(mrt_dist_allreduce(NULL, 0, MRT_DIST_SUM)); /* nothing to reduce */
    TU_FAILS(MRT_ERR_ARG, mrt_dist_allreduce(NULL, 3, MRT_DIST_SUM));
    TU_MSG_HAS("no buffer for 3 elements");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_broadcast(v, sizeof v, 1));
    TU_MSG_HAS("root 1 is not a rank (ranks are 0..0)");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_allreduce(v, 3, (mrt_dist_op)9));
    double d[2] = {0x1p53, 1.0 / 3.0};
    for (int op = MRT_DIST_SUM; op <= MRT_DIST_MIN; op++) {
        TU_OK(mrt_dist_allreduce_f64(d, 2, (mrt_dist_op)op));
        ck_assert(d[0] == 0x1p53 && d[1] == 1.0 / 3.0); /* every digit of a double kept */
    }
    TU_FAILS(MRT_ERR_ARG, mrt_dist_allreduce_f64(NULL, 2, MRT_DIST_SUM));
    TU_MSG_HAS("no buffer for 2 elements");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_allreduce_f64(d, 2, (mrt_dist_op)9));
}
END_TEST

START_TEST(test_nccl_presence)
{
    float v[2] = {1.0f, 2.0f};
#ifdef MRT_HAVE_CUDA
    ck_assert_int_eq(mrt_dist_nccl_built(), 1);
    TU_OK(mrt_dist_nccl_allreduce(v, 2, MRT_DIST_SUM)); /* one rank: nothing to reduce */
#else
    ck_assert_int_eq(mrt_dist_nccl_built(), 0);
    TU_FAILS(MRT_ERR_ARG, mrt_dist_nccl_allreduce(v, 2, MRT_DIST_SUM));
    TU_MSG_HAS("built without CUDA, so without NCCL");
#endif
    mrt_dist_nccl_pick_device(); /* local: nothing to pick */
    mrt_dist_nccl_finalize();    /* no communicator: nothing to free */
}
END_TEST

START_TEST(test_local_gather_is_a_copy)
{
    char *all = NULL;
    size_t lengths[1] = {0};
    TU_OK(mrt_dist_gather_bytes("abc", 3, 0, &all, lengths));
    ck_assert_ptr_nonnull(all);
    ck_assert_uint_eq(lengths[0], 3);
    ck_assert(memcmp(all, "abc", 3) == 0);
    free(all);
    TU_FAILS(MRT_ERR_ARG, mrt_dist_gather_bytes("abc", 3, 2, &all, lengths));
    ck_assert_ptr_null(all);
}
END_TEST

START_TEST(test_reducer_checks_buckets)
{
    float g[10] = {0};
    mrt_dist_reducer *r = NULL;
    size_t ok[3] = {0, 4, 7}, late[2] = {1, 5}, back[3] = {0, 6, 6}, over[2] = {0, 10};
    TU_FAILS(MRT_ERR_ARG, mrt_dist_reducer_new(g, 10, late, 2, MRT_DIST_MEAN, &r));
    TU_MSG_HAS("bucket 1 starts at 1, not 0");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_reducer_new(g, 10, back, 3, MRT_DIST_MEAN, &r));
    TU_MSG_HAS("bucket 2 is empty or out of order");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_reducer_new(g, 10, over, 2, MRT_DIST_MEAN, &r));
    TU_MSG_HAS("bucket 2 is empty");
    TU_FAILS(MRT_ERR_ARG, mrt_dist_reducer_new(g, 0, ok, 3, MRT_DIST_MEAN, &r));
    ck_assert_ptr_null(r);
    TU_OK(mrt_dist_reducer_new(g, 10, ok, 3, MRT_DIST_MEAN, &r));
    ck_assert_uint_eq(mrt_dist_reducer_buckets(r), 3);
    TU_OK(mrt_dist_reducer_start(r, 2));
    TU_FAILS(MRT_ERR_ARG, mrt_dist_reducer_start(r, 2));
    TU_MSG_HAS("bucket 3 started twice before wait()");
    TU_FAILS(MRT_ERR_INDEX, mrt_dist_reducer_start(r, 3));
    ck_assert_uint_eq(mrt_dist_reducer_started(r), 1);
    for (int i = 0; i < 10; i++) g[i] = (float)i;
    TU_OK(mrt_dist_reducer_wait(r)); /* starts the other two, then a new round */
    ck_assert_uint_eq(mrt_dist_reducer_started(r), 0);
    for (int i = 0; i < 10; i++) ck_assert(g[i] == (float)i); /* the mean over one rank */
    TU_OK(mrt_dist_reducer_start(r, 2));
    mrt_dist_reducer_free(r);
    mrt_dist_reducer_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dist");
    TCase *local = tcase_create("local");
    tcase_add_test(local, test_local_process_is_rank_0_of_1);
    tcase_add_test(local, test_mpi_mode_needs_a_launcher);
    tcase_add_test(local, test_launcher_detection);
    tcase_add_test(local, test_names);
    tcase_add_test(local, test_local_collectives_keep_values);
    tcase_add_test(local, test_local_gather_is_a_copy);
    tcase_add_test(local, test_nccl_presence);
    tcase_add_test(local, test_reducer_checks_buckets);
    suite_add_tcase(s, local);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
