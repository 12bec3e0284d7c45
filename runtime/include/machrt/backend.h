/* Backends: one table of function pointers per op family, one table per
 * device.
 *
 * The public functions (mrt_binary, mrt_conv2d_forward, mrt_adamw_step, ...)
 * are the entry points, and each runs in three steps, as ggml builds and
 * checks its graph before a backend computes it:
 *   1. check: the device shared by the tensor arguments (MRT_OP_DEVICE:
 *      tensors on different devices are an MRT_ERR_DEVICE error naming
 *      both), then every dtype, shape and parameter (one check per layer,
 *      for forward and backward alike);
 *   2. plan: output shapes, outputs allocated on that device when empty
 *      (gradients zero-filled), checked when given;
 *   3. route: the device's table (MRT_BACKEND_CALL), whose functions
 *      receive validated, allocated arguments and only compute.
 * An argument error therefore reads the same on every device. The CPU
 * table points at the CPU kernels (mrt_cpu_*: runtime/cpu/tensor_cpu.h,
 * runtime/nn/nn_cpu.h, runtime/optim/optim_cpu.h, runtime/core/rng_cpu.h);
 * the mel front end runs its CPU body inline (runtime/audio/mel.c).
 *
 * The CUDA table exists only in builds with MRT_HAVE_CUDA (make CUDA=1, or
 * the emulation build of the test suite, where the same .cu sources run on
 * the CPU; see the CUDA section of README.md). Without it mrt_backend_get(MRT_CUDA)
 * is NULL and device tensors cannot be created. */
#ifndef MACHRT_BACKEND_H
#define MACHRT_BACKEND_H

#include "machrt/nn.h"
#include "machrt/optim.h"
#include "machrt/spectral.h"
#include "machrt/tensor.h"

typedef struct mrt_backend_memory {
    mrt_status (*alloc)(size_t nbytes, void **ptr, size_t *capacity);
    void (*free)(void *ptr, size_t capacity);
    /* Host <-> device copies of raw bytes (synchronous for the caller). */
    mrt_status (*to_device)(void *dst, const void *src, size_t nbytes);
    mrt_status (*to_host)(void *dst, const void *src, size_t nbytes);
    void (*stats)(size_t *live, size_t *cached, size_t *device_mallocs);
    void (*empty_cache)(void);
    mrt_status (*synchronize)(void);
    /* Asynchronous host -> device copy on the backend's copy stream: `src`
     * is staged into a pinned buffer before the call returns (the caller may
     * reuse it at once) and the transfer overlaps the compute stream's work.
     * *ready is an event the compute stream must wait for (wait_ready)
     * before `dst` is used; NULL when there is nothing to wait for. */
    mrt_status (*to_device_async)(void *dst, const void *src, size_t nbytes, void **ready);
    /* Makes the compute stream wait for `ready` (the host does not block)
     * and recycles the event. */
    mrt_status (*wait_ready)(void *ready);
    /* Pinned staging bytes held, pinned allocations made, async copies issued. */
    void (*copy_stats)(size_t *pinned_bytes, size_t *host_allocs, size_t *async_copies);
} mrt_backend_memory;

