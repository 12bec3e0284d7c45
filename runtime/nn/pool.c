/* Pooling: max pooling, global average pooling and GeM pooling, forward and
 * backward, on NCHW float32 tensors of any strides.
 *
 * Every kernel works plane by plane (one (n, c) image channel per work item):
 * planes are independent, so they split across threads with no shared
 * writes, and each plane's sums are taken in a fixed order by one thread, so
 * results do not depend on the thread count. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <omp.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "nn_args.h"
#include "nn_cpu.h"

/* Below this many elements a parallel region costs more than the work. */
#define POOL_PARALLEL_MIN 32768

/* ---- argument checks ------------------------------------------------------ */

static mrt_status need_ndim(const char *op, const char *name, const mrt_tensor *t, int ndim,
                            const char *layout)
{
    if (t->ndim != ndim) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: %s must be %d-d (%s), got shape %s", op, name, ndim,
                        layout, mrt_shape_str(t->ndim, t->shape, a, sizeof a));
    }
    return MRT_OK;
}

static mrt_status fail_shape(const char *op, const char *name, const mrt_tensor *t, int ndim,
                             const int64_t *shape)
{
    char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
    return mrt_fail(MRT_ERR_SHAPE, "%s: %s has shape %s, expected %s", op, name,
                    mrt_shape_str(t->ndim, t->shape, a, sizeof a), mrt_shape_str(ndim, shape, b, sizeof b));
}

static inline const float *plane_f32(const mrt_tensor *t, int64_t n, int64_t c)
{
    return mrt_f32(t) + n * t->stride[0] + c * t->stride[1];
}

static inline float *at2(const mrt_tensor *t, int64_t n, int64_t c)
{
    return mrt_f32(t) + n * t->stride[0] + c * t->stride[1];
}

/* ---- max pooling -------------------------------------------------------- */

static mrt_status check_pool_params(const char *op, const mrt_pool2d_params *p)
{
    if (!p) return mrt_fail(MRT_ERR_ARG, "%s: pooling parameters are required", op);
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0)
        return mrt_fail(MRT_ERR_ARG,
                        "%s: kernel %dx%d and stride %dx%d must be >= 1, padding %dx%d >= 0", op,
                        p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    /* As PyTorch: otherwise a window can lie wholly in the padding and its
     * maximum would be -inf with no input position to point at. */
    if (p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2)
        return mrt_fail(MRT_ERR_ARG,
                        "%s: padding %dx%d must be at most half the kernel size %dx%d", op,
                        p->pad_h, p->pad_w, p->kernel_h, p->kernel_w);
    return MRT_OK;
}

mrt_status mrt_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p, mrt_tensor *y,
                                 mrt_tensor *indices)
{
    static const char *op = "maxpool2d_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, y, indices);
    mrt_status st;
    if ((st = mrt_nn_need(op, "input", x, MRT_F32))) return st;
    if ((st = need_ndim(op, "input", x, 4, "N,C,H,W"))) return st;
    if ((st = check_pool_params(op, p))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t kh = p->kernel_h, kw = p->kernel_w, sh = p->stride_h, sw = p->stride_w;
    const int64_t ph = p->pad_h, pw = p->pad_w;
    if (H + 2 * ph < kh || W + 2 * pw < kw) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: input %s is too small for kernel %" PRId64 "x%" PRId64
                        " with padding %" PRId64 "x%" PRId64,
                        op, mrt_shape_str(x->ndim, x->shape, a, sizeof a), kh, kw, ph, pw);
    }
    const int64_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    if (H * W > INT32_MAX) {
        /* Positions are tracked as int32 inside the kernel (vector width). */
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s has more than 2^31 elements per plane", op,
                        mrt_shape_str(x->ndim, x->shape, a, sizeof a));
    }
    const int64_t oshape[4] = {N, C, OH, OW};
    mrt_nn_out slots[2];
    if ((st = mrt_nn_out_check(op, &slots[0], y, "y", MRT_F32, 4, oshape))) return st;
    if ((st = mrt_nn_out_check(op, &slots[1], indices, "indices", MRT_I64, 4, oshape))) return st;
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    if ((st = mrt_nn_out_alloc(slots, 2, dev))) return st;
    MRT_BACKEND_CALL(st, op, dev, nn, maxpool2d_forward, (x, p, y, indices));
    return mrt_nn_out_discard(slots, 2, st);
}

