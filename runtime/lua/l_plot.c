/* The `machrt.plot_c` module: a small cairo canvas for modules/machrt/plot.lua
 * (which lays out axes, ticks, legends and colorbars), plus PNG inspection.
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
 *   c:write_png(path)                 -- path .. ".tmp", then rename
 *   c:close()                         -- also __gc / __close
 *   P.png_info(path) -> {width, height, colors, mean}
 *   P.png_pixel(path, x, y) -> r, g, b, a (0..255; x, y from 0 at top left)
 *   P.range(t) -> min, max of the finite values (nil when there are none)
 *   P.colormap(name, u) -> r, g, b in [0, 1]
 *
 * Error discipline: arguments are checked before any cairo resource is made;
 * a resource made inside a function is destroyed on every path before an
 * error is raised; the canvas itself is owned by its userdata (created
 * first, then filled, as liolib does), so a Lua error never leaks it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cairo.h>
#include "l_machrt.h"

#define CANVAS_MT "machrt.plot.Canvas"
#define MAX_SIDE 16384

typedef struct {
    cairo_surface_t *surface;
    cairo_t *cr;
    int width, height;
} canvas;

/* ---- colormaps (33 knots of matplotlib's tables, linear in between) ------- */

typedef struct { unsigned char r, g, b; } rgb8;

static const rgb8 VIRIDIS[33] = {
    {68, 1, 84}, {71, 13, 96}, {72, 24, 106}, {72, 35, 116}, {71, 45, 123}, {69, 55, 129},
    {66, 64, 134}, {62, 73, 137}, {59, 82, 139}, {55, 91, 141}, {51, 99, 141}, {47, 107, 142},
    {44, 114, 142}, {41, 122, 142}, {38, 130, 142}, {35, 137, 142}, {33, 145, 140},
    {31, 151, 139}, {31, 159, 136}, {33, 166, 133}, {39, 173, 129}, {49, 181, 123},
    {61, 188, 116}, {76, 194, 108}, {92, 200, 99}, {110, 206, 88}, {129, 211, 77},
    {149, 216, 64}, {170, 220, 50}, {192, 223, 37}, {213, 226, 26}, {234, 229, 26},
    {253, 231, 37}};
static const rgb8 MAGMA[33] = {
    {0, 0, 4}, {3, 3, 18}, {10, 8, 34}, {19, 13, 52}, {29, 17, 71}, {41, 17, 90},
    {54, 16, 107}, {68, 15, 118}, {81, 18, 124}, {93, 23, 127}, {106, 28, 129},
    {118, 33, 129}, {131, 38, 129}, {144, 42, 129}, {156, 46, 127}, {170, 51, 125},
    {183, 55, 121}, {194, 59, 117}, {207, 64, 112}, {219, 71, 106}, {229, 80, 100},
    {238, 91, 94}, {244, 105, 92}, {249, 120, 93}, {251, 135, 97}, {253, 150, 104},
    {254, 165, 113}, {254, 180, 123}, {254, 194, 135}, {254, 209, 148}, {253, 224, 161},
    {252, 238, 176}, {252, 253, 191}};

enum { CM_VIRIDIS, CM_MAGMA, CM_GRAY };
static const char *const CMAP_NAMES[] = {"viridis", "magma", "gray", NULL};

/* NaN cells: light gray, outside every colormap's range of hues. */
static const double NAN_GRAY = 0.82;

/* u in [0, 1] (clamped; NaN gives the NaN colour) -> 8-bit r, g, b. */
static void cmap_rgb(int cm, double u, unsigned char out[3])
{
    if (u != u) {
        out[0] = out[1] = out[2] = (unsigned char)(NAN_GRAY * 255 + 0.5);
        return;
    }
    if (u < 0) u = 0;
    if (u > 1) u = 1;
    if (cm == CM_GRAY) {
        out[0] = out[1] = out[2] = (unsigned char)(u * 255 + 0.5);
        return;
    }
    const rgb8 *k = cm == CM_MAGMA ? MAGMA : VIRIDIS;
    double x = u * 32;
    int i = (int)x;
    if (i > 31) i = 31;
    double f = x - i;
    out[0] = (unsigned char)(k[i].r + f * (k[i + 1].r - k[i].r) + 0.5);
    out[1] = (unsigned char)(k[i].g + f * (k[i + 1].g - k[i].g) + 0.5);
    out[2] = (unsigned char)(k[i].b + f * (k[i + 1].b - k[i].b) + 0.5);
}

