/* Internal: the argument checks and the output convention shared by the
 * layer kernels (batch norm, activations, pooling, dropout, losses), so
 * every kernel words its errors the same way. */
#ifndef MACHRT_NN_ARGS_H
#define MACHRT_NN_ARGS_H

#include "machrt/tensor.h"

/* t must be allocated, on the CPU, of the given dtype; `name` is how the
 * message calls it ("x", "dy", "output dx", ...). */
mrt_status mrt_nn_need(const char *op, const char *name, const mrt_tensor *t, mrt_dtype dtype);
static inline mrt_status mrt_nn_need_f32(const char *op, const char *name, const mrt_tensor *t)
{
    return mrt_nn_need(op, name, t, MRT_F32);
}

int mrt_nn_same_shape(const mrt_tensor *t, int ndim, const int64_t *shape);
static inline int mrt_nn_same_shape_as(const mrt_tensor *a, const mrt_tensor *b)
{
    return mrt_nn_same_shape(a, b->ndim, b->shape);
}

/* Outputs: an allocated one is checked by mrt_nn_out_check (so the message
 * names it); empty ones are allocated by mrt_nn_out_alloc only once every
 * check has passed, and released again if a later allocation fails, so a
 * failing call leaves the caller's tensors as they were. */
typedef struct {
    mrt_tensor *dst;
    mrt_dtype dtype;
    int ndim;
    int64_t shape[MRT_MAX_DIMS];
    int allocated;
} mrt_nn_out;

mrt_status mrt_nn_out_check(const char *op, mrt_nn_out *s, mrt_tensor *dst, const char *name,
                            mrt_dtype dtype, int ndim, const int64_t *shape);
mrt_status mrt_nn_out_alloc(mrt_nn_out *slots, int n);

/* Where a kernel writes `out`: `out` itself when it is contiguous and shares
 * no storage with the inputs (*aside = 0), else a fresh contiguous tensor of
 * its shape (*aside = 1; zero-filled when `zero`, for accumulation) that the
 * caller copies or adds into `out` at the end. */
mrt_status mrt_nn_write_target(const mrt_tensor *out, const mrt_tensor *const *inputs,
                               int ninputs, int zero, mrt_tensor *target, int *aside);

/* A parameter gradient to accumulate into: allocated zero-filled when empty,
 * otherwise checked against the parameter's shape (`what` names it). */
mrt_status mrt_nn_grad_target(const char *op, const char *what, mrt_tensor *grad, int ndim,
                              const int64_t *shape);

#endif
