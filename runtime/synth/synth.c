/* Synthesizer entry points: checking a clip description, mixing machine
 * and factory noise at the requested SNR, rendering the microphone array,
 * and writing corpora in parallel (the generators are synth_machines.c and
 * synth_noise.c). */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "machrt/audio_io.h"
#include "machrt/sys.h"
#include "machrt/tensor.h"
#include "synth_internal.h"

static const char *const type_names[MRT_SYNTH_NTYPES] = {"fan", "pump", "slider", "valve"};

const char *mrt_synth_type_name(int type)
{
    return type >= 0 && type < MRT_SYNTH_NTYPES ? type_names[type] : NULL;
}

int mrt_synth_type_from_name(const char *name)
{
    for (int t = 0; name && t < MRT_SYNTH_NTYPES; t++)
        if (strcmp(name, type_names[t]) == 0) return t;
    return -1;
}

mrt_status mrt_synth_check(const char *op, const mrt_synth_clip *c)
{
    if (!c) return mrt_fail(MRT_ERR_ARG, "%s: no clip description", op);
    if (!mrt_synth_type_name(c->type))
        return mrt_fail(MRT_ERR_ARG, "%s: unknown machine type %d (fan, pump, slider, valve)", op,
                        c->type);
    if (c->model_id < 0 || c->model_id > 99)
        return mrt_fail(MRT_ERR_ARG, "%s: model_id must be in 0..99, got %d", op, c->model_id);
    if (!(c->snr_db >= -30.0 && c->snr_db <= 30.0))
        return mrt_fail(MRT_ERR_ARG, "%s: snr_db must be in [-30, 30] dB, got %g", op, c->snr_db);
    if (c->abnormal && !(c->fault_severity > 0.0 && c->fault_severity <= 1.0))
        return mrt_fail(MRT_ERR_ARG, "%s: fault_severity of an abnormal clip must be in (0, 1], got %g",
                        op, c->fault_severity);
    if (!c->abnormal && c->fault_severity != 0.0)
        return mrt_fail(MRT_ERR_ARG, "%s: fault_severity must be 0 for a normal clip, got %g", op,
                        c->fault_severity);
    if (c->channels != 1 && c->channels != MRT_SYNTH_MAX_CHANNELS)
        return mrt_fail(MRT_ERR_ARG, "%s: channels must be 1 or %d, got %d", op,
                        MRT_SYNTH_MAX_CHANNELS, c->channels);
    return MRT_OK;
}

/* ---- the microphone array ------------------------------------------------- */

/* Eight microphones on a circle of this radius (metres); sound at 343 m/s.
 * Delays between microphones stay under 2 R / c = 6.3 samples at 16 kHz,
 * inside the PAD samples rendered on each side. */
#define ARRAY_RADIUS 0.068
#define SOUND_SPEED 343.0
#define PAD 8

/* Delay (samples) of microphone m relative to microphone 0 for a plane wave
 * from azimuth `az`: zero for microphone 0, so channel 1 of an array clip
 * is the mono clip. */
static double mic_delay(int m, double az)
{
    double th0 = 0.0, thm = 2.0 * SYN_PI * m / MRT_SYNTH_MAX_CHANNELS;
    return ARRAY_RADIUS / SOUND_SPEED * SYN_SR * (cos(th0 - az) - cos(thm - az));
}

/* x at position i - d (linear interpolation); i - d stays inside the
 * padded buffer. An integer delay reads the sample itself, exactly. */
static double delayed(const double *x, int i, double d)
{
    double pos = i + PAD - d;
    int i0 = (int)floor(pos);
    double fr = pos - i0;
    return fr == 0.0 ? x[i0] : x[i0] * (1.0 - fr) + x[i0 + 1] * fr;
}

/* Where the microphone stood for this recording: the path from the machine
 * to it colours the machine's sound (a tilt and two bells of a few dB),
 * differently for each recording, as a microphone set up again for every
 * session does. The background is diffuse and keeps its own colour. */
static void mic_placement(const mrt_synth_clip *clip, double *x, int n)
{
    syn_rng r;
    syn_rng_init(&r, clip->seed, clip->index, SYN_S_PATH);
    syn_biquad f;
    syn_highshelf(&f, syn_range(&r, 500.0, 3000.0), 3.0 * syn_normal(&r));
    syn_filter(&f, x, n);
    for (int k = 0; k < 2; k++) {
        syn_peaking(&f, 200.0 * pow(30.0, syn_uniform(&r)), syn_range(&r, 0.7, 2.5),
                    3.0 * syn_normal(&r));
        syn_filter(&f, x, n);
    }
}

