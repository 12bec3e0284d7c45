/* Check suite for the safetensors reader and writer.
 *
 * Malformed files are written byte by byte here rather than produced by the
 * writer under test, and the file made by the official Python library
 * (tests/fixtures/python_written.safetensors, see gen_safetensors.py) is
 * checked against values recomputed from their defining formulas, so neither
 * direction can only agree with itself. Files go to a private directory under
 * /tmp made by main() and removed at the end. */
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "machrt/safetensors.h"

static char g_dir[64];

#define TPATH(var, name)    \
    char var[256];          \
    snprintf(var, sizeof var, "%s/%s", g_dir, (name))

/* ---- helpers ------------------------------------------------------------ */

#define OK(expr)                                                                       \
    do {                                                                               \
        mrt_status ok_st_ = (expr);                                                    \
        ck_assert_msg(ok_st_ == MRT_OK, "%s -> %d (%s)", #expr, (int)ok_st_,           \
                      mrt_last_error());                                               \
    } while (0)

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert(fwrite(p, 1, n, f) == n);
    ck_assert(fclose(f) == 0);
}

/* Whole file into a malloc'd buffer. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert(fseek(f, 0, SEEK_END) == 0);
    long len = ftell(f);
    ck_assert(len >= 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)len + 1);
    ck_assert(buf != NULL);
    ck_assert(fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A file whose first 8 bytes declare `declared` as the header length,
 * followed by `body` (blen bytes) as is. */
static void write_declared(const char *path, uint64_t declared, const void *body, size_t blen)
{
    unsigned char *buf = malloc(8 + blen);
    ck_assert(buf != NULL);
    put_u64le(buf, declared);
    if (blen) memcpy(buf + 8, body, blen);
    write_bytes(path, buf, 8 + blen);
    free(buf);
}

/* A well-formed container around `json` (padded with spaces to a multiple
 * of 8, as the reference writer does) and `dlen` data bytes. */
static void write_st(const char *path, const char *json, size_t dlen)
{
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    unsigned char *buf = calloc(1, 8 + padded + dlen + 1);
    ck_assert(buf != NULL);
    put_u64le(buf, padded);
    memcpy(buf + 8, json, jlen);
    memset(buf + 8 + jlen, ' ', padded - jlen);
    for (size_t i = 0; i < dlen; i++) buf[8 + padded + i] = (unsigned char)(i * 7 + 1);
    write_bytes(path, buf, 8 + padded + dlen);
    free(buf);
}

/* Load must fail with `code`, a message starting "safetensors: ", naming
 * the file and containing `needle`, and must leave the outputs cleared. */
static void expect_load_fail_at(const char *path, mrt_status code, const char *needle, int line)
{
    mrt_named_tensor *out = (mrt_named_tensor *)&out; /* garbage the call must clear */
    int n = -1;
    char *meta = (char *)&n;
    mrt_status st = mrt_safetensors_load(path, &out, &n, &meta);
    const char *msg = mrt_last_error();
    ck_assert_msg(st == code, "line %d: status %d, expected %d (msg: %s)", line, (int)st,
                  (int)code, msg);
    ck_assert_msg(strncmp(msg, "safetensors: ", 13) == 0, "line %d: message \"%s\"", line, msg);
    ck_assert_msg(strstr(msg, path) != NULL, "line %d: \"%s\" does not name the file", line, msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "line %d: \"%s\" does not mention \"%s\"", line,
                  msg, needle);
    ck_assert_msg(out == NULL && n == 0 && meta == NULL, "line %d: outputs not cleared", line);
}
#define EXPECT_LOAD_FAIL(path, code, needle) expect_load_fail_at((path), (code), (needle), __LINE__)

/* A header-only malformed case: write it, expect the failure. */
#define EXPECT_HEADER_FAIL(json, dlen, code, needle)          \
    do {                                                      \
        TPATH(p_, "bad.safetensors");                         \
        write_st(p_, (json), (dlen));                         \
        expect_load_fail_at(p_, (code), (needle), __LINE__);  \
    } while (0)

static const mrt_named_tensor *find(const mrt_named_tensor *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    ck_abort_msg("tensor '%s' not found", name);
    return NULL;
}

static void assert_shape(const mrt_tensor *t, mrt_dtype dtype, int ndim, const int64_t *shape)
{
    ck_assert_int_eq(t->dtype, dtype);
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++) ck_assert_int_eq(t->shape[d], shape[d]);
}

static const void *bytes_of(const mrt_tensor *t)
{
    return (const char *)t->storage->data + (size_t)t->offset * mrt_dtype_size(t->dtype);
}

static mrt_tensor alloc(mrt_dtype dtype, int ndim, const int64_t *shape)
{
    mrt_tensor t = {0};
    OK(mrt_tensor_alloc(&t, dtype, ndim, shape));
    return t;
}

static int dir_has_tmp_files(void)
{
    DIR *d = opendir(g_dir);
    ck_assert(d != NULL);
    int found = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

/* Float bit patterns a careless writer could damage: signed zero, NaN
 * payloads, infinities, subnormals; then pseudo-random bits. */
static void fill_f32_bits(mrt_tensor *t, uint32_t seed)
{
    static const uint32_t special[] = {0x00000000u, 0x80000000u, 0x7fc00001u, 0xffa5a5a5u,
                                       0x7f800000u, 0xff800000u, 0x00000001u, 0x807fffffu,
                                       0x3f800000u, 0x7f7fffffu};
    int64_t n = mrt_tensor_numel(t);
    uint32_t *p = (uint32_t *)t->storage->data;
    uint32_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (size_t)i < sizeof special / sizeof *special ? special[i] ^ (seed & 1) : s;
    }
}

/* ---- round trips ---------------------------------------------------------- */

