/* libFuzzer target: the CSV reader (machrt.data.csv, Lua), in a Lua state
 * set up as the machrt host sets it up. Any input must either parse or fail
 * with a message naming the source; a parsed frame written back with
 * csv.format must read back to the same header and cells. */
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
    "local csv = require 'machrt.data.csv'\n"
    "return function(text)\n"
    "  local ok, df = pcall(csv.parse, text, { name = 'fuzz.csv' })\n"
    "  if not ok then\n"
    "    if type(df) == 'string' and df:find('fuzz.csv', 1, true) then return nil end\n"
    "    return 'an error that does not name the source: ' .. tostring(df)\n"
    "  end\n"
    "  local written = csv.format(df)\n"
    "  local ok2, again = pcall(csv.parse, written, { name = 'again.csv' })\n"
    "  if not ok2 then return 'csv.format wrote what csv.parse refuses: ' .. tostring(again) end\n"
    "  if #again.columns ~= #df.columns or again:nrows() ~= df:nrows() then\n"
    "    return string.format('round trip: %d x %d became %d x %d', df:nrows(), #df.columns,\n"
    "                         again:nrows(), #again.columns)\n"
    "  end\n"
    "  for j, name in ipairs(df.columns) do\n"
    "    if again.columns[j] ~= name then return ('round trip: column %d %q became %q'):format(j, name, again.columns[j]) end\n"
    "    for i = 1, df:nrows() do\n"
    "      if again.rows[i][j] ~= df.rows[i][j] then\n"
    "        return ('round trip: row %d, column %d %q became %q'):format(i, j, df.rows[i][j], again.rows[i][j])\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n";

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, "modules/?.lua;modules/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    mrt_lua_preload(L);
    if (luaL_dostring(L, CHECK) != LUA_OK) {
        fprintf(stderr, "fuzz_csv: cannot load machrt.data.csv (run from the repository root): %s\n",
                lua_tostring(L, -1));
        exit(1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) setup();
    fuzz_lua_run_check(L, "fuzz_csv", data, size);
    return 0;
}
