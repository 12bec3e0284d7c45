/* `machrt.dist_c`: the collectives of runtime/dist for machrt.dist.
 *
 *   init(mode) -> active         launcher() -> variable name | nil
 *   rank(), size(), active()     finalize()      abort(message)
 *   allreduce(t, op) -> t        broadcast(t, root) -> t   (in place)
 *   allreduce_numbers({x, ...}, op) -> {x, ...}   (doubles: sums that need their digits)
 *   nccl_built() -> boolean      nccl_allreduce(t, op) -> t   (a contiguous CUDA tensor)
 *   broadcast_string(s, root) -> s   gather_strings(s, root) -> {s...} | nil
 *   barrier()
 *   reducer(flat, starts, op) -> reducer with :start(b), :wait(),
 *       :buckets(), :started(), :release()   (b and starts are 1-based)
 *
 * Tensors must be contiguous and on the CPU: MPI reads host memory, and a
 * strided view would reduce the wrong elements. */
#include <stdlib.h>
#include <string.h>
#include "l_machrt.h"
#include "machrt/dist.h"

#define REDUCER_MT "machrt.dist.Reducer"

static mrt_tensor *check_buffer_tensor(lua_State *L, int idx, const char *op, int float_only)
{
    mrt_tensor *t = mrt_lua_check_tensor(L, idx);
    if (!t->storage) luaL_error(L, "%s: tensor has been released", op);
    if (t->storage->device != MRT_CPU)
        luaL_error(L, "%s: tensor is on %s; the collectives take CPU tensors", op,
                   mrt_device_name(t->storage->device));
    if (!mrt_tensor_is_contiguous(t)) luaL_error(L, "%s: tensor is not contiguous (call :contiguous())", op);
    if (float_only && t->dtype != MRT_F32)
        luaL_error(L, "%s: expected a float32 tensor, got %s", op, mrt_dtype_name(t->dtype));
    return t;
}

static mrt_dist_op check_op(lua_State *L, int idx, const char *what)
{
    mrt_dist_op op;
    mrt_lua_check_op(L, mrt_dist_op_parse(luaL_optstring(L, idx, "sum"), &op), what);
    return op;
}

static int check_root(lua_State *L, int idx, const char *what)
{
    lua_Integer root = luaL_optinteger(L, idx, 0);
    if (root < 0 || root >= mrt_dist_size())
        luaL_error(L, "%s: root %I is not a rank (ranks are 0..%d)", what, root, mrt_dist_size() - 1);
    return (int)root;
}

static int d_init(lua_State *L)
{
    mrt_dist_mode mode;
    mrt_lua_check(L, mrt_dist_mode_parse(luaL_optstring(L, 1, "auto"), &mode));
    mrt_lua_check(L, mrt_dist_init(mode));
    lua_pushboolean(L, mrt_dist_active());
    return 1;
}

static int d_launcher(lua_State *L)
{
    const char *v = mrt_dist_launcher_variable();
    if (v) lua_pushstring(L, v);
    else lua_pushnil(L);
    return 1;
}

static int d_rank(lua_State *L) { lua_pushinteger(L, mrt_dist_rank()); return 1; }
static int d_size(lua_State *L) { lua_pushinteger(L, mrt_dist_size()); return 1; }
static int d_active(lua_State *L) { lua_pushboolean(L, mrt_dist_active()); return 1; }
static int d_finalize(lua_State *L) { mrt_lua_check(L, mrt_dist_finalize()); return 0; }

static int d_abort(lua_State *L)
{
    mrt_dist_abort(1, luaL_checkstring(L, 1));
    return luaL_error(L, "%s", lua_tostring(L, 1)); /* local: an ordinary error */
}

static int d_allreduce(lua_State *L)
{
    mrt_tensor *t = check_buffer_tensor(L, 1, "allreduce", 1);
    mrt_dist_op op = check_op(L, 2, "allreduce");
    mrt_lua_check(L, mrt_dist_allreduce(mrt_f32(t), (size_t)mrt_tensor_numel(t), op));
    lua_settop(L, 1);
    return 1;
}

