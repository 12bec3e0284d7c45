/* The four machine types and their faults.
 *
 * Each machine draws its build from a stream keyed on (type, model id) and
 * this recording's operating point from the clip's streams, so model ids of
 * one type differ audibly (speeds, resonances, periods) while recordings of
 * one model vary only a little, as in MIMII. Components are made at unit
 * RMS and mixed at levels in dB relative to the main one, which keeps the
 * balance readable. The ranges are set so that the long-term spectra sit
 * near those of the real MIMII samples (scripts/synth_report.lua measures
 * it). */
#include <math.h>
#include <string.h>
#include "synth_internal.h"

typedef struct {
    syn_rng model, clip, src, fault;
} streams;

static void open_streams(const mrt_synth_clip *c, streams *s)
{
    syn_rng_init(&s->model, SYN_S_MODEL, (uint64_t)c->type, (uint64_t)c->model_id);
    syn_rng_init(&s->clip, c->seed, c->index, SYN_S_CLIP);
    syn_rng_init(&s->src, c->seed, c->index, SYN_S_SOURCE);
    syn_rng_init(&s->fault, c->seed, c->index, SYN_S_FAULT);
}

static void zero(double *x, int n) { memset(x, 0, (size_t)n * sizeof *x); }

/* Fault severity in (0, 1], from barely there to gross, as in MIMII's
 * abnormal sets (which mix subtle and gross faults); the plan chooses it
 * (modules/machrt/synth.lua) and the CSV records it. Components of a fault
 * are mixed at sev times their gross level, so 0.1 is 20 dB down. */
static double severity(const mrt_synth_clip *c) { return c->abnormal ? c->fault_severity : 0.0; }

/* A level in dB varied by this recording's load: normal spread `sd` dB. */
static double load_db(syn_rng *clip, double db, double sd) { return db + sd * syn_normal(clip); }

/* ---- fan --------------------------------------------------------------------- */

/* Airflow noise shaped by the duct, modulated at the blade-pass frequency;
 * blade-pass tone and harmonics; slow amplitude modulation. Faults:
 * unbalance (shaft-rate lines, modulation, excited structural lines) or
 * rubbing (a scrape once per revolution). */
