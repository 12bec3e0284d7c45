/* Optimizer updates on the device: one fused pass per buffer (a parameter,
 * or the flat buffer holding all of them), with the CPU's per-element
 * float32 arithmetic in the same order (see runtime/optim/optim.c), and
 * the sum of squares behind global-norm clipping (double, fixed blocks).
 * Buffers and configuration arrive checked by runtime/optim/optim.c. */
#include "cuda_common.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)blockDim.x * gridDim.x)

struct adamw_coef {
    float decay, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, neg_step_size;
};

__global__ void k_adamw(int64_t n, adamw_coef c, float *p, const float *g, float *m, float *v,
                        float *vmax)
{
    GRID_STRIDE(i, n)
    {
        const float gi = g[i];
        const float pi = __fmul_rn(p[i], c.decay);
        const float mi = __fadd_rn(__fmul_rn(m[i], c.b1), __fmul_rn(c.one_m_b1, gi));
        const float vi = __fadd_rn(__fmul_rn(v[i], c.b2), __fmul_rn(__fmul_rn(c.one_m_b2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float vhat = vi;
        if (vmax) {
            const float old = vmax[i];
            vhat = (old != old || old > vi) ? old : vi;
            vmax[i] = vhat;
        }
        const float denom = __fadd_rn(__fdiv_rn(sqrtf(vhat), c.bc2_sqrt), c.eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(c.neg_step_size, mi), denom));
    }
}

__global__ void k_sgd(int64_t n, float wd, float mom, float one_m_damp, float neg_lr, int decay,
                      int nesterov, int first, float *p, const float *g, float *buf)
{
    GRID_STRIDE(i, n)
    {
        float d = g[i];
        if (decay) d = __fadd_rn(d, __fmul_rn(wd, p[i]));
        if (buf) {
            const float b = first ? d : __fadd_rn(__fmul_rn(buf[i], mom), __fmul_rn(one_m_damp, d));
            buf[i] = b;
            d = nesterov ? __fadd_rn(d, __fmul_rn(mom, b)) : b;
        }
        p[i] = __fadd_rn(p[i], __fmul_rn(neg_lr, d));
    }
}

/* One partial per block of a fixed grid (shared-memory tree, double). */
__global__ void k_sum_squares(int64_t n, const float *x, double *part)
{
    __shared__ double s[MRT_CU_THREADS];
    const int t = threadIdx.x;
    double acc = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + t; i < n; i += (int64_t)blockDim.x * gridDim.x)
        acc += (double)x[i] * (double)x[i];
    s[t] = acc;
    __syncthreads();
    for (int w = MRT_CU_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) s[t] += s[t + w];
        __syncthreads();
    }
    if (t == 0) part[blockIdx.x] = s[0];
}

extern "C" mrt_status mrt_cu_adamw_step(mrt_tensor *param, const mrt_tensor *grad,
                                        mrt_tensor *exp_avg, mrt_tensor *exp_avg_sq,
                                        mrt_tensor *max_exp_avg_sq, const mrt_adamw_config *cfg,
                                        int64_t step)
{
    static const char op[] = "adamw_step";
    const int64_t n = mrt_tensor_numel(param);
    if (n == 0) return MRT_OK;
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    adamw_coef c;
    c.decay = (float)(1.0 - cfg->lr * cfg->weight_decay);
    c.b1 = (float)cfg->beta1;
    c.one_m_b1 = (float)(1.0 - cfg->beta1);
    c.b2 = (float)cfg->beta2;
    c.one_m_b2 = (float)(1.0 - cfg->beta2);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.eps = (float)cfg->eps;
    c.neg_step_size = (float)(-(cfg->lr / bc1));
    MRT_LAUNCH(k_adamw, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, c, mrt_cu_f32(param),
               mrt_cu_f32(grad), mrt_cu_f32(exp_avg), mrt_cu_f32(exp_avg_sq),
               cfg->amsgrad ? mrt_cu_f32(max_exp_avg_sq) : (float *)NULL);
    return mrt_cu_launched(op);
}

extern "C" mrt_status mrt_cu_sgd_step(mrt_tensor *param, const mrt_tensor *grad,
                                      mrt_tensor *momentum_buf, const mrt_sgd_config *cfg, int first)
{
    static const char op[] = "sgd_step";
    const int use_momentum = cfg->momentum != 0.0;
    const int64_t n = mrt_tensor_numel(param);
    if (n == 0) return MRT_OK;
    MRT_LAUNCH(k_sgd, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, (float)cfg->weight_decay,
               (float)cfg->momentum, (float)(1.0 - cfg->dampening), (float)(-cfg->lr),
               cfg->weight_decay != 0.0, cfg->nesterov, first, mrt_cu_f32(param), mrt_cu_f32(grad),
               use_momentum ? mrt_cu_f32(momentum_buf) : (float *)NULL);
    return mrt_cu_launched(op);
}

extern "C" mrt_status mrt_cu_sum_squares(const mrt_tensor *t, double *out)
{
    static const char op[] = "sum_squares";
    mrt_status st;
    const int64_t n = mrt_tensor_numel(t);
    if (n == 0) {
        *out = 0.0;
        return MRT_OK;
    }
    const unsigned nb = mrt_cu_blocks(n, MRT_CU_REDUCE_BLOCKS);
    void *part = NULL;
    size_t cap = 0;
    if ((st = mrt_cu_scratch(nb * sizeof(double), &part, &cap))) return st;
    MRT_LAUNCH_SYNC(k_sum_squares, nb, MRT_CU_THREADS, mrt_cu_stream(), n, mrt_cu_f32(t),
                    (double *)part);
    double host[MRT_CU_REDUCE_BLOCKS];
    st = mrt_cu_launched(op);
    if (!st) st = mrt_backend_get(MRT_CUDA)->memory.to_host(host, part, nb * sizeof(double));
    mrt_cu_scratch_free(part, cap);
    if (st) return st;
    double acc = 0.0;
    for (unsigned b = 0; b < nb; b++) acc += host[b];
    *out = acc;
    return MRT_OK;
}

extern "C" void mrt_cu_register_optim_ops(mrt_backend *b)
{
    b->optim.adamw_step = mrt_cu_adamw_step;
    b->optim.sgd_step = mrt_cu_sgd_step;
    b->optim.sum_squares = mrt_cu_sum_squares;
}
