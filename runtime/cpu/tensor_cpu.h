/* Internal: the CPU tensor kernels, the CPU backend's tensor table
 * (backend.c). Each has the signature of its public op in machrt/tensor.h
 * and is called by it once the arguments are checked and the outputs
 * allocated (output shapes included): a kernel only computes. */
#ifndef MACHRT_TENSOR_CPU_H
#define MACHRT_TENSOR_CPU_H

#include "machrt/tensor.h"

mrt_status mrt_cpu_copy(mrt_tensor *dst, const mrt_tensor *src);
mrt_status mrt_cpu_fill(mrt_tensor *t, double value);
mrt_status mrt_cpu_fill_range(mrt_tensor *t, double start, double step);
mrt_status mrt_cpu_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
mrt_status mrt_cpu_binary_scalar(mrt_binop op, const mrt_tensor *a, double s, int scalar_left,
                                 mrt_tensor *out);
mrt_status mrt_cpu_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out);
mrt_status mrt_cpu_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value,
                              int64_t *index);
mrt_status mrt_cpu_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                              mrt_tensor *indices);
mrt_status mrt_cpu_matmul(const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);

#endif
