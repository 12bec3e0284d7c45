/* Internal interface of the 2-D convolution kernels (not installed).
 *
 * conv2d.c checks arguments, makes operands contiguous and picks an
 * algorithm per shape and direction; the algorithms live in conv2d_gemm.c
 * (im2col + sgemm, and 1x1 convolutions as plain GEMMs) and
 * conv2d_winograd.c (Winograd F(4x4, 3x3) and F(2x2, 3x3) for 3x3 stride-1
 * convolutions, with AVX-512 and AVX2 tile transforms in
 * conv2d_winograd_avx512.c and conv2d_winograd_avx2.c, both written once in
 * conv2d_winograd_simd.h). The tests
 * and the benchmark call the *_opts entry points to force every path on any
 * shape. */
#ifndef MACHRT_NN_CONV2D_H
#define MACHRT_NN_CONV2D_H

#include <stddef.h>
#include <stdint.h>
#include "machrt/nn.h"

typedef enum {
    MRT_CONV_AUTO = 0,   /* chosen by shape and direction (mrt_conv2d_choose) */
    MRT_CONV_IM2COL,     /* im2col + sgemm; any kernel, stride, padding */
    MRT_CONV_GEMM1X1,    /* 1x1, stride 1, no padding: sgemm on the input itself */
    MRT_CONV_WINOGRAD,   /* 3x3, stride 1, padding <= 2: Winograd F(4x4, 3x3) */
    MRT_CONV_WINOGRAD2,  /* the same shapes, Winograd F(2x2, 3x3) */
    MRT_CONV_ONEDNN      /* oneDNN's convolution primitives; shapes it accepts */
} mrt_conv_algo;

typedef struct {
    mrt_conv_algo algo;
    /* Images per GEMM chunk (im2col and 1x1), or tile rows (m output rows
     * of one image) per transform group (Winograd); 0 = chosen from the
     * shape. Tests set it to cover the one-image and many-image code. */
    int64_t images_per_block;
    /* Winograd only: 1 = the portable C transforms even where the CPU has
     * AVX2 (the tests check both). */
    int portable;
} mrt_conv2d_opts;

/* Shape of one convolution, resolved and checked by conv2d.c. */
typedef struct {
    int64_t n, c, h, w;    /* input */
    int64_t o, kh, kw;     /* weight */
    int64_t oh, ow;        /* output */
    int64_t sh, sw, ph, pw;
} mrt_conv_geom;

const char *mrt_conv_algo_name(mrt_conv_algo algo);
/* Whether `algo` can compute this shape (AUTO: always). */
int mrt_conv2d_algo_supports(mrt_conv_algo algo, const mrt_conv_geom *g);
/* The algorithm the dispatcher uses for this shape, for the forward pass
 * (backward = 0) or the backward pass (1). */
mrt_conv_algo mrt_conv2d_choose(const mrt_conv_geom *g, int backward);
/* The choice among machrt's own kernels, oneDNN's left out. */
mrt_conv_algo mrt_conv2d_choose_own(const mrt_conv_geom *g, int backward);

/* Same contract as mrt_conv2d_forward / mrt_conv2d_backward, with the
 * algorithm and blocking forced by `opts` (NULL = automatic). A forced
 * algorithm that cannot compute the shape is an MRT_ERR_ARG. */
mrt_status mrt_conv2d_forward_opts(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                   const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws,
                                   const mrt_conv2d_opts *opts);
mrt_status mrt_conv2d_backward_opts(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                    const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                    mrt_tensor *db, mrt_workspace *ws,
                                    const mrt_conv2d_opts *opts);

/* ---- algorithm kernels: contiguous float32 NCHW buffers, shapes checked.
 * y/dx are written in full; dw (O*C*KH*KW floats) accumulates (+=); dx or dw
 * NULL skips it. The bias is added by the forward kernels; db is computed by
 * conv2d.c. `nb` = images per chunk or tile rows per group (>= 1). The
 * scratch sizes depend on omp_get_max_threads(), which must not change
 * between sizing and the call. */

/* Floats of scratch the kernels below need (they take `scratch` of at
 * least that size, 64-byte aligned). */
size_t mrt_conv_gemm_fwd_scratch(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb);
size_t mrt_conv_gemm_bwd_scratch(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                                 int want_dx, int want_dw);
void mrt_conv_gemm_forward(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                           const float *x, const float *w, const float *bias, float *y,
                           float *scratch);
void mrt_conv_gemm_backward(const mrt_conv_geom *g, mrt_conv_algo algo, int64_t nb,
                            const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *scratch);
/* Images per chunk the GEMM paths use when not forced. */
int64_t mrt_conv_gemm_block(const mrt_conv_geom *g, mrt_conv_algo algo);

/* Winograd with output tiles of m x m (m = 4: F(4x4, 3x3), m = 2:
 * F(2x2, 3x3)); nb = tile rows per group. */
size_t mrt_conv_wino_fwd_scratch(const mrt_conv_geom *g, int m, int64_t nb);
size_t mrt_conv_wino_bwd_scratch(const mrt_conv_geom *g, int m, int64_t nb, int want_dx,
                                 int want_dw);
void mrt_conv_wino_forward(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                           const float *x, const float *w, const float *bias, float *y,
                           float *scratch);
void mrt_conv_wino_backward(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                            const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *scratch);
int64_t mrt_conv_wino_block(const mrt_conv_geom *g, int m);

/* Inference (the plan, runtime/cpu/infer_plan.c): the forward pass with
 * the kernels transformed once beforehand and, applied to each tile row as
 * soon as the output transform has written it (while it is in cache), a
 * residual sum and a ReLU. `residual` has y's shape and must not be y. */
