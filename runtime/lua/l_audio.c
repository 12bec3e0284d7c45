/* The `machrt.audio` module: decoding/encoding and resampling
 * (l_audio_io.c), the spectral front end (l_audio_spectral.c) and the
 * machine-sound synthesizer (l_synth.c). */
#include "l_machrt.h"

int luaopen_machrt_audio(lua_State *L)
{
    luaL_checkversion(L);
    mrt_lua_open_tensor(L);
    lua_newtable(L);
    mrt_lua_audio_io(L);
    mrt_lua_audio_spectral(L);
    mrt_lua_audio_synth(L);
    return 1;
}
