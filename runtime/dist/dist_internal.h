/* Shared by the runtime/dist sources: the communicator and MPI error
 * reporting. */
#ifndef MACHRT_DIST_INTERNAL_H
#define MACHRT_DIST_INTERNAL_H

#include <limits.h>
#include <mpi.h>
#include "machrt/dist.h"

/* MPI counts are int: larger buffers go in pieces of this many elements. */
#define MRT_DIST_MAX_COUNT ((size_t)INT_MAX)

/* Turns an MPI error code into a failed status naming the operation and
 * this rank (MPI_ERRORS_RETURN is set on the communicator, so errors come
 * back here instead of killing the process without a word). */
mrt_status mrt_dist_mpi_fail(const char *op, int mpi_code);

MPI_Op mrt_dist_mpi_op(mrt_dist_op op);

#endif
