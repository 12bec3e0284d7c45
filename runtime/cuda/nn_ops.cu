/* Layer kernels on the device, with the semantics of runtime/nn (see nn.h):
 * convolution as im2col + batched cuBLAS GEMM, linear through cuBLAS, batch
 * norm (per-channel sums in a shared-memory tree), ReLU, max / average /
 * GeM pooling, dropout, BCE-with-logits and cross-entropy losses.
 *
 * Inputs may be any strided view: each kernel makes a dense copy on the
 * device when it needs one. Outputs follow the output convention (empty:
 * allocated on the device); a strided or aliased output is computed aside
 * and copied in. Parameter gradients accumulate. Sums are taken in double
 * and in a fixed order, so results do not depend on the launch. */
#include "cuda_common.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)blockDim.x * gridDim.x)

/* ---- outputs ------------------------------------------------------------------------ */

namespace {

struct out_target {
    mrt_tensor *dst;
    mrt_tensor t; /* where the kernel writes */
    int aside, fresh, accumulate;
};

mrt_status target_open(const char *op, const char *name, mrt_tensor *dst, int ndim,
                       const int64_t *shape, const mrt_tensor *const *inputs, int ninputs,
                       int accumulate, out_target *tg)
{
    tg->dst = dst;
    tg->aside = tg->fresh = 0;
    tg->accumulate = accumulate;
    mrt_status st;
    if (!dst->storage) {
        if ((st = mrt_tensor_alloc_on(dst, MRT_F32, ndim, shape, MRT_CUDA))) return st;
        if (accumulate && (st = mrt_cu_fill(dst, 0.0))) {
            mrt_tensor_release(dst);
            return st;
        }
        tg->fresh = 1;
        tg->t = *dst;
        return MRT_OK;
    }
    if ((st = mrt_cu_need(op, name, dst, MRT_F32))) return st;
    if (!mrt_cu_same_shape(dst, ndim, shape)) return mrt_cu_shape_error(op, name, dst, ndim, shape);
    int ok = mrt_tensor_is_contiguous(dst);
    for (int i = 0; ok && i < ninputs; i++)
        if (inputs[i] && inputs[i]->storage == dst->storage) ok = 0;
    if (ok) {
        tg->t = *dst;
        return MRT_OK;
    }
    tg->aside = 1;
    tg->t = mrt_tensor{};
    if ((st = mrt_tensor_alloc_on(&tg->t, MRT_F32, ndim, shape, MRT_CUDA))) return st;
    if (accumulate && (st = mrt_cu_fill(&tg->t, 0.0))) mrt_tensor_release(&tg->t);
    return st;
}

/* Ends a target: on success copies (or adds) an aside result into place; on
 * failure releases what target_open allocated. */
mrt_status target_close(out_target *tg, mrt_status st)
{
    if (tg->aside) {
        if (!st)
            st = tg->accumulate ? mrt_cu_binary(MRT_ADD, tg->dst, &tg->t, tg->dst)
                                : mrt_cu_copy(tg->dst, &tg->t);
        mrt_tensor_release(&tg->t);
    } else if (st && tg->fresh) {
        mrt_tensor_release(tg->dst);
    }
    return st;
}

mrt_status need_4d(const char *op, const char *name, const mrt_tensor *t)
{
    mrt_status st = mrt_cu_need(op, name, t, MRT_F32);
    if (st) return st;
    if (t->ndim != 4) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: %s must be 4-d (N,C,H,W), got shape %s", op, name,
                        mrt_shape_str(t->ndim, t->shape, a, sizeof a));
    }
    return MRT_OK;
}

mrt_status need_vec(const char *op, const char *name, const mrt_tensor *t, int64_t c)
{
    mrt_status st = mrt_cu_need(op, name, t, MRT_F32);
    if (st) return st;
    const int64_t shape[1] = {c};
    if (!mrt_cu_same_shape(t, 1, shape)) return mrt_cu_shape_error(op, name, t, 1, shape);
    return MRT_OK;
}

/* Dense device copies that release themselves. */
struct dense {
    mrt_tensor t;
    dense() : t() {}
    ~dense() { mrt_tensor_release(&t); }
    mrt_status of(const mrt_tensor *src) { return mrt_tensor_contiguous(src, &t); }
    float *f() const { return mrt_cu_f32(&t); }
    dense(const dense &) = delete;
    dense &operator=(const dense &) = delete;
};

struct scratch {
    void *p;
    size_t cap;
    scratch() : p(NULL), cap(0) {}
    ~scratch() { mrt_cu_scratch_free(p, cap); }
    mrt_status get(size_t nbytes) { return mrt_cu_scratch(nbytes, &p, &cap); }
    scratch(const scratch &) = delete;
    scratch &operator=(const scratch &) = delete;
};

} // namespace

/* ---- per-channel sums: one block per channel, a shared-memory tree ------------------ */

/* mode 0: s1 = sum x. mode 1: s1 = sum (x - mean_c)^2. mode 2: s1 = sum dy,
 * s2 = sum dy * (x - mean_c). x, dy dense N,C,HW. out: 2 doubles per channel. */
__global__ void k_channel_sums(int mode, int64_t N, int64_t C, int64_t HW, const float *x,
                               const float *dy, const float *mean, double *out)
{
    __shared__ double s1[MRT_CU_THREADS];
    __shared__ double s2[MRT_CU_THREADS];
    const int64_t c = blockIdx.x;
    const int t = threadIdx.x;
    const double m = mean ? (double)mean[c] : 0.0;
    double a1 = 0.0, a2 = 0.0;
    const int64_t count = N * HW;
    for (int64_t k = t; k < count; k += blockDim.x) {
        const int64_t at = (k / HW) * C * HW + c * HW + k % HW;
        if (mode == 0) {
            a1 += (double)x[at];
        } else if (mode == 1) {
            const double d = (double)x[at] - m;
            a1 += d * d;
        } else {
            const double g = (double)dy[at];
            a1 += g;
            a2 += g * ((double)x[at] - m);
        }
    }
    s1[t] = a1;
    s2[t] = a2;
    __syncthreads();
    for (int w = MRT_CU_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) {
            s1[t] += s1[t + w];
            s2[t] += s2[t + w];
        }
        __syncthreads();
    }
    if (t == 0) {
        out[2 * c] = s1[0];
        out[2 * c + 1] = s2[0];
    }
}

static mrt_status channel_sums(const char *op, int mode, int64_t N, int64_t C, int64_t HW,
                               const float *x, const float *dy, const float *mean, double *out)
{
    if (C == 0) return MRT_OK;
    MRT_LAUNCH_SYNC(k_channel_sums, (unsigned)C, MRT_CU_THREADS, mrt_cu_stream(), mode, N, C, HW,
                    x, dy, mean, out);
    return mrt_cu_launched(op);
}

/* out[i] = (float)sums[2 i + which] */
__global__ void k_sums_to_float(int64_t n, const double *sums, int which, float *out)
{
    GRID_STRIDE(i, n) { out[i] = (float)sums[2 * i + which]; }
}

/* ---- convolution -------------------------------------------------------------------------- */

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

