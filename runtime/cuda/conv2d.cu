/* 2-D convolution on the device, with the semantics of runtime/nn/conv2d.c:
 * im2col + batched cuBLAS GEMM (a plain GEMM for 1x1 stride-1 layers), the
 * bias gradient from per-channel sums. Arguments arrive checked by
 * mrt_conv2d_forward / mrt_conv2d_backward (see nn_common.h). */
#include "nn_common.h"

/* out[i] = (float)sums[2 i + which] */
__global__ void k_sums_to_float(int64_t n, const double *sums, int which, float *out)
{
    GRID_STRIDE(i, n) { out[i] = (float)sums[2 * i + which]; }
}


struct conv_geom {
    int64_t C, H, W, KH, KW, OH, OW, sh, sw, ph, pw;
};

/* col[img][(c*KH+i)*KW+j][oh*OW+ow] = x[img][c][oh*sh-ph+i][ow*sw-pw+j] (0 outside). */
__global__ void k_im2col(conv_geom g, int64_t imgs, const float *x, float *col)
{
    const int64_t ohw = g.OH * g.OW, rows = g.C * g.KH * g.KW;
    GRID_STRIDE(e, imgs * rows * ohw)
    {
        const int64_t p = e % ohw, r = (e / ohw) % rows, img = e / (ohw * rows);
        const int64_t j = r % g.KW, i = (r / g.KW) % g.KH, c = r / (g.KW * g.KH);
        const int64_t h = (p / g.OW) * g.sh - g.ph + i, w = (p % g.OW) * g.sw - g.pw + j;
        col[e] = (h >= 0 && h < g.H && w >= 0 && w < g.W)
                     ? x[((img * g.C + c) * g.H + h) * g.W + w]
                     : 0.0f;
    }
}

/* dx[img][c][h][w] = sum of the col entries that im2col read from there, in
 * (i, j) order: a gather, so no two threads write one element. */
__global__ void k_col2im(conv_geom g, int64_t imgs, const float *col, float *dx)
{
    const int64_t ohw = g.OH * g.OW, rows = g.C * g.KH * g.KW;
    GRID_STRIDE(e, imgs * g.C * g.H * g.W)
    {
        const int64_t w = e % g.W, h = (e / g.W) % g.H, c = (e / (g.W * g.H)) % g.C;
        const int64_t img = e / (g.W * g.H * g.C);
        float acc = 0.0f;
        for (int64_t i = 0; i < g.KH; i++) {
            const int64_t hh = h + g.ph - i;
            if (hh < 0 || hh % g.sh) continue;
            const int64_t oh = hh / g.sh;
            if (oh >= g.OH) continue;
            for (int64_t j = 0; j < g.KW; j++) {
                const int64_t ww = w + g.pw - j;
                if (ww < 0 || ww % g.sw) continue;
                const int64_t ow = ww / g.sw;
                if (ow >= g.OW) continue;
                acc += col[(img * rows + (c * g.KH + i) * g.KW + j) * ohw + oh * g.OW + ow];
            }
        }
        dx[e] = acc;
    }
}

/* y[n][o][p] += b[o] over dense N,O,P. */
__global__ void k_add_channel_bias(int64_t total, int64_t O, int64_t P, const float *b, float *y)
{
    GRID_STRIDE(e, total) { y[e] += b[(e / P) % O]; }
}

/* The geometry of checked arguments. */
static conv_geom conv_geometry(const mrt_tensor *x, const mrt_tensor *w,
                               const mrt_conv2d_params *p)
{
    conv_geom g;
    g.C = x->shape[1];
    g.H = x->shape[2];
    g.W = x->shape[3];
    g.KH = w->shape[2];
    g.KW = w->shape[3];
    g.sh = p->stride_h;
    g.sw = p->stride_w;
    g.ph = p->pad_h;
    g.pw = p->pad_w;
    g.OH = (g.H + 2 * g.ph - g.KH) / g.sh + 1;
    g.OW = (g.W + 2 * g.pw - g.KW) / g.sw + 1;
    return g;
}

