/* safetensors reader and writer (the format of the `safetensors` library used
 * by PyTorch and Hugging Face), so checkpoints move between machrt and Python.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON padded
 * with spaces so that 8 + N is a multiple of 8, then the tensor bytes.
 *
 * The reader trusts nothing in the file: the whole header is validated before
 * any tensor is allocated, and data is read with pread() at offsets already
 * checked against the file size, so a malformed or hostile file yields an
 * error message, never an over-read or an absurd allocation. It accepts what
 * the reference library writes and is slightly more lenient than it in one
 * harmless way: gaps between tensors and trailing bytes after the last one
 * are tolerated (overlaps are not). */
#include "machrt/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include "machrt/sys.h"

/* Tensor bytes go verbatim between storage and file, and the format is
 * little-endian; a big-endian host would need byte swaps that we do not do. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "machrt's safetensors I/O assumes a little-endian host"
#endif

/* The reference library's limit: a larger header is a corrupt or hostile file. */
#define ST_MAX_HEADER 100000000ull
/* JSON numbers arrive as doubles; beyond 2^53 they are no longer exact. */
#define ST_MAX_JSON_INT 9007199254740992.0

/* Every dtype name the reference library knows, so that a file using one we
 * do not support gets "unsupported" rather than "unknown". */
static const char *const st_other_dtypes[] = {
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
    "I16", "U16", "F16", "BF16", "I32", "U32", "F64", "C64", "U64", NULL};

static const char *st_dtype_tag(mrt_dtype d) { return d == MRT_I64 ? "I64" : "F32"; }

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF), because the reference library rejects headers that are not. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else return 0;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static char *str_dup(const char *s)
{
    size_t len = strlen(s) + 1;
    char *p = malloc(len);
    if (p) memcpy(p, s, len);
    return p;
}

/* cJSON allocates printed text with its own hooks; callers of this API free
 * with free(), so hand them a plain malloc'd copy. */
static char *json_print_malloc(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    char *copy = s ? str_dup(s) : NULL;
    cJSON_free(s);
    return copy;
}

/* ---- reader ----------------------------------------------------------- */

typedef struct {
    const char *name; /* points into the cJSON tree */
    mrt_dtype dtype;
    int ndim;
    int64_t shape[MRT_MAX_DIMS];
    uint64_t begin, end; /* relative to the start of the data buffer */
} st_entry;

/* 0: *out holds the value; -1: not a number; -2: not an exact integer >= 0. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_JSON_INT)) return -2; /* also catches NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return -2;
    *out = u;
    return 0;
}

/* `what` names the field as the user sees it ("shape dimension 2", "data_offsets begin"). */
static mrt_status bad_uint(const char *path, const char *name, const char *what, const cJSON *v,
                           int why)
{
    if (why == -1)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s': %s is not a number", path,
                        name, what);
    return mrt_fail(MRT_ERR_FORMAT,
                    "safetensors: %s: tensor '%s': %s is %.15g, not a non-negative integer", path,
                    name, what, v->valuedouble);
}

static mrt_status parse_dtype(const char *path, const char *name, const cJSON *dtype, mrt_dtype *out)
{
    if (!dtype)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s' has no 'dtype'", path, name);
    if (!cJSON_IsString(dtype) || !dtype->valuestring)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s': 'dtype' is not a string",
                        path, name);
    const char *s = dtype->valuestring;
    if (strcmp(s, "F32") == 0) { *out = MRT_F32; return MRT_OK; }
    if (strcmp(s, "I64") == 0) { *out = MRT_I64; return MRT_OK; }
    for (int i = 0; st_other_dtypes[i]; i++)
        if (strcmp(s, st_other_dtypes[i]) == 0)
            return mrt_fail(MRT_ERR_DTYPE,
                            "safetensors: %s: tensor '%s' has unsupported dtype '%s' "
                            "(supported: F32, I64)", path, name, s);
    return mrt_fail(MRT_ERR_DTYPE,
                    "safetensors: %s: tensor '%s' has unknown dtype '%s' (supported: F32, I64)",
                    path, name, s);
}

