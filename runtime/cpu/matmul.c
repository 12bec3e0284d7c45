/* Matrix products through the CPU GEMM (gemm.c).
 *
 * Strided 2-D operands are passed to sgemm without copying whenever one of
 * their two strides is 1 (row-major, or a transposed view via CblasTrans);
 * only other layouts are made contiguous first. */
#include <inttypes.h>
#include "gemm.h"
#include "machrt/backend.h"
#include "matmul_geom.h"
#include "tensor_cpu.h"

typedef struct {
    const float *ptr;
    CBLAS_TRANSPOSE trans;
    int64_t ld;
} gemm_operand;

/* Describes a rows x cols matrix at `ptr` with strides (rs, cs) for sgemm
 * in row-major order; returns 0 when sgemm cannot take it as is. */
static int describe(const float *ptr, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                    gemm_operand *g)
{
    g->ptr = ptr;
    if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols)) {
        g->trans = CblasNoTrans;
        g->ld = rows == 1 ? (cols > 0 ? cols : 1) : rs;
        return g->ld >= (cols > 0 ? cols : 1);
    }
    if ((rs == 1 || rows == 1) && (cols == 1 || cs >= rows)) {
        g->trans = CblasTrans;
        g->ld = cols == 1 ? (rows > 0 ? rows : 1) : cs;
        return g->ld >= (rows > 0 ? rows : 1);
    }
    return 0;
}

static mrt_status fail_shapes(const char *why, const mrt_tensor *a, const mrt_tensor *b)
{
    char x[MRT_SHAPE_STRLEN], y[MRT_SHAPE_STRLEN];
    return mrt_fail(MRT_ERR_SHAPE, "matmul: %s (%s @ %s)", why,
                    mrt_shape_str(a->ndim, a->shape, x, sizeof x),
                    mrt_shape_str(b->ndim, b->shape, y, sizeof y));
}

mrt_status mrt_matmul_geometry(const mrt_tensor *a_in, const mrt_tensor *b_in, mrt_matmul_geom *g)
{
    if (a_in->ndim == 0 || b_in->ndim == 0)
        return fail_shapes("both operands need at least one dimension", a_in, b_in);
    mrt_tensor *a = &g->a, *b = &g->b;
    *a = *a_in;
    *b = *b_in;
    int drop_rows = 0, drop_cols = 0;
    if (a->ndim == 1) {
        a->ndim = 2; a->shape[1] = a->shape[0]; a->stride[1] = a->stride[0];
        a->shape[0] = 1; a->stride[0] = 0;
        drop_rows = 1;
    }
    if (b->ndim == 1) {
        b->ndim = 2; b->shape[1] = 1; b->stride[1] = 0;
        drop_cols = 1;
    }
    g->m = a->shape[a->ndim - 2];
    g->k = a->shape[a->ndim - 1];
    g->n = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != g->k) return fail_shapes("inner dimensions differ", a_in, b_in);
    g->bnd = (a->ndim > b->ndim ? a->ndim : b->ndim) - 2;
    if (g->bnd + 2 > MRT_MAX_DIMS) return fail_shapes("too many dimensions", a_in, b_in);
    g->batch = 1;
    for (int i = 0; i < g->bnd; i++) {
        int ia = i - (g->bnd - (a->ndim - 2)), ib = i - (g->bnd - (b->ndim - 2));
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return fail_shapes("batch dimensions cannot be broadcast", a_in, b_in);
        g->bshape[i] = sa == 1 ? sb : sa;
        g->batch *= g->bshape[i];
    }
    g->ond = 0;
    for (int i = 0; i < g->bnd; i++) g->oshape[g->ond++] = g->bshape[i];
    if (!drop_rows) g->oshape[g->ond++] = g->m;
    if (!drop_cols) g->oshape[g->ond++] = g->n;
    return MRT_OK;
}

