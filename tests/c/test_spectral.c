/* Check suite for the spectral front end (stft.c, mel.c).
 *
 * Three independent references:
 *  - the STFT against a direct DFT in double precision, over a padded copy of
 *    the signal built here (so the framer's in-place padding is checked
 *    against the plain definition, not against itself);
 *  - the mel filterbank, mel spectrograms and dB values against torchaudio
 *    (tests/fixtures/mel_reference.safetensors, see gen_mel_fixtures.py; the
 *    settings of every case are read from the file's metadata);
 *  - decibels against log10 in double.
 * Fixtures are found in $MACHRT_FIXTURES or tests/fixtures (make test runs
 * from the repository root). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_util.h"
#include "machrt/safetensors.h"
#include "machrt/spectral.h"

/* ---- helpers ------------------------------------------------------------- */

static void fill_signal(mrt_tensor *t, uint64_t seed)
{
    tu_fill_uniform(t, seed, -1.0, 1.0);
}

/* Relative Frobenius error ||a - b|| / ||b|| over contiguous float32 data. */
static double rel_frobenius(const mrt_tensor *a, const mrt_tensor *b)
{
    tu_assert_shape(a, b->ndim, b->shape);
    double num = 0, den = 0;
    int64_t n = tu_numel(a);
    for (int64_t i = 0; i < n; i++) {
        double x = tu_get(a, i), y = tu_get(b, i);
        num += (x - y) * (x - y);
        den += y * y;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static mrt_mel_config reference_config(void)
{
    mrt_mel_config c;
    mrt_mel_config_init(&c, 22050);
    c.stft.n_fft = 2048;
    c.stft.win_length = 2048;
    c.stft.hop_length = 512;
    c.f_min = 50;
    c.f_max = 16000;
    c.n_mels = 128;
    return c;
}

/* ---- STFT vs direct DFT ------------------------------------------------ */

typedef struct {
    int n, n_fft, win, hop, center;
    mrt_pad_mode pad;
} dft_case;

static const dft_case DFT_CASES[] = {
    {300, 64, 64, 16, 1, MRT_PAD_REFLECT},
    {300, 64, 50, 10, 1, MRT_PAD_REFLECT},   /* window shorter than n_fft */
    {300, 64, 51, 10, 1, MRT_PAD_CONSTANT},  /* odd window, zero padding */
    {257, 63, 63, 7, 0, MRT_PAD_REFLECT},    /* odd n_fft, no centering */
    {200, 65, 40, 33, 1, MRT_PAD_REFLECT},   /* odd n_fft centred */
    {33, 64, 64, 16, 1, MRT_PAD_REFLECT},    /* shortest clip reflect allows */
    {5, 16, 16, 4, 1, MRT_PAD_CONSTANT},     /* frames made mostly of padding */
};
#define N_DFT_CASES ((int)(sizeof DFT_CASES / sizeof DFT_CASES[0]))

START_TEST(test_stft_matches_direct_dft)
{
    const dft_case *dc = &DFT_CASES[_i];
    mrt_stft_config c = {dc->n_fft, dc->win, dc->hop, dc->center, dc->pad};
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, dc->n);
    fill_signal(&x, 11 + (uint64_t)_i);
    TU_OK(mrt_stft(&c, &x, &y));
    const int nf = dc->n_fft / 2 + 1;
    const int pad = dc->center ? dc->n_fft / 2 : 0;
    const int64_t T = mrt_stft_frames(dc->n, dc->n_fft, dc->hop, dc->center);
    TU_ASSERT_SHAPE(&y, nf, T, 2);
    ck_assert_int_eq(T, 1 + (dc->n + 2 * pad - dc->n_fft) / dc->hop);

    /* The padded signal, written out as torch.nn.functional.pad defines it. */
    const int np = dc->n + 2 * pad;
    double *xp = calloc((size_t)np, sizeof *xp);
    double *w = calloc((size_t)dc->n_fft, sizeof *w);
    for (int p = 0; p < np; p++) {
        int i = p - pad;
        if (i < 0) i = dc->pad == MRT_PAD_REFLECT ? -i : -1;
        else if (i >= dc->n) i = dc->pad == MRT_PAD_REFLECT ? 2 * (dc->n - 1) - i : -1;
        xp[p] = i < 0 ? 0.0 : tu_get(&x, i);
    }
    const int left = (dc->n_fft - dc->win) / 2;
    for (int j = 0; j < dc->win; j++) w[left + j] = 0.5 - 0.5 * cos(2 * M_PI * j / dc->win);

    double worst = 0, peak = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int k = 0; k < nf; k++) {
            double re = 0, im = 0;
            for (int j = 0; j < dc->n_fft; j++) {
                double v = w[j] * xp[t * dc->hop + j];
                re += v * cos(2 * M_PI * (double)j * k / dc->n_fft);
                im -= v * sin(2 * M_PI * (double)j * k / dc->n_fft);
            }
            int64_t ire[3] = {k, t, 0}, iim[3] = {k, t, 1};
            double dre = tu_get_idx(&y, ire) - re, dim = tu_get_idx(&y, iim) - im;
            double err = sqrt(dre * dre + dim * dim);
            if (err > worst) worst = err;
            if (hypot(re, im) > peak) peak = hypot(re, im);
        }
    }
    ck_assert_msg(worst <= 1e-5 * peak + 1e-6, "case %d: max |error| %g (peak %g)", _i, worst, peak);
    free(xp);
    free(w);
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
}
END_TEST