/* Checks one header entry against the data buffer size; fills *e. */
static mrt_status parse_entry(const char *path, const cJSON *item, uint64_t data_size, st_entry *e)
{
    const char *name = item->string;
    mrt_status st;
    e->name = name;
    if (!cJSON_IsObject(item))
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s' is not a JSON object",
                        path, name);

    st = parse_dtype(path, name, cJSON_GetObjectItemCaseSensitive(item, "dtype"), &e->dtype);
    if (st != MRT_OK) return st;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!shape)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s' has no 'shape'", path, name);
    if (!cJSON_IsArray(shape))
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s': 'shape' is not a JSON array",
                        path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > MRT_MAX_DIMS)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: tensor '%s' has %d dimensions (machrt supports at most %d)",
                        path, name, nd, MRT_MAX_DIMS);
    e->ndim = nd;
    /* numel is bounded by the byte count check below, but a zero-sized
     * tensor can still carry huge dims; `extent` (zeros counted as 1) keeps
     * every stride the core derives from the shape representable. */
    uint64_t numel = 1, extent = 1;
    int d = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        uint64_t dim = 0;
        int why = json_uint(v, &dim);
        if (why != 0) {
            char what[48];
            snprintf(what, sizeof what, "shape dimension %d", d + 1); /* 1-based, as in Lua */
            return bad_uint(path, name, what, v, why);
        }
        if (__builtin_mul_overflow(extent, dim ? dim : 1, &extent) ||
            extent > (uint64_t)INT64_MAX / 8)
            return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s': shape is too large",
                            path, name);
        numel *= dim; /* <= extent, so no overflow */
        e->shape[d] = (int64_t)dim;
    }
    uint64_t nbytes = numel * mrt_dtype_size(e->dtype); /* extent <= INT64_MAX / 8 */

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!offs)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: tensor '%s' has no 'data_offsets'",
                        path, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': 'data_offsets' is not a JSON array "
                        "[begin, end]", path, name);
    uint64_t be[2] = {0, 0};
    d = 0;
    for (const cJSON *v = offs->child; v; v = v->next, d++) {
        int why = json_uint(v, &be[d]);
        if (why != 0)
            return bad_uint(path, name, d ? "data_offsets end" : "data_offsets begin", v, why);
    }
    e->begin = be[0];
    e->end = be[1];
    if (e->begin > e->end)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] begin after "
                        "they end", path, name,
                        (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] run past the "
                        "end of the %llu-byte data buffer", path, name,
                        (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)data_size);
    if (e->end - e->begin != nbytes) {
        char sbuf[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: tensor '%s': shape %s of %s needs %llu bytes but "
                        "data_offsets [%llu, %llu] span %llu", path, name,
                        mrt_shape_str(e->ndim, e->shape, sbuf, sizeof sbuf),
                        st_dtype_tag(e->dtype), (unsigned long long)nbytes,
                        (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)(e->end - e->begin));
    }
    return MRT_OK;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

