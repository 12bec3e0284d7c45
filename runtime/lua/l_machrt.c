/* The `machrt` Lua module: constructors, safetensors I/O, seed and
 * generator state, threads, clock, memory. Tensor methods live in l_tensor.c. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "l_machrt.h"
#include "machrt/backend.h"
#include "machrt/rng.h"
#include "machrt/safetensors.h"

static mrt_dtype check_dtype(lua_State *L, int idx)
{
    static const char *const names[] = {"float32", "int64", NULL};
    return luaL_checkoption(L, idx, "float32", names) == 1 ? MRT_I64 : MRT_F32;
}

/* ---- mt.tensor(nested table) ------------------------------------------- */

static int nested_shape(lua_State *L, int idx, int64_t *shape)
{
    int nd = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (nd == MRT_MAX_DIMS)
            luaL_error(L, "tensor: nesting deeper than %d dimensions", MRT_MAX_DIMS);
        shape[nd++] = (int64_t)luaL_len(L, -1);
        if (shape[nd - 1] == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return nd;
}

static void fill_nested(lua_State *L, const mrt_tensor *t, int d, int64_t *off, char *path, size_t plen)
{
    /* value to read is on top of the stack */
    if (d == t->ndim) {
        int ok;
        if (t->dtype == MRT_F32) {
            lua_Number v = lua_tonumberx(L, -1, &ok);
            if (!ok) luaL_error(L, "tensor: element %s is a %s, expected a number", path,
                                luaL_typename(L, -1));
            mrt_f32(t)[(*off)++] = (float)v;
        } else {
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "tensor: element %s is not an integer (int64 tensor)", path);
            mrt_i64(t)[(*off)++] = v;
        }
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "tensor: ragged nested table: element %s is a %s, expected a table of %I",
                   path, luaL_typename(L, -1), (lua_Integer)t->shape[d]);
    int64_t n = (int64_t)luaL_len(L, -1);
    if (n != t->shape[d])
        luaL_error(L, "tensor: ragged nested table: %s has %I elements, expected %I",
                   d == 0 ? "the table" : path, (lua_Integer)n, (lua_Integer)t->shape[d]);
    luaL_checkstack(L, 3, "tensor: nesting too deep");
    for (int64_t i = 0; i < n; i++) {
        size_t used = strlen(path);
        snprintf(path + used, plen - used, "[%lld]", (long long)i + 1);
        lua_geti(L, -1, i + 1);
        fill_nested(L, t, d + 1, off, path, plen);
        lua_pop(L, 1);
        path[used] = '\0';
    }
}

static int m_tensor(lua_State *L)
{
    mrt_tensor *src = mrt_lua_test_tensor(L, 1);
    if (src) {
        mrt_tensor *r = mrt_lua_push_tensor(L);
        mrt_lua_check(L, mrt_tensor_clone(r, src));
        return 1;
    }
    if (!lua_istable(L, 1) && !lua_isnumber(L, 1))
        luaL_typeerror(L, 1, "nested table of numbers, number or tensor");
    mrt_dtype dtype = check_dtype(L, 2);
    int64_t shape[MRT_MAX_DIMS];
    int nd = lua_istable(L, 1) ? nested_shape(L, 1, shape) : 0;
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_tensor_alloc(r, dtype, nd, shape));
    int64_t off = 0;
    char path[256] = "";
    lua_pushvalue(L, 1);
    fill_nested(L, r, 0, &off, path, sizeof path);
    lua_pop(L, 1);
    return 1;
}

/* ---- shaped constructors ------------------------------------------------ */

/* A new uninitialised tensor (pushed) of the shape at arg 1 (a list, or
 * integers). Its dtype is the string at arg `dtype_arg` if there is one
 * (0: right after the shape; -1: no dtype argument), else float32. Every
 * constructor fills it in full, so nothing is zeroed twice. */
