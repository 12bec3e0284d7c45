/* The oneDNN engine and streams: see dnnl_engine.h. */
#include <pthread.h>
#include "cpu_features.h"
#include "dnnl_engine.h"

static dnnl_engine_t engine;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* oneDNN picks its kernels from cpuid itself; capping it to what machrt
 * reports makes a feature hidden for a test hidden from oneDNN too. The cap
 * must be set before oneDNN generates its first kernel, hence here. */
static void cap_isa(void)
{
    const unsigned f = mrt_cpu_features();
    dnnl_cpu_isa_t isa = dnnl_cpu_isa_all;
    if (!(f & MRT_CPU_AVX2)) isa = dnnl_cpu_isa_sse41;
    else if (!(f & MRT_CPU_AVX512F)) isa = dnnl_cpu_isa_avx2;
    else if (!(f & MRT_CPU_AVX512_BF16)) isa = dnnl_cpu_isa_avx512_core_vnni;
    else if (!(f & MRT_CPU_AMX_BF16)) isa = dnnl_cpu_isa_avx512_core_bf16;
    if (isa != dnnl_cpu_isa_all) dnnl_set_max_cpu_isa(isa);
}

static void create(void)
{
    cap_isa();
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) engine = NULL;
}

dnnl_engine_t mrt_dnnl_engine(void)
{
    pthread_once(&once, create);
    return engine;
}

static _Thread_local dnnl_stream_t tl_stream;

dnnl_stream_t mrt_dnnl_stream(void)
{
    dnnl_engine_t e = mrt_dnnl_engine();
    if (!tl_stream && e && dnnl_stream_create(&tl_stream, e, dnnl_stream_default_flags) != dnnl_success)
        tl_stream = NULL;
    return tl_stream;
}
