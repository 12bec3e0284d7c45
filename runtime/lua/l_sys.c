/* The `machrt.sys` module: what experiment scripts need from the system
 * beyond Lua's own io and os (as Lua keeps those apart from its other
 * libraries): whole-or-nothing file writes, folders, file facts, SHA-256
 * (runtime/sys/) and JSON (cJSON). Values cross between Lua tables and
 * cJSON trees here; the files live in the C core.
 *
 *   local sys = require "machrt.sys"
 *   sys.write_file(path, text); sys.mkdir(path); sys.stat(path) -> {size, mtime, is_dir}
 *   sys.read_file(path) -> text | nil, "cannot read <path>: <reason>"
 *   sys.read_json(path) -> value; raises "cannot read <path>: ..." or "<path>: invalid JSON ..." 
 *   sys.folder_state(path) -> "missing" | "empty" | "nonempty" (+ one name) | "file"
 *   sys.list_folder(path) -> {names, sorted}
 *   sys.lock(path) -> lock (lock:release(), or closed with it) | nil, holder PID
 *   sys.pid(); sys.process_alive(pid)
 *   sys.sha256_file(path) -> hex; sys.isatty(fd = 1)
 *   sys.json_encode(value, {indent = false}); sys.json_decode(text, name) */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "l_machrt.h"
#include "machrt/sys.h"

/* ---- files ------------------------------------------------------------------ */

static int s_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    mrt_lua_check(L, mrt_sys_write_file("sys.write_file", path, text, n));
    return 0;
}

/* Pushes the whole file as a string, or fail and a message (2 values).
 * The bytes go into a userdata sized by stat, so a Lua error (memory)
 * leaks nothing: the file is closed before any Lua call. */
static int push_file(lua_State *L, const char *path)
{
    struct stat st;
    const char *unreadable = stat(path, &st) != 0 ? strerror(errno) : S_ISDIR(st.st_mode) ? "a folder" : NULL;
    if (unreadable) {
        luaL_pushfail(L);
        lua_pushfstring(L, "cannot read %s: %s", path, unreadable);
        return 2;
    }
    size_t cap = (size_t)st.st_size;
    char *buf = lua_newuserdatauv(L, cap ? cap : 1, 0);
    FILE *f = fopen(path, "rb");
    const char *why = NULL;
    size_t got = 0;
    if (!f) {
        why = strerror(errno);
    } else {
        got = fread(buf, 1, cap, f);
        if (ferror(f)) why = "read error";
        else if (got < cap || fgetc(f) != EOF) why = "its size changed while it was read";
        fclose(f);
    }
    if (why) {
        luaL_pushfail(L);
        lua_pushfstring(L, "cannot read %s: %s", path, why);
        return 2;
    }
    lua_pushlstring(L, buf, got);
    return 1;
}

static int s_read_file(lua_State *L)
{
    return push_file(L, luaL_checkstring(L, 1));
}

static int s_sha256_file(lua_State *L)
{
    char hex[MRT_SHA256_HEX];
    mrt_lua_check(L, mrt_sys_sha256_file("sys.sha256_file", luaL_checkstring(L, 1), hex));
    lua_pushstring(L, hex);
    return 1;
}

/* sys.stat(path) -> {size =, mtime =, is_dir =} or nil, message */
static int s_stat(lua_State *L)
{
    mrt_file_stat st;
    if (mrt_sys_stat(luaL_checkstring(L, 1), &st) != MRT_OK) {
        lua_pushnil(L);
        lua_pushstring(L, mrt_last_error());
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)st.size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, st.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushboolean(L, st.is_dir);
    lua_setfield(L, -2, "is_dir");
    return 1;
}

static int s_mkdir(lua_State *L)
{
    mrt_lua_check(L, mrt_sys_mkdirs("sys.mkdir", luaL_checkstring(L, 1)));
    return 0;
}

static int s_folder_state(lua_State *L)
{
    static const char *const names[] = {"missing", "empty", "nonempty", "file"};
    mrt_folder_state state;
    char first[256];
    mrt_lua_check(L, mrt_sys_folder_state("sys.folder_state", luaL_checkstring(L, 1), &state,
                                          first, sizeof first));
    lua_pushstring(L, names[state]);
    if (state != MRT_FOLDER_NONEMPTY) return 1;
    lua_pushstring(L, first);
    return 2;
}