static mrt_tensor *new_shaped(lua_State *L, const char *what, int dtype_arg)
{
    int64_t shape[MRT_MAX_DIMS];
    int nd = mrt_lua_check_shape(L, 1, shape, what);
    for (int i = 0; i < nd; i++)
        if (shape[i] < 0) luaL_error(L, "%s: shape entry %d must be non-negative", what, i + 1);
    if (dtype_arg == 0) dtype_arg = lua_istable(L, 1) ? 2 : nd + 1;
    mrt_dtype dtype = MRT_F32;
    if (dtype_arg > 0 && lua_type(L, dtype_arg) == LUA_TSTRING) dtype = check_dtype(L, dtype_arg);
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check_op(L, mrt_tensor_alloc_uninit(r, dtype, nd, shape), what);
    return r;
}

static int m_zeros(lua_State *L)
{
    mrt_lua_check(L, mrt_tensor_fill(new_shaped(L, "zeros", 0), 0.0));
    return 1;
}

/* Uninitialised: for buffers a kernel overwrites in full. */
static int m_empty(lua_State *L)
{
    new_shaped(L, "empty", 0);
    return 1;
}

static int m_ones(lua_State *L)
{
    mrt_lua_check(L, mrt_tensor_fill(new_shaped(L, "ones", 0), 1.0));
    return 1;
}

/* full(shape, value [, dtype]) */
static int m_full(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Number v = luaL_checknumber(L, 2);
    mrt_lua_check_op(L, mrt_tensor_fill(new_shaped(L, "full", 3), v), "full");
    return 1;
}

static int m_rand(lua_State *L)
{
    mrt_tensor *r = new_shaped(L, "rand", -1);
    mrt_lua_check(L, mrt_rng_uniform(mrt_rng_default(), r, 0.0, 1.0));
    return 1;
}

static int m_randn(lua_State *L)
{
    mrt_tensor *r = new_shaped(L, "randn", -1);
    mrt_lua_check(L, mrt_rng_normal(mrt_rng_default(), r, 0.0, 1.0));
    return 1;
}

/* arange(n) = 0..n-1; arange(start, stop[, step]), stop excluded (PyTorch). */
static int m_arange(lua_State *L)
{
    lua_Number start = 0, stop, step = 1;
    if (lua_isnoneornil(L, 2)) {
        stop = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        stop = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    if (step == 0) return luaL_error(L, "arange: step must not be 0");
    double count = ceil((stop - start) / step);
    if (!(count >= 0)) count = 0;
    if (count > 1e10) return luaL_error(L, "arange: too many elements (%f)", (lua_Number)count);
    int64_t n = (int64_t)count;
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_tensor_alloc_uninit(r, MRT_F32, 1, &n));
    mrt_lua_check(L, mrt_tensor_fill_range(r, start, step));
    return 1;
}

/* ---- safetensors ----------------------------------------------------------- */

/* The tensors of the table at `idx` ({name = tensor, ...}) as a list whose
 * names point into the table's keys. Pushes one anchor table that keeps the
 * list and the host copies of device tensors alive while it is on the stack. */
static mrt_named_tensor *named_tensors(lua_State *L, int idx, const char *op, int *count)
{
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: keys must be tensor names (strings), got a %s", op,
                       luaL_typename(L, -2));
        mrt_tensor *t = mrt_lua_test_tensor(L, -1);
        if (!t || !t->storage) luaL_error(L, "%s: value for '%s' is not a tensor", op, lua_tostring(L, -2));
        n++;
        lua_pop(L, 1);
    }
    lua_newtable(L);
    int anchor = lua_gettop(L);
    mrt_named_tensor *list = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *list, 0);
    lua_rawseti(L, anchor, 1);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        list[i].name = (char *)lua_tostring(L, -2);
        list[i].tensor = *mrt_lua_test_tensor(L, -1);
        if (list[i].tensor.storage->device != MRT_CPU) {
            /* Device tensors are read from host copies. */
            mrt_tensor *h = mrt_lua_push_tensor(L);
            mrt_lua_check(L, mrt_tensor_to(mrt_lua_test_tensor(L, -2), MRT_CPU, h));
            list[i].tensor = *h;
            lua_rawseti(L, anchor, i + 2);
        }
        i++;
        lua_pop(L, 1);
    }
    *count = n;
    return list;
}