static mrt_status conv_check(const char *op, const mrt_tensor *x, const mrt_tensor *w,
                             const mrt_conv2d_params *p, conv_geom *g, int64_t *O)
{
    mrt_status st;
    if ((st = need_4d(op, "input", x)) || (st = need_4d(op, "weight", w))) return st;
    if (!p) return mrt_fail(MRT_ERR_ARG, "%s: parameters are required", op);
    if (p->stride_h < 1 || p->stride_w < 1 || p->pad_h < 0 || p->pad_w < 0)
        return mrt_fail(MRT_ERR_ARG, "%s: stride %dx%d must be >= 1 and padding %dx%d >= 0", op,
                        p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    if (w->shape[1] != x->shape[1]) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s has %lld channels, weight %s expects %lld",
                        op, mrt_shape_str(x->ndim, x->shape, a, sizeof a),
                        (long long)x->shape[1], mrt_shape_str(w->ndim, w->shape, b, sizeof b),
                        (long long)w->shape[1]);
    }
    g->C = x->shape[1];
    g->H = x->shape[2];
    g->W = x->shape[3];
    g->KH = w->shape[2];
    g->KW = w->shape[3];
    g->sh = p->stride_h;
    g->sw = p->stride_w;
    g->ph = p->pad_h;
    g->pw = p->pad_w;
    if (g->H + 2 * g->ph < g->KH || g->W + 2 * g->pw < g->KW || g->KH < 1 || g->KW < 1) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s is too small for weight %s with padding %dx%d",
                        op, mrt_shape_str(x->ndim, x->shape, a, sizeof a),
                        mrt_shape_str(w->ndim, w->shape, b, sizeof b), p->pad_h, p->pad_w);
    }
    g->OH = (g->H + 2 * g->ph - g->KH) / g->sh + 1;
    g->OW = (g->W + 2 * g->pw - g->KW) / g->sw + 1;
    *O = w->shape[0];
    return MRT_OK;
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
    conv_geom g;
    int64_t O;
    mrt_status st = conv_check(op, x, w, p, &g, &O);
    if (st) return st;
    if (b && (st = need_vec(op, "bias", b, O))) return st;
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t N = x->shape[0], P = g.OH * g.OW, K = g.C * g.KH * g.KW;
    const int64_t yshape[4] = {N, O, g.OH, g.OW};
    dense xd, wd, bd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (b && (st = bd.of(b)))) return st;
    const mrt_tensor *ins[3] = {x, w, b};
    out_target ty;
    if ((st = target_open(op, "y", y, 4, yshape, ins, 3, 0, &ty))) return st;
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
    conv_geom g;
    int64_t O;
    mrt_status st = conv_check(op, x, w, p, &g, &O);
    if (st) return st;
    const int64_t N = x->shape[0], P = g.OH * g.OW, K = g.C * g.KH * g.KW;
    const int64_t yshape[4] = {N, O, g.OH, g.OW};
    if ((st = need_4d(op, "grad_output", dy))) return st;
    if (!mrt_cu_same_shape(dy, 4, yshape)) return mrt_cu_shape_error(op, "grad_output", dy, 4, yshape);
    if (db && db->storage && (st = need_vec(op, "db", db, O))) return st;
    dense xd, wd, dyd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, w, dy};
    out_target tdx, tdw, tdb;
    const int64_t bshape[1] = {O};
    int have_dx = 0, have_dw = 0, have_db = 0;
    if (dx) {
        if ((st = target_open(op, "dx", dx, 4, x->shape, ins, 3, 0, &tdx))) return st;
        have_dx = 1;
    }
    if (!st && dw) {
        if ((st = target_open(op, "dw", dw, 4, w->shape, ins, 3, 1, &tdw))) goto done;
        have_dw = 1;
    }
    if (!st && db) {
        if ((st = target_open(op, "db", db, 1, bshape, ins, 3, 1, &tdb))) goto done;
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

/* ---- linear ---------------------------------------------------------------------------------- */

/* y[r][c] += b[c] over dense R x Ccols. */
__global__ void k_add_row_bias(int64_t total, int64_t cols, const float *b, float *y)
{
    GRID_STRIDE(e, total) { y[e] += b[e % cols]; }
}

/* db[c] += sum_r dy[r][c], one thread per column, rows in order (double). */
__global__ void k_column_sums(int64_t rows, int64_t cols, const float *dy, float *db)
{
    GRID_STRIDE(c, cols)
    {
        double acc = 0.0;
        for (int64_t r = 0; r < rows; r++) acc += (double)dy[r * cols + c];
        db[c] += (float)acc;
    }
}

static mrt_status linear_check(const char *op, const mrt_tensor *x, const mrt_tensor *w)
{
    mrt_status st;
    if ((st = mrt_cu_need(op, "input", x, MRT_F32)) || (st = mrt_cu_need(op, "weight", w, MRT_F32)))
        return st;
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1]) {
        char a[MRT_SHAPE_STRLEN], b[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s and weight %s do not fit (N x IN, OUT x IN)",
                        op, mrt_shape_str(x->ndim, x->shape, a, sizeof a),
                        mrt_shape_str(w->ndim, w->shape, b, sizeof b));
    }
    return MRT_OK;
}

extern "C" mrt_status mrt_cu_linear_forward(const mrt_tensor *x, const mrt_tensor *w,
                                            const mrt_tensor *b, mrt_tensor *y)
{
    static const char op[] = "linear_forward";
    mrt_status st = linear_check(op, x, w);
    if (st) return st;
    const int64_t N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    if (b && (st = need_vec(op, "bias", b, OUT))) return st;
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    dense xd, wd, bd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (b && (st = bd.of(b)))) return st;
    const int64_t yshape[2] = {N, OUT};
    const mrt_tensor *ins[3] = {x, w, b};
    out_target ty;
    if ((st = target_open(op, "y", y, 2, yshape, ins, 3, 0, &ty))) return st;
    if (N > 0 && OUT > 0) {
        if (IN == 0) st = mrt_cu_fill(&ty.t, 0.0);
        else
            st = mrt_cu_gemm(op, 0, 1, N, OUT, IN, 1.0f, xd.f(), IN, 0, wd.f(), IN, 0, 0.0f,
                             mrt_cu_f32(&ty.t), OUT, 0, 1);
        if (!st && b) {
            MRT_LAUNCH(k_add_row_bias, mrt_cu_blocks(N * OUT), MRT_CU_THREADS, mrt_cu_stream(),
                       N * OUT, OUT, bd.f(), mrt_cu_f32(&ty.t));
            st = mrt_cu_launched(op);
        }
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_linear_backward(const mrt_tensor *x, const mrt_tensor *w,
                                             const mrt_tensor *dy, mrt_tensor *dx, mrt_tensor *dw,
                                             mrt_tensor *db)
{
    static const char op[] = "linear_backward";
    mrt_status st = linear_check(op, x, w);
    if (st) return st;
    const int64_t N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    const int64_t yshape[2] = {N, OUT}, bshape[1] = {OUT};
    if ((st = mrt_cu_need(op, "grad_output", dy, MRT_F32))) return st;
    if (!mrt_cu_same_shape(dy, 2, yshape)) return mrt_cu_shape_error(op, "grad_output", dy, 2, yshape);
    dense xd, wd, dyd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, w, dy};
    out_target t;
    if (dx) {
        if ((st = target_open(op, "dx", dx, 2, x->shape, ins, 3, 0, &t))) return st;
        if (N > 0 && IN > 0) {
            if (OUT == 0) st = mrt_cu_fill(&t.t, 0.0);
            else
                st = mrt_cu_gemm(op, 0, 0, N, IN, OUT, 1.0f, dyd.f(), OUT, 0, wd.f(), IN, 0, 0.0f,
                                 mrt_cu_f32(&t.t), IN, 0, 1);
        }
        if ((st = target_close(&t, st))) return st;
    }
    if (dw) {
        if ((st = target_open(op, "dw", dw, 2, w->shape, ins, 3, 1, &t))) return st;
        if (OUT > 0 && IN > 0 && N > 0)
            st = mrt_cu_gemm(op, 1, 0, OUT, IN, N, 1.0f, dyd.f(), OUT, 0, xd.f(), IN, 0, 1.0f,
                             mrt_cu_f32(&t.t), IN, 0, 1);
        if ((st = target_close(&t, st))) return st;
    }
    if (db) {
        if ((st = target_open(op, "db", db, 1, bshape, ins, 3, 1, &t))) return st;
        if (OUT > 0) {
            MRT_LAUNCH(k_column_sums, mrt_cu_blocks(OUT), MRT_CU_THREADS, mrt_cu_stream(), N, OUT,
                       dyd.f(), mrt_cu_f32(&t.t));
            st = mrt_cu_launched(op);
        }
        if ((st = target_close(&t, st))) return st;
    }
    return MRT_OK;
}

/* ---- batch norm -------------------------------------------------------------------------------- */