/* File order; ties (zero-sized tensors) by name so the result is deterministic. */
static int cmp_entry_offset(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static mrt_status check_metadata(const char *path, const cJSON *meta)
{
    if (cJSON_IsNull(meta)) return MRT_OK; /* the reference library reads null as "none" */
    if (!cJSON_IsObject(meta))
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: '__metadata__' is not a JSON object",
                        path);
    for (const cJSON *v = meta->child; v; v = v->next)
        if (!cJSON_IsString(v))
            return mrt_fail(MRT_ERR_FORMAT,
                            "safetensors: %s: '__metadata__' value for key '%s' is not a string",
                            path, v->string);
    return MRT_OK;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) { /* the file shrank after we measured it */
            errno = 0;
            return -1;
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static mrt_status read_fail(const char *path, const char *what)
{
    if (errno == 0)
        return mrt_fail(MRT_ERR_IO, "safetensors: %s: file ended while reading %s "
                        "(was it truncated meanwhile?)", path, what);
    return mrt_fail(MRT_ERR_IO, "safetensors: %s: cannot read %s: %s", path, what, strerror(errno));
}

/* Validates the parsed header; on success *entries (sorted by offset) and
 * *count describe every tensor and *meta points at "__metadata__" or NULL. */
static mrt_status check_header(const char *path, const cJSON *root, uint64_t data_size,
                               st_entry **entries, int *count, const cJSON **meta)
{
    *entries = NULL;
    *count = 0;
    *meta = NULL;
    if (!cJSON_IsObject(root))
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: header is not a JSON object", path);

    size_t n = 0;
    for (const cJSON *v = root->child; v; v = v->next) {
        if (strcmp(v->string, "__metadata__") != 0) {
            n++;
            continue;
        }
        if (*meta)
            return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: '__metadata__' appears twice", path);
        *meta = v;
        mrt_status st = check_metadata(path, v);
        if (st != MRT_OK) return st;
    }
    if (*meta && cJSON_IsNull(*meta)) *meta = NULL;
    if (n > (size_t)INT32_MAX)
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: too many tensors", path);

    st_entry *e = calloc(n ? n : 1, sizeof *e);
    if (!e) return mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory for the header", path);
    size_t i = 0;
    for (const cJSON *v = root->child; v; v = v->next) {
        if (v == *meta || strcmp(v->string, "__metadata__") == 0) continue;
        mrt_status st = parse_entry(path, v, data_size, &e[i++]);
        if (st != MRT_OK) {
            free(e);
            return st;
        }
    }

    qsort(e, n, sizeof *e, cmp_entry_name);
    for (i = 1; i < n; i++)
        if (strcmp(e[i - 1].name, e[i].name) == 0) {
            mrt_status st = mrt_fail(MRT_ERR_FORMAT,
                                     "safetensors: %s: tensor '%s' appears twice in the header",
                                     path, e[i].name);
            free(e);
            return st;
        }

    /* With ranges sorted by start, an overlap shows up as a start before the
     * furthest end seen so far. Empty ranges share no bytes with anything. */
    qsort(e, n, sizeof *e, cmp_entry_offset);
    const st_entry *far = NULL;
    for (i = 0; i < n; i++) {
        if (e[i].begin == e[i].end) continue;
        if (far && e[i].begin < far->end) {
            mrt_status st = mrt_fail(
                MRT_ERR_FORMAT,
                "safetensors: %s: tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and "
                "[%llu, %llu])", path, far->name, e[i].name, (unsigned long long)far->begin,
                (unsigned long long)far->end, (unsigned long long)e[i].begin,
                (unsigned long long)e[i].end);
            free(e);
            return st;
        }
        if (!far || e[i].end > far->end) far = &e[i];
    }
    *entries = e;
    *count = (int)n;
    return MRT_OK;
}

/* Reads and parses the JSON header; *root is the parsed tree. */
static mrt_status read_header(const char *path, int fd, uint64_t file_size, cJSON **root,
                              uint64_t *header_len)
{
    unsigned char len8[8];
    *root = NULL;
    if (file_size < 8)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: file is %llu bytes, shorter than the 8-byte header length",
                        path, (unsigned long long)file_size);
    if (pread_full(fd, len8, 8, 0) != 0) return read_fail(path, "the header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
    if (n > ST_MAX_HEADER)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: header length %llu exceeds the %llu-byte limit "
                        "(not a safetensors file?)", path, (unsigned long long)n, ST_MAX_HEADER);
    if (n > file_size - 8)
        return mrt_fail(MRT_ERR_FORMAT,
                        "safetensors: %s: header length %llu exceeds the file size (%llu bytes)",
                        path, (unsigned long long)n, (unsigned long long)file_size);
    *header_len = n;

    char *buf = malloc((size_t)n + 1);
    if (!buf) return mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory for the header", path);
    if (pread_full(fd, buf, (size_t)n, 8) != 0) {
        free(buf);
        return read_fail(path, "the header");
    }
    buf[n] = '\0';
    if (!utf8_valid((const unsigned char *)buf, (size_t)n)) {
        free(buf);
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: header is not valid UTF-8", path);
    }
    /* cJSON treats a NUL as whitespace between tokens and as the end of a
     * key, so one could hide or truncate entries; JSON never needs it raw. */
    if (memchr(buf, '\0', (size_t)n)) {
        free(buf);
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: header contains a NUL byte", path);
    }
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithLengthOpts(buf, (size_t)n, &end, 0);
    if (!json) {
        size_t at = end ? (size_t)(end - buf) : 0;
        free(buf);
        return mrt_fail(MRT_ERR_FORMAT, "safetensors: %s: header is not valid JSON (near byte %zu)",
                        path, at);
    }
    /* cJSON stops after the first value; only the writer's padding may follow. */
    for (const char *p = end; p < buf + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            size_t at = (size_t)(p - buf);
            cJSON_Delete(json);
            free(buf);
            return mrt_fail(MRT_ERR_FORMAT,
                            "safetensors: %s: header is not valid JSON (unexpected byte at %zu "
                            "after the JSON object)", path, at);
        }
    free(buf);
    *root = json;
    return MRT_OK;
}

