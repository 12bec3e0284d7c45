/* Batch normalisation over (N, H, W) per channel, forward and backward.
 *
 * Work is split into (channel, image) planes: each plane's partial sums are
 * computed by one thread and then added per channel in image order, so the
 * statistics are the same bits for any thread count, and a batch of 32 keeps
 * both cores busy even when a layer has few channels.
 *
 * Sums are accumulated in double. The forward statistics take one pass with
 * sums shifted by the channel's first value: sum(x - K) and sum((x - K)^2)
 * stay well conditioned when the mean is large against the spread (the
 * naive E[x^2] - E[x]^2 is not), without the extra pass over x that a
 * two-pass variance would cost. The forward pass therefore reads x twice
 * (statistics, then normalisation) and the training backward pass reads x
 * and dy twice (sums, then dx); the evaluation backward pass reads them once.
 *
 * The elementwise loops carry `omp simd`: outputs may alias inputs element
 * for element (in place), which stops the compiler from vectorising them on
 * its own; element i only touches position i, so the assertion holds. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "batchnorm_rows.h"
#include "batchnorm_simd.h"
#include "nn_args.h"
#include "nn_cpu.h"

/* ---- argument checks (every device) --------------------------------------- */

/* A per-channel vector (weight, bias, running and saved statistics, their
 * gradients): 1-d of size C. */
static mrt_status need_channel_vec(const char *op, const char *name, const mrt_tensor *t,
                                   const mrt_tensor *x)
{
    mrt_status st = mrt_nn_need_f32(op, name, t);
    if (st) return st;
    if (t->ndim != 1 || t->shape[0] != x->shape[1]) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: %s has shape %s, expected %" PRId64 " (the channels of input %s)",
                        op, name, mrt_shape_str(t->ndim, t->shape, a, sizeof a), x->shape[1],
                        mrt_shape_str(x->ndim, x->shape, b, sizeof b));
    }
    return MRT_OK;
}

static mrt_status need_nchw(const char *op, const char *name, const mrt_tensor *t)
{
    mrt_status st = mrt_nn_need_f32(op, name, t);
    if (st) return st;
    if (t->ndim != 4) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: %s must be 4-d (N,C,H,W), got shape %s", op, name,
                        mrt_shape_str(t->ndim, t->shape, a, sizeof a));
    }
    return MRT_OK;
}

static inline float *vec_at(const mrt_tensor *t, int64_t c) { return mrt_f32(t) + c * t->stride[0]; }

/* ---- plane geometry --------------------------------------------------------
 * A (n, c) plane of H x W elements is walked as `rows` rows of `len`
 * elements; a plane that is contiguous in every operand becomes one row of
 * H*W with unit stride (the fast, vectorised path). */
typedef struct {
    int64_t rows, len;
    int64_t row_stride[4], elem_stride[4];
} plane_walk;

static void plane_walk_init(plane_walk *pw, int64_t H, int64_t W, int nops, const mrt_tensor **ops)
{
    int flat = 1;
    for (int k = 0; k < nops; k++)
        if (!((ops[k]->stride[3] == 1 || W == 1) && (ops[k]->stride[2] == W || H == 1))) flat = 0;
    if (flat) {
        pw->rows = 1;
        pw->len = H * W;
        for (int k = 0; k < nops; k++) pw->row_stride[k] = 0, pw->elem_stride[k] = 1;
    } else {
        pw->rows = H;
        pw->len = W;
        for (int k = 0; k < nops; k++)
            pw->row_stride[k] = ops[k]->stride[2], pw->elem_stride[k] = ops[k]->stride[3];
    }
}

static inline float *plane_at(const mrt_tensor *t, int64_t n, int64_t c)
{
    return mrt_f32(t) + n * t->stride[0] + c * t->stride[1];
}

/* s1 += sum(p - k), s2 += sum((p - k)^2) over a row; a strided row
 * accumulates in one lane. */