START_TEST(test_stft_batch_and_strided_output)
{
    mrt_stft_config c;
    mrt_stft_config_init(&c, 32);
    mrt_tensor x = {0}, yb = {0}, y1 = {0}, row = {0}, big = {0}, view = {0};
    TU_ALLOC(&x, MRT_F32, 3, 100);
    fill_signal(&x, 5);
    TU_OK(mrt_stft(&c, &x, &yb));
    TU_ASSERT_SHAPE(&yb, 3, 17, 7, 2);
    TU_OK(mrt_view_select(&x, 0, 2, &row));
    TU_OK(mrt_stft(&c, &row, &y1));
    /* A transposed (non-contiguous) output view receives the same values. */
    TU_ALLOC(&big, MRT_F32, 7, 17, 2);
    TU_OK(mrt_view_transpose(&big, 0, 1, &view));
    TU_OK(mrt_stft(&c, &row, &view));
    for (int64_t i = 0; i < tu_numel(&y1); i++) {
        ck_assert_float_eq(tu_get(&y1, i), tu_get(&yb, 2 * tu_numel(&y1) + i));
        ck_assert_float_eq(tu_get(&y1, i), tu_get(&view, i));
    }
    mrt_tensor ts[] = {x, yb, y1, row, big, view};
    for (int i = 0; i < 6; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

START_TEST(test_frame_counts)
{
    /* torchaudio: 10 s at 22050 Hz -> 431 frames, 5 s -> 216. */
    ck_assert_int_eq(mrt_stft_frames(220500, 2048, 512, 1), 431);
    ck_assert_int_eq(mrt_stft_frames(110250, 2048, 512, 1), 216);
    ck_assert_int_eq(mrt_stft_frames(160000, 2048, 512, 1), 313);
    ck_assert_int_eq(mrt_stft_frames(4000, 255, 64, 1), 1 + (4000 + 254 - 255) / 64);
    ck_assert_int_eq(mrt_stft_frames(4000, 256, 128, 0), 1 + (4000 - 256) / 128);
    ck_assert_int_eq(mrt_stft_frames(100, 256, 128, 0), 0);

    /* And the transform produces exactly that many. */
    mrt_mel_config c = reference_config();
    mrt_mel_spec *m = NULL;
    TU_OK(mrt_mel_spec_new(&c, &m));
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, 2, 110250);
    TU_OK(mrt_mel_spec_forward(m, &x, &y));
    TU_ASSERT_SHAPE(&y, 2, 128, 216);
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
    TU_ALLOC(&x, MRT_F32, 220500);
    TU_OK(mrt_mel_spec_forward(m, &x, &y));
    TU_ASSERT_SHAPE(&y, 128, 431);
    /* Silence maps to exact zeros. */
    for (int64_t i = 0; i < tu_numel(&y); i++) ck_assert(tu_get(&y, i) == 0.0);
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
    mrt_mel_spec_free(m);
}
END_TEST

/* ---- mel scales and filterbank ------------------------------------------ */

START_TEST(test_mel_scales)
{
    /* HTK: 2595 log10(1 + f / 700); Slaney: linear below 1 kHz (15 mels
     * there), logarithmic above. */
    ck_assert(tu_close(mrt_hz_to_mel(1000, MRT_MEL_HTK), 2595 * log10(1 + 1000 / 700.0), 1e-12, 0));
    ck_assert(tu_close(mrt_hz_to_mel(1000, MRT_MEL_SLANEY), 15.0, 1e-12, 0));
    ck_assert(tu_close(mrt_hz_to_mel(500, MRT_MEL_SLANEY), 7.5, 1e-12, 0));
    ck_assert(tu_close(mrt_hz_to_mel(6400, MRT_MEL_SLANEY), 42.0, 1e-12, 0));
    for (double f = 0; f <= 20000; f += 137.5)
        for (int s = 0; s < 2; s++)
            ck_assert(tu_close(mrt_mel_to_hz(mrt_hz_to_mel(f, s), s), f, 1e-10, 1e-9));
}
END_TEST

START_TEST(test_filterbank_zero_columns_above_nyquist)
{
    for (int s = 0; s < 2; s++) {
        mrt_mel_config c = reference_config();
        c.mel_scale = s;
        mrt_mel_spec *m = NULL;
        TU_OK(mrt_mel_spec_new(&c, &m));
        mrt_tensor fb = {0}, fb2 = {0};
        TU_OK(mrt_mel_spec_filterbank(m, &fb));
        TU_ASSERT_SHAPE(&fb, 1025, 128);
        TU_OK(mrt_mel_fbanks(1025, 50, 16000, 128, 22050, MRT_MEL_NORM_NONE, s, &fb2));
        ck_assert(tu_max_abs_diff(&fb, &fb2) == 0.0);
        /* A filter is all zero exactly when its lower edge (mel point m)
         * is at or above Nyquist, so the zero filters are the top ones. */
        double m_lo = mrt_hz_to_mel(50, s), m_hi = mrt_hz_to_mel(16000, s);
        int zero = 0;
        for (int j = 0; j < 128; j++) {
            double lo = mrt_mel_to_hz(m_lo + (m_hi - m_lo) * j / 129.0, s);
            int all_zero = 1;
            for (int k = 0; k < 1025; k++) {
                int64_t idx[2] = {k, j};
                double v = tu_get_idx(&fb, idx);
                ck_assert(v >= 0.0 && v <= 1.0);
                if (v != 0.0) all_zero = 0;
            }
            ck_assert_msg(all_zero == (lo >= 11025.0), "scale %d filter %d: all_zero %d, "
                          "lower edge %g Hz", s, j, all_zero, lo);
            zero += all_zero;
        }
        ck_assert_int_gt(zero, 0);
        ck_assert_int_eq(zero, mrt_mel_spec_zero_filters(m));
        mrt_tensor_release(&fb);
        mrt_tensor_release(&fb2);
        mrt_mel_spec_free(m);
    }
}
END_TEST

/* ---- torchaudio fixtures ------------------------------------------------ */

static mrt_named_tensor *fx;
static int fx_n;
static cJSON *fx_meta;

static void load_fixtures(void)
{
    char path[1024];
    const char *dir = getenv("MACHRT_FIXTURES");
    snprintf(path, sizeof path, "%s/mel_reference.safetensors", dir ? dir : "tests/fixtures");
    char *meta = NULL;
    if (mrt_safetensors_load(path, &fx, &fx_n, &meta) != MRT_OK) {
        fx = NULL; /* each test then fails, naming the file */
        fx_n = 0;
    }
    fx_meta = meta ? cJSON_Parse(meta) : NULL;
    free(meta);
}

static void free_fixtures(void)
{
    mrt_safetensors_free(fx, fx_n);
    cJSON_Delete(fx_meta);
    fx = NULL;
    fx_n = 0;
    fx_meta = NULL;
}

static const mrt_tensor *fixture(const char *name)
{
    ck_assert_msg(fx_meta != NULL, "tests/fixtures/mel_reference.safetensors could not be read "
                  "(regenerate with tests/fixtures/gen_mel_fixtures.py)");
    for (int i = 0; i < fx_n; i++)
        if (strcmp(fx[i].name, name) == 0) return &fx[i].tensor;
    ck_abort_msg("fixture tensor '%s' not found in mel_reference.safetensors", name);
    return NULL;
}

/* Value of `key` in a "k=v k=v" settings string, into buf. */
static const char *setting(const char *s, const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = s; p && *p;) {
        while (*p == ' ') p++;
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            p += kl + 1;
            size_t n = strcspn(p, " ");
            if (n >= len) n = len - 1;
            memcpy(buf, p, n);
            buf[n] = '\0';
            return buf;
        }
        p = strchr(p, ' ');
    }
    ck_abort_msg("setting '%s' missing from \"%s\"", key, s);
    return NULL;
}

