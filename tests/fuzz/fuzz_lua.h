/* The input-feeding half of a fuzz target whose check is a Lua function:
 * the check (kept in the registry as "fuzz_check" by the target's setup)
 * gets the input as a string and returns nil when the input was handled as
 * it must be, or a message; a message or an error is a finding. */
#ifndef MACHRT_FUZZ_LUA_H
#define MACHRT_FUZZ_LUA_H

#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void fuzz_lua_run_check(lua_State *L, const char *target, const uint8_t *data, size_t size)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isnil(L, -1)) {
        fprintf(stderr, "%s: %s\n", target, lua_tostring(L, -1));
        abort();
    }
    lua_pop(L, 1);
    /* Each input leaves garbage; collect it so memory stays flat. */
    lua_gc(L, LUA_GCSTEP, 0);
}

#endif
