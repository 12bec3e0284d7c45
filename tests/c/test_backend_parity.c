/* Backend parity: every tensor, nn and optim op run on the CPU backend and
 * on the CUDA backend with the same random inputs, results compared (in the
 * manner of ggml's test-backend-ops). The CPU backend is itself verified
 * against PyTorch and finite differences by the other suites.
 *
 * In `make test` the CUDA backend is the emulated one: the .cu kernels
 * compiled for the CPU (runtime/cuda/emu). Built with `make CUDA=1` on a
 * machine with a GPU, the same suite runs on the device unchanged; with no
 * device it registers no test and says so.
 *
 * Tolerances: data movement, indices and elementwise ops whose formula is
 * the CPU's are compared exactly or to a few ulps; anything through a GEMM
 * (cuBLAS / OpenBLAS sum in different orders) to 1e-4 of the result's
 * scale; double-accumulated reductions to 1e-6. */
#include <signal.h>
#include <stdlib.h>

#include "check_util.h"
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "machrt/optim.h"
#include "machrt/rng.h"
#include "machrt/spectral.h"

#define TOL_EXACT 0.0
#define TOL_ULP 2e-6
#define TOL_SUM 1e-6
#define TOL_GEMM 1e-4

/* ---- helpers ---------------------------------------------------------------------- */

static mrt_tensor host_rand(int ndim, const int64_t *shape, uint64_t seed, double lo, double hi)
{
    mrt_tensor t = {0};
    tu_alloc_or_fail(&t, MRT_F32, ndim, shape);
    tu_fill_uniform(&t, seed, lo, hi);
    return t;
}
#define RAND(seed, lo, hi, ...) host_rand(TU_SHAPE(__VA_ARGS__), (seed), (lo), (hi))

static mrt_tensor dev(const mrt_tensor *h)
{
    mrt_tensor d = {0};
    TU_OK(mrt_tensor_to(h, MRT_CUDA, &d));
    ck_assert_int_eq(d.storage->device, MRT_CUDA);
    return d;
}

static mrt_tensor host(const mrt_tensor *d)
{
    mrt_tensor h = {0};
    TU_OK(mrt_tensor_to(d, MRT_CPU, &h));
    return h;
}

/* |got - want| <= tol * (1 + |want|) elementwise (NaN matches NaN); `got`
 * may live on either device. */
static void assert_close(const mrt_tensor *got_any, const mrt_tensor *want, double tol,
                         const char *what)
{
    mrt_tensor got = host(got_any);
    tu_assert_shape(&got, want->ndim, want->shape);
    ck_assert_int_eq(got.dtype, want->dtype);
    int64_t n = tu_numel(want);
    for (int64_t i = 0; i < n; i++) {
        double g = tu_get(&got, i), w = tu_get(want, i);
        ck_assert_msg(tu_close(g, w, tol, tol) || (isnan(g) && isnan(w)),
                      "%s[%lld]: cuda %.9g, cpu %.9g (tol %g)", what, (long long)i, g, w, tol);
    }
    mrt_tensor_release(&got);
}

static void release_all(mrt_tensor *ts, int n)
{
    for (int i = 0; i < n; i++) mrt_tensor_release(&ts[i]);
}

/* ---- devices, transfers, errors ------------------------------------------------------- */

START_TEST(test_round_trip_and_views)
{
    ck_assert(mrt_cuda_available());
    mrt_tensor a = RAND(1, -3, 3, 3, 4, 5);
    mrt_tensor d = dev(&a);
    assert_close(&d, &a, TOL_EXACT, "round trip");
    /* A strided view goes over as its logical contents. */
    mrt_tensor v = {0}, dv = {0}, hv = {0};
    TU_OK(mrt_view_transpose(&a, 0, 2, &v));
    dv = dev(&v);
    TU_OK(mrt_tensor_contiguous(&v, &hv));
    assert_close(&dv, &hv, TOL_EXACT, "transposed view");
    /* Views of device tensors, and device -> host into a strided view. */
    mrt_tensor dn = {0}, hn = {0}, back = {0};
    TU_OK(mrt_view_narrow(&d, 1, 1, 2, &dn));
    TU_OK(mrt_view_narrow(&a, 1, 1, 2, &hn));
    assert_close(&dn, &hn, TOL_EXACT, "narrowed device view");
    mrt_tensor z = {0}, zt = {0};
    TU_ALLOC(&z, MRT_F32, 5, 2, 3);
    TU_OK(mrt_view_permute(&z, (const int[]){2, 1, 0}, &zt));
    TU_OK(mrt_tensor_copy(&zt, &dn)); /* cuda -> strided cpu */
    assert_close(&zt, &hn, TOL_EXACT, "copy into a strided host view");
    /* Broadcasting and dtype conversion across devices. */
    mrt_tensor row = RAND(2, -5, 5, 5), drow = dev(&row), big = {0}, dbig = {0};
    TU_OK(mrt_tensor_alloc_on(&dbig, MRT_I64, 2, (const int64_t[]){3, 5}, MRT_CUDA));
    TU_OK(mrt_tensor_copy(&dbig, &row)); /* cpu float -> cuda int64, broadcast */
    TU_ALLOC(&big, MRT_I64, 3, 5);
    TU_OK(mrt_tensor_copy(&big, &row));
    assert_close(&dbig, &big, TOL_EXACT, "broadcast + convert across devices");
    /* Single elements. */
    float val = 0.0f, put = 42.5f;
    TU_OK(mrt_tensor_read_elem(&d, d.offset + 7, &val));
    ck_assert(val == ((float *)a.storage->data)[7]);
    TU_OK(mrt_tensor_write_elem(&d, d.offset + 7, &put));
    TU_OK(mrt_tensor_read_elem(&d, d.offset + 7, &val));
    ck_assert(val == 42.5f);
    mrt_tensor all[] = {a, d, v, dv, hv, dn, hn, z, zt, row, drow, big, dbig, back};
    release_all(all, 14);
}
END_TEST

START_TEST(test_device_mismatch_is_an_error)
{
    mrt_tensor a = RAND(3, -1, 1, 2, 3), b = RAND(4, -1, 1, 2, 3), db = dev(&b), out = {0};
    TU_FAILS(MRT_ERR_DEVICE, mrt_binary(MRT_ADD, &a, &db, &out));
    TU_MSG_HAS("cpu");
    TU_MSG_HAS("cuda");
    TU_MSG_HAS("add");
    ck_assert_ptr_null(out.storage);
    /* An allocated output on the other device. */
    mrt_tensor da = dev(&a), hout = {0};
    TU_ALLOC(&hout, MRT_F32, 2, 3);
    TU_FAILS(MRT_ERR_DEVICE, mrt_binary(MRT_MUL, &da, &db, &hout));
    TU_MSG_HAS("cuda");
    TU_MSG_HAS("cpu");
    /* nn and optim entry points too. */
    mrt_tensor x = RAND(5, -1, 1, 1, 2, 5, 5), w = RAND(6, -1, 1, 3, 2, 3, 3), dx = dev(&x), y = {0};
    mrt_conv2d_params p = {1, 1, 1, 1, 0};
    TU_FAILS(MRT_ERR_DEVICE, mrt_conv2d_forward(&dx, &w, NULL, &p, &y, NULL));
    TU_MSG_HAS("conv2d_forward");
    mrt_tensor m = {0}, v = {0};
    TU_ALLOC(&m, MRT_F32, 2, 3);
    TU_ALLOC(&v, MRT_F32, 2, 3);
    mrt_adamw_config cfg = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
    TU_FAILS(MRT_ERR_DEVICE, mrt_adamw_step(&da, &b, &m, &v, NULL, &cfg, 1));
    mrt_tensor all[] = {a, b, db, out, da, hout, x, w, dx, y, m, v};
    release_all(all, 12);
}
END_TEST

/* Bad arguments are checked once, before the call reaches a backend: the
 * same call fails with the same code and the same message on both devices,
 * and leaves its outputs unallocated. */
