/* Pooling on the device, with the semantics of runtime/nn/pool.c: max
 * pooling (indices of the first maximum, gradients scattered back),
 * global average pooling and GeM pooling (in double, per plane). Arguments
 * arrive checked by the ops in runtime/nn/pool.c, outputs allocated (see
 * nn_common.h). */
#include "nn_common.h"

extern "C" {
#include "../nn/nn_cpu.h" /* mrt_maxpool2d_check_indices */
}

#include <math.h>

struct pool_geom {
    int64_t H, W, OH, OW, kh, kw, sh, sw, ph, pw;
};

/* One thread per output; window in row-major order, strict > keeps the
 * first maximum, NaN is taken (propagates); padding never wins. */
__global__ void k_maxpool(pool_geom g, int64_t planes, const float *x, float *y, int64_t *idx)
{
    GRID_STRIDE(e, planes * g.OH * g.OW)
    {
        const int64_t ow = e % g.OW, oh = (e / g.OW) % g.OH, pl = e / (g.OW * g.OH);
        const float *px = x + pl * g.H * g.W;
        const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
        const int64_t h0 = hs < 0 ? 0 : hs, w0 = ws < 0 ? 0 : ws;
        const int64_t h1 = hs + g.kh < g.H ? hs + g.kh : g.H, w1 = ws + g.kw < g.W ? ws + g.kw : g.W;
        float best = -INFINITY;
        int64_t where = h0 * g.W + w0;
        bool nan = false;
        for (int64_t h = h0; h < h1 && !nan; h++)
            for (int64_t w = w0; w < w1; w++) {
                const float v = px[h * g.W + w];
                if (v != v) {
                    best = v;
                    where = h * g.W + w;
                    nan = true;
                    break;
                }
                if (v > best) {
                    best = v;
                    where = h * g.W + w;
                }
            }
        y[e] = best;
        if (idx) idx[e] = where;
    }
}

/* dx[plane][idx] += dy: dx is zeroed first. Overlapping windows that chose
 * the same input add their gradients atomically (at most
 * ceil(k/s)^2 terms, in an unspecified order). Indices come from the
 * caller: one outside the plane is counted, never written through. */
__global__ void k_maxpool_scatter(int64_t total, int64_t per_out, int64_t per_in, const float *dy,
                                  const int64_t *idx, float *dx, unsigned *outside)
{
    GRID_STRIDE(e, total)
    {
        const int64_t k = idx[e];
        if (k < 0 || k >= per_in) atomicAdd(outside, 1u);
        else atomicAdd(&dx[(e / per_out) * per_in + k], dy[e]);
    }
}

/* After a scatter that found indices outside the plane: the CPU kernels'
 * error, naming the first one, from a host copy of the indices. */
static mrt_status outside_plane(const char *op, const mrt_tensor *indices, int64_t H, int64_t W)
{
    mrt_tensor host = {};
    mrt_status st = mrt_tensor_to(indices, MRT_CPU, &host);
    if (!st) st = mrt_maxpool2d_check_indices(op, &host, H, W);
    mrt_tensor_release(&host);
    return st;
}

