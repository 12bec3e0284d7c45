/* Binding of the inference plan (machrt/infer_plan.h) into machrt.kernels:
 *   infer_plan(precision "fp32"|"bf16", in_channels) -> plan
 *   plan:conv(name, src, residual|nil, {cin, cout, kh, kw, sh, sw, ph, pw}, relu) -> value
 *   plan:set_weights(value, w, bias|nil, gamma|nil, beta, mean, var, eps)
 *   plan:maxpool(name, src, kh, kw, sh, sw, ph, pw) -> value
 *   plan:forward(x, y?) -> y      (x: N x C x H x W; y: the last value, fp32 NCHW)
 *   plan:describe(n, h, w) -> inner reorders, one line per step
 *   plan:set_winograd(on)         (fp32 plans: Winograd for 3x3 stride 1; on by default)
 * machrt.nn.compile_inference builds plans from models. */
#include <string.h>
#include "l_machrt.h"
#include "machrt/infer_plan.h"

#define PLAN_MT "machrt.InferPlan"

typedef struct {
    mrt_infer_plan *plan;
} plan_ud;

static mrt_infer_plan *check_plan(lua_State *L)
{
    plan_ud *u = luaL_checkudata(L, 1, PLAN_MT);
    if (!u->plan) luaL_error(L, "infer plan: used after it was released");
    return u->plan;
}

/* A contiguous fp32 tensor on the CPU holding `numel` values (any if < 0). */
static const float *host_f32(lua_State *L, int idx, const char *what, int64_t numel)
{
    const mrt_tensor *t = mrt_lua_check_tensor(L, idx);
    if (t->dtype != MRT_F32 || !t->storage || t->storage->device != MRT_CPU || !mrt_tensor_is_contiguous(t))
        luaL_error(L, "infer plan: %s must be a contiguous float32 tensor on the CPU", what);
    if (numel >= 0 && mrt_tensor_numel(t) != numel)
        luaL_error(L, "infer plan: %s has %lld values, expected %lld", what, (long long)mrt_tensor_numel(t),
                   (long long)numel);
    return mrt_f32(t);
}

static int k_infer_plan(lua_State *L)
{
    static const char *const precisions[] = {"fp32", "bf16", NULL};
    const int precision = luaL_checkoption(L, 1, NULL, precisions);
    const int in_channels = (int)luaL_checkinteger(L, 2);
    plan_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->plan = NULL;
    luaL_setmetatable(L, PLAN_MT);
    mrt_lua_check(L, mrt_infer_plan_new(precision ? MRT_INFER_BF16 : MRT_INFER_F32, in_channels, &u->plan));
    return 1;
}

