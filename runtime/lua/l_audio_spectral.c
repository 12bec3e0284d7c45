/* The spectral part of `machrt.audio`: MelSpectrogram, amplitude_to_db,
 * stft_frames (registered into the module by mrt_lua_audio_spectral, see
 * l_machrt.h).
 *
 * A MelSpectrogram is a userdata holding one mrt_mel_spec pointer, created
 * NULL first and filled by the core call, so a failing construction leaves
 * nothing behind but an empty userdata for the collector (liolib's
 * pattern); __gc, __close and :release() share one idempotent release.
 * Option tables are checked key by key: a misspelt key (`hop = 512`) would
 * otherwise silently fall back to a default and give a spectrogram of the
 * wrong shape. */
#include <limits.h>
#include <math.h>
#include <string.h>
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/spectral.h"

#define MEL_MT "machrt.MelSpectrogram"

typedef struct {
    mrt_mel_spec *m; /* NULL once released */
} mel_ud;

/* ---- MelSpectrogram --------------------------------------------------- */

static const char *const MEL_KEYS[] = {"sample_rate", "n_fft", "win_length", "hop_length",
                                       "f_min", "f_max", "n_mels", "power", "center",
                                       "pad_mode", "mel_scale", "norm", NULL};
static const char *const PAD_MODES[] = {"reflect", "constant", NULL};
static const char *const MEL_SCALES[] = {"htk", "slaney", NULL};
static const char *const NORMS[] = {"none", "slaney", NULL};

/* Reads the option table at idx into a config with torchaudio's defaults:
 * win_length = n_fft, hop_length = win_length // 2, f_max = sample_rate // 2. */
static void read_mel_config(lua_State *L, int idx, mrt_mel_config *c)
{
    const char *what = "MelSpectrogram";
    mrt_aux_check_keys(L, idx, what, MEL_KEYS);
    int sr = (int)mrt_aux_opt_integer(L, idx, what, "sample_rate", 16000, 1, INT_MAX);
    mrt_mel_config_init(c, sr);
    int n_fft = (int)mrt_aux_opt_integer(L, idx, what, "n_fft", 400, 1, INT_MAX);
    int win = (int)mrt_aux_opt_integer(L, idx, what, "win_length", n_fft, 1, INT_MAX);
    /* win_length // 2 is 0 for a one-sample window; hop_length's own check
     * then reports it. */
    int hop = (int)mrt_aux_opt_integer(L, idx, what, "hop_length", win / 2, 1, INT_MAX);
    c->stft.n_fft = n_fft;
    c->stft.win_length = win;
    c->stft.hop_length = hop;
    c->f_min = mrt_aux_opt_number(L, idx, what, "f_min", 0.0);
    c->f_max = mrt_aux_opt_number(L, idx, what, "f_max", (double)(sr / 2));
    c->n_mels = (int)mrt_aux_opt_integer(L, idx, what, "n_mels", 128, 1, INT_MAX);
    c->power = mrt_aux_opt_number(L, idx, what, "power", 2.0);
    c->stft.center = mrt_aux_opt_boolean(L, idx, what, "center", 1);
    c->stft.pad_mode = (mrt_pad_mode)mrt_aux_opt_choice(L, idx, what, "pad_mode", PAD_MODES,
                                                MRT_PAD_REFLECT, NULL);
    c->mel_scale = (mrt_mel_scale)mrt_aux_opt_choice(L, idx, what, "mel_scale", MEL_SCALES,
                                             MRT_MEL_HTK, NULL);
    c->norm = (mrt_mel_norm)mrt_aux_opt_choice(L, idx, what, "norm", NORMS, MRT_MEL_NORM_NONE,
                                       "nil or 'slaney'");
}

static int a_mel_new(lua_State *L)
{
    if (!lua_isnoneornil(L, 1) && !lua_istable(L, 1))
        return luaL_error(L, "MelSpectrogram: expected a table of options, got %s",
                          luaL_typename(L, 1));
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    mrt_mel_config c;
    read_mel_config(L, 1, &c);
    mel_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->m = NULL;
    luaL_setmetatable(L, MEL_MT);
    mrt_lua_check(L, mrt_mel_spec_new(&c, &u->m));
    return 1;
}

static mrt_mel_spec *check_mel(lua_State *L, int idx)
{
    mel_ud *u = luaL_checkudata(L, idx, MEL_MT);
    if (!u->m) luaL_error(L, "MelSpectrogram: the object has been released (closed)");
    return u->m;
}

