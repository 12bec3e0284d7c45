/* machrt.workers: a pool of threads, each with its own Lua state, that run
 * a scripted job function (the data loader's workers).
 *
 * Lua states are not thread-safe, so a worker never touches the caller's
 * state: it builds its own (standard libraries, the caller's package paths,
 * machrt's C modules preloaded), requires a module that returns a factory,
 * calls factory(config) once to get its job function, then runs jobs from a
 * queue. Job arguments and results cross between states as plain values
 * (nil, booleans, numbers, strings, tables of them) and tensors; a tensor
 * crosses by reference (its storage refcount is atomic), not by copy.
 *
 * Results are kept per job id, so the caller takes them in the order it
 * chooses, whatever order the workers finish in: a batch's content depends
 * only on its job, never on which worker ran it or when.
 *
 * The process-wide waveform cache lives here too (cache_get/cache_put): the
 * workers of one pool, and pools of later epochs, share it. */
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "l_machrt.h"

#define WORKERS_MT "machrt.workers.Pool"
#define MAX_WORKERS 64
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

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct job {
    lua_Integer id;
    int state;
    blob args;       /* the job's argument */
    blob result;     /* filled by the worker */
    char *error;     /* set instead of result when the job raised */
    struct job *next;
} job;

typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work_ready, result_ready;
    job *jobs, *jobs_tail; /* submitted and not yet taken, in submission order */
    int nworkers, started, ready, stopping, open;
    char *init_error;             /* the first worker start-up failure */
    pthread_t threads[MAX_WORKERS];
    /* What every worker starts from (read-only once threads run). */
    char *module, *path, *cpath;
    blob config;
} pool;

typedef struct worker_arg {
    pool *p;
    int index;
} worker_arg;

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

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
static char *worker_setup(pool *p, lua_State *L, int index)
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
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) return dup_string(lua_tostring(L, -1));
    if (!is_callable(L, -1)) {
        lua_pushfstring(L, "module '%s' must return a function factory(config, worker_index) "
                        "that returns the job function, got a %s", p->module, luaL_typename(L, -1));
        return dup_string(lua_tostring(L, -1));
    }
    size_t pos = 0;
    decode(L, &p->config, &pos);
    lua_pushinteger(L, index);
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) return dup_string(lua_tostring(L, -1));
    if (!is_callable(L, -1)) {
        lua_pushfstring(L, "the factory of module '%s' must return the job function, got a %s",
                        p->module, luaL_typename(L, -1));
        return dup_string(lua_tostring(L, -1));
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    pool *p = wa->p;
    int index = wa->index;
    free(wa);
    /* Workers overlap with the training step, which owns the cores'
     * OpenMP teams: a worker's own parallel regions run on one thread. */
    omp_set_num_threads(1);
    lua_State *L = luaL_newstate();
    char *err = L ? worker_setup(p, L, index) : dup_string("cannot create a Lua state");
    pthread_mutex_lock(&p->lock);
    if (err && !p->init_error) p->init_error = err;
    else free(err);
    p->ready++;
    pthread_cond_broadcast(&p->result_ready);
    int failed = p->init_error != NULL;
    pthread_mutex_unlock(&p->lock);
    if (failed) {
        if (L) lua_close(L);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&p->lock);
        job *j = NULL;
        while (!p->stopping) {
            for (j = p->jobs; j && j->state != JOB_QUEUED; j = j->next) {}
            if (j) break;
            pthread_cond_wait(&p->work_ready, &p->lock);
        }
        if (p->stopping) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&p->lock);

        lua_settop(L, 2);
        lua_pushvalue(L, 2);
        size_t pos = 0;
        decode(L, &j->args, &pos);
        blob_free(&j->args);
        if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
            j->error = dup_string(lua_tostring(L, -1));
        } else if (!encode(L, -1, &j->result, 0, "job result")) {
            j->error = dup_string(lua_tostring(L, -1));
            blob_free(&j->result);
        }
        lua_settop(L, 2);
        /* Drop the job's garbage now: its tensors hold the cores' memory. */
        lua_gc(L, LUA_GCCOLLECT);

        pthread_mutex_lock(&p->lock);
        j->state = JOB_DONE;
        pthread_cond_broadcast(&p->result_ready);
        pthread_mutex_unlock(&p->lock);
    }
    lua_close(L);
    return NULL;
}

