/* The inference plan (machrt/infer_plan.h) on oneDNN primitives.
 *
 * Per input shape an instance holds every primitive in execution order
 * ("steps"), the activation buffers and the weights in the layouts the
 * convolutions chose. Activation buffers are shared between values whose
 * lifetimes do not overlap, and a residual summand that is not needed
 * after its sum becomes the convolution's destination (oneDNN's sum
 * post-op adds into what dst holds), so a ResNet block writes no copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <dnnl.h>
#include <omp.h>
#include <sys/mman.h>
#include "machrt/infer_plan.h"
#include "cpu_features.h"
#include "gemm.h"
#include "dnnl_engine.h"
#include "../nn/conv2d.h"

#define MAX_SHAPES 4 /* instances kept: a batch size, the last partial batch, ... */

typedef enum { OP_CONV, OP_MAXPOOL } op_kind;

typedef struct {
    op_kind kind;
    char name[64];
    int src, residual, relu;
    mrt_infer_conv_geom g; /* max pooling: cin = cout = channels */
    float *w, *b;          /* folded weights (cout x cin x kh x kw) and bias */
    float *u;              /* own Winograd: the folded weights transformed, else NULL */
    int has_weights;
} plan_op;

typedef enum { STEP_INPUT, STEP_REORDER, STEP_OP, STEP_OUTPUT } step_kind;

/* A convolution run by machrt's own Winograd (runtime/nn/conv2d_winograd.c)
 * on nchw buffers, the memory objects' handles read at run time. */
typedef struct {
    int op;
    mrt_conv_geom g;
    int64_t nb;
    dnnl_memory_t src, res, dst; /* res NULL: no residual */
} wino_step;

typedef struct {
    step_kind kind;
    dnnl_primitive_t prim; /* NULL for a wino step */
    int nargs;
    dnnl_exec_arg_t args[6];
    wino_step wino;
} step;

/* A memory object whose handle is set once the buffers are allocated. */
typedef struct {
    dnnl_memory_t mem;
    int buf; /* -1: the scratchpad */
} binding;

typedef struct {
    int n, h, w;
    int threads; /* the Winograd scratch depends on the OpenMP thread count */
    unsigned long long used;
    unsigned weights_version;
    int nvals;
    dnnl_memory_desc_t *md, *alt_md; /* per value: its layout, and one other if asked */
    dnnl_memory_t *mem, *alt_mem;
    int *buf_of, *alt_buf, *vh, *vw;
    size_t *buf_bytes;
    int *buf_busy;
    void **buf;
    int nbuf;
    step *steps;
    int nsteps, inner_reorders;
    binding *binds;
    int nbinds;
    dnnl_memory_t *owned; /* every memory object, for destruction */
    int nowned;
    dnnl_primitive_t *wreorder; /* per op: user weights -> the convolution's layout */
    dnnl_memory_t *wuser, *wmem, *bmem;
    void **wbuf;
    dnnl_memory_t in_user, out_user;
    void *scratch;
    size_t scratch_bytes;
} shape_inst;

struct mrt_infer_plan {
    mrt_infer_precision precision;
    int in_channels;
    plan_op *ops;
    int nops, cap;
    unsigned weights_version;
    int winograd;
    /* fp32 Winograd by machrt's own F(4x4, 3x3) on nchw activations: oneDNN
     * 2.6 has Winograd only for AVX-512, so without it 3x3 stride-1 layers
     * run there, and the oneDNN layers after the first of them keep nchw
     * too (see build_conv). */
    int own_winograd;
    unsigned long long tick;
    shape_inst *inst[MAX_SHAPES];
    dnnl_engine_t engine;
    dnnl_stream_t stream;
};

int mrt_infer_bf16_supported(void) { return mrt_cpu_gemm_bf16_supported(); }

static int value_channels(const mrt_infer_plan *p, int v)
{
    return v == 0 ? p->in_channels : p->ops[v - 1].g.cout;
}

mrt_status mrt_infer_plan_new(mrt_infer_precision precision, int in_channels, mrt_infer_plan **out)
{
    *out = NULL;
    if (in_channels < 1) return mrt_fail(MRT_ERR_ARG, "infer plan: in_channels must be positive, got %d", in_channels);
    if (precision == MRT_INFER_BF16 && !mrt_infer_bf16_supported())
        return mrt_fail(MRT_ERR_ARG, "infer plan: this CPU has neither avx512_bf16 nor AMX; use an fp32 plan");
    mrt_infer_plan *p = calloc(1, sizeof *p);
    if (!p) return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory");
    p->precision = precision;
    p->in_channels = in_channels;
    p->winograd = 1;
    p->own_winograd = precision == MRT_INFER_F32 && !(mrt_cpu_features() & MRT_CPU_AVX512F);
    p->engine = mrt_dnnl_engine(); /* shared, with its ISA cap; not the plan's to destroy */
    if (!p->engine ||
        dnnl_stream_create(&p->stream, p->engine, dnnl_stream_default_flags) != dnnl_success) {
        mrt_infer_plan_free(p);
        return mrt_fail(MRT_ERR_DEVICE, "infer plan: oneDNN's CPU engine is unavailable");
    }
    *out = p;
    return MRT_OK;
}

