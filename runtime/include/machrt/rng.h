/* Counter-based random numbers (Philox 4x32-10).
 *
 * Element i of a fill draws from counter (offset + i) under the key `seed`,
 * so a tensor's values depend only on the seed and the element index: the
 * same for any thread count or chunking. A generator is just (seed, offset);
 * each fill advances offset by the number of elements drawn. */
#ifndef MACHRT_RNG_H
#define MACHRT_RNG_H

#include <stdint.h>
#include "machrt/tensor.h"

typedef struct mrt_rng {
    uint64_t seed;
    uint64_t offset; /* counters already consumed */
} mrt_rng;

void mrt_rng_init(mrt_rng *rng, uint64_t seed);
/* The process-wide default generator (seeded by mrt_rng_default_seed). */
mrt_rng *mrt_rng_default(void);
void mrt_rng_default_seed(uint64_t seed);

/* One Philox4x32-10 block: 4 uint32 from (counter, key). */
void mrt_philox4x32(uint64_t counter, uint64_t key, uint32_t out[4]);
/* The same on the full 128-bit counter and 64-bit key, as the published
 * known-answer vectors state them. */
void mrt_philox4x32_block(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Fill float32 tensors in row-major order (any strides). */
mrt_status mrt_rng_uniform(mrt_rng *rng, mrt_tensor *t, double low, double high);
mrt_status mrt_rng_normal(mrt_rng *rng, mrt_tensor *t, double mean, double std);
/* Bernoulli(p) as 0/1 floats (dropout masks). */
mrt_status mrt_rng_bernoulli(mrt_rng *rng, mrt_tensor *t, double p);

#endif
