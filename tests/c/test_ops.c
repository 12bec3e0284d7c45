/* Tensor core: elementwise ops, reductions, matmul and threading, each checked
 * against a naive double-precision loop written here. */
#include <stdlib.h>

#include "check_util.h"

/* float32 results against double references: a few ulps of float. */
#define ELEM_REL 1e-6
#define ELEM_ABS 1e-7
/* Matmul: relative to sum |a_ip * b_pj|, which bounds any summation order. */
#define MM_REL 1e-4
/* Sizes above 1M elements so the kernels take their OpenMP path. */
#define BIG_ROWS 1031
#define BIG_COLS 1024

static const mrt_binop ALL_BINOPS[] = {MRT_ADD,  MRT_SUB,     MRT_MUL,    MRT_DIV,
                                       MRT_POW,  MRT_MAXIMUM, MRT_MINIMUM};
static const mrt_unop ALL_UNOPS[] = {MRT_NEG, MRT_EXP,  MRT_LOG,  MRT_SIGMOID,
                                     MRT_RELU, MRT_ABS, MRT_SQRT, MRT_TANH};
#define N_BINOPS ((int)(sizeof ALL_BINOPS / sizeof ALL_BINOPS[0]))
#define N_UNOPS ((int)(sizeof ALL_UNOPS / sizeof ALL_UNOPS[0]))

/* ---- references ------------------------------------------------------------ */

static double ref_binop(mrt_binop op, double a, double b) {
    switch (op) {
    case MRT_ADD: return a + b;
    case MRT_SUB: return a - b;
    case MRT_MUL: return a * b;
    case MRT_DIV: return a / b;
    case MRT_POW: return pow(a, b);
    case MRT_MAXIMUM: return a > b ? a : b;
    case MRT_MINIMUM: return a < b ? a : b;
    }
    ck_abort_msg("unknown binop %d", (int)op);
    return 0.0;
}

static double ref_unop(mrt_unop op, double x) {
    switch (op) {
    case MRT_NEG: return -x;
    case MRT_EXP: return exp(x);
    case MRT_LOG: return log(x);
    case MRT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case MRT_RELU: return x > 0.0 ? x : 0.0;
    case MRT_ABS: return fabs(x);
    case MRT_SQRT: return sqrt(x);
    case MRT_TANH: return tanh(x);
    }
    ck_abort_msg("unknown unop %d", (int)op);
    return 0.0;
}

/* Inputs kept inside each op's well-conditioned domain, so a mismatch means
 * a wrong kernel rather than a NaN or an overflow compared with itself. */
static void gen_left(mrt_tensor *t, mrt_binop op, uint64_t seed) {
    if (op == MRT_POW) tu_fill_uniform(t, seed, 0.1, 3.0);
    else tu_fill_uniform(t, seed, -3.0, 3.0);
}

static void gen_right(mrt_tensor *t, mrt_binop op, uint64_t seed) {
    if (op == MRT_POW) {
        tu_fill_uniform(t, seed, -2.0, 2.0);
    } else if (op == MRT_DIV) {
        tu_fill_uniform(t, seed, -2.5, 2.5);
        for (int64_t i = 0; i < tu_numel(t); i++) {
            double v = tu_get(t, i);
            tu_set(t, i, v < 0.0 ? v - 0.5 : v + 0.5);
        }
    } else {
        tu_fill_uniform(t, seed, -3.0, 3.0);
    }
}

static void gen_unary(mrt_tensor *t, mrt_unop op, uint64_t seed) {
    if (op == MRT_LOG || op == MRT_SQRT) tu_fill_uniform(t, seed, 0.01, 5.0);
    else tu_fill_uniform(t, seed, -5.0, 5.0);
}

static void unravel(int64_t flat, int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
}

/* Reads t at the position that broadcasts to out-index `oidx` (numpy rules). */
static double get_bcast(const mrt_tensor *t, int ondim, const int64_t *oidx) {
    int64_t idx[MRT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        int od = ondim - t->ndim + d;
        idx[d] = t->shape[d] == 1 ? 0 : oidx[od];
    }
    return tu_get_idx(t, idx);
}

static int ref_bcast_shape(const mrt_tensor *a, const mrt_tensor *b, int *ndim, int64_t *shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < n; d++) {
        int da = d - (n - a->ndim), db = d - (n - b->ndim);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1) return 0;
        shape[d] = sa == 1 ? sb : sa;
    }
    *ndim = n;
    return 1;
}

/* `a` and `b` must hold the inputs as they were before the op ran. */
static void check_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b,
                         const mrt_tensor *out) {
    int nd;
    int64_t shape[MRT_MAX_DIMS], idx[MRT_MAX_DIMS];
    ck_assert(ref_bcast_shape(a, b, &nd, shape));
    tu_assert_shape(out, nd, shape);
    int64_t n = tu_numel(out);
    for (int64_t i = 0; i < n; i++) {
        unravel(i, nd, shape, idx);
        double x = get_bcast(a, nd, idx), y = get_bcast(b, nd, idx);
        double want = ref_binop(op, x, y), got = tu_get(out, i);
        if (!tu_close(got, want, ELEM_REL, ELEM_ABS))
            ck_abort_msg("%s: element %lld: %.9g op %.9g = %.9g, expected %.9g",
                         mrt_binop_name(op), (long long)i, x, y, got, want);
    }
}

static void check_unary(mrt_unop op, const mrt_tensor *a, const mrt_tensor *out) {
    tu_assert_shape(out, a->ndim, a->shape);
    int64_t n = tu_numel(out);
    for (int64_t i = 0; i < n; i++) {
        double x = tu_get(a, i), want = ref_unop(op, x), got = tu_get(out, i);
        if (!tu_close(got, want, ELEM_REL, ELEM_ABS))
            ck_abort_msg("%s: element %lld: f(%.9g) = %.9g, expected %.9g", mrt_unop_name(op),
                         (long long)i, x, got, want);
    }
}

/* Runs a op b into a fresh output and checks it. */
static void run_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b) {
    mrt_tensor out = {0};
    TU_OK(mrt_binary(op, a, b, &out));
    check_binary(op, a, b, &out);
    ck_assert(mrt_tensor_is_contiguous(&out));
    mrt_tensor_release(&out);
}

/* ---- names --------------------------------------------------------------------- */

START_TEST(test_op_names) {
    for (int i = 0; i < N_BINOPS; i++) {
        const char *n = mrt_binop_name(ALL_BINOPS[i]);
        ck_assert_ptr_nonnull(n);
        ck_assert(n[0] != '\0');
        for (int j = 0; j < i; j++) ck_assert_str_ne(n, mrt_binop_name(ALL_BINOPS[j]));
    }
    for (int i = 0; i < N_UNOPS; i++) {
        const char *n = mrt_unop_name(ALL_UNOPS[i]);
        ck_assert_ptr_nonnull(n);
        ck_assert(n[0] != '\0');
        for (int j = 0; j < i; j++) ck_assert_str_ne(n, mrt_unop_name(ALL_UNOPS[j]));
    }
}
END_TEST

/* ---- binary ---------------------------------------------------------------------- */

