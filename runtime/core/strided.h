/* Internal: walking up to three strided operands over one (broadcast) shape.
 *
 * Every elementwise op (arithmetic, unary, copy, fill, RNG fills) goes
 * through this one walker, so strides, broadcasting and parallel splitting
 * live in one place. The walker collapses dimensions that are contiguous for
 * every operand, so a contiguous op becomes a single long row handed to the
 * kernel with unit strides (and vectorises), while views still work. */
#ifndef MACHRT_STRIDED_H
#define MACHRT_STRIDED_H

#include <stdint.h>
#include "machrt/tensor.h"

#define MRT_ITER_MAX_OPS 3
/* Below this many elements an op runs on one thread: a parallel region's
 * start-up costs more than the work. */
#define MRT_PARALLEL_MIN 32768

typedef struct mrt_iter {
    int ndim;
    int nops;
    int64_t shape[MRT_MAX_DIMS];
    int64_t stride[MRT_ITER_MAX_OPS][MRT_MAX_DIMS]; /* elements; 0 = broadcast */
    char *base[MRT_ITER_MAX_OPS];
    size_t elsize[MRT_ITER_MAX_OPS];
} mrt_iter;

/* A row of `n` elements: ptr[k] points at operand k's first element, whose
 * successive elements are stride[k] elements apart. `start` is the row-major
 * logical index of the row's first element in the whole shape (for kernels
 * that depend on position, like counter-based RNG). */
typedef void (*mrt_row_fn)(void *ctx, char **ptr, const int64_t *stride, int64_t n, int64_t start);

/* Operand 0 is usually the output. Each operand must broadcast to `shape`
 * (callers check shapes first). `t` may be NULL for a pointer operand added
 * with mrt_iter_add_scalar. */
void mrt_iter_init(mrt_iter *it, int ndim, const int64_t *shape);
void mrt_iter_add(mrt_iter *it, const mrt_tensor *t);
/* A single value broadcast to every element (stride 0). */
void mrt_iter_add_scalar(mrt_iter *it, const void *value, size_t elsize);
/* Runs fn over every element, split across threads when large. Each row
 * gets its logical `start` exactly: collapsing dimensions preserves
 * row-major order. */
void mrt_iter_run(mrt_iter *it, mrt_row_fn fn, void *ctx);

#endif
