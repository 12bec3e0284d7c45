/* Reductions: sum, mean, max, min, argmax, argmin.
 *
 * Whole-tensor sums are accumulated in double over fixed blocks whose
 * partial results are then added in order, so the result does not depend on
 * the thread count (DESIGN.md: same numbers whatever the worker count). */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include "machrt/backend.h"
#include "tensor_cpu.h"

#define REDUCE_BLOCK 65536

const char *mrt_reduceop_name(mrt_reduceop op)
{
    static const char *names[] = {"sum", "mean", "max", "min", "argmax", "argmin"};
    return names[op];
}

static int is_max_like(mrt_reduceop op) { return op == MRT_MAX || op == MRT_ARGMAX; }
static int is_extreme(mrt_reduceop op) { return op >= MRT_MAX; }

/* Is v a better extreme than best? NaN wins (propagates, as in PyTorch);
 * ties keep the first occurrence. */
static inline int better(float v, float best, int want_max)
{
    if (best != best) return 0;
    if (v != v) return 1;
    return want_max ? v > best : v < best;
}

static mrt_status check_input(const char *op, const mrt_tensor *a)
{
    if (!a->storage) return mrt_fail(MRT_ERR_ARG, "%s: tensor has been released", op);
    if (a->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: expected a float32 tensor, got %s", op,
                        mrt_dtype_name(a->dtype));
    return MRT_OK;
}

mrt_status mrt_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value, int64_t *index)
{
    const char *name = mrt_reduceop_name(op);
    mrt_device dev;
    MRT_OP_DEVICE(name, &dev, a);
    mrt_status st = check_input(name, a);
    if (st) return st;
    if (mrt_tensor_numel(a) == 0 && is_extreme(op))
        return mrt_fail(MRT_ERR_SHAPE, "%s: tensor has no elements", name);
    MRT_BACKEND_CALL(st, name, dev, tensor, reduce_all, (op, a, value, index));
    return st;
}

mrt_status mrt_cpu_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value,
                              int64_t *index)
{
    const char *name = mrt_reduceop_name(op);
    const int64_t n = mrt_tensor_numel(a);
    mrt_status st;
    mrt_tensor c = {0};
    if ((st = mrt_tensor_contiguous(a, &c))) return st;
    const float *x = mrt_f32(&c);
    int64_t nblocks = (n + REDUCE_BLOCK - 1) / REDUCE_BLOCK;
    if (nblocks == 0) nblocks = 1;
    double *partial = malloc((size_t)nblocks * sizeof *partial);
    int64_t *where = malloc((size_t)nblocks * sizeof *where);
    if (!partial || !where) {
        free(partial);
        free(where);
        mrt_tensor_release(&c);
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", name);
    }
    const int want_max = is_max_like(op);
#pragma omp parallel for schedule(static) if (n >= 4 * REDUCE_BLOCK)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t lo = b * REDUCE_BLOCK, hi = lo + REDUCE_BLOCK < n ? lo + REDUCE_BLOCK : n;
        if (!is_extreme(op)) {
            double acc = 0.0;
            for (int64_t i = lo; i < hi; i++) acc += x[i];
            partial[b] = acc;
        } else {
            int64_t bi = lo;
            for (int64_t i = lo + 1; i < hi; i++)
                if (better(x[i], x[bi], want_max)) bi = i;
            where[b] = bi;
            partial[b] = lo < hi ? x[bi] : 0.0;
        }
    }
    if (!is_extreme(op)) {
        double acc = 0.0;
        for (int64_t b = 0; b < nblocks; b++) acc += partial[b];
        *value = op == MRT_MEAN ? (n ? acc / (double)n : NAN) : acc;
        if (index) *index = 0;
    } else {
        int64_t best = where[0];
        for (int64_t b = 1; b < nblocks; b++)
            if (better(x[where[b]], x[best], want_max)) best = where[b];
        *value = x[best];
        if (index) *index = best;
    }
    free(partial);
    free(where);
    mrt_tensor_release(&c);
    return MRT_OK;
}

