/* Internal: the one CPU GEMM (gemm.c). Every matrix product of the CPU
 * kernels (convolutions, linear layers, matmul) goes through mrt_cpu_gemm,
 * which picks the implementation: OpenBLAS or oneDNN in fp32, oneDNN in
 * bf16 (operands rounded to bf16, fp32 accumulation and output) when the
 * GEMM precision is bf16. */
#ifndef MACHRT_CPU_GEMM_H
#define MACHRT_CPU_GEMM_H

#include <stdint.h>
#include <cblas.h>

typedef enum {
    MRT_GEMM_AUTO = 0, /* by the precision and the shape */
    MRT_GEMM_OPENBLAS,
    MRT_GEMM_ONEDNN_F32,
    MRT_GEMM_ONEDNN_BF16,
} mrt_gemm_impl;

/* C = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm(CblasRowMajor, ...). */
void mrt_cpu_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* The same through one implementation (tests and benchmarks). */
void mrt_cpu_gemm_with(mrt_gemm_impl impl, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n,
                       int k, float alpha, const float *a, int lda, const float *b, int ldb,
                       float beta, float *c, int ldc);

/* bf16 GEMMs on or off; on only where the CPU has avx512_bf16 or AMX:
 * returns 0 (and stays fp32) otherwise. */
int mrt_cpu_gemm_set_bf16(int on);
int mrt_cpu_gemm_bf16(void);
/* Whether this CPU can run bf16 GEMMs. */
int mrt_cpu_gemm_bf16_supported(void);

/* x rounded to the nearest bf16 (ties to even), as a float. */
float mrt_bf16_round(float x);

#endif
