/* Helpers shared by the tensor-core Check suites.
 *
 * Everything here reads tensors through shape/stride/offset computed by the
 * test itself, never through library helpers, so a bug in the library's own
 * indexing cannot make a wrong result look right. The pseudo-random source is
 * a local LCG for the same reason: test data must not depend on the library
 * RNG under test, and must be identical on every run and platform. */
#ifndef MACHRT_TESTS_CHECK_UTIL_H
#define MACHRT_TESTS_CHECK_UTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "machrt/tensor.h"

/* Shape literal: `mrt_tensor_alloc(&t, MRT_F32, TU_SHAPE(2, 3))`. The count
 * is derived from the literal so the two can never disagree. */
#define TU_SHAPE(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}

/* Test cases this machine cannot run (a CPU feature it lacks, a data folder
 * that is not there) are left out of the suite and said on one line, which
 * tests/run_c.sh counts as skipped: a case that returns early would count
 * as passed. */
static inline void tu_skip(int cases, const char *why)
{
    printf("SKIP %d: %s\n", cases, why);
    fflush(stdout);
}

/* Allocates `t` (which must be empty) or fails the current test. */
#define TU_ALLOC(t, dtype, ...) tu_alloc_or_fail((t), (dtype), TU_SHAPE(__VA_ARGS__))

/* Asserts a call succeeded, showing the library's message when it did not:
 * a bare status code says nothing about which shape was rejected. */
#define TU_OK(expr)                                                                   \
    do {                                                                              \
        mrt_status tu_st_ = (expr);                                                   \
        ck_assert_msg(tu_st_ == MRT_OK, "%s -> %d (%s)", #expr, (int)tu_st_,          \
                      mrt_last_error());                                              \
    } while (0)

