/* Convolutions through oneDNN's convolution primitives: forward, backward
 * data and backward weights, in fp32 or with bf16 operands (fp32
 * accumulation, fp32 outputs and gradients).
 *
 * oneDNN chooses the layouts (format "any"): on AMX and AVX-512 its
 * brgemm and jit kernels want blocked or channels-last tensors, not NCHW.
 * machrt's NCHW tensors are reordered in and out by oneDNN's jitted
 * reorders, which also do the fp32 -> bf16 rounding (to nearest even) in
 * the same pass; where the chosen layout is NCHW fp32 itself the tensor is
 * used in place. Primitives take milliseconds to create, so they are made
 * once per shape, direction and precision and cached; the reordered
 * operands live in the caller's workspace (see the scratch functions). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <dnnl.h>
#include "../cpu/dnnl_engine.h"
#include "conv2d.h"

enum { DIR_FWD_TRAIN, DIR_FWD_INFER, DIR_BWD };

typedef struct {
    int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw;
    int bf16, dir, bias;
} conv_key;

/* One operand: the layout oneDNN wants, and the reorder from (or to)
 * machrt's NCHW fp32 (NULL: the layouts are the same, no copy). */
typedef struct {
    dnnl_memory_desc_t md, user_md;
    dnnl_primitive_t reorder;
    size_t bytes; /* of md, 0 when used in place */
} operand;

typedef struct {
    conv_key key;
    int ok; /* 0: oneDNN refused this shape */
    /* forward: conv, src, wei, dst; backward: data (dx) and weights (dw)
     * primitives, each with its own view of the operands */
    dnnl_primitive_t conv, bwd_w;
    operand src, wei, dst;             /* forward, or backward data: src = dx, dst = dy */
    operand w_src, w_dwei, w_dst;      /* backward weights: x, dw, dy */
    int dy_shared;                     /* both backward passes take dy in one layout */
    dnnl_memory_desc_t bias_md, pad_md;
    size_t pad_bytes;
} conv_entry;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static conv_entry **cache;
static size_t cache_len, cache_cap;
static _Thread_local const conv_entry *tl_last;

static void dims4(dnnl_dims_t d, int64_t a, int64_t b, int64_t c, int64_t e)
{
    d[0] = a, d[1] = b, d[2] = c, d[3] = e;
}

static void descs(const conv_key *k, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei,
                  dnnl_memory_desc_t *dst, dnnl_data_type_t in, dnnl_data_type_t out_dst,
                  dnnl_data_type_t out_wei)
{
    const int64_t oh = (k->h + 2 * k->ph - k->kh) / k->sh + 1;
    const int64_t ow = (k->w + 2 * k->pw - k->kw) / k->sw + 1;
    dnnl_dims_t ds, dw, dd;
    dims4(ds, k->n, k->c, k->h, k->w);
    dims4(dw, k->o, k->c, k->kh, k->kw);
    dims4(dd, k->n, k->o, oh, ow);
    dnnl_memory_desc_init_by_tag(src, 4, ds, in, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(wei, 4, dw, out_wei, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(dst, 4, dd, out_dst, dnnl_format_tag_any);
}

static void plain(const dnnl_memory_desc_t *like, dnnl_memory_desc_t *user, int weights)
{
    dnnl_memory_desc_init_by_tag(user, 4, like->dims, dnnl_f32,
                                 weights ? dnnl_oihw : dnnl_nchw);
}

/* The reorder between machrt's layout and the chosen one; `to_user` for
 * outputs, with `accumulate` adding into the destination (dw). */
static int make_operand(dnnl_primitive_desc_t pd, dnnl_query_t what, int index, int weights,
                        int to_user, int accumulate, operand *op)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, index);
    if (!md) return 0;
    op->md = *md;
    plain(md, &op->user_md, weights);
    op->reorder = NULL;
    op->bytes = 0;
    if (!accumulate && dnnl_memory_desc_equal(&op->md, &op->user_md)) return 1;
    op->bytes = dnnl_memory_desc_get_size(&op->md);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    int ok = 0;
    if (accumulate) {
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return 0;
        if (dnnl_post_ops_create(&po) == dnnl_success) {
            dnnl_post_ops_append_sum(po, 1.0f);
            dnnl_primitive_attr_set_post_ops(attr, po);
        }
    }
    dnnl_engine_t eng = mrt_dnnl_engine();
    const dnnl_memory_desc_t *from = to_user ? &op->md : &op->user_md;
    const dnnl_memory_desc_t *to = to_user ? &op->user_md : &op->md;
    if (dnnl_reorder_primitive_desc_create(&rpd, from, eng, to, eng, attr) == dnnl_success) {
        ok = dnnl_primitive_create(&op->reorder, rpd) == dnnl_success;
        dnnl_primitive_desc_destroy(rpd);
    }
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

static dnnl_primitive_attr_t user_scratchpad_attr(void)
{
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    return attr;
}

static size_t keep_pad(conv_entry *e, dnnl_primitive_desc_t pd)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    if (md && bytes > e->pad_bytes) {
        e->pad_md = *md;
        e->pad_bytes = bytes;
    }
    return bytes;
}

