/* Internal: the CPU draws, the CPU backend's rng table (backend.c). Each
 * has the signature of its public op in machrt/rng.h and is called by it
 * once the generator, the tensor and the parameters are checked. */
#ifndef MACHRT_RNG_CPU_H
#define MACHRT_RNG_CPU_H

#include "machrt/rng.h"

mrt_status mrt_cpu_rng_uniform(mrt_rng *rng, mrt_tensor *t, double low, double high);
mrt_status mrt_cpu_rng_normal(mrt_rng *rng, mrt_tensor *t, double mean, double std);
mrt_status mrt_cpu_rng_bernoulli(mrt_rng *rng, mrt_tensor *t, double p);

#endif
