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
 * (an array of them it kept in memory), each stepped by STEP(acc) every
 * iteration; the sum of the chains keeps them live. A kernel returns the
 * FLOPs it did. */
#define CHAINS 16
#define UNROLL(OP, x, y)                                                                                \
    OP(0, x, y) OP(1, x, y) OP(2, x, y) OP(3, x, y) OP(4, x, y) OP(5, x, y) OP(6, x, y) OP(7, x, y)     \
    OP(8, x, y) OP(9, x, y) OP(10, x, y) OP(11, x, y) OP(12, x, y) OP(13, x, y) OP(14, x, y) OP(15, x, y)
#define SUM(OP, x)                                                                                      \
    OP(0, 1, x) OP(2, 3, x) OP(4, 5, x) OP(6, 7, x) OP(8, 9, x) OP(10, 11, x) OP(12, 13, x) OP(14, 15, x) \
    OP(0, 2, x) OP(4, 6, x) OP(8, 10, x) OP(12, 14, x) OP(0, 4, x) OP(8, 12, x) OP(0, 8, x)
#define CHAIN_INIT(i, V, SET1) V acc##i = SET1((float)(i));
#define CHAIN_STEP(i, STEP, unused) acc##i = STEP(acc##i);
#define CHAIN_ADD(i, j, ADD) acc##i = ADD(acc##i, acc##j);
#define CHAIN_KERNEL(name, TARGET, V, SET1, ADD, STEP, FIRST_LANE, FLOP_PER_STEP) \
    TARGET static double name(long iters)                                        \
    {                                                                            \
        UNROLL(CHAIN_INIT, V, SET1)                                              \
        for (long it = 0; it < iters; it++) { UNROLL(CHAIN_STEP, STEP, ) }       \
        SUM(CHAIN_ADD, ADD)                                                      \
        sink = FIRST_LANE(acc0);                                                 \
        return (double)iters * CHAINS * (FLOP_PER_STEP);                         \
    }

/* fp32 FMAs (16 or 8 lanes, 2 FLOP each) and vdpbf16ps (32 bf16 products
 * summed pairwise into 16 fp32 lanes: 64 FLOP). */
#define FMA512(acc) _mm512_fmadd_ps(acc, _mm512_set1_ps(0.999999f), _mm512_set1_ps(1e-7f))
#define FMA256(acc) _mm256_fmadd_ps(acc, _mm256_set1_ps(0.999999f), _mm256_set1_ps(1e-7f))
#define BF16_SET1(v) _mm512_cvtne2ps_pbh(_mm512_set1_ps(v), _mm512_set1_ps(v))
#define DPBF16(acc) _mm512_dpbf16_ps(acc, BF16_SET1(1e-3f), BF16_SET1(0.5f))
CHAIN_KERNEL(fma512, __attribute__((target("avx512f"))), __m512, _mm512_set1_ps, _mm512_add_ps, FMA512,
             _mm512_cvtss_f32, 16 * 2)
CHAIN_KERNEL(fma256, __attribute__((target("avx2,fma"))), __m256, _mm256_set1_ps, _mm256_add_ps, FMA256,
             _mm256_cvtss_f32, 8 * 2)
CHAIN_KERNEL(dpbf16, __attribute__((target("avx512f,avx512bf16"))), __m512, _mm512_set1_ps, _mm512_add_ps,
             DPBF16, _mm512_cvtss_f32, 32 * 2)

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
