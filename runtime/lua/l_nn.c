/* Layer kernels for machrt.nn (registered into machrt.kernels).
 *
 * Output arguments follow one rule: a tensor is written into (its shape is
 * checked by the kernel), nil asks for a new tensor, and false skips that
 * output (e.g. no input gradient for the first layer). Every function returns
 * its outputs in order. */
#include <limits.h>
#include <string.h>
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/nn.h"

#define WORKSPACE_MT "machrt.Workspace"

/* ---- output-argument handling -------------------------------------------- */

typedef struct {
    mrt_tensor *t; /* NULL = skipped */
    int stack;     /* stack index of the userdata to return */
} out_arg;

/* Resolves output argument `idx`; new tensors are pushed on the stack. */
static out_arg out_at(lua_State *L, int idx)
{
    out_arg o = {NULL, 0};
    if (lua_isboolean(L, idx) && !lua_toboolean(L, idx)) return o;
    if (lua_isnoneornil(L, idx)) {
        o.t = mrt_lua_push_tensor(L);
        o.stack = lua_gettop(L);
        return o;
    }
    o.t = mrt_lua_check_tensor(L, idx);
    o.stack = idx;
    return o;
}

static void push_out(lua_State *L, out_arg o)
{
    if (o.t) lua_pushvalue(L, o.stack);
    else lua_pushboolean(L, 0);
}

/* Strides, paddings and kernel sizes are C ints: 2^32 + 1 must be refused,
 * not narrowed to 1. */
static int check_int(lua_State *L, int idx)
{
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= INT_MIN && v <= INT_MAX, idx, "integer out of the C int range");
    return (int)v;
}

/* ---- workspace ------------------------------------------------------------- */

static int k_workspace(lua_State *L)
{
    mrt_workspace *ws = lua_newuserdatauv(L, sizeof *ws, 0);
    memset(ws, 0, sizeof *ws);
    luaL_setmetatable(L, WORKSPACE_MT);
    return 1;
}

static int workspace_release(lua_State *L)
{
    mrt_workspace_free(luaL_checkudata(L, 1, WORKSPACE_MT));
    return 0;
}

static int workspace_size(lua_State *L)
{
    mrt_workspace *ws = luaL_checkudata(L, 1, WORKSPACE_MT);
    lua_pushinteger(L, (lua_Integer)ws->capacity);
    return 1;
}

static mrt_workspace *check_workspace(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, WORKSPACE_MT);
}

/* ---- convolution and linear ------------------------------------------------ */

/* conv2d_forward(x, w, b|nil, stride_h, stride_w, pad_h, pad_w, ws, y?, inference?) -> y */
static int k_conv2d_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *w = mrt_lua_check_tensor(L, 2);
    mrt_tensor *b = mrt_aux_opt_tensor(L, 3);
    mrt_conv2d_params p = {check_int(L, 4), check_int(L, 5), check_int(L, 6), check_int(L, 7),
                           lua_toboolean(L, 10)};
    mrt_workspace *ws = check_workspace(L, 8);
    out_arg y = out_at(L, 9);
    mrt_lua_check(L, mrt_conv2d_forward(x, w, b, &p, y.t, ws));
    push_out(L, y);
    return 1;
}

/* conv2d_backward(x, w, dy, sh, sw, ph, pw, ws, dx?, dw|false, db|false) -> dx */
static int k_conv2d_backward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *w = mrt_lua_check_tensor(L, 2);
    mrt_tensor *dy = mrt_lua_check_tensor(L, 3);
    mrt_conv2d_params p = {check_int(L, 4), check_int(L, 5), check_int(L, 6), check_int(L, 7), 0};
    mrt_workspace *ws = check_workspace(L, 8);
    mrt_tensor *dw = mrt_aux_opt_tensor(L, 10), *db = mrt_aux_opt_tensor(L, 11);
    out_arg dx = out_at(L, 9);
    mrt_lua_check(L, mrt_conv2d_backward(x, w, dy, &p, dx.t, dw, db, ws));
    push_out(L, dx);
    return 1;
}

/* linear_forward(x, w, b|nil, y?) -> y */
static int k_linear_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *w = mrt_lua_check_tensor(L, 2);
    mrt_tensor *b = mrt_aux_opt_tensor(L, 3);
    out_arg y = out_at(L, 4);
    mrt_lua_check(L, mrt_linear_forward(x, w, b, y.t));
    push_out(L, y);
    return 1;
}

