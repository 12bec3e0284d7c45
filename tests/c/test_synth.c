/* The machine-sound synthesizer's C core: rendering is a pure function of
 * the clip description, the parts add up to the mix at the requested SNR,
 * every type and fault renders finite audio, and bad descriptions fail with
 * a message naming the field. (Files, layout and the CLI are tested in
 * tests/lua/test_synth.lua.) */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_util.h"
#include "machrt/spectral.h"
#include "machrt/synth.h"
#include "machrt/tensor.h"

#define N MRT_SYNTH_FRAMES

static mrt_synth_clip clip_of(int type, int abnormal, double snr, int channels)
{
    return (mrt_synth_clip){.type = type, .model_id = 2, .abnormal = abnormal,
                            .fault_severity = abnormal ? 1.0 : 0.0, .snr_db = snr,
                            .channels = channels, .seed = 11, .index = 5};
}

static double power(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s / (double)n;
}

START_TEST(names_round_trip)
{
    for (int t = 0; t < MRT_SYNTH_NTYPES; t++)
        ck_assert_int_eq(mrt_synth_type_from_name(mrt_synth_type_name(t)), t);
    ck_assert_int_eq(mrt_synth_type_from_name("drill"), -1);
    ck_assert_ptr_null(mrt_synth_type_name(MRT_SYNTH_NTYPES));
}
END_TEST

/* Every type, normal and abnormal: same description, same samples; the
 * machine and noise parts add up to the mix; the SNR is the requested one. */
START_TEST(render_is_deterministic_and_mixes_at_the_snr)
{
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    float *m = malloc(N * sizeof *m), *q = malloc(N * sizeof *q);
    ck_assert(a && b && m && q);
    for (int t = 0; t < MRT_SYNTH_NTYPES; t++) {
        for (int ab = 0; ab < 2; ab++) {
            double snr = ab ? -6.0 : 6.0;
            mrt_synth_clip c = clip_of(t, ab, snr, 1);
            TU_OK(mrt_synth_render(&c, a, m, q));
            TU_OK(mrt_synth_render(&c, b, NULL, NULL));
            ck_assert(memcmp(a, b, N * sizeof *a) == 0);
            /* Counted, then asserted once: Check logs every assertion. */
            int bad = 0;
            for (int i = 0; i < N; i++)
                bad += !(isfinite(a[i]) && fabsf(a[i]) < 1.0f) || a[i] != m[i] + q[i];
            ck_assert_int_eq(bad, 0);
            double got = 10.0 * log10(power(m, N) / power(q, N));
            ck_assert_msg(fabs(got - snr) < 0.01, "%s: SNR %g, asked %g", mrt_synth_type_name(t),
                          got, snr);
            c.index = 6; /* another recording differs */
            TU_OK(mrt_synth_render(&c, b, NULL, NULL));
            ck_assert(memcmp(a, b, N * sizeof *a) != 0);
        }
    }
    free(a);
    free(b);
    free(m);
    free(q);
}
END_TEST

/* Power of x between f0 and f1 Hz: Hann-windowed DFT frames of 2048
 * samples (7.8 Hz bins), summed over the bins and averaged over frames. */
static double band_power(const float *x, size_t n, double f0, double f1)
{
    enum { L = 2048 };
    double sum = 0.0;
    int frames = 0;
    for (size_t at = 0; at + L <= n; at += 4 * L, frames++) {
        for (int k = (int)(f0 * L / MRT_SYNTH_RATE); k <= (int)(f1 * L / MRT_SYNTH_RATE); k++) {
            double re = 0.0, im = 0.0;
            for (int i = 0; i < L; i++) {
                double w = 0.5 - 0.5 * cos(2.0 * M_PI * i / L), ph = 2.0 * M_PI * k * i / L;
                re += w * x[at + i] * cos(ph);
                im -= w * x[at + i] * sin(ph);
            }
            sum += re * re + im * im;
        }
    }
    return sum / frames;
}

/* The slide rail sounds like the MIMII slider samples: its drive line
 * (200 to 300 Hz) stands far above the quiet band from 300 Hz to 1 kHz, for
 * every model id. */