#define SAME_ERROR(code, cpu_call, cuda_call, needle)                                       \
    do {                                                                                   \
        char cpu_msg_[512];                                                                \
        TU_FAILS((code), (cpu_call));                                                      \
        TU_MSG_HAS(needle);                                                                \
        snprintf(cpu_msg_, sizeof cpu_msg_, "%s", mrt_last_error());                       \
        TU_FAILS((code), (cuda_call));                                                     \
        ck_assert_msg(strcmp(cpu_msg_, mrt_last_error()) == 0, "%s:\n  cpu:  %s\n  cuda: %s", \
                      #cuda_call, cpu_msg_, mrt_last_error());                             \
    } while (0)

START_TEST(test_bad_arguments_fail_alike)
{
    /* linear: 5 input features against a weight expecting 6. */
    mrt_tensor x = RAND(50, -1, 1, 4, 5), w = RAND(51, -1, 1, 3, 6), b = RAND(52, -1, 1, 3);
    mrt_tensor gx = dev(&x), gw = dev(&w), gb = dev(&b), y = {0}, gy = {0};
    SAME_ERROR(MRT_ERR_SHAPE, mrt_linear_forward(&x, &w, &b, &y),
               mrt_linear_forward(&gx, &gw, &gb, &gy), "linear_forward");
    ck_assert_ptr_null(y.storage);
    ck_assert_ptr_null(gy.storage);
    /* conv2d: 2 input channels against a weight expecting 3. */
    mrt_tensor cx = RAND(53, -1, 1, 1, 2, 6, 6), cw = RAND(54, -1, 1, 4, 3, 3, 3);
    mrt_tensor gcx = dev(&cx), gcw = dev(&cw);
    mrt_conv2d_params cp = {1, 1, 1, 1, 0};
    SAME_ERROR(MRT_ERR_SHAPE, mrt_conv2d_forward(&cx, &cw, NULL, &cp, &y, NULL),
               mrt_conv2d_forward(&gcx, &gcw, NULL, &cp, &gy, NULL), "channels");
    ck_assert_ptr_null(gy.storage);
    /* batch norm: a weight of 3 for 2 channels. */
    mrt_tensor sm = {0}, si = {0}, gsm = {0}, gsi = {0};
    SAME_ERROR(MRT_ERR_SHAPE,
               mrt_batchnorm2d_forward(&cx, &b, NULL, NULL, NULL, 1, 0.1, 1e-5, &y, &sm, &si),
               mrt_batchnorm2d_forward(&gcx, &gb, NULL, NULL, NULL, 1, 0.1, 1e-5, &gy, &gsm,
                                       &gsi),
               "batchnorm2d_forward");
    ck_assert_ptr_null(gy.storage);
    ck_assert_ptr_null(gsm.storage);
    /* cross entropy: class index 3 of 3 classes (the label is read on
     * either device). */
    mrt_tensor z = RAND(55, -2, 2, 2, 3), cls = {0};
    TU_ALLOC(&cls, MRT_I64, 2);
    ((int64_t *)cls.storage->data)[1] = 3;
    mrt_tensor gz = dev(&z), gcls = dev(&cls);
    double loss = 0.0;
    SAME_ERROR(MRT_ERR_INDEX, mrt_cross_entropy_forward(&z, &cls, &loss),
               mrt_cross_entropy_forward(&gz, &gcls, &loss), "class index");
    /* AdamW: a gradient of another shape than its parameter. */
    mrt_tensor m = {0}, v = {0}, gm = {0}, gv = {0};
    TU_ALLOC(&m, MRT_F32, 3, 6);
    TU_ALLOC(&v, MRT_F32, 3, 6);
    gm = dev(&m);
    gv = dev(&v);
    mrt_adamw_config cfg = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
    SAME_ERROR(MRT_ERR_SHAPE, mrt_adamw_step(&w, &x, &m, &v, NULL, &cfg, 1),
               mrt_adamw_step(&gw, &gx, &gm, &gv, NULL, &cfg, 1), "grad");
    /* matmul: inner dimensions 5 and 3. */
    SAME_ERROR(MRT_ERR_SHAPE, mrt_matmul(&x, &w, &y), mrt_matmul(&gx, &gw, &gy), "matmul");
    ck_assert_ptr_null(gy.storage);
    /* A reduction over an int64 tensor. */
    SAME_ERROR(MRT_ERR_DTYPE, mrt_reduce_dim(MRT_SUM, &cls, 0, &y, NULL),
               mrt_reduce_dim(MRT_SUM, &gcls, 0, &gy, NULL), "float32");
    ck_assert_ptr_null(gy.storage);
    /* max-pool backward: an index outside the 6x6 input plane (the values
     * are read on either device, after the device has scattered the rest). */
    mrt_tensor pdy = RAND(56, -1, 1, 1, 2, 3, 3), pidx = {0};
    TU_ALLOC(&pidx, MRT_I64, 1, 2, 3, 3);
    ((int64_t *)pidx.storage->data)[7] = 36;
    mrt_tensor gpdy = dev(&pdy), gpidx = dev(&pidx);
    SAME_ERROR(MRT_ERR_INDEX, mrt_maxpool2d_backward(&pdy, &pidx, 6, 6, &y),
               mrt_maxpool2d_backward(&gpdy, &gpidx, 6, 6, &gy), "input plane");
    ck_assert_ptr_null(y.storage);
    ck_assert_ptr_null(gy.storage);
    mrt_tensor all[] = {x, w, b, gx, gw, gb, cx, cw, gcx, gcw, z, cls, gz, gcls,
                        m, v, gm, gv, y, gy, sm, si, gsm, gsi, pdy, pidx, gpdy, gpidx};
    release_all(all, 28);
}
END_TEST

/* A kernel that fails (a CUDA error, made here by mrt_cuda_fail_launches)
 * leaves the outputs it was given empty as they were: the op releases what
 * it allocated for them, as batch norm and pooling do. */
START_TEST(test_failed_kernels_release_their_outputs)
{
    mrt_tensor x = RAND(60, -1, 1, 4, 5), w = RAND(61, -1, 1, 3, 5), b = RAND(62, -1, 1, 3);
    mrt_tensor dy = RAND(63, -1, 1, 4, 3), t = RAND(64, 0, 1, 4, 3), cls = {0};
    TU_ALLOC(&cls, MRT_I64, 4);
    mrt_tensor gx = dev(&x), gw = dev(&w), gb = dev(&b), gdy = dev(&dy), gt = dev(&t), gcls = dev(&cls);
    mrt_tensor y = {0}, dx = {0}, dw = {0}, db = {0};
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_linear_forward(&gx, &gw, &gb, &y));
    ck_assert_ptr_null(y.storage);
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_linear_backward(&gx, &gw, &gdy, &dx, &dw, &db));
    ck_assert_ptr_null(dx.storage);
    ck_assert_ptr_null(dw.storage);
    ck_assert_ptr_null(db.storage);
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_relu_forward(&gx, &y));
    ck_assert_ptr_null(y.storage);
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_relu_backward(&gx, &gx, &dx));
    ck_assert_ptr_null(dx.storage);
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_bce_logits_backward(&gdy, &gt, &dx));
    ck_assert_ptr_null(dx.storage);
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_cross_entropy_backward(&gdy, &gcls, &dx));
    ck_assert_ptr_null(dx.storage);
    mrt_cuda_fail_launches(0);
    /* An output the caller allocated stays allocated. */
    TU_OK(mrt_tensor_alloc_on(&y, MRT_F32, 2, (int64_t[]){4, 3}, MRT_CUDA));
    mrt_cuda_fail_launches(1);
    TU_FAILS(MRT_ERR_DEVICE, mrt_linear_forward(&gx, &gw, &gb, &y));
    ck_assert_ptr_nonnull(y.storage);
    mrt_cuda_fail_launches(0);
    TU_OK(mrt_linear_forward(&gx, &gw, &gb, &y));
    mrt_tensor all[] = {x, w, b, dy, t, cls, gx, gw, gb, gdy, gt, gcls, y};
    release_all(all, 13);
}
END_TEST

#if !defined(__SANITIZE_ADDRESS__)
/* Host code must never read device memory: on a GPU that is a fault, and
 * the emulation makes it one as well (device memory is mapped only while a
 * kernel or a copy runs). Expected to die with SIGSEGV. */
START_TEST(test_host_cannot_read_device_memory)
{
    mrt_tensor a = RAND(7, -1, 1, 16), d = dev(&a);
    volatile float v = ((volatile float *)d.storage->data)[3];
    (void)v;
}
END_TEST
#endif

/* ---- tensor ops -------------------------------------------------------------------------- */

START_TEST(test_elementwise)
{
    mrt_tensor a = RAND(10, 0.5, 2, 4, 1, 6), b = RAND(11, 0.5, 2, 3, 1), at = {0};
    TU_OK(mrt_view_transpose(&a, 0, 2, &at)); /* 6 x 1 x 4, strided */
    mrt_tensor da = dev(&a), db = dev(&b), dat = dev(&at), datv = {0};
    TU_OK(mrt_view_transpose(&da, 0, 2, &datv)); /* the same view of device storage */
    for (int op = MRT_ADD; op <= MRT_MINIMUM; op++) {
        mrt_tensor h = {0}, g = {0}, h2 = {0}, g2 = {0}, hs = {0}, gs = {0}, hl = {0}, gl = {0};
        TU_OK(mrt_binary((mrt_binop)op, &a, &b, &h)); /* 4x1x6 with 3x1 -> 4x3x6 */
        TU_OK(mrt_binary((mrt_binop)op, &da, &db, &g));
        assert_close(&g, &h, op == MRT_POW ? TOL_ULP : TOL_EXACT, mrt_binop_name((mrt_binop)op));
        TU_OK(mrt_binary((mrt_binop)op, &at, &b, &h2));
        TU_OK(mrt_binary((mrt_binop)op, &datv, &db, &g2));
        assert_close(&g2, &h2, op == MRT_POW ? TOL_ULP : TOL_EXACT, "strided operand");
        TU_OK(mrt_binary_scalar((mrt_binop)op, &a, 1.5, 0, &hs));
        TU_OK(mrt_binary_scalar((mrt_binop)op, &da, 1.5, 0, &gs));
        assert_close(&gs, &hs, op == MRT_POW ? TOL_ULP : TOL_EXACT, "scalar right");
        TU_OK(mrt_binary_scalar((mrt_binop)op, &a, 1.5, 1, &hl));
        TU_OK(mrt_binary_scalar((mrt_binop)op, &da, 1.5, 1, &gl));
        assert_close(&gl, &hl, op == MRT_POW ? TOL_ULP : TOL_EXACT, "scalar left");
        mrt_tensor all[] = {h, g, h2, g2, hs, gs, hl, gl};
        release_all(all, 8);
    }
    mrt_tensor u = RAND(12, -3, 3, 5, 7), du = dev(&u);
    for (int op = MRT_NEG; op <= MRT_TANH; op++) {
        mrt_tensor h = {0}, g = {0};
        TU_OK(mrt_unary((mrt_unop)op, &u, &h));
        TU_OK(mrt_unary((mrt_unop)op, &du, &g));
        assert_close(&g, &h, TOL_ULP, mrt_unop_name((mrt_unop)op)); /* NaN from log/sqrt < 0 */
        mrt_tensor all[] = {h, g};
        release_all(all, 2);
    }
    /* In place: out is an input. */
    TU_OK(mrt_binary(MRT_MUL, &u, &u, &u));
    TU_OK(mrt_binary(MRT_MUL, &du, &du, &du));
    assert_close(&du, &u, TOL_EXACT, "in place");
    mrt_tensor all[] = {a, b, at, da, db, dat, datv, u, du};
    release_all(all, 9);
}
END_TEST

