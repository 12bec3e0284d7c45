#include <stdlib.h>
#include <string.h>
#include "machrt/tensor.h"

/* 64-byte alignment: a cache line, and what AVX-512 loads want. */
#define MRT_ALIGN 64

mrt_status mrt_storage_new(size_t nbytes, mrt_device device, mrt_storage **out)
{
    if (device != MRT_CPU)
        return mrt_fail(MRT_ERR_DEVICE, "storage: device '%s' is not available in this build",
                        mrt_device_name(device));
    mrt_storage *s = malloc(sizeof *s);
    if (!s) return mrt_fail(MRT_ERR_NOMEM, "storage: out of memory");
    size_t padded = (nbytes + MRT_ALIGN - 1) / MRT_ALIGN * MRT_ALIGN;
    s->data = NULL;
    if (padded > 0 && posix_memalign(&s->data, MRT_ALIGN, padded) != 0) {
        free(s);
        return mrt_fail(MRT_ERR_NOMEM, "storage: cannot allocate %zu bytes", nbytes);
    }
    s->nbytes = nbytes;
    s->refcount = 1;
    s->device = device;
    *out = s;
    return MRT_OK;
}

void mrt_storage_retain(mrt_storage *s)
{
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void mrt_storage_release(mrt_storage *s)
{
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        free(s->data);
        free(s);
    }
}
