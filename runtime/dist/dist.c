/* MPI start-up, the process's place in the job, and the job-wide abort.
 *
 * The host initialises MPI before any Lua code (and so before OpenMP or
 * loader threads) runs, only when a launcher started it: a plain `machrt`
 * never pays for MPI start-up, and the same binary serves both. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dist_internal.h"

static int initialised; /* by mrt_dist_init, not yet finalised */
static int finalised;
static int rank_, size_ = 1;

/* What mpirun (Open MPI), PMIx launchers (srun --mpi=pmix, prterun) and
 * PMI-1/2 launchers (MPICH's hydra, srun --mpi=pmi2) put in the
 * environment. SLURM_* alone is not a launch: a batch script has them too. */
static const char *const LAUNCHER_VARIABLES[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};

const char *mrt_dist_launcher_variable(void)
{
    for (size_t i = 0; i < sizeof LAUNCHER_VARIABLES / sizeof *LAUNCHER_VARIABLES; i++) {
        const char *v = getenv(LAUNCHER_VARIABLES[i]);
        if (v && v[0] != '\0') return LAUNCHER_VARIABLES[i];
    }
    return NULL;
}

mrt_status mrt_dist_op_parse(const char *name, mrt_dist_op *op)
{
    static const char *const names[] = {"sum", "mean", "max", "min"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *op = (mrt_dist_op)i;
            return MRT_OK;
        }
    return mrt_fail(MRT_ERR_ARG, "dist: unknown reduction '%s' (expected sum, mean, max or min)",
                    name ? name : "(null)");
}

const char *mrt_dist_op_name(mrt_dist_op op)
{
    static const char *const names[] = {"sum", "mean", "max", "min"};
    return (unsigned)op < 4 ? names[op] : "?";
}

mrt_status mrt_dist_mode_parse(const char *name, mrt_dist_mode *mode)
{
    static const char *const names[] = {"auto", "none", "mpi"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *mode = (mrt_dist_mode)i;
            return MRT_OK;
        }
    return mrt_fail(MRT_ERR_ARG, "dist: unknown mode '%s' (expected auto, none or mpi)",
                    name ? name : "(null)");
}

mrt_status mrt_dist_mpi_fail(const char *op, int mpi_code)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(mpi_code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", mpi_code);
    return mrt_fail(MRT_ERR_IO, "%s: MPI error on rank %d of %d: %s", op, rank_, size_, text);
}

MPI_Op mrt_dist_mpi_op(mrt_dist_op op)
{
    switch (op) {
    case MRT_DIST_MAX: return MPI_MAX;
    case MRT_DIST_MIN: return MPI_MIN;
    default: return MPI_SUM; /* MEAN scales afterwards */
    }
}

mrt_status mrt_dist_init(mrt_dist_mode mode)
{
    const char *launcher = mrt_dist_launcher_variable();
    if (mode == MRT_DIST_NONE) {
        if (initialised)
            return mrt_fail(MRT_ERR_ARG, "dist: distributed = none, but MPI is already running "
                                         "(rank %d of %d)", rank_, size_);
        return MRT_OK;
    }
    if (mode == MRT_DIST_MPI && !launcher && !initialised)
        return mrt_fail(MRT_ERR_ARG, "dist: distributed = mpi, but this process was not started by "
                                     "an MPI launcher (none of OMPI_COMM_WORLD_SIZE, PMIX_RANK, "
                                     "PMI_SIZE is set): run it under mpirun or srun");
    if (initialised || !launcher) return MRT_OK;
    if (finalised) return mrt_fail(MRT_ERR_ARG, "dist: MPI cannot be started again after finalize");
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mrt_dist_mpi_fail("dist: MPI_Init_thread", rc);
    initialised = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    mrt_dist_nccl_pick_device(); /* before the CUDA backend's first call */
    return MRT_OK;
}

mrt_status mrt_dist_finalize(void)
{
    if (!initialised) return MRT_OK;
    mrt_dist_nccl_finalize();
    initialised = 0;
    finalised = 1;
    int rc = MPI_Finalize();
    rank_ = 0;
    size_ = 1;
    return rc == MPI_SUCCESS ? MRT_OK : mrt_dist_mpi_fail("dist: MPI_Finalize", rc);
}

int mrt_dist_active(void) { return initialised; }
int mrt_dist_rank(void) { return rank_; }
int mrt_dist_size(void) { return size_; }

void mrt_dist_abort(int code, const char *message)
{
    if (!initialised) {
        fprintf(stderr, "machrt: %s\n", message);
        fflush(stderr);
        return;
    }
    fprintf(stderr, "machrt: rank %d of %d: %s; MPI_Abort ends every rank\n", rank_, size_, message);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code == 0 ? 1 : code);
}
