/* Distributed collectives over MPI for data-parallel training.
 *
 * Lua-free and tensor-free: every call takes host float buffers, so the
 * bindings and the C tests use the same entry points. Without an MPI launch
 * (no mpirun / srun environment) the process is rank 0 of 1 and every
 * collective is a local no-op that still checks its arguments, so
 * single-process code paths run the same calls unchanged.
 *
 * Only the thread that called mrt_dist_init may call the others (MPI is
 * initialised with MPI_THREAD_FUNNELED; loader threads never communicate). */
#ifndef MACHRT_DIST_H
#define MACHRT_DIST_H

#include <stddef.h>
#include "machrt/status.h"

typedef enum { MRT_DIST_SUM = 0, MRT_DIST_MEAN, MRT_DIST_MAX, MRT_DIST_MIN } mrt_dist_op;

typedef enum { MRT_DIST_AUTO = 0, MRT_DIST_NONE, MRT_DIST_MPI } mrt_dist_mode;

/* Parses "sum" / "mean" / "max" / "min" and "auto" / "none" / "mpi". */
mrt_status mrt_dist_op_parse(const char *name, mrt_dist_op *op);
mrt_status mrt_dist_mode_parse(const char *name, mrt_dist_mode *mode);
const char *mrt_dist_op_name(mrt_dist_op op);

/* The name of the launcher variable found in the environment
 * (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE), or NULL when the process was
 * not started by an MPI launcher. */
const char *mrt_dist_launcher_variable(void);

/* AUTO: initialises MPI when a launcher is detected, else stays local.
 * NONE: stays local (rank 0 of 1) even under a launcher. MPI: initialises
 * MPI, and fails when no launcher is detected. Calling it again with the
 * same outcome is a no-op; MPI cannot be initialised after finalize. */
mrt_status mrt_dist_init(mrt_dist_mode mode);
/* Finalises MPI if it was initialised here (idempotent). */
mrt_status mrt_dist_finalize(void);

int mrt_dist_active(void); /* MPI initialised and not finalised */
int mrt_dist_rank(void);   /* 0 when local */
int mrt_dist_size(void);   /* 1 when local */

/* Ends every rank of the job: prints "machrt: rank R of N: message" on
 * stderr and calls MPI_Abort, so that one rank's error never leaves the
 * others blocked in a collective. Local: only prints. Returns only when
 * local (the caller then exits as it would have). */
void mrt_dist_abort(int code, const char *message);

/* In place over n floats, the same n on every rank. MEAN is SUM scaled by
 * 1/size after the reduction. */
mrt_status mrt_dist_allreduce(float *buf, size_t n, mrt_dist_op op);
/* The same over doubles: sums that must keep more digits than float has
 * (sync batch norm's statistics, whose rank parts can nearly cancel). */
mrt_status mrt_dist_allreduce_f64(double *buf, size_t n, mrt_dist_op op);
mrt_status mrt_dist_broadcast(void *buf, size_t nbytes, int root);

/* NCCL (runtime/dist/nccl.c, CUDA builds): mrt_dist_nccl_built() is 1 when
 * it is linked in. allreduce reduces n floats of device memory in place on
 * every rank (MEAN as ncclAvg), after the CUDA backend's pending work; the
 * communicator is made from MPI on first use. pick_device gives each rank
 * of a node its own GPU (mrt_dist_init calls it); finalize frees the
 * communicator (mrt_dist_finalize calls it). Without CUDA, allreduce fails
 * saying so and the others do nothing. */
int mrt_dist_nccl_built(void);
mrt_status mrt_dist_nccl_allreduce(float *device_buf, size_t n, mrt_dist_op op);
void mrt_dist_nccl_pick_device(void);
void mrt_dist_nccl_finalize(void);
mrt_status mrt_dist_barrier(void);

/* Gathers a variable number of bytes from every rank to root. On root,
 * *out (malloc'ed, caller frees) holds the pieces in rank order and
 * lengths[r] (size() entries, caller-provided) their sizes; elsewhere *out
 * is NULL. */
mrt_status mrt_dist_gather_bytes(const void *buf, size_t nbytes, int root, char **out,
                                 size_t *lengths);

/* ---- bucketed gradient reduction ---------------------------------------
 * A reducer splits one flat buffer into fixed buckets (consecutive ranges,
 * given by their start offsets). start(b) begins a non-blocking allreduce
 * of bucket b as soon as its gradients are complete, so communication
 * overlaps the rest of the backward pass; wait() starts whatever was not
 * started, waits for all and scales for MEAN. The buckets depend only on
 * the offsets, never on timing, and each is one allreduce of fixed size
 * over a fixed communicator, so the reduction order, and hence every bit of
 * the result, is the same from run to run. */
typedef struct mrt_dist_reducer mrt_dist_reducer;

/* starts: nbuckets increasing offsets, starts[0] = 0, each < n. The buffer
 * must outlive the reducer; it is not copied. */
mrt_status mrt_dist_reducer_new(float *buf, size_t n, const size_t *starts, size_t nbuckets,
                                mrt_dist_op op, mrt_dist_reducer **out);
size_t mrt_dist_reducer_buckets(const mrt_dist_reducer *r);
/* Starting a bucket twice before wait() is an error. */
mrt_status mrt_dist_reducer_start(mrt_dist_reducer *r, size_t bucket);
/* Buckets started so far in this round (for tests and progress reports). */
size_t mrt_dist_reducer_started(const mrt_dist_reducer *r);
mrt_status mrt_dist_reducer_wait(mrt_dist_reducer *r);
/* Waits for outstanding requests before releasing; NULL is fine. */
void mrt_dist_reducer_free(mrt_dist_reducer *r);

#endif
