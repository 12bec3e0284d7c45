/* The CUDA backend: device state (one compute stream, one cuBLAS handle),
 * the caching device allocator, shared host helpers and the dispatch table.
 *
 * Caching allocator: cudaMalloc and cudaFree synchronise the device and cost
 * tens of microseconds, so released blocks are kept in size classes (like
 * the CPU allocator in core/storage.c) and handed out again; a training
 * step allocates the same sizes as the step before, so after the first step
 * it calls cudaMalloc no more (device_mallocs in the stats counts the
 * calls). Every kernel runs on the one compute stream, so a block freed by
 * the host and reused for the next op is ordered after its last use.
 *
 * Copy stream: mem_to_device_async stages host data into a pinned buffer
 * (cudaHostAlloc'd once, cached and reused) and copies it on a second
 * stream, so the next batch travels while the compute stream works. The
 * copy first waits for the compute work issued so far (its destination may
 * be a block that work still reads); the compute stream waits for the
 * copy's event before the first use of the destination (mrt_storage_await
 * in core/backend.c); a staging buffer is taken again only once the event
 * recorded after its last copy has completed. */
#include "cuda_common.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int device_ok;
static cudaStream_t compute_stream, copy_stream;
static cublasHandle_t blas_handle;
static mrt_backend cuda_backend;

cudaStream_t mrt_cu_stream(void) { return compute_stream; }
cublasHandle_t mrt_cu_blas(void) { return blas_handle; }

mrt_status mrt_cu_check(const char *op, cudaError_t err)
{
    if (err == cudaSuccess) return MRT_OK;
    return mrt_fail(err == cudaErrorMemoryAllocation ? MRT_ERR_NOMEM : MRT_ERR_DEVICE,
                    "%s: CUDA error: %s", op, cudaGetErrorString(err));
}

mrt_status mrt_cu_check_blas(const char *op, cublasStatus_t st)
{
    if (st == CUBLAS_STATUS_SUCCESS) return MRT_OK;
    return mrt_fail(MRT_ERR_DEVICE, "%s: cuBLAS error %d", op, (int)st);
}

/* Launch failures asked for by mrt_cuda_fail_launches (tests). */
static std::atomic<int> failing_launches{0};

extern "C" void mrt_cuda_fail_launches(int n) { failing_launches.store(n); }

mrt_status mrt_cu_launched(const char *op)
{
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess && failing_launches.load() > 0 && failing_launches.fetch_sub(1) > 0)
        err = cudaErrorInvalidConfiguration;
    return mrt_cu_check(op, err);
}

/* ---- caching allocator ------------------------------------------------------------- */

static std::mutex cache_lock;
static std::multimap<size_t, void *> cache_free;
static size_t live_bytes, cached_bytes, device_mallocs;

/* The copy stream's pinned staging buffers (see mem_to_device_async). */
struct staging_buffer {
    void *host;
    size_t capacity;
    cudaEvent_t done; /* recorded on the copy stream after the last copy from it */
};

/* A few buffers cover a copy in flight while the next one is staged. */
static const size_t STAGING_MAX = 4;
static std::mutex copy_lock;
/* Never destroyed: the buffers and events live as long as the process and
 * stay reachable at exit (destroyed vectors would drop them). */
static std::vector<staging_buffer> &staging = *new std::vector<staging_buffer>;
static std::vector<cudaEvent_t> &spare_events = *new std::vector<cudaEvent_t>;
static size_t pinned_bytes, host_allocs, async_copies;


/* 512-byte granules below 1 MiB; above, four size classes per power of two. */
static size_t round_size(size_t n)
{
    if (n == 0) n = 1;
    if (n < ((size_t)1 << 20)) return (n + 511) / 512 * 512;
    int log2 = 63 - __builtin_clzll((unsigned long long)n);
    size_t base = (size_t)1 << log2, quarter = base >> 2;
    return base + (n - base + quarter - 1) / quarter * quarter;
}

static void release_cached_locked(void)
{
    for (auto &e : cache_free) cudaFree(e.second);
    cache_free.clear();
    cached_bytes = 0;
}