mrt_status mrt_cpu_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p,
                                     mrt_tensor *y, mrt_tensor *indices)
{
    static const char *op = "maxpool2d_forward";
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t kh = p->kernel_h, kw = p->kernel_w, sh = p->stride_h, sw = p->stride_w;
    const int64_t ph = p->pad_h, pw = p->pad_w;
    const int64_t OH = y->shape[2], OW = y->shape[3];
    const mrt_tensor xv = *x;
    const mrt_tensor yv = *y, iv = indices ? *indices : (mrt_tensor){0};
    const int64_t xsh = xv.stride[2], xsw = xv.stride[3];
    /* Locals: stores through the int64 index pointer could alias the
     * headers, so their strides would be reloaded on every element. */
    const int64_t ys2 = yv.stride[2], ys3 = yv.stride[3];
    const int64_t is2 = indices ? iv.stride[2] : 0, is3 = indices ? iv.stride[3] : 0;
    const int64_t planes = N * C;
    const int par = planes * H * W >= POOL_PARALLEL_MIN;
    /* Per thread: one output row of running maxima (float) and positions
     * (int32: checked below), and the input row split by column phase. */
    const int64_t LW = (W + sw - 1) / sw + 1;
    const int split = !(sw == 1 && xsw == 1);
    const size_t per_thread = (size_t)OW * (sizeof(float) + sizeof(int32_t)) +
                              (split ? (size_t)(H * sw * LW) * sizeof(float) : 0);
    const int nthreads = par ? omp_get_max_threads() : 1;
    char *scratch = malloc((size_t)nthreads * per_thread + 16);
    if (!scratch) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);

    /* A window is scanned in row-major order with PyTorch's rule: strict >
     * keeps the first of equal maxima; NaN is always taken (propagates);
     * padding never wins (start at -inf, position of the first in-window
     * element).
     *
     * Scanning one window is a chain of dependent, data-dependent compares
     * (a mispredicted branch every few elements). Instead a whole output
     * row advances one kernel offset (i, j) at a time: its outputs are
     * independent, and each window still sees its elements in row-major
     * order. For that inner loop to run as vector selects its loads must be
     * contiguous, so unless stride_w is 1 each input row is first split by
     * column phase (once per plane): lin[q][t] = row[q + stride_w * t], and
     * the column ow*stride_w + off of output ow is
     * lin[off mod stride_w][ow + floor(off / stride_w)]. */
