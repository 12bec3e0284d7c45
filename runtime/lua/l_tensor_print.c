/* tostring(tensor): values laid out like Torch, then a footer with the type
 * and shape. Large tensors are summarised (first and last 3 entries along
 * every dimension), as PyTorch does, so printing a spectrogram stays short. */
#include <math.h>
#include <stdio.h>
#include "l_machrt.h"
#include "machrt/backend.h"

#define SUMMARY_THRESHOLD 1000
#define EDGE 3

typedef struct {
    const mrt_tensor *t;
    int summarise;
    char fmt[16];
    int width;
    luaL_Buffer *b;
} printer;

static double value_at(const mrt_tensor *t, int64_t off)
{
    return t->dtype == MRT_F32 ? (double)((const float *)t->storage->data)[off]
                               : (double)((const int64_t *)t->storage->data)[off];
}

/* Index i of dimension d is shown unless it falls in the elided middle. */
static int shown(const printer *p, int d, int64_t i)
{
    int64_t n = p->t->shape[d];
    return !p->summarise || n <= 2 * EDGE || i < EDGE || i >= n - EDGE;
}

static void scan(const printer *p, int d, int64_t off, double *maxabs, int *all_int, int *any)
{
    const mrt_tensor *t = p->t;
    if (d == t->ndim) {
        double v = value_at(t, off);
        *any = 1;
        if (isfinite(v)) {
            if (fabs(v) > *maxabs) *maxabs = fabs(v);
            if (v != floor(v)) *all_int = 0;
        }
        return;
    }
    for (int64_t i = 0; i < t->shape[d]; i++)
        if (shown(p, d, i)) scan(p, d + 1, off + i * t->stride[d], maxabs, all_int, any);
}

static void choose_format(printer *p)
{
    double maxabs = 0;
    int all_int = 1, any = 0;
    scan(p, 0, p->t->offset, &maxabs, &all_int, &any);
    int digits = maxabs >= 1 ? (int)floor(log10(maxabs)) + 1 : 1;
    if (p->t->dtype == MRT_I64 || (all_int && maxabs < 1e9)) {
        snprintf(p->fmt, sizeof p->fmt, "%%.0f");
        p->width = digits + 1;
    } else if (maxabs < 1e5 && maxabs >= 1e-4) {
        snprintf(p->fmt, sizeof p->fmt, "%%.4f");
        p->width = digits + 6;
    } else {
        snprintf(p->fmt, sizeof p->fmt, "%%.4e");
        p->width = 11;
    }
}

static void add_value(printer *p, int64_t off)
{
    char num[64], cell[80];
    double v = value_at(p->t, off);
    if (isnan(v)) snprintf(num, sizeof num, "nan");
    else if (isinf(v)) snprintf(num, sizeof num, v > 0 ? "inf" : "-inf");
    else snprintf(num, sizeof num, p->fmt, v);
    snprintf(cell, sizeof cell, " %*s", p->width, num);
    luaL_addstring(p->b, cell);
}

static void add_row(printer *p, int64_t off, int64_t n, int64_t stride)
{
    for (int64_t j = 0; j < n; j++) {
        if (!shown(p, p->t->ndim - 1, j)) {
            if (j == EDGE) luaL_addstring(p->b, " ...");
            continue;
        }
        add_value(p, off + j * stride);
    }
    luaL_addchar(p->b, '\n');
}

static void add_matrix(printer *p, int64_t off)
{
    const mrt_tensor *t = p->t;
    int r = t->ndim - 2;
    for (int64_t i = 0; i < t->shape[r]; i++) {
        if (!shown(p, r, i)) {
            if (i == EDGE) luaL_addstring(p->b, " ...\n");
            continue;
        }
        add_row(p, off + i * t->stride[r], t->shape[r + 1], t->stride[r + 1]);
    }
}

/* Walks the leading dimensions, printing "(i,j,.,.) =" before each matrix. */
static void add_slices(printer *p, int d, int64_t off, int64_t *idx)
{
    const mrt_tensor *t = p->t;
    if (d == t->ndim - 2) {
        char head[32];
        luaL_addchar(p->b, '(');
        for (int k = 0; k < d; k++) {
            snprintf(head, sizeof head, "%lld,", (long long)idx[k] + 1);
            luaL_addstring(p->b, head);
        }
        luaL_addstring(p->b, ".,.) =\n");
        add_matrix(p, off);
        luaL_addchar(p->b, '\n');
        return;
    }
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (!shown(p, d, i)) {
            if (i == EDGE) luaL_addstring(p->b, "...\n\n");
            continue;
        }
        idx[d] = i;
        add_slices(p, d + 1, off + i * t->stride[d], idx);
    }
}

int mrt_lua_tensor_tostring(lua_State *L)
{
    mrt_tensor *t = luaL_checkudata(L, 1, MRT_TENSOR_MT);
    if (!t->storage) {
        lua_pushstring(L, "[machrt.Tensor (released)]");
        return 1;
    }
    const mrt_device device = t->storage->device;
    if (device != MRT_CPU) {
        /* Printed from a host copy (owned by a userdata on the stack). */
        mrt_tensor *h = mrt_lua_push_tensor(L);
        mrt_lua_check(L, mrt_tensor_to(t, MRT_CPU, h));
        t = h;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    printer p = {.t = t, .summarise = mrt_tensor_numel(t) > SUMMARY_THRESHOLD, .b = &b};
    if (mrt_tensor_numel(t) > 0) {
        choose_format(&p);
        if (t->ndim == 0) {
            add_value(&p, t->offset);
            luaL_addchar(&b, '\n');
        } else if (t->ndim == 1) {
            add_row(&p, t->offset, t->shape[0], t->stride[0]);
        } else if (t->ndim == 2) {
            add_matrix(&p, t->offset);
        } else {
            int64_t idx[MRT_MAX_DIMS] = {0};
            add_slices(&p, 0, t->offset, idx);
        }
    }
    char shape[MRT_SHAPE_STRLEN], foot[MRT_SHAPE_STRLEN + 64];
    snprintf(foot, sizeof foot, "[machrt.%s of size %s%s]",
             t->dtype == MRT_F32 ? "FloatTensor" : "LongTensor",
             mrt_shape_str(t->ndim, t->shape, shape, sizeof shape),
             device == MRT_CUDA ? " on cuda" : "");
    luaL_addstring(&b, foot);
    luaL_pushresult(&b);
    return 1;
}
