/* Tensor ops on the device: elementwise with broadcasting over any strides,
 * copy/fill, reductions, matmul (cuBLAS). Same semantics as runtime/cpu
 * (NaN propagation in maximum/minimum and max/argmax, first index on
 * ties, double accumulation of sums). Arguments arrive checked by the ops
 * in runtime/cpu, outputs allocated with the result's shape. */
#include "cuda_common.h"

extern "C" {
#include "../cpu/matmul_geom.h"
}

#include <math.h>
#include <stdlib.h>

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)blockDim.x * gridDim.x)

/* ---- elementwise ---------------------------------------------------------------------- */

__device__ __forceinline__ float apply_binop(int op, float x, float y)
{
    switch (op) {
    case MRT_ADD: return x + y;
    case MRT_SUB: return x - y;
    case MRT_MUL: return x * y;
    case MRT_DIV: return x / y;
    case MRT_POW: return powf(x, y);
    case MRT_MAXIMUM: return (x != x || x > y) ? x : y;
    default: return (x != x || x < y) ? x : y;
    }
}

__device__ __forceinline__ float apply_unop(int op, float x)
{
    switch (op) {
    case MRT_NEG: return -x;
    case MRT_EXP: return expf(x);
    case MRT_LOG: return logf(x);
    case MRT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case MRT_RELU: return x > 0.0f ? x : 0.0f;
    case MRT_ABS: return fabsf(x);
    case MRT_SQRT: return sqrtf(x);
    default: return tanhf(x);
    }
}

/* mode 0: o = a op b; 1: o = a op s; 2: o = s op a. */
__global__ void k_binary(mrt_cu_iter it, int op, int mode, float s, float *o, const float *a,
                         const float *b)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        float x = a[off[1]];
        float y = mode == 0 ? b[off[2]] : s;
        o[off[0]] = mode == 2 ? apply_binop(op, y, x) : apply_binop(op, x, y);
    }
}

__global__ void k_unary(mrt_cu_iter it, int op, float *o, const float *a)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        o[off[0]] = apply_unop(op, a[off[1]]);
    }
}

/* KIND: destination dtype * 2 + source dtype (0 = float32, 1 = int64). */
template <int KIND> __global__ void k_copy(mrt_cu_iter it, void *o, const void *a)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        if (KIND == 0) ((float *)o)[off[0]] = ((const float *)a)[off[1]];
        else if (KIND == 1) ((float *)o)[off[0]] = (float)((const int64_t *)a)[off[1]];
        else if (KIND == 2) ((int64_t *)o)[off[0]] = (int64_t)((const float *)a)[off[1]];
        else ((int64_t *)o)[off[0]] = ((const int64_t *)a)[off[1]];
    }
}

template <typename T> __global__ void k_fill(mrt_cu_iter it, T *o, T v)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        o[off[0]] = v;
    }
}

template <typename T> __global__ void k_fill_range(mrt_cu_iter it, T *o, double start, double step)
{
    GRID_STRIDE(i, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, i, off);
        o[off[0]] = (T)(start + step * (double)i);
    }
}

extern "C" mrt_status mrt_cu_binary(mrt_binop op, const mrt_tensor *a, const mrt_tensor *b,
                                    mrt_tensor *out)
{
    const char *name = mrt_binop_name(op);
    const mrt_tensor ta = *a, tb = *b; /* out (of the broadcast shape) may be a or b */
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, out->ndim, out->shape);
    mrt_cu_iter_add(&it, out);
    mrt_cu_iter_add(&it, &ta);
    mrt_cu_iter_add(&it, &tb);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_binary, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, (int)op, 0,
               0.0f, mrt_cu_f32(out), mrt_cu_f32(&ta), mrt_cu_f32(&tb));
    return mrt_cu_launched(name);
}

extern "C" mrt_status mrt_cu_binary_scalar(mrt_binop op, const mrt_tensor *a, double s,
                                           int scalar_left, mrt_tensor *out)
{
    const char *name = mrt_binop_name(op);
    const mrt_tensor ta = *a;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, ta.ndim, ta.shape);
    mrt_cu_iter_add(&it, out);
    mrt_cu_iter_add(&it, &ta);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_binary, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, (int)op,
               scalar_left ? 2 : 1, (float)s, mrt_cu_f32(out), mrt_cu_f32(&ta), (const float *)NULL);
    return mrt_cu_launched(name);
}

