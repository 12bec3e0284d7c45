/* 2-D convolution: argument checks, operand layout and the choice of
 * algorithm per shape and direction. The arithmetic lives in conv2d_gemm.c
 * (im2col + sgemm and 1x1 GEMMs) and conv2d_winograd.c (Winograd F(4x4, 3x3)
 * and F(2x2, 3x3)).
 *
 * 3x3 stride-1 layers (all but five of a ResNet34's convolutions) run
 * Winograd F(4x4, 3x3) forward and backward: a quarter of direct
 * convolution's multiplications, at a rounding error 3.5x that of direct
 * summation, still below float32's epsilon (see conv2d_winograd.c, which
 * also says why the forward pass no longer takes the more exact F(2x2, 3x3)).
 *
 * The kernels want contiguous NCHW buffers, so strided inputs are copied
 * once; outputs that are strided or share storage with an input are computed
 * aside and copied in (the kernels write outputs before they have read all of
 * the inputs). Scratch comes from the caller's workspace, which only grows, so
 * a training loop stops allocating after its first step. */
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include "machrt/backend.h"
#include "../cpu/gemm.h"
#include "conv2d.h"
#include "nn_args.h"
#include "nn_cpu.h"

/* Below this many input channels Winograd loses: its output transform
 * costs about as much per output as a GEMM with K = 9 C. Measured on 8
 * images of 64 x 96, one thread: 1 or 3 -> 64 channels, im2col 1.5-2.5x
 * faster; 4-6 -> 64 about even; 8 -> 64 even forward, Winograd 15% faster
 * backward; 16 -> 64 Winograd 1.4x / 1.7x; from 64 channels on 2.5-3x. */
#define WINO_MIN_CHANNELS 8

const char *mrt_conv_algo_name(mrt_conv_algo algo)
{
    switch (algo) {
    case MRT_CONV_AUTO: return "auto";
    case MRT_CONV_IM2COL: return "im2col";
    case MRT_CONV_GEMM1X1: return "gemm1x1";
    case MRT_CONV_WINOGRAD: return "winograd4x4";
    case MRT_CONV_WINOGRAD2: return "winograd2x2";
    case MRT_CONV_ONEDNN: return "onednn";
    }
    return "unknown";
}

int mrt_conv2d_algo_supports(mrt_conv_algo algo, const mrt_conv_geom *g)
{
    switch (algo) {
    case MRT_CONV_AUTO:
    case MRT_CONV_IM2COL: return 1;
    case MRT_CONV_GEMM1X1:
        return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    case MRT_CONV_WINOGRAD:
    case MRT_CONV_WINOGRAD2:
        /* dX runs as a convolution with padding 2 - pad, hence pad <= 2. */
        return g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->ph <= 2 && g->pw <= 2;
    case MRT_CONV_ONEDNN: {
        const int bf16 = mrt_cpu_gemm_bf16();
        return mrt_conv_dnnl_supports(g, bf16, 0, 0, 0) && mrt_conv_dnnl_supports(g, bf16, 0, 0, 1);
    }
    }
    return 0;
}

mrt_conv_algo mrt_conv2d_choose_own(const mrt_conv_geom *g, int backward)
{
    /* bf16 GEMMs would round Winograd's transformed tiles, not the layer's
     * operands: the error would grow with the transform's constants. */
    if (mrt_conv2d_algo_supports(MRT_CONV_WINOGRAD, g) && g->c >= WINO_MIN_CHANNELS &&
        !mrt_cpu_gemm_bf16())
        return MRT_CONV_WINOGRAD;
    if (mrt_conv2d_algo_supports(MRT_CONV_GEMM1X1, g)) return MRT_CONV_GEMM1X1;
    return MRT_CONV_IM2COL;
}

/* Where oneDNN's convolutions beat machrt's own kernels, measured per
 * ResNet34 layer shape in CPU time on one thread (build/bench/conv_layers
 * --vs-own --threads 1 --cpu, README "Convolutions on the CPU"):
 * - bf16: oneDNN's AMX kernels win on every layer with a kernel larger
 *   than 1x1, 4-7x on the 3x3 stride-1 ones; on the 1x1 stride-2
 *   downsampling machrt's GEMM on the strided quarter of the input wins
 *   (oneDNN reorders the whole input).
 * - fp32: machrt's Winograd does fewer multiplications than oneDNN's
 *   direct kernels and wins on 3x3 stride 1, and its 1x1 GEMMs win too;
 *   oneDNN wins the strided 3x3 layers (1.2-1.35x) and the stem's forward
 *   (1.5x), not the stem's weight gradient. */
