#include <string.h>
#include <omp.h>
#include "strided.h"

void mrt_iter_init(mrt_iter *it, int ndim, const int64_t *shape)
{
    memset(it, 0, sizeof *it);
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++) it->shape[i] = shape[i];
}

void mrt_iter_add(mrt_iter *it, const mrt_tensor *t)
{
    int k = it->nops++;
    int lead = it->ndim - t->ndim;
    for (int i = 0; i < it->ndim; i++) {
        int j = i - lead;
        it->stride[k][i] = (j < 0 || t->shape[j] == 1) ? 0 : t->stride[j];
    }
    it->elsize[k] = mrt_dtype_size(t->dtype);
    it->base[k] = (char *)t->storage->data + (size_t)t->offset * it->elsize[k];
}

void mrt_iter_add_scalar(mrt_iter *it, const void *value, size_t elsize)
{
    int k = it->nops++;
    for (int i = 0; i < it->ndim; i++) it->stride[k][i] = 0;
    it->elsize[k] = elsize;
    it->base[k] = (char *)value;
}

/* Drops size-1 dimensions and merges neighbours that are contiguous for
 * every operand. Row-major order of elements is unchanged. */
static void collapse(mrt_iter *it)
{
    int nd = 0;
    for (int i = 0; i < it->ndim; i++) {
        if (it->shape[i] == 1) continue;
        it->shape[nd] = it->shape[i];
        for (int k = 0; k < it->nops; k++) it->stride[k][nd] = it->stride[k][i];
        nd++;
    }
    it->ndim = nd;
    if (nd <= 1) return;
    int out = 0;
    for (int i = 1; i < nd; i++) {
        int mergeable = 1;
        for (int k = 0; k < it->nops; k++)
            if (it->stride[k][out] != it->stride[k][i] * it->shape[i]) mergeable = 0;
        if (mergeable) {
            it->shape[out] *= it->shape[i];
            for (int k = 0; k < it->nops; k++) it->stride[k][out] = it->stride[k][i];
        } else {
            out++;
            it->shape[out] = it->shape[i];
            for (int k = 0; k < it->nops; k++) it->stride[k][out] = it->stride[k][i];
        }
    }
    it->ndim = out + 1;
}

void mrt_iter_run(mrt_iter *it, mrt_row_fn fn, void *ctx)
{
    int64_t total = 1;
    for (int i = 0; i < it->ndim; i++) total *= it->shape[i];
    if (total == 0) return;
    collapse(it);
    const int nd = it->ndim;
    const int nops = it->nops;
    int64_t inner = nd ? it->shape[nd - 1] : 1;
    int64_t inner_stride[MRT_ITER_MAX_OPS];
    for (int k = 0; k < nops; k++) inner_stride[k] = nd ? it->stride[k][nd - 1] : 0;
    int64_t rows = total / inner;
    /* Long rows are cut into chunks so that a single contiguous row (the
     * common case after collapsing) still splits across threads. */
    int64_t chunk = inner;
    if (total >= MRT_PARALLEL_MIN && rows < 4 * omp_get_max_threads()) chunk = 16384;
    if (chunk > inner) chunk = inner;
    int64_t nchunks = (inner + chunk - 1) / chunk;
    int64_t items = rows * nchunks;

#pragma omp parallel for schedule(static) if (total >= MRT_PARALLEL_MIN)
    for (int64_t item = 0; item < items; item++) {
        int64_t row = item / nchunks;
        int64_t begin = (item % nchunks) * chunk;
        int64_t n = inner - begin < chunk ? inner - begin : chunk;
        char *ptr[MRT_ITER_MAX_OPS];
        for (int k = 0; k < nops; k++) {
            int64_t off = begin * inner_stride[k];
            int64_t r = row;
            for (int d = nd - 2; d >= 0; d--) {
                int64_t idx = r % it->shape[d];
                r /= it->shape[d];
                off += idx * it->stride[k][d];
            }
            ptr[k] = it->base[k] + off * (int64_t)it->elsize[k];
        }
        fn(ctx, ptr, inner_stride, n, row * inner + begin);
    }
}