static mrt_mel_config parse_settings(const char *s)
{
    char b[64];
    mrt_mel_config c;
    mrt_mel_config_init(&c, atoll(setting(s, "sample_rate", b, sizeof b)));
    c.stft.n_fft = atoi(setting(s, "n_fft", b, sizeof b));
    c.stft.win_length = atoi(setting(s, "win_length", b, sizeof b));
    c.stft.hop_length = atoi(setting(s, "hop_length", b, sizeof b));
    c.stft.center = atoi(setting(s, "center", b, sizeof b));
    c.stft.pad_mode = strcmp(setting(s, "pad_mode", b, sizeof b), "constant") == 0
                          ? MRT_PAD_CONSTANT : MRT_PAD_REFLECT;
    c.f_min = atof(setting(s, "f_min", b, sizeof b));
    c.f_max = atof(setting(s, "f_max", b, sizeof b));
    c.n_mels = atoi(setting(s, "n_mels", b, sizeof b));
    c.power = atof(setting(s, "power", b, sizeof b));
    c.mel_scale = strcmp(setting(s, "mel_scale", b, sizeof b), "slaney") == 0 ? MRT_MEL_SLANEY
                                                                               : MRT_MEL_HTK;
    c.norm = strcmp(setting(s, "norm", b, sizeof b), "slaney") == 0 ? MRT_MEL_NORM_SLANEY
                                                                     : MRT_MEL_NORM_NONE;
    return c;
}

