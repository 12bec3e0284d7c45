/* The vector units' measured peak on one core, the denominator of the
 * "fraction of peak" lines of bench/train_step.lua: the clock /proc/cpuinfo
 * reports is the nominal one (a KVM guest of a boosting CPU runs faster),
 * and FLOP per cycle differ between CPUs with the same flags (a Zen 4 core
 * splits an AVX-512 FMA in two halves, a Zen 5 core does not). So the peak
 * is timed: independent chains of FMAs (fp32) and of bf16 dot products,
 * enough of them to cover the instructions' latency, best of 5 trials.
 * Prints "fp32 <GFLOP/s> <isa>" and, where the CPU has it,
 * "bf16 <GFLOP/s> avx512_bf16"; AMX is not timed here.
 * Chosen at run time from the CPU's features, like every kernel. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#include "../runtime/cpu/cpu_features.h"

#define ITERS 20000000L

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
#define UNROLL(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11) OP(12) OP(13) OP(14) OP(15)
#define SUM(OP)                                                                     \
    OP(0, 1) OP(2, 3) OP(4, 5) OP(6, 7) OP(8, 9) OP(10, 11) OP(12, 13) OP(14, 15)     \
    OP(0, 2) OP(4, 6) OP(8, 10) OP(12, 14) OP(0, 4) OP(8, 12) OP(0, 8)

__attribute__((target("avx512f"))) static double fma512(long iters)
{
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
#define INIT(i) __m512 acc##i = _mm512_set1_ps((float)(i));
    UNROLL(INIT)
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, b, c);
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
#define ADD(i, j) acc##i = _mm512_add_ps(acc##i, acc##j);
    SUM(ADD)
    sink = _mm512_reduce_add_ps(acc0);
    return (double)iters * CHAINS * 16 * 2;
#undef INIT
#undef STEP
#undef ADD
}

__attribute__((target("avx2,fma"))) static double fma256(long iters)
{
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
#define INIT(i) __m256 acc##i = _mm256_set1_ps((float)(i));
    UNROLL(INIT)
#define STEP(i) acc##i = _mm256_fmadd_ps(acc##i, b, c);
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
#define ADD(i, j) acc##i = _mm256_add_ps(acc##i, acc##j);
    SUM(ADD)
    float lanes[8];
    _mm256_storeu_ps(lanes, acc0);
    sink = lanes[0];
    return (double)iters * CHAINS * 8 * 2;
#undef INIT
#undef STEP
#undef ADD
}

/* vdpbf16ps: 32 bf16 products summed pairwise into 16 fp32 lanes. */
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16(long iters)
{
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
#define INIT(i) __m512 acc##i = _mm512_set1_ps((float)(i));
    UNROLL(INIT)
#define STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, a, b);
    for (long it = 0; it < iters; it++) { UNROLL(STEP) }
#define ADD(i, j) acc##i = _mm512_add_ps(acc##i, acc##j);
    SUM(ADD)
    sink = _mm512_reduce_add_ps(acc0);
    return (double)iters * CHAINS * 32 * 2;
#undef INIT
#undef STEP
#undef ADD
}

static double best_gflops(double (*kernel)(long))
{
    kernel(ITERS / 20); /* the clock ramps up, and the upper halves of the units wake */
    double best = 0;
    for (int trial = 0; trial < 5; trial++) {
        const double t0 = now();
        const double flops = kernel(ITERS / 5);
        const double rate = flops / (now() - t0) * 1e-9;
        if (rate > best) best = rate;
    }
    return best;
}

int main(void)
{
    const unsigned f = mrt_cpu_features();
    if (f & MRT_CPU_AVX512F)
        printf("fp32 %.1f avx512f\n", best_gflops(fma512));
    else if (f & MRT_CPU_AVX2)
        printf("fp32 %.1f avx2\n", best_gflops(fma256));
    else
        printf("fp32 unmeasured: neither avx2 nor avx512f\n");
    if (f & MRT_CPU_AVX512_BF16) printf("bf16 %.1f avx512_bf16\n", best_gflops(dpbf16));
    return 0;
}
