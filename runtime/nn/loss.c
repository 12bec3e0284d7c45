/* Losses with mean reduction: binary cross entropy on logits and cross
 * entropy (class indices or class probabilities), forward and backward.
 *
 * Loss values are accumulated in double over fixed blocks that are then
 * added in order, so the value does not depend on the thread count. Both
 * losses are evaluated from logits in their numerically stable forms, so
 * logits of +-100 (or more) give finite, correct values and gradients. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "../core/strided.h"
#include "nn_args.h"
#include "nn_cpu.h"

#define LOSS_BLOCK 16384

/* dlogits: the output convention on `dev`, with the output named in the
 * message. */
/* dlogits: checked when allocated, else allocated (`slot` records which,
 * for mrt_nn_out_discard after a failed kernel). */
static mrt_status prepare_grad(const char *op, mrt_tensor *out, const mrt_tensor *like,
                               mrt_device dev, mrt_nn_out *slot)
{
    slot->dst = NULL;
    slot->allocated = 0;
    if (!out) return mrt_fail(MRT_ERR_ARG, "%s: output dlogits is required", op);
    mrt_status st;
    if (out->storage && ((st = mrt_nn_need(op, "dlogits", out, MRT_F32)) ||
                         (st = mrt_nn_need_shape_of(op, "output dlogits", out, "logits", like))))
        return st;
    if ((st = mrt_nn_out_check(op, slot, out, "dlogits", MRT_F32, like->ndim, like->shape))) return st;
    return mrt_nn_out_alloc(slot, 1, dev);
}

/* ---- BCE with logits ---------------------------------------------------- */

/* max(z,0) - z*t + log(1 + exp(-|z|)): exp never overflows, and log1p keeps
 * the last term accurate when it is tiny (|z| large). */
static inline double bce_term(double z, double t)
{
    return (z > 0.0 ? z : 0.0) - z * t + log1p(exp(-fabs(z)));
}

/* sigmoid without overflow: exp of a non-positive number only. */
static inline double sigmoid(double z)
{
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static mrt_status check_bce(const char *op, const mrt_tensor *logits, const mrt_tensor *target)
{
    mrt_status st;
    if ((st = mrt_nn_need(op, "logits", logits, MRT_F32))) return st;
    if (target && target->storage && target->dtype == MRT_F32 && target->ndim == 1 &&
        target->shape[0] == logits->shape[0])
        return mrt_fail(MRT_ERR_DTYPE,
                        "%s: a class-index target must be int64, got float32 (convert with :long())",
                        op);
    if ((st = mrt_nn_need(op, "target", target, MRT_F32))) return st;
    if ((st = mrt_nn_need_shape_of(op, "target", target, "logits", logits))) return st;
    if (mrt_tensor_numel(logits) == 0) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: logits of shape %s hold no elements to average", op,
                        mrt_shape_str(logits->ndim, logits->shape, a, sizeof a));
    }
    return MRT_OK;
}

mrt_status mrt_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target, double *loss)
{
    static const char *op = "bce_logits_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits, target);
    mrt_status st;
    if ((st = check_bce(op, logits, target))) return st;
    if (!loss) return mrt_fail(MRT_ERR_ARG, "%s: loss pointer is required", op);
    MRT_BACKEND_CALL(st, op, dev, nn, bce_logits_forward, (logits, target, loss));
    return st;
}