extern "C" mrt_status mrt_cu_unary(mrt_unop op, const mrt_tensor *a, mrt_tensor *out)
{
    const char *name = mrt_unop_name(op);
    const mrt_tensor ta = *a;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, ta.ndim, ta.shape);
    mrt_cu_iter_add(&it, out);
    mrt_cu_iter_add(&it, &ta);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_unary, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it, (int)op,
               mrt_cu_f32(out), mrt_cu_f32(&ta));
    return mrt_cu_launched(name);
}

extern "C" mrt_status mrt_cu_copy(mrt_tensor *dst, const mrt_tensor *src)
{
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, dst->ndim, dst->shape);
    mrt_cu_iter_add(&it, dst);
    mrt_cu_iter_add(&it, src);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    unsigned g = mrt_cu_blocks(it.n);
    cudaStream_t s = mrt_cu_stream();
    const size_t ds = mrt_dtype_size(dst->dtype), ss = mrt_dtype_size(src->dtype);
    void *o = (char *)dst->storage->data + dst->offset * (int64_t)ds;
    const void *a = (const char *)src->storage->data + src->offset * (int64_t)ss;
    switch ((dst->dtype == MRT_I64) * 2 + (src->dtype == MRT_I64)) {
    case 0: MRT_LAUNCH(k_copy<0>, g, MRT_CU_THREADS, s, it, o, a); break;
    case 1: MRT_LAUNCH(k_copy<1>, g, MRT_CU_THREADS, s, it, o, a); break;
    case 2: MRT_LAUNCH(k_copy<2>, g, MRT_CU_THREADS, s, it, o, a); break;
    default: MRT_LAUNCH(k_copy<3>, g, MRT_CU_THREADS, s, it, o, a); break;
    }
    return mrt_cu_launched("copy");
}

extern "C" mrt_status mrt_cu_fill(mrt_tensor *t, double value)
{
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, t->ndim, t->shape);
    mrt_cu_iter_add(&it, t);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    if (t->dtype == MRT_F32)
        MRT_LAUNCH(k_fill<float>, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
                   mrt_cu_f32(t), (float)value);
    else
        MRT_LAUNCH(k_fill<int64_t>, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
                   mrt_cu_i64(t), (int64_t)value);
    return mrt_cu_launched("fill");
}

extern "C" mrt_status mrt_cu_fill_range(mrt_tensor *t, double start, double step)
{
    /* Logical (row-major) index order: no dimension merging across views. */
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, t->ndim, t->shape);
    mrt_cu_iter_add(&it, t);
    it.contiguous = mrt_tensor_is_contiguous(t);
    if (it.n == 0) return MRT_OK;
    if (t->dtype == MRT_F32)
        MRT_LAUNCH(k_fill_range<float>, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
                   mrt_cu_f32(t), start, step);
    else
        MRT_LAUNCH(k_fill_range<int64_t>, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(),
                   it, mrt_cu_i64(t), start, step);
    return mrt_cu_launched("fill");
}

/* ---- reductions ---------------------------------------------------------------------- */

__host__ __device__ __forceinline__ bool better(float v, float best, bool want_max)
{
    if (best != best) return false;
    if (v != v) return true;
    return want_max ? v > best : v < best;
}

/* Does candidate (b, ib) replace (a, ia)? A better value, or an equal one
 * (NaN equals NaN) at an earlier index; index -1 = no candidate. */
__host__ __device__ __forceinline__ bool takes(float a, int64_t ia, float b, int64_t ib,
                                               bool want_max)
{
    if (ib < 0) return false;
    if (ia < 0 || better(b, a, want_max)) return true;
    if (better(a, b, want_max)) return false;
    return ib < ia;
}

/* One partial per block over a contiguous x: sum in double, or the extreme
 * (value, first index). A shared-memory tree; every thread reaches every
 * barrier. */
