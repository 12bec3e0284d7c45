/* The process-wide tensor cache: decoded, resampled waves keyed by a byte
 * string (file, channel, rate, ...), shared by every loader worker thread
 * and by the pools of later epochs, so a file is decoded once per run.
 *
 * Entries hold a reference to their tensor (the storage refcount is
 * atomic): a tensor taken from the cache is shared, to be treated as
 * read-only. Thread-safe. */
#ifndef MACHRT_CACHE_H
#define MACHRT_CACHE_H

#include <stddef.h>
#include "machrt/tensor.h"

/* On a hit, `out` (empty) shares the cached tensor and 1 is returned; on a
 * miss `out` stays empty and 0 is returned. Keys may hold NUL bytes. */
int mrt_cache_get(const char *key, size_t keylen, mrt_tensor *out);

/* Keeps a reference to `t` under `key`. A key already present keeps its
 * first tensor (two workers decoding the same file agree). */
mrt_status mrt_cache_put(const char *key, size_t keylen, const mrt_tensor *t);

/* Drops every entry and zeroes the counters. */
void mrt_cache_clear(void);

typedef struct {
    size_t entries, bytes, hits, misses;
} mrt_cache_stats;

void mrt_cache_get_stats(mrt_cache_stats *out);

#endif
