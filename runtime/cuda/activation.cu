/* ReLU on the device, with the semantics of runtime/nn/activation.c (NaN
 * passes through; the backward pass takes the output). Arguments arrive
 * checked by mrt_relu_forward / mrt_relu_backward (see nn_common.h). */
#include "nn_common.h"


__global__ void k_relu(mrt_cu_iter it, float *y, const float *x)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float v = x[off[1]];
        y[off[0]] = (v > 0.0f || v != v) ? v : 0.0f;
    }
}

__global__ void k_relu_grad(mrt_cu_iter it, float *dx, const float *y, const float *dy)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float g = dy[off[2]];
        dx[off[0]] = y[off[1]] > 0.0f ? g : 0.0f;
    }
}

/* In place is safe: each element is read before it is written, by one thread. */
extern "C" mrt_status mrt_cu_relu_forward(const mrt_tensor *x_in, mrt_tensor *y)
{
    static const char op[] = "relu_forward";
    const mrt_tensor x = *x_in;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, x.ndim, x.shape);
    mrt_cu_iter_add(&it, y);
    mrt_cu_iter_add(&it, &x);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_relu, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, mrt_cu_f32(y),
               mrt_cu_f32(&x));
    return mrt_cu_launched(op);
}

extern "C" mrt_status mrt_cu_relu_backward(const mrt_tensor *y_in, const mrt_tensor *dy_in,
                                           mrt_tensor *dx)
{
    static const char op[] = "relu_backward";
    const mrt_tensor y = *y_in, dy = *dy_in;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, y.ndim, y.shape);
    mrt_cu_iter_add(&it, dx);
    mrt_cu_iter_add(&it, &y);
    mrt_cu_iter_add(&it, &dy);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_relu_grad, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
               mrt_cu_f32(dx), mrt_cu_f32(&y), mrt_cu_f32(&dy));
    return mrt_cu_launched(op);
}
