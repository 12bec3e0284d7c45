/* The CPU GEMM (runtime/cpu/gemm.c): oneDNN fp32 against OpenBLAS, bf16
 * against a reference that rounds the operands to bf16 itself and sums in
 * double, convolutions in bf16 against direct summation on rounded
 * operands, and the fp32 fallback on a CPU without bf16.
 *
 * The tolerance is fp32 accumulation's: 1e-5 of sum |a||b| per element.
 * Products on unrounded operands differ from the bf16 reference by about
 * 1e-3 of that sum, which each bf16 test checks it could tell apart. */
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include "check_util.h"
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "../../runtime/cpu/gemm.h"
#include "../../runtime/nn/conv2d.h"

#define TOL 1e-5

/* Round to nearest even at bit 16, written out independently of gemm.c. */
static double bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint32_t lsb = (u >> 16) & 1u;
    u = (u + 0x7fffu + lsb) & 0xffff0000u;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

static double ident(float x) { return x; }

static void fill(float *x, size_t n, uint64_t seed)
{
    tu_rng r = tu_rng_seed(seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)tu_rng_uniform(&r, -1.0, 1.0);
}

typedef struct {
    int m, n, k, ta, tb;
    float alpha, beta;
} gcase;

static const gcase gcases[] = {
    {1, 1, 1, 0, 0, 1, 0},     {7, 5, 3, 0, 1, 1, 0},       {13, 29, 67, 1, 0, 1, 1},
    {33, 17, 130, 1, 1, 0.5f, 0}, {64, 96, 576, 0, 0, 1, 1}, {5, 300, 37, 0, 1, 1, 0.25f},
    {130, 3, 257, 1, 0, 2, 0}, {31, 65, 1000, 0, 0, 1, 0},
};
#define N_GCASES (int)(sizeof gcases / sizeof gcases[0])

/* C = alpha op(A) op(B) + beta C0 through `impl`, checked against the
 * reference over round(A), round(B); ld's are padded past the minimum.
 * Returns the largest |C - fp32 product| / sum|a||b| seen, so a caller can
 * tell whether the case separates bf16 from fp32. */
static double check_gemm(mrt_gemm_impl impl, const gcase *g, double (*round)(float))
{
    const int ar = g->ta ? g->k : g->m, ac = g->ta ? g->m : g->k;
    const int br = g->tb ? g->n : g->k, bc = g->tb ? g->k : g->n;
    const int lda = ac + 3, ldb = bc + 1, ldc = g->n + 2;
    float *a = malloc(sizeof(float) * (size_t)ar * lda), *b = malloc(sizeof(float) * (size_t)br * ldb);
    float *c = malloc(sizeof(float) * (size_t)g->m * ldc), *c0 = malloc(sizeof(float) * (size_t)g->m * ldc);
    fill(a, (size_t)ar * lda, 1);
    fill(b, (size_t)br * ldb, 2);
    fill(c0, (size_t)g->m * ldc, 3);
    memcpy(c, c0, sizeof(float) * (size_t)g->m * ldc);
    mrt_cpu_gemm_with(impl, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                      g->m, g->n, g->k, g->alpha, a, lda, b, ldb, g->beta, c, ldc);
    double separation = 0;
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            double s = 0, s32 = 0, mag = 0;
            for (int p = 0; p < g->k; p++) {
                const float av = g->ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                const float bv = g->tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += round(av) * round(bv);
                s32 += (double)av * bv;
                mag += fabs((double)av * bv);
            }
            const double want = g->alpha * s + g->beta * c0[(size_t)i * ldc + j];
            const double got = c[(size_t)i * ldc + j];
            const double scale = fabs(g->alpha) * mag + fabs(g->beta * c0[(size_t)i * ldc + j]) + 1e-30;
            ck_assert_msg(fabs(got - want) <= TOL * scale,
                          "%dx%dx%d ta=%d tb=%d alpha=%g beta=%g: C[%d,%d] = %.9g, want %.9g", g->m,
                          g->n, g->k, g->ta, g->tb, g->alpha, g->beta, i, j, got, want);
            separation = fmax(separation, fabs(g->alpha) * fabs(s - s32) / scale);
        }
    /* the padding between rows of C is never written */
    for (int i = 0; i < g->m; i++)
        for (int j = g->n; j < ldc; j++)
            ck_assert(c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j]);
    free(a);
    free(b);
    free(c);
    free(c0);
    return separation;
}

START_TEST(test_onednn_fp32_matches_reference)
{
    check_gemm(MRT_GEMM_ONEDNN_F32, &gcases[_i], ident);
    check_gemm(MRT_GEMM_OPENBLAS, &gcases[_i], ident);
    check_gemm(MRT_GEMM_AUTO, &gcases[_i], ident);
}
END_TEST

