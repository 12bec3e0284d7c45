/* Views: new shape/stride/offset over the same storage (no data copied). */
#include <inttypes.h>
#include <string.h>
#include "machrt/tensor.h"

#define SHAPE(t, buf) mrt_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

static mrt_status check_dim(const char *op, const mrt_tensor *t, int dim)
{
    if (dim < 0 || dim >= t->ndim)
        return mrt_fail(MRT_ERR_INDEX, "%s: dimension %d out of range for a %d-d tensor", op,
                        dim + 1, t->ndim);
    return MRT_OK;
}

mrt_status mrt_view_reshape(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out)
{
    char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
    if (ndim < 0 || ndim > MRT_MAX_DIMS)
        return mrt_fail(MRT_ERR_SHAPE, "reshape: %d dimensions (at most %d)", ndim, MRT_MAX_DIMS);
    int64_t resolved[MRT_MAX_DIMS];
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        resolved[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return mrt_fail(MRT_ERR_SHAPE, "reshape: only one dimension can be -1");
            infer = i;
        } else if (shape[i] < 0) {
            return mrt_fail(MRT_ERR_SHAPE, "reshape: invalid size %" PRId64, shape[i]);
        } else {
            known *= shape[i];
        }
    }
    int64_t n = mrt_tensor_numel(t);
    if (infer >= 0) {
        if (known == 0 || n % known != 0)
            return mrt_fail(MRT_ERR_SHAPE, "reshape: cannot infer -1 to reshape %s (%" PRId64
                            " elements) into %s", SHAPE(t, a), n,
                            mrt_shape_str(ndim, shape, b, sizeof b));
        resolved[infer] = n / known;
        known = n;
    }
    if (known != n)
        return mrt_fail(MRT_ERR_SHAPE, "reshape: cannot reshape %s (%" PRId64 " elements) into %s (%"
                        PRId64 " elements)", SHAPE(t, a), n, mrt_shape_str(ndim, shape, b, sizeof b),
                        known);
    if (!mrt_tensor_is_contiguous(t))
        return mrt_fail(MRT_ERR_SHAPE, "reshape: a view needs a contiguous tensor (got %s with "
                        "strides that do not fit); use contiguous() first", SHAPE(t, a));
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    v.ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        v.shape[i] = resolved[i];
        v.stride[i] = s;
        s *= resolved[i] > 0 ? resolved[i] : 1;
    }
    *out = v;
    return MRT_OK;
}

mrt_status mrt_view_transpose(const mrt_tensor *t, int a, int b, mrt_tensor *out)
{
    mrt_status st = check_dim("transpose", t, a);
    if (!st) st = check_dim("transpose", t, b);
    if (st) return st;
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    v.shape[a] = t->shape[b];
    v.shape[b] = t->shape[a];
    v.stride[a] = t->stride[b];
    v.stride[b] = t->stride[a];
    *out = v;
    return MRT_OK;
}

mrt_status mrt_view_permute(const mrt_tensor *t, const int *order, mrt_tensor *out)
{
    int seen[MRT_MAX_DIMS] = {0};
    for (int i = 0; i < t->ndim; i++) {
        if (order[i] < 0 || order[i] >= t->ndim || seen[order[i]]++)
            return mrt_fail(MRT_ERR_INDEX, "permute: order is not a permutation of 1..%d "
                            "(entry %d is %d)", t->ndim, i + 1, order[i] + 1);
    }
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    for (int i = 0; i < t->ndim; i++) {
        v.shape[i] = t->shape[order[i]];
        v.stride[i] = t->stride[order[i]];
    }
    *out = v;
    return MRT_OK;
}

mrt_status mrt_view_narrow(const mrt_tensor *t, int dim, int64_t start, int64_t len, mrt_tensor *out)
{
    mrt_status st = check_dim("narrow", t, dim);
    if (st) return st;
    /* len > size - start, not start + len > size: the sum can overflow. */
    if (start < 0 || len < 0 || start > t->shape[dim] || len > t->shape[dim] - start)
        return mrt_fail(MRT_ERR_INDEX, "narrow: start %" PRId64 " with length %" PRId64
                        " does not fit dimension %d (size %" PRId64 ")",
                        start + 1, len, dim + 1, t->shape[dim]);
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    v.shape[dim] = len;
    v.offset += start * t->stride[dim];
    *out = v;
    return MRT_OK;
}

mrt_status mrt_view_select(const mrt_tensor *t, int dim, int64_t index, mrt_tensor *out)
{
    mrt_status st = check_dim("select", t, dim);
    if (st) return st;
    if (index < 0 || index >= t->shape[dim])
        return mrt_fail(MRT_ERR_INDEX, "select: index %" PRId64 " out of range for dimension %d "
                        "(size %" PRId64 ")", index + 1, dim + 1, t->shape[dim]);
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    v.offset += index * t->stride[dim];
    for (int i = dim; i + 1 < t->ndim; i++) {
        v.shape[i] = t->shape[i + 1];
        v.stride[i] = t->stride[i + 1];
    }
    v.ndim = t->ndim - 1;
    *out = v;
    return MRT_OK;
}

mrt_status mrt_view_expand(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out)
{
    char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
    if (ndim < t->ndim || ndim > MRT_MAX_DIMS)
        return mrt_fail(MRT_ERR_SHAPE, "expand: cannot expand %s to %s", SHAPE(t, a),
                        mrt_shape_str(ndim, shape, b, sizeof b));
    mrt_tensor v;
    mrt_tensor_share(&v, t);
    v.ndim = ndim;
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t want = shape[i];
        if (i < lead) {
            if (want < 0) {
                mrt_tensor_release(&v);
                return mrt_fail(MRT_ERR_SHAPE, "expand: cannot expand %s to %s (new dimension %d "
                                "has size %" PRId64 ")", SHAPE(t, a),
                                mrt_shape_str(ndim, shape, b, sizeof b), i + 1, want);
            }
            v.shape[i] = want;
            v.stride[i] = 0;
            continue;
        }
        int64_t have = t->shape[i - lead];
        if (want == -1) want = have;
        if (have == want) {
            v.shape[i] = have;
            v.stride[i] = t->stride[i - lead];
        } else if (have == 1 && want >= 0) {
            v.shape[i] = want;
            v.stride[i] = 0;
        } else {
            mrt_tensor_release(&v);
            return mrt_fail(MRT_ERR_SHAPE, "expand: cannot expand %s to %s (dimension %d has size "
                            "%" PRId64 ", not 1)", SHAPE(t, a),
                            mrt_shape_str(ndim, shape, b, sizeof b), i + 1, have);
        }
    }
    /* Stride 0 costs no memory, but every op counts the elements
     * (mrt_tensor_numel): that count must not overflow. */
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (v.shape[i] > 0 && n > INT64_MAX / v.shape[i]) {
            mrt_tensor_release(&v);
            return mrt_fail(MRT_ERR_SHAPE, "expand: cannot expand %s to %s (more elements than "
                            "an int64 counts)", SHAPE(t, a), mrt_shape_str(ndim, shape, b, sizeof b));
        }
        if (v.shape[i] > 0) n *= v.shape[i];
    }
    *out = v;
    return MRT_OK;
}