#pragma omp parallel if (par)
    {
        const int tid = par ? omp_get_thread_num() : 0;
        char *mine = scratch + (size_t)tid * per_thread;
        float *best = (float *)(void *)mine;
        int32_t *where = (int32_t *)(void *)(mine + (size_t)OW * sizeof(float));
        float *lin = (float *)(void *)(mine + (size_t)OW * (sizeof(float) + sizeof(int32_t)));
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const int64_t n = pl / C, c = pl % C;
            const float *px = plane_f32(&xv, n, c);
            float *py = at2(&yv, n, c);
            int64_t *pi = indices ? mrt_i64(&iv) + n * iv.stride[0] + c * iv.stride[1] : NULL;
            if (split)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t q = 0; q < sw; q++) {
                        const float *src = px + h * xsh + q * xsw;
                        float *dst = lin + (h * sw + q) * LW;
                        for (int64_t t = 0; q + sw * t < W; t++) dst[t] = src[t * sw * xsw];
                    }
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t hs = oh * sh - ph, h0 = hs < 0 ? 0 : hs;
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t ws = ow * sw - pw;
                    best[ow] = -INFINITY;
                    where[ow] = (int32_t)(h0 * W + (ws < 0 ? 0 : ws));
                }
                for (int64_t i = 0; i < kh; i++) {
                    const int64_t h = hs + i;
                    if (h < 0 || h >= H) continue;
                    /* Stride 1 over unit-stride columns: the row as is. */
                    const float *phases = split ? lin + h * sw * LW : px + h * xsh;
                    const int64_t pstride = split ? LW : 0;
                    for (int64_t j = 0; j < kw; j++) {
                        /* Outputs whose column ow*sw + off lies inside. */
                        const int64_t off = j - pw;
                        if (off > W - 1) continue; /* past the right edge for every output */
                        const int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                        int64_t hi = (W - 1 - off) / sw + 1;
                        if (hi > OW) hi = OW;
                        const int64_t q = ((off % sw) + sw) % sw, fl = (off - q) / sw;
                        const float *src = phases + q * pstride; /* column of ow: src[ow + fl] */
                        const int32_t pos0 = (int32_t)(h * W + off), step = (int32_t)sw;
#pragma omp simd
                        for (int64_t ow = lo; ow < hi; ow++) {
                            const float v = src[ow + fl];
                            const int take = (v > best[ow]) | (v != v);
                            best[ow] = take ? v : best[ow];
                            where[ow] = take ? pos0 + (int32_t)ow * step : where[ow];
                        }
                    }
                }
                float *yr = py + oh * ys2;
                for (int64_t ow = 0; ow < OW; ow++) yr[ow * ys3] = best[ow];
                if (pi) {
                    int64_t *ir = pi + oh * is2;
                    for (int64_t ow = 0; ow < OW; ow++) ir[ow * is3] = where[ow];
                }
            }
        }
    }
    free(scratch);
    return MRT_OK;
}

/* The input size H x W of a pooling's backward: from dx when it is
 * allocated (in_h/in_w, when given, must agree: a mismatch means the wrong
 * tensor was passed), else from in_h/in_w. */
static mrt_status backward_input_size(const char *op, const mrt_tensor *dx, int64_t in_h,
                                      int64_t in_w, int64_t *H, int64_t *W)
{
    mrt_status st;
    if (!dx) return mrt_fail(MRT_ERR_ARG, "%s: output dx is required", op);
    *H = in_h;
    *W = in_w;
    if (dx->storage) {
        if ((st = mrt_nn_need(op, "dx", dx, MRT_F32))) return st;
        if ((st = need_ndim(op, "dx", dx, 4, "N,C,H,W"))) return st;
        if ((in_h > 0 && in_h != dx->shape[2]) || (in_w > 0 && in_w != dx->shape[3])) {
            char a[MRT_SHAPE_STRLEN];
            return mrt_fail(MRT_ERR_SHAPE,
                            "%s: dx has shape %s but the input size given is %" PRId64 "x%" PRId64,
                            op, mrt_shape_str(dx->ndim, dx->shape, a, sizeof a), in_h, in_w);
        }
        *H = dx->shape[2];
        *W = dx->shape[3];
    }
    if (*H < 1 || *W < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: input size %" PRId64 "x%" PRId64 " must be positive", op,
                        *H, *W);
    return MRT_OK;
}