mrt_status mrt_cpu_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                      double *loss)
{
    static const char *op = "bce_logits_forward";
    mrt_status st;
    mrt_tensor z = {0}, t = {0};
    if ((st = mrt_tensor_contiguous(logits, &z))) return st;
    if ((st = mrt_tensor_contiguous(target, &t))) {
        mrt_tensor_release(&z);
        return st;
    }
    const int64_t n = mrt_tensor_numel(&z);
    const int64_t nblocks = (n + LOSS_BLOCK - 1) / LOSS_BLOCK;
    double *part = malloc((size_t)nblocks * sizeof *part);
    if (!part) {
        mrt_tensor_release(&t);
        mrt_tensor_release(&z);
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    }
    const float *pz = mrt_f32(&z), *pt = mrt_f32(&t);
#pragma omp parallel for schedule(static) if (nblocks > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t lo = b * LOSS_BLOCK, hi = lo + LOSS_BLOCK < n ? lo + LOSS_BLOCK : n;
        double acc = 0.0;
        for (int64_t i = lo; i < hi; i++) acc += bce_term((double)pz[i], (double)pt[i]);
        part[b] = acc;
    }
    double sum = 0.0;
    for (int64_t b = 0; b < nblocks; b++) sum += part[b];
    *loss = sum / (double)n;
    free(part);
    mrt_tensor_release(&t);
    mrt_tensor_release(&z);
    return MRT_OK;
}

/* dlogits <- (sigmoid(z) - t) / n (operands: dlogits, logits, target). */
static void row_bce_grad(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)start;
    const double inv = *(const double *)ctx;
    float *o = (float *)p[0];
    const float *z = (const float *)p[1], *t = (const float *)p[2];
    for (int64_t i = 0; i < n; i++)
        o[i * s[0]] = (float)((sigmoid((double)z[i * s[1]]) - (double)t[i * s[2]]) * inv);
}

mrt_status mrt_bce_logits_backward(const mrt_tensor *logits_in, const mrt_tensor *target_in,
                                   mrt_tensor *dlogits)
{
    static const char *op = "bce_logits_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits_in, target_in, dlogits);
    mrt_status st;
    mrt_nn_out slot;
    if ((st = check_bce(op, logits_in, target_in)) ||
        (st = prepare_grad(op, dlogits, logits_in, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, bce_logits_backward, (logits_in, target_in, dlogits));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_bce_logits_backward(const mrt_tensor *logits_in, const mrt_tensor *target_in,
                                       mrt_tensor *dlogits)
{
    const mrt_tensor z = *logits_in, t = *target_in; /* dlogits may be either */
    double inv = 1.0 / (double)mrt_tensor_numel(&z);
    mrt_iter it;
    mrt_iter_init(&it, z.ndim, z.shape);
    mrt_iter_add(&it, dlogits);
    mrt_iter_add(&it, &z);
    mrt_iter_add(&it, &t);
    mrt_iter_run(&it, row_bce_grad, &inv);
    return MRT_OK;
}

/* ---- cross entropy ------------------------------------------------------ */

static mrt_status check_ce(const char *op, const mrt_tensor *logits, const mrt_tensor *target)
{
    mrt_status st;
    char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
    if ((st = mrt_nn_need(op, "logits", logits, MRT_F32))) return st;
    if (logits->ndim != 2 || logits->shape[0] < 1 || logits->shape[1] < 1)
        return mrt_fail(MRT_ERR_SHAPE, "%s: logits must be 2-d (N,C) with N, C >= 1, got shape %s",
                        op, mrt_shape_str(logits->ndim, logits->shape, a, sizeof a));
    if (!target || !target->storage)
        return mrt_fail(MRT_ERR_ARG, "%s: target is not allocated (empty or released)", op);
    if (target->dtype == MRT_I64) {
        if ((st = mrt_nn_need(op, "target", target, MRT_I64))) return st;
        if (target->ndim != 1 || target->shape[0] != logits->shape[0])
            return mrt_fail(MRT_ERR_SHAPE,
                            "%s: class-index target has shape %s, expected %" PRId64
                            " (the rows of logits %s)",
                            op, mrt_shape_str(target->ndim, target->shape, a, sizeof a),
                            logits->shape[0], mrt_shape_str(logits->ndim, logits->shape, b, sizeof b));
        /* Checked here, before any output is written, so that a bad label is
         * reported rather than read out of bounds; labels on a device are
         * read from a host copy (N integers). */
        const int64_t N = logits->shape[0], C = logits->shape[1];
        mrt_tensor host = {0};
        if ((st = mrt_tensor_to(target, MRT_CPU, &host))) return st;
        const int64_t *pt = mrt_i64(&host);
        for (int64_t i = 0; i < N && !st; i++) {
            int64_t k = pt[i * host.stride[0]];
            if (k < 0 || k >= C)
                st = mrt_fail(MRT_ERR_INDEX,
                              "%s: target %" PRId64 " in row %" PRId64
                              " is not a class index in 0..%" PRId64 " (%" PRId64 " classes)",
                              op, k, i + 1, C - 1, C);
        }
        mrt_tensor_release(&host);
        return st;
    }
    if (target->dtype == MRT_F32 && target->ndim == 1 && target->shape[0] == logits->shape[0])
        return mrt_fail(MRT_ERR_DTYPE,
                        "%s: a class-index target must be int64, got float32 (convert with :long())",
                        op);
    if ((st = mrt_nn_need(op, "target", target, MRT_F32))) return st;
    if (!mrt_nn_same_shape_as(target, logits))
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: probability target has shape %s, expected logits' shape %s "
                        "(or an int64 target of shape %" PRId64 ")",
                        op, mrt_shape_str(target->ndim, target->shape, a, sizeof a),
                        mrt_shape_str(logits->ndim, logits->shape, b, sizeof b), logits->shape[0]);
    return MRT_OK;
}

/* Row maximum and log(sum(exp(z - max))) in double: the largest term is
 * exp(0) = 1, so nothing overflows and the sum is at least 1. */
static inline void row_lse(const float *z, int64_t C, int64_t cs, double *mx, double *lse)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < C; j++)
        if ((double)z[j * cs] > m) m = (double)z[j * cs];
    if (isinf(m)) { /* all -inf (lse -inf) or some +inf (lse +inf) */
        *mx = m;
        *lse = m;
        return;
    }
    double s = 0.0;
    for (int64_t j = 0; j < C; j++) s += exp((double)z[j * cs] - m);
    *mx = m;
    *lse = m + log(s);
}

