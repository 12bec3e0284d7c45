/* safetensors read/write (the format of the `safetensors` Python library):
 * 8-byte little-endian header length N, N bytes of JSON header (padded with
 * spaces to a multiple of 8), then the raw little-endian tensor bytes.
 * Supported dtypes: F32, I64. Loading validates everything before touching
 * data: header size vs file size, JSON syntax, dtype, shape vs byte count,
 * offsets in range and non-overlapping. */
#ifndef MACHRT_SAFETENSORS_H
#define MACHRT_SAFETENSORS_H

#include "machrt/tensor.h"

typedef struct mrt_named_tensor {
    char *name;        /* owned (malloc) */
    mrt_tensor tensor; /* owned reference */
} mrt_named_tensor;

/* Writes `n` tensors (any strides; written contiguous). Names must be unique.
 * `metadata_json` is an optional JSON object of string values stored under
 * "__metadata__" (NULL for none). Writes to a temporary file and renames it,
 * so an existing file is never left half-written. */
mrt_status mrt_safetensors_save(const char *path, const mrt_named_tensor *tensors, int n,
                                const char *metadata_json);

/* Reads every tensor of the file. On success *out is a malloc'd array of *n
 * entries (free with mrt_safetensors_free) in file order of data offsets
 * (NULL when the file holds no tensors; on failure *out = NULL, *n = 0);
 * *metadata_json (if not NULL) gets a malloc'd copy of the "__metadata__"
 * object as JSON, or NULL. */
mrt_status mrt_safetensors_load(const char *path, mrt_named_tensor **out, int *n,
                                char **metadata_json);
void mrt_safetensors_free(mrt_named_tensor *tensors, int n);

#define MRT_DIGEST_HEX 65 /* 64 lowercase hex digits and the terminator */

/* SHA-256 of tensors (host tensors, any strides) and string metadata, the
 * same for the same content in any order or file layout: tensors sorted by
 * name (name, dtype, shape, bytes), then the key/value pairs sorted by key.
 * A checkpoint stores it in its metadata, so a damaged or edited file is
 * refused when it is loaded instead of resuming into another model. */
mrt_status mrt_tensors_sha256(const mrt_named_tensor *tensors, int n, const char *const *keys,
                              const char *const *values, int m, char hex[MRT_DIGEST_HEX]);

#endif
