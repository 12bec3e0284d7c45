/* What the CUDA layer kernels share (see nn_common.h): output targets,
 * per-channel sums, and the nn table of the backend. */
#include "nn_common.h"

mrt_status target_open(mrt_tensor *dst, const mrt_tensor *const *inputs, int ninputs,
                       int accumulate, out_target *tg)
{
    tg->dst = dst;
    tg->aside = 0;
    tg->accumulate = accumulate;
    int ok = mrt_tensor_is_contiguous(dst);
    for (int i = 0; ok && i < ninputs; i++)
        if (inputs[i] && inputs[i]->storage == dst->storage) ok = 0;
    if (ok) {
        tg->t = *dst;
        return MRT_OK;
    }
    tg->aside = 1;
    tg->t = mrt_tensor{};
    mrt_status st = mrt_tensor_alloc_on(&tg->t, MRT_F32, dst->ndim, dst->shape, MRT_CUDA);
    if (!st && accumulate && (st = mrt_cu_fill(&tg->t, 0.0))) mrt_tensor_release(&tg->t);
    return st;
}

mrt_status target_close(out_target *tg, mrt_status st)
{
    if (tg->aside) {
        if (!st)
            st = tg->accumulate ? mrt_cu_binary(MRT_ADD, tg->dst, &tg->t, tg->dst)
                                : mrt_cu_copy(tg->dst, &tg->t);
        mrt_tensor_release(&tg->t);
    }
    return st;
}

/* ---- per-channel sums: one block per channel, a shared-memory tree ------------------ */

/* mode 0: s1 = sum x. mode 1: s1 = sum (x - mean_c)^2. mode 2: s1 = sum dy,
 * s2 = sum dy * (x - mean_c). x, dy dense N,C,HW. out: 2 doubles per channel. */
__global__ void k_channel_sums(int mode, int64_t N, int64_t C, int64_t HW, const float *x,
                               const float *dy, const float *mean, double *out)
{
    __shared__ double s1[MRT_CU_THREADS];
    __shared__ double s2[MRT_CU_THREADS];
    const int64_t c = blockIdx.x;
    const int t = threadIdx.x;
    const double m = mean ? (double)mean[c] : 0.0;
    double a1 = 0.0, a2 = 0.0;
    const int64_t count = N * HW;
    for (int64_t k = t; k < count; k += blockDim.x) {
        const int64_t at = (k / HW) * C * HW + c * HW + k % HW;
        if (mode == 0) {
            a1 += (double)x[at];
        } else if (mode == 1) {
            const double d = (double)x[at] - m;
            a1 += d * d;
        } else {
            const double g = (double)dy[at];
            a1 += g;
            a2 += g * ((double)x[at] - m);
        }
    }
    s1[t] = a1;
    s2[t] = a2;
    __syncthreads();
    for (int w = MRT_CU_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) {
            s1[t] += s1[t + w];
            s2[t] += s2[t + w];
        }
        __syncthreads();
    }
    if (t == 0) {
        out[2 * c] = s1[0];
        out[2 * c + 1] = s2[0];
    }
}

mrt_status channel_sums(const char *op, int mode, int64_t N, int64_t C, int64_t HW,
                               const float *x, const float *dy, const float *mean, double *out)
{
    if (C == 0) return MRT_OK;
    MRT_LAUNCH_SYNC(k_channel_sums, (unsigned)C, MRT_CU_THREADS, mrt_cu_stream(), mode, N, C, HW,
                    x, dy, mean, out);
    return mrt_cu_launched(op);
}



extern "C" void mrt_cu_register_nn_ops(mrt_backend *b)
{
    b->nn.conv2d_forward = mrt_cu_conv2d_forward;
    b->nn.conv2d_backward = mrt_cu_conv2d_backward;
    b->nn.linear_forward = mrt_cu_linear_forward;
    b->nn.linear_backward = mrt_cu_linear_backward;
    b->nn.batchnorm2d_forward = mrt_cu_batchnorm2d_forward;
    b->nn.batchnorm2d_backward = mrt_cu_batchnorm2d_backward;
    b->nn.relu_forward = mrt_cu_relu_forward;
    b->nn.relu_backward = mrt_cu_relu_backward;
    b->nn.maxpool2d_forward = mrt_cu_maxpool2d_forward;
    b->nn.maxpool2d_backward = mrt_cu_maxpool2d_backward;
    b->nn.avgpool_global_forward = mrt_cu_avgpool_global_forward;
    b->nn.avgpool_global_backward = mrt_cu_avgpool_global_backward;
    b->nn.gem_forward = mrt_cu_gem_forward;
    b->nn.gem_backward = mrt_cu_gem_backward;
    b->nn.dropout_forward = mrt_cu_dropout_forward;
    b->nn.dropout_backward = mrt_cu_dropout_backward;
    b->nn.bce_logits_forward = mrt_cu_bce_logits_forward;
    b->nn.bce_logits_backward = mrt_cu_bce_logits_backward;
    b->nn.cross_entropy_forward = mrt_cu_cross_entropy_forward;
    b->nn.cross_entropy_backward = mrt_cu_cross_entropy_backward;
    b->nn.margin_cross_entropy_forward = mrt_cu_margin_cross_entropy_forward;
    b->nn.margin_cross_entropy_backward = mrt_cu_margin_cross_entropy_backward;
}