/* The shape of a reduced over dim, and the strides of a over it. */
static int reduced_shape(const mrt_tensor *a, int dim, int64_t *shape, int64_t *stride)
{
    int nd = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (i == dim) continue;
        shape[nd] = a->shape[i];
        stride[nd] = a->stride[i];
        nd++;
    }
    return nd;
}

mrt_status mrt_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                          mrt_tensor *indices)
{
    const char *name = mrt_reduceop_name(op);
    mrt_device dev;
    MRT_OP_DEVICE(name, &dev, a, values, indices);
    mrt_status st = check_input(name, a);
    if (st) return st;
    if (dim < 0 || dim >= a->ndim)
        return mrt_fail(MRT_ERR_INDEX, "%s: dimension %d out of range for a %d-d tensor", name,
                        dim + 1, a->ndim);
    if (a->shape[dim] == 0 && is_extreme(op))
        return mrt_fail(MRT_ERR_SHAPE, "%s: dimension %d has no elements", name, dim + 1);
    if ((op == MRT_ARGMAX || op == MRT_ARGMIN) && !indices)
        return mrt_fail(MRT_ERR_ARG, "%s: an indices tensor is required", name);
    int64_t oshape[MRT_MAX_DIMS], unused[MRT_MAX_DIMS];
    const int ond = reduced_shape(a, dim, oshape, unused);
    /* Results go to local headers first so that a failure leaves the
     * caller's outputs untouched. */
    mrt_tensor v = *values, ix = indices ? *indices : (mrt_tensor){0};
    const int own_v = !v.storage, own_ix = !ix.storage;
    if ((st = mrt_tensor_prepare_out_on(name, &v, MRT_F32, ond, oshape, dev))) return st;
    if (indices && (st = mrt_tensor_prepare_out_on(name, &ix, MRT_I64, ond, oshape, dev))) {
        if (own_v) mrt_tensor_release(&v);
        return st;
    }
    MRT_BACKEND_CALL(st, name, dev, tensor, reduce_dim, (op, a, dim, &v, indices ? &ix : NULL));
    if (st) {
        if (own_v) mrt_tensor_release(&v);
        if (indices && own_ix) mrt_tensor_release(&ix);
        return st;
    }
    *values = v;
    if (indices) *indices = ix;
    return MRT_OK;
}

mrt_status mrt_cpu_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                              mrt_tensor *indices)
{
    int64_t oshape[MRT_MAX_DIMS], ostride_in[MRT_MAX_DIMS];
    const int ond = reduced_shape(a, dim, oshape, ostride_in);
    const int64_t len = a->shape[dim];
    const mrt_tensor v = *values, ix = indices ? *indices : (mrt_tensor){0};
    int64_t nout = mrt_tensor_numel(&v);
    const float *x = (const float *)a->storage->data + a->offset;
    const int64_t step = a->stride[dim];
    float *vo = mrt_f32(&v);
    int64_t *io = indices ? mrt_i64(&ix) : NULL;
    const int want_max = is_max_like(op);
#pragma omp parallel for schedule(static) if (nout * len >= 32768)
    for (int64_t o = 0; o < nout; o++) {
        /* Outputs may be strided views supplied by the caller. */
        int64_t off = 0, vo_off = 0, io_off = 0, r = o;
        for (int d = ond - 1; d >= 0; d--) {
            int64_t idx = r % oshape[d];
            off += idx * ostride_in[d];
            vo_off += idx * v.stride[d];
            io_off += indices ? idx * ix.stride[d] : 0;
            r /= oshape[d];
        }
        const float *p = x + off;
        if (!is_extreme(op)) {
            double acc = 0.0;
            for (int64_t i = 0; i < len; i++) acc += p[i * step];
            vo[vo_off] = (float)(op == MRT_MEAN ? (len ? acc / (double)len : NAN) : acc);
            if (io) io[io_off] = 0;
        } else {
            int64_t bi = 0;
            for (int64_t i = 1; i < len; i++)
                if (better(p[i * step], p[bi * step], want_max)) bi = i;
            vo[vo_off] = p[bi * step];
            if (io) io[io_off] = bi;
        }
    }
    return MRT_OK;
}