/* Loop tests: _i indexes ALL_BINOPS, so a failure names the op. */
START_TEST(test_binary_same_shape) {
    mrt_binop op = ALL_BINOPS[_i];
    mrt_tensor a = {0}, b = {0};
    TU_ALLOC(&a, MRT_F32, 3, 4, 5);
    TU_ALLOC(&b, MRT_F32, 3, 4, 5);
    gen_left(&a, op, 1);
    gen_right(&b, op, 2);
    run_binary(op, &a, &b);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_broadcast) {
    mrt_binop op = ALL_BINOPS[_i];
    mrt_tensor a = {0}, b = {0}, s = {0}, m = {0}, one = {0}, vec = {0};
    TU_ALLOC(&a, MRT_F32, 4, 1, 5);
    TU_ALLOC(&b, MRT_F32, 3, 1);
    gen_left(&a, op, 3);
    gen_right(&b, op, 4);
    run_binary(op, &a, &b); /* -> 4x3x5 */
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
    /* Same shapes with the roles swapped, so both sides get broadcast. */
    TU_ALLOC(&a, MRT_F32, 3, 1);
    TU_ALLOC(&b, MRT_F32, 4, 1, 5);
    gen_left(&a, op, 5);
    gen_right(&b, op, 6);
    run_binary(op, &a, &b);

    /* 0-d against a matrix, on either side, and 0-d with 0-d. */
    tu_alloc_scalar(&s, MRT_F32);
    TU_ALLOC(&m, MRT_F32, 2, 3);
    gen_left(&m, op, 7);
    gen_right(&s, op, 8);
    run_binary(op, &m, &s);
    gen_left(&s, op, 9);
    gen_right(&m, op, 10);
    run_binary(op, &s, &m);
    mrt_tensor s2 = {0}, out = {0};
    tu_alloc_scalar(&s2, MRT_F32);
    gen_right(&s2, op, 11);
    TU_OK(mrt_binary(op, &s, &s2, &out));
    ck_assert_int_eq(out.ndim, 0);
    check_binary(op, &s, &s2, &out);

    /* Size 1 against size N. */
    TU_ALLOC(&one, MRT_F32, 1);
    TU_ALLOC(&vec, MRT_F32, 6);
    gen_left(&one, op, 12);
    gen_right(&vec, op, 13);
    run_binary(op, &one, &vec);
    gen_left(&vec, op, 14);
    gen_right(&one, op, 15);
    run_binary(op, &vec, &one);

    mrt_tensor_release(&out);
    mrt_tensor_release(&s2);
    mrt_tensor_release(&vec);
    mrt_tensor_release(&one);
    mrt_tensor_release(&m);
    mrt_tensor_release(&s);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_noncontiguous) {
    mrt_binop op = ALL_BINOPS[_i];
    mrt_tensor abase = {0}, bbase = {0}, a = {0}, b = {0}, bcol = {0};
    TU_ALLOC(&abase, MRT_F32, 5, 4);
    TU_ALLOC(&bbase, MRT_F32, 4, 7);
    gen_left(&abase, op, 20);
    gen_right(&bbase, op, 21);
    TU_OK(mrt_view_transpose(&abase, 0, 1, &a));  /* 4x5, strides 1,4 */
    TU_OK(mrt_view_narrow(&bbase, 1, 1, 5, &b));  /* 4x5, offset 1, strides 7,1 */
    run_binary(op, &a, &b);
    run_binary(op, &b, &a);
    /* A non-contiguous operand that is also broadcast. */
    TU_OK(mrt_view_narrow(&bbase, 1, 6, 1, &bcol)); /* 4x1, strides 7,1, offset 6 */
    run_binary(op, &a, &bcol);
    run_binary(op, &bcol, &a);
    mrt_tensor_release(&bcol);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
    mrt_tensor_release(&bbase);
    mrt_tensor_release(&abase);
}
END_TEST