static void inst_free(shape_inst *s, int nops)
{
    if (!s) return;
    for (int i = 0; i < s->nsteps; i++)
        if (s->steps[i].prim) dnnl_primitive_destroy(s->steps[i].prim);
    for (int i = 0; i < s->nowned; i++) dnnl_memory_destroy(s->owned[i]);
    for (int i = 0; i < nops; i++) {
        if (s->wreorder && s->wreorder[i]) dnnl_primitive_destroy(s->wreorder[i]);
        if (s->wbuf) free(s->wbuf[i]);
    }
    for (int i = 0; i < s->nbuf; i++) free(s->buf[i]);
    free(s->scratch);
    free(s->md); free(s->alt_md); free(s->mem); free(s->alt_mem);
    free(s->buf_of); free(s->alt_buf); free(s->vh); free(s->vw);
    free(s->buf_bytes); free(s->buf_busy); free(s->buf);
    free(s->steps); free(s->binds); free(s->owned);
    free(s->wreorder); free(s->wuser); free(s->wmem); free(s->bmem); free(s->wbuf);
    free(s);
}

void mrt_infer_plan_free(mrt_infer_plan *p)
{
    if (!p) return;
    for (int i = 0; i < MAX_SHAPES; i++) inst_free(p->inst[i], p->nops);
    for (int i = 0; i < p->nops; i++) {
        free(p->ops[i].w);
        free(p->ops[i].b);
        free(p->ops[i].u);
    }
    free(p->ops);
    if (p->stream) dnnl_stream_destroy(p->stream);
    free(p);
}

/* Adding an operation changes every instance: they are dropped. */
static void drop_instances(mrt_infer_plan *p)
{
    for (int i = 0; i < MAX_SHAPES; i++) {
        inst_free(p->inst[i], p->nops);
        p->inst[i] = NULL;
    }
}

static mrt_status append(mrt_infer_plan *p, const plan_op *op, int *value)
{
    const int nvals = p->nops + 1;
    if (op->src < 0 || op->src >= nvals)
        return mrt_fail(MRT_ERR_INDEX, "infer plan: %s: input value %d does not exist (0..%d)", op->name, op->src, nvals - 1);
    if (value_channels(p, op->src) != op->g.cin)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: %s expects %d input channels, its input has %d",
                        op->name, op->g.cin, value_channels(p, op->src));
    if (op->residual >= nvals)
        return mrt_fail(MRT_ERR_INDEX, "infer plan: %s: residual value %d does not exist", op->name, op->residual);
    if (op->residual >= 0 && value_channels(p, op->residual) != op->g.cout)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: %s makes %d channels, its residual has %d",
                        op->name, op->g.cout, value_channels(p, op->residual));
    const mrt_infer_conv_geom *g = &op->g;
    if (g->cin < 1 || g->cout < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 || g->ph < 0 || g->pw < 0)
        return mrt_fail(MRT_ERR_ARG, "infer plan: %s: bad geometry", op->name);
    if (p->nops == p->cap) {
        const int cap = p->cap * 2 + 16;
        plan_op *grown = realloc(p->ops, sizeof *grown * (size_t)cap);
        if (!grown) return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory");
        p->ops = grown;
        p->cap = cap;
    }
    plan_op *dst = &p->ops[p->nops];
    *dst = *op;
    if (op->kind == OP_CONV) {
        const size_t nw = (size_t)g->cout * (size_t)g->cin * (size_t)g->kh * (size_t)g->kw;
        dst->w = calloc(nw, sizeof(float));
        dst->b = calloc((size_t)g->cout, sizeof(float));
        if (!dst->w || !dst->b) {
            free(dst->w);
            free(dst->b);
            return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory for %s's weights", op->name);
        }
    }
    drop_instances(p);
    p->nops++;
    *value = p->nops;
    return MRT_OK;
}

mrt_status mrt_infer_plan_conv(mrt_infer_plan *p, const char *name, int src, int residual,
                               const mrt_infer_conv_geom *geom, int relu, int *value)
{
    plan_op op;
    memset(&op, 0, sizeof op);
    op.kind = OP_CONV;
    snprintf(op.name, sizeof op.name, "%s", name ? name : "conv");
    op.src = src;
    op.residual = residual;
    op.relu = relu;
    op.g = *geom;
    return append(p, &op, value);
}

mrt_status mrt_infer_plan_maxpool(mrt_infer_plan *p, const char *name, int src, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int *value)
{
    if (src < 0 || src > p->nops)
        return mrt_fail(MRT_ERR_INDEX, "infer plan: %s: input value %d does not exist", name, src);
    if (2 * ph > kh || 2 * pw > kw)
        return mrt_fail(MRT_ERR_ARG, "infer plan: %s: padding must be at most half the kernel", name);
    plan_op op;
    memset(&op, 0, sizeof op);
    op.kind = OP_MAXPOOL;
    snprintf(op.name, sizeof op.name, "%s", name ? name : "maxpool");
    op.src = src;
    op.residual = -1;
    const int c = value_channels(p, src);
    op.g = (mrt_infer_conv_geom){c, c, kh, kw, sh, sw, ph, pw};
    op.has_weights = 1;
    return append(p, &op, value);
}

/* The layer as machrt's Winograd sees it (n, h, w do not matter for the
 * weights). */
static mrt_conv_geom wino_geom(const mrt_infer_conv_geom *g, int n, int h, int w, int oh, int ow)
{
    return (mrt_conv_geom){n, g->cin, h, w, g->cout, 3, 3, oh, ow, 1, 1, g->ph, g->pw};
}

static int runs_own_winograd(const mrt_infer_plan *p, const plan_op *op)
{
    const mrt_infer_conv_geom *g = &op->g;
    return p->winograd && p->own_winograd && op->kind == OP_CONV && g->kh == 3 && g->kw == 3 && g->sh == 1 &&
           g->sw == 1 && g->ph <= 2 && g->pw <= 2;
}