START_TEST(test_roundtrip_f32_shapes)
{
    TPATH(path, "f32.safetensors");
    static const int64_t s_vec[] = {5}, s_mat[] = {2, 3}, s_cube[] = {2, 3, 4},
                         s_deep[] = {1, 2, 1, 2, 1, 2, 1, 2}, s_zero[] = {0, 3}, s_one = 1;
    mrt_named_tensor in[] = {
        {"scalar", alloc(MRT_F32, 0, &s_one)}, {"vec", alloc(MRT_F32, 1, s_vec)},
        {"mat", alloc(MRT_F32, 2, s_mat)},     {"cube", alloc(MRT_F32, 3, s_cube)},
        {"deep", alloc(MRT_F32, 8, s_deep)},   {"zero", alloc(MRT_F32, 2, s_zero)},
    };
    int nin = (int)(sizeof in / sizeof *in);
    for (int i = 0; i < nin; i++) fill_f32_bits(&in[i].tensor, (uint32_t)i + 11);
    OK(mrt_safetensors_save(path, in, nin, NULL));

    mrt_named_tensor *out = NULL;
    int n = 0;
    char *meta = (char *)&n;
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_int_eq(n, nin);
    ck_assert_ptr_null(meta);
    for (int i = 0; i < nin; i++) {
        const mrt_tensor *a = &in[i].tensor, *b = &find(out, n, in[i].name)->tensor;
        assert_shape(b, MRT_F32, a->ndim, a->shape);
        ck_assert(mrt_tensor_is_contiguous(b));
        size_t nbytes = (size_t)mrt_tensor_numel(a) * 4;
        ck_assert_msg(nbytes == 0 || memcmp(bytes_of(a), bytes_of(b), nbytes) == 0,
                      "tensor '%s' differs", in[i].name);
    }
    /* A 0-d tensor is one element with no dims, not an empty one. */
    ck_assert_int_eq(find(out, n, "scalar")->tensor.ndim, 0);
    ck_assert_int_eq(mrt_tensor_numel(&find(out, n, "scalar")->tensor), 1);
    mrt_safetensors_free(out, n);
    for (int i = 0; i < nin; i++) mrt_tensor_release(&in[i].tensor);
}
END_TEST

START_TEST(test_roundtrip_i64)
{
    TPATH(path, "i64.safetensors");
    static const int64_t s_vec[] = {6}, s_mat[] = {3, 2}, s_one = 1;
    mrt_named_tensor in[] = {
        {"count", alloc(MRT_I64, 0, &s_one)},
        {"edges", alloc(MRT_I64, 1, s_vec)},
        {"labels", alloc(MRT_I64, 2, s_mat)},
    };
    *mrt_i64(&in[0].tensor) = -42;
    const int64_t edges[] = {INT64_MIN, INT64_MAX, -1, 0, 1, (int64_t)1 << 53 | 1};
    memcpy(mrt_i64(&in[1].tensor), edges, sizeof edges);
    for (int i = 0; i < 6; i++) mrt_i64(&in[2].tensor)[i] = (int64_t)i * 0x0102030405060708LL;
    OK(mrt_safetensors_save(path, in, 3, NULL));

    mrt_named_tensor *out = NULL;
    int n = 0;
    OK(mrt_safetensors_load(path, &out, &n, NULL));
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        const mrt_tensor *a = &in[i].tensor, *b = &find(out, n, in[i].name)->tensor;
        assert_shape(b, MRT_I64, a->ndim, a->shape);
        ck_assert(memcmp(bytes_of(a), bytes_of(b), (size_t)mrt_tensor_numel(a) * 8) == 0);
    }
    ck_assert(*mrt_i64(&find(out, n, "count")->tensor) == -42);
    ck_assert(mrt_i64(&find(out, n, "edges")->tensor)[0] == INT64_MIN);
    mrt_safetensors_free(out, n);
    for (int i = 0; i < 3; i++) mrt_tensor_release(&in[i].tensor);
}
END_TEST

/* Strided views are written as their logical (row-major) contents. */
START_TEST(test_roundtrip_views)
{
    TPATH(path, "views.safetensors");
    static const int64_t s34[] = {3, 4};
    mrt_tensor base = alloc(MRT_F32, 2, s34), ibase = alloc(MRT_I64, 2, s34);
    float *b = mrt_f32(&base);
    for (int i = 0; i < 12; i++) {
        b[i] = (float)i + 0.25f;
        mrt_i64(&ibase)[i] = -1000 * i;
    }
    mrt_tensor tv = {0}, nv = {0}, sv = {0}, s0 = {0}, itv = {0};
    OK(mrt_view_transpose(&base, 0, 1, &tv)); /* 4x3, strides (1, 4) */
    OK(mrt_view_narrow(&base, 1, 1, 2, &nv)); /* 3x2, offset 1 */
    OK(mrt_view_select(&base, 0, 2, &sv));    /* row 2: {4}, offset 8 */
    OK(mrt_view_select(&sv, 0, 3, &s0));      /* 0-d view, offset 11 */
    OK(mrt_view_transpose(&ibase, 0, 1, &itv));
    ck_assert(!mrt_tensor_is_contiguous(&tv) && !mrt_tensor_is_contiguous(&nv));
    int refs = base.storage->refcount;

    mrt_named_tensor in[] = {{"t", tv}, {"narrow", nv}, {"row", sv}, {"s0", s0}, {"it", itv}};
    OK(mrt_safetensors_save(path, in, 5, NULL));
    ck_assert_int_eq(base.storage->refcount, refs); /* no copy left behind */

    mrt_named_tensor *out = NULL;
    int n = 0;
    OK(mrt_safetensors_load(path, &out, &n, NULL));
    ck_assert_int_eq(n, 5);
    const float *t = mrt_f32(&find(out, n, "t")->tensor);
    const float *nr = mrt_f32(&find(out, n, "narrow")->tensor);
    const float *row = mrt_f32(&find(out, n, "row")->tensor);
    const int64_t *it = mrt_i64(&find(out, n, "it")->tensor);
    assert_shape(&find(out, n, "t")->tensor, MRT_F32, 2, (const int64_t[]){4, 3});
    assert_shape(&find(out, n, "narrow")->tensor, MRT_F32, 2, (const int64_t[]){3, 2});
    assert_shape(&find(out, n, "row")->tensor, MRT_F32, 1, (const int64_t[]){4});
    assert_shape(&find(out, n, "s0")->tensor, MRT_F32, 0, NULL);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            ck_assert(t[i * 3 + j] == b[j * 4 + i]);
            ck_assert(it[i * 3 + j] == -1000 * (j * 4 + i));
        }
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 2; k++) ck_assert(nr[r * 2 + k] == b[r * 4 + 1 + k]);
    for (int c = 0; c < 4; c++) ck_assert(row[c] == b[8 + c]);
    ck_assert(*mrt_f32(&find(out, n, "s0")->tensor) == 11.25f);
    mrt_safetensors_free(out, n);
    mrt_tensor_release(&tv);
    mrt_tensor_release(&nv);
    mrt_tensor_release(&sv);
    mrt_tensor_release(&s0);
    mrt_tensor_release(&itv);
    mrt_tensor_release(&base);
    mrt_tensor_release(&ibase);
}
END_TEST

