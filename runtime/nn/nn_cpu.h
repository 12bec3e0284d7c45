/* Internal: the CPU layer kernels, the CPU backend's nn table (backend.c).
 *
 * Each has the signature of its public op in machrt/nn.h and is called by
 * that op once the arguments are checked and the outputs allocated on the
 * CPU (see nn_args.h): a kernel only computes. Outputs may still be
 * strided or share storage with an input; a kernel that cannot write them
 * in place computes aside and copies in. */
#ifndef MACHRT_NN_CPU_H
#define MACHRT_NN_CPU_H

#include "machrt/nn.h"

mrt_status mrt_cpu_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                  const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws);
mrt_status mrt_cpu_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                   const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                   mrt_tensor *db, mrt_workspace *ws);
mrt_status mrt_cpu_linear_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                  mrt_tensor *y);
mrt_status mrt_cpu_linear_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                   mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db);
mrt_status mrt_cpu_batchnorm2d_forward(const mrt_tensor *x, const mrt_tensor *weight,
                                       const mrt_tensor *bias, mrt_tensor *running_mean,
                                       mrt_tensor *running_var, int training, double momentum,
                                       double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                       mrt_tensor *save_invstd);
mrt_status mrt_cpu_batchnorm2d_backward(const mrt_tensor *x, const mrt_tensor *dy,
                                        const mrt_tensor *weight, const mrt_tensor *save_mean,
                                        const mrt_tensor *save_invstd, int training,
                                        mrt_tensor *dx, mrt_tensor *dweight, mrt_tensor *dbias);
mrt_status mrt_cpu_relu_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_cpu_relu_backward(const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx);
mrt_status mrt_cpu_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p,
                                     mrt_tensor *y, mrt_tensor *indices);
mrt_status mrt_cpu_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices,
                                      int64_t in_h, int64_t in_w, mrt_tensor *dx);
/* MRT_ERR_INDEX naming the first index (row-major) outside the H x W input
 * plane; `indices` is on the host. Shared with the CUDA kernel's error path. */
mrt_status mrt_maxpool2d_check_indices(const char *op, const mrt_tensor *indices, int64_t H,
                                       int64_t W);
mrt_status mrt_cpu_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_cpu_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                           mrt_tensor *dx);
mrt_status mrt_cpu_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                               mrt_tensor *y);
mrt_status mrt_cpu_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                                mrt_tensor *dp);
mrt_status mrt_cpu_dropout_forward(const mrt_tensor *x, double prob, mrt_rng *rng, mrt_tensor *y,
                                   mrt_tensor *mask);
mrt_status mrt_cpu_dropout_backward(const mrt_tensor *dy, const mrt_tensor *mask, mrt_tensor *dx);
mrt_status mrt_cpu_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                      double *loss);
mrt_status mrt_cpu_bce_logits_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                       mrt_tensor *dlogits);
mrt_status mrt_cpu_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                         double *loss);
mrt_status mrt_cpu_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                          mrt_tensor *dlogits);
mrt_status mrt_cpu_margin_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                                const mrt_margin_ce_params *p, double *loss);
mrt_status mrt_cpu_margin_cross_entropy_backward(const mrt_tensor *logits,
                                                 const mrt_tensor *target,
                                                 const mrt_margin_ce_params *p,
                                                 mrt_tensor *dlogits);

#endif