START_TEST(test_fill_and_copy)
{
    mrt_tensor h = {0}, d = {0}, hv = {0}, dv = {0};
    TU_ALLOC(&h, MRT_F32, 4, 6);
    TU_OK(mrt_tensor_alloc_on(&d, MRT_F32, 2, (const int64_t[]){4, 6}, MRT_CUDA));
    TU_OK(mrt_tensor_fill(&h, 2.5));
    TU_OK(mrt_tensor_fill(&d, 2.5));
    assert_close(&d, &h, TOL_EXACT, "fill");
    TU_OK(mrt_view_transpose(&h, 0, 1, &hv));
    TU_OK(mrt_view_transpose(&d, 0, 1, &dv));
    TU_OK(mrt_tensor_fill_range(&hv, -3.0, 0.5)); /* logical order of the view */
    TU_OK(mrt_tensor_fill_range(&dv, -3.0, 0.5));
    assert_close(&d, &h, TOL_EXACT, "fill_range through a view");
    mrt_tensor li = {0}, ld = {0}, lh = {0};
    TU_ALLOC(&lh, MRT_I64, 4, 6);
    TU_OK(mrt_tensor_copy(&lh, &h)); /* float -> int64 truncation */
    TU_OK(mrt_tensor_alloc_on(&ld, MRT_I64, 2, (const int64_t[]){4, 6}, MRT_CUDA));
    TU_OK(mrt_tensor_copy(&ld, &d));
    assert_close(&ld, &lh, TOL_EXACT, "copy float -> int64 on the device");
    TU_OK(mrt_tensor_clone(&li, &ld)); /* clone stays on the device */
    ck_assert_int_eq(li.storage->device, MRT_CUDA);
    assert_close(&li, &lh, TOL_EXACT, "clone");
    mrt_tensor all[] = {h, d, hv, dv, li, ld, lh};
    release_all(all, 7);
}
END_TEST

START_TEST(test_reductions)
{
    /* Ties and a NaN: first index of equal extremes, NaN wins. */
    mrt_tensor a = RAND(20, -4, 4, 3, 70, 9);
    float *pa = (float *)a.storage->data;
    for (int i = 0; i < 3 * 70 * 9; i += 37) pa[i] = 4.0f;
    mrt_tensor da = dev(&a);
    for (int op = MRT_SUM; op <= MRT_ARGMIN; op++) {
        double hv = 0, gv = 0;
        int64_t hi = -1, gi = -1;
        TU_OK(mrt_reduce_all((mrt_reduceop)op, &a, &hv, &hi));
        TU_OK(mrt_reduce_all((mrt_reduceop)op, &da, &gv, &gi));
        ck_assert_msg(tu_close(gv, hv, TOL_SUM, TOL_SUM), "%s: cuda %.12g cpu %.12g",
                      mrt_reduceop_name((mrt_reduceop)op), gv, hv);
        if (op >= MRT_MAX) ck_assert_int_eq(gi, hi);
        for (int dim = 0; dim < 3; dim++) {
            mrt_tensor hvals = {0}, gvals = {0}, hidx = {0}, gidx = {0};
            TU_OK(mrt_reduce_dim((mrt_reduceop)op, &a, dim, &hvals, &hidx));
            TU_OK(mrt_reduce_dim((mrt_reduceop)op, &da, dim, &gvals, &gidx));
            assert_close(&gvals, &hvals, TOL_ULP, "reduce_dim values");
            assert_close(&gidx, &hidx, TOL_EXACT, "reduce_dim indices");
            mrt_tensor all[] = {hvals, gvals, hidx, gidx};
            release_all(all, 4);
        }
    }
    pa[100] = NAN;
    mrt_tensor dn = dev(&a);
    double hv, gv;
    int64_t hi, gi;
    TU_OK(mrt_reduce_all(MRT_ARGMAX, &a, &hv, &hi));
    TU_OK(mrt_reduce_all(MRT_ARGMAX, &dn, &gv, &gi));
    ck_assert(isnan(gv) && gi == hi && hi == 100);
    /* A strided (transposed) input. */
    mrt_tensor t = {0}, dt = {0}, hs = {0}, gs = {0};
    TU_OK(mrt_view_transpose(&a, 0, 2, &t));
    TU_OK(mrt_view_transpose(&dn, 0, 2, &dt));
    TU_OK(mrt_reduce_dim(MRT_MEAN, &t, 1, &hs, NULL));
    TU_OK(mrt_reduce_dim(MRT_MEAN, &dt, 1, &gs, NULL));
    assert_close(&gs, &hs, TOL_ULP, "mean of a transposed view");
    mrt_tensor all[] = {a, da, dn, t, dt, hs, gs};
    release_all(all, 7);
}
END_TEST

START_TEST(test_matmul)
{
    struct { int an; int64_t as[4]; int bn; int64_t bs[4]; } cases[] = {
        {2, {7, 5}, 2, {5, 9}},
        {3, {4, 7, 5}, 2, {5, 3}},          /* batched x matrix */
        {4, {2, 1, 6, 5}, 3, {3, 5, 4}},    /* broadcast batch dims */
        {1, {5}, 2, {5, 4}},                /* vector x matrix */
        {3, {2, 3, 5}, 1, {5}},             /* batched matrix x vector */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mrt_tensor a = host_rand(cases[c].an, cases[c].as, 30 + c, -1, 1);
        mrt_tensor b = host_rand(cases[c].bn, cases[c].bs, 40 + c, -1, 1);
        mrt_tensor da = dev(&a), db = dev(&b), h = {0}, g = {0};
        TU_OK(mrt_matmul(&a, &b, &h));
        TU_OK(mrt_matmul(&da, &db, &g));
        assert_close(&g, &h, TOL_GEMM, "matmul");
        mrt_tensor all[] = {a, b, da, db, h, g};
        release_all(all, 6);
    }
    /* Transposed operands and an error. */
    mrt_tensor a = RAND(50, -1, 1, 6, 8), at = {0}, da = dev(&a), dat = {0}, h = {0}, g = {0};
    TU_OK(mrt_view_transpose(&a, 0, 1, &at));
    TU_OK(mrt_view_transpose(&da, 0, 1, &dat));
    TU_OK(mrt_matmul(&at, &a, &h));
    TU_OK(mrt_matmul(&dat, &da, &g));
    assert_close(&g, &h, TOL_GEMM, "a^T a");
    mrt_tensor bad = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&da, &da, &bad));
    TU_MSG_HAS("inner dimensions");
    mrt_tensor all[] = {a, at, da, dat, h, g};
    release_all(all, 6);
}
END_TEST

/* Mixed precision: GEMM operands rounded to bf16 / fp16, fp32 accumulation.
 * The reference rounds the operands here (round to nearest even, written
 * independently of the backend) and multiplies them in fp32 on the CPU. */
mrt_status mrt_cuda_set_mixed_precision(const char *mode); /* runtime/cuda/backend.cu */

static float round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static float round_fp16(float f)
{
    /* fp16 keeps 11 significant bits: scale to an integer mantissa, round
     * half to even, scale back (normal range only, as the test data is). */
    int e;
    frexpf(f, &e);
    float scale = ldexpf(1.0f, 11 - e);
    return nearbyintf(f * scale) / scale;
}

START_TEST(test_mixed_precision_gemm)
{
    mrt_tensor a = RAND(60, -1, 1, 2, 9, 33), b = RAND(61, -1, 1, 33, 7);
    mrt_tensor da = dev(&a), db = dev(&b);
    for (int mode = 0; mode < 2; mode++) {
        mrt_tensor ar = {0}, br = {0}, h = {0}, g = {0}, full = {0};
        TU_OK(mrt_tensor_clone(&ar, &a));
        TU_OK(mrt_tensor_clone(&br, &b));
        float *pa = (float *)ar.storage->data, *pb = (float *)br.storage->data;
        for (int64_t i = 0; i < tu_numel(&ar); i++) pa[i] = mode ? round_fp16(pa[i]) : round_bf16(pa[i]);
        for (int64_t i = 0; i < tu_numel(&br); i++) pb[i] = mode ? round_fp16(pb[i]) : round_bf16(pb[i]);
        TU_OK(mrt_matmul(&ar, &br, &h));
        TU_OK(mrt_cuda_set_mixed_precision(mode ? "fp16" : "bf16"));
        mrt_status st = mrt_matmul(&da, &db, &g);
        TU_OK(mrt_cuda_set_mixed_precision("fp32"));
        TU_OK(st);
        assert_close(&g, &h, 1e-5, mode ? "fp16 gemm" : "bf16 gemm");
        /* and it is not the fp32 product (the rounding did happen) */
        TU_OK(mrt_matmul(&a, &b, &full));
        ck_assert(tu_max_abs_diff(&h, &full) > 1e-4);
        mrt_tensor all[] = {ar, br, h, g, full};
        release_all(all, 5);
    }
    TU_FAILS(MRT_ERR_ARG, mrt_cuda_set_mixed_precision("fp8"));
    mrt_tensor all[] = {a, b, da, db};
    release_all(all, 4);
}
END_TEST

