/* Argument helpers shared by the bindings (see l_aux.h). */
#include <math.h>
#include <string.h>
#include "l_aux.h"
#include "l_machrt.h"

/* Pushes "a<sep>b<sep>c" built from the NULL-terminated names, each wrapped
 * in `quote`. */
static const char *push_list(lua_State *L, const char *const names[], const char *sep,
                             const char *last_sep, const char *quote)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; names[i]; i++) {
        if (i) luaL_addstring(&b, names[i + 1] ? sep : last_sep);
        luaL_addstring(&b, quote);
        luaL_addstring(&b, names[i]);
        luaL_addstring(&b, quote);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

void mrt_aux_check_keys(lua_State *L, int idx, const char *op, const char *const keys[])
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option keys must be strings, got a %s key", op,
                       luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        int known = 0;
        for (int i = 0; keys[i] && !known; i++) known = strcmp(k, keys[i]) == 0;
        if (!known)
            luaL_error(L, "%s: unknown option '%s' (valid keys: %s)", op, k,
                       push_list(L, keys, ", ", ", ", ""));
    }
}

void mrt_aux_check_options(lua_State *L, int idx, const char *op, const char *const keys[])
{
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: expected a table of options, got a %s", op, luaL_typename(L, idx));
    mrt_aux_check_keys(L, idx, op, keys);
}

int mrt_aux_get_option(lua_State *L, int idx, const char *key)
{
    if (!lua_istable(L, idx)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, idx, key);
}

lua_Integer mrt_aux_opt_integer(lua_State *L, int idx, const char *op, const char *key,
                                lua_Integer def, lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = def;
    if (mrt_aux_get_option(L, idx, key) != LUA_TNIL) {
        /* Numbers only: a string that reads as one ("1") is a mistake. */
        int ok = lua_type(L, -1) == LUA_TNUMBER;
        v = lua_tointegerx(L, -1, ok ? &ok : NULL);
        if (!ok)
            luaL_error(L, "%s: %s must be an integer, got %s", op, key,
                       luaL_tolstring(L, -1, NULL));
        if (v < lo && lo == 1)
            luaL_error(L, "%s: %s must be positive, got %I", op, key, v);
        if (v < lo || v > hi)
            luaL_error(L, "%s: %s must be an integer in %I..%I, got %I", op, key, lo, hi, v);
    }
    lua_pop(L, 1);
    return v;
}

double mrt_aux_opt_number(lua_State *L, int idx, const char *op, const char *key, double def)
{
    double v = def;
    if (mrt_aux_get_option(L, idx, key) != LUA_TNIL) {
        int ok = lua_type(L, -1) == LUA_TNUMBER;
        v = lua_tonumber(L, -1);
        if (!ok || isnan(v))
            luaL_error(L, "%s: %s must be a number, got %s", op, key, luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    return v;
}

double mrt_aux_check_number_field(lua_State *L, int idx, const char *op, const char *key)
{
    if (mrt_aux_get_option(L, idx, key) == LUA_TNIL)
        luaL_error(L, "%s: %s must be a number, got nil", op, key);
    lua_pop(L, 1);
    return mrt_aux_opt_number(L, idx, op, key, 0.0);
}

int mrt_aux_opt_boolean(lua_State *L, int idx, const char *op, const char *key, int def)
{
    int v = def;
    int t = mrt_aux_get_option(L, idx, key);
    if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: %s must be a boolean, got %s", op, key, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return v;
}

const char *mrt_aux_opt_string(lua_State *L, int idx, const char *op, const char *key,
                               const char *def)
{
    const char *v = def;
    int t = mrt_aux_get_option(L, idx, key);
    if (t == LUA_TSTRING) v = lua_tostring(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: %s must be a string, got %s", op, key, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return v;
}

int mrt_aux_opt_choice(lua_State *L, int idx, const char *op, const char *key,
                       const char *const names[], int def, const char *expected)
{
    int v = def;
    int t = mrt_aux_get_option(L, idx, key);
    if (t != LUA_TNIL) {
        const char *s = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        v = -1;
        for (int i = 0; s && names[i]; i++)
            if (strcmp(s, names[i]) == 0) v = i;
        if (v < 0) {
            const char *got = s ? lua_pushfstring(L, "'%s'", s) : luaL_tolstring(L, -1, NULL);
            if (!expected) expected = push_list(L, names, ", ", " or ", "'");
            luaL_error(L, "%s: unknown %s %s (expected %s)", op, key, got, expected);
        }
    }
    lua_pop(L, 1);
    return v;
}

mrt_tensor *mrt_aux_opt_tensor(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx) || (lua_isboolean(L, idx) && !lua_toboolean(L, idx)))
        return NULL;
    return mrt_lua_check_tensor(L, idx);
}