static int conv_is_pointwise(const conv_geom &g)
{
    return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

/* Images per im2col chunk: the column buffer stays under 2^26 floats. */
static int64_t conv_chunk(const conv_geom &g, int64_t N)
{
    const int64_t per = g.C * g.KH * g.KW * g.OH * g.OW;
    int64_t k = per > 0 ? ((int64_t)1 << 26) / per : N;
    if (k < 1) k = 1;
    return k < N ? k : N;
}

extern "C" mrt_status mrt_cu_conv2d_forward(const mrt_tensor *x, const mrt_tensor *w,
                                            const mrt_tensor *b, const mrt_conv2d_params *p,
                                            mrt_tensor *y, mrt_workspace *ws)
{
    (void)ws; /* device scratch comes from the caching allocator */
    static const char op[] = "conv2d_forward";
    const conv_geom g = conv_geometry(x, w, p);
    const int64_t N = x->shape[0], O = w->shape[0], P = g.OH * g.OW, K = g.C * g.KH * g.KW;
    mrt_status st;
    dense xd, wd, bd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (b && (st = bd.of(b)))) return st;
    const mrt_tensor *ins[3] = {x, w, b};
    out_target ty;
    if ((st = target_open(y, ins, 3, 0, &ty))) return st;
    float *yp = mrt_cu_f32(&ty.t);
    if (N > 0 && O > 0 && P > 0) {
        if (conv_is_pointwise(g)) {
            st = mrt_cu_gemm(op, 0, 0, O, P, K, 1.0f, wd.f(), K, 0, xd.f(), P, K * P, 0.0f, yp, P,
                             O * P, N);
        } else {
            const int64_t chunk = conv_chunk(g, N);
            scratch col;
            st = col.get((size_t)(chunk * K * P) * sizeof(float));
            for (int64_t n0 = 0; !st && n0 < N; n0 += chunk) {
                const int64_t imgs = N - n0 < chunk ? N - n0 : chunk;
                MRT_LAUNCH(k_im2col, mrt_cu_blocks(imgs * K * P), MRT_CU_THREADS, mrt_cu_stream(),
                           g, imgs, xd.f() + n0 * g.C * g.H * g.W, (float *)col.p);
                if (!(st = mrt_cu_launched(op)))
                    st = mrt_cu_gemm(op, 0, 0, O, P, K, 1.0f, wd.f(), K, 0, (float *)col.p, P, K * P,
                                     0.0f, yp + n0 * O * P, P, O * P, imgs);
            }
        }
        if (!st && b) {
            MRT_LAUNCH(k_add_channel_bias, mrt_cu_blocks(N * O * P), MRT_CU_THREADS,
                       mrt_cu_stream(), N * O * P, O, P, bd.f(), yp);
            st = mrt_cu_launched(op);
        }
    } else if (N * O * P > 0) {
        st = mrt_cu_fill(&ty.t, 0.0);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_conv2d_backward(const mrt_tensor *x, const mrt_tensor *w,
                                             const mrt_tensor *dy, const mrt_conv2d_params *p,
                                             mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                                             mrt_workspace *ws)
{
    (void)ws;
    static const char op[] = "conv2d_backward";
    const conv_geom g = conv_geometry(x, w, p);
    const int64_t N = x->shape[0], O = w->shape[0], P = g.OH * g.OW, K = g.C * g.KH * g.KW;
    mrt_status st;
    dense xd, wd, dyd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, w, dy};
    out_target tdx, tdw, tdb;
    const int64_t bshape[1] = {O};
    int have_dx = 0, have_dw = 0, have_db = 0;
    if (dx) {
        if ((st = target_open(dx, ins, 3, 0, &tdx))) return st;
        have_dx = 1;
    }
    if (!st && dw) {
        if ((st = target_open(dw, ins, 3, 1, &tdw))) goto done;
        have_dw = 1;
    }
    if (!st && db) {
        if ((st = target_open(db, ins, 3, 1, &tdb))) goto done;
        have_db = 1;
    }
    if (have_db && N * P > 0 && O > 0) {
        /* db[o] += sum over n, p of dy[n][o][p]: the channel sums of dy. */
        scratch sums;
        if (!(st = sums.get((size_t)O * 2 * sizeof(double))) &&
            !(st = channel_sums(op, 2, N, O, P, dyd.f(), dyd.f(), NULL, (double *)sums.p))) {
            mrt_tensor tmp = {};
            if (!(st = mrt_tensor_alloc_on(&tmp, MRT_F32, 1, bshape, MRT_CUDA))) {
                MRT_LAUNCH(k_sums_to_float, mrt_cu_blocks(O), MRT_CU_THREADS, mrt_cu_stream(), O,
                           (const double *)sums.p, 0, mrt_cu_f32(&tmp));
                if (!(st = mrt_cu_launched(op))) st = mrt_cu_binary(MRT_ADD, &tdb.t, &tmp, &tdb.t);
                mrt_tensor_release(&tmp);
            }
        }
    }
    if (!st && (have_dx || have_dw) && N > 0 && P > 0 && K > 0 && O > 0) {
        const int pointwise = conv_is_pointwise(g);
        const int64_t chunk = pointwise ? N : conv_chunk(g, N);
        scratch col, dcol;
        if (!pointwise && have_dw) st = col.get((size_t)(chunk * K * P) * sizeof(float));
        if (!st && !pointwise && have_dx) st = dcol.get((size_t)(chunk * K * P) * sizeof(float));
        for (int64_t n0 = 0; !st && n0 < N; n0 += chunk) {
            const int64_t imgs = N - n0 < chunk ? N - n0 : chunk;
            const float *dyp = dyd.f() + n0 * O * P;
            if (have_dw) {
                const float *colp = xd.f() + n0 * K * P;
                if (!pointwise) {
                    MRT_LAUNCH(k_im2col, mrt_cu_blocks(imgs * K * P), MRT_CU_THREADS,
                               mrt_cu_stream(), g, imgs, xd.f() + n0 * g.C * g.H * g.W,
                               (float *)col.p);
                    if ((st = mrt_cu_launched(op))) break;
                    colp = (const float *)col.p;
                }
                /* dw (O x K) += dy[n] (O x P) @ col[n]^T (P x K), image by image. */
                for (int64_t i = 0; !st && i < imgs; i++)
                    st = mrt_cu_gemm(op, 0, 1, O, K, P, 1.0f, dyp + i * O * P, P, 0,
                                     colp + i * K * P, P, 0, 1.0f, mrt_cu_f32(&tdw.t), K, 0, 1);
            }
            if (!st && have_dx) {
                float *dxp = mrt_cu_f32(&tdx.t) + n0 * g.C * g.H * g.W;
                /* dcol[n] (K x P) = w^T (K x O) @ dy[n] (O x P). */
                float *target_col = pointwise ? dxp : (float *)dcol.p;
                st = mrt_cu_gemm(op, 1, 0, K, P, O, 1.0f, wd.f(), K, 0, dyp, P, O * P, 0.0f,
                                 target_col, P, K * P, imgs);
                if (!st && !pointwise) {
                    MRT_LAUNCH(k_col2im, mrt_cu_blocks(imgs * g.C * g.H * g.W), MRT_CU_THREADS,
                               mrt_cu_stream(), g, imgs, (const float *)dcol.p, dxp);
                    st = mrt_cu_launched(op);
                }
            }
        }
    } else if (!st && have_dx && mrt_tensor_numel(x) > 0) {
        st = mrt_cu_fill(&tdx.t, 0.0);
    }
done:
    if (have_db) st = target_close(&tdb, st);
    if (have_dw) st = target_close(&tdw, st);
    if (have_dx) st = target_close(&tdx, st);
    return st;
}
