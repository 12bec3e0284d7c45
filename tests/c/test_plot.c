/* The plot core (runtime/plot/): colormaps against matplotlib's published
 * end points, finite ranges over strided views, and pictures drawn, written
 * and read back pixel by pixel. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_util.h"
#include "machrt/plot.h"

/* matplotlib: viridis(0) = (0.267004, 0.004874, 0.329415), viridis(1) =
 * (0.993248, 0.906157, 0.143936); magma(0) = (0.001462, 0.000466,
 * 0.013866), magma(1) = (0.987053, 0.991438, 0.749504). */
START_TEST(colormap_end_points_are_matplotlibs)
{
    unsigned char c[3];
    mrt_colormap_rgb(MRT_CMAP_VIRIDIS, 0.0, c);
    ck_assert(c[0] == 68 && c[1] == 1 && c[2] == 84);
    mrt_colormap_rgb(MRT_CMAP_VIRIDIS, 1.0, c);
    ck_assert(c[0] == 253 && c[1] == 231 && c[2] == 37);
    mrt_colormap_rgb(MRT_CMAP_MAGMA, 0.0, c);
    ck_assert(c[0] == 0 && c[1] == 0 && c[2] == 4);
    mrt_colormap_rgb(MRT_CMAP_MAGMA, 1.0, c);
    ck_assert(c[0] == 252 && c[1] == 253 && c[2] == 191);
    mrt_colormap_rgb(MRT_CMAP_GRAY, 0.5, c);
    ck_assert(c[0] == 128 && c[1] == 128 && c[2] == 128);
    mrt_colormap_rgb(MRT_CMAP_VIRIDIS, 7.0, c); /* clamped */
    ck_assert(c[0] == 253 && c[1] == 231 && c[2] == 37);
    unsigned char n1[3], n2[3];
    mrt_colormap_rgb(MRT_CMAP_VIRIDIS, NAN, n1);
    mrt_colormap_rgb(MRT_CMAP_MAGMA, NAN, n2);
    ck_assert(n1[0] == n1[1] && n1[1] == n1[2] && memcmp(n1, n2, 3) == 0);
    ck_assert_str_eq(mrt_colormap_names[MRT_CMAP_GRAY], "gray");
}
END_TEST

START_TEST(finite_range_skips_nan_and_infinity_and_follows_strides)
{
    mrt_tensor t = {0}, v = {0};
    TU_ALLOC(&t, MRT_F32, 3, 4);
    float *d = mrt_f32(&t);
    for (int i = 0; i < 12; i++) d[i] = (float)i;
    d[0] = NAN;
    d[11] = INFINITY;
    double lo, hi;
    ck_assert_int_eq(mrt_finite_range(&t, &lo, &hi), 10);
    ck_assert(lo == 1 && hi == 10);
    /* Column 2 of the transposed view: elements 1, 5, 9 of the storage. */
    TU_OK(mrt_view_transpose(&t, 0, 1, &v));
    mrt_tensor col = {0};
    TU_OK(mrt_view_select(&v, 0, 1, &col));
    ck_assert_int_eq(mrt_finite_range(&col, &lo, &hi), 3);
    ck_assert(lo == 1 && hi == 9);
    mrt_tensor_release(&col);
    mrt_tensor_release(&v);
    mrt_tensor_release(&t);
}
END_TEST

static void scratch_png(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/machrt-plot-%d.png", (int)getpid());
}

/* A 2x2 gray image stretched over a 100x100 canvas: each quarter carries
 * its cell's gray exactly (nearest-neighbour), row 1 on top. */
START_TEST(image_cells_land_in_their_quarters)
{
    mrt_canvas *c;
    TU_OK(mrt_canvas_new(100, 100, &c));
    mrt_tensor t = {0};
    TU_ALLOC(&t, MRT_F32, 2, 2);
    float *d = mrt_f32(&t);
    d[0] = 0.0f, d[1] = 1.0f, d[2] = 2.0f, d[3] = 4.0f;
    mrt_image_style st = {MRT_CMAP_GRAY, 0.0, 4.0, 0, 0};
    TU_OK(mrt_canvas_image(c, &t, 0, 0, 100, 100, &st));
    char path[64];
    scratch_png(path, sizeof path);
    TU_OK(mrt_canvas_write_png(c, path));
    static const struct { int x, y, gray; } Q[] = {
        {25, 25, 0}, {75, 25, 64}, {25, 75, 128}, {75, 75, 255}};
    for (int k = 0; k < 4; k++) {
        int rgba[4];
        TU_OK(mrt_png_read_pixel("test", path, Q[k].x, Q[k].y, rgba));
        ck_assert_msg(rgba[0] == Q[k].gray && rgba[1] == Q[k].gray && rgba[2] == Q[k].gray &&
                          rgba[3] == 255, "quarter %d: %d %d %d %d", k, rgba[0], rgba[1],
                      rgba[2], rgba[3]);
    }
    mrt_png_info info;
    TU_OK(mrt_png_read_info("test", path, &info));
    ck_assert_int_eq(info.width, 100);
    ck_assert_int_eq(info.height, 100);
    ck_assert_int_eq(info.colors, 4);
    ck_assert(fabs(info.mean - (0 + 64 + 128 + 255) / 4.0) < 1e-9);
    TU_FAILS(MRT_ERR_INDEX, mrt_png_read_pixel("test", path, 100, 0, (int[4]){0}));
    unlink(path);
    mrt_tensor_release(&t);
    mrt_canvas_free(c);
}
END_TEST

