/* machrt.audio: info, load, save, resample, chunks (the C side is
 * runtime/audio/io.c, resample.c and chunks.c).
 *
 * Channels are 1-based here and 0-based in the core. Options tables are
 * checked key by key, so a misspelt option ("chanel") is an error rather
 * than a silently ignored setting. */
#include <math.h>
#include <string.h>
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/audio_io.h"

/* ---- argument helpers ------------------------------------------------------ */

/* A sample rate (Hz) from the stack value at `idx`: an integer-valued
 * number in [1, MRT_AUDIO_MAX_RATE]. */
static int check_rate(lua_State *L, int idx, const char *op, const char *what)
{
    int isnum = 0;
    lua_Integer v = lua_tointegerx(L, idx, &isnum);
    if (!isnum || v < 1 || v > MRT_AUDIO_MAX_RATE) {
        if (lua_type(L, idx) == LUA_TNUMBER)
            luaL_error(L, "%s: %s must be a positive integer number of Hz (at most %d), got %s",
                       op, what, MRT_AUDIO_MAX_RATE, luaL_tolstring(L, idx, NULL));
        luaL_error(L, "%s: %s must be a positive integer number of Hz, got a %s", op, what,
                   luaL_typename(L, idx));
    }
    return (int)v;
}

/* The resampler named by option 'resampler' of the options table at `idx`
 * (default libsoxr); `op` starts the error message. The names are in the
 * order of mrt_resampler. */
static mrt_resampler opt_resampler(lua_State *L, int idx, const char *op)
{
    static const char *const names[] = {"soxr", "torchaudio", NULL};
    return (mrt_resampler)mrt_aux_opt_choice(L, idx, op, "resampler", names,
                                             MRT_RESAMPLER_SOXR, NULL);
}

/* ---- audio.info ---------------------------------------------------------- */

static int a_info(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mrt_audio_info info;
    mrt_lua_check(L, mrt_audio_read_info(path, &info));
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, info.sample_rate);
    lua_setfield(L, -2, "sample_rate");
    lua_pushinteger(L, info.channels);
    lua_setfield(L, -2, "channels");
    lua_pushinteger(L, info.frames);
    lua_setfield(L, -2, "frames");
    lua_pushnumber(L, info.seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushstring(L, info.format);
    lua_setfield(L, -2, "format");
    lua_pushstring(L, info.encoding);
    lua_setfield(L, -2, "encoding");
    return 1;
}

/* ---- audio.load ------------------------------------------------------------ */

static int a_load(lua_State *L)
{
    static const char *const names[] = {"channel", "mono", "offset", "duration",
                                        "sample_rate", "resampler", NULL};
    const char *path = luaL_checkstring(L, 1);
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    mrt_aux_check_options(L, 2, "audio.load", names);
    int type = mrt_aux_get_option(L, 2, "channel");
    if (type != LUA_TNIL) {
        int isint = 0;
        lua_Integer c = lua_tointegerx(L, -1, &isint);
        if (!isint)
            luaL_error(L, "audio.load: %s: option 'channel' must be an integer (1-based), got "
                       "%s", path, luaL_tolstring(L, -1, NULL));
        /* Far outside any file's channel count; only keeps the int conversion
         * defined. Nearer values are checked against the file itself. */
        if (c < -MRT_AUDIO_MAX_CHANNELS || c > MRT_AUDIO_MAX_CHANNELS)
            luaL_error(L, "audio.load: %s: channel %I out of range (files have at most %d "
                       "channels)", path, c, MRT_AUDIO_MAX_CHANNELS);
        o.channel = (int)c - 1;
    }
    lua_pop(L, 1);
    o.mono = mrt_aux_opt_boolean(L, 2, "audio.load", "mono", 0);
    o.offset = mrt_aux_opt_number(L, 2, "audio.load", "offset", 0.0);
    o.duration = mrt_aux_opt_number(L, 2, "audio.load", "duration", INFINITY);
    if (mrt_aux_get_option(L, 2, "sample_rate") != LUA_TNIL) {
        int at = lua_gettop(L);
        const char *op = lua_pushfstring(L, "audio.load: %s", path);
        o.sample_rate = check_rate(L, at, op, "option 'sample_rate'");
    }
    lua_settop(L, 2);
    o.resampler = opt_resampler(L, 2, lua_pushfstring(L, "audio.load: %s", path));
    lua_settop(L, 2);
    mrt_tensor *t = mrt_lua_push_tensor(L);
    int sr = 0;
    mrt_lua_check(L, mrt_audio_load(path, &o, t, &sr));
    lua_pushinteger(L, sr);
    return 2;
}

/* ---- audio.load_pcm16, audio.unpack_pcm16 ---------------------------------------- */

/* audio.load_pcm16(path[, channel]) -> samples (an int64 tensor packing the
 * 16-bit samples, for a cache), or nil when the file is not 16-bit PCM.
 * channel is 1-based; nil for a mono file. */
static int a_load_pcm16(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int channel = MRT_AUDIO_ALL_CHANNELS;
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer c = luaL_checkinteger(L, 2);
        if (c < 1 || c > MRT_AUDIO_MAX_CHANNELS)
            luaL_error(L, "audio.load_pcm16: %s: channel %I out of range", path, c);
        channel = (int)c - 1;
    }
    mrt_tensor *t = mrt_lua_push_tensor(L);
    int is_pcm16 = 0;
    mrt_lua_check(L, mrt_audio_load_pcm16(path, channel, t, &is_pcm16));
    if (!is_pcm16) lua_pushnil(L);
    return 1;
}