mrt_status mrt_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices, int64_t in_h,
                                  int64_t in_w, mrt_tensor *dx)
{
    static const char *op = "maxpool2d_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, dy, indices, dx);
    mrt_status st;
    if ((st = mrt_nn_need(op, "grad_output", dy, MRT_F32))) return st;
    if ((st = need_ndim(op, "grad_output", dy, 4, "N,C,OH,OW"))) return st;
    if ((st = mrt_nn_need(op, "indices", indices, MRT_I64))) return st;
    if (!mrt_nn_same_shape(indices, 4, dy->shape)) return fail_shape(op, "indices", indices, 4, dy->shape);
    const int64_t N = dy->shape[0], C = dy->shape[1];
    int64_t H, W;
    if ((st = backward_input_size(op, dx, in_h, in_w, &H, &W))) return st;
    const int64_t xshape[4] = {N, C, H, W};
    mrt_nn_out slot;
    if ((st = mrt_nn_out_check(op, &slot, dx, "dx", MRT_F32, 4, xshape)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, maxpool2d_backward, (dy, indices, in_h, in_w, dx));
    return mrt_nn_out_discard(&slot, 1, st);
}

/* Indices come from the caller: they are all checked before anything is
 * written, so a bad one is an error rather than a write outside the plane.
 * The check reads the values, so it belongs to the kernels, not to the op;
 * the CUDA kernel calls it on a host copy when its device count finds one. */
mrt_status mrt_maxpool2d_check_indices(const char *op, const mrt_tensor *indices, int64_t H,
                                       int64_t W)
{
    const int64_t C = indices->shape[1], OH = indices->shape[2], OW = indices->shape[3];
    const int64_t planes = indices->shape[0] * C, hw = H * W;
    const mrt_tensor iv = *indices;
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (planes * OH * OW >= POOL_PARALLEL_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t *pi = mrt_i64(&iv) + (pl / C) * iv.stride[0] + (pl % C) * iv.stride[1];
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t k = pi[oh * iv.stride[2] + ow * iv.stride[3]];
                bad += k < 0 || k >= hw;
            }
    }
    for (int64_t flat = 0; bad && flat < planes * OH * OW; flat++) {
        int64_t ow = flat % OW, oh = flat / OW % OH, pl = flat / (OW * OH);
        int64_t k = mrt_i64(&iv)[(pl / C) * iv.stride[0] + (pl % C) * iv.stride[1] +
                                 oh * iv.stride[2] + ow * iv.stride[3]];
        if (k < 0 || k >= hw)
            return mrt_fail(MRT_ERR_INDEX,
                            "%s: index %" PRId64 " at output (%" PRId64 ",%" PRId64 ",%" PRId64
                            ",%" PRId64 ") is outside the %" PRId64 "x%" PRId64 " input plane",
                            op, k, pl / C + 1, pl % C + 1, oh + 1, ow + 1, H, W);
    }
    return MRT_OK;
}

mrt_status mrt_cpu_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices,
                                      int64_t in_h, int64_t in_w, mrt_tensor *dx)
{
    static const char *op = "maxpool2d_backward";
    (void)in_h, (void)in_w; /* dx, allocated, has the input size */
    const int64_t N = dy->shape[0], C = dy->shape[1], OH = dy->shape[2], OW = dy->shape[3];
    const int64_t H = dx->shape[2], W = dx->shape[3];
    const int64_t planes = N * C, hw = H * W;
    const mrt_tensor iv = *indices, gv = *dy;

    mrt_status st = mrt_maxpool2d_check_indices(op, indices, H, W);
    if (st) return st;
    const mrt_tensor dv = *dx;
    const int64_t dsh = dv.stride[2], dsw = dv.stride[3];
    const int contiguous_plane = (dsw == 1 || W == 1) && (dsh == W || H == 1);

#pragma omp parallel for schedule(static) if (planes * hw >= POOL_PARALLEL_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / C, c = pl % C;
        float *pd = at2(&dv, n, c);
        const float *pg = plane_f32(&gv, n, c);
        const int64_t *pi = mrt_i64(&iv) + n * iv.stride[0] + c * iv.stride[1];
        if (contiguous_plane) {
            for (int64_t k = 0; k < hw; k++) pd[k] = 0.0f;
        } else {
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) pd[h * dsh + w * dsw] = 0.0f;
        }
        /* Overlapping windows (stride < kernel) send several gradients to
         * one input: they add, in output order. */
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t k = pi[oh * iv.stride[2] + ow * iv.stride[3]];
                float g = pg[oh * gv.stride[2] + ow * gv.stride[3]];
                if (contiguous_plane) pd[k] += g;
                else pd[(k / W) * dsh + (k % W) * dsw] += g;
            }
    }
    return MRT_OK;
}

