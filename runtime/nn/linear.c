/* Fully connected layer: y = x w^T + b, as one sgemm each way.
 *
 *   forward   y[N][OUT]   = x[N][IN] . w[OUT][IN]^T (+ b)
 *   backward  dx[N][IN]   = dy[N][OUT] . w[OUT][IN]
 *             dw[OUT][IN] += dy^T . x       (sgemm with beta = 1)
 *             db[OUT]     += column sums of dy
 * Strided operands are made contiguous first (they are small: the ResNet head
 * is 32 x 512 x 4); outputs that are strided or share storage with an input
 * are computed aside and copied in. */
#include "../cpu/gemm.h"
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "nn_args.h"
#include "nn_cpu.h"

#define SHP(t, buf) mrt_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

static mrt_status check_shapes(const char *fn, const mrt_tensor *x, const mrt_tensor *w,
                               const mrt_tensor *b)
{
    char xs[MRT_SHAPE_STRLEN], ws[MRT_SHAPE_STRLEN], bs[MRT_SHAPE_STRLEN];
    mrt_status st;
    if ((st = mrt_nn_need_f32(fn, "input", x)) || (st = mrt_nn_need_f32(fn, "weight", w))) return st;
    if (b && (st = mrt_nn_need_f32(fn, "bias", b))) return st;
    if (x->ndim != 2)
        return mrt_fail(MRT_ERR_SHAPE, "%s: input must be 2-D (N,IN), got %s (weight %s)", fn,
                        SHP(x, xs), SHP(w, ws));
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1)
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: weight must be 2-D (OUT,IN) and non-empty, got %s (input %s)", fn,
                        SHP(w, ws), SHP(x, xs));
    if (x->shape[1] != w->shape[1])
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: input %s has %" PRId64 " features, weight %s expects %" PRId64, fn,
                        SHP(x, xs), x->shape[1], SHP(w, ws), w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: bias %s does not match weight %s (expected %" PRId64 " elements)",
                        fn, SHP(b, bs), SHP(w, ws), w->shape[0]);
    if (x->shape[0] > INT_MAX || w->shape[0] > INT_MAX || w->shape[1] > INT_MAX)
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s with weight %s is too large", fn,
                        SHP(x, xs), SHP(w, ws));
    return MRT_OK;
}

mrt_status mrt_linear_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                              mrt_tensor *y)
{
    static const char fn[] = "linear_forward";
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, b, y);
    mrt_status st;
    if ((st = check_shapes(fn, x, w, b))) return st;
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: no output tensor given", fn);
    const int64_t yshape[2] = {x->shape[0], w->shape[0]};
    mrt_nn_out slot;
    if ((st = mrt_nn_out_check(fn, &slot, y, "y", MRT_F32, 2, yshape)) ||
        (st = mrt_nn_out_alloc(&slot, 1, dev)))
        return st;
    if (x->shape[0] == 0) return MRT_OK;
    MRT_BACKEND_CALL(st, fn, dev, nn, linear_forward, (x, w, b, y));
    return mrt_nn_out_discard(&slot, 1, st);
}

mrt_status mrt_cpu_linear_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                  mrt_tensor *y)
{
    const int64_t n = x->shape[0], in = w->shape[1], out = w->shape[0];
    mrt_status st = MRT_OK;
    mrt_tensor xc = {0}, wc = {0}, bc = {0}, yt = {0};
    const mrt_tensor *ins[3] = {x, w, b};
    int aside = 0;
    if ((st = mrt_tensor_contiguous(x, &xc)) || (st = mrt_tensor_contiguous(w, &wc)) ||
        (b && (st = mrt_tensor_contiguous(b, &bc))) ||
        (st = mrt_nn_write_target(y, ins, 3, 0, &yt, &aside)))
        goto done;
    float *yp = mrt_f32(&yt);
    /* The bias is laid down first and sgemm adds the product to it. */
    if (b) {
        const float *bp = mrt_f32(&bc);
        for (int64_t i = 0; i < n; i++) memcpy(yp + i * out, bp, sizeof(float) * (size_t)out);
    }
    mrt_cpu_gemm(CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f,
                 mrt_f32(&xc), (int)in, mrt_f32(&wc), (int)in, b ? 1.0f : 0.0f, yp, (int)out);
    if (aside) st = mrt_tensor_copy(y, &yt);
done:
    if (aside) mrt_tensor_release(&yt);
    mrt_tensor_release(&xc);
    mrt_tensor_release(&wc);
    mrt_tensor_release(&bc);
    return st;
}

