/* Optimizer updates: torch.optim.AdamW and torch.optim.SGD over contiguous
 * float32 buffers, and the sum of squares behind global-norm clipping.
 *
 * Each update is one fused pass over the buffer (PyTorch makes one pass per
 * tensor op: a mul_, two moment updates, sqrt, div, add, addcdiv), but the
 * per-element arithmetic is PyTorch's, in its order and in float32, with the
 * scalar coefficients computed in double and rounded to float once as
 * PyTorch does when it passes a Python float to a float kernel. Three steps
 * then agree with PyTorch to about 1e-7 relative; the remaining difference is
 * PyTorch's own: its vectorised add_ uses fused multiply-add, its scalar tail
 * does not.
 *
 * Elements are independent, so splitting the loop across OpenMP threads
 * cannot change any result; the sum of squares is accumulated in double over
 * fixed blocks added in order, so it too is the same for any thread count.
 *
 * AdamW's loop is also written with SSE intrinsics: GCC does not vectorise
 * sqrtf unless errno is given up build-wide (-fno-math-errno), and the
 * vector loop is two to three times faster. Every SSE operation used is a
 * correctly rounded IEEE single-precision operation, exactly as the scalar
 * code's, so a lane and the scalar tail give bit-identical results. */
#include <math.h>
#include <stdlib.h>
#include "machrt/backend.h"
#include "machrt/optim.h"
#include "optim_cpu.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Below this many elements a parallel region costs more than it saves. */
#define PARALLEL_MIN 32768
/* Elements per parallel work item (a multiple of the SSE width). */
#define CHUNK 8192
/* Fixed accumulation blocks of mrt_sum_squares (independent of threads). */
#define SUMSQ_BLOCK 65536

/* A state or gradient buffer must be the parameter's twin: same shape,
 * float32, contiguous (on the op's common device, checked before). `what`
 * names it in the message. */
static mrt_status check_buffer(const char *op, const char *what, const mrt_tensor *t,
                               const mrt_tensor *like)
{
    if (!t || !t->storage) return mrt_fail(MRT_ERR_ARG, "%s: %s is missing or released", op, what);
    if (t->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: %s must be float32, got %s", op, what,
                        mrt_dtype_name(t->dtype));
    if (!mrt_tensor_is_contiguous(t))
        return mrt_fail(MRT_ERR_ARG, "%s: %s must be contiguous (call :contiguous())", op, what);
    if (like) {
        int same = t->ndim == like->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == like->shape[d];
        if (!same) {
            char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
            return mrt_fail(MRT_ERR_SHAPE, "%s: %s has shape %s, the parameter %s", op, what,
                            mrt_shape_str(t->ndim, t->shape, a, sizeof a),
                            mrt_shape_str(like->ndim, like->shape, b, sizeof b));
        }
    }
    return MRT_OK;
}

/* `!(x >= lo)` rather than `x < lo` so that NaN is rejected too. */
static mrt_status check_range(const char *op, const char *name, double x, double lo, double hi,
                              int hi_open)
{
    if (!(x >= lo) || (hi_open ? !(x < hi) : !(x <= hi)))
        return mrt_fail(MRT_ERR_ARG, "%s: %s must be in [%g, %g%s, got %g", op, name, lo, hi,
                        hi_open ? ")" : "]", x);
    return MRT_OK;
}

/* AdamW's per-element coefficients, float32 as PyTorch passes them. */
typedef struct {
    float decay, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, neg_step_size;
} adamw_coef;

/* Updates elements [lo, hi). vmax is NULL without amsgrad. */
static void adamw_range(const adamw_coef *c, float *p, const float *g, float *m, float *v,
                        float *vmax, int64_t lo, int64_t hi)
{
    int64_t i = lo;
#if defined(__SSE2__)
    const __m128 decay = _mm_set1_ps(c->decay), b1 = _mm_set1_ps(c->b1);
    const __m128 one_m_b1 = _mm_set1_ps(c->one_m_b1), b2 = _mm_set1_ps(c->b2);
    const __m128 one_m_b2 = _mm_set1_ps(c->one_m_b2), bc2_sqrt = _mm_set1_ps(c->bc2_sqrt);
    const __m128 eps = _mm_set1_ps(c->eps), neg_step_size = _mm_set1_ps(c->neg_step_size);
    for (; i + 4 <= hi; i += 4) {
        const __m128 gi = _mm_loadu_ps(g + i);
        const __m128 pi = _mm_mul_ps(_mm_loadu_ps(p + i), decay);
        const __m128 mi = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), b1), _mm_mul_ps(one_m_b1, gi));
        const __m128 vi = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), b2),
                                     _mm_mul_ps(_mm_mul_ps(one_m_b2, gi), gi));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        __m128 vhat = vi;
        if (vmax) {
            /* The scalar code's NaN-propagating maximum, lane by lane. */
            const __m128 old = _mm_loadu_ps(vmax + i);
            const __m128 keep = _mm_or_ps(_mm_cmpunord_ps(old, old), _mm_cmpgt_ps(old, vi));
            vhat = _mm_or_ps(_mm_and_ps(keep, old), _mm_andnot_ps(keep, vi));
            _mm_storeu_ps(vmax + i, vhat);
        }
        const __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vhat), bc2_sqrt), eps);
        _mm_storeu_ps(p + i, _mm_add_ps(pi, _mm_div_ps(_mm_mul_ps(neg_step_size, mi), denom)));
    }