typedef struct {
    const float *residual; /* NULL: none */
    int relu;
} mrt_wino_epilogue;
/* Floats of u (64-byte aligned) and the kernels transformed into it. */
size_t mrt_conv_wino_weights_floats(const mrt_conv_geom *g, int m);
void mrt_conv_wino_weights(const mrt_conv_geom *g, int m, const float *w, float *u);
/* Floats of scratch the fused pass takes besides u (same thread rule). */
size_t mrt_conv_wino_fused_scratch(const mrt_conv_geom *g, int m, int64_t nb);
void mrt_conv_wino_forward_fused(const mrt_conv_geom *g, int m, int64_t nb, int portable,
                                 const float *x, const float *u, const float *bias,
                                 const mrt_wino_epilogue *ep, float *y, float *scratch);

/* oneDNN convolutions (conv2d_dnnl.c), fp32, or bf16 operands (bf16 = 1)
 * with fp32 accumulation and outputs. `inference` forward passes may use
 * kernels that keep nothing for a backward pass. supports: whether oneDNN
 * has the primitive (made and cached by the call); the scratch functions
 * give the floats of 64-byte aligned scratch the calls take (the operands
 * in oneDNN's layouts and its own scratchpad). The calls return 0 when
 * oneDNN failed (nothing is written then only if it failed before
 * starting). */
int mrt_conv_dnnl_supports(const mrt_conv_geom *g, int bf16, int inference, int bias,
                           int backward);
size_t mrt_conv_dnnl_fwd_scratch(const mrt_conv_geom *g, int bf16, int inference, int bias);
size_t mrt_conv_dnnl_bwd_scratch(const mrt_conv_geom *g, int bf16);
int mrt_conv_dnnl_forward(const mrt_conv_geom *g, int bf16, int inference, const float *x,
                          const float *w, const float *bias, float *y, float *scratch);
int mrt_conv_dnnl_backward(const mrt_conv_geom *g, int bf16, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *scratch);

/* Winograd tile transforms (of one tile size m) for `lanes` horizontally
 * adjacent tiles at a time (fewer, `cnt`, at the end of a tile row). V and M
 * are [(m+2)^2][rows][T] with `stride` floats between the positions; see
 * conv2d_winograd.c. With
 * cnt < lanes, `input` and `grad` may still store all `lanes` values of each
 * position (the caller lays V out so that the extra ones land on tiles it
 * writes afterwards or in padding) and `output` may load them (the caller
 * keeps them finite); only cnt tiles of output are written. */
typedef struct {
    const char *name;
    int lanes;
    /* V of the tiles whose (m+2)^2 patches start at (iy0, ix0 + m l). */
    void (*input)(const float *plane, int64_t h, int64_t w, int64_t iy0, int64_t ix0, int cnt,
                  float *v, size_t stride);
    /* Output tiles at (oy0, ox0 + m l) from M, plus bias, clipped to the plane. */
    void (*output)(const float *m, size_t stride, int cnt, float bias, float *plane, int64_t oh,
                   int64_t ow, int64_t oy0, int64_t ox0);
    /* A dY A^T of the m x m gradient tiles at (oy0, ox0 + m l), zero outside. */
    void (*grad)(const float *plane, int64_t oh, int64_t ow, int64_t oy0, int64_t ox0, int cnt,
                 float *v, size_t stride);
} mrt_wino_kernels;

/* The AVX2 + FMA (8 lanes) and AVX-512 (16 lanes) transforms for tile size
 * m, or NULL when the CPU (or the build) lacks them; both give the same bits. */
const mrt_wino_kernels *mrt_wino_kernels_avx2(int m);
const mrt_wino_kernels *mrt_wino_kernels_avx512(int m);
/* NULL: AVX-512, else AVX2, else portable C, as mrt_cpu_features() allows.
 * "portable", "avx2" or "avx512f": that version, or NULL where the CPU
 * lacks it (tests compare them). */
const mrt_wino_kernels *mrt_wino_kernels_pick(const char *name, int m);

/* The kernel (weight) transforms of alpha x alpha patches (alpha = m + 2),
 * `lanes` kernels a call:
 *   transform: u[xi * stride + l] = (G g_l G^T)[xi] for the 3x3 kernels
 *              g_l = src + l * lstride (rotated by 180 degrees when rot), l < cnt
 *   grad:      dw[9 l ..] += G^T du_l G, du_l[xi] = du[xi * stride + l], l < cnt
 * Every version gives the same bits. */
typedef struct {
    const char *name;
    int lanes;
    void (*transform)(int alpha, const float *src, int64_t lstride, int rot, int cnt, float *u,
                      size_t stride);
    void (*grad)(int alpha, const float *du, size_t stride, int cnt, float *dw);
} mrt_wino_weight_kernels;
/* As mrt_wino_kernels_pick: NULL for the best the CPU allows. */
const mrt_wino_weight_kernels *mrt_wino_weight_kernels_pick(const char *name);
/* dst[u] = row[ix0 + u] for u < len, zero where ix0 + u is outside [0, w). */
void mrt_wino_load_row(float *dst, const float *row, int64_t w, int64_t ix0, int64_t len);

/* OpenMP loops run in parallel only above this much work (elements
 * touched): waking the second thread costs microseconds, and when the
 * machine is oversubscribed a barrier can wait a whole scheduler slice, which
 * small convolutions (the tests, a ResNet's last layers at batch 1) must not
 * pay. */
#define MRT_CONV_PAR_MIN ((int64_t)1 << 15)

/* Rounds a float count up to whole 64-byte lines, so that buffers carved
 * one after another from a workspace all stay 64-byte aligned. */
static inline size_t mrt_conv_align16(size_t floats) { return (floats + 15) & ~(size_t)15; }

#endif