/* Asserts a call failed with `code` and left a non-empty message. */
#define TU_FAILS(code, expr)                                                          \
    do {                                                                              \
        mrt_status tu_st_ = (expr);                                                   \
        ck_assert_msg(tu_st_ == (code), "%s -> %d, expected %d (msg: %s)", #expr,     \
                      (int)tu_st_, (int)(code), mrt_last_error());                    \
        ck_assert_msg(mrt_last_error()[0] != '\0', "%s: empty error message", #expr); \
    } while (0)

/* Asserts a call failed with any code (for contracts that only say "error"). */
#define TU_FAILS_ANY(expr)                                                            \
    do {                                                                              \
        mrt_status tu_st_ = (expr);                                                   \
        ck_assert_msg(tu_st_ != MRT_OK, "%s unexpectedly succeeded", #expr);          \
        ck_assert_msg(mrt_last_error()[0] != '\0', "%s: empty error message", #expr); \
    } while (0)

/* Asserts the last error message mentions `needle`. */
#define TU_MSG_HAS(needle)                                                            \
    ck_assert_msg(strstr(mrt_last_error(), (needle)) != NULL,                         \
                  "error message \"%s\" does not mention \"%s\"", mrt_last_error(),   \
                  (needle))

static inline void tu_alloc_or_fail(mrt_tensor *t, mrt_dtype dtype, int ndim,
                                    const int64_t *shape) {
    mrt_status st = mrt_tensor_alloc(t, dtype, ndim, shape);
    ck_assert_msg(st == MRT_OK, "alloc failed: %s", mrt_last_error());
}

/* 0-d tensors get a dummy shape pointer: the header does not promise that
 * NULL is accepted when ndim == 0. */
static inline void tu_alloc_scalar(mrt_tensor *t, mrt_dtype dtype) {
    int64_t unused = 1;
    tu_alloc_or_fail(t, dtype, 0, &unused);
}

/* ---- deterministic data ------------------------------------------------ */

typedef struct { uint64_t s; } tu_rng;

static inline tu_rng tu_rng_seed(uint64_t seed) {
    tu_rng r = {seed * 6364136223846793005ULL + 1442695040888963407ULL};
    return r;
}

static inline uint32_t tu_rng_u32(tu_rng *r) {
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(r->s >> 33); /* high bits: the low bits of an LCG are weak */
}

/* Uniform in [lo, hi), rounded to float so the reference sees exactly the
 * value the tensor holds. */
static inline double tu_rng_uniform(tu_rng *r, double lo, double hi) {
    double u = (double)tu_rng_u32(r) / 2147483648.0; /* 31 bits -> [0, 1) */
    return (double)(float)(lo + (hi - lo) * u);
}

/* ---- naive strided access ------------------------------------------------ */

static inline int64_t tu_numel(const mrt_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Storage offset (elements) of the `flat`-th element in row-major logical
 * order, computed from the tensor's own shape, stride and offset. */
static inline int64_t tu_flat_offset(const mrt_tensor *t, int64_t flat) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t i = flat % t->shape[d];
        flat /= t->shape[d];
        off += i * t->stride[d];
    }
    return off;
}

static inline int64_t tu_idx_offset(const mrt_tensor *t, const int64_t *idx) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
    return off;
}

static inline double tu_get(const mrt_tensor *t, int64_t flat) {
    int64_t off = tu_flat_offset(t, flat);
    if (t->dtype == MRT_I64) return (double)((const int64_t *)t->storage->data)[off];
    return (double)((const float *)t->storage->data)[off];
}

static inline void tu_set(mrt_tensor *t, int64_t flat, double v) {
    int64_t off = tu_flat_offset(t, flat);
    if (t->dtype == MRT_I64) ((int64_t *)t->storage->data)[off] = (int64_t)v;
    else ((float *)t->storage->data)[off] = (float)v;
}

static inline double tu_get_idx(const mrt_tensor *t, const int64_t *idx) {
    int64_t off = tu_idx_offset(t, idx);
    if (t->dtype == MRT_I64) return (double)((const int64_t *)t->storage->data)[off];
    return (double)((const float *)t->storage->data)[off];
}

/* Fills every logical element (views included) with uniform values. */
static inline void tu_fill_uniform(mrt_tensor *t, uint64_t seed, double lo, double hi) {
    tu_rng r = tu_rng_seed(seed);
    int64_t n = tu_numel(t);
    for (int64_t i = 0; i < n; i++) tu_set(t, i, tu_rng_uniform(&r, lo, hi));
}

/* Fills with 0, 1, 2, ... in logical order: makes every element's origin
 * recognisable when checking views. */
static inline void tu_fill_iota(mrt_tensor *t) {
    int64_t n = tu_numel(t);
    for (int64_t i = 0; i < n; i++) tu_set(t, i, (double)i);
}

/* ---- comparisons ----------------------------------------------------------- */

static inline int tu_same_shape(const mrt_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

#define TU_ASSERT_SHAPE(t, ...) tu_assert_shape((t), TU_SHAPE(__VA_ARGS__))
#define TU_ASSERT_STRIDE(t, ...) tu_assert_stride((t), TU_SHAPE(__VA_ARGS__))

static inline void tu_assert_shape(const mrt_tensor *t, int ndim, const int64_t *shape) {
    char got[MRT_SHAPE_STRLEN], want[MRT_SHAPE_STRLEN];
    if (tu_same_shape(t, ndim, shape)) return;
    /* Formatted by hand: the library's formatter is itself under test. */
    got[0] = want[0] = '\0';
    for (int d = 0; d < t->ndim && d < MRT_MAX_DIMS; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "x" : "",
                 (long long)t->shape[d]);
    for (int d = 0; d < ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "x" : "",
                 (long long)shape[d]);
    ck_abort_msg("shape (ndim %d) \"%s\", expected (ndim %d) \"%s\"", t->ndim, got, ndim,
                 want);
}

static inline void tu_assert_stride(const mrt_tensor *t, int ndim, const int64_t *stride) {
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(t->stride[d] == stride[d], "stride[%d] = %lld, expected %lld", d,
                      (long long)t->stride[d], (long long)stride[d]);
}

/* Largest |a - b| over logical elements; shapes must match exactly. */
static inline double tu_max_abs_diff(const mrt_tensor *a, const mrt_tensor *b) {
    tu_assert_shape(a, b->ndim, b->shape);
    double m = 0.0;
    int64_t n = tu_numel(a);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(tu_get(a, i) - tu_get(b, i));
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

/* |got - want| <= rel * |want| + abs_tol, NaN-aware (NaN matches NaN). */
static inline int tu_close(double got, double want, double rel, double abs_tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= rel * fabs(want) + abs_tol;
}

#endif