static int onednn_preferred(const mrt_conv_geom *g, int backward)
{
    if (g->kh * g->kw == 1) return 0;
    (void)backward;
    /* fp32 stays on machrt's own kernels: oneDNN's strided fp32 layers won
     * only 1.7 % of the whole network's convolution time, and with them a
     * 2-rank sync-batch-norm run parted from one process on the same global
     * batch by 1.6e-4 relative after 4 steps (1.2e-7 without), which is not
     * yet explained. */
    return mrt_cpu_gemm_bf16();
}

mrt_conv_algo mrt_conv2d_choose(const mrt_conv_geom *g, int backward)
{
    if (onednn_preferred(g, backward) && mrt_conv2d_algo_supports(MRT_CONV_ONEDNN, g)) return MRT_CONV_ONEDNN;
    return mrt_conv2d_choose_own(g, backward);
}

/* ---- checks ------------------------------------------------------------------ */

#define SHP(t, buf) mrt_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

/* The geometry of checked arguments. */
static void geometry(const mrt_tensor *x, const mrt_tensor *w, const mrt_conv2d_params *p,
                     mrt_conv_geom *g)
{
    g->n = x->shape[0];
    g->c = x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->o = w->shape[0];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    g->sh = p->stride_h;
    g->sw = p->stride_w;
    g->ph = p->pad_h;
    g->pw = p->pad_w;
    g->oh = (g->h + 2 * g->ph - g->kh) / g->sh + 1;
    g->ow = (g->w + 2 * g->pw - g->kw) / g->sw + 1;
}

/* Checks x, w, b and the parameters against each other and fills `g`:
 * the one shape check of the layer, forward and backward, every device. */
static mrt_status resolve(const char *fn, const mrt_tensor *x, const mrt_tensor *w,
                          const mrt_tensor *b, const mrt_conv2d_params *p, mrt_conv_geom *g)
{
    char xs[MRT_SHAPE_STRLEN], ws[MRT_SHAPE_STRLEN], bs[MRT_SHAPE_STRLEN];
    mrt_status st;
    if ((st = mrt_nn_need_f32(fn, "input", x)) || (st = mrt_nn_need_f32(fn, "weight", w))) return st;
    if (b && (st = mrt_nn_need_f32(fn, "bias", b))) return st;
    if (!p) return mrt_fail(MRT_ERR_ARG, "%s: no convolution parameters given", fn);
    if (x->ndim != 4)
        return mrt_fail(MRT_ERR_SHAPE, "%s: input must be 4-D (N,C,H,W), got %s (weight %s)", fn,
                        SHP(x, xs), SHP(w, ws));
    if (w->ndim != 4)
        return mrt_fail(MRT_ERR_SHAPE, "%s: weight must be 4-D (O,C,KH,KW), got %s (input %s)",
                        fn, SHP(w, ws), SHP(x, xs));
    if (w->shape[0] < 1 || w->shape[1] < 1 || w->shape[2] < 1 || w->shape[3] < 1)
        return mrt_fail(MRT_ERR_SHAPE, "%s: weight %s has an empty dimension (input %s)", fn,
                        SHP(w, ws), SHP(x, xs));
    if (x->shape[1] != w->shape[1])
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: input %s has %" PRId64 " channels, weight %s expects %" PRId64, fn,
                        SHP(x, xs), x->shape[1], SHP(w, ws), w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: bias %s does not match weight %s (expected %" PRId64 " elements)",
                        fn, SHP(b, bs), SHP(w, ws), w->shape[0]);
    if (p->stride_h < 1 || p->stride_w < 1 || p->pad_h < 0 || p->pad_w < 0)
        return mrt_fail(MRT_ERR_ARG, "%s: stride %dx%d and padding %dx%d: strides must be >= 1 "
                        "and paddings >= 0", fn, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    if (x->shape[2] + 2 * (int64_t)p->pad_h < w->shape[2] ||
        x->shape[3] + 2 * (int64_t)p->pad_w < w->shape[3])
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: input %s is too small for weight %s with padding %" PRId64
                        "x%" PRId64, fn, SHP(x, xs), SHP(w, ws), (int64_t)p->pad_h,
                        (int64_t)p->pad_w);
    geometry(x, w, p, g);
    /* sgemm takes int dimensions: every matrix side the kernels form must
     * fit (K, O, and up to a whole batch of output positions). */
    int64_t k = g->c * g->kh * g->kw, pos = g->oh * g->ow, hw = g->h * g->w;
    if (k > INT_MAX || g->o > INT_MAX || pos > INT_MAX / (g->n > 0 ? g->n : 1) ||
        hw > INT_MAX / (g->n > 0 ? g->n : 1) || 36 * g->o * g->c > INT_MAX)
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s with weight %s is too large", fn,
                        SHP(x, xs), SHP(w, ws));
    return MRT_OK;
}

