/* machrt.workers: the worker pool of runtime/core/pool.c with a Lua state
 * per worker that runs a scripted job function (the data loader's
 * workers), and the process-wide tensor cache of runtime/core/cache.c.
 *
 * Lua states are not thread-safe, so a worker never touches the caller's
 * state: it builds its own (standard libraries, the caller's package paths,
 * machrt's C modules preloaded), requires a module that returns a factory,
 * calls factory(config) once to get its job function, then runs jobs. Job
 * arguments and results cross between states as plain values (nil,
 * booleans, numbers, strings, tables of them) and tensors; a tensor
 * crosses by reference (its storage refcount is atomic), not by copy. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "l_machrt.h"
#include "machrt/cache.h"
#include "machrt/pool.h"

#define WORKERS_MT "machrt.workers.Pool"
#define MAX_DEPTH 32

/* ---- values that cross between Lua states ------------------------------- */

/* A value is serialized into a byte buffer (type tag + payload); tensors go
 * into a side list of retained references. */
typedef struct blob {
    char *bytes;
    size_t len, cap;
    mrt_tensor *tensors;
    int ntensors, cap_tensors;
} blob;

enum { V_NIL, V_FALSE, V_TRUE, V_INT, V_NUM, V_STR, V_TABLE, V_TENSOR };

static void blob_free(blob *b)
{
    for (int i = 0; i < b->ntensors; i++) mrt_tensor_release(&b->tensors[i]);
    free(b->tensors);
    free(b->bytes);
    memset(b, 0, sizeof *b);
}

static int blob_put(blob *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *nb = realloc(b->bytes, cap);
        if (!nb) return 0;
        b->bytes = nb;
        b->cap = cap;
    }
    memcpy(b->bytes + b->len, p, n);
    b->len += n;
    return 1;
}

static int blob_tag(blob *b, char tag) { return blob_put(b, &tag, 1); }

/* Serializes the value at idx; on failure leaves a message on the Lua stack
 * top and returns 0 (the caller raises it, or hands it to the other side). */
static int encode(lua_State *L, int idx, blob *b, int depth, const char *what)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return blob_tag(b, V_NIL) || (lua_pushstring(L, "out of memory"), 0);
    case LUA_TBOOLEAN:
        return blob_tag(b, lua_toboolean(L, idx) ? V_TRUE : V_FALSE) ||
               (lua_pushstring(L, "out of memory"), 0);
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);
            if (blob_tag(b, V_INT) && blob_put(b, &v, sizeof v)) return 1;
        } else {
            lua_Number v = lua_tonumber(L, idx);
            if (blob_tag(b, V_NUM) && blob_put(b, &v, sizeof v)) return 1;
        }
        lua_pushstring(L, "out of memory");
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (blob_tag(b, V_STR) && blob_put(b, &n, sizeof n) && blob_put(b, s, n)) return 1;
        lua_pushstring(L, "out of memory");
        return 0;
    }
    case LUA_TTABLE: {
        if (depth >= MAX_DEPTH) {
            lua_pushfstring(L, "%s: tables nested deeper than %d levels (a cycle?)", what,
                            MAX_DEPTH);
            return 0;
        }
        /* Each level holds a key and a value on the stack: 32 levels are more
         * than the 20 slots a C function is given. Not luaL_checkstack: a
         * worker encodes its result outside any protected call. */
        if (!lua_checkstack(L, 4)) {
            lua_pushfstring(L, "%s: tables nested too deep for the Lua stack", what);
            return 0;
        }
        if (!blob_tag(b, V_TABLE)) { lua_pushstring(L, "out of memory"); return 0; }
        size_t count_at = b->len;
        int64_t count = 0;
        if (!blob_put(b, &count, sizeof count)) { lua_pushstring(L, "out of memory"); return 0; }
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (!encode(L, -2, b, depth + 1, what) || !encode(L, -1, b, depth + 1, what)) {
                lua_replace(L, -3); /* keep the message, drop key and value */
                lua_pop(L, 1);
                return 0;
            }
            lua_pop(L, 1);
            count++;
        }
        memcpy(b->bytes + count_at, &count, sizeof count);
        return 1;
    }
    case LUA_TUSERDATA: {
        mrt_tensor *t = mrt_lua_test_tensor(L, idx);
        if (t && t->storage) {
            if (b->ntensors == b->cap_tensors) {
                int cap = b->cap_tensors ? 2 * b->cap_tensors : 8;
                mrt_tensor *nt = realloc(b->tensors, (size_t)cap * sizeof *nt);
                if (!nt) { lua_pushstring(L, "out of memory"); return 0; }
                b->tensors = nt;
                b->cap_tensors = cap;
            }
            mrt_tensor *slot = &b->tensors[b->ntensors];
            memset(slot, 0, sizeof *slot);
            mrt_tensor_share(slot, t);
            int32_t i = b->ntensors++;
            if (blob_tag(b, V_TENSOR) && blob_put(b, &i, sizeof i)) return 1;
            lua_pushstring(L, "out of memory");
            return 0;
        }
        lua_pushfstring(L, "%s: cannot pass a %s between worker states (only tensors, tables, "
                        "strings, numbers and booleans)", what, t ? "released tensor" : "userdata");
        return 0;
    }
    default:
        lua_pushfstring(L, "%s: cannot pass a %s between worker states (only tensors, tables, "
                        "strings, numbers and booleans)", what, luaL_typename(L, idx));
        return 0;
    }
}