START_TEST(test_binary_inplace) {
    mrt_binop op = ALL_BINOPS[_i];
    mrt_tensor a = {0}, b = {0}, a0 = {0};
    TU_ALLOC(&a, MRT_F32, 3, 4);
    TU_ALLOC(&b, MRT_F32, 4);
    gen_left(&a, op, 30);
    gen_right(&b, op, 31);
    TU_OK(mrt_tensor_clone(&a0, &a));
    float *data = mrt_f32(&a);
    TU_OK(mrt_binary(op, &a, &b, &a));
    ck_assert_ptr_eq(mrt_f32(&a), data); /* written in place, not reallocated */
    check_binary(op, &a0, &b, &a);

    /* In place into a non-contiguous view: writes follow the view's strides. */
    mrt_tensor base = {0}, v = {0}, v0 = {0}, base0 = {0}, c = {0};
    TU_ALLOC(&base, MRT_F32, 5, 3);
    gen_left(&base, op, 32);
    TU_OK(mrt_tensor_clone(&base0, &base));
    TU_OK(mrt_view_transpose(&base, 0, 1, &v)); /* 3x5 */
    TU_OK(mrt_tensor_clone(&v0, &v));
    TU_ALLOC(&c, MRT_F32, 3, 5);
    gen_right(&c, op, 33);
    TU_OK(mrt_binary(op, &v, &c, &v));
    check_binary(op, &v0, &c, &v);

    /* out == b works the same way: each element is read before it is written. */
    mrt_tensor b2 = {0}, b20 = {0};
    TU_ALLOC(&b2, MRT_F32, 3, 4);
    gen_right(&b2, op, 34);
    TU_OK(mrt_tensor_clone(&b20, &b2));
    TU_OK(mrt_binary(op, &a0, &b2, &b2));
    check_binary(op, &a0, &b20, &b2);
    mrt_tensor_release(&b20);
    mrt_tensor_release(&b2);

    /* A preallocated, distinct output is written, inputs untouched. */
    mrt_tensor out = {0};
    TU_ALLOC(&out, MRT_F32, 3, 4);
    float *odata = mrt_f32(&out);
    TU_OK(mrt_binary(op, &a0, &b, &out));
    ck_assert_ptr_eq(mrt_f32(&out), odata);
    check_binary(op, &a0, &b, &out);

    mrt_tensor_release(&out);
    mrt_tensor_release(&c);
    mrt_tensor_release(&v0);
    mrt_tensor_release(&v);
    mrt_tensor_release(&base0);
    mrt_tensor_release(&base);
    mrt_tensor_release(&a0);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_scalar) {
    mrt_binop op = ALL_BINOPS[_i];
    /* Scalars exactly representable in float, inside the op's domain in the
     * role they play (divisor / exponent on the right, base on the left). */
    const double s_right = op == MRT_POW ? 1.5 : op == MRT_DIV ? 0.75 : -1.75;
    const double s_left = op == MRT_POW ? 2.0 : 1.25;
    mrt_tensor a = {0}, out = {0}, base = {0}, nc = {0}, sr = {0}, sl = {0};
    tu_alloc_scalar(&sr, MRT_F32);
    tu_alloc_scalar(&sl, MRT_F32);
    mrt_f32(&sr)[0] = (float)s_right;
    mrt_f32(&sl)[0] = (float)s_left;

    TU_ALLOC(&a, MRT_F32, 3, 7);
    gen_left(&a, op, 40);
    TU_OK(mrt_binary_scalar(op, &a, s_right, 0, &out)); /* a op s */
    check_binary(op, &a, &sr, &out);
    mrt_tensor_release(&out);

    gen_right(&a, op, 41);
    TU_OK(mrt_binary_scalar(op, &a, s_left, 1, &out)); /* s op a */
    check_binary(op, &sl, &a, &out);
    mrt_tensor_release(&out);

    /* Non-contiguous input. */
    TU_ALLOC(&base, MRT_F32, 7, 4);
    gen_right(&base, op, 42);
    TU_OK(mrt_view_transpose(&base, 0, 1, &nc));
    TU_OK(mrt_binary_scalar(op, &nc, s_left, 1, &out));
    check_binary(op, &sl, &nc, &out);
    mrt_tensor_release(&out);

    /* In place. */
    mrt_tensor a0 = {0};
    gen_left(&a, op, 43);
    TU_OK(mrt_tensor_clone(&a0, &a));
    TU_OK(mrt_binary_scalar(op, &a, s_right, 0, &a));
    check_binary(op, &a0, &sr, &a);

    mrt_tensor_release(&a0);
    mrt_tensor_release(&nc);
    mrt_tensor_release(&base);
    mrt_tensor_release(&sl);
    mrt_tensor_release(&sr);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_scalar_sides_differ) {
    /* The scalar_left flag must matter for non-commutative ops. */
    mrt_tensor a = {0}, l = {0}, r = {0};
    TU_ALLOC(&a, MRT_F32, 3);
    TU_OK(mrt_tensor_fill_range(&a, 1.0, 1.0)); /* 1 2 3 */
    TU_OK(mrt_binary_scalar(MRT_SUB, &a, 10.0, 0, &r));
    TU_OK(mrt_binary_scalar(MRT_SUB, &a, 10.0, 1, &l));
    for (int64_t i = 0; i < 3; i++) {
        ck_assert(tu_get(&r, i) == (double)(i + 1) - 10.0);
        ck_assert(tu_get(&l, i) == 10.0 - (double)(i + 1));
    }
    mrt_tensor_release(&l);
    mrt_tensor_release(&r);
    TU_OK(mrt_binary_scalar(MRT_POW, &a, 2.0, 0, &r));
    TU_OK(mrt_binary_scalar(MRT_POW, &a, 2.0, 1, &l));
    for (int64_t i = 0; i < 3; i++) {
        ck_assert(tu_close(tu_get(&r, i), pow((double)(i + 1), 2.0), ELEM_REL, 0));
        ck_assert(tu_close(tu_get(&l, i), pow(2.0, (double)(i + 1)), ELEM_REL, 0));
    }
    mrt_tensor_release(&l);
    mrt_tensor_release(&r);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_large) {
    mrt_binop op = ALL_BINOPS[_i];
    mrt_tensor a = {0}, b = {0}, row = {0};
    TU_ALLOC(&a, MRT_F32, BIG_ROWS, BIG_COLS);
    TU_ALLOC(&b, MRT_F32, BIG_ROWS, BIG_COLS);
    TU_ALLOC(&row, MRT_F32, BIG_COLS);
    gen_left(&a, op, 50);
    gen_right(&b, op, 51);
    gen_right(&row, op, 52);
    run_binary(op, &a, &b);
    run_binary(op, &a, &row); /* broadcast on the parallel path */
    mrt_tensor_release(&row);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_binary_errors) {
    mrt_tensor a = {0}, b = {0}, c = {0}, out = {0}, i64 = {0};
    TU_ALLOC(&a, MRT_F32, 2, 3);
    TU_ALLOC(&b, MRT_F32, 4);
    TU_ALLOC(&c, MRT_F32, 2, 5);

    TU_FAILS(MRT_ERR_SHAPE, mrt_binary(MRT_ADD, &a, &b, &out));
    TU_MSG_HAS("2x3");
    TU_MSG_HAS("4");
    TU_FAILS(MRT_ERR_SHAPE, mrt_binary(MRT_MUL, &a, &c, &out));
    TU_MSG_HAS("2x3");
    TU_MSG_HAS("2x5");
    ck_assert_ptr_null(out.storage);

    int nd = -1;
    int64_t shape[MRT_MAX_DIMS];
    TU_FAILS(MRT_ERR_SHAPE, mrt_broadcast_shape("frobnicate", &a, &c, &nd, shape));
    TU_MSG_HAS("frobnicate");
    TU_MSG_HAS("2x5");
    mrt_tensor col = {0};
    TU_ALLOC(&col, MRT_F32, 5, 1, 1);
    TU_OK(mrt_broadcast_shape("ok", &col, &a, &nd, shape));
    ck_assert_int_eq(nd, 3);
    ck_assert(shape[0] == 5 && shape[1] == 2 && shape[2] == 3);

    /* An allocated output of the wrong shape is rejected, not resized. */
    TU_ALLOC(&out, MRT_F32, 3, 2);
    TU_FAILS(MRT_ERR_SHAPE, mrt_binary(MRT_ADD, &a, &a, &out));
    TU_FAILS(MRT_ERR_SHAPE, mrt_binary_scalar(MRT_ADD, &a, 1.0, 0, &out));
    TU_FAILS(MRT_ERR_SHAPE, mrt_unary(MRT_NEG, &a, &out));
    TU_ASSERT_SHAPE(&out, 3, 2);
    /* In place cannot grow the destination: a (2x3) + 5x1x1 is 5x2x3. */
    TU_FAILS(MRT_ERR_SHAPE, mrt_binary(MRT_ADD, &a, &col, &a));

    TU_ALLOC(&i64, MRT_I64, 2, 3);
    /* An int64 output for a float32 result is refused, not converted. */
    TU_FAILS(MRT_ERR_DTYPE, mrt_binary(MRT_ADD, &a, &a, &i64));
    TU_FAILS(MRT_ERR_DTYPE, mrt_unary(MRT_NEG, &a, &i64));
    mrt_tensor o2 = {0};
    TU_FAILS(MRT_ERR_DTYPE, mrt_binary(MRT_ADD, &i64, &a, &o2));
    TU_FAILS(MRT_ERR_DTYPE, mrt_binary(MRT_ADD, &a, &i64, &o2));
    TU_FAILS(MRT_ERR_DTYPE, mrt_binary_scalar(MRT_MUL, &i64, 2.0, 0, &o2));
    TU_FAILS(MRT_ERR_DTYPE, mrt_unary(MRT_EXP, &i64, &o2));
    ck_assert_ptr_null(o2.storage);

    mrt_tensor_release(&i64);
    mrt_tensor_release(&col);
    mrt_tensor_release(&out);
    mrt_tensor_release(&c);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

/* ---- unary ----------------------------------------------------------------------- */

START_TEST(test_unary) {
    mrt_unop op = ALL_UNOPS[_i];
    mrt_tensor a = {0}, out = {0}, base = {0}, p = {0}, v = {0}, s = {0};

    TU_ALLOC(&a, MRT_F32, 3, 4, 5);
    gen_unary(&a, op, 60);
    TU_OK(mrt_unary(op, &a, &out));
    check_unary(op, &a, &out);
    mrt_tensor_release(&out);

    TU_ALLOC(&base, MRT_F32, 4, 5, 6);
    gen_unary(&base, op, 61);
    TU_OK(mrt_view_permute(&base, (int[]){2, 0, 1}, &p));
    TU_OK(mrt_view_narrow(&p, 2, 1, 3, &v)); /* 6x4x3, gaps on every dim */
    TU_OK(mrt_unary(op, &v, &out));
    check_unary(op, &v, &out);
    mrt_tensor_release(&out);

    /* In place, on the non-contiguous view: cells outside it stay put. */
    mrt_tensor v0 = {0}, base0 = {0};
    TU_OK(mrt_tensor_clone(&v0, &v));
    TU_OK(mrt_tensor_clone(&base0, &base));
    TU_OK(mrt_unary(op, &v, &v));
    check_unary(op, &v0, &v);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 5; j++)
            for (int64_t k = 0; k < 6; k++) {
                if (j >= 1 && j < 4) continue; /* inside the narrowed view */
                int64_t idx[3] = {i, j, k};
                ck_assert(tu_get_idx(&base, idx) == tu_get_idx(&base0, idx));
            }

    tu_alloc_scalar(&s, MRT_F32);
    gen_unary(&s, op, 62);
    TU_OK(mrt_unary(op, &s, &out));
    ck_assert_int_eq(out.ndim, 0);
    check_unary(op, &s, &out);

    mrt_tensor_release(&base0);
    mrt_tensor_release(&v0);
    mrt_tensor_release(&out);
    mrt_tensor_release(&s);
    mrt_tensor_release(&v);
    mrt_tensor_release(&p);
    mrt_tensor_release(&base);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_unary_large) {
    mrt_unop op = ALL_UNOPS[_i];
    mrt_tensor a = {0}, out = {0}, base = {0}, t = {0};
    TU_ALLOC(&a, MRT_F32, BIG_ROWS * BIG_COLS);
    gen_unary(&a, op, 70);
    TU_OK(mrt_unary(op, &a, &out));
    check_unary(op, &a, &out);
    mrt_tensor_release(&out);
    /* Transposed, so the parallel path must handle strides too. */
    TU_ALLOC(&base, MRT_F32, BIG_ROWS, BIG_COLS);
    gen_unary(&base, op, 71);
    TU_OK(mrt_view_transpose(&base, 0, 1, &t));
    TU_OK(mrt_unary(op, &t, &out));
    check_unary(op, &t, &out);
    mrt_tensor_release(&out);
    mrt_tensor_release(&t);
    mrt_tensor_release(&base);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_unary_special_values) {
    /* Values at which a careless kernel overflows or takes the wrong branch. */
    const double in[] = {-100.0, -20.0, -0.0, 0.0, 20.0, 100.0};
    mrt_tensor a = {0}, out = {0};
    TU_ALLOC(&a, MRT_F32, 6);
    for (int64_t i = 0; i < 6; i++) tu_set(&a, i, in[i]);
    const mrt_unop ops[] = {MRT_SIGMOID, MRT_TANH, MRT_RELU, MRT_ABS, MRT_NEG};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        TU_OK(mrt_unary(ops[k], &a, &out));
        for (int64_t i = 0; i < 6; i++) {
            double got = tu_get(&out, i), want = (double)(float)ref_unop(ops[k], in[i]);
            ck_assert_msg(!isnan(got) && tu_close(got, want, ELEM_REL, 1e-30),
                          "%s(%g) = %g, expected %g", mrt_unop_name(ops[k]), in[i], got, want);
        }
        mrt_tensor_release(&out);
    }
    mrt_tensor_release(&a);
}
END_TEST