mrt_status mrt_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                     double *loss)
{
    static const char *op = "cross_entropy_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits, target);
    mrt_status st;
    if ((st = check_ce(op, logits, target))) return st;
    if (!loss) return mrt_fail(MRT_ERR_ARG, "%s: loss pointer is required", op);
    MRT_BACKEND_CALL(st, op, dev, nn, cross_entropy_forward, (logits, target, loss));
    return st;
}

mrt_status mrt_cpu_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                         double *loss)
{
    static const char *op = "cross_entropy_forward";
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t rs = logits->stride[0], cs = logits->stride[1];
    const int by_index = target->dtype == MRT_I64;
    double *row_loss = malloc((size_t)N * sizeof *row_loss);
    if (!row_loss) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    const float *pz = mrt_f32(logits);
#pragma omp parallel for schedule(static) if (N * C >= LOSS_BLOCK)
    for (int64_t i = 0; i < N; i++) {
        const float *z = pz + i * rs;
        double mx, lse;
        row_lse(z, C, cs, &mx, &lse);
        if (by_index) {
            int64_t k = mrt_i64(target)[i * target->stride[0]];
            row_loss[i] = lse - (double)z[k * cs];
        } else {
            /* -sum_j t_j log_softmax_j; a zero-probability class adds
             * nothing even when its log-probability is -inf. */
            const float *t = mrt_f32(target) + i * target->stride[0];
            double acc = 0.0;
            for (int64_t j = 0; j < C; j++) {
                double tj = (double)t[j * target->stride[1]];
                if (tj != 0.0) acc -= tj * ((double)z[j * cs] - lse);
            }
            row_loss[i] = acc;
        }
    }
    double sum = 0.0;
    for (int64_t i = 0; i < N; i++) sum += row_loss[i];
    *loss = sum / (double)N;
    free(row_loss);
    return MRT_OK;
}

/* d/dz_j of the row loss: softmax_j * sum(t) - t_j (probability targets;
 * sum(t) = 1 and t = onehot(k) for class indices), divided by N. */
