/* Random streams, filters and sound primitives of the synthesizer. */
#include <math.h>
#include "machrt/rng.h"
#include "synth_internal.h"

/* ---- random streams ------------------------------------------------------ */

/* SplitMix64's finalizer: folds the key parts so that nearby (seed, index)
 * pairs give unrelated Philox keys. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void syn_rng_init(syn_rng *r, uint64_t a, uint64_t b, uint64_t c)
{
    r->key = mix64(mix64(mix64(a + 0x9e3779b97f4a7c15ull) ^ b) ^ (c * 0x632be59bd9b4e019ull));
    r->ctr = 0;
    r->pos = 4;
    r->has_spare = 0;
    r->spare = 0.0;
}

uint32_t syn_u32(syn_rng *r)
{
    if (r->pos == 4) {
        mrt_philox4x32(r->ctr++, r->key, r->buf);
        r->pos = 0;
    }
    return r->buf[r->pos++];
}

double syn_uniform(syn_rng *r)
{
    return ((double)syn_u32(r) + 0.5) * (1.0 / 4294967296.0);
}

double syn_range(syn_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * syn_uniform(r);
}

double syn_normal(syn_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = syn_uniform(r), u2 = syn_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(2.0 * SYN_PI * u2);
    r->has_spare = 1;
    return rad * cos(2.0 * SYN_PI * u2);
}

int syn_int(syn_rng *r, int n)
{
    int v = (int)(syn_uniform(r) * n);
    return v < n ? v : n - 1;
}

double syn_exp_interval(syn_rng *r, double rate)
{
    return -log(syn_uniform(r)) / rate;
}

/* ---- filters (Robert Bristow-Johnson's cookbook) ------------------------- */

static void biquad_set(syn_biquad *f, double b0, double b1, double b2, double a0, double a1,
                       double a2)
{
    f->b0 = b0 / a0;
    f->b1 = b1 / a0;
    f->b2 = b2 / a0;
    f->a1 = a1 / a0;
    f->a2 = a2 / a0;
    f->x1 = f->x2 = f->y1 = f->y2 = 0.0;
}

/* Keeps a cutoff drawn near Nyquist from making the filter unstable. */
static double clamp_fc(double fc)
{
    if (fc < 1.0) return 1.0;
    if (fc > 0.45 * SYN_SR) return 0.45 * SYN_SR;
    return fc;
}

void syn_lowpass(syn_biquad *f, double fc, double q)
{
    double w = 2.0 * SYN_PI * clamp_fc(fc) / SYN_SR, c = cos(w), al = sin(w) / (2.0 * q);
    biquad_set(f, (1 - c) / 2, 1 - c, (1 - c) / 2, 1 + al, -2 * c, 1 - al);
}

void syn_highpass(syn_biquad *f, double fc, double q)
{
    double w = 2.0 * SYN_PI * clamp_fc(fc) / SYN_SR, c = cos(w), al = sin(w) / (2.0 * q);
    biquad_set(f, (1 + c) / 2, -(1 + c), (1 + c) / 2, 1 + al, -2 * c, 1 - al);
}

void syn_bandpass(syn_biquad *f, double fc, double q)
{
    double w = 2.0 * SYN_PI * clamp_fc(fc) / SYN_SR, c = cos(w), al = sin(w) / (2.0 * q);
    biquad_set(f, al, 0, -al, 1 + al, -2 * c, 1 - al);
}

void syn_peaking(syn_biquad *f, double fc, double q, double gain_db)
{
    double w = 2.0 * SYN_PI * clamp_fc(fc) / SYN_SR, c = cos(w), al = sin(w) / (2.0 * q);
    double A = pow(10.0, gain_db / 40.0);
    biquad_set(f, 1 + al * A, -2 * c, 1 - al * A, 1 + al / A, -2 * c, 1 - al / A);
}

void syn_highshelf(syn_biquad *f, double fc, double gain_db)
{
    /* Shelf slope S = 1. */
    double w = 2.0 * SYN_PI * clamp_fc(fc) / SYN_SR, c = cos(w), A = pow(10.0, gain_db / 40.0);
    double al = sin(w) / 2.0 * sqrt(2.0), sa = 2.0 * sqrt(A) * al;
    biquad_set(f, A * ((A + 1) + (A - 1) * c + sa), -2 * A * ((A - 1) + (A + 1) * c),
               A * ((A + 1) + (A - 1) * c - sa), (A + 1) - (A - 1) * c + sa,
               2 * ((A - 1) - (A + 1) * c), (A + 1) - (A - 1) * c - sa);
}

void syn_filter(syn_biquad *f, double *x, int n)
{
    double x1 = f->x1, x2 = f->x2, y1 = f->y1, y2 = f->y2;
    for (int i = 0; i < n; i++) {
        double y = f->b0 * x[i] + f->b1 * x1 + f->b2 * x2 - f->a1 * y1 - f->a2 * y2;
        x2 = x1;
        x1 = x[i];
        y2 = y1;
        y1 = y;
        x[i] = y;
    }
    f->x1 = x1;
    f->x2 = x2;
    f->y1 = y1;
    f->y2 = y2;
}