START_TEST(test_mel_matches_torchaudio)
{
    fixture("noise");
    int cases = 0;
    for (cJSON *e = fx_meta->child; e; e = e->next) {
        if (strncmp(e->string, "case.", 5) != 0) continue;
        const char *name = e->string + 5;
        char input[64], out_name[128];
        setting(e->valuestring, "input", input, sizeof input);
        snprintf(out_name, sizeof out_name, "mel.%s", name);
        mrt_mel_config c = parse_settings(e->valuestring);
        mrt_mel_spec *m = NULL;
        TU_OK(mrt_mel_spec_new(&c, &m));
        mrt_tensor y = {0};
        TU_OK(mrt_mel_spec_forward(m, fixture(input), &y));
        double err = rel_frobenius(&y, fixture(out_name));
        ck_assert_msg(err <= 1e-4, "case %s: relative Frobenius error %g", name, err);
        mrt_tensor_release(&y);
        mrt_mel_spec_free(m);
        cases++;
    }
    ck_assert_int_ge(cases, 10);
}
END_TEST

START_TEST(test_filterbank_matches_torchaudio)
{
    fixture("noise");
    int cases = 0;
    for (cJSON *e = fx_meta->child; e; e = e->next) {
        if (strncmp(e->string, "fbcase.", 7) != 0) continue;
        char name[128];
        snprintf(name, sizeof name, "fb.%s", e->string + 7);
        const mrt_tensor *ref = fixture(name);
        mrt_mel_config c = parse_settings(e->valuestring);
        mrt_mel_spec *m = NULL;
        TU_OK(mrt_mel_spec_new(&c, &m));
        mrt_tensor fb = {0};
        TU_OK(mrt_mel_spec_filterbank(m, &fb));
        tu_assert_shape(&fb, ref->ndim, ref->shape);
        /* torchaudio evaluates the triangles in float32, machrt in double
         * and rounds once: near Nyquist the band edges are ~11 kHz, where a
         * float32 step is 1e-3 Hz against slopes ~100 Hz wide, so
         * torchaudio's weights there are off by up to ~2e-5 of the peak.
         * Every all-zero filter of one must be all zero in the other. */
        double peak = 0;
        for (int64_t i = 0; i < tu_numel(ref); i++) peak = fmax(peak, fabs(tu_get(ref, i)));
        ck_assert_msg(tu_max_abs_diff(&fb, ref) <= 5e-5 * peak, "%s: max diff %g (peak %g)",
                      name, tu_max_abs_diff(&fb, ref), peak);
        for (int j = 0; j < c.n_mels; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < c.stft.n_fft / 2 + 1; k++) {
                int64_t idx[2] = {k, j};
                a = fmax(a, tu_get_idx(&fb, idx));
                b = fmax(b, tu_get_idx(ref, idx));
            }
            ck_assert_msg((a == 0) == (b == 0), "%s filter %d: max %g, torchaudio %g", name, j, a, b);
        }
        mrt_tensor_release(&fb);
        mrt_mel_spec_free(m);
        cases++;
    }
    ck_assert_int_eq(cases, 3);
}
END_TEST

/* dB of machrt's own mel against torchaudio's dB of its mel: within 0.01 dB
 * wherever the power is above 1e-8 of the spectrogram's maximum. */
