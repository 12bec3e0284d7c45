/* Status codes and error messages for the machrt C core.
 *
 * Every fallible call returns an mrt_status. On failure the call records a
 * human-readable message (naming the operation, shapes, file or key) that the
 * Lua binding raises as an error. The message lives in a thread-local buffer,
 * like errno: it is the only way to keep it without threading a context
 * through every kernel, and it stays correct when OpenMP workers or loader
 * threads fail independently. */
#ifndef MACHRT_STATUS_H
#define MACHRT_STATUS_H

typedef enum {
    MRT_OK = 0,
    MRT_ERR_ARG,    /* bad argument value or type */
    MRT_ERR_SHAPE,  /* shapes do not fit the operation */
    MRT_ERR_INDEX,  /* index or dimension out of range */
    MRT_ERR_NOMEM,  /* allocation failed */
    MRT_ERR_IO,     /* file could not be opened, read or written */
    MRT_ERR_FORMAT, /* file content is malformed */
    MRT_ERR_DEVICE, /* device unavailable or tensors on different devices */
    MRT_ERR_DTYPE   /* dtype not supported by the operation */
} mrt_status;

/* Records the message (printf-style) for this thread and returns `code`,
 * so a failing path reads `return mrt_fail(MRT_ERR_SHAPE, "...", ...);`. */
mrt_status mrt_fail(mrt_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *mrt_last_error(void);

/* Short name of a status code ("shape error", ...). */
const char *mrt_status_name(mrt_status code);

#endif