/* ---- primitives ------------------------------------------------------------ */

double syn_noise(syn_rng *r)
{
    /* Uniform with unit variance: one Philox word per sample instead of a
     * Box-Muller pair (log, sqrt, sin, cos). Every noise in the synthesizer
     * is filtered or summed, which makes it Gaussian anyway. */
    return ((double)syn_u32(r) * (1.0 / 4294967296.0) - 0.5) * 3.4641016151377544;
}

void syn_add_white(syn_rng *r, double *x, int n, double amp)
{
    for (int i = 0; i < n; i++) x[i] += amp * syn_noise(r);
}

void syn_add_colored(syn_rng *r, double *x, int n, double amp, double corner, double floor)
{
    /* One-pole lowpass: -6 dB/octave above `corner`, normalised so that its
     * output has about the input's RMS whatever the corner. */
    double a = exp(-2.0 * SYN_PI * corner / SYN_SR);
    double norm = sqrt((1.0 + a) / (1.0 - a));
    double y = 0.0;
    for (int i = 0; i < n; i++) {
        double w = syn_noise(r);
        y = a * y + (1.0 - a) * w;
        x[i] += amp * ((1.0 - floor) * y * norm + floor * w);
    }
}

void syn_add_tone(double *x, int n, double f, double amp, double phase, const double *dev)
{
    double step = 2.0 * SYN_PI * f / SYN_SR;
    if (!dev) {
        /* A rotating phasor: one complex multiply per sample instead of a
         * sin(); re-seeded from sin/cos every block so rounding cannot
         * drift the amplitude. */
        for (int b = 0; b < n; b += 4096) {
            double ph = phase + step * b, re = cos(ph), im = sin(ph);
            double cr = cos(step), ci = sin(step);
            int end = b + 4096 < n ? b + 4096 : n;
            for (int i = b; i < end; i++) {
                x[i] += amp * im;
                double nre = re * cr - im * ci;
                im = re * ci + im * cr;
                re = nre;
            }
        }
        return;
    }
    /* A varying frequency: the phasor turns by step * (1 + dev[i]); the
     * extra turn is small (|dev| <= 0.3), so a 4th-order expansion of its
     * cos and sin is exact to float precision, and the phasor is renormalised
     * every block. */
    double re = cos(phase), im = sin(phase), cs = cos(step), ss = sin(step);
    for (int i = 0; i < n; i++) {
        x[i] += amp * im;
        double d = step * dev[i], d2 = d * d;
        double cd = 1.0 - d2 / 2.0 + d2 * d2 / 24.0, sd = d * (1.0 - d2 / 6.0 + d2 * d2 / 120.0);
        double c = cs * cd - ss * sd, s = ss * cd + cs * sd;
        double nre = re * c - im * s;
        im = re * s + im * c;
        re = nre;
        if ((i & 4095) == 4095) {
            double norm = 1.0 / sqrt(re * re + im * im);
            re *= norm;
            im *= norm;
        }
    }
}

void syn_add_strike(double *x, int n, int at, const double *freq, const double *tau,
                    const double *gain, int modes, double amp)
{
    if (at < 0) at = 0;
    for (int m = 0; m < modes; m++) {
        /* Rendered until the mode has decayed by 60 dB. */
        int len = (int)(6.9 * tau[m] * SYN_SR) + 1;
        int end = at + len < n ? at + len : n;
        double dec = exp(-1.0 / (tau[m] * SYN_SR));
        double step = 2.0 * SYN_PI * freq[m] / SYN_SR;
        double env = amp * gain[m];
        /* Rotating phasor: one complex multiply per sample instead of sin(). */
        double re = 0.0, im = 1.0, cr = cos(step), ci = sin(step);
        for (int i = at; i < end; i++) {
            x[i] += env * im;
            double nre = re * cr - im * ci;
            im = re * ci + im * cr;
            re = nre;
            env *= dec;
        }
    }
}

void syn_slow_noise(syn_rng *r, double *x, int n, double seconds)
{
    /* Knots every `seconds`, joined by smoothstep (cubic) interpolation:
     * flat at each knot like a raised cosine, without a cos() per sample. */
    int hop = (int)(seconds * SYN_SR);
    if (hop < 1) hop = 1;
    double prev = syn_normal(r), next = syn_normal(r);
    for (int i = 0; i < n; i++) {
        int k = i % hop;
        if (k == 0 && i > 0) {
            prev = next;
            next = syn_normal(r);
        }
        double u = (double)k / hop, t = u * u * (3.0 - 2.0 * u);
        x[i] = prev + (next - prev) * t;
    }
}

double syn_rms(const double *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return n > 0 ? sqrt(s / n) : 0.0;
}

void syn_scale(double *x, int n, double g)
{
    for (int i = 0; i < n; i++) x[i] *= g;
}

void syn_mix_in(double *x, double *comp, int n, double level)
{
    double r = syn_rms(comp, n);
    if (r <= 0.0) return;
    syn_scale(comp, n, level / r);
    for (int i = 0; i < n; i++) x[i] += comp[i];
}