#endif
    for (; i < hi; i++) {
        const float gi = g[i];
        const float pi = p[i] * c->decay;                      /* param.mul_(1 - lr*wd) */
        const float mi = m[i] * c->b1 + c->one_m_b1 * gi;       /* exp_avg.mul_(b1).add_(g, 1-b1) */
        const float vi = v[i] * c->b2 + c->one_m_b2 * gi * gi;  /* exp_avg_sq ... addcmul_ */
        m[i] = mi;
        v[i] = vi;
        float vhat = vi;
        if (vmax) {
            /* torch.maximum: NaN propagates. */
            const float old = vmax[i];
            vhat = (old != old || old > vi) ? old : vi;
            vmax[i] = vhat;
        }
        const float denom = sqrtf(vhat) / c->bc2_sqrt + c->eps;
        p[i] = pi + c->neg_step_size * mi / denom;             /* addcdiv_(m, denom, -step_size) */
    }
}

/* Checks every argument of an AdamW step (both devices). */
static mrt_status check_adamw(const char *op, const mrt_tensor *param, const mrt_tensor *grad,
                              const mrt_tensor *exp_avg, const mrt_tensor *exp_avg_sq,
                              const mrt_tensor *max_exp_avg_sq, const mrt_adamw_config *cfg,
                              int64_t step)
{
    mrt_status st;
    if (!cfg) return mrt_fail(MRT_ERR_ARG, "%s: no configuration given", op);
    if ((st = check_buffer(op, "param", param, NULL)) ||
        (st = check_buffer(op, "grad", grad, param)) ||
        (st = check_buffer(op, "exp_avg", exp_avg, param)) ||
        (st = check_buffer(op, "exp_avg_sq", exp_avg_sq, param)))
        return st;
    if (cfg->amsgrad && (st = check_buffer(op, "max_exp_avg_sq", max_exp_avg_sq, param)))
        return st;
    if ((st = check_range(op, "lr", cfg->lr, 0.0, INFINITY, 1)) ||
        (st = check_range(op, "beta1", cfg->beta1, 0.0, 1.0, 1)) ||
        (st = check_range(op, "beta2", cfg->beta2, 0.0, 1.0, 1)) ||
        (st = check_range(op, "eps", cfg->eps, 0.0, INFINITY, 1)) ||
        (st = check_range(op, "weight_decay", cfg->weight_decay, 0.0, INFINITY, 1)))
        return st;
    if (step < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: step must be >= 1 (1 on the first update), got %lld", op,
                        (long long)step);
    return MRT_OK;
}

mrt_status mrt_adamw_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *exp_avg,
                          mrt_tensor *exp_avg_sq, mrt_tensor *max_exp_avg_sq,
                          const mrt_adamw_config *cfg, int64_t step)
{
    static const char op[] = "adamw_step";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq);
    mrt_status st = check_adamw(op, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, step);
    if (!st)
        MRT_BACKEND_CALL(st, op, dev, optim, adamw_step,
                         (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, step));
    return st;
}

mrt_status mrt_cpu_adamw_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *exp_avg,
                              mrt_tensor *exp_avg_sq, mrt_tensor *max_exp_avg_sq,
                              const mrt_adamw_config *cfg, int64_t step)
{
    const int64_t n = mrt_tensor_numel(param);
    float *p = mrt_f32(param), *m = mrt_f32(exp_avg), *v = mrt_f32(exp_avg_sq);
    float *vmax = cfg->amsgrad ? mrt_f32(max_exp_avg_sq) : NULL;
    const float *g = mrt_f32(grad);

    /* Python-float arithmetic in PyTorch: double, rounded once to float. */
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    const adamw_coef c = {
        .decay = (float)(1.0 - cfg->lr * cfg->weight_decay),
        .b1 = (float)cfg->beta1, .one_m_b1 = (float)(1.0 - cfg->beta1),
        .b2 = (float)cfg->beta2, .one_m_b2 = (float)(1.0 - cfg->beta2),
        .bc2_sqrt = (float)sqrt(bc2), .eps = (float)cfg->eps,
        .neg_step_size = (float)(-(cfg->lr / bc1)),
    };
    if (n < PARALLEL_MIN) {
        adamw_range(&c, p, g, m, v, vmax, 0, n);
        return MRT_OK;
    }
    const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nchunks; k++)
        adamw_range(&c, p, g, m, v, vmax, k * CHUNK, k * CHUNK + CHUNK < n ? k * CHUNK + CHUNK : n);
    return MRT_OK;
}

