/* Bucketed gradient allreduce (Horovod's tensor fusion, PyTorch DDP's
 * buckets): one non-blocking MPI_Iallreduce per fixed bucket of a flat
 * gradient buffer. */
#include <stdlib.h>
#include "dist_internal.h"

struct mrt_dist_reducer {
    float *buf;
    size_t n, nbuckets, nstarted;
    size_t *starts;        /* nbuckets + 1 offsets; the last is n */
    unsigned char *begun;  /* per bucket, this round */
    MPI_Request *requests; /* MPI_REQUEST_NULL when none is outstanding */
    mrt_dist_op op;
};

static int communicates(void) { return mrt_dist_active() && mrt_dist_size() > 1; }

mrt_status mrt_dist_reducer_new(float *buf, size_t n, const size_t *starts, size_t nbuckets,
                                mrt_dist_op op, mrt_dist_reducer **out)
{
    *out = NULL;
    if (n == 0 || !buf) return mrt_fail(MRT_ERR_ARG, "reducer: an empty gradient buffer");
    if (nbuckets == 0 || !starts) return mrt_fail(MRT_ERR_ARG, "reducer: no buckets");
    if ((unsigned)op > MRT_DIST_MIN) return mrt_fail(MRT_ERR_ARG, "reducer: unknown reduction %d", (int)op);
    if (starts[0] != 0) return mrt_fail(MRT_ERR_ARG, "reducer: bucket 1 starts at %zu, not 0", starts[0]);
    for (size_t b = 0; b < nbuckets; b++) {
        size_t end = b + 1 < nbuckets ? starts[b + 1] : n;
        if (end <= starts[b])
            return mrt_fail(MRT_ERR_ARG, "reducer: bucket %zu is empty or out of order (offsets %zu..%zu of %zu)",
                            b + 1, starts[b], end, n);
        if (end - starts[b] > MRT_DIST_MAX_COUNT)
            return mrt_fail(MRT_ERR_ARG, "reducer: bucket %zu holds %zu floats, more than one MPI call carries",
                            b + 1, end - starts[b]);
    }
    mrt_dist_reducer *r = calloc(1, sizeof *r);
    if (r) {
        r->starts = malloc((nbuckets + 1) * sizeof *r->starts);
        r->begun = calloc(nbuckets, 1);
        r->requests = malloc(nbuckets * sizeof *r->requests);
    }
    if (!r || !r->starts || !r->begun || !r->requests) {
        mrt_dist_reducer_free(r);
        return mrt_fail(MRT_ERR_NOMEM, "reducer: out of memory for %zu buckets", nbuckets);
    }
    for (size_t b = 0; b < nbuckets; b++) {
        r->starts[b] = starts[b];
        r->requests[b] = MPI_REQUEST_NULL;
    }
    r->starts[nbuckets] = n;
    r->buf = buf;
    r->n = n;
    r->nbuckets = nbuckets;
    r->op = op;
    *out = r;
    return MRT_OK;
}

size_t mrt_dist_reducer_buckets(const mrt_dist_reducer *r) { return r->nbuckets; }
size_t mrt_dist_reducer_started(const mrt_dist_reducer *r) { return r->nstarted; }

mrt_status mrt_dist_reducer_start(mrt_dist_reducer *r, size_t bucket)
{
    if (bucket >= r->nbuckets)
        return mrt_fail(MRT_ERR_INDEX, "reducer: bucket %zu out of range (1..%zu)", bucket + 1, r->nbuckets);
    if (r->begun[bucket])
        return mrt_fail(MRT_ERR_ARG, "reducer: bucket %zu started twice before wait()", bucket + 1);
    r->begun[bucket] = 1;
    r->nstarted++;
    if (!communicates()) return MRT_OK;
    size_t at = r->starts[bucket], len = r->starts[bucket + 1] - at;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, r->buf + at, (int)len, MPI_FLOAT, mrt_dist_mpi_op(r->op),
                            MPI_COMM_WORLD, &r->requests[bucket]);
    if (rc != MPI_SUCCESS) return mrt_dist_mpi_fail("reducer: start", rc);
    /* Open MPI's non-blocking collectives advance only inside MPI calls:
     * testing the outstanding ones here moves them on while backward runs. */
    int done = 0;
    rc = MPI_Testall((int)r->nbuckets, r->requests, &done, MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? MRT_OK : mrt_dist_mpi_fail("reducer: progress", rc);
}

mrt_status mrt_dist_reducer_wait(mrt_dist_reducer *r)
{
    mrt_status st = MRT_OK;
    for (size_t b = 0; b < r->nbuckets && !st; b++)
        if (!r->begun[b]) st = mrt_dist_reducer_start(r, b);
    if (st) return st;
    if (communicates()) {
        int rc = MPI_Waitall((int)r->nbuckets, r->requests, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mrt_dist_mpi_fail("reducer: wait", rc);
        if (r->op == MRT_DIST_MEAN) {
            const float scale = 1.0f / (float)mrt_dist_size();
            for (size_t i = 0; i < r->n; i++) r->buf[i] *= scale;
        }
    }
    for (size_t b = 0; b < r->nbuckets; b++) r->begun[b] = 0;
    r->nstarted = 0;
    return MRT_OK;
}

void mrt_dist_reducer_free(mrt_dist_reducer *r)
{
    if (!r) return;
    if (r->requests && communicates()) MPI_Waitall((int)r->nbuckets, r->requests, MPI_STATUSES_IGNORE);
    free(r->starts);
    free(r->begun);
    free(r->requests);
    free(r);
}