START_TEST(test_metadata_roundtrip)
{
    TPATH(path, "meta.safetensors");
    static const int64_t s2[] = {2};
    mrt_named_tensor in[] = {{"w", alloc(MRT_F32, 1, s2)}};
    const char *meta_in =
        "{\"format\":\"pt\",\"epoch\":\"12\",\"note\":\"quote \\\" slash \\\\ caf\xc3\xa9\"}";
    OK(mrt_safetensors_save(path, in, 1, meta_in));

    mrt_named_tensor *out = NULL;
    int n = 0;
    char *meta = NULL;
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_ptr_nonnull(meta);
    cJSON *got = cJSON_Parse(meta), *want = cJSON_Parse(meta_in);
    ck_assert(got && want);
    ck_assert_int_eq(cJSON_GetArraySize(got), 3);
    for (cJSON *v = want->child; v; v = v->next) {
        cJSON *g = cJSON_GetObjectItemCaseSensitive(got, v->string);
        ck_assert_msg(cJSON_IsString(g), "metadata key '%s' lost", v->string);
        ck_assert_str_eq(g->valuestring, v->valuestring);
    }
    cJSON_Delete(got);
    cJSON_Delete(want);
    free(meta);
    mrt_safetensors_free(out, n);

    /* An empty metadata object survives as one; a file without any gives NULL. */
    OK(mrt_safetensors_save(path, in, 1, "{}"));
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_str_eq(meta, "{}");
    free(meta);
    mrt_safetensors_free(out, n);
    OK(mrt_safetensors_save(path, in, 1, NULL));
    meta = (char *)&n;
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_ptr_null(meta);
    mrt_safetensors_free(out, n);
    mrt_tensor_release(&in[0].tensor);
}
END_TEST

/* The layout the reference library produces: header padded to 8 bytes,
 * larger dtypes first, then by name, data packed with no gaps. */
START_TEST(test_header_layout)
{
    TPATH(path, "layout.safetensors");
    static const int64_t s3[] = {3}, s5[] = {5}, s1 = 1;
    mrt_named_tensor in[] = {
        {"zeta", alloc(MRT_F32, 1, s3)},  {"b.weight", alloc(MRT_I64, 1, s5)},
        {"alpha", alloc(MRT_F32, 0, &s1)}, {"a.idx", alloc(MRT_I64, 1, s3)},
        {"mid", alloc(MRT_F32, 1, s5)},
    };
    OK(mrt_safetensors_save(path, in, 5, "{\"k\":\"v\"}"));
    size_t len = 0;
    unsigned char *buf = read_bytes(path, &len);
    ck_assert(len >= 8);
    uint64_t hlen = get_u64le(buf);
    ck_assert_msg((8 + hlen) % 8 == 0, "header length %llu not aligned", (unsigned long long)hlen);
    ck_assert(8 + hlen <= len);
    char *hdr = malloc(hlen + 1);
    memcpy(hdr, buf + 8, hlen);
    hdr[hlen] = '\0';
    ck_assert(hdr[0] == '{');
    size_t jend = strlen(hdr);
    while (jend > 0 && hdr[jend - 1] == ' ') jend--;
    ck_assert(hlen - jend < 8); /* only the padding is spaces */
    ck_assert(strncmp(hdr, "{\"__metadata__\":", 16) == 0);

    cJSON *root = cJSON_Parse(hdr);
    ck_assert_ptr_nonnull(root);
    const char *order[] = {"a.idx", "b.weight", "alpha", "mid", "zeta"};
    const uint64_t sizes[] = {24, 40, 4, 20, 12};
    uint64_t pos = 0;
    for (int i = 0; i < 5; i++) {
        cJSON *e = cJSON_GetObjectItemCaseSensitive(root, order[i]);
        ck_assert_ptr_nonnull(e);
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        ck_assert_int_eq(cJSON_GetArraySize(offs), 2);
        ck_assert_msg((uint64_t)cJSON_GetArrayItem(offs, 0)->valuedouble == pos,
                      "'%s' begins at %g, expected %llu", order[i],
                      cJSON_GetArrayItem(offs, 0)->valuedouble, (unsigned long long)pos);
        pos += sizes[i];
        ck_assert((uint64_t)cJSON_GetArrayItem(offs, 1)->valuedouble == pos);
        if (i < 2) ck_assert(((8 + hlen + pos - sizes[i]) % 8) == 0); /* I64 stays aligned */
    }
    ck_assert_uint_eq(len, 8 + hlen + pos);
    cJSON_Delete(root);
    free(hdr);
    free(buf);

    /* Loading returns tensors in file order. */
    mrt_named_tensor *out = NULL;
    int n = 0;
    OK(mrt_safetensors_load(path, &out, &n, NULL));
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < 5; i++) ck_assert_str_eq(out[i].name, order[i]);
    mrt_safetensors_free(out, n);
    for (int i = 0; i < 5; i++) mrt_tensor_release(&in[i].tensor);
}
END_TEST

