/* The CPU emulation of the CUDA runtime, cuBLAS and cuFFT (see cuda_emu.h). */
#undef _FORTIFY_SOURCE
#include "cuda_emu.h"

#include <cblas.h>
#include <fftw3.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <vector>

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

static unsigned long long n_launches, n_sync_launches;
static thread_local cudaError_t last_error = cudaSuccess;

static void emu_die(const char *what)
{
    fprintf(stderr, "cuda emulation: %s\n", what);
    abort();
}

/* ---- device memory: one reserved range, accessible only inside device work ---- */

static const size_t ARENA_BYTES = (size_t)64 << 30;
static const size_t ARENA_ALIGN = 256; /* cudaMalloc's alignment */
static std::mutex arena_lock;
static char *arena;
static size_t arena_used, arena_open; /* bytes handed out / bytes now readable */
static int access_depth;
static std::multimap<size_t, char *> arena_free;
static std::map<char *, size_t> arena_live;

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

static void set_access(bool open)
{
    size_t len = page_round(arena_used);
    if (open) {
        if (len && mprotect(arena, len, PROT_READ | PROT_WRITE) != 0) emu_die("mprotect failed");
        arena_open = len;
    } else {
        if (arena_open && mprotect(arena, arena_open, PROT_NONE) != 0) emu_die("mprotect failed");
        arena_open = 0;
    }
}

void mrt_emu_device_enter()
{
    std::lock_guard<std::mutex> g(arena_lock);
    if (access_depth++ == 0) set_access(true);
}

void mrt_emu_device_leave()
{
    std::lock_guard<std::mutex> g(arena_lock);
    if (--access_depth == 0) set_access(false);
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }

