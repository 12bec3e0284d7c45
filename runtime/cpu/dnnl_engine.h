/* Internal: the one oneDNN CPU engine, and a stream per thread
 * (dnnl_engine.c), shared by the GEMM (gemm.c) and the convolutions
 * (runtime/nn/conv2d_dnnl.c). */
#ifndef MACHRT_CPU_DNNL_ENGINE_H
#define MACHRT_CPU_DNNL_ENGINE_H

#include <dnnl.h>

/* The engine, created on first use, or NULL when oneDNN cannot make one.
 * Before the first one is made oneDNN's instruction set is capped to the
 * features mrt_cpu_features reports, so MACHRT_CPU_FEATURES=-amx_bf16 also
 * keeps oneDNN's own kernels off AMX. */
dnnl_engine_t mrt_dnnl_engine(void);

/* This thread's stream on that engine, or NULL. */
dnnl_stream_t mrt_dnnl_stream(void);

#endif
