/* What experiment scripts need from the system beyond Lua's own library:
 * atomic file writes, JSON (cJSON), terminal detection, file facts, and the
 * random generator's state and raw Philox blocks (for seeded streams that do
 * not disturb the default generator). Added to the `machrt` table. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include "l_machrt.h"
#include "machrt/rng.h"

/* ---- files ------------------------------------------------------------------ */

/* mt.write_file(path, text): the whole file or nothing under its final name
 * (temporary file in the same folder, fsync, rename). */
static int s_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, path);
    lua_pushfstring(L, ".tmp.%d", (int)getpid());
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    const char *tmp = lua_tostring(L, -1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return luaL_error(L, "cannot write %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return luaL_error(L, "cannot write %s: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "cannot write %s: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* mt.sha256_file(path) -> lowercase hex digest (OpenSSL's libcrypto). */
static int s_sha256_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) return luaL_error(L, "cannot read %s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(ctx, buf, n);
    int read_error = ferror(f);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (read_error) return luaL_error(L, "cannot read %s: read error", path);
    if (!ok) return luaL_error(L, "sha256 of %s failed", path);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    lua_pushlstring(L, hex, 2 * (size_t)len);
    return 1;
}

/* mt.stat(path) -> {size =, mtime =, is_dir =} or nil, message */
static int s_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + 1e-9 * (lua_Number)st.st_mtim.tv_nsec);
    lua_setfield(L, -2, "mtime");
    lua_pushboolean(L, S_ISDIR(st.st_mode));
    lua_setfield(L, -2, "is_dir");
    return 1;
}

/* mt.mkdir(path): creates the folder and its parents; fine if it exists. */
static int s_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n = strlen(path);
    char *buf = lua_newuserdatauv(L, n + 1, 0);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return luaL_error(L, "cannot create folder %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return luaL_error(L, "cannot create folder %s: a file of that name exists", path);
    return 0;
}

/* mt.isatty(fd = 1) */
static int s_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* ---- JSON ------------------------------------------------------------------- */

static int is_array(lua_State *L, int idx, lua_Integer *len)
{
    lua_Integer n = 0, count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        if (lua_tointeger(L, -1) > n) n = lua_tointeger(L, -1);
        count++;
    }
    *len = n;
    return n == count;
}

/* Every item is attached to its parent before its own children are built,
 * and the root lives in a box userdata, so a Lua error half-way leaks
 * nothing: the box's __gc frees what was built. */
#define JSON_BOX_MT "machrt.json_box"

static int json_box_gc(lua_State *L)
{
    cJSON **box = luaL_checkudata(L, 1, JSON_BOX_MT);
    cJSON_Delete(*box);
    *box = NULL;
    return 0;
}

