/* Blocking collectives over MPI_COMM_WORLD: allreduce, broadcast, barrier,
 * gather of bytes. Locally (size 1) each is a checked no-op. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dist_internal.h"

static mrt_status check_root(const char *op, int root)
{
    if (root < 0 || root >= mrt_dist_size())
        return mrt_fail(MRT_ERR_ARG, "%s: root %d is not a rank (ranks are 0..%d)", op, root,
                        mrt_dist_size() - 1);
    return MRT_OK;
}

static mrt_status check_buffer(const char *op, const void *buf, size_t n)
{
    if (n > 0 && !buf) return mrt_fail(MRT_ERR_ARG, "%s: no buffer for %zu elements", op, n);
    return MRT_OK;
}

/* One body for both element types: MPI reduces in place, MEAN scales after. */
static mrt_status allreduce_typed(const char *name, void *buf, size_t n, size_t elem, MPI_Datatype type,
                                  mrt_dist_op op)
{
    mrt_status st = check_buffer(name, buf, n);
    if (st) return st;
    if ((unsigned)op > MRT_DIST_MIN) return mrt_fail(MRT_ERR_ARG, "%s: unknown reduction %d", name, (int)op);
    if (!mrt_dist_active() || mrt_dist_size() == 1) return MRT_OK;
    for (size_t at = 0; at < n; at += MRT_DIST_MAX_COUNT) {
        size_t len = n - at < MRT_DIST_MAX_COUNT ? n - at : MRT_DIST_MAX_COUNT;
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at * elem, (int)len, type, mrt_dist_mpi_op(op),
                               MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mrt_dist_mpi_fail(name, rc);
    }
    if (op != MRT_DIST_MEAN) return MRT_OK;
    const double scale = 1.0 / (double)mrt_dist_size();
    if (type == MPI_DOUBLE)
        for (size_t i = 0; i < n; i++) ((double *)buf)[i] *= scale;
    else
        for (size_t i = 0; i < n; i++) ((float *)buf)[i] *= (float)scale;
    return MRT_OK;
}

mrt_status mrt_dist_allreduce(float *buf, size_t n, mrt_dist_op op)
{
    return allreduce_typed("allreduce", buf, n, sizeof *buf, MPI_FLOAT, op);
}

mrt_status mrt_dist_allreduce_f64(double *buf, size_t n, mrt_dist_op op)
{
    return allreduce_typed("allreduce", buf, n, sizeof *buf, MPI_DOUBLE, op);
}

mrt_status mrt_dist_broadcast(void *buf, size_t nbytes, int root)
{
    mrt_status st = check_buffer("broadcast", buf, nbytes);
    if (st || (st = check_root("broadcast", root))) return st;
    if (!mrt_dist_active() || mrt_dist_size() == 1) return MRT_OK;
    for (size_t at = 0; at < nbytes; at += MRT_DIST_MAX_COUNT) {
        size_t len = nbytes - at < MRT_DIST_MAX_COUNT ? nbytes - at : MRT_DIST_MAX_COUNT;
        int rc = MPI_Bcast((char *)buf + at, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mrt_dist_mpi_fail("broadcast", rc);
    }
    return MRT_OK;
}

mrt_status mrt_dist_barrier(void)
{
    if (!mrt_dist_active() || mrt_dist_size() == 1) return MRT_OK;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? MRT_OK : mrt_dist_mpi_fail("barrier", rc);
}

mrt_status mrt_dist_gather_bytes(const void *buf, size_t nbytes, int root, char **out, size_t *lengths)
{
    *out = NULL;
    mrt_status st = check_buffer("gather", buf, nbytes);
    if (st || (st = check_root("gather", root))) return st;
    if (nbytes > MRT_DIST_MAX_COUNT)
        return mrt_fail(MRT_ERR_ARG, "gather: %zu bytes from rank %d is more than one gather carries (%zu)",
                        nbytes, mrt_dist_rank(), MRT_DIST_MAX_COUNT);
    const int size = mrt_dist_size(), me = mrt_dist_rank();
    if (!mrt_dist_active() || size == 1) {
        *out = malloc(nbytes + 1);
        if (!*out) return mrt_fail(MRT_ERR_NOMEM, "gather: out of memory for %zu bytes", nbytes);
        if (nbytes) memcpy(*out, buf, nbytes);
        lengths[0] = nbytes;
        return MRT_OK;
    }
    int mine = (int)nbytes;
    int *counts = NULL, *displs = NULL;
    if (me == root) {
        counts = calloc((size_t)size, sizeof *counts);
        displs = calloc((size_t)size, sizeof *displs);
        if (!counts || !displs) {
            free(counts);
            free(displs);
            /* The others are about to send: a rank that cannot receive must
             * stop the job rather than leave them waiting. */
            mrt_dist_abort(1, "gather: out of memory for the counts");
            return mrt_fail(MRT_ERR_NOMEM, "gather: out of memory");
        }
    }
    int rc = MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(counts);
        free(displs);
        return mrt_dist_mpi_fail("gather", rc);
    }
    char *all = NULL;
    if (me == root) {
        int64_t total = 0;
        for (int r = 0; r < size; r++) {
            displs[r] = (int)total;
            lengths[r] = (size_t)counts[r];
            total += counts[r];
        }
        if (total > (int64_t)INT_MAX) {
            free(counts);
            free(displs);
            mrt_dist_abort(1, "gather: more than 2 GiB in all");
            return mrt_fail(MRT_ERR_ARG, "gather: more than 2 GiB in all");
        }
        all = malloc((size_t)total + 1);
        if (!all) {
            free(counts);
            free(displs);
            mrt_dist_abort(1, "gather: out of memory for the gathered bytes");
            return mrt_fail(MRT_ERR_NOMEM, "gather: out of memory");
        }
    }
    rc = MPI_Gatherv(buf, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, root, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mrt_dist_mpi_fail("gather", rc);
    }
    *out = all;
    return MRT_OK;
}