/* ---- reductions ------------------------------------------------------------------ */

static const mrt_reduceop ALL_REDUCE[] = {MRT_SUM, MRT_MEAN,   MRT_MAX,
                                          MRT_MIN, MRT_ARGMAX, MRT_ARGMIN};
#define N_REDUCE ((int)(sizeof ALL_REDUCE / sizeof ALL_REDUCE[0]))
static const char *const REDUCE_NAMES[] = {"sum", "mean", "max", "min", "argmax", "argmin"};

static int is_arg(mrt_reduceop op) { return op == MRT_ARGMAX || op == MRT_ARGMIN; }

/* Naive reduction over the logical elements base + k*step, k < n.
 * Strict comparisons keep the first of equal extremes. */
static void ref_reduce(mrt_reduceop op, const mrt_tensor *a, int64_t n,
                       double (*get)(const mrt_tensor *, int64_t, const void *), const void *ctx,
                       double *value, int64_t *index) {
    double acc = 0.0, best = get(a, 0, ctx);
    int64_t at = 0;
    for (int64_t k = 0; k < n; k++) {
        double x = get(a, k, ctx);
        acc += x;
        int better = (op == MRT_MAX || op == MRT_ARGMAX) ? x > best : x < best;
        if (better) {
            best = x;
            at = k;
        }
    }
    if (op == MRT_SUM) *value = acc;
    else if (op == MRT_MEAN) *value = acc / (double)n;
    else *value = best;
    *index = at;
}

static double get_flat(const mrt_tensor *a, int64_t k, const void *ctx) {
    (void)ctx;
    return tu_get(a, k);
}

typedef struct { int dim; const int64_t *idx; } dim_ctx;

static double get_along(const mrt_tensor *a, int64_t k, const void *ctx) {
    const dim_ctx *c = ctx;
    int64_t idx[MRT_MAX_DIMS];
    memcpy(idx, c->idx, sizeof idx);
    idx[c->dim] = k;
    return tu_get_idx(a, idx);
}

static double sum_abs(const mrt_tensor *a) {
    double s = 0.0;
    for (int64_t i = 0; i < tu_numel(a); i++) s += fabs(tu_get(a, i));
    return s;
}

static void check_reduce_all(mrt_reduceop op, const char *name, const mrt_tensor *a) {
    double want, got = NAN;
    int64_t want_at, got_at = -1;
    ref_reduce(op, a, tu_numel(a), get_flat, NULL, &want, &want_at);
    TU_OK(mrt_reduce_all(op, a, &got, &got_at));
    if (op == MRT_SUM || op == MRT_MEAN) {
        /* Double accumulation in any order: error far below float's. */
        double scale = sum_abs(a) / (op == MRT_MEAN ? (double)tu_numel(a) : 1.0);
        ck_assert_msg(fabs(got - want) <= 1e-9 * scale + 1e-12, "%s = %.17g, expected %.17g",
                      name, got, want);
    } else {
        ck_assert_msg(got == want, "%s = %.9g, expected %.9g", name, got, want);
    }
    if (is_arg(op))
        ck_assert_msg(got_at == want_at, "%s index %lld, expected %lld", name,
                      (long long)got_at, (long long)want_at);
}

/* Checks mrt_reduce_dim(op, a, dim) against the naive loop; `with_indices`
 * also requests positions for MAX/MIN (optional there, required for ARG*). */
static void check_reduce_dim(mrt_reduceop op, const char *name, const mrt_tensor *a, int dim,
                             int with_indices) {
    mrt_tensor values = {0}, indices = {0};
    int want_idx = with_indices || is_arg(op);
    TU_OK(mrt_reduce_dim(op, a, dim, &values, want_idx ? &indices : NULL));

    int ond = a->ndim - 1;
    int64_t oshape[MRT_MAX_DIMS];
    for (int d = 0, o = 0; d < a->ndim; d++)
        if (d != dim) oshape[o++] = a->shape[d];
    tu_assert_shape(&values, ond, oshape);
    ck_assert_int_eq(values.dtype, MRT_F32);
    if (want_idx) {
        tu_assert_shape(&indices, ond, oshape);
        ck_assert_int_eq(indices.dtype, MRT_I64);
    }

    int64_t n = tu_numel(&values), oidx[MRT_MAX_DIMS], aidx[MRT_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, ond, oshape, oidx);
        for (int d = 0, o = 0; d < a->ndim; d++) aidx[d] = d == dim ? 0 : oidx[o++];
        dim_ctx ctx = {dim, aidx};
        double want;
        int64_t want_at;
        ref_reduce(op, a, a->shape[dim], get_along, &ctx, &want, &want_at);
        double got = tu_get(&values, i);
        if (op == MRT_SUM || op == MRT_MEAN)
            ck_assert_msg(tu_close(got, want, ELEM_REL, 1e-6), "%s dim %d [%lld] = %.9g, expected %.9g",
                          name, dim, (long long)i, got, want);
        else
            ck_assert_msg(got == want, "%s dim %d [%lld] = %.9g, expected %.9g", name, dim,
                          (long long)i, got, want);
        if (want_idx && op != MRT_SUM && op != MRT_MEAN)
            ck_assert_msg((int64_t)tu_get(&indices, i) == want_at,
                          "%s dim %d [%lld]: index %lld, expected %lld", name, dim, (long long)i,
                          (long long)tu_get(&indices, i), (long long)want_at);
    }
    mrt_tensor_release(&indices);
    mrt_tensor_release(&values);
}