mrt_status mrt_synth_render(const mrt_synth_clip *clip, float *mix, float *machine, float *noise)
{
    const char *op = "synth.clip";
    mrt_status st = mrt_synth_check(op, clip);
    if (st != MRT_OK) return st;
    if (!mix) return mrt_fail(MRT_ERR_ARG, "%s: no output buffer", op);
    const int n = MRT_SYNTH_FRAMES, np = n + 2 * PAD;
    double *buf = malloc((size_t)np * (3 + SYN_SCRATCH) * sizeof *buf);
    if (!buf) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
    double *s = buf, *q = buf + np, *w = buf + 2 * (size_t)np, *scratch = buf + 3 * (size_t)np;
    memset(buf, 0, (size_t)np * 2 * sizeof *buf);
    syn_machine(clip, s, np, scratch);
    mic_placement(clip, s, np);
    syn_factory_noise(clip, q, np, scratch);

    /* Where the machine and the noise come from, and each microphone's
     * sensitivity: fixed per model (the array stays put for a machine),
     * except the noise direction, which changes with every recording. */
    syn_rng mr, cr;
    syn_rng_init(&mr, SYN_S_MODEL, 100 + (uint64_t)clip->type, (uint64_t)clip->model_id);
    syn_rng_init(&cr, clip->seed, clip->index, SYN_S_MIC);
    double src_az = syn_range(&mr, 0.0, 2.0 * SYN_PI), noise_az = syn_range(&cr, 0.0, 2.0 * SYN_PI);
    double gain[MRT_SYNTH_MAX_CHANNELS];
    gain[0] = 1.0;
    for (int m = 1; m < MRT_SYNTH_MAX_CHANNELS; m++) gain[m] = syn_db(1.0 * syn_normal(&mr));
    double level_db = syn_range(&cr, -44.0, -34.0);

    /* Noise scale k from the signals as microphone 1 records them (machine
     * part s, noise part q plus the microphone's self-noise, 30 dB down),
     * then the overall gain that sets the recording level. */
    syn_rng sr0;
    syn_rng_init(&sr0, clip->seed, clip->index, SYN_S_MIC + 1);
    memset(w, 0, (size_t)np * sizeof *w);
    syn_add_white(&sr0, w, n, syn_db(-30.0));
    double ps = 0.0, pn = 0.0, psn = 0.0;
    for (int i = 0; i < n; i++) {
        double a = s[i + PAD], b = q[i + PAD] + w[i];
        ps += a * a;
        pn += b * b;
        psn += a * b;
    }
    double k = sqrt(ps / (pn * pow(10.0, clip->snr_db / 10.0)));
    double g = syn_db(level_db) / sqrt((ps + 2.0 * k * psn + k * k * pn) / n);

    for (int m = 0; m < clip->channels; m++) {
        if (m > 0) {
            syn_rng mic;
            syn_rng_init(&mic, clip->seed, clip->index, SYN_S_MIC + 1 + (uint64_t)m);
            memset(w, 0, (size_t)n * sizeof *w);
            syn_add_white(&mic, w, n, syn_db(-30.0));
        }
        double ds = mic_delay(m, src_az), dn = mic_delay(m, noise_az), gm = g * gain[m];
        float *out = mix + (size_t)m * n;
        for (int i = 0; i < n; i++) {
            float a = (float)(gm * delayed(s, i, ds));
            float b = (float)(gm * k * (delayed(q, i, dn) + w[i]));
            out[i] = a + b;
            if (machine) machine[(size_t)m * n + i] = a;
            if (noise) noise[(size_t)m * n + i] = b;
        }
    }
    free(buf);
    return MRT_OK;
}

/* ---- files ------------------------------------------------------------------ */

static mrt_status write_one(const mrt_synth_clip *clip, const char *path)
{
    const char *op = "synth.write";
    if (!path) return mrt_fail(MRT_ERR_ARG, "%s: clip %llu has no path", op,
                               (unsigned long long)clip->index);
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        char *dir = strndup(path, (size_t)(slash - path));
        if (!dir) return mrt_fail(MRT_ERR_NOMEM, "%s: out of memory", op);
        mrt_status st = mrt_sys_mkdirs(op, dir);
        free(dir);
        if (st != MRT_OK) return st;
    }
    mrt_tensor wave = {0};
    int64_t shape[2] = {clip->channels, MRT_SYNTH_FRAMES};
    mrt_status st = mrt_tensor_alloc_uninit(&wave, MRT_F32, 2, shape);
    if (st == MRT_OK) st = mrt_synth_render(clip, mrt_f32(&wave), NULL, NULL);
    if (st == MRT_OK) st = mrt_audio_save(path, &wave, MRT_SYNTH_RATE, NULL);
    mrt_tensor_release(&wave);
    return st;
}

mrt_status mrt_synth_write(const mrt_synth_clip *clips, const char *const *paths, int n,
                           int threads)
{
    const char *op = "synth.write";
    if (n < 0 || (n > 0 && (!clips || !paths)))
        return mrt_fail(MRT_ERR_ARG, "%s: bad clip list", op);
    for (int i = 0; i < n; i++) {
        mrt_status st = mrt_synth_check(op, &clips[i]);
        if (st != MRT_OK) return st;
    }
    if (threads <= 0) threads = mrt_get_num_threads();
    int first = INT_MAX;
    mrt_status first_st = MRT_OK;
    char msg[1024] = "";
    /* Dynamic schedule: clips differ in cost (valves, strikes), and the
     * order of completion does not touch any file's content. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = 0; i < n; i++) {
        mrt_status st = write_one(&clips[i], paths[i]);
        if (st != MRT_OK) {
#pragma omp critical(mrt_synth_write_error)
            if (i < first) {
                first = i;
                first_st = st;
                snprintf(msg, sizeof msg, "%s", mrt_last_error());
            }
        }
    }
    if (first_st != MRT_OK) return mrt_fail(first_st, "%s", msg);
    return MRT_OK;
}
