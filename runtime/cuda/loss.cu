/* Losses on the device, with the semantics of runtime/nn/loss.c: BCE with
 * logits, cross entropy (class indices or probabilities) and cross entropy
 * with an angular margin, mean reduction, sums in double in a fixed order.
 * Arguments arrive checked by the ops in runtime/nn/loss.c (class indices
 * in range, at least one element), dlogits allocated (see nn_common.h). */
#include "nn_common.h"

#include <math.h>


__device__ __forceinline__ double sigmoid_d(double z)
{
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    const double e = exp(z);
    return e / (1.0 + e);
}

/* Per-element BCE terms (double), summed afterwards in a fixed order. */
__global__ void k_bce_terms(int64_t n, const float *z, const float *t, double *out)
{
    GRID_STRIDE(i, n)
    {
        const double zz = (double)z[i], tt = (double)t[i];
        out[i] = (zz > 0.0 ? zz : 0.0) - zz * tt + log1p(exp(-fabs(zz)));
    }
}

__global__ void k_bce_grad(int64_t n, double inv, const float *z, const float *t, float *g)
{
    GRID_STRIDE(i, n) { g[i] = (float)((sigmoid_d((double)z[i]) - (double)t[i]) * inv); }
}

/* Sums n doubles in blocks of `block` (block order kept), one partial per block. */
__global__ void k_sum_blocks(int64_t n, int64_t block, const double *v, double *part)
{
    GRID_STRIDE(b, (n + block - 1) / block)
    {
        double acc = 0.0;
        const int64_t hi = (b + 1) * block < n ? (b + 1) * block : n;
        for (int64_t i = b * block; i < hi; i++) acc += v[i];
        part[b] = acc;
    }
}

/* Mean of n device doubles: block partials on the device, the rest on the host. */
static mrt_status mean_of(const char *op, const double *v, int64_t n, int64_t divisor, double *out)
{
    const int64_t block = 1024, nb = (n + block - 1) / block;
    scratch part;
    mrt_status st = part.get((size_t)nb * sizeof(double));
    if (st) return st;
    MRT_LAUNCH(k_sum_blocks, mrt_cu_blocks(nb), MRT_CU_THREADS, mrt_cu_stream(), n, block, v,
               (double *)part.p);
    if ((st = mrt_cu_launched(op))) return st;
    double *host = (double *)malloc((size_t)nb * sizeof(double));
    if (!host) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    st = mrt_backend_get(MRT_CUDA)->memory.to_host(host, part.p, (size_t)nb * sizeof(double));
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += host[b];
    free(host);
    *out = s / (double)divisor;
    return st;
}

extern "C" mrt_status mrt_cu_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                                double *loss)
{
    static const char op[] = "bce_logits_forward";
    mrt_status st;
    const int64_t n = mrt_tensor_numel(logits);
    dense zd, td;
    scratch terms;
    if ((st = zd.of(logits)) || (st = td.of(target)) || (st = terms.get((size_t)n * sizeof(double))))
        return st;
    MRT_LAUNCH(k_bce_terms, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, zd.f(), td.f(),
               (double *)terms.p);
    if ((st = mrt_cu_launched(op))) return st;
    return mean_of(op, (const double *)terms.p, n, n, loss);
}

extern "C" mrt_status mrt_cu_bce_logits_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                                 mrt_tensor *dlogits)
{
    static const char op[] = "bce_logits_backward";
    mrt_status st;
    const int64_t n = mrt_tensor_numel(logits);
    dense zd, td;
    if ((st = zd.of(logits)) || (st = td.of(target))) return st;
    const mrt_tensor *ins[2] = {logits, target};
    out_target tg;
    if ((st = target_open(dlogits, ins, 2, 0, &tg))) return st;
    MRT_LAUNCH(k_bce_grad, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, 1.0 / (double)n,
               zd.f(), td.f(), mrt_cu_f32(&tg.t));
    return target_close(&tg, mrt_cu_launched(op));
}