START_TEST(test_db_end_to_end)
{
    const char *names[] = {"noise_htk", "chirp_htk"};
    for (int i = 0; i < 2; i++) {
        char key[64], in_name[64], ref_name[64], mel_name[64];
        snprintf(key, sizeof key, "case.%s", names[i]);
        const char *s = cJSON_GetObjectItem(fx_meta, key)->valuestring;
        setting(s, "input", in_name, sizeof in_name);
        snprintf(ref_name, sizeof ref_name, "db.%s", names[i]);
        snprintf(mel_name, sizeof mel_name, "mel.%s", names[i]);
        mrt_mel_config c = parse_settings(s);
        mrt_mel_spec *m = NULL;
        TU_OK(mrt_mel_spec_new(&c, &m));
        mrt_tensor y = {0}, db = {0};
        TU_OK(mrt_mel_spec_forward(m, fixture(in_name), &y));
        TU_OK(mrt_amplitude_to_db(&y, 10.0, -1.0, &db));
        const mrt_tensor *ref = fixture(ref_name), *pw = fixture(mel_name);
        double mx = 0;
        for (int64_t k = 0; k < tu_numel(pw); k++) mx = fmax(mx, tu_get(pw, k));
        int checked = 0;
        for (int64_t k = 0; k < tu_numel(pw); k++) {
            if (tu_get(pw, k) <= 1e-8 * mx) continue;
            checked++;
            ck_assert_msg(fabs(tu_get(&db, k) - tu_get(ref, k)) <= 0.01, "%s[%lld]: %g dB, "
                          "torchaudio %g dB", names[i], (long long)k, tu_get(&db, k), tu_get(ref, k));
        }
        /* The chirp is narrow-band: most of its bins are far below 1e-8 of
         * the peak, but still about a thousand are checked. */
        ck_assert_int_gt(checked, 1000);
        mrt_tensor_release(&y);
        mrt_tensor_release(&db);
        mrt_mel_spec_free(m);
    }
}
END_TEST

START_TEST(test_db_matches_torchaudio)
{
    fixture("noise");
    int cases = 0;
    for (cJSON *e = fx_meta->child; e; e = e->next) {
        if (strncmp(e->string, "dbcase.", 7) != 0) continue;
        char input[64], top[32], stype[32], name[128], shape_s[64];
        const char *s = e->valuestring;
        setting(s, "input", input, sizeof input);
        setting(s, "top_db", top, sizeof top);
        setting(s, "stype", stype, sizeof stype);
        snprintf(name, sizeof name, "db.%s", e->string + 7);
        const mrt_tensor *ref = fixture(name);
        mrt_tensor x = {0}, db = {0};
        /* Cases that reshape their input carry the reference's shape. */
        if (strstr(s, "reshape=")) {
            setting(s, "reshape", shape_s, sizeof shape_s);
            TU_OK(mrt_view_reshape(fixture(input), ref->ndim, ref->shape, &x));
        } else {
            mrt_tensor_share(&x, fixture(input));
        }
        double top_db = strcmp(top, "none") == 0 ? -1.0 : atof(top);
        double mul = strcmp(stype, "magnitude") == 0 ? 20.0 : 10.0;
        TU_OK(mrt_amplitude_to_db(&x, mul, top_db, &db));
        double worst = tu_max_abs_diff(&db, ref);
        ck_assert_msg(worst <= 1e-3, "%s: max |dB difference| %g", name, worst);
        mrt_tensor_release(&x);
        mrt_tensor_release(&db);
        cases++;
    }
    ck_assert_int_eq(cases, 6);
}
END_TEST

/* ---- decibels against the definition -------------------------------------- */