/* mt.save(path, {name = tensor, ...} [, {key = "value", ...}]) */
static int m_save(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 3); /* the metadata stays argument 3, under the anchor */
    int n;
    mrt_named_tensor *list = named_tensors(L, 2, "save", &n);
    char *meta = NULL;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        cJSON *obj = cJSON_CreateObject();
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1)) {
                cJSON_Delete(obj);
                luaL_error(L, "save: metadata must map strings to strings");
            }
            cJSON_AddStringToObject(obj, lua_tostring(L, -2), lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        meta = cJSON_PrintUnformatted(obj);
        cJSON_Delete(obj);
        if (!meta) luaL_error(L, "save: out of memory encoding the metadata of '%s'", path);
    }
    mrt_status st = mrt_safetensors_save(path, list, n, meta);
    cJSON_free(meta);
    mrt_lua_check(L, st);
    return 0;
}

/* mt.checksum({name = tensor, ...} [, {key = "value", ...}]) -> SHA-256 hex
 * of the tensors and the metadata (machrt/safetensors.h says of what). */
static int m_checksum(lua_State *L)
{
    lua_settop(L, 2); /* the metadata stays argument 2, under the anchor */
    int n;
    mrt_named_tensor *list = named_tensors(L, 1, "checksum", &n);
    int m = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "checksum: metadata must map strings to strings");
            m++;
            lua_pop(L, 1);
        }
    }
    const char **kv = lua_newuserdatauv(L, (size_t)(2 * m + 1) * sizeof *kv, 0);
    int i = 0;
    if (m > 0) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            kv[i] = lua_tostring(L, -2);
            kv[m + i] = lua_tostring(L, -1);
            i++;
            lua_pop(L, 1);
        }
    }
    char hex[MRT_DIGEST_HEX];
    mrt_lua_check(L, mrt_tensors_sha256(list, n, kv, kv + m, m, hex));
    lua_pushstring(L, hex);
    return 1;
}

/* mt.load(path) -> {name = tensor, ...}, metadata table */
static int m_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mrt_named_tensor *list = NULL;
    int n = 0;
    char *meta = NULL;
    mrt_lua_check(L, mrt_safetensors_load(path, &list, &n, &meta));
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        mrt_tensor *r = mrt_lua_push_tensor(L);
        *r = list[i].tensor;
        list[i].tensor.storage = NULL; /* ownership moved to the userdata */
        lua_setfield(L, -2, list[i].name);
    }
    mrt_safetensors_free(list, n);
    lua_newtable(L);
    cJSON *obj = meta ? cJSON_Parse(meta) : NULL;
    free(meta);
    for (cJSON *e = obj ? obj->child : NULL; e; e = e->next) {
        if (cJSON_IsString(e)) {
            lua_pushstring(L, e->valuestring);
            lua_setfield(L, -2, e->string);
        }
    }
    cJSON_Delete(obj);
    return 2;
}

/* ---- process-wide settings ----------------------------------------------------- */

static int m_manual_seed(lua_State *L)
{
    mrt_rng_default_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

static int m_set_num_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1) return luaL_error(L, "set_num_threads: need at least 1 thread, got %I", n);
    /* Not narrowed to int: 2^32 + 1 would become 1 thread without a word. */
    if (n > INT_MAX)
        return luaL_error(L, "set_num_threads: %I threads is more than a C int holds", n);
    mrt_set_num_threads((int)n);
    return 0;
}

static int m_get_num_threads(lua_State *L)
{
    lua_pushinteger(L, mrt_get_num_threads());
    return 1;
}

static int m_cuda_available(lua_State *L)
{
    lua_pushboolean(L, mrt_cuda_available());
    return 1;
}

