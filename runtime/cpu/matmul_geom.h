/* Internal: the shapes of a matrix product (numpy's matmul rules), worked
 * out once by mrt_matmul for its check and output, and again by each
 * backend's kernel, which then only computes (runtime/cpu/matmul.c,
 * runtime/cuda/tensor_ops.cu). */
#ifndef MACHRT_MATMUL_GEOM_H
#define MACHRT_MATMUL_GEOM_H

#include "machrt/tensor.h"

typedef struct {
    /* The operands as matrices: a 1-D left operand becomes a row (1 x k,
     * that dimension dropped from the result again), a 1-D right operand
     * a column (k x 1). */
    mrt_tensor a, b;
    int64_t m, k, n;
    int bnd;                        /* broadcast batch dimensions */
    int64_t bshape[MRT_MAX_DIMS];   /* their sizes */
    int64_t batch;                  /* their product */
    int ond;
    int64_t oshape[MRT_MAX_DIMS];   /* the result */
} mrt_matmul_geom;

/* Fills g from float32 operands of at least one dimension each; shapes
 * that do not multiply are an MRT_ERR_SHAPE naming both. */
mrt_status mrt_matmul_geometry(const mrt_tensor *a, const mrt_tensor *b, mrt_matmul_geom *g);

#endif