START_TEST(test_db_definition)
{
    /* Values spanning the float range, including the clamp region, zero,
     * negatives, denormals, infinity and NaN. */
    mrt_tensor x = {0}, y = {0};
    const int n = 4099; /* not a multiple of the vector width */
    TU_ALLOC(&x, MRT_F32, n);
    tu_rng r = tu_rng_seed(3);
    for (int i = 0; i < n; i++) tu_set(&x, i, (float)pow(10.0, tu_rng_uniform(&r, -14, 30)));
    float specials[] = {0.0f, -1.0f, 1e-45f, 1e-10f, 1.0f, 10.0f, 3.4e38f, INFINITY, NAN, -INFINITY};
    for (int i = 0; i < 10; i++) tu_set(&x, 7 * i, specials[i]);
    TU_OK(mrt_amplitude_to_db(&x, 10.0, -1.0, &y));
    for (int i = 0; i < n; i++) {
        double v = tu_get(&x, i), got = tu_get(&y, i);
        if (isnan(v)) {
            ck_assert(isnan(got));
            continue;
        }
        double want = 10.0 * log10(v > 1e-10 ? v : (double)1e-10f);
        if (isinf(want)) ck_assert(got == want);
        else ck_assert_msg(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)), "x = %g: %.9g dB, "
                           "expected %.9g", v, got, want);
    }
    ck_assert(tu_close(tu_get(&y, 0), -100.0, 1e-6, 0)); /* 0 -> -100 dB */
    mrt_tensor_release(&y);

    /* In place, and into a strided output, give the same values. */
    mrt_tensor a = {0}, big = {0}, view = {0};
    TU_OK(mrt_amplitude_to_db(&x, 20.0, -1.0, &a));
    TU_ALLOC(&big, MRT_F32, n, 2);
    TU_OK(mrt_view_select(&big, 1, 1, &view));
    TU_OK(mrt_amplitude_to_db(&x, 20.0, -1.0, &view));
    TU_OK(mrt_amplitude_to_db(&x, 20.0, -1.0, &x));
    for (int i = 0; i < n; i++) {
        double ai = tu_get(&a, i);
        if (isnan(ai)) continue;
        ck_assert(tu_get(&view, i) == ai && tu_get(&x, i) == ai);
    }
    mrt_tensor_release(&a);
    mrt_tensor_release(&big);
    mrt_tensor_release(&view);
    mrt_tensor_release(&x);
}
END_TEST

START_TEST(test_db_top_db_grouping)
{
    /* {2, 2, 3}: one 3-d group (torchaudio reads it as channels x freq x
     * time); {2, 1, 2, 3}: two groups. */
    mrt_tensor x = {0}, y = {0}, x4 = {0}, y4 = {0};
    TU_ALLOC(&x, MRT_F32, 2, 2, 3);
    for (int i = 0; i < 12; i++) tu_set(&x, i, i < 6 ? pow(10.0, i) : pow(10.0, i - 6) * 1e-6);
    TU_OK(mrt_amplitude_to_db(&x, 10.0, 25.0, &y));
    /* max = 50 dB: everything below 25 dB clamps to 25 */
    for (int i = 0; i < 12; i++) {
        double want = fmax(10.0 * log10(tu_get(&x, i)), 25.0);
        ck_assert(tu_close(tu_get(&y, i), want, 1e-6, 1e-5));
    }
    TU_OK(mrt_view_reshape(&x, TU_SHAPE(2, 1, 2, 3), &x4));
    TU_OK(mrt_amplitude_to_db(&x4, 10.0, 25.0, &y4));
    for (int i = 0; i < 12; i++) {
        double floor_db = i < 6 ? 25.0 : -35.0;
        double want = fmax(10.0 * log10(tu_get(&x, i)), floor_db);
        ck_assert(tu_close(tu_get(&y4, i), want, 1e-6, 1e-5));
    }
    mrt_tensor ts[] = {x, y, x4, y4};
    for (int i = 0; i < 4; i++) mrt_tensor_release(&ts[i]);
}
END_TEST

/* ---- threads, batches, views ---------------------------------------------- */

START_TEST(test_thread_count_independence)
{
    mrt_mel_config c = reference_config();
    mrt_mel_spec *m = NULL;
    TU_OK(mrt_mel_spec_new(&c, &m));
    mrt_tensor x = {0}, y1 = {0}, y2 = {0}, d1 = {0}, d2 = {0};
    TU_ALLOC(&x, MRT_F32, 3, 30000);
    fill_signal(&x, 9);
    int saved = mrt_get_num_threads();
    mrt_set_num_threads(1);
    TU_OK(mrt_mel_spec_forward(m, &x, &y1));
    TU_OK(mrt_amplitude_to_db(&y1, 10.0, 80.0, &d1));
    mrt_set_num_threads(3);
    TU_OK(mrt_mel_spec_forward(m, &x, &y2));
    TU_OK(mrt_amplitude_to_db(&y2, 10.0, 80.0, &d2));
    mrt_set_num_threads(saved);
    ck_assert(memcmp(mrt_f32(&y1), mrt_f32(&y2), sizeof(float) * (size_t)tu_numel(&y1)) == 0);
    ck_assert(memcmp(mrt_f32(&d1), mrt_f32(&d2), sizeof(float) * (size_t)tu_numel(&d1)) == 0);
    mrt_tensor ts[] = {x, y1, y2, d1, d2};
    for (int i = 0; i < 5; i++) mrt_tensor_release(&ts[i]);
    mrt_mel_spec_free(m);
}
END_TEST

