/* Neural-network layer kernels (CPU), in the style of Torch7's THNN and
 * llm.c: plain functions with an explicit forward and backward.
 *
 * Conventions:
 *  - Images are NCHW float32 tensors; inputs may be any strided view unless
 *    a function says "contiguous".
 *  - Outputs (y, dx, ...) follow tensor.h's output convention: an empty
 *    tensor is allocated, an allocated one is checked and overwritten.
 *  - Parameter gradients (dw, db, dweight, dbias, dp) ACCUMULATE (+=) into
 *    allocated tensors of the parameter's shape, so gradient accumulation over
 *    several backward calls needs nothing special. Pass NULL to skip one.
 *  - Scratch memory is owned by the caller in an mrt_workspace that grows on
 *    demand and is reused across calls (one per model or per layer).
 *  - Shape errors name the function and the shapes; the Lua layer adds the
 *    module path (e.g. "layer2.0.conv1"). */
#ifndef MACHRT_NN_H
#define MACHRT_NN_H

#include "machrt/rng.h"
#include "machrt/tensor.h"

typedef struct mrt_workspace {
    float *data;
    size_t capacity; /* in floats */
} mrt_workspace;

/* Ensures at least `floats` floats of scratch (contents not preserved). */
mrt_status mrt_workspace_reserve(mrt_workspace *ws, size_t floats);
void mrt_workspace_free(mrt_workspace *ws);

/* ---- convolution: y[n,o] = b[o] + sum_c w[o,c] * x[n,c] (cross-correlation) */
typedef struct mrt_conv2d_params {
    int stride_h, stride_w;
    int pad_h, pad_w; /* zero padding */
    /* 1: no backward follows (evaluation), so the forward may use the faster
     * Winograd F(4x4, 3x3), whose rounding is larger (about 1e-5 relative)
     * but harmless when no gradient is taken from it. */
    int inference;
} mrt_conv2d_params;

/* x: N,C,H,W; w: O,C,KH,KW; b: O or NULL; y: N,O,OH,OW with
 * OH = (H + 2*pad_h - KH) / stride_h + 1. */
mrt_status mrt_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                              const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws);
/* dx (overwritten) = grad wrt x; dw += grad wrt w; db += grad wrt b.
 * dx, dw or db NULL skips that gradient; ws NULL uses a temporary workspace.
 * Forward uses Winograd F(2x2, 3x3) for 3x3 stride-1 layers (as accurate as
 * direct summation; F(4x4) changed three AdamW steps of a ResNet34 visibly),
 * backward F(4x4, 3x3); im2col + sgemm or a plain GEMM (1x1) otherwise. */
mrt_status mrt_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                               const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                               mrt_tensor *db, mrt_workspace *ws);

/* ---- linear: y = x w^T + b; x: N,IN; w: OUT,IN; b: OUT or NULL; y: N,OUT */
mrt_status mrt_linear_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                              mrt_tensor *y);
mrt_status mrt_linear_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                               mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db);

/* ---- batch norm over N,H,W per channel --------------------------------------
 * training: normalise with the batch mean and biased variance; update
 *   running_mean/var in place with `momentum` (running_var gets the unbiased
 *   variance), as PyTorch. evaluation: normalise with the running statistics.
 * save_mean/save_invstd (C each; output convention) receive the mean and
 * 1/sqrt(var + eps) that were used, for the backward pass. */
mrt_status mrt_batchnorm2d_forward(const mrt_tensor *x, const mrt_tensor *weight,
                                   const mrt_tensor *bias, mrt_tensor *running_mean,
                                   mrt_tensor *running_var, int training, double momentum,
                                   double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                   mrt_tensor *save_invstd);
/* training = 1: the statistics depend on x (full batch-norm gradient);
 * training = 0: they are constants.
 * NULL is accepted for weight/bias (no affine parameters), for the running
 * statistics in training, for save_mean/save_invstd in forward and for dx. */
mrt_status mrt_batchnorm2d_backward(const mrt_tensor *x, const mrt_tensor *dy,
                                    const mrt_tensor *weight, const mrt_tensor *save_mean,
                                    const mrt_tensor *save_invstd, int training, mrt_tensor *dx,
                                    mrt_tensor *dweight, mrt_tensor *dbias);

/* ---- ReLU: y may be x (in place). Backward from the output: dx = dy * (y > 0);
 * dx may be dy. */
mrt_status mrt_relu_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_relu_backward(const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx);

/* ---- max pooling (padding with -inf); indices (int64, y's shape) record the
 * flat h*W+w position of each maximum in its input plane. */
typedef struct mrt_pool2d_params {
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
} mrt_pool2d_params;
mrt_status mrt_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p, mrt_tensor *y,
                                 mrt_tensor *indices);