mrt_status mrt_matmul(const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *out)
{
    if (!a->storage || !b->storage)
        return mrt_fail(MRT_ERR_ARG, "matmul: tensor has been released");
    mrt_device dev;
    MRT_OP_DEVICE("matmul", &dev, a, b, out);
    if (a->dtype != MRT_F32 || b->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "matmul: expected float32 tensors, got %s and %s",
                        mrt_dtype_name(a->dtype), mrt_dtype_name(b->dtype));
    mrt_matmul_geom g;
    mrt_status st;
    if ((st = mrt_matmul_geometry(a, b, &g)) ||
        (st = mrt_tensor_prepare_out_on("matmul", out, MRT_F32, g.ond, g.oshape, dev)))
        return st;
    /* The GEMMs overwrite C before they have read A and B, so an output
     * that shares storage with an input, or that is strided, gets the
     * product computed aside and copied in. */
    if (out->storage == a->storage || out->storage == b->storage ||
        !mrt_tensor_is_contiguous(out)) {
        mrt_tensor tmp = {0};
        if ((st = mrt_matmul(a, b, &tmp))) return st;
        st = mrt_tensor_copy(out, &tmp);
        mrt_tensor_release(&tmp);
        return st;
    }
    if (g.m == 0 || g.n == 0 || g.batch == 0) return MRT_OK;
    if (g.k == 0) return mrt_tensor_fill(out, 0.0);
    MRT_BACKEND_CALL(st, "matmul", dev, tensor, matmul, (a, b, out));
    return st;
}

/* out: contiguous, of the result's shape, sharing no storage with a or b;
 * m, n, k and the batch are not 0. */
mrt_status mrt_cpu_matmul(const mrt_tensor *a_in, const mrt_tensor *b_in, mrt_tensor *out)
{
    mrt_matmul_geom g;
    mrt_status st = mrt_matmul_geometry(a_in, b_in, &g);
    if (st) return st;
    const mrt_tensor a = g.a, b = g.b;
    const int64_t m = g.m, k = g.k, n = g.n, batch = g.batch;
    const int bnd = g.bnd;
    const int64_t *bshape = g.bshape;
    int64_t astr[MRT_MAX_DIMS], bstr[MRT_MAX_DIMS];
    for (int i = 0; i < bnd; i++) {
        int ia = i - (bnd - (a.ndim - 2)), ib = i - (bnd - (b.ndim - 2));
        astr[i] = (ia >= 0 && a.shape[ia] != 1) ? a.stride[ia] : 0;
        bstr[i] = (ib >= 0 && b.shape[ib] != 1) ? b.stride[ib] : 0;
    }
    float *c = mrt_f32(out);

    /* Layouts sgemm cannot take directly are copied once, up front. */
    mrt_tensor ac = {0}, bc = {0};
    gemm_operand ga, gb;
    const float *abase = mrt_f32(&a), *bbase = mrt_f32(&b);
    int64_t ars = a.stride[a.ndim - 2], acs = a.stride[a.ndim - 1];
    int64_t brs = b.stride[b.ndim - 2], bcs = b.stride[b.ndim - 1];
    if (!describe(abase, m, k, ars, acs, &ga)) {
        if ((st = mrt_tensor_clone(&ac, &a))) return st;
        for (int i = 0; i < bnd; i++) {
            int ia = i - (bnd - (ac.ndim - 2));
            astr[i] = (ia >= 0 && ac.shape[ia] != 1) ? ac.stride[ia] : 0;
        }
        abase = mrt_f32(&ac);
        describe(abase, m, k, ac.stride[ac.ndim - 2], ac.stride[ac.ndim - 1], &ga);
    }
    if (!describe(bbase, k, n, brs, bcs, &gb)) {
        if ((st = mrt_tensor_clone(&bc, &b))) {
            mrt_tensor_release(&ac);
            return st;
        }
        for (int i = 0; i < bnd; i++) {
            int ib = i - (bnd - (bc.ndim - 2));
            bstr[i] = (ib >= 0 && bc.shape[ib] != 1) ? bc.stride[ib] : 0;
        }
        bbase = mrt_f32(&bc);
        describe(bbase, k, n, bc.stride[bc.ndim - 2], bc.stride[bc.ndim - 1], &gb);
    }

    for (int64_t t = 0; t < batch; t++) {
        int64_t aoff = 0, boff = 0, r = t;
        for (int d = bnd - 1; d >= 0; d--) {
            int64_t idx = r % bshape[d];
            r /= bshape[d];
            aoff += idx * astr[d];
            boff += idx * bstr[d];
        }
        mrt_cpu_gemm(ga.trans, gb.trans, (int)m, (int)n, (int)k, 1.0f,
                     abase + aoff, (int)ga.ld, bbase + boff, (int)gb.ld, 0.0f,
                     c + t * m * n, (int)(n > 0 ? n : 1));
    }
    mrt_tensor_release(&ac);
    mrt_tensor_release(&bc);
    return MRT_OK;
}