/* Pushes the value serialized at *pos; tensors become new userdata holding
 * their own references. */
static void decode(lua_State *L, const blob *b, size_t *pos)
{
    char tag = b->bytes[(*pos)++];
    switch (tag) {
    case V_NIL: lua_pushnil(L); return;
    case V_FALSE: lua_pushboolean(L, 0); return;
    case V_TRUE: lua_pushboolean(L, 1); return;
    case V_INT: {
        lua_Integer v;
        memcpy(&v, b->bytes + *pos, sizeof v);
        *pos += sizeof v;
        lua_pushinteger(L, v);
        return;
    }
    case V_NUM: {
        lua_Number v;
        memcpy(&v, b->bytes + *pos, sizeof v);
        *pos += sizeof v;
        lua_pushnumber(L, v);
        return;
    }
    case V_STR: {
        size_t n;
        memcpy(&n, b->bytes + *pos, sizeof n);
        *pos += sizeof n;
        lua_pushlstring(L, b->bytes + *pos, n);
        *pos += n;
        return;
    }
    case V_TABLE: {
        int64_t count;
        memcpy(&count, b->bytes + *pos, sizeof count);
        *pos += sizeof count;
        lua_createtable(L, 0, 0);
        luaL_checkstack(L, 4, "decoding a worker value");
        for (int64_t i = 0; i < count; i++) {
            decode(L, b, pos);
            decode(L, b, pos);
            lua_rawset(L, -3);
        }
        return;
    }
    case V_TENSOR: {
        int32_t i;
        memcpy(&i, b->bytes + *pos, sizeof i);
        *pos += sizeof i;
        mrt_tensor *t = mrt_lua_push_tensor(L);
        mrt_tensor_share(t, &b->tensors[i]);
        return;
    }
    }
}

/* ---- the pool ------------------------------------------------------------ */

/* What every worker starts from (read-only once threads run). */
typedef struct {
    char *module, *path, *cpath;
    blob config;
} pool_ctx;

typedef struct {
    mrt_pool *pool; /* NULL once closed */
    pool_ctx ctx;
    int open;
} pool_ud;

static int worker_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int is_callable(lua_State *L, int idx)
{
    if (lua_isfunction(L, idx)) return 1;
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL) return 0;
    lua_pop(L, 1);
    return 1;
}

/* Builds the worker's state and its job function (left at stack index 2,
 * the traceback handler at 1). Returns NULL or an error message. */
