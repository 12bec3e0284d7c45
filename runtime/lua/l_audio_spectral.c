/* Bindings registered into their module by mrt_lua_audio_spectral (see l_machrt.h). */
#include "l_machrt.h"

void mrt_lua_audio_spectral(lua_State *L) { (void)L; }
