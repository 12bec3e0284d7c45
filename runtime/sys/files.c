/* Files and folders for the scripts (see machrt/sys.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "machrt/sys.h"

static atomic_uint temp_counter;

char *mrt_sys_temp_name(const char *path)
{
    size_t len = strlen(path) + 48;
    char *tmp = malloc(len);
    if (tmp)
        snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&temp_counter, 1u));
    return tmp;
}

mrt_status mrt_sys_write_file(const char *op, const char *path, const void *data, size_t n)
{
    char *tmp = mrt_sys_temp_name(path);
    if (!tmp) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory writing %s", op, path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        mrt_status st = mrt_fail(MRT_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    const char *bytes = data;
    size_t done = 0;
    int err = 0;
    while (done < n && !err) {
        ssize_t w = write(fd, bytes + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) err = w < 0 ? errno : EIO;
        else done += (size_t)w;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) unlink(tmp);
    free(tmp);
    return err ? mrt_fail(MRT_ERR_IO, "cannot write %s: %s", path, strerror(err)) : MRT_OK;
}

mrt_status mrt_sys_mkdirs(const char *op, const char *path)
{
    size_t len = strlen(path);
    char *p = malloc(len + 1);
    if (!p) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    memcpy(p, path, len + 1);
    mrt_status st = MRT_OK;
    /* Each prefix ending at a '/', then the whole path. */
    for (size_t i = 1; i <= len && st == MRT_OK; i++) {
        if (i < len && p[i] != '/') continue;
        char keep = p[i];
        p[i] = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            st = mrt_fail(MRT_ERR_IO, "%s: cannot create folder %s: %s", op, p, strerror(errno));
        else if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = mrt_fail(MRT_ERR_IO, "%s: cannot create folder %s: a file is in the way", op, p);
        p[i] = keep;
    }
    free(p);
    return st;
}

mrt_status mrt_sys_stat(const char *path, mrt_file_stat *out)
{
    struct stat st;
    if (stat(path, &st) != 0) return mrt_fail(MRT_ERR_IO, "%s: %s", path, strerror(errno));
    out->size = (int64_t)st.st_size;
    out->mtime = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
    out->is_dir = S_ISDIR(st.st_mode);
    return MRT_OK;
}

mrt_status mrt_sys_folder_state(const char *op, const char *path, mrt_folder_state *state,
                                char *first, size_t cap)
{
    if (cap) first[0] = '\0';
    struct stat sb;
    if (stat(path, &sb) != 0) {
        /* A path running through a file cannot exist either: creating it
         * is what fails, with its own message. */
        if (errno == ENOENT || errno == ENOTDIR) {
            *state = MRT_FOLDER_MISSING;
            return MRT_OK;
        }
        return mrt_fail(MRT_ERR_IO, "%s: %s: %s", op, path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) {
        *state = MRT_FOLDER_FILE;
        return MRT_OK;
    }
    DIR *d = opendir(path);
    if (!d) return mrt_fail(MRT_ERR_IO, "%s: cannot read folder %s: %s", op, path, strerror(errno));
    *state = MRT_FOLDER_EMPTY;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (cap) snprintf(first, cap, "%s", e->d_name);
        *state = MRT_FOLDER_NONEMPTY;
        break;
    }
    closedir(d);
    return MRT_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void mrt_sys_free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

mrt_status mrt_sys_list_folder(const char *op, const char *path, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(path);
    if (!d) return mrt_fail(MRT_ERR_IO, "%s: cannot read folder %s: %s", op, path, strerror(errno));
    char **list = NULL;
    int count = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(list, (size_t)cap * sizeof *list);
            if (!grown) goto nomem;
            list = grown;
        }
        if (!(list[count] = strdup(e->d_name))) goto nomem;
        count++;
    }
    closedir(d);
    if (count > 1) qsort(list, (size_t)count, sizeof *list, by_name);
    *names = list;
    *n = count;
    return MRT_OK;
nomem:
    closedir(d);
    mrt_sys_free_names(list, count);
    return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory listing %s", op, path);
}