/* mel:forward(wave [, out]) and mel(wave [, out]) */
static int mel_forward(lua_State *L)
{
    mrt_mel_spec *m = check_mel(L, 1);
    mrt_tensor *wave = mrt_lua_test_tensor(L, 2);
    if (!wave)
        return luaL_error(L, "MelSpectrogram: wave must be a tensor {frames} or {B, frames}, "
                          "got %s", luaL_typename(L, 2));
    if (!wave->storage) return luaL_error(L, "MelSpectrogram: wave has been released (closed)");
    if (!lua_isnoneornil(L, 3)) {
        /* Not mrt_lua_check_tensor: called as mel(wave, out), "bad argument #3
         * to '?'" would name neither the function nor the argument. */
        mrt_tensor *out = mrt_lua_test_tensor(L, 3);
        if (!out || !out->storage)
            return luaL_error(L, "MelSpectrogram: out must be a tensor, got %s",
                              out ? "a released tensor" : luaL_typename(L, 3));
        mrt_lua_check(L, mrt_mel_spec_forward(m, wave, out));
        lua_pushvalue(L, 3);
        return 1;
    }
    mrt_tensor *out = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_mel_spec_forward(m, wave, out));
    return 1;
}

static int mel_filterbank(lua_State *L)
{
    mrt_mel_spec *m = check_mel(L, 1);
    mrt_tensor *out = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_mel_spec_filterbank(m, out));
    return 1;
}

/* The resolved settings (defaults filled in), e.g. for a scoring pipeline
 * to store next to a checkpoint; MelSpectrogram(mel:config()) rebuilds it. */
static int mel_config(lua_State *L)
{
    const mrt_mel_config *c = mrt_mel_spec_config(check_mel(L, 1));
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, c->sample_rate);
    lua_setfield(L, -2, "sample_rate");
    lua_pushinteger(L, c->stft.n_fft);
    lua_setfield(L, -2, "n_fft");
    lua_pushinteger(L, c->stft.win_length);
    lua_setfield(L, -2, "win_length");
    lua_pushinteger(L, c->stft.hop_length);
    lua_setfield(L, -2, "hop_length");
    lua_pushnumber(L, c->f_min);
    lua_setfield(L, -2, "f_min");
    lua_pushnumber(L, c->f_max);
    lua_setfield(L, -2, "f_max");
    lua_pushinteger(L, c->n_mels);
    lua_setfield(L, -2, "n_mels");
    lua_pushnumber(L, c->power);
    lua_setfield(L, -2, "power");
    lua_pushboolean(L, c->stft.center);
    lua_setfield(L, -2, "center");
    lua_pushstring(L, PAD_MODES[c->stft.pad_mode]);
    lua_setfield(L, -2, "pad_mode");
    lua_pushstring(L, MEL_SCALES[c->mel_scale]);
    lua_setfield(L, -2, "mel_scale");
    if (c->norm == MRT_MEL_NORM_SLANEY) {
        lua_pushstring(L, "slaney");
        lua_setfield(L, -2, "norm");
    }
    return 1;
}

/* A clip length in samples: 0 to 2^53. Far beyond any clip, and 1 + n //
 * hop of n = math.maxinteger would overflow. */
static lua_Integer check_samples(lua_State *L, int idx, const char *what)
{
    lua_Integer n = luaL_checkinteger(L, idx);
    if (n < 0 || n > ((lua_Integer)1 << 53))
        luaL_error(L, "%s: n must be a number of samples in 0..2^53, got %I", what, n);
    return n;
}

/* mel:frames(n): the number of frames T for a clip of n samples. */
static int mel_frames(lua_State *L)
{
    const mrt_mel_config *c = mrt_mel_spec_config(check_mel(L, 1));
    lua_Integer n = check_samples(L, 2, "MelSpectrogram: frames");
    lua_pushinteger(L, mrt_stft_frames(n, c->stft.n_fft, c->stft.hop_length, c->stft.center));
    return 1;
}

/* mel:zero_filters(): how many filters hold no frequency bin. */
static int mel_zero_filters(lua_State *L)
{
    lua_pushinteger(L, mrt_mel_spec_zero_filters(check_mel(L, 1)));
    return 1;
}

/* audio.quiet_zero_filter_warning(): MelSpectrogram no longer prints the
 * all-zero filter warning (machrt.pipeline says it in the config's words). */
static int a_quiet_zero_filter_warning(lua_State *L)
{
    (void)L;
    mrt_mel_quiet_zero_filter_warning();
    return 0;
}

static int mel_release(lua_State *L)
{
    mel_ud *u = luaL_checkudata(L, 1, MEL_MT);
    mrt_mel_spec_free(u->m);
    u->m = NULL;
    return 0;
}

static int mel_tostring(lua_State *L)
{
    mel_ud *u = luaL_checkudata(L, 1, MEL_MT);
    if (!u->m) {
        lua_pushliteral(L, "MelSpectrogram (released)");
        return 1;
    }
    const mrt_mel_config *c = mrt_mel_spec_config(u->m);
    lua_pushfstring(L, "MelSpectrogram{sample_rate=%I, n_fft=%d, win_length=%d, hop_length=%d, "
                    "f_min=%f, f_max=%f, n_mels=%d, power=%f, center=%s, pad_mode=\"%s\", "
                    "mel_scale=\"%s\"%s}", (lua_Integer)c->sample_rate, c->stft.n_fft,
                    c->stft.win_length, c->stft.hop_length, (lua_Number)c->f_min,
                    (lua_Number)c->f_max, c->n_mels, (lua_Number)c->power,
                    c->stft.center ? "true" : "false", PAD_MODES[c->stft.pad_mode],
                    MEL_SCALES[c->mel_scale], c->norm == MRT_MEL_NORM_SLANEY ? ", norm=\"slaney\"" : "");
    return 1;
}