cudaError_t cudaMalloc(void **ptr, size_t nbytes)
{
    std::lock_guard<std::mutex> g(arena_lock);
    if (!arena) {
        void *p = mmap(NULL, ARENA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) return last_error = cudaErrorMemoryAllocation;
        arena = (char *)p;
    }
    size_t n = (nbytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (n == 0) n = ARENA_ALIGN;
    char *p = NULL;
    auto it = arena_free.find(n);
    if (it != arena_free.end()) {
        p = it->second;
        arena_free.erase(it);
    } else {
        if (arena_used + n > ARENA_BYTES) return last_error = cudaErrorMemoryAllocation;
        p = arena + arena_used;
        arena_used += n;
        if (access_depth > 0) set_access(true);
    }
    arena_live[p] = n;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    if (!ptr) return cudaSuccess;
    std::lock_guard<std::mutex> g(arena_lock);
    auto it = arena_live.find((char *)ptr);
    if (it == arena_live.end()) return last_error = cudaErrorInvalidValue;
    arena_free.insert({it->second, it->first});
    arena_live.erase(it);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t nbytes)
{
    *ptr = malloc(nbytes ? nbytes : 1);
    return *ptr ? cudaSuccess : (last_error = cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *ptr)
{
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind)
{
    (void)kind;
    mrt_emu_device_scope scope;
    if (nbytes) memmove(dst, src, nbytes);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t nbytes, unsigned flags)
{
    (void)flags;
    return cudaMallocHost(ptr, nbytes);
}

/* ---- streams and events ------------------------------------------------------------
 * A stream keeps its queued copies in order, numbered from 1; `done` is
 * the number of the last one that took place. An event remembers the
 * stream and the number issued when it was recorded. */

struct emu_op {
    unsigned long long seq;
    void *dst;
    const void *src; /* NULL: memset with `value` */
    size_t nbytes;
    int value;
};

struct mrt_emu_stream {
    std::vector<emu_op> queue;
    unsigned long long issued = 0, done = 0;
};
struct mrt_emu_event {
    cudaStream_t stream = NULL;
    unsigned long long seq = 0;
};

static std::recursive_mutex stream_lock;
/* Never destroyed, like the plans below: streams live as long as the backend. */
static std::vector<cudaStream_t> &all_streams = *new std::vector<cudaStream_t>;
static unsigned long long n_pending;

/* Carries out the queued operations of `s` numbered up to `upto`. */
static void stream_run(cudaStream_t s, unsigned long long upto)
{
    if (!s) return;
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    size_t k = 0;
    if (!s->queue.empty() && s->queue.front().seq <= upto) {
        mrt_emu_device_scope scope;
        for (; k < s->queue.size() && s->queue[k].seq <= upto; k++) {
            const emu_op &op = s->queue[k];
            if (op.src) memmove(op.dst, op.src, op.nbytes);
            else memset(op.dst, op.value, op.nbytes);
            s->done = op.seq;
            n_pending--;
        }
        s->queue.erase(s->queue.begin(), s->queue.begin() + (long)k);
    }
    if (s->queue.empty()) s->done = s->issued;
}

void mrt_emu_stream_flush(mrt_emu_stream *stream) { stream_run(stream, ~0ULL); }

unsigned long long mrt_emu_pending_copies()
{
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    return n_pending;
}

static cudaError_t enqueue(cudaStream_t stream, void *dst, const void *src, size_t nbytes,
                           int value)
{
    if (nbytes == 0) return cudaSuccess;
    if (!stream) {
        mrt_emu_device_scope scope;
        if (src) memmove(dst, src, nbytes);
        else memset(dst, value, nbytes);
        return cudaSuccess;
    }
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    stream->queue.push_back(emu_op{++stream->issued, dst, src, nbytes, value});
    n_pending++;
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    (void)kind;
    if (nbytes && !src) return last_error = cudaErrorInvalidValue;
    return enqueue(stream, dst, src, nbytes, 0);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t nbytes, cudaStream_t stream)
{
    return enqueue(stream, dst, NULL, nbytes, value);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    (void)flags;
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    *stream = new mrt_emu_stream();
    all_streams.push_back(*stream);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (!stream) return cudaSuccess;
    stream_run(stream, ~0ULL);
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    for (size_t i = 0; i < all_streams.size(); i++)
        if (all_streams[i] == stream) {
            all_streams.erase(all_streams.begin() + (long)i);
            break;
        }
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    stream_run(stream, ~0ULL);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags)
{
    (void)flags;
    *event = new mrt_emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    delete event;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    if (!event) return last_error = cudaErrorInvalidValue;
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    event->stream = stream;
    event->seq = stream ? stream->issued : 0;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    if (!event) return last_error = cudaErrorInvalidValue;
    stream_run(event->stream, event->seq);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event)
{
    if (!event) return last_error = cudaErrorInvalidValue;
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    if (!event->stream || event->stream->done >= event->seq ||
        event->stream->queue.empty() || event->stream->queue.front().seq > event->seq)
        return cudaSuccess;
    return cudaErrorNotReady;
}
/* The waiting stream's later work runs eagerly when issued, so what the
 * event stands for has to be complete now. */
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags)
{
    (void)flags;
    if (!event) return last_error = cudaErrorInvalidValue;
    stream_run(stream, ~0ULL);
    stream_run(event->stream, event->seq);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize()
{
    std::lock_guard<std::recursive_mutex> g(stream_lock);
    for (cudaStream_t s : all_streams) stream_run(s, ~0ULL);
    return cudaSuccess;
}

cudaError_t cudaGetLastError()
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

const char *cudaGetErrorString(cudaError_t err)
{
    switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    }
    return "unknown error";
}

/* ---- launches and fibers ---------------------------------------------------------- */

enum { FIBER_READY, FIBER_WAITING, FIBER_DONE };
static const size_t FIBER_STACK = 256 << 10;

struct jump_point {
    jmp_buf at;
};

struct fiber_pool {
    ucontext_t start_from;
    jmp_buf sched;
    std::vector<ucontext_t> ctx;
    std::vector<jump_point> jb;
    std::vector<char *> stack;
    std::vector<int> state, started;
};

static thread_local fiber_pool *pool;
static thread_local int cur_fiber;
static thread_local bool in_sync_block;
static thread_local void (*cur_call)(void *);
static thread_local void *cur_ctx;

static dim3 thread_index(unsigned t, dim3 b)
{
    return dim3(t % b.x, (t / b.x) % b.y, t / (b.x * b.y));
}

static void fiber_main()
{
    cur_call(cur_ctx);
    pool->state[cur_fiber] = FIBER_DONE;
    _longjmp(pool->sched, 1);
}

void __syncthreads()
{
    if (!in_sync_block)
        emu_die("__syncthreads in a kernel launched with MRT_LAUNCH (use MRT_LAUNCH_SYNC)");
    int t = cur_fiber;
    pool->state[t] = FIBER_WAITING;
    if (!_setjmp(pool->jb[t].at)) _longjmp(pool->sched, 1);
}

/* Runs fiber t until it reaches a barrier or ends. */
static __attribute__((noinline)) void run_fiber(fiber_pool &p, unsigned t, dim3 block)
{
    p.state[t] = FIBER_READY;
    cur_fiber = (int)t;
    threadIdx = thread_index(t, block);
    if (_setjmp(p.sched)) return;
    if (!p.started[t]) {
        p.started[t] = 1;
        getcontext(&p.ctx[t]);
        p.ctx[t].uc_stack.ss_sp = p.stack[t];
        p.ctx[t].uc_stack.ss_size = FIBER_STACK;
        p.ctx[t].uc_link = NULL;
        makecontext(&p.ctx[t], fiber_main, 0);
        swapcontext(&p.start_from, &p.ctx[t]);
    } else {
        _longjmp(p.jb[t].at, 1);
    }
}

static void run_block_fibers(unsigned nthreads, dim3 block)
{
    if (!pool) pool = new fiber_pool();
    fiber_pool &p = *pool;
    if (p.ctx.size() < nthreads) {
        size_t old = p.stack.size();
        p.ctx.resize(nthreads);
        p.jb.resize(nthreads);
        p.stack.resize(nthreads);
        p.state.resize(nthreads);
        p.started.resize(nthreads);
        for (size_t i = old; i < nthreads; i++) {
            p.stack[i] = (char *)malloc(FIBER_STACK);
            if (!p.stack[i]) emu_die("out of memory for fiber stacks");
        }
    }
    for (unsigned t = 0; t < nthreads; t++) {
        p.state[t] = FIBER_READY;
        p.started[t] = 0;
    }
    in_sync_block = true;
    for (;;) {
        for (unsigned t = 0; t < nthreads; t++)
            if (p.state[t] != FIBER_DONE) run_fiber(p, t, block);
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < nthreads; t++) {
            if (p.state[t] == FIBER_WAITING) waiting++;
            if (p.state[t] == FIBER_DONE) done++;
        }
        if (waiting == 0) break;
        if (done > 0) emu_die("__syncthreads not reached by every thread of a block");
    }
    in_sync_block = false;
}