static mrt_status check_sgd(const char *op, const mrt_tensor *param, const mrt_tensor *grad,
                            const mrt_tensor *momentum_buf, const mrt_sgd_config *cfg)
{
    mrt_status st;
    if (!cfg) return mrt_fail(MRT_ERR_ARG, "%s: no configuration given", op);
    if ((st = check_buffer(op, "param", param, NULL)) ||
        (st = check_buffer(op, "grad", grad, param)))
        return st;
    if ((st = check_range(op, "lr", cfg->lr, 0.0, INFINITY, 1)) ||
        (st = check_range(op, "momentum", cfg->momentum, 0.0, INFINITY, 1)) ||
        (st = check_range(op, "dampening", cfg->dampening, -INFINITY, INFINITY, 1)) ||
        (st = check_range(op, "weight_decay", cfg->weight_decay, 0.0, INFINITY, 1)))
        return st;
    if (cfg->nesterov && (cfg->momentum <= 0.0 || cfg->dampening != 0.0))
        return mrt_fail(MRT_ERR_ARG, "%s: nesterov needs momentum > 0 and dampening 0 "
                        "(got momentum %g, dampening %g)", op, cfg->momentum, cfg->dampening);
    if (cfg->momentum != 0.0) return check_buffer(op, "momentum_buf", momentum_buf, param);
    return MRT_OK;
}

mrt_status mrt_sgd_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *momentum_buf,
                        const mrt_sgd_config *cfg, int first)
{
    static const char op[] = "sgd_step";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, param, grad, momentum_buf);
    mrt_status st = check_sgd(op, param, grad, momentum_buf, cfg);
    if (!st) MRT_BACKEND_CALL(st, op, dev, optim, sgd_step, (param, grad, momentum_buf, cfg, first));
    return st;
}

mrt_status mrt_cpu_sgd_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *momentum_buf,
                            const mrt_sgd_config *cfg, int first)
{
    const int use_momentum = cfg->momentum != 0.0;
    const int64_t n = mrt_tensor_numel(param);
    float *p = mrt_f32(param), *buf = use_momentum ? mrt_f32(momentum_buf) : NULL;
    const float *g = mrt_f32(grad);
    const int decay = cfg->weight_decay != 0.0, nesterov = cfg->nesterov;
    const float wd = (float)cfg->weight_decay, mom = (float)cfg->momentum;
    const float one_m_damp = (float)(1.0 - cfg->dampening);
    const float neg_lr = (float)(-cfg->lr);

#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (decay) d = d + wd * p[i];                        /* d_p = grad.add(param, wd) */
        if (buf) {
            /* The first step clones d_p into the buffer (no dampening). */
            const float b = first ? d : buf[i] * mom + one_m_damp * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] + neg_lr * d;                            /* param.add_(d_p, -lr) */
    }
    return MRT_OK;
}

mrt_status mrt_sum_squares(const mrt_tensor *t, double *out)
{
    static const char op[] = "sum_squares";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, t);
    mrt_status st = check_buffer(op, "tensor", t, NULL);
    if (st) return st;
    if (!out) return mrt_fail(MRT_ERR_ARG, "%s: no output given", op);
    MRT_BACKEND_CALL(st, op, dev, optim, sum_squares, (t, out));
    return st;
}

mrt_status mrt_cpu_sum_squares(const mrt_tensor *t, double *out)
{
    static const char op[] = "sum_squares";
    const int64_t n = mrt_tensor_numel(t);
    const float *x = mrt_f32(t);
    int64_t nblocks = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    if (nblocks <= 1) {
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
        *out = acc;
        return MRT_OK;
    }
    double *partial = malloc((size_t)nblocks * sizeof *partial);
    if (!partial) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
#pragma omp parallel for schedule(static) if (n >= 4 * SUMSQ_BLOCK)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t lo = b * SUMSQ_BLOCK, hi = lo + SUMSQ_BLOCK < n ? lo + SUMSQ_BLOCK : n;
        double acc = 0.0;
        for (int64_t i = lo; i < hi; i++) acc += (double)x[i] * x[i];
        partial[b] = acc;
    }
    double acc = 0.0;
    for (int64_t b = 0; b < nblocks; b++) acc += partial[b];
    free(partial);
    *out = acc;
    return MRT_OK;
}
