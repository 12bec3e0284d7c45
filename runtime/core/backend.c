/* The backend tables and the device-level tensor helpers (see backend.h).
 *
 * The CPU table's entries are the CPU kernels, which the public ops call
 * once their arguments are checked and their outputs allocated; the audio
 * entries are the public functions, which run their CPU bodies inline. */
#include <stdio.h>
#include <string.h>
#include "machrt/backend.h"
#include "../nn/nn_cpu.h"
#include "../optim/optim_cpu.h"
#include "../cpu/tensor_cpu.h"
#include "../cpu/gemm.h"
#include "../cpu/cpu_features.h"
#include "rng_cpu.h"

static const mrt_backend cpu_backend = {
    .name = "cpu",
    .device = MRT_CPU,
    .tensor = {mrt_cpu_copy, mrt_cpu_fill, mrt_cpu_fill_range, mrt_cpu_binary,
               mrt_cpu_binary_scalar, mrt_cpu_unary, mrt_cpu_reduce_all, mrt_cpu_reduce_dim,
               mrt_cpu_matmul},
    .nn = {mrt_cpu_conv2d_forward, mrt_cpu_conv2d_backward, mrt_cpu_linear_forward,
           mrt_cpu_linear_backward, mrt_cpu_batchnorm2d_forward, mrt_cpu_batchnorm2d_backward,
           mrt_cpu_relu_forward, mrt_cpu_relu_backward, mrt_cpu_maxpool2d_forward,
           mrt_cpu_maxpool2d_backward, mrt_cpu_avgpool_global_forward,
           mrt_cpu_avgpool_global_backward, mrt_cpu_gem_forward, mrt_cpu_gem_backward,
           mrt_cpu_dropout_forward, mrt_cpu_dropout_backward, mrt_cpu_bce_logits_forward,
           mrt_cpu_bce_logits_backward, mrt_cpu_cross_entropy_forward,
           mrt_cpu_cross_entropy_backward, mrt_cpu_margin_cross_entropy_forward,
           mrt_cpu_margin_cross_entropy_backward},
    .optim = {mrt_cpu_adamw_step, mrt_cpu_sgd_step, mrt_cpu_sum_squares},
    .rng = {mrt_cpu_rng_uniform, mrt_cpu_rng_normal, mrt_cpu_rng_bernoulli},
    .audio = {mrt_mel_spec_forward, mrt_amplitude_to_db},
};

#ifdef MRT_HAVE_CUDA
/* runtime/cuda/backend.cu: NULL when no device can be used. */
const mrt_backend *mrt_cuda_backend(void);
const char *mrt_cuda_backend_mode(void);
mrt_status mrt_cuda_set_mixed_precision(const char *mode);
const char *mrt_cuda_mixed_precision(void);
#endif

mrt_status mrt_set_gemm_precision(const char *mode)
{
    const int fp32 = mode && strcmp(mode, "fp32") == 0;
    const int bf16 = mode && strcmp(mode, "bf16") == 0;
    if (!fp32 && !bf16 && mode && strcmp(mode, "fp16") != 0)
        return mrt_fail(MRT_ERR_ARG, "set_gemm_precision: unknown mode '%s' (fp32, fp16 or bf16)",
                        mode);
#ifdef MRT_HAVE_CUDA
    /* The CPU's GEMMs follow too, for models kept on the CPU; which of the
     * two mrt_gemm_precision reports is the device's. */
    if (mrt_cuda_backend()) {
        mrt_cpu_gemm_set_bf16(bf16);
        return mrt_cuda_set_mixed_precision(mode);
    }
#endif
    if (fp32 || bf16) {
        if (!mrt_cpu_gemm_set_bf16(bf16)) {
            /* Said once a process: every fold and evaluation asks again. */
            static int said;
            if (!said) {
                char f[128];
                fprintf(stderr, "machrt: bf16 GEMMs need a CPU with avx512_bf16 or AMX "
                        "(this one has %s); computing in fp32\n", mrt_cpu_features_str(f, sizeof f));
                said = 1;
            }
        }
        return MRT_OK;
    }
    return mrt_fail(MRT_ERR_DEVICE, "set_gemm_precision: %s GEMMs need a CUDA device (the CPU "
                    "computes in fp32 or bf16)", mode ? mode : "(null)");
}