/* Per channel (training): the batch mean from sum x. */
__global__ void k_bn_mean(int64_t C, int64_t count, const double *sums, float *mean)
{
    GRID_STRIDE(c, C) { mean[c] = (float)(sums[2 * c] / (double)count); }
}

/* Per channel: mean and invstd (training: from the sums; evaluation: from
 * the running statistics), the running statistics' update, and stats =
 * {invstd[C], low part of the double mean[C]} for the normalisation. */
__global__ void k_bn_stats(int64_t C, int64_t count, int training, double momentum, double eps,
                           const double *sum_x, const double *sum_sq, float *rm, float *rv,
                           float *mean_out, float *stats)
{
    GRID_STRIDE(c, C)
    {
        double mean, var;
        if (training) {
            mean = sum_x[2 * c] / (double)count;
            /* Squares were taken around the float mean mf: shift to the mean. */
            const double d = mean - (double)mean_out[c];
            var = sum_sq[2 * c] / (double)count - d * d;
            if (var < 0.0) var = 0.0;
            if (rm) {
                const double unbiased = var * (double)count / (double)(count - 1);
                rm[c] = (float)((1.0 - momentum) * (double)rm[c] + momentum * mean);
                rv[c] = (float)((1.0 - momentum) * (double)rv[c] + momentum * unbiased);
            }
        } else {
            mean = (double)rm[c];
            var = (double)rv[c];
        }
        mean_out[c] = (float)mean;
        stats[c] = (float)(1.0 / sqrt(var + eps));
        stats[C + c] = (float)(mean - (double)(float)mean);
    }
}

/* y = ((x - mh) - ml) * a + b, as the CPU kernel rounds it; a = w * invstd. */
__global__ void k_bn_apply(int64_t total, int64_t C, int64_t HW, const float *x, const float *w,
                           const float *b, const float *mean, const float *stats, float *y)
{
    GRID_STRIDE(e, total)
    {
        const int64_t c = (e / HW) % C;
        const float a = (float)((w ? (double)w[c] : 1.0) * (double)stats[c]);
        const float bb = b ? b[c] : 0.0f;
        y[e] = ((x[e] - mean[c]) - stats[C + c]) * a + bb;
    }
}

extern "C" mrt_status mrt_cu_batchnorm2d_forward(const mrt_tensor *x_in, const mrt_tensor *weight,
                                                 const mrt_tensor *bias, mrt_tensor *running_mean,
                                                 mrt_tensor *running_var, int training,
                                                 double momentum, double eps, mrt_tensor *y,
                                                 mrt_tensor *save_mean, mrt_tensor *save_invstd)
{
    static const char op[] = "batchnorm2d_forward";
    mrt_status st;
    if ((st = need_4d(op, "input", x_in))) return st;
    const mrt_tensor x = *x_in;
    const int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
    const int64_t count = N * HW;
    if (weight && (st = need_vec(op, "weight", weight, C))) return st;
    if (bias && (st = need_vec(op, "bias", bias, C))) return st;
    if (!running_mean != !running_var)
        return mrt_fail(MRT_ERR_ARG, "%s: give both running_mean and running_var, or neither", op);
    if (running_mean) {
        if ((st = need_vec(op, "running_mean", running_mean, C))) return st;
        if ((st = need_vec(op, "running_var", running_var, C))) return st;
        if (!mrt_tensor_is_contiguous(running_mean) || !mrt_tensor_is_contiguous(running_var))
            return mrt_fail(MRT_ERR_ARG, "%s: running statistics must be contiguous", op);
    } else if (!training) {
        return mrt_fail(MRT_ERR_ARG, "%s: evaluation mode needs running_mean and running_var", op);
    }
    if (!isfinite(eps) || eps < 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: eps must be finite and >= 0, got %g", op, eps);
    if (training && (!isfinite(momentum) || momentum < 0.0 || momentum > 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: momentum must be in [0, 1], got %g", op, momentum);
    if (training && count <= 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: training needs more than 1 value per channel, input has shape %s", op,
                        mrt_shape_str(x.ndim, x.shape, a, sizeof a));
    }
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t vshape[1] = {C}, sshape[1] = {2 * C};
    if (save_mean && save_mean->storage && (st = need_vec(op, "save_mean", save_mean, C))) return st;
    if (save_invstd && save_invstd->storage && (st = need_vec(op, "save_invstd", save_invstd, C)))
        return st;
    dense xd, wd, bd;
    if ((st = xd.of(&x)) || (weight && (st = wd.of(weight))) || (bias && (st = bd.of(bias))))
        return st;
    mrt_tensor mean = {}, stats = {};
    scratch sums;
    if ((st = mrt_tensor_alloc_on(&mean, MRT_F32, 1, vshape, MRT_CUDA)) ||
        (st = mrt_tensor_alloc_on(&stats, MRT_F32, 1, sshape, MRT_CUDA)) ||
        (st = sums.get((size_t)(C > 0 ? C : 1) * 4 * sizeof(double)))) {
        mrt_tensor_release(&mean);
        mrt_tensor_release(&stats);
        return st;
    }
    const mrt_tensor *ins[1] = {x_in};
    out_target ty;
    if ((st = target_open(op, "y", y, 4, x.shape, ins, 1, 0, &ty))) {
        mrt_tensor_release(&mean);
        mrt_tensor_release(&stats);
        return st;
    }
    double *sx = (double *)sums.p, *sq = sx + 2 * C;
    if (C > 0 && training) {
        /* Two passes: the mean, then squares around it (no cancellation). */
        if (!(st = channel_sums(op, 0, N, C, HW, xd.f(), NULL, NULL, sx))) {
            MRT_LAUNCH(k_bn_mean, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, sx,
                       mrt_cu_f32(&mean));
            st = mrt_cu_launched(op);
        }
        if (!st) st = channel_sums(op, 1, N, C, HW, xd.f(), NULL, mrt_cu_f32(&mean), sq);
        if (!st) {
            MRT_LAUNCH(k_bn_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, 1,
                       momentum, eps, sx, sq,
                       running_mean ? mrt_cu_f32(running_mean) : (float *)NULL,
                       running_var ? mrt_cu_f32(running_var) : (float *)NULL, mrt_cu_f32(&mean),
                       mrt_cu_f32(&stats));
            st = mrt_cu_launched(op);
        }
    } else if (C > 0) {
        MRT_LAUNCH(k_bn_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count, 0, 0.0,
                   eps, sx, sx, mrt_cu_f32(running_mean), mrt_cu_f32(running_var),
                   mrt_cu_f32(&mean), mrt_cu_f32(&stats));
        st = mrt_cu_launched(op);
    }
    if (!st && N * C * HW > 0) {
        MRT_LAUNCH(k_bn_apply, mrt_cu_blocks(N * C * HW), MRT_CU_THREADS, mrt_cu_stream(),
                   N * C * HW, C, HW, xd.f(), weight ? wd.f() : (const float *)NULL,
                   bias ? bd.f() : (const float *)NULL, mrt_cu_f32(&mean), mrt_cu_f32(&stats),
                   mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    st = target_close(&ty, st);
    if (!st && save_mean) {
        if (!save_mean->storage) mrt_tensor_share(save_mean, &mean);
        else st = mrt_cu_copy(save_mean, &mean);
    }
    if (!st && save_invstd) {
        mrt_tensor first = {};
        if (!(st = mrt_view_narrow(&stats, 0, 0, C, &first)))
            st = save_invstd->storage ? mrt_cu_copy(save_invstd, &first)
                                      : mrt_tensor_clone(save_invstd, &first);
        mrt_tensor_release(&first);
    }
    mrt_tensor_release(&mean);
    mrt_tensor_release(&stats);
    return st;
}

/* Per channel: parameter gradients and the two coefficients of dx. */
__global__ void k_bn_grad_stats(int64_t C, int64_t count, const double *sums, const float *invstd,
                                float *dweight, float *dbias, float *coef)
{
    GRID_STRIDE(c, C)
    {
        const double s1 = sums[2 * c], s2 = sums[2 * c + 1], is = (double)invstd[c];
        if (dbias) dbias[c] += (float)s1;
        if (dweight) dweight[c] += (float)(s2 * is);
        coef[2 * c] = (float)(s1 / (double)count);
        coef[2 * c + 1] = (float)(is * is * s2 / (double)count);
    }
}

/* training: dx = (dy - mean(dy) - (x - m) * k) * a; evaluation: dx = dy * a. */
__global__ void k_bn_dx(int64_t total, int64_t C, int64_t HW, int training, const float *x,
                        const float *dy, const float *w, const float *mean, const float *invstd,
                        const float *coef, float *dx)
{
    GRID_STRIDE(e, total)
    {
        const int64_t c = (e / HW) % C;
        const float a = (float)((w ? (double)w[c] : 1.0) * (double)invstd[c]);
        dx[e] = training ? (dy[e] - coef[2 * c] - (x[e] - mean[c]) * coef[2 * c + 1]) * a
                         : dy[e] * a;
    }
}

extern "C" mrt_status mrt_cu_batchnorm2d_backward(const mrt_tensor *x, const mrt_tensor *dy,
                                                  const mrt_tensor *weight,
                                                  const mrt_tensor *save_mean,
                                                  const mrt_tensor *save_invstd, int training,
                                                  mrt_tensor *dx, mrt_tensor *dweight,
                                                  mrt_tensor *dbias)
{
    static const char op[] = "batchnorm2d_backward";
    mrt_status st;
    if ((st = need_4d(op, "input", x)) || (st = mrt_cu_need(op, "grad_output", dy, MRT_F32)))
        return st;
    if (!mrt_cu_same_shape(dy, 4, x->shape)) return mrt_cu_shape_error(op, "grad_output", dy, 4, x->shape);
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t count = N * HW;
    if (weight && (st = need_vec(op, "weight", weight, C))) return st;
    if (!save_mean || !save_invstd)
        return mrt_fail(MRT_ERR_ARG, "%s: save_mean and save_invstd from the forward pass are required", op);
    if ((st = need_vec(op, "save_mean", save_mean, C)) || (st = need_vec(op, "save_invstd", save_invstd, C)))
        return st;
    if (dweight && (st = need_vec(op, "dweight", dweight, C))) return st;
    if (dbias && (st = need_vec(op, "dbias", dbias, C))) return st;
    if (training && count <= 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE,
                        "%s: training needs more than 1 value per channel, input has shape %s", op,
                        mrt_shape_str(x->ndim, x->shape, a, sizeof a));
    }
    dense xd, dyd, wd, md, isd;
    if ((st = xd.of(x)) || (st = dyd.of(dy)) || (weight && (st = wd.of(weight))) ||
        (st = md.of(save_mean)) || (st = isd.of(save_invstd)))
        return st;
    const mrt_tensor *ins[2] = {x, dy};
    out_target tdw, tdb, tdx;
    const int64_t vshape[1] = {C};
    int have_dw = 0, have_db = 0, have_dx = 0;
    if (dweight) {
        if ((st = target_open(op, "dweight", dweight, 1, vshape, ins, 2, 1, &tdw))) return st;
        have_dw = 1;
    }
    if (dbias) {
        if ((st = target_open(op, "dbias", dbias, 1, vshape, ins, 2, 1, &tdb))) goto done;
        have_db = 1;
    }
    if (dx) {
        if ((st = target_open(op, "dx", dx, 4, x->shape, ins, 2, 0, &tdx))) goto done;
        have_dx = 1;
    }
    if (C > 0) {
        scratch sums, coef;
        if (!(st = sums.get((size_t)C * 2 * sizeof(double))) &&
            !(st = coef.get((size_t)C * 2 * sizeof(float))) &&
            !(st = channel_sums(op, 2, N, C, HW, xd.f(), dyd.f(), md.f(), (double *)sums.p))) {
            MRT_LAUNCH(k_bn_grad_stats, mrt_cu_blocks(C), MRT_CU_THREADS, mrt_cu_stream(), C, count,
                       (const double *)sums.p, isd.f(),
                       have_dw ? mrt_cu_f32(&tdw.t) : (float *)NULL,
                       have_db ? mrt_cu_f32(&tdb.t) : (float *)NULL, (float *)coef.p);
            st = mrt_cu_launched(op);
        }
        if (!st && have_dx && N * C * HW > 0) {
            MRT_LAUNCH(k_bn_dx, mrt_cu_blocks(N * C * HW), MRT_CU_THREADS, mrt_cu_stream(),
                       N * C * HW, C, HW, training, xd.f(), dyd.f(),
                       weight ? wd.f() : (const float *)NULL, md.f(), isd.f(),
                       (const float *)coef.p, mrt_cu_f32(&tdx.t));
            st = mrt_cu_launched(op);
        }
    }
done:
    if (have_dx) st = target_close(&tdx, st);
    if (have_db) st = target_close(&tdb, st);
    if (have_dw) st = target_close(&tdw, st);
    return st;
}

/* ---- ReLU ---------------------------------------------------------------------------------------- */

__global__ void k_relu(mrt_cu_iter it, float *y, const float *x)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float v = x[off[1]];
        y[off[0]] = (v > 0.0f || v != v) ? v : 0.0f;
    }
}

__global__ void k_relu_grad(mrt_cu_iter it, float *dx, const float *y, const float *dy)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float g = dy[off[2]];
        dx[off[0]] = y[off[1]] > 0.0f ? g : 0.0f;
    }
}