START_TEST(test_bf16_matches_rounded_reference)
{
    TU_OK(mrt_set_gemm_precision("bf16"));
    ck_assert_str_eq(mrt_gemm_precision(), "bf16");
    const double sep = check_gemm(MRT_GEMM_AUTO, &gcases[_i], bf16);
    if (gcases[_i].k >= 3) /* one product of 1 x 1 may well be exact */
        ck_assert_msg(sep > 10 * TOL, "case %d cannot tell bf16 from fp32 (%g)", _i, sep);
    /* back to fp32: the same case now matches the unrounded product */
    TU_OK(mrt_set_gemm_precision("fp32"));
    ck_assert_str_eq(mrt_gemm_precision(), "fp32");
    check_gemm(MRT_GEMM_AUTO, &gcases[_i], ident);
}
END_TEST

START_TEST(test_bf16_impl_matches_rounded_reference)
{
    /* Asked for by name, whatever the precision setting; on a CPU without
     * bf16 this is the OpenBLAS fallback on rounded operands. */
    check_gemm(MRT_GEMM_ONEDNN_BF16, &gcases[_i], bf16);
}
END_TEST

/* The operand rounding itself, on a row long enough for the vector code:
 * op(A) = A^T of 1 x 53 (ties both ways, the largest float, infinities,
 * NaN) times B = 1 gives round(A) exactly. Denormals are left out: the
 * matrix units may flush them. */
START_TEST(test_bf16_rounding_bits)
{
    enum { M = 53 };
    float a[M], c[M], one = 1.0f;
    tu_rng r = tu_rng_seed(5);
    for (int i = 0; i < M; i++) a[i] = (float)tu_rng_uniform(&r, -100.0, 100.0);
    a[0] = 1.0f + 0x1p-8f;       /* halfway: down to the even 1 */
    a[1] = 1.0f + 3 * 0x1p-8f;   /* halfway: up to the even 1 + 2^-6 */
    a[17] = -(1.0f + 0x1p-8f);
    a[18] = 3.4028235e38f;       /* rounds up to infinity */
    a[19] = INFINITY;
    a[20] = -INFINITY;
    a[33] = NAN;
    a[34] = 1.0f + 0x1p-8f + 0x1p-20f; /* just above halfway: up */
    TU_OK(mrt_set_gemm_precision("bf16"));
    mrt_cpu_gemm(CblasTrans, CblasNoTrans, M, 1, 1, 1.0f, a, M, &one, 1, 0.0f, c, 1);
    TU_OK(mrt_set_gemm_precision("fp32"));
    for (int i = 0; i < M; i++) {
        if (isnan(a[i])) {
            ck_assert_msg(isnan(c[i]), "round(NaN) = %g", c[i]);
            continue;
        }
        const float want = (float)bf16(a[i]);
        ck_assert_msg(memcmp(&c[i], &want, 4) == 0, "round(%.9g) = %.9g, want %.9g", a[i], c[i], want);
    }
    ck_assert(c[0] == 1.0f && c[1] == 1.0f + 0x1p-6f && c[34] == 1.0f + 0x1p-7f);
}
END_TEST

/* ---- convolution in bf16 ------------------------------------------------------ */

typedef struct {
    int n, c, h, w, o, k, s, p;
} ccase;

static const ccase ccases[] = {
    {2, 16, 9, 11, 8, 3, 1, 1}, /* Winograd in fp32 */
    {3, 5, 10, 7, 6, 3, 2, 1},
    {2, 12, 6, 6, 10, 1, 1, 0},
    {2, 1, 19, 23, 8, 7, 2, 3},  /* a ResNet's stem */
    {2, 8, 8, 10, 16, 3, 2, 1},  /* stride 2 on an even plane: less padding right */
    {2, 12, 7, 9, 10, 1, 2, 0},  /* the downsampling 1x1 */
    {3, 32, 6, 7, 48, 3, 1, 1},  /* channels in whole blocks */
    {2, 128, 8, 10, 96, 3, 1, 1}, /* wide enough for oneDNN's blocked AMX kernels */
    {2, 96, 9, 8, 128, 3, 2, 1},
};
#define N_CCASES (int)(sizeof ccases / sizeof ccases[0])
/* Each case through oneDNN's convolutions (training, and inference, whose
 * forward kernels may differ) and through machrt's own kernels (im2col, 1x1
 * GEMMs: bf16 turns Winograd off). */