/* The transformed kernels of op (own Winograd), or none (NULL) otherwise. */
/* Buffers of the plan: 64-byte aligned, and those of 4 MB or more 2 MB
 * aligned and asked for huge pages, which the kernel then gives in its
 * transparent huge page mode "madvise" (without the request, 4 KB pages).
 * The Winograd layers stream 36 transformed positions at once, megabytes
 * apart, through V, M and the transformed kernels, and on 4 KB pages miss
 * the TLB: ResNet34, batch 32, one thread, 4 % less CPU time with them.
 * Only plans on machrt's Winograd ask (`huge`): the others, AVX-512 and
 * AMX, were measured without and are left as they were. */
#define HUGE_PAGE ((size_t)2 << 20)
static void *plan_alloc(size_t bytes, int huge)
{
    if (!huge || bytes < 2 * HUGE_PAGE) return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    const size_t len = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *p = aligned_alloc(HUGE_PAGE, len);
    if (p) (void)madvise(p, len, MADV_HUGEPAGE); /* a refusal only leaves 4 KB pages */
    return p;
}

static mrt_status transform_weights(const mrt_infer_plan *p, plan_op *op)
{
    free(op->u);
    op->u = NULL;
    if (!op->has_weights || !runs_own_winograd(p, op)) return MRT_OK;
    const mrt_conv_geom g = wino_geom(&op->g, 1, 3, 3, 3, 3);
    const size_t nu = mrt_conv_wino_weights_floats(&g, 4);
    op->u = plan_alloc(nu * sizeof(float), 1);
    if (!op->u) return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory for %s's Winograd weights", op->name);
    mrt_conv_wino_weights(&g, 4, op->w, op->u);
    return MRT_OK;
}

void mrt_infer_plan_set_winograd(mrt_infer_plan *p, int on)
{
    drop_instances(p);
    p->winograd = on != 0;
    for (int i = 0; i < p->nops; i++)
        (void)transform_weights(p, &p->ops[i]); /* out of memory: refused by the next forward */
}

mrt_status mrt_infer_plan_set_weights(mrt_infer_plan *p, int value, const float *w, const float *bias,
                                      const mrt_infer_bn *bn)
{
    if (value < 1 || value > p->nops || p->ops[value - 1].kind != OP_CONV)
        return mrt_fail(MRT_ERR_INDEX, "infer plan: value %d is not a convolution", value);
    plan_op *op = &p->ops[value - 1];
    const mrt_infer_conv_geom *g = &op->g;
    const size_t per_out = (size_t)g->cin * (size_t)g->kh * (size_t)g->kw;
    for (int o = 0; o < g->cout; o++) {
        double scale = 1.0, shift = bias ? bias[o] : 0.0;
        if (bn) {
            scale = bn->gamma[o] / sqrt((double)bn->var[o] + bn->eps);
            shift = (shift - bn->mean[o]) * scale + bn->beta[o];
        }
        for (size_t j = 0; j < per_out; j++)
            op->w[(size_t)o * per_out + j] = (float)(w[(size_t)o * per_out + j] * scale);
        op->b[o] = (float)shift;
    }
    op->has_weights = 1;
    mrt_status st = transform_weights(p, op);
    if (st != MRT_OK) {
        op->has_weights = 0;
        return st;
    }
    p->weights_version++;
    return MRT_OK;
}

/* ---- building an instance ----------------------------------------------------------- */

static int grow_array(void **a, int n, int *cap, size_t elem)
{
    if (n < *cap) return 1;
    const int c = *cap * 2 + 16;
    void *g = realloc(*a, elem * (size_t)c);
    if (!g) return 0;
    *a = g;
    *cap = c;
    return 1;
}

typedef struct {
    int step_cap, bind_cap, owned_cap, buf_cap;
} caps;