static void fan(const mrt_synth_clip *c, double *x, int n, double *a, double *b, double *dev)
{
    streams s;
    open_streams(c, &s);
    double rot = syn_range(&s.model, 12.0, 40.0);
    int blades = 3 + syn_int(&s.model, 7);
    double corner = syn_range(&s.model, 60.0, 300.0), floor = syn_range(&s.model, 0.002, 0.01);
    double res_f = syn_range(&s.model, 200.0, 1000.0), res_q = syn_range(&s.model, 1.0, 4.0);
    double res_db = syn_range(&s.model, -12.0, -3.0);
    double tone_db = syn_range(&s.model, -22.0, -8.0), tone_decay = syn_range(&s.model, 0.2, 0.7);
    double bp_depth = syn_range(&s.model, 0.05, 0.3);
    double am_rate = syn_range(&s.model, 0.1, 0.8), am_depth = syn_range(&s.model, 0.02, 0.12);
    double harm[8];
    for (int k = 0; k < 8; k++) harm[k] = exp(-k * tone_decay) * syn_range(&s.model, 0.3, 1.0);

    /* This recording's operating point: speed and load move the lines, the
     * airflow's colour and the balance of the parts. */
    rot *= 1.0 + 0.04 * syn_normal(&s.clip);
    corner *= exp(0.2 * syn_normal(&s.clip));
    res_db = load_db(&s.clip, res_db, 2.0);
    tone_db = load_db(&s.clip, tone_db, 2.5);
    bp_depth *= exp(0.3 * syn_normal(&s.clip));
    am_depth *= exp(0.4 * syn_normal(&s.clip));
    double bpf = rot * blades, am_phase = syn_range(&s.clip, 0.0, 2.0 * SYN_PI);
    syn_slow_noise(&s.clip, dev, n, 1.5);
    syn_scale(dev, n, 0.003);

    /* Airflow, with a duct resonance. */
    zero(a, n);
    syn_add_colored(&s.src, a, n, 1.0, corner, floor);
    memcpy(b, a, (size_t)n * sizeof *b);
    syn_biquad f;
    syn_bandpass(&f, res_f, res_q);
    syn_filter(&f, b, n);
    syn_mix_in(a, b, n, syn_db(res_db) * syn_rms(a, n));
    zero(b, n);
    syn_add_tone(b, n, bpf, bp_depth, 0.0, NULL);
    for (int i = 0; i < n; i++) a[i] *= 1.0 + b[i];
    zero(b, n);
    syn_add_tone(b, n, am_rate, am_depth, am_phase, NULL);
    for (int i = 0; i < n; i++) a[i] *= 1.0 + b[i];
    syn_mix_in(x, a, n, 1.0);

    /* Blade-pass tone and harmonics, following the speed drift. */
    zero(a, n);
    for (int k = 0; k < 8 && bpf * (k + 1) < 7000.0; k++)
        syn_add_tone(a, n, bpf * (k + 1), harm[k], syn_range(&s.clip, 0, 2 * SYN_PI), dev);
    syn_add_tone(a, n, rot, 0.3 * harm[0], 0.0, dev);
    syn_mix_in(x, a, n, syn_db(tone_db));

    if (!c->abnormal) return;
    double sev = severity(c);
    zero(a, n);
    if (syn_int(&s.fault, 2) == 0) {
        /* Unbalance: strong shaft-rate lines, once-per-turn modulation, and
         * structural lines the vibration excites. */
        for (int k = 1; k <= 4; k++)
            syn_add_tone(a, n, rot * k, syn_range(&s.fault, 0.3, 1.0) / k, 0.0, dev);
        int lines = 1 + syn_int(&s.fault, 3);
        for (int k = 0; k < lines; k++)
            syn_add_tone(a, n, syn_range(&s.fault, 400.0, 2200.0), syn_range(&s.fault, 0.3, 1.0),
                         0.0, dev);
        syn_mix_in(x, a, n, sev * syn_db(tone_db + 14.0));
        zero(b, n);
        syn_add_tone(b, n, rot, 0.3 * sev, 0.0, NULL);
        for (int i = 0; i < n; i++) x[i] *= 1.0 + b[i];
    } else {
        /* Rubbing: a band of scraping noise gated once per revolution. */
        syn_add_white(&s.fault, a, n, 1.0);
        syn_bandpass(&f, syn_range(&s.fault, 1500.0, 5000.0), syn_range(&s.fault, 1.5, 4.0));
        syn_filter(&f, a, n);
        double width = syn_range(&s.fault, 0.1, 0.35), ph = 0.0, amp = 1.0;
        for (int i = 0; i < n; i++) {
            double prev = ph;
            ph += rot * (1.0 + dev[i]) / SYN_SR;
            if (ph >= 1.0) ph -= 1.0;
            if (ph < prev) amp = exp(0.4 * syn_normal(&s.fault));
            a[i] *= ph < width ? amp * sin(SYN_PI * ph / width) : 0.0;
        }
        syn_mix_in(x, a, n, sev * syn_db(3.0));
    }
}

/* ---- pump -------------------------------------------------------------------- */

/* Motor hum at twice the mains frequency and its harmonics, a rotor-slot
 * line, periodic pressure pulses at vane-pass rate ringing the casing, and
 * broad flow noise. Faults: a leak (hiss band) or clogging (irregular
 * pulses, pressure swings, cavitation crackle). */
