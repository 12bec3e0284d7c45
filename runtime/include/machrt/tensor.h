/* The machrt tensor core: Lua-free, float32 (and int64) N-d strided tensors.
 *
 * Conventions (Torch7 TH style):
 *  - An mrt_tensor is a small value type (shape, strides, offset) holding one
 *    reference to a refcounted, device-tagged mrt_storage. Views share the
 *    storage. Strides and offsets count elements, not bytes.
 *  - Dimensions are 0-based in C; the Lua binding converts from 1-based.
 *  - Output tensors are caller-owned: pass an empty tensor (storage == NULL,
 *    e.g. `mrt_tensor y = {0};`) and the op allocates it with the right
 *    shape; pass an allocated one and the op checks its shape and writes
 *    into it (so `out == a` gives an in-place op).
 *  - Every fallible call returns mrt_status and records a message naming the
 *    operation and the shapes involved (see status.h). Messages number
 *    dimensions and indices from 1, as the Lua user sees them.
 */
#ifndef MACHRT_TENSOR_H
#define MACHRT_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "machrt/status.h"

#define MRT_MAX_DIMS 8

typedef enum { MRT_F32 = 0, MRT_I64 = 1 } mrt_dtype;
typedef enum { MRT_CPU = 0, MRT_CUDA = 1 } mrt_device;

typedef struct mrt_storage {
    void *data;
    size_t nbytes;
    size_t capacity; /* bytes actually reserved (size class of the cache) */
    int refcount;
    mrt_device device;
    void *ready; /* device storage: event of an asynchronous copy into it that the compute
                    stream has not waited for yet (see mrt_tensor_to_async in backend.h) */
} mrt_storage;

typedef struct mrt_tensor {
    mrt_storage *storage; /* NULL = empty (not yet allocated) */
    int64_t offset;       /* in elements */
    int ndim;             /* 0 = scalar (one element) */
    mrt_dtype dtype;
    int64_t shape[MRT_MAX_DIMS];
    int64_t stride[MRT_MAX_DIMS];
} mrt_tensor;

/* ---- storage ---------------------------------------------------------- */
mrt_status mrt_storage_new(size_t nbytes, mrt_device device, mrt_storage **out);
void mrt_storage_retain(mrt_storage *s);
void mrt_storage_release(mrt_storage *s);
/* The storage allocator keeps released large blocks for reuse (see
 * storage.c). live = bytes held by storages, cached = free bytes kept. */
void mrt_storage_stats(size_t *live, size_t *cached);
void mrt_storage_empty_cache(void);
void mrt_storage_set_cache_limit(size_t bytes);

/* ---- lifecycle -------------------------------------------------------- */
/* Allocates a contiguous, zero-filled tensor. `t` must be empty. */
mrt_status mrt_tensor_alloc(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape);
/* Same, contents left undefined: for outputs that are written in full. */
mrt_status mrt_tensor_alloc_uninit(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape);
/* The output convention of every op: allocates `out` (uninitialised) when
 * it is empty, otherwise checks that its shape and dtype are the result's,
 * with a message naming `op`. */
mrt_status mrt_tensor_prepare_out(const char *op, mrt_tensor *out, mrt_dtype dtype, int ndim,
                                  const int64_t *shape);
/* Drops the storage reference; idempotent (safe to call twice). */
void mrt_tensor_release(mrt_tensor *t);
/* Makes `dst` another reference to `src` (same view). `dst` must be empty. */
void mrt_tensor_share(mrt_tensor *dst, const mrt_tensor *src);
/* `dst` must be empty: makes a contiguous copy of `src`. */
mrt_status mrt_tensor_clone(mrt_tensor *dst, const mrt_tensor *src);

/* ---- queries ---------------------------------------------------------- */
int64_t mrt_tensor_numel(const mrt_tensor *t);
int mrt_tensor_is_contiguous(const mrt_tensor *t);
size_t mrt_dtype_size(mrt_dtype dtype);
const char *mrt_dtype_name(mrt_dtype dtype);      /* "float32", "int64" */
const char *mrt_device_name(mrt_device device);   /* "cpu", "cuda" */
static inline float *mrt_f32(const mrt_tensor *t) { return (float *)t->storage->data + t->offset; }
static inline int64_t *mrt_i64(const mrt_tensor *t) { return (int64_t *)t->storage->data + t->offset; }
/* Writes "2x3x4" (or "scalar") into buf; returns buf. */
char *mrt_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);
#define MRT_SHAPE_STRLEN 128
/* Element offset (in elements, including t->offset) of a 0-based index. */
mrt_status mrt_tensor_index_offset(const mrt_tensor *t, int nidx, const int64_t *idx, int64_t *offset);