static int is_wino(mrt_conv_algo a) { return a == MRT_CONV_WINOGRAD || a == MRT_CONV_WINOGRAD2; }
static int wino_m(mrt_conv_algo a) { return a == MRT_CONV_WINOGRAD2 ? 2 : 4; }

static mrt_status pick_algo(const char *fn, const mrt_conv_geom *g, const mrt_conv2d_opts *opts,
                            int backward, mrt_conv_algo *algo, int64_t *nb)
{
    mrt_conv_algo a = opts ? opts->algo : MRT_CONV_AUTO;
    if (a == MRT_CONV_AUTO) a = mrt_conv2d_choose(g, backward);
    if (!mrt_conv2d_algo_supports(a, g))
        return mrt_fail(MRT_ERR_ARG,
                        "%s: algorithm %s cannot compute kernel %" PRId64 "x%" PRId64
                        " stride %" PRId64 "x%" PRId64 " padding %" PRId64 "x%" PRId64,
                        fn, mrt_conv_algo_name(a), g->kh, g->kw, g->sh, g->sw, g->ph, g->pw);
    *algo = a;
    if (a == MRT_CONV_ONEDNN) { /* oneDNN blocks for itself */
        *nb = 1;
        return MRT_OK;
    }
    int64_t b = opts && opts->images_per_block > 0 ? opts->images_per_block : 0;
    if (b == 0) b = is_wino(a) ? mrt_conv_wino_block(g, wino_m(a)) : mrt_conv_gemm_block(g, a);
    /* at most the whole batch: n images, or n * ceil(oh / m) tile rows */
    const int64_t m = wino_m(a);
    const int64_t most = is_wino(a) ? g->n * ((g->oh + m - 1) / m) : g->n;
    if (b > most) b = most;
    *nb = b < 1 ? 1 : b;
    return MRT_OK;
}

static mrt_status reserve(mrt_workspace *ws, mrt_workspace *local, size_t floats, float **data)
{
    mrt_workspace *use = ws ? ws : local;
    mrt_status st = mrt_workspace_reserve(use, floats ? floats : 1);
    *data = use->data;
    return st;
}

/* ---- forward ---------------------------------------------------------------- */

/* The plan of the forward pass (g resolved): y allocated on `dev` when
 * empty. */
static mrt_status forward_plan(const char *fn, mrt_tensor *y, mrt_device dev,
                               const mrt_conv_geom *g)
{
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: no output tensor given", fn);
    const int64_t yshape[4] = {g->n, g->o, g->oh, g->ow};
    return mrt_tensor_prepare_out_on(fn, y, MRT_F32, 4, yshape, dev);
}

/* The algorithm options are the CPU kernels' (tests and benchmarks). */
static mrt_status need_cpu(const char *fn, mrt_device dev)
{
    if (dev == MRT_CPU) return MRT_OK;
    return mrt_fail(MRT_ERR_DEVICE, "%s: tensors are on %s, algorithm options are for the cpu",
                    fn, mrt_device_name(dev));
}