static void pump(const mrt_synth_clip *c, double *x, int n, double *a, double *b, double *dev)
{
    streams s;
    open_streams(c, &s);
    double mains = syn_int(&s.model, 2) ? 60.0 : 50.0;
    double rotor = mains / 2.0 * syn_range(&s.model, 0.95, 0.99);
    int vanes = 3 + syn_int(&s.model, 5);
    double corner = syn_range(&s.model, 1200.0, 2500.0), floor = syn_range(&s.model, 0.05, 0.15);
    double hum_db = syn_range(&s.model, -18.0, -6.0), slot_db = syn_range(&s.model, -24.0, -10.0);
    double pulse_db = syn_range(&s.model, -10.0, 0.0);
    double slot_f = syn_range(&s.model, 900.0, 1600.0);
    double pf[2], ptau[2], pg[2] = {1.0, 0.5};
    pf[0] = syn_range(&s.model, 150.0, 700.0);
    pf[1] = pf[0] * syn_range(&s.model, 2.1, 3.3);
    ptau[0] = syn_range(&s.model, 0.003, 0.012);
    ptau[1] = ptau[0] * 0.6;
    double harm[8];
    for (int k = 0; k < 8; k++) harm[k] = exp(-k * 0.35) * syn_range(&s.model, 0.2, 1.0);

    /* Load: slip moves the rotor speed, pressure the balance of the parts. */
    rotor *= 1.0 + 0.01 * syn_normal(&s.clip);
    corner *= exp(0.15 * syn_normal(&s.clip));
    hum_db = load_db(&s.clip, hum_db, 2.0);
    slot_db = load_db(&s.clip, slot_db, 2.5);
    pulse_db = load_db(&s.clip, pulse_db, 2.5);
    syn_slow_noise(&s.clip, dev, n, 2.0);
    syn_scale(dev, n, 0.002);
    int fault = c->abnormal ? syn_int(&s.fault, 2) : -1;
    double sev = severity(c);

    /* Flow noise, swelling with pressure swings when clogged. */
    zero(a, n);
    syn_add_colored(&s.src, a, n, 1.0, corner, floor);
    syn_biquad f;
    syn_highpass(&f, 80.0, 0.7);
    syn_filter(&f, a, n);
    if (fault == 1) {
        syn_slow_noise(&s.fault, b, n, 0.4);
        for (int i = 0; i < n; i++) a[i] *= exp(1.0 * sev * b[i]);
    }
    syn_mix_in(x, a, n, 1.0);

    /* Hum (2x mains and harmonics) and the slot line with its sidebands. */
    zero(a, n);
    for (int k = 0; k < 8; k++)
        syn_add_tone(a, n, 2.0 * mains * (k + 1), harm[k], syn_range(&s.clip, 0, 2 * SYN_PI), NULL);
    syn_mix_in(x, a, n, syn_db(hum_db));
    zero(a, n);
    syn_add_tone(a, n, slot_f, 1.0, 0.0, dev);
    syn_add_tone(a, n, slot_f - 2.0 * mains, 0.4, 0.0, dev);
    syn_add_tone(a, n, slot_f + 2.0 * mains, 0.4, 0.0, dev);
    syn_mix_in(x, a, n, syn_db(slot_db));

    /* Pressure pulses at the vane-pass rate ringing the casing. */
    zero(a, n);
    double rate = rotor * vanes, jitter = fault == 1 ? 0.05 * sev : 0.004;
    double spread = fault == 1 ? 0.7 * sev : 0.1;
    for (double t = syn_range(&s.clip, 0.0, 1.0 / rate); t < n / SYN_SR;
         t += (1.0 + jitter * syn_normal(&s.src)) / rate) {
        double amp = exp(spread * syn_normal(&s.src));
        syn_add_strike(a, n, (int)(t * SYN_SR), pf, ptau, pg, 2, amp);
    }
    syn_mix_in(x, a, n, syn_db(pulse_db));

    if (fault == 0) {
        /* Leak: a hissing jet through a narrow gap. */
        zero(a, n);
        syn_add_white(&s.fault, a, n, 1.0);
        syn_bandpass(&f, syn_range(&s.fault, 1500.0, 5500.0), syn_range(&s.fault, 0.8, 3.0));
        syn_filter(&f, a, n);
        syn_mix_in(x, a, n, sev * syn_db(6.0));
    } else if (fault == 1) {
        /* Cavitation: sparse sharp crackles. */
        zero(a, n);
        double crate = syn_range(&s.fault, 15.0, 80.0);
        double cf[1] = {syn_range(&s.fault, 2000.0, 5000.0)}, ct[1] = {0.0008}, cg[1] = {1.0};
        for (double t = syn_exp_interval(&s.fault, crate); t < n / SYN_SR;
             t += syn_exp_interval(&s.fault, crate))
            syn_add_strike(a, n, (int)(t * SYN_SR), cf, ct, cg, 1, exp(0.8 * syn_normal(&s.fault)));
        syn_mix_in(x, a, n, sev * syn_db(4.0));
    }
}