static mrt_status mem_alloc(size_t nbytes, void **ptr, size_t *capacity)
{
    size_t cap = round_size(nbytes);
    {
        std::lock_guard<std::mutex> g(cache_lock);
        auto it = cache_free.find(cap);
        if (it != cache_free.end()) {
            *ptr = it->second;
            cache_free.erase(it);
            cached_bytes -= cap;
            live_bytes += cap;
            *capacity = cap;
            return MRT_OK;
        }
    }
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, cap);
    if (err == cudaErrorMemoryAllocation) {
        /* Give the cached blocks back and try once more. */
        cudaGetLastError();
        std::lock_guard<std::mutex> g(cache_lock);
        cudaDeviceSynchronize();
        release_cached_locked();
        err = cudaMalloc(&p, cap);
    }
    if (err != cudaSuccess)
        return mrt_fail(MRT_ERR_NOMEM, "cuda: cannot allocate %zu bytes on the device (%s)", nbytes,
                        cudaGetErrorString(err));
    std::lock_guard<std::mutex> g(cache_lock);
    device_mallocs++;
    live_bytes += cap;
    *ptr = p;
    *capacity = cap;
    return MRT_OK;
}

static void mem_free(void *ptr, size_t capacity)
{
    std::lock_guard<std::mutex> g(cache_lock);
    live_bytes -= capacity;
    cached_bytes += capacity;
    cache_free.insert({capacity, ptr});
}

static void mem_stats(size_t *live, size_t *cached, size_t *mallocs)
{
    std::lock_guard<std::mutex> g(cache_lock);
    if (live) *live = live_bytes;
    if (cached) *cached = cached_bytes;
    if (mallocs) *mallocs = device_mallocs;
}

/* Device blocks only: the pinned staging buffers are host memory and are
 * kept, so that training (which empties the cache around each evaluation)
 * does not pay cudaHostAlloc again every epoch. */
static void mem_empty_cache(void)
{
    cudaStreamSynchronize(copy_stream);
    cudaStreamSynchronize(compute_stream);
    std::lock_guard<std::mutex> g(cache_lock);
    release_cached_locked();
}

static mrt_status mem_synchronize(void)
{
    return mrt_cu_check("synchronize", cudaStreamSynchronize(compute_stream));
}

mrt_status mrt_cu_scratch(size_t nbytes, void **ptr, size_t *capacity)
{
    return mem_alloc(nbytes, ptr, capacity);
}

void mrt_cu_scratch_free(void *ptr, size_t capacity)
{
    if (ptr) mem_free(ptr, capacity);
}

/* Host -> device: ordered on the compute stream, so the destination block
 * (perhaps just recycled) is no longer read by earlier kernels. */
static mrt_status mem_to_device(void *dst, const void *src, size_t nbytes)
{
    mrt_status st = mrt_cu_check("to cuda", cudaMemcpyAsync(dst, src, nbytes,
                                                              cudaMemcpyHostToDevice,
                                                              compute_stream));
    if (st) return st;
    /* The source is pageable host memory the caller may reuse at once. */
    return mrt_cu_check("to cuda", cudaStreamSynchronize(compute_stream));
}

static mrt_status mem_to_host(void *dst, const void *src, size_t nbytes)
{
    mrt_status st = mrt_cu_check("to cpu", cudaMemcpyAsync(dst, src, nbytes,
                                                             cudaMemcpyDeviceToHost,
                                                             compute_stream));
    if (st) return st;
    return mrt_cu_check("to cpu", cudaStreamSynchronize(compute_stream));
}

/* ---- copy stream and pinned staging ------------------------------------------------ */

static mrt_status take_event(cudaEvent_t *ev)
{
    if (!spare_events.empty()) {
        *ev = spare_events.back();
        spare_events.pop_back();
        return MRT_OK;
    }
    return mrt_cu_check("to cuda (async)", cudaEventCreateWithFlags(ev, cudaEventDisableTiming));
}

/* A staging buffer of at least nbytes whose previous copy has completed
 * (waited for when every buffer is busy and no more may be made). */