static mrt_status nomem(void) { return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory"); }

static mrt_status own_memory(shape_inst *s, caps *c, const dnnl_memory_desc_t *md, dnnl_engine_t e,
                             void *handle, dnnl_memory_t *out)
{
    if (!grow_array((void **)&s->owned, s->nowned, &c->owned_cap, sizeof *s->owned)) return nomem();
    if (dnnl_memory_create(out, md, e, handle) != dnnl_success)
        return mrt_fail(MRT_ERR_DEVICE, "infer plan: oneDNN could not create a memory object");
    s->owned[s->nowned++] = *out;
    return MRT_OK;
}

static mrt_status bind(shape_inst *s, caps *c, dnnl_memory_t mem, int buf)
{
    if (!grow_array((void **)&s->binds, s->nbinds, &c->bind_cap, sizeof *s->binds)) return nomem();
    s->binds[s->nbinds++] = (binding){mem, buf};
    return MRT_OK;
}

/* A buffer for `bytes`: the smallest free one that fits, else a free one
 * grown, else a new one (sizes only; allocated when the plan is complete). */
static int pool_take(shape_inst *s, caps *c, size_t bytes)
{
    int best = -1, largest = -1;
    for (int i = 0; i < s->nbuf; i++) {
        if (s->buf_busy[i]) continue;
        if (s->buf_bytes[i] >= bytes && (best < 0 || s->buf_bytes[i] < s->buf_bytes[best])) best = i;
        if (largest < 0 || s->buf_bytes[i] > s->buf_bytes[largest]) largest = i;
    }
    if (best < 0 && largest >= 0) {
        best = largest;
        s->buf_bytes[best] = bytes;
    }
    if (best < 0) {
        int cap = c->buf_cap;
        if (!grow_array((void **)&s->buf_bytes, s->nbuf, &cap, sizeof *s->buf_bytes)) return -1;
        cap = c->buf_cap;
        if (!grow_array((void **)&s->buf_busy, s->nbuf, &cap, sizeof *s->buf_busy)) return -1;
        c->buf_cap = cap;
        best = s->nbuf++;
        s->buf_bytes[best] = bytes;
    }
    s->buf_busy[best] = 1;
    return best;
}

static mrt_status add_step(shape_inst *s, caps *c, step_kind kind, dnnl_primitive_desc_t pd,
                           const dnnl_exec_arg_t *args, int nargs, dnnl_engine_t e)
{
    if (!grow_array((void **)&s->steps, s->nsteps, &c->step_cap, sizeof *s->steps)) return nomem();
    step *st = &s->steps[s->nsteps];
    memset(st, 0, sizeof *st);
    st->kind = kind;
    if (dnnl_primitive_create(&st->prim, pd) != dnnl_success)
        return mrt_fail(MRT_ERR_DEVICE, "infer plan: oneDNN could not create a primitive");
    memcpy(st->args, args, sizeof *args * (size_t)nargs);
    st->nargs = nargs;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t sb = smd ? dnnl_memory_desc_get_size(smd) : 0;
    s->nsteps++; /* from here the primitive is the instance's to destroy */
    if (sb) {
        dnnl_memory_t m;
        mrt_status stt = own_memory(s, c, smd, e, DNNL_MEMORY_NONE, &m);
        if (stt == MRT_OK) stt = bind(s, c, m, -1);
        if (stt != MRT_OK) return stt;
        st->args[st->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m};
        if (sb > s->scratch_bytes) s->scratch_bytes = sb;
    }
    return MRT_OK;
}

static dnnl_primitive_attr_t user_scratchpad_attr(void)
{
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    return attr;
}

/* A step reordering src_mem (src_md) into dst_mem (dst_md). */
static mrt_status add_reorder(shape_inst *s, caps *c, step_kind kind, const dnnl_memory_desc_t *src_md,
                              dnnl_memory_t src_mem, const dnnl_memory_desc_t *dst_md,
                              dnnl_memory_t dst_mem, dnnl_engine_t e)
{
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd = NULL;
    const int ok = attr && dnnl_reorder_primitive_desc_create(&pd, src_md, e, dst_md, e, attr) == dnnl_success;
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) return mrt_fail(MRT_ERR_DEVICE, "infer plan: oneDNN has no reorder between two layouts");
    const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src_mem}, {DNNL_ARG_TO, dst_mem}};
    mrt_status st = add_step(s, c, kind, pd, args, 2, e);
    dnnl_primitive_desc_destroy(pd);
    if (st == MRT_OK && kind == STEP_REORDER) s->inner_reorders++;
    return st;
}

/* Value v as md wants it: itself, or a reordered copy kept beside it. */
static mrt_status value_as(shape_inst *s, caps *c, int v, const dnnl_memory_desc_t *md, dnnl_engine_t e,
                           dnnl_memory_t *out)
{
    if (dnnl_memory_desc_equal(&s->md[v], md)) {
        *out = s->mem[v];
        return MRT_OK;
    }
    if (s->alt_mem[v] && dnnl_memory_desc_equal(&s->alt_md[v], md)) {
        *out = s->alt_mem[v];
        return MRT_OK;
    }
    if (s->alt_mem[v]) /* a third layout of one value: never seen in a ResNet */
        return mrt_fail(MRT_ERR_ARG, "infer plan: value %d is wanted in three layouts", v);
    const int b = pool_take(s, c, dnnl_memory_desc_get_size(md));
    if (b < 0) return nomem();
    mrt_status st = own_memory(s, c, md, e, DNNL_MEMORY_NONE, &s->alt_mem[v]);
    if (st == MRT_OK) st = bind(s, c, s->alt_mem[v], b);
    if (st != MRT_OK) return st;
    s->alt_md[v] = *md;
    s->alt_buf[v] = b;
    st = add_reorder(s, c, v == 0 ? STEP_INPUT : STEP_REORDER, &s->md[v], s->mem[v], md, s->alt_mem[v], e);
    *out = s->alt_mem[v];
    return st;
}

/* Value v gets a fresh buffer for its layout md. */
static mrt_status value_new(shape_inst *s, caps *c, int v, const dnnl_memory_desc_t *md, dnnl_engine_t e)
{
    s->md[v] = *md;
    const int b = pool_take(s, c, dnnl_memory_desc_get_size(md));
    if (b < 0) return nomem();
    s->buf_of[v] = b;
    mrt_status st = own_memory(s, c, md, e, DNNL_MEMORY_NONE, &s->mem[v]);
    return st == MRT_OK ? bind(s, c, s->mem[v], b) : st;
}

static void release_value(shape_inst *s, int v)
{
    if (s->buf_of[v] >= 0) s->buf_busy[s->buf_of[v]] = 0;
    if (s->alt_buf[v] >= 0) s->buf_busy[s->alt_buf[v]] = 0;
    s->buf_of[v] = s->alt_buf[v] = -1;
}

static void dims4(dnnl_dims_t d, int a, int b, int c, int e)
{
    d[0] = a; d[1] = b; d[2] = c; d[3] = e;
}

static mrt_status add_wino_step(shape_inst *s, caps *c, const wino_step *w)
{
    if (!grow_array((void **)&s->steps, s->nsteps, &c->step_cap, sizeof *s->steps)) return nomem();
    step *st = &s->steps[s->nsteps++];
    memset(st, 0, sizeof *st);
    st->kind = STEP_OP;
    st->wino = *w;
    const size_t sb = mrt_conv_wino_fused_scratch(&w->g, 4, w->nb) * sizeof(float);
    if (sb > s->scratch_bytes) s->scratch_bytes = sb;
    return MRT_OK;
}

/* A 3x3 stride-1 convolution by machrt's Winograd: nchw in, out and
 * residual; the residual is never the destination (the output transform
 * writes before the sum reads). */
