/* Internal: batch normalisation of rows, for batchnorm.c.
 *
 * An N x C x 1 x 1 tensor whose channels are contiguous within each row is
 * what nn.BatchNorm1d hands the 2-D kernels after a linear layer. The plane
 * walk of batchnorm.c would spend a function call and a parallel item on
 * every single element there; these walk a row's channels as one vector
 * loop instead.
 *
 * The sums are the plane walk's, bit for bit: per channel in double, rows
 * added in order 0 .. N-1, each channel by one thread (channels are split
 * across threads, never rows), so the results do not depend on the path
 * taken or on the thread count. */
#ifndef MACHRT_BATCHNORM_ROWS_H
#define MACHRT_BATCHNORM_ROWS_H

#include "machrt/tensor.h"

/* Below this many elements a parallel region costs more than the work. */
#define BN_PARALLEL_MIN 32768

/* Whether every operand (all of x's shape) is N x C x 1 x 1 with unit
 * channel stride. */
int mrt_bn_rows_layout(const mrt_tensor *const *ops, int nops);

/* s1[c] = sum_n (x[n][c] - x[0][c]), s2[c] = sum_n (x[n][c] - x[0][c])^2. */
void mrt_bn_rows_shifted_sums(const mrt_tensor *x, double *s1, double *s2);

/* y[n][c] = ((x[n][c] - mh[c]) - ml[c]) * a[c] + b[c]; y may be x. */
void mrt_bn_rows_normalize(const mrt_tensor *x, const mrt_tensor *y, const float *a,
                           const float *b, const float *mh, const float *ml);

/* s1[c] = sum_n dy[n][c], s2[c] = sum_n dy[n][c] (x[n][c] - mean[c]). */
void mrt_bn_rows_grad_sums(const mrt_tensor *x, const mrt_tensor *dy, const double *mean,
                           double *s1, double *s2);

/* dx[n][c] = (dy - g0[c] - (x - m[c]) k[c]) a[c] (training), or dy a[c]
 * when g0 is NULL (evaluation); dx may be dy or x. */
void mrt_bn_rows_grad_input(const mrt_tensor *x, const mrt_tensor *dy, const mrt_tensor *dx,
                            const float *m, const float *g0, const float *k, const float *a);

#endif
