#include <string.h>
#include "machrt/backend.h"
#include "nn_args.h"

mrt_status mrt_nn_need(const char *op, const char *name, const mrt_tensor *t, mrt_dtype dtype)
{
    if (!t || !t->storage)
        return mrt_fail(MRT_ERR_ARG, "%s: %s is not allocated (empty or released)", op, name);
    if (t->dtype != dtype)
        return mrt_fail(MRT_ERR_DTYPE, "%s: %s must be %s, got %s", op, name,
                        mrt_dtype_name(dtype), mrt_dtype_name(t->dtype));
    return MRT_OK;
}

int mrt_nn_same_shape(const mrt_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

mrt_status mrt_nn_need_shape_of(const char *op, const char *name, const mrt_tensor *t,
                                const char *ref_name, const mrt_tensor *ref)
{
    if (mrt_nn_same_shape_as(t, ref)) return MRT_OK;
    char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
    return mrt_fail(MRT_ERR_SHAPE, "%s: %s has shape %s, expected %s's shape %s", op, name,
                    mrt_shape_str(t->ndim, t->shape, a, sizeof a), ref_name,
                    mrt_shape_str(ref->ndim, ref->shape, b, sizeof b));
}

static void init_slot(mrt_nn_out *s, mrt_tensor *dst, mrt_dtype dtype, int ndim,
                      const int64_t *shape, int zero)
{
    s->dst = dst;
    s->dtype = dtype;
    s->ndim = ndim;
    s->zero = zero;
    s->allocated = 0;
    for (int d = 0; d < ndim; d++) s->shape[d] = shape[d];
}

mrt_status mrt_nn_out_check(const char *op, mrt_nn_out *s, mrt_tensor *dst, const char *name,
                            mrt_dtype dtype, int ndim, const int64_t *shape)
{
    init_slot(s, dst, dtype, ndim, shape, 0);
    if (!dst || !dst->storage) return MRT_OK;
    mrt_status st = mrt_nn_need(op, name, dst, dtype);
    if (st) return st;
    if (!mrt_nn_same_shape(dst, ndim, shape)) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: output %s has shape %s, expected %s", op, name,
                        mrt_shape_str(dst->ndim, dst->shape, a, sizeof a),
                        mrt_shape_str(ndim, shape, b, sizeof b));
    }
    return MRT_OK;
}

mrt_status mrt_nn_grad_check(const char *op, mrt_nn_out *s, mrt_tensor *grad, const char *what,
                             int ndim, const int64_t *shape)
{
    init_slot(s, grad, MRT_F32, ndim, shape, 1);
    if (!grad || !grad->storage) return MRT_OK;
    mrt_status st = mrt_nn_need_f32(op, what, grad);
    if (st) return st;
    if (!mrt_nn_same_shape(grad, ndim, shape)) {
        char gs[MRT_SHAPE_STRLEN], ps[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: %s %s does not match the parameter's shape %s", op,
                        what, mrt_shape_str(grad->ndim, grad->shape, gs, sizeof gs),
                        mrt_shape_str(ndim, shape, ps, sizeof ps));
    }
    return MRT_OK;
}

mrt_status mrt_nn_out_alloc(mrt_nn_out *slots, int n, mrt_device device)
{
    for (int i = 0; i < n; i++) {
        if (!slots[i].dst || slots[i].dst->storage) continue;
        mrt_status st = mrt_tensor_alloc_on(slots[i].dst, slots[i].dtype, slots[i].ndim,
                                            slots[i].shape, device);
        if (!st) slots[i].allocated = 1;
        if (!st && slots[i].zero) st = mrt_tensor_fill(slots[i].dst, 0.0);
        if (st) return mrt_nn_out_discard(slots, i + 1, st);
    }
    return MRT_OK;
}

mrt_status mrt_nn_out_discard(mrt_nn_out *slots, int n, mrt_status st)
{
    for (int i = 0; st && i < n; i++)
        if (slots[i].allocated) {
            mrt_tensor_release(slots[i].dst);
            slots[i].allocated = 0;
        }
    return st;
}

mrt_status mrt_nn_out_like(const char *op, const char *name, mrt_tensor *out,
                           const mrt_tensor *like, mrt_device device, mrt_nn_out *slot)
{
    slot->dst = NULL;
    slot->allocated = 0;
    if (!out) return mrt_fail(MRT_ERR_ARG, "%s: output %s is required", op, name);
    mrt_status st = mrt_nn_out_check(op, slot, out, name, MRT_F32, like->ndim, like->shape);
    if (!st) st = mrt_nn_out_alloc(slot, 1, device);
    return st;
}

mrt_status mrt_nn_write_target(const mrt_tensor *out, const mrt_tensor *const *inputs,
                               int ninputs, int zero, mrt_tensor *target, int *aside)
{
    int ok = mrt_tensor_is_contiguous(out);
    for (int i = 0; ok && i < ninputs; i++)
        if (inputs[i] && inputs[i]->storage == out->storage) ok = 0;
    *aside = !ok;
    if (ok) {
        *target = *out;
        return MRT_OK;
    }
    memset(target, 0, sizeof *target);
    return zero ? mrt_tensor_alloc(target, MRT_F32, out->ndim, out->shape)
                : mrt_tensor_alloc_uninit(target, MRT_F32, out->ndim, out->shape);
}

mrt_status mrt_nn_grad_target(const char *op, const char *what, mrt_tensor *grad, int ndim,
                              const int64_t *shape, mrt_device device)
{
    mrt_nn_out slot;
    mrt_status st = mrt_nn_grad_check(op, &slot, grad, what, ndim, shape);
    return st ? st : mrt_nn_out_alloc(&slot, 1, device);
}