/* In place is safe: each element is read before it is written, by one thread. */
static mrt_status relu_out(const char *op, const char *name, mrt_tensor *out, const mrt_tensor *like)
{
    if (!out) return mrt_fail(MRT_ERR_ARG, "%s: output %s is required", op, name);
    if (!out->storage) return mrt_tensor_alloc_on(out, MRT_F32, like->ndim, like->shape, MRT_CUDA);
    mrt_status st = mrt_cu_need(op, name, out, MRT_F32);
    if (st) return st;
    if (!mrt_cu_same_shape(out, like->ndim, like->shape))
        return mrt_cu_shape_error(op, name, out, like->ndim, like->shape);
    return MRT_OK;
}

extern "C" mrt_status mrt_cu_relu_forward(const mrt_tensor *x_in, mrt_tensor *y)
{
    static const char op[] = "relu_forward";
    mrt_status st = mrt_cu_need(op, "input", x_in, MRT_F32);
    if (st) return st;
    const mrt_tensor x = *x_in;
    if ((st = relu_out(op, "y", y, &x))) return st;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, x.ndim, x.shape);
    mrt_cu_iter_add(&it, y);
    mrt_cu_iter_add(&it, &x);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_relu, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, mrt_cu_f32(y),
               mrt_cu_f32(&x));
    return mrt_cu_launched(op);
}

extern "C" mrt_status mrt_cu_relu_backward(const mrt_tensor *y_in, const mrt_tensor *dy_in,
                                           mrt_tensor *dx)
{
    static const char op[] = "relu_backward";
    mrt_status st = mrt_cu_need(op, "output", y_in, MRT_F32);
    if (!st) st = mrt_cu_need(op, "grad_output", dy_in, MRT_F32);
    if (st) return st;
    const mrt_tensor y = *y_in, dy = *dy_in;
    if (!mrt_cu_same_shape(&dy, y.ndim, y.shape))
        return mrt_cu_shape_error(op, "grad_output", &dy, y.ndim, y.shape);
    if ((st = relu_out(op, "dx", dx, &y))) return st;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, y.ndim, y.shape);
    mrt_cu_iter_add(&it, dx);
    mrt_cu_iter_add(&it, &y);
    mrt_cu_iter_add(&it, &dy);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_relu_grad, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
               mrt_cu_f32(dx), mrt_cu_f32(&y), mrt_cu_f32(&dy));
    return mrt_cu_launched(op);
}

/* ---- max pooling ------------------------------------------------------------------------------- */

struct pool_geom {
    int64_t H, W, OH, OW, kh, kw, sh, sw, ph, pw;
};