static mrt_status load_fd(const char *path, int fd, mrt_named_tensor **out, int *n,
                          char **metadata_json)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return mrt_fail(MRT_ERR_IO, "safetensors: %s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return mrt_fail(MRT_ERR_IO, "safetensors: %s: not a regular file", path);
    uint64_t file_size = (uint64_t)sb.st_size;

    cJSON *root = NULL;
    uint64_t hlen = 0;
    mrt_status st = read_header(path, fd, file_size, &root, &hlen);
    if (st != MRT_OK) return st;

    st_entry *e = NULL;
    int count = 0;
    const cJSON *meta = NULL;
    mrt_named_tensor *res = NULL;
    st = check_header(path, root, file_size - 8 - hlen, &e, &count, &meta);
    if (st != MRT_OK) goto done;

    if (count > 0) {
        res = calloc((size_t)count, sizeof *res);
        if (!res) {
            st = mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory", path);
            goto done;
        }
    }
    for (int i = 0; i < count; i++) {
        res[i].name = str_dup(e[i].name);
        if (!res[i].name) {
            st = mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory", path);
            goto done;
        }
        /* Every byte is overwritten from the file; zeroing first would only
         * touch a checkpoint's worth of memory twice. */
        st = mrt_tensor_alloc_uninit(&res[i].tensor, e[i].dtype, e[i].ndim, e[i].shape);
        if (st != MRT_OK) goto done;
        size_t nbytes = (size_t)(e[i].end - e[i].begin);
        if (nbytes == 0) continue;
        char *dst = (char *)res[i].tensor.storage->data +
                    (size_t)res[i].tensor.offset * mrt_dtype_size(e[i].dtype);
        if (pread_full(fd, dst, nbytes, 8 + hlen + e[i].begin) != 0) {
            char what[64 + 256];
            snprintf(what, sizeof what, "tensor '%.256s'", e[i].name);
            st = read_fail(path, what);
            goto done;
        }
    }
    if (metadata_json && meta) {
        *metadata_json = json_print_malloc(meta);
        if (!*metadata_json) {
            st = mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory", path);
            goto done;
        }
    }
    *out = res;
    *n = count;
    res = NULL;

done:
    if (res) mrt_safetensors_free(res, count);
    free(e);
    cJSON_Delete(root);
    return st;
}

