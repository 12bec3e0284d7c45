/* libFuzzer target: the JSON reader of machrt.sys (json_decode, which
 * read_json uses for config.json, metrics.json and scorer manifests), in a
 * Lua state set up as the machrt host sets it up. Any input must either
 * decode or fail with a message naming the source; a decoded value must
 * encode again (json_encode) or be refused with a message, and what was
 * encoded must decode again. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../runtime/lua/l_machrt.h"
#include "fuzz_lua.h"

/* Returns nil when the input behaved, else what went wrong. */
static const char *CHECK =
    "local sys = require 'machrt.sys'\n"
    "return function(text)\n"
    "  local ok, v = pcall(sys.json_decode, text, 'fuzz.json')\n"
    "  if not ok then\n"
    "    if type(v) == 'string' and v:find('fuzz.json', 1, true) then return nil end\n"
    "    return 'an error that does not name the source: ' .. tostring(v)\n"
    "  end\n"
    "  local ok2, s = pcall(sys.json_encode, v)\n"
    "  if not ok2 then\n"
    "    if type(s) == 'string' and s:find('json_encode', 1, true) then return nil end\n"
    "    return 'json_encode failed without naming itself: ' .. tostring(s)\n"
    "  end\n"
    "  local ok3, again = pcall(sys.json_decode, s, 'again.json')\n"
    "  if not ok3 then return 'json_encode wrote what json_decode refuses: ' .. tostring(again) end\n"
    "end\n";

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    mrt_lua_preload(L);
    if (luaL_dostring(L, CHECK) != LUA_OK) {
        fprintf(stderr, "fuzz_json: cannot load machrt.sys: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) setup();
    fuzz_lua_run_check(L, "fuzz_json", data, size);
    return 0;
}
