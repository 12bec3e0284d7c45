/* The process-wide tensor cache (see machrt/cache.h): a chained hash table
 * under one mutex; lookups are rare next to decoding, so one lock is enough. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "machrt/cache.h"

typedef struct cache_entry {
    char *key;
    size_t keylen;
    mrt_tensor tensor;
    struct cache_entry *next;
} cache_entry;

#define CACHE_BUCKETS 4096
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cache_entry *cache_table[CACHE_BUCKETS];
static mrt_cache_stats stats;

static unsigned hash_key(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (unsigned)(h % CACHE_BUCKETS);
}

static cache_entry *find(const char *key, size_t n)
{
    for (cache_entry *e = cache_table[hash_key(key, n)]; e; e = e->next)
        if (e->keylen == n && memcmp(e->key, key, n) == 0) return e;
    return NULL;
}

int mrt_cache_get(const char *key, size_t keylen, mrt_tensor *out)
{
    pthread_mutex_lock(&cache_lock);
    cache_entry *e = find(key, keylen);
    if (e) {
        mrt_tensor_share(out, &e->tensor);
        stats.hits++;
    } else {
        stats.misses++;
    }
    pthread_mutex_unlock(&cache_lock);
    return e != NULL;
}

mrt_status mrt_cache_put(const char *key, size_t keylen, const mrt_tensor *t)
{
    if (!t || !t->storage) return mrt_fail(MRT_ERR_ARG, "cache_put: no tensor to keep");
    cache_entry *fresh = calloc(1, sizeof *fresh);
    char *k = malloc(keylen + 1);
    if (!fresh || !k) {
        free(fresh);
        free(k);
        return mrt_fail(MRT_ERR_NOMEM, "cache_put: out of memory");
    }
    memcpy(k, key, keylen);
    k[keylen] = '\0';
    pthread_mutex_lock(&cache_lock);
    if (find(key, keylen)) {
        pthread_mutex_unlock(&cache_lock);
        free(fresh);
        free(k);
        return MRT_OK;
    }
    fresh->key = k;
    fresh->keylen = keylen;
    mrt_tensor_share(&fresh->tensor, t);
    unsigned h = hash_key(key, keylen);
    fresh->next = cache_table[h];
    cache_table[h] = fresh;
    stats.entries++;
    stats.bytes += (size_t)mrt_tensor_numel(t) * mrt_dtype_size(t->dtype);
    pthread_mutex_unlock(&cache_lock);
    return MRT_OK;
}

void mrt_cache_clear(void)
{
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_BUCKETS; i++) {
        for (cache_entry *e = cache_table[i], *n; e; e = n) {
            n = e->next;
            mrt_tensor_release(&e->tensor);
            free(e->key);
            free(e);
        }
        cache_table[i] = NULL;
    }
    memset(&stats, 0, sizeof stats);
    pthread_mutex_unlock(&cache_lock);
}

void mrt_cache_get_stats(mrt_cache_stats *out)
{
    pthread_mutex_lock(&cache_lock);
    *out = stats;
    pthread_mutex_unlock(&cache_lock);
}