static int m_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* {live = bytes held by tensors, cached = freed bytes kept for reuse} */
static int m_memory_stats(lua_State *L)
{
    size_t live, cached;
    mrt_storage_stats(&live, &cached);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)live);
    lua_setfield(L, -2, "live");
    lua_pushinteger(L, (lua_Integer)cached);
    lua_setfield(L, -2, "cached");
    const mrt_backend *cuda = mrt_backend_get(MRT_CUDA);
    if (cuda) {
        /* cuda = {live, cached, mallocs, ...}: device bytes and cudaMalloc calls. */
        size_t dl, dc, dm;
        cuda->memory.stats(&dl, &dc, &dm);
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)dl);
        lua_setfield(L, -2, "live");
        lua_pushinteger(L, (lua_Integer)dc);
        lua_setfield(L, -2, "cached");
        lua_pushinteger(L, (lua_Integer)dm);
        lua_setfield(L, -2, "mallocs");
        /* pinned = staging bytes of async copies, host_allocs = cudaHostAlloc
         * calls, async_copies = copies issued on the copy stream. */
        size_t pb = 0, ha = 0, ac = 0;
        if (cuda->memory.copy_stats) cuda->memory.copy_stats(&pb, &ha, &ac);
        lua_pushinteger(L, (lua_Integer)pb);
        lua_setfield(L, -2, "pinned");
        lua_pushinteger(L, (lua_Integer)ha);
        lua_setfield(L, -2, "host_allocs");
        lua_pushinteger(L, (lua_Integer)ac);
        lua_setfield(L, -2, "async_copies");
        lua_setfield(L, -2, "cuda");
    }
    return 1;
}

static int m_empty_cache(lua_State *L)
{
    mrt_storage_empty_cache();
    const mrt_backend *cuda = mrt_backend_get(MRT_CUDA);
    if (cuda) cuda->memory.empty_cache();
    return 0;
}

/* Waits for the device's queued work (timing); a no-op without CUDA. */
static int m_cuda_synchronize(lua_State *L)
{
    const mrt_backend *cuda = mrt_backend_get(MRT_CUDA);
    if (cuda) mrt_lua_check(L, cuda->memory.synchronize());
    return 0;
}

/* mt.set_gemm_precision("fp16" | "bf16" | "fp32"): the operands of the
 * convolution / linear / matmul GEMMs (fp32 accumulation and outputs);
 * returns the previous mode. The CPU takes "bf16" where it has avx512_bf16
 * or AMX and stays fp32 otherwise (mt.gemm_precision() says which). */
static int m_set_gemm_precision(lua_State *L)
{
    const char *mode = luaL_checkstring(L, 1);
    lua_pushstring(L, mrt_gemm_precision());
    mrt_lua_check(L, mrt_set_gemm_precision(mode));
    return 1;
}

/* mt.gemm_precision() -> "fp32" | "fp16" | "bf16": what the GEMMs use now. */
static int m_gemm_precision(lua_State *L)
{
    lua_pushstring(L, mrt_gemm_precision());
    return 1;
}

/* mt.cpu_bf16() -> "amx" | "avx512_bf16" | nil: what multiplies bf16 on
 * this CPU (MACHRT_CPU_FEATURES honoured). */
static int m_cpu_bf16(lua_State *L)
{
    const char *units = mrt_cpu_bf16_units();
    if (units) lua_pushstring(L, units);
    else lua_pushnil(L);
    return 1;
}

/* mt.cpu_peaks() -> {fp32 = GFLOP/s, bf16 = GFLOP/s}: one core's timed
 * peak (mrt_cpu_time_peaks, once per process); a kind the CPU lacks is nil. */
static int m_cpu_peaks(lua_State *L)
{
    double fp32 = 0, bf16 = 0;
    mrt_cpu_time_peaks(&fp32, &bf16);
    lua_createtable(L, 0, 2);
    if (fp32 > 0) {
        lua_pushnumber(L, fp32);
        lua_setfield(L, -2, "fp32");
    }
    if (bf16 > 0) {
        lua_pushnumber(L, bf16);
        lua_setfield(L, -2, "bf16");
    }
    return 1;
}

