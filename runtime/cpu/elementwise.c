/* Elementwise float32 ops with numpy broadcasting, copy and fill: the
 * public ops (check, output shape and allocation on the tensors' device,
 * then the device's kernel) and the CPU kernels. */
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include "machrt/backend.h"
#include "../core/strided.h"
#include "tensor_cpu.h"

const char *mrt_binop_name(mrt_binop op)
{
    static const char *names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};
    return names[op];
}

const char *mrt_unop_name(mrt_unop op)
{
    static const char *names[] = {"neg", "exp", "log", "sigmoid", "relu", "abs", "sqrt", "tanh"};
    return names[op];
}

mrt_status mrt_broadcast_shape(const char *opname, const mrt_tensor *a, const mrt_tensor *b,
                               int *ndim, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char x[MRT_SHAPE_STRLEN], y[MRT_SHAPE_STRLEN];
            return mrt_fail(MRT_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast", opname,
                            mrt_shape_str(a->ndim, a->shape, x, sizeof x),
                            mrt_shape_str(b->ndim, b->shape, y, sizeof y));
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return MRT_OK;
}

static mrt_status require_f32(const char *op, const mrt_tensor *t)
{
    if (!t->storage) return mrt_fail(MRT_ERR_ARG, "%s: tensor has been released", op);
    if (t->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: expected a float32 tensor, got %s (convert with "
                        ":float())", op, mrt_dtype_name(t->dtype));
    return MRT_OK;
}

/* ---- binary ------------------------------------------------------------ */

/* The unit-stride and one-side-broadcast cases get their own loops so the
 * compiler vectorises them; anything else takes the strided loop. */
#define BINARY_ROW(NAME, EXPR)                                                              \
    static void NAME(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)       \
    {                                                                                       \
        (void)ctx; (void)start;                                                             \
        float *o = (float *)p[0];                                                           \
        const float *pa = (const float *)p[1], *pb = (const float *)p[2];                   \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                          \
            for (int64_t i = 0; i < n; i++) { float x = pa[i], y = pb[i]; o[i] = (EXPR); }  \
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                   \
            const float y = *pb;                                                            \
            for (int64_t i = 0; i < n; i++) { float x = pa[i]; o[i] = (EXPR); }             \
        } else if (s[0] == 1 && s[1] == 0 && s[2] == 1) {                                   \
            const float x = *pa;                                                            \
            for (int64_t i = 0; i < n; i++) { float y = pb[i]; o[i] = (EXPR); }             \
        } else {                                                                            \
            for (int64_t i = 0; i < n; i++) {                                               \
                float x = pa[i * s[1]], y = pb[i * s[2]];                                   \
                o[i * s[0]] = (EXPR);                                                       \
            }                                                                               \
        }                                                                                   \
    }

BINARY_ROW(row_add, x + y)
BINARY_ROW(row_sub, x - y)
BINARY_ROW(row_mul, x * y)
BINARY_ROW(row_div, x / y)
BINARY_ROW(row_pow, powf(x, y))
/* NaN propagates, as in PyTorch's maximum/minimum. */
BINARY_ROW(row_maximum, (x != x || x > y) ? x : y)
BINARY_ROW(row_minimum, (x != x || x < y) ? x : y)

static mrt_row_fn binary_row(mrt_binop op)
{
    static const mrt_row_fn rows[] = {row_add, row_sub, row_mul, row_div,
                                      row_pow, row_maximum, row_minimum};
    return rows[op];
}

mrt_status mrt_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out)
{
    const char *name = mrt_binop_name(op);
    mrt_device dev;
    MRT_OP_DEVICE(name, &dev, a, b, out);
    mrt_status st = require_f32(name, a);
    if (!st) st = require_f32(name, b);
    if (st) return st;
    int nd;
    int64_t shape[MRT_MAX_DIMS];
    if ((st = mrt_broadcast_shape(name, a, b, &nd, shape)) ||
        (st = mrt_tensor_prepare_out_on(name, out, MRT_F32, nd, shape, dev)))
        return st;
    MRT_BACKEND_CALL(st, name, dev, tensor, binary, (op, a, b, out));
    return st;
}

mrt_status mrt_binary_scalar(mrt_binop op, const mrt_tensor *a, double s, int scalar_left,
                             mrt_tensor *out)
{
    const char *name = mrt_binop_name(op);
    mrt_device dev;
    MRT_OP_DEVICE(name, &dev, a, out);
    mrt_status st = require_f32(name, a);
    if (!st) st = mrt_tensor_prepare_out_on(name, out, MRT_F32, a->ndim, a->shape, dev);
    if (!st) MRT_BACKEND_CALL(st, name, dev, tensor, binary_scalar, (op, a, s, scalar_left, out));
    return st;
}