static void row_shifted_sums(const mrt_bn_kernels *kern, const float *p, int64_t len, int64_t es, double k,
                             double *s1, double *s2)
{
    if (es == 1) {
        kern->shifted_sums(p, len, k, s1, s2);
        return;
    }
    double a = 0.0, b = 0.0;
    for (int64_t i = 0; i < len; i++) {
        double d = (double)p[i * es] - k;
        a += d;
        b += d * d;
    }
    *s1 += a, *s2 += b;
}

/* s1 += sum(g), s2 += sum(g * (x - mean)) over a row. */
static void row_grad_sums(const mrt_bn_kernels *kern, const float *x, int64_t xs, const float *g, int64_t gs,
                          int64_t len, double mean, double *s1, double *s2)
{
    if (xs == 1 && gs == 1) {
        kern->grad_sums(x, g, len, mean, s1, s2);
        return;
    }
    double a = 0.0, b = 0.0;
    for (int64_t i = 0; i < len; i++) {
        double gv = (double)g[i * gs];
        a += gv;
        b += gv * ((double)x[i * xs] - mean);
    }
    *s1 += a, *s2 += b;
}

/* ---- forward ---------------------------------------------------------------- */

mrt_status mrt_batchnorm2d_forward(const mrt_tensor *x_in, const mrt_tensor *weight,
                                   const mrt_tensor *bias, mrt_tensor *running_mean,
                                   mrt_tensor *running_var, int training, double momentum,
                                   double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                   mrt_tensor *save_invstd)
{
    static const char *op = "batchnorm2d_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x_in, weight, bias, running_mean, running_var, y, save_mean,
                  save_invstd);
    mrt_status st;
    if ((st = need_nchw(op, "input", x_in))) return st;
    const mrt_tensor x = *x_in;
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t count = N * H * W;
    /* weight/bias NULL = affine=False (1 and 0). */
    if (weight && (st = need_channel_vec(op, "weight", weight, &x))) return st;
    if (bias && (st = need_channel_vec(op, "bias", bias, &x))) return st;
    if (!running_mean != !running_var)
        return mrt_fail(MRT_ERR_ARG, "%s: give both running_mean and running_var, or neither", op);
    if (running_mean) {
        if ((st = need_channel_vec(op, "running_mean", running_mean, &x))) return st;
        if ((st = need_channel_vec(op, "running_var", running_var, &x))) return st;
    } else if (!training) {
        return mrt_fail(MRT_ERR_ARG, "%s: evaluation mode needs running_mean and running_var", op);
    }
    if (!isfinite(eps) || eps < 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: eps must be finite and >= 0, got %g", op, eps);
    if (training && (!isfinite(momentum) || momentum < 0.0 || momentum > 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: momentum must be in [0, 1], got %g", op, momentum);
    if (training && count <= 1) {
        /* The unbiased variance divides by count - 1, as PyTorch refuses too. */
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: training needs more than 1 value per channel, input has shape %s", op,
                        mrt_shape_str(x.ndim, x.shape, a, sizeof a));
    }
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    mrt_nn_out slots[3];
    const int64_t vshape[1] = {C};
    if ((st = mrt_nn_out_check(op, &slots[0], y, "y", MRT_F32, 4, x.shape))) return st;
    if ((st = mrt_nn_out_check(op, &slots[1], save_mean, "save_mean", MRT_F32, 1, vshape))) return st;
    if ((st = mrt_nn_out_check(op, &slots[2], save_invstd, "save_invstd", MRT_F32, 1, vshape))) return st;
    if ((st = mrt_nn_out_alloc(slots, 3, dev))) return st;
    MRT_BACKEND_CALL(st, op, dev, nn, batchnorm2d_forward, (x_in, weight, bias, running_mean,
                     running_var, training, momentum, eps, y, save_mean, save_invstd));
    return mrt_nn_out_discard(slots, 3, st);
}

/* The plane walk's statistics: per-plane shifted sums (in parallel, one
 * item per plane), then added per channel in image order. */
static void plane_shifted_sums(const mrt_tensor *x, double *part, double *s1, double *s2)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t items = C * N; /* item = c * N + n */
    const mrt_tensor *ops[1] = {x};
    plane_walk pw;
    plane_walk_init(&pw, H, W, 1, ops);
    const mrt_bn_kernels *kern = mrt_bn_kernels_pick(NULL);
#pragma omp parallel for schedule(static) if (items * H * W >= BN_PARALLEL_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t c = it / N, n = it % N;
        const double k = (double)*plane_at(x, 0, c); /* the shift K */
        const float *p = plane_at(x, n, c);
        double a = 0.0, b = 0.0;
        for (int64_t r = 0; r < pw.rows; r++)
            row_shifted_sums(kern, p + r * pw.row_stride[0], pw.len, pw.elem_stride[0], k, &a, &b);
        part[2 * it] = a;
        part[2 * it + 1] = b;
    }
    for (int64_t c = 0; c < C; c++) {
        double a = 0.0, b = 0.0;
        for (int64_t n = 0; n < N; n++) a += part[2 * (c * N + n)], b += part[2 * (c * N + n) + 1];
        s1[c] = a;
        s2[c] = b;
    }
}

