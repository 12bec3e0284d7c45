/* Internal: the argument checks and the output convention shared by the
 * layers' public entry points, so every op words its errors the same way
 * whatever the device. They serve steps 1 (check) and 2 (plan) of an op;
 * see machrt/backend.h. */
#ifndef MACHRT_NN_ARGS_H
#define MACHRT_NN_ARGS_H

#include "machrt/tensor.h"

/* t must be allocated and of the given dtype; `name` is how the message
 * calls it ("x", "dy", "output dx", ...). The device is the op's common
 * device, checked before (mrt_op_device). */
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

/* t must have ref's shape: "op: name has shape S, expected ref_name's shape R". */
mrt_status mrt_nn_need_shape_of(const char *op, const char *name, const mrt_tensor *t,
                                const char *ref_name, const mrt_tensor *ref);

/* Outputs: an allocated one is checked by mrt_nn_out_check (so the message
 * names it); empty ones are allocated by mrt_nn_out_alloc only once every
 * check has passed, and released again if a later allocation fails, so a
 * failing call leaves the caller's tensors as they were. */
typedef struct {
    mrt_tensor *dst;
    mrt_dtype dtype;
    int ndim;
    int64_t shape[MRT_MAX_DIMS];
    int zero; /* allocated zero-filled: a gradient to accumulate into */
    int allocated;
} mrt_nn_out;

mrt_status mrt_nn_out_check(const char *op, mrt_nn_out *s, mrt_tensor *dst, const char *name,
                            mrt_dtype dtype, int ndim, const int64_t *shape);
/* The same for a parameter gradient to accumulate into (`what` names it):
 * an allocated one must have the parameter's shape, an empty one is
 * allocated zero-filled by mrt_nn_out_alloc. */
mrt_status mrt_nn_grad_check(const char *op, mrt_nn_out *s, mrt_tensor *grad, const char *what,
                             int ndim, const int64_t *shape);
/* Allocates the empty outputs on `device`. */
mrt_status mrt_nn_out_alloc(mrt_nn_out *slots, int n, mrt_device device);
/* After a failed kernel: releases the outputs mrt_nn_out_alloc allocated,
 * so the caller's tensors are as they were. Returns st. */
mrt_status mrt_nn_out_discard(mrt_nn_out *slots, int n, mrt_status st);

/* An output of `like`'s shape (elementwise layers): NULL is an error,
 * an allocated one is checked (mrt_nn_out_check), an empty one allocated
 * on `device`; `slot` records which, for mrt_nn_out_discard. */
mrt_status mrt_nn_out_like(const char *op, const char *name, mrt_tensor *out,
                           const mrt_tensor *like, mrt_device device, mrt_nn_out *slot);

/* Where a kernel writes `out`: `out` itself when it is contiguous and shares
 * no storage with the inputs (*aside = 0), else a fresh contiguous tensor of
 * its shape (*aside = 1; zero-filled when `zero`, for accumulation) that the
 * caller copies or adds into `out` at the end. */
mrt_status mrt_nn_write_target(const mrt_tensor *out, const mrt_tensor *const *inputs,
                               int ninputs, int zero, mrt_tensor *target, int *aside);

/* A parameter gradient to accumulate into: allocated zero-filled on
 * `device` when empty, otherwise checked against the parameter's shape
 * (`what` names it): mrt_nn_grad_check and mrt_nn_out_alloc in one. */
mrt_status mrt_nn_grad_target(const char *op, const char *what, mrt_tensor *grad, int ndim,
                              const int64_t *shape, mrt_device device);

#endif