mrt_status mrt_linear_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                               mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db)
{
    static const char fn[] = "linear_backward";
    char s1[MRT_SHAPE_STRLEN], s2[MRT_SHAPE_STRLEN], s3[MRT_SHAPE_STRLEN];
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, dy, dx, dw, db);
    mrt_status st;
    if ((st = check_shapes(fn, x, w, NULL)) || (st = mrt_nn_need_f32(fn, "grad_output", dy)))
        return st;
    const int64_t n = x->shape[0], out = w->shape[0];
    if (dy->ndim != 2 || dy->shape[0] != n || dy->shape[1] != out)
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: grad_output %s does not match the output shape %" PRId64
                        "x%" PRId64 " of input %s and weight %s",
                        fn, SHP(dy, s1), n, out, SHP(x, s2), SHP(w, s3));
    /* Every output is checked before any is allocated; those allocated here
     * are released again if the kernel fails. */
    mrt_nn_out slots[3];
    if ((st = mrt_nn_out_check(fn, &slots[0], dx, "dx", MRT_F32, 2, x->shape)) ||
        (st = mrt_nn_grad_check(fn, &slots[1], dw, "weight gradient", 2, w->shape)) ||
        (st = mrt_nn_grad_check(fn, &slots[2], db, "bias gradient", 1, &out)) ||
        (st = mrt_nn_out_alloc(slots, 3, dev)))
        return st;
    if (n == 0) return MRT_OK;
    MRT_BACKEND_CALL(st, fn, dev, nn, linear_backward, (x, w, dy, dx, dw, db));
    return mrt_nn_out_discard(slots, 3, st);
}

mrt_status mrt_cpu_linear_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                   mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db)
{
    const int64_t n = x->shape[0], in = w->shape[1], out = w->shape[0];
    mrt_status st = MRT_OK;
    mrt_tensor xc = {0}, wc = {0}, dyc = {0}, dxt = {0}, dwt = {0}, dbt = {0};
    const mrt_tensor *ins[3] = {x, w, dy};
    int dx_aside = 0, dw_aside = 0, db_aside = 0;
    if ((st = mrt_tensor_contiguous(dy, &dyc))) goto done;
    if (dx && ((st = mrt_tensor_contiguous(w, &wc)) ||
               (st = mrt_nn_write_target(dx, ins, 3, 0, &dxt, &dx_aside))))
        goto done;
    if (dw && ((st = mrt_tensor_contiguous(x, &xc)) ||
               (st = mrt_nn_write_target(dw, ins, 3, 1, &dwt, &dw_aside))))
        goto done;
    if (db && (st = mrt_nn_write_target(db, ins, 3, 1, &dbt, &db_aside))) goto done;

    const float *dyp = mrt_f32(&dyc);
    if (dx)
        mrt_cpu_gemm(CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f,
                     dyp, (int)out, mrt_f32(&wc), (int)in, 0.0f, mrt_f32(&dxt), (int)in);
    if (dw)
        mrt_cpu_gemm(CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f,
                     dyp, (int)out, mrt_f32(&xc), (int)in, 1.0f, mrt_f32(&dwt), (int)in);
    if (db) {
        /* Each column is summed over the rows in order, as a loop down the
         * column would, but row after row: unit stride, vectorised. */
        double *sums = calloc((size_t)out, sizeof *sums);
        if (!sums) {
            st = mrt_fail(MRT_ERR_NOMEM, "linear_backward: out of memory for %" PRId64 " bias sums", out);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            const float *row = dyp + i * out;
#pragma omp simd
            for (int64_t o = 0; o < out; o++) sums[o] += (double)row[o];
        }
        float *dbp = mrt_f32(&dbt);
        for (int64_t o = 0; o < out; o++) dbp[o] += (float)sums[o];
        free(sums);
    }
    if (dx_aside && (st = mrt_tensor_copy(dx, &dxt))) goto done;
    if (dw_aside && (st = mrt_binary(MRT_ADD, dw, &dwt, dw))) goto done;
    if (db_aside && (st = mrt_binary(MRT_ADD, db, &dbt, db))) goto done;
done:
    if (dx_aside) mrt_tensor_release(&dxt);
    if (dw_aside) mrt_tensor_release(&dwt);
    if (db_aside) mrt_tensor_release(&dbt);
    mrt_tensor_release(&xc);
    mrt_tensor_release(&wc);
    mrt_tensor_release(&dyc);
    return st;
}