__global__ void k_reduce_partial(int64_t n, const float *x, int kind, double *part_v,
                                 int64_t *part_i)
{
    __shared__ double sv[MRT_CU_THREADS];
    __shared__ int64_t si[MRT_CU_THREADS];
    const int t = threadIdx.x;
    const bool extreme = kind != 0, want_max = kind == 1;
    double acc = 0.0;
    int64_t bi = -1;
    float bv = 0.0f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + t; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        if (!extreme) {
            acc += x[i];
        } else if (bi < 0 || better(x[i], bv, want_max)) {
            bi = i;
            bv = x[i];
        }
    }
    sv[t] = extreme ? (double)bv : acc;
    si[t] = bi;
    __syncthreads();
    for (int w = MRT_CU_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) {
            if (!extreme) {
                sv[t] += sv[t + w];
            } else if (takes((float)sv[t], si[t], (float)sv[t + w], si[t + w], want_max)) {
                sv[t] = sv[t + w];
                si[t] = si[t + w];
            }
        }
        __syncthreads();
    }
    if (t == 0) {
        part_v[blockIdx.x] = sv[0];
        part_i[blockIdx.x] = si[0];
    }
}

extern "C" mrt_status mrt_cu_reduce_all(mrt_reduceop op, const mrt_tensor *a, double *value,
                                        int64_t *index)
{
    const char *name = mrt_reduceop_name(op);
    mrt_status st;
    const int64_t n = mrt_tensor_numel(a);
    const bool extreme = op >= MRT_MAX, want_max = op == MRT_MAX || op == MRT_ARGMAX;
    if (n == 0) { /* a sum or mean: an empty extreme is refused by the op */
        *value = op == MRT_MEAN ? NAN : 0.0;
        if (index) *index = 0;
        return MRT_OK;
    }
    mrt_tensor c = {};
    if ((st = mrt_tensor_contiguous(a, &c))) return st;
    const unsigned nb = mrt_cu_blocks(n, MRT_CU_REDUCE_BLOCKS);
    void *dv = NULL, *di = NULL;
    size_t cv = 0, ci = 0;
    st = mrt_cu_scratch(nb * sizeof(double), &dv, &cv);
    if (!st) st = mrt_cu_scratch(nb * sizeof(int64_t), &di, &ci);
    if (!st) {
        MRT_LAUNCH_SYNC(k_reduce_partial, nb, MRT_CU_THREADS, mrt_cu_stream(), n, mrt_cu_f32(&c),
                        extreme ? (want_max ? 1 : 2) : 0, (double *)dv, (int64_t *)di);
        st = mrt_cu_launched(name);
    }
    double hv[MRT_CU_REDUCE_BLOCKS];
    int64_t hi[MRT_CU_REDUCE_BLOCKS];
    const mrt_backend *b = mrt_backend_get(MRT_CUDA);
    if (!st) st = b->memory.to_host(hv, dv, nb * sizeof(double));
    if (!st) st = b->memory.to_host(hi, di, nb * sizeof(int64_t));
    mrt_cu_scratch_free(dv, cv);
    mrt_cu_scratch_free(di, ci);
    mrt_tensor_release(&c);
    if (st) return st;
    /* The partials are combined on the host in block order. */
    if (!extreme) {
        double acc = 0.0;
        for (unsigned k = 0; k < nb; k++) acc += hv[k];
        *value = op == MRT_MEAN ? acc / (double)n : acc;
        if (index) *index = 0;
        return MRT_OK;
    }
    unsigned best = 0;
    for (unsigned k = 1; k < nb; k++)
        if (takes((float)hv[best], hi[best], (float)hv[k], hi[k], want_max)) best = k;
    *value = hv[best];
    if (index) *index = hi[best];
    return MRT_OK;
}

/* One thread per output element; walks its row of the reduced dimension. */
__global__ void k_reduce_dim(mrt_cu_iter it, const float *x, int64_t len, int64_t step, int op,
                             float *vo, int64_t *io)
{
    GRID_STRIDE(o, it.n)
    {
        int64_t off[3];
        mrt_cu_offsets(it, o, off);
        const float *p = x + off[1];
        if (op == MRT_SUM || op == MRT_MEAN) {
            double acc = 0.0;
            for (int64_t i = 0; i < len; i++) acc += p[i * step];
            vo[off[0]] = (float)(op == MRT_MEAN ? (len ? acc / (double)len : NAN) : acc);
            if (io) io[off[2]] = 0;
        } else {
            const bool want_max = op == MRT_MAX || op == MRT_ARGMAX;
            int64_t bi = 0;
            for (int64_t i = 1; i < len; i++)
                if (better(p[i * step], p[bi * step], want_max)) bi = i;
            vo[off[0]] = p[bi * step];
            if (io) io[off[2]] = bi;
        }
    }
}

