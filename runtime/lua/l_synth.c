/* The `machrt.synth_c` module: the machine-sound synthesizer
 * (runtime/synth/), for modules/machrt/synth.lua, which plans corpora and
 * re-exports these functions.
 *
 *   C.types()                  --> {"fan", "pump", "slider", "valve"}
 *   C.clip{type = "fan", model_id = 0, condition = "normal",
 *          fault_severity = 0, snr_db = 0, channels = 1, seed = 1, index = 0}
 *                              --> mix, machine, noise ({channels, 160000})
 *   C.write(list, {threads = n})   -- list of clip tables with `path` */
#include <string.h>
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/synth.h"

static const char *const CLIP_KEYS[] = {"type",   "model_id", "condition", "fault_severity",
                                        "snr_db", "channels", "seed",      "index", NULL};
static const char *const CLIP_KEYS_WITH_PATH[] = {
    "type", "model_id", "condition", "fault_severity", "snr_db", "channels", "seed", "index",
    "path", NULL};
static const char *const CONDITIONS[] = {"normal", "abnormal", NULL};

/* Reads the clip table at idx into *c. */
static void check_clip(lua_State *L, int idx, const char *op, int allow_path, mrt_synth_clip *c)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    mrt_aux_check_keys(L, idx, op, allow_path ? CLIP_KEYS_WITH_PATH : CLIP_KEYS);
    memset(c, 0, sizeof *c);
    if (lua_getfield(L, idx, "type") != LUA_TSTRING)
        luaL_error(L, "%s: type must be a machine type (fan, pump, slider, valve), got a %s", op,
                   luaL_typename(L, -1));
    c->type = mrt_synth_type_from_name(lua_tostring(L, -1));
    if (c->type < 0)
        luaL_error(L, "%s: unknown machine type '%s' (fan, pump, slider, valve)", op,
                   lua_tostring(L, -1));
    lua_pop(L, 1);
    c->model_id = (int)mrt_aux_opt_integer(L, idx, op, "model_id", 0, 0, 99);
    c->abnormal = mrt_aux_opt_choice(L, idx, op, "condition", CONDITIONS, 0, NULL);
    /* An abnormal clip without a severity gets the gross fault. */
    c->fault_severity = mrt_aux_opt_number(L, idx, op, "fault_severity", c->abnormal ? 1.0 : 0.0);
    c->snr_db = mrt_aux_opt_number(L, idx, op, "snr_db", 0.0);
    c->channels = (int)mrt_aux_opt_integer(L, idx, op, "channels", 1, 1, MRT_SYNTH_MAX_CHANNELS);
    c->seed = (uint64_t)mrt_aux_opt_integer(L, idx, op, "seed", 1, 0, LUA_MAXINTEGER);
    c->index = (uint64_t)mrt_aux_opt_integer(L, idx, op, "index", 0, 0, LUA_MAXINTEGER);
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
    check_clip(L, 1, "synth.clip", 0, &c);
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
    static const char *const OPTIONS[] = {"threads", NULL};
    const char *op = "synth.write";
    luaL_checktype(L, 1, LUA_TTABLE);
    mrt_aux_check_options(L, 2, op, OPTIONS);
    int threads = (int)mrt_aux_opt_integer(L, 2, op, "threads", 0, 0, 4096);
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

int luaopen_machrt_synth_c(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"types", s_types}, {"clip", s_clip}, {"write", s_write}, {NULL, NULL}};
    luaL_checkversion(L);
    mrt_lua_open_tensor(L);
    luaL_newlib(L, fns);
    return 1;
}
