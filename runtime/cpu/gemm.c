/* The CPU GEMM: OpenBLAS, or oneDNN's matmul primitive in fp32 or bf16.
 *
 * oneDNN primitives take milliseconds to create, so they are cached by
 * shape, layout, alpha and beta; executing one from several threads at
 * once is safe because each thread brings its own stream and scratchpad.
 * bf16 operands are rounded here (ties to even) into per-thread buffers that
 * keep the caller's layout, 16 at a time with AVX-512 (every CPU with bf16
 * has it); oneDNN accumulates in fp32 and writes fp32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <dnnl.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "cpu_features.h"
#include "dnnl_engine.h"
#include "gemm.h"

typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc, bf16;
    float alpha, beta;
} prim_key;

typedef struct {
    prim_key key;
    dnnl_primitive_t prim; /* NULL: oneDNN has no implementation, use OpenBLAS */
    dnnl_memory_desc_t a_md, b_md, c_md, scratch_md;
    size_t scratch_bytes;
} prim_entry;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
/* Entries are allocated one by one: other threads hold pointers to them
 * while the list grows. */
static prim_entry **cache;
static size_t cache_len, cache_cap;
static int bf16_on;

float mrt_bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u; /* NaN stays a (quiet) NaN */
    else u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The bf16 bits of x: the upper half of mrt_bf16_round(x). */
static uint16_t to_bf16(float x)
{
    const float r = mrt_bf16_round(x);
    uint32_t u;
    memcpy(&u, &r, sizeof u);
    return (uint16_t)(u >> 16);
}

int mrt_cpu_gemm_bf16_supported(void)
{
    return (mrt_cpu_features() & (MRT_CPU_AVX512_BF16 | MRT_CPU_AMX_BF16)) != 0;
}

int mrt_cpu_gemm_set_bf16(int on)
{
    if (on && !mrt_cpu_gemm_bf16_supported()) return 0;
    bf16_on = on;
    return 1;
}

int mrt_cpu_gemm_bf16(void) { return bf16_on; }

/* Said once: a fallback from oneDNN is slower, never less exact. */
static void say_fallback(const char *why, int rounded)
{
    static int said;
    if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED)) return;
    fprintf(stderr, "machrt: oneDNN GEMM unavailable (%s); using OpenBLAS%s\n", why,
            rounded ? " on bf16-rounded operands" : "");
}

