/* Internal: the contiguous row loops of batch normalisation (batchnorm.c),
 * compiled for the vector units the CPU has and picked at run time.
 *
 * Every version gives the same bits: the sums accumulate in double in
 * BN_SUM_LANES fixed lanes (lane j takes elements j, j + BN_SUM_LANES, ...;
 * the tail goes to lane 0; the lanes are added in order), with separate
 * multiplies and adds (no FMA contraction, as in ISO C builds), so a vector
 * version only computes several lanes at once. 32 lanes: four AVX-512
 * accumulators per sum, enough to hide the add latency. */
#ifndef MACHRT_BATCHNORM_SIMD_H
#define MACHRT_BATCHNORM_SIMD_H

#include <stdint.h>

#define BN_SUM_LANES 32

typedef struct {
    const char *name;
    /* *s1 += sum(p - k), *s2 += sum((p - k)^2) */
    void (*shifted_sums)(const float *p, int64_t len, double k, double *s1, double *s2);
    /* *s1 += sum(g), *s2 += sum(g * (x - mean)) */
    void (*grad_sums)(const float *x, const float *g, int64_t len, double mean, double *s1, double *s2);
    /* y = ((x - mh) - ml) * a + b; y may be x */
    void (*normalize)(const float *x, float *y, int64_t len, float mh, float ml, float a, float b);
    /* d = (g - g0 - (x - m) * k) * a; d may be g or x */
    void (*grad_input)(const float *x, const float *g, float *d, int64_t len, float m, float g0, float k,
                       float a);
} mrt_bn_kernels;

/* NULL: AVX-512, else AVX2, else portable C, as mrt_cpu_features() allows
 * (MACHRT_CPU_FEATURES honoured). "portable", "avx2" or "avx512f": that
 * version, or NULL where the CPU lacks it (tests compare them). */
const mrt_bn_kernels *mrt_bn_kernels_pick(const char *name);

#endif