/* ---- global average pooling ------------------------------------------------ */

/* Sum of a plane in double, in a fixed order. */
static double plane_sum(const float *p, int64_t H, int64_t W, int64_t sh, int64_t sw)
{
    double acc[8] = {0};
    if ((sw == 1 || W == 1) && (sh == W || H == 1)) {
        const int64_t n = H * W;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) acc[j] += (double)p[i + j];
        for (; i < n; i++) acc[0] += (double)p[i];
    } else {
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) acc[0] += (double)p[h * sh + w * sw];
    }
    double s = 0.0;
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

static mrt_status check_pool_input(const char *op, const mrt_tensor *x)
{
    mrt_status st;
    if ((st = mrt_nn_need(op, "input", x, MRT_F32))) return st;
    if ((st = need_ndim(op, "input", x, 4, "N,C,H,W"))) return st;
    if (x->shape[2] < 1 || x->shape[3] < 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s has an empty plane, nothing to pool", op,
                        mrt_shape_str(x->ndim, x->shape, a, sizeof a));
    }
    return MRT_OK;
}

/* Checks y (N,C) for the forward passes of the global poolings. */
static mrt_status check_pooled_out(const char *op, const mrt_tensor *x, mrt_tensor *y,
                                   mrt_nn_out *slot)
{
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t oshape[2] = {x->shape[0], x->shape[1]};
    return mrt_nn_out_check(op, slot, y, "y", MRT_F32, 2, oshape);
}

mrt_status mrt_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y)
{
    static const char *op = "avgpool_global_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, y);
    mrt_nn_out slot;
    mrt_status st;
    if ((st = check_pool_input(op, x)) || (st = check_pooled_out(op, x, y, &slot)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, avgpool_global_forward, (x, y));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const mrt_tensor xv = *x, yv = *y;
    const int64_t planes = N * C;
    const double inv = 1.0 / (double)(H * W);
#pragma omp parallel for schedule(static) if (planes * H * W >= POOL_PARALLEL_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / C, c = pl % C;
        double s = plane_sum(plane_f32(&xv, n, c), H, W, xv.stride[2], xv.stride[3]);
        *at2(&yv, n, c) = (float)(s * inv);
    }
    return MRT_OK;
}

/* Checks dy (N,C) and dx (N,C,H,W, its H and W from dx when allocated,
 * else from in_h/in_w) for the backward passes of the global poolings. */
static mrt_status check_global_backward(const char *op, const mrt_tensor *dy, int64_t in_h,
                                        int64_t in_w, mrt_tensor *dx, mrt_nn_out *slot)
{
    mrt_status st;
    if ((st = mrt_nn_need(op, "grad_output", dy, MRT_F32))) return st;
    if ((st = need_ndim(op, "grad_output", dy, 2, "N,C"))) return st;
    int64_t H, W;
    if ((st = backward_input_size(op, dx, in_h, in_w, &H, &W))) return st;
    const int64_t xshape[4] = {dy->shape[0], dy->shape[1], H, W};
    return mrt_nn_out_check(op, slot, dx, "dx", MRT_F32, 4, xshape);
}

mrt_status mrt_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                       mrt_tensor *dx)
{
    static const char *op = "avgpool_global_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, dy, dx);
    mrt_nn_out slot;
    mrt_status st;
    if ((st = check_global_backward(op, dy, in_h, in_w, dx, &slot)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, avgpool_global_backward, (dy, in_h, in_w, dx));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                           mrt_tensor *dx)
{
    (void)in_h, (void)in_w; /* dx, allocated, has the input size */
    const mrt_tensor gv = *dy, dv = *dx;
    const int64_t N = dv.shape[0], C = dv.shape[1], H = dv.shape[2], W = dv.shape[3];
    const int64_t planes = N * C;
    const double inv = 1.0 / (double)(H * W);
#pragma omp parallel for schedule(static) if (planes * H * W >= POOL_PARALLEL_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / C, c = pl % C;
        const float g = (float)((double)*plane_f32(&gv, n, c) * inv);
        float *pd = at2(&dv, n, c);
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) pd[h * dv.stride[2] + w * dv.stride[3]] = g;
    }
    return MRT_OK;
}