/* y = ((x - mh) - ml) * a + bias over the planes, with the per-channel
 * coefficients of the forward pass. */
static void plane_normalize(const mrt_tensor *x, const mrt_tensor *y, const float *a,
                            const float *b, const float *mh, const float *ml)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t items = C * N;
    const mrt_tensor *ops[2] = {x, y};
    plane_walk pw;
    plane_walk_init(&pw, H, W, 2, ops);
    const mrt_bn_kernels *kern = mrt_bn_kernels_pick(NULL);
#pragma omp parallel for schedule(static) if (items * H * W >= BN_PARALLEL_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t c = it / N, n = it % N;
        const float *px = plane_at(x, n, c);
        float *py = plane_at(y, n, c);
        for (int64_t r = 0; r < pw.rows; r++) {
            const float *xr = px + r * pw.row_stride[0];
            float *yr = py + r * pw.row_stride[1];
            const int64_t xs = pw.elem_stride[0], ys = pw.elem_stride[1];
            if (xs == 1 && ys == 1) {
                kern->normalize(xr, yr, pw.len, mh[c], ml[c], a[c], b[c]);
            } else {
                for (int64_t i = 0; i < pw.len; i++)
                    yr[i * ys] = ((xr[i * xs] - mh[c]) - ml[c]) * a[c] + b[c];
            }
        }
    }
}