static const luaL_Reg mel_methods[] = {
    {"forward", mel_forward}, {"filterbank", mel_filterbank}, {"config", mel_config},
    {"frames", mel_frames}, {"zero_filters", mel_zero_filters}, {"release", mel_release},
    {NULL, NULL}};

static const luaL_Reg mel_meta[] = {
    {"__call", mel_forward}, {"__gc", mel_release}, {"__close", mel_release},
    {"__tostring", mel_tostring}, {"__index", NULL}, {NULL, NULL}};

/* ---- amplitude_to_db ---------------------------------------------------- */

static const char *const DB_KEYS[] = {"top_db", "stype", "out", NULL};
static const char *const STYPES[] = {"power", "magnitude", NULL};

/* audio.amplitude_to_db(x [, {top_db = nil, stype = "power", out = nil}]):
 * `out` (a tensor of x's shape, possibly x itself) is written and returned
 * instead of a new tensor, so a loop can reuse one buffer. */
static int a_amplitude_to_db(lua_State *L)
{
    const char *what = "amplitude_to_db";
    mrt_tensor *x = mrt_lua_test_tensor(L, 1);
    if (!x) return luaL_error(L, "%s: x must be a tensor, got %s", what, luaL_typename(L, 1));
    double top_db = -1.0;
    int stype = 0;
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_istable(L, 2))
            return luaL_error(L, "%s: expected a table of options, got %s", what, luaL_typename(L, 2));
        mrt_aux_check_keys(L, 2, what, DB_KEYS);
        if (lua_getfield(L, 2, "top_db") != LUA_TNIL) {
            int ok;
            top_db = lua_tonumberx(L, -1, &ok);
            if (!ok || !(top_db >= 0) || isinf(top_db))
                return luaL_error(L, "%s: top_db must be a non-negative number of dB, got %s",
                                  what, luaL_tolstring(L, -1, NULL));
        }
        lua_pop(L, 1);
        stype = mrt_aux_opt_choice(L, 2, what, "stype", STYPES, 0, NULL);
        if (lua_getfield(L, 2, "out") != LUA_TNIL) {
            mrt_tensor *out = mrt_lua_test_tensor(L, -1);
            if (!out || !out->storage)
                return luaL_error(L, "%s: out must be a tensor, got %s", what,
                                  out ? "a released tensor" : luaL_typename(L, -1));
            mrt_lua_check(L, mrt_amplitude_to_db(x, stype == 0 ? 10.0 : 20.0, top_db, out));
            return 1;
        }
        lua_pop(L, 1);
    }
    mrt_tensor *out = mrt_lua_push_tensor(L);
    mrt_lua_check(L, mrt_amplitude_to_db(x, stype == 0 ? 10.0 : 20.0, top_db, out));
    return 1;
}

/* ---- stft_frames ---------------------------------------------------------- */

/* audio.stft_frames(n, hop [, center = true [, n_fft]]): frames of a clip of
 * n samples. With center (and an even or absent n_fft) that is
 * 1 + n // hop; without center n_fft is needed. */
static int a_stft_frames(lua_State *L)
{
    const char *what = "stft_frames";
    lua_Integer n = check_samples(L, 1, what);
    lua_Integer hop = luaL_checkinteger(L, 2);
    int center = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    if (hop < 1 || hop > INT_MAX) return luaL_error(L, "%s: hop must be positive, got %I", what, hop);
    lua_Integer n_fft;
    if (lua_isnoneornil(L, 4)) {
        if (!center) return luaL_error(L, "%s: n_fft (argument 4) is needed when center is false", what);
        n_fft = 2; /* any even size: center padding makes T = 1 + n // hop */
    } else {
        n_fft = luaL_checkinteger(L, 4);
        if (n_fft < 1 || n_fft > INT_MAX)
            return luaL_error(L, "%s: n_fft must be positive, got %I", what, n_fft);
    }
    lua_pushinteger(L, mrt_stft_frames(n, (int)n_fft, (int)hop, center));
    return 1;
}

/* ---- registration --------------------------------------------------------- */

void mrt_lua_audio_spectral(lua_State *L)
{
    if (luaL_newmetatable(L, MEL_MT)) {
        luaL_setfuncs(L, mel_meta, 0);
        luaL_newlib(L, mel_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"MelSpectrogram", a_mel_new},
                                     {"amplitude_to_db", a_amplitude_to_db},
                                     {"stft_frames", a_stft_frames},
                                     {"quiet_zero_filter_warning", a_quiet_zero_filter_warning},
                                     {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