static void conv_params(const conv_key *k, dnnl_dims_t strides, dnnl_dims_t pad_l, dnnl_dims_t pad_r)
{
    const int64_t oh = (k->h + 2 * k->ph - k->kh) / k->sh + 1;
    const int64_t ow = (k->w + 2 * k->pw - k->kw) / k->sw + 1;
    strides[0] = k->sh, strides[1] = k->sw;
    pad_l[0] = k->ph, pad_l[1] = k->pw;
    /* oneDNN wants the right padding that the output size implies: with a
     * stride that does not divide evenly it is less than the left one. */
    pad_r[0] = (oh - 1) * k->sh + k->kh - k->h - k->ph;
    pad_r[1] = (ow - 1) * k->sw + k->kw - k->w - k->pw;
}

/* The forward primitive descriptor (also the hint the backward ones need). */
static dnnl_primitive_desc_t forward_pd(const conv_key *k, int inference, dnnl_primitive_attr_t attr)
{
    const dnnl_data_type_t in = k->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src, wei, dst, bias;
    descs(k, &src, &wei, &dst, in, dnnl_f32, in);
    const dnnl_dims_t bd = {k->o};
    dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_a);
    dnnl_dims_t st, pl, pr;
    conv_params(k, st, pl, pr);
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_convolution_forward_desc_init(&desc, inference ? dnnl_forward_inference : dnnl_forward_training,
                                           dnnl_convolution_direct, &src, &wei, k->bias ? &bias : NULL,
                                           &dst, st, pl, pr) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &desc, attr, mrt_dnnl_engine(), NULL) != dnnl_success)
        return NULL;
    return pd;
}

