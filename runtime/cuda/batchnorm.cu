/* Batch normalisation on the device, with the semantics of
 * runtime/nn/batchnorm.c: per-channel sums in a shared-memory tree (two
 * passes: the mean, then squares around it), the running statistics'
 * update and the normalisation in small kernels. Arguments arrive checked
 * by mrt_batchnorm2d_forward / mrt_batchnorm2d_backward, outputs
 * allocated (see nn_common.h). */
#include "nn_common.h"

#include <math.h>


/* Per channel (training): the batch mean from sum x. */
__global__ void k_bn_mean(int64_t C, int64_t count, const double *sums, float *mean)
{
    GRID_STRIDE(c, C) { mean[c] = (float)(sums[2 * c] / (double)count); }
}

/* Per channel: mean and invstd (training: from the sums; evaluation: from
 * the running statistics), the running statistics' update, and stats =
 * {invstd[C], low part of the double mean[C]} for the normalisation. */
__global__ void k_bn_stats(int64_t C, int64_t count, int training, double momentum, double eps,
                           const double *sum_x, const double *sum_sq, float *rm, float *rv,
                           float *mean_out, float *stats)
{
    GRID_STRIDE(c, C)
    {
        double mean, var;
        if (training) {
            mean = sum_x[2 * c] / (double)count;
            /* Squares were taken around the float mean mf: shift to the mean. */
            const double d = mean - (double)mean_out[c];
            var = sum_sq[2 * c] / (double)count - d * d;
            if (var < 0.0) var = 0.0;
            if (rm) {
                const double unbiased = var * (double)count / (double)(count - 1);
                rm[c] = (float)((1.0 - momentum) * (double)rm[c] + momentum * mean);
                rv[c] = (float)((1.0 - momentum) * (double)rv[c] + momentum * unbiased);
            }
        } else {
            mean = (double)rm[c];
            var = (double)rv[c];
        }
        mean_out[c] = (float)mean;
        stats[c] = (float)(1.0 / sqrt(var + eps));
        stats[C + c] = (float)(mean - (double)(float)mean);
    }
}

/* y = ((x - mh) - ml) * a + b, as the CPU kernel rounds it; a = w * invstd. */
__global__ void k_bn_apply(int64_t total, int64_t C, int64_t HW, const float *x, const float *w,
                           const float *b, const float *mean, const float *stats, float *y)
{
    GRID_STRIDE(e, total)
    {
        const int64_t c = (e / HW) % C;
        const float a = (float)((w ? (double)w[c] : 1.0) * (double)stats[c]);
        const float bb = b ? b[c] : 0.0f;
        y[e] = ((x[e] - mean[c]) - stats[C + c]) * a + bb;
    }
}