/* ---- the generator's state and raw Philox blocks ----------------------------- */
/* Seeded streams that do not disturb the default generator. */

/* mt.philox(counter, key) -> four integers in [0, 2^32) */
static int m_philox(lua_State *L)
{
    uint32_t out[4];
    mrt_philox4x32((uint64_t)luaL_checkinteger(L, 1), (uint64_t)luaL_checkinteger(L, 2), out);
    for (int i = 0; i < 4; i++) lua_pushinteger(L, (lua_Integer)out[i]);
    return 4;
}

/* mt.rng_state() -> {seed =, offset =}; mt.set_rng_state(t): the default
 * generator, saved in checkpoints so a resumed run draws what it would have. */
static int m_rng_state(lua_State *L)
{
    mrt_rng *r = mrt_rng_default();
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)r->seed);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, (lua_Integer)r->offset);
    lua_setfield(L, -2, "offset");
    return 1;
}

static int m_set_rng_state(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "seed");
    lua_getfield(L, 1, "offset");
    if (!lua_isinteger(L, -2) || !lua_isinteger(L, -1))
        return luaL_error(L, "set_rng_state: needs integer fields seed and offset");
    mrt_rng *r = mrt_rng_default();
    r->seed = (uint64_t)lua_tointeger(L, -2);
    r->offset = (uint64_t)lua_tointeger(L, -1);
    return 0;
}

static int m_is_tensor(lua_State *L)
{
    lua_pushboolean(L, mrt_lua_test_tensor(L, 1) != NULL);
    return 1;
}

static const luaL_Reg machrt_funcs[] = {
    {"tensor", m_tensor}, {"zeros", m_zeros}, {"empty", m_empty}, {"ones", m_ones}, {"full", m_full},
    {"rand", m_rand}, {"randn", m_randn}, {"arange", m_arange},
    {"save", m_save}, {"load", m_load}, {"checksum", m_checksum}, {"manual_seed", m_manual_seed},
    {"set_num_threads", m_set_num_threads}, {"get_num_threads", m_get_num_threads},
    {"cuda_available", m_cuda_available}, {"clock", m_clock}, {"is_tensor", m_is_tensor},
    {"memory_stats", m_memory_stats}, {"empty_cache", m_empty_cache},
    {"cuda_synchronize", m_cuda_synchronize}, {"set_gemm_precision", m_set_gemm_precision},
    {"gemm_precision", m_gemm_precision}, {"cpu_bf16", m_cpu_bf16},
    {"cpu_peaks", m_cpu_peaks},
    {"philox", m_philox}, {"rng_state", m_rng_state}, {"set_rng_state", m_set_rng_state},
    {NULL, NULL}};

int luaopen_machrt(lua_State *L)
{
    mrt_lua_open_tensor(L);
    luaL_newlib(L, machrt_funcs);
    lua_pushstring(L, MACHRT_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

void mrt_lua_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_machrt);
    lua_setfield(L, -2, "machrt");
    lua_pushcfunction(L, luaopen_machrt_audio);
    lua_setfield(L, -2, "machrt.audio");
    lua_pushcfunction(L, luaopen_machrt_kernels);
    lua_setfield(L, -2, "machrt.kernels");
    lua_pushcfunction(L, luaopen_machrt_sys);
    lua_setfield(L, -2, "machrt.sys");
    lua_pushcfunction(L, luaopen_machrt_synth_c);
    lua_setfield(L, -2, "machrt.synth_c");
    lua_pushcfunction(L, luaopen_machrt_plot_c);
    lua_setfield(L, -2, "machrt.plot_c");
    lua_pushcfunction(L, luaopen_machrt_workers);
    lua_setfield(L, -2, "machrt.workers");
    lua_pushcfunction(L, luaopen_machrt_dist_c);
    lua_setfield(L, -2, "machrt.dist_c");
    lua_pop(L, 1);
}
