/* Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11) and the tensor fills built on it.
 *
 * Element i of a fill is a pure function of (seed, offset + i), so a fill can
 * be split into chunks in any order, on any number of threads, and still give
 * the same tensor bit for bit. */
#include "machrt/backend.h"
#include "machrt/rng.h"
#include "rng_cpu.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_THRESHOLD 32768
/* Fixed chunk size so each chunk pays for one index unravel only. */
#define CHUNK 16384

#define DEFAULT_SEED 0x5eedu

static mrt_rng default_rng = {DEFAULT_SEED, 0};


void mrt_philox4x32_block(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4])
{
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void mrt_philox4x32(uint64_t counter, uint64_t key, uint32_t out[4])
{
    const uint32_t ctr[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0, 0};
    const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    mrt_philox4x32_block(ctr, k, out);
}

void mrt_rng_init(mrt_rng *rng, uint64_t seed)
{
    rng->seed = seed;
    rng->offset = 0;
}

mrt_rng *mrt_rng_default(void) { return &default_rng; }

void mrt_rng_default_seed(uint64_t seed) { mrt_rng_init(&default_rng, seed); }

/* ---- distributions ----------------------------------------------------- */

typedef enum { DIST_UNIFORM, DIST_NORMAL, DIST_BERNOULLI } dist_kind;

typedef struct {
    dist_kind kind;
    uint64_t seed;
    uint64_t base; /* counter of element 0 */
    double a, b;   /* uniform: low, high; normal: mean, std; bernoulli: p */
    float upper;   /* uniform: largest float below high */
} dist;

/* 24 bits: exactly representable in float, so the result is < 1. */
static inline float unit24(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }

static inline float draw(const dist *d, uint64_t i)
{
    uint32_t w[4];
    mrt_philox4x32(d->base + i, d->seed, w);
    switch (d->kind) {
    case DIST_UNIFORM: {
        float v = (float)(d->a + (d->b - d->a) * (double)unit24(w[0]));
        /* Rounding to float can land on `high` itself; the range is half-open. */
        return v > d->upper ? d->upper : v;
    }
    case DIST_NORMAL: {
        /* u1 in (0, 1] keeps log finite; 32 bits each gives tails to ~6.7 sd. */
        double u1 = ((double)w[0] + 1.0) * 0x1p-32;
        double u2 = (double)w[1] * 0x1p-32;
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        return (float)(d->a + d->b * z);
    }
    case DIST_BERNOULLI:
    default:
        return (double)unit24(w[0]) < d->a ? 1.0f : 0.0f;
    }
}

/* Elements [begin, end) in row-major logical order, for any strides. */
static void fill_range(const dist *d, const mrt_tensor *t, float *base, int64_t begin, int64_t end)
{
    int nd = t->ndim;
    if (nd == 0) {
        if (begin < end)
            base[0] = draw(d, 0);
        return;
    }
    int64_t idx[MRT_MAX_DIMS];
    int64_t off = 0, rem = begin;
    for (int k = nd - 1; k >= 0; k--) {
        idx[k] = rem % t->shape[k];
        rem /= t->shape[k];
        off += idx[k] * t->stride[k];
    }
    const int64_t last = t->shape[nd - 1], ls = t->stride[nd - 1];
    int64_t i = begin;
    while (i < end) {
        int64_t run = last - idx[nd - 1];
        if (run > end - i)
            run = end - i;
        for (int64_t j = 0; j < run; j++)
            base[off + j * ls] = draw(d, (uint64_t)(i + j));
        i += run;
        off += run * ls;
        idx[nd - 1] += run;
        for (int k = nd - 1; k > 0 && idx[k] == t->shape[k]; k--) {
            off -= idx[k] * t->stride[k];
            idx[k] = 0;
            idx[k - 1]++;
            off += t->stride[k - 1];
        }
    }
}

/* The generator and the tensor of a draw, on any device. */
static mrt_status check_target(const char *op, const mrt_rng *rng, const mrt_tensor *t)
{
    if (rng == NULL || t == NULL || t->storage == NULL)
        return mrt_fail(MRT_ERR_ARG, "%s: tensor is not allocated", op);
    if (t->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "%s: needs a float32 tensor, got %s", op,
                        mrt_dtype_name(t->dtype));
    return MRT_OK;
}

static mrt_status fill(mrt_rng *rng, mrt_tensor *t, dist *d)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++)
        n *= t->shape[k];
    if (n <= 0)
        return MRT_OK;

    /* Reserving the counter range atomically keeps concurrent fills from the
     * same generator (loader threads) on disjoint streams. */
    d->seed = rng->seed;
    d->base = __atomic_fetch_add(&rng->offset, (uint64_t)n, __ATOMIC_RELAXED);

    float *base = mrt_f32(t);
    if (mrt_tensor_is_contiguous(t)) {
        if (n < PAR_THRESHOLD) {
            for (int64_t i = 0; i < n; i++)
                base[i] = draw(d, (uint64_t)i);
        } else {
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < n; i++)
                base[i] = draw(d, (uint64_t)i);
        }
        return MRT_OK;
    }
    if (n < PAR_THRESHOLD) {
        fill_range(d, t, base, 0, n);
        return MRT_OK;
    }
    int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t begin = c * CHUNK;
        int64_t end = begin + CHUNK < n ? begin + CHUNK : n;
        fill_range(d, t, base, begin, end);
    }
    return MRT_OK;
}

