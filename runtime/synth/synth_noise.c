/* Factory background noise: broadband rumble with a random spectral tilt
 * that swells slowly, mains hum, tones of distant machinery, and impulsive
 * events (knocks, hammering, dropped parts). Every clip draws its own
 * factory, so the background is no cue to the machine type: in MIMII the
 * same recorded factory noise is mixed into every type. */
#include <math.h>
#include <string.h>
#include "synth_internal.h"

void syn_factory_noise(const mrt_synth_clip *clip, double *x, int n, double *scratch)
{
    double *a = scratch, *b = scratch + n;
    syn_rng r;
    syn_rng_init(&r, clip->seed, clip->index, SYN_S_NOISE);

    /* Broadband: a one-pole corner between 80 and 500 Hz sets the
     * tilt; the white floor how much top end remains. */
    syn_add_colored(&r, x, n, 1.0, syn_range(&r, 80.0, 500.0), syn_range(&r, 0.005, 0.04));
    syn_slow_noise(&r, b, n, syn_range(&r, 0.5, 3.0));
    double swell = syn_range(&r, 0.05, 0.3);
    for (int i = 0; i < n; i++) x[i] *= exp(swell * b[i]);
    double base = syn_rms(x, n);

    /* Mains hum and its harmonics. */
    memset(a, 0, (size_t)n * sizeof *a);
    double mains = syn_int(&r, 2) ? 60.0 : 50.0;
    for (int k = 1; k <= 6; k++)
        syn_add_tone(a, n, mains * k, syn_range(&r, 0.0, 1.0) * exp(-0.3 * k),
                     syn_range(&r, 0.0, 2.0 * SYN_PI), NULL);
    syn_mix_in(x, a, n, base * syn_db(syn_range(&r, -24.0, -6.0)));

    /* Distant machinery: a few steady lines, slowly waxing and waning. */
    int lines = syn_int(&r, 4);
    for (int k = 0; k < lines; k++) {
        memset(a, 0, (size_t)n * sizeof *a);
        syn_add_tone(a, n, syn_range(&r, 80.0, 3000.0), 1.0, syn_range(&r, 0, 2 * SYN_PI), NULL);
        syn_slow_noise(&r, b, n, 2.0);
        for (int i = 0; i < n; i++) a[i] *= 1.0 + 0.3 * b[i];
        syn_mix_in(x, a, n, base * syn_db(syn_range(&r, -26.0, -10.0)));
    }

    /* Impulsive events: decaying bursts of band noise at random times. */
    double rate = syn_range(&r, 0.1, 1.5);
    memset(a, 0, (size_t)n * sizeof *a);
    for (double t = syn_exp_interval(&r, rate); t < n / SYN_SR; t += syn_exp_interval(&r, rate)) {
        int at = (int)(t * SYN_SR);
        double tau = syn_range(&r, 0.01, 0.15), amp = base * syn_range(&r, 1.0, 6.0);
        int len = (int)(5.0 * tau * SYN_SR);
        if (at + len > n) len = n - at;
        syn_biquad f;
        syn_bandpass(&f, syn_range(&r, 300.0, 6000.0), syn_range(&r, 0.7, 3.0));
        for (int i = 0; i < len; i++) {
            double w = amp * syn_noise(&r) * exp(-i / (tau * SYN_SR));
            syn_filter(&f, &w, 1);
            a[at + i] += w;
        }
    }
    for (int i = 0; i < n; i++) x[i] += a[i];

    double rms = syn_rms(x, n);
    if (rms > 0.0) syn_scale(x, n, 1.0 / rms);
}
