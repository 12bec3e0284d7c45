/* The worker pool (see machrt/pool.h): one mutex, two condition variables,
 * a list of jobs in submission order that holds each until it is taken. */
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "machrt/pool.h"

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct job {
    int64_t id;
    int state;
    void *arg, *result;
    char *error; /* set instead of result when the job failed */
    struct job *next;
} job;

struct mrt_pool {
    const mrt_pool_ops *ops;
    void *ctx;
    pthread_mutex_t lock;
    pthread_cond_t work_ready, result_ready;
    job *jobs, *jobs_tail; /* submitted and not yet taken */
    int nworkers, started, ready, stopping;
    char *init_error; /* the first worker start-up failure */
    pthread_t threads[MRT_POOL_MAX_WORKERS];
};

typedef struct {
    mrt_pool *p;
    int index;
} worker_arg;

static void job_free(const mrt_pool *p, job *j)
{
    if (j->arg) p->ops->free_payload(j->arg);
    if (j->result) p->ops->free_payload(j->result);
    free(j->error);
    free(j);
}

/* The next queued job, or NULL once the pool stops; called locked. */
static job *next_job(mrt_pool *p)
{
    for (;;) {
        if (p->stopping) return NULL;
        for (job *j = p->jobs; j; j = j->next)
            if (j->state == JOB_QUEUED) return j;
        pthread_cond_wait(&p->work_ready, &p->lock);
    }
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    mrt_pool *p = wa->p;
    int index = wa->index;
    free(wa);
    omp_set_num_threads(1);
    void *state = NULL;
    char *err = p->ops->start(p->ctx, index, &state);
    pthread_mutex_lock(&p->lock);
    if (err && !p->init_error) p->init_error = err;
    else free(err);
    p->ready++;
    pthread_cond_broadcast(&p->result_ready);
    int failed = p->init_error != NULL;
    pthread_mutex_unlock(&p->lock);
    if (failed) {
        p->ops->stop(state);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&p->lock);
        job *j = next_job(p);
        if (!j) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        j->state = JOB_RUNNING;
        void *job_arg = j->arg;
        j->arg = NULL;
        pthread_mutex_unlock(&p->lock);

        void *result = NULL;
        char *error = p->ops->run(state, job_arg, &result);

        pthread_mutex_lock(&p->lock);
        j->result = result;
        j->error = error;
        j->state = JOB_DONE;
        pthread_cond_broadcast(&p->result_ready);
        pthread_mutex_unlock(&p->lock);
    }
    p->ops->stop(state);
    return NULL;
}

mrt_status mrt_pool_new(const mrt_pool_ops *ops, void *ctx, int nworkers, mrt_pool **out)
{
    *out = NULL;
    if (nworkers < 1 || nworkers > MRT_POOL_MAX_WORKERS)
        return mrt_fail(MRT_ERR_ARG, "workers.Pool: 'workers' must be between 1 and %d, got %d",
                        MRT_POOL_MAX_WORKERS, nworkers);
    mrt_pool *p = calloc(1, sizeof *p);
    if (!p) return mrt_fail(MRT_ERR_NOMEM, "workers.Pool: out of memory");
    p->ops = ops;
    p->ctx = ctx;
    p->nworkers = nworkers;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_ready, NULL);
    pthread_cond_init(&p->result_ready, NULL);
    mrt_status st = MRT_OK;
    for (int i = 0; i < nworkers && st == MRT_OK; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            st = mrt_fail(MRT_ERR_NOMEM, "workers.Pool: out of memory");
            break;
        }
        wa->p = p;
        wa->index = i + 1;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            st = mrt_fail(MRT_ERR_NOMEM, "workers.Pool: cannot start worker thread %d", i + 1);
            break;
        }
        p->started++;
    }
    /* Start-up errors (a missing module, a failing factory) surface here. */
    pthread_mutex_lock(&p->lock);
    while (p->ready < p->started) pthread_cond_wait(&p->result_ready, &p->lock);
    if (st == MRT_OK && p->init_error) st = mrt_fail(MRT_ERR_ARG, "%s", p->init_error);
    pthread_mutex_unlock(&p->lock);
    if (st != MRT_OK) {
        mrt_pool_free(p);
        return st;
    }
    *out = p;
    return MRT_OK;
}

mrt_status mrt_pool_submit(mrt_pool *p, int64_t id, void *arg)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return mrt_fail(MRT_ERR_NOMEM, "workers: out of memory");
    j->id = id;
    pthread_mutex_lock(&p->lock);
    for (job *k = p->jobs; k; k = k->next) {
        if (k->id == id) {
            pthread_mutex_unlock(&p->lock);
            free(j);
            return mrt_fail(MRT_ERR_ARG, "workers: job %lld was already submitted and not yet taken",
                            (long long)id);
        }
    }
    j->arg = arg;
    if (p->jobs_tail) p->jobs_tail->next = j;
    else p->jobs = j;
    p->jobs_tail = j;
    pthread_cond_signal(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    return MRT_OK;
}

mrt_status mrt_pool_take(mrt_pool *p, int64_t id, void **result, char **error)
{
    *result = NULL;
    *error = NULL;
    pthread_mutex_lock(&p->lock);
    job *found = p->jobs;
    while (found && found->id != id) found = found->next;
    if (!found) {
        pthread_mutex_unlock(&p->lock);
        return mrt_fail(MRT_ERR_INDEX, "workers: no job %lld was submitted (or it was already taken)",
                        (long long)id);
    }
    while (found->state != JOB_DONE) pthread_cond_wait(&p->result_ready, &p->lock);
    /* The list may have changed while waiting: find the link only now. */
    job *prev = NULL;
    for (job *k = p->jobs; k != found; k = k->next) prev = k;
    if (prev) prev->next = found->next;
    else p->jobs = found->next;
    if (p->jobs_tail == found) p->jobs_tail = prev;
    pthread_mutex_unlock(&p->lock);
    *result = found->result;
    *error = found->error;
    found->result = NULL;
    found->error = NULL;
    job_free(p, found);
    return MRT_OK;
}

int mrt_pool_workers(const mrt_pool *p) { return p->nworkers; }

void mrt_pool_free(mrt_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    for (job *j = p->jobs, *n; j; j = n) {
        n = j->next;
        job_free(p, j);
    }
    free(p->init_error);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work_ready);
    pthread_cond_destroy(&p->result_ready);
    free(p);
}