/* One thread per output; window in row-major order, strict > keeps the
 * first maximum, NaN is taken (propagates); padding never wins. */
__global__ void k_maxpool(pool_geom g, int64_t planes, const float *x, float *y, int64_t *idx)
{
    GRID_STRIDE(e, planes * g.OH * g.OW)
    {
        const int64_t ow = e % g.OW, oh = (e / g.OW) % g.OH, pl = e / (g.OW * g.OH);
        const float *px = x + pl * g.H * g.W;
        const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
        const int64_t h0 = hs < 0 ? 0 : hs, w0 = ws < 0 ? 0 : ws;
        const int64_t h1 = hs + g.kh < g.H ? hs + g.kh : g.H, w1 = ws + g.kw < g.W ? ws + g.kw : g.W;
        float best = -INFINITY;
        int64_t where = h0 * g.W + w0;
        bool nan = false;
        for (int64_t h = h0; h < h1 && !nan; h++)
            for (int64_t w = w0; w < w1; w++) {
                const float v = px[h * g.W + w];
                if (v != v) {
                    best = v;
                    where = h * g.W + w;
                    nan = true;
                    break;
                }
                if (v > best) {
                    best = v;
                    where = h * g.W + w;
                }
            }
        y[e] = best;
        if (idx) idx[e] = where;
    }
}

/* dx[plane][idx] += dy: dx is zeroed first. Overlapping windows that chose
 * the same input add their gradients atomically (at most
 * ceil(k/s)^2 terms, in an unspecified order). */
__global__ void k_maxpool_scatter(int64_t total, int64_t per_out, int64_t per_in, const float *dy,
                                  const int64_t *idx, float *dx)
{
    GRID_STRIDE(e, total) { atomicAdd(&dx[(e / per_out) * per_in + idx[e]], dy[e]); }
}