static mrt_status cpu_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                              const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws,
                              const mrt_conv2d_opts *opts)
{
    static const char fn[] = "conv2d_forward";
    mrt_conv_geom g;
    mrt_conv_algo algo;
    int64_t nb;
    mrt_status st;
    geometry(x, w, p, &g);
    if ((st = pick_algo(fn, &g, opts, 0, &algo, &nb))) return st;
    const int bf16 = mrt_cpu_gemm_bf16();
    /* oneDNN was asked for the training pass without bias; should it have
     * no primitive for this one, machrt's own kernels compute it */
    if (algo == MRT_CONV_ONEDNN && !mrt_conv_dnnl_supports(&g, bf16, p->inference, b != NULL, 0)) {
        const mrt_conv2d_opts own = {mrt_conv2d_choose_own(&g, 0), 0, 0};
        if ((st = pick_algo(fn, &g, &own, 0, &algo, &nb))) return st;
    }
    mrt_tensor xc = {0}, wc = {0}, bc = {0}, yt = {0};
    mrt_workspace local = {0};
    const mrt_tensor *ins[3] = {x, w, b};
    int aside = 0;
    float *scratch = NULL;
    size_t need = algo == MRT_CONV_ONEDNN ? mrt_conv_dnnl_fwd_scratch(&g, bf16, p->inference, b != NULL)
                  : is_wino(algo)       ? mrt_conv_wino_fwd_scratch(&g, wino_m(algo), nb)
                                        : mrt_conv_gemm_fwd_scratch(&g, algo, nb);
    if ((st = mrt_tensor_contiguous(x, &xc)) || (st = mrt_tensor_contiguous(w, &wc)) ||
        (b && (st = mrt_tensor_contiguous(b, &bc))) ||
        (st = mrt_nn_write_target(y, ins, 3, 0, &yt, &aside)) || (st = reserve(ws, &local, need, &scratch)))
        goto done;
    if (algo == MRT_CONV_ONEDNN) {
        if (!mrt_conv_dnnl_forward(&g, bf16, p->inference, mrt_f32(&xc), mrt_f32(&wc),
                                   b ? mrt_f32(&bc) : NULL, mrt_f32(&yt), scratch)) {
            st = mrt_fail(MRT_ERR_DEVICE, "%s: the oneDNN convolution failed to run", fn);
            goto done;
        }
    } else if (is_wino(algo))
        mrt_conv_wino_forward(&g, wino_m(algo), nb, opts && opts->portable, mrt_f32(&xc), mrt_f32(&wc), b ? mrt_f32(&bc) : NULL,
                              mrt_f32(&yt), scratch);
    else
        mrt_conv_gemm_forward(&g, algo, nb, mrt_f32(&xc), mrt_f32(&wc), b ? mrt_f32(&bc) : NULL,
                              mrt_f32(&yt), scratch);
    if (aside) st = mrt_tensor_copy(y, &yt);
done:
    if (aside) mrt_tensor_release(&yt);
    mrt_tensor_release(&xc);
    mrt_tensor_release(&wc);
    mrt_tensor_release(&bc);
    mrt_workspace_free(&local);
    return st;
}

mrt_status mrt_conv2d_forward_opts(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                   const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws,
                                   const mrt_conv2d_opts *opts)
{
    static const char fn[] = "conv2d_forward";
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, b, y);
    mrt_conv_geom g;
    mrt_conv_algo algo;
    int64_t nb;
    mrt_status st;
    if ((st = need_cpu(fn, dev)) || (st = resolve(fn, x, w, b, p, &g)) ||
        (st = pick_algo(fn, &g, opts, 0, &algo, &nb)) || (st = forward_plan(fn, y, dev, &g)))
        return st;
    return g.n == 0 ? MRT_OK : cpu_forward(x, w, b, p, y, ws, opts);
}

mrt_status mrt_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                              const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws)
{
    static const char fn[] = "conv2d_forward";
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, b, y);
    mrt_conv_geom g;
    mrt_status st;
    if ((st = resolve(fn, x, w, b, p, &g)) || (st = forward_plan(fn, y, dev, &g))) return st;
    if (g.n == 0) return MRT_OK;
    MRT_BACKEND_CALL(st, fn, dev, nn, conv2d_forward, (x, w, b, p, y, ws));
    return st;
}