/* linear_backward(x, w, dy, dx?, dw|false, db|false) -> dx */
static int k_linear_backward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *w = mrt_lua_check_tensor(L, 2);
    mrt_tensor *dy = mrt_lua_check_tensor(L, 3);
    mrt_tensor *dw = mrt_aux_opt_tensor(L, 5), *db = mrt_aux_opt_tensor(L, 6);
    out_arg dx = out_at(L, 4);
    mrt_lua_check(L, mrt_linear_backward(x, w, dy, dx.t, dw, db));
    push_out(L, dx);
    return 1;
}

/* ---- batch norm ------------------------------------------------------------ */

/* batchnorm2d_forward(x, weight, bias, running_mean, running_var, training,
 *                     momentum, eps, y?, save_mean?, save_invstd?)
 *   -> y, save_mean, save_invstd */
static int k_batchnorm2d_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *wt = mrt_lua_check_tensor(L, 2);
    mrt_tensor *bs = mrt_lua_check_tensor(L, 3), *rm = mrt_lua_check_tensor(L, 4);
    mrt_tensor *rv = mrt_lua_check_tensor(L, 5);
    int training = lua_toboolean(L, 6);
    double momentum = luaL_checknumber(L, 7), eps = luaL_checknumber(L, 8);
    out_arg y = out_at(L, 9), sm = out_at(L, 10), si = out_at(L, 11);
    mrt_lua_check(L, mrt_batchnorm2d_forward(x, wt, bs, rm, rv, training, momentum, eps, y.t, sm.t,
                                             si.t));
    push_out(L, y);
    push_out(L, sm);
    push_out(L, si);
    return 3;
}

/* batchnorm2d_backward(x, dy, weight, save_mean, save_invstd, training, dx?,
 *                      dweight|false, dbias|false) -> dx */
static int k_batchnorm2d_backward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *dy = mrt_lua_check_tensor(L, 2);
    mrt_tensor *wt = mrt_lua_check_tensor(L, 3), *sm = mrt_lua_check_tensor(L, 4);
    mrt_tensor *si = mrt_lua_check_tensor(L, 5);
    int training = lua_toboolean(L, 6);
    mrt_tensor *dwt = mrt_aux_opt_tensor(L, 8), *dbs = mrt_aux_opt_tensor(L, 9);
    out_arg dx = out_at(L, 7);
    mrt_lua_check(L, mrt_batchnorm2d_backward(x, dy, wt, sm, si, training, dx.t, dwt, dbs));
    push_out(L, dx);
    return 1;
}

/* ---- activations and pooling -------------------------------------------------- */

/* relu_forward(x, y?) -> y   (pass x as y for in place) */
static int k_relu_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1);
    out_arg y = out_at(L, 2);
    mrt_lua_check(L, mrt_relu_forward(x, y.t));
    push_out(L, y);
    return 1;
}

/* relu_backward(y, dy, dx?) -> dx   (pass dy as dx for in place) */
static int k_relu_backward(lua_State *L)
{
    mrt_tensor *y = mrt_lua_check_tensor(L, 1), *dy = mrt_lua_check_tensor(L, 2);
    out_arg dx = out_at(L, 3);
    mrt_lua_check(L, mrt_relu_backward(y, dy, dx.t));
    push_out(L, dx);
    return 1;
}

/* maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, y?, indices?) -> y, indices */
static int k_maxpool2d_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1);
    mrt_pool2d_params p = {check_int(L, 2), check_int(L, 3), check_int(L, 4),
                           check_int(L, 5), check_int(L, 6), check_int(L, 7)};
    out_arg y = out_at(L, 8), ix = out_at(L, 9);
    mrt_lua_check(L, mrt_maxpool2d_forward(x, &p, y.t, ix.t));
    push_out(L, y);
    push_out(L, ix);
    return 2;
}

/* maxpool2d_backward(dy, indices, in_h, in_w, dx?) -> dx */
static int k_maxpool2d_backward(lua_State *L)
{
    mrt_tensor *dy = mrt_lua_check_tensor(L, 1), *ix = mrt_lua_check_tensor(L, 2);
    int64_t h = luaL_checkinteger(L, 3), w = luaL_checkinteger(L, 4);
    out_arg dx = out_at(L, 5);
    mrt_lua_check_op(L, mrt_maxpool2d_backward(dy, ix, h, w, dx.t), "maxpool2d_backward");
    push_out(L, dx);
    return 1;
}

/* avgpool_global_forward(x, y?) -> y */
static int k_avgpool_global_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1);
    out_arg y = out_at(L, 2);
    mrt_lua_check(L, mrt_avgpool_global_forward(x, y.t));
    push_out(L, y);
    return 1;
}