START_TEST(text_and_shapes_draw_and_measure)
{
    mrt_canvas *c;
    TU_OK(mrt_canvas_new(200, 60, &c));
    double w1 = mrt_canvas_text_width(c, "1", 12, 0);
    double w3 = mrt_canvas_text_width(c, "111", 12, 0);
    ck_assert(w1 > 0 && fabs(w3 - 3 * w1) < 1e-6);
    ck_assert(mrt_canvas_text_width(c, "1", 24, 0) > 1.5 * w1); /* hinting rounds advances */
    mrt_text_style st = {20, 1, MRT_HALIGN_CENTER, MRT_VALIGN_MIDDLE, 0};
    ck_assert(fabs(mrt_canvas_text(c, "111", 100, 30, &st) - mrt_canvas_text_width(c, "111", 20, 1)) < 1e-6);
    mrt_canvas_color(c, 1, 0, 0, 1);
    mrt_canvas_rect(c, 0, 0, 10, 10);
    mrt_canvas_path(c, MRT_PATH_FILL);
    char path[64];
    scratch_png(path, sizeof path);
    TU_OK(mrt_canvas_write_png(c, path));
    int rgba[4];
    TU_OK(mrt_png_read_pixel("test", path, 5, 5, rgba));
    ck_assert(rgba[0] == 255 && rgba[1] == 0 && rgba[2] == 0);
    TU_OK(mrt_png_read_pixel("test", path, 199, 0, rgba)); /* untouched: white */
    ck_assert(rgba[0] == 255 && rgba[1] == 255 && rgba[2] == 255);
    mrt_png_info info;
    TU_OK(mrt_png_read_info("test", path, &info));
    ck_assert(info.colors > 3); /* white, red, and the anti-aliased text */
    unlink(path);
    mrt_canvas_free(c);
}
END_TEST

START_TEST(bad_input_fails_naming_it)
{
    mrt_canvas *c = NULL;
    TU_FAILS(MRT_ERR_ARG, mrt_canvas_new(0, 10, &c));
    TU_MSG_HAS("0x10");
    ck_assert_ptr_null(c);
    TU_FAILS(MRT_ERR_ARG, mrt_canvas_new(10, MRT_PLOT_MAX_SIDE + 1, &c));
    TU_OK(mrt_canvas_new(10, 10, &c));
    mrt_tensor t = {0};
    TU_ALLOC(&t, MRT_F32, 4);
    mrt_image_style st = {MRT_CMAP_VIRIDIS, 0.0, 1.0, 0, 0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_canvas_image(c, &t, 0, 0, 10, 10, &st));
    TU_MSG_HAS("2-d");
    mrt_tensor_release(&t);
    TU_ALLOC(&t, MRT_F32, 2, 2);
    st.vmin = NAN;
    TU_FAILS(MRT_ERR_ARG, mrt_canvas_image(c, &t, 0, 0, 10, 10, &st));
    TU_MSG_HAS("vmin");
    st.vmin = 0;
    TU_FAILS(MRT_ERR_ARG, mrt_canvas_image(c, &t, 0, 0, 0, 10, &st));
    TU_MSG_HAS("empty");
    mrt_tensor_release(&t);
    TU_ALLOC(&t, MRT_I64, 2, 2);
    TU_FAILS(MRT_ERR_DTYPE, mrt_canvas_image(c, &t, 0, 0, 10, 10, &st));
    mrt_tensor_release(&t);
    TU_FAILS(MRT_ERR_IO, mrt_canvas_write_png(c, "/nonexistent-folder/x.png"));
    TU_MSG_HAS("cannot write");
    mrt_canvas_free(c);

    char path[64];
    scratch_png(path, sizeof path);
    FILE *f = fopen(path, "wb");
    fputs("not a picture", f);
    fclose(f);
    mrt_png_info info;
    TU_FAILS(MRT_ERR_FORMAT, mrt_png_read_info("plot.png_info", path, &info));
    TU_MSG_HAS("not a PNG");
    unlink(path);
    TU_FAILS(MRT_ERR_IO, mrt_png_read_info("plot.png_info", path, &info));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plot");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, colormap_end_points_are_matplotlibs);
    tcase_add_test(tc, finite_range_skips_nan_and_infinity_and_follows_strides);
    tcase_add_test(tc, image_cells_land_in_their_quarters);
    tcase_add_test(tc, text_and_shapes_draw_and_measure);
    tcase_add_test(tc, bad_input_fails_naming_it);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
