/* The `machrt.plot_c` module: the canvas of runtime/plot/ for
 * modules/machrt/plot.lua (which lays out axes, ticks, legends and
 * colorbars), plus PNG inspection.
 *
 *   local P = require "machrt.plot_c"
 *   local c = P.canvas(800, 400)          -- white, opaque ARGB32 surface
 *   c:color(r, g, b [, a]); c:line_width(w); c:dash(on, off) / c:dash()
 *   c:move_to(x, y); c:line_to(x, y); c:rect(x, y, w, h); c:circle(x, y, r)
 *   c:close_path(); c:new_path(); c:stroke(); c:fill(); c:clip()
 *   c:save(); c:restore()
 *   c:text(s, x, y, {size, bold, halign = "left"|"center"|"right",
 *                    valign = "baseline"|"top"|"middle"|"bottom", angle = deg})
 *   c:text_width(s, size [, bold]) -> pixels
 *   c:image(t, x, y, w, h, {colormap, vmin, vmax, origin, smooth}) -> vmin, vmax
 *   c:colorbar(x, y, w, h, colormap)  -- low at the bottom
 *   c:write_png(path)                 -- path .. ".tmp.<pid>.<n>", then rename
 *   c:close()                         -- also __gc / __close
 *   P.png_info(path) -> {width, height, colors, mean}
 *   P.png_pixel(path, x, y) -> r, g, b, a (0..255; x, y from 0 at top left)
 *   P.range(t) -> min, max of the finite values (nil when there are none)
 *   P.colormap(name, u) -> r, g, b in [0, 1]
 *
 * The canvas is owned by its userdata (created first, then filled, as
 * liolib does), so a Lua error never leaks it. */
#include <limits.h>
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/plot.h"

#define CANVAS_MT "machrt.plot.Canvas"

typedef struct {
    mrt_canvas *c; /* NULL once closed */
} canvas_ud;

static const mrt_tensor *check_f32_cpu(lua_State *L, int idx, const char *what)
{
    mrt_tensor *t = mrt_lua_test_tensor(L, idx);
    if (!t) luaL_error(L, "%s: expected a float32 tensor, got a %s", what, luaL_typename(L, idx));
    if (!t->storage) luaL_error(L, "%s: the tensor has been released (closed)", what);
    if (t->dtype != MRT_F32)
        luaL_error(L, "%s: expected a float32 tensor, got %s", what, mrt_dtype_name(t->dtype));
    if (t->storage->device != MRT_CPU)
        luaL_error(L, "%s: the tensor is on %s; move it with :to('cpu')", what,
                   mrt_device_name(t->storage->device));
    return t;
}

/* P.range(t) -> min, max of the finite values, or nil, nil. */
static int p_range(lua_State *L)
{
    double lo, hi;
    if (mrt_finite_range(check_f32_cpu(L, 1, "plot.range"), &lo, &hi) == 0) {
        lua_pushnil(L);
        lua_pushnil(L);
    } else {
        lua_pushnumber(L, lo);
        lua_pushnumber(L, hi);
    }
    return 2;
}

static int p_colormap(lua_State *L)
{
    int cm = luaL_checkoption(L, 1, "viridis", mrt_colormap_names);
    unsigned char c[3];
    mrt_colormap_rgb((mrt_colormap)cm, luaL_checknumber(L, 2), c);
    for (int i = 0; i < 3; i++) lua_pushnumber(L, c[i] / 255.0);
    return 3;
}

/* ---- the canvas userdata -------------------------------------------------- */

static int c_close(lua_State *L)
{
    canvas_ud *u = luaL_checkudata(L, 1, CANVAS_MT);
    mrt_canvas_free(u->c);
    u->c = NULL;
    return 0;
}

static mrt_canvas *check_canvas(lua_State *L)
{
    canvas_ud *u = luaL_checkudata(L, 1, CANVAS_MT);
    if (!u->c) luaL_error(L, "plot: the canvas has been closed");
    return u->c;
}

/* P.canvas(width, height): white, opaque. */
static int p_canvas(lua_State *L)
{
    lua_Integer w = luaL_checkinteger(L, 1), h = luaL_checkinteger(L, 2);
    canvas_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->c = NULL;
    luaL_setmetatable(L, CANVAS_MT);
    /* Saturated to int: the core refuses what is out of range, naming it. */
    int wi = w < INT_MIN ? INT_MIN : w > INT_MAX ? INT_MAX : (int)w;
    int hi = h < INT_MIN ? INT_MIN : h > INT_MAX ? INT_MAX : (int)h;
    mrt_lua_check_op(L, mrt_canvas_new(wi, hi, &u->c), "plot.canvas");
    return 1;
}