static mrt_status staging_take(size_t nbytes, size_t *index)
{
    size_t best = staging.size(), busy = staging.size();
    for (size_t i = 0; i < staging.size(); i++) {
        if (staging[i].capacity < nbytes) continue;
        cudaError_t q = cudaEventQuery(staging[i].done);
        if (q == cudaSuccess) {
            if (best == staging.size() || staging[i].capacity < staging[best].capacity) best = i;
        } else if (q == cudaErrorNotReady) {
            /* Not an error; make sure a later launch check does not see it. */
            if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
            if (busy == staging.size()) busy = i;
        } else {
            return mrt_cu_check("to cuda (async)", q);
        }
    }
    if (best < staging.size()) {
        *index = best;
        return MRT_OK;
    }
    if (staging.size() >= STAGING_MAX) {
        if (busy < staging.size()) {
            *index = busy;
            return mrt_cu_check("to cuda (async)", cudaEventSynchronize(staging[busy].done));
        }
        /* All too small: the smallest makes room for a larger one. */
        size_t small = 0;
        for (size_t i = 1; i < staging.size(); i++)
            if (staging[i].capacity < staging[small].capacity) small = i;
        mrt_status st =
            mrt_cu_check("to cuda (async)", cudaEventSynchronize(staging[small].done));
        if (st) return st;
        cudaFreeHost(staging[small].host);
        cudaEventDestroy(staging[small].done);
        pinned_bytes -= staging[small].capacity;
        staging.erase(staging.begin() + (long)small);
    }
    staging_buffer b;
    b.capacity = round_size(nbytes);
    b.host = NULL;
    mrt_status st = mrt_cu_check("to cuda (async): pinned staging buffer",
                                 cudaHostAlloc(&b.host, b.capacity, cudaHostAllocDefault));
    if (st) return st;
    if ((st = mrt_cu_check("to cuda (async)",
                           cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming)))) {
        cudaFreeHost(b.host);
        return st;
    }
    host_allocs++;
    pinned_bytes += b.capacity;
    staging.push_back(b);
    *index = staging.size() - 1;
    return MRT_OK;
}

static mrt_status mem_to_device_async(void *dst, const void *src, size_t nbytes, void **ready)
{
    *ready = NULL;
    if (nbytes == 0) return MRT_OK;
    std::lock_guard<std::mutex> g(copy_lock);
    size_t i = 0;
    mrt_status st = staging_take(nbytes, &i);
    if (st) return st;
    memcpy(staging[i].host, src, nbytes);
    /* The destination may be a recycled block still read by compute work
     * issued before now: the copy starts after that work. */
    cudaEvent_t issued, done;
    if ((st = take_event(&issued))) return st;
    st = mrt_cu_check("to cuda (async)", cudaEventRecord(issued, compute_stream));
    if (!st) st = mrt_cu_check("to cuda (async)", cudaStreamWaitEvent(copy_stream, issued, 0));
    spare_events.push_back(issued); /* the wait has captured it */
    if (!st)
        st = mrt_cu_check("to cuda (async)",
                          cudaMemcpyAsync(dst, staging[i].host, nbytes, cudaMemcpyHostToDevice,
                                          copy_stream));
    if (!st) st = mrt_cu_check("to cuda (async)", cudaEventRecord(staging[i].done, copy_stream));
    if (st) return st;
    if ((st = take_event(&done))) return st;
    if ((st = mrt_cu_check("to cuda (async)", cudaEventRecord(done, copy_stream)))) {
        spare_events.push_back(done);
        return st;
    }
    async_copies++;
    *ready = done;
    return MRT_OK;
}

static mrt_status mem_wait_ready(void *ready)
{
    if (!ready) return MRT_OK;
    cudaEvent_t ev = (cudaEvent_t)ready;
    mrt_status st =
        mrt_cu_check("to cuda (async)", cudaStreamWaitEvent(compute_stream, ev, 0));
    std::lock_guard<std::mutex> g(copy_lock);
    spare_events.push_back(ev);
    return st;
}

static void mem_copy_stats(size_t *pinned, size_t *allocs, size_t *copies)
{
    std::lock_guard<std::mutex> g(copy_lock);
    if (pinned) *pinned = pinned_bytes;
    if (allocs) *allocs = host_allocs;
    if (copies) *copies = async_copies;
}

/* ---- host helpers --------------------------------------------------------------------- */

void mrt_cu_iter_init(mrt_cu_iter *it, int ndim, const int64_t *shape)
{
    memset(it, 0, sizeof *it);
    it->ndim = ndim;
    it->n = 1;
    for (int d = 0; d < ndim; d++) {
        it->shape[d] = shape[d];
        it->n *= shape[d];
    }
}

