/* What experiment scripts need from the system beyond the C library:
 * whole-or-nothing file writes, folders with their parents, file facts and
 * SHA-256 digests (OpenSSL's libcrypto). Every call names the operation
 * `op` in its message, as the user calls it ("sys.write_file"). */
#ifndef MACHRT_SYS_H
#define MACHRT_SYS_H

#include <stddef.h>
#include <stdint.h>
#include "machrt/status.h"

/* Writes `n` bytes to `path` whole or not at all under that name: a
 * temporary file in the same folder, fsync, rename. */
mrt_status mrt_sys_write_file(const char *op, const char *path, const void *data, size_t n);

/* A temporary name next to `path` for a file about to replace it:
 * "<path>.tmp.<pid>.<n>", distinct for every writer of every process (n
 * counts this process's calls), so two writers of one file, in two runs or
 * two threads, never share one; a run resuming in the folder removes those
 * of processes that are gone. malloc'd; NULL when out of memory. */
char *mrt_sys_temp_name(const char *path);

/* Creates the folder and its parents; an existing folder (made by another
 * thread, too) is fine, a file in the way is an error. */
mrt_status mrt_sys_mkdirs(const char *op, const char *path);

typedef struct {
    int64_t size;
    double mtime; /* seconds since the epoch, with nanoseconds */
    int is_dir;
} mrt_file_stat;

/* MRT_ERR_IO (with "<path>: <reason>") when the path cannot be stat'ed. */
mrt_status mrt_sys_stat(const char *path, mrt_file_stat *out);

typedef enum {
    MRT_FOLDER_MISSING,  /* nothing there (or a path running through a file) */
    MRT_FOLDER_EMPTY,
    MRT_FOLDER_NONEMPTY, /* `first` names one entry */
    MRT_FOLDER_FILE      /* a file, not a folder */
} mrt_folder_state;

/* What is at `path`; `first` (of `cap` bytes) receives one entry's name
 * when the folder is not empty. */
mrt_status mrt_sys_folder_state(const char *op, const char *path, mrt_folder_state *state,
                                char *first, size_t cap);

/* The names in a folder (without "." and ".."), sorted: *names is a
 * malloc'd array of *n malloc'd strings, freed by mrt_sys_free_names. */
mrt_status mrt_sys_list_folder(const char *op, const char *path, char ***names, int *n);
void mrt_sys_free_names(char **names, int n);

/* Takes an exclusive flock on `path` (created if missing) without waiting
 * and writes this process's PID into it. Locked: *fd >= 0, kept open for
 * as long as the lock is held. Held by another process: MRT_OK, *fd = -1
 * and *holder = the PID the holder wrote (0 when it cannot be read). */
mrt_status mrt_sys_lock_file(const char *op, const char *path, int *fd, long *holder);
void mrt_sys_unlock_file(int fd);

/* Whether a process with this PID exists (of any user). */
int mrt_sys_process_alive(long pid);

#define MRT_SHA256_HEX 65 /* 64 lowercase hex digits and the terminator */

/* SHA-256 of bytes given in pieces, as lowercase hex: begin (NULL when out
 * of memory), add (0 when it fails; a NULL h fails), end (frees h, also
 * after a failure; 0 when the digest could not be made). Every SHA-256 of
 * machrt goes through these. */
typedef struct mrt_sha256 mrt_sha256;
mrt_sha256 *mrt_sha256_begin(void);
int mrt_sha256_add(mrt_sha256 *h, const void *p, size_t n);
int mrt_sha256_end(mrt_sha256 *h, char hex[MRT_SHA256_HEX]);

/* The SHA-256 digest of a file's bytes as lowercase hex. */
mrt_status mrt_sys_sha256_file(const char *op, const char *path, char hex[MRT_SHA256_HEX]);

#endif