static int c_size(lua_State *L)
{
    int w, h;
    mrt_canvas_size(check_canvas(L), &w, &h);
    lua_pushinteger(L, w);
    lua_pushinteger(L, h);
    return 2;
}

static int c_color(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_canvas_color(c, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4),
                     luaL_optnumber(L, 5, 1.0));
    return 0;
}

static int c_line_width(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    double w = luaL_checknumber(L, 2);
    luaL_argcheck(L, w > 0, 2, "line width must be positive");
    mrt_canvas_line_width(c, w);
    return 0;
}

static int c_dash(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    if (lua_isnoneornil(L, 2)) {
        mrt_canvas_dash(c, 0, 0);
        return 0;
    }
    double on = luaL_checknumber(L, 2), off = luaL_optnumber(L, 3, on);
    luaL_argcheck(L, on > 0 && off > 0, 2, "dash lengths must be positive");
    mrt_canvas_dash(c, on, off);
    return 0;
}

static int c_move_to(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_canvas_move_to(c, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int c_line_to(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_canvas_line_to(c, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int c_rect(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_canvas_rect(c, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4),
                    luaL_checknumber(L, 5));
    return 0;
}

static int c_circle(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_canvas_circle(c, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4));
    return 0;
}

#define PATH_OP(name, op)                         \
    static int name(lua_State *L)                 \
    {                                             \
        mrt_canvas_path(check_canvas(L), op);     \
        return 0;                                 \
    }
PATH_OP(c_close_path, MRT_PATH_CLOSE)
PATH_OP(c_new_path, MRT_PATH_NEW)
PATH_OP(c_stroke, MRT_PATH_STROKE)
PATH_OP(c_fill, MRT_PATH_FILL)
PATH_OP(c_clip, MRT_PATH_CLIP)
PATH_OP(c_save, MRT_STATE_SAVE)
PATH_OP(c_restore, MRT_STATE_RESTORE)

/* c:text(s, x, y [, {size = 12, bold, halign, valign, angle}]) -> width */
static int c_text(lua_State *L)
{
    static const char *const KEYS[] = {"size", "bold", "halign", "valign", "angle", NULL};
    static const char *const HAL[] = {"left", "center", "right", NULL};
    static const char *const VAL[] = {"baseline", "top", "middle", "bottom", NULL};
    const char *op = "plot.text";
    mrt_canvas *c = check_canvas(L);
    const char *s = luaL_checkstring(L, 2);
    double x = luaL_checknumber(L, 3), y = luaL_checknumber(L, 4);
    mrt_aux_check_options(L, 5, op, KEYS);
    mrt_text_style st;
    st.size = mrt_aux_opt_number(L, 5, op, "size", 12);
    st.angle = mrt_aux_opt_number(L, 5, op, "angle", 0);
    st.bold = mrt_aux_opt_boolean(L, 5, op, "bold", 0);
    st.halign = (mrt_halign)mrt_aux_opt_choice(L, 5, op, "halign", HAL, 0, NULL);
    st.valign = (mrt_valign)mrt_aux_opt_choice(L, 5, op, "valign", VAL, 0, NULL);
    luaL_argcheck(L, st.size > 0, 5, "font size must be positive");
    lua_pushnumber(L, mrt_canvas_text(c, s, x, y, &st));
    return 1;
}

/* c:text_width(s, size [, bold]) -> advance width in pixels */
static int c_text_width(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    const char *s = luaL_checkstring(L, 2);
    double size = luaL_checknumber(L, 3);
    luaL_argcheck(L, size > 0, 3, "font size must be positive");
    lua_pushnumber(L, mrt_canvas_text_width(c, s, size, lua_toboolean(L, 4)));
    return 1;
}

/* c:image(t, x, y, w, h [, {colormap, vmin, vmax, origin = "upper", smooth}])
 * -> vmin, vmax used. t is 2-d {rows, cols}; row 1 at the top ("upper") or
 * at the bottom ("lower"). vmin/vmax default to the finite data range. */
static int c_image(lua_State *L)
{
    static const char *const KEYS[] = {"colormap", "vmin", "vmax", "origin", "smooth", NULL};
    static const char *const ORIGINS[] = {"upper", "lower", NULL};
    const char *op = "plot.image";
    mrt_canvas *c = check_canvas(L);
    const mrt_tensor *t = check_f32_cpu(L, 2, op);
    double x = luaL_checknumber(L, 3), y = luaL_checknumber(L, 4);
    double w = luaL_checknumber(L, 5), h = luaL_checknumber(L, 6);
    mrt_aux_check_options(L, 7, op, KEYS);
    mrt_image_style st;
    st.colormap = (mrt_colormap)mrt_aux_opt_choice(L, 7, op, "colormap", mrt_colormap_names, 0, NULL);
    st.lower = mrt_aux_opt_choice(L, 7, op, "origin", ORIGINS, 0, NULL);
    st.smooth = mrt_aux_opt_boolean(L, 7, op, "smooth", 0);
    double lo = 0, hi = 1;
    if (t->ndim == 2 && mrt_finite_range(t, &lo, &hi) == 0) lo = 0, hi = 1;
    st.vmin = mrt_aux_opt_number(L, 7, op, "vmin", lo);
    st.vmax = mrt_aux_opt_number(L, 7, op, "vmax", hi);
    mrt_lua_check(L, mrt_canvas_image(c, t, x, y, w, h, &st));
    lua_pushnumber(L, st.vmin);
    lua_pushnumber(L, st.vmax);
    return 2;
}

/* c:colorbar(x, y, w, h, colormap): the colormap from bottom (low) to top. */
static int c_colorbar(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    double x = luaL_checknumber(L, 2), y = luaL_checknumber(L, 3);
    double w = luaL_checknumber(L, 4), h = luaL_checknumber(L, 5);
    int cm = luaL_checkoption(L, 6, "viridis", mrt_colormap_names);
    mrt_lua_check(L, mrt_canvas_colorbar(c, x, y, w, h, (mrt_colormap)cm));
    return 0;
}

static int c_write_png(lua_State *L)
{
    mrt_canvas *c = check_canvas(L);
    mrt_lua_check(L, mrt_canvas_write_png(c, luaL_checkstring(L, 2)));
    return 0;
}

/* ---- PNG inspection ------------------------------------------------------------- */

static int p_png_info(lua_State *L)
{
    mrt_png_info info;
    mrt_lua_check(L, mrt_png_read_info("plot.png_info", luaL_checkstring(L, 1), &info));
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, info.width);
    lua_setfield(L, -2, "width");
    lua_pushinteger(L, info.height);
    lua_setfield(L, -2, "height");
    lua_pushinteger(L, (lua_Integer)info.colors);
    lua_setfield(L, -2, "colors");
    lua_pushnumber(L, info.mean);
    lua_setfield(L, -2, "mean");
    return 1;
}

static int p_png_pixel(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer x = luaL_checkinteger(L, 2), y = luaL_checkinteger(L, 3);
    if (x < 0 || y < 0 || x > MRT_PLOT_MAX_SIDE || y > MRT_PLOT_MAX_SIDE)
        return luaL_error(L, "plot.png_pixel: pixel (%I, %I) outside the picture '%s'", x, y, path);
    int rgba[4];
    mrt_lua_check(L, mrt_png_read_pixel("plot.png_pixel", path, (int)x, (int)y, rgba));
    for (int i = 0; i < 4; i++) lua_pushinteger(L, rgba[i]);
    return 4;
}

static const luaL_Reg canvas_methods[] = {
    {"size", c_size}, {"color", c_color}, {"line_width", c_line_width}, {"dash", c_dash},
    {"move_to", c_move_to}, {"line_to", c_line_to}, {"rect", c_rect}, {"circle", c_circle},
    {"close_path", c_close_path}, {"new_path", c_new_path}, {"stroke", c_stroke},
    {"fill", c_fill}, {"clip", c_clip}, {"save", c_save}, {"restore", c_restore},
    {"text", c_text}, {"text_width", c_text_width}, {"image", c_image},
    {"colorbar", c_colorbar}, {"write_png", c_write_png}, {"close", c_close},
    {NULL, NULL}};

static const luaL_Reg plot_funcs[] = {
    {"canvas", p_canvas}, {"png_info", p_png_info}, {"png_pixel", p_png_pixel},
    {"range", p_range}, {"colormap", p_colormap}, {NULL, NULL}};

int luaopen_machrt_plot_c(lua_State *L)
{
    luaL_checkversion(L);
    mrt_lua_open_tensor(L);
    if (luaL_newmetatable(L, CANVAS_MT)) {
        luaL_newlib(L, canvas_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, c_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, c_close);
        lua_setfield(L, -2, "__close");
        lua_pushliteral(L, CANVAS_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    luaL_newlib(L, plot_funcs);
    return 1;
}