/* avgpool_global_backward(dy, in_h, in_w, dx?) -> dx */
static int k_avgpool_global_backward(lua_State *L)
{
    mrt_tensor *dy = mrt_lua_check_tensor(L, 1);
    int64_t h = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3);
    out_arg dx = out_at(L, 4);
    mrt_lua_check_op(L, mrt_avgpool_global_backward(dy, h, w, dx.t), "avgpool_global_backward");
    push_out(L, dx);
    return 1;
}

/* gem_forward(x, p, eps, y?) -> y */
static int k_gem_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *p = mrt_lua_check_tensor(L, 2);
    double eps = luaL_checknumber(L, 3);
    out_arg y = out_at(L, 4);
    mrt_lua_check(L, mrt_gem_forward(x, p, eps, y.t));
    push_out(L, y);
    return 1;
}

/* gem_backward(x, p, eps, y, dy, dx?, dp|false) -> dx */
static int k_gem_backward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *p = mrt_lua_check_tensor(L, 2);
    double eps = luaL_checknumber(L, 3);
    mrt_tensor *y = mrt_lua_check_tensor(L, 4), *dy = mrt_lua_check_tensor(L, 5);
    mrt_tensor *dp = mrt_aux_opt_tensor(L, 7);
    out_arg dx = out_at(L, 6);
    mrt_lua_check(L, mrt_gem_backward(x, p, eps, y, dy, dx.t, dp));
    push_out(L, dx);
    return 1;
}

/* dropout_forward(x, prob, y?, mask?) -> y, mask   (default generator) */
static int k_dropout_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1);
    double prob = luaL_checknumber(L, 2);
    out_arg y = out_at(L, 3), mask = out_at(L, 4);
    mrt_lua_check(L, mrt_dropout_forward(x, prob, mrt_rng_default(), y.t, mask.t));
    push_out(L, y);
    push_out(L, mask);
    return 2;
}

/* dropout_backward(dy, mask, dx?) -> dx */
static int k_dropout_backward(lua_State *L)
{
    mrt_tensor *dy = mrt_lua_check_tensor(L, 1), *mask = mrt_lua_check_tensor(L, 2);
    out_arg dx = out_at(L, 3);
    mrt_lua_check(L, mrt_dropout_backward(dy, mask, dx.t));
    push_out(L, dx);
    return 1;
}

/* ---- losses ---------------------------------------------------------------- */

typedef mrt_status (*loss_fwd)(const mrt_tensor *, const mrt_tensor *, double *);
typedef mrt_status (*loss_bwd)(const mrt_tensor *, const mrt_tensor *, mrt_tensor *);

static int loss_forward(lua_State *L, loss_fwd fn)
{
    mrt_tensor *z = mrt_lua_check_tensor(L, 1), *t = mrt_lua_check_tensor(L, 2);
    double loss;
    mrt_lua_check(L, fn(z, t, &loss));
    lua_pushnumber(L, loss);
    return 1;
}

static int loss_backward(lua_State *L, loss_bwd fn)
{
    mrt_tensor *z = mrt_lua_check_tensor(L, 1), *t = mrt_lua_check_tensor(L, 2);
    out_arg d = out_at(L, 3);
    mrt_lua_check(L, fn(z, t, d.t));
    push_out(L, d);
    return 1;
}

static int k_bce_logits_forward(lua_State *L) { return loss_forward(L, mrt_bce_logits_forward); }
static int k_bce_logits_backward(lua_State *L) { return loss_backward(L, mrt_bce_logits_backward); }
static int k_cross_entropy_forward(lua_State *L)
{
    return loss_forward(L, mrt_cross_entropy_forward);
}
static int k_cross_entropy_backward(lua_State *L)
{
    return loss_backward(L, mrt_cross_entropy_backward);
}

/* margin_cross_entropy_forward(logits, target, scale, margin, out_scale) -> loss;
 * margin_cross_entropy_backward(logits, target, scale, margin, out_scale [, out]) -> dlogits */
static mrt_margin_ce_params margin_params(lua_State *L, int at)
{
    mrt_margin_ce_params p = {luaL_checknumber(L, at), luaL_checknumber(L, at + 1),
                              luaL_checknumber(L, at + 2)};
    return p;
}

