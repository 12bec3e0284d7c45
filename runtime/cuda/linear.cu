/* Fully connected layer on the device, with the semantics of
 * runtime/nn/linear.c: cuBLAS GEMMs each way, the bias and its gradient by
 * small kernels. Arguments arrive checked by mrt_linear_forward /
 * mrt_linear_backward: N >= 1, IN >= 1, OUT >= 1 (see nn_common.h). */
#include "nn_common.h"


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

extern "C" mrt_status mrt_cu_linear_forward(const mrt_tensor *x, const mrt_tensor *w,
                                            const mrt_tensor *b, mrt_tensor *y)
{
    static const char op[] = "linear_forward";
    const int64_t N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    mrt_status st;
    dense xd, wd, bd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (b && (st = bd.of(b)))) return st;
    const mrt_tensor *ins[3] = {x, w, b};
    out_target ty;
    if ((st = target_open(y, ins, 3, 0, &ty))) return st;
    st = mrt_cu_gemm(op, 0, 1, N, OUT, IN, 1.0f, xd.f(), IN, 0, wd.f(), IN, 0, 0.0f,
                     mrt_cu_f32(&ty.t), OUT, 0, 1);
    if (!st && b) {
        MRT_LAUNCH(k_add_row_bias, mrt_cu_blocks(N * OUT), MRT_CU_THREADS, mrt_cu_stream(),
                   N * OUT, OUT, bd.f(), mrt_cu_f32(&ty.t));
        st = mrt_cu_launched(op);
    }
    return target_close(&ty, st);
}

extern "C" mrt_status mrt_cu_linear_backward(const mrt_tensor *x, const mrt_tensor *w,
                                             const mrt_tensor *dy, mrt_tensor *dx, mrt_tensor *dw,
                                             mrt_tensor *db)
{
    static const char op[] = "linear_backward";
    const int64_t N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    mrt_status st;
    dense xd, wd, dyd;
    if ((st = xd.of(x)) || (st = wd.of(w)) || (st = dyd.of(dy))) return st;
    const mrt_tensor *ins[3] = {x, w, dy};
    out_target t;
    if (dx) {
        if ((st = target_open(dx, ins, 3, 0, &t))) return st;
        st = mrt_cu_gemm(op, 0, 0, N, IN, OUT, 1.0f, dyd.f(), OUT, 0, wd.f(), IN, 0, 0.0f,
                         mrt_cu_f32(&t.t), IN, 0, 1);
        if ((st = target_close(&t, st))) return st;
    }
    if (dw) {
        if ((st = target_open(dw, ins, 3, 1, &t))) return st;
        st = mrt_cu_gemm(op, 1, 0, OUT, IN, N, 1.0f, dyd.f(), OUT, 0, xd.f(), IN, 0, 1.0f,
                         mrt_cu_f32(&t.t), IN, 0, 1);
        if ((st = target_close(&t, st))) return st;
    }
    if (db) {
        if ((st = target_open(db, ins, 3, 1, &t))) return st;
        MRT_LAUNCH(k_column_sums, mrt_cu_blocks(OUT), MRT_CU_THREADS, mrt_cu_stream(), N, OUT,
                   dyd.f(), mrt_cu_f32(&t.t));
        st = mrt_cu_launched(op);
        if ((st = target_close(&t, st))) return st;
    }
    return MRT_OK;
}
