/* The canvas as the plot units share it (machrt/plot.h keeps it opaque). */
#ifndef MACHRT_PLOT_CANVAS_INTERNAL_H
#define MACHRT_PLOT_CANVAS_INTERNAL_H

#include <cairo.h>
#include "machrt/plot.h"

struct mrt_canvas {
    cairo_surface_t *surface;
    cairo_t *cr;
    int width, height;
};

#endif
