/* Building blocks of the machine-sound synthesizer (synth*.c): a Philox
 * stream per purpose, biquad filters and the few sound primitives the
 * machines and the factory noise are made of. Everything works on double
 * buffers: one clip is 160000 samples, so precision costs nothing. */
#ifndef MACHRT_SYNTH_INTERNAL_H
#define MACHRT_SYNTH_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include "machrt/synth.h"

#define SYN_SR ((double)MRT_SYNTH_RATE)
#define SYN_PI 3.14159265358979323846

/* Purposes of the streams: distinct keys so that, say, adding a draw to the
 * fault code never shifts the normal sound of the same clip. */
enum {
    SYN_S_MODEL = 1, /* per (type, model id): the machine's build */
    SYN_S_CLIP,      /* per clip: operating point of this recording */
    SYN_S_SOURCE,    /* per clip: the machine's own noise samples */
    SYN_S_FAULT,     /* per clip: the fault's draws */
    SYN_S_NOISE,     /* per clip: factory background */
    SYN_S_PATH,      /* per clip: microphone placement (transfer function) */
    SYN_S_MIC        /* per clip and microphone: self-noise (+ mic index) */
};

/* A sequential stream over Philox counters 0, 1, 2, ... under one key. */
typedef struct {
    uint64_t key;
    uint64_t ctr;
    uint32_t buf[4];
    int pos;          /* next unused word of buf; 4 = empty */
    int has_spare;
    double spare;     /* second Box-Muller normal */
} syn_rng;

void syn_rng_init(syn_rng *r, uint64_t a, uint64_t b, uint64_t c);
uint32_t syn_u32(syn_rng *r);
double syn_uniform(syn_rng *r);                   /* (0, 1) */
double syn_range(syn_rng *r, double lo, double hi);
double syn_normal(syn_rng *r);
double syn_noise(syn_rng *r);                    /* zero mean, unit variance, cheap */
int syn_int(syn_rng *r, int n);                   /* 0 .. n-1 */
/* Exponential inter-arrival time for a Poisson process of `rate` per s. */
double syn_exp_interval(syn_rng *r, double rate);

/* RBJ biquad, direct form I state. */
typedef struct { double b0, b1, b2, a1, a2, x1, x2, y1, y2; } syn_biquad;
void syn_lowpass(syn_biquad *f, double fc, double q);
void syn_highpass(syn_biquad *f, double fc, double q);
void syn_bandpass(syn_biquad *f, double fc, double q); /* 0 dB at fc */
/* Peaking bell of gain_db at fc, and a high shelf of gain_db above fc. */
void syn_peaking(syn_biquad *f, double fc, double q, double gain_db);
void syn_highshelf(syn_biquad *f, double fc, double gain_db);
void syn_filter(syn_biquad *f, double *x, int n);

/* Sound primitives; each adds into x[0..n). */
void syn_add_white(syn_rng *r, double *x, int n, double amp);
/* Noise with a 1/f^(slope) power trend: white through a one-pole lowpass
 * at `corner` Hz, mixed back with white by `floor` (0..1). */
void syn_add_colored(syn_rng *r, double *x, int n, double amp, double corner, double floor);
/* A tone whose frequency follows f * (1 + dev[i]) when dev is not NULL. */
void syn_add_tone(double *x, int n, double f, double amp, double phase, const double *dev);
/* Damped resonances struck at sample `at`: sum of modes (freq, tau s). */
void syn_add_strike(double *x, int n, int at, const double *freq, const double *tau,
                    const double *gain, int modes, double amp);
/* Smooth random curve (values around 0, unit-ish spread) changing over
 * `seconds`: lowpassed noise, for drifts and swells. */
void syn_slow_noise(syn_rng *r, double *x, int n, double seconds);

double syn_rms(const double *x, int n);
void syn_scale(double *x, int n, double g);
/* x += comp scaled to RMS `level` (comp is left scaled); a silent comp
 * adds nothing. */
void syn_mix_in(double *x, double *comp, int n, double level);
static inline double syn_db(double db) { return pow(10.0, db / 20.0); }

/* Scratch space of the generators below, in samples: SYN_SCRATCH * n. */
#define SYN_SCRATCH 3

/* The machine sound of one clip (no background), unit RMS, into x[0..n)
 * (zeroed by the caller); synth_machines.c. */
void syn_machine(const mrt_synth_clip *clip, double *x, int n, double *scratch);
/* The factory background of one clip, unit RMS, into x (zeroed);
 * synth_noise.c. */
void syn_factory_noise(const mrt_synth_clip *clip, double *x, int n, double *scratch);

#endif