/* ---- nn ---------------------------------------------------------------------------------- */

static void conv_case(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int k, int s, int pad,
                      int bias, uint64_t seed)
{
    mrt_tensor x = RAND(seed, -1, 1, N, C, H, W), w = RAND(seed + 1, -0.5, 0.5, O, C, k, k);
    mrt_tensor b = RAND(seed + 2, -0.5, 0.5, O);
    mrt_tensor dx_ = dev(&x), dw_ = dev(&w), db_ = dev(&b);
    mrt_conv2d_params p = {s, s, pad, pad, 0};
    mrt_tensor hy = {0}, gy = {0};
    TU_OK(mrt_conv2d_forward(&x, &w, bias ? &b : NULL, &p, &hy, NULL));
    TU_OK(mrt_conv2d_forward(&dx_, &dw_, bias ? &db_ : NULL, &p, &gy, NULL));
    assert_close(&gy, &hy, TOL_GEMM, "conv2d forward");
    mrt_tensor dy = host_rand(hy.ndim, hy.shape, seed + 3, -1, 1), ddy = dev(&dy);
    /* Parameter gradients accumulate: start both from the same values. */
    mrt_tensor hdw = RAND(seed + 4, -1, 1, O, C, k, k), hdb = RAND(seed + 5, -1, 1, O);
    mrt_tensor gdw = dev(&hdw), gdb = dev(&hdb), hdx = {0}, gdx = {0};
    TU_OK(mrt_conv2d_backward(&x, &w, &dy, &p, &hdx, &hdw, bias ? &hdb : NULL, NULL));
    TU_OK(mrt_conv2d_backward(&dx_, &dw_, &ddy, &p, &gdx, &gdw, bias ? &gdb : NULL, NULL));
    assert_close(&gdx, &hdx, TOL_GEMM, "conv2d dx");
    assert_close(&gdw, &hdw, TOL_GEMM, "conv2d dw");
    assert_close(&gdb, &hdb, TOL_GEMM, "conv2d db");
    mrt_tensor all[] = {x, w, b, dx_, dw_, db_, hy, gy, dy, ddy, hdw, hdb, gdw, gdb, hdx, gdx};
    release_all(all, 16);
}

START_TEST(test_conv2d)
{
    conv_case(2, 3, 9, 11, 4, 3, 1, 1, 1, 100);  /* the ResNet 3x3 */
    conv_case(2, 4, 10, 9, 5, 3, 2, 1, 0, 110);  /* strided 3x3, no bias */
    conv_case(3, 6, 5, 7, 4, 1, 1, 0, 1, 120);   /* pointwise */
    conv_case(2, 4, 8, 8, 6, 1, 2, 0, 0, 130);   /* downsample 1x1/2 */
    conv_case(1, 1, 16, 20, 4, 7, 2, 3, 0, 140); /* the stem */
}
END_TEST

START_TEST(test_linear)
{
    mrt_tensor x = RAND(200, -1, 1, 5, 12), w = RAND(201, -1, 1, 4, 12), b = RAND(202, -1, 1, 4);
    mrt_tensor gx = dev(&x), gw = dev(&w), gb = dev(&b), hy = {0}, gy = {0};
    TU_OK(mrt_linear_forward(&x, &w, &b, &hy));
    TU_OK(mrt_linear_forward(&gx, &gw, &gb, &gy));
    assert_close(&gy, &hy, TOL_GEMM, "linear forward");
    mrt_tensor dy = RAND(203, -1, 1, 5, 4), gdy = dev(&dy);
    mrt_tensor hdw = RAND(204, -1, 1, 4, 12), hdb = RAND(205, -1, 1, 4);
    mrt_tensor gdw = dev(&hdw), gdb = dev(&hdb), hdx = {0}, gdx = {0};
    TU_OK(mrt_linear_backward(&x, &w, &dy, &hdx, &hdw, &hdb));
    TU_OK(mrt_linear_backward(&gx, &gw, &gdy, &gdx, &gdw, &gdb));
    assert_close(&gdx, &hdx, TOL_GEMM, "linear dx");
    assert_close(&gdw, &hdw, TOL_GEMM, "linear dw");
    assert_close(&gdb, &hdb, TOL_GEMM, "linear db");
    mrt_tensor all[] = {x, w, b, gx, gw, gb, hy, gy, dy, gdy, hdw, hdb, gdw, gdb, hdx, gdx};
    release_all(all, 16);
}
END_TEST

START_TEST(test_batchnorm)
{
    for (int training = 1; training >= 0; training--) {
        mrt_tensor x = RAND(300, 2, 6, 4, 5, 6, 7); /* mean far from 0 */
        mrt_tensor w = RAND(301, 0.5, 1.5, 5), b = RAND(302, -1, 1, 5);
        mrt_tensor rm = RAND(303, -1, 1, 5), rv = RAND(304, 0.5, 2, 5);
        mrt_tensor gx = dev(&x), gw = dev(&w), gb = dev(&b), grm = dev(&rm), grv = dev(&rv);
        mrt_tensor hy = {0}, gy = {0}, hm = {0}, gm = {0}, hi = {0}, gi = {0};
        TU_OK(mrt_batchnorm2d_forward(&x, &w, &b, &rm, &rv, training, 0.1, 1e-5, &hy, &hm, &hi));
        TU_OK(mrt_batchnorm2d_forward(&gx, &gw, &gb, &grm, &grv, training, 0.1, 1e-5, &gy, &gm, &gi));
        assert_close(&gy, &hy, 1e-5, "batchnorm y");
        assert_close(&gm, &hm, 1e-6, "save_mean");
        assert_close(&gi, &hi, 1e-5, "save_invstd");
        assert_close(&grm, &rm, 1e-6, "running_mean");
        assert_close(&grv, &rv, 1e-6, "running_var");
        mrt_tensor dy = RAND(305, -1, 1, 4, 5, 6, 7), gdy = dev(&dy);
        mrt_tensor hdw = RAND(306, -1, 1, 5), hdb = RAND(307, -1, 1, 5);
        mrt_tensor gdw = dev(&hdw), gdb = dev(&hdb), hdx = {0}, gdx = {0};
        TU_OK(mrt_batchnorm2d_backward(&x, &dy, &w, &hm, &hi, training, &hdx, &hdw, &hdb));
        TU_OK(mrt_batchnorm2d_backward(&gx, &gdy, &gw, &gm, &gi, training, &gdx, &gdw, &gdb));
        assert_close(&gdx, &hdx, 1e-4, "batchnorm dx");
        assert_close(&gdw, &hdw, 1e-5, "batchnorm dweight");
        assert_close(&gdb, &hdb, 1e-5, "batchnorm dbias");
        mrt_tensor all[] = {x, w, b, rm, rv, gx, gw, gb, grm, grv, hy, gy, hm, gm, hi, gi,
                            dy, gdy, hdw, hdb, gdw, gdb, hdx, gdx};
        release_all(all, 24);
    }
}
END_TEST

START_TEST(test_relu_and_pooling)
{
    mrt_tensor x = RAND(400, -1, 1, 2, 3, 9, 11);
    ((float *)x.storage->data)[5] = NAN;
    mrt_tensor gx = dev(&x), hy = {0}, gy = {0};
    TU_OK(mrt_relu_forward(&x, &hy));
    TU_OK(mrt_relu_forward(&gx, &gy));
    assert_close(&gy, &hy, TOL_EXACT, "relu");
    mrt_tensor dy = RAND(401, -1, 1, 2, 3, 9, 11), gdy = dev(&dy), hdx = {0}, gdx = {0};
    TU_OK(mrt_relu_backward(&hy, &dy, &hdx));
    TU_OK(mrt_relu_backward(&gy, &gdy, &gdx));
    assert_close(&gdx, &hdx, TOL_EXACT, "relu backward");

    ((float *)x.storage->data)[5] = 0.25f;
    mrt_tensor gx2 = dev(&x);
    mrt_pool2d_params pp = {3, 3, 2, 2, 1, 1};
    mrt_tensor hp = {0}, gp = {0}, hidx = {0}, gidx = {0};
    TU_OK(mrt_maxpool2d_forward(&x, &pp, &hp, &hidx));
    TU_OK(mrt_maxpool2d_forward(&gx2, &pp, &gp, &gidx));
    assert_close(&gp, &hp, TOL_EXACT, "maxpool");
    assert_close(&gidx, &hidx, TOL_EXACT, "maxpool indices");
    mrt_tensor pdy = host_rand(hp.ndim, hp.shape, 402, -1, 1), gpdy = dev(&pdy);
    mrt_tensor hpdx = {0}, gpdx = {0};
    TU_OK(mrt_maxpool2d_backward(&pdy, &hidx, 9, 11, &hpdx));
    TU_OK(mrt_maxpool2d_backward(&gpdy, &gidx, 9, 11, &gpdx));
    assert_close(&gpdx, &hpdx, TOL_ULP, "maxpool backward");

    mrt_tensor ha = {0}, ga = {0}, hadx = {0}, gadx = {0};
    TU_OK(mrt_avgpool_global_forward(&x, &ha));
    TU_OK(mrt_avgpool_global_forward(&gx2, &ga));
    assert_close(&ga, &ha, TOL_ULP, "avgpool");
    mrt_tensor ady = RAND(403, -1, 1, 2, 3), gady = dev(&ady);
    TU_OK(mrt_avgpool_global_backward(&ady, 9, 11, &hadx));
    TU_OK(mrt_avgpool_global_backward(&gady, 9, 11, &gadx));
    assert_close(&gadx, &hadx, TOL_ULP, "avgpool backward");

    mrt_tensor pos = RAND(404, 0.01, 2, 2, 3, 9, 11), gpos = dev(&pos);
    mrt_tensor p = {0}, hg = {0}, gg = {0};
    TU_ALLOC(&p, MRT_F32, 1);
    ((float *)p.storage->data)[0] = 3.0f;
    mrt_tensor gpp = dev(&p);
    TU_OK(mrt_gem_forward(&pos, &p, 1e-6, &hg));
    TU_OK(mrt_gem_forward(&gpos, &gpp, 1e-6, &gg));
    assert_close(&gg, &hg, TOL_ULP, "gem");
    mrt_tensor hgdx = {0}, ggdx = {0}, hdp = {0};
    TU_ALLOC(&hdp, MRT_F32, 1);
    mrt_tensor gdp = dev(&hdp);
    TU_OK(mrt_gem_backward(&pos, &p, 1e-6, &hg, &ady, &hgdx, &hdp));
    TU_OK(mrt_gem_backward(&gpos, &gpp, 1e-6, &gg, &gady, &ggdx, &gdp));
    assert_close(&ggdx, &hgdx, 1e-5, "gem dx");
    assert_close(&gdp, &hdp, 1e-5, "gem dp");
    mrt_tensor all[] = {x, gx, hy, gy, dy, gdy, hdx, gdx, gx2, hp, gp, hidx, gidx, pdy, gpdy,
                        hpdx, gpdx, ha, ga, hadx, gadx, ady, gady, pos, gpos, p, hg, gg,
                        gpp, hgdx, ggdx, hdp, gdp};
    release_all(all, 33);
}
END_TEST