static char *worker_setup(const pool_ctx *p, lua_State *L, int index)
{
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, p->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, p->cpath);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    mrt_lua_preload(L);
    lua_pushcfunction(L, worker_traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, p->module);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) return strdup(lua_tostring(L, -1));
    if (!is_callable(L, -1)) {
        lua_pushfstring(L, "module '%s' must return a function factory(config, worker_index) "
                        "that returns the job function, got a %s", p->module, luaL_typename(L, -1));
        return strdup(lua_tostring(L, -1));
    }
    size_t pos = 0;
    decode(L, &p->config, &pos);
    lua_pushinteger(L, index);
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) return strdup(lua_tostring(L, -1));
    if (!is_callable(L, -1)) {
        lua_pushfstring(L, "the factory of module '%s' must return the job function, got a %s",
                        p->module, luaL_typename(L, -1));
        return strdup(lua_tostring(L, -1));
    }
    return NULL;
}

static char *worker_start(void *ctx, int index, void **state)
{
    lua_State *L = luaL_newstate();
    *state = L;
    return L ? worker_setup(ctx, L, index) : strdup("cannot create a Lua state");
}

static char *worker_run(void *state, void *arg, void **result)
{
    lua_State *L = state;
    blob *args = arg;
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    size_t pos = 0;
    decode(L, args, &pos);
    blob_free(args);
    free(args);
    char *error = NULL;
    blob *out = calloc(1, sizeof *out);
    if (!out) error = strdup("out of memory");
    else if (lua_pcall(L, 1, 1, 1) != LUA_OK) error = strdup(lua_tostring(L, -1));
    else if (!encode(L, -1, out, 0, "job result")) error = strdup(lua_tostring(L, -1));
    if (error && out) {
        blob_free(out);
        free(out);
        out = NULL;
    }
    lua_settop(L, 2);
    /* Drop the job's garbage now: its tensors hold the cores' memory. */
    lua_gc(L, LUA_GCCOLLECT);
    *result = out;
    return error;
}

static void worker_stop(void *state)
{
    if (state) lua_close(state);
}

static void free_blob(void *payload)
{
    blob_free(payload);
    free(payload);
}

static const mrt_pool_ops lua_pool_ops = {worker_start, worker_run, worker_stop, free_blob};

/* Stops and joins the workers, frees every pending job; idempotent. */
static void pool_close(pool_ud *u)
{
    mrt_pool_free(u->pool);
    u->pool = NULL;
    blob_free(&u->ctx.config);
    free(u->ctx.module);
    free(u->ctx.path);
    free(u->ctx.cpath);
    u->ctx.module = u->ctx.path = u->ctx.cpath = NULL;
    u->open = 0;
}

static pool_ud *check_pool(lua_State *L)
{
    pool_ud *u = luaL_checkudata(L, 1, WORKERS_MT);
    if (!u->open) luaL_error(L, "workers: the pool has been closed");
    return u;
}

static const char *package_field(lua_State *L, const char *name)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, name);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 2); /* the string stays alive: package.<name> still refers to it */
    return s ? s : "";
}

/* workers.Pool{module = name, config = value, workers = n} */
static int w_pool(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "module");
    const char *module = luaL_optstring(L, -1, NULL);
    if (!module) luaL_error(L, "workers.Pool: 'module' (the job module's name) is required");
    lua_getfield(L, 1, "workers");
    lua_Integer n = luaL_optinteger(L, -1, 1);
    lua_getfield(L, 1, "config");
    int config_idx = lua_gettop(L);

    pool_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->open = 1;
    luaL_setmetatable(L, WORKERS_MT);
    if (!encode(L, config_idx, &u->ctx.config, 0, "workers.Pool config")) lua_error(L);
    u->ctx.module = strdup(module);
    u->ctx.path = strdup(package_field(L, "path"));
    u->ctx.cpath = strdup(package_field(L, "cpath"));
    if (!u->ctx.module || !u->ctx.path || !u->ctx.cpath)
        luaL_error(L, "workers.Pool: out of memory");
    /* Saturated to int: the core refuses what is out of range, naming it. */
    int workers = n < 0 ? 0 : n > INT_MAX ? INT_MAX : (int)n;
    if (mrt_pool_new(&lua_pool_ops, &u->ctx, workers, &u->pool) != MRT_OK) {
        if (workers >= 1 && workers <= MRT_POOL_MAX_WORKERS)
            lua_pushfstring(L, "workers: starting module '%s' failed: %s", module, mrt_last_error());
        else
            lua_pushstring(L, mrt_last_error());
        pool_close(u);
        lua_error(L);
    }
    return 1;
}

