/* A checksum of tensors and their metadata (see machrt/safetensors.h). */
#include <stdlib.h>
#include <string.h>
#include "machrt/safetensors.h"
#include "machrt/sys.h"

/* Every field goes in with its length first, so that no two different
 * contents give the same byte stream ("ab" + "c" vs "a" + "bc"). */
static int put(mrt_sha256 *h, const void *p, size_t n)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)n >> (8 * i));
    return mrt_sha256_add(h, len8, 8) && mrt_sha256_add(h, p, n);
}

static int put_u64(mrt_sha256 *h, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return mrt_sha256_add(h, b, 8);
}

static int put_tensor(mrt_sha256 *h, const mrt_named_tensor *nt, mrt_status *st)
{
    const mrt_tensor *t = &nt->tensor;
    if (!put(h, nt->name, strlen(nt->name)) || !put_u64(h, (uint64_t)t->dtype) ||
        !put_u64(h, (uint64_t)t->ndim))
        return 0;
    for (int d = 0; d < t->ndim; d++)
        if (!put_u64(h, (uint64_t)t->shape[d])) return 0;
    size_t esize = mrt_dtype_size(t->dtype);
    size_t nbytes = (size_t)mrt_tensor_numel(t) * esize;
    if (nbytes == 0 || !t->storage) return put(h, "", 0);
    mrt_tensor dense = {0};
    const mrt_tensor *src = t;
    if (!mrt_tensor_is_contiguous(t)) {
        if ((*st = mrt_tensor_clone(&dense, t)) != MRT_OK) return 0;
        src = &dense;
    }
    int ok = put(h, (const char *)src->storage->data + (size_t)src->offset * esize, nbytes);
    mrt_tensor_release(&dense);
    return ok;
}

typedef struct {
    const char *key, *value;
} meta_pair;

static int by_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const mrt_named_tensor *const *)a)->name, (*(const mrt_named_tensor *const *)b)->name);
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

mrt_status mrt_tensors_sha256(const mrt_named_tensor *tensors, int n, const char *const *keys,
                              const char *const *values, int m, char hex[MRT_DIGEST_HEX])
{
    for (int i = 0; i < n; i++)
        if (tensors[i].tensor.storage && tensors[i].tensor.storage->device != MRT_CPU)
            return mrt_fail(MRT_ERR_ARG, "checksum: tensor '%s' is not on the host", tensors[i].name);
    const mrt_named_tensor **ord = malloc((size_t)(n ? n : 1) * sizeof *ord);
    meta_pair *pairs = malloc((size_t)(m ? m : 1) * sizeof *pairs);
    mrt_sha256 *h = mrt_sha256_begin();
    mrt_status st = MRT_OK;
    int ok = ord && pairs && h;
    if (ok) {
        /* Sorted, so the checksum does not depend on the order of a Lua table. */
        for (int i = 0; i < n; i++) ord[i] = &tensors[i];
        qsort(ord, (size_t)n, sizeof *ord, by_tensor_name);
        for (int i = 0; i < m; i++) pairs[i] = (meta_pair){keys[i], values[i]};
        qsort(pairs, (size_t)m, sizeof *pairs, by_key);
        ok = put_u64(h, (uint64_t)n);
        for (int i = 0; i < n && ok; i++) ok = put_tensor(h, ord[i], &st);
        ok = ok && put_u64(h, (uint64_t)m);
        for (int i = 0; i < m && ok; i++)
            ok = put(h, pairs[i].key, strlen(pairs[i].key)) && put(h, pairs[i].value, strlen(pairs[i].value));
    }
    ok = mrt_sha256_end(h, hex) && ok;
    free(pairs);
    free(ord);
    if (st != MRT_OK) return st;
    if (!ok) return mrt_fail(MRT_ERR_NOMEM, "checksum: sha256 of %d tensors failed", n);
    return MRT_OK;
}
