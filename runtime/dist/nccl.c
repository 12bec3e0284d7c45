/* NCCL for CUDA buffers (make CUDA=1): a device gradient buffer is reduced
 * on the devices instead of through host memory. The communicator is set up
 * from MPI, as llm.c does: rank 0 draws the ncclUniqueId, MPI broadcasts it,
 * every rank joins with ncclCommInitRank, on first use (a collective call,
 * so every rank reaches it at the same point). Each rank of a node takes
 * its own GPU (its local rank modulo the device count) right after
 * MPI_Init, before the CUDA backend makes its context.
 *
 * The reduction waits for the backend's compute stream (the gradients are
 * complete), runs on a stream of its own and waits for it, so callers see
 * the result as they see a host allreduce's. Without CUDA the functions
 * exist and say that NCCL is not built in. */
#include <string.h>
#include "dist_internal.h"

#ifdef MRT_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>
#include "machrt/backend.h"

static ncclComm_t comm;
static cudaStream_t stream;
static int comm_ready;

int mrt_dist_nccl_built(void) { return 1; }

static mrt_status nccl_fail(const char *op, ncclResult_t r)
{
    return mrt_fail(MRT_ERR_DEVICE, "%s: NCCL error on rank %d of %d: %s", op, mrt_dist_rank(), mrt_dist_size(),
                    ncclGetErrorString(r));
}

static mrt_status cuda_fail(const char *op, cudaError_t err)
{
    return mrt_fail(MRT_ERR_DEVICE, "%s: CUDA error on rank %d of %d: %s", op, mrt_dist_rank(), mrt_dist_size(),
                    cudaGetErrorString(err));
}

void mrt_dist_nccl_pick_device(void)
{
    if (!mrt_dist_active() || mrt_dist_size() == 1) return;
    MPI_Comm node;
    int local_rank = 0, devices = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, mrt_dist_rank(), MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    /* No usable device: the run stays on the CPU and never gets here again. */
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return;
    cudaSetDevice(local_rank % devices);
}

static mrt_status comm_init(void)
{
    if (comm_ready) return MRT_OK;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r;
    if (mrt_dist_rank() == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) return nccl_fail("nccl: ncclGetUniqueId", r);
    mrt_status st = mrt_dist_broadcast(&id, sizeof id, 0);
    if (st) return st;
    cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (err != cudaSuccess) return cuda_fail("nccl: cudaStreamCreate", err);
    if ((r = ncclCommInitRank(&comm, mrt_dist_size(), id, mrt_dist_rank())) != ncclSuccess)
        return nccl_fail("nccl: ncclCommInitRank", r);
    comm_ready = 1;
    return MRT_OK;
}

static ncclRedOp_t nccl_op(mrt_dist_op op)
{
    switch (op) {
    case MRT_DIST_MEAN: return ncclAvg;
    case MRT_DIST_MAX: return ncclMax;
    case MRT_DIST_MIN: return ncclMin;
    default: return ncclSum;
    }
}

mrt_status mrt_dist_nccl_allreduce(float *device_buf, size_t n, mrt_dist_op op)
{
    if (n > 0 && !device_buf) return mrt_fail(MRT_ERR_ARG, "nccl allreduce: no buffer for %zu elements", n);
    if ((unsigned)op > MRT_DIST_MIN) return mrt_fail(MRT_ERR_ARG, "nccl allreduce: unknown reduction %d", (int)op);
    if (!mrt_dist_active() || mrt_dist_size() == 1 || n == 0) return MRT_OK;
    mrt_status st = comm_init();
    if (st) return st;
    const mrt_backend *cuda = mrt_backend_get(MRT_CUDA);
    if (!cuda) return mrt_fail(MRT_ERR_DEVICE, "nccl allreduce: the CUDA backend is not usable on rank %d",
                               mrt_dist_rank());
    if ((st = cuda->memory.synchronize())) return st;
    ncclResult_t r = ncclAllReduce(device_buf, device_buf, n, ncclFloat, nccl_op(op), comm, stream);
    if (r != ncclSuccess) return nccl_fail("nccl: ncclAllReduce", r);
    cudaError_t err = cudaStreamSynchronize(stream);
    return err == cudaSuccess ? MRT_OK : cuda_fail("nccl: cudaStreamSynchronize", err);
}

void mrt_dist_nccl_finalize(void)
{
    if (!comm_ready) return;
    ncclCommDestroy(comm);
    cudaStreamDestroy(stream);
    comm_ready = 0;
}

#else

int mrt_dist_nccl_built(void) { return 0; }
void mrt_dist_nccl_pick_device(void) {}
void mrt_dist_nccl_finalize(void) {}

mrt_status mrt_dist_nccl_allreduce(float *device_buf, size_t n, mrt_dist_op op)
{
    (void)device_buf;
    (void)n;
    (void)op;
    return mrt_fail(MRT_ERR_ARG, "nccl allreduce: machrt was built without CUDA, so without NCCL "
                                 "(build with make CUDA=1)");
}

#endif