START_TEST(test_dropout)
{
    mrt_tensor x = RAND(500, -1, 1, 8, 32), gx = dev(&x);
    mrt_rng r1, r2;
    mrt_rng_init(&r1, 77);
    mrt_rng_init(&r2, 77);
    mrt_tensor hy = {0}, gy = {0}, hm = {0}, gm = {0};
    TU_OK(mrt_dropout_forward(&x, 0.3, &r1, &hy, &hm));
    TU_OK(mrt_dropout_forward(&gx, 0.3, &r2, &gy, &gm));
    assert_close(&gm, &hm, TOL_EXACT, "dropout mask (same seed)");
    assert_close(&gy, &hy, TOL_EXACT, "dropout output");
    ck_assert(r1.offset == r2.offset);
    mrt_tensor dy = RAND(501, -1, 1, 8, 32), gdy = dev(&dy), hdx = {0}, gdx = {0};
    TU_OK(mrt_dropout_backward(&dy, &hm, &hdx));
    TU_OK(mrt_dropout_backward(&gdy, &gm, &gdx));
    assert_close(&gdx, &hdx, TOL_EXACT, "dropout backward");
    mrt_tensor all[] = {x, gx, hy, gy, hm, gm, dy, gdy, hdx, gdx};
    release_all(all, 10);
}
END_TEST

START_TEST(test_losses)
{
    mrt_tensor z = RAND(600, -30, 30, 6, 4), t = RAND(601, 0, 1, 6, 4);
    mrt_tensor gz = dev(&z), gt = dev(&t);
    double hl = 0, gl = 0;
    TU_OK(mrt_bce_logits_forward(&z, &t, &hl));
    TU_OK(mrt_bce_logits_forward(&gz, &gt, &gl));
    ck_assert_msg(tu_close(gl, hl, 1e-12, 1e-12), "bce: %.15g vs %.15g", gl, hl);
    mrt_tensor hg = {0}, gg = {0};
    TU_OK(mrt_bce_logits_backward(&z, &t, &hg));
    TU_OK(mrt_bce_logits_backward(&gz, &gt, &gg));
    assert_close(&gg, &hg, TOL_ULP, "bce grad");
    /* Cross entropy with class indices and with probabilities. */
    mrt_tensor cls = {0};
    TU_ALLOC(&cls, MRT_I64, 6);
    for (int i = 0; i < 6; i++) ((int64_t *)cls.storage->data)[i] = (i * 3) % 4;
    mrt_tensor gcls = dev(&cls), hc = {0}, gc = {0}, hp = {0}, gp = {0};
    TU_OK(mrt_cross_entropy_forward(&z, &cls, &hl));
    TU_OK(mrt_cross_entropy_forward(&gz, &gcls, &gl));
    ck_assert_msg(tu_close(gl, hl, 1e-12, 1e-12), "ce: %.15g vs %.15g", gl, hl);
    TU_OK(mrt_cross_entropy_backward(&z, &cls, &hc));
    TU_OK(mrt_cross_entropy_backward(&gz, &gcls, &gc));
    assert_close(&gc, &hc, TOL_ULP, "ce grad");
    TU_OK(mrt_cross_entropy_forward(&z, &t, &hl));
    TU_OK(mrt_cross_entropy_forward(&gz, &gt, &gl));
    ck_assert_msg(tu_close(gl, hl, 1e-12, 1e-12), "ce probs: %.15g vs %.15g", gl, hl);
    TU_OK(mrt_cross_entropy_backward(&z, &t, &hp));
    TU_OK(mrt_cross_entropy_backward(&gz, &gt, &gp));
    assert_close(&gp, &hp, TOL_ULP, "ce probs grad");
    /* Cross entropy with an angular margin (ArcFace's, both branches; AdaCos's
     * rescaling) on cosine-head logits: scale * cosines in (-1, 1). */
    mrt_tensor cz = RAND(602, -29, 29, 6, 4);
    ((float *)cz.storage->data)[3 * 4 + (3 * 3) % 4] = -29.5f; /* row 4: past pi - m */
    mrt_tensor gcz = dev(&cz);
    const mrt_margin_ce_params margins[] = {{30, 0.5, 30}, {30, 0, 12.5}};
    for (int c = 0; c < 2; c++) {
        mrt_tensor hm = {0}, gm = {0};
        TU_OK(mrt_margin_cross_entropy_forward(&cz, &cls, &margins[c], &hl));
        TU_OK(mrt_margin_cross_entropy_forward(&gcz, &gcls, &margins[c], &gl));
        ck_assert_msg(tu_close(gl, hl, 1e-12, 1e-12), "margin ce %d: %.15g vs %.15g", c, gl, hl);
        TU_OK(mrt_margin_cross_entropy_backward(&cz, &cls, &margins[c], &hm));
        TU_OK(mrt_margin_cross_entropy_backward(&gcz, &gcls, &margins[c], &gm));
        assert_close(&gm, &hm, TOL_ULP, "margin ce grad");
        mrt_tensor pair[] = {hm, gm};
        release_all(pair, 2);
    }
    /* A bad label is an error on both. */
    ((int64_t *)cls.storage->data)[2] = 9;
    mrt_tensor gbad = dev(&cls);
    TU_FAILS(MRT_ERR_INDEX, mrt_cross_entropy_forward(&z, &cls, &hl));
    TU_FAILS(MRT_ERR_INDEX, mrt_cross_entropy_forward(&gz, &gbad, &gl));
    TU_FAILS(MRT_ERR_INDEX, mrt_margin_cross_entropy_forward(&cz, &cls, &margins[0], &hl));
    TU_FAILS(MRT_ERR_INDEX, mrt_margin_cross_entropy_forward(&gcz, &gbad, &margins[0], &gl));
    mrt_tensor all[] = {z, t, gz, gt, hg, gg, cls, gcls, hc, gc, hp, gp, gbad, cz, gcz};
    release_all(all, 15);
}
END_TEST

/* ---- optim --------------------------------------------------------------------------------- */

START_TEST(test_optimizers)
{
    const int64_t n = 3000;
    for (int ams = 0; ams <= 1; ams++) {
        mrt_tensor p = RAND(700, -1, 1, n), m = {0}, v = {0}, vm = {0};
        TU_ALLOC(&m, MRT_F32, n);
        TU_ALLOC(&v, MRT_F32, n);
        TU_ALLOC(&vm, MRT_F32, n);
        mrt_tensor gp = dev(&p), gm = dev(&m), gv = dev(&v), gvm = dev(&vm);
        mrt_adamw_config cfg = {1e-2, 0.9, 0.999, 1e-8, 0.05, ams};
        for (int step = 1; step <= 3; step++) {
            mrt_tensor g = RAND(710 + step, -1, 1, n), gg = dev(&g);
            TU_OK(mrt_adamw_step(&p, &g, &m, &v, &vm, &cfg, step));
            TU_OK(mrt_adamw_step(&gp, &gg, &gm, &gv, &gvm, &cfg, step));
            mrt_tensor all[] = {g, gg};
            release_all(all, 2);
        }
        assert_close(&gp, &p, TOL_EXACT, "adamw param (bitwise)");
        assert_close(&gv, &v, TOL_EXACT, "adamw exp_avg_sq");
        mrt_tensor all[] = {p, m, v, vm, gp, gm, gv, gvm};
        release_all(all, 8);
    }
    for (int nest = 0; nest <= 1; nest++) {
        mrt_tensor p = RAND(720, -1, 1, n), buf = {0};
        TU_ALLOC(&buf, MRT_F32, n);
        mrt_tensor gp = dev(&p), gbuf = dev(&buf);
        mrt_sgd_config cfg = {0.1, 0.9, 0.0, 1e-4, nest};
        for (int step = 1; step <= 3; step++) {
            mrt_tensor g = RAND(730 + step, -1, 1, n), gg = dev(&g);
            TU_OK(mrt_sgd_step(&p, &g, &buf, &cfg, step == 1));
            TU_OK(mrt_sgd_step(&gp, &gg, &gbuf, &cfg, step == 1));
            mrt_tensor all[] = {g, gg};
            release_all(all, 2);
        }
        assert_close(&gp, &p, TOL_EXACT, "sgd param (bitwise)");
        mrt_tensor all[] = {p, buf, gp, gbuf};
        release_all(all, 4);
    }
    mrt_tensor big = RAND(740, -2, 2, 100000), gbig = dev(&big);
    double hs = 0, gs = 0;
    TU_OK(mrt_sum_squares(&big, &hs));
    TU_OK(mrt_sum_squares(&gbig, &gs));
    ck_assert_msg(tu_close(gs, hs, 1e-12, 0), "sum_squares %.17g vs %.17g", gs, hs);
    mrt_tensor all[] = {big, gbig};
    release_all(all, 2);
}
END_TEST

