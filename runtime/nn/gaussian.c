/* A Gaussian model of embeddings and the Mahalanobis distance to it, for
 * anomaly scores: a machine's normal clips give the mean and a shrunk
 * covariance, and a clip is as anomalous as it is far from them.
 *
 *   fit       mean = column means of x[N][D]
 *             S    = (x - mean)^T (x - mean) / N            (maximum likelihood)
 *             cov  = (1 - a) S + a (trace(S) / D) I          (a: shrinkage)
 *             precision = cov^-1                            (Cholesky, in double)
 *   forward   dist[i] = sqrt((x_i - mean)^T precision (x_i - mean))
 *   backward  dx[i]   = ddist[i] * precision (x_i - mean) / dist[i]   (0 where dist = 0)
 *
 * a < 0 asks for the Ledoit-Wolf shrinkage, computed exactly as
 * scikit-learn's ledoit_wolf_shrinkage. With a few hundred clips per
 * machine and 128..512 dimensions the plain covariance is singular, hence
 * the shrinkage. The statistics are fitted once per machine on pooled
 * embeddings, so these run on the CPU only (embeddings are brought there). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include "machrt/backend.h"
#include "machrt/nn.h"
#include "nn_args.h"

#define SHP(t, buf) mrt_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

static mrt_status need_cpu(const char *fn, const mrt_tensor *const *ts, int n)
{
    mrt_device dev;
    mrt_status st = mrt_common_device(fn, ts, n, &dev);
    if (st) return st;
    if (dev != MRT_CPU)
        return mrt_fail(MRT_ERR_DEVICE, "%s: runs on the CPU only, got %s tensors (move them with :to('cpu'))",
                        fn, mrt_device_name(dev));
    return MRT_OK;
}

static mrt_status need_matrix(const char *fn, const char *name, const mrt_tensor *x)
{
    char xs[MRT_SHAPE_STRLEN];
    mrt_status st = mrt_nn_need_f32(fn, name, x);
    if (st) return st;
    if (x->ndim != 2 || x->shape[1] < 1)
        return mrt_fail(MRT_ERR_SHAPE, "%s: %s must be 2-D (N,D) with D >= 1, got %s", fn, name, SHP(x, xs));
    return MRT_OK;
}

/* Reads x into a contiguous double copy [n][d]. */
static double *as_double(const mrt_tensor *x, mrt_status *st)
{
    mrt_tensor c = {0};
    if ((*st = mrt_tensor_contiguous(x, &c))) return NULL;
    int64_t n = mrt_tensor_numel(&c);
    double *out = malloc((size_t)(n > 0 ? n : 1) * sizeof *out);
    if (!out) {
        mrt_tensor_release(&c);
        *st = mrt_fail(MRT_ERR_NOMEM, "gaussian: out of memory for %" PRId64 " values", n);
        return NULL;
    }
    const float *p = mrt_f32(&c);
    for (int64_t i = 0; i < n; i++) out[i] = p[i];
    mrt_tensor_release(&c);
    return out;
}

/* scikit-learn's ledoit_wolf_shrinkage (assume_centered=False) on the
 * centred rows xc[n][d] and their covariance s = xc^T xc / n. */
static double ledoit_wolf(const double *xc, const double *s, int64_t n, int64_t d)
{
    if (d == 1) return 0.0;
    double trace = 0, beta_sum = 0, delta_sum = 0;
    for (int64_t j = 0; j < d; j++) trace += s[j * d + j];
    double mu = trace / (double)d;
    for (int64_t k = 0; k < n; k++) {
        double r = 0;
        for (int64_t j = 0; j < d; j++) r += xc[k * d + j] * xc[k * d + j];
        beta_sum += r * r;
    }
    for (int64_t j = 0; j < d * d; j++) delta_sum += s[j] * s[j];
    double beta = (beta_sum / (double)n - delta_sum) / ((double)d * (double)n);
    double delta = (delta_sum - 2 * mu * trace + (double)d * mu * mu) / (double)d;
    if (beta > delta) beta = delta;
    return beta == 0 ? 0.0 : beta / delta;
}

/* In place: a[d][d] symmetric positive definite -> its inverse. 0 when a
 * is not positive definite. */
