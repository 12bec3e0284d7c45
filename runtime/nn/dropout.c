/* Inverted dropout: kept elements are scaled by 1/(1-prob) at training time,
 * so evaluation is the identity.
 *
 * The keep/drop draws come from mrt_rng_bernoulli (counter-based Philox:
 * element i of the mask depends only on the generator's seed and offset and
 * on i), so a mask is the same for a given seed whatever the thread count.
 * prob 0 and prob 1 draw nothing and leave the generator where it was: they
 * are not random.
 *
 * `omp simd` on the unit-stride loops: y may be x and dx may be dy (element
 * for element), which keeps the compiler from vectorising them by itself. */
#include <math.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "../core/strided.h"
#include "nn_args.h"
#include "nn_cpu.h"

/* mask <- mask01 * scale, y <- x * mask (operands: y, mask, x). */
static void row_apply(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)start;
    const float scale = *(const float *)ctx;
    float *y = (float *)p[0], *m = (float *)p[1];
    const float *x = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float k = m[i] * scale;
            m[i] = k;
            y[i] = x[i] * k;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float k = m[i * s[1]] * scale;
            m[i * s[1]] = k;
            y[i * s[0]] = x[i * s[2]] * k;
        }
    }
}

/* dx <- dy * mask (operands: dx, dy, mask). */
static void row_mul(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)ctx;
    (void)start;
    float *o = (float *)p[0];
    const float *a = (const float *)p[1], *b = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i];
    } else {
        for (int64_t i = 0; i < n; i++) o[i * s[0]] = a[i * s[1]] * b[i * s[2]];
    }
}

mrt_status mrt_dropout_forward(const mrt_tensor *x, double prob, mrt_rng *rng, mrt_tensor *y,
                               mrt_tensor *mask)
{
    static const char *op = "dropout_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, y, mask);
    mrt_status st = mrt_nn_need_f32(op, "input", x);
    if (st) return st;
    if (!(prob >= 0.0 && prob <= 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: probability must be in [0, 1], got %g", op, prob);
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    /* mask NULL: the caller does not need a backward pass; a temporary
     * holds the draws. */
    mrt_tensor tmp = {0};
    mrt_tensor *m = mask ? mask : &tmp;
    mrt_nn_out slots[2];
    if ((st = mrt_nn_out_check(op, &slots[0], y, "y", MRT_F32, x->ndim, x->shape)) ||
        (st = mrt_nn_out_check(op, &slots[1], m, "mask", MRT_F32, x->ndim, x->shape)) ||
        (st = mrt_nn_out_alloc(slots, 2, dev)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, dropout_forward, (x, prob, rng, y, m));
    st = mrt_nn_out_discard(slots, 2, st);
    mrt_tensor_release(&tmp);
    return st;
}

mrt_status mrt_dropout_backward(const mrt_tensor *dy, const mrt_tensor *mask, mrt_tensor *dx)
{
    static const char *op = "dropout_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, dy, mask, dx);
    mrt_status st = mrt_nn_need_f32(op, "grad_output", dy);
    if (!st) st = mrt_nn_need_f32(op, "mask", mask);
    if (st) return st;
    mrt_nn_out slot;
    if ((st = mrt_nn_need_shape_of(op, "mask", mask, "grad_output", dy)) ||
        (st = mrt_nn_out_like(op, "dx", dx, dy, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, dropout_backward, (dy, mask, dx));
    return mrt_nn_out_discard(&slot, 1, st);
}

/* mask is never NULL here: the op passes a temporary. */
mrt_status mrt_cpu_dropout_forward(const mrt_tensor *x_in, double prob, mrt_rng *rng,
                                   mrt_tensor *y, mrt_tensor *m)
{
    const mrt_tensor x = *x_in; /* y may be x */
    mrt_status st;
    if (prob == 0.0) {
        /* The identity: a copy (bit for bit; in place when y is x), mask
         * all ones. */
        if ((st = mrt_tensor_fill(m, 1.0)) == MRT_OK) st = mrt_tensor_copy(y, &x);
    } else if (prob == 1.0) {
        /* Everything dropped: zeros, even where x is inf or NaN (x * 0
         * would give NaN there). */
        if ((st = mrt_tensor_fill(m, 0.0)) == MRT_OK) st = mrt_tensor_fill(y, 0.0);
    } else {
        st = mrt_rng_bernoulli(rng ? rng : mrt_rng_default(), m, 1.0 - prob);
        if (st == MRT_OK) {
            float scale = (float)(1.0 / (1.0 - prob));
            mrt_iter it;
            mrt_iter_init(&it, x.ndim, x.shape);
            mrt_iter_add(&it, y);
            mrt_iter_add(&it, m);
            mrt_iter_add(&it, &x);
            mrt_iter_run(&it, row_apply, &scale);
        }
    }
    return st;
}

mrt_status mrt_cpu_dropout_backward(const mrt_tensor *dy_in, const mrt_tensor *mask_in,
                                    mrt_tensor *dx)
{
    const mrt_tensor dy = *dy_in, mask = *mask_in; /* dx may be dy */
    mrt_iter it;
    mrt_iter_init(&it, dy.ndim, dy.shape);
    mrt_iter_add(&it, dx);
    mrt_iter_add(&it, &dy);
    mrt_iter_add(&it, &mask);
    mrt_iter_run(&it, row_mul, NULL);
    return MRT_OK;
}