/* A 7x5x4 view of a 5x6x7 base with permuted strides and an offset. */
static void make_nc3(mrt_tensor *base, mrt_tensor *perm, mrt_tensor *v, uint64_t seed) {
    TU_ALLOC(base, MRT_F32, 5, 6, 7);
    tu_fill_uniform(base, seed, -1.0, 1.0);
    TU_OK(mrt_view_permute(base, (int[]){2, 0, 1}, perm));
    TU_OK(mrt_view_narrow(perm, 2, 1, 4, v));
    ck_assert(!mrt_tensor_is_contiguous(v));
}

START_TEST(test_reduce_all) {
    mrt_reduceop op = ALL_REDUCE[_i];
    mrt_tensor base = {0}, perm = {0}, v = {0}, s = {0};
    make_nc3(&base, &perm, &v, 80);
    check_reduce_all(op, REDUCE_NAMES[_i], &v);
    check_reduce_all(op, REDUCE_NAMES[_i], &base);
    tu_alloc_scalar(&s, MRT_F32);
    mrt_f32(&s)[0] = -2.5f;
    check_reduce_all(op, REDUCE_NAMES[_i], &s);
    mrt_tensor_release(&s);
    mrt_tensor_release(&v);
    mrt_tensor_release(&perm);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_reduce_dim) {
    mrt_reduceop op = ALL_REDUCE[_i];
    mrt_tensor base = {0}, perm = {0}, v = {0}, vec = {0};
    make_nc3(&base, &perm, &v, 81);
    for (int dim = 0; dim < 3; dim++) {
        check_reduce_dim(op, REDUCE_NAMES[_i], &v, dim, 0);
        if (op == MRT_MAX || op == MRT_MIN) check_reduce_dim(op, REDUCE_NAMES[_i], &v, dim, 1);
    }
    /* 1-D reduces to 0-d. */
    TU_ALLOC(&vec, MRT_F32, 9);
    tu_fill_uniform(&vec, 82, -1.0, 1.0);
    check_reduce_dim(op, REDUCE_NAMES[_i], &vec, 0, 0);
    mrt_tensor_release(&vec);
    mrt_tensor_release(&v);
    mrt_tensor_release(&perm);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_reduce_ties_first) {
    /* base (2x3) = [[0 9 1] [9 2 3]] viewed transposed (3x2): logical order
     * 0 9 9 2 1 3. The first logical 9 is base[1][0], which comes *later* in
     * memory than the second (base[0][1]): memory order must not win. */
    mrt_tensor base = {0}, t = {0}, vals = {0}, idx = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3);
    const float init[6] = {0, 9, 1, 9, 2, 3};
    memcpy(mrt_f32(&base), init, sizeof init);
    TU_OK(mrt_view_transpose(&base, 0, 1, &t));
    double v;
    int64_t at = -1;
    TU_OK(mrt_reduce_all(MRT_ARGMAX, &t, &v, &at));
    ck_assert(v == 9.0);
    ck_assert_int_eq(at, 1);

    mrt_tensor m = {0};
    TU_ALLOC(&m, MRT_F32, 2, 4);
    const float minit[8] = {3, 7, 7, 1, 2, 2, 0, 0};
    memcpy(mrt_f32(&m), minit, sizeof minit);
    TU_OK(mrt_reduce_all(MRT_ARGMIN, &m, &v, &at));
    ck_assert(v == 0.0);
    ck_assert_int_eq(at, 6);
    TU_OK(mrt_reduce_all(MRT_ARGMAX, &m, &v, &at));
    ck_assert_int_eq(at, 1);

    TU_OK(mrt_reduce_dim(MRT_ARGMAX, &m, 1, &vals, &idx));
    ck_assert_int_eq(mrt_i64(&idx)[0], 1);
    ck_assert_int_eq(mrt_i64(&idx)[1], 0);
    ck_assert(mrt_f32(&vals)[0] == 7.0f && mrt_f32(&vals)[1] == 2.0f);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);
    TU_OK(mrt_reduce_dim(MRT_ARGMIN, &m, 1, &vals, &idx));
    ck_assert_int_eq(mrt_i64(&idx)[0], 3);
    ck_assert_int_eq(mrt_i64(&idx)[1], 2);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);

    /* Along dim 0 of the transposed view: column 1 is 9 2 3, column 0 is
     * 0 9 1; and an all-equal column picks index 0. */
    TU_OK(mrt_reduce_dim(MRT_ARGMAX, &t, 0, &vals, &idx));
    ck_assert_int_eq(mrt_i64(&idx)[0], 1);
    ck_assert_int_eq(mrt_i64(&idx)[1], 0);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);
    mrt_tensor flat = {0};
    TU_ALLOC(&flat, MRT_F32, 3, 2);
    TU_OK(mrt_tensor_fill(&flat, 4.0));
    TU_OK(mrt_reduce_dim(MRT_ARGMIN, &flat, 0, &vals, &idx));
    ck_assert_int_eq(mrt_i64(&idx)[0], 0);
    ck_assert_int_eq(mrt_i64(&idx)[1], 0);

    mrt_tensor_release(&flat);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);
    mrt_tensor_release(&m);
    mrt_tensor_release(&t);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_reduce_large) {
    mrt_tensor a = {0}, t = {0};
    TU_ALLOC(&a, MRT_F32, BIG_ROWS, BIG_COLS);
    /* All positive: a float accumulator would be visibly off at this size. */
    tu_fill_uniform(&a, 90, 0.0, 1.0);
    check_reduce_all(MRT_SUM, "sum", &a);
    check_reduce_all(MRT_MEAN, "mean", &a);
    check_reduce_all(MRT_ARGMAX, "argmax", &a);
    check_reduce_all(MRT_ARGMIN, "argmin", &a);
    TU_OK(mrt_view_transpose(&a, 0, 1, &t));
    check_reduce_all(MRT_SUM, "sum", &t);
    check_reduce_all(MRT_ARGMAX, "argmax", &t);
    for (int dim = 0; dim < 2; dim++) {
        check_reduce_dim(MRT_SUM, "sum", &a, dim, 0);
        check_reduce_dim(MRT_ARGMAX, "argmax", &t, dim, 0);
    }
    mrt_tensor_release(&t);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_reduce_errors) {
    mrt_tensor a = {0}, vals = {0}, idx = {0}, i64 = {0};
    TU_ALLOC(&a, MRT_F32, 2, 3, 4);
    TU_FAILS(MRT_ERR_INDEX, mrt_reduce_dim(MRT_SUM, &a, 3, &vals, NULL));
    TU_FAILS(MRT_ERR_INDEX, mrt_reduce_dim(MRT_MAX, &a, -1, &vals, NULL));
    TU_FAILS(MRT_ERR_INDEX, mrt_reduce_dim(MRT_ARGMAX, &a, 7, &vals, &idx));
    ck_assert_ptr_null(vals.storage);
    ck_assert_ptr_null(idx.storage);
    /* ARG* without somewhere to put the positions. */
    TU_FAILS_ANY(mrt_reduce_dim(MRT_ARGMAX, &a, 0, &vals, NULL));
    /* Preallocated outputs of the wrong shape. */
    mrt_tensor wrong = {0};
    TU_ALLOC(&wrong, MRT_F32, 3, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_reduce_dim(MRT_SUM, &a, 0, &wrong, NULL));
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);

    TU_ALLOC(&i64, MRT_I64, 4);
    double v;
    int64_t at;
    TU_FAILS(MRT_ERR_DTYPE, mrt_reduce_all(MRT_SUM, &i64, &v, &at));
    TU_FAILS(MRT_ERR_DTYPE, mrt_reduce_dim(MRT_MAX, &i64, 0, &vals, NULL));

    mrt_tensor_release(&i64);
    mrt_tensor_release(&wrong);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&idx);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_reduce_preallocated) {
    mrt_tensor base = {0}, perm = {0}, v = {0}, vals = {0}, idx = {0};
    make_nc3(&base, &perm, &v, 95); /* 7x5x4 */
    TU_ALLOC(&vals, MRT_F32, 7, 4);
    TU_ALLOC(&idx, MRT_I64, 7, 4);
    float *vd = mrt_f32(&vals);
    TU_OK(mrt_reduce_dim(MRT_ARGMIN, &v, 1, &vals, &idx));
    ck_assert_ptr_eq(mrt_f32(&vals), vd);
    for (int64_t i = 0; i < 7; i++)
        for (int64_t k = 0; k < 4; k++) {
            double best = INFINITY;
            int64_t at = -1;
            for (int64_t j = 0; j < 5; j++) {
                double x = tu_get_idx(&v, (int64_t[]){i, j, k});
                if (x < best) best = x, at = j;
            }
            ck_assert(tu_get_idx(&vals, (int64_t[]){i, k}) == best);
            ck_assert(tu_get_idx(&idx, (int64_t[]){i, k}) == (double)at);
        }

    /* Strided (transposed) outputs are written through their strides. */
    mrt_tensor vb = {0}, ib = {0}, vt = {0}, it = {0};
    TU_ALLOC(&vb, MRT_F32, 4, 7);
    TU_ALLOC(&ib, MRT_I64, 4, 7);
    TU_OK(mrt_view_transpose(&vb, 0, 1, &vt));
    TU_OK(mrt_view_transpose(&ib, 0, 1, &it));
    TU_OK(mrt_reduce_dim(MRT_ARGMIN, &v, 1, &vt, &it));
    ck_assert(tu_max_abs_diff(&vt, &vals) == 0.0);
    ck_assert(tu_max_abs_diff(&it, &idx) == 0.0);
    mrt_tensor_release(&it);
    mrt_tensor_release(&vt);
    mrt_tensor_release(&ib);
    mrt_tensor_release(&vb);

    /* Indices must be int64: a float32 tensor there is refused. */
    mrt_tensor fidx = {0};
    TU_ALLOC(&fidx, MRT_F32, 7, 4);
    TU_FAILS(MRT_ERR_DTYPE, mrt_reduce_dim(MRT_ARGMAX, &v, 1, &vals, &fidx));
    mrt_tensor_release(&fidx);

    mrt_tensor_release(&idx);
    mrt_tensor_release(&vals);
    mrt_tensor_release(&v);
    mrt_tensor_release(&perm);
    mrt_tensor_release(&base);
}
END_TEST