/* ---- slider (slide rail) ----------------------------------------------------- */

/* A motor-driven slide rail running a positioning program: a few indexed
 * moves separated by short stops, then a longer pause, over and over. Each
 * move has a trapezoidal speed profile (ramp, cruise, ramp). While the
 * carriage moves, the drive motor sings at its electrical frequency (a fixed
 * line at cruise speed, gliding up and down during the ramps) with a train
 * of harmonics; the carriage rolling on the rail makes high, hissing
 * friction noise and a low structure-borne rumble; each stop thumps the
 * rail, the last one of a cycle (the end stop) hardest. The rail and its
 * carriage radiate little between about 300 Hz and 1 kHz, as the MIMII
 * slider samples show: the friction sits above it and the rumble below.
 * Fault: rail damage (irregular knocks, rattle and a squeal while moving,
 * a drive line that labours). */

/* Carriage speed (0..1) of a program of `moves` moves of `move` s with
 * `ramp` s ramps, `stop` s between moves and `pause` s after the last one,
 * started `start` s into a cycle; writes the times (s) where moves end into
 * `ends` (at most `max_ends`, flagging the last move of a cycle in `last`)
 * and returns how many. */
static int slider_program(double *v, int n, int moves, double move, double ramp, double stop,
                          double pause, double start, double *ends, int *last, int max_ends)
{
    double cycle = moves * move + (moves - 1) * stop + pause;
    int count = 0;
    zero(v, n);
    for (double c0 = -start; c0 < n / SYN_SR; c0 += cycle) {
        for (int m = 0; m < moves; m++) {
            double t0 = c0 + m * (move + stop), t1 = t0 + move;
            if (t1 <= 0.0) continue;
            if (t0 >= n / SYN_SR) break;
            int i0 = t0 < 0.0 ? 0 : (int)(t0 * SYN_SR), i1 = (int)(t1 * SYN_SR);
            for (int i = i0; i < i1 && i < n; i++) {
                double u = i / SYN_SR - t0, d = fmin(u, move - u);
                v[i] = d >= ramp ? 1.0 : 0.5 - 0.5 * cos(SYN_PI * d / ramp);
            }
            if (t1 < n / SYN_SR && count < max_ends) {
                ends[count] = t1;
                last[count++] = m == moves - 1;
            }
        }
    }
    return count;
}

#define SLIDER_MAX_ENDS 128