void mrt_cu_iter_add(mrt_cu_iter *it, const mrt_tensor *t)
{
    int k = it->nops++;
    int lead = it->ndim - t->ndim;
    for (int d = 0; d < it->ndim; d++) {
        int td = d - lead;
        it->stride[k][d] = (td >= 0 && t->shape[td] != 1) ? t->stride[td] : 0;
    }
}

void mrt_cu_iter_finish(mrt_cu_iter *it)
{
    /* Drop size-1 dimensions, then merge d into d+1 where every operand
     * steps contiguously across the boundary. */
    int nd = 0;
    for (int d = 0; d < it->ndim; d++) {
        if (it->shape[d] == 1) continue;
        it->shape[nd] = it->shape[d];
        for (int k = 0; k < it->nops; k++) it->stride[k][nd] = it->stride[k][d];
        nd++;
    }
    int out = 0;
    for (int d = 0; d < nd; d++) {
        if (out > 0) {
            int merge = 1;
            for (int k = 0; k < it->nops && merge; k++)
                merge = it->stride[k][out - 1] == it->stride[k][d] * it->shape[d];
            if (merge) {
                it->shape[out - 1] *= it->shape[d];
                for (int k = 0; k < it->nops; k++) it->stride[k][out - 1] = it->stride[k][d];
                continue;
            }
        }
        it->shape[out] = it->shape[d];
        for (int k = 0; k < it->nops; k++) it->stride[k][out] = it->stride[k][d];
        out++;
    }
    it->ndim = out;
    it->contiguous = out <= 1;
    for (int k = 0; k < it->nops && it->contiguous; k++)
        it->contiguous = out == 0 || it->stride[k][0] == 1;
    if (out == 0) it->contiguous = 1;
}

/* ---- GEMM ----------------------------------------------------------------------------- */

static int gemm_precision; /* see mrt_cuda_set_mixed_precision */

int mrt_cu_gemm_precision(void) { return gemm_precision; }

extern "C" mrt_status mrt_cuda_set_mixed_precision(const char *mode);
extern "C" mrt_status mrt_cuda_set_mixed_precision(const char *mode)
{
    if (!mode || strcmp(mode, "fp32") == 0 || strcmp(mode, "off") == 0) gemm_precision = 0;
    else if (strcmp(mode, "fp16") == 0) gemm_precision = 1;
    else if (strcmp(mode, "bf16") == 0) gemm_precision = 2;
    else
        return mrt_fail(MRT_ERR_ARG, "mixed precision: unknown mode '%s' (fp32, fp16 or bf16)",
                        mode);
    return MRT_OK;
}

extern "C" const char *mrt_cuda_mixed_precision(void);
extern "C" const char *mrt_cuda_mixed_precision(void)
{
    return gemm_precision == 1 ? "fp16" : gemm_precision == 2 ? "bf16" : "fp32";
}

template <typename H> __device__ __forceinline__ H to_low(float v);
template <> __device__ __forceinline__ __half to_low<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 to_low<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

template <typename H> __global__ void k_narrow(int64_t n, const float *__restrict__ src, H *dst)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x)
        dst[i] = to_low<H>(src[i]);
}

/* Rounds `n` floats (a whole operand, batches included) to fp16/bf16 in
 * scratch memory. */
static mrt_status narrow_copy(const char *op, int precision, const float *src, int64_t n,
                              void **dst, size_t *cap)
{
    mrt_status st = mem_alloc((size_t)n * 2, dst, cap);
    if (st) return st;
    if (precision == 1)
        MRT_LAUNCH(k_narrow<__half>, mrt_cu_blocks(n), MRT_CU_THREADS, compute_stream, n, src,
                   (__half *)*dst);
    else
        MRT_LAUNCH(k_narrow<__nv_bfloat16>, mrt_cu_blocks(n), MRT_CU_THREADS, compute_stream, n,
                   src, (__nv_bfloat16 *)*dst);
    return mrt_cu_launched(op);
}