static void job_free(job *j)
{
    blob_free(&j->args);
    blob_free(&j->result);
    free(j->error);
    free(j);
}

/* Stops and joins the workers, frees every pending job; idempotent. */
static void pool_close(pool *p)
{
    if (!p->open) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    for (job *j = p->jobs, *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
    p->jobs = p->jobs_tail = NULL;
    blob_free(&p->config);
    free(p->module);
    free(p->path);
    free(p->cpath);
    free(p->init_error);
    p->module = p->path = p->cpath = p->init_error = NULL;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work_ready);
    pthread_cond_destroy(&p->result_ready);
    p->open = 0;
}

static pool *check_pool(lua_State *L)
{
    pool *p = luaL_checkudata(L, 1, WORKERS_MT);
    if (!p->open) luaL_error(L, "workers: the pool has been closed");
    return p;
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
    if (n < 1 || n > MAX_WORKERS)
        luaL_error(L, "workers.Pool: 'workers' must be between 1 and %d, got %d", MAX_WORKERS,
                   (int)n);
    lua_getfield(L, 1, "config");
    int config_idx = lua_gettop(L);

    pool *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_ready, NULL);
    pthread_cond_init(&p->result_ready, NULL);
    p->open = 1;
    luaL_setmetatable(L, WORKERS_MT);
    if (!encode(L, config_idx, &p->config, 0, "workers.Pool config")) lua_error(L);
    p->module = dup_string(module);
    p->path = dup_string(package_field(L, "path"));
    p->cpath = dup_string(package_field(L, "cpath"));
    if (!p->module || !p->path || !p->cpath) luaL_error(L, "workers.Pool: out of memory");
    p->nworkers = (int)n;
    for (int i = 0; i < p->nworkers; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) luaL_error(L, "workers.Pool: out of memory");
        wa->p = p;
        wa->index = i + 1;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            luaL_error(L, "workers.Pool: cannot start worker thread %d", i + 1);
        }
        p->started++;
    }
    /* Start-up errors (a missing module, a failing factory) surface here. */
    pthread_mutex_lock(&p->lock);
    while (p->ready < p->started) pthread_cond_wait(&p->result_ready, &p->lock);
    char *err = p->init_error ? dup_string(p->init_error) : NULL;
    pthread_mutex_unlock(&p->lock);
    if (err) {
        lua_pushfstring(L, "workers: starting module '%s' failed: %s", module, err);
        free(err);
        pool_close(p);
        lua_error(L);
    }
    return 1;
}