START_TEST(test_deterministic_bytes)
{
    TPATH(p1, "det1.safetensors");
    TPATH(p2, "det2.safetensors");
    static const int64_t s4[] = {4}, s22[] = {2, 2};
    mrt_tensor a = alloc(MRT_F32, 1, s4), b = alloc(MRT_I64, 2, s22), c = alloc(MRT_F32, 2, s22);
    fill_f32_bits(&a, 3);
    fill_f32_bits(&c, 4);
    mrt_named_tensor x[] = {{"a", a}, {"b", b}, {"c", c}};
    mrt_named_tensor y[] = {{"c", c}, {"a", a}, {"b", b}};
    OK(mrt_safetensors_save(p1, x, 3, NULL));
    OK(mrt_safetensors_save(p2, y, 3, NULL));
    size_t n1, n2;
    unsigned char *b1 = read_bytes(p1, &n1), *b2 = read_bytes(p2, &n2);
    ck_assert(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
    mrt_tensor_release(&c);
}
END_TEST

START_TEST(test_empty_tensor_set)
{
    TPATH(path, "none.safetensors");
    OK(mrt_safetensors_save(path, NULL, 0, NULL));
    size_t len;
    unsigned char *buf = read_bytes(path, &len);
    ck_assert_uint_eq(len, 16);
    ck_assert(get_u64le(buf) == 8 && memcmp(buf + 8, "{}      ", 8) == 0);
    free(buf);
    mrt_named_tensor *out = (mrt_named_tensor *)&len;
    int n = -1;
    OK(mrt_safetensors_load(path, &out, &n, NULL));
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_null(out);
    mrt_safetensors_free(out, n);
}
END_TEST

/* ---- the writer's errors and atomic replacement ------------------------ */

static void expect_save_fail_at(const char *path, const mrt_named_tensor *t, int n,
                                const char *meta, mrt_status code, const char *needle, int line)
{
    mrt_status st = mrt_safetensors_save(path, t, n, meta);
    const char *msg = mrt_last_error();
    ck_assert_msg(st == code, "line %d: status %d, expected %d (msg: %s)", line, (int)st,
                  (int)code, msg);
    ck_assert_msg(strncmp(msg, "safetensors: ", 13) == 0 && strstr(msg, path) != NULL,
                  "line %d: message \"%s\" does not name %s", line, msg, path);
    ck_assert_msg(strstr(msg, needle) != NULL, "line %d: \"%s\" does not mention \"%s\"", line,
                  msg, needle);
}
#define EXPECT_SAVE_FAIL(path, t, n, meta, code, needle) \
    expect_save_fail_at((path), (t), (n), (meta), (code), (needle), __LINE__)

START_TEST(test_save_rejects_bad_input)
{
    TPATH(path, "keep.safetensors");
    static const int64_t s2[] = {2};
    mrt_tensor a = alloc(MRT_F32, 1, s2), b = alloc(MRT_I64, 1, s2);
    mrt_named_tensor good[] = {{"a", a}};
    OK(mrt_safetensors_save(path, good, 1, NULL));
    size_t len0;
    unsigned char *before = read_bytes(path, &len0);

    mrt_named_tensor dup[] = {{"x", a}, {"a", a}, {"x", b}};
    EXPECT_SAVE_FAIL(path, dup, 3, NULL, MRT_ERR_ARG, "duplicate tensor name 'x'");
    mrt_named_tensor reserved[] = {{"__metadata__", a}};
    EXPECT_SAVE_FAIL(path, reserved, 1, NULL, MRT_ERR_ARG, "'__metadata__' is reserved");
    mrt_named_tensor noname[] = {{NULL, a}};
    EXPECT_SAVE_FAIL(path, noname, 1, NULL, MRT_ERR_ARG, "has no name");
    mrt_named_tensor empty[] = {{"e", (mrt_tensor){0}}};
    EXPECT_SAVE_FAIL(path, empty, 1, NULL, MRT_ERR_ARG, "tensor 'e' is empty");
    mrt_named_tensor badutf[] = {{"bad\xff", a}};
    EXPECT_SAVE_FAIL(path, badutf, 1, NULL, MRT_ERR_ARG, "not valid UTF-8");
    EXPECT_SAVE_FAIL(path, good, 1, "{\"k\": ", MRT_ERR_ARG, "metadata is not valid JSON");
    EXPECT_SAVE_FAIL(path, good, 1, "{\"k\": \"v\"} junk", MRT_ERR_ARG, "not valid JSON");
    EXPECT_SAVE_FAIL(path, good, 1, "[\"v\"]", MRT_ERR_ARG, "metadata is not a JSON object");
    EXPECT_SAVE_FAIL(path, good, 1, "{\"k\": 3}", MRT_ERR_ARG, "value for key 'k' is not a string");
    EXPECT_SAVE_FAIL(path, good, 1, "{\"k\": \"1\", \"k\": \"2\"}", MRT_ERR_ARG,
                     "key 'k' appears twice");
    EXPECT_SAVE_FAIL(path, good, -1, NULL, MRT_ERR_ARG, "bad tensor list");

    /* None of the rejected calls touched the existing file. */
    size_t len1;
    unsigned char *after = read_bytes(path, &len1);
    ck_assert(len0 == len1 && memcmp(before, after, len0) == 0);
    ck_assert(!dir_has_tmp_files());
    free(before);
    free(after);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
}
END_TEST

START_TEST(test_save_io_errors)
{
    static const int64_t s2[] = {2};
    mrt_tensor a = alloc(MRT_F32, 1, s2);
    mrt_named_tensor good[] = {{"a", a}};
    TPATH(missing_dir, "no/such/dir/w.safetensors");
    EXPECT_SAVE_FAIL(missing_dir, good, 1, NULL, MRT_ERR_IO, "cannot create");

    /* rename() onto a directory fails after the data is written: the
     * temporary file must not be left behind. */
    TPATH(dir, "a_directory");
    ck_assert(mkdir(dir, 0700) == 0);
    EXPECT_SAVE_FAIL(dir, good, 1, NULL, MRT_ERR_IO, "cannot replace");
    ck_assert(!dir_has_tmp_files());
    ck_assert(rmdir(dir) == 0);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_save_replaces_existing)
{
    TPATH(path, "replace.safetensors");
    static const int64_t s2[] = {2}, s3[] = {3};
    mrt_tensor a = alloc(MRT_F32, 1, s2), b = alloc(MRT_I64, 1, s3);
    for (int i = 0; i < 3; i++) mrt_i64(&b)[i] = 5 + i;
    mrt_named_tensor first[] = {{"a", a}}, second[] = {{"b", b}};
    OK(mrt_safetensors_save(path, first, 1, NULL));
    OK(mrt_safetensors_save(path, second, 1, NULL));
    ck_assert(!dir_has_tmp_files());
    mrt_named_tensor *out = NULL;
    int n = 0;
    OK(mrt_safetensors_load(path, &out, &n, NULL));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(out[0].name, "b");
    ck_assert(mrt_i64(&out[0].tensor)[2] == 7);
    mrt_safetensors_free(out, n);
    mrt_tensor_release(&a);
    mrt_tensor_release(&b);
}
END_TEST

/* ---- the reader's errors ------------------------------------------------- */

START_TEST(test_load_io_errors)
{
    TPATH(missing, "does_not_exist.safetensors");
    EXPECT_LOAD_FAIL(missing, MRT_ERR_IO, "No such file");
    TPATH(dir, "dir.safetensors");
    ck_assert(mkdir(dir, 0700) == 0);
    EXPECT_LOAD_FAIL(dir, MRT_ERR_IO, "not a regular file");
    ck_assert(rmdir(dir) == 0);
}
END_TEST

START_TEST(test_load_short_file)
{
    TPATH(path, "short.safetensors");
    write_bytes(path, "", 0);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "shorter than the 8-byte header length");
    write_bytes(path, "\x08\0\0\0\0\0\0", 7);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "file is 7 bytes");
}
END_TEST