const char *mrt_cpu_bf16_units(void)
{
    const unsigned f = mrt_cpu_features();
    return (f & MRT_CPU_AMX_BF16) ? "amx" : (f & MRT_CPU_AVX512_BF16) ? "avx512_bf16" : NULL;
}

const char *mrt_gemm_precision(void)
{
#ifdef MRT_HAVE_CUDA
    if (mrt_cuda_backend()) return mrt_cuda_mixed_precision();
#endif
    return mrt_cpu_gemm_bf16() ? "bf16" : "fp32";
}

const mrt_backend *mrt_backend_get(mrt_device device)
{
    if (device == MRT_CPU) return &cpu_backend;
#ifdef MRT_HAVE_CUDA
    if (device == MRT_CUDA) return mrt_cuda_backend();
#endif
    return NULL;
}

int mrt_cuda_built(void)
{
#ifdef MRT_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int mrt_cuda_available(void) { return mrt_backend_get(MRT_CUDA) != NULL; }

const char *mrt_cuda_mode(void)
{
#ifdef MRT_HAVE_CUDA
    return mrt_cuda_backend() ? mrt_cuda_backend_mode() : "none";
#else
    return "none";
#endif
}

mrt_status mrt_backend_missing(const char *op, mrt_device device)
{
    return mrt_fail(MRT_ERR_DEVICE, "%s: not available on %s", op, mrt_device_name(device));
}

mrt_status mrt_common_device(const char *op, const mrt_tensor *const *ts, int n,
                             mrt_device *device)
{
    int first = -1;
    for (int i = 0; i < n; i++) {
        if (!ts[i] || !ts[i]->storage) continue;
        if (first < 0) {
            first = i;
        } else if (ts[i]->storage->device != ts[first]->storage->device) {
            return mrt_fail(MRT_ERR_DEVICE,
                            "%s: expected all tensors on the same device, got %s and %s", op,
                            mrt_device_name(ts[first]->storage->device),
                            mrt_device_name(ts[i]->storage->device));
        }
    }
    *device = first < 0 ? MRT_CPU : ts[first]->storage->device;
    if (*device != MRT_CPU)
        for (int i = 0; i < n; i++)
            if (ts[i] && ts[i]->storage && ts[i]->storage->ready) {
                mrt_status st = mrt_storage_await(ts[i]->storage);
                if (st) return st;
            }
    return MRT_OK;
}

mrt_status mrt_storage_await(mrt_storage *s)
{
    if (!s || !s->ready) return MRT_OK;
    void *ready = s->ready;
    s->ready = NULL;
    const mrt_backend *b = mrt_backend_get(s->device);
    return b && b->memory.wait_ready ? b->memory.wait_ready(ready) : MRT_OK;
}

/* Raw bytes between a host buffer and a storage of any device. */
static mrt_status move_bytes(mrt_device dst_dev, void *dst, mrt_device src_dev, const void *src,
                             size_t nbytes)
{
    if (nbytes == 0) return MRT_OK;
    if (dst_dev == MRT_CPU && src_dev == MRT_CPU) {
        memcpy(dst, src, nbytes);
        return MRT_OK;
    }
    if (dst_dev != MRT_CPU && src_dev != MRT_CPU)
        return mrt_fail(MRT_ERR_DEVICE, "copy: between two devices (%s and %s)",
                        mrt_device_name(dst_dev), mrt_device_name(src_dev));
    const mrt_backend *b = mrt_backend_get(dst_dev != MRT_CPU ? dst_dev : src_dev);
    if (!b) return mrt_fail(MRT_ERR_DEVICE, "copy: no backend for the device");
    return dst_dev != MRT_CPU ? b->memory.to_device(dst, src, nbytes)
                              : b->memory.to_host(dst, src, nbytes);
}

mrt_status mrt_tensor_copy_across(mrt_tensor *dst, const mrt_tensor *src)
{
    const mrt_device dd = dst->storage->device, sd = src->storage->device;
    mrt_status st;
    if ((st = mrt_storage_await(dst->storage)) || (st = mrt_storage_await(src->storage)))
        return st;
    /* Fast path: the same contiguous layout on both sides, one transfer. */
    int same_shape = dst->ndim == src->ndim;
    for (int i = 0; same_shape && i < dst->ndim; i++) same_shape = dst->shape[i] == src->shape[i];
    if (same_shape && dst->dtype == src->dtype && mrt_tensor_is_contiguous(dst) &&
        mrt_tensor_is_contiguous(src)) {
        size_t es = mrt_dtype_size(dst->dtype);
        return move_bytes(dd, (char *)dst->storage->data + dst->offset * (int64_t)es, sd,
                          (const char *)src->storage->data + src->offset * (int64_t)es,
                          (size_t)mrt_tensor_numel(dst) * es);
    }
    /* Otherwise: contiguous on the source's device, one transfer, then the
     * destination device's own copy (broadcasting, dtype, strides). */
    mrt_tensor c = {0}, moved = {0};
    if ((st = mrt_tensor_contiguous(src, &c))) return st;
    if (!(st = mrt_tensor_alloc_on(&moved, c.dtype, c.ndim, c.shape, dd))) {
        size_t es = mrt_dtype_size(c.dtype);
        st = move_bytes(dd, moved.storage->data, sd,
                        (const char *)c.storage->data + c.offset * (int64_t)es,
                        (size_t)mrt_tensor_numel(&c) * es);
        if (!st) st = mrt_tensor_copy(dst, &moved);
    }
    mrt_tensor_release(&moved);
    mrt_tensor_release(&c);
    return st;
}

mrt_status mrt_tensor_to(const mrt_tensor *t, mrt_device device, mrt_tensor *out)
{
    if (!t->storage) return mrt_fail(MRT_ERR_ARG, "to: tensor has been released");
    if (device != MRT_CPU && !mrt_backend_get(device))
        return mrt_fail(MRT_ERR_DEVICE, "to: device '%s' is not available%s",
                        mrt_device_name(device),
#ifdef MRT_HAVE_CUDA
                        " (no CUDA device found)"
#else
                        " (machrt was built without CUDA)"
#endif
        );
    if (t->storage->device == device) return mrt_tensor_contiguous(t, out);
    mrt_tensor r = {0};
    mrt_status st = mrt_tensor_alloc_on(&r, t->dtype, t->ndim, t->shape, device);
    if (!st) st = mrt_tensor_copy_across(&r, t);
    if (st) {
        mrt_tensor_release(&r);
        return st;
    }
    *out = r;
    return MRT_OK;
}

mrt_status mrt_tensor_prepare_out_on(const char *op, mrt_tensor *out, mrt_dtype dtype, int ndim,
                                     const int64_t *shape, mrt_device device)
{
    if (!out->storage) return mrt_tensor_alloc_on(out, dtype, ndim, shape, device);
    return mrt_tensor_prepare_out(op, out, dtype, ndim, shape);
}

mrt_status mrt_tensor_to_async(const mrt_tensor *t, mrt_device device, mrt_tensor *out)
{
    if (!t->storage) return mrt_fail(MRT_ERR_ARG, "to: tensor has been released");
    const mrt_backend *b = device != MRT_CPU ? mrt_backend_get(device) : NULL;
    if (!b || !b->memory.to_device_async || t->storage->device != MRT_CPU ||
        !mrt_tensor_is_contiguous(t))
        return mrt_tensor_to(t, device, out);
    mrt_tensor r = {0};
    mrt_status st = mrt_tensor_alloc_on(&r, t->dtype, t->ndim, t->shape, device);
    if (!st) {
        size_t es = mrt_dtype_size(t->dtype);
        void *ready = NULL;
        st = b->memory.to_device_async(r.storage->data,
                                       (const char *)t->storage->data + t->offset * (int64_t)es,
                                       (size_t)mrt_tensor_numel(t) * es, &ready);
        r.storage->ready = ready;
    }
    if (st) {
        mrt_tensor_release(&r);
        return st;
    }
    *out = r;
    return MRT_OK;
}

mrt_status mrt_tensor_read_elem(const mrt_tensor *t, int64_t offset, void *value)
{
    size_t es = mrt_dtype_size(t->dtype);
    mrt_status st = mrt_storage_await(t->storage);
    if (st) return st;
    return move_bytes(MRT_CPU, value, t->storage->device,
                      (const char *)t->storage->data + offset * (int64_t)es, es);
}

mrt_status mrt_tensor_write_elem(mrt_tensor *t, int64_t offset, const void *value)
{
    size_t es = mrt_dtype_size(t->dtype);
    mrt_status st = mrt_storage_await(t->storage);
    if (st) return st;
    return move_bytes(t->storage->device, (char *)t->storage->data + offset * (int64_t)es,
                      MRT_CPU, value, es);
}