static int check_cmap(lua_State *L, int idx)
{
    return luaL_checkoption(L, idx, "viridis", CMAP_NAMES);
}

/* ---- tensors ------------------------------------------------------------- */

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

/* Finite min and max over any strided float32 tensor; returns the count. */
static int64_t finite_range(const mrt_tensor *t, double *lo, double *hi)
{
    int64_t n = mrt_tensor_numel(t), idx[MRT_MAX_DIMS] = {0}, count = 0;
    const float *base = (const float *)t->storage->data;
    int64_t off = t->offset;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t k = 0; k < n; k++) {
        float v = base[off];
        if (isfinite(v)) {
            if (v < *lo) *lo = v;
            if (v > *hi) *hi = v;
            count++;
        }
        for (int d = t->ndim - 1; d >= 0; d--) { /* odometer step */
            off += t->stride[d];
            if (++idx[d] < t->shape[d]) break;
            off -= t->stride[d] * t->shape[d];
            idx[d] = 0;
        }
    }
    return count;
}

/* P.range(t) -> min, max of the finite values, or nil, nil. */
static int p_range(lua_State *L)
{
    const mrt_tensor *t = check_f32_cpu(L, 1, "plot.range");
    double lo, hi;
    if (finite_range(t, &lo, &hi) == 0) {
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
    int cm = check_cmap(L, 1);
    unsigned char c[3];
    cmap_rgb(cm, luaL_checknumber(L, 2), c);
    for (int i = 0; i < 3; i++) lua_pushnumber(L, c[i] / 255.0);
    return 3;
}

/* ---- the canvas userdata -------------------------------------------------- */

static void canvas_release(canvas *c)
{
    if (c->cr) cairo_destroy(c->cr);
    if (c->surface) cairo_surface_destroy(c->surface);
    c->cr = NULL;
    c->surface = NULL;
}

static int c_gc(lua_State *L)
{
    canvas_release(luaL_checkudata(L, 1, CANVAS_MT));
    return 0;
}

static canvas *check_canvas(lua_State *L)
{
    canvas *c = luaL_checkudata(L, 1, CANVAS_MT);
    if (!c->cr) luaL_error(L, "plot: the canvas has been closed");
    return c;
}

/* P.canvas(width, height): white, opaque. */
static int p_canvas(lua_State *L)
{
    lua_Integer w = luaL_checkinteger(L, 1), h = luaL_checkinteger(L, 2);
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE)
        return luaL_error(L, "plot: picture size %dx%d out of range (1 to %d pixels a side)", (int)w,
                          (int)h, MAX_SIDE);
    canvas *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->surface = NULL;
    c->cr = NULL;
    c->width = (int)w;
    c->height = (int)h;
    luaL_setmetatable(L, CANVAS_MT);
    c->surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)w, (int)h);
    if (cairo_surface_status(c->surface) != CAIRO_STATUS_SUCCESS)
        return luaL_error(L, "plot: cannot create a %dx%d picture: %s", (int)w, (int)h,
                          cairo_status_to_string(cairo_surface_status(c->surface)));
    c->cr = cairo_create(c->surface);
    if (cairo_status(c->cr) != CAIRO_STATUS_SUCCESS)
        return luaL_error(L, "plot: cannot draw on a %dx%d picture: %s", (int)w, (int)h,
                          cairo_status_to_string(cairo_status(c->cr)));
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    cairo_set_source_rgb(c->cr, 0, 0, 0);
    cairo_set_line_width(c->cr, 1);
    cairo_select_font_face(c->cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    return 1;
}

static int c_close(lua_State *L)
{
    canvas_release(luaL_checkudata(L, 1, CANVAS_MT));
    return 0;
}

static int c_size(lua_State *L)
{
    canvas *c = check_canvas(L);
    lua_pushinteger(L, c->width);
    lua_pushinteger(L, c->height);
    return 2;
}

static int c_color(lua_State *L)
{
    canvas *c = check_canvas(L);
    cairo_set_source_rgba(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3),
                          luaL_checknumber(L, 4), luaL_optnumber(L, 5, 1.0));
    return 0;
}