void mrt_emu_run(dim3 grid, dim3 block, bool sync, void (*call)(void *), void *ctx)
{
    unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    unsigned nthreads = block.x * block.y * block.z;
    if (nblocks == 0 || nthreads == 0 || nthreads > 1024 || grid.y > 65535 || grid.z > 65535) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    __atomic_add_fetch(sync ? &n_sync_launches : &n_launches, 1, __ATOMIC_RELAXED);
    mrt_emu_device_scope scope;
#pragma omp parallel for schedule(dynamic, 1) if (nblocks > 1 && (unsigned long long)nthreads * nblocks >= 4096)
    for (long long b = 0; b < (long long)nblocks; b++) {
        gridDim = grid;
        blockDim = block;
        blockIdx = dim3((unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                        (unsigned)(b / ((long long)grid.x * grid.y)));
        cur_call = call;
        cur_ctx = ctx;
        if (sync) {
            run_block_fibers(nthreads, block);
        } else {
            for (unsigned t = 0; t < nthreads; t++) {
                threadIdx = thread_index(t, block);
                call(ctx);
            }
        }
    }
}

void mrt_emu_counters(unsigned long long *launches, unsigned long long *sync_launches)
{
    if (launches) *launches = __atomic_load_n(&n_launches, __ATOMIC_RELAXED);
    if (sync_launches) *sync_launches = __atomic_load_n(&n_sync_launches, __ATOMIC_RELAXED);
}

/* ---- half and bfloat16 -------------------------------------------------------------- */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

__half __float2half_rn(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    __half h;
    if (ax >= 0x7f800000u) { /* inf or nan */
        h.bits = (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
        return h;
    }
    if (ax >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        h.bits = (uint16_t)(sign | 0x7c00u);
        return h;
    }
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa. */
        float v = u2f(ax) * 16777216.0f;
        float r = nearbyintf(v); /* default rounding mode: to nearest even */
        h.bits = (uint16_t)(sign | (uint32_t)r);
        return h;
    }
    uint32_t e = ((ax >> 23) - 127 + 15) << 10;
    uint32_t m = ax & 0x7fffffu;
    uint32_t hm = m >> 13, rest = m & 0x1fffu;
    uint32_t out = e | hm;
    if (rest > 0x1000u || (rest == 0x1000u && (hm & 1u))) out++;
    h.bits = (uint16_t)(sign | out);
    return h;
}

float __half2float(__half h)
{
    uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16;
    uint32_t e = (h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e - 15 + 127) << 23) | (m << 13));
}

__nv_bfloat16 __float2bfloat16_rn(float f)
{
    uint32_t x = f2u(f);
    __nv_bfloat16 b;
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        b.bits = (uint16_t)((x >> 16) | 0x40u);
        return b;
    }
    x += 0x7fffu + ((x >> 16) & 1u);
    b.bits = (uint16_t)(x >> 16);
    return b;
}

float __bfloat162float(__nv_bfloat16 b) { return u2f((uint32_t)b.bits << 16); }

/* ---- cuBLAS on OpenBLAS ---------------------------------------------------------------- */

