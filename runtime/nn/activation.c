/* ReLU forward and backward on any strided tensors, through the core's
 * strided walker (contiguous tensors become one vectorised row, split across
 * threads when large).
 *
 * In place is safe in both directions: every element is read before it is
 * written, at the same position, so y may be x and dx may be dy. The
 * backward pass takes the output y rather than x: y > 0 exactly where x > 0,
 * and an in-place forward has overwritten x anyway.
 *
 * The unit-stride loops carry `omp simd`: the possible in-place aliasing
 * keeps the compiler from vectorising them by itself (at -O2), and the
 * scalar select then costs a mispredicted branch on every other element of
 * a ReLU input. Element i only touches position i, so the assertion holds. */
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "../core/strided.h"
#include "nn_args.h"
#include "nn_cpu.h"

/* NaN passes through (x > 0 is false for NaN, so test it apart), as
 * PyTorch's relu does: a diverging run shows NaN instead of silent zeros. */
static void row_relu(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)ctx;
    (void)start;
    float *o = (float *)p[0];
    const float *x = (const float *)p[1];
    if (s[0] == 1 && s[1] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = (x[i] > 0.0f || x[i] != x[i]) ? x[i] : 0.0f;
    } else {
        for (int64_t i = 0; i < n; i++) {
            float v = x[i * s[1]];
            o[i * s[0]] = (v > 0.0f || v != v) ? v : 0.0f;
        }
    }
}

static void row_relu_grad(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)ctx;
    (void)start;
    float *dx = (float *)p[0];
    const float *y = (const float *)p[1], *dy = (const float *)p[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            const float g = dy[i]; /* loaded unconditionally: a select, not a branch */
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
    } else {
        for (int64_t i = 0; i < n; i++) dx[i * s[0]] = y[i * s[1]] > 0.0f ? dy[i * s[2]] : 0.0f;
    }
}

mrt_status mrt_relu_forward(const mrt_tensor *x, mrt_tensor *y)
{
    static const char *op = "relu_forward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, x, y);
    mrt_status st;
    mrt_nn_out slot;
    if ((st = mrt_nn_need_f32(op, "input", x)) || (st = mrt_nn_out_like(op, "y", y, x, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, relu_forward, (x, y));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_relu_backward(const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx)
{
    static const char *op = "relu_backward";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, y, dy, dx);
    mrt_status st = mrt_nn_need_f32(op, "output", y);
    if (!st) st = mrt_nn_need_f32(op, "grad_output", dy);
    if (st) return st;
    mrt_nn_out slot;
    if ((st = mrt_nn_need_shape_of(op, "grad_output", dy, "the output", y)) ||
        (st = mrt_nn_out_like(op, "dx", dx, y, dev, &slot)))
        return st;
    MRT_BACKEND_CALL(st, op, dev, nn, relu_backward, (y, dy, dx));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_relu_forward(const mrt_tensor *x_in, mrt_tensor *y)
{
    const mrt_tensor x = *x_in; /* y may be x */
    mrt_iter it;
    mrt_iter_init(&it, x.ndim, x.shape);
    mrt_iter_add(&it, y);
    mrt_iter_add(&it, &x);
    mrt_iter_run(&it, row_relu, NULL);
    return MRT_OK;
}

mrt_status mrt_cpu_relu_backward(const mrt_tensor *y_in, const mrt_tensor *dy_in, mrt_tensor *dx)
{
    const mrt_tensor y = *y_in, dy = *dy_in; /* dx may be dy */
    mrt_iter it;
    mrt_iter_init(&it, y.ndim, y.shape);
    mrt_iter_add(&it, dx);
    mrt_iter_add(&it, &y);
    mrt_iter_add(&it, &dy);
    mrt_iter_run(&it, row_relu_grad, NULL);
    return MRT_OK;
}