START_TEST(test_batch_equals_single_and_views)
{
    mrt_mel_config c = reference_config();
    c.stft.n_fft = 512;
    c.stft.win_length = 400;
    c.stft.hop_length = 160;
    mrt_mel_spec *m = NULL;
    TU_OK(mrt_mel_spec_new(&c, &m));
    /* A {3, n} batch taken as a transposed view of {n, 3}: not contiguous. */
    mrt_tensor base = {0}, xb = {0}, yb = {0};
    TU_ALLOC(&base, MRT_F32, 5000, 3);
    fill_signal(&base, 21);
    TU_OK(mrt_view_transpose(&base, 0, 1, &xb));
    TU_OK(mrt_mel_spec_forward(m, &xb, &yb));
    int64_t T = mrt_stft_frames(5000, 512, 160, 1);
    TU_ASSERT_SHAPE(&yb, 3, 128, T);
    for (int b = 0; b < 3; b++) {
        mrt_tensor row = {0}, y = {0};
        TU_OK(mrt_view_select(&xb, 0, b, &row));
        TU_OK(mrt_mel_spec_forward(m, &row, &y));
        for (int64_t i = 0; i < tu_numel(&y); i++)
            ck_assert(tu_get(&y, i) == tu_get(&yb, b * tu_numel(&y) + i));
        mrt_tensor_release(&row);
        mrt_tensor_release(&y);
    }
    /* An existing output of the wrong shape is refused. */
    mrt_tensor bad = {0};
    TU_ALLOC(&bad, MRT_F32, 3, 128, T + 1);
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &xb, &bad));
    mrt_tensor ts[] = {base, xb, yb, bad};
    for (int i = 0; i < 4; i++) mrt_tensor_release(&ts[i]);
    mrt_mel_spec_free(m);
}
END_TEST

/* ---- bad input --------------------------------------------------------------- */

static void expect_config_error(mrt_mel_config c, const char *needle)
{
    mrt_mel_spec *m = (mrt_mel_spec *)&c; /* must be reset to NULL */
    TU_FAILS(MRT_ERR_ARG, mrt_mel_spec_new(&c, &m));
    ck_assert(m == NULL);
    TU_MSG_HAS("MelSpectrogram");
    TU_MSG_HAS(needle);
}

START_TEST(test_config_errors)
{
    mrt_mel_config c = reference_config();
    c.stft.win_length = 4096;
    expect_config_error(c, "n_fft (2048) must be at least win_length (4096)");
    c = reference_config();
    c.stft.hop_length = 0;
    expect_config_error(c, "hop_length");
    c.stft.hop_length = -3;
    expect_config_error(c, "hop_length");
    c = reference_config();
    c.f_min = 16000;
    expect_config_error(c, "f_min (16000) must be less than f_max (16000)");
    c.f_min = 17000;
    expect_config_error(c, "f_min");
    c = reference_config();
    c.f_min = -1;
    expect_config_error(c, "f_min");
    c = reference_config();
    c.n_mels = 0;
    expect_config_error(c, "n_mels");
    c = reference_config();
    c.stft.n_fft = 0;
    expect_config_error(c, "n_fft");
    c = reference_config();
    c.power = 0;
    expect_config_error(c, "power");
    c = reference_config();
    c.sample_rate = 0;
    expect_config_error(c, "sample_rate");
    c = reference_config();
    c.mel_scale = (mrt_mel_scale)7;
    expect_config_error(c, "mel_scale");
    c = reference_config();
    c.norm = (mrt_mel_norm)7;
    expect_config_error(c, "norm");
    c = reference_config();
    c.stft.pad_mode = (mrt_pad_mode)7;
    expect_config_error(c, "pad_mode");

    mrt_tensor fb = {0};
    TU_FAILS(MRT_ERR_ARG, mrt_mel_fbanks(1025, 100, 50, 128, 22050, MRT_MEL_NORM_NONE,
                                         MRT_MEL_HTK, &fb));
    TU_MSG_HAS("melscale_fbanks: f_min");
    ck_assert(fb.storage == NULL);
}
END_TEST