mrt_status mrt_cpu_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *b,
                                  const mrt_conv2d_params *p, mrt_tensor *y, mrt_workspace *ws)
{
    return cpu_forward(x, w, b, p, y, ws, NULL);
}

/* ---- backward --------------------------------------------------------------- */

/* db[o] += sum over n, p of dy[n][o][p], in double: a batch of 32 images
 * of 3456 positions sums 1e5 terms per channel. */
static void bias_grad(const mrt_conv_geom *g, const float *dy, float *db)
{
    const int64_t P = g->oh * g->ow;
#pragma omp parallel for schedule(static) if (g->n * g->o * P > MRT_CONV_PAR_MIN)
    for (int64_t o = 0; o < g->o; o++) {
        double s = 0.0;
        for (int64_t n = 0; n < g->n; n++) {
            const float *row = dy + (n * g->o + o) * P;
            float part = 0.0f;
            for (int64_t q = 0; q < P; q++) part += row[q];
            s += part;
        }
        db[o] += (float)s;
    }
}

/* The rest of the backward check and its plan (g resolved): dy against
 * the output's shape; dx allocated on `dev` when empty, dw and db
 * zero-filled there when empty (they accumulate). */
static mrt_status backward_plan(const char *fn, const mrt_tensor *x, const mrt_tensor *w,
                                const mrt_tensor *dy, mrt_tensor *dx, mrt_tensor *dw,
                                mrt_tensor *db, mrt_device dev, const mrt_conv_geom *g)
{
    char s1[MRT_SHAPE_STRLEN], s2[MRT_SHAPE_STRLEN], s3[MRT_SHAPE_STRLEN], s4[MRT_SHAPE_STRLEN];
    mrt_status st;
    if ((st = mrt_nn_need_f32(fn, "grad_output", dy))) return st;
    const int64_t yshape[4] = {g->n, g->o, g->oh, g->ow};
    if (!mrt_nn_same_shape(dy, 4, yshape))
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: grad_output %s does not match the output shape %s of input %s "
                        "and weight %s", fn, SHP(dy, s1),
                        mrt_shape_str(4, yshape, s2, sizeof s2), SHP(x, s3), SHP(w, s4));
    if (dx && (st = mrt_tensor_prepare_out_on(fn, dx, MRT_F32, 4, x->shape, dev))) return st;
    if (dw && (st = mrt_nn_grad_target(fn, "weight gradient", dw, 4, w->shape, dev))) return st;
    if (db && (st = mrt_nn_grad_target(fn, "bias gradient", db, 1, &g->o, dev))) return st;
    return MRT_OK;
}