static mrt_status build_wino(mrt_infer_plan *p, shape_inst *s, caps *c, int i)
{
    const plan_op *op = &p->ops[i];
    const int v = i + 1, src = op->src, res = op->residual;
    dnnl_dims_t sd, dd;
    dims4(sd, s->n, op->g.cin, s->vh[src], s->vw[src]);
    dims4(dd, s->n, op->g.cout, s->vh[v], s->vw[v]);
    dnnl_memory_desc_t src_md, dst_md;
    dnnl_memory_desc_init_by_tag(&src_md, 4, sd, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&dst_md, 4, dd, dnnl_f32, dnnl_nchw);
    wino_step w = {i, wino_geom(&op->g, s->n, s->vh[src], s->vw[src], s->vh[v], s->vw[v]), 0, NULL, NULL, NULL};
    w.nb = mrt_conv_wino_block(&w.g, 4);
    mrt_status st = value_as(s, c, src, &src_md, p->engine, &w.src);
    if (st == MRT_OK && res >= 0) st = value_as(s, c, res, &dst_md, p->engine, &w.res);
    if (st == MRT_OK) st = value_new(s, c, v, &dst_md, p->engine);
    if (st == MRT_OK) {
        w.dst = s->mem[v];
        st = add_wino_step(s, c, &w);
    }
    return st;
}