mrt_status mrt_safetensors_load(const char *path, mrt_named_tensor **out, int *n,
                                char **metadata_json)
{
    if (!path || !out || !n)
        return mrt_fail(MRT_ERR_ARG, "safetensors: load needs a path and output pointers");
    *out = NULL;
    *n = 0;
    if (metadata_json) *metadata_json = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mrt_fail(MRT_ERR_IO, "safetensors: cannot open %s: %s", path, strerror(errno));
    mrt_status st = load_fd(path, fd, out, n, metadata_json);
    close(fd);
    return st;
}

void mrt_safetensors_free(mrt_named_tensor *tensors, int n)
{
    if (!tensors) return;
    for (int i = 0; i < n; i++) {
        free(tensors[i].name);
        mrt_tensor_release(&tensors[i].tensor);
    }
    free(tensors);
}

/* ---- writer ----------------------------------------------------------- */

static int cmp_named_by_name(const void *a, const void *b)
{
    const mrt_named_tensor *x = *(const mrt_named_tensor *const *)a;
    const mrt_named_tensor *y = *(const mrt_named_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* The reference library's data order: larger dtypes first (so every tensor
 * stays aligned to its element size), then by name. Matching it makes our
 * files byte-identical to Python's for the same tensors. */
static int cmp_named_by_layout(const void *a, const void *b)
{
    const mrt_named_tensor *x = *(const mrt_named_tensor *const *)a;
    const mrt_named_tensor *y = *(const mrt_named_tensor *const *)b;
    size_t sx = mrt_dtype_size(x->tensor.dtype), sy = mrt_dtype_size(y->tensor.dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static mrt_status check_save_args(const char *path, const mrt_named_tensor *tensors, int n)
{
    for (int i = 0; i < n; i++) {
        const char *name = tensors[i].name;
        const mrt_tensor *t = &tensors[i].tensor;
        if (!name)
            return mrt_fail(MRT_ERR_ARG, "safetensors: %s: tensor #%d has no name", path, i + 1);
        if (strcmp(name, "__metadata__") == 0)
            return mrt_fail(MRT_ERR_ARG,
                            "safetensors: %s: '__metadata__' is reserved and cannot name a tensor",
                            path);
        if (!utf8_valid((const unsigned char *)name, strlen(name)))
            return mrt_fail(MRT_ERR_ARG, "safetensors: %s: tensor name '%s' is not valid UTF-8",
                            path, name);
        if (!t->storage)
            return mrt_fail(MRT_ERR_ARG, "safetensors: %s: tensor '%s' is empty (not allocated)",
                            path, name);
        if (t->dtype != MRT_F32 && t->dtype != MRT_I64)
            return mrt_fail(MRT_ERR_DTYPE, "safetensors: %s: tensor '%s' has unsupported dtype %d",
                            path, name, (int)t->dtype);
        if (t->storage->device != MRT_CPU)
            return mrt_fail(MRT_ERR_DEVICE,
                            "safetensors: %s: tensor '%s' is on %s; move it to the cpu to save it",
                            path, name, mrt_device_name(t->storage->device));
        if (t->ndim < 0 || t->ndim > MRT_MAX_DIMS)
            return mrt_fail(MRT_ERR_ARG, "safetensors: %s: tensor '%s' has %d dimensions", path,
                            name, t->ndim);
    }
    return MRT_OK;
}

/* Parses the caller's metadata: a JSON object whose values are all strings,
 * which is what the reference library (a map of string to string) accepts. */
static mrt_status parse_save_metadata(const char *path, const char *metadata_json, cJSON **out)
{
    *out = NULL;
    if (!metadata_json) return MRT_OK;
    if (!utf8_valid((const unsigned char *)metadata_json, strlen(metadata_json)))
        return mrt_fail(MRT_ERR_ARG, "safetensors: %s: metadata is not valid UTF-8", path);
    cJSON *meta = cJSON_ParseWithOpts(metadata_json, NULL, 1);
    if (!meta)
        return mrt_fail(MRT_ERR_ARG, "safetensors: %s: metadata is not valid JSON", path);
    mrt_status st = MRT_OK;
    if (!cJSON_IsObject(meta)) {
        st = mrt_fail(MRT_ERR_ARG, "safetensors: %s: metadata is not a JSON object", path);
        goto fail;
    }
    for (const cJSON *v = meta->child; v; v = v->next) {
        if (!cJSON_IsString(v)) {
            st = mrt_fail(MRT_ERR_ARG, "safetensors: %s: metadata value for key '%s' is not a string",
                          path, v->string);
            goto fail;
        }
        for (const cJSON *w = meta->child; w != v; w = w->next)
            if (strcmp(w->string, v->string) == 0) {
                st = mrt_fail(MRT_ERR_ARG, "safetensors: %s: metadata key '%s' appears twice",
                              path, v->string);
                goto fail;
            }
    }
    *out = meta;
    return MRT_OK;
fail:
    cJSON_Delete(meta);
    return st;
}

/* Integers as raw JSON text: cJSON prints numbers through doubles ("1e+15"),
 * which the reference library would reject for an integer field. */
static int add_uint(cJSON *arr, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    cJSON *x = cJSON_CreateRaw(buf);
    if (!x) return 0;
    if (!cJSON_AddItemToArray(arr, x)) {
        cJSON_Delete(x);
        return 0;
    }
    return 1;
}

static cJSON *entry_json(const mrt_tensor *t, uint64_t begin, uint64_t end)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (!cJSON_AddStringToObject(o, "dtype", st_dtype_tag(t->dtype))) goto fail;
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    if (!shape) goto fail;
    for (int d = 0; d < t->ndim; d++)
        if (!add_uint(shape, (uint64_t)t->shape[d])) goto fail;
    cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
    if (!offs || !add_uint(offs, begin) || !add_uint(offs, end)) goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* Builds the padded header text (metadata first, then tensors in `ord`). */
static mrt_status build_header(const char *path, const mrt_named_tensor **ord, int n, cJSON *meta,
                               char **text, size_t *len)
{
    *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        cJSON_Delete(meta);
        goto nomem;
    }
    if (meta && !cJSON_AddItemToObject(root, "__metadata__", meta)) {
        cJSON_Delete(meta);
        goto nomem_root;
    }
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        const mrt_tensor *t = &ord[i]->tensor;
        uint64_t nbytes = (uint64_t)mrt_tensor_numel(t) * mrt_dtype_size(t->dtype);
        cJSON *e = entry_json(t, pos, pos + nbytes);
        if (!e) goto nomem_root;
        if (!cJSON_AddItemToObject(root, ord[i]->name, e)) {
            cJSON_Delete(e);
            goto nomem_root;
        }
        pos += nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) goto nomem;
    size_t jlen = strlen(json);
    size_t padded = (jlen + 7) & ~(size_t)7;
    char *buf = malloc(padded ? padded : 1);
    if (!buf) {
        cJSON_free(json);
        goto nomem;
    }
    memcpy(buf, json, jlen);
    memset(buf + jlen, ' ', padded - jlen);
    cJSON_free(json);
    *text = buf;
    *len = padded;
    return MRT_OK;
nomem_root:
    cJSON_Delete(root);
nomem:
    return mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory building the header", path);
}

static mrt_status write_tensor(FILE *f, const char *tmp, const mrt_named_tensor *nt)
{
    const mrt_tensor *t = &nt->tensor;
    size_t esize = mrt_dtype_size(t->dtype);
    size_t nbytes = (size_t)mrt_tensor_numel(t) * esize;
    if (nbytes == 0) return MRT_OK;
    mrt_tensor tmpc = {0};
    const mrt_tensor *src = t;
    if (!mrt_tensor_is_contiguous(t)) {
        mrt_status st = mrt_tensor_clone(&tmpc, t);
        if (st != MRT_OK) return st;
        src = &tmpc;
    }
    const char *p = (const char *)src->storage->data + (size_t)src->offset * esize;
    size_t w = fwrite(p, 1, nbytes, f);
    mrt_tensor_release(&tmpc);
    if (w != nbytes)
        return mrt_fail(MRT_ERR_IO, "safetensors: cannot write %s (tensor '%s'): %s", tmp, nt->name,
                        strerror(errno));
    return MRT_OK;
}

/* Writes the whole file to `tmp`, flushed to disk so the rename that follows
 * publishes either the old file or the complete new one. */
static mrt_status write_file(const char *tmp, const char *header, size_t hlen,
                             const mrt_named_tensor **ord, int n)
{
    FILE *f = fopen(tmp, "wb");
    if (!f) return mrt_fail(MRT_ERR_IO, "safetensors: cannot create %s: %s", tmp, strerror(errno));
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    mrt_status st = MRT_OK;
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(header, 1, hlen, f) != hlen) {
        st = mrt_fail(MRT_ERR_IO, "safetensors: cannot write %s: %s", tmp, strerror(errno));
        goto close;
    }
    for (int i = 0; i < n && st == MRT_OK; i++) st = write_tensor(f, tmp, ord[i]);
    if (st == MRT_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = mrt_fail(MRT_ERR_IO, "safetensors: cannot write %s: %s", tmp, strerror(errno));
close:
    if (fclose(f) != 0 && st == MRT_OK)
        st = mrt_fail(MRT_ERR_IO, "safetensors: cannot write %s: %s", tmp, strerror(errno));
    return st;
}

mrt_status mrt_safetensors_save(const char *path, const mrt_named_tensor *tensors, int n,
                                const char *metadata_json)
{
    if (!path) return mrt_fail(MRT_ERR_ARG, "safetensors: save needs a path");
    if (n < 0 || (n > 0 && !tensors))
        return mrt_fail(MRT_ERR_ARG, "safetensors: %s: bad tensor list (n = %d)", path, n);
    mrt_status st = check_save_args(path, tensors, n);
    if (st != MRT_OK) return st;

    const mrt_named_tensor **ord = malloc((size_t)(n ? n : 1) * sizeof *ord);
    if (!ord) return mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory", path);
    for (int i = 0; i < n; i++) ord[i] = &tensors[i];
    qsort(ord, (size_t)n, sizeof *ord, cmp_named_by_name);
    for (int i = 1; i < n; i++)
        if (strcmp(ord[i - 1]->name, ord[i]->name) == 0) {
            st = mrt_fail(MRT_ERR_ARG, "safetensors: %s: duplicate tensor name '%s'", path,
                          ord[i]->name);
            free(ord);
            return st;
        }
    qsort(ord, (size_t)n, sizeof *ord, cmp_named_by_layout);

    cJSON *meta = NULL;
    char *header = NULL, *tmp = NULL;
    size_t hlen = 0;
    st = parse_save_metadata(path, metadata_json, &meta);
    if (st != MRT_OK) goto done;
    st = build_header(path, ord, n, meta, &header, &hlen); /* takes meta */
    if (st != MRT_OK) goto done;

    tmp = mrt_sys_temp_name(path);
    if (!tmp) {
        st = mrt_fail(MRT_ERR_NOMEM, "safetensors: %s: out of memory", path);
        goto done;
    }
    st = write_file(tmp, header, hlen, ord, n);
    if (st == MRT_OK && rename(tmp, path) != 0)
        st = mrt_fail(MRT_ERR_IO, "safetensors: cannot replace %s: %s", path, strerror(errno));
    if (st != MRT_OK) unlink(tmp);

done:
    free(tmp);
    free(header);
    free(ord);
    return st;
}
