/* Tensor lifecycle and queries. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "machrt/backend.h"

size_t mrt_dtype_size(mrt_dtype dtype) { return dtype == MRT_I64 ? 8 : 4; }
const char *mrt_dtype_name(mrt_dtype dtype) { return dtype == MRT_I64 ? "int64" : "float32"; }
const char *mrt_device_name(mrt_device device) { return device == MRT_CUDA ? "cuda" : "cpu"; }

char *mrt_shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    if (len == 0) return buf;
    if (ndim == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < len; i++) {
        int n = snprintf(buf + used, len - used, i ? "x%" PRId64 : "%" PRId64, shape[i]);
        if (n < 0) break;
        used += (size_t)n;
    }
    return buf;
}

static mrt_status check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > MRT_MAX_DIMS)
        return mrt_fail(MRT_ERR_SHAPE, "%s: %d dimensions (at most %d supported)", op, ndim,
                        MRT_MAX_DIMS);
    /* Strides multiply the non-zero sizes even when some size is 0, so that
     * product is what must not overflow. */
    int64_t n = 1, span = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return mrt_fail(MRT_ERR_SHAPE, "%s: negative size %" PRId64 " in dimension %d", op,
                            shape[i], i + 1);
        if (shape[i] > 0 && span > INT64_MAX / 8 / shape[i])
            return mrt_fail(MRT_ERR_SHAPE, "%s: shape too large", op);
        if (shape[i] > 0) span *= shape[i];
        n *= shape[i];
    }
    *numel = n;
    return MRT_OK;
}

static void set_contiguous_strides(mrt_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i] > 0 ? t->shape[i] : 1;
    }
}

mrt_status mrt_tensor_alloc_uninit(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape)
{
    return mrt_tensor_alloc_on(t, dtype, ndim, shape, MRT_CPU);
}

mrt_status mrt_tensor_alloc_on(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape,
                               mrt_device device)
{
    int64_t n = 0;
    mrt_status st = check_shape("alloc", ndim, shape, &n);
    if (st) return st;
    mrt_storage *s;
    st = mrt_storage_new((size_t)n * mrt_dtype_size(dtype), device, &s);
    if (st) return st;
    memset(t, 0, sizeof *t);
    t->storage = s;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    set_contiguous_strides(t);
    return MRT_OK;
}

mrt_status mrt_tensor_alloc(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape)
{
    mrt_status st = mrt_tensor_alloc_uninit(t, dtype, ndim, shape);
    if (st == MRT_OK && t->storage->nbytes) memset(t->storage->data, 0, t->storage->nbytes);
    return st;
}

mrt_status mrt_tensor_prepare_out(const char *op, mrt_tensor *out, mrt_dtype dtype, int ndim,
                                  const int64_t *shape)
{
    if (!out->storage) return mrt_tensor_alloc_uninit(out, dtype, ndim, shape);
    int same = out->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = out->shape[i] == shape[i];
    if (!same) {
        char x[MRT_SHAPE_STRLEN], y[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: output has shape %s, the result has shape %s", op,
                        mrt_shape_str(out->ndim, out->shape, x, sizeof x),
                        mrt_shape_str(ndim, shape, y, sizeof y));
    }
    if (out->dtype != dtype)
        return mrt_fail(MRT_ERR_DTYPE, "%s: output is %s, the result is %s", op,
                        mrt_dtype_name(out->dtype), mrt_dtype_name(dtype));
    return MRT_OK;
}

void mrt_tensor_release(mrt_tensor *t)
{
    if (t && t->storage) {
        mrt_storage_release(t->storage);
        t->storage = NULL;
    }
}

void mrt_tensor_share(mrt_tensor *dst, const mrt_tensor *src)
{
    *dst = *src;
    mrt_storage_retain(dst->storage);
}

int64_t mrt_tensor_numel(const mrt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int mrt_tensor_is_contiguous(const mrt_tensor *t)
{
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 0) return 1;
        if (t->shape[i] != 1 && t->stride[i] != expected) return 0;
        expected *= t->shape[i];
    }
    return 1;
}

mrt_status mrt_tensor_index_offset(const mrt_tensor *t, int nidx, const int64_t *idx, int64_t *offset)
{
    if (nidx != t->ndim)
        return mrt_fail(MRT_ERR_INDEX, "index: expected %d indices, got %d", t->ndim, nidx);
    int64_t off = t->offset;
    for (int i = 0; i < nidx; i++) {
        if (idx[i] < 0 || idx[i] >= t->shape[i])
            return mrt_fail(MRT_ERR_INDEX,
                            "index: index %" PRId64 " out of range for dimension %d (size %" PRId64 ")",
                            idx[i] + 1, i + 1, t->shape[i]);
        off += idx[i] * t->stride[i];
    }
    *offset = off;
    return MRT_OK;
}

mrt_status mrt_tensor_clone(mrt_tensor *dst, const mrt_tensor *src)
{
    if (!src->storage) return mrt_fail(MRT_ERR_ARG, "clone: tensor has been released");
    mrt_tensor out;
    mrt_status st = mrt_tensor_alloc_on(&out, src->dtype, src->ndim, src->shape,
                                        src->storage->device);
    if (st) return st;
    st = mrt_tensor_copy(&out, src);
    if (st) {
        mrt_tensor_release(&out);
        return st;
    }
    *dst = out;
    return MRT_OK;
}

mrt_status mrt_tensor_contiguous(const mrt_tensor *t, mrt_tensor *out)
{
    if (mrt_tensor_is_contiguous(t)) {
        mrt_tensor_share(out, t);
        return MRT_OK;
    }
    return mrt_tensor_clone(out, t);
}

mrt_status mrt_tensor_reshape(const mrt_tensor *t, int ndim, const int64_t *shape, mrt_tensor *out)
{
    if (mrt_tensor_is_contiguous(t)) return mrt_view_reshape(t, ndim, shape, out);
    mrt_tensor tmp;
    mrt_status st = mrt_tensor_clone(&tmp, t);
    if (st) return st;
    st = mrt_view_reshape(&tmp, ndim, shape, out);
    mrt_tensor_release(&tmp);
    return st;
}