/* ---- matmul ------------------------------------------------------------------------- */

/* Naive batched matmul with numpy's 1-D and batch-broadcast rules, checked
 * element by element against `out`. */
static void check_matmul(const mrt_tensor *a, const mrt_tensor *b, const mrt_tensor *out) {
    int a1 = a->ndim == 1, b1 = b->ndim == 1;
    int64_t m = a1 ? 1 : a->shape[a->ndim - 2], k = a->shape[a->ndim - 1];
    int64_t n = b1 ? 1 : b->shape[b->ndim - 1];
    ck_assert_int_eq(k, b->shape[b1 ? 0 : b->ndim - 2]);
    int abat = a1 ? 0 : a->ndim - 2, bbat = b1 ? 0 : b->ndim - 2;
    int nb = abat > bbat ? abat : bbat;
    int64_t bshape[MRT_MAX_DIMS], oshape[MRT_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        int da = d - (nb - abat), db = d - (nb - bbat);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        ck_assert(sa == sb || sa == 1 || sb == 1);
        bshape[d] = sa == 1 ? sb : sa;
    }
    int ond = nb;
    memcpy(oshape, bshape, sizeof(int64_t) * (size_t)nb);
    if (!a1) oshape[ond++] = m;
    if (!b1) oshape[ond++] = n;
    tu_assert_shape(out, ond, oshape);

    int64_t nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= bshape[d];
    int64_t bidx[MRT_MAX_DIMS], ai[MRT_MAX_DIMS], bi[MRT_MAX_DIMS], oi[MRT_MAX_DIMS];
    for (int64_t q = 0; q < nbatch; q++) {
        unravel(q, nb, bshape, bidx);
        for (int d = 0; d < abat; d++) ai[d] = a->shape[d] == 1 ? 0 : bidx[d + nb - abat];
        for (int d = 0; d < bbat; d++) bi[d] = b->shape[d] == 1 ? 0 : bidx[d + nb - bbat];
        memcpy(oi, bidx, sizeof(int64_t) * (size_t)nb);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0.0, mag = 0.0;
                for (int64_t p = 0; p < k; p++) {
                    if (!a1) ai[abat] = i;
                    ai[a->ndim - 1] = p;
                    bi[b1 ? 0 : bbat] = p;
                    if (!b1) bi[bbat + 1] = j;
                    double prod = tu_get_idx(a, ai) * tu_get_idx(b, bi);
                    acc += prod;
                    mag += fabs(prod);
                }
                int o = nb;
                if (!a1) oi[o++] = i;
                if (!b1) oi[o++] = j;
                double got = tu_get_idx(out, oi);
                ck_assert_msg(fabs(got - acc) <= MM_REL * mag + 1e-6,
                              "matmul batch %lld [%lld][%lld] = %.9g, expected %.9g",
                              (long long)q, (long long)i, (long long)j, got, acc);
            }
    }
}

static void run_matmul(const mrt_tensor *a, const mrt_tensor *b) {
    mrt_tensor out = {0};
    TU_OK(mrt_matmul(a, b, &out));
    check_matmul(a, b, &out);
    mrt_tensor_release(&out);
}

START_TEST(test_matmul_sizes) {
    static const int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 31, 13}, {64, 65, 63}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t m = sizes[s][0], k = sizes[s][1], n = sizes[s][2];
        mrt_tensor a = {0}, b = {0};
        TU_OK(mrt_tensor_alloc(&a, MRT_F32, 2, (int64_t[]){m, k}));
        TU_OK(mrt_tensor_alloc(&b, MRT_F32, 2, (int64_t[]){k, n}));
        tu_fill_uniform(&a, 100 + s, -1.0, 1.0);
        tu_fill_uniform(&b, 200 + s, -1.0, 1.0);
        run_matmul(&a, &b);
        mrt_tensor_release(&b);
        mrt_tensor_release(&a);
    }
}
END_TEST

START_TEST(test_matmul_transposed_operands) {
    /* Storage holds A^T (k x m) and B^T (n x k); the views are m x k, k x n. */
    const int64_t m = 17, k = 31, n = 13;
    mrt_tensor at = {0}, bt = {0}, a = {0}, b = {0}, ac = {0}, bc = {0};
    TU_OK(mrt_tensor_alloc(&at, MRT_F32, 2, (int64_t[]){k, m}));
    TU_OK(mrt_tensor_alloc(&bt, MRT_F32, 2, (int64_t[]){n, k}));
    tu_fill_uniform(&at, 300, -1.0, 1.0);
    tu_fill_uniform(&bt, 301, -1.0, 1.0);
    TU_OK(mrt_view_transpose(&at, 0, 1, &a));
    TU_OK(mrt_view_transpose(&bt, 0, 1, &b));
    TU_OK(mrt_tensor_clone(&ac, &a));
    TU_OK(mrt_tensor_clone(&bc, &b));
    run_matmul(&a, &bc);
    run_matmul(&ac, &b);
    run_matmul(&a, &b);
    mrt_tensor_release(&bc);
    mrt_tensor_release(&ac);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
    mrt_tensor_release(&bt);
    mrt_tensor_release(&at);
}
END_TEST

