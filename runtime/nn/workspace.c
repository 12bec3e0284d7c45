/* Scratch memory for the layer kernels, owned by the caller.
 *
 * A training loop runs the same shapes every step, so a workspace that only
 * grows reaches its final size in the first step and is never reallocated
 * (nor page-faulted in again) afterwards. The old contents are not kept:
 * every kernel treats its scratch as uninitialised. */
#include <stdint.h>
#include <stdlib.h>
#include "machrt/nn.h"

/* A cache line, and the alignment AVX-512 loads want; also what sgemm's
 * packing routines read fastest. */
#define WS_ALIGN 64

mrt_status mrt_workspace_reserve(mrt_workspace *ws, size_t floats)
{
    if (!ws) return mrt_fail(MRT_ERR_ARG, "workspace_reserve: no workspace given");
    if (floats <= ws->capacity && ws->data) return MRT_OK;
    if (floats > (SIZE_MAX - WS_ALIGN) / sizeof(float))
        return mrt_fail(MRT_ERR_NOMEM, "workspace_reserve: %zu floats is too large", floats);
    /* Rounded up to whole cache lines so the capacity recorded is usable. */
    size_t bytes = (floats * sizeof(float) + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
    if (bytes == 0) bytes = WS_ALIGN;
    void *data = NULL;
    if (posix_memalign(&data, WS_ALIGN, bytes) != 0)
        return mrt_fail(MRT_ERR_NOMEM, "workspace_reserve: cannot allocate %zu bytes", bytes);
    /* Freed only once the new block exists, so a failure leaves the old
     * workspace usable. */
    free(ws->data);
    ws->data = data;
    ws->capacity = bytes / sizeof(float);
    return MRT_OK;
}

void mrt_workspace_free(mrt_workspace *ws)
{
    if (!ws) return;
    free(ws->data);
    ws->data = NULL;
    ws->capacity = 0;
}