START_TEST(test_load_header_length)
{
    TPATH(path, "hlen.safetensors");
    const char *body = "{}      ";
    write_declared(path, 16, body, 8); /* one byte short of what it declares */
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "header length 16 exceeds the file size (16 bytes)");
    write_declared(path, UINT64_MAX, body, 8);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "exceeds the 100000000-byte limit");
    write_declared(path, 100000001, body, 8);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "header length 100000001 exceeds");
    write_declared(path, 0, body, 8);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "not valid JSON");
}
END_TEST

START_TEST(test_load_bad_json)
{
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"F32\",", 0, MRT_ERR_FORMAT, "not valid JSON");
    EXPECT_HEADER_FAIL("not json at all", 0, MRT_ERR_FORMAT, "not valid JSON");
    EXPECT_HEADER_FAIL("{} {}", 0, MRT_ERR_FORMAT, "after the JSON object");
    EXPECT_HEADER_FAIL("{\"w\" 1}", 0, MRT_ERR_FORMAT, "not valid JSON (near byte");
    EXPECT_HEADER_FAIL("{\"caf\xc3\"}", 0, MRT_ERR_FORMAT, "not valid UTF-8");
    EXPECT_HEADER_FAIL("{\"\xed\xa0\x80\": 1}", 0, MRT_ERR_FORMAT, "not valid UTF-8"); /* surrogate */
    /* A NUL inside the header must not end it early (cJSON would skip it). */
    TPATH(path, "nul.safetensors");
    write_declared(path, 8, "{}\0     ", 8);
    EXPECT_LOAD_FAIL(path, MRT_ERR_FORMAT, "header contains a NUL byte");
}
END_TEST

START_TEST(test_load_not_objects)
{
    EXPECT_HEADER_FAIL("[1, 2, 3]", 0, MRT_ERR_FORMAT, "header is not a JSON object");
    EXPECT_HEADER_FAIL("\"str\"", 0, MRT_ERR_FORMAT, "header is not a JSON object");
    EXPECT_HEADER_FAIL("{\"w\": 5}", 0, MRT_ERR_FORMAT, "tensor 'w' is not a JSON object");
    EXPECT_HEADER_FAIL("{\"w\": [\"F32\", [1], [0, 4]]}", 4, MRT_ERR_FORMAT,
                       "tensor 'w' is not a JSON object");
}
END_TEST

START_TEST(test_load_dtype_errors)
{
    EXPECT_HEADER_FAIL("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, MRT_ERR_FORMAT,
                       "tensor 'w' has no 'dtype'");
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                       MRT_ERR_FORMAT, "tensor 'w': 'dtype' is not a string");
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4,
                       MRT_ERR_DTYPE,
                       "tensor 'w' has unsupported dtype 'F16' (supported: F32, I64)");
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [0, 4]}}",
                       4, MRT_ERR_DTYPE, "unsupported dtype 'BF16'");
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                       MRT_ERR_DTYPE, "tensor 'w' has unknown dtype 'f32' (supported: F32, I64)");
}
END_TEST

