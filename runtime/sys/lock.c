/* Run-folder locks and process facts (see machrt/sys.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include "machrt/sys.h"

/* The PID the holder wrote into the lock file, 0 when it cannot be read
 * (the holder may not have written it yet). */
static long read_holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return end != buf && pid > 0 ? pid : 0;
}

mrt_status mrt_sys_lock_file(const char *op, const char *path, int *fd, long *holder)
{
    *fd = -1;
    *holder = 0;
    /* O_CLOEXEC: a child the run starts (a shell command) must not inherit,
     * and so outlive, the lock. */
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (f < 0) return mrt_fail(MRT_ERR_IO, "%s: cannot open the lock file %s: %s", op, path, strerror(errno));
    while (flock(f, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        int err = errno;
        if (err == EWOULDBLOCK) {
            *holder = read_holder(f);
            close(f);
            return MRT_OK;
        }
        close(f);
        return mrt_fail(MRT_ERR_IO, "%s: cannot lock %s: %s", op, path, strerror(err));
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)len, 0) != len) {
        int err = errno;
        close(f);
        return mrt_fail(MRT_ERR_IO, "%s: cannot write the lock file %s: %s", op, path, strerror(err));
    }
    *fd = f;
    return MRT_OK;
}

void mrt_sys_unlock_file(int fd)
{
    if (fd >= 0) close(fd); /* closing the last descriptor releases the flock */
}

int mrt_sys_process_alive(long pid)
{
    /* pid_t is an int: 2^40 would narrow to 0, and kill(0, 0) asks about
     * our own process group. */
    if (pid <= 0 || pid > INT_MAX) return 0;
    /* EPERM: the process exists but belongs to another user. */
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}
