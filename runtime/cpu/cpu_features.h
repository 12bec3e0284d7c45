/* Internal: what this CPU can do for the GEMMs and the convolutions'
 * transforms (cpu_features.c). */
#ifndef MACHRT_CPU_FEATURES_H
#define MACHRT_CPU_FEATURES_H

typedef enum {
    MRT_CPU_AVX512F = 1 << 0,
    MRT_CPU_AVX512_BF16 = 1 << 1,
    MRT_CPU_AMX_BF16 = 1 << 2, /* AMX tiles with bf16, and the kernel lets us use them */
    MRT_CPU_AVX2 = 1 << 3,     /* AVX2 and FMA, with the OS saving YMM state */
} mrt_cpu_feature;

/* The features, probed once: cpuid, the OS's saved register state, and for
 * AMX Linux's permission to use tile data. MACHRT_CPU_FEATURES removes
 * features for tests ("-avx512_bf16,-amx_bf16"); it never adds any, and
 * removing one removes those that build on it (-avx2 takes AVX-512 too). */
unsigned mrt_cpu_features(void);

/* One version of a kernel family (portable C, AVX2, AVX-512; avx2 and
 * avx512f NULL where the build has none): with name NULL the best one this
 * CPU allows, else the one named ("portable", "avx2", "avx512f"), or NULL
 * where the CPU lacks it or the name is unknown (tests compare versions). */
const void *mrt_cpu_pick(const char *name, const void *portable, const void *avx2, const void *avx512f);

/* "avx2 avx512f avx512_bf16 amx_bf16" (those present) into buf. */
const char *mrt_cpu_features_str(char *buf, int size);

#endif
