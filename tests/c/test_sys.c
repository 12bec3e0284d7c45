/* The system helpers of the C core (runtime/sys/): whole-or-nothing file
 * writes, folders with their parents, file facts, folder states and
 * SHA-256 against the FIPS 180-2 test vectors, folder listings, run-folder
 * locks held by another process, and process liveness. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_util.h"
#include "machrt/sys.h"

/* A fresh folder under /tmp; removed by remove_tree. */
static void make_scratch(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/machrt-sys-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void read_back(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

START_TEST(write_file_replaces_whole_and_leaves_no_temporary)
{
    char dir[64], path[128], got[64];
    make_scratch(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.txt", dir);
    TU_OK(mrt_sys_write_file("test", path, "first\n", 6));
    TU_OK(mrt_sys_write_file("test", path, "second\n", 7));
    read_back(path, got, sizeof got);
    ck_assert_str_eq(got, "second\n");
    ck_assert_int_eq(count_entries(dir), 1);
    TU_OK(mrt_sys_write_file("test", path, "", 0));
    read_back(path, got, sizeof got);
    ck_assert_str_eq(got, "");

    snprintf(path, sizeof path, "%s/missing/y.txt", dir);
    TU_FAILS(MRT_ERR_IO, mrt_sys_write_file("test", path, "z", 1));
    TU_MSG_HAS("cannot write");
    TU_MSG_HAS("missing/y.txt");
    remove_tree(dir);
}
END_TEST

START_TEST(mkdirs_makes_parents_and_refuses_a_file_in_the_way)
{
    char dir[64], path[160];
    make_scratch(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    TU_OK(mrt_sys_mkdirs("test", path));
    TU_OK(mrt_sys_mkdirs("test", path)); /* exists: fine */
    mrt_file_stat st;
    TU_OK(mrt_sys_stat(path, &st));
    ck_assert(st.is_dir);

    snprintf(path, sizeof path, "%s/file", dir);
    TU_OK(mrt_sys_write_file("test", path, "abc", 3));
    TU_FAILS(MRT_ERR_IO, mrt_sys_mkdirs("sys.mkdir", path));
    TU_MSG_HAS("sys.mkdir");
    TU_MSG_HAS("in the way");
    snprintf(path, sizeof path, "%s/file/sub", dir);
    TU_FAILS(MRT_ERR_IO, mrt_sys_mkdirs("sys.mkdir", path));
    TU_MSG_HAS("cannot create folder");
    remove_tree(dir);
}
END_TEST

START_TEST(stat_reports_size_kind_and_a_missing_path)
{
    char dir[64], path[128];
    make_scratch(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/seven", dir);
    TU_OK(mrt_sys_write_file("test", path, "1234567", 7));
    mrt_file_stat st;
    TU_OK(mrt_sys_stat(path, &st));
    ck_assert_int_eq(st.size, 7);
    ck_assert(!st.is_dir);
    ck_assert(st.mtime > 1e9); /* after 2001: a time, not a zero */
    snprintf(path, sizeof path, "%s/nope", dir);
    TU_FAILS(MRT_ERR_IO, mrt_sys_stat(path, &st));
    TU_MSG_HAS("nope");
    remove_tree(dir);
}
END_TEST

START_TEST(folder_state_tells_missing_empty_nonempty_file)
{
    char dir[64], path[128], first[32];
    make_scratch(dir, sizeof dir);
    mrt_folder_state s;
    TU_OK(mrt_sys_folder_state("test", dir, &s, first, sizeof first));
    ck_assert_int_eq(s, MRT_FOLDER_EMPTY);
    snprintf(path, sizeof path, "%s/only.wav", dir);
    TU_OK(mrt_sys_write_file("test", path, "x", 1));
    TU_OK(mrt_sys_folder_state("test", dir, &s, first, sizeof first));
    ck_assert_int_eq(s, MRT_FOLDER_NONEMPTY);
    ck_assert_str_eq(first, "only.wav");
    TU_OK(mrt_sys_folder_state("test", path, &s, first, sizeof first));
    ck_assert_int_eq(s, MRT_FOLDER_FILE);
    snprintf(path, sizeof path, "%s/only.wav/below", dir); /* through a file */
    TU_OK(mrt_sys_folder_state("test", path, &s, first, sizeof first));
    ck_assert_int_eq(s, MRT_FOLDER_MISSING);
    snprintf(path, sizeof path, "%s/none", dir);
    TU_OK(mrt_sys_folder_state("test", path, &s, first, sizeof first));
    ck_assert_int_eq(s, MRT_FOLDER_MISSING);
    remove_tree(dir);
}
END_TEST

/* FIPS 180-2, appendix B.1 and B.2, and the digest of no bytes. */
START_TEST(sha256_matches_the_fips_vectors)
{
    static const struct { const char *text, *digest; } V[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}};
    char dir[64], path[128], hex[MRT_SHA256_HEX];
    make_scratch(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/v", dir);
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        TU_OK(mrt_sys_write_file("test", path, V[i].text, strlen(V[i].text)));
        TU_OK(mrt_sys_sha256_file("test", path, hex));
        ck_assert_str_eq(hex, V[i].digest);
    }
    snprintf(path, sizeof path, "%s/absent", dir);
    TU_FAILS(MRT_ERR_IO, mrt_sys_sha256_file("test", path, hex));
    TU_MSG_HAS("absent");
    remove_tree(dir);
}
END_TEST

START_TEST(list_folder_gives_sorted_names_and_names_a_missing_folder)
{
    char dir[64], path[128];
    make_scratch(dir, sizeof dir);
    const char *names[] = {"b.txt", "a.txt", "c"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        TU_OK(mrt_sys_write_file("test", path, "x", 1));
    }
    char **got;
    int n;
    TU_OK(mrt_sys_list_folder("test", dir, &got, &n));
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(got[0], "a.txt");
    ck_assert_str_eq(got[1], "b.txt");
    ck_assert_str_eq(got[2], "c");
    mrt_sys_free_names(got, n);
    snprintf(path, sizeof path, "%s/absent", dir);
    TU_FAILS(MRT_ERR_IO, mrt_sys_list_folder("test", path, &got, &n));
    TU_MSG_HAS("absent");
    remove_tree(dir);
}
END_TEST

START_TEST(a_lock_held_by_another_process_names_it_and_frees_when_it_ends)
{
    char dir[64], path[128];
    make_scratch(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/run.lock", dir);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int fd;
        long holder;
        char ok = mrt_sys_lock_file("child", path, &fd, &holder) == MRT_OK && fd >= 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) _exit(1);
        pause(); /* holds the lock until killed */
        _exit(0);
    }
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    ck_assert_int_eq(ok, 'y');
    int fd;
    long holder;
    TU_OK(mrt_sys_lock_file("test", path, &fd, &holder));
    ck_assert_int_eq(fd, -1);
    ck_assert_int_eq(holder, (long)child);
    ck_assert(mrt_sys_process_alive((long)child));
    kill(child, SIGKILL);
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    ck_assert(!mrt_sys_process_alive((long)child));
    TU_OK(mrt_sys_lock_file("test", path, &fd, &holder));
    ck_assert_int_ge(fd, 0);
    char pid[32], want[32];
    read_back(path, pid, sizeof pid);
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    ck_assert_str_eq(pid, want);
    mrt_sys_unlock_file(fd);
    close(ready[0]);
    close(ready[1]);
    remove_tree(dir);
}
END_TEST

START_TEST(temp_names_carry_the_pid_and_differ_per_call)
{
    char want[64];
    snprintf(want, sizeof want, "runs/x/config.json.tmp.%ld.", (long)getpid());
    char *a = mrt_sys_temp_name("runs/x/config.json"), *b = mrt_sys_temp_name("runs/x/config.json");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(strncmp(a, want, strlen(want)), 0);
    ck_assert_int_eq(strncmp(b, want, strlen(want)), 0);
    ck_assert_str_ne(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(a_lock_file_that_cannot_be_made_is_named)
{
    int fd;
    long holder;
    TU_FAILS(MRT_ERR_IO, mrt_sys_lock_file("test", "/nonexistent-folder/run.lock", &fd, &holder));
    TU_MSG_HAS("/nonexistent-folder/run.lock");
    ck_assert_int_eq(fd, -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sys");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, write_file_replaces_whole_and_leaves_no_temporary);
    tcase_add_test(tc, mkdirs_makes_parents_and_refuses_a_file_in_the_way);
    tcase_add_test(tc, stat_reports_size_kind_and_a_missing_path);
    tcase_add_test(tc, folder_state_tells_missing_empty_nonempty_file);
    tcase_add_test(tc, sha256_matches_the_fips_vectors);
    tcase_add_test(tc, list_folder_gives_sorted_names_and_names_a_missing_folder);
    tcase_add_test(tc, a_lock_held_by_another_process_names_it_and_frees_when_it_ends);
    tcase_add_test(tc, a_lock_file_that_cannot_be_made_is_named);
    tcase_add_test(tc, temp_names_carry_the_pid_and_differ_per_call);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
