/* An inference plan for convolutional bodies (ResNets) on the CPU, on
 * oneDNN primitives.
 *
 * The plan is a list of operations on numbered values: value 0 is the
 * input (N x C x H x W, fp32, contiguous), and every operation makes one new
 * value. A convolution carries its batch norm folded into its weights and
 * bias (evaluation statistics), its ReLU and an optional residual summand
 * (added before the ReLU), all as one oneDNN convolution with post-ops.
 * Between operations the values stay in the layout oneDNN prefers and in
 * the plan's precision (bf16 activations in a bf16 plan); only the input
 * and the last value are reordered, the last one into fp32 N x C x H x W.
 *
 * Primitives, weight layouts and activation buffers are made once per input
 * shape (N, H, W) and kept for the few shapes seen last. The plan copies
 * the weights it is given; the caller owns every other buffer. Calls on one
 * plan must not overlap. */
#ifndef MACHRT_INFER_PLAN_H
#define MACHRT_INFER_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include "machrt/status.h"

typedef struct mrt_infer_plan mrt_infer_plan;

typedef enum { MRT_INFER_F32 = 0, MRT_INFER_BF16 = 1 } mrt_infer_precision;

typedef struct {
    int cin, cout, kh, kw, sh, sw, ph, pw;
} mrt_infer_conv_geom;

/* Evaluation-mode batch norm after a convolution: y = (x - mean) /
 * sqrt(var + eps) * gamma + beta, per output channel. */
typedef struct {
    const float *gamma, *beta, *mean, *var;
    double eps;
} mrt_infer_bn;

/* A bf16 plan needs avx512_bf16 or AMX (mrt_infer_bf16_supported). */
mrt_status mrt_infer_plan_new(mrt_infer_precision precision, int in_channels, mrt_infer_plan **out);
void mrt_infer_plan_free(mrt_infer_plan *plan);
int mrt_infer_bf16_supported(void);

/* fp32 plans use Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions
 * unless this is turned off (on by default; bf16 plans never do). */
void mrt_infer_plan_set_winograd(mrt_infer_plan *plan, int on);

/* Appends a convolution of value `src` (residual: a value of the output's
 * shape added before the ReLU, or -1); *value is the new value. `name`
 * names the layer in error messages. Its weights are set next. */
mrt_status mrt_infer_plan_conv(mrt_infer_plan *plan, const char *name, int src, int residual,
                               const mrt_infer_conv_geom *geom, int relu, int *value);

/* (Re)sets the weights of convolution `value`: w is cout x cin x kh x kw,
 * bias (cout values) and bn are optional. Plans built for earlier shapes
 * take the new weights on their next forward. */
mrt_status mrt_infer_plan_set_weights(mrt_infer_plan *plan, int value, const float *w,
                                      const float *bias, const mrt_infer_bn *bn);

/* Appends a max pooling of value `src` (padding never wins the max). */
mrt_status mrt_infer_plan_maxpool(mrt_infer_plan *plan, const char *name, int src, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int *value);

/* The shape of the last value for an input of n x C x h x w. */
mrt_status mrt_infer_plan_output_shape(mrt_infer_plan *plan, int n, int h, int w, int64_t shape[4]);

/* Runs the plan on x (n x C x h x w, fp32, contiguous) into y (fp32,
 * contiguous, y_len floats: the output shape's count). */
mrt_status mrt_infer_plan_forward(mrt_infer_plan *plan, const float *x, int n, int c, int h, int w,
                                  float *y, size_t y_len);

/* For the input shape n x h x w (built if need be): how many reorders of
 * activations run between the input's and the output's, and one line per
 * step naming the oneDNN implementation, into buf. */
mrt_status mrt_infer_plan_describe(mrt_infer_plan *plan, int n, int h, int w, int *inner_reorders,
                                   char *buf, size_t len);

#endif