/* dx (overwritten, x's shape N,C,H,W given by dx when allocated, else by
 * `in_h`, `in_w`; 0 for both is allowed with an allocated dx, and values
 * that disagree with it are a shape error). indices may be NULL in forward
 * (then backward is not possible). */
mrt_status mrt_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices, int64_t in_h,
                                  int64_t in_w, mrt_tensor *dx);

/* ---- global average pooling (AdaptiveAvgPool2d(1)): x N,C,H,W -> y N,C */
mrt_status mrt_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y);
mrt_status mrt_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                       mrt_tensor *dx);

/* ---- GeM pooling: y[n,c] = (mean_hw clamp(x, eps)^p)^(1/p); p is a
 * one-element tensor (learnable). x N,C,H,W -> y N,C. */
mrt_status mrt_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps, mrt_tensor *y);
/* dx overwritten (NULL skips it); dp += d loss / d p. y is only
 * shape-checked: the mean is recomputed from x in double. */
mrt_status mrt_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                            const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                            mrt_tensor *dp);

/* ---- dropout (inverted: kept values scaled by 1/(1-prob)); mask (x's shape)
 * receives the per-element scale (0 or 1/(1-prob)) drawn from rng (NULL: the
 * default generator); mask may be NULL when no backward follows. */
mrt_status mrt_dropout_forward(const mrt_tensor *x, double prob, mrt_rng *rng, mrt_tensor *y,
                               mrt_tensor *mask);
mrt_status mrt_dropout_backward(const mrt_tensor *dy, const mrt_tensor *mask, mrt_tensor *dx);

/* ---- losses (mean reduction) -------------------------------------------------
 * BCE with logits, numerically stable: mean over every element of
 * max(z,0) - z*t + log(1 + exp(-|z|)); targets may be soft (in [0,1]). */
mrt_status mrt_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target, double *loss);
mrt_status mrt_bce_logits_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                   mrt_tensor *dlogits);
/* Cross entropy: logits N,C; target either int64 N (0-based class index) or
 * float32 N,C (class probabilities). Mean over N. */
mrt_status mrt_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                     double *loss);
mrt_status mrt_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                      mrt_tensor *dlogits);
/* Cross entropy with an additive angular margin on the true class, for
 * cosine heads (ArcFace, AdaCos): logits N,C hold scale * cos(theta_j), the
 * head's output; target int64 N (0-based class index). The loss is the
 * mean cross entropy of the logits out_scale * cos(theta_j) for the other
 * classes and out_scale * psi for the true class y, with c = cos(theta_y)
 * clamped to [-1, 1]: psi = cos(theta_y + margin) while c > cos(pi -
 * margin), else c - margin * sin(margin) (insightface's ArcFace). margin 0
 * with out_scale != scale is AdaCos's cross entropy at its adapted scale.
 * Backward gives dloss/dlogits (the clamp's derivative taken as 1). */
typedef struct mrt_margin_ce_params {
    double scale;     /* the scale the logits carry (> 0) */
    double margin;    /* the angular margin, in [0, pi/2) */
    double out_scale; /* the scale of the loss's logits (> 0) */
} mrt_margin_ce_params;
mrt_status mrt_margin_cross_entropy_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                            const mrt_margin_ce_params *p, double *loss);
mrt_status mrt_margin_cross_entropy_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                             const mrt_margin_ce_params *p, mrt_tensor *dlogits);

/* ---- Gaussian model and Mahalanobis distance (CPU only) --------------------
 * fit: mean (D), covariance (D,D) = (1-a) S + a trace(S)/D I with S the
 * maximum-likelihood covariance of x (N,D), N >= 2, and precision = its
 * inverse; shrinkage a in [0,1], or < 0 for Ledoit-Wolf (scikit-learn's),
 * the value used in *shrinkage_used (may be NULL). Empty outputs are
 * allocated. A singular covariance is an error. */
mrt_status mrt_gaussian_fit(const mrt_tensor *x, double shrinkage, mrt_tensor *mean,
                            mrt_tensor *cov, mrt_tensor *precision, double *shrinkage_used);
/* dist (N) = sqrt((x_i - mean)^T precision (x_i - mean)). */
mrt_status mrt_mahalanobis_forward(const mrt_tensor *x, const mrt_tensor *mean,
                                   const mrt_tensor *precision, mrt_tensor *dist);
/* dx (overwritten, N,D) = ddist_i precision (x_i - mean) / dist_i (0 where dist_i = 0);
 * precision must be symmetric. */
mrt_status mrt_mahalanobis_backward(const mrt_tensor *x, const mrt_tensor *mean,
                                    const mrt_tensor *precision, const mrt_tensor *dist,
                                    const mrt_tensor *ddist, mrt_tensor *dx);

#endif
