/* Dropout on the device, with the semantics of runtime/nn/dropout.c.
 * Arguments arrive checked by mrt_dropout_forward / mrt_dropout_backward,
 * outputs (and the mask) allocated (see nn_common.h). */
#include "nn_common.h"


/* mask <- mask01 * scale; y <- x * mask. */
__global__ void k_dropout(mrt_cu_iter it, float scale, float *y, float *m, const float *x)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float k = m[off[1]] * scale;
        m[off[1]] = k;
        y[off[0]] = x[off[2]] * k;
    }
}

__global__ void k_mul3(mrt_cu_iter it, float *o, const float *a, const float *b)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        o[off[0]] = a[off[1]] * b[off[2]];
    }
}

/* The keep/drop draws are the CPU's (counter-based Philox, the same
 * generator state), made on the host and copied over: a mask for a given
 * seed is the same on both backends, and dropout in these models acts on
 * the small classifier input only. */
extern "C" mrt_status mrt_cu_dropout_forward(const mrt_tensor *x_in, double prob, mrt_rng *rng,
                                             mrt_tensor *y, mrt_tensor *m)
{
    /* m is never NULL: the op passes a temporary when the caller gives none. */
    static const char op[] = "dropout_forward";
    const mrt_tensor x = *x_in; /* y may be x */
    mrt_status st;
    if (prob == 0.0) {
        if (!(st = mrt_cu_fill(m, 1.0))) st = mrt_cu_copy(y, &x);
    } else if (prob == 1.0) {
        if (!(st = mrt_cu_fill(m, 0.0))) st = mrt_cu_fill(y, 0.0);
    } else {
        mrt_tensor host = {};
        if (!(st = mrt_tensor_alloc_uninit(&host, MRT_F32, x.ndim, x.shape)) &&
            !(st = mrt_rng_bernoulli(rng ? rng : mrt_rng_default(), &host, 1.0 - prob)))
            st = mrt_tensor_copy(m, &host);
        mrt_tensor_release(&host);
        if (!st) {
            mrt_cu_iter it;
            mrt_cu_iter_init(&it, x.ndim, x.shape);
            mrt_cu_iter_add(&it, y);
            mrt_cu_iter_add(&it, m);
            mrt_cu_iter_add(&it, &x);
            mrt_cu_iter_finish(&it);
            if (it.n > 0) {
                MRT_LAUNCH(k_dropout, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
                           (float)(1.0 / (1.0 - prob)), mrt_cu_f32(y), mrt_cu_f32(m), mrt_cu_f32(&x));
                st = mrt_cu_launched(op);
            }
        }
    }
    return st;
}

extern "C" mrt_status mrt_cu_dropout_backward(const mrt_tensor *dy_in, const mrt_tensor *mask_in,
                                              mrt_tensor *dx)
{
    static const char op[] = "dropout_backward";
    const mrt_tensor dy = *dy_in, m = *mask_in;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, dy.ndim, dy.shape);
    mrt_cu_iter_add(&it, dx);
    mrt_cu_iter_add(&it, &dy);
    mrt_cu_iter_add(&it, &m);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_mul3, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, mrt_cu_f32(dx),
               mrt_cu_f32(&dy), mrt_cu_f32(&m));
    return mrt_cu_launched(op);
}