START_TEST(test_matmul_strided_operands) {
    /* Neither stride is 1 for a select along the last dim; a narrow leaves
     * a row stride larger than the row: both must still be handled. */
    mrt_tensor base = {0}, a = {0}, bbase = {0}, b = {0};
    TU_ALLOC(&base, MRT_F32, 5, 6, 7);
    tu_fill_uniform(&base, 310, -1.0, 1.0);
    TU_OK(mrt_view_select(&base, 2, 3, &a)); /* 5x6, strides 42,7 */
    TU_ALLOC(&bbase, MRT_F32, 6, 9);
    tu_fill_uniform(&bbase, 311, -1.0, 1.0);
    TU_OK(mrt_view_narrow(&bbase, 1, 2, 4, &b)); /* 6x4, strides 9,1, offset 2 */
    run_matmul(&a, &b);
    mrt_tensor_release(&b);
    mrt_tensor_release(&bbase);
    mrt_tensor_release(&a);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_matmul_batched) {
    mrt_tensor a = {0}, b = {0}, a2 = {0}, a13 = {0}, a4 = {0}, b3 = {0};
    TU_ALLOC(&a, MRT_F32, 2, 3, 4);
    TU_ALLOC(&b, MRT_F32, 2, 4, 5);
    tu_fill_uniform(&a, 400, -1.0, 1.0);
    tu_fill_uniform(&b, 401, -1.0, 1.0);
    run_matmul(&a, &b); /* 2x3x5 */

    TU_ALLOC(&a2, MRT_F32, 3, 4);
    tu_fill_uniform(&a2, 402, -1.0, 1.0);
    run_matmul(&a2, &b); /* 3x4 @ 2x4x5 -> 2x3x5 */
    TU_ALLOC(&a13, MRT_F32, 1, 3, 4);
    tu_fill_uniform(&a13, 403, -1.0, 1.0);
    run_matmul(&a13, &b); /* 1x3x4 @ 2x4x5 -> 2x3x5 */

    /* Batch dims broadcasting on both sides: 2x1x3x4 @ 5x4x2 -> 2x5x3x2. */
    TU_ALLOC(&a4, MRT_F32, 2, 1, 3, 4);
    TU_ALLOC(&b3, MRT_F32, 5, 4, 2);
    tu_fill_uniform(&a4, 404, -1.0, 1.0);
    tu_fill_uniform(&b3, 405, -1.0, 1.0);
    run_matmul(&a4, &b3);

    /* Batched with a transposed (non-contiguous) operand. */
    mrt_tensor bb = {0}, bv = {0};
    TU_ALLOC(&bb, MRT_F32, 2, 5, 4);
    tu_fill_uniform(&bb, 406, -1.0, 1.0);
    TU_OK(mrt_view_transpose(&bb, 1, 2, &bv)); /* 2x4x5 */
    run_matmul(&a, &bv);

    mrt_tensor_release(&bv);
    mrt_tensor_release(&bb);
    mrt_tensor_release(&b3);
    mrt_tensor_release(&a4);
    mrt_tensor_release(&a13);
    mrt_tensor_release(&a2);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_matmul_vectors) {
    mrt_tensor v4 = {0}, m45 = {0}, m34 = {0}, w4 = {0}, b3 = {0}, a3 = {0}, out = {0};
    TU_ALLOC(&v4, MRT_F32, 4);
    TU_ALLOC(&w4, MRT_F32, 4);
    TU_ALLOC(&m45, MRT_F32, 4, 5);
    TU_ALLOC(&m34, MRT_F32, 3, 4);
    tu_fill_uniform(&v4, 500, -1.0, 1.0);
    tu_fill_uniform(&w4, 501, -1.0, 1.0);
    tu_fill_uniform(&m45, 502, -1.0, 1.0);
    tu_fill_uniform(&m34, 503, -1.0, 1.0);

    TU_OK(mrt_matmul(&v4, &m45, &out));
    TU_ASSERT_SHAPE(&out, 5);
    check_matmul(&v4, &m45, &out);
    mrt_tensor_release(&out);

    TU_OK(mrt_matmul(&m34, &v4, &out));
    TU_ASSERT_SHAPE(&out, 3);
    check_matmul(&m34, &v4, &out);
    mrt_tensor_release(&out);

    TU_OK(mrt_matmul(&v4, &w4, &out));
    ck_assert_int_eq(out.ndim, 0);
    check_matmul(&v4, &w4, &out);
    mrt_tensor_release(&out);

    /* Vector against a batch, on either side. */
    TU_ALLOC(&b3, MRT_F32, 2, 4, 5);
    TU_ALLOC(&a3, MRT_F32, 2, 3, 4);
    tu_fill_uniform(&b3, 504, -1.0, 1.0);
    tu_fill_uniform(&a3, 505, -1.0, 1.0);
    TU_OK(mrt_matmul(&v4, &b3, &out));
    TU_ASSERT_SHAPE(&out, 2, 5);
    check_matmul(&v4, &b3, &out);
    mrt_tensor_release(&out);
    TU_OK(mrt_matmul(&a3, &v4, &out));
    TU_ASSERT_SHAPE(&out, 2, 3);
    check_matmul(&a3, &v4, &out);
    mrt_tensor_release(&out);

    mrt_tensor_release(&a3);
    mrt_tensor_release(&b3);
    mrt_tensor_release(&m34);
    mrt_tensor_release(&m45);
    mrt_tensor_release(&w4);
    mrt_tensor_release(&v4);
}
END_TEST