static int spd_inverse(double *a, int64_t d, double *work)
{
    double *l = work; /* lower Cholesky factor */
    for (int64_t i = 0; i < d * d; i++) l[i] = 0;
    for (int64_t j = 0; j < d; j++) {
        double v = a[j * d + j];
        for (int64_t k = 0; k < j; k++) v -= l[j * d + k] * l[j * d + k];
        if (!(v > 0)) return 0;
        double ljj = sqrt(v);
        l[j * d + j] = ljj;
        for (int64_t i = j + 1; i < d; i++) {
            double w = a[i * d + j];
            for (int64_t k = 0; k < j; k++) w -= l[i * d + k] * l[j * d + k];
            l[i * d + j] = w / ljj;
        }
    }
    /* Column by column: solve L y = e_c, then L^T x = y. */
    double *y = work + d * d;
    for (int64_t c = 0; c < d; c++) {
        for (int64_t i = 0; i < d; i++) {
            double v = i == c ? 1.0 : 0.0;
            for (int64_t k = 0; k < i; k++) v -= l[i * d + k] * y[k];
            y[i] = v / l[i * d + i];
        }
        for (int64_t i = d - 1; i >= 0; i--) {
            double v = y[i];
            for (int64_t k = i + 1; k < d; k++) v -= l[k * d + i] * a[k * d + c];
            a[i * d + c] = v / l[i * d + i];
        }
    }
    return 1;
}

mrt_status mrt_gaussian_fit(const mrt_tensor *x, double shrinkage, mrt_tensor *mean,
                            mrt_tensor *cov, mrt_tensor *precision, double *shrinkage_used)
{
    static const char fn[] = "gaussian_fit";
    char xs[MRT_SHAPE_STRLEN];
    const mrt_tensor *ts[] = {x, mean, cov, precision};
    mrt_status st;
    if ((st = need_cpu(fn, ts, 4)) || (st = need_matrix(fn, "x", x))) return st;
    const int64_t n = x->shape[0], d = x->shape[1];
    if (n < 2)
        return mrt_fail(MRT_ERR_SHAPE, "%s: needs at least 2 rows to estimate a covariance, got %s", fn,
                        SHP(x, xs));
    if (!(shrinkage <= 1))
        return mrt_fail(MRT_ERR_ARG, "%s: shrinkage must be in [0, 1] (or negative for Ledoit-Wolf), got %g",
                        fn, shrinkage);
    if (d > 8192)
        return mrt_fail(MRT_ERR_SHAPE, "%s: %" PRId64 " dimensions are too many for a dense covariance", fn, d);
    mrt_nn_out out[3];
    const int64_t ms[1] = {d}, cs[2] = {d, d};
    if ((st = mrt_nn_out_check(fn, &out[0], mean, "mean", MRT_F32, 1, ms)) ||
        (st = mrt_nn_out_check(fn, &out[1], cov, "covariance", MRT_F32, 2, cs)) ||
        (st = mrt_nn_out_check(fn, &out[2], precision, "precision", MRT_F32, 2, cs)))
        return st;
    /* The fit writes its outputs in place, element by element. */
    const mrt_tensor *outs[3] = {mean, cov, precision};
    for (int i = 0; i < 3; i++)
        if (outs[i]->storage && !mrt_tensor_is_contiguous(outs[i]))
            return mrt_fail(MRT_ERR_ARG, "%s: a given output must be contiguous", fn);
    double *xc = as_double(x, &st);
    if (!xc) return st;
    double *s = calloc((size_t)(d * d), sizeof *s), *mu = calloc((size_t)d, sizeof *mu);
    double *work = malloc((size_t)(d * d + d) * sizeof *work);
    if (!s || !mu || !work) {
        st = mrt_fail(MRT_ERR_NOMEM, "%s: out of memory for a %" PRId64 "x%" PRId64 " covariance", fn, d, d);
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            if (!isfinite(xc[i * d + j])) {
                st = mrt_fail(MRT_ERR_ARG, "%s: x row %" PRId64 " holds a value that is not finite", fn, i + 1);
                goto done;
            }
            mu[j] += xc[i * d + j];
        }
    for (int64_t j = 0; j < d; j++) mu[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) xc[i * d + j] -= mu[j];
    for (int64_t i = 0; i < n; i++)
        for (int64_t a = 0; a < d; a++) {
            const double va = xc[i * d + a];
            for (int64_t b = a; b < d; b++) s[a * d + b] += va * xc[i * d + b];
        }
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = a; b < d; b++) s[b * d + a] = s[a * d + b] /= (double)n;
    double alpha = shrinkage < 0 ? ledoit_wolf(xc, s, n, d) : shrinkage;
    double trace = 0;
    for (int64_t j = 0; j < d; j++) trace += s[j * d + j];
    for (int64_t j = 0; j < d * d; j++) s[j] *= 1 - alpha;
    for (int64_t j = 0; j < d; j++) s[j * d + j] += alpha * trace / (double)d;
    if ((st = mrt_nn_out_alloc(out, 3, MRT_CPU))) goto done;
    float *mp = mrt_f32(mean), *cp = mrt_f32(cov), *pp = mrt_f32(precision);
    for (int64_t j = 0; j < d; j++) mp[j] = (float)mu[j];
    for (int64_t j = 0; j < d * d; j++) cp[j] = (float)s[j];
    if (!spd_inverse(s, d, work)) {
        st = mrt_nn_out_discard(out, 3, mrt_fail(MRT_ERR_ARG,
            "%s: the covariance of these %" PRId64 " rows is singular (shrinkage %g): are the rows all "
            "equal, or is a dimension constant? Give a shrinkage > 0", fn, n, alpha));
        goto done;
    }
    for (int64_t j = 0; j < d * d; j++) pp[j] = (float)s[j];
    if (shrinkage_used) *shrinkage_used = alpha;