static int geom_field(lua_State *L, int idx, int i)
{
    lua_geti(L, idx, i);
    if (!lua_isinteger(L, -1)) luaL_error(L, "infer plan: geometry entry %d must be an integer", i);
    const int v = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int plan_conv(lua_State *L)
{
    mrt_infer_plan *p = check_plan(L);
    const char *name = luaL_checkstring(L, 2);
    const int src = (int)luaL_checkinteger(L, 3);
    const int residual = lua_isnoneornil(L, 4) ? -1 : (int)luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    mrt_infer_conv_geom g = {geom_field(L, 5, 1), geom_field(L, 5, 2), geom_field(L, 5, 3), geom_field(L, 5, 4),
                             geom_field(L, 5, 5), geom_field(L, 5, 6), geom_field(L, 5, 7), geom_field(L, 5, 8)};
    int value = 0;
    mrt_lua_check(L, mrt_infer_plan_conv(p, name, src, residual, &g, lua_toboolean(L, 6), &value));
    lua_pushinteger(L, value);
    return 1;
}

static int plan_set_weights(lua_State *L)
{
    mrt_infer_plan *p = check_plan(L);
    const int value = (int)luaL_checkinteger(L, 2);
    const float *w = host_f32(L, 3, "the weights", -1);
    const int64_t cout = mrt_lua_check_tensor(L, 3)->shape[0];
    const float *bias = lua_isnoneornil(L, 4) ? NULL : host_f32(L, 4, "the bias", cout);
    mrt_infer_bn bn;
    const int has_bn = !lua_isnoneornil(L, 5);
    if (has_bn) {
        bn.gamma = host_f32(L, 5, "the batch norm weight", cout);
        bn.beta = host_f32(L, 6, "the batch norm bias", cout);
        bn.mean = host_f32(L, 7, "the running mean", cout);
        bn.var = host_f32(L, 8, "the running variance", cout);
        bn.eps = luaL_checknumber(L, 9);
    }
    mrt_lua_check(L, mrt_infer_plan_set_weights(p, value, w, bias, has_bn ? &bn : NULL));
    return 0;
}

static int plan_maxpool(lua_State *L)
{
    mrt_infer_plan *p = check_plan(L);
    const char *name = luaL_checkstring(L, 2);
    int a[7];
    for (int i = 0; i < 7; i++) a[i] = (int)luaL_checkinteger(L, 3 + i);
    int value = 0;
    mrt_lua_check(L, mrt_infer_plan_maxpool(p, name, a[0], a[1], a[2], a[3], a[4], a[5], a[6], &value));
    lua_pushinteger(L, value);
    return 1;
}

static int plan_forward(lua_State *L)
{
    mrt_infer_plan *p = check_plan(L);
    const mrt_tensor *x = mrt_lua_check_tensor(L, 2);
    if (x->ndim != 4) luaL_error(L, "infer plan: the input must be N x C x H x W, got %d dimensions", x->ndim);
    const float *xd = host_f32(L, 2, "the input", -1);
    int64_t shape[4];
    mrt_lua_check(L, mrt_infer_plan_output_shape(p, (int)x->shape[0], (int)x->shape[2], (int)x->shape[3], shape));
    mrt_tensor *y;
    if (lua_isnoneornil(L, 3)) {
        y = mrt_lua_push_tensor(L);
        mrt_lua_check(L, mrt_tensor_alloc_uninit(y, MRT_F32, 4, shape));
    } else {
        y = mrt_lua_check_tensor(L, 3);
        host_f32(L, 3, "the output", shape[0] * shape[1] * shape[2] * shape[3]);
        lua_pushvalue(L, 3);
    }
    mrt_lua_check(L, mrt_infer_plan_forward(p, xd, (int)x->shape[0], (int)x->shape[1], (int)x->shape[2],
                                            (int)x->shape[3], mrt_f32(y), (size_t)mrt_tensor_numel(y)));
    return 1;
}

static int plan_describe(lua_State *L)
{
    mrt_infer_plan *p = check_plan(L);
    const int n = (int)luaL_checkinteger(L, 2), h = (int)luaL_checkinteger(L, 3), w = (int)luaL_checkinteger(L, 4);
    luaL_Buffer b;
    char *buf = luaL_buffinitsize(L, &b, 16384);
    int reorders = 0;
    mrt_lua_check(L, mrt_infer_plan_describe(p, n, h, w, &reorders, buf, 16384));
    luaL_pushresultsize(&b, strlen(buf));
    lua_pushinteger(L, reorders);
    lua_insert(L, -2);
    return 2;
}

static int plan_set_winograd(lua_State *L)
{
    mrt_infer_plan_set_winograd(check_plan(L), lua_toboolean(L, 2));
    return 0;
}

static int plan_release(lua_State *L)
{
    plan_ud *u = luaL_checkudata(L, 1, PLAN_MT);
    mrt_infer_plan_free(u->plan);
    u->plan = NULL;
    return 0;
}

static const luaL_Reg plan_methods[] = {
    {"conv", plan_conv}, {"set_weights", plan_set_weights}, {"maxpool", plan_maxpool},
    {"forward", plan_forward}, {"describe", plan_describe}, {"set_winograd", plan_set_winograd},
    {"release", plan_release},
    {NULL, NULL}};

static int k_infer_bf16_supported(lua_State *L)
{
    lua_pushboolean(L, mrt_infer_bf16_supported());
    return 1;
}

void mrt_lua_infer_plan(lua_State *L)
{
    if (luaL_newmetatable(L, PLAN_MT)) {
        lua_pushcfunction(L, plan_release);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        luaL_setfuncs(L, plan_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, k_infer_plan);
    lua_setfield(L, -2, "infer_plan");
    lua_pushcfunction(L, k_infer_bf16_supported);
    lua_setfield(L, -2, "infer_bf16_supported");
}
