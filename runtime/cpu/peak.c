/* The vector units' measured peak on one core: independent chains of FMAs
 * (fp32) and of bf16 dot products (vdpbf16ps), enough of them to cover the
 * instructions' latency, timed in short trials that alternate between the
 * two kinds so that a loaded machine stretches both alike; the best trial
 * of each counts. FLOP per cycle differ between CPUs with the same flags (a
 * Zen 5 core times its bf16 dot products at twice its FMAs' FLOPs, while an
 * Intel Xeon without AMX trained slower in bf16 than in fp32), and the clock
 * /proc/cpuinfo reports is the nominal one, so neither can be read off the
 * flags. */
#include <pthread.h>
#include <time.h>

#include "cpu_features.h"
#include "machrt/backend.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile float sink;

/* Sixteen named accumulators, so that the compiler keeps them in registers
 * (an array of them it kept in memory). Each kernel returns the FLOPs it
 * did; the sum keeps the chains live. */
#define CHAINS 16
#define UNROLL(OP) \
    OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11) OP(12) OP(13) OP(14) OP(15)
#define SUM(OP)                                                                 \
    OP(0, 1) OP(2, 3) OP(4, 5) OP(6, 7) OP(8, 9) OP(10, 11) OP(12, 13) OP(14, 15) \
    OP(0, 2) OP(4, 6) OP(8, 10) OP(12, 14) OP(0, 4) OP(8, 12) OP(0, 8)

__attribute__((target("avx512f"))) static double fma512(long iters)
{
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
#define INIT(i) __m512 acc##i = _mm512_set1_ps((float)(i));
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, b, c);
#define ADD(i, j) acc##i = _mm512_add_ps(acc##i, acc##j);
    UNROLL(INIT)
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
    SUM(ADD)
    sink = _mm512_reduce_add_ps(acc0);
#undef INIT
#undef STEP
#undef ADD
    return (double)iters * CHAINS * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma256(long iters)
{
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
#define INIT(i) __m256 acc##i = _mm256_set1_ps((float)(i));
#define STEP(i) acc##i = _mm256_fmadd_ps(acc##i, b, c);
#define ADD(i, j) acc##i = _mm256_add_ps(acc##i, acc##j);
    UNROLL(INIT)
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
    SUM(ADD)
    float lanes[8];
    _mm256_storeu_ps(lanes, acc0);
    sink = lanes[0];
#undef INIT
#undef STEP
#undef ADD
    return (double)iters * CHAINS * 8 * 2;
}

/* vdpbf16ps: 32 bf16 products summed pairwise into 16 fp32 lanes. */
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16(long iters)
{
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
#define INIT(i) __m512 acc##i = _mm512_set1_ps((float)(i));
#define STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, a, b);
#define ADD(i, j) acc##i = _mm512_add_ps(acc##i, acc##j);
    UNROLL(INIT)
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
    SUM(ADD)
    sink = _mm512_reduce_add_ps(acc0);
#undef INIT
#undef STEP
#undef ADD
    return (double)iters * CHAINS * 32 * 2;
}

/* About 1 ms a trial on a 4 GHz core (15 ms for both kinds measured on a Zen 5). */
#define TRIAL_ITERS 250000L
#define TRIALS 7

static double rate(double (*kernel)(long))
{
    const double t0 = now();
    const double flops = kernel(TRIAL_ITERS);
    return flops / (now() - t0) * 1e-9;
}

static double peak_fp32, peak_bf16;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void time_peaks(void)
{
    const unsigned f = mrt_cpu_features();
    double (*fp32)(long) = (f & MRT_CPU_AVX512F) ? fma512 : (f & MRT_CPU_AVX2) ? fma256 : NULL;
    double (*bf16)(long) = (f & MRT_CPU_AVX512_BF16) ? dpbf16 : NULL;
    /* a first untimed trial of each: the clock ramps up, and the upper
     * halves of the vector units wake */
    if (fp32) fp32(TRIAL_ITERS);
    if (bf16) bf16(TRIAL_ITERS);
    for (int t = 0; t < TRIALS; t++) {
        if (fp32) {
            const double r = rate(fp32);
            if (r > peak_fp32) peak_fp32 = r;
        }
        if (bf16) {
            const double r = rate(bf16);
            if (r > peak_bf16) peak_bf16 = r;
        }
    }
}
#else
static double peak_fp32, peak_bf16; /* nothing timed off x86-64 */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static void time_peaks(void) {}
#endif

void mrt_cpu_time_peaks(double *fp32_gflops, double *bf16_gflops)
{
    pthread_once(&once, time_peaks);
    if (fp32_gflops) *fp32_gflops = peak_fp32;
    if (bf16_gflops) *bf16_gflops = peak_bf16;
}
