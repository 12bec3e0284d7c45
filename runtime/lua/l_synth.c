/* machrt.audio: the machine-sound synthesizer (runtime/audio/synth*.c) and
 * the two folder helpers scripts/synth.lua needs (plain Lua has no mkdir or
 * directory listing).
 *
 *   audio.synth_types()                 --> {"fan", "pump", "slider", "valve"}
 *   audio.synth_clip{type = "fan", model_id = 0, condition = "normal",
 *                    snr_db = 0, channels = 1, seed = 1, index = 0}
 *                                       --> mix, machine, noise ({channels, 160000})
 *   audio.synth_write(list, {threads = n})  -- list of clip tables with `path`
 *   audio.synth_folder_state(path)      --> "missing" | "empty" | "nonempty" | "file"
 *                                           (+ one entry's name when nonempty)
 *   audio.synth_mkdirs(path)
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "l_machrt.h"
#include "machrt/synth.h"

static const char *const clip_keys[] = {"type", "model_id", "condition", "snr_db", "channels",
                                        "seed", "index", "path", NULL};

/* Raises an error naming `op` unless every key of the table at idx is one
 * of clip_keys (`path` only when allowed): a misspelt key must not be
 * silently ignored. */
static void check_keys(lua_State *L, int idx, const char *op, int allow_path)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; clip_keys[i] && !ok; i++)
                ok = strcmp(k, clip_keys[i]) == 0 && (allow_path || strcmp(k, "path") != 0);
        }
        if (!ok)
            luaL_error(L, "%s: unknown key '%s' (type, model_id, condition, snr_db, channels, "
                       "seed, index%s)", op, luaL_tolstring(L, -1, NULL),
                       allow_path ? ", path" : "");
    }
}

static lua_Integer int_field(lua_State *L, int idx, const char *op, const char *key,
                             lua_Integer dflt, lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = dflt;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        int ok = 0;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < lo || v > hi)
            luaL_error(L, "%s: '%s' must be an integer in %I..%I, got %s", op, key, lo, hi,
                       luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    return v;
}

/* Reads the clip table at idx into *c. */
static void check_clip(lua_State *L, int idx, const char *op, int allow_path, mrt_synth_clip *c)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    check_keys(L, idx, op, allow_path);
    memset(c, 0, sizeof *c);
    if (lua_getfield(L, idx, "type") != LUA_TSTRING)
        luaL_error(L, "%s: 'type' must be a machine type (fan, pump, slider, valve), got a %s", op,
                   luaL_typename(L, -1));
    c->type = mrt_synth_type_from_name(lua_tostring(L, -1));
    if (c->type < 0)
        luaL_error(L, "%s: unknown machine type '%s' (fan, pump, slider, valve)", op,
                   lua_tostring(L, -1));
    lua_pop(L, 1);
    c->model_id = (int)int_field(L, idx, op, "model_id", 0, 0, 99);
    int t = lua_getfield(L, idx, "condition");
    const char *cond = t == LUA_TNIL ? "normal" : lua_tostring(L, -1);
    if (t != LUA_TNIL && t != LUA_TSTRING) cond = NULL;
    if (!cond || (strcmp(cond, "normal") != 0 && strcmp(cond, "abnormal") != 0))
        luaL_error(L, "%s: 'condition' must be \"normal\" or \"abnormal\", got %s", op,
                   luaL_tolstring(L, -1, NULL));
    c->abnormal = strcmp(cond, "abnormal") == 0;
    lua_pop(L, 1);
    t = lua_getfield(L, idx, "snr_db");
    if (t != LUA_TNIL && t != LUA_TNUMBER)
        luaL_error(L, "%s: 'snr_db' must be a number, got a %s", op, luaL_typename(L, -1));
    c->snr_db = t == LUA_TNIL ? 0.0 : lua_tonumber(L, -1);
    lua_pop(L, 1);
    c->channels = (int)int_field(L, idx, op, "channels", 1, 1, MRT_SYNTH_MAX_CHANNELS);
    c->seed = (uint64_t)int_field(L, idx, op, "seed", 1, 0, LUA_MAXINTEGER);
    c->index = (uint64_t)int_field(L, idx, op, "index", 0, 0, LUA_MAXINTEGER);
    mrt_lua_check(L, mrt_synth_check(op, c));
}