START_TEST(test_wave_errors)
{
    mrt_mel_config c = reference_config();
    mrt_mel_spec *m = NULL;
    TU_OK(mrt_mel_spec_new(&c, &m));
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, 2, 3, 4000);
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &x, &y));
    TU_MSG_HAS("wave must be {frames} or {B, frames}, got a 3-d tensor (2x3x4000)");
    mrt_tensor_release(&x);
    tu_alloc_scalar(&x, MRT_F32);
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &x, &y));
    TU_MSG_HAS("0-d");
    mrt_tensor_release(&x);
    TU_ALLOC(&x, MRT_I64, 4000);
    TU_FAILS(MRT_ERR_DTYPE, mrt_mel_spec_forward(m, &x, &y));
    TU_MSG_HAS("wave must be float32, got int64");
    mrt_tensor_release(&x);
    /* Reflect padding needs more than n_fft // 2 = 1024 samples. */
    TU_ALLOC(&x, MRT_F32, 1024);
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &x, &y));
    TU_MSG_HAS("wave has 1024 samples");
    TU_MSG_HAS("reflect padding of n_fft // 2 = 1024");
    TU_MSG_HAS("at least 1025");
    mrt_tensor_release(&x);
    TU_ALLOC(&x, MRT_F32, 1025);
    TU_OK(mrt_mel_spec_forward(m, &x, &y));
    TU_ASSERT_SHAPE(&y, 128, 3);
    mrt_tensor_release(&y);
    mrt_mel_spec_free(m);

    /* Constant padding accepts the short clip; no centering needs n_fft. */
    c.stft.pad_mode = MRT_PAD_CONSTANT;
    TU_OK(mrt_mel_spec_new(&c, &m));
    TU_OK(mrt_mel_spec_forward(m, &x, &y));
    mrt_tensor_release(&y);
    mrt_mel_spec_free(m);
    c.stft.center = 0;
    TU_OK(mrt_mel_spec_new(&c, &m));
    TU_FAILS(MRT_ERR_SHAPE, mrt_mel_spec_forward(m, &x, &y));
    TU_MSG_HAS("fewer than n_fft (2048)");
    mrt_mel_spec_free(m);
    mrt_tensor_release(&x);

    TU_ALLOC(&x, MRT_I64, 10);
    TU_FAILS(MRT_ERR_DTYPE, mrt_amplitude_to_db(&x, 10.0, -1.0, &y));
    TU_MSG_HAS("amplitude_to_db");
    mrt_tensor_release(&x);
    TU_ALLOC(&x, MRT_F32, 10);
    TU_FAILS(MRT_ERR_ARG, mrt_amplitude_to_db(&x, 10.0, INFINITY, &y));
    TU_MSG_HAS("top_db");
    mrt_tensor_release(&x);
}
END_TEST

int main(void)
{
    /* The all-zero filter warning is printed once per process; every test
     * runs in a fork of this one, so trigger it here to print it once for
     * the whole suite instead of once per test. */
    mrt_mel_config c = reference_config();
    mrt_mel_spec *m = NULL;
    if (mrt_mel_spec_new(&c, &m) == MRT_OK) mrt_mel_spec_free(m);

    Suite *s = suite_create("spectral");

    TCase *st = tcase_create("stft");
    tcase_set_timeout(st, 60);
    tcase_add_loop_test(st, test_stft_matches_direct_dft, 0, N_DFT_CASES);
    tcase_add_test(st, test_stft_batch_and_strided_output);
    tcase_add_test(st, test_frame_counts);
    suite_add_tcase(s, st);

    TCase *mel = tcase_create("mel");
    tcase_set_timeout(mel, 60);
    tcase_add_test(mel, test_mel_scales);
    tcase_add_test(mel, test_filterbank_zero_columns_above_nyquist);
    tcase_add_test(mel, test_thread_count_independence);
    tcase_add_test(mel, test_batch_equals_single_and_views);
    suite_add_tcase(s, mel);

    TCase *db = tcase_create("decibels");
    tcase_add_test(db, test_db_definition);
    tcase_add_test(db, test_db_top_db_grouping);
    suite_add_tcase(s, db);

    TCase *ta = tcase_create("torchaudio");
    /* Generous: sanitizer builds run several times slower. */
    tcase_set_timeout(ta, 120);
    tcase_add_unchecked_fixture(ta, load_fixtures, free_fixtures);
    tcase_add_test(ta, test_mel_matches_torchaudio);
    tcase_add_test(ta, test_filterbank_matches_torchaudio);
    tcase_add_test(ta, test_db_end_to_end);
    tcase_add_test(ta, test_db_matches_torchaudio);
    suite_add_tcase(s, ta);

    TCase *err = tcase_create("errors");
    tcase_add_test(err, test_config_errors);
    tcase_add_test(err, test_wave_errors);
    suite_add_tcase(s, err);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