static int create_forward(conv_entry *e)
{
    const conv_key *k = &e->key;
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t pd = attr ? forward_pd(k, k->dir == DIR_FWD_INFER, attr) : NULL;
    int ok = pd && make_operand(pd, dnnl_query_src_md, 0, 0, 0, 0, &e->src) &&
             make_operand(pd, dnnl_query_weights_md, 0, 1, 0, 0, &e->wei) &&
             make_operand(pd, dnnl_query_dst_md, 0, 0, 1, 0, &e->dst);
    if (ok) {
        const dnnl_dims_t bd = {k->o};
        dnnl_memory_desc_init_by_tag(&e->bias_md, 1, bd, dnnl_f32, dnnl_a);
        keep_pad(e, pd);
        ok = dnnl_primitive_create(&e->conv, pd) == dnnl_success;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

static int create_backward(conv_entry *e)
{
    const conv_key *k = &e->key;
    const dnnl_data_type_t in = k->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_primitive_desc_t hint = attr ? forward_pd(k, 0, NULL) : NULL;
    dnnl_primitive_desc_t dpd = NULL, wpd = NULL;
    dnnl_dims_t st, pl, pr;
    conv_params(k, st, pl, pr);
    dnnl_memory_desc_t src, wei, dst;
    dnnl_convolution_desc_t dd, wd;
    int ok = hint != NULL;
    /* dx: fp32 out of bf16 weights and dy */
    descs(k, &src, &wei, &dst, dnnl_f32, in, in);
    ok = ok && dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &src, &wei,
                                                        &dst, st, pl, pr) == dnnl_success &&
         dnnl_primitive_desc_create(&dpd, &dd, attr, mrt_dnnl_engine(), hint) == dnnl_success;
    ok = ok && make_operand(dpd, dnnl_query_diff_src_md, 0, 0, 1, 0, &e->src) &&
         make_operand(dpd, dnnl_query_weights_md, 0, 1, 0, 0, &e->wei) &&
         make_operand(dpd, dnnl_query_diff_dst_md, 0, 0, 0, 0, &e->dst);
    /* dw: fp32, added to machrt's accumulating gradient by its reorder */
    descs(k, &src, &wei, &dst, in, in, dnnl_f32);
    ok = ok && dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &src, &wei,
                                                           NULL, &dst, st, pl, pr) == dnnl_success &&
         dnnl_primitive_desc_create(&wpd, &wd, attr, mrt_dnnl_engine(), hint) == dnnl_success;
    ok = ok && make_operand(wpd, dnnl_query_src_md, 0, 0, 0, 0, &e->w_src) &&
         make_operand(wpd, dnnl_query_diff_weights_md, 0, 1, 1, 1, &e->w_dwei) &&
         make_operand(wpd, dnnl_query_diff_dst_md, 0, 0, 0, 0, &e->w_dst);
    if (ok) {
        e->dy_shared = dnnl_memory_desc_equal(&e->dst.md, &e->w_dst.md);
        keep_pad(e, dpd);
        keep_pad(e, wpd);
        ok = dnnl_primitive_create(&e->conv, dpd) == dnnl_success &&
             dnnl_primitive_create(&e->bwd_w, wpd) == dnnl_success;
    }
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (hint) dnnl_primitive_desc_destroy(hint);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

static conv_key make_key(const mrt_conv_geom *g, int bf16, int dir, int bias)
{
    conv_key k;
    memset(&k, 0, sizeof k); /* compared bytewise, padding included */
    k.n = g->n, k.c = g->c, k.h = g->h, k.w = g->w, k.o = g->o, k.kh = g->kh, k.kw = g->kw;
    k.sh = g->sh, k.sw = g->sw, k.ph = g->ph, k.pw = g->pw;
    k.bf16 = bf16, k.dir = dir, k.bias = bias;
    return k;
}

/* The cached entry (created on first use); NULL when out of memory or
 * without an engine. A layer's forward and backward repeat one shape, so
 * this thread's last hit is checked before the lock. */
static const conv_entry *lookup(const conv_key *k)
{
    if (tl_last && memcmp(&tl_last->key, k, sizeof *k) == 0) return tl_last;
    const conv_entry *found = NULL;
    pthread_mutex_lock(&cache_lock);
    if (mrt_dnnl_engine()) {
        for (size_t i = 0; i < cache_len && !found; i++)
            if (memcmp(&cache[i]->key, k, sizeof *k) == 0) found = cache[i];
        if (!found && cache_len == cache_cap) {
            conv_entry **grown = realloc(cache, sizeof *cache * (cache_cap * 2 + 32));
            if (grown) cache = grown, cache_cap = cache_cap * 2 + 32;
        }
        conv_entry *e = found || cache_len == cache_cap ? NULL : calloc(1, sizeof *e);
        if (e) {
            e->key = *k;
            e->ok = k->dir == DIR_BWD ? create_backward(e) : create_forward(e);
            cache[cache_len++] = e;
            found = e;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    if (found) tl_last = found;
    return found;
}

static const conv_entry *entry(const mrt_conv_geom *g, int bf16, int dir, int bias)
{
    const conv_key k = make_key(g, bf16, dir, bias);
    const conv_entry *e = lookup(&k);
    return e && e->ok ? e : NULL;
}

int mrt_conv_dnnl_supports(const mrt_conv_geom *g, int bf16, int inference, int bias,
                           int backward)
{
    if (backward) return entry(g, bf16, DIR_BWD, 0) != NULL;
    return entry(g, bf16, inference ? DIR_FWD_INFER : DIR_FWD_TRAIN, bias) != NULL;
}

static size_t line(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static size_t to_floats(size_t bytes) { return (bytes + sizeof(float) - 1) / sizeof(float); }

size_t mrt_conv_dnnl_fwd_scratch(const mrt_conv_geom *g, int bf16, int inference, int bias)
{
    const conv_entry *e = entry(g, bf16, inference ? DIR_FWD_INFER : DIR_FWD_TRAIN, bias);
    if (!e) return 0;
    return to_floats(line(e->src.bytes) + line(e->wei.bytes) + line(e->dst.bytes) + line(e->pad_bytes));
}

size_t mrt_conv_dnnl_bwd_scratch(const mrt_conv_geom *g, int bf16)
{
    const conv_entry *e = entry(g, bf16, DIR_BWD, 0);
    if (!e) return 0;
    return to_floats(line(e->src.bytes) + line(e->wei.bytes) + line(e->dst.bytes) +
                     line(e->w_src.bytes) + line(e->w_dwei.bytes) +
                     (e->dy_shared ? 0 : line(e->w_dst.bytes)) + line(e->pad_bytes));
}

/* ---- execution ---------------------------------------------------------------- */

typedef struct {
    dnnl_memory_t mem[16];
    int len, failed;
} mem_list;

static dnnl_memory_t mem(mem_list *l, const dnnl_memory_desc_t *md, void *handle)
{
    dnnl_memory_t m = NULL;
    if (l->len == 16 || dnnl_memory_create(&m, md, mrt_dnnl_engine(), handle) != dnnl_success) {
        l->failed = 1;
        return NULL;
    }
    l->mem[l->len++] = m;
    return m;
}

static void mem_release(mem_list *l)
{
    for (int i = 0; i < l->len; i++) dnnl_memory_destroy(l->mem[i]);
}

static int run(dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args)
{
    dnnl_stream_t s = mrt_dnnl_stream();
    return s && dnnl_primitive_execute(p, s, nargs, args) == dnnl_success;
}

static int reorder(dnnl_primitive_t p, dnnl_memory_t from, dnnl_memory_t to)
{
    const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    return from && to && run(p, 2, args);
}

/* The buffer an operand lives in: the next piece of scratch when it is
 * reordered, else machrt's own tensor. */
static void *place(const operand *op, const void *user, char **next)
{
    if (!op->bytes) return (void *)user;
    void *p = *next;
    *next += line(op->bytes);
    return p;
}

/* An input in oneDNN's layout: reordered into its place when it differs. */
static dnnl_memory_t input(mem_list *l, const operand *op, const void *user, void *at, int *ok)
{
    dnnl_memory_t m = mem(l, &op->md, at);
    if (op->reorder && *ok) *ok = reorder(op->reorder, mem(l, &op->user_md, (void *)user), m);
    return m;
}

int mrt_conv_dnnl_forward(const mrt_conv_geom *g, int bf16, int inference, const float *x,
                          const float *w, const float *bias, float *y, float *scratch)
{
    const conv_entry *e = entry(g, bf16, inference ? DIR_FWD_INFER : DIR_FWD_TRAIN, bias != NULL);
    if (!e) return 0;
    char *next = (char *)scratch;
    void *xs = place(&e->src, x, &next), *ws = place(&e->wei, w, &next),
         *ys = place(&e->dst, y, &next), *pad = e->pad_bytes ? next : NULL;
    mem_list l = {{0}, 0, 0};
    int ok = 1;
    dnnl_exec_arg_t args[5];
    int n = 0;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, input(&l, &e->src, x, xs, &ok)};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, input(&l, &e->wei, w, ws, &ok)};
    dnnl_memory_t ym = mem(&l, &e->dst.md, ys);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, ym};
    if (bias) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mem(&l, &e->bias_md, (void *)bias)};
    if (pad) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mem(&l, &e->pad_md, pad)};
    ok = ok && !l.failed && run(e->conv, n, args);
    if (ok && e->dst.reorder) ok = reorder(e->dst.reorder, ym, mem(&l, &e->dst.user_md, y));
    ok = ok && !l.failed && dnnl_stream_wait(mrt_dnnl_stream()) == dnnl_success;
    mem_release(&l);
    return ok;
}

