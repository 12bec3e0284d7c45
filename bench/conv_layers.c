/* Convolution cost of a ResNet34 training step, layer shape by layer shape:
 * batch 32 of 1 x 128 x 431 (10 s log-mel clips). For every distinct conv
 * shape it times machrt's forward and backward (dx + dw, no dx for the first
 * layer, whose input is data) and prints GFLOP/s; with --peer it also runs
 * bench/peers/torch_conv_layers.py (PyTorch's CPU path, oneDNN) and prints
 * both side by side, with the whole network's conv time (each shape times
 * the number of layers of that shape).
 *
 * The machine is shared, so machrt and PyTorch are measured in alternating
 * rounds and each keeps its best time per layer.
 *
 *   conv_layers [--peer] [--rounds R] [--reps K] [--threads T] [--batch N] [--width W]
 *               [--algo auto|im2col|winograd|winograd2x2|gemm1x1|onednn|own] [--block B]
 *               [--only NAME] [--cpu] [--bf16]
 *
 * --vs-own: also times machrt's own kernels (as --algo own) in the same
 * rounds, interleaved, and prints them beside (the measurement that decides
 * mrt_conv2d_choose). --algo own: machrt's own kernels as the dispatcher would choose them
 * without oneDNN's convolutions. --bf16: bf16 operands (as
 * mt.set_gemm_precision("bf16")).
 *
 * --width 216 gives the shapes of the inference benchmark (5 s chunks).
 *
 * --cpu times CPU seconds instead of wall-clock ones (meaningful with
 * --threads 1 when the machine is busy; both sides switch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "machrt/nn.h"
#include "../runtime/nn/conv2d.h"
#include "../runtime/cpu/gemm.h"

typedef struct {
    const char *name;
    int cin, cout, k, stride, pad, h, w, count, grad_input;
} layer;

/* The distinct conv shapes of a ResNet34 on 1 x 128 x W input (the same
 * table as bench/peers/torch_conv_layers.py): conv1 7x7/2, a 3x3/2 max pool,
 * then each stage halves the plane. */
static layer LAYERS[11];
#define NLAYERS 11

static int half(int n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

static void make_layers(int height, int width)
{
    int h[6], w[6];
    h[0] = height, w[0] = width;                                  /* conv1 input */
    h[1] = half(half(h[0], 7, 2, 3), 3, 2, 1);                   /* layer1 */
    w[1] = half(half(w[0], 7, 2, 3), 3, 2, 1);
    for (int i = 2; i < 5; i++) h[i] = half(h[i - 1], 3, 2, 1), w[i] = half(w[i - 1], 3, 2, 1);
    const layer t[NLAYERS] = {
        {"conv1_7x7s2", 1, 64, 7, 2, 3, h[0], w[0], 1, 0},
        {"l1_3x3_64", 64, 64, 3, 1, 1, h[1], w[1], 6, 1},
        {"l2_3x3s2_64_128", 64, 128, 3, 2, 1, h[1], w[1], 1, 1},
        {"l2_3x3_128", 128, 128, 3, 1, 1, h[2], w[2], 7, 1},
        {"l2_ds_1x1s2", 64, 128, 1, 2, 0, h[1], w[1], 1, 1},
        {"l3_3x3s2_128_256", 128, 256, 3, 2, 1, h[2], w[2], 1, 1},
        {"l3_3x3_256", 256, 256, 3, 1, 1, h[3], w[3], 11, 1},
        {"l3_ds_1x1s2", 128, 256, 1, 2, 0, h[2], w[2], 1, 1},
        {"l4_3x3s2_256_512", 256, 512, 3, 2, 1, h[3], w[3], 1, 1},
        {"l4_3x3_512", 512, 512, 3, 1, 1, h[4], w[4], 5, 1},
        {"l4_ds_1x1s2", 256, 512, 1, 2, 0, h[3], w[3], 1, 1},
    };
    memcpy(LAYERS, t, sizeof t);
}

/* Wall-clock time, or with --cpu the process's CPU time: with one thread
 * on a loaded machine that still measures the code rather than the load. */
static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(mrt_tensor *t, unsigned seed, float scale)
{
    float *p = mrt_f32(t);
    int64_t n = mrt_tensor_numel(t);
    unsigned s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = scale * ((float)(s >> 8) / 16777216.0f - 0.5f);
    }
}

