/* The canvas: a white ARGB32 cairo surface, paths, text and PNG output. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "canvas_internal.h"
#include "machrt/sys.h"

mrt_status mrt_canvas_new(int w, int h, mrt_canvas **out)
{
    *out = NULL;
    if (w < 1 || h < 1 || w > MRT_PLOT_MAX_SIDE || h > MRT_PLOT_MAX_SIDE)
        return mrt_fail(MRT_ERR_ARG, "plot: picture size %dx%d out of range (1 to %d pixels a side)",
                        w, h, MRT_PLOT_MAX_SIDE);
    mrt_canvas *c = calloc(1, sizeof *c);
    if (!c) return mrt_fail(MRT_ERR_NOMEM, "plot: out of memory for a %dx%d picture", w, h);
    c->width = w;
    c->height = h;
    c->surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
    mrt_status st = MRT_OK;
    if (cairo_surface_status(c->surface) != CAIRO_STATUS_SUCCESS) {
        st = mrt_fail(MRT_ERR_NOMEM, "plot: cannot create a %dx%d picture: %s", w, h,
                      cairo_status_to_string(cairo_surface_status(c->surface)));
    } else {
        c->cr = cairo_create(c->surface);
        if (cairo_status(c->cr) != CAIRO_STATUS_SUCCESS)
            st = mrt_fail(MRT_ERR_NOMEM, "plot: cannot draw on a %dx%d picture: %s", w, h,
                          cairo_status_to_string(cairo_status(c->cr)));
    }
    if (st != MRT_OK) {
        mrt_canvas_free(c);
        return st;
    }
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    cairo_set_source_rgb(c->cr, 0, 0, 0);
    cairo_set_line_width(c->cr, 1);
    cairo_select_font_face(c->cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    *out = c;
    return MRT_OK;
}

void mrt_canvas_free(mrt_canvas *c)
{
    if (!c) return;
    if (c->cr) cairo_destroy(c->cr);
    if (c->surface) cairo_surface_destroy(c->surface);
    free(c);
}

void mrt_canvas_size(const mrt_canvas *c, int *width, int *height)
{
    *width = c->width;
    *height = c->height;
}

void mrt_canvas_color(mrt_canvas *c, double r, double g, double b, double a)
{
    cairo_set_source_rgba(c->cr, r, g, b, a);
}

void mrt_canvas_line_width(mrt_canvas *c, double w) { cairo_set_line_width(c->cr, w); }

void mrt_canvas_dash(mrt_canvas *c, double on, double off)
{
    double d[2] = {on, off};
    cairo_set_dash(c->cr, on > 0 ? d : NULL, on > 0 ? 2 : 0, 0);
}

void mrt_canvas_move_to(mrt_canvas *c, double x, double y) { cairo_move_to(c->cr, x, y); }
void mrt_canvas_line_to(mrt_canvas *c, double x, double y) { cairo_line_to(c->cr, x, y); }

void mrt_canvas_rect(mrt_canvas *c, double x, double y, double w, double h)
{
    cairo_rectangle(c->cr, x, y, w, h);
}

void mrt_canvas_circle(mrt_canvas *c, double x, double y, double r)
{
    cairo_new_sub_path(c->cr);
    cairo_arc(c->cr, x, y, r, 0, 2 * M_PI);
    cairo_close_path(c->cr);
}

void mrt_canvas_path(mrt_canvas *c, mrt_path_op op)
{
    static void (*const ops[])(cairo_t *) = {
        [MRT_PATH_CLOSE] = cairo_close_path, [MRT_PATH_NEW] = cairo_new_path,
        [MRT_PATH_STROKE] = cairo_stroke,    [MRT_PATH_FILL] = cairo_fill,
        [MRT_PATH_CLIP] = cairo_clip,        [MRT_STATE_SAVE] = cairo_save,
        [MRT_STATE_RESTORE] = cairo_restore};
    if ((unsigned)op < sizeof ops / sizeof ops[0]) ops[op](c->cr);
}

/* ---- text ------------------------------------------------------------------ */

static void set_font(cairo_t *cr, double size, int bold)
{
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

double mrt_canvas_text(mrt_canvas *c, const char *s, double x, double y, const mrt_text_style *st)
{
    cairo_t *cr = c->cr;
    cairo_save(cr);
    set_font(cr, st->size, st->bold);
    cairo_text_extents_t te, digit;
    cairo_font_extents_t fe;
    cairo_text_extents(cr, s, &te);
    cairo_text_extents(cr, "0", &digit);
    cairo_font_extents(cr, &fe);
    double cap = -digit.y_bearing; /* height of a digit: a steady "top" for labels */
    double dx = st->halign == MRT_HALIGN_LEFT ? 0
                : st->halign == MRT_HALIGN_CENTER ? -te.x_advance / 2 : -te.x_advance;
    double dy = st->valign == MRT_VALIGN_BASELINE ? 0
                : st->valign == MRT_VALIGN_TOP    ? cap
                : st->valign == MRT_VALIGN_MIDDLE ? cap / 2 : -fe.descent;
    cairo_translate(cr, x, y);
    if (st->angle != 0) cairo_rotate(cr, -st->angle * M_PI / 180);
    cairo_move_to(cr, dx, dy);
    cairo_show_text(cr, s);
    cairo_new_path(cr);
    cairo_restore(cr);
    return te.x_advance;
}

double mrt_canvas_text_width(mrt_canvas *c, const char *s, double size, int bold)
{
    cairo_save(c->cr);
    set_font(c->cr, size, bold);
    cairo_text_extents_t te;
    cairo_text_extents(c->cr, s, &te);
    cairo_restore(c->cr);
    return te.x_advance;
}

/* ---- PNG output ---------------------------------------------------------------- */

static cairo_status_t file_writer(void *closure, const unsigned char *data, unsigned int len)
{
    return fwrite(data, 1, len, (FILE *)closure) == len ? CAIRO_STATUS_SUCCESS
                                                        : CAIRO_STATUS_WRITE_ERROR;
}

mrt_status mrt_canvas_write_png(mrt_canvas *c, const char *path)
{
    char *tmp = mrt_sys_temp_name(path);
    if (!tmp) return mrt_fail(MRT_ERR_NOMEM, "plot: out of memory writing '%s'", path);
    cairo_surface_flush(c->surface);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        mrt_status st = mrt_fail(MRT_ERR_IO, "plot: cannot write '%s': %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    cairo_status_t cst = cairo_surface_write_to_png_stream(c->surface, file_writer, f);
    int err = ferror(f) ? errno : 0;
    if (fclose(f) != 0 && !err) err = errno ? errno : EIO;
    if (cst == CAIRO_STATUS_SUCCESS && !err && rename(tmp, path) != 0) err = errno;
    mrt_status st = MRT_OK;
    if (cst != CAIRO_STATUS_SUCCESS || err) {
        remove(tmp);
        st = mrt_fail(MRT_ERR_IO, "plot: cannot write '%s': %s", path,
                      err ? strerror(err) : cairo_status_to_string(cst));
    }
    free(tmp);
    return st;
}
