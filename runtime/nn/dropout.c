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

static mrt_status check_out(const char *op, const char *name, const mrt_tensor *out,
                            const mrt_tensor *like)
{
    if (!out->storage) return MRT_OK;
    mrt_status st = mrt_nn_need_f32(op, name, out);
    if (st) return st;
    if (!mrt_nn_same_shape_as(out, like)) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: output %s has shape %s, expected %s", op, name,
                        mrt_shape_str(out->ndim, out->shape, a, sizeof a),
                        mrt_shape_str(like->ndim, like->shape, b, sizeof b));
    }
    return MRT_OK;
}

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

mrt_status mrt_dropout_forward(const mrt_tensor *x_in, double prob, mrt_rng *rng, mrt_tensor *y,
                               mrt_tensor *mask)
{
    MRT_ROUTE("dropout_forward", nn, dropout_forward, (x_in, prob, rng, y, mask), x_in, y, mask);
    static const char *op = "dropout_forward";
    mrt_status st = mrt_nn_need_f32(op, "input", x_in);
    if (st) return st;
    if (!(prob >= 0.0 && prob <= 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: probability must be in [0, 1], got %g", op, prob);
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const mrt_tensor x = *x_in; /* y may be x */
    if ((st = check_out(op, "y", y, &x))) return st;
    /* mask NULL: the caller does not need a backward pass; a temporary
     * holds the draws. */
    mrt_tensor tmp = {0};
    mrt_tensor *m = mask ? mask : &tmp;
    if ((st = check_out(op, "mask", m, &x))) return st;
    const int y_new = !y->storage, m_new = !m->storage;
    if (y_new && (st = mrt_tensor_alloc_uninit(y, MRT_F32, x.ndim, x.shape))) return st;
    if (m_new && (st = mrt_tensor_alloc_uninit(m, MRT_F32, x.ndim, x.shape))) {
        if (y_new) mrt_tensor_release(y);
        return st;
    }
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
    if (st) {
        if (y_new) mrt_tensor_release(y);
        if (m_new) mrt_tensor_release(m);
        return st;
    }
    mrt_tensor_release(&tmp);
    return MRT_OK;
}

mrt_status mrt_dropout_backward(const mrt_tensor *dy_in, const mrt_tensor *mask_in, mrt_tensor *dx)
{
    MRT_ROUTE("dropout_backward", nn, dropout_backward, (dy_in, mask_in, dx), dy_in, mask_in, dx);
    static const char *op = "dropout_backward";
    mrt_status st = mrt_nn_need_f32(op, "grad_output", dy_in);
    if (!st) st = mrt_nn_need_f32(op, "mask", mask_in);
    if (st) return st;
    const mrt_tensor dy = *dy_in, mask = *mask_in; /* dx may be dy */
    if (!mrt_nn_same_shape_as(&mask, &dy)) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: mask has shape %s, expected grad_output's shape %s", op,
                        mrt_shape_str(mask.ndim, mask.shape, a, sizeof a),
                        mrt_shape_str(dy.ndim, dy.shape, b, sizeof b));
    }
    if (!dx) return mrt_fail(MRT_ERR_ARG, "%s: output dx is required", op);
    if ((st = check_out(op, "dx", dx, &dy))) return st;
    if (!dx->storage && (st = mrt_tensor_alloc_uninit(dx, MRT_F32, dy.ndim, dy.shape))) return st;
    mrt_iter it;
    mrt_iter_init(&it, dy.ndim, dy.shape);
    mrt_iter_add(&it, dx);
    mrt_iter_add(&it, &dy);
    mrt_iter_add(&it, &mask);
    mrt_iter_run(&it, row_mul, NULL);
    return MRT_OK;
}