static mrt_status build_conv(mrt_infer_plan *p, shape_inst *s, caps *c, int i, const int *last_use)
{
    if (runs_own_winograd(p, &p->ops[i])) return build_wino(p, s, c, i);
    const plan_op *op = &p->ops[i];
    const mrt_infer_conv_geom *g = &op->g;
    const int v = i + 1, src = op->src, res = op->residual;
    const dnnl_data_type_t dt = p->precision == MRT_INFER_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t sd, wd, dd, bd = {g->cout}, strides = {g->sh, g->sw}, pad = {g->ph, g->pw};
    dims4(sd, s->n, g->cin, s->vh[src], s->vw[src]);
    dims4(wd, g->cout, g->cin, g->kh, g->kw);
    dims4(dd, s->n, g->cout, s->vh[v], s->vw[v]);
    /* right padding that gives exactly the floor-division output size */
    dnnl_dims_t pad_r = {(s->vh[v] - 1) * g->sh + g->kh - s->vh[src] - g->ph,
                         (s->vw[v] - 1) * g->sw + g->kw - s->vw[src] - g->pw};
    dnnl_memory_desc_t src_any, w_any, b_md, dst_any;
    /* fp32 with oneDNN's Winograd (AVX-512): every activation in nChw16c,
     * Winograd's layout, so that the direct convolutions between need no
     * reorders (left to themselves they choose nhwc). Otherwise oneDNN's
     * choice (nChw8c for AVX2, nhwc for AMX), also with machrt's own
     * Winograd, which works in nchw: the layers it does not run (the stem,
     * the stride-2 3x3 and 1x1 layers of a ResNet) are several times faster
     * in nChw8c than in nchw, reorders included (a ResNet34 stem on AVX2:
     * 380 ms in nchw, 43 ms in nChw8c; its three stride-2 3x3 layers with
     * their 1x1 downsamples 113 ms by oneDNN's nchw gemm, 93 ms direct in
     * nChw8c with the three reorders each needs; batch 32, one thread).
     * value_as inserts the reorders, one per value and layout. */
    const int wino = p->winograd && dt == dnnl_f32, own = wino && p->own_winograd;
    const int blk16 = wino && !own;
    const dnnl_format_tag_t src_tag = blk16 && g->cin % 16 == 0 ? dnnl_aBcd16b : dnnl_format_tag_any;
    const dnnl_format_tag_t dst_tag = blk16 && g->cout % 16 == 0 ? dnnl_aBcd16b : dnnl_format_tag_any;
    dnnl_memory_desc_init_by_tag(&src_any, 4, sd, dt, src_tag);
    dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dt, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, dt, dst_tag);
    dnnl_convolution_desc_t desc;
    /* Winograd F(4x4, 3x3) where oneDNN has it (3x3, stride 1), direct otherwise */
    const dnnl_alg_kind_t alg = blk16 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1
        ? dnnl_convolution_winograd : dnnl_convolution_direct;
    if (dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, alg, &src_any,
                                           &w_any, &b_md, &dst_any, strides, pad, pad_r) != dnnl_success &&
        dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &src_any,
                                           &w_any, &b_md, &dst_any, strides, pad, pad_r) != dnnl_success)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: %s: oneDNN refuses the convolution's shape", op->name);
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_post_ops_t po = NULL;
    if (!attr || dnnl_post_ops_create(&po) != dnnl_success) {
        if (attr) dnnl_primitive_attr_destroy(attr);
        return nomem();
    }
    if (res >= 0) dnnl_post_ops_append_sum(po, 1.0f);
    if (op->relu) dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
    dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t made = dnnl_primitive_desc_create(&pd, &desc, attr, p->engine, NULL);
    if (made != dnnl_success && desc.alg_kind != dnnl_convolution_direct) {
        desc.alg_kind = dnnl_convolution_direct;
        made = dnnl_primitive_desc_create(&pd, &desc, attr, p->engine, NULL);
    }
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    if (made != dnnl_success)
        return mrt_fail(MRT_ERR_DEVICE, "infer plan: %s: oneDNN has no %s convolution for this shape", op->name,
                        dt == dnnl_bf16 ? "bf16" : "fp32");
    const dnnl_memory_desc_t *src_md = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dst_md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    dnnl_memory_t src_mem = NULL;
    mrt_status st = value_as(s, c, src, src_md, p->engine, &src_mem);
    /* the weights: their own buffer, filled from the plan's by a reorder */
    dnnl_memory_desc_t wuser_md;
    dnnl_memory_desc_init_by_tag(&wuser_md, 4, wd, dnnl_f32, dnnl_oihw);
    if (st == MRT_OK) st = own_memory(s, c, &wuser_md, p->engine, op->w, &s->wuser[i]);
    if (st == MRT_OK) st = own_memory(s, c, &b_md, p->engine, op->b, &s->bmem[i]);
    if (st == MRT_OK) {
        s->wbuf[i] = aligned_alloc(64, (dnnl_memory_desc_get_size(w_md) + 63) & ~(size_t)63);
        st = s->wbuf[i] ? own_memory(s, c, w_md, p->engine, s->wbuf[i], &s->wmem[i]) : nomem();
    }
    if (st == MRT_OK) {
        dnnl_primitive_desc_t rpd = NULL;
        if (dnnl_reorder_primitive_desc_create(&rpd, &wuser_md, p->engine, w_md, p->engine, NULL) != dnnl_success ||
            dnnl_primitive_create(&s->wreorder[i], rpd) != dnnl_success)
            st = mrt_fail(MRT_ERR_DEVICE, "infer plan: %s: oneDNN cannot lay out the weights", op->name);
        if (rpd) dnnl_primitive_desc_destroy(rpd);
    }
    /* the destination: the residual's own buffer when the sum is its last use */
    if (st == MRT_OK && res >= 0 && res != src && last_use[res] == i && s->buf_of[res] >= 0 &&
        dnnl_memory_desc_equal(&s->md[res], dst_md)) {
        s->md[v] = *dst_md;
        s->mem[v] = s->mem[res];
        s->buf_of[v] = s->buf_of[res];
        s->buf_of[res] = -1;
    } else if (st == MRT_OK) {
        st = value_new(s, c, v, dst_md, p->engine);
        if (st == MRT_OK && res >= 0)
            st = add_reorder(s, c, STEP_REORDER, &s->md[res], s->mem[res], dst_md, s->mem[v], p->engine);
    }
    if (st == MRT_OK) {
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, s->wmem[i]},
                                         {DNNL_ARG_BIAS, s->bmem[i]}, {DNNL_ARG_DST, s->mem[v]}};
        st = add_step(s, c, STEP_OP, pd, args, 4, p->engine);
    }
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static mrt_status build_maxpool(mrt_infer_plan *p, shape_inst *s, caps *c, int i)
{
    const plan_op *op = &p->ops[i];
    const mrt_infer_conv_geom *g = &op->g;
    const int v = i + 1, src = op->src;
    dnnl_dims_t dd, strides = {g->sh, g->sw}, kernel = {g->kh, g->kw}, pad = {g->ph, g->pw};
    dims4(dd, s->n, g->cout, s->vh[v], s->vw[v]);
    dnnl_dims_t pad_r = {(s->vh[v] - 1) * g->sh + g->kh - s->vh[src] - g->ph,
                         (s->vw[v] - 1) * g->sw + g->kw - s->vw[src] - g->pw};
    dnnl_memory_desc_t dst_any;
    dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, s->md[src].data_type, dnnl_format_tag_any);
    dnnl_pooling_desc_t desc;
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd = NULL;
    const int ok = attr &&
        dnnl_pooling_forward_desc_init(&desc, dnnl_forward_inference, dnnl_pooling_max, &s->md[src], &dst_any,
                                       strides, kernel, pad, pad_r) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &desc, attr, p->engine, NULL) == dnnl_success;
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) return mrt_fail(MRT_ERR_DEVICE, "infer plan: %s: oneDNN has no max pooling for this shape", op->name);
    mrt_status st = value_new(s, c, v, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), p->engine);
    if (st == MRT_OK) {
        const dnnl_exec_arg_t args[2] = {{DNNL_ARG_SRC, s->mem[src]}, {DNNL_ARG_DST, s->mem[v]}};
        st = add_step(s, c, STEP_OP, pd, args, 2, p->engine);
    }
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Output sizes of every value, or an error naming the layer it fails at. */
static mrt_status value_sizes(const mrt_infer_plan *p, int n, int h, int w, int *vh, int *vw)
{
    if (n < 1 || h < 1 || w < 1)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: input %dx%dx%dx%d is empty", n, p->in_channels, h, w);
    vh[0] = h;
    vw[0] = w;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        const int ih = vh[op->src], iw = vw[op->src];
        const int oh = ih + 2 * op->g.ph - op->g.kh, ow = iw + 2 * op->g.pw - op->g.kw;
        if (oh < 0 || ow < 0)
            return mrt_fail(MRT_ERR_SHAPE,
                            "infer plan: input %dx%dx%dx%d is too small: %s gets %dx%d, less than its kernel %dx%d with padding %dx%d",
                            n, p->in_channels, h, w, op->name, ih, iw, op->g.kh, op->g.kw, op->g.ph, op->g.pw);
        vh[i + 1] = oh / op->g.sh + 1;
        vw[i + 1] = ow / op->g.sw + 1;
        if (op->residual >= 0 && (vh[op->residual] != vh[i + 1] || vw[op->residual] != vw[i + 1]))
            return mrt_fail(MRT_ERR_SHAPE, "infer plan: %s makes %dx%d, its residual is %dx%d", op->name,
                            vh[i + 1], vw[i + 1], vh[op->residual], vw[op->residual]);
    }
    return MRT_OK;
}

