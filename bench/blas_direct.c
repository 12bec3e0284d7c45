/* Reference point for the tensor API's matmul: OpenBLAS sgemm called
 * directly on preallocated buffers. Prints "sgemm <n> <GFLOP/s>" per size. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    for (int a = 1; a < argc; a++) {
        int n = atoi(argv[a]);
        float *x = malloc(sizeof(float) * (size_t)n * n), *y = malloc(sizeof(float) * (size_t)n * n),
              *z = malloc(sizeof(float) * (size_t)n * n);
        if (!x || !y || !z) return 1;
        for (size_t i = 0; i < (size_t)n * n; i++) {
            x[i] = (float)(i % 7) * 0.1f;
            y[i] = (float)(i % 5) * 0.2f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, x, n, y, n, 0.0f, z, n);
        int reps = n <= 1024 ? 20 : 5;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, x, n, y, n, 0.0f,
                        z, n);
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        printf("sgemm %d %.2f\n", n, 2.0 * n * (double)n * n / best * 1e-9);
        free(x);
        free(y);
        free(z);
    }
    return 0;
}
