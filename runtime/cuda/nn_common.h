/* Shared by the CUDA layer kernels (conv2d.cu, linear.cu, batchnorm.cu,
 * activation.cu, pool.cu, dropout.cu, loss.cu), which mirror runtime/nn/.
 *
 * Every kernel is called by its public op in runtime/nn once the arguments
 * are checked and the outputs allocated on the device (see
 * runtime/nn/nn_args.h): these files only compute. Inputs may still be any
 * strided view (a kernel makes a dense device copy when it needs one) and
 * an output may be strided or share storage with an input: out_target then
 * computes aside and copies in. Sums are taken in double and in a fixed
 * order, so results do not depend on the launch. */
#ifndef MACHRT_CUDA_NN_COMMON_H
#define MACHRT_CUDA_NN_COMMON_H

#include "cuda_common.h"

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)blockDim.x * gridDim.x)

/* Where a kernel writes an allocated output: the output itself when it is
 * contiguous and shares no storage with the inputs, else a fresh
 * contiguous tensor (zero-filled when `accumulate`) that target_close
 * copies, or adds, into place. */
struct out_target {
    mrt_tensor *dst;
    mrt_tensor t; /* where the kernel writes */
    int aside, accumulate;
};
mrt_status target_open(mrt_tensor *dst, const mrt_tensor *const *inputs, int ninputs,
                       int accumulate, out_target *tg);
/* Ends a target: an aside result goes into place when st is MRT_OK. */
mrt_status target_close(out_target *tg, mrt_status st);

/* Dense device copies that release themselves. */
struct dense {
    mrt_tensor t;
    dense() : t() {}
    ~dense() { mrt_tensor_release(&t); }
    mrt_status of(const mrt_tensor *src) { return mrt_tensor_contiguous(src, &t); }
    float *f() const { return mrt_cu_f32(&t); }
    dense(const dense &) = delete;
    dense &operator=(const dense &) = delete;
};

/* Device scratch from the caching allocator, released with the object. */
struct scratch {
    void *p;
    size_t cap;
    scratch() : p(NULL), cap(0) {}
    ~scratch() { mrt_cu_scratch_free(p, cap); }
    mrt_status get(size_t nbytes) { return mrt_cu_scratch(nbytes, &p, &cap); }
    scratch(const scratch &) = delete;
    scratch &operator=(const scratch &) = delete;
};

/* Per-channel sums over dense N,C,HW, one block per channel (shared-memory
 * tree): mode 0: s1 = sum x; mode 1: s1 = sum (x - mean_c)^2; mode 2:
 * s1 = sum dy, s2 = sum dy * (x - mean_c). out: 2 doubles per channel. */
mrt_status channel_sums(const char *op, int mode, int64_t N, int64_t C, int64_t HW,
                        const float *x, const float *dy, const float *mean, double *out);

/* ---- the layer kernels, by file ------------------------------------------------------ */
extern "C" {
mrt_status mrt_cu_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                 const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws);
mrt_status mrt_cu_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                  const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                  mrt_tensor *db, mrt_workspace *ws);
mrt_status mrt_cu_linear_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                 mrt_tensor *y);
mrt_status mrt_cu_linear_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                  mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db);
mrt_status mrt_cu_batchnorm2d_forward(const mrt_tensor *x, const mrt_tensor *weight,
                                      const mrt_tensor *bias, mrt_tensor *running_mean,
                                      mrt_tensor *running_var, int training, double momentum,
                                      double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                      mrt_tensor *save_invstd);
mrt_status mrt_cu_batchnorm2d_backward(const mrt_tensor *x, const mrt_tensor *dy,
                                       const mrt_tensor *weight, const mrt_tensor *save_mean,
                                       const mrt_tensor *save_invstd, int training,
                                       mrt_tensor *dx, mrt_tensor *dweight, mrt_tensor *dbias);
mrt_status mrt_cu_relu_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_cu_relu_backward(const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx);
mrt_status mrt_cu_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p,
                                    mrt_tensor *y, mrt_tensor *indices);
mrt_status mrt_cu_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices,
                                     int64_t in_h, int64_t in_w, mrt_tensor *dx);
mrt_status mrt_cu_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_cu_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                          mrt_tensor *dx);
mrt_status mrt_cu_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                              mrt_tensor *y);
mrt_status mrt_cu_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                               const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                               mrt_tensor *dp);
mrt_status mrt_cu_dropout_forward(const mrt_tensor *x, double prob, mrt_rng *rng, mrt_tensor *y,
                                  mrt_tensor *mask);
mrt_status mrt_cu_dropout_backward(const mrt_tensor *dy, const mrt_tensor *mask, mrt_tensor *dx);
mrt_status mrt_cu_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                     double *loss);
mrt_status mrt_cu_bce_logits_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                      mrt_tensor *dlogits);
mrt_status mrt_cu_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                        double *loss);
mrt_status mrt_cu_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                         mrt_tensor *dlogits);
mrt_status mrt_cu_margin_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                               const mrt_margin_ce_params *p, double *loss);
mrt_status mrt_cu_margin_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                                const mrt_margin_ce_params *p,
                                                mrt_tensor *dlogits);
}

#endif