static mrt_status gemm_with(int precision, const char *op, int ta, int tb, int64_t m, int64_t n,
                            int64_t k, float alpha, const float *a, int64_t lda,
                            int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                            float beta, float *c, int64_t ldc, int64_t stride_c, int64_t batch)
{
    if (m == 0 || n == 0 || batch == 0) return MRT_OK;
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX || batch > INT32_MAX)
        return mrt_fail(MRT_ERR_SHAPE, "%s: matrix too large for cuBLAS", op);
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap
     * the operands and the roles of m and n. */
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (precision == 0 || k == 0) {
        if (batch == 1)
            return mrt_cu_check_blas(op, cublasSgemm(blas_handle, opb, opa, (int)n, (int)m, (int)k,
                                                     &alpha, b, (int)ldb, a, (int)lda, &beta, c,
                                                     (int)ldc));
        return mrt_cu_check_blas(
            op, cublasSgemmStridedBatched(blas_handle, opb, opa, (int)n, (int)m, (int)k, &alpha, b,
                                          (int)ldb, stride_b, a, (int)lda, stride_a, &beta, c,
                                          (int)ldc, stride_c, (int)batch));
    }
    /* Mixed precision: operands rounded to fp16/bf16, products accumulated
     * in fp32 into the fp32 output. The operand spans cover every batch. */
    int64_t span_a = (batch - 1) * stride_a + (ta ? k * lda : m * lda);
    int64_t span_b = (batch - 1) * stride_b + (tb ? n * ldb : k * ldb);
    void *la = NULL, *lb = NULL;
    size_t ca = 0, cb = 0;
    mrt_status st = narrow_copy(op, precision, a, span_a, &la, &ca);
    if (!st) st = narrow_copy(op, precision, b, span_b, &lb, &cb);
    cudaDataType t = precision == 1 ? CUDA_R_16F : CUDA_R_16BF;
    for (int64_t i = 0; !st && i < batch; i++) {
        st = mrt_cu_check_blas(
            op, cublasGemmEx(blas_handle, opb, opa, (int)n, (int)m, (int)k, &alpha,
                             (const char *)lb + 2 * i * stride_b, t, (int)ldb,
                             (const char *)la + 2 * i * stride_a, t, (int)lda, &beta,
                             c + i * stride_c, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    }
    mrt_cu_scratch_free(la, ca);
    mrt_cu_scratch_free(lb, cb);
    return st;
}

mrt_status mrt_cu_gemm(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, int64_t stride_a,
                       const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                       int64_t ldc, int64_t stride_c, int64_t batch)
{
    return gemm_with(gemm_precision, op, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb,
                     stride_b, beta, c, ldc, stride_c, batch);
}

mrt_status mrt_cu_gemm_fp32(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, int64_t stride_a,
                            const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                            int64_t ldc, int64_t stride_c, int64_t batch)
{
    return gemm_with(0, op, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                     ldc, stride_c, batch);
}

/* ---- the table --------------------------------------------------------------------------- */

static void init_backend(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1) {
        cudaGetLastError();
        return;
    }
    if (cudaSetDevice(0) != cudaSuccess ||
        cudaStreamCreateWithFlags(&compute_stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&blas_handle) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(blas_handle, compute_stream) != CUBLAS_STATUS_SUCCESS) {
        cudaGetLastError();
        return;
    }
    cuda_backend.name = "cuda";
    cuda_backend.device = MRT_CUDA;
    cuda_backend.memory.alloc = mem_alloc;
    cuda_backend.memory.free = mem_free;
    cuda_backend.memory.to_device = mem_to_device;
    cuda_backend.memory.to_host = mem_to_host;
    cuda_backend.memory.stats = mem_stats;
    cuda_backend.memory.empty_cache = mem_empty_cache;
    cuda_backend.memory.synchronize = mem_synchronize;
    cuda_backend.memory.to_device_async = mem_to_device_async;
    cuda_backend.memory.wait_ready = mem_wait_ready;
    cuda_backend.memory.copy_stats = mem_copy_stats;
    mrt_cu_register_tensor_ops(&cuda_backend);
    mrt_cu_register_nn_ops(&cuda_backend);
    mrt_cu_register_optim_ops(&cuda_backend);
    mrt_cu_register_audio_ops(&cuda_backend);
    device_ok = 1;
}

extern "C" const mrt_backend *mrt_cuda_backend(void)
{
    pthread_once(&init_once, init_backend);
    return device_ok ? &cuda_backend : NULL;
}

extern "C" const char *mrt_cuda_backend_mode(void)
{
#ifdef MRT_CUDA_EMULATION
    return "emulated";
#else
    return "cuda";
#endif
}
