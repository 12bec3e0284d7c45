/* A pool of worker threads running jobs keyed by id (the data loader's
 * workers). What a job is belongs to the caller, through callbacks: the
 * Lua binding gives each worker its own Lua state and runs a scripted job
 * function; the C tests run plain functions.
 *
 * Results are kept per job id, so the caller takes them in the order it
 * chooses, whatever order the workers finish in: a batch's content depends
 * only on its job, never on which worker ran it or when. */
#ifndef MACHRT_POOL_H
#define MACHRT_POOL_H

#include <stdint.h>
#include "machrt/status.h"

#define MRT_POOL_MAX_WORKERS 64

typedef struct {
    /* On worker `index` (1-based), before its first job: builds the
     * worker's own state. Returns NULL, or a malloc'ed message (start-up
     * fails, and mrt_pool_new reports the first one). */
    char *(*start)(void *ctx, int index, void **state);
    /* Runs one job. `arg` is the job's own (run frees it); on success sets
     * *result and returns NULL, else returns a malloc'ed message. */
    char *(*run)(void *state, void *arg, void **result);
    /* Ends a worker's state (also after a failed start; state may be NULL). */
    void (*stop)(void *state);
    /* Frees an argument never run or a result never taken. */
    void (*free_payload)(void *payload);
} mrt_pool_ops;

typedef struct mrt_pool mrt_pool;

/* Starts `nworkers` threads (1..MRT_POOL_MAX_WORKERS) and waits until every
 * one has started; `ops` and `ctx` must outlive the pool. A worker's
 * OpenMP regions run on one thread: workers overlap with the compute step,
 * which owns the cores. */
mrt_status mrt_pool_new(const mrt_pool_ops *ops, void *ctx, int nworkers, mrt_pool **out);

/* Queues job `id` with `arg` (owned by the pool once this succeeds). An id
 * submitted and not yet taken is an error. */
mrt_status mrt_pool_submit(mrt_pool *p, int64_t id, void *arg);

/* Waits for job `id`; then either *result (the caller's to free) or *error
 * (a malloc'ed message from the job) is set. An id never submitted, or
 * already taken, is an error. */
mrt_status mrt_pool_take(mrt_pool *p, int64_t id, void **result, char **error);

int mrt_pool_workers(const mrt_pool *p);

/* Stops and joins the workers, frees every pending job; NULL is fine. */
void mrt_pool_free(mrt_pool *p);

#endif