static void slider(const mrt_synth_clip *c, double *x, int n, double *a, double *v, double *dev)
{
    streams s;
    open_streams(c, &s);
    /* The build: drive, program, rail. */
    double drive_f = syn_range(&s.model, 215.0, 290.0);
    double harm[10];
    int strong = 4 + syn_int(&s.model, 7); /* an upper harmonic the drive favours */
    harm[0] = 1.0;
    for (int k = 1; k < 10; k++)
        harm[k] = syn_range(&s.model, 0.03, k < 3 ? 0.1 : 0.2) *
                  (k + 1 == strong ? syn_range(&s.model, 1.5, 3.0) : 1.0);
    int moves = 2 + syn_int(&s.model, 4);
    double move = syn_range(&s.model, 0.25, 0.7), ramp = syn_range(&s.model, 0.03, 0.08);
    double stop = syn_range(&s.model, 0.05, 0.2), pause = syn_range(&s.model, 0.2, 0.6);
    double fric_f = syn_range(&s.model, 2500.0, 5500.0), fric_q = syn_range(&s.model, 0.4, 0.8);
    double rumble_f = syn_range(&s.model, 60.0, 180.0);
    double fric_db = syn_range(&s.model, -11.0, -5.0), rumble_db = syn_range(&s.model, -8.0, -2.0);
    double hit_db = syn_range(&s.model, -12.0, -5.0);
    double mf[3], mt[3], mg[3];
    mf[0] = syn_range(&s.model, 60.0, 200.0);
    mt[0] = syn_range(&s.model, 0.02, 0.06);
    mg[0] = 1.0;
    for (int k = 1; k < 3; k++) {
        mf[k] = syn_range(&s.model, 1200.0, 4000.0);
        mt[k] = syn_range(&s.model, 0.003, 0.015);
        mg[k] = syn_range(&s.model, 0.2, 0.6);
    }

    /* This recording's operating point. */
    drive_f *= 1.0 + 0.03 * syn_normal(&s.clip);
    double tempo = 1.0 + 0.05 * syn_normal(&s.clip);
    fric_db = load_db(&s.clip, fric_db, 2.0);
    rumble_db = load_db(&s.clip, rumble_db, 2.0);
    hit_db = load_db(&s.clip, hit_db, 2.0);
    move *= tempo;
    stop *= tempo;
    pause *= tempo;
    double cycle = moves * move + (moves - 1) * stop + pause;
    double ends[SLIDER_MAX_ENDS];
    int last[SLIDER_MAX_ENDS];
    int nends = slider_program(v, n, moves, move, ramp, stop, pause,
                               syn_range(&s.clip, 0.0, cycle), ends, last, SLIDER_MAX_ENDS);
    int fault = c->abnormal;
    double sev = severity(c);

    /* Drive line and harmonics: pitch follows the speed through the ramps,
     * level follows it too (the motor is idle at a stop). A damaged rail
     * loads the motor, which strains audibly (wavering, louder line). */
    for (int i = 0; i < n; i++) dev[i] = 0.3 * (v[i] - 1.0);
    zero(a, n);
    for (int k = 0; k < 10 && drive_f * (k + 1) < 7500.0; k++)
        syn_add_tone(a, n, drive_f * (k + 1), harm[k], syn_range(&s.clip, 0, 2 * SYN_PI), dev);
    if (fault) {
        syn_slow_noise(&s.fault, dev, n, syn_range(&s.fault, 0.05, 0.2));
        for (int i = 0; i < n; i++) a[i] *= v[i] * exp(0.8 * sev * dev[i]);
    } else {
        for (int i = 0; i < n; i++) a[i] *= v[i];
    }
    syn_mix_in(x, a, n, 1.0);

    /* Friction of the carriage on the rail: high band noise following the
     * speed, with a little left at rest (other axes, the lubricant pump). */
    zero(a, n);
    syn_add_white(&s.src, a, n, 1.0);
    syn_biquad f;
    syn_bandpass(&f, fric_f, fric_q);
    syn_filter(&f, a, n);
    syn_highpass(&f, 1500.0, 0.7);
    syn_filter(&f, a, n);
    for (int i = 0; i < n; i++) a[i] *= 0.2 + v[i];
    syn_mix_in(x, a, n, syn_db(fric_db + (fault ? 12.0 * sev : 0.0)));

    /* Rumble of the moving mass through the frame. */
    zero(a, n);
    syn_add_white(&s.src, a, n, 1.0);
    syn_lowpass(&f, rumble_f, 0.9);
    syn_filter(&f, a, n);
    syn_lowpass(&f, rumble_f, 0.9);
    syn_filter(&f, a, n);
    for (int i = 0; i < n; i++) a[i] *= 0.3 + v[i];
    syn_mix_in(x, a, n, syn_db(rumble_db));

    /* A thump at every stop, the end stop hardest. */
    zero(a, n);
    for (int e = 0; e < nends; e++)
        syn_add_strike(a, n, (int)(ends[e] * SYN_SR), mf, mt, mg, 3,
                       (last[e] ? 1.0 : 0.4) * syn_range(&s.clip, 0.8, 1.2));
    syn_mix_in(x, a, n, syn_db(hit_db));

    if (!fault) return;
    /* Rail damage: knocks at irregular places along the stroke, and rattle. */
    zero(a, n);
    double rate = syn_range(&s.fault, 3.0, 12.0);
    double df[3], dt[3];
    for (int k = 0; k < 3; k++) {
        df[k] = mf[k] * syn_range(&s.fault, 0.8, 1.3);
        dt[k] = mt[k] * 0.5;
    }
    for (double t = syn_exp_interval(&s.fault, rate); t < n / SYN_SR;
         t += syn_exp_interval(&s.fault, rate)) {
        int at = (int)(t * SYN_SR);
        if (v[at < n ? at : n - 1] > 0.2)
            syn_add_strike(a, n, at, df, dt, mg, 3, syn_range(&s.fault, 0.3, 1.0));
    }
    syn_mix_in(x, a, n, sev * syn_db(hit_db + 14.0));
    zero(dev, n);
    syn_add_tone(dev, n, syn_range(&s.fault, 15.0, 40.0), 1.0, 0.0, NULL);
    for (int i = 0; i < n; i++) {
        double r2 = dev[i] * dev[i];
        dev[i] = v[i] * r2 * r2;
    }
    zero(a, n);
    syn_add_white(&s.fault, a, n, 1.0);
    syn_highpass(&f, syn_range(&s.fault, 1500.0, 4000.0), 0.7);
    syn_filter(&f, a, n);
    for (int i = 0; i < n; i++) a[i] *= dev[i];
    syn_mix_in(x, a, n, sev * syn_db(6.0));
    /* The carriage squeals on the damaged track while it moves. */
    zero(a, n);
    syn_add_tone(a, n, syn_range(&s.fault, 1000.0, 4000.0), 1.0, 0.0, NULL);
    for (int i = 0; i < n; i++) a[i] *= v[i];
    syn_mix_in(x, a, n, sev * syn_db(8.0));
}