/* ---- views (share storage; `out` must be empty) ------------------------ */
mrt_status mrt_view_reshape(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out);
mrt_status mrt_view_transpose(const mrt_tensor *t, int a, int b, mrt_tensor *out);
mrt_status mrt_view_permute(const mrt_tensor *t, const int *order, mrt_tensor *out);
mrt_status mrt_view_narrow(const mrt_tensor *t, int dim, int64_t start, int64_t len, mrt_tensor *out);
mrt_status mrt_view_select(const mrt_tensor *t, int dim, int64_t index, mrt_tensor *out);
mrt_status mrt_view_expand(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out);
/* reshape: a view when `t` is contiguous, otherwise a contiguous copy. */
mrt_status mrt_tensor_reshape(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out);
/* `out` must be empty: a view of `t` if contiguous, else a contiguous copy. */
mrt_status mrt_tensor_contiguous(const mrt_tensor *t, mrt_tensor *out);

/* ---- data movement ---------------------------------------------------- */
/* Copies src into dst; src must broadcast to dst's shape; converts dtype. */
mrt_status mrt_tensor_copy(mrt_tensor *dst, const mrt_tensor *src);
mrt_status mrt_tensor_fill(mrt_tensor *t, double value);
/* Fills with start, start+step, ... */
mrt_status mrt_tensor_fill_range(mrt_tensor *t, double start, double step);

/* ---- elementwise (float32) ------------------------------------------- */
typedef enum { MRT_ADD, MRT_SUB, MRT_MUL, MRT_DIV, MRT_POW, MRT_MAXIMUM, MRT_MINIMUM } mrt_binop;
typedef enum {
    MRT_NEG, MRT_EXP, MRT_LOG, MRT_SIGMOID, MRT_RELU, MRT_ABS, MRT_SQRT, MRT_TANH
} mrt_unop;
const char *mrt_binop_name(mrt_binop op);
const char *mrt_unop_name(mrt_unop op);

/* Broadcast shape of a and b (numpy rules), or a shape error naming `opname`. */
mrt_status mrt_broadcast_shape(const char *opname, const mrt_tensor *a, const mrt_tensor *b,
                               int *ndim, int64_t *shape);
/* out = a op b, with broadcasting. */
mrt_status mrt_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
/* out = a op s (scalar_left = 0) or s op a (scalar_left = 1). */
mrt_status mrt_binary_scalar(mrt_binop op, const mrt_tensor *a, double s, int scalar_left, mrt_tensor *out);
mrt_status mrt_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out);

/* ---- reductions (float32) --------------------------------------------- */
typedef enum { MRT_SUM, MRT_MEAN, MRT_MAX, MRT_MIN, MRT_ARGMAX, MRT_ARGMIN } mrt_reduceop;
const char *mrt_reduceop_name(mrt_reduceop op);
/* Whole tensor: value (double accumulation); for ARG* ops `value` is the
 * extreme value and `*index` its 0-based flat (row-major) index. */
mrt_status mrt_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value, int64_t *index);
/* Along `dim` (removed from the result). `values` gets float32 results
 * (for ARG* the extreme values); `indices`, when non-NULL, gets int64
 * 0-based positions (required for ARG* ops). Both follow the output
 * convention (allocated when empty, checked when not). */
mrt_status mrt_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                          mrt_tensor *indices);

/* ---- linear algebra --------------------------------------------------- */
/* 2-D: (m,k) x (k,n) -> (m,n). N-D: batched over leading dims, which
 * broadcast; a 1-D operand is treated as a row (left) or column (right)
 * vector and that dimension is dropped from the result, as numpy does. */
mrt_status mrt_matmul(const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);

/* ---- threads ---------------------------------------------------------- */
void mrt_set_num_threads(int n);
int mrt_get_num_threads(void);

#endif