static cJSON **push_json_box(lua_State *L, cJSON *root)
{
    cJSON **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, JSON_BOX_MT)) {
        lua_pushcfunction(L, json_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *box = root;
    if (!root) luaL_error(L, "json: out of memory");
    return box;
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Sorted keys: the same table always gives the same text. */
static void sort_object(lua_State *L, cJSON *obj)
{
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return;
    cJSON **items = lua_newuserdatauv(L, (size_t)n * sizeof *items, 0);
    int i = 0;
    for (cJSON *c = obj->child; c; c = c->next) items[i++] = c;
    qsort(items, (size_t)n, sizeof *items, by_key);
    for (i = 0; i < n; i++) {
        items[i]->prev = i > 0 ? items[i - 1] : items[n - 1]; /* cJSON: head->prev = tail */
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    obj->child = items[0];
    lua_pop(L, 1);
}

static void add_json(lua_State *L, int idx, cJSON *parent, const char *key, int depth)
{
    idx = lua_absindex(L, idx);
    cJSON *item = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: item = cJSON_CreateNull(); break;
    case LUA_TBOOLEAN: item = cJSON_CreateBool(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER: {
        double v = lua_tonumber(L, idx);
        /* JSON has no NaN or infinity: they become null. */
        item = isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
        break;
    }
    case LUA_TSTRING: item = cJSON_CreateString(lua_tostring(L, idx)); break;
    case LUA_TTABLE: {
        if (depth > 64) luaL_error(L, "json_encode: tables nested too deep (a cycle?)");
        lua_Integer n;
        /* An empty table is written as [] (our empty tables are lists). */
        item = is_array(L, idx, &n) ? cJSON_CreateArray() : cJSON_CreateObject();
        break;
    }
    default:
        luaL_error(L, "json_encode: cannot encode a %s%s%s", luaL_typename(L, idx),
                   key ? " at key " : "", key ? key : "");
    }
    if (!item) luaL_error(L, "json_encode: out of memory");
    if (key) cJSON_AddItemToObject(parent, key, item);
    else cJSON_AddItemToArray(parent, item);
    if (!cJSON_IsArray(item) && !cJSON_IsObject(item)) return;
    luaL_checkstack(L, 8, "json_encode");
    if (cJSON_IsArray(item)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            add_json(L, -1, item, NULL, depth + 1);
            lua_pop(L, 1);
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
            luaL_error(L, "json_encode: a table key of type %s", lua_typename(L, kt));
        lua_pushvalue(L, -2);
        const char *k = lua_tostring(L, -1); /* converts the copy, not the key */
        add_json(L, -2, item, k, depth + 1);
        lua_pop(L, 2);
    }
    sort_object(L, item);
}

/* mt.json_encode(value, {indent = false}) -> text */
static int s_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    int pretty = lua_istable(L, 2) && (lua_getfield(L, 2, "indent"), lua_toboolean(L, -1));
    cJSON **box = push_json_box(L, cJSON_CreateArray());
    add_json(L, 1, *box, NULL, 0);
    char *text = pretty ? cJSON_Print((*box)->child) : cJSON_PrintUnformatted((*box)->child);
    if (!text) return luaL_error(L, "json_encode: out of memory");
    lua_pushstring(L, text);
    cJSON_free(text);
    return 1;
}

static void push_json(lua_State *L, const cJSON *j)
{
    luaL_checkstack(L, 4, "json_decode");
    if (cJSON_IsNull(j)) lua_pushnil(L);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)v);
        else lua_pushnumber(L, v);
    } else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        lua_Integer i = 0;
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c);
            lua_rawseti(L, -2, ++i);
        }
    } else {
        lua_createtable(L, 0, cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c);
            lua_setfield(L, -2, c->string);
        }
    }
}

/* mt.json_decode(text, name) -> value; errors name the source and offset. */
static int s_json_decode(lua_State *L)
{
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "JSON text");
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + n ? (long)(at - text) : -1;
        return luaL_error(L, "%s: invalid JSON near byte %d", name, (int)off);
    }
    push_json_box(L, root); /* freed by the collector, also if push_json raises */
    push_json(L, root);
    return 1;
}

/* ---- random numbers --------------------------------------------------------- */

/* mt.philox(counter, key) -> four integers in [0, 2^32) */
static int s_philox(lua_State *L)
{
    uint32_t out[4];
    mrt_philox4x32((uint64_t)luaL_checkinteger(L, 1), (uint64_t)luaL_checkinteger(L, 2), out);
    for (int i = 0; i < 4; i++) lua_pushinteger(L, (lua_Integer)out[i]);
    return 4;
}

/* mt.rng_state() -> {seed =, offset =}; mt.set_rng_state(t): the default
 * generator, saved in checkpoints so a resumed run draws what it would have. */
static int s_rng_state(lua_State *L)
{
    mrt_rng *r = mrt_rng_default();
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)r->seed);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, (lua_Integer)r->offset);
    lua_setfield(L, -2, "offset");
    return 1;
}

static int s_set_rng_state(lua_State *L)
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

static const luaL_Reg system_funcs[] = {
    {"write_file", s_write_file}, {"sha256_file", s_sha256_file}, {"stat", s_stat}, {"mkdir", s_mkdir}, {"isatty", s_isatty},
    {"json_encode", s_json_encode}, {"json_decode", s_json_decode},
    {"philox", s_philox}, {"rng_state", s_rng_state}, {"set_rng_state", s_set_rng_state},
    {NULL, NULL}};

void mrt_lua_system(lua_State *L) { luaL_setfuncs(L, system_funcs, 0); }