extern "C" mrt_status mrt_cu_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p,
                                               mrt_tensor *y, mrt_tensor *indices)
{
    static const char op[] = "maxpool2d_forward";
    mrt_status st;
    const pool_geom g = {x->shape[2], x->shape[3], y->shape[2],  y->shape[3], p->kernel_h,
                         p->kernel_w, p->stride_h,  p->stride_w,  p->pad_h,    p->pad_w};
    const int64_t planes = x->shape[0] * x->shape[1];
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[1] = {x};
    out_target ty;
    if ((st = target_open(y, ins, 1, 0, &ty))) return st;
    /* Strided indices are written aside and copied in. */
    mrt_tensor ix = {};
    int own_ix = 0;
    if (indices) {
        if (mrt_tensor_is_contiguous(indices)) ix = *indices;
        else if ((st = mrt_tensor_alloc_on(&ix, MRT_I64, 4, indices->shape, MRT_CUDA)))
            return target_close(&ty, st);
        else own_ix = 1;
    }
    if (planes * g.OH * g.OW > 0) {
        MRT_LAUNCH(k_maxpool, mrt_cu_blocks(planes * g.OH * g.OW), MRT_CU_THREADS, mrt_cu_stream(),
                   g, planes, xd.f(), mrt_cu_f32(&ty.t), indices ? mrt_cu_i64(&ix) : (int64_t *)NULL);
        st = mrt_cu_launched(op);
    }
    if (own_ix) {
        if (!st) st = mrt_cu_copy(indices, &ix);
        mrt_tensor_release(&ix);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices,
                                                int64_t in_h, int64_t in_w, mrt_tensor *dx)
{
    static const char op[] = "maxpool2d_backward";
    (void)in_h, (void)in_w; /* dx, allocated, has the input size */
    mrt_status st;
    dense dyd, ixd;
    if ((st = dyd.of(dy)) || (st = ixd.of(indices))) return st;
    const mrt_tensor *ins[2] = {dy, indices};
    out_target tdx;
    if ((st = target_open(dx, ins, 2, 0, &tdx))) return st;
    const int64_t total = mrt_tensor_numel(dy), per_out = dy->shape[2] * dy->shape[3];
    const int64_t in_plane = dx->shape[2] * dx->shape[3];
    scratch outside;
    unsigned n_outside = 0;
    st = mrt_cu_fill(&tdx.t, 0.0);
    if (!st && total > 0 && !(st = outside.get(sizeof(unsigned))) &&
        !(st = mrt_cu_check(op, cudaMemsetAsync(outside.p, 0, sizeof(unsigned), mrt_cu_stream())))) {
        MRT_LAUNCH(k_maxpool_scatter, mrt_cu_blocks(total), MRT_CU_THREADS, mrt_cu_stream(), total,
                   per_out, in_plane, dyd.f(), mrt_cu_i64(&ixd.t), mrt_cu_f32(&tdx.t),
                   (unsigned *)outside.p);
        if (!(st = mrt_cu_launched(op)))
            st = mrt_cu_check(op, cudaMemcpyAsync(&n_outside, outside.p, sizeof n_outside,
                                                  cudaMemcpyDeviceToHost, mrt_cu_stream()));
        if (!st) st = mrt_cu_check(op, cudaStreamSynchronize(mrt_cu_stream()));
        if (!st && n_outside) st = outside_plane(op, indices, dx->shape[2], dx->shape[3]);
    }
    return target_close(&tdx, st);
}

/* ---- global average pooling ---------------------------------------------------------------------- */

__global__ void k_plane_mean(int64_t planes, int64_t HW, const float *x, float *y)
{
    GRID_STRIDE(pl, planes)
    {
        double acc = 0.0;
        for (int64_t i = 0; i < HW; i++) acc += (double)x[pl * HW + i];
        y[pl] = (float)(acc / (double)HW);
    }
}

__global__ void k_plane_broadcast(int64_t total, int64_t HW, double scale, const float *dy, float *dx)
{
    GRID_STRIDE(e, total) { dx[e] = (float)((double)dy[e / HW] * scale); }
}

extern "C" mrt_status mrt_cu_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y)
{
    static const char op[] = "avgpool_global_forward";
    mrt_status st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[1] = {x};
    out_target ty;
    if ((st = target_open(y, ins, 1, 0, &ty))) return st;
    if (N * C > 0) {
        MRT_LAUNCH(k_plane_mean, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW,
                   xd.f(), mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h,
                                                     int64_t in_w, mrt_tensor *dx)
{
    static const char op[] = "avgpool_global_backward";
    (void)in_h, (void)in_w; /* dx, allocated, has the input size */
    mrt_status st;
    const int64_t H = dx->shape[2], W = dx->shape[3];
    dense dyd;
    if ((st = dyd.of(dy))) return st;
    const mrt_tensor *ins[1] = {dy};
    out_target tdx;
    if ((st = target_open(dx, ins, 1, 0, &tdx))) return st;
    const int64_t total = mrt_tensor_numel(dx);
    if (total > 0) {
        MRT_LAUNCH(k_plane_broadcast, mrt_cu_blocks(total), MRT_CU_THREADS, mrt_cu_stream(), total,
                   H * W, 1.0 / (double)(H * W), dyd.f(), mrt_cu_f32(&tdx.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&tdx, st);
}

/* ---- GeM pooling ---------------------------------------------------------------------------------- */

/* y = (mean clamp(x, eps)^p)^(1/p), per plane, in double (as the CPU). */
__global__ void k_gem(int64_t planes, int64_t HW, double p, double eps, const float *x, float *y)
{
    GRID_STRIDE(pl, planes)
    {
        double s = 0.0;
        for (int64_t i = 0; i < HW; i++) {
            const double v = (double)x[pl * HW + i];
            s += pow(v < eps ? eps : v, p);
        }
        y[pl] = (float)pow(s / (double)HW, 1.0 / p);
    }
}

/* dx and the per-plane contribution to dp. */
__global__ void k_gem_grad(int64_t planes, int64_t HW, double p, double eps, const float *x,
                           const float *dy, float *dx, double *dp_part)
{
    GRID_STRIDE(pl, planes)
    {
        const float *px = x + pl * HW;
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < HW; i++) {
            const double v = (double)px[i];
            const double cl = v < eps ? eps : v;
            const double e = pow(cl, p);
            s1 += e;
            s2 += e * log(cl);
        }
        const double g = (double)dy[pl];
        const double m = s1 / (double)HW, yy = pow(m, 1.0 / p);
        if (dp_part) dp_part[pl] = g * yy * (s2 / (p * s1) - log(m) / (p * p));
        if (dx) {
            const double scale = g * yy / s1;
            for (int64_t i = 0; i < HW; i++) {
                const double v = (double)px[i];
                const double cl = v < eps ? eps : v;
                dx[pl * HW + i] = v >= eps ? (float)(scale * pow(cl, p) / v) : 0.0f;
            }
        }
    }
}

/* dp[0] += sum of the parts, in plane order. */
__global__ void k_sum_parts(int64_t n, const double *part, float *dp)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += part[i];
        dp[0] += (float)s;
    }
}

/* The exponent, read from the device (checked by the op). */
static mrt_status gem_p(const mrt_tensor *p, double *pv)
{
    float v;
    mrt_status st = mrt_tensor_read_elem(p, p->offset, &v);
    *pv = (double)v;
    return st;
}

extern "C" mrt_status mrt_cu_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                         mrt_tensor *y)
{
    static const char op[] = "gem_forward";
    mrt_status st;
    double pv;
    if ((st = gem_p(p, &pv))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[2] = {x, p};
    out_target ty;
    if ((st = target_open(y, ins, 2, 0, &ty))) return st;
    if (N * C > 0) {
        MRT_LAUNCH(k_gem, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW, pv, eps,
                   xd.f(), mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                          const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                                          mrt_tensor *dp)
{
    static const char op[] = "gem_backward";
    (void)y; /* shape-checked only: the mean is recomputed from x */
    mrt_status st;
    double pv;
    if ((st = gem_p(p, &pv))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    dense xd, dyd;
    if ((st = xd.of(x)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, p, dy};
    out_target tdx;
    if (dx && (st = target_open(dx, ins, 3, 0, &tdx))) return st;
    scratch part;
    if (dp && N * C > 0) st = part.get((size_t)(N * C) * sizeof(double));
    if (!st && N * C > 0 && HW > 0) {
        MRT_LAUNCH(k_gem_grad, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW, pv,
                   eps, xd.f(), dyd.f(), dx ? mrt_cu_f32(&tdx.t) : (float *)NULL,
                   dp ? (double *)part.p : (double *)NULL);
        st = mrt_cu_launched(op);
        if (!st && dp) {
            MRT_LAUNCH(k_sum_parts, 1, 1, mrt_cu_stream(), N * C, (const double *)part.p,
                       (float *)dp->storage->data + dp->offset);
            st = mrt_cu_launched(op);
        }
    }
    if (dx) st = target_close(&tdx, st);
    return st;
}