extern "C" mrt_status mrt_cu_reduce_dim(mrt_reduceop op, const mrt_tensor *a, int dim,
                                        mrt_tensor *values, mrt_tensor *indices)
{
    const char *name = mrt_reduceop_name(op);
    const int64_t len = a->shape[dim];
    mrt_tensor in = *a; /* a with the reduced dimension removed: the row starts */
    int ond = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (i == dim) continue;
        in.shape[ond] = a->shape[i];
        in.stride[ond] = a->stride[i];
        ond++;
    }
    in.ndim = ond;
    mrt_cu_iter it;
    mrt_cu_iter_init(&it, ond, in.shape);
    mrt_cu_iter_add(&it, values);
    mrt_cu_iter_add(&it, &in);
    mrt_cu_iter_add(&it, indices ? indices : values);
    mrt_cu_iter_finish(&it);
    if (it.n == 0) return MRT_OK;
    MRT_LAUNCH(k_reduce_dim, mrt_cu_blocks(it.n), MRT_CU_THREADS, mrt_cu_stream(), it,
               (const float *)a->storage->data + a->offset, len, a->stride[dim], (int)op,
               mrt_cu_f32(values), indices ? mrt_cu_i64(indices) : (int64_t *)NULL);
    return mrt_cu_launched(name);
}

/* ---- matmul ----------------------------------------------------------------------------- */

/* Operands are made dense (batch dimensions broadcast and materialised), so
 * every product is one strided-batched GEMM. mrt_matmul has checked the
 * shapes and gives a contiguous output that shares no storage with the
 * operands, and m, n, k and the batch are not 0. */
extern "C" mrt_status mrt_cu_matmul(const mrt_tensor *a_in, const mrt_tensor *b_in, mrt_tensor *out)
{
    mrt_matmul_geom g;
    mrt_status st = mrt_matmul_geometry(a_in, b_in, &g);
    if (st) return st;
    const int bnd = g.bnd;
    const int64_t m = g.m, k = g.k, n = g.n;
    int64_t ashape[MRT_MAX_DIMS], bshape[MRT_MAX_DIMS];
    for (int i = 0; i < bnd; i++) ashape[i] = bshape[i] = g.bshape[i];
    ashape[bnd] = m; ashape[bnd + 1] = k;
    bshape[bnd] = k; bshape[bnd + 1] = n;
    /* Dense copies of the (broadcast) operands; a dense input is used as is. */
    mrt_tensor ae = {}, be = {}, ad = {}, bd = {};
    if (!(st = mrt_view_expand(&g.a, bnd + 2, ashape, &ae)) &&
        !(st = mrt_view_expand(&g.b, bnd + 2, bshape, &be)) &&
        !(st = mrt_tensor_contiguous(&ae, &ad)) && !(st = mrt_tensor_contiguous(&be, &bd))) {
        st = mrt_cu_gemm("matmul", 0, 0, m, n, k, 1.0f, mrt_cu_f32(&ad), k, m * k, mrt_cu_f32(&bd),
                         n, k * n, 0.0f, mrt_cu_f32(out), n, m * n, g.batch);
    }
    mrt_tensor_release(&ae);
    mrt_tensor_release(&be);
    mrt_tensor_release(&ad);
    mrt_tensor_release(&bd);
    return st;
}

extern "C" void mrt_cu_register_tensor_ops(mrt_backend *b)
{
    b->tensor.copy = mrt_cu_copy;
    b->tensor.fill = mrt_cu_fill;
    b->tensor.fill_range = mrt_cu_fill_range;
    b->tensor.binary = mrt_cu_binary;
    b->tensor.binary_scalar = mrt_cu_binary_scalar;
    b->tensor.unary = mrt_cu_unary;
    b->tensor.reduce_all = mrt_cu_reduce_all;
    b->tensor.reduce_dim = mrt_cu_reduce_dim;
    b->tensor.matmul = mrt_cu_matmul;
}