mrt_status mrt_cross_entropy_backward(const mrt_tensor *logits_in, const mrt_tensor *target_in,
                                      mrt_tensor *dlogits)
{
    static const char *op = "cross_entropy_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits_in, target_in, dlogits);
    mrt_status st;
    mrt_nn_out slot;
    if ((st = check_ce(op, logits_in, target_in)) ||
        (st = prepare_grad(op, dlogits, logits_in, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, cross_entropy_backward, (logits_in, target_in, dlogits));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_cross_entropy_backward(const mrt_tensor *logits_in,
                                          const mrt_tensor *target_in, mrt_tensor *dlogits)
{
    const mrt_tensor z = *logits_in, t = *target_in; /* dlogits may be logits */
    const mrt_tensor g = *dlogits;
    const int64_t N = z.shape[0], C = z.shape[1];
    const int64_t rs = z.stride[0], cs = z.stride[1];
    const int by_index = t.dtype == MRT_I64;
    const double invn = 1.0 / (double)N;
#pragma omp parallel for schedule(static) if (N * C >= LOSS_BLOCK)
    for (int64_t i = 0; i < N; i++) {
        const float *zr = mrt_f32(&z) + i * rs;
        float *gr = mrt_f32(&g) + i * g.stride[0];
        double mx, lse;
        row_lse(zr, C, cs, &mx, &lse);
        if (by_index) {
            int64_t k = mrt_i64(&t)[i * t.stride[0]];
            /* Every logit is read before its gradient is written (dlogits
             * may be logits). */
            for (int64_t j = 0; j < C; j++) {
                double p = exp((double)zr[j * cs] - lse);
                gr[j * g.stride[1]] = (float)((p - (j == k ? 1.0 : 0.0)) * invn);
            }
        } else {
            const float *tr = mrt_f32(&t) + i * t.stride[0];
            double tsum = 0.0;
            for (int64_t j = 0; j < C; j++) tsum += (double)tr[j * t.stride[1]];
            for (int64_t j = 0; j < C; j++) {
                double p = exp((double)zr[j * cs] - lse);
                gr[j * g.stride[1]] = (float)((p * tsum - (double)tr[j * t.stride[1]]) * invn);
            }
        }
    }
    return MRT_OK;
}

/* ---- cross entropy with an angular margin (ArcFace, AdaCos) -------------- */

static mrt_status check_margin_ce(const char *op, const mrt_tensor *logits,
                                  const mrt_tensor *target, const mrt_margin_ce_params *p)
{
    if (!p) return mrt_fail(MRT_ERR_ARG, "%s: parameters are required", op);
    if (!(p->scale > 0.0) || !isfinite(p->scale))
        return mrt_fail(MRT_ERR_ARG, "%s: scale must be a positive finite number, got %g", op,
                        p->scale);
    if (!(p->out_scale > 0.0) || !isfinite(p->out_scale))
        return mrt_fail(MRT_ERR_ARG, "%s: out_scale must be a positive finite number, got %g", op,
                        p->out_scale);
    if (!(p->margin >= 0.0 && p->margin < M_PI / 2))
        return mrt_fail(MRT_ERR_ARG, "%s: margin must be in [0, pi/2), got %g", op, p->margin);
    if (target && target->storage && target->dtype != MRT_I64)
        return mrt_fail(MRT_ERR_DTYPE, "%s: target must be int64 class indices, got %s", op,
                        mrt_dtype_name(target->dtype));
    return check_ce(op, logits, target);
}

/* The true class's loss logit out_scale * psi and d(it)/d(its input logit). */
static inline void margin_true_logit(double z, const mrt_margin_ce_params *p, double *u,
                                     double *du)
{
    double c = z / p->scale;
    c = c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c;
    const double cm = cos(p->margin), sm = sin(p->margin);
    double psi, dpsi;
    if (c > cos(M_PI - p->margin)) {
        const double s = sqrt(fmax(0.0, 1.0 - c * c));
        psi = c * cm - s * sm;
        dpsi = s > 0.0 ? cm + sm * c / s : cm;
    } else {
        psi = c - p->margin * sin(p->margin);
        dpsi = 1.0;
    }
    *u = p->out_scale * psi;
    *du = p->out_scale * dpsi / p->scale;
}

/* Row maximum and log-sum-exp of the loss logits: z_j * ratio, u at y. */
static inline double margin_row_lse(const float *z, int64_t C, int64_t cs, int64_t y, double ratio,
                                    double u)
{
    double m = u;
    for (int64_t j = 0; j < C; j++)
        if (j != y && (double)z[j * cs] * ratio > m) m = (double)z[j * cs] * ratio;
    if (isinf(m)) return m;
    double s = 0.0;
    for (int64_t j = 0; j < C; j++) s += exp((j == y ? u : (double)z[j * cs] * ratio) - m);
    return m + log(s);
}

mrt_status mrt_margin_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                            const mrt_margin_ce_params *p, double *loss)
{
    static const char *op = "margin_cross_entropy_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits, target);
    mrt_status st;
    if ((st = check_margin_ce(op, logits, target, p))) return st;
    if (!loss) return mrt_fail(MRT_ERR_ARG, "%s: loss pointer is required", op);
    MRT_BACKEND_CALL(st, op, dev, nn, margin_cross_entropy_forward, (logits, target, p, loss));
    return st;
}

mrt_status mrt_cpu_margin_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                                const mrt_margin_ce_params *p, double *loss)
{
    static const char *op = "margin_cross_entropy_forward";
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t rs = logits->stride[0], cs = logits->stride[1];
    const double ratio = p->out_scale / p->scale;
    double *row_loss = malloc((size_t)N * sizeof *row_loss);
    if (!row_loss) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    const float *pz = mrt_f32(logits);
#pragma omp parallel for schedule(static) if (N * C >= LOSS_BLOCK)
    for (int64_t i = 0; i < N; i++) {
        const float *z = pz + i * rs;
        const int64_t y = mrt_i64(target)[i * target->stride[0]];
        double u, du;
        margin_true_logit((double)z[y * cs], p, &u, &du);
        row_loss[i] = margin_row_lse(z, C, cs, y, ratio, u) - u;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < N; i++) sum += row_loss[i];
    *loss = sum / (double)N;
    free(row_loss);
    return MRT_OK;
}

/* d/dz_j: (softmax_j - [j = y]) / N times d(loss logit j)/dz_j (ratio, or
 * du at the true class). */
mrt_status mrt_margin_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                             const mrt_margin_ce_params *p, mrt_tensor *dlogits)
{
    static const char *op = "margin_cross_entropy_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, logits, target, dlogits);
    mrt_status st;
    mrt_nn_out slot;
    if ((st = check_margin_ce(op, logits, target, p)) ||
        (st = prepare_grad(op, dlogits, logits, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, margin_cross_entropy_backward, (logits, target, p, dlogits));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_margin_cross_entropy_backward(const mrt_tensor *logits_in,
                                                 const mrt_tensor *target,
                                                 const mrt_margin_ce_params *p,
                                                 mrt_tensor *dlogits)
{
    const mrt_tensor z = *logits_in, g = *dlogits; /* dlogits may be logits */
    const int64_t N = z.shape[0], C = z.shape[1];
    const int64_t rs = z.stride[0], cs = z.stride[1];
    const double ratio = p->out_scale / p->scale, invn = 1.0 / (double)N;
#pragma omp parallel for schedule(static) if (N * C >= LOSS_BLOCK)
    for (int64_t i = 0; i < N; i++) {
        const float *zr = mrt_f32(&z) + i * rs;
        float *gr = mrt_f32(&g) + i * g.stride[0];
        const int64_t y = mrt_i64(target)[i * target->stride[0]];
        double u, du;
        margin_true_logit((double)zr[y * cs], p, &u, &du);
        const double lse = margin_row_lse(zr, C, cs, y, ratio, u);
        /* Every logit is read before its gradient is written. */
        for (int64_t j = 0; j < C; j++) {
            const double pj = exp((j == y ? u : (double)zr[j * cs] * ratio) - lse);
            gr[j * g.stride[1]] = (float)(j == y ? (pj - 1.0) * invn * du : pj * invn * ratio);
        }
    }
    return MRT_OK;
}