/* One thread per row: log-sum-exp, then the row loss or the row gradient. */
__global__ void k_cross_entropy(int64_t N, int64_t C, const float *z, const int64_t *cls,
                                const float *prob, double invn, double *row_loss, float *grad)
{
    GRID_STRIDE(i, N)
    {
        const float *zr = z + i * C;
        double m = -INFINITY;
        for (int64_t j = 0; j < C; j++)
            if ((double)zr[j] > m) m = (double)zr[j];
        double lse = m;
        if (isfinite(m)) {
            double s = 0.0;
            for (int64_t j = 0; j < C; j++) s += exp((double)zr[j] - m);
            lse = m + log(s);
        }
        if (row_loss) {
            if (cls) {
                row_loss[i] = lse - (double)zr[cls[i]];
            } else {
                double acc = 0.0;
                for (int64_t j = 0; j < C; j++) {
                    const double tj = (double)prob[i * C + j];
                    if (tj != 0.0) acc -= tj * ((double)zr[j] - lse);
                }
                row_loss[i] = acc;
            }
        }
        if (grad) {
            double tsum = 1.0;
            if (!cls) {
                tsum = 0.0;
                for (int64_t j = 0; j < C; j++) tsum += (double)prob[i * C + j];
            }
            for (int64_t j = 0; j < C; j++) {
                const double p = exp((double)zr[j] - lse);
                const double t = cls ? (j == cls[i] ? 1.0 : 0.0) : (double)prob[i * C + j];
                grad[i * C + j] = (float)((p * tsum - t) * invn);
            }
        }
    }
}

static mrt_status ce_dense(const mrt_tensor *t, dense *cls, dense *prob)
{
    return t->dtype == MRT_I64 ? cls->of(t) : prob->of(t);
}

extern "C" mrt_status mrt_cu_cross_entropy_forward(const mrt_tensor *logits,
                                                   const mrt_tensor *target, double *loss)
{
    static const char op[] = "cross_entropy_forward";
    mrt_status st;
    const int64_t N = logits->shape[0], C = logits->shape[1];
    dense zd, cls, prob;
    scratch rows;
    if ((st = zd.of(logits)) || (st = ce_dense(target, &cls, &prob)) ||
        (st = rows.get((size_t)N * sizeof(double))))
        return st;
    MRT_LAUNCH(k_cross_entropy, mrt_cu_blocks(N), MRT_CU_THREADS, mrt_cu_stream(), N, C, zd.f(),
               cls.t.storage ? mrt_cu_i64(&cls.t) : (const int64_t *)NULL,
               prob.t.storage ? prob.f() : (const float *)NULL, 1.0 / (double)N, (double *)rows.p,
               (float *)NULL);
    if ((st = mrt_cu_launched(op))) return st;
    return mean_of(op, (const double *)rows.p, N, N, loss);
}

extern "C" mrt_status mrt_cu_cross_entropy_backward(const mrt_tensor *logits,
                                                    const mrt_tensor *target, mrt_tensor *dlogits)
{
    static const char op[] = "cross_entropy_backward";
    mrt_status st;
    const int64_t N = logits->shape[0], C = logits->shape[1];
    dense zd, cls, prob;
    if ((st = zd.of(logits)) || (st = ce_dense(target, &cls, &prob))) return st;
    const mrt_tensor *ins[2] = {logits, target};
    out_target tg;
    if ((st = target_open(dlogits, ins, 2, 0, &tg))) return st;
    MRT_LAUNCH(k_cross_entropy, mrt_cu_blocks(N), MRT_CU_THREADS, mrt_cu_stream(), N, C, zd.f(),
               cls.t.storage ? mrt_cu_i64(&cls.t) : (const int64_t *)NULL,
               prob.t.storage ? prob.f() : (const float *)NULL, 1.0 / (double)N, (double *)NULL,
               mrt_cu_f32(&tg.t));
    return target_close(&tg, mrt_cu_launched(op));
}