static mrt_status cpu_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                               const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                               mrt_tensor *db, mrt_workspace *ws, const mrt_conv2d_opts *opts)
{
    static const char fn[] = "conv2d_backward";
    mrt_conv_geom g;
    mrt_conv_algo algo;
    int64_t nb;
    mrt_status st;
    geometry(x, w, p, &g);
    if ((st = pick_algo(fn, &g, opts, 1, &algo, &nb))) return st;
    mrt_tensor xc = {0}, wc = {0}, dyc = {0}, dxt = {0}, dwt = {0}, dbt = {0};
    mrt_workspace local = {0};
    const mrt_tensor *ins[3] = {x, w, dy};
    int dx_aside = 0, dw_aside = 0, db_aside = 0;
    float *scratch = NULL;
    const int bf16 = mrt_cpu_gemm_bf16();
    size_t need = algo == MRT_CONV_ONEDNN ? mrt_conv_dnnl_bwd_scratch(&g, bf16)
                  : is_wino(algo)
                      ? mrt_conv_wino_bwd_scratch(&g, wino_m(algo), nb, dx != NULL, dw != NULL)
                      : mrt_conv_gemm_bwd_scratch(&g, algo, nb, dx != NULL, dw != NULL);
    if ((st = mrt_tensor_contiguous(dy, &dyc))) goto done;
    if ((dx || dw) && (st = mrt_tensor_contiguous(w, &wc))) goto done;
    if (dw && (st = mrt_tensor_contiguous(x, &xc))) goto done;
    if (dx && (st = mrt_nn_write_target(dx, ins, 3, 0, &dxt, &dx_aside))) goto done;
    if (dw && (st = mrt_nn_write_target(dw, ins, 3, 1, &dwt, &dw_aside))) goto done;
    if (db && (st = mrt_nn_write_target(db, ins, 3, 1, &dbt, &db_aside))) goto done;
    if ((dx || dw) && (st = reserve(ws, &local, need, &scratch))) goto done;

    if (db) bias_grad(&g, mrt_f32(&dyc), mrt_f32(&dbt));
    if (dx || dw) {
        const float *xp = dw ? mrt_f32(&xc) : NULL;
        float *dxp = dx ? mrt_f32(&dxt) : NULL, *dwp = dw ? mrt_f32(&dwt) : NULL;
        if (algo == MRT_CONV_ONEDNN) {
            if (!mrt_conv_dnnl_backward(&g, bf16, xp, mrt_f32(&wc), mrt_f32(&dyc), dxp, dwp, scratch)) {
                st = mrt_fail(MRT_ERR_DEVICE, "%s: the oneDNN convolution failed to run", fn);
                goto done;
            }
        } else if (is_wino(algo))
            mrt_conv_wino_backward(&g, wino_m(algo), nb, opts && opts->portable, xp, mrt_f32(&wc), mrt_f32(&dyc), dxp, dwp, scratch);
        else
            mrt_conv_gemm_backward(&g, algo, nb, xp, mrt_f32(&wc), mrt_f32(&dyc), dxp, dwp,
                                   scratch);
    }
    if (dx_aside && (st = mrt_tensor_copy(dx, &dxt))) goto done;
    if (dw_aside && (st = mrt_binary(MRT_ADD, dw, &dwt, dw))) goto done;
    if (db_aside && (st = mrt_binary(MRT_ADD, db, &dbt, db))) goto done;
done:
    if (dx_aside) mrt_tensor_release(&dxt);
    if (dw_aside) mrt_tensor_release(&dwt);
    if (db_aside) mrt_tensor_release(&dbt);
    mrt_tensor_release(&xc);
    mrt_tensor_release(&wc);
    mrt_tensor_release(&dyc);
    mrt_workspace_free(&local);
    return st;
}

mrt_status mrt_conv2d_backward_opts(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                    const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                    mrt_tensor *db, mrt_workspace *ws,
                                    const mrt_conv2d_opts *opts)
{
    static const char fn[] = "conv2d_backward";
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, dy, dx, dw, db);
    mrt_conv_geom g;
    mrt_conv_algo algo;
    int64_t nb;
    mrt_status st;
    if ((st = need_cpu(fn, dev)) || (st = resolve(fn, x, w, NULL, p, &g)) ||
        (st = pick_algo(fn, &g, opts, 1, &algo, &nb)) ||
        (st = backward_plan(fn, x, w, dy, dx, dw, db, dev, &g)))
        return st;
    /* No images: dx is empty, and nothing accumulates. */
    return g.n == 0 ? MRT_OK : cpu_backward(x, w, dy, p, dx, dw, db, ws, opts);
}

mrt_status mrt_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                               const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                               mrt_tensor *db, mrt_workspace *ws)
{
    static const char fn[] = "conv2d_backward";
    mrt_device dev;
    MRT_OP_DEVICE(fn, &dev, x, w, dy, dx, dw, db);
    mrt_conv_geom g;
    mrt_status st;
    if ((st = resolve(fn, x, w, NULL, p, &g)) ||
        (st = backward_plan(fn, x, w, dy, dx, dw, db, dev, &g)))
        return st;
    if (g.n == 0) return MRT_OK;
    MRT_BACKEND_CALL(st, fn, dev, nn, conv2d_backward, (x, w, dy, p, dx, dw, db, ws));
    return st;
}

mrt_status mrt_cpu_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *dy,
                                   const mrt_conv2d_params *p, mrt_tensor *dx, mrt_tensor *dw,
                                   mrt_tensor *db, mrt_workspace *ws)
{
    return cpu_backward(x, w, dy, p, dx, dw, db, ws, NULL);
}