static mrt_status inst_alloc_arrays(shape_inst *s, int nops)
{
    const size_t nv = (size_t)nops + 1, no = (size_t)nops > 0 ? (size_t)nops : 1;
    s->nvals = (int)nv;
    s->md = calloc(nv, sizeof *s->md);
    s->alt_md = calloc(nv, sizeof *s->alt_md);
    s->mem = calloc(nv, sizeof *s->mem);
    s->alt_mem = calloc(nv, sizeof *s->alt_mem);
    s->buf_of = malloc(nv * sizeof *s->buf_of);
    s->alt_buf = malloc(nv * sizeof *s->alt_buf);
    s->vh = calloc(nv, sizeof *s->vh);
    s->vw = calloc(nv, sizeof *s->vw);
    s->wreorder = calloc(no, sizeof *s->wreorder);
    s->wuser = calloc(no, sizeof *s->wuser);
    s->wmem = calloc(no, sizeof *s->wmem);
    s->bmem = calloc(no, sizeof *s->bmem);
    s->wbuf = calloc(no, sizeof *s->wbuf);
    if (!s->md || !s->alt_md || !s->mem || !s->alt_mem || !s->buf_of || !s->alt_buf || !s->vh || !s->vw ||
        !s->wreorder || !s->wuser || !s->wmem || !s->bmem || !s->wbuf)
        return nomem();
    for (size_t v = 0; v < nv; v++) s->buf_of[v] = s->alt_buf[v] = -1;
    return MRT_OK;
}

static mrt_status build_steps(mrt_infer_plan *p, shape_inst *s, caps *c, int *last_use)
{
    const int last = p->nops;
    for (int v = 0; v <= last; v++) last_use[v] = -1;
    for (int i = 0; i < p->nops; i++) {
        last_use[p->ops[i].src] = i;
        if (p->ops[i].residual >= 0) last_use[p->ops[i].residual] = i;
    }
    last_use[last] = p->nops; /* read by the output reorder */
    dnnl_dims_t in_d, out_d;
    dims4(in_d, s->n, p->in_channels, s->h, s->w);
    dnnl_memory_desc_init_by_tag(&s->md[0], 4, in_d, dnnl_f32, dnnl_nchw);
    mrt_status st = own_memory(s, c, &s->md[0], p->engine, DNNL_MEMORY_NONE, &s->in_user);
    s->mem[0] = s->in_user;
    for (int i = 0; i < p->nops && st == MRT_OK; i++) {
        st = p->ops[i].kind == OP_CONV ? build_conv(p, s, c, i, last_use) : build_maxpool(p, s, c, i);
        for (int v = 0; v <= last && st == MRT_OK; v++)
            if (last_use[v] == i) release_value(s, v);
    }
    if (st != MRT_OK) return st;
    dims4(out_d, s->n, value_channels(p, last), s->vh[last], s->vw[last]);
    dnnl_memory_desc_t out_md;
    dnnl_memory_desc_init_by_tag(&out_md, 4, out_d, dnnl_f32, dnnl_nchw);
    st = own_memory(s, c, &out_md, p->engine, DNNL_MEMORY_NONE, &s->out_user);
    if (st == MRT_OK) st = add_reorder(s, c, STEP_OUTPUT, &s->md[last], s->mem[last], &out_md, s->out_user, p->engine);
    return st;
}

static mrt_status bind_buffers(shape_inst *s, int huge)
{
    s->buf = calloc((size_t)(s->nbuf > 0 ? s->nbuf : 1), sizeof *s->buf);
    if (!s->buf) return nomem();
    for (int i = 0; i < s->nbuf; i++)
        if (!(s->buf[i] = plan_alloc(s->buf_bytes[i], huge))) return nomem();
    if (s->scratch_bytes && !(s->scratch = plan_alloc(s->scratch_bytes, huge)))
        return nomem();
    for (int i = 0; i < s->nbinds; i++)
        dnnl_memory_set_data_handle(s->binds[i].mem, s->binds[i].buf < 0 ? s->scratch : s->buf[s->binds[i].buf]);
    return MRT_OK;
}

static mrt_status build_instance(mrt_infer_plan *p, int n, int h, int w, shape_inst **out)
{
    shape_inst *s = calloc(1, sizeof *s);
    if (!s) return nomem();
    s->n = n; s->h = h; s->w = w;
    s->threads = omp_get_max_threads();
    s->weights_version = p->weights_version - 1; /* weights laid out on first use */
    caps c = {0, 0, 0, 0};
    int *last_use = malloc(sizeof *last_use * (size_t)(p->nops + 1));
    mrt_status st = last_use ? inst_alloc_arrays(s, p->nops) : nomem();
    if (st == MRT_OK) st = value_sizes(p, n, h, w, s->vh, s->vw);
    if (st == MRT_OK) st = build_steps(p, s, &c, last_use);
    if (st == MRT_OK) st = bind_buffers(s, p->own_winograd && p->winograd);
    free(last_use);
    if (st != MRT_OK) {
        inst_free(s, p->nops);
        return st;
    }
    *out = s;
    return MRT_OK;
}

/* The instance for n x h x w, built (evicting the least recently used) if new. */
static mrt_status instance(mrt_infer_plan *p, int n, int h, int w, shape_inst **out)
{
    if (p->nops == 0) return mrt_fail(MRT_ERR_ARG, "infer plan: the plan has no layers");
    for (int i = 0; i < p->nops; i++)
        if (!p->ops[i].has_weights)
            return mrt_fail(MRT_ERR_ARG, "infer plan: %s has no weights yet", p->ops[i].name);
        else if (runs_own_winograd(p, &p->ops[i]) && !p->ops[i].u)
            return mrt_fail(MRT_ERR_NOMEM, "infer plan: out of memory for %s's Winograd weights", p->ops[i].name);
    for (int i = 0; i < MAX_SHAPES; i++) {
        shape_inst *s = p->inst[i];
        if (s && s->n == n && s->h == h && s->w == w && s->threads == omp_get_max_threads()) {
            s->used = ++p->tick;
            *out = s;
            return MRT_OK;
        }
    }
    int slot = -1;
    for (int i = 0; i < MAX_SHAPES; i++) {
        if (!p->inst[i]) {
            slot = i;
            break;
        }
        if (slot < 0 || p->inst[i]->used < p->inst[slot]->used) slot = i;
    }
    shape_inst *s = NULL;
    mrt_status st = build_instance(p, n, h, w, &s);
    if (st != MRT_OK) return st;
    inst_free(p->inst[slot], p->nops);
    p->inst[slot] = s;
    s->used = ++p->tick;
    *out = s;
    return MRT_OK;
}