done:
    free(xc);
    free(s);
    free(mu);
    free(work);
    return st;
}

static mrt_status check_distance_args(const char *fn, const mrt_tensor *x, const mrt_tensor *mean,
                                      const mrt_tensor *precision)
{
    char xs[MRT_SHAPE_STRLEN], ms[MRT_SHAPE_STRLEN], ps[MRT_SHAPE_STRLEN];
    mrt_status st;
    if ((st = need_matrix(fn, "x", x)) || (st = mrt_nn_need_f32(fn, "mean", mean)) ||
        (st = mrt_nn_need_f32(fn, "precision", precision)))
        return st;
    const int64_t d = x->shape[1];
    if (mean->ndim != 1 || mean->shape[0] != d || precision->ndim != 2 || precision->shape[0] != d ||
        precision->shape[1] != d)
        return mrt_fail(MRT_ERR_SHAPE, "%s: x %s needs a mean of %" PRId64 " and a %" PRId64 "x%" PRId64
                        " precision, got mean %s and precision %s", fn, SHP(x, xs), d, d, d,
                        SHP(mean, ms), SHP(precision, ps));
    return MRT_OK;
}

/* Per row: diff = x_i - mean and pd = precision diff (doubles, length d). */
static void row_terms(const float *xp, const float *mp, const float *pp, int64_t d, double *diff,
                      double *pd)
{
    for (int64_t j = 0; j < d; j++) diff[j] = (double)xp[j] - mp[j];
    for (int64_t a = 0; a < d; a++) {
        double v = 0;
        for (int64_t b = 0; b < d; b++) v += pp[a * d + b] * diff[b];
        pd[a] = v;
    }
}

typedef struct {
    mrt_tensor x, mean, precision;
    double *diff, *pd;
} distance_inputs;

static mrt_status open_inputs(const char *fn, const mrt_tensor *x, const mrt_tensor *mean,
                              const mrt_tensor *precision, distance_inputs *in)
{
    mrt_status st;
    if ((st = mrt_tensor_contiguous(x, &in->x)) || (st = mrt_tensor_contiguous(mean, &in->mean)) ||
        (st = mrt_tensor_contiguous(precision, &in->precision)))
        return st;
    const int64_t d = x->shape[1];
    in->diff = malloc((size_t)d * sizeof(double));
    in->pd = malloc((size_t)d * sizeof(double));
    if (!in->diff || !in->pd) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", fn);
    return MRT_OK;
}

static void close_inputs(distance_inputs *in)
{
    mrt_tensor_release(&in->x);
    mrt_tensor_release(&in->mean);
    mrt_tensor_release(&in->precision);
    free(in->diff);
    free(in->pd);
}