extern "C" mrt_status mrt_cu_batchnorm2d_forward(const mrt_tensor *x_in, const mrt_tensor *weight,
                                                 const mrt_tensor *bias, mrt_tensor *running_mean,
                                                 mrt_tensor *running_var, int training,
                                                 double momentum, double eps, mrt_tensor *y,
                                                 mrt_tensor *save_mean, mrt_tensor *save_invstd)
{
    static const char op[] = "batchnorm2d_forward";
    mrt_status st;
    const mrt_tensor x = *x_in; /* y may be x */
    const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
    const int64_t count = N * HW;
    const int64_t vshape[1] = {C}, sshape[1] = {2 * C};
    /* The statistics kernel updates dense running statistics: strided ones
     * are updated in a dense copy and copied back. */
    dense xd, wd, bd, rmd, rvd;
    if ((st = xd.of(&x)) || (weight && (st = wd.of(weight))) || (bias && (st = bd.of(bias))) ||
        (running_mean && ((st = rmd.of(running_mean)) || (st = rvd.of(running_var)))))
        return st;
    mrt_tensor mean = {}, stats = {};
    scratch sums;
    if ((st = mrt_tensor_alloc_on(&mean, MRT_F32, 1, vshape, MRT_CUDA)) ||
        (st = mrt_tensor_alloc_on(&stats, MRT_F32, 1, sshape, MRT_CUDA)) ||
        (st = sums.get((size_t)(C > 0 ? C : 1) * 4 * sizeof(double)))) {
        mrt_tensor_release(&mean);
        mrt_tensor_release(&stats);
        return st;
    }
    const mrt_tensor *ins[1] = {x_in};
    out_target ty;
    if ((st = target_open(y, ins, 1, 0, &ty))) {
        mrt_tensor_release(&mean);
        mrt_tensor_release(&stats);
        return st;
    }
    double *sx = (double *)sums.p, *sq = sx + 2 * C;
    if (C > 0 && training) {
        /* Two passes: the mean, then squares around it (no cancellation). */
        if (!(st = channel_sums(op, 0, N, C, HW, xd.f(), NULL, NULL, sx))) {
            MRT_LAUNCH(k_bn_mean, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, sx,
                       mrt_cu_f32(&mean));
            st = mrt_cu_launched(op);
        }
        if (!st) st = channel_sums(op, 1, N, C, HW, xd.f(), NULL, mrt_cu_f32(&mean), sq);
        if (!st) {
            MRT_LAUNCH(k_bn_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, 1,
                       momentum, eps, sx, sq,
                       running_mean ? rmd.f() : (float *)NULL,
                       running_var ? rvd.f() : (float *)NULL, mrt_cu_f32(&mean),
                       mrt_cu_f32(&stats));
            st = mrt_cu_launched(op);
        }
    } else if (C > 0) {
        MRT_LAUNCH(k_bn_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, 0, 0.0,
                   eps, sx, sx, rmd.f(), rvd.f(),
                   mrt_cu_f32(&mean), mrt_cu_f32(&stats));
        st = mrt_cu_launched(op);
    }
    if (!st && N * C * HW > 0) {
        MRT_LAUNCH(k_bn_apply, mrt_cu_blocks(N * C * HW), MRT_CU_THREADS, mrt_cu_stream(),
                   N * C * HW, C, HW, xd.f(), weight ? wd.f() : (const float *)NULL,
                   bias ? bd.f() : (const float *)NULL, mrt_cu_f32(&mean), mrt_cu_f32(&stats),
                   mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    st = target_close(&ty, st);
    if (!st && training && running_mean && rmd.t.storage != running_mean->storage)
        st = mrt_cu_copy(running_mean, &rmd.t);
    if (!st && training && running_var && rvd.t.storage != running_var->storage)
        st = mrt_cu_copy(running_var, &rvd.t);
    if (!st && save_mean) st = mrt_cu_copy(save_mean, &mean);
    if (!st && save_invstd) {
        mrt_tensor first = {};
        if (!(st = mrt_view_narrow(&stats, 0, 0, C, &first))) st = mrt_cu_copy(save_invstd, &first);
        mrt_tensor_release(&first);
    }
    mrt_tensor_release(&mean);
    mrt_tensor_release(&stats);
    return st;
}

/* Per channel: parameter gradients and the two coefficients of dx. */
__global__ void k_bn_grad_stats(int64_t C, int64_t count, const double *sums, const float *invstd,
                                float *dweight, float *dbias, float *coef)
{
    GRID_STRIDE(c, C)
    {
        const double s1 = sums[2 * c], s2 = sums[2 * c + 1], is = (double)invstd[c];
        if (dbias) dbias[c] += (float)s1;
        if (dweight) dweight[c] += (float)(s2 * is);
        coef[2 * c] = (float)(s1 / (double)count);
        coef[2 * c + 1] = (float)(is * is * s2 / (double)count);
    }
}

/* training: dx = (dy - mean(dy) - (x - m) * k) * a; evaluation: dx = dy * a. */
__global__ void k_bn_dx(int64_t total, int64_t C, int64_t HW, int training, const float *x,
                        const float *dy, const float *w, const float *mean, const float *invstd,
                        const float *coef, float *dx)
{
    GRID_STRIDE(e, total)
    {
        const int64_t c = (e / HW) % C;
        const float a = (float)((w ? (double)w[c] : 1.0) * (double)invstd[c]);
        dx[e] = training ? (dy[e] - coef[2 * c] - (x[e] - mean[c]) * coef[2 * c + 1]) * a
                         : dy[e] * a;
    }
}

extern "C" mrt_status mrt_cu_batchnorm2d_backward(const mrt_tensor *x, const mrt_tensor *dy,
                                                  const mrt_tensor *weight,
                                                  const mrt_tensor *save_mean,
                                                  const mrt_tensor *save_invstd, int training,
                                                  mrt_tensor *dx, mrt_tensor *dweight,
                                                  mrt_tensor *dbias)
{
    static const char op[] = "batchnorm2d_backward";
    mrt_status st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t count = N * HW;
    dense xd, dyd, wd, md, isd;
    if ((st = xd.of(x)) || (st = dyd.of(dy)) || (weight && (st = wd.of(weight))) ||
        (st = md.of(save_mean)) || (st = isd.of(save_invstd)))
        return st;
    const mrt_tensor *ins[2] = {x, dy};
    out_target tdw, tdb, tdx;
    int have_dw = 0, have_db = 0, have_dx = 0;
    if (dweight) {
        if ((st = target_open(dweight, ins, 2, 1, &tdw))) return st;
        have_dw = 1;
    }
    if (dbias) {
        if ((st = target_open(dbias, ins, 2, 1, &tdb))) goto done;
        have_db = 1;
    }
    if (dx) {
        if ((st = target_open(dx, ins, 2, 0, &tdx))) goto done;
        have_dx = 1;
    }
    if (C > 0) {
        scratch sums, coef;
        if (!(st = sums.get((size_t)C * 2 * sizeof(double))) &&
            !(st = coef.get((size_t)C * 2 * sizeof(float))) &&
            !(st = channel_sums(op, 2, N, C, HW, xd.f(), dyd.f(), md.f(), (double *)sums.p))) {
            MRT_LAUNCH(k_bn_grad_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count,
                       (const double *)sums.p, isd.f(),
                       have_dw ? mrt_cu_f32(&tdw.t) : (float *)NULL,
                       have_db ? mrt_cu_f32(&tdb.t) : (float *)NULL, (float *)coef.p);
            st = mrt_cu_launched(op);
        }
        if (!st && have_dx && N * C * HW > 0) {
            MRT_LAUNCH(k_bn_dx, mrt_cu_blocks(N * C * HW), MRT_CU_THREADS, mrt_cu_stream(),
                       N * C * HW, C, HW, training, xd.f(), dyd.f(),
                       weight ? wd.f() : (const float *)NULL, md.f(), isd.f(),
                       (const float *)coef.p, mrt_cu_f32(&tdx.t));
            st = mrt_cu_launched(op);
        }
    }
done:
    if (have_dx) st = target_close(&tdx, st);
    if (have_db) st = target_close(&tdb, st);
    if (have_dw) st = target_close(&tdw, st);
    return st;
}