static int s_types(lua_State *L)
{
    lua_createtable(L, MRT_SYNTH_NTYPES, 0);
    for (int t = 0; t < MRT_SYNTH_NTYPES; t++) {
        lua_pushstring(L, mrt_synth_type_name(t));
        lua_rawseti(L, -2, t + 1);
    }
    return 1;
}

static int s_clip(lua_State *L)
{
    mrt_synth_clip c;
    check_clip(L, 1, "audio.synth_clip", 0, &c);
    int64_t shape[2] = {c.channels, MRT_SYNTH_FRAMES};
    mrt_tensor *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = mrt_lua_push_tensor(L);
        mrt_lua_check(L, mrt_tensor_alloc_uninit(t[i], MRT_F32, 2, shape));
    }
    mrt_lua_check(L, mrt_synth_render(&c, mrt_f32(t[0]), mrt_f32(t[1]), mrt_f32(t[2])));
    return 3;
}

static int s_write(lua_State *L)
{
    const char *op = "audio.synth_write";
    luaL_checktype(L, 1, LUA_TTABLE);
    int threads = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "threads") != 0)
                luaL_error(L, "%s: unknown option '%s' (options: threads)", op,
                           luaL_tolstring(L, -1, NULL));
        }
        threads = (int)int_field(L, 2, op, "threads", 0, 0, 4096);
    }
    lua_Integer n = luaL_len(L, 1);
    if (n > 1000000) luaL_error(L, "%s: at most 1000000 clips per call, got %I", op, n);
    /* Userdata-owned arrays: freed by the collector even when a check below
     * raises an error. */
    mrt_synth_clip *clips = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *clips, 0);
    const char **paths = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *paths, 0);
    /* Path strings stay alive in this table while the C side runs. */
    lua_createtable(L, (int)n, 0);
    int keep = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 1, i) != LUA_TTABLE)
            luaL_error(L, "%s: entry %I must be a clip table, got a %s", op, i,
                       luaL_typename(L, -1));
        int e = lua_gettop(L);
        check_clip(L, e, op, 1, &clips[i - 1]);
        if (lua_getfield(L, e, "path") != LUA_TSTRING)
            luaL_error(L, "%s: entry %I needs a 'path' string", op, i);
        paths[i - 1] = lua_tostring(L, -1);
        lua_rawseti(L, keep, i);
        lua_pop(L, 1);
    }
    mrt_lua_check(L, mrt_synth_write(clips, paths, (int)n, threads));
    return 0;
}

static int s_folder_state(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        /* A path running through a file cannot exist either: creating it
         * is what fails, with its own message. */
        if (errno == ENOENT || errno == ENOTDIR) {
            lua_pushliteral(L, "missing");
            return 1;
        }
        return luaL_error(L, "audio.synth_folder_state: %s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) {
        lua_pushliteral(L, "file");
        return 1;
    }
    DIR *d = opendir(path);
    if (!d) return luaL_error(L, "audio.synth_folder_state: cannot read folder %s: %s", path,
                              strerror(errno));
    struct dirent *e;
    char first[256] = "";
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(first, sizeof first, "%s", e->d_name);
        break;
    }
    closedir(d);
    if (!first[0]) {
        lua_pushliteral(L, "empty");
        return 1;
    }
    lua_pushliteral(L, "nonempty");
    lua_pushstring(L, first);
    return 2;
}

static int s_mkdirs(lua_State *L)
{
    mrt_lua_check(L, mrt_synth_mkdirs("audio.synth_mkdirs", luaL_checkstring(L, 1)));
    return 0;
}

void mrt_lua_audio_synth(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"synth_types", s_types}, {"synth_clip", s_clip}, {"synth_write", s_write},
        {"synth_folder_state", s_folder_state}, {"synth_mkdirs", s_mkdirs}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