static const mrt_conv_algo calgos[] = {MRT_CONV_ONEDNN, MRT_CONV_ONEDNN, MRT_CONV_AUTO};
static const int cinference[] = {0, 1, 0};

static float *data(mrt_tensor *t) { return mrt_f32(t); }

START_TEST(test_conv_bf16_matches_rounded_reference)
{
    const ccase *q = &ccases[_i % N_CCASES];
    const int oh = (q->h + 2 * q->p - q->k) / q->s + 1, ow = (q->w + 2 * q->p - q->k) / q->s + 1;
    mrt_tensor x = {0}, w = {0}, y = {0}, dy = {0}, dx = {0}, dw = {0};
    TU_ALLOC(&x, MRT_F32, q->n, q->c, q->h, q->w);
    TU_ALLOC(&w, MRT_F32, q->o, q->c, q->k, q->k);
    TU_ALLOC(&y, MRT_F32, q->n, q->o, oh, ow);
    TU_ALLOC(&dy, MRT_F32, q->n, q->o, oh, ow);
    TU_ALLOC(&dx, MRT_F32, q->n, q->c, q->h, q->w);
    TU_ALLOC(&dw, MRT_F32, q->o, q->c, q->k, q->k);
    fill(data(&x), (size_t)tu_numel(&x), 11);
    fill(data(&w), (size_t)tu_numel(&w), 12);
    fill(data(&dy), (size_t)tu_numel(&dy), 13);
    /* dw accumulates: it starts from 0.5 */
    for (int64_t e = 0; e < tu_numel(&dw); e++) data(&dw)[e] = 0.5f;
    const mrt_conv2d_params p = {q->s, q->s, q->p, q->p, cinference[_i / N_CCASES]};
    TU_OK(mrt_set_gemm_precision("bf16"));
    mrt_conv_geom g = {q->n, q->c, q->h, q->w, q->o, q->k, q->k, oh, ow, q->s, q->s, q->p, q->p};
    mrt_conv2d_opts fo = {calgos[_i / N_CCASES], 0, 0}, bo = fo;
    if (fo.algo == MRT_CONV_AUTO)
        fo.algo = mrt_conv2d_choose_own(&g, 0), bo.algo = mrt_conv2d_choose_own(&g, 1);
    ck_assert_msg(mrt_conv2d_algo_supports(fo.algo, &g), "case %d: no %s", _i,
                  mrt_conv_algo_name(fo.algo));
    TU_OK(mrt_conv2d_forward_opts(&x, &w, NULL, &p, &y, NULL, &fo));
    TU_OK(mrt_conv2d_backward_opts(&x, &w, &dy, &p, &dx, &dw, NULL, NULL, &bo));
    TU_OK(mrt_set_gemm_precision("fp32"));
    const float *X = data(&x), *W = data(&w), *DY = data(&dy);
    double *rdx = calloc((size_t)tu_numel(&dx), sizeof(double)), *rdx_mag = calloc((size_t)tu_numel(&dx), sizeof(double));
    double *rdw = calloc((size_t)tu_numel(&dw), sizeof(double)), *rdw_mag = calloc((size_t)tu_numel(&dw), sizeof(double));
#define XI(n_, c_, i_, j_) ((((size_t)(n_) * q->c + (c_)) * q->h + (i_)) * q->w + (j_))
#define WI(o_, c_, i_, j_) ((((size_t)(o_) * q->c + (c_)) * q->k + (i_)) * q->k + (j_))
#define YI(n_, o_, i_, j_) ((((size_t)(n_) * q->o + (o_)) * oh + (i_)) * ow + (j_))
    for (int n = 0; n < q->n; n++)
        for (int o = 0; o < q->o; o++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    double s = 0, mag = 0;
                    for (int c = 0; c < q->c; c++)
                        for (int u = 0; u < q->k; u++)
                            for (int v = 0; v < q->k; v++) {
                                const int hi = i * q->s - q->p + u, wi = j * q->s - q->p + v;
                                if (hi < 0 || hi >= q->h || wi < 0 || wi >= q->w) continue;
                                const double xv = bf16(X[XI(n, c, hi, wi)]), wv = bf16(W[WI(o, c, u, v)]);
                                const double gv = bf16(DY[YI(n, o, i, j)]);
                                s += xv * wv;
                                mag += fabs(xv * wv);
                                rdx[XI(n, c, hi, wi)] += wv * gv;
                                rdx_mag[XI(n, c, hi, wi)] += fabs(wv * gv);
                                rdw[WI(o, c, u, v)] += xv * gv;
                                rdw_mag[WI(o, c, u, v)] += fabs(xv * gv);
                            }
                    const double got = data(&y)[YI(n, o, i, j)];
                    ck_assert_msg(fabs(got - s) <= TOL * mag + 1e-30, "y[%d,%d,%d,%d] = %.9g, want %.9g",
                                  n, o, i, j, got, s);
                }
    for (int64_t e = 0; e < tu_numel(&dx); e++)
        ck_assert_msg(fabs(data(&dx)[e] - rdx[e]) <= TOL * rdx_mag[e] + 1e-30,
                      "dx[%lld] = %.9g, want %.9g", (long long)e, data(&dx)[e], rdx[e]);
    for (int64_t e = 0; e < tu_numel(&dw); e++)
        ck_assert_msg(fabs(data(&dw)[e] - 0.5 - rdw[e]) <= TOL * (rdw_mag[e] + 0.5),
                      "dw[%lld] = %.9g, want 0.5 + %.9g", (long long)e, data(&dw)[e], rdw[e]);
    free(rdx); free(rdx_mag); free(rdw); free(rdw_mag);
    mrt_tensor *ts[] = {&x, &w, &y, &dy, &dx, &dw};
    for (int t = 0; t < 6; t++) mrt_tensor_release(ts[t]);
}
END_TEST