START_TEST(test_matmul_preallocated_out) {
    mrt_tensor a = {0}, b = {0}, out = {0}, wrong = {0};
    TU_ALLOC(&a, MRT_F32, 3, 5);
    TU_ALLOC(&b, MRT_F32, 5, 7);
    tu_fill_uniform(&a, 600, -1.0, 1.0);
    tu_fill_uniform(&b, 601, -1.0, 1.0);
    TU_ALLOC(&out, MRT_F32, 3, 7);
    TU_OK(mrt_tensor_fill(&out, 123.0)); /* stale contents must be overwritten */
    float *d = mrt_f32(&out);
    TU_OK(mrt_matmul(&a, &b, &out));
    ck_assert_ptr_eq(mrt_f32(&out), d);
    check_matmul(&a, &b, &out);

    TU_ALLOC(&wrong, MRT_F32, 7, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&a, &b, &wrong));
    mrt_tensor_release(&wrong);

    /* A strided output: the header's output convention covers any allocated
     * tensor, but refusing it cleanly is tolerated. What must never happen
     * is a success that wrote the wrong cells. */
    mrt_tensor ob = {0}, ot = {0};
    TU_ALLOC(&ob, MRT_F32, 7, 3);
    TU_OK(mrt_view_transpose(&ob, 0, 1, &ot));
    if (mrt_matmul(&a, &b, &ot) == MRT_OK) {
        check_matmul(&a, &b, &ot);
    } else {
        ck_assert(mrt_last_error()[0] != '\0');
        for (int64_t i = 0; i < 21; i++) ck_assert(tu_get(&ob, i) == 0.0); /* untouched */
    }
    mrt_tensor_release(&ot);
    mrt_tensor_release(&ob);
    mrt_tensor_release(&out);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_matmul_inplace) {
    /* Square operands make `out == a` (and `out == b`) shape-valid, and the
     * output convention promises that out == a is an in-place op. A product
     * reads whole rows/columns, so the kernel must not write over its input
     * before it has finished reading it. */
    mrt_tensor a = {0}, b = {0}, a0 = {0}, b0 = {0};
    TU_ALLOC(&a, MRT_F32, 6, 6);
    TU_ALLOC(&b, MRT_F32, 6, 6);
    tu_fill_uniform(&a, 610, -1.0, 1.0);
    tu_fill_uniform(&b, 611, -1.0, 1.0);
    TU_OK(mrt_tensor_clone(&a0, &a));
    TU_OK(mrt_tensor_clone(&b0, &b));
    TU_OK(mrt_matmul(&a, &b, &a));
    check_matmul(&a0, &b0, &a);
    TU_OK(mrt_tensor_copy(&a, &a0));
    TU_OK(mrt_matmul(&a, &b, &b));
    check_matmul(&a0, &b0, &b);
    mrt_tensor_release(&b0);
    mrt_tensor_release(&a0);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_matmul_errors) {
    mrt_tensor a = {0}, b = {0}, out = {0}, v3 = {0}, a3 = {0}, b3 = {0}, s = {0}, i64 = {0};
    TU_ALLOC(&a, MRT_F32, 3, 4);
    TU_ALLOC(&b, MRT_F32, 5, 6);
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&a, &b, &out));
    TU_MSG_HAS("3x4");
    TU_MSG_HAS("5x6");

    TU_ALLOC(&v3, MRT_F32, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&v3, &b, &out));
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&a, &v3, &out));

    /* Batch dims 2 and 3 do not broadcast. */
    TU_ALLOC(&a3, MRT_F32, 2, 3, 4);
    TU_ALLOC(&b3, MRT_F32, 3, 4, 5);
    TU_FAILS(MRT_ERR_SHAPE, mrt_matmul(&a3, &b3, &out));

    tu_alloc_scalar(&s, MRT_F32);
    TU_FAILS_ANY(mrt_matmul(&s, &a, &out));
    TU_FAILS_ANY(mrt_matmul(&a, &s, &out));

    TU_ALLOC(&i64, MRT_I64, 4, 2);
    TU_FAILS(MRT_ERR_DTYPE, mrt_matmul(&a, &i64, &out));
    ck_assert_ptr_null(out.storage);

    mrt_tensor_release(&i64);
    mrt_tensor_release(&s);
    mrt_tensor_release(&b3);
    mrt_tensor_release(&a3);
    mrt_tensor_release(&v3);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

/* ---- threads ---------------------------------------------------------------------- */

/* Elementwise results must not depend on the thread count (each element is
 * computed the same way whoever computes it). Reductions may split the sum
 * differently per thread count, so only a tolerance is required of them. */
START_TEST(test_thread_count_independence) {
    int saved = mrt_get_num_threads();
    mrt_tensor a = {0}, b = {0}, row = {0};
    TU_ALLOC(&a, MRT_F32, BIG_ROWS, BIG_COLS);
    TU_ALLOC(&b, MRT_F32, BIG_ROWS, BIG_COLS);
    TU_ALLOC(&row, MRT_F32, BIG_COLS);
    tu_fill_uniform(&a, 700, 0.0, 1.0);
    tu_fill_uniform(&b, 701, -1.0, 1.0);
    tu_fill_uniform(&row, 702, -1.0, 1.0);

    mrt_tensor add[2] = {{0}, {0}}, bc[2] = {{0}, {0}}, ex[2] = {{0}, {0}}, mx[2] = {{0}, {0}};
    double sum[2];
    int64_t unused;
    for (int r = 0; r < 2; r++) {
        mrt_set_num_threads(r + 1);
        ck_assert_int_eq(mrt_get_num_threads(), r + 1);
        TU_OK(mrt_binary(MRT_ADD, &a, &b, &add[r]));
        TU_OK(mrt_binary(MRT_MUL, &a, &row, &bc[r]));
        TU_OK(mrt_unary(MRT_EXP, &b, &ex[r]));
        TU_OK(mrt_reduce_dim(MRT_MAX, &a, 0, &mx[r], NULL));
        TU_OK(mrt_reduce_all(MRT_SUM, &a, &sum[r], &unused));
    }
    mrt_set_num_threads(saved);

    size_t nbytes = (size_t)BIG_ROWS * BIG_COLS * sizeof(float);
    ck_assert_mem_eq(mrt_f32(&add[0]), mrt_f32(&add[1]), nbytes);
    ck_assert_mem_eq(mrt_f32(&bc[0]), mrt_f32(&bc[1]), nbytes);
    ck_assert_mem_eq(mrt_f32(&ex[0]), mrt_f32(&ex[1]), nbytes);
    /* max is order-independent, so exact even though it is a reduction. */
    ck_assert_mem_eq(mrt_f32(&mx[0]), mrt_f32(&mx[1]), BIG_COLS * sizeof(float));
    ck_assert_msg(fabs(sum[0] - sum[1]) <= 1e-9 * fabs(sum[0]), "sum 1 thread %.17g, 2 threads %.17g",
                  sum[0], sum[1]);

    for (int r = 0; r < 2; r++) {
        mrt_tensor_release(&mx[r]);
        mrt_tensor_release(&ex[r]);
        mrt_tensor_release(&bc[r]);
        mrt_tensor_release(&add[r]);
    }
    mrt_tensor_release(&row);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

int main(void) {
    Suite *s = suite_create("ops");

    TCase *el = tcase_create("elementwise");
    /* Generous: sanitizer builds run the >1M-element cases several times slower. */
    tcase_set_timeout(el, 60);
    tcase_add_test(el, test_op_names);
    tcase_add_loop_test(el, test_binary_same_shape, 0, N_BINOPS);
    tcase_add_loop_test(el, test_binary_broadcast, 0, N_BINOPS);
    tcase_add_loop_test(el, test_binary_noncontiguous, 0, N_BINOPS);
    tcase_add_loop_test(el, test_binary_inplace, 0, N_BINOPS);
    tcase_add_loop_test(el, test_binary_scalar, 0, N_BINOPS);
    tcase_add_test(el, test_binary_scalar_sides_differ);
    tcase_add_loop_test(el, test_binary_large, 0, N_BINOPS);
    tcase_add_test(el, test_binary_errors);
    tcase_add_loop_test(el, test_unary, 0, N_UNOPS);
    tcase_add_loop_test(el, test_unary_large, 0, N_UNOPS);
    tcase_add_test(el, test_unary_special_values);
    suite_add_tcase(s, el);

    TCase *rd = tcase_create("reduce");
    tcase_set_timeout(rd, 60);
    tcase_add_loop_test(rd, test_reduce_all, 0, N_REDUCE);
    tcase_add_loop_test(rd, test_reduce_dim, 0, N_REDUCE);
    tcase_add_test(rd, test_reduce_ties_first);
    tcase_add_test(rd, test_reduce_large);
    tcase_add_test(rd, test_reduce_errors);
    tcase_add_test(rd, test_reduce_preallocated);
    suite_add_tcase(s, rd);

    TCase *mm = tcase_create("matmul");
    tcase_set_timeout(mm, 60);
    tcase_add_test(mm, test_matmul_sizes);
    tcase_add_test(mm, test_matmul_transposed_operands);
    tcase_add_test(mm, test_matmul_strided_operands);
    tcase_add_test(mm, test_matmul_batched);
    tcase_add_test(mm, test_matmul_vectors);
    tcase_add_test(mm, test_matmul_preallocated_out);
    tcase_add_test(mm, test_matmul_inplace);
    tcase_add_test(mm, test_matmul_errors);
    suite_add_tcase(s, mm);

    TCase *th = tcase_create("threads");
    tcase_set_timeout(th, 60);
    tcase_add_test(th, test_thread_count_independence);
    suite_add_tcase(s, th);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