static int s_list_folder(lua_State *L)
{
    char **names;
    int n;
    mrt_lua_check(L, mrt_sys_list_folder("sys.list_folder", luaL_checkstring(L, 1), &names, &n));
    if (!lua_checkstack(L, 2)) {
        mrt_sys_free_names(names, n);
        return luaL_error(L, "sys.list_folder: out of memory");
    }
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    mrt_sys_free_names(names, n);
    return 1;
}

/* ---- locks ------------------------------------------------------------------ */

#define LOCK_MT "machrt.sys.lock"

static int lock_release(lua_State *L)
{
    int *fd = luaL_checkudata(L, 1, LOCK_MT);
    mrt_sys_unlock_file(*fd);
    *fd = -1;
    return 0;
}

/* sys.lock(path) -> lock, or nil and the holder's PID (0: unknown) */
static int s_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int *fd = lua_newuserdatauv(L, sizeof *fd, 0);
    *fd = -1;
    if (luaL_newmetatable(L, LOCK_MT)) {
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__close");
        lua_newtable(L);
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "release");
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    long holder;
    mrt_lua_check(L, mrt_sys_lock_file("sys.lock", path, fd, &holder));
    if (*fd >= 0) return 1;
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)holder);
    return 2;
}

static int s_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int s_process_alive(lua_State *L)
{
    lua_pushboolean(L, mrt_sys_process_alive((long)luaL_checkinteger(L, 1)));
    return 1;
}

/* sys.isatty(fd = 1) */
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
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        /* cJSON strings end at the first zero byte: "a\0b" would be written as "a". */
        if (strlen(s) != len)
            luaL_error(L, "json_encode: a string%s%s holds a zero byte (JSON text cannot carry "
                       "it here)", key ? " at key " : "", key ? key : "");
        item = cJSON_CreateString(s);
        break;
    }
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
        size_t klen;
        const char *k = lua_tolstring(L, -1, &klen); /* converts the copy, not the key */
        if (strlen(k) != klen)
            luaL_error(L, "json_encode: a table key '%s...' holds a zero byte", k);
        add_json(L, -2, item, k, depth + 1);
        lua_pop(L, 2);
    }
    sort_object(L, item);
}

/* sys.json_encode(value, {indent = false}) -> text */
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

/* Pushes the value of the JSON text; errors name the source and offset. */
static int decode(lua_State *L, const char *text, size_t n, const char *name)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + n ? (long)(at - text) : -1;
        return luaL_error(L, "%s: invalid JSON near byte %d", name, (int)off);
    }
    /* cJSON stops after the first value: "{} x" or two objects one after
     * the other would otherwise be read as the first alone. */
    while (end && end < text + n && *end && strchr(" \t\r\n", *end)) end++;
    if (end && end < text + n) {
        cJSON_Delete(root);
        return luaL_error(L, "%s: invalid JSON near byte %d (text after the value)", name,
                          (int)(end - text));
    }
    push_json_box(L, root); /* freed by the collector, also if push_json raises */
    push_json(L, root);
    return 1;
}

/* sys.json_decode(text, name) -> value */
static int s_json_decode(lua_State *L)
{
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    return decode(L, text, n, luaL_optstring(L, 2, "JSON text"));
}

/* sys.read_json(path) -> value; a file that cannot be read, or is not
 * JSON, is an error that names it. */
static int s_read_json(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (push_file(L, path) == 2) return lua_error(L);
    size_t n;
    const char *text = lua_tolstring(L, -1, &n);
    return decode(L, text, n, path);
}

static const luaL_Reg sys_funcs[] = {
    {"write_file", s_write_file}, {"sha256_file", s_sha256_file}, {"stat", s_stat},
    {"mkdir", s_mkdir}, {"folder_state", s_folder_state}, {"isatty", s_isatty},
    {"list_folder", s_list_folder}, {"lock", s_lock}, {"pid", s_pid},
    {"process_alive", s_process_alive},
    {"read_file", s_read_file}, {"read_json", s_read_json},
    {"json_encode", s_json_encode}, {"json_decode", s_json_decode}, {NULL, NULL}};

int luaopen_machrt_sys(lua_State *L)
{
    luaL_checkversion(L);
    luaL_newlib(L, sys_funcs);
    return 1;
}