static int die(const char *what)
{
    fprintf(stderr, "conv_layers: %s: %s\n", what, mrt_last_error());
    return 1;
}

/* Best forward and backward times (seconds) of `reps` runs of one layer. */
static int time_layer(const layer *l, int batch, int reps, const mrt_conv2d_opts *opts,
                      const mrt_conv2d_opts *bopts, mrt_workspace *ws, double *tf, double *tb)
{
    mrt_tensor x = {0}, w = {0}, y = {0}, dy = {0}, dx = {0}, dw = {0};
    const int64_t xs[4] = {batch, l->cin, l->h, l->w}, wsz[4] = {l->cout, l->cin, l->k, l->k};
    mrt_conv2d_params p = {l->stride, l->stride, l->pad, l->pad, 0};
    int rc = 0;
    if (mrt_tensor_alloc(&x, MRT_F32, 4, xs) || mrt_tensor_alloc(&w, MRT_F32, 4, wsz) ||
        mrt_tensor_alloc(&dw, MRT_F32, 4, wsz))
        return die("alloc");
    fill(&x, 1, 2.0f);
    fill(&w, 2, 0.1f);
    if (mrt_conv2d_forward_opts(&x, &w, NULL, &p, &y, ws, opts)) {
        rc = die(l->name);
        goto out;
    }
    if (mrt_tensor_alloc(&dy, MRT_F32, 4, y.shape)) {
        rc = die("alloc");
        goto out;
    }
    fill(&dy, 3, 1.0f);
    mrt_tensor *dxp = l->grad_input ? &dx : NULL;
    /* one untimed backward: allocates dx and grows the workspace */
    if (mrt_conv2d_backward_opts(&x, &w, &dy, &p, dxp, &dw, NULL, ws, bopts)) {
        rc = die(l->name);
        goto out;
    }
    *tf = *tb = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        mrt_conv2d_forward_opts(&x, &w, NULL, &p, &y, ws, opts);
        double t1 = now();
        mrt_conv2d_backward_opts(&x, &w, &dy, &p, dxp, &dw, NULL, ws, bopts);
        double t2 = now();
        if (t1 - t0 < *tf) *tf = t1 - t0;
        if (t2 - t1 < *tb) *tb = t2 - t1;
    }
out:
    mrt_tensor_release(&x);
    mrt_tensor_release(&w);
    mrt_tensor_release(&y);
    mrt_tensor_release(&dy);
    mrt_tensor_release(&dx);
    mrt_tensor_release(&dw);
    return rc;
}

static double layer_flops(const layer *l, int batch)
{
    int oh = (l->h + 2 * l->pad - l->k) / l->stride + 1;
    int ow = (l->w + 2 * l->pad - l->k) / l->stride + 1;
    return 2.0 * batch * l->cout * l->cin * l->k * l->k * (double)oh * ow;
}

/* Runs the PyTorch peer once; fills its best times (seconds). Returns 0 when
 * it ran. */
/* $PYTHON, else Debian's /usr/bin/python3 (where python3-torch lives), else
 * python3, as the other benchmarks choose. */