static int c_line_width(lua_State *L)
{
    canvas *c = check_canvas(L);
    double w = luaL_checknumber(L, 2);
    luaL_argcheck(L, w > 0, 2, "line width must be positive");
    cairo_set_line_width(c->cr, w);
    return 0;
}

static int c_dash(lua_State *L)
{
    canvas *c = check_canvas(L);
    if (lua_isnoneornil(L, 2)) {
        cairo_set_dash(c->cr, NULL, 0, 0);
    } else {
        double d[2] = {luaL_checknumber(L, 2), luaL_optnumber(L, 3, luaL_checknumber(L, 2))};
        luaL_argcheck(L, d[0] > 0 && d[1] > 0, 2, "dash lengths must be positive");
        cairo_set_dash(c->cr, d, 2, 0);
    }
    return 0;
}

static int c_move_to(lua_State *L)
{
    canvas *c = check_canvas(L);
    cairo_move_to(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int c_line_to(lua_State *L)
{
    canvas *c = check_canvas(L);
    cairo_line_to(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int c_rect(lua_State *L)
{
    canvas *c = check_canvas(L);
    cairo_rectangle(c->cr, luaL_checknumber(L, 2), luaL_checknumber(L, 3), luaL_checknumber(L, 4),
                    luaL_checknumber(L, 5));
    return 0;
}

static int c_circle(lua_State *L)
{
    canvas *c = check_canvas(L);
    double x = luaL_checknumber(L, 2), y = luaL_checknumber(L, 3), r = luaL_checknumber(L, 4);
    cairo_new_sub_path(c->cr);
    cairo_arc(c->cr, x, y, r, 0, 2 * M_PI);
    cairo_close_path(c->cr);
    return 0;
}

#define PATH_OP(name, call)                 \
    static int name(lua_State *L)           \
    {                                       \
        canvas *c = check_canvas(L);        \
        call(c->cr);                        \
        return 0;                           \
    }
PATH_OP(c_close_path, cairo_close_path)
PATH_OP(c_new_path, cairo_new_path)
PATH_OP(c_stroke, cairo_stroke)
PATH_OP(c_fill, cairo_fill)
PATH_OP(c_clip, cairo_clip)
PATH_OP(c_save, cairo_save)
PATH_OP(c_restore, cairo_restore)

/* ---- text ------------------------------------------------------------------ */

static void set_font(cairo_t *cr, double size, int bold)
{
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static double opt_number_field(lua_State *L, int idx, const char *key, double def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, key);
    double v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_error(L, "plot: option '%s' must be a number, got a %s", key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

static const char *opt_string_field(lua_State *L, int idx, const char *key, const char *def)
{
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, key);
    const char *v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "plot: option '%s' must be a string, got a %s", key, luaL_typename(L, -1));
        v = lua_tostring(L, -1); /* kept alive by the options table */
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool_field(lua_State *L, int idx, const char *key)
{
    if (lua_isnoneornil(L, idx)) return 0;
    lua_getfield(L, idx, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int option_index(lua_State *L, const char *key, const char *v, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(v, names[i]) == 0) return i;
    return luaL_error(L, "plot: option '%s' has no value '%s'", key, v);
}

/* c:text(s, x, y [, {size = 12, bold, halign, valign, angle}]) -> width */
static int c_text(lua_State *L)
{
    static const char *const HAL[] = {"left", "center", "right", NULL};
    static const char *const VAL[] = {"baseline", "top", "middle", "bottom", NULL};
    canvas *c = check_canvas(L);
    const char *s = luaL_checkstring(L, 2);
    double x = luaL_checknumber(L, 3), y = luaL_checknumber(L, 4);
    if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
    double size = opt_number_field(L, 5, "size", 12);
    double angle = opt_number_field(L, 5, "angle", 0);
    int bold = opt_bool_field(L, 5, "bold");
    int ha = option_index(L, "halign", opt_string_field(L, 5, "halign", "left"), HAL);
    int va = option_index(L, "valign", opt_string_field(L, 5, "valign", "baseline"), VAL);
    luaL_argcheck(L, size > 0, 5, "font size must be positive");

    cairo_t *cr = c->cr;
    cairo_save(cr);
    set_font(cr, size, bold);
    cairo_text_extents_t te, digit;
    cairo_font_extents_t fe;
    cairo_text_extents(cr, s, &te);
    cairo_text_extents(cr, "0", &digit);
    cairo_font_extents(cr, &fe);
    double cap = -digit.y_bearing; /* height of a digit: a steady "top" for labels */
    double dx = ha == 0 ? 0 : ha == 1 ? -te.x_advance / 2 : -te.x_advance;
    double dy = va == 0 ? 0 : va == 1 ? cap : va == 2 ? cap / 2 : -fe.descent;
    cairo_translate(cr, x, y);
    if (angle != 0) cairo_rotate(cr, -angle * M_PI / 180);
    cairo_move_to(cr, dx, dy);
    cairo_show_text(cr, s);
    cairo_new_path(cr);
    cairo_restore(cr);
    lua_pushnumber(L, te.x_advance);
    return 1;
}

/* c:text_width(s, size [, bold]) -> advance width in pixels */
static int c_text_width(lua_State *L)
{
    canvas *c = check_canvas(L);
    const char *s = luaL_checkstring(L, 2);
    double size = luaL_checknumber(L, 3);
    luaL_argcheck(L, size > 0, 3, "font size must be positive");
    cairo_save(c->cr);
    set_font(c->cr, size, lua_toboolean(L, 4));
    cairo_text_extents_t te;
    cairo_text_extents(c->cr, s, &te);
    cairo_restore(c->cr);
    lua_pushnumber(L, te.x_advance);
    return 1;
}

/* ---- images ------------------------------------------------------------------ */

/* Paints `img` (iw x ih pixels) into the rectangle x, y, w, h, then destroys
 * it. Nearest-neighbour when enlarging (sharp cells), a smoothing filter
 * when shrinking or when asked. */
static void paint_scaled(cairo_t *cr, cairo_surface_t *img, int iw, int ih, double x, double y,
                         double w, double h, int smooth)
{
    double sx = w / iw, sy = h / ih;
    cairo_save(cr);
    cairo_rectangle(cr, x, y, w, h);
    cairo_clip(cr);
    cairo_translate(cr, x, y);
    cairo_scale(cr, sx, sy);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_filter_t filter = CAIRO_FILTER_NEAREST;
    if (smooth) filter = CAIRO_FILTER_BILINEAR;
    if (sx < 1 || sy < 1) filter = CAIRO_FILTER_GOOD;
    cairo_pattern_set_filter(cairo_get_source(cr), filter);
    cairo_pattern_set_extend(cairo_get_source(cr), CAIRO_EXTEND_PAD);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
}

/* c:image(t, x, y, w, h [, {colormap, vmin, vmax, origin = "upper", smooth}])
 * -> vmin, vmax used. t is 2-d {rows, cols}; row 1 at the top ("upper") or
 * at the bottom ("lower"). vmin/vmax default to the finite data range. */
static int c_image(lua_State *L)
{
    static const char *const ORIGINS[] = {"upper", "lower", NULL};
    canvas *c = check_canvas(L);
    const mrt_tensor *t = check_f32_cpu(L, 2, "plot.image");
    double x = luaL_checknumber(L, 3), y = luaL_checknumber(L, 4);
    double w = luaL_checknumber(L, 5), h = luaL_checknumber(L, 6);
    if (!lua_isnoneornil(L, 7)) luaL_checktype(L, 7, LUA_TTABLE);
    if (t->ndim != 2) {
        char buf[MRT_SHAPE_STRLEN];
        return luaL_error(L, "plot.image: expected a 2-d tensor {rows, cols}, got shape %s",
                          mrt_shape_str(t->ndim, t->shape, buf, sizeof buf));
    }
    if (t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > MAX_SIDE || t->shape[1] > MAX_SIDE)
        return luaL_error(L, "plot.image: a %dx%d matrix cannot be drawn (1 to %d a side)",
                          (int)t->shape[0], (int)t->shape[1], MAX_SIDE);
    int cm = option_index(L, "colormap", opt_string_field(L, 7, "colormap", "viridis"), CMAP_NAMES);
    int lower = option_index(L, "origin", opt_string_field(L, 7, "origin", "upper"), ORIGINS);
    int smooth = opt_bool_field(L, 7, "smooth");
    double lo, hi;
    if (finite_range(t, &lo, &hi) == 0) lo = 0, hi = 1;
    double vmin = opt_number_field(L, 7, "vmin", lo), vmax = opt_number_field(L, 7, "vmax", hi);
    if (!isfinite(vmin) || !isfinite(vmax))
        return luaL_error(L, "plot.image: vmin and vmax must be finite (got %f, %f)", vmin, vmax);
    if (!(w > 0 && h > 0)) return luaL_error(L, "plot.image: the target rectangle is empty");

    /* From here on no Lua error until the surface is destroyed. */
    int rows = (int)t->shape[0], cols = (int)t->shape[1];
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols, rows);
    cairo_status_t st = cairo_surface_status(img);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return luaL_error(L, "plot.image: cannot make a %dx%d image: %s", cols, rows,
                          cairo_status_to_string(st));
    }
    cairo_surface_flush(img);
    unsigned char *px = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    const float *data = mrt_f32(t);
    double span = vmax - vmin;
    for (int i = 0; i < rows; i++) {
        uint32_t *line = (uint32_t *)(px + (size_t)(lower ? rows - 1 - i : i) * stride);
        for (int j = 0; j < cols; j++) {
            float v = data[i * t->stride[0] + j * t->stride[1]];
            double u = v != v ? NAN : span != 0 ? (v - vmin) / span : 0.5;
            unsigned char rgb[3];
            cmap_rgb(cm, u, rgb);
            line[j] = 0xFF000000u | ((uint32_t)rgb[0] << 16) | ((uint32_t)rgb[1] << 8) | rgb[2];
        }
    }
    cairo_surface_mark_dirty(img);
    paint_scaled(c->cr, img, cols, rows, x, y, w, h, smooth);
    lua_pushnumber(L, vmin);
    lua_pushnumber(L, vmax);
    return 2;
}

/* c:colorbar(x, y, w, h, colormap): the colormap from bottom (low) to top. */
static int c_colorbar(lua_State *L)
{
    canvas *c = check_canvas(L);
    double x = luaL_checknumber(L, 2), y = luaL_checknumber(L, 3);
    double w = luaL_checknumber(L, 4), h = luaL_checknumber(L, 5);
    int cm = check_cmap(L, 6);
    if (!(w > 0 && h > 0)) return luaL_error(L, "plot.colorbar: the target rectangle is empty");
    enum { N = 256 };
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, N);
    cairo_status_t st = cairo_surface_status(img);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return luaL_error(L, "plot.colorbar: %s", cairo_status_to_string(st));
    }
    cairo_surface_flush(img);
    unsigned char *px = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (int i = 0; i < N; i++) {
        unsigned char rgb[3];
        cmap_rgb(cm, (N - 1 - i) / (double)(N - 1), rgb);
        *(uint32_t *)(px + (size_t)i * stride) =
            0xFF000000u | ((uint32_t)rgb[0] << 16) | ((uint32_t)rgb[1] << 8) | rgb[2];
    }
    cairo_surface_mark_dirty(img);
    paint_scaled(c->cr, img, 1, N, x, y, w, h, 1);
    return 0;
}

/* ---- PNG output ---------------------------------------------------------------- */

static cairo_status_t file_writer(void *closure, const unsigned char *data, unsigned int len)
{
    return fwrite(data, 1, len, (FILE *)closure) == len ? CAIRO_STATUS_SUCCESS
                                                        : CAIRO_STATUS_WRITE_ERROR;
}

/* c:write_png(path): writes path .. ".tmp", then renames it to path. */
static int c_write_png(lua_State *L)
{
    canvas *c = check_canvas(L);
    const char *path = luaL_checkstring(L, 2);
    const char *tmp = lua_pushfstring(L, "%s.tmp", path);
    cairo_surface_flush(c->surface);
    FILE *f = fopen(tmp, "wb");
    if (!f) return luaL_error(L, "plot: cannot write '%s': %s", path, strerror(errno));
    cairo_status_t st = cairo_surface_write_to_png_stream(c->surface, file_writer, f);
    int err = ferror(f) ? errno : 0;
    if (fclose(f) != 0 && !err) err = errno ? errno : EIO;
    if (st != CAIRO_STATUS_SUCCESS || err) {
        remove(tmp);
        return luaL_error(L, "plot: cannot write '%s': %s", path,
                          err ? strerror(err) : cairo_status_to_string(st));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return luaL_error(L, "plot: cannot write '%s': %s", path, strerror(err));
    }
    return 0;
}

/* ---- PNG inspection ------------------------------------------------------------- */

/* Loads a PNG as an ARGB32/RGB24 surface or raises an error naming it. */
static cairo_surface_t *load_png(lua_State *L, const char *path, const char *what)
{
    /* cairo reports a file that is not a PNG as "out of memory": look first. */
    static const unsigned char SIG[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) luaL_error(L, "%s: cannot read '%s': %s", what, path, strerror(errno));
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got != sizeof head || memcmp(head, SIG, sizeof head) != 0)
        luaL_error(L, "%s: cannot read '%s': not a PNG file", what, path);
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
    cairo_status_t st = cairo_surface_status(s);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        luaL_error(L, "%s: cannot read '%s': not a readable PNG (%s)", what, path,
                   cairo_status_to_string(st));
    }
    cairo_format_t fmt = cairo_image_surface_get_format(s);
    if (fmt != CAIRO_FORMAT_ARGB32 && fmt != CAIRO_FORMAT_RGB24) {
        cairo_surface_destroy(s);
        luaL_error(L, "%s: '%s' has a pixel format that is not RGB", what, path);
    }
    cairo_surface_flush(s);
    return s;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* P.png_info(path) -> {width, height, colors = distinct colours, mean =
 * mean of (r + g + b) / 3 over the pixels, 0..255} */
static int p_png_info(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    cairo_surface_t *s = load_png(L, path, "plot.png_info");
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    int opaque = cairo_image_surface_get_format(s) == CAIRO_FORMAT_RGB24;
    const unsigned char *px = cairo_image_surface_get_data(s);
    size_t n = (size_t)w * (size_t)h;
    uint32_t *all = malloc(n ? n * sizeof *all : 1);
    if (!all) {
        cairo_surface_destroy(s);
        return luaL_error(L, "plot.png_info: out of memory for '%s'", path);
    }
    double sum = 0;
    for (int i = 0; i < h; i++) {
        const uint32_t *line = (const uint32_t *)(px + (size_t)i * stride);
        for (int j = 0; j < w; j++) {
            uint32_t v = opaque ? (line[j] | 0xFF000000u) : line[j];
            all[(size_t)i * w + j] = v;
            sum += (((v >> 16) & 255) + ((v >> 8) & 255) + (v & 255)) / 3.0;
        }
    }
    cairo_surface_destroy(s);
    qsort(all, n, sizeof *all, cmp_u32);
    lua_Integer colors = n ? 1 : 0;
    for (size_t k = 1; k < n; k++) colors += all[k] != all[k - 1];
    free(all);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, w);
    lua_setfield(L, -2, "width");
    lua_pushinteger(L, h);
    lua_setfield(L, -2, "height");
    lua_pushinteger(L, colors);
    lua_setfield(L, -2, "colors");
    lua_pushnumber(L, n ? sum / (double)n : 0);
    lua_setfield(L, -2, "mean");
    return 1;
}