/* out has the broadcast shape; it may be a or b (in place). */
mrt_status mrt_cpu_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out)
{
    const mrt_tensor ta = *a, tb = *b;
    mrt_iter it;
    mrt_iter_init(&it, out->ndim, out->shape);
    mrt_iter_add(&it, out);
    mrt_iter_add(&it, &ta);
    mrt_iter_add(&it, &tb);
    mrt_iter_run(&it, binary_row(op), NULL);
    return MRT_OK;
}

mrt_status mrt_cpu_binary_scalar(mrt_binop op, const mrt_tensor *a, double s, int scalar_left,
                                 mrt_tensor *out)
{
    const mrt_tensor ta = *a;
    float value = (float)s;
    mrt_iter it;
    mrt_iter_init(&it, ta.ndim, ta.shape);
    mrt_iter_add(&it, out);
    if (scalar_left) {
        mrt_iter_add_scalar(&it, &value, sizeof value);
        mrt_iter_add(&it, &ta);
    } else {
        mrt_iter_add(&it, &ta);
        mrt_iter_add_scalar(&it, &value, sizeof value);
    }
    mrt_iter_run(&it, binary_row(op), NULL);
    return MRT_OK;
}

/* ---- unary ------------------------------------------------------------- */

#define UNARY_ROW(NAME, EXPR)                                                               \
    static void NAME(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)       \
    {                                                                                       \
        (void)ctx; (void)start;                                                             \
        float *o = (float *)p[0];                                                           \
        const float *pa = (const float *)p[1];                                              \
        if (s[0] == 1 && s[1] == 1) {                                                       \
            for (int64_t i = 0; i < n; i++) { float x = pa[i]; o[i] = (EXPR); }             \
        } else {                                                                            \
            for (int64_t i = 0; i < n; i++) { float x = pa[i * s[1]]; o[i * s[0]] = (EXPR); } \
        }                                                                                   \
    }

UNARY_ROW(row_neg, -x)
UNARY_ROW(row_exp, expf(x))
UNARY_ROW(row_log, logf(x))
UNARY_ROW(row_sigmoid, 1.0f / (1.0f + expf(-x)))
UNARY_ROW(row_relu, x > 0.0f ? x : 0.0f)
UNARY_ROW(row_abs, fabsf(x))
UNARY_ROW(row_sqrt, sqrtf(x))
UNARY_ROW(row_tanh, tanhf(x))

mrt_status mrt_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out)
{
    const char *name = mrt_unop_name(op);
    mrt_device dev;
    MRT_OP_DEVICE(name, &dev, a, out);
    mrt_status st = require_f32(name, a);
    if (!st) st = mrt_tensor_prepare_out_on(name, out, MRT_F32, a->ndim, a->shape, dev);
    if (!st) MRT_BACKEND_CALL(st, name, dev, tensor, unary, (op, a, out));
    return st;
}

mrt_status mrt_cpu_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out)
{
    static const mrt_row_fn rows[] = {row_neg, row_exp,  row_log,  row_sigmoid,
                                      row_relu, row_abs, row_sqrt, row_tanh};
    const mrt_tensor ta = *a; /* out may be a */
    mrt_iter it;
    mrt_iter_init(&it, ta.ndim, ta.shape);
    mrt_iter_add(&it, out);
    mrt_iter_add(&it, &ta);
    mrt_iter_run(&it, rows[op], NULL);
    return MRT_OK;
}

/* ---- copy and fill ----------------------------------------------------- */

#define COPY_ROW(NAME, TO, FROM)                                                            \
    static void NAME(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)       \
    {                                                                                       \
        (void)ctx; (void)start;                                                             \
        TO *o = (TO *)p[0];                                                                 \
        const FROM *src = (const FROM *)p[1];                                               \
        if (s[0] == 1 && s[1] == 1) {                                                       \
            for (int64_t i = 0; i < n; i++) o[i] = (TO)src[i];                              \
        } else {                                                                            \
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = (TO)src[i * s[1]];                \
        }                                                                                   \
    }

COPY_ROW(row_copy_ff, float, float)
COPY_ROW(row_copy_ll, int64_t, int64_t)
COPY_ROW(row_copy_fl, float, int64_t)

/* float32 -> int64 truncates toward zero, as C and torch's .long() do; a NaN,
 * an infinity or a value beyond int64's range has no int64 (in C the cast is
 * undefined; x86 gives INT64_MIN), so the first one is kept for the error. */
typedef struct { int bad; float value; } to_long_ctx;

static void row_copy_lf(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    (void)start;
    to_long_ctx *c = ctx;
    int64_t *o = (int64_t *)p[0];
    const float *src = (const float *)p[1];
    for (int64_t i = 0; i < n; i++) {
        const float v = src[i * s[1]];
        if (!(v > -9223372036854775808.0f && v < 9223372036854775808.0f)) {
            if (!__atomic_exchange_n(&c->bad, 1, __ATOMIC_RELAXED)) c->value = v;
            o[i * s[0]] = 0;
            continue;
        }
        o[i * s[0]] = (int64_t)v;
    }
}

