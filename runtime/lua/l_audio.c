/* The `machrt.audio` module: decoding/encoding and resampling
 * (l_audio_io.c) and the spectral front end (l_audio_spectral.c). The
 * synthesizer is a module of its own (machrt.synth). */
#include "l_machrt.h"

int luaopen_machrt_audio(lua_State *L)
{
    luaL_checkversion(L);
    mrt_lua_open_tensor(L);
    lua_newtable(L);
    mrt_lua_audio_io(L);
    mrt_lua_audio_spectral(L);
    return 1;
}
