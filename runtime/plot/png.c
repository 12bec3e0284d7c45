/* PNG inspection: the tests read pictures back (size, colours, pixels). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cairo.h>
#include "machrt/plot.h"

/* Loads a PNG as an ARGB32/RGB24 surface, or fails naming it. */
static mrt_status load_png(const char *op, const char *path, cairo_surface_t **out)
{
    /* cairo reports a file that is not a PNG as "out of memory": look first. */
    static const unsigned char SIG[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return mrt_fail(MRT_ERR_IO, "%s: cannot read '%s': %s", op, path, strerror(errno));
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got != sizeof head || memcmp(head, SIG, sizeof head) != 0)
        return mrt_fail(MRT_ERR_FORMAT, "%s: cannot read '%s': not a PNG file", op, path);
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
    cairo_status_t st = cairo_surface_status(s);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        return mrt_fail(MRT_ERR_FORMAT, "%s: cannot read '%s': not a readable PNG (%s)", op, path,
                        cairo_status_to_string(st));
    }
    cairo_format_t fmt = cairo_image_surface_get_format(s);
    if (fmt != CAIRO_FORMAT_ARGB32 && fmt != CAIRO_FORMAT_RGB24) {
        cairo_surface_destroy(s);
        return mrt_fail(MRT_ERR_FORMAT, "%s: '%s' has a pixel format that is not RGB", op, path);
    }
    cairo_surface_flush(s);
    *out = s;
    return MRT_OK;
}

/* Pixel (x, y) as ARGB with the alpha made explicit for RGB24 files. */
static uint32_t argb_at(cairo_surface_t *s, int x, int y)
{
    const unsigned char *px = cairo_image_surface_get_data(s);
    uint32_t v = ((const uint32_t *)(px + (size_t)y * cairo_image_surface_get_stride(s)))[x];
    return cairo_image_surface_get_format(s) == CAIRO_FORMAT_RGB24 ? v | 0xFF000000u : v;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

mrt_status mrt_png_read_info(const char *op, const char *path, mrt_png_info *out)
{
    cairo_surface_t *s;
    mrt_status st = load_png(op, path, &s);
    if (st != MRT_OK) return st;
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    size_t n = (size_t)w * (size_t)h;
    uint32_t *all = malloc(n ? n * sizeof *all : 1);
    if (!all) {
        cairo_surface_destroy(s);
        return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for '%s'", op, path);
    }
    double sum = 0;
    for (int i = 0; i < h; i++) {
        for (int j = 0; j < w; j++) {
            uint32_t v = argb_at(s, j, i);
            all[(size_t)i * w + j] = v;
            sum += (((v >> 16) & 255) + ((v >> 8) & 255) + (v & 255)) / 3.0;
        }
    }
    cairo_surface_destroy(s);
    qsort(all, n, sizeof *all, cmp_u32);
    int64_t colors = n ? 1 : 0;
    for (size_t k = 1; k < n; k++) colors += all[k] != all[k - 1];
    free(all);
    out->width = w;
    out->height = h;
    out->colors = colors;
    out->mean = n ? sum / (double)n : 0;
    return MRT_OK;
}

mrt_status mrt_png_read_pixel(const char *op, const char *path, int x, int y, int rgba[4])
{
    cairo_surface_t *s;
    mrt_status st = load_png(op, path, &s);
    if (st != MRT_OK) return st;
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    if (x < 0 || y < 0 || x >= w || y >= h) {
        cairo_surface_destroy(s);
        return mrt_fail(MRT_ERR_INDEX, "%s: pixel (%d, %d) outside the %dx%d picture '%s'", op, x,
                        y, w, h, path);
    }
    uint32_t v = argb_at(s, x, y);
    cairo_surface_destroy(s);
    unsigned a = v >> 24, ch[3] = {(v >> 16) & 255, (v >> 8) & 255, v & 255};
    /* cairo keeps colours premultiplied by alpha: undo it. */
    for (int i = 0; i < 3; i++)
        rgba[i] = (int)(a == 0 ? 0 : a == 255 ? ch[i] : (ch[i] * 255 + a / 2) / a);
    rgba[3] = (int)a;
    return MRT_OK;
}
