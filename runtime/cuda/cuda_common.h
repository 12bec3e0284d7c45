/* Shared by the CUDA backend's sources: the CUDA headers (or their CPU
 * emulation), the C core's API, launch helpers and device-side utilities.
 *
 * Every .cu file is compiled twice: by nvcc for the device (make CUDA=1) and
 * by g++ against emu/cuda_emu.h for `make test` on machines without a GPU.
 * Kernels are therefore launched only through MRT_LAUNCH (plain kernels) or
 * MRT_LAUNCH_SYNC (kernels with __shared__ memory and __syncthreads). */
#ifndef MACHRT_CUDA_COMMON_H
#define MACHRT_CUDA_COMMON_H

#ifdef __CUDACC__
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cufft.h>
#define MRT_LAUNCH(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define MRT_LAUNCH_SYNC(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#include "emu/cuda_emu.h"
#endif

#include <stdint.h>

extern "C" {
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "machrt/optim.h"
#include "machrt/rng.h"
#include "machrt/spectral.h"
#include "machrt/tensor.h"
}

/* Threads per block of the elementwise kernels, and the cap on their grid
 * (grid-stride loops cover the rest). Reductions use a fixed grid so that
 * their partial sums, hence their rounding, do not depend on the device. */
#define MRT_CU_THREADS 256
#define MRT_CU_MAX_BLOCKS 4096
#define MRT_CU_REDUCE_BLOCKS 128

/* ---- backend state (backend.cu) ------------------------------------------------ */
cudaStream_t mrt_cu_stream(void);        /* the compute stream */
cublasHandle_t mrt_cu_blas(void);        /* bound to the compute stream */
/* Turns a CUDA / cuBLAS / cuFFT failure into an mrt_status naming `op`. */
mrt_status mrt_cu_check(const char *op, cudaError_t err);
mrt_status mrt_cu_check_blas(const char *op, cublasStatus_t st);
/* After launches: reports a launch error (bad configuration, ...). */
mrt_status mrt_cu_launched(const char *op);
/* Device scratch from the caching allocator (released with mrt_cu_scratch_free). */
mrt_status mrt_cu_scratch(size_t nbytes, void **ptr, size_t *capacity);
void mrt_cu_scratch_free(void *ptr, size_t capacity);
/* Mixed precision: 0 = fp32 GEMMs, 1 = fp16, 2 = bf16 (fp32 accumulation). */
int mrt_cu_gemm_precision(void);
/* C (m x n, row-major, ldc) = alpha * op(A) op(B) + beta * C on the compute
 * stream; A is m x k (or k x m when ta), B is k x n (or n x k when tb),
 * row-major with leading dimensions lda, ldb; `batch` products with the
 * given element strides. Honours the mixed-precision setting. */
mrt_status mrt_cu_gemm(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, int64_t stride_a,
                       const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                       int64_t ldc, int64_t stride_c, int64_t batch);

/* The same, always with fp32 operands (the front end stays in fp32 under
 * mixed precision). */
mrt_status mrt_cu_gemm_fp32(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, int64_t stride_a,
                            const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                            int64_t ldc, int64_t stride_c, int64_t batch);

static inline unsigned mrt_cu_blocks(int64_t n, int64_t cap = MRT_CU_MAX_BLOCKS)
{
    int64_t b = (n + MRT_CU_THREADS - 1) / MRT_CU_THREADS;
    if (b < 1) b = 1;
    return (unsigned)(b < cap ? b : cap);
}

/* ---- strided operands ------------------------------------------------------------ */
/* Up to three operands walked over one logical shape; element offsets of
 * logical index i are computed in the kernel (strides 0 broadcast). */
struct mrt_cu_iter {
    int ndim;
    int nops;
    int64_t n;
    int64_t shape[MRT_MAX_DIMS];
    int64_t stride[3][MRT_MAX_DIMS];
    int contiguous; /* every operand dense row-major: offset = i */
};

void mrt_cu_iter_init(mrt_cu_iter *it, int ndim, const int64_t *shape);
/* Operand k: t must broadcast to the shape (checked by the caller). */
void mrt_cu_iter_add(mrt_cu_iter *it, const mrt_tensor *t);
/* Merges dimensions that are contiguous for every operand. */
void mrt_cu_iter_finish(mrt_cu_iter *it);

__device__ __forceinline__ void mrt_cu_offsets(const mrt_cu_iter &it, int64_t i, int64_t *off)
{
    if (it.contiguous) {
        for (int k = 0; k < it.nops; k++) off[k] = i;
        return;
    }
    for (int k = 0; k < it.nops; k++) off[k] = 0;
    for (int d = it.ndim - 1; d >= 0; d--) {
        int64_t idx = i % it.shape[d];
        i /= it.shape[d];
        for (int k = 0; k < it.nops; k++) off[k] += idx * it.stride[k][d];
    }
}

/* ---- host helpers ------------------------------------------------------------------ */
static inline float *mrt_cu_f32(const mrt_tensor *t) { return (float *)t->storage->data + t->offset; }
static inline int64_t *mrt_cu_i64(const mrt_tensor *t)
{
    return (int64_t *)t->storage->data + t->offset;
}
/* Arguments arrive checked, and outputs allocated, by the public ops
 * (runtime/nn/nn_args.h): the backend's functions only compute. */

/* ---- the backend's functions, by family (each in its own .cu; the layers in nn_common.h) */
extern "C" {
mrt_status mrt_cu_copy(mrt_tensor *dst, const mrt_tensor *src);
mrt_status mrt_cu_fill(mrt_tensor *t, double value);
mrt_status mrt_cu_fill_range(mrt_tensor *t, double start, double step);
mrt_status mrt_cu_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
mrt_status mrt_cu_binary_scalar(mrt_binop op, const mrt_tensor *a, double s, int scalar_left,
                                mrt_tensor *out);
mrt_status mrt_cu_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out);
mrt_status mrt_cu_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value, int64_t *index);
mrt_status mrt_cu_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                             mrt_tensor *indices);
mrt_status mrt_cu_matmul(const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
void mrt_cu_register_tensor_ops(mrt_backend *b);
void mrt_cu_register_nn_ops(mrt_backend *b);
void mrt_cu_register_optim_ops(mrt_backend *b);
void mrt_cu_register_audio_ops(mrt_backend *b);
}

#endif