static int d_allreduce_numbers(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mrt_dist_op op = check_op(L, 2, "allreduce_numbers");
    lua_Integer n = luaL_len(L, 1);
    double *v = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *v, 0); /* freed with the state on error */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        int is_number = 0;
        v[i - 1] = lua_tonumberx(L, -1, &is_number);
        if (!is_number) luaL_error(L, "allreduce_numbers: item %d is a %s, not a number", (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    mrt_lua_check(L, mrt_dist_allreduce_f64(v, (size_t)n, op));
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushnumber(L, v[i - 1]);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

static int d_nccl_built(lua_State *L) { lua_pushboolean(L, mrt_dist_nccl_built()); return 1; }

static int d_nccl_allreduce(lua_State *L)
{
    mrt_tensor *t = mrt_lua_check_tensor(L, 1);
    mrt_dist_op op = check_op(L, 2, "nccl allreduce");
    if (!t->storage) luaL_error(L, "nccl allreduce: tensor has been released");
    if (t->storage->device != MRT_CUDA)
        luaL_error(L, "nccl allreduce: tensor is on %s; NCCL reduces CUDA tensors", mrt_device_name(t->storage->device));
    if (!mrt_tensor_is_contiguous(t)) luaL_error(L, "nccl allreduce: tensor is not contiguous (call :contiguous())");
    if (t->dtype != MRT_F32) luaL_error(L, "nccl allreduce: expected a float32 tensor, got %s", mrt_dtype_name(t->dtype));
    mrt_lua_check(L, mrt_dist_nccl_allreduce(mrt_f32(t), (size_t)mrt_tensor_numel(t), op));
    lua_settop(L, 1);
    return 1;
}

static int d_broadcast(lua_State *L)
{
    mrt_tensor *t = check_buffer_tensor(L, 1, "broadcast", 0);
    int root = check_root(L, 2, "broadcast");
    size_t nbytes = (size_t)mrt_tensor_numel(t) * mrt_dtype_size(t->dtype);
    void *data = (char *)t->storage->data + (size_t)t->offset * mrt_dtype_size(t->dtype);
    mrt_lua_check(L, mrt_dist_broadcast(data, nbytes, root));
    lua_settop(L, 1);
    return 1;
}

static int d_broadcast_string(lua_State *L)
{
    size_t len = 0;
    const char *s = luaL_optlstring(L, 1, "", &len);
    int root = check_root(L, 2, "broadcast_string");
    unsigned long long n = len;
    mrt_lua_check(L, mrt_dist_broadcast(&n, sizeof n, root));
    char *buf = lua_newuserdatauv(L, n + 1, 0); /* collected with the state on error */
    if (mrt_dist_rank() == root) memcpy(buf, s, n);
    mrt_lua_check(L, mrt_dist_broadcast(buf, n, root));
    lua_pushlstring(L, buf, n);
    return 1;
}

static int d_gather_strings(lua_State *L)
{
    size_t len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    int root = check_root(L, 2, "gather_strings");
    int size = mrt_dist_size();
    size_t *lengths = lua_newuserdatauv(L, (size_t)size * sizeof *lengths, 0);
    char *all = NULL;
    mrt_lua_check(L, mrt_dist_gather_bytes(s, len, root, &all, lengths));
    if (!all) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, size, 0);
    size_t at = 0;
    for (int r = 0; r < size; r++) {
        lua_pushlstring(L, all + at, lengths[r]);
        lua_rawseti(L, -2, r + 1);
        at += lengths[r];
    }
    free(all);
    return 1;
}

static int d_barrier(lua_State *L)
{
    mrt_lua_check(L, mrt_dist_barrier());
    return 0;
}

/* ---- reducer ------------------------------------------------------------ */

static mrt_dist_reducer **check_reducer(lua_State *L)
{
    mrt_dist_reducer **r = luaL_checkudata(L, 1, REDUCER_MT);
    if (!*r) luaL_error(L, "reducer has been released");
    /* The reducer holds the buffer's data pointer: after buffer:release()
     * the collectives would write into freed memory. */
    lua_getiuservalue(L, 1, 1);
    mrt_tensor *t = mrt_lua_test_tensor(L, -1);
    if (!t || !t->storage) luaL_error(L, "reducer: its gradient buffer has been released");
    lua_pop(L, 1);
    return r;
}

static int r_release(lua_State *L)
{
    mrt_dist_reducer **r = luaL_checkudata(L, 1, REDUCER_MT);
    mrt_dist_reducer_free(*r);
    *r = NULL;
    return 0;
}

static int d_reducer(lua_State *L)
{
    mrt_tensor *t = check_buffer_tensor(L, 1, "reducer", 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    mrt_dist_op op = check_op(L, 3, "reducer");
    lua_Integer nb = luaL_len(L, 2);
    if (nb < 1) luaL_error(L, "reducer: no bucket offsets given");
    size_t *starts = lua_newuserdatauv(L, (size_t)nb * sizeof *starts, 0);
    for (lua_Integer b = 1; b <= nb; b++) {
        lua_geti(L, 2, b);
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < 1) luaL_error(L, "reducer: bucket offset %d is not a positive integer", (int)b);
        starts[b - 1] = (size_t)(v - 1);
        lua_pop(L, 1);
    }
    mrt_dist_reducer **r = lua_newuserdatauv(L, sizeof *r, 1);
    *r = NULL;
    luaL_setmetatable(L, REDUCER_MT);
    lua_pushvalue(L, 1); /* the buffer stays alive as long as the reducer */
    lua_setiuservalue(L, -2, 1);
    mrt_lua_check(L, mrt_dist_reducer_new(mrt_f32(t), (size_t)mrt_tensor_numel(t), starts, (size_t)nb,
                                          op, r));
    return 1;
}

static int r_start(lua_State *L)
{
    mrt_dist_reducer **r = check_reducer(L);
    lua_Integer b = luaL_checkinteger(L, 2);
    if (b < 1 || (size_t)b > mrt_dist_reducer_buckets(*r))
        luaL_error(L, "reducer: bucket %d out of range (1..%d)", (int)b, (int)mrt_dist_reducer_buckets(*r));
    mrt_lua_check(L, mrt_dist_reducer_start(*r, (size_t)(b - 1)));
    return 0;
}

static int r_wait(lua_State *L)
{
    mrt_lua_check(L, mrt_dist_reducer_wait(*check_reducer(L)));
    return 0;
}

static int r_buckets(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)mrt_dist_reducer_buckets(*check_reducer(L)));
    return 1;
}

static int r_started(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)mrt_dist_reducer_started(*check_reducer(L)));
    return 1;
}

static const luaL_Reg reducer_methods[] = {
    {"start", r_start}, {"wait", r_wait}, {"buckets", r_buckets}, {"started", r_started},
    {"release", r_release}, {NULL, NULL}};

static const luaL_Reg dist_funcs[] = {
    {"init", d_init}, {"launcher", d_launcher}, {"rank", d_rank}, {"size", d_size},
    {"active", d_active}, {"finalize", d_finalize}, {"abort", d_abort},
    {"allreduce", d_allreduce}, {"allreduce_numbers", d_allreduce_numbers},
    {"nccl_built", d_nccl_built}, {"nccl_allreduce", d_nccl_allreduce}, {"broadcast", d_broadcast},
    {"broadcast_string", d_broadcast_string}, {"gather_strings", d_gather_strings},
    {"barrier", d_barrier}, {"reducer", d_reducer}, {NULL, NULL}};

int luaopen_machrt_dist_c(lua_State *L)
{
    if (luaL_newmetatable(L, REDUCER_MT)) {
        luaL_newlib(L, reducer_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, r_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, r_release);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    luaL_newlib(L, dist_funcs);
    return 1;
}