static const char *python(void)
{
    const char *p = getenv("PYTHON");
    if (p && *p) return p;
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

static int run_peer(int batch, int width, int threads, int reps, double *pf, double *pb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s bench/peers/torch_conv_layers.py --batch %d --width %d --threads %d --reps %d%s "
             "2>/dev/null", python(), batch, width, threads, reps,
             clock_id == CLOCK_MONOTONIC ? "" : " --cpu");
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[256], name[64];
    double a, b;
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "layer %63s %lf %lf", name, &a, &b) != 3) continue;
        for (int i = 0; i < NLAYERS; i++) {
            if (strcmp(name, LAYERS[i].name) != 0) continue;
            if (a * 1e-3 < pf[i]) pf[i] = a * 1e-3;
            if (b * 1e-3 < pb[i]) pb[i] = b * 1e-3;
            got++;
        }
    }
    int st = pclose(f);
    return got > 0 && st == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    int peer = 0, rounds = 3, reps = 3, threads = 2, batch = 32, width = 431;
    const char *only = NULL;
    mrt_conv2d_opts opts = {MRT_CONV_AUTO, 0, 0};
    int own = 0, vs_own = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--peer")) peer = 1;
        else if (!strcmp(a, "--vs-own")) vs_own = 1;
        else if (!strcmp(a, "--cpu")) clock_id = CLOCK_PROCESS_CPUTIME_ID;
        else if (!strcmp(a, "--bf16")) {
            if (!mrt_cpu_gemm_set_bf16(1)) {
                fprintf(stderr, "conv_layers: --bf16: this CPU has no bf16\n");
                return 2;
            }
        }
        else if (!strcmp(a, "--rounds") && v) rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--batch") && v) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--width") && v) width = atoi(argv[++i]);
        else if (!strcmp(a, "--block") && v) opts.images_per_block = atoi(argv[++i]);
        else if (!strcmp(a, "--only") && v) only = argv[++i];
        else if (!strcmp(a, "--algo") && v) {
            const char *s = argv[++i];
            opts.algo = !strcmp(s, "im2col")        ? MRT_CONV_IM2COL
                        : !strcmp(s, "winograd")    ? MRT_CONV_WINOGRAD
                        : !strcmp(s, "winograd2x2") ? MRT_CONV_WINOGRAD2
                        : !strcmp(s, "gemm1x1")     ? MRT_CONV_GEMM1X1
                        : !strcmp(s, "onednn")      ? MRT_CONV_ONEDNN
                                                    : MRT_CONV_AUTO;
            own = !strcmp(s, "own");
        } else {
            fprintf(stderr, "usage: conv_layers [--peer] [--rounds R] [--reps K] [--threads T] "
                            "[--batch N] [--width W] [--algo A] [--block B] [--only NAME] [--cpu] [--bf16]\n");
            return 2;
        }
    }
    if (width < 32 || batch < 1) {
        fprintf(stderr, "conv_layers: --width must be >= 32 and --batch >= 1\n");
        return 2;
    }
    make_layers(128, width);
    mrt_set_num_threads(threads);
    double mf[NLAYERS], mb[NLAYERS], pf[NLAYERS], pb[NLAYERS], of[NLAYERS], ob[NLAYERS];
    int use[NLAYERS];
    for (int i = 0; i < NLAYERS; i++) {
        mf[i] = mb[i] = pf[i] = pb[i] = of[i] = ob[i] = 1e30;
        use[i] = !only || strstr(LAYERS[i].name, only) != NULL;
    }
    mrt_workspace ws = {0};
    int have_peer = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < NLAYERS; i++) {
            if (!use[i]) continue;
            mrt_conv2d_opts o = opts;
            /* A forced algorithm applies where it can; the rest go automatic. */
            const layer *l = &LAYERS[i];
            mrt_conv_geom g = {batch, l->cin, l->h, l->w, l->cout, l->k, l->k,
                               (l->h + 2 * l->pad - l->k) / l->stride + 1,
                               (l->w + 2 * l->pad - l->k) / l->stride + 1,
                               l->stride, l->stride, l->pad, l->pad};
            if (!mrt_conv2d_algo_supports(o.algo, &g)) o.algo = MRT_CONV_AUTO;
            mrt_conv2d_opts bo = o;
            if (own) o.algo = mrt_conv2d_choose_own(&g, 0), bo.algo = mrt_conv2d_choose_own(&g, 1);
            double tf, tb;
            if (time_layer(l, batch, reps, &o, &bo, &ws, &tf, &tb)) return 1;
            if (tf < mf[i]) mf[i] = tf;
            if (tb < mb[i]) mb[i] = tb;
            if (!vs_own) continue;
            o.algo = mrt_conv2d_choose_own(&g, 0), bo.algo = mrt_conv2d_choose_own(&g, 1);
            if (time_layer(l, batch, reps, &o, &bo, &ws, &tf, &tb)) return 1;
            if (tf < of[i]) of[i] = tf;
            if (tb < ob[i]) ob[i] = tb;
        }
        if (peer && run_peer(batch, width, threads, reps, pf, pb) == 0) have_peer = 1;
    }
    mrt_workspace_free(&ws);

    printf("conv layers of a ResNet34 training step, batch %d x 1 x 128 x %d, %d threads, "
           "best of %d rounds x %d%s\n", batch, width, threads, rounds, reps,
           clock_id == CLOCK_MONOTONIC ? "" : ", CPU time");
    printf("%-18s %3s %-12s %-12s %8s %8s %6s %6s", "layer", "n", "fwd algo", "bwd algo",
           "fwd ms", "bwd ms", "fwd GF", "bwd GF");
    if (vs_own) printf(" %8s %8s %6s %6s", "own fwd", "own bwd", "x fwd", "x bwd");
    if (have_peer) printf(" %9s %9s %6s %6s", "torch fwd", "torch bwd", "x fwd", "x bwd");
    printf("\n");
    double tot_mf = 0, tot_mb = 0, tot_pf = 0, tot_pb = 0;
    for (int i = 0; i < NLAYERS; i++) {
        if (!use[i]) continue;
        const layer *l = &LAYERS[i];
        mrt_conv_geom g = {batch, l->cin, l->h, l->w, l->cout, l->k, l->k,
                           (l->h + 2 * l->pad - l->k) / l->stride + 1,
                           (l->w + 2 * l->pad - l->k) / l->stride + 1,
                           l->stride, l->stride, l->pad, l->pad};
        const int forced = opts.algo != MRT_CONV_AUTO && mrt_conv2d_algo_supports(opts.algo, &g);
        mrt_conv_algo af = forced ? opts.algo : own ? mrt_conv2d_choose_own(&g, 0) : mrt_conv2d_choose(&g, 0);
        mrt_conv_algo ab = forced ? opts.algo : own ? mrt_conv2d_choose_own(&g, 1) : mrt_conv2d_choose(&g, 1);
        double fl = layer_flops(l, batch);
        double blf = fl * (l->grad_input ? 2.0 : 1.0);
        printf("%-18s %3d %-12s %-12s %8.2f %8.2f %6.0f %6.0f", l->name, l->count,
               mrt_conv_algo_name(af), mrt_conv_algo_name(ab), mf[i] * 1e3, mb[i] * 1e3,
               fl / mf[i] * 1e-9, blf / mb[i] * 1e-9);
        if (vs_own)
            printf(" %8.2f %8.2f %6.2f %6.2f", of[i] * 1e3, ob[i] * 1e3, of[i] / mf[i], ob[i] / mb[i]);
        if (have_peer)
            printf(" %9.2f %9.2f %6.2f %6.2f", pf[i] * 1e3, pb[i] * 1e3, pf[i] / mf[i],
                   pb[i] / mb[i]);
        printf("\n");
        tot_mf += l->count * mf[i];
        tot_mb += l->count * mb[i];
        tot_pf += l->count * pf[i];
        tot_pb += l->count * pb[i];
    }
    printf("network conv time per step: machrt fwd %.0f ms + bwd %.0f ms = %.0f ms", tot_mf * 1e3,
           tot_mb * 1e3, (tot_mf + tot_mb) * 1e3);
    if (have_peer)
        printf("; torch fwd %.0f ms + bwd %.0f ms = %.0f ms; speedup %.2fx", tot_pf * 1e3,
               tot_pb * 1e3, (tot_pf + tot_pb) * 1e3, (tot_pf + tot_pb) / (tot_mf + tot_mb));
    printf("\n");
    return 0;
}