struct mrt_emu_cublas {
    cudaStream_t stream;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = new mrt_emu_cublas();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

static CBLAS_TRANSPOSE tr(cublasOperation_t op) { return op == CUBLAS_OP_T ? CblasTrans : CblasNoTrans; }

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    mrt_emu_stream_flush(handle->stream);
    mrt_emu_device_scope scope;
    cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda,
                                         long long stride_a, const float *b, int ldb,
                                         long long stride_b, const float *beta, float *c, int ldc,
                                         long long stride_c, int batch)
{
    for (int i = 0; i < batch; i++) {
        cublasStatus_t s = cublasSgemm(handle, ta, tb, m, n, k, alpha, a + i * stride_a, lda,
                                       b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
        if (s) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* Widens a column-major rows x cols half/bf16 matrix (leading dim ld) to float. */
static std::vector<float> widen(const void *p, cudaDataType t, int rows, int cols, int ld)
{
    std::vector<float> out((size_t)ld * (cols > 0 ? cols : 1));
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++) {
            size_t at = (size_t)j * ld + i;
            out[at] = t == CUDA_R_16F ? __half2float(((const __half *)p)[at])
                      : t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[at])
                                         : ((const float *)p)[at];
        }
    return out;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                            int m, int n, int k, const void *alpha, const void *a,
                            cudaDataType atype, int lda, const void *b, cudaDataType btype, int ldb,
                            const void *beta, void *c, cudaDataType ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (ctype != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    mrt_emu_stream_flush(handle->stream);
    mrt_emu_device_scope scope;
    /* Products of fp16/bf16 values are exact in fp32, so widening first and
     * accumulating in fp32 is what the tensor cores compute. */
    std::vector<float> fa = widen(a, atype, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda);
    std::vector<float> fb = widen(b, btype, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb);
    cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, *(const float *)alpha, fa.data(), lda,
                fb.data(), ldb, *(const float *)beta, (float *)c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuFFT on FFTW --------------------------------------------------------------------- */

struct emu_plan {
    int n, istride, idist, ostride, odist, batch;
    fftwf_plan plan;
    cudaStream_t stream;
};
static std::mutex fft_lock;
/* Never destroyed: plans cached by the backend for the life of the
 * process stay reachable at exit (a destroyed vector would drop them). */
static std::vector<emu_plan *> &fft_plans = *new std::vector<emu_plan *>;

cufftResult cufftPlanMany(cufftHandle *plan, int rank, int *n, int *inembed, int istride,
                          int idist, int *onembed, int ostride, int odist, cufftType type,
                          int batch)
{
    (void)inembed;
    (void)onembed;
    if (rank != 1 || type != CUFFT_R2C || n[0] < 1 || batch < 1) return CUFFT_INVALID_VALUE;
    emu_plan *p = new emu_plan{n[0], istride, idist, ostride, odist, batch, NULL, NULL};
    /* Planned on scratch buffers; executed with the new-array interface. */
    int len = n[0];
    size_t in_elems = (size_t)(batch - 1) * idist + (size_t)(len - 1) * istride + 1;
    size_t out_elems = (size_t)(batch - 1) * odist + (size_t)(len / 2) * ostride + 1;
    float *in = fftwf_alloc_real(in_elems);
    fftwf_complex *out = fftwf_alloc_complex(out_elems);
    std::lock_guard<std::mutex> g(fft_lock); /* FFTW's planner is not thread-safe */
    p->plan = fftwf_plan_many_dft_r2c(1, &len, batch, in, NULL, istride, idist, out, NULL,
                                      ostride, odist, FFTW_ESTIMATE | FFTW_UNALIGNED);
    fftwf_free(in);
    fftwf_free(out);
    if (!p->plan) {
        delete p;
        return CUFFT_ALLOC_FAILED;
    }
    fft_plans.push_back(p);
    *plan = (cufftHandle)fft_plans.size();
    return CUFFT_SUCCESS;
}

cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream)
{
    std::lock_guard<std::mutex> g(fft_lock);
    if (plan < 1 || (size_t)plan > fft_plans.size() || !fft_plans[plan - 1])
        return CUFFT_INVALID_PLAN;
    fft_plans[plan - 1]->stream = stream;
    return CUFFT_SUCCESS;
}

cufftResult cufftExecR2C(cufftHandle plan, cufftReal *in, cufftComplex *out)
{
    emu_plan *p;
    {
        std::lock_guard<std::mutex> g(fft_lock);
        if (plan < 1 || (size_t)plan > fft_plans.size() || !fft_plans[plan - 1])
            return CUFFT_INVALID_PLAN;
        p = fft_plans[plan - 1];
    }
    mrt_emu_stream_flush(p->stream);
    mrt_emu_device_scope scope;
    fftwf_execute_dft_r2c(p->plan, in, (fftwf_complex *)out);
    return CUFFT_SUCCESS;
}

cufftResult cufftDestroy(cufftHandle plan)
{
    std::lock_guard<std::mutex> g(fft_lock);
    if (plan < 1 || (size_t)plan > fft_plans.size() || !fft_plans[plan - 1])
        return CUFFT_INVALID_PLAN;
    fftwf_destroy_plan(fft_plans[plan - 1]->plan);
    delete fft_plans[plan - 1];
    fft_plans[plan - 1] = NULL;
    return CUFFT_SUCCESS;
}