typedef struct mrt_backend_tensor {
    /* Same-device copy with broadcasting and dtype conversion. */
    mrt_status (*copy)(mrt_tensor *dst, const mrt_tensor *src);
    mrt_status (*fill)(mrt_tensor *t, double value);
    mrt_status (*fill_range)(mrt_tensor *t, double start, double step);
    mrt_status (*binary)(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
    mrt_status (*binary_scalar)(mrt_binop op, const mrt_tensor *a, double s, int scalar_left,
                                mrt_tensor *out);
    mrt_status (*unary)(mrt_unop op, const mrt_tensor *a, mrt_tensor *out);
    mrt_status (*reduce_all)(mrt_reduceop op, const mrt_tensor *a, double *value, int64_t *index);
    mrt_status (*reduce_dim)(mrt_reduceop op, const mrt_tensor *a, int dim, mrt_tensor *values,
                             mrt_tensor *indices);
    mrt_status (*matmul)(const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out);
} mrt_backend_tensor;

typedef struct mrt_backend_nn {
    mrt_status (*conv2d_forward)(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                 const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws);
    mrt_status (*conv2d_backward)(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                  const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                  mrt_tensor *db, mrt_workspace *ws);
    mrt_status (*linear_forward)(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                 mrt_tensor *y);
    mrt_status (*linear_backward)(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                  mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db);
    mrt_status (*batchnorm2d_forward)(const mrt_tensor *x, const mrt_tensor *weight,
                                      const mrt_tensor *bias, mrt_tensor *running_mean,
                                      mrt_tensor *running_var, int training, double momentum,
                                      double eps, mrt_tensor *y, mrt_tensor *save_mean,
                                      mrt_tensor *save_invstd);
    mrt_status (*batchnorm2d_backward)(const mrt_tensor *x, const mrt_tensor *dy,
                                       const mrt_tensor *weight, const mrt_tensor *save_mean,
                                       const mrt_tensor *save_invstd, int training,
                                       mrt_tensor *dx, mrt_tensor *dweight, mrt_tensor *dbias);
    mrt_status (*relu_forward)(const mrt_tensor *x, mrt_tensor *y);
    mrt_status (*relu_backward)(const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx);
    mrt_status (*maxpool2d_forward)(const mrt_tensor *x, const mrt_pool2d_params *p,
                                    mrt_tensor *y, mrt_tensor *indices);
    mrt_status (*maxpool2d_backward)(const mrt_tensor *dy, const mrt_tensor *indices,
                                     int64_t in_h, int64_t in_w, mrt_tensor *dx);
    mrt_status (*avgpool_global_forward)(const mrt_tensor *x, mrt_tensor *y);
    mrt_status (*avgpool_global_backward)(const mrt_tensor *dy, int64_t in_h, int64_t in_w,
                                          mrt_tensor *dx);
    mrt_status (*gem_forward)(const mrt_tensor *x, const mrt_tensor *p, double eps,
                              mrt_tensor *y);
    mrt_status (*gem_backward)(const mrt_tensor *x, const mrt_tensor *p, double eps,
                               const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                               mrt_tensor *dp);
    mrt_status (*dropout_forward)(const mrt_tensor *x, double prob, mrt_rng *rng, mrt_tensor *y,
                                  mrt_tensor *mask);
    mrt_status (*dropout_backward)(const mrt_tensor *dy, const mrt_tensor *mask, mrt_tensor *dx);
    mrt_status (*bce_logits_forward)(const mrt_tensor *logits, const mrt_tensor *target,
                                     double *loss);
    mrt_status (*bce_logits_backward)(const mrt_tensor *logits, const mrt_tensor *target,
                                      mrt_tensor *dlogits);
    mrt_status (*cross_entropy_forward)(const mrt_tensor *logits, const mrt_tensor *target,
                                        double *loss);
    mrt_status (*cross_entropy_backward)(const mrt_tensor *logits, const mrt_tensor *target,
                                         mrt_tensor *dlogits);
    mrt_status (*margin_cross_entropy_forward)(const mrt_tensor *logits, const mrt_tensor *target,
                                               const mrt_margin_ce_params *p, double *loss);
    mrt_status (*margin_cross_entropy_backward)(const mrt_tensor *logits,
                                                const mrt_tensor *target,
                                                const mrt_margin_ce_params *p,
                                                mrt_tensor *dlogits);
} mrt_backend_nn;

typedef struct mrt_backend_optim {
    mrt_status (*adamw_step)(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *exp_avg,
                             mrt_tensor *exp_avg_sq, mrt_tensor *max_exp_avg_sq,
                             const mrt_adamw_config *cfg, int64_t step);
    mrt_status (*sgd_step)(mrt_tensor *param, const mrt_tensor *grad, mrt_tensor *momentum_buf,
                           const mrt_sgd_config *cfg, int first);
    mrt_status (*sum_squares)(const mrt_tensor *t, double *out);
} mrt_backend_optim;

typedef struct mrt_backend_rng {
    mrt_status (*uniform)(mrt_rng *rng, mrt_tensor *t, double low, double high);
    mrt_status (*normal)(mrt_rng *rng, mrt_tensor *t, double mean, double std);
    mrt_status (*bernoulli)(mrt_rng *rng, mrt_tensor *t, double p);
} mrt_backend_rng;

/* The spectral front end. mel_forward receives a wave already checked and
 * made contiguous by mrt_mel_spec_forward (on the wave's device) and `out`
 * allocated there with the result's shape. */
typedef struct mrt_backend_audio {
    mrt_status (*mel_forward)(const mrt_mel_spec *m, const mrt_tensor *wave, mrt_tensor *out);
    mrt_status (*amplitude_to_db)(const mrt_tensor *x, double multiplier, double top_db,
                                  mrt_tensor *out);
} mrt_backend_audio;

typedef struct mrt_backend {
    const char *name;
    mrt_device device;
    mrt_backend_memory memory;
    mrt_backend_tensor tensor;
    mrt_backend_nn nn;
    mrt_backend_optim optim;
    mrt_backend_rng rng;
    mrt_backend_audio audio;
} mrt_backend;

/* The backend of `device`, or NULL when this build or machine has none. */
const mrt_backend *mrt_backend_get(mrt_device device);
/* 1 when this build has the CUDA backend (a device may still be missing). */
int mrt_cuda_built(void);
/* 1 when CUDA tensors can be created (built with CUDA and a device found). */
int mrt_cuda_available(void);
/* "emulated" (the .cu sources run on the CPU), "cuda" (a device) or "none". */
const char *mrt_cuda_mode(void);
/* For tests, in builds with the CUDA backend: the next n kernel launches
 * that are checked report a CUDA error, as a failing device would. */
void mrt_cuda_fail_launches(int n);
/* Operands of the GEMMs (convolutions, linear layers, matmul): "fp32",
 * "fp16" or "bf16", fp32 accumulation and outputs either way. On a CUDA
 * device all three; on the CPU "fp32" and "bf16", the latter where the CPU
 * has avx512_bf16 or AMX (elsewhere it says so once on stderr and stays
 * fp32: mrt_gemm_precision tells which). "fp16" on the CPU is an error. */
mrt_status mrt_set_gemm_precision(const char *mode);
const char *mrt_gemm_precision(void);
/* What multiplies bf16 on this CPU: "amx" (AMX tiles), "avx512_bf16"
 * (vector instructions only), or NULL (neither; bf16 falls back to fp32).
 * Honours MACHRT_CPU_FEATURES. */
const char *mrt_cpu_bf16_units(void);
/* One core's measured peak in GFLOP/s (runtime/cpu/peak.c): fp32 FMAs with
 * AVX-512 (else AVX2) and bf16 dot products with avx512_bf16, timed in
 * alternating trials of about 1 ms, best of 7 each (some 15 ms), once per
 * process: every later call returns the same figures, so a decision made on
 * them does not change within a run. 0 for a kind this CPU lacks; AMX is
 * not timed. */
void mrt_cpu_time_peaks(double *fp32_gflops, double *bf16_gflops);

/* The device shared by the allocated tensors in ts[0..n) (NULL and empty
 * ones are skipped; none allocated = the CPU). Different devices are an
 * MRT_ERR_DEVICE error naming `op` and both devices. */
mrt_status mrt_common_device(const char *op, const mrt_tensor *const *ts, int n,
                             mrt_device *device);

/* The failure of an op whose device's backend lacks it. */
mrt_status mrt_backend_missing(const char *op, mrt_device device);

/* Step 1 of a checked op: the device shared by the tensor arguments, into
 * *DEVP; returns the MRT_ERR_DEVICE error when they differ. */
#define MRT_OP_DEVICE(OPNAME, DEVP, ...)                                                       \
    do {                                                                                       \
        const mrt_tensor *const mrt_dev_ts_[] = {__VA_ARGS__};                                 \
        mrt_status mrt_dev_st_ = mrt_common_device(                                           \
            (OPNAME), mrt_dev_ts_, (int)(sizeof mrt_dev_ts_ / sizeof mrt_dev_ts_[0]), (DEVP)); \
        if (mrt_dev_st_) return mrt_dev_st_;                                                   \
    } while (0)

/* Step 3: ST = FAM.FN ARGS on the backend of DEV, once the arguments are
 * checked and the outputs allocated. */
#define MRT_BACKEND_CALL(ST, OPNAME, DEV, FAM, FN, ARGS)                                       \
    do {                                                                                       \
        const mrt_backend *const mrt_call_b_ = mrt_backend_get(DEV);                           \
        (ST) = mrt_call_b_ && mrt_call_b_->FAM.FN ? mrt_call_b_->FAM.FN ARGS                   \
                                                  : mrt_backend_missing((OPNAME), (DEV));      \
    } while (0)

/* ---- tensors across devices ---------------------------------------------- */
/* `out` must be empty: a contiguous copy of `t` on `device` (a new
 * reference to `t`'s storage when it is already there and contiguous). */
mrt_status mrt_tensor_to(const mrt_tensor *t, mrt_device device, mrt_tensor *out);
/* tensor.h's output convention on `device`: an empty `out` is allocated
 * there, an allocated one is checked (mrt_tensor_prepare_out's messages). */
mrt_status mrt_tensor_prepare_out_on(const char *op, mrt_tensor *out, mrt_dtype dtype, int ndim,
                                     const int64_t *shape, mrt_device device);
/* Allocates a contiguous tensor on `device`, contents undefined. */
mrt_status mrt_tensor_alloc_on(mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape,
                               mrt_device device);
/* Like mrt_tensor_to, but a CPU -> device copy does not wait: the values
 * travel on the copy stream while the device computes, and the first op
 * that uses `out` (any op routed to the device, a copy, a read, or the
 * release of its storage) first makes the compute stream wait for them
 * (mrt_storage_await). Other cases are mrt_tensor_to. */
mrt_status mrt_tensor_to_async(const mrt_tensor *t, mrt_device device, mrt_tensor *out);
/* Orders the device's compute stream after a pending asynchronous copy
 * into `s` (no-op when there is none). */
mrt_status mrt_storage_await(mrt_storage *s);
/* dst and src on different devices: src broadcast into dst, dtype converted
 * (mrt_tensor_copy comes here when the devices differ). */
mrt_status mrt_tensor_copy_across(mrt_tensor *dst, const mrt_tensor *src);
/* Reads / writes one element given its storage offset (in elements). */
mrt_status mrt_tensor_read_elem(const mrt_tensor *t, int64_t offset, void *value);
mrt_status mrt_tensor_write_elem(mrt_tensor *t, int64_t offset, const void *value);

#endif