/* ---- GeM pooling --------------------------------------------------------
 * y = m^(1/p) with m = mean(c^p), c = max(x, eps). In double throughout: the
 * head is small (N*C*H*W is about 1M for ResNet34 on 10 s clips) and dp is a
 * difference of two terms that cancel when a plane is nearly constant. */

static mrt_status check_gem_p(const char *op, const mrt_tensor *p, double eps, double *pv)
{
    mrt_status st;
    if ((st = mrt_nn_need(op, "p", p, MRT_F32))) return st;
    if (mrt_tensor_numel(p) != 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: p must hold one element, got shape %s", op,
                        mrt_shape_str(p->ndim, p->shape, a, sizeof a));
    }
    /* Read through the backend: p may live on the device. */
    float v;
    if ((st = mrt_tensor_read_elem(p, p->offset, &v))) return st;
    *pv = (double)v;
    if (!isfinite(*pv) || *pv == 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: p must be finite and non-zero, got %g", op, *pv);
    /* eps > 0 keeps log(c) (for dp) and c^(p-1) finite. */
    if (!isfinite(eps) || eps <= 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: eps must be finite and > 0, got %g", op, eps);
    return MRT_OK;
}

/* Sum over the plane of c^p. */
static double gem_plane_sum(const float *px, int64_t H, int64_t W, int64_t sh, int64_t sw,
                            double p, double eps)
{
    double s = 0.0;
    for (int64_t h = 0; h < H; h++)
        for (int64_t w = 0; w < W; w++) {
            double v = (double)px[h * sh + w * sw];
            s += pow(v < eps ? eps : v, p); /* NaN stays NaN, as torch.clamp */
        }
    return s;
}

mrt_status mrt_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps, mrt_tensor *y)
{
    static const char *op = "gem_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, p, y);
    mrt_nn_out slot;
    mrt_status st;
    double pv;
    if ((st = check_pool_input(op, x)) || (st = check_gem_p(op, p, eps, &pv)) ||
        (st = check_pooled_out(op, x, y, &slot)) || (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, gem_forward, (x, p, eps, y));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps, mrt_tensor *y)
{
    const double pv = (double)*mrt_f32(p);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const mrt_tensor xv = *x, yv = *y;
    const int64_t planes = N * C;
    const double inv = 1.0 / (double)(H * W);
    /* pow costs far more than a load: parallel even for small heads. */
#pragma omp parallel for schedule(static) if (planes * H * W >= POOL_PARALLEL_MIN / 16)
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / C, c = pl % C;
        double s = gem_plane_sum(plane_f32(&xv, n, c), H, W, xv.stride[2], xv.stride[3], pv, eps);
        *at2(&yv, n, c) = (float)pow(s * inv, 1.0 / pv);
    }
    return MRT_OK;
}

/* With S1 = sum c^p, S2 = sum c^p log c, m = S1 / HW and y = m^(1/p):
 *   dy/dx_i = y / S1 * c_i^(p-1)            where x_i >= eps, else 0
 *                                           (clamp passes the gradient at
 *                                           x == eps, as torch.clamp)
 *   dy/dp   = y * (S2 / (p S1) - log(m) / p^2).
 * y is recomputed from x in double rather than read from the float32 y of
 * the forward pass: the pass over x is needed for S2 anyway, and dp then
 * does not inherit y's rounding. The y argument is checked for shape only. */
