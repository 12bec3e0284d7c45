/* CUDA on the CPU: the subset of the CUDA runtime, cuBLAS and cuFFT that
 * the backend's .cu sources use, so the same kernel sources compile with g++ and
 * run in `make test` on machines without a GPU.
 *
 * Execution model
 *  - A launch runs every block of the grid (blocks in parallel with OpenMP,
 *    as on a device they run in any order) and, within a block, every
 *    thread. threadIdx/blockIdx/blockDim/gridDim are thread-local.
 *  - Kernels that use __shared__ memory and __syncthreads are launched with
 *    MRT_LAUNCH_SYNC: each CUDA thread of the block becomes a fiber
 *    (ucontext); __syncthreads switches to the next fiber, and a block
 *    resumes past the barrier only when every one of its threads reached
 *    it, which is the barrier's meaning on a device. __shared__ is
 *    `static thread_local`: one copy per block being run. A barrier that
 *    some threads of a block never reach, or __syncthreads in a kernel
 *    launched with plain MRT_LAUNCH, stops the program with a message.
 *  - Device memory lives in one reserved address range that is readable
 *    only while a kernel, a cuBLAS/cuFFT call or a cudaMemcpy runs; host
 *    code that dereferences a device pointer faults at once, as it would
 *    (later, and less clearly) on a real device.
 *  - cuBLAS maps to OpenBLAS (column-major sgemm), cuFFT to FFTW
 *    (single-precision r2c), fp16/bf16 to software conversions with
 *    round-to-nearest-even.
 *  - Streams and events: kernels, cuBLAS and cuFFT calls run when they are
 *    issued (after the work queued earlier on their stream). cudaMemcpyAsync
 *    and cudaMemsetAsync on a stream are only queued: they take place when
 *    a later kernel or library call is issued on the same stream, or when
 *    the host or another stream waits for them (cudaStreamSynchronize,
 *    cudaDeviceSynchronize, cudaEventSynchronize or cudaStreamWaitEvent on
 *    an event recorded after them; cudaEventQuery reports cudaErrorNotReady
 *    until then). A copy is read from its source when it takes place, so
 *    code that reads the destination, or rewrites a staging source, before
 *    waiting for the copy sees wrong data, which is the worst a device may
 *    do. Stream NULL (the legacy default stream) copies at once.
 */
#ifndef MACHRT_CUDA_EMU_H
#define MACHRT_CUDA_EMU_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define MRT_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

void __syncthreads();

/* ---- launches ---------------------------------------------------------------- */
void mrt_emu_run(dim3 grid, dim3 block, bool sync, void (*call)(void *), void *ctx);

template <typename F> void mrt_emu_launch(dim3 grid, dim3 block, bool sync, F &&body)
{
    typedef typename std::remove_reference<F>::type Body;
    mrt_emu_run(grid, block, sync, [](void *c) { (*static_cast<Body *>(c))(); },
                const_cast<void *>(static_cast<const void *>(&body)));
}

/* A launch first completes the asynchronous copies queued earlier on its
 * stream (work on one stream runs in order). */
struct mrt_emu_stream;
void mrt_emu_stream_flush(mrt_emu_stream *stream);
#define MRT_LAUNCH(kernel, grid, block, stream, ...) \
    mrt_emu_stream_flush(stream), mrt_emu_launch((grid), (block), false, [&] { kernel(__VA_ARGS__); })
#define MRT_LAUNCH_SYNC(kernel, grid, block, stream, ...) \
    mrt_emu_stream_flush(stream), mrt_emu_launch((grid), (block), true, [&] { kernel(__VA_ARGS__); })

/* Device memory becomes accessible while an emulated device operation
 * runs (nested scopes allowed). */
void mrt_emu_device_enter();
void mrt_emu_device_leave();
struct mrt_emu_device_scope {
    mrt_emu_device_scope() { mrt_emu_device_enter(); }
    ~mrt_emu_device_scope() { mrt_emu_device_leave(); }
    mrt_emu_device_scope(const mrt_emu_device_scope &) = delete;
    mrt_emu_device_scope &operator=(const mrt_emu_device_scope &) = delete;
};

/* ---- device functions ----------------------------------------------------------- */
inline float atomicAdd(float *p, float v)
{
    float old, next;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
        next = old + v;
    } while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline double atomicAdd(double *p, double v)
{
    double old, next;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
        next = old + v;
    } while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
/* Correctly rounded, never contracted into a fused multiply-add. */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline unsigned __umulhi(unsigned a, unsigned b)
{
    return (unsigned)(((unsigned long long)a * b) >> 32);
}

/* ---- half and bfloat16 ---------------------------------------------------------- */
struct __half {
    uint16_t bits;
};
struct __nv_bfloat16 {
    uint16_t bits;
};
__half __float2half_rn(float f);
float __half2float(__half h);
__nv_bfloat16 __float2bfloat16_rn(float f);
float __bfloat162float(__nv_bfloat16 h);
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

/* ---- runtime API ------------------------------------------------------------------ */
typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNotReady = 600,
    cudaErrorNoDevice = 100,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
typedef struct mrt_emu_stream *cudaStream_t;
typedef struct mrt_emu_event *cudaEvent_t;
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMalloc(void **ptr, size_t nbytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMallocHost(void **ptr, size_t nbytes);
cudaError_t cudaFreeHost(void *ptr);
cudaError_t cudaHostAlloc(void **ptr, size_t nbytes, unsigned flags);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t nbytes, cudaStream_t stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char *cudaGetErrorString(cudaError_t err);

/* ---- cuBLAS ---------------------------------------------------------------------- */
typedef struct mrt_emu_cublas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda,
                                         long long stride_a, const float *b, int ldb,
                                         long long stride_b, const float *beta, float *c, int ldc,
                                         long long stride_c, int batch);
/* A and B in fp16 or bf16, C in fp32, fp32 accumulation. */
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                            int m, int n, int k, const void *alpha, const void *a,
                            cudaDataType atype, int lda, const void *b, cudaDataType btype, int ldb,
                            const void *beta, void *c, cudaDataType ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);

/* ---- cuFFT ------------------------------------------------------------------------ */
typedef int cufftHandle;
typedef enum { CUFFT_SUCCESS = 0, CUFFT_INVALID_PLAN = 1, CUFFT_ALLOC_FAILED = 2,
               CUFFT_INVALID_VALUE = 4, CUFFT_EXEC_FAILED = 6 } cufftResult;
typedef enum { CUFFT_R2C = 0x2a } cufftType;
typedef float cufftReal;
struct cufftComplex {
    float x, y;
};
cufftResult cufftPlanMany(cufftHandle *plan, int rank, int *n, int *inembed, int istride,
                          int idist, int *onembed, int ostride, int odist, cufftType type,
                          int batch);
cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream);
cufftResult cufftExecR2C(cufftHandle plan, cufftReal *in, cufftComplex *out);
cufftResult cufftDestroy(cufftHandle plan);

/* Emulation statistics, for tests: launches run, fibers switched; copies
 * queued on a stream and not yet done. */
unsigned long long mrt_emu_pending_copies();
void mrt_emu_counters(unsigned long long *launches, unsigned long long *sync_launches);

#endif