/* A training step of a small conv net, all on the device: no device
 * allocation after the first step (the caching allocator), and the same
 * parameters as the CPU after three steps. */
typedef struct {
    mrt_tensor w1, g1, bnw, bnb, rm, rv, gbnw, gbnb, fw, fb, gfw, gfb;
    mrt_tensor m[6], v[6];
} small_net;

static void net_init(small_net *s, int on_device)
{
    memset(s, 0, sizeof *s);
    mrt_tensor t[6] = {RAND(800, -0.3, 0.3, 8, 1, 3, 3), RAND(801, 0.8, 1.2, 8),
                       RAND(802, -0.1, 0.1, 8), RAND(803, -0.3, 0.3, 3, 8), RAND(804, -0.1, 0.1, 3),
                       {0}};
    mrt_tensor *dst[5] = {&s->w1, &s->bnw, &s->bnb, &s->fw, &s->fb};
    mrt_tensor *grads[5] = {&s->g1, &s->gbnw, &s->gbnb, &s->gfw, &s->gfb};
    for (int i = 0; i < 5; i++) {
        mrt_tensor z = {0};
        tu_alloc_or_fail(&z, MRT_F32, t[i].ndim, t[i].shape);
        if (on_device) {
            *dst[i] = dev(&t[i]);
            *grads[i] = dev(&z);
            s->m[i] = dev(&z);
            s->v[i] = dev(&z);
        } else {
            TU_OK(mrt_tensor_clone(dst[i], &t[i]));
            TU_OK(mrt_tensor_clone(grads[i], &z));
            TU_OK(mrt_tensor_clone(&s->m[i], &z));
            TU_OK(mrt_tensor_clone(&s->v[i], &z));
        }
        mrt_tensor_release(&z);
        mrt_tensor_release(&t[i]);
    }
    mrt_tensor rm = {0}, rv = {0};
    TU_ALLOC(&rm, MRT_F32, 8);
    TU_ALLOC(&rv, MRT_F32, 8);
    TU_OK(mrt_tensor_fill(&rv, 1.0));
    s->rm = on_device ? dev(&rm) : rm;
    s->rv = on_device ? dev(&rv) : rv;
    if (on_device) {
        mrt_tensor_release(&rm);
        mrt_tensor_release(&rv);
    }
}

static void net_step(small_net *s, const mrt_tensor *x, const mrt_tensor *target, int step)
{
    mrt_conv2d_params cp = {1, 1, 1, 1, 0};
    mrt_pool2d_params pp = {3, 3, 2, 2, 1, 1};
    mrt_tensor c = {0}, bn = {0}, sm = {0}, si = {0}, pool = {0}, idx = {0}, avg = {0}, logit = {0};
    mrt_tensor dlogit = {0}, davg = {0}, dpool = {0}, drelu = {0}, dbn = {0};
    TU_OK(mrt_conv2d_forward(x, &s->w1, NULL, &cp, &c, NULL));
    TU_OK(mrt_batchnorm2d_forward(&c, &s->bnw, &s->bnb, &s->rm, &s->rv, 1, 0.1, 1e-5, &bn, &sm, &si));
    TU_OK(mrt_relu_forward(&bn, &bn));
    TU_OK(mrt_maxpool2d_forward(&bn, &pp, &pool, &idx));
    TU_OK(mrt_avgpool_global_forward(&pool, &avg));
    TU_OK(mrt_linear_forward(&avg, &s->fw, &s->fb, &logit));
    double loss;
    TU_OK(mrt_bce_logits_forward(&logit, target, &loss));
    TU_OK(mrt_bce_logits_backward(&logit, target, &dlogit));
    TU_OK(mrt_linear_backward(&avg, &s->fw, &dlogit, &davg, &s->gfw, &s->gfb));
    TU_OK(mrt_avgpool_global_backward(&davg, pool.shape[2], pool.shape[3], &dpool));
    TU_OK(mrt_maxpool2d_backward(&dpool, &idx, bn.shape[2], bn.shape[3], &drelu));
    TU_OK(mrt_relu_backward(&bn, &drelu, &drelu));
    TU_OK(mrt_batchnorm2d_backward(&c, &drelu, &s->bnw, &sm, &si, 1, &dbn, &s->gbnw, &s->gbnb));
    TU_OK(mrt_conv2d_backward(x, &s->w1, &dbn, &cp, NULL, &s->g1, NULL, NULL));
    mrt_adamw_config cfg = {1e-2, 0.9, 0.999, 1e-8, 0.01, 0};
    mrt_tensor *params[5] = {&s->w1, &s->bnw, &s->bnb, &s->fw, &s->fb};
    mrt_tensor *grads[5] = {&s->g1, &s->gbnw, &s->gbnb, &s->gfw, &s->gfb};
    for (int i = 0; i < 5; i++) {
        TU_OK(mrt_adamw_step(params[i], grads[i], &s->m[i], &s->v[i], NULL, &cfg, step));
        TU_OK(mrt_tensor_fill(grads[i], 0.0));
    }
    mrt_tensor all[] = {c, bn, sm, si, pool, idx, avg, logit, dlogit, davg, dpool, drelu, dbn};
    release_all(all, 13);
}

static void net_free(small_net *s)
{
    mrt_tensor *all[] = {&s->w1, &s->g1, &s->bnw, &s->bnb, &s->rm, &s->rv, &s->gbnw, &s->gbnb,
                         &s->fw, &s->fb, &s->gfw, &s->gfb};
    for (int i = 0; i < 12; i++) mrt_tensor_release(all[i]);
    for (int i = 0; i < 6; i++) {
        mrt_tensor_release(&s->m[i]);
        mrt_tensor_release(&s->v[i]);
    }
}

START_TEST(test_training_step_and_allocator)
{
    const mrt_backend *cu = mrt_backend_get(MRT_CUDA);
    mrt_tensor x = RAND(900, -1, 1, 4, 1, 12, 16), t = RAND(901, 0, 1, 4, 3);
    mrt_tensor gx = dev(&x), gt = dev(&t);
    small_net h, g;
    net_init(&h, 0);
    net_init(&g, 1);
    size_t before = 0, after = 0;
    for (int step = 1; step <= 3; step++) {
        net_step(&h, &x, &t, step);
        net_step(&g, &gx, &gt, step);
        if (step == 1) cu->memory.stats(NULL, NULL, &before);
    }
    cu->memory.stats(NULL, NULL, &after);
    ck_assert_msg(after == before, "steps 2 and 3 called cudaMalloc %zu times", after - before);
    assert_close(&g.w1, &h.w1, 1e-3, "conv weight after 3 steps");
    assert_close(&g.fw, &h.fw, 1e-3, "fc weight after 3 steps");
    assert_close(&g.rv, &h.rv, 1e-4, "running_var after 3 steps");
    net_free(&h);
    net_free(&g);
    mrt_tensor all[] = {x, t, gx, gt};
    release_all(all, 4);
}
END_TEST

/* ---- the spectral front end (cuFFT + cuBLAS against FFTW + the sparse CPU projection) ---- */

/* Relative Frobenius error ||got - want|| / ||want|| and the largest
 * elementwise |got - want| / (|want| + 1e-3 max|want|). */
static void rel_errors(const mrt_tensor *got_any, const mrt_tensor *want, double *frob,
                       double *worst)
{
    mrt_tensor got = host(got_any);
    tu_assert_shape(&got, want->ndim, want->shape);
    int64_t n = tu_numel(want);
    double num = 0, den = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(tu_get(want, i)));
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = tu_get(&got, i), w = tu_get(want, i);
        num += (g - w) * (g - w);
        den += w * w;
        *worst = fmax(*worst, fabs(g - w) / (fabs(w) + 1e-3 * mx));
    }
    *frob = den > 0 ? sqrt(num / den) : sqrt(num);
    mrt_tensor_release(&got);
}

typedef struct {
    int64_t sr;
    int n_fft, win, hop, n_mels, center;
    mrt_pad_mode pad;
    double f_min, f_max, power;
    mrt_mel_scale scale;
    mrt_mel_norm norm;
    int batched;
    int64_t B, n;
} mel_case;