/* pool:submit(id, args) */
static int w_submit(lua_State *L)
{
    pool *p = check_pool(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    job *j = calloc(1, sizeof *j);
    if (!j) luaL_error(L, "workers: out of memory");
    j->id = id;
    if (!encode(L, 3, &j->args, 0, "job argument")) {
        job_free(j);
        lua_error(L);
    }
    pthread_mutex_lock(&p->lock);
    for (job *k = p->jobs; k; k = k->next) {
        if (k->id == id) {
            pthread_mutex_unlock(&p->lock);
            job_free(j);
            return luaL_error(L, "workers: job %d was already submitted and not yet taken",
                              (int)id);
        }
    }
    if (p->jobs_tail) p->jobs_tail->next = j;
    else p->jobs = j;
    p->jobs_tail = j;
    pthread_cond_signal(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* pool:take(id) -> result; waits for job `id`, raises the job's error. */
static int w_take(lua_State *L)
{
    pool *p = check_pool(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    pthread_mutex_lock(&p->lock);
    job *found = p->jobs;
    while (found && found->id != id) found = found->next;
    if (!found) {
        pthread_mutex_unlock(&p->lock);
        return luaL_error(L, "workers: no job %d was submitted (or it was already taken)", (int)id);
    }
    while (found->state != JOB_DONE) pthread_cond_wait(&p->result_ready, &p->lock);
    /* The list may have changed while waiting: find the link only now. */
    job *prev = NULL;
    for (job *k = p->jobs; k != found; k = k->next) prev = k;
    if (prev) prev->next = found->next;
    else p->jobs = found->next;
    if (p->jobs_tail == found) p->jobs_tail = prev;
    pthread_mutex_unlock(&p->lock);
    if (found->error) {
        lua_pushfstring(L, "worker job %d failed: %s", (int)id, found->error);
        job_free(found);
        return lua_error(L);
    }
    size_t pos = 0;
    luaL_checkstack(L, 8, "worker result");
    decode(L, &found->result, &pos);
    job_free(found);
    return 1;
}

static int w_close(lua_State *L)
{
    pool *p = luaL_checkudata(L, 1, WORKERS_MT);
    pool_close(p);
    return 0;
}

static int w_tostring(lua_State *L)
{
    pool *p = luaL_checkudata(L, 1, WORKERS_MT);
    if (p->open) lua_pushfstring(L, "workers.Pool(%d workers)", p->nworkers);
    else lua_pushliteral(L, "workers.Pool(closed)");
    return 1;
}

/* In the caller's own state: the same serialization round trip a job's
 * argument and result go through (so workers = 0 behaves like workers > 0). */
static int w_roundtrip(lua_State *L)
{
    blob b = {0};
    if (!encode(L, 1, &b, 0, "value")) {
        blob_free(&b);
        return lua_error(L);
    }
    size_t pos = 0;
    decode(L, &b, &pos);
    blob_free(&b);
    return 1;
}

/* ---- the shared cache ---------------------------------------------------- */

typedef struct cache_entry {
    char *key;
    size_t keylen; /* keys are byte strings: they may hold NULs */
    mrt_tensor tensor;
    struct cache_entry *next;
} cache_entry;

#define CACHE_BUCKETS 4096
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cache_entry *cache_table[CACHE_BUCKETS];
static size_t cache_entries, cache_bytes;
static size_t cache_hits, cache_misses;

static unsigned hash_key(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (unsigned)(h % CACHE_BUCKETS);
}

static cache_entry *cache_find(const char *key, size_t n)
{
    for (cache_entry *e = cache_table[hash_key(key, n)]; e; e = e->next)
        if (e->keylen == n && memcmp(e->key, key, n) == 0) return e;
    return NULL;
}

/* workers.cache_get(key) -> tensor or nil. The tensor is shared: treat it as
 * read-only (clone before writing into it). */
static int w_cache_get(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    mrt_tensor *t = mrt_lua_push_tensor(L);
    pthread_mutex_lock(&cache_lock);
    cache_entry *e = cache_find(key, n);
    if (e) {
        mrt_tensor_share(t, &e->tensor);
        cache_hits++;
    } else {
        cache_misses++;
    }
    pthread_mutex_unlock(&cache_lock);
    if (!e) lua_pushnil(L);
    return 1;
}

/* workers.cache_put(key, tensor): keeps a reference; a key already present
 * keeps its first tensor (two workers decoding the same file agree). */
static int w_cache_put(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    mrt_tensor *t = mrt_lua_check_tensor(L, 2);
    cache_entry *fresh = calloc(1, sizeof *fresh);
    char *k = malloc(n + 1);
    if (!fresh || !k) {
        free(fresh);
        free(k);
        return luaL_error(L, "workers.cache_put: out of memory");
    }
    memcpy(k, key, n);
    k[n] = '\0';
    pthread_mutex_lock(&cache_lock);
    if (cache_find(key, n)) {
        pthread_mutex_unlock(&cache_lock);
        free(fresh);
        free(k);
        return 0;
    }
    fresh->key = k;
    fresh->keylen = n;
    mrt_tensor_share(&fresh->tensor, t);
    unsigned h = hash_key(key, n);
    fresh->next = cache_table[h];
    cache_table[h] = fresh;
    cache_entries++;
    cache_bytes += (size_t)mrt_tensor_numel(t) * mrt_dtype_size(t->dtype);
    pthread_mutex_unlock(&cache_lock);
    return 0;
}

static int w_cache_clear(lua_State *L)
{
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_BUCKETS; i++) {
        for (cache_entry *e = cache_table[i], *n; e; e = n) {
            n = e->next;
            mrt_tensor_release(&e->tensor);
            free(e->key);
            free(e);
        }
        cache_table[i] = NULL;
    }
    cache_entries = cache_bytes = cache_hits = cache_misses = 0;
    pthread_mutex_unlock(&cache_lock);
    return 0;
}

static int w_cache_stats(lua_State *L)
{
    pthread_mutex_lock(&cache_lock);
    size_t entries = cache_entries, bytes = cache_bytes, hits = cache_hits, misses = cache_misses;
    pthread_mutex_unlock(&cache_lock);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)misses);
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