/* ---- a CPU without bf16 ------------------------------------------------------- */

START_TEST(test_no_bf16_falls_back_with_one_message)
{
    /* Check forks each test, so the probe below is this process's first. */
    setenv("MACHRT_CPU_FEATURES", "-avx512_bf16,-amx_bf16", 1);
    char path[] = "/tmp/machrt_gemm_stderrXXXXXX";
    const int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    const int saved = dup(2);
    dup2(fd, 2);
    const mrt_status first = mrt_set_gemm_precision("bf16");
    const mrt_status second = mrt_set_gemm_precision("bf16");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[1024] = {0};
    const ssize_t got = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    ck_assert_int_eq(first, MRT_OK);
    ck_assert_int_eq(second, MRT_OK);
    ck_assert_int_gt((int)got, 0);
    ck_assert_str_eq(mrt_gemm_precision(), "fp32");
    const char *needle = "bf16 GEMMs need a CPU with avx512_bf16 or AMX";
    const char *at = strstr(text, needle);
    ck_assert_msg(at != NULL, "stderr: %s", text);
    ck_assert_msg(strstr(at + 1, needle) == NULL, "said twice: %s", text);
    ck_assert_msg(strstr(text, "computing in fp32") != NULL, "stderr: %s", text);
    ck_assert(!mrt_cpu_gemm_bf16_supported());
    /* the GEMMs are fp32 ones */
    check_gemm(MRT_GEMM_AUTO, &gcases[4], ident);
}
END_TEST

START_TEST(test_precision_modes)
{
    TU_FAILS(MRT_ERR_ARG, mrt_set_gemm_precision("bf15"));
    TU_MSG_HAS("fp32, fp16 or bf16");
    if (!mrt_cuda_available()) {
        TU_FAILS(MRT_ERR_DEVICE, mrt_set_gemm_precision("fp16"));
        TU_MSG_HAS("CUDA");
    }
}
END_TEST

static int bf16_supported_unprobed(void)
{
    fflush(stdout);
    const pid_t child = fork();
    if (child == 0) _exit(mrt_cpu_gemm_bf16_supported() ? 0 : 1);
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child) {
        perror("test_gemm: fork");
        exit(1);
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
    Suite *s = suite_create("gemm");
    TCase *g = tcase_create("gemm");
    tcase_set_timeout(g, 120);
    tcase_add_loop_test(g, test_onednn_fp32_matches_reference, 0, N_GCASES);
    tcase_add_loop_test(g, test_bf16_impl_matches_rounded_reference, 0, N_GCASES);
    /* The cases that need the CPU's bf16. The CPU is asked in a child: the
     * probe is once per process, and test_no_bf16_falls_back_with_one_message
     * needs its forked process to be the first to make it. */
    if (bf16_supported_unprobed()) {
        tcase_add_loop_test(g, test_bf16_matches_rounded_reference, 0, N_GCASES);
        tcase_add_test(g, test_bf16_rounding_bits);
        tcase_add_loop_test(g, test_conv_bf16_matches_rounded_reference, 0, 3 * N_CCASES);
    } else {
        tu_skip(N_GCASES + 1 + 3 * N_CCASES, "test_gemm: bf16 GEMM and convolution cases: this CPU has neither "
                                             "avx512_bf16 nor AMX");
    }
    tcase_add_test(g, test_no_bf16_falls_back_with_one_message);
    tcase_add_test(g, test_precision_modes);
    suite_add_tcase(s, g);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    const int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