START_TEST(slider_has_a_drive_line_over_a_quiet_midband)
{
    float *mix = malloc(N * sizeof *mix), *m = malloc(N * sizeof *m);
    ck_assert(mix && m);
    for (int id = 0; id <= 6; id += 2) {
        mrt_synth_clip c = clip_of(MRT_SYNTH_SLIDER, 0, 6.0, 1);
        c.model_id = id;
        TU_OK(mrt_synth_render(&c, mix, m, NULL));
        double line = band_power(m, N, 200.0, 300.0), mid = band_power(m, N, 300.0, 1000.0);
        ck_assert_msg(line > 4.0 * mid, "slider id %d: 200-300 Hz %g, 300-1000 Hz %g", id, line,
                      mid);
    }
    free(mix);
    free(m);
}
END_TEST

/* Long-term power spectrum of a clip: the mean over STFT frames (n_fft
 * 1024, hop 512) of each bin's power, BINS bins of 15.6 Hz. */
#define BINS 513
static void long_term_spectrum(const float *x, double *ps)
{
    mrt_tensor w = {0}, y = {0};
    int64_t n = N;
    TU_OK(mrt_tensor_alloc(&w, MRT_F32, 1, &n));
    memcpy(mrt_f32(&w), x, N * sizeof *x);
    mrt_stft_config c;
    mrt_stft_config_init(&c, 1024);
    TU_OK(mrt_stft(&c, &w, &y));
    const int64_t T = y.shape[1];
    const float *v = mrt_f32(&y);
    for (int k = 0; k < BINS; k++) {
        double sum = 0.0;
        for (int64_t t = 0; t < T; t++) {
            double re = v[(k * T + t) * 2], im = v[(k * T + t) * 2 + 1];
            sum += re * re + im * im;
        }
        ps[k] = sum / (double)T;
    }
    mrt_tensor_release(&w);
    mrt_tensor_release(&y);
}

/* Power between f0 and f1 Hz in dB relative to the whole spectrum. */
static double band_share_db(const double *ps, double f0, double f1)
{
    double band = 1e-30, all = 1e-30;
    for (int k = 0; k < BINS; k++) {
        double f = k * (double)MRT_SYNTH_RATE / 1024.0;
        all += ps[k];
        if (f >= f0 && f < f1) band += ps[k];
    }
    return 10.0 * log10(band / all);
}

/* Recordings of one machine vary as real ones do (operating point, load,
 * where the microphone stood): over eight normal recordings of each model,
 * the share of the machine's power in some octave band moves by more than
 * 3 dB. */
START_TEST(normal_recordings_of_one_machine_vary)
{
    static const double edges[] = {125, 250, 500, 1000, 2000, 4000, 7999};
    enum { CLIPS = 8, BANDS = 6 };
    float *m = malloc(N * sizeof *m);
    double ps[BINS];
    ck_assert(m);
    for (int t = 0; t < MRT_SYNTH_NTYPES; t++) {
        double lo[BANDS], hi[BANDS], widest = 0.0;
        for (int k = 0; k < CLIPS; k++) {
            mrt_synth_clip c = clip_of(t, 0, 6.0, 1);
            c.index = (uint64_t)k;
            TU_OK(mrt_synth_render(&c, m, m, NULL));
            long_term_spectrum(m, ps);
            for (int b = 0; b < BANDS; b++) {
                double v = band_share_db(ps, edges[b], edges[b + 1]);
                lo[b] = k ? fmin(lo[b], v) : v;
                hi[b] = k ? fmax(hi[b], v) : v;
            }
        }
        for (int b = 0; b < BANDS; b++) widest = fmax(widest, hi[b] - lo[b]);
        ck_assert_msg(widest > 3.0, "%s: band shares move by %.2f dB at most",
                      mrt_synth_type_name(t), widest);
    }
    free(m);
}
END_TEST

/* Mean over the bins from 50 Hz up of |a - b| in dB, each spectrum taken
 * relative to its total power: how far apart two colours are. */
static double spectral_distance_db(const double *a, const double *b)
{
    double ta = 0.0, tb = 0.0, d = 0.0;
    int k0 = (int)(50.0 * 1024 / MRT_SYNTH_RATE) + 1;
    for (int k = 0; k < BINS; k++) {
        ta += a[k];
        tb += b[k];
    }
    for (int k = k0; k < BINS; k++) d += fabs(10.0 * log10((a[k] / ta) / (b[k] / tb)));
    return d / (BINS - k0);
}