START_TEST(test_load_shape_errors)
{
#define ENTRY(shape, offs) \
    "{\"w\": {\"dtype\": \"F32\", \"shape\": " shape ", \"data_offsets\": " offs "}}"
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
                       MRT_ERR_FORMAT, "tensor 'w' has no 'shape'");
    EXPECT_HEADER_FAIL(ENTRY("4", "[0, 16]"), 16, MRT_ERR_FORMAT,
                       "tensor 'w': 'shape' is not a JSON array");
    EXPECT_HEADER_FAIL(ENTRY("[2, -3]", "[0, 16]"), 16, MRT_ERR_FORMAT,
                       "tensor 'w': shape dimension 2 is -3, not a non-negative integer");
    EXPECT_HEADER_FAIL(ENTRY("[2.5]", "[0, 16]"), 16, MRT_ERR_FORMAT,
                       "shape dimension 1 is 2.5, not a non-negative integer");
    EXPECT_HEADER_FAIL(ENTRY("[1e300]", "[0, 16]"), 16, MRT_ERR_FORMAT,
                       "shape dimension 1 is 1e+300");
    EXPECT_HEADER_FAIL(ENTRY("[\"4\"]", "[0, 16]"), 16, MRT_ERR_FORMAT,
                       "shape dimension 1 is not a number");
    EXPECT_HEADER_FAIL(ENTRY("[null]", "[0, 16]"), 16, MRT_ERR_FORMAT, "is not a number");
    EXPECT_HEADER_FAIL(ENTRY("[1, 1, 1, 1, 1, 1, 1, 1, 1]", "[0, 4]"), 4, MRT_ERR_FORMAT,
                       "tensor 'w' has 9 dimensions (machrt supports at most 8)");
    /* Zero elements, but dims whose product no stride could hold. */
    EXPECT_HEADER_FAIL(ENTRY("[0, 4294967296, 4294967296]", "[0, 0]"), 0, MRT_ERR_FORMAT,
                       "tensor 'w': shape is too large");
    EXPECT_HEADER_FAIL(ENTRY("[2, 3]", "[0, 20]"), 24, MRT_ERR_FORMAT,
                       "tensor 'w': shape 2x3 of F32 needs 24 bytes but data_offsets [0, 20] "
                       "span 20");
    EXPECT_HEADER_FAIL(
        "{\"w\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [0, 4]}}", 8,
        MRT_ERR_FORMAT, "needs 8 bytes");
}
END_TEST

START_TEST(test_load_offset_errors)
{
    EXPECT_HEADER_FAIL("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, MRT_ERR_FORMAT,
                       "tensor 'w' has no 'data_offsets'");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "{\"begin\": 0}"), 4, MRT_ERR_FORMAT,
                       "'data_offsets' is not a JSON array [begin, end]");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[0, 4, 8]"), 8, MRT_ERR_FORMAT,
                       "'data_offsets' is not a JSON array");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[4]"), 8, MRT_ERR_FORMAT, "'data_offsets' is not a JSON array");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[-4, 0]"), 8, MRT_ERR_FORMAT,
                       "data_offsets begin is -4, not a non-negative integer");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[0, \"4\"]"), 8, MRT_ERR_FORMAT,
                       "data_offsets end is not a number");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[8, 4]"), 8, MRT_ERR_FORMAT,
                       "tensor 'w': data_offsets [8, 4] begin after they end");
    EXPECT_HEADER_FAIL(ENTRY("[4]", "[4, 20]"), 16, MRT_ERR_FORMAT,
                       "tensor 'w': data_offsets [4, 20] run past the end of the 16-byte data "
                       "buffer");
    EXPECT_HEADER_FAIL(ENTRY("[1]", "[0, 1e300]"), 16, MRT_ERR_FORMAT,
                       "data_offsets end is 1e+300");
#undef ENTRY
}
END_TEST

START_TEST(test_load_overlap_and_duplicates)
{
    EXPECT_HEADER_FAIL("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
                       24, MRT_ERR_FORMAT,
                       "tensors 'a' and 'b' overlap (data_offsets [0, 16] and [8, 24])");
    /* One range nested inside another, listed first. */
    EXPECT_HEADER_FAIL("{\"in\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
                       " \"out\": {\"dtype\": \"I64\", \"shape\": [3], \"data_offsets\": [0, 24]},"
                       " \"z\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [24, 28]}}",
                       28, MRT_ERR_FORMAT, "tensors 'out' and 'in' overlap");
    EXPECT_HEADER_FAIL("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"b\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
                       8, MRT_ERR_FORMAT, "overlap");
    EXPECT_HEADER_FAIL("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                       " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                       8, MRT_ERR_FORMAT, "tensor 'a' appears twice in the header");
}
END_TEST

START_TEST(test_load_metadata_errors)
{
    EXPECT_HEADER_FAIL("{\"__metadata__\": 5}", 0, MRT_ERR_FORMAT,
                       "'__metadata__' is not a JSON object");
    EXPECT_HEADER_FAIL("{\"__metadata__\": {\"epoch\": 3}}", 0, MRT_ERR_FORMAT,
                       "'__metadata__' value for key 'epoch' is not a string");
    EXPECT_HEADER_FAIL("{\"__metadata__\": {}, \"__metadata__\": {}}", 0, MRT_ERR_FORMAT,
                       "'__metadata__' appears twice");
}
END_TEST

/* What the reader tolerates on purpose (see safetensors.c): JSON whitespace
 * in the header, null metadata, zero-sized tensors, gaps between tensors and
 * bytes after the last one. None of these can make it read out of bounds. */