START_TEST(test_mel_front_end)
{
    const mel_case cases[] = {
        /* the reference settings (f_max above Nyquist: zero filters), {B, frames} */
        {22050, 2048, 2048, 512, 128, 1, MRT_PAD_REFLECT, 50, 16000, 2, MRT_MEL_HTK,
         MRT_MEL_NORM_NONE, 1, 3, 22050},
        /* torchaudio's defaults at 16 kHz, {frames} */
        {16000, 400, 400, 200, 128, 1, MRT_PAD_REFLECT, 0, 8000, 2, MRT_MEL_HTK,
         MRT_MEL_NORM_NONE, 0, 1, 4000},
        /* window shorter than n_fft, constant padding, magnitude, Slaney;
         * 630 frames: more than one cuFFT group of 512 */
        {16000, 512, 300, 128, 40, 1, MRT_PAD_CONSTANT, 20, 7000, 1, MRT_MEL_SLANEY,
         MRT_MEL_NORM_SLANEY, 1, 5, 16000},
        /* no centering, power 1.5, odd n_fft */
        {8000, 255, 255, 100, 32, 0, MRT_PAD_REFLECT, 0, 4000, 1.5, MRT_MEL_HTK,
         MRT_MEL_NORM_NONE, 1, 4, 2000},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const mel_case *k = &cases[ci];
        mrt_mel_config c;
        mrt_mel_config_init(&c, k->sr);
        c.stft.n_fft = k->n_fft;
        c.stft.win_length = k->win;
        c.stft.hop_length = k->hop;
        c.stft.center = k->center;
        c.stft.pad_mode = k->pad;
        c.f_min = k->f_min;
        c.f_max = k->f_max;
        c.n_mels = k->n_mels;
        c.power = k->power;
        c.mel_scale = k->scale;
        c.norm = k->norm;
        mrt_mel_spec *m = NULL;
        TU_OK(mrt_mel_spec_new(&c, &m));
        /* A tone over noise: a spectrum with peaks and a floor. */
        mrt_tensor w = k->batched ? RAND(1000 + ci, -0.5, 0.5, k->B, k->n)
                                  : RAND(1000 + ci, -0.5, 0.5, k->n);
        float *pw = (float *)w.storage->data;
        for (int64_t i = 0; i < tu_numel(&w); i++)
            pw[i] += (float)(0.8 * sin(2 * M_PI * 440.0 * (double)(i % k->n) / (double)k->sr));
        mrt_tensor dw = dev(&w), want = {0}, got = {0}, want_db = {0}, got_db = {0};
        TU_OK(mrt_mel_spec_forward(m, &w, &want));
        TU_OK(mrt_mel_spec_forward(m, &dw, &got));
        ck_assert_int_eq(got.storage->device, MRT_CUDA);
        double frob, worst;
        rel_errors(&got, &want, &frob, &worst);
        ck_assert_msg(frob <= 1e-5 && worst <= 1e-4,
                      "case %zu: mel relative Frobenius error %g, worst element %g", ci, frob,
                      worst);
        TU_OK(mrt_amplitude_to_db(&want, 10.0, -1.0, &want_db));
        TU_OK(mrt_amplitude_to_db(&got, 10.0, -1.0, &got_db));
        ck_assert_int_eq(got_db.storage->device, MRT_CUDA);
        assert_close(&got_db, &want_db, 1e-4, "log-mel dB");
        /* The front end stays in fp32 when the GEMMs are in fp16. */
        mrt_tensor half = {0};
        TU_OK(mrt_cuda_set_mixed_precision("fp16"));
        mrt_status st = mrt_mel_spec_forward(m, &dw, &half);
        TU_OK(mrt_cuda_set_mixed_precision("fp32"));
        TU_OK(st);
        rel_errors(&half, &want, &frob, &worst);
        ck_assert_msg(frob <= 1e-5, "case %zu under fp16 GEMMs: error %g", ci, frob);
        mrt_tensor all[] = {w, dw, want, got, want_db, got_db, half};
        release_all(all, 7);
        mrt_mel_spec_free(m);
    }
}
END_TEST

START_TEST(test_mel_front_end_views_and_errors)
{
    mrt_mel_config c;
    mrt_mel_config_init(&c, 16000);
    mrt_mel_spec *m = NULL;
    TU_OK(mrt_mel_spec_new(&c, &m));
    /* A strided wave ({n, B} transposed) and a strided output view. */
    mrt_tensor w = RAND(1100, -1, 1, 3000, 2), wt = {0}, dw = dev(&w), dwt = {0};
    TU_OK(mrt_view_transpose(&w, 0, 1, &wt));
    TU_OK(mrt_view_transpose(&dw, 0, 1, &dwt));
    mrt_tensor want = {0}, big = {0}, view = {0};
    TU_OK(mrt_mel_spec_forward(m, &wt, &want));
    TU_OK(mrt_tensor_alloc_on(&big, MRT_F32, 3, (const int64_t[]){2, 16, 128}, MRT_CUDA));
    TU_OK(mrt_view_permute(&big, (const int[]){0, 2, 1}, &view));
    TU_OK(mrt_mel_spec_forward(m, &dwt, &view));
    double frob, worst;
    rel_errors(&view, &want, &frob, &worst);
    ck_assert_msg(frob <= 1e-5 && worst <= 1e-4, "strided: %g %g", frob, worst);
    /* Errors: devices mixed, a clip too short for reflect padding. */
    mrt_tensor host_out = {0}, short_w = RAND(1101, -1, 1, 100), dshort = dev(&short_w), o = {0};
    TU_ALLOC(&host_out, MRT_F32, 2, 128, 16);
    TU_FAILS(MRT_ERR_DEVICE, mrt_mel_spec_forward(m, &dwt, &host_out));
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &dshort, &o));
    TU_MSG_HAS("reflect padding");
    mrt_tensor all[] = {w, wt, dw, dwt, want, big, view, host_out, short_w, dshort, o};
    release_all(all, 11);
    mrt_mel_spec_free(m);
}
END_TEST

START_TEST(test_amplitude_to_db)
{
    mrt_tensor x = RAND(1200, 0, 1, 2, 3, 4, 5);
    float *p = (float *)x.storage->data;
    for (int64_t i = 0; i < tu_numel(&x); i++) p[i] = (float)pow(10.0, 16.0 * p[i] - 13.0);
    p[0] = 0.0f;
    p[1] = -1.0f;
    p[2] = NAN;
    p[3] = INFINITY;
    p[4] = 1e-10f;
    p[70] = NAN;
    mrt_tensor dx = dev(&x);
    for (int top = 0; top < 2; top++)
        for (int mag = 0; mag < 2; mag++) {
            mrt_tensor want = {0}, got = {0};
            double mul = mag ? 20.0 : 10.0, top_db = top ? 80.0 : -1.0;
            TU_OK(mrt_amplitude_to_db(&x, mul, top_db, &want));
            TU_OK(mrt_amplitude_to_db(&dx, mul, top_db, &got));
            assert_close(&got, &want, 1e-5, top ? "dB, top_db 80" : "dB");
            mrt_tensor all[] = {want, got};
            release_all(all, 2);
        }
    /* In place, and top_db over a 2-d tensor (one group). */
    mrt_tensor y = RAND(1201, 1e-6, 10, 7, 9), dy = dev(&y), want = {0};
    TU_OK(mrt_amplitude_to_db(&y, 10.0, 20.0, &want));
    TU_OK(mrt_amplitude_to_db(&dy, 10.0, 20.0, &dy));
    assert_close(&dy, &want, 1e-5, "dB in place");
    mrt_tensor all[] = {x, dx, y, dy, want};
    release_all(all, 5);
}
END_TEST

/* ---- the copy stream: asynchronous host -> device copies ------------------------------ */

static int emulated(void) { return strcmp(mrt_cuda_mode(), "emulated") == 0; }

static float *host_f32(mrt_tensor *t) { return (float *)t->storage->data + t->offset; }