mrt_status mrt_rng_uniform(mrt_rng *rng, mrt_tensor *t, double low, double high)
{
    static const char op[] = "rng uniform";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, t);
    mrt_status st = check_target(op, rng, t);
    if (st) return st;
    if (!isfinite(low) || !isfinite(high) || !(low <= high))
        return mrt_fail(MRT_ERR_ARG, "rng uniform: need finite low <= high, got [%g, %g)", low, high);
    MRT_BACKEND_CALL(st, op, dev, rng, uniform, (rng, t, low, high));
    return st;
}

mrt_status mrt_rng_normal(mrt_rng *rng, mrt_tensor *t, double mean, double std)
{
    static const char op[] = "rng normal";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, t);
    mrt_status st = check_target(op, rng, t);
    if (st) return st;
    if (!isfinite(mean) || !isfinite(std) || std < 0.0)
        return mrt_fail(MRT_ERR_ARG, "rng normal: need finite mean and std >= 0, got mean %g std %g",
                        mean, std);
    MRT_BACKEND_CALL(st, op, dev, rng, normal, (rng, t, mean, std));
    return st;
}

mrt_status mrt_rng_bernoulli(mrt_rng *rng, mrt_tensor *t, double p)
{
    static const char op[] = "rng bernoulli";
    mrt_device dev;
    MRT_OP_DEVICE(op, &dev, t);
    mrt_status st = check_target(op, rng, t);
    if (st) return st;
    if (!(p >= 0.0 && p <= 1.0))
        return mrt_fail(MRT_ERR_ARG, "rng bernoulli: p must be in [0, 1], got %g", p);
    MRT_BACKEND_CALL(st, op, dev, rng, bernoulli, (rng, t, p));
    return st;
}

mrt_status mrt_cpu_rng_uniform(mrt_rng *rng, mrt_tensor *t, double low, double high)
{
    float fhigh = (float)high;
    /* If high rounds down to a float at or below low, no float lies in the
     * range except low itself. */
    float upper = nextafterf(fhigh, -INFINITY);
    if (upper < (float)low)
        upper = (float)low;
    dist d = {.kind = DIST_UNIFORM, .a = low, .b = high, .upper = upper};
    return fill(rng, t, &d);
}

mrt_status mrt_cpu_rng_normal(mrt_rng *rng, mrt_tensor *t, double mean, double std)
{
    dist d = {.kind = DIST_NORMAL, .a = mean, .b = std};
    return fill(rng, t, &d);
}

mrt_status mrt_cpu_rng_bernoulli(mrt_rng *rng, mrt_tensor *t, double p)
{
    dist d = {.kind = DIST_BERNOULLI, .a = p};
    return fill(rng, t, &d);
}
