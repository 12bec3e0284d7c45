/* Optimizer updates over contiguous float32 buffers, with PyTorch's exact
 * update rules. Each call updates one buffer (a parameter, or a flat buffer
 * holding many) in a single pass; state tensors have the parameter's shape
 * and start zeroed. */
#ifndef MACHRT_OPTIM_H
#define MACHRT_OPTIM_H

#include "machrt/tensor.h"

typedef struct mrt_adamw_config {
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad; /* 0: off (PyTorch's default) */
} mrt_adamw_config;

/* torch.optim.AdamW, `step` = 1 for the first update (bias correction).
 * param -= lr*wd*param; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 * param -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).
 * max_v is used only with amsgrad (may be NULL otherwise). */
mrt_status mrt_adamw_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *exp_avg,
                          mrt_tensor *exp_avg_sq, mrt_tensor *max_exp_avg_sq,
                          const mrt_adamw_config *cfg, int64_t step);

typedef struct mrt_sgd_config {
    double lr, momentum, dampening, weight_decay;
    int nesterov;
} mrt_sgd_config;

/* torch.optim.SGD. `first` = 1 on the first step (the momentum buffer is
 * then set to the gradient, as PyTorch does). momentum_buf may be NULL when
 * momentum == 0. */
mrt_status mrt_sgd_step(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *momentum_buf,
                        const mrt_sgd_config *cfg, int first);

/* Sum of squares of a buffer (double accumulation; for global-norm clipping). */
mrt_status mrt_sum_squares(const mrt_tensor *t, double *out);

#endif
