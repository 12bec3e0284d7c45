/* Internal: the CPU optimizer kernels, the CPU backend's optim table
 * (backend.c). Each has the signature of its public op in machrt/optim.h
 * and is called by it once the buffers and the configuration are checked:
 * a kernel only computes. */
#ifndef MACHRT_OPTIM_CPU_H
#define MACHRT_OPTIM_CPU_H

#include "machrt/optim.h"

mrt_status mrt_cpu_adamw_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *exp_avg,
                              mrt_tensor *exp_avg_sq, mrt_tensor *max_exp_avg_sq,
                              const mrt_adamw_config *cfg, int64_t step);
mrt_status mrt_cpu_sgd_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *momentum_buf,
                            const mrt_sgd_config *cfg, int first);
mrt_status mrt_cpu_sum_squares(const mrt_tensor *t, double *out);

#endif