START_TEST(test_load_lenient_cases)
{
    TPATH(path, "lenient.safetensors");
    write_st(path,
             "\n { \"__metadata__\" : null ,\n"
             "   \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]},\n"
             "   \"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [16, 16]},\n"
             "   \"a\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8], \"x\": 1}"
             "}\n\t",
             24);
    mrt_named_tensor *out = NULL;
    int n = 0;
    char *meta = (char *)&n;
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_ptr_null(meta);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(out[0].name, "a");
    ck_assert_str_eq(out[1].name, "b");
    ck_assert_str_eq(out[2].name, "e");
    ck_assert_int_eq(mrt_tensor_numel(&out[2].tensor), 0);
    /* Data byte i is (i * 7 + 1) & 0xff (see write_st). */
    unsigned char want[8];
    for (int i = 0; i < 8; i++) want[i] = (unsigned char)(i * 7 + 1);
    ck_assert(memcmp(bytes_of(&out[0].tensor), want, 8) == 0);
    for (int i = 0; i < 4; i++) want[i] = (unsigned char)((12 + i) * 7 + 1);
    ck_assert(memcmp(bytes_of(&out[1].tensor), want, 4) == 0);
    mrt_safetensors_free(out, n);
}
END_TEST

/* ---- interoperability with the Python library ------------------------- */

static const char *fixture_path(void)
{
    static char buf[512];
    const char *dir = getenv("MACHRT_FIXTURES");
    snprintf(buf, sizeof buf, "%s/python_written.safetensors", dir ? dir : "tests/fixtures");
    return buf;
}

/* The fixture's tensors recomputed from the formulas documented in
 * tests/fixtures/gen_safetensors.py, in the reference library's file order. */
#define N_PY 7
static void python_expected(mrt_named_tensor *t)
{
    static const int64_t s_weight[] = {3, 4}, s_bias[] = {4}, s_conv[] = {2, 1, 3, 3},
                         s_steps[] = {2, 3}, s_ids[] = {5}, s_empty[] = {0, 3}, s_one = 1;
    t[0] = (mrt_named_tensor){"ids", alloc(MRT_I64, 1, s_ids)};
    t[1] = (mrt_named_tensor){"steps", alloc(MRT_I64, 2, s_steps)};
    t[2] = (mrt_named_tensor){"bias", alloc(MRT_F32, 1, s_bias)};
    t[3] = (mrt_named_tensor){"empty", alloc(MRT_F32, 2, s_empty)};
    t[4] = (mrt_named_tensor){"layer1.0.conv1.weight", alloc(MRT_F32, 4, s_conv)};
    t[5] = (mrt_named_tensor){"scale", alloc(MRT_F32, 0, &s_one)};
    t[6] = (mrt_named_tensor){"weight", alloc(MRT_F32, 2, s_weight)};
    for (int64_t i = 0; i < 5; i++) mrt_i64(&t[0].tensor)[i] = i * i - 7;
    for (int64_t i = 0; i < 6; i++) mrt_i64(&t[1].tensor)[i] = (i - 3) * 1000000000000LL;
    for (int i = 0; i < 4; i++) mrt_f32(&t[2].tensor)[i] = (float)(i + 1) / 3.0f;
    for (int i = 0; i < 18; i++) mrt_f32(&t[4].tensor)[i] = (float)i / 8.0f - 1.0f;
    *mrt_f32(&t[5].tensor) = 3.25f;
    for (int i = 0; i < 12; i++) mrt_f32(&t[6].tensor)[i] = (float)i * 0.5f - 2.0f;
}

START_TEST(test_python_written_file)
{
    const char *path = fixture_path();
    mrt_named_tensor want[N_PY];
    python_expected(want);
    mrt_named_tensor *out = NULL;
    int n = 0;
    char *meta = NULL;
    OK(mrt_safetensors_load(path, &out, &n, &meta));
    ck_assert_int_eq(n, N_PY);
    for (int i = 0; i < N_PY; i++) {
        const mrt_tensor *w = &want[i].tensor, *g = &out[i].tensor;
        ck_assert_str_eq(out[i].name, want[i].name); /* file order */
        assert_shape(g, w->dtype, w->ndim, w->shape);
        size_t nbytes = (size_t)mrt_tensor_numel(w) * mrt_dtype_size(w->dtype);
        ck_assert_msg(nbytes == 0 || memcmp(bytes_of(g), bytes_of(w), nbytes) == 0,
                      "values of '%s' differ", want[i].name);
    }
    ck_assert(mrt_f32(&out[2].tensor)[0] == 1.0f / 3.0f);
    ck_assert(mrt_i64(&out[1].tensor)[0] == -3000000000000LL);
    cJSON *m = cJSON_Parse(meta);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "format")->valuestring, "np");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "producer")->valuestring,
                     "gen_safetensors.py");
    cJSON_Delete(m);
    free(meta);
    mrt_safetensors_free(out, n);

    /* Our writer lays the same tensors out exactly as the reference library
     * did: same data bytes in the same places. (The headers may differ only
     * in metadata key order, which the reference leaves unspecified.) */
    TPATH(ours, "ours.safetensors");
    OK(mrt_safetensors_save(ours, want, N_PY, "{\"format\":\"np\",\"producer\":\"gen_safetensors.py\"}"));
    size_t na, nb;
    unsigned char *a = read_bytes(path, &na), *b = read_bytes(ours, &nb);
    uint64_t ha = get_u64le(a), hb = get_u64le(b);
    ck_assert_uint_eq(ha, hb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(a + 8 + ha, b + 8 + hb, na - 8 - ha) == 0);
    char *ja = strndup((char *)a + 8, ha), *jb = strndup((char *)b + 8, hb);
    cJSON *ra = cJSON_Parse(ja), *rb = cJSON_Parse(jb);
    ck_assert(ra && rb);
    for (int i = 0; i < N_PY; i++) {
        cJSON *ea = cJSON_GetObjectItemCaseSensitive(ra, want[i].name);
        cJSON *eb = cJSON_GetObjectItemCaseSensitive(rb, want[i].name);
        ck_assert_msg(cJSON_Compare(ea, eb, 1), "entry '%s' differs from the reference",
                      want[i].name);
    }
    cJSON_Delete(ra);
    cJSON_Delete(rb);
    free(ja);
    free(jb);
    free(a);
    free(b);
    for (int i = 0; i < N_PY; i++) mrt_tensor_release(&want[i].tensor);
}
END_TEST