mrt_status mrt_cpu_batchnorm2d_forward(const mrt_tensor *x_in, const mrt_tensor *weight,
                                       const mrt_tensor *bias, mrt_tensor *running_mean,
                                       mrt_tensor *running_var, int training, double momentum,
                                       double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                       mrt_tensor *save_invstd)
{
    static const char *op = "batchnorm2d_forward";
    /* y may be x (in place): keep x's header before y is touched. */
    const mrt_tensor x = *x_in, yv = *y;
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t count = N * H * W;
    const mrt_tensor *ops[2] = {&x, &yv};
    const int rows = mrt_bn_rows_layout(ops, 2);
    /* Per channel: mean, invstd, the two sums (double) and, in training on
     * planes, the per-plane sums; then the four float coefficients. */
    size_t nparts = training && !rows ? (size_t)(2 * C * N) : 0;
    double *buf = malloc(((size_t)(4 * C) + nparts) * sizeof *buf + 1);
    float *coef = malloc((size_t)(4 * C) * sizeof *coef + 1);
    if (!buf || !coef) {
        free(buf), free(coef);
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for %" PRId64 " channels", op, C);
    }
    double *mean = buf, *invstd = buf + C, *s1 = buf + 2 * C, *s2 = buf + 3 * C;

    if (training) {
        if (rows) mrt_bn_rows_shifted_sums(&x, s1, s2);
        else plane_shifted_sums(&x, buf + 4 * C, s1, s2);
        for (int64_t c = 0; c < C; c++) {
            double m = s1[c] / (double)count;
            double var = s2[c] / (double)count - m * m; /* biased, around the shift */
            if (var < 0.0) var = 0.0;
            mean[c] = (double)*plane_at(&x, 0, c) + m;
            invstd[c] = 1.0 / sqrt(var + eps);
            if (running_mean) {
                float *rm = vec_at(running_mean, c), *rv = vec_at(running_var, c);
                double unbiased = var * (double)count / (double)(count - 1);
                *rm = (float)((1.0 - momentum) * (double)*rm + momentum * mean[c]);
                *rv = (float)((1.0 - momentum) * (double)*rv + momentum * unbiased);
            }
        }
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = (double)*vec_at(running_mean, c);
            invstd[c] = 1.0 / sqrt((double)*vec_at(running_var, c) + eps);
        }
    }
    for (int64_t c = 0; c < C; c++) {
        if (save_mean) *vec_at(save_mean, c) = (float)mean[c];
        if (save_invstd) *vec_at(save_invstd, c) = (float)invstd[c];
    }

    /* y = ((x - mh) - ml) * a + bias with a = w * invstd and the mean split
     * into float parts mh + ml. PyTorch's x * a + (bias - mean * a) loses
     * the digits of y when |mean| is large against the spread (x * a and
     * mean * a are then large and nearly cancel); x - mh is exact for x near
     * the mean (Sterbenz), and ml restores what rounding the mean to float
     * dropped. Four float operations, still vectorised. */
    float *a = coef, *b = coef + C, *mh = coef + 2 * C, *ml = coef + 3 * C;
    for (int64_t c = 0; c < C; c++) {
        const double w = weight ? (double)*vec_at(weight, c) : 1.0;
        a[c] = (float)(w * invstd[c]);
        b[c] = bias ? *vec_at(bias, c) : 0.0f;
        mh[c] = (float)mean[c];
        ml[c] = (float)(mean[c] - (double)mh[c]);
    }
    if (rows) mrt_bn_rows_normalize(&x, &yv, a, b, mh, ml);
    else plane_normalize(&x, &yv, a, b, mh, ml);
    free(buf);
    free(coef);
    return MRT_OK;
}

/* ---- backward --------------------------------------------------------------- */

mrt_status mrt_batchnorm2d_backward(const mrt_tensor *x_in, const mrt_tensor *dy_in,
                                    const mrt_tensor *weight, const mrt_tensor *save_mean,
                                    const mrt_tensor *save_invstd, int training, mrt_tensor *dx,
                                    mrt_tensor *dweight, mrt_tensor *dbias)
{
    static const char *op = "batchnorm2d_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x_in, dy_in, weight, save_mean, save_invstd, dx, dweight, dbias);
    mrt_status st;
    if ((st = need_nchw(op, "input", x_in))) return st;
    if ((st = mrt_nn_need_f32(op, "grad_output", dy_in))) return st;
    const mrt_tensor x = *x_in, dy = *dy_in;
    if ((st = mrt_nn_need_shape_of(op, "grad_output", &dy, "input", &x))) return st;
    const int64_t count = x.shape[0] * x.shape[2] * x.shape[3];
    if (weight && (st = need_channel_vec(op, "weight", weight, &x))) return st;
    if (!save_mean || !save_invstd)
        return mrt_fail(MRT_ERR_ARG, "%s: save_mean and save_invstd from the forward pass are required", op);
    if ((st = need_channel_vec(op, "save_mean", save_mean, &x))) return st;
    if ((st = need_channel_vec(op, "save_invstd", save_invstd, &x))) return st;
    if (dweight && (st = need_channel_vec(op, "dweight", dweight, &x))) return st;
    if (dbias && (st = need_channel_vec(op, "dbias", dbias, &x))) return st;
    if (training && count <= 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: training needs more than 1 value per channel, input has shape %s", op,
                        mrt_shape_str(x.ndim, x.shape, a, sizeof a));
    }
    mrt_nn_out slot;
    if ((st = mrt_nn_out_check(op, &slot, dx, "dx", MRT_F32, 4, x.shape)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, batchnorm2d_backward, (x_in, dy_in, weight, save_mean,
                     save_invstd, training, dx, dweight, dbias));
    return mrt_nn_out_discard(&slot, 1, st);
}