mrt_status mrt_mahalanobis_forward(const mrt_tensor *x, const mrt_tensor *mean,
                                   const mrt_tensor *precision, mrt_tensor *dist)
{
    static const char fn[] = "mahalanobis_forward";
    const mrt_tensor *ts[] = {x, mean, precision, dist};
    mrt_status st;
    if ((st = need_cpu(fn, ts, 4)) || (st = check_distance_args(fn, x, mean, precision))) return st;
    const int64_t n = x->shape[0], d = x->shape[1];
    mrt_nn_out out[1];
    const int64_t ds[1] = {n};
    if ((st = mrt_nn_out_check(fn, &out[0], dist, "dist", MRT_F32, 1, ds))) return st;
    distance_inputs in = {0};
    if ((st = open_inputs(fn, x, mean, precision, &in)) || (st = mrt_nn_out_alloc(out, 1, MRT_CPU))) {
        close_inputs(&in);
        return st;
    }
    const float *xp = mrt_f32(&in.x), *mp = mrt_f32(&in.mean), *pp = mrt_f32(&in.precision);
    for (int64_t i = 0; i < n; i++) {
        row_terms(xp + i * d, mp, pp, d, in.diff, in.pd);
        double q = 0;
        for (int64_t j = 0; j < d; j++) q += in.diff[j] * in.pd[j];
        /* Rounding can make q slightly negative at the mean itself. */
        float v = (float)sqrt(q > 0 ? q : 0);
        mrt_tensor_write_elem(dist, dist->offset + i * dist->stride[0], &v);
    }
    close_inputs(&in);
    return MRT_OK;
}

mrt_status mrt_mahalanobis_backward(const mrt_tensor *x, const mrt_tensor *mean,
                                    const mrt_tensor *precision, const mrt_tensor *dist,
                                    const mrt_tensor *ddist, mrt_tensor *dx)
{
    static const char fn[] = "mahalanobis_backward";
    const mrt_tensor *ts[] = {x, mean, precision, dist, ddist, dx};
    mrt_status st;
    if ((st = need_cpu(fn, ts, 6)) || (st = check_distance_args(fn, x, mean, precision)) ||
        (st = mrt_nn_need_f32(fn, "dist", dist)) || (st = mrt_nn_need_f32(fn, "ddist", ddist)))
        return st;
    const int64_t n = x->shape[0], d = x->shape[1];
    const int64_t ds[1] = {n};
    if (!mrt_nn_same_shape(dist, 1, ds) || !mrt_nn_same_shape(ddist, 1, ds))
        return mrt_fail(MRT_ERR_SHAPE, "%s: dist and ddist must hold %" PRId64 " values (one per row of x)", fn, n);
    mrt_nn_out out[1];
    if ((st = mrt_nn_out_check(fn, &out[0], dx, "dx", MRT_F32, 2, x->shape))) return st;
    distance_inputs in = {0};
    mrt_tensor dc = {0}, gc = {0}, target = {0};
    int aside = 0;
    const mrt_tensor *ins[5] = {x, mean, precision, dist, ddist};
    if ((st = open_inputs(fn, x, mean, precision, &in)) || (st = mrt_tensor_contiguous(dist, &dc)) ||
        (st = mrt_tensor_contiguous(ddist, &gc)) || (st = mrt_nn_out_alloc(out, 1, MRT_CPU)) ||
        (st = mrt_nn_write_target(dx, ins, 5, 0, &target, &aside)))
        goto done;
    const float *xp = mrt_f32(&in.x), *mp = mrt_f32(&in.mean), *pp = mrt_f32(&in.precision);
    const float *dp = mrt_f32(&dc), *gp = mrt_f32(&gc);
    float *op = mrt_f32(&target);
    for (int64_t i = 0; i < n; i++) {
        if (dp[i] > 0) {
            row_terms(xp + i * d, mp, pp, d, in.diff, in.pd);
            /* precision is symmetric, so the gradient of the quadratic form is 2 P diff. */
            const double scale = gp[i] / dp[i];
            for (int64_t j = 0; j < d; j++) op[i * d + j] = (float)(scale * in.pd[j]);
        } else {
            for (int64_t j = 0; j < d; j++) op[i * d + j] = 0;
        }
    }
    if (aside) st = mrt_tensor_copy(dx, &target);
done:
    if (aside) mrt_tensor_release(&target);
    mrt_tensor_release(&dc);
    mrt_tensor_release(&gc);
    close_inputs(&in);
    return st;
}
