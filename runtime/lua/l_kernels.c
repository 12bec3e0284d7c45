/* The `machrt.kernels` module: the C layer kernels and optimizer updates
 * that the Lua modules machrt.nn and machrt.optim are built from. Not meant
 * for experiment scripts, which use those modules. */
#include "l_machrt.h"

int luaopen_machrt_kernels(lua_State *L)
{
    luaL_checkversion(L);
    mrt_lua_open_tensor(L);
    lua_newtable(L);
    mrt_lua_nn(L);
    mrt_lua_optim(L);
    mrt_lua_infer_plan(L);
    return 1;
}