/* The plane walk's gradient sums, added per channel in image order; in
 * evaluation dx = dy * a is written in the same pass (after the sums: dx
 * may be dy). need_sums 0: that pass alone. */
static void plane_grad_sums(const mrt_tensor *x, const mrt_tensor *dy, const mrt_tensor *dx,
                            const double *mean, const float *a, int need_sums, int eval_dx,
                            double *part, double *s1, double *s2)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t items = C * N;
    const mrt_tensor *ops[3] = {x, dy, dx};
    plane_walk pw;
    plane_walk_init(&pw, H, W, dx ? 3 : 2, ops);
    const mrt_bn_kernels *kern = mrt_bn_kernels_pick(NULL);
#pragma omp parallel for schedule(static) if (items * H * W >= BN_PARALLEL_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t c = it / N, n = it % N;
        const float *px = plane_at(x, n, c), *pg = plane_at(dy, n, c);
        float *pd = eval_dx ? plane_at(dx, n, c) : NULL;
        double u = 0.0, v = 0.0;
        for (int64_t r = 0; r < pw.rows; r++) {
            const float *xr = px + r * pw.row_stride[0], *gr = pg + r * pw.row_stride[1];
            if (need_sums)
                row_grad_sums(kern, xr, pw.elem_stride[0], gr, pw.elem_stride[1], pw.len, mean[c], &u, &v);
            if (pd) {
                float *dr = pd + r * pw.row_stride[2];
                const int64_t gs = pw.elem_stride[1], ds = pw.elem_stride[2];
                if (gs == 1 && ds == 1) {
#pragma omp simd
                    for (int64_t i = 0; i < pw.len; i++) dr[i] = gr[i] * a[c];
                } else {
                    for (int64_t i = 0; i < pw.len; i++) dr[i * ds] = gr[i * gs] * a[c];
                }
            }
        }
        part[2 * it] = u;
        part[2 * it + 1] = v;
    }
    if (!need_sums) return;
    for (int64_t c = 0; c < C; c++) {
        double u = 0.0, v = 0.0;
        for (int64_t n = 0; n < N; n++) u += part[2 * (c * N + n)], v += part[2 * (c * N + n) + 1];
        s1[c] = u;
        s2[c] = v;
    }
}

/* The training dx = (dy - g0 - (x - m) * k) * a over the planes. */
static void plane_grad_input(const mrt_tensor *x, const mrt_tensor *dy, const mrt_tensor *dx,
                             const float *m, const float *g0, const float *k, const float *a)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t items = C * N;
    const mrt_tensor *ops[3] = {x, dy, dx};
    plane_walk pw;
    plane_walk_init(&pw, H, W, 3, ops);
    const mrt_bn_kernels *kern = mrt_bn_kernels_pick(NULL);
#pragma omp parallel for schedule(static) if (items * H * W >= BN_PARALLEL_MIN)
    for (int64_t it = 0; it < items; it++) {
        int64_t c = it / N, n = it % N;
        const float *px = plane_at(x, n, c), *pg = plane_at(dy, n, c);
        float *pd = plane_at(dx, n, c);
        for (int64_t r = 0; r < pw.rows; r++) {
            const float *xr = px + r * pw.row_stride[0], *gr = pg + r * pw.row_stride[1];
            float *dr = pd + r * pw.row_stride[2];
            const int64_t xs = pw.elem_stride[0], gs = pw.elem_stride[1], ds = pw.elem_stride[2];
            if (xs == 1 && gs == 1 && ds == 1) {
                kern->grad_input(xr, gr, dr, pw.len, m[c], g0[c], k[c], a[c]);
            } else {
                for (int64_t i = 0; i < pw.len; i++)
                    dr[i * ds] = (gr[i * gs] - g0[c] - (xr[i * xs] - m[c]) * k[c]) * a[c];
            }
        }
    }
}