int mrt_conv_dnnl_backward(const mrt_conv_geom *g, int bf16, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *scratch)
{
    const conv_entry *e = entry(g, bf16, DIR_BWD, 0);
    if (!e) return 0;
    char *next = (char *)scratch;
    void *dxs = place(&e->src, dx, &next), *ws = place(&e->wei, w, &next),
         *dys = place(&e->dst, dy, &next), *xs = place(&e->w_src, x, &next),
         *dws = place(&e->w_dwei, dw, &next),
         *dyw = e->dy_shared ? dys : place(&e->w_dst, dy, &next), *pad = e->pad_bytes ? next : NULL;
    mem_list l = {{0}, 0, 0};
    int ok = 1;
    dnnl_memory_t dym = input(&l, &e->dst, dy, dys, &ok);
    dnnl_memory_t padm = pad ? mem(&l, &e->pad_md, pad) : NULL;
    if (dx) {
        dnnl_memory_t dxm = mem(&l, &e->src.md, dxs);
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_DIFF_DST, dym},
                                         {DNNL_ARG_WEIGHTS, input(&l, &e->wei, w, ws, &ok)},
                                         {DNNL_ARG_DIFF_SRC, dxm},
                                         {DNNL_ARG_SCRATCHPAD, padm}};
        ok = ok && !l.failed && run(e->conv, pad ? 4 : 3, args);
        if (ok && e->src.reorder) ok = reorder(e->src.reorder, dxm, mem(&l, &e->src.user_md, dx));
    }
    if (dw) {
        dnnl_memory_t dyw_m = e->dy_shared ? dym : input(&l, &e->w_dst, dy, dyw, &ok);
        dnnl_memory_t dwm = mem(&l, &e->w_dwei.md, dws);
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, input(&l, &e->w_src, x, xs, &ok)},
                                         {DNNL_ARG_DIFF_DST, dyw_m},
                                         {DNNL_ARG_DIFF_WEIGHTS, dwm},
                                         {DNNL_ARG_SCRATCHPAD, padm}};
        ok = ok && !l.failed && run(e->bwd_w, pad ? 4 : 3, args);
        if (ok) ok = reorder(e->w_dwei.reorder, dwm, mem(&l, &e->w_dwei.user_md, dw));
    }
    ok = ok && !l.failed && dnnl_stream_wait(mrt_dnnl_stream()) == dnnl_success;
    mem_release(&l);
    return ok;
}