/* P.png_pixel(path, x, y) -> r, g, b, a (0..255, not premultiplied) */
static int p_png_pixel(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer x = luaL_checkinteger(L, 2), y = luaL_checkinteger(L, 3);
    cairo_surface_t *s = load_png(L, path, "plot.png_pixel");
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    if (x < 0 || y < 0 || x >= w || y >= h) {
        cairo_surface_destroy(s);
        return luaL_error(L, "plot.png_pixel: pixel (%d, %d) outside the %dx%d picture '%s'", (int)x,
                          (int)y, w, h, path);
    }
    const unsigned char *px = cairo_image_surface_get_data(s);
    uint32_t v = ((const uint32_t *)(px + (size_t)y * cairo_image_surface_get_stride(s)))[x];
    if (cairo_image_surface_get_format(s) == CAIRO_FORMAT_RGB24) v |= 0xFF000000u;
    cairo_surface_destroy(s);
    unsigned a = v >> 24, ch[3] = {(v >> 16) & 255, (v >> 8) & 255, v & 255};
    for (int i = 0; i < 3; i++)
        lua_pushinteger(L, a == 0 ? 0 : a == 255 ? ch[i] : (ch[i] * 255 + a / 2) / a);
    lua_pushinteger(L, a);
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
        lua_pushcfunction(L, c_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, c_gc);
        lua_setfield(L, -2, "__close");
        lua_pushliteral(L, CANVAS_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    luaL_newlib(L, plot_funcs);
    return 1;
}