/* pool:submit(id, args) */
static int w_submit(lua_State *L)
{
    pool_ud *u = check_pool(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    blob *args = calloc(1, sizeof *args);
    if (!args) return luaL_error(L, "workers: out of memory");
    if (!encode(L, 3, args, 0, "job argument")) {
        free_blob(args);
        return lua_error(L);
    }
    mrt_status st = mrt_pool_submit(u->pool, (int64_t)id, args);
    if (st != MRT_OK) free_blob(args);
    mrt_lua_check(L, st);
    return 0;
}

/* pool:take(id) -> result; waits for job `id`, raises the job's error. */
static int w_take(lua_State *L)
{
    pool_ud *u = check_pool(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    void *result;
    char *error;
    mrt_lua_check(L, mrt_pool_take(u->pool, (int64_t)id, &result, &error));
    if (error) {
        lua_pushfstring(L, "worker job %d failed: %s", (int)id, error);
        free(error);
        return lua_error(L);
    }
    size_t pos = 0;
    luaL_checkstack(L, 8, "worker result");
    decode(L, result, &pos);
    free_blob(result);
    return 1;
}

static int w_close(lua_State *L)
{
    pool_close(luaL_checkudata(L, 1, WORKERS_MT));
    return 0;
}

static int w_tostring(lua_State *L)
{
    pool_ud *u = luaL_checkudata(L, 1, WORKERS_MT);
    if (u->open) lua_pushfstring(L, "workers.Pool(%d workers)", mrt_pool_workers(u->pool));
    else lua_pushliteral(L, "workers.Pool(closed)");
    return 1;
}

/* In the caller's own state: the same serialization round trip a job's
 * argument and result go through (so workers = 0 behaves like workers > 0). */
static int w_roundtrip(lua_State *L)
{
    blob b = {0};
    if (!encode(L, 1, &b, 0, "workers.roundtrip")) {
        blob_free(&b);
        return lua_error(L);
    }
    size_t pos = 0;
    decode(L, &b, &pos);
    blob_free(&b);
    return 1;
}

/* ---- the shared cache ---------------------------------------------------- */

/* workers.cache_get(key) -> tensor or nil. The tensor is shared: treat it as
 * read-only (clone before writing into it). */
static int w_cache_get(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    mrt_tensor *t = mrt_lua_push_tensor(L);
    if (!mrt_cache_get(key, n, t)) lua_pushnil(L);
    return 1;
}

/* workers.cache_put(key, tensor): keeps a reference; a key already present
 * keeps its first tensor. */
static int w_cache_put(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    mrt_lua_check(L, mrt_cache_put(key, n, mrt_lua_check_tensor(L, 2)));
    return 0;
}

static int w_cache_clear(lua_State *L)
{
    mrt_cache_clear();
    return 0;
}

static int w_cache_stats(lua_State *L)
{
    mrt_cache_stats s;
    mrt_cache_get_stats(&s);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)s.entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)s.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)s.hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)s.misses);
    lua_setfield(L, -2, "misses");
    return 1;
}

static const luaL_Reg pool_methods[] = {
    {"submit", w_submit}, {"take", w_take}, {"close", w_close}, {NULL, NULL}};

static const luaL_Reg workers_funcs[] = {
    {"Pool", w_pool}, {"roundtrip", w_roundtrip},
    {"cache_get", w_cache_get}, {"cache_put", w_cache_put},
    {"cache_clear", w_cache_clear}, {"cache_stats", w_cache_stats},
    {NULL, NULL}};

int luaopen_machrt_workers(lua_State *L)
{
    mrt_lua_open_tensor(L);
    if (luaL_newmetatable(L, WORKERS_MT)) {
        luaL_newlib(L, pool_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, w_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, w_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, w_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, workers_funcs);
    return 1;
}