/* Cross entropy with an angular margin on the true class (see
 * mrt_margin_cross_entropy_forward in machrt/nn.h), one thread per row as
 * k_cross_entropy, with the true class's logit out_scale * psi. */
__global__ void k_margin_cross_entropy(int64_t N, int64_t C, const float *z, const int64_t *cls,
                                       double scale, double margin, double out_scale, double invn,
                                       double *row_loss, float *grad)
{
    GRID_STRIDE(i, N)
    {
        const float *zr = z + i * C;
        const int64_t y = cls[i];
        const double ratio = out_scale / scale, cm = cos(margin), sm = sin(margin);
        double c = (double)zr[y] / scale;
        c = c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c;
        double psi, dpsi;
        if (c > cos(M_PI - margin)) {
            const double s = sqrt(fmax(0.0, 1.0 - c * c));
            psi = c * cm - s * sm;
            dpsi = s > 0.0 ? cm + sm * c / s : cm;
        } else {
            psi = c - margin * sin(margin);
            dpsi = 1.0;
        }
        const double u = out_scale * psi, du = out_scale * dpsi / scale;
        double m = u;
        for (int64_t j = 0; j < C; j++)
            if (j != y && (double)zr[j] * ratio > m) m = (double)zr[j] * ratio;
        double lse = m;
        if (isfinite(m)) {
            double s = 0.0;
            for (int64_t j = 0; j < C; j++) s += exp((j == y ? u : (double)zr[j] * ratio) - m);
            lse = m + log(s);
        }
        if (row_loss) row_loss[i] = lse - u;
        if (grad) {
            for (int64_t j = 0; j < C; j++) {
                const double p = exp((j == y ? u : (double)zr[j] * ratio) - lse);
                grad[i * C + j] = (float)(j == y ? (p - 1.0) * invn * du : p * invn * ratio);
            }
        }
    }
}

/* The kernel over checked operands: the row losses into `rows`, or the gradient into `grad`. */
static void launch_margin(const dense &zd, const dense &cls, int64_t N, int64_t C,
                          const mrt_margin_ce_params *p, double *rows, float *grad)
{
    MRT_LAUNCH(k_margin_cross_entropy, mrt_cu_blocks(N), MRT_CU_THREADS, mrt_cu_stream(), N, C,
               zd.f(), mrt_cu_i64(&cls.t), p->scale, p->margin, p->out_scale, 1.0 / (double)N, rows,
               grad);
}

extern "C" mrt_status mrt_cu_margin_cross_entropy_forward(const mrt_tensor *logits,
                                                          const mrt_tensor *target,
                                                          const mrt_margin_ce_params *p,
                                                          double *loss)
{
    static const char op[] = "margin_cross_entropy_forward";
    mrt_status st;
    const int64_t N = logits->shape[0], C = logits->shape[1];
    dense zd, cls;
    scratch rows;
    if ((st = zd.of(logits)) || (st = cls.of(target)) || (st = rows.get((size_t)N * sizeof(double))))
        return st;
    launch_margin(zd, cls, N, C, p, (double *)rows.p, (float *)NULL);
    if ((st = mrt_cu_launched(op))) return st;
    return mean_of(op, (const double *)rows.p, N, N, loss);
}

extern "C" mrt_status mrt_cu_margin_cross_entropy_backward(const mrt_tensor *logits,
                                                           const mrt_tensor *target,
                                                           const mrt_margin_ce_params *p,
                                                           mrt_tensor *dlogits)
{
    static const char op[] = "margin_cross_entropy_backward";
    mrt_status st;
    dense zd, cls;
    if ((st = zd.of(logits)) || (st = cls.of(target))) return st;
    const mrt_tensor *ins[2] = {logits, target};
    out_target tg;
    if ((st = target_open(dlogits, ins, 2, 0, &tg))) return st;
    launch_margin(zd, cls, logits->shape[0], logits->shape[1], p, (double *)NULL, mrt_cu_f32(&tg.t));
    return target_close(&tg, mrt_cu_launched(op));
}