START_TEST(test_async_copy_values_and_ordering)
{
    const mrt_backend *cu = mrt_backend_get(MRT_CUDA);
    mrt_tensor h = RAND(950, -2, 2, 3, 5, 7);
    /* Values arrive intact, whether read back or used by an op first. */
    mrt_tensor d = {0}, y = {0};
    TU_OK(mrt_tensor_to_async(&h, MRT_CUDA, &d));
    ck_assert_int_eq(d.storage->device, MRT_CUDA);
    assert_close(&d, &h, TOL_EXACT, "async copy read back");
    mrt_tensor_release(&d);
    TU_OK(mrt_tensor_to_async(&h, MRT_CUDA, &d));
    ck_assert_ptr_nonnull(d.storage->ready);
    TU_OK(mrt_binary_scalar(MRT_MUL, &d, 2.0, 0, &y)); /* the op waits for the copy */
    ck_assert_ptr_null(d.storage->ready);
    mrt_tensor want = {0};
    TU_OK(mrt_binary_scalar(MRT_MUL, &h, 2.0, 0, &want));
    assert_close(&y, &want, TOL_EXACT, "op on an async copy");
    mrt_tensor_release(&y);
    mrt_tensor_release(&d);

    /* The raw protocol: the source is staged at the call (rewriting it
     * afterwards changes nothing); the destination holds the values once
     * the compute stream has waited for the event. */
    const int64_t n = mrt_tensor_numel(&h);
    mrt_tensor src = {0}, dst = {0}, back = {0};
    TU_OK(mrt_tensor_clone(&src, &h));
    TU_OK(mrt_tensor_alloc_on(&dst, MRT_F32, h.ndim, h.shape, MRT_CUDA));
    TU_OK(mrt_tensor_fill(&dst, 0.0));
    TU_OK(mrt_tensor_alloc_on(&back, MRT_F32, h.ndim, h.shape, MRT_CPU));
    void *ready = NULL;
    TU_OK(cu->memory.to_device_async(dst.storage->data, src.storage->data,
                                     (size_t)n * sizeof(float), &ready));
    ck_assert_ptr_nonnull(ready);
    for (int64_t i = 0; i < n; i++) host_f32(&src)[i] = -100.0f;
    if (emulated()) {
        /* Emulated copies take place only when waited for: reading the
         * destination before the wait sees the old contents. */
        TU_OK(cu->memory.to_host(back.storage->data, dst.storage->data, (size_t)n * sizeof(float)));
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(host_f32(&back)[i] == 0.0f, "emulated copy done before the wait");
    }
    TU_OK(cu->memory.wait_ready(ready));
    TU_OK(cu->memory.to_host(back.storage->data, dst.storage->data, (size_t)n * sizeof(float)));
    assert_close(&back, &h, TOL_EXACT, "destination after the wait");

    /* Released before use: the late copy must not land on the block's next owner. */
    mrt_tensor_release(&dst);
    TU_OK(mrt_tensor_to_async(&h, MRT_CUDA, &d));
    void *block = d.storage->data;
    mrt_tensor_release(&d);
    mrt_tensor held[8] = {{0}};
    int k = 0;
    for (; k < 8; k++) { /* the cache hands the block out again */
        TU_OK(mrt_tensor_alloc_on(&dst, MRT_F32, h.ndim, h.shape, MRT_CUDA));
        if (dst.storage->data == block) break;
        held[k] = dst;
        dst = (mrt_tensor){0};
    }
    ck_assert_msg(k < 8, "the released block was not reused");
    release_all(held, k);
    TU_OK(mrt_tensor_fill(&dst, 7.0));
    mrt_tensor other = {0};
    TU_OK(mrt_tensor_to_async(&h, MRT_CUDA, &other)); /* flushes the copy stream in order */
    mrt_tensor_release(&back);
    back = host(&dst);
    for (int64_t i = 0; i < n; i++) ck_assert_float_eq(host_f32(&back)[i], 7.0f);
    mrt_tensor all[] = {h, want, src, dst, back, other};
    release_all(all, 6);
}
END_TEST

START_TEST(test_async_copy_staging_reuse)
{
    const mrt_backend *cu = mrt_backend_get(MRT_CUDA);
    enum { INFLIGHT = 9, ROUNDS = 40 };
    mrt_tensor h[INFLIGHT], d[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        h[i] = RAND(960 + (uint64_t)i, -1, 1, 2, 1000 + i);
        d[i] = (mrt_tensor){0};
    }
    /* More copies in flight than staging buffers: each arrives intact. */
    for (int i = 0; i < INFLIGHT; i++) TU_OK(mrt_tensor_to_async(&h[i], MRT_CUDA, &d[i]));
    for (int i = INFLIGHT - 1; i >= 0; i--) {
        assert_close(&d[i], &h[i], TOL_EXACT, "copy in flight");
        mrt_tensor_release(&d[i]);
    }
    /* Prefetch pattern: the next batch is copied while the current one is
     * used; after the first round no cudaMalloc and no cudaHostAlloc. */
    size_t mallocs0 = 0, mallocs1 = 0, pinned0 = 0, pinned1 = 0, copies0 = 0, copies1 = 0;
    mrt_tensor next = {0};
    TU_OK(mrt_tensor_to_async(&h[0], MRT_CUDA, &next));
    for (int r = 0; r < ROUNDS; r++) {
        mrt_tensor cur = next, y = {0};
        next = (mrt_tensor){0};
        TU_OK(mrt_tensor_to_async(&h[(r + 1) % 2], MRT_CUDA, &next));
        TU_OK(mrt_binary_scalar(MRT_ADD, &cur, 1.0, 0, &y));
        mrt_tensor want = {0};
        TU_OK(mrt_binary_scalar(MRT_ADD, &h[r % 2], 1.0, 0, &want));
        assert_close(&y, &want, TOL_EXACT, "prefetched batch");
        mrt_tensor all[] = {cur, y, want};
        release_all(all, 3);
        if (r == 0) {
            cu->memory.stats(NULL, NULL, &mallocs0);
            cu->memory.copy_stats(NULL, &pinned0, &copies0);
        }
    }
    cu->memory.stats(NULL, NULL, &mallocs1);
    cu->memory.copy_stats(NULL, &pinned1, &copies1);
    ck_assert_msg(mallocs1 == mallocs0, "%zu cudaMalloc calls after warm-up", mallocs1 - mallocs0);
    ck_assert_msg(pinned1 == pinned0, "%zu cudaHostAlloc calls after warm-up", pinned1 - pinned0);
    ck_assert_msg(copies1 - copies0 == ROUNDS - 1, "%zu async copies, expected %d",
                  copies1 - copies0, ROUNDS - 1);
    mrt_tensor_release(&next);
    /* Emptying the device cache keeps the pinned staging buffers. */
    cu->memory.empty_cache();
    TU_OK(mrt_tensor_to_async(&h[0], MRT_CUDA, &next));
    assert_close(&next, &h[0], TOL_EXACT, "copy after empty_cache");
    cu->memory.copy_stats(NULL, &pinned1, NULL);
    ck_assert_msg(pinned1 == pinned0, "cudaHostAlloc after empty_cache");
    mrt_tensor_release(&next);
    release_all(h, INFLIGHT);
}
END_TEST

#ifdef MRT_PARITY_HOST
/* The Lua layer on the device: tests/cuda/lua_on_device.lua run by a host
 * with this backend (the emulated host in `make test`, ./machrt with CUDA=1). */
START_TEST(test_lua_modules_on_device)
{
    int rc = system("LUA_PATH='modules/?.lua;modules/?/init.lua;;' " MRT_PARITY_HOST
                    " tests/cuda/lua_on_device.lua");
    ck_assert_msg(rc == 0, "%s tests/cuda/lua_on_device.lua failed (status %d)", MRT_PARITY_HOST, rc);
}
END_TEST

/* experiments/resnet34.lua with --environment.device=cuda against the CPU. */
START_TEST(test_experiment_on_device)
{
    int rc = system("LUA_PATH='modules/?.lua;modules/?/init.lua;;' " MRT_PARITY_HOST
                    " tests/cuda/experiment_on_device.lua " MRT_PARITY_HOST);
    ck_assert_msg(rc == 0, "%s tests/cuda/experiment_on_device.lua failed (status %d)",
                  MRT_PARITY_HOST, rc);
}
END_TEST

/* Prediction (infer, scripts/predict.lua, a scorer's score.lua) on the
 * device against the CPU. */
START_TEST(test_predict_on_device)
{
    int rc = system("LUA_PATH='modules/?.lua;modules/?/init.lua;;' " MRT_PARITY_HOST
                    " tests/cuda/predict_on_device.lua " MRT_PARITY_HOST);
    ck_assert_msg(rc == 0, "%s tests/cuda/predict_on_device.lua failed (status %d)",
                  MRT_PARITY_HOST, rc);
}
END_TEST
#endif

/* MRT_PARITY_ONLY=conv2d runs the tests whose name contains "conv2d". */
static int wanted(const char *name)
{
    const char *only = getenv("MRT_PARITY_ONLY");
    return !only || strstr(name, only) != NULL;
}
#define ADD(tc, fn) \
    do { if (wanted(#fn)) tcase_add_test(tc, fn); } while (0)

static Suite *parity_suite(void)
{
    Suite *s = suite_create("backend_parity");
    TCase *tc = tcase_create("parity");
    tcase_set_timeout(tc, 120);
    if (!mrt_cuda_available()) {
        printf("backend parity: no CUDA device found (%s): skipped\n",
               mrt_cuda_built() ? "built with CUDA" : "built without CUDA");
        suite_add_tcase(s, tc);
        return s;
    }
    printf("backend parity: cpu against cuda (%s)\n", mrt_cuda_mode());
    ADD(tc, test_round_trip_and_views);
    ADD(tc, test_device_mismatch_is_an_error);
    ADD(tc, test_bad_arguments_fail_alike);
    ADD(tc, test_failed_kernels_release_their_outputs);
#if !defined(__SANITIZE_ADDRESS__)
    /* Needs a forked child per test, which a CUDA context does not survive. */
    if (strcmp(mrt_cuda_mode(), "emulated") == 0 && wanted("test_host_cannot_read_device_memory"))
        tcase_add_test_raise_signal(tc, test_host_cannot_read_device_memory, SIGSEGV);
#endif
    ADD(tc, test_elementwise);
    ADD(tc, test_fill_and_copy);
    ADD(tc, test_reductions);
    ADD(tc, test_matmul);
    ADD(tc, test_mixed_precision_gemm);
    ADD(tc, test_conv2d);
    ADD(tc, test_linear);
    ADD(tc, test_batchnorm);
    ADD(tc, test_relu_and_pooling);
    ADD(tc, test_dropout);
    ADD(tc, test_losses);
    ADD(tc, test_optimizers);
    ADD(tc, test_training_step_and_allocator);
    ADD(tc, test_mel_front_end);
    ADD(tc, test_mel_front_end_views_and_errors);
    ADD(tc, test_amplitude_to_db);
    ADD(tc, test_async_copy_values_and_ordering);
    ADD(tc, test_async_copy_staging_reuse);
#ifdef MRT_PARITY_HOST
    ADD(tc, test_lua_modules_on_device);
    ADD(tc, test_experiment_on_device);
    ADD(tc, test_predict_on_device);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(parity_suite());
    /* A CUDA context is not inherited across fork(): run in one process. */
    if (strcmp(mrt_cuda_mode(), "cuda") == 0) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