static void strided_md(dnnl_memory_desc_t *md, int rows, int cols, int trans, int ld,
                       dnnl_data_type_t dt)
{
    const dnnl_dims_t dims = {rows, cols};
    const dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

static dnnl_primitive_t create(const prim_key *key, prim_entry *e)
{
    const dnnl_data_type_t in = key->bf16 ? dnnl_bf16 : dnnl_f32;
    /* bf16 operands are dense copies in the caller's layout */
    const int lda = key->bf16 ? (key->ta ? key->m : key->k) : key->lda;
    const int ldb = key->bf16 ? (key->tb ? key->k : key->n) : key->ldb;
    strided_md(&e->a_md, key->m, key->k, key->ta, lda, in);
    strided_md(&e->b_md, key->k, key->n, key->tb, ldb, in);
    strided_md(&e->c_md, key->m, key->n, 0, key->ldc, dnnl_f32);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (dnnl_matmul_desc_init(&desc, &e->a_md, &e->b_md, NULL, &e->c_md) != dnnl_success ||
        dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (key->alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (key->beta != 0.0f && dnnl_post_ops_create(&po) == dnnl_success) {
        dnnl_post_ops_append_sum(po, key->beta);
        dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (dnnl_primitive_desc_create(&pd, &desc, attr, mrt_dnnl_engine(), NULL) == dnnl_success) {
        e->scratch_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        e->scratch_bytes = dnnl_memory_desc_get_size(&e->scratch_md);
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
        dnnl_primitive_desc_destroy(pd);
    }
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return prim;
}

/* This thread's last entry: a layer's chunks call with one shape in a row,
 * and entries are never moved or freed, so a hit needs no lock. */
static _Thread_local const prim_entry *tl_last;

/* The cached entry for key (created on first use), or NULL without oneDNN. */
static const prim_entry *lookup(const prim_key *key)
{
    if (tl_last && memcmp(&tl_last->key, key, sizeof *key) == 0) return tl_last;
    const prim_entry *found = NULL;
    pthread_mutex_lock(&cache_lock);
    if (mrt_dnnl_engine()) {
        for (size_t i = 0; i < cache_len && !found; i++)
            if (memcmp(&cache[i]->key, key, sizeof *key) == 0) found = cache[i];
        if (!found && cache_len == cache_cap) {
            prim_entry **grown = realloc(cache, sizeof *cache * (cache_cap * 2 + 64));
            if (grown) {
                cache = grown;
                cache_cap = cache_cap * 2 + 64;
            }
        }
        prim_entry *e = found || cache_len == cache_cap ? NULL : calloc(1, sizeof *e);
        if (e) {
            e->key = *key;
            e->prim = create(key, e);
            cache[cache_len++] = e;
            found = e;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    if (found) tl_last = found;
    return found;
}

typedef struct {
    void *p;
    size_t bytes;
} scratch_buf;

static _Thread_local scratch_buf tl_a, tl_b, tl_pad;

static void *grow(scratch_buf *s, size_t bytes)
{
    if (s->bytes >= bytes) return s->p;
    free(s->p);
    s->bytes = (bytes + 4095) & ~(size_t)4095;
    s->p = aligned_alloc(64, s->bytes);
    if (!s->p) s->bytes = 0;
    return s->p;
}

static void row_to_bf16(const float *src, uint16_t *dst, int cols)
{
    for (int j = 0; j < cols; j++) dst[j] = to_bf16(src[j]);
}

#if defined(__x86_64__)
/* mrt_bf16_round's integer arithmetic on 16 lanes (not vcvtneps2bf16,
 * which flushes denormals to zero), so both give the same bits. */
__attribute__((target("avx512f"))) static void row_to_bf16_avx512(const float *src, uint16_t *dst,
                                                                   int cols)
{
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000), half = _mm512_set1_epi32(0x7fff);
    const __m512i one = _mm512_set1_epi32(1);
    int j = 0;
    for (; j + 16 <= cols; j += 16) {
        const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + j));
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(half, odd));
        const __m512i r = _mm512_mask_or_epi32(rounded, nan, u, quiet);
        _mm256_storeu_si256((__m256i *)(dst + j), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
    row_to_bf16(src + j, dst + j, cols - j);
}
#endif

/* A dense bf16 copy of a rows x cols matrix stored with leading dimension
 * ld. Called from one thread (a linear layer) it splits the rows across the
 * threads; inside the convolutions' parallel chunks it stays on its own. */
static uint16_t *to_bf16_dense(scratch_buf *s, const float *x, int rows, int cols, int ld)
{
    uint16_t *out = grow(s, sizeof(uint16_t) * (size_t)rows * (size_t)cols);
    if (!out) return NULL;
    void (*row)(const float *, uint16_t *, int) = row_to_bf16;
#if defined(__x86_64__)
    if (mrt_cpu_features() & MRT_CPU_AVX512F) row = row_to_bf16_avx512;
#endif
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && (int64_t)rows * cols > (1 << 16))
    for (int r = 0; r < rows; r++) row(x + (size_t)r * (size_t)ld, out + (size_t)r * (size_t)cols, cols);
    return out;
}

static int run_onednn(const prim_entry *e, const void *a, const void *b, float *c)
{
    dnnl_engine_t engine = mrt_dnnl_engine();
    dnnl_stream_t stream = mrt_dnnl_stream();
    if (!stream) return 0;
    void *pad = e->scratch_bytes ? grow(&tl_pad, e->scratch_bytes) : NULL;
    if (e->scratch_bytes && !pad) return 0;
    dnnl_memory_t mem[4] = {NULL, NULL, NULL, NULL};
    int ok = dnnl_memory_create(&mem[0], &e->a_md, engine, (void *)a) == dnnl_success &&
             dnnl_memory_create(&mem[1], &e->b_md, engine, (void *)b) == dnnl_success &&
             dnnl_memory_create(&mem[2], &e->c_md, engine, c) == dnnl_success &&
             (!pad || dnnl_memory_create(&mem[3], &e->scratch_md, engine, pad) == dnnl_success);
    if (ok) {
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]},
                                         {DNNL_ARG_DST, mem[2]}, {DNNL_ARG_SCRATCHPAD, mem[3]}};
        ok = dnnl_primitive_execute(e->prim, stream, pad ? 4 : 3, args) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
    }
    for (int i = 0; i < 4; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    return ok;
}

/* OpenBLAS on operands rounded to bf16: the same numbers as the bf16 path. */
static void openblas_on_rounded(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                                float alpha, const float *a, int lda, const float *b, int ldb,
                                float beta, float *c, int ldc)
{
    const int ar = ta == CblasTrans ? k : m, ac = ta == CblasTrans ? m : k;
    const int br = tb == CblasTrans ? n : k, bc = tb == CblasTrans ? k : n;
    float *ra = malloc(sizeof(float) * (size_t)ar * (size_t)ac);
    float *rb = malloc(sizeof(float) * (size_t)br * (size_t)bc);
    if (!ra || !rb) {
        free(ra);
        free(rb);
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    for (int r = 0; r < ar; r++)
        for (int j = 0; j < ac; j++) ra[(size_t)r * ac + j] = mrt_bf16_round(a[(size_t)r * lda + j]);
    for (int r = 0; r < br; r++)
        for (int j = 0; j < bc; j++) rb[(size_t)r * bc + j] = mrt_bf16_round(b[(size_t)r * ldb + j]);
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, ra, ac, rb, bc, beta, c, ldc);
    free(ra);
    free(rb);
}

static int onednn(int bf16, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                  float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                  float *c, int ldc)
{
    prim_key key;
    memset(&key, 0, sizeof key); /* the key is compared bytewise, padding included */
    key.ta = ta == CblasTrans;
    key.tb = tb == CblasTrans;
    key.m = m; key.n = n; key.k = k;
    key.lda = bf16 ? 0 : lda; key.ldb = bf16 ? 0 : ldb; key.ldc = ldc;
    key.bf16 = bf16;
    key.alpha = alpha; key.beta = beta;
    const prim_entry *e = lookup(&key);
    if (!e || !e->prim) return 0;
    if (!bf16) return run_onednn(e, a, b, c);
    const void *ha = to_bf16_dense(&tl_a, a, key.ta ? k : m, key.ta ? m : k, lda);
    const void *hb = to_bf16_dense(&tl_b, b, key.tb ? n : k, key.tb ? k : n, ldb);
    return ha && hb && run_onednn(e, ha, hb, c);
}

/* oneDNN's fp32 matmul beat OpenBLAS 0.3.21 on every shape of a ResNet34
 * step, 1.5x to 13x (bench/gemm_choice.c, README "Dependencies"). */
static mrt_gemm_impl fp32_impl(int m, int n, int k)
{
    (void)m, (void)n, (void)k;
    return MRT_GEMM_ONEDNN_F32;
}

void mrt_cpu_gemm_with(mrt_gemm_impl impl, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n,
                       int k, float alpha, const float *a, int lda, const float *b, int ldb,
                       float beta, float *c, int ldc)
{
    if (impl == MRT_GEMM_AUTO)
        impl = bf16_on ? MRT_GEMM_ONEDNN_BF16 : fp32_impl(m, n, k);
    /* oneDNN wants every dimension; OpenBLAS handles the degenerate ones */
    const int degenerate = m <= 0 || n <= 0 || k <= 0;
    if (impl == MRT_GEMM_ONEDNN_BF16) {
        if (!degenerate && onednn(1, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
        if (!degenerate) say_fallback("no bf16 matmul for this shape", 1);
        openblas_on_rounded(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (impl == MRT_GEMM_ONEDNN_F32 && !degenerate) {
        if (onednn(0, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
        say_fallback("no fp32 matmul for this shape", 0);
    }
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void mrt_cpu_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    mrt_cpu_gemm_with(MRT_GEMM_AUTO, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