extern "C" mrt_status mrt_cu_maxpool2d_forward(const mrt_tensor *x, const mrt_pool2d_params *p,
                                               mrt_tensor *y, mrt_tensor *indices)
{
    static const char op[] = "maxpool2d_forward";
    mrt_status st;
    if ((st = need_4d(op, "input", x))) return st;
    if (!p) return mrt_fail(MRT_ERR_ARG, "%s: pooling parameters are required", op);
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || p->pad_h < 0 ||
        p->pad_w < 0 || p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2)
        return mrt_fail(MRT_ERR_ARG, "%s: kernel %dx%d, stride %dx%d, padding %dx%d are not valid",
                        op, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    pool_geom g = {x->shape[2], x->shape[3], 0, 0, p->kernel_h, p->kernel_w,
                   p->stride_h, p->stride_w, p->pad_h, p->pad_w};
    if (g.H + 2 * g.ph < g.kh || g.W + 2 * g.pw < g.kw) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: input %s is too small for kernel %lldx%lld", op,
                        mrt_shape_str(x->ndim, x->shape, a, sizeof a), (long long)g.kh,
                        (long long)g.kw);
    }
    g.OH = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.OW = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t planes = x->shape[0] * x->shape[1];
    const int64_t oshape[4] = {x->shape[0], x->shape[1], g.OH, g.OW};
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[1] = {x};
    out_target ty;
    if ((st = target_open(op, "y", y, 4, oshape, ins, 1, 0, &ty))) return st;
    mrt_tensor ix = {};
    int own_ix = 0;
    if (indices) {
        if (indices->storage) {
            if ((st = mrt_cu_need(op, "indices", indices, MRT_I64))) return target_close(&ty, st);
            if (!mrt_cu_same_shape(indices, 4, oshape))
                return target_close(&ty, mrt_cu_shape_error(op, "indices", indices, 4, oshape));
        }
        if (indices->storage && mrt_tensor_is_contiguous(indices)) {
            ix = *indices;
        } else if ((st = mrt_tensor_alloc_on(&ix, MRT_I64, 4, oshape, MRT_CUDA))) {
            return target_close(&ty, st);
        } else {
            own_ix = 1;
        }
    }
    if (planes * g.OH * g.OW > 0) {
        MRT_LAUNCH(k_maxpool, mrt_cu_blocks(planes * g.OH * g.OW), MRT_CU_THREADS, mrt_cu_stream(),
                   g, planes, xd.f(), mrt_cu_f32(&ty.t), indices ? mrt_cu_i64(&ix) : (int64_t *)NULL);
        st = mrt_cu_launched(op);
    }
    if (own_ix) {
        if (!st && indices->storage) st = mrt_cu_copy(indices, &ix);
        if (!st && !indices->storage) {
            *indices = ix;
            own_ix = 0;
        }
        if (own_ix) mrt_tensor_release(&ix);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_maxpool2d_backward(const mrt_tensor *dy, const mrt_tensor *indices,
                                                int64_t in_h, int64_t in_w, mrt_tensor *dx)
{
    static const char op[] = "maxpool2d_backward";
    mrt_status st;
    if ((st = need_4d(op, "grad_output", dy))) return st;
    if (!indices) return mrt_fail(MRT_ERR_ARG, "%s: indices from the forward pass are required", op);
    if ((st = mrt_cu_need(op, "indices", indices, MRT_I64))) return st;
    if (!mrt_cu_same_shape(indices, 4, dy->shape))
        return mrt_cu_shape_error(op, "indices", indices, 4, dy->shape);
    if (!dx) return mrt_fail(MRT_ERR_ARG, "%s: output dx is required", op);
    if (dx->storage) {
        if (in_h == 0 && in_w == 0 && dx->ndim == 4) {
            in_h = dx->shape[2];
            in_w = dx->shape[3];
        }
    }
    if (in_h < 1 || in_w < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: the input size %lldx%lld is not valid", op,
                        (long long)in_h, (long long)in_w);
    const int64_t xshape[4] = {dy->shape[0], dy->shape[1], in_h, in_w};
    dense dyd, ixd;
    if ((st = dyd.of(dy)) || (st = ixd.of(indices))) return st;
    const mrt_tensor *ins[2] = {dy, indices};
    out_target tdx;
    if ((st = target_open(op, "dx", dx, 4, xshape, ins, 2, 0, &tdx))) return st;
    const int64_t total = mrt_tensor_numel(dy), per_out = dy->shape[2] * dy->shape[3];
    st = mrt_cu_fill(&tdx.t, 0.0);
    if (!st && total > 0) {
        MRT_LAUNCH(k_maxpool_scatter, mrt_cu_blocks(total), MRT_CU_THREADS, mrt_cu_stream(), total,
                   per_out, in_h * in_w, dyd.f(), mrt_cu_i64(&ixd.t), mrt_cu_f32(&tdx.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&tdx, st);
}

/* ---- global average pooling ---------------------------------------------------------------------- */

__global__ void k_plane_mean(int64_t planes, int64_t HW, const float *x, float *y)
{
    GRID_STRIDE(pl, planes)
    {
        double acc = 0.0;
        for (int64_t i = 0; i < HW; i++) acc += (double)x[pl * HW + i];
        y[pl] = (float)(acc / (double)HW);
    }
}

__global__ void k_plane_broadcast(int64_t total, int64_t HW, double scale, const float *dy, float *dx)
{
    GRID_STRIDE(e, total) { dx[e] = (float)((double)dy[e / HW] * scale); }
}

extern "C" mrt_status mrt_cu_avgpool_global_forward(const mrt_tensor *x, mrt_tensor *y)
{
    static const char op[] = "avgpool_global_forward";
    mrt_status st;
    if ((st = need_4d(op, "input", x))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    if (HW == 0) return mrt_fail(MRT_ERR_SHAPE, "%s: input planes are empty", op);
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t oshape[2] = {N, C};
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[1] = {x};
    out_target ty;
    if ((st = target_open(op, "y", y, 2, oshape, ins, 1, 0, &ty))) return st;
    if (N * C > 0) {
        MRT_LAUNCH(k_plane_mean, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW,
                   xd.f(), mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_avgpool_global_backward(const mrt_tensor *dy, int64_t in_h,
                                                     int64_t in_w, mrt_tensor *dx)
{
    static const char op[] = "avgpool_global_backward";
    mrt_status st;
    if ((st = mrt_cu_need(op, "grad_output", dy, MRT_F32))) return st;
    if (dy->ndim != 2) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: grad_output must be 2-d (N,C), got shape %s", op,
                        mrt_shape_str(dy->ndim, dy->shape, a, sizeof a));
    }
    if (!dx) return mrt_fail(MRT_ERR_ARG, "%s: output dx is required", op);
    if (dx->storage && in_h == 0 && in_w == 0 && dx->ndim == 4) {
        in_h = dx->shape[2];
        in_w = dx->shape[3];
    }
    if (in_h < 1 || in_w < 1)
        return mrt_fail(MRT_ERR_ARG, "%s: the input size %lldx%lld is not valid", op,
                        (long long)in_h, (long long)in_w);
    const int64_t xshape[4] = {dy->shape[0], dy->shape[1], in_h, in_w};
    dense dyd;
    if ((st = dyd.of(dy))) return st;
    const mrt_tensor *ins[1] = {dy};
    out_target tdx;
    if ((st = target_open(op, "dx", dx, 4, xshape, ins, 1, 0, &tdx))) return st;
    const int64_t total = xshape[0] * xshape[1] * in_h * in_w;
    if (total > 0) {
        MRT_LAUNCH(k_plane_broadcast, mrt_cu_blocks(total), MRT_CU_THREADS, mrt_cu_stream(), total,
                   in_h * in_w, 1.0 / (double)(in_h * in_w), dyd.f(), mrt_cu_f32(&tdx.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&tdx, st);
}

/* ---- GeM pooling ---------------------------------------------------------------------------------- */

/* y = (mean clamp(x, eps)^p)^(1/p), per plane, in double (as the CPU). */
__global__ void k_gem(int64_t planes, int64_t HW, double p, double eps, const float *x, float *y)
{
    GRID_STRIDE(pl, planes)
    {
        double s = 0.0;
        for (int64_t i = 0; i < HW; i++) {
            const double v = (double)x[pl * HW + i];
            s += pow(v < eps ? eps : v, p);
        }
        y[pl] = (float)pow(s / (double)HW, 1.0 / p);
    }
}

/* dx and the per-plane contribution to dp. */
__global__ void k_gem_grad(int64_t planes, int64_t HW, double p, double eps, const float *x,
                           const float *dy, float *dx, double *dp_part)
{
    GRID_STRIDE(pl, planes)
    {
        const float *px = x + pl * HW;
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < HW; i++) {
            const double v = (double)px[i];
            const double cl = v < eps ? eps : v;
            const double e = pow(cl, p);
            s1 += e;
            s2 += e * log(cl);
        }
        const double g = (double)dy[pl];
        const double m = s1 / (double)HW, yy = pow(m, 1.0 / p);
        if (dp_part) dp_part[pl] = g * yy * (s2 / (p * s1) - log(m) / (p * p));
        if (dx) {
            const double scale = g * yy / s1;
            for (int64_t i = 0; i < HW; i++) {
                const double v = (double)px[i];
                const double cl = v < eps ? eps : v;
                dx[pl * HW + i] = v >= eps ? (float)(scale * pow(cl, p) / v) : 0.0f;
            }
        }
    }
}

/* dp[0] += sum of the parts, in plane order. */
__global__ void k_sum_parts(int64_t n, const double *part, float *dp)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += part[i];
        dp[0] += (float)s;
    }
}

static mrt_status gem_p(const char *op, const mrt_tensor *p, double eps, double *pv)
{
    mrt_status st = mrt_cu_need(op, "p", p, MRT_F32);
    if (st) return st;
    if (mrt_tensor_numel(p) != 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: p must hold one element, got shape %s", op,
                        mrt_shape_str(p->ndim, p->shape, a, sizeof a));
    }
    float v;
    if ((st = mrt_tensor_read_elem(p, p->offset, &v))) return st;
    *pv = (double)v;
    if (!isfinite(*pv) || *pv == 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: p must be finite and non-zero, got %g", op, *pv);
    if (!isfinite(eps) || eps <= 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: eps must be finite and > 0, got %g", op, eps);
    return MRT_OK;
}

extern "C" mrt_status mrt_cu_gem_forward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                         mrt_tensor *y)
{
    static const char op[] = "gem_forward";
    mrt_status st;
    double pv;
    if ((st = need_4d(op, "input", x)) || (st = gem_p(op, p, eps, &pv))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    if (HW == 0) return mrt_fail(MRT_ERR_SHAPE, "%s: input planes are empty", op);
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const int64_t oshape[2] = {N, C};
    dense xd;
    if ((st = xd.of(x))) return st;
    const mrt_tensor *ins[2] = {x, p};
    out_target ty;
    if ((st = target_open(op, "y", y, 2, oshape, ins, 2, 0, &ty))) return st;
    if (N * C > 0) {
        MRT_LAUNCH(k_gem, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW, pv, eps,
                   xd.f(), mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_gem_backward(const mrt_tensor *x, const mrt_tensor *p, double eps,
                                          const mrt_tensor *y, const mrt_tensor *dy, mrt_tensor *dx,
                                          mrt_tensor *dp)
{
    static const char op[] = "gem_backward";
    mrt_status st;
    double pv;
    if ((st = need_4d(op, "input", x)) || (st = gem_p(op, p, eps, &pv))) return st;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t oshape[2] = {N, C};
    if (y && y->storage && !mrt_cu_same_shape(y, 2, oshape)) return mrt_cu_shape_error(op, "y", y, 2, oshape);
    if ((st = mrt_cu_need(op, "grad_output", dy, MRT_F32))) return st;
    if (!mrt_cu_same_shape(dy, 2, oshape)) return mrt_cu_shape_error(op, "grad_output", dy, 2, oshape);
    if (dp) {
        if ((st = mrt_cu_need(op, "dp", dp, MRT_F32))) return st;
        if (mrt_tensor_numel(dp) != 1) return mrt_cu_shape_error(op, "dp", dp, p->ndim, p->shape);
    }
    dense xd, dyd;
    if ((st = xd.of(x)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, p, dy};
    out_target tdx;
    if (dx && (st = target_open(op, "dx", dx, 4, x->shape, ins, 3, 0, &tdx))) return st;
    scratch part;
    if (dp && N * C > 0) st = part.get((size_t)(N * C) * sizeof(double));
    if (!st && N * C > 0 && HW > 0) {
        MRT_LAUNCH(k_gem_grad, mrt_cu_blocks(N * C), MRT_CU_THREADS, mrt_cu_stream(), N * C, HW, pv,
                   eps, xd.f(), dyd.f(), dx ? mrt_cu_f32(&tdx.t) : (float *)NULL,
                   dp ? (double *)part.p : (double *)NULL);
        st = mrt_cu_launched(op);
        if (!st && dp) {
            MRT_LAUNCH(k_sum_parts, 1, 1, mrt_cu_stream(), N * C, (const double *)part.p,
                       (float *)dp->storage->data + dp->offset);
            st = mrt_cu_launched(op);
        }
    }
    if (dx) st = target_close(&tdx, st);
    return st;
}

/* ---- dropout ------------------------------------------------------------------------------------- */

/* mask <- mask01 * scale; y <- x * mask. */
__global__ void k_dropout(mrt_cu_iter it, float scale, float *y, float *m, const float *x)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        const float k = m[off[1]] * scale;
        m[off[1]] = k;
        y[off[0]] = x[off[2]] * k;
    }
}

__global__ void k_mul3(mrt_cu_iter it, float *o, const float *a, const float *b)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        o[off[0]] = a[off[1]] * b[off[2]];
    }
}

/* The keep/drop draws are the CPU's (counter-based Philox, the same
 * generator state), made on the host and copied over: a mask for a given
 * seed is the same on both backends, and dropout in these models acts on
 * the small classifier input only. */
extern "C" mrt_status mrt_cu_dropout_forward(const mrt_tensor *x_in, double prob, mrt_rng *rng,
                                             mrt_tensor *y, mrt_tensor *mask)
{
    static const char op[] = "dropout_forward";
    mrt_status st = mrt_cu_need(op, "input", x_in, MRT_F32);
    if (st) return st;
    if (!(prob >= 0.0 && prob <= 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: probability must be in [0, 1], got %g", op, prob);
    if (!y) return mrt_fail(MRT_ERR_ARG, "%s: output y is required", op);
    const mrt_tensor x = *x_in;
    mrt_tensor tmp = {};
    mrt_tensor *m = mask ? mask : &tmp;
    if ((st = relu_out(op, "y", y, &x)) != MRT_OK) return st;
    if ((st = relu_out(op, "mask", m, &x)) != MRT_OK) return st;
    if (prob == 0.0) {
        if (!(st = mrt_cu_fill(m, 1.0))) st = mrt_cu_copy(y, &x);
    } else if (prob == 1.0) {
        if (!(st = mrt_cu_fill(m, 0.0))) st = mrt_cu_fill(y, 0.0);
    } else {
        mrt_tensor host = {};
        if (!(st = mrt_tensor_alloc_uninit(&host, MRT_F32, x.ndim, x.shape)) &&
            !(st = mrt_rng_bernoulli(rng ? rng : mrt_rng_default(), &host, 1.0 - prob)))
            st = mrt_tensor_copy(m, &host);
        mrt_tensor_release(&host);
        if (!st) {
            mrt_cu_iter it;
            mrt_cu_iter_init(&it, x.ndim, x.shape);
            mrt_cu_iter_add(&it, y);
            mrt_cu_iter_add(&it, m);
            mrt_cu_iter_add(&it, &x);
            mrt_cu_iter_finish(&it);
            if (it.n > 0) {
                MRT_LAUNCH(k_dropout, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
                           (float)(1.0 / (1.0 - prob)), mrt_cu_f32(y), mrt_cu_f32(m), mrt_cu_f32(&x));
                st = mrt_cu_launched(op);
            }
        }
    }
    mrt_tensor_release(&tmp);
    return st;
}

extern "C" mrt_status mrt_cu_dropout_backward(const mrt_tensor *dy_in, const mrt_tensor *mask_in,
                                              mrt_tensor *dx)
{
    static const char op[] = "dropout_backward";
    mrt_status st = mrt_cu_need(op, "grad_output", dy_in, MRT_F32);
    if (!st) st = mrt_cu_need(op, "mask", mask_in, MRT_F32);
    if (st) return st;
    const mrt_tensor dy = *dy_in, m = *mask_in;
    if (!mrt_cu_same_shape(&m, dy.ndim, dy.shape)) return mrt_cu_shape_error(op, "mask", &m, dy.ndim, dy.shape);
    if ((st = relu_out(op, "dx", dx, &dy))) return st;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, dy.ndim, dy.shape);
    mrt_cu_iter_add(&it, dx);
    mrt_cu_iter_add(&it, &dy);
    mrt_cu_iter_add(&it, &m);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_mul3, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, mrt_cu_f32(dx),
               mrt_cu_f32(&dy), mrt_cu_f32(&m));
    return mrt_cu_launched(op);
}

/* ---- losses --------------------------------------------------------------------------------------- */

__device__ __forceinline__ double sigmoid_d(double z)
{
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    const double e = exp(z);
    return e / (1.0 + e);
}

/* Per-element BCE terms (double), summed afterwards in a fixed order. */
__global__ void k_bce_terms(int64_t n, const float *z, const float *t, double *out)
{
    GRID_STRIDE(i, n)
    {
        const double zz = (double)z[i], tt = (double)t[i];
        out[i] = (zz > 0.0 ? zz : 0.0) - zz * tt + log1p(exp(-fabs(zz)));
    }
}

__global__ void k_bce_grad(int64_t n, double inv, const float *z, const float *t, float *g)
{
    GRID_STRIDE(i, n) { g[i] = (float)((sigmoid_d((double)z[i]) - (double)t[i]) * inv); }
}

/* Sums n doubles in blocks of `block` (block order kept), one partial per block. */
__global__ void k_sum_blocks(int64_t n, int64_t block, const double *v, double *part)
{
    GRID_STRIDE(b, (n + block - 1) / block)
    {
        double acc = 0.0;
        const int64_t hi = (b + 1) * block < n ? (b + 1) * block : n;
        for (int64_t i = b * block; i < hi; i++) acc += v[i];
        part[b] = acc;
    }
}

/* Mean of n device doubles: block partials on the device, the rest on the host. */
static mrt_status mean_of(const char *op, const double *v, int64_t n, int64_t divisor, double *out)
{
    const int64_t block = 1024, nb = (n + block - 1) / block;
    scratch part;
    mrt_status st = part.get((size_t)nb * sizeof(double));
    if (st) return st;
    MRT_LAUNCH(k_sum_blocks, mrt_cu_blocks(nb), MRT_CU_THREADS, mrt_cu_stream(), n, block, v,
               (double *)part.p);
    if ((st = mrt_cu_launched(op))) return st;
    double *host = (double *)malloc((size_t)nb * sizeof(double));
    if (!host) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    st = mrt_backend_get(MRT_CUDA)->memory.to_host(host, part.p, (size_t)nb * sizeof(double));
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += host[b];
    free(host);
    *out = s / (double)divisor;
    return st;
}

static mrt_status bce_check(const char *op, const mrt_tensor *z, const mrt_tensor *t)
{
    mrt_status st = mrt_cu_need(op, "logits", z, MRT_F32);
    if (st) return st;
    if (t->storage && t->dtype == MRT_F32 && t->ndim == 1 && z->ndim >= 1 &&
        t->shape[0] == z->shape[0])
        return mrt_fail(MRT_ERR_DTYPE,
                        "%s: a class-index target must be int64, got float32 (convert with :long())", op);
    if ((st = mrt_cu_need(op, "target", t, MRT_F32))) return st;
    if (!mrt_cu_same_shape(t, z->ndim, z->shape)) return mrt_cu_shape_error(op, "target", t, z->ndim, z->shape);
    if (mrt_tensor_numel(z) == 0)
        return mrt_fail(MRT_ERR_SHAPE, "%s: logits hold no elements to average", op);
    return MRT_OK;
}

extern "C" mrt_status mrt_cu_bce_logits_forward(const mrt_tensor *logits, const mrt_tensor *target,
                                                double *loss)
{
    static const char op[] = "bce_logits_forward";
    mrt_status st = bce_check(op, logits, target);
    if (st) return st;
    if (!loss) return mrt_fail(MRT_ERR_ARG, "%s: loss pointer is required", op);
    const int64_t n = mrt_tensor_numel(logits);
    dense zd, td;
    scratch terms;
    if ((st = zd.of(logits)) || (st = td.of(target)) || (st = terms.get((size_t)n * sizeof(double))))
        return st;
    MRT_LAUNCH(k_bce_terms, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, zd.f(), td.f(),
               (double *)terms.p);
    if ((st = mrt_cu_launched(op))) return st;
    return mean_of(op, (const double *)terms.p, n, n, loss);
}

extern "C" mrt_status mrt_cu_bce_logits_backward(const mrt_tensor *logits, const mrt_tensor *target,
                                                 mrt_tensor *dlogits)
{
    static const char op[] = "bce_logits_backward";
    mrt_status st = bce_check(op, logits, target);
    if (st) return st;
    if (!dlogits) return mrt_fail(MRT_ERR_ARG, "%s: output dlogits is required", op);
    const int64_t n = mrt_tensor_numel(logits);
    dense zd, td;
    if ((st = zd.of(logits)) || (st = td.of(target))) return st;
    const mrt_tensor *ins[2] = {logits, target};
    out_target tg;
    if ((st = target_open(op, "dlogits", dlogits, logits->ndim, logits->shape, ins, 2, 0, &tg)))
        return st;
    MRT_LAUNCH(k_bce_grad, mrt_cu_blocks(n), MRT_CU_THREADS, mrt_cu_stream(), n, 1.0 / (double)n,
               zd.f(), td.f(), mrt_cu_f32(&tg.t));
    return target_close(&tg, mrt_cu_launched(op));
}

/* One thread per row: log-sum-exp, then the row loss or the row gradient. */
__global__ void k_cross_entropy(int64_t N, int64_t C, const float *z, const int64_t *cls,
                                const float *prob, double invn, double *row_loss, float *grad)
{
    GRID_STRIDE(i, N)
    {
        const float *zr = z + i * C;
        double m = -INFINITY;
        for (int64_t j = 0; j < C; j++)
            if ((double)zr[j] > m) m = (double)zr[j];
        double lse = m;
        if (isfinite(m)) {
            double s = 0.0;
            for (int64_t j = 0; j < C; j++) s += exp((double)zr[j] - m);
            lse = m + log(s);
        }
        if (row_loss) {
            if (cls) {
                row_loss[i] = lse - (double)zr[cls[i]];
            } else {
                double acc = 0.0;
                for (int64_t j = 0; j < C; j++) {
                    const double tj = (double)prob[i * C + j];
                    if (tj != 0.0) acc -= tj * ((double)zr[j] - lse);
                }
                row_loss[i] = acc;
            }
        }
        if (grad) {
            double tsum = 1.0;
            if (!cls) {
                tsum = 0.0;
                for (int64_t j = 0; j < C; j++) tsum += (double)prob[i * C + j];
            }
            for (int64_t j = 0; j < C; j++) {
                const double p = exp((double)zr[j] - lse);
                const double t = cls ? (j == cls[i] ? 1.0 : 0.0) : (double)prob[i * C + j];
                grad[i * C + j] = (float)((p * tsum - t) * invn);
            }
        }
    }
}

static mrt_status ce_check(const char *op, const mrt_tensor *z, const mrt_tensor *t)
{
    mrt_status st = mrt_cu_need(op, "logits", z, MRT_F32);
    if (st) return st;
    if (z->ndim != 2 || z->shape[0] < 1 || z->shape[1] < 1) {
        char a[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "%s: logits must be 2-d (N,C) with N, C >= 1, got shape %s",
                        op, mrt_shape_str(z->ndim, z->shape, a, sizeof a));
    }
    if (!t || !t->storage) return mrt_fail(MRT_ERR_ARG, "%s: target is not allocated (empty or released)", op);
    if (t->dtype == MRT_I64) {
        if ((st = mrt_cu_need(op, "target", t, MRT_I64))) return st;
        const int64_t shape[1] = {z->shape[0]};
        if (!mrt_cu_same_shape(t, 1, shape)) return mrt_cu_shape_error(op, "target", t, 1, shape);
        /* Labels are checked on the host before anything is written. */
        mrt_tensor host = {};
        if ((st = mrt_tensor_to(t, MRT_CPU, &host))) return st;
        const int64_t *pt = (const int64_t *)host.storage->data + host.offset;
        for (int64_t i = 0; i < shape[0] && !st; i++)
            if (pt[i] < 0 || pt[i] >= z->shape[1])
                st = mrt_fail(MRT_ERR_INDEX, "%s: target %lld of row %lld is not a class in 1..%lld",
                              op, (long long)pt[i] + 1, (long long)i + 1, (long long)z->shape[1]);
        mrt_tensor_release(&host);
        return st;
    }
    if (t->dtype == MRT_F32 && t->ndim == 1 && t->shape[0] == z->shape[0])
        return mrt_fail(MRT_ERR_DTYPE,
                        "%s: a class-index target must be int64, got float32 (convert with :long())", op);
    if ((st = mrt_cu_need(op, "target", t, MRT_F32))) return st;
    if (!mrt_cu_same_shape(t, 2, z->shape)) return mrt_cu_shape_error(op, "target", t, 2, z->shape);
    return MRT_OK;
}

static mrt_status ce_dense(const mrt_tensor *t, dense *cls, dense *prob)
{
    return t->dtype == MRT_I64 ? cls->of(t) : prob->of(t);
}

extern "C" mrt_status mrt_cu_cross_entropy_forward(const mrt_tensor *logits,
                                                   const mrt_tensor *target, double *loss)
{
    static const char op[] = "cross_entropy_forward";
    mrt_status st = ce_check(op, logits, target);
    if (st) return st;
    if (!loss) return mrt_fail(MRT_ERR_ARG, "%s: loss pointer is required", op);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    dense zd, cls, prob;
    scratch rows;
    if ((st = zd.of(logits)) || (st = ce_dense(target, &cls, &prob)) ||
        (st = rows.get((size_t)N * sizeof(double))))
        return st;
    MRT_LAUNCH(k_cross_entropy, mrt_cu_blocks(N), MRT_CU_THREADS, mrt_cu_stream(), N, C, zd.f(),
               cls.t.storage ? mrt_cu_i64(&cls.t) : (const int64_t *)NULL,
               prob.t.storage ? prob.f() : (const float *)NULL, 1.0 / (double)N, (double *)rows.p,
               (float *)NULL);
    if ((st = mrt_cu_launched(op))) return st;
    return mean_of(op, (const double *)rows.p, N, N, loss);
}

extern "C" mrt_status mrt_cu_cross_entropy_backward(const mrt_tensor *logits,
                                                    const mrt_tensor *target, mrt_tensor *dlogits)
{
    static const char op[] = "cross_entropy_backward";
    mrt_status st = ce_check(op, logits, target);
    if (st) return st;
    if (!dlogits) return mrt_fail(MRT_ERR_ARG, "%s: output dlogits is required", op);
    const int64_t N = logits->shape[0], C = logits->shape[1];
    dense zd, cls, prob;
    if ((st = zd.of(logits)) || (st = ce_dense(target, &cls, &prob))) return st;
    const mrt_tensor *ins[2] = {logits, target};
    out_target tg;
    if ((st = target_open(op, "dlogits", dlogits, 2, logits->shape, ins, 2, 0, &tg))) return st;
    MRT_LAUNCH(k_cross_entropy, mrt_cu_blocks(N), MRT_CU_THREADS, mrt_cu_stream(), N, C, zd.f(),
               cls.t.storage ? mrt_cu_i64(&cls.t) : (const int64_t *)NULL,
               prob.t.storage ? prob.f() : (const float *)NULL, 1.0 / (double)N, (double *)NULL,
               mrt_cu_f32(&tg.t));
    return target_close(&tg, mrt_cu_launched(op));
}

extern "C" void mrt_cu_register_nn_ops(mrt_backend *b)
{
    b->nn.conv2d_forward = mrt_cu_conv2d_forward;
    b->nn.conv2d_backward = mrt_cu_conv2d_backward;
    b->nn.linear_forward = mrt_cu_linear_forward;
    b->nn.linear_backward = mrt_cu_linear_backward;
    b->nn.batchnorm2d_forward = mrt_cu_batchnorm2d_forward;
    b->nn.batchnorm2d_backward = mrt_cu_batchnorm2d_backward;
    b->nn.relu_forward = mrt_cu_relu_forward;
    b->nn.relu_backward = mrt_cu_relu_backward;
    b->nn.maxpool2d_forward = mrt_cu_maxpool2d_forward;
    b->nn.maxpool2d_backward = mrt_cu_maxpool2d_backward;
    b->nn.avgpool_global_forward = mrt_cu_avgpool_global_forward;
    b->nn.avgpool_global_backward = mrt_cu_avgpool_global_backward;
    b->nn.gem_forward = mrt_cu_gem_forward;
    b->nn.gem_backward = mrt_cu_gem_backward;
    b->nn.dropout_forward = mrt_cu_dropout_forward;
    b->nn.dropout_backward = mrt_cu_dropout_backward;
    b->nn.bce_logits_forward = mrt_cu_bce_logits_forward;
    b->nn.bce_logits_backward = mrt_cu_bce_logits_backward;
    b->nn.cross_entropy_forward = mrt_cu_cross_entropy_forward;
    b->nn.cross_entropy_backward = mrt_cu_cross_entropy_backward;
}