static int k_margin_cross_entropy_forward(lua_State *L)
{
    mrt_tensor *z = mrt_lua_check_tensor(L, 1), *t = mrt_lua_check_tensor(L, 2);
    mrt_margin_ce_params p = margin_params(L, 3);
    double loss;
    mrt_lua_check(L, mrt_margin_cross_entropy_forward(z, t, &p, &loss));
    lua_pushnumber(L, loss);
    return 1;
}

static int k_margin_cross_entropy_backward(lua_State *L)
{
    mrt_tensor *z = mrt_lua_check_tensor(L, 1), *t = mrt_lua_check_tensor(L, 2);
    mrt_margin_ce_params p = margin_params(L, 3);
    out_arg d = out_at(L, 6);
    mrt_lua_check(L, mrt_margin_cross_entropy_backward(z, t, &p, d.t));
    push_out(L, d);
    return 1;
}

/* ---- Gaussian model and Mahalanobis distance ---------------------------------- */

/* gaussian_fit(x, shrinkage) -> mean, covariance, precision, shrinkage used
 * (shrinkage < 0: Ledoit-Wolf) */
static int k_gaussian_fit(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1);
    double shrinkage = luaL_checknumber(L, 2);
    mrt_tensor *mean = mrt_lua_push_tensor(L), *cov = mrt_lua_push_tensor(L);
    mrt_tensor *precision = mrt_lua_push_tensor(L);
    double used = 0;
    mrt_lua_check(L, mrt_gaussian_fit(x, shrinkage, mean, cov, precision, &used));
    lua_pushnumber(L, used);
    return 4;
}

/* mahalanobis_forward(x, mean, precision, dist?) -> dist */
static int k_mahalanobis_forward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *mean = mrt_lua_check_tensor(L, 2);
    mrt_tensor *precision = mrt_lua_check_tensor(L, 3);
    out_arg dist = out_at(L, 4);
    mrt_lua_check(L, mrt_mahalanobis_forward(x, mean, precision, dist.t));
    push_out(L, dist);
    return 1;
}

/* mahalanobis_backward(x, mean, precision, dist, ddist, dx?) -> dx */
static int k_mahalanobis_backward(lua_State *L)
{
    mrt_tensor *x = mrt_lua_check_tensor(L, 1), *mean = mrt_lua_check_tensor(L, 2);
    mrt_tensor *precision = mrt_lua_check_tensor(L, 3), *dist = mrt_lua_check_tensor(L, 4);
    mrt_tensor *ddist = mrt_lua_check_tensor(L, 5);
    out_arg dx = out_at(L, 6);
    mrt_lua_check(L, mrt_mahalanobis_backward(x, mean, precision, dist, ddist, dx.t));
    push_out(L, dx);
    return 1;
}

static const luaL_Reg nn_funcs[] = {
    {"workspace", k_workspace},
    {"conv2d_forward", k_conv2d_forward}, {"conv2d_backward", k_conv2d_backward},
    {"linear_forward", k_linear_forward}, {"linear_backward", k_linear_backward},
    {"batchnorm2d_forward", k_batchnorm2d_forward},
    {"batchnorm2d_backward", k_batchnorm2d_backward},
    {"relu_forward", k_relu_forward}, {"relu_backward", k_relu_backward},
    {"maxpool2d_forward", k_maxpool2d_forward}, {"maxpool2d_backward", k_maxpool2d_backward},
    {"avgpool_global_forward", k_avgpool_global_forward},
    {"avgpool_global_backward", k_avgpool_global_backward},
    {"gem_forward", k_gem_forward}, {"gem_backward", k_gem_backward},
    {"dropout_forward", k_dropout_forward}, {"dropout_backward", k_dropout_backward},
    {"bce_logits_forward", k_bce_logits_forward}, {"bce_logits_backward", k_bce_logits_backward},
    {"cross_entropy_forward", k_cross_entropy_forward},
    {"cross_entropy_backward", k_cross_entropy_backward},
    {"margin_cross_entropy_forward", k_margin_cross_entropy_forward},
    {"margin_cross_entropy_backward", k_margin_cross_entropy_backward},
    {"gaussian_fit", k_gaussian_fit}, {"mahalanobis_forward", k_mahalanobis_forward},
    {"mahalanobis_backward", k_mahalanobis_backward},
    {NULL, NULL}};

void mrt_lua_nn(lua_State *L)
{
    if (luaL_newmetatable(L, WORKSPACE_MT)) {
        lua_pushcfunction(L, workspace_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, workspace_release);
        lua_setfield(L, -2, "__close");
        lua_newtable(L);
        lua_pushcfunction(L, workspace_size);
        lua_setfield(L, -2, "size");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, nn_funcs, 0);
}