mrt_status mrt_cpu_batchnorm2d_backward(const mrt_tensor *x_in, const mrt_tensor *dy_in,
                                        const mrt_tensor *weight, const mrt_tensor *save_mean,
                                        const mrt_tensor *save_invstd, int training,
                                        mrt_tensor *dx, mrt_tensor *dweight, mrt_tensor *dbias)
{
    static const char *op = "batchnorm2d_backward";
    /* dx may be dy or x: keep their headers before dx is touched. */
    const mrt_tensor x = *x_in, dy = *dy_in;
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t count = N * H * W;
    const int need_sums = training || dweight || dbias;
    const mrt_tensor dxv = dx ? *dx : (mrt_tensor){0};
    const mrt_tensor *ops[3] = {&x, &dy, &dxv};
    const int rows = mrt_bn_rows_layout(ops, dx ? 3 : 2);
    /* Per channel: the two sums and the mean (double), then m, g0, k, a
     * (float); the per-plane sums on planes. */
    const size_t nparts = rows ? 0 : (size_t)(2 * C * N);
    double *buf = malloc(((size_t)(3 * C) + nparts) * sizeof *buf + 1);
    float *coef = malloc((size_t)(4 * C) * sizeof *coef + 1);
    if (!buf || !coef) {
        free(buf), free(coef);
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for %" PRId64 " channels", op, C);
    }
    double *s1 = buf, *s2 = buf + C, *mean = buf + 2 * C;
    float *m = coef, *g0 = coef + C, *k = coef + 2 * C, *a = coef + 3 * C;
    for (int64_t c = 0; c < C; c++) {
        m[c] = *vec_at(save_mean, c);
        mean[c] = (double)m[c];
        a[c] = (float)((weight ? (double)*vec_at(weight, c) : 1.0) * (double)*vec_at(save_invstd, c));
    }

    /* Evaluation: dx = dy * w * invstd needs no statistics of dy, so on
     * planes the sums for dweight/dbias are taken in the same pass.
     * Training: the sums come first, dx needs them. */
    const int eval_dx = !training && dx;
    if (rows) {
        if (need_sums) mrt_bn_rows_grad_sums(&x, &dy, mean, s1, s2);
        if (eval_dx) mrt_bn_rows_grad_input(&x, &dy, &dxv, m, NULL, NULL, a);
    } else if (need_sums || eval_dx) {
        plane_grad_sums(&x, &dy, dx ? &dxv : NULL, mean, a, need_sums, eval_dx, buf + 3 * C, s1, s2);
    }
    /* Per channel: mean(dy) and k = invstd^2 * mean(dy * (x - mean)) for
     * the training dx; parameter gradients accumulate. */
    if (need_sums) {
        for (int64_t c = 0; c < C; c++) {
            const double is = (double)*vec_at(save_invstd, c);
            if (dbias) *vec_at(dbias, c) += (float)s1[c];
            if (dweight) *vec_at(dweight, c) += (float)(s2[c] * is);
            g0[c] = (float)(s1[c] / (double)count);
            k[c] = (float)(is * is * s2[c] / (double)count);
        }
    }
    if (training && dx) {
        if (rows) mrt_bn_rows_grad_input(&x, &dy, &dxv, m, g0, k, a);
        else plane_grad_input(&x, &dy, &dxv, m, g0, k, a);
    }
    free(buf);
    free(coef);
    return MRT_OK;
}
