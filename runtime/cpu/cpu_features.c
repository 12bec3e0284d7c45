/* Run-time CPU feature probe: the binary is built for baseline x86-64, and
 * the faster paths are chosen here, never by -march=native. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <pthread.h>
#include "cpu_features.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <unistd.h>
#include <sys/syscall.h>

/* Linux (5.16+) hands out AMX tile state only on request; without it the
 * first tile instruction kills the process. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static unsigned long long xcr0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static unsigned probe_hardware(void)
{
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* no OSXSAVE */
    const unsigned long long x = xcr0();
    const int ymm_saved = (x & 0x6) == 0x6;   /* XMM, YMM state */
    const int zmm_saved = (x & 0xe6) == 0xe6; /* XMM, YMM, opmask, ZMM state */
    const int fma = (c & (1u << 12)) != 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned leaf7_edx = d;
    if (ymm_saved && fma && (b & (1u << 5))) f |= MRT_CPU_AVX2;
    if ((f & MRT_CPU_AVX2) && zmm_saved && (b & (1u << 16))) f |= MRT_CPU_AVX512F;
    __cpuid_count(7, 1, a, b, c, d);
    if ((f & MRT_CPU_AVX512F) && (a & (1u << 5))) f |= MRT_CPU_AVX512_BF16;
    const int amx = (leaf7_edx & (1u << 22)) && (leaf7_edx & (1u << 24)); /* AMX-BF16, AMX-TILE */
    if (amx && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 &&
        (xcr0() & (3ull << 17)) == (3ull << 17))
        f |= MRT_CPU_AMX_BF16;
    return f;
}
#else
static unsigned probe_hardware(void) { return 0; }
#endif

static const struct {
    const char *name;
    unsigned bit;
} names[] = {
    {"avx2", MRT_CPU_AVX2},
    {"avx512f", MRT_CPU_AVX512F},
    {"avx512_bf16", MRT_CPU_AVX512_BF16},
    {"amx_bf16", MRT_CPU_AMX_BF16},
};

static unsigned features;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void probe(void)
{
    features = probe_hardware();
    const char *env = getenv("MACHRT_CPU_FEATURES");
    if (!env) return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", env);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int known = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (tok[0] == '-' && strcmp(tok + 1, names[i].name) == 0) {
                features &= ~names[i].bit;
                known = 1;
            }
        if (!known)
            fprintf(stderr, "machrt: MACHRT_CPU_FEATURES: '%s' ignored (only removals: "
                    "-avx2, -avx512f, -avx512_bf16, -amx_bf16)\n", tok);
    }
    /* bf16 and AMX are used only with AVX-512, and AVX-512 paths assume AVX2 */
    if (!(features & MRT_CPU_AVX2)) features = 0;
    if (!(features & MRT_CPU_AVX512F)) features &= MRT_CPU_AVX2;
}

unsigned mrt_cpu_features(void)
{
    pthread_once(&once, probe);
    return features;
}

const void *mrt_cpu_pick(const char *name, const void *portable, const void *avx2, const void *avx512f)
{
    const unsigned f = mrt_cpu_features();
    if (!(f & MRT_CPU_AVX2)) avx2 = NULL;
    if (!(f & MRT_CPU_AVX512F)) avx512f = NULL;
    if (!name) return avx512f ? avx512f : avx2 ? avx2 : portable;
    if (strcmp(name, "avx512f") == 0) return avx512f;
    if (strcmp(name, "avx2") == 0) return avx2;
    return strcmp(name, "portable") == 0 ? portable : NULL;
}

const char *mrt_cpu_features_str(char *buf, int size)
{
    const unsigned f = mrt_cpu_features();
    int n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((f & names[i].bit) && n < size)
            n += snprintf(buf + n, (size_t)(size - n), "%s%s", n ? " " : "", names[i].name);
    if (!f) snprintf(buf, (size_t)size, "(none of avx2, avx512f, avx512_bf16, amx_bf16)");
    return buf;
}