mrt_status mrt_tensor_copy(mrt_tensor *dst, const mrt_tensor *src)
{
    if (!dst->storage || !src->storage)
        return mrt_fail(MRT_ERR_ARG, "copy: tensor has been released");
    if (dst->storage->device != src->storage->device) return mrt_tensor_copy_across(dst, src);
    mrt_device dev;
    MRT_OP_DEVICE("copy", &dev, dst, src);
    int nd;
    int64_t shape[MRT_MAX_DIMS];
    mrt_status st = mrt_broadcast_shape("copy", dst, src, &nd, shape);
    int fits = st == MRT_OK && nd == dst->ndim;
    for (int i = 0; fits && i < nd; i++) fits = shape[i] == dst->shape[i];
    if (!fits) {
        char x[MRT_SHAPE_STRLEN], y[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "copy: source of shape %s does not broadcast to %s",
                        mrt_shape_str(src->ndim, src->shape, y, sizeof y),
                        mrt_shape_str(dst->ndim, dst->shape, x, sizeof x));
    }
    MRT_BACKEND_CALL(st, "copy", dev, tensor, copy, (dst, src));
    return st;
}

mrt_status mrt_cpu_copy(mrt_tensor *dst, const mrt_tensor *src)
{
    mrt_row_fn fn = dst->dtype == MRT_F32 ? (src->dtype == MRT_F32 ? row_copy_ff : row_copy_fl)
                                          : (src->dtype == MRT_F32 ? row_copy_lf : row_copy_ll);
    to_long_ctx check = {0, 0.0f};
    mrt_iter it;
    mrt_iter_init(&it, dst->ndim, dst->shape);
    mrt_iter_add(&it, dst);
    mrt_iter_add(&it, src);
    mrt_iter_run(&it, fn, &check);
    if (check.bad)
        return mrt_fail(MRT_ERR_ARG, "copy to int64: the float32 source holds %g, which has no int64 value "
                        "(NaN, infinite or beyond +-2^63)", (double)check.value);
    return MRT_OK;
}

typedef struct { double start, step; } range_ctx;

static void row_fill_range_f(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    const range_ctx *r = ctx;
    float *o = (float *)p[0];
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = (float)(r->start + r->step * (double)(start + i));
}

static void row_fill_range_l(void *ctx, char **p, const int64_t *s, int64_t n, int64_t start)
{
    const range_ctx *r = ctx;
    int64_t *o = (int64_t *)p[0];
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = (int64_t)(r->start + r->step * (double)(start + i));
}

mrt_status mrt_tensor_fill_range(mrt_tensor *t, double start, double step)
{
    if (!t->storage) return mrt_fail(MRT_ERR_ARG, "fill: tensor has been released");
    mrt_device dev;
    MRT_OP_DEVICE("fill", &dev, t);
    mrt_status st;
    MRT_BACKEND_CALL(st, "fill", dev, tensor, fill_range, (t, start, step));
    return st;
}

mrt_status mrt_tensor_fill(mrt_tensor *t, double value)
{
    if (!t->storage) return mrt_fail(MRT_ERR_ARG, "fill: tensor has been released");
    /* The conversion to int64 of NaN, of 1e300 or of 1.5 would be undefined
     * or silently truncated; up to 2^53 every integer is exact in a double. */
    if (t->dtype == MRT_I64 && !(fabs(value) <= 9007199254740992.0 && value == floor(value)))
        return mrt_fail(MRT_ERR_ARG, "fill: an int64 tensor takes integers (at most 2^53 in "
                        "magnitude), got %.17g", value);
    mrt_device dev;
    MRT_OP_DEVICE("fill", &dev, t);
    mrt_status st;
    MRT_BACKEND_CALL(st, "fill", dev, tensor, fill, (t, value));
    return st;
}

mrt_status mrt_cpu_fill_range(mrt_tensor *t, double start, double step)
{
    range_ctx r = {start, step};
    mrt_iter it;
    mrt_iter_init(&it, t->ndim, t->shape);
    mrt_iter_add(&it, t);
    mrt_iter_run(&it, t->dtype == MRT_F32 ? row_fill_range_f : row_fill_range_l, &r);
    return MRT_OK;
}

mrt_status mrt_cpu_fill(mrt_tensor *t, double value)
{
    float f = (float)value;
    int64_t l = t->dtype == MRT_I64 ? (int64_t)value : 0; /* mrt_tensor_fill checked it */
    mrt_iter it;
    mrt_iter_init(&it, t->ndim, t->shape);
    mrt_iter_add(&it, t);
    if (t->dtype == MRT_F32) {
        mrt_iter_add_scalar(&it, &f, sizeof f);
        mrt_iter_run(&it, row_copy_ff, NULL);
    } else {
        mrt_iter_add_scalar(&it, &l, sizeof l);
        mrt_iter_run(&it, row_copy_ll, NULL);
    }
    return MRT_OK;
}