/* ---- valve ------------------------------------------------------------------- */

/* Open/close cycles: a click at each change, the solenoid's buzz while it
 * is energised, the hiss of flow while open, quiet between. Fault:
 * contamination (irregular timing, chatter, a seat that leaks when shut
 * and whistles through the gap). */
static void valve(const mrt_synth_clip *c, double *x, int n, double *a, double *g, double *dev)
{
    streams s;
    open_streams(c, &s);
    double period = syn_range(&s.model, 0.7, 2.5), open = syn_range(&s.model, 0.2, 0.5);
    double mains = syn_int(&s.model, 2) ? 60.0 : 50.0;
    double hiss_f = syn_range(&s.model, 1500.0, 4000.0);
    double buzz_db = syn_range(&s.model, -10.0, 0.0), click_db = syn_range(&s.model, 0.0, 8.0);
    double mf[3], mt[3], mg[3];
    for (int k = 0; k < 3; k++) {
        mf[k] = syn_range(&s.model, 300.0, 2500.0);
        mt[k] = syn_range(&s.model, 0.002, 0.01);
        mg[k] = syn_range(&s.model, 0.3, 1.0);
    }
    double harm[6];
    for (int k = 0; k < 6; k++) harm[k] = syn_range(&s.model, 0.1, 1.0) / (k + 1);

    /* This recording's program and supply: period, duty, levels. */
    period *= 1.0 + 0.08 * syn_normal(&s.clip);
    open = fmin(0.6, fmax(0.15, open * (1.0 + 0.1 * syn_normal(&s.clip))));
    hiss_f *= exp(0.1 * syn_normal(&s.clip));
    buzz_db = load_db(&s.clip, buzz_db, 2.0);
    click_db = load_db(&s.clip, click_db, 2.0);
    int fault = c->abnormal;
    double sev = severity(c);
    double jitter = fault ? 0.25 * sev : 0.01;
    double chatter = fault ? 1.0 * sev : 0.0, leak = fault ? 1.0 * sev : 0.0;

    /* The gate (1 while open) and the clicks at its edges. */
    for (int i = 0; i < n; i++) g[i] = 0.0;
    zero(dev, n);
    for (double t = -syn_range(&s.clip, 0.0, period); t < n / SYN_SR; t += period) {
        double on = t + jitter * period * syn_normal(fault ? &s.fault : &s.clip);
        double off = on + open * period * (1.0 + (fault ? 0.5 * sev : 0.02) *
                                                  syn_normal(fault ? &s.fault : &s.clip));
        if (fault && syn_uniform(&s.fault) < 0.15 * sev) continue; /* a missed cycle */
        int i0 = (int)(on * SYN_SR), i1 = (int)(off * SYN_SR);
        for (int i = i0 < 0 ? 0 : i0; i < i1 && i < n; i++) g[i] = 1.0;
        double edge[2] = {on, off};
        for (int e = 0; e < 2; e++) {
            if (edge[e] < 0 || edge[e] >= n / SYN_SR) continue;
            int at = (int)(edge[e] * SYN_SR);
            syn_add_strike(dev, n, at, mf, mt, mg, 3, e ? 0.7 : 1.0);
            if (chatter > 0 && syn_uniform(&s.fault) < chatter)
                syn_add_strike(dev, n, at + (int)(syn_range(&s.fault, 0.01, 0.04) * SYN_SR), mf,
                               mt, mg, 3, syn_range(&s.fault, 0.3, 0.7));
        }
    }
    /* Soften the gate edges (a few ms), as coil current and flow ramp. */
    double k = exp(-1.0 / (0.004 * SYN_SR)), y = 0.0;
    for (int i = 0; i < n; i++) g[i] = y = k * y + (1.0 - k) * g[i];

    /* Hiss of flow through the open valve, or a leaking seat. */
    zero(a, n);
    syn_add_white(&s.src, a, n, 1.0);
    syn_biquad f;
    syn_highpass(&f, hiss_f, 0.7);
    syn_filter(&f, a, n);
    for (int i = 0; i < n; i++) a[i] *= leak + (1.0 - leak) * g[i];
    syn_mix_in(x, a, n, 1.0);

    /* Solenoid buzz while energised. */
    zero(a, n);
    for (int h = 0; h < 6; h++)
        syn_add_tone(a, n, 2.0 * mains * (h + 1), harm[h], syn_range(&s.clip, 0, 2 * SYN_PI), NULL);
    for (int i = 0; i < n; i++) a[i] *= g[i];
    syn_mix_in(x, a, n, syn_db(buzz_db));

    syn_mix_in(x, dev, n, syn_db(click_db));

    if (!fault) return;
    /* The jet through a seat that no longer closes: a narrow whistle band
     * of its own, open or shut. */
    zero(a, n);
    syn_add_white(&s.fault, a, n, 1.0);
    syn_bandpass(&f, syn_range(&s.fault, 1000.0, 6000.0), syn_range(&s.fault, 2.0, 6.0));
    syn_filter(&f, a, n);
    syn_mix_in(x, a, n, sev * syn_db(6.0));
}

void syn_machine(const mrt_synth_clip *clip, double *x, int n, double *scratch)
{
    double *a = scratch, *b = scratch + n, *c = scratch + 2 * (size_t)n;
    switch (clip->type) {
    case MRT_SYNTH_FAN: fan(clip, x, n, a, b, c); break;
    case MRT_SYNTH_PUMP: pump(clip, x, n, a, b, c); break;
    case MRT_SYNTH_SLIDER: slider(clip, x, n, a, b, c); break;
    default: valve(clip, x, n, a, b, c); break;
    }
    double r = syn_rms(x, n);
    if (r > 0.0) syn_scale(x, n, 1.0 / r);
}