/* ---- runner ----------------------------------------------------------- */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) {
            remove_tree(p);
            rmdir(p);
        }
    }
    closedir(d);
}

/* ---- checksum ------------------------------------------------------------ */

/* The byte stream mrt_tensors_sha256 documents, laid out here field by field
 * (little-endian lengths and sizes), hashed with libcrypto directly. */
static void le64(unsigned char **p, uint64_t v)
{
    for (int i = 0; i < 8; i++) *(*p)++ = (unsigned char)(v >> (8 * i));
}

static void field(unsigned char **p, const void *bytes, size_t n)
{
    le64(p, n);
    memcpy(*p, bytes, n);
    *p += n;
}

START_TEST(test_checksum_matches_the_documented_stream)
{
    static const int64_t s2[] = {2}, s23[] = {2, 3};
    mrt_tensor w = alloc(MRT_F32, 1, s2), base = alloc(MRT_F32, 2, s23), tv = {0};
    mrt_f32(&w)[0] = 1.5f;
    mrt_f32(&w)[1] = -2.0f;
    for (int i = 0; i < 6; i++) mrt_f32(&base)[i] = (float)i;
    OK(mrt_view_transpose(&base, 0, 1, &tv)); /* 3x2, not contiguous */
    mrt_named_tensor in[] = {{"w", w}, {"a", tv}};
    const char *keys[] = {"z", "k"}, *values[] = {"1", "v"};
    char hex[MRT_DIGEST_HEX];
    OK(mrt_tensors_sha256(in, 2, keys, values, 2, hex));

    unsigned char stream[512], *p = stream;
    float at[6] = {0, 3, 1, 4, 2, 5}; /* the transpose, row by row */
    le64(&p, 2);
    field(&p, "a", 1);
    le64(&p, (uint64_t)MRT_F32);
    le64(&p, 2);
    le64(&p, 3);
    le64(&p, 2);
    field(&p, at, sizeof at);
    field(&p, "w", 1);
    le64(&p, (uint64_t)MRT_F32);
    le64(&p, 1);
    le64(&p, 2);
    field(&p, mrt_f32(&w), 2 * sizeof(float));
    le64(&p, 2);
    field(&p, "k", 1);
    field(&p, "v", 1);
    field(&p, "z", 1);
    field(&p, "1", 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ck_assert(EVP_Digest(stream, (size_t)(p - stream), md, &len, EVP_sha256(), NULL));
    char want[MRT_DIGEST_HEX];
    for (unsigned int i = 0; i < len; i++) snprintf(want + 2 * i, 3, "%02x", md[i]);
    ck_assert_str_eq(hex, want);

    /* One changed bit of one value, or of the metadata, changes it. */
    mrt_f32(&w)[1] = -2.0000002f;
    char other[MRT_DIGEST_HEX];
    OK(mrt_tensors_sha256(in, 2, keys, values, 2, other));
    ck_assert_str_ne(hex, other);
    mrt_f32(&w)[1] = -2.0f;
    const char *values2[] = {"2", "v"};
    OK(mrt_tensors_sha256(in, 2, keys, values2, 2, other));
    ck_assert_str_ne(hex, other);
    mrt_tensor_release(&tv);
    mrt_tensor_release(&base);
    mrt_tensor_release(&w);
}
END_TEST

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/machrt_st_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("safetensors");
    TCase *rt = tcase_create("roundtrip");
    tcase_add_test(rt, test_roundtrip_f32_shapes);
    tcase_add_test(rt, test_roundtrip_i64);
    tcase_add_test(rt, test_roundtrip_views);
    tcase_add_test(rt, test_metadata_roundtrip);
    tcase_add_test(rt, test_header_layout);
    tcase_add_test(rt, test_deterministic_bytes);
    tcase_add_test(rt, test_empty_tensor_set);
    tcase_add_test(rt, test_checksum_matches_the_documented_stream);
    suite_add_tcase(s, rt);

    TCase *wr = tcase_create("writer errors");
    tcase_add_test(wr, test_save_rejects_bad_input);
    tcase_add_test(wr, test_save_io_errors);
    tcase_add_test(wr, test_save_replaces_existing);
    suite_add_tcase(s, wr);

    TCase *rd = tcase_create("reader errors");
    tcase_add_test(rd, test_load_io_errors);
    tcase_add_test(rd, test_load_short_file);
    tcase_add_test(rd, test_load_header_length);
    tcase_add_test(rd, test_load_bad_json);
    tcase_add_test(rd, test_load_not_objects);
    tcase_add_test(rd, test_load_dtype_errors);
    tcase_add_test(rd, test_load_shape_errors);
    tcase_add_test(rd, test_load_offset_errors);
    tcase_add_test(rd, test_load_overlap_and_duplicates);
    tcase_add_test(rd, test_load_metadata_errors);
    tcase_add_test(rd, test_load_lenient_cases);
    suite_add_tcase(s, rd);

    TCase *py = tcase_create("python interop");
    tcase_add_test(py, test_python_written_file);
    suite_add_tcase(s, py);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_tree(g_dir);
    rmdir(g_dir);
    return failed ? 1 : 0;
}
