/* Bindings registered into their module by mrt_lua_nn (see l_machrt.h). */
#include "l_machrt.h"

void mrt_lua_nn(lua_State *L) { (void)L; }