/* audio.unpack_pcm16(samples[, {sample_rate =, resampler =, name =}]) ->
 * float32 wave, bit for bit what audio.load with that rate and resampler gives. */
static int a_unpack_pcm16(lua_State *L)
{
    static const char *const names[] = {"sample_rate", "resampler", "name", NULL};
    mrt_tensor *packed = mrt_lua_check_tensor(L, 1);
    mrt_aux_check_options(L, 2, "audio.unpack_pcm16", names);
    int rate = 0;
    if (mrt_aux_get_option(L, 2, "sample_rate") != LUA_TNIL)
        rate = check_rate(L, lua_gettop(L), "audio.unpack_pcm16", "option 'sample_rate'");
    lua_settop(L, 2);
    const char *name = mrt_aux_opt_string(L, 2, "audio.unpack_pcm16", "name", NULL);
    mrt_resampler how = opt_resampler(L, 2, "audio.unpack_pcm16");
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_audio_unpack_pcm16(packed, rate, how, name, r));
    return 1;
}

/* ---- audio.save ------------------------------------------------------------- */

static int a_save(lua_State *L)
{
    static const char *const names[] = {"float", "format", "encoding", NULL};
    const char *path = luaL_checkstring(L, 1);
    mrt_tensor *wave = mrt_lua_check_tensor(L, 2);
    int sr = check_rate(L, 3, "audio.save", "the sample rate (argument 3)");
    mrt_audio_save_opts o = {0};
    mrt_aux_check_options(L, 4, "audio.save", names);
    int as_float = mrt_aux_opt_boolean(L, 4, "audio.save", "float", 0);
    o.format = mrt_aux_opt_string(L, 4, "audio.save", "format", NULL);
    o.encoding = mrt_aux_opt_string(L, 4, "audio.save", "encoding", NULL);
    if (as_float) {
        if (o.encoding && strcmp(o.encoding, "float") != 0)
            luaL_error(L, "audio.save: %s: float = true contradicts encoding = '%s'", path,
                       o.encoding);
        o.encoding = "float";
    }
    mrt_lua_check(L, mrt_audio_save(path, wave, sr, &o));
    return 0;
}

/* ---- audio.resample ----------------------------------------------------------- */

static int a_resample(lua_State *L)
{
    mrt_tensor *wave = mrt_lua_check_tensor(L, 1);
    int from = check_rate(L, 2, "audio.resample", "'from' (argument 2)");
    int to = check_rate(L, 3, "audio.resample", "'to' (argument 3)");
    static const char *const names[] = {"resampler", NULL};
    mrt_aux_check_options(L, 4, "audio.resample", names);
    mrt_resampler how = opt_resampler(L, 4, "audio.resample");
    lua_settop(L, 4);
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_audio_resample(wave, from, to, how, r));
    return 1;
}

/* ---- audio.chunks -------------------------------------------------------------- */

/* Seconds -> frames at `sr`, rounded to the nearest frame; infinity (no
 * cap) and anything past int64 saturate. */
static int64_t seconds_to_frames(double seconds, int sr)
{
    double f = nearbyint(seconds * sr);
    return f >= 9.2e18 ? INT64_MAX : (int64_t)f;
}

static int a_chunks(lua_State *L)
{
    static const char *const names[] = {"max_seconds", NULL};
    mrt_tensor *wave = mrt_lua_check_tensor(L, 1);
    int sr = check_rate(L, 2, "audio.chunks", "the sample rate (argument 2)");
    lua_Number seconds = luaL_checknumber(L, 3);
    if (!(seconds > 0) || isinf(seconds))
        luaL_error(L, "audio.chunks: seconds (argument 3) must be a positive number, got %f",
                   seconds);
    mrt_aux_check_options(L, 4, "audio.chunks", names);
    double max_seconds = mrt_aux_opt_number(L, 4, "audio.chunks", "max_seconds", 600.0);
    if (!(max_seconds > 0))
        luaL_error(L, "audio.chunks: option 'max_seconds' must be a positive number, got %f",
                   (lua_Number)max_seconds);
    int64_t chunk = seconds_to_frames(seconds, sr);
    if (chunk < 1)
        luaL_error(L, "audio.chunks: a chunk of %f s is shorter than one frame at %d Hz",
                   seconds, sr);
    int64_t max_frames = seconds_to_frames(max_seconds, sr);
    if (max_frames < 1)
        luaL_error(L, "audio.chunks: max_seconds = %f is shorter than one frame at %d Hz",
                   (lua_Number)max_seconds, sr);
    mrt_tensor *r = mrt_lua_push_tensor(L);
    mrt_lua_check_op(L, mrt_audio_chunks(wave, chunk, max_frames, r), "audio.chunks");
    return 1;
}

static const luaL_Reg audio_io_funcs[] = {
    {"info", a_info}, {"load", a_load}, {"load_pcm16", a_load_pcm16},
    {"unpack_pcm16", a_unpack_pcm16}, {"save", a_save}, {"resample", a_resample},
    {"chunks", a_chunks}, {NULL, NULL}};

void mrt_lua_audio_io(lua_State *L) { luaL_setfuncs(L, audio_io_funcs, 0); }