/* The severity sets how far a fault takes the recording from its normal
 * sound: the long-term spectrum of the clip (same recording, same
 * background at +6 dB) departs further from the normal one's at severity 1
 * than at 0.05, in every type. */
START_TEST(graver_faults_depart_further_from_normal)
{
    float *m = malloc(N * sizeof *m);
    double ref[BINS], ps[BINS];
    ck_assert(m);
    for (int t = 0; t < MRT_SYNTH_NTYPES; t++) {
        double dist[2];
        mrt_synth_clip c = clip_of(t, 0, 6.0, 1);
        TU_OK(mrt_synth_render(&c, m, NULL, NULL));
        long_term_spectrum(m, ref);
        for (int s = 0; s < 2; s++) {
            c = clip_of(t, 1, 6.0, 1);
            c.fault_severity = s ? 1.0 : 0.05;
            TU_OK(mrt_synth_render(&c, m, NULL, NULL));
            long_term_spectrum(m, ps);
            dist[s] = spectral_distance_db(ps, ref);
        }
        ck_assert_msg(dist[1] > 2.0 * dist[0] && dist[1] > 0.3,
                      "%s: %.2f dB at severity 1, %.2f dB at 0.05", mrt_synth_type_name(t),
                      dist[1], dist[0]);
    }
    free(m);
}
END_TEST

/* Channel 1 of the array is the mono clip; other channels differ. */
START_TEST(array_channel_one_is_mono)
{
    float *mono = malloc(N * sizeof *mono), *arr = malloc(8 * (size_t)N * sizeof *arr);
    ck_assert(mono && arr);
    mrt_synth_clip c = clip_of(MRT_SYNTH_VALVE, 1, 0.0, 1);
    TU_OK(mrt_synth_render(&c, mono, NULL, NULL));
    c.channels = 8;
    TU_OK(mrt_synth_render(&c, arr, NULL, NULL));
    ck_assert(memcmp(mono, arr, N * sizeof *mono) == 0);
    for (int ch = 1; ch < 8; ch++)
        ck_assert(memcmp(arr, arr + (size_t)ch * N, N * sizeof *arr) != 0);
    free(mono);
    free(arr);
}
END_TEST

START_TEST(bad_descriptions_fail_naming_the_field)
{
    float x[1];
    mrt_synth_clip c = clip_of(7, 0, 0.0, 1);
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "unknown machine type 7"));
    c = clip_of(0, 0, 0.0, 2);
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "channels must be 1 or 8"));
    c = clip_of(0, 0, NAN, 1);
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "snr_db"));
    c = clip_of(0, 0, 0.0, 1);
    c.model_id = 100;
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "model_id"));
    c = clip_of(0, 1, 0.0, 1);
    c.fault_severity = 0.0;
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "fault_severity of an abnormal clip must be in (0, 1]"));
    c = clip_of(0, 0, 0.0, 1);
    c.fault_severity = 0.5;
    TU_FAILS(MRT_ERR_ARG, mrt_synth_render(&c, x, NULL, NULL));
    ck_assert(strstr(mrt_last_error(), "fault_severity must be 0 for a normal clip"));
    /* A folder path running through a regular file (permissions would not
     * do: the suite may run as root). */
    char file[] = "/tmp/machrt_synth_XXXXXX";
    int fd = mkstemp(file);
    ck_assert(fd >= 0);
    close(fd);
    char path[64];
    snprintf(path, sizeof path, "%s/x/clip.wav", file);
    const char *paths[1] = {path};
    c = clip_of(0, 0, 0.0, 1);
    TU_FAILS(MRT_ERR_IO, mrt_synth_write(&c, paths, 1, 1));
    ck_assert(strstr(mrt_last_error(), "cannot create folder"));
    ck_assert(strstr(mrt_last_error(), file));
    unlink(file);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("synth");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, names_round_trip);
    tcase_add_test(tc, render_is_deterministic_and_mixes_at_the_snr);
    tcase_add_test(tc, array_channel_one_is_mono);
    tcase_add_test(tc, slider_has_a_drive_line_over_a_quiet_midband);
    tcase_add_test(tc, normal_recordings_of_one_machine_vary);
    tcase_add_test(tc, graver_faults_depart_further_from_normal);
    tcase_add_test(tc, bad_descriptions_fail_naming_the_field);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
