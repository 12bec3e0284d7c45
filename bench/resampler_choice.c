/* The measurement behind machrt's choice of resampler (README, Dependencies):
 * libsoxr and libsamplerate recipes on quality and speed.
 *
 * Not part of `make bench` (libsamplerate is not a machrt dependency). To
 * repeat it on Debian:
 *
 *   apt-get install libsoxr-dev libsamplerate0-dev
 *   cc -O2 bench/resampler_choice.c -o /tmp/resampler_choice \
 *      $(pkg-config --cflags --libs soxr samplerate) -lm && /tmp/resampler_choice
 *
 * Quality: pure tones at 1, 5 and 7 kHz taken from 16000 to 22050 Hz,
 * relative error power (dB) against the ideal tone at 22050 Hz, the first
 * and last 0.1 s excluded; machrt's bar is -60 dB. Speed: one 10 s clip of
 * white noise, one thread, best of 8 alternating rounds (the machine is
 * shared, so single timings are noisy). */
#include <math.h>
#include <samplerate.h>
#include <soxr.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FROM 16000
#define TO 22050

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct {
    const char *name;
    int lib; /* 0: libsoxr, 1: libsamplerate */
    unsigned long recipe, flags;
} candidate;

static void run(const candidate *c, const float *x, size_t n, float *y, size_t m)
{
    if (c->lib == 0) {
        soxr_quality_spec_t q = soxr_quality_spec(c->recipe, c->flags);
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        size_t done;
        soxr_oneshot(FROM, TO, 1, x, n, NULL, y, m, &done, &io, &q, NULL);
    } else {
        SRC_DATA d = {0};
        d.data_in = x;
        d.input_frames = (long)n;
        d.data_out = y;
        d.output_frames = (long)m;
        d.src_ratio = (double)TO / FROM;
        src_simple(&d, (int)c->recipe, 1);
    }
}

static double error_db(const float *y, size_t m, double f)
{
    double e = 0, s = 0;
    for (size_t i = TO / 10; i + TO / 10 < m; i++) {
        double ref = sin(2 * M_PI * f * (double)i / TO);
        e += (y[i] - ref) * (y[i] - ref);
        s += ref * ref;
    }
    return 10 * log10(e / s);
}

int main(void)
{
    const candidate c[] = {
        {"soxr HQ, flat passband", 0, SOXR_HQ, SOXR_ROLLOFF_NONE}, /* machrt's choice */
        {"soxr HQ (default)", 0, SOXR_HQ, 0},
        {"soxr VHQ", 0, SOXR_VHQ, 0},
        {"soxr MQ", 0, SOXR_MQ, 0},
        {"samplerate SINC_BEST", 1, SRC_SINC_BEST_QUALITY, 0},
        {"samplerate SINC_MEDIUM", 1, SRC_SINC_MEDIUM_QUALITY, 0},
        {"samplerate SINC_FASTEST", 1, SRC_SINC_FASTEST, 0},
    };
    const int k = (int)(sizeof c / sizeof c[0]);
    const size_t n = 10 * FROM, m = 10 * TO;
    float *x = malloc(n * sizeof *x), *y = calloc(m, sizeof *y);
    if (!x || !y) return 1;
    double best[16];
    const double tones[] = {1000, 5000, 7000};
    printf("%-26s %9s %9s %9s %12s\n", "16000 -> 22050 Hz", "1 kHz", "5 kHz", "7 kHz",
           "clips/s");
    double err[16][3];
    for (int j = 0; j < k; j++) {
        for (int t = 0; t < 3; t++) {
            for (size_t i = 0; i < n; i++)
                x[i] = (float)sin(2 * M_PI * tones[t] * (double)i / FROM);
            run(&c[j], x, n, y, m);
            err[j][t] = error_db(y, m, tones[t]);
        }
        best[j] = INFINITY;
    }
    srand(1);
    for (size_t i = 0; i < n; i++) x[i] = (float)(2.0 * rand() / RAND_MAX - 1.0);
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < k; j++) {
            int reps = c[j].lib == 1 && c[j].recipe == SRC_SINC_BEST_QUALITY ? 1 : 3;
            for (int z = 0; z < reps; z++) {
                double t0 = now();
                run(&c[j], x, n, y, m);
                double dt = now() - t0;
                if (dt < best[j]) best[j] = dt;
            }
        }
    for (int j = 0; j < k; j++)
        printf("%-26s %6.1f dB %6.1f dB %6.1f dB %12.1f\n", c[j].name, err[j][0], err[j][1],
               err[j][2], 1.0 / best[j]);
    free(x);
    free(y);
    return 0;
}
