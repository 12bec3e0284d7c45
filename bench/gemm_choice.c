/* The measurement behind the CPU GEMM's choice (runtime/cpu/gemm.c): the
 * GEMM shapes of ResNet34's convolutions on 32 log-mel chunks, through
 * OpenBLAS, oneDNN fp32 and oneDNN bf16, interleaved in one run so that
 * the machine's load falls on all three alike. Best of 5, GFLOP/s; the last
 * column is bf16's largest deviation from fp32 (inputs in [-0.5, 0.5]); a
 * CPU without bf16 prints "-" in both bf16 columns.
 *   build/bench/gemm_choice [reps] [--cpu]
 * --cpu times CPU seconds of the process instead of wall-clock ones: with
 * OMP_NUM_THREADS=1 on a loaded machine that measures the kernels, not the
 * load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../runtime/cpu/cpu_features.h"
#include "../runtime/cpu/gemm.h"

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *what;
    int m, n, k;
} shape;

int main(int argc, char **argv)
{
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu")) clock_id = CLOCK_PROCESS_CPUTIME_ID;
        else if (atoi(argv[i]) > 0) reps = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: gemm_choice [reps] [--cpu]\n");
            return 2;
        }
    }
    /* M = out channels, K = in channels x 9, N = output pixels of a chunk
     * group; then Winograd's per-tile GEMMs (M = out, K = in, N = tiles),
     * the fully connected head and small chunks. */
    const shape shapes[] = {
        {"im2col 64<-64", 64, 13824, 576},   {"im2col 128<-128", 128, 3456, 1152},
        {"im2col 256<-256", 256, 864, 2304}, {"im2col 512<-512", 512, 432, 4608},
        {"stride2 128<-64", 128, 3456, 576}, {"wino 64<-64", 64, 864, 64},
        {"wino 256<-256", 256, 216, 256},    {"1x1 128<-64", 128, 3456, 64},
        {"small 64x64x64", 64, 64, 64},      {"head 32x4x512", 32, 4, 512},
    };
    const mrt_gemm_impl impls[] = {MRT_GEMM_OPENBLAS, MRT_GEMM_ONEDNN_F32, MRT_GEMM_ONEDNN_BF16};
    char feats[128];
    printf("cpu features: %s\n", mrt_cpu_features_str(feats, sizeof feats));
    printf("%-18s %5s %6s %5s %9s %9s %9s %8s\n", "shape", "M", "N", "K", "openblas", "dnnl_f32",
           "dnnl_bf16", "bf16_err");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s].m, n = shapes[s].n, k = shapes[s].k;
        float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)k * n);
        float *c[3];
        for (int i = 0; i < 3; i++) c[i] = malloc(sizeof(float) * (size_t)m * n);
        srand(7);
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
        double best[3] = {1e30, 1e30, 1e30};
        for (int r = 0; r <= reps; r++)
            for (int i = 0; i < 3; i++) {
                if (i == 2 && !mrt_cpu_gemm_bf16_supported()) continue;
                const double t0 = now();
                mrt_cpu_gemm_with(impls[i], CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n,
                                  0.0f, c[i], n);
                const double dt = now() - t0;
                if (r > 0 && dt < best[i]) best[i] = dt; /* the first run creates the primitive */
            }
        const double flop = 2.0 * m * n * (double)k * 1e-9;
        printf("%-18s %5d %6d %5d %9.1f %9.1f", shapes[s].what, m, n, k, flop / best[0],
               flop / best[1]);
        if (mrt_cpu_gemm_bf16_supported()) {
            double err = 0;
            for (size_t i = 0; i < (size_t)m * n; i++) err = fmax(err, fabs(c[2][i] - c[0][i]));
            printf(" %9.1f %8.4f\n", flop / best[2], err);
        } else {
            printf(" %9s %8s\n", "-", "-");
        }
        free(a);
        free(b);
        for (int i = 0; i < 3; i++) free(c[i]);
    }
    return 0;
}
