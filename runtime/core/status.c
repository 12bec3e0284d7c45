#include <stdarg.h>
#include <stdio.h>
#include "machrt/status.h"

/* Thread-local so that parallel workers reporting failures never race. */
static _Thread_local char last_error[1024];

mrt_status mrt_fail(mrt_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *mrt_last_error(void) { return last_error; }

const char *mrt_status_name(mrt_status code)
{
    switch (code) {
    case MRT_OK: return "ok";
    case MRT_ERR_ARG: return "argument error";
    case MRT_ERR_SHAPE: return "shape error";
    case MRT_ERR_INDEX: return "index error";
    case MRT_ERR_NOMEM: return "out of memory";
    case MRT_ERR_IO: return "i/o error";
    case MRT_ERR_FORMAT: return "format error";
    case MRT_ERR_DEVICE: return "device error";
    case MRT_ERR_DTYPE: return "dtype error";
    }
    return "unknown error";
}