static mrt_status lay_out_weights(mrt_infer_plan *p, shape_inst *s)
{
    if (s->weights_version == p->weights_version) return MRT_OK;
    for (int i = 0; i < p->nops; i++) {
        if (!s->wreorder[i]) continue;
        const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, s->wuser[i]}, {DNNL_ARG_TO, s->wmem[i]}};
        if (dnnl_primitive_execute(s->wreorder[i], p->stream, 2, args) != dnnl_success)
            return mrt_fail(MRT_ERR_DEVICE, "infer plan: %s: laying out the weights failed", p->ops[i].name);
    }
    if (dnnl_stream_wait(p->stream) != dnnl_success)
        return mrt_fail(MRT_ERR_DEVICE, "infer plan: laying out the weights failed");
    s->weights_version = p->weights_version;
    return MRT_OK;
}

mrt_status mrt_infer_plan_output_shape(mrt_infer_plan *p, int n, int h, int w, int64_t shape[4])
{
    int *vh = malloc(sizeof *vh * (size_t)(p->nops + 1)), *vw = malloc(sizeof *vw * (size_t)(p->nops + 1));
    mrt_status st = vh && vw ? value_sizes(p, n, h, w, vh, vw) : nomem();
    if (st == MRT_OK) {
        shape[0] = n;
        shape[1] = value_channels(p, p->nops);
        shape[2] = vh[p->nops];
        shape[3] = vw[p->nops];
    }
    free(vh);
    free(vw);
    return st;
}

static void *handle_of(dnnl_memory_t m)
{
    void *h = NULL;
    dnnl_memory_get_data_handle(m, &h);
    return h;
}

/* oneDNN's stream is in-order and synchronous on the CPU: the steps before
 * have finished when this one starts. */
static void run_wino(const mrt_infer_plan *p, const shape_inst *s, const wino_step *w)
{
    const plan_op *op = &p->ops[w->op];
    const mrt_wino_epilogue ep = {w->res ? handle_of(w->res) : NULL, op->relu};
    mrt_conv_wino_forward_fused(&w->g, 4, w->nb, 0, handle_of(w->src), op->u, op->b, &ep, handle_of(w->dst),
                                s->scratch);
}

mrt_status mrt_infer_plan_forward(mrt_infer_plan *p, const float *x, int n, int c, int h, int w, float *y,
                                  size_t y_len)
{
    if (c != p->in_channels)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: input %dx%dx%dx%d has %d channels, the plan takes %d", n, c, h,
                        w, c, p->in_channels);
    int64_t shape[4];
    mrt_status st = mrt_infer_plan_output_shape(p, n, h, w, shape);
    if (st != MRT_OK) return st;
    if ((size_t)(shape[0] * shape[1] * shape[2] * shape[3]) != y_len)
        return mrt_fail(MRT_ERR_SHAPE, "infer plan: the output needs %lld floats, got %zu",
                        (long long)(shape[0] * shape[1] * shape[2] * shape[3]), y_len);
    shape_inst *s = NULL;
    st = instance(p, n, h, w, &s);
    if (st == MRT_OK) st = lay_out_weights(p, s);
    if (st != MRT_OK) return st;
    dnnl_memory_set_data_handle(s->in_user, (void *)x);
    dnnl_memory_set_data_handle(s->out_user, y);
    for (int i = 0; i < s->nsteps; i++) {
        const step *t = &s->steps[i];
        if (!t->prim) {
            run_wino(p, s, &t->wino);
            continue;
        }
        if (dnnl_primitive_execute(t->prim, p->stream, t->nargs, t->args) != dnnl_success)
            return mrt_fail(MRT_ERR_DEVICE, "infer plan: step %d of %d failed in oneDNN", i + 1, s->nsteps);
    }
    if (dnnl_stream_wait(p->stream) != dnnl_success) return mrt_fail(MRT_ERR_DEVICE, "infer plan: oneDNN failed");
    return MRT_OK;
}

mrt_status mrt_infer_plan_describe(mrt_infer_plan *p, int n, int h, int w, int *inner_reorders, char *buf,
                                   size_t len)
{
    shape_inst *s = NULL;
    mrt_status st = instance(p, n, h, w, &s);
    if (st != MRT_OK) return st;
    *inner_reorders = s->inner_reorders;
    static const char *kinds[] = {"input reorder", "reorder", "op", "output reorder"};
    size_t used = 0;
    if (len) buf[0] = 0;
    int op = 0;
    for (int i = 0; i < s->nsteps && used < len; i++) {
        const_dnnl_primitive_desc_t pd = NULL;
        const char *impl = "?";
        if (!s->steps[i].prim)
            impl = mrt_wino_kernels_avx2(4) ? "machrt winograd F(4x4,3x3) avx2" : "machrt winograd F(4x4,3x3) portable";
        else if (dnnl_primitive_get_primitive_desc(s->steps[i].prim, &pd) == dnnl_success)
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        const char *what = s->steps[i].kind == STEP_OP ? p->ops[op++].name : kinds[s->steps[i].kind];
        const int k = snprintf(buf + used, len - used, "%s: %s\n", what, impl);
        if (k < 0) break;
        used += (size_t)k;
    }
    return MRT_OK;
}
