/* One thread count for everything: OpenMP loops and OpenBLAS (the OpenMP
 * build of OpenBLAS shares the same runtime, so the two never oversubscribe
 * the cores). */
#include <omp.h>
#include <cblas.h>
#include "machrt/tensor.h"

void mrt_set_num_threads(int n)
{
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int mrt_get_num_threads(void) { return omp_get_max_threads(); }
