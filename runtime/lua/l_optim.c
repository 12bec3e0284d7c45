/* Bindings registered into their module by mrt_lua_optim (see l_machrt.h). */
#include "l_machrt.h"

void mrt_lua_optim(lua_State *L) { (void)L; }
