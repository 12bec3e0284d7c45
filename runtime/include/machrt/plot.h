/* A small cairo canvas for machrt.plot (which lays out axes, ticks,
 * legends and colorbars in Lua), colormaps, and PNG inspection.
 *
 * Coordinates are pixels from the top left. Every call that can fail names
 * "plot" (or the `op` given) in its message. A canvas is white and opaque
 * when made; the current colour starts black, the line width 1. */
#ifndef MACHRT_PLOT_H
#define MACHRT_PLOT_H

#include <stdint.h>
#include "machrt/status.h"
#include "machrt/tensor.h"

#define MRT_PLOT_MAX_SIDE 16384

typedef struct mrt_canvas mrt_canvas;

mrt_status mrt_canvas_new(int width, int height, mrt_canvas **out);
void mrt_canvas_free(mrt_canvas *c); /* NULL is fine */
void mrt_canvas_size(const mrt_canvas *c, int *width, int *height);

void mrt_canvas_color(mrt_canvas *c, double r, double g, double b, double a);
void mrt_canvas_line_width(mrt_canvas *c, double w);     /* w > 0 */
void mrt_canvas_dash(mrt_canvas *c, double on, double off); /* on <= 0: solid */
void mrt_canvas_move_to(mrt_canvas *c, double x, double y);
void mrt_canvas_line_to(mrt_canvas *c, double x, double y);
void mrt_canvas_rect(mrt_canvas *c, double x, double y, double w, double h);
void mrt_canvas_circle(mrt_canvas *c, double x, double y, double r);

typedef enum {
    MRT_PATH_CLOSE, MRT_PATH_NEW, MRT_PATH_STROKE, MRT_PATH_FILL, MRT_PATH_CLIP,
    MRT_STATE_SAVE, MRT_STATE_RESTORE
} mrt_path_op;
void mrt_canvas_path(mrt_canvas *c, mrt_path_op op);

typedef enum { MRT_HALIGN_LEFT, MRT_HALIGN_CENTER, MRT_HALIGN_RIGHT } mrt_halign;
/* top and middle use a digit's height, so labels of any text line up. */
typedef enum { MRT_VALIGN_BASELINE, MRT_VALIGN_TOP, MRT_VALIGN_MIDDLE, MRT_VALIGN_BOTTOM } mrt_valign;

typedef struct {
    double size; /* pixels, > 0 */
    int bold;
    mrt_halign halign;
    mrt_valign valign;
    double angle; /* degrees, counter-clockwise */
} mrt_text_style;

/* Draws `s` anchored at (x, y); returns its advance width. */
double mrt_canvas_text(mrt_canvas *c, const char *s, double x, double y, const mrt_text_style *st);
double mrt_canvas_text_width(mrt_canvas *c, const char *s, double size, int bold);

/* ---- colormaps (33 knots of matplotlib's tables, linear in between) ---- */

typedef enum { MRT_CMAP_VIRIDIS, MRT_CMAP_MAGMA, MRT_CMAP_GRAY, MRT_CMAP_COUNT } mrt_colormap;
extern const char *const mrt_colormap_names[]; /* NULL-terminated, in enum order */

/* u in [0, 1] (clamped; NaN gives a light gray outside every map's hues). */
void mrt_colormap_rgb(mrt_colormap cm, double u, unsigned char rgb[3]);

/* Min and max of the finite values of a float32 CPU tensor of any strides;
 * returns how many there are (0: lo and hi are meaningless). */
int64_t mrt_finite_range(const mrt_tensor *t, double *lo, double *hi);

typedef struct {
    mrt_colormap colormap;
    double vmin, vmax; /* finite; vmin == vmax paints the middle colour */
    int lower;         /* row 1 at the bottom (else at the top) */
    int smooth;        /* bilinear when enlarging (else sharp cells) */
} mrt_image_style;

/* Paints a 2-d float32 CPU tensor {rows, cols} into the rectangle. */
mrt_status mrt_canvas_image(mrt_canvas *c, const mrt_tensor *t, double x, double y, double w,
                            double h, const mrt_image_style *st);
/* The colormap from bottom (low) to top (high). */
mrt_status mrt_canvas_colorbar(mrt_canvas *c, double x, double y, double w, double h,
                               mrt_colormap cm);

/* Writes a temporary file next to path (mrt_sys_temp_name), then renames it to path. */
mrt_status mrt_canvas_write_png(mrt_canvas *c, const char *path);

/* ---- PNG inspection (the tests read pictures back) ----------------------- */

typedef struct {
    int width, height;
    int64_t colors; /* distinct colours */
    double mean;    /* mean of (r + g + b) / 3 over the pixels, 0..255 */
} mrt_png_info;

mrt_status mrt_png_read_info(const char *op, const char *path, mrt_png_info *out);
/* r, g, b, a in 0..255, not premultiplied; x, y from 0 at the top left. */
mrt_status mrt_png_read_pixel(const char *op, const char *path, int x, int y, int rgba[4]);

#endif
