/* Colormaps, finite data ranges, colormapped images and colorbars. */
#include <math.h>
#include <stdint.h>
#include "canvas_internal.h"

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

const char *const mrt_colormap_names[] = {"viridis", "magma", "gray", NULL};

/* NaN cells: light gray, outside every colormap's range of hues. */
static const double NAN_GRAY = 0.82;

void mrt_colormap_rgb(mrt_colormap cm, double u, unsigned char out[3])
{
    if (u != u) {
        out[0] = out[1] = out[2] = (unsigned char)(NAN_GRAY * 255 + 0.5);
        return;
    }
    if (u < 0) u = 0;
    if (u > 1) u = 1;
    if (cm == MRT_CMAP_GRAY) {
        out[0] = out[1] = out[2] = (unsigned char)(u * 255 + 0.5);
        return;
    }
    const rgb8 *k = cm == MRT_CMAP_MAGMA ? MAGMA : VIRIDIS;
    double x = u * 32;
    int i = (int)x;
    if (i > 31) i = 31;
    double f = x - i;
    out[0] = (unsigned char)(k[i].r + f * (k[i + 1].r - k[i].r) + 0.5);
    out[1] = (unsigned char)(k[i].g + f * (k[i + 1].g - k[i].g) + 0.5);
    out[2] = (unsigned char)(k[i].b + f * (k[i + 1].b - k[i].b) + 0.5);
}

static uint32_t opaque_pixel(mrt_colormap cm, double u)
{
    unsigned char rgb[3];
    mrt_colormap_rgb(cm, u, rgb);
    return 0xFF000000u | ((uint32_t)rgb[0] << 16) | ((uint32_t)rgb[1] << 8) | rgb[2];
}

/* ---- data ranges ----------------------------------------------------------- */

int64_t mrt_finite_range(const mrt_tensor *t, double *lo, double *hi)
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

static mrt_status new_image(const char *op, int cols, int rows, cairo_surface_t **out)
{
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols, rows);
    cairo_status_t st = cairo_surface_status(img);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return mrt_fail(MRT_ERR_NOMEM, "%s: cannot make a %dx%d image: %s", op, cols, rows,
                        cairo_status_to_string(st));
    }
    cairo_surface_flush(img);
    *out = img;
    return MRT_OK;
}

mrt_status mrt_canvas_image(mrt_canvas *c, const mrt_tensor *t, double x, double y, double w,
                            double h, const mrt_image_style *st)
{
    const char *op = "plot.image";
    if (!t || !t->storage) return mrt_fail(MRT_ERR_ARG, "%s: no tensor to draw", op);
    if (t->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: expected a float32 tensor, got %s", op,
                        mrt_dtype_name(t->dtype));
    if (t->storage->device != MRT_CPU)
        return mrt_fail(MRT_ERR_DEVICE, "%s: the tensor is on %s; move it with :to('cpu')", op,
                        mrt_device_name(t->storage->device));
    if (t->ndim != 2) {
        char buf[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: expected a 2-d tensor {rows, cols}, got shape %s", op,
                        mrt_shape_str(t->ndim, t->shape, buf, sizeof buf));
    }
    if (t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > MRT_PLOT_MAX_SIDE ||
        t->shape[1] > MRT_PLOT_MAX_SIDE)
        return mrt_fail(MRT_ERR_SHAPE, "%s: a %dx%d matrix cannot be drawn (1 to %d a side)", op,
                        (int)t->shape[0], (int)t->shape[1], MRT_PLOT_MAX_SIDE);
    if (!isfinite(st->vmin) || !isfinite(st->vmax))
        return mrt_fail(MRT_ERR_ARG, "%s: vmin and vmax must be finite (got %g, %g)", op,
                        st->vmin, st->vmax);
    if (!(w > 0 && h > 0)) return mrt_fail(MRT_ERR_ARG, "%s: the target rectangle is empty", op);
    int rows = (int)t->shape[0], cols = (int)t->shape[1];
    cairo_surface_t *img;
    mrt_status s = new_image(op, cols, rows, &img);
    if (s != MRT_OK) return s;
    unsigned char *px = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    const float *data = mrt_f32(t);
    double span = st->vmax - st->vmin;
    for (int i = 0; i < rows; i++) {
        uint32_t *line = (uint32_t *)(px + (size_t)(st->lower ? rows - 1 - i : i) * stride);
        for (int j = 0; j < cols; j++) {
            float v = data[i * t->stride[0] + j * t->stride[1]];
            double u = v != v ? NAN : span != 0 ? (v - st->vmin) / span : 0.5;
            line[j] = opaque_pixel(st->colormap, u);
        }
    }
    cairo_surface_mark_dirty(img);
    paint_scaled(c->cr, img, cols, rows, x, y, w, h, st->smooth);
    return MRT_OK;
}

mrt_status mrt_canvas_colorbar(mrt_canvas *c, double x, double y, double w, double h,
                               mrt_colormap cm)
{
    const char *op = "plot.colorbar";
    if (!(w > 0 && h > 0)) return mrt_fail(MRT_ERR_ARG, "%s: the target rectangle is empty", op);
    enum { N = 256 };
    cairo_surface_t *img;
    mrt_status s = new_image(op, 1, N, &img);
    if (s != MRT_OK) return s;
    unsigned char *px = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (int i = 0; i < N; i++)
        *(uint32_t *)(px + (size_t)i * stride) = opaque_pixel(cm, (N - 1 - i) / (double)(N - 1));
    cairo_surface_mark_dirty(img);
    paint_scaled(c->cr, img, 1, N, x, y, w, h, 1);
    return MRT_OK;
}