mrt_status mrt_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                            const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                            mrt_tensor *dp)
{
    static const char *op = "gem_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, p, y, dy, dx, dp);
    mrt_status st;
    double pv;
    if ((st = check_pool_input(op, x))) return st;
    if ((st = check_gem_p(op, p, eps, &pv))) return st;
    const int64_t N = x->shape[0], C = x->shape[1];
    const int64_t oshape[2] = {N, C};
    if ((st = mrt_nn_need(op, "y", y, MRT_F32))) return st;
    if (!mrt_nn_same_shape(y, 2, oshape)) return fail_shape(op, "y", y, 2, oshape);
    if ((st = mrt_nn_need(op, "grad_output", dy, MRT_F32))) return st;
    if (!mrt_nn_same_shape(dy, 2, oshape)) return fail_shape(op, "grad_output", dy, 2, oshape);
    if (dp) {
        if ((st = mrt_nn_need(op, "dp", dp, MRT_F32))) return st;
        if (mrt_tensor_numel(dp) != 1) return fail_shape(op, "dp", dp, p->ndim, p->shape);
    }
    mrt_nn_out slot;
    if ((st = mrt_nn_out_check(op, &slot, dx, "dx", MRT_F32, 4, x->shape)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, gem_backward, (x, p, eps, y, dy, dx, dp));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                                mrt_tensor *dp)
{
    static const char *op = "gem_backward";
    (void)y; /* shape-checked only: the mean is recomputed from x */
    const double pv = (double)*mrt_f32(p);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const mrt_tensor xv = *x, gv = *dy;
    const int64_t planes = N * C;
    double *dp_part = NULL;
    if (dp && !(dp_part = malloc((size_t)planes * sizeof *dp_part + 1)))
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    const mrt_tensor dv = dx ? *dx : (mrt_tensor){0};
    const double inv = 1.0 / (double)(H * W);
    const int64_t hw = H * W;
    const int par = planes * hw >= POOL_PARALLEL_MIN / 16;
#pragma omp parallel if (par)
    {
        /* c^p of the plane, kept from the sums for dx: c^(p-1) = c^p / c
         * then costs a division instead of another pow. In double, as the
         * sums: c^(p-1) alone can underflow float where the product with
         * the (then large) scale is an ordinary number. */
        double *cp = dx ? malloc((size_t)hw * sizeof *cp) : NULL; /* NULL: pow below */
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const int64_t n = pl / C, c = pl % C;
            const float *px = plane_f32(&xv, n, c);
            const int64_t xsh = xv.stride[2], xsw = xv.stride[3];
            const double g = (double)*plane_f32(&gv, n, c);
            double s1 = 0.0, s2 = 0.0;
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    const double v = (double)px[h * xsh + w * xsw];
                    const double cl = v < eps ? eps : v; /* NaN stays NaN */
                    const double e = pow(cl, pv);
                    s1 += e;
                    if (dp) s2 += e * log(cl);
                    if (cp) cp[h * W + w] = e;
                }
            const double m = s1 * inv, yy = pow(m, 1.0 / pv);
            if (dp) dp_part[pl] = g * yy * (s2 / (pv * s1) - log(m) / (pv * pv));
            if (!dx) continue;
            const double scale = g * yy / s1;
            float *pd = at2(&dv, n, c);
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    /* Read x before writing dx: dx may be x. */
                    const double v = (double)px[h * xsh + w * xsw];
                    float grad = 0.0f;
                    if (v >= eps) grad = cp ? (float)(scale * cp[h * W + w] / v)
                                            : (float)(scale * pow(v, pv - 1.0));
                    pd[h * dv.stride[2] + w * dv.stride[3]] = grad;
                }
        }
        free(cp);
    }
    if (dp) {
        double s = 0.0;
        for (int64_t pl = 0; pl < planes; pl++) s += dp_part[pl];
        *mrt_f32(dp) += (float)s;
        free(dp_part);
    }
    return MRT_OK;
}
