/* Check suite for audio decoding/encoding, resampling and chunking.
 *
 * Test files are written here, at test time, by libsndfile called directly
 * (integer samples, so the expected floats are known exactly: a 16-bit
 * sample s reads as s / 32768), and files written by mrt_audio_save are read
 * back by libsndfile directly: neither direction only agrees with itself.
 * Broken files (truncated, empty, unknown codec) are made by cutting or
 * patching those bytes. Resampling is checked against the ideal tone at
 * the new rate, computed from its formula. Files live in a private directory
 * under /tmp made by main() and removed at the end.
 *
 * The real MIMII clips (8 channels, 16 kHz) are used when
 * MACHRT_SAMPLE_DATA names their folder; without it that test says SKIP. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>

#include "check_util.h"
#include "machrt/audio_io.h"

static char g_dir[64];

#define TPATH(var, name)    \
    char var[256];          \
    snprintf(var, sizeof var, "%s/%s", g_dir, (name))

/* ---- fixtures written with libsndfile ------------------------------------- */

/* Deterministic 16-bit sample of channel c, frame i: distinct per channel,
 * covering the full range including -32768 and 32767. */
static int16_t sample16(int c, int64_t i)
{
    if (i == 0) return c % 2 ? 32767 : -32768;
    uint64_t h = (uint64_t)(i * 2654435761u) ^ ((uint64_t)c * 0x9E3779B97F4A7C15ull);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (int16_t)(h & 0xFFFF);
}

/* Writes `frames` frames of sample16 as 16-bit ints through libsndfile in
 * the given format (PCM subtypes widen them exactly). */
static void write_file16(const char *path, int format, int channels, int64_t frames, int rate)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    ck_assert_msg(sf != NULL, "cannot write %s: %s", path, sf_strerror(NULL));
    /* Float files get s / 32768 (libsndfile stores raw integers otherwise). */
    sf_command(sf, SFC_SET_SCALE_INT_FLOAT_WRITE, NULL, SF_TRUE);
    short *buf = malloc(sizeof(short) * (size_t)channels * (size_t)frames);
    ck_assert(buf != NULL);
    for (int64_t i = 0; i < frames; i++)
        for (int c = 0; c < channels; c++) buf[i * channels + c] = sample16(c, i);
    ck_assert(sf_writef_short(sf, buf, frames) == frames);
    ck_assert(sf_close(sf) == 0);
    free(buf);
}

/* Writes a float file (any float-capable format) of the given samples,
 * {channels, frames} channel-major. */
static void write_float_file(const char *path, int format, int channels, int64_t frames,
                             int rate, const float *data)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    ck_assert_msg(sf != NULL, "cannot write %s: %s", path, sf_strerror(NULL));
    float *buf = malloc(sizeof(float) * (size_t)channels * (size_t)frames);
    ck_assert(buf != NULL);
    for (int64_t i = 0; i < frames; i++)
        for (int c = 0; c < channels; c++) buf[i * channels + c] = data[c * frames + i];
    ck_assert(sf_writef_float(sf, buf, frames) == frames);
    ck_assert(sf_close(sf) == 0);
    free(buf);
}

/* Reads a whole file with libsndfile: {channels, frames} channel-major,
 * malloc'd. */
static float *read_file_direct(const char *path, SF_INFO *info)
{
    memset(info, 0, sizeof *info);
    SNDFILE *sf = sf_open(path, SFM_READ, info);
    ck_assert_msg(sf != NULL, "libsndfile cannot read %s: %s", path, sf_strerror(NULL));
    int ch = info->channels;
    int64_t n = info->frames;
    float *buf = malloc(sizeof(float) * (size_t)ch * (size_t)n);
    float *out = malloc(sizeof(float) * (size_t)ch * (size_t)n);
    ck_assert(buf && out);
    ck_assert(sf_readf_float(sf, buf, n) == n);
    sf_close(sf);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < ch; c++) out[c * n + i] = buf[i * ch + c];
    free(buf);
    return out;
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    ck_assert(p != NULL);
    ck_assert(fread(p, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert(fwrite(p, 1, n, f) == n);
    ck_assert(fclose(f) == 0);
}

/* Copies the first `keep` bytes of src to dst. */
static void truncate_copy(const char *src, const char *dst, size_t keep)
{
    size_t n;
    unsigned char *p = read_bytes(src, &n);
    ck_assert(keep <= n);
    write_bytes(dst, p, keep);
    free(p);
}

static size_t file_size(const char *path)
{
    struct stat st;
    ck_assert(stat(path, &st) == 0);
    return (size_t)st.st_size;
}

/* Contiguous float data of an mrt tensor (the tests only read what the
 * library allocated, which is contiguous). */
static const float *data_of(const mrt_tensor *t)
{
    ck_assert(mrt_tensor_is_contiguous(t));
    return mrt_f32(t);
}

static mrt_tensor load_ok(const char *path, const mrt_audio_load_opts *o, int *sr)
{
    mrt_tensor t = {0};
    TU_OK(mrt_audio_load(path, o, &t, sr));
    return t;
}

/* ---- formats ------------------------------------------------------------------ */

typedef struct {
    const char *file;
    int format;
    const char *fmt, *enc;
    int exact; /* lossless: samples come back exactly */
} fmt_case;

static const fmt_case FORMATS[] = {
    {"f.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, "wav", "pcm16", 1},
    {"f24.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, "wav", "pcm24", 1},
    {"f32.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_32, "wav", "pcm32", 1},
    {"ff.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, "wav", "float", 1},
    {"f.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, "flac", "pcm16", 1},
    {"f24.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, "flac", "pcm24", 1},
    {"f.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, "ogg", "vorbis", 0},
    {"f.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, "aiff", "pcm16", 1},
    {"f24.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_24, "aiff", "pcm24", 1},
    {"f32.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_32, "aiff", "pcm32", 1},
    {"ff.aiff", SF_FORMAT_AIFF | SF_FORMAT_FLOAT, "aiff", "float", 1},
};
#define N_FORMATS ((int)(sizeof FORMATS / sizeof FORMATS[0]))

START_TEST(test_info_every_format)
{
    for (int k = 0; k < N_FORMATS; k++) {
        TPATH(p, FORMATS[k].file);
        write_file16(p, FORMATS[k].format, 3, 5000, 22050);
        mrt_audio_info info;
        TU_OK(mrt_audio_read_info(p, &info));
        ck_assert_int_eq(info.sample_rate, 22050);
        ck_assert_int_eq(info.channels, 3);
        ck_assert_int_eq(info.frames, 5000);
        ck_assert(fabs(info.seconds - 5000.0 / 22050) < 1e-12);
        ck_assert_str_eq(info.format, FORMATS[k].fmt);
        ck_assert_str_eq(info.encoding, FORMATS[k].enc);
    }
}
END_TEST

/* Every lossless format decodes to s / 32768 exactly, laid out
 * {channels, frames}; Vorbis decodes to a shape-correct approximation. */
START_TEST(test_load_every_format)
{
    const int ch = 3;
    const int64_t n = 4000;
    for (int k = 0; k < N_FORMATS; k++) {
        TPATH(p, FORMATS[k].file);
        write_file16(p, FORMATS[k].format, ch, n, 16000);
        int sr = 0;
        mrt_tensor w = load_ok(p, NULL, &sr);
        ck_assert_int_eq(sr, 16000);
        TU_ASSERT_SHAPE(&w, ch, n);
        const float *x = data_of(&w);
        if (FORMATS[k].exact) {
            for (int c = 0; c < ch; c++)
                for (int64_t i = 0; i < n; i++)
                    ck_assert_msg(x[c * n + i] == (float)sample16(c, i) / 32768.0f,
                                  "%s: channel %d frame %lld: %g, expected %g", FORMATS[k].file,
                                  c, (long long)i, (double)x[c * n + i],
                                  sample16(c, i) / 32768.0);
        } else {
            /* Lossy: equal to what libsndfile itself decodes. */
            SF_INFO info;
            float *ref = read_file_direct(p, &info);
            for (int64_t i = 0; i < ch * n; i++) ck_assert(x[i] == ref[i]);
            free(ref);
        }
        mrt_tensor_release(&w);
    }
}
END_TEST

/* Float files come back as stored, values beyond [-1, 1] included. */
START_TEST(test_load_float_values_as_stored)
{
    const float data[] = {1.5f, -2.25f, 0.1f, 1e-30f, -0.0f, 3.0e5f, 0.25f, -1.0f};
    const char *files[] = {"vals.wav", "vals.aiff"};
    const int fmts[] = {SF_FORMAT_WAV | SF_FORMAT_FLOAT, SF_FORMAT_AIFF | SF_FORMAT_FLOAT};
    for (int k = 0; k < 2; k++) {
        TPATH(p, files[k]);
        write_float_file(p, fmts[k], 2, 4, 16000, data);
        mrt_tensor w = load_ok(p, NULL, NULL);
        TU_ASSERT_SHAPE(&w, 2, 4);
        ck_assert(memcmp(data_of(&w), data, sizeof data) == 0);
        mrt_tensor_release(&w);
    }
}
END_TEST

/* Channel counts from 1 to 13 keep their rows in order. */
START_TEST(test_load_channel_counts)
{
    const int counts[] = {1, 2, 5, 8, 13};
    for (int k = 0; k < 5; k++) {
        TPATH(p, "chans.wav");
        write_file16(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, counts[k], 777, 8000);
        mrt_tensor w = load_ok(p, NULL, NULL);
        TU_ASSERT_SHAPE(&w, counts[k], 777);
        const float *x = data_of(&w);
        for (int c = 0; c < counts[k]; c++)
            for (int64_t i = 0; i < 777; i++)
                ck_assert(x[c * 777 + i] == (float)sample16(c, i) / 32768.0f);
        mrt_tensor_release(&w);
    }
}
END_TEST

/* Reads longer than the decoder's block size cross block boundaries. */
START_TEST(test_load_long_file_blocks)
{
    TPATH(p, "long.flac");
    const int64_t n = 3 * 16384 + 123;
    write_file16(p, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 2, n, 16000);
    mrt_tensor w = load_ok(p, NULL, NULL);
    TU_ASSERT_SHAPE(&w, 2, n);
    const float *x = data_of(&w);
    for (int c = 0; c < 2; c++)
        for (int64_t i = 0; i < n; i++) ck_assert(x[c * n + i] == sample16(c, i) / 32768.0f);
    mrt_tensor_release(&w);
}
END_TEST

START_TEST(test_load_channel_and_mono)
{
    const int ch = 5;
    const int64_t n = 20000;
    const char *files[] = {"cm.wav", "cm.flac", "cm.aiff"};
    const int fmts[] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
                        SF_FORMAT_AIFF | SF_FORMAT_PCM_24};
    for (int f = 0; f < 3; f++) {
        TPATH(p, files[f]);
        write_file16(p, fmts[f], ch, n, 16000);
        mrt_tensor all = load_ok(p, NULL, NULL);
        const float *a = data_of(&all);
        for (int c = 0; c < ch; c++) {
            mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
            o.channel = c;
            mrt_tensor one = load_ok(p, &o, NULL);
            TU_ASSERT_SHAPE(&one, n);
            const float *x = data_of(&one);
            for (int64_t i = 0; i < n; i++) ck_assert(x[i] == a[c * n + i]);
            mrt_tensor_release(&one);
        }
        mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
        o.mono = 1;
        mrt_tensor mono = load_ok(p, &o, NULL);
        TU_ASSERT_SHAPE(&mono, n);
        const float *m = data_of(&mono);
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int c = 0; c < ch; c++) s += a[c * n + i];
            ck_assert_msg(fabs(m[i] - s / ch) <= 1e-6, "mono frame %lld: %g vs %g",
                          (long long)i, (double)m[i], s / ch);
        }
        mrt_tensor_release(&mono);
        mrt_tensor_release(&all);
    }
}
END_TEST

/* offset/duration select exactly round(offset * sr) .. + round(duration *
 * sr) frames, in every format (Vorbis included, near its end too). */
START_TEST(test_load_offset_duration)
{
    const int64_t n = 48000;
    for (int k = 0; k < N_FORMATS; k++) {
        TPATH(p, FORMATS[k].file);
        write_file16(p, FORMATS[k].format, 2, n, 16000);
        mrt_tensor all = load_ok(p, NULL, NULL);
        const float *a = data_of(&all);
        const struct { double off, dur; int64_t first, count; } cases[] = {
            {1.25, 0.5, 20000, 8000},     /* exact */
            {0.0, 0.001, 0, 16},
            {1.00003, 0.00003, 16000, 0}, /* rounds: 16000.48 -> 16000, 0.48 -> 0 */
            {0.00004, 0.00004, 1, 1},     /* 0.64 -> 1 */
            {2.5, 100.0, 40000, 8000},    /* past the end: cut at the end */
            {2.5, INFINITY, 40000, 8000},
            {2.99990, INFINITY, 47998, 2},
        };
        for (int j = 0; j < 7; j++) {
            mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
            o.offset = cases[j].off;
            o.duration = cases[j].dur;
            mrt_tensor w = load_ok(p, &o, NULL);
            TU_ASSERT_SHAPE(&w, 2, cases[j].count);
            const float *x = data_of(&w);
            for (int c = 0; c < 2; c++)
                for (int64_t i = 0; i < cases[j].count; i++)
                    ck_assert_msg(x[c * cases[j].count + i] == a[c * n + cases[j].first + i],
                                  "%s case %d channel %d frame %lld", FORMATS[k].file, j, c,
                                  (long long)i);
            mrt_tensor_release(&w);
            /* With a channel pick too. */
            o.channel = 1;
            w = load_ok(p, &o, NULL);
            TU_ASSERT_SHAPE(&w, cases[j].count);
            x = data_of(&w);
            for (int64_t i = 0; i < cases[j].count; i++)
                ck_assert(x[i] == a[n + cases[j].first + i]);
            mrt_tensor_release(&w);
        }
        mrt_tensor_release(&all);
    }
}
END_TEST

START_TEST(test_load_resampled)
{
    TPATH(p, "rs.wav");
    write_file16(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 2, 16000, 16000);
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    o.sample_rate = 22050;
    int sr = 0;
    mrt_tensor w = load_ok(p, &o, &sr);
    ck_assert_int_eq(sr, 22050);
    TU_ASSERT_SHAPE(&w, 2, 22050);
    mrt_tensor raw = load_ok(p, NULL, NULL), ref = {0};
    TU_OK(mrt_audio_resample(&raw, 16000, 22050, MRT_RESAMPLER_SOXR, &ref));
    ck_assert(memcmp(data_of(&w), data_of(&ref), sizeof(float) * 2 * 22050) == 0);
    /* The file's own rate: no resampling. */
    o.sample_rate = 16000;
    mrt_tensor same = load_ok(p, &o, &sr);
    ck_assert_int_eq(sr, 16000);
    ck_assert(memcmp(data_of(&same), data_of(&raw), sizeof(float) * 2 * 16000) == 0);
    mrt_tensor_release(&w);
    mrt_tensor_release(&raw);
    mrt_tensor_release(&ref);
    mrt_tensor_release(&same);
}
END_TEST

/* ---- load errors ---------------------------------------------------------- */

START_TEST(test_load_missing_and_directory)
{
    TPATH(p, "does_not_exist.wav");
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_IO, mrt_audio_load(p, NULL, &t, NULL));
    TU_MSG_HAS(p);
    TU_MSG_HAS("No such file");
    ck_assert_ptr_null(t.storage);
    mrt_audio_info info;
    TU_FAILS(MRT_ERR_IO, mrt_audio_read_info(p, &info));
    TU_MSG_HAS("audio.info");
    TU_FAILS(MRT_ERR_IO, mrt_audio_load(g_dir, NULL, &t, NULL));
    TU_MSG_HAS("directory");
}
END_TEST

START_TEST(test_load_empty_and_not_audio)
{
    TPATH(e, "empty.wav");
    write_bytes(e, "", 0);
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(e, NULL, &t, NULL));
    TU_MSG_HAS(e);
    TU_MSG_HAS("empty (0 bytes)");

    TPATH(x, "notes.wav");
    const char text[] = "these are notes about a recording, not a recording\n";
    write_bytes(x, text, sizeof text - 1);
    TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(x, NULL, &t, NULL));
    TU_MSG_HAS(x);
    TU_MSG_HAS("not an audio file");

    /* Random bytes behind no header at all. */
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)sample16(0, (int64_t)i + 1);
    TPATH(j, "junk.flac");
    write_bytes(j, junk, sizeof junk);
    TU_FAILS_ANY(mrt_audio_load(j, NULL, &t, NULL));
    TU_MSG_HAS(j);
    ck_assert_ptr_null(t.storage);
}
END_TEST

/* A file with a valid header and no frames. */
START_TEST(test_load_zero_frames)
{
    const char *files[] = {"zero.wav", "zero.flac", "zero.aiff"};
    const int fmts[] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
                        SF_FORMAT_AIFF | SF_FORMAT_PCM_16};
    for (int k = 0; k < 3; k++) {
        TPATH(p, files[k]);
        write_file16(p, fmts[k], 2, 0, 16000);
        mrt_tensor t = {0};
        TU_FAILS_ANY(mrt_audio_load(p, NULL, &t, NULL));
        TU_MSG_HAS(p);
        mrt_audio_info info;
        TU_FAILS_ANY(mrt_audio_read_info(p, &info));
        TU_MSG_HAS(p);
    }
    TPATH(w, "zero.wav");
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(w, NULL, &t, NULL));
    TU_MSG_HAS("no audio frames");
}
END_TEST

/* A file cut short in its data is an error, not a shorter clip. */
START_TEST(test_load_truncated)
{
    TPATH(full_wav, "full.wav");
    TPATH(full_aiff, "full.aiff");
    TPATH(full_flac, "full.flac");
    write_file16(full_wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 2, 16000, 16000);
    write_file16(full_aiff, SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 2, 16000, 16000);
    write_file16(full_flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 2, 16000, 16000);
    const char *srcs[] = {full_wav, full_aiff, full_flac};
    for (int k = 0; k < 3; k++) {
        TPATH(cut, k == 0 ? "cut.wav" : k == 1 ? "cut.aiff" : "cut.flac");
        truncate_copy(srcs[k], cut, file_size(srcs[k]) / 2);
        mrt_tensor t = {0};
        TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(cut, NULL, &t, NULL));
        TU_MSG_HAS(cut);
        TU_MSG_HAS("truncated");
        ck_assert_ptr_null(t.storage);
        if (k < 2) { /* the header already shows it */
            mrt_audio_info info;
            TU_FAILS(MRT_ERR_FORMAT, mrt_audio_read_info(cut, &info));
            TU_MSG_HAS("truncated");
        }
        /* Cut inside the header. */
        TPATH(head, k == 0 ? "head.wav" : k == 1 ? "head.aiff" : "head.flac");
        truncate_copy(srcs[k], head, 20);
        TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(head, NULL, &t, NULL));
        TU_MSG_HAS(head);
    }
    /* Reading only frames before the cut still works: the file is refused
     * as a whole for WAV/AIFF (the header shows it), and a FLAC read that
     * stops before the damage succeeds. */
    TPATH(cut_flac, "cut.flac");
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    o.duration = 0.1;
    mrt_tensor t = load_ok(cut_flac, &o, NULL);
    TU_ASSERT_SHAPE(&t, 2, 1600);
    mrt_tensor_release(&t);
}
END_TEST

/* NaN, Inf and absurd magnitudes in a float file make it corrupt: the load
 * fails naming the file, the frame and the channel (1-based), whichever
 * channel is asked for, instead of handing a model NaN (3e38 is finite but
 * overflows in the mono mean and the resampler: found by make fuzz). */
START_TEST(test_load_non_finite_samples)
{
    const float bad[] = {NAN, INFINITY, -INFINITY, 3e38f};
    const char *names[] = {"nan.wav", "inf.aiff", "minf.wav", "huge.wav"};
    const char *shown[] = {"sample NaN", "sample Inf", "sample -Inf", "sample 3e+38"};
    const int fmts[] = {SF_FORMAT_WAV | SF_FORMAT_FLOAT, SF_FORMAT_AIFF | SF_FORMAT_FLOAT,
                        SF_FORMAT_WAV | SF_FORMAT_DOUBLE, SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    for (int k = 0; k < 4; k++) {
        float data[2 * 40];
        for (int i = 0; i < 80; i++) data[i] = 0.01f * (float)(i % 7);
        data[40 + 29] = bad[k]; /* channel 2, frame 30 */
        TPATH(p, names[k]);
        write_float_file(p, fmts[k], 2, 40, 16000, data);
        mrt_audio_load_opts one = MRT_AUDIO_LOAD_DEFAULTS;
        one.channel = 0;
        const mrt_audio_load_opts *opts[] = {NULL, &one};
        for (int j = 0; j < 2; j++) {
            mrt_tensor t = {0};
            TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(p, opts[j], &t, NULL));
            TU_MSG_HAS(p);
            TU_MSG_HAS("frame 30, channel 2");
            TU_MSG_HAS(shown[k]);
            ck_assert_ptr_null(t.storage);
        }
        /* Frames before the damage are still what the file holds. */
        mrt_audio_load_opts head = MRT_AUDIO_LOAD_DEFAULTS;
        head.duration = 29.0 / 16000;
        mrt_tensor t = load_ok(p, &head, NULL);
        TU_ASSERT_SHAPE(&t, 2, 29);
        mrt_tensor_release(&t);
    }
}
END_TEST

/* Overwrites `n` bytes at `at` of the file at `path`. */
static void patch_bytes(const char *path, size_t at, const unsigned char *with, size_t n)
{
    size_t len;
    unsigned char *p = read_bytes(path, &len);
    ck_assert(at + n <= len);
    memcpy(p + at, with, n);
    write_bytes(path, p, len);
    free(p);
}

/* A small file whose header claims an enormous length (a FLAC STREAMINFO
 * of 2^36 - 1 samples: 275 GB as floats; an MP3 Xing header of 2^32 - 1
 * frames: 9.9 TB) fails as truncated, naming the file, after decoding what
 * it holds: it never asks for the memory the header claims. */
START_TEST(test_load_header_claims_huge_length)
{
    TPATH(flac, "claims.flac");
    write_file16(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1, 3000, 16000);
    /* STREAMINFO at byte 8; its 36-bit total-samples field ends at byte 25. */
    size_t n;
    unsigned char *b = read_bytes(flac, &n);
    unsigned char total[5] = {(unsigned char)(b[21] | 0x0F), 0xFF, 0xFF, 0xFF, 0xFF};
    free(b);
    patch_bytes(flac, 21, total, sizeof total);

    TPATH(mp3, "claims.mp3");
    write_file16(mp3, SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III, 1, 3000, 16000);
    b = read_bytes(mp3, &n);
    size_t xing = 0;
    while (xing + 12 <= n && memcmp(b + xing, "Xing", 4) != 0) xing++;
    ck_assert_msg(xing + 12 <= n, "libsndfile's MP3 writer left no Xing header");
    size_t frames_at = xing + 8; /* after the tag and its flags */
    free(b);
    const unsigned char all_ones[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    patch_bytes(mp3, frames_at, all_ones, sizeof all_ones);

    const char *paths[] = {flac, mp3};
    for (int k = 0; k < 2; k++) {
        mrt_audio_info info;
        TU_OK(mrt_audio_read_info(paths[k], &info));
        ck_assert_msg(info.frames > (int64_t)1 << 32, "%s: header claims only %lld frames",
                      paths[k], (long long)info.frames);
        mrt_tensor t = {0};
        TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(paths[k], NULL, &t, NULL));
        TU_MSG_HAS(paths[k]);
        TU_MSG_HAS("truncated or corrupt");
        ck_assert_ptr_null(t.storage);
    }
}
END_TEST

/* Files compressed far beyond what a header is believed for up front
 * (FLAC of constant channels) still load whole: the buffer grows as the
 * frames arrive, rows in order. */
START_TEST(test_load_highly_compressed)
{
    const int64_t frames = 200000;
    float *data = malloc(sizeof(float) * 3 * (size_t)frames);
    ck_assert(data != NULL);
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < frames; i++) data[c * frames + i] = 0.125f * (float)(c + 1);
    TPATH(p, "constant.flac");
    write_float_file(p, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 3, frames, 16000, data);
    ck_assert_msg((double)file_size(p) * 16 < 3.0 * (double)frames,
                  "%s is only %zu bytes: not compressed enough to need growing", p, file_size(p));
    mrt_tensor t = load_ok(p, NULL, NULL);
    TU_ASSERT_SHAPE(&t, 3, frames);
    ck_assert(memcmp(data_of(&t), data, sizeof(float) * 3 * (size_t)frames) == 0);
    mrt_tensor_release(&t);
    mrt_audio_load_opts mono = MRT_AUDIO_LOAD_DEFAULTS;
    mono.mono = 1;
    t = load_ok(p, &mono, NULL);
    TU_ASSERT_SHAPE(&t, frames);
    for (int64_t i = 0; i < frames; i++) ck_assert(data_of(&t)[i] == 0.25f);
    mrt_tensor_release(&t);
    free(data);
}
END_TEST

/* An upsampling that would blow a file up to gigabytes (2 MB at 1 Hz ->
 * 82 GiB at 22050 Hz) is refused naming the file and both rates; the same
 * factor on a short file is fine. */
START_TEST(test_load_upsampling_bound)
{
    TPATH(big, "one_hz.wav");
    write_file16(big, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 1000000, 1);
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    o.sample_rate = 22050;
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(big, &o, &t, NULL));
    TU_MSG_HAS(big);
    TU_MSG_HAS("from 1 Hz to 22050 Hz");
    ck_assert_ptr_null(t.storage);

    TPATH(small, "one_hz_short.wav");
    write_file16(small, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 10, 1);
    int sr = 0;
    t = load_ok(small, &o, &sr);
    TU_ASSERT_SHAPE(&t, 1, 220500);
    ck_assert_int_eq(sr, 22050);
    mrt_tensor_release(&t);
}
END_TEST

/* A streamed WAV whose writer could not fix up the data size (0xFFFFFFFF)
 * is complete, not truncated. */
START_TEST(test_load_streamed_wav_size)
{
    TPATH(p, "stream.wav");
    write_file16(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 1000, 16000);
    size_t n;
    unsigned char *b = read_bytes(p, &n);
    ck_assert(memcmp(b + 36, "data", 4) == 0);
    memset(b + 40, 0xFF, 4);
    write_bytes(p, b, n);
    free(b);
    mrt_tensor t = load_ok(p, NULL, NULL);
    TU_ASSERT_SHAPE(&t, 1, 1000);
    ck_assert(data_of(&t)[999] == sample16(0, 999) / 32768.0f);
    mrt_tensor_release(&t);
}
END_TEST

/* A WAV whose codec libsndfile does not know. */
START_TEST(test_load_unsupported_encoding)
{
    TPATH(p, "codec.wav");
    write_file16(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 2, 1000, 16000);
    size_t n;
    unsigned char *b = read_bytes(p, &n);
    ck_assert(memcmp(b + 12, "fmt ", 4) == 0);
    b[20] = 0x34; /* format tag 0x1234: no such codec */
    b[21] = 0x12;
    write_bytes(p, b, n);
    free(b);
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_FORMAT, mrt_audio_load(p, NULL, &t, NULL));
    TU_MSG_HAS(p);
    TU_MSG_HAS("unsupported");
}
END_TEST

START_TEST(test_load_bad_options)
{
    TPATH(p, "opts.wav");
    write_file16(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 3, 16000, 16000);
    mrt_tensor t = {0};
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    /* Channel out of range names the channel (1-based) and the count. */
    o.channel = 3;
    TU_FAILS(MRT_ERR_INDEX, mrt_audio_load(p, &o, &t, NULL));
    TU_MSG_HAS("channel 4 out of range");
    TU_MSG_HAS("3 channels");
    TU_MSG_HAS(p);
    o.channel = -1;
    TU_FAILS(MRT_ERR_INDEX, mrt_audio_load(p, &o, &t, NULL));
    TU_MSG_HAS("channel 0 out of range");
    o.channel = 0;
    o.mono = 1;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &o, &t, NULL));
    TU_MSG_HAS("mono");

    mrt_audio_load_opts d = MRT_AUDIO_LOAD_DEFAULTS;
    d.offset = 1.0; /* exactly the end */
    TU_FAILS(MRT_ERR_INDEX, mrt_audio_load(p, &d, &t, NULL));
    TU_MSG_HAS("beyond the end");
    TU_MSG_HAS(p);
    d.offset = 5.0;
    TU_FAILS(MRT_ERR_INDEX, mrt_audio_load(p, &d, &t, NULL));
    TU_MSG_HAS("offset 5 s");
    d.offset = 1e300;
    TU_FAILS(MRT_ERR_INDEX, mrt_audio_load(p, &d, &t, NULL));
    d.offset = -0.5;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    TU_MSG_HAS("offset");
    d.offset = NAN;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    d.offset = 0.0;
    d.duration = -1.0;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    TU_MSG_HAS("duration");
    TU_MSG_HAS(p);
    d.duration = NAN;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    d.duration = INFINITY;
    d.sample_rate = -8000;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    TU_MSG_HAS("sample_rate");
    d.sample_rate = MRT_AUDIO_MAX_RATE + 1;
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, &d, &t, NULL));
    ck_assert_ptr_null(t.storage);

    /* Output must be empty. */
    TU_ALLOC(&t, MRT_F32, 2);
    TU_FAILS(MRT_ERR_ARG, mrt_audio_load(p, NULL, &t, NULL));
    mrt_tensor_release(&t);

    /* Zero duration: a valid empty read. */
    d = (mrt_audio_load_opts)MRT_AUDIO_LOAD_DEFAULTS;
    d.duration = 0.0;
    mrt_tensor z = load_ok(p, &d, NULL);
    TU_ASSERT_SHAPE(&z, 3, 0);
    mrt_tensor_release(&z);
}
END_TEST

/* ---- save ------------------------------------------------------------------- */

/* Values on the 16-bit grid (k / 32768), full range included. */
static void fill_grid16(mrt_tensor *t, uint64_t seed)
{
    tu_rng r = tu_rng_seed(seed);
    int64_t n = tu_numel(t);
    for (int64_t i = 0; i < n; i++)
        tu_set(t, i, ((int)(tu_rng_u32(&r) & 0xFFFF) - 32768) / 32768.0);
    if (n >= 2) {
        tu_set(t, 0, -1.0);
        tu_set(t, 1, 32767.0 / 32768.0);
    }
}

START_TEST(test_save_roundtrip_formats)
{
    const struct { const char *file, *format, *encoding; int sf_format; int exact; } cases[] = {
        {"s16.wav", NULL, NULL, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1},
        {"s24.wav", NULL, "pcm24", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 1},
        {"s32.wav", NULL, "pcm32", SF_FORMAT_WAV | SF_FORMAT_PCM_32, 1},
        {"sf.wav", NULL, "float", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 1},
        {"s16.flac", NULL, NULL, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1},
        {"s24.flac", NULL, "pcm24", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 1},
        {"s.aiff", NULL, NULL, SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 1},
        {"s.aif", NULL, "float", SF_FORMAT_AIFF | SF_FORMAT_FLOAT, 1},
        {"s.ogg", NULL, NULL, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 0},
        {"noext", NULL, NULL, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1},
        {"named.dat", "flac", NULL, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1},
        {"upper.WAV", NULL, NULL, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1},
    };
    const int ch = 3;
    const int64_t n = 6000;
    mrt_tensor w = {0};
    TU_ALLOC(&w, MRT_F32, ch, n);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (cases[k].exact) {
            fill_grid16(&w, 11 + k);
        } else { /* Vorbis is lossy: a tone, compared by error power */
            for (int c = 0; c < ch; c++)
                for (int64_t i = 0; i < n; i++)
                    tu_set(&w, c * n + i, 0.5 * sin(2 * M_PI * (440.0 * (c + 1)) * i / 16000));
        }
        TPATH(p, cases[k].file);
        mrt_audio_save_opts o = {.format = cases[k].format, .encoding = cases[k].encoding};
        TU_OK(mrt_audio_save(p, &w, 16000, &o));
        SF_INFO info;
        float *back = read_file_direct(p, &info);
        ck_assert_msg(info.format == cases[k].sf_format, "%s: format 0x%x, expected 0x%x",
                      cases[k].file, info.format, cases[k].sf_format);
        ck_assert_int_eq(info.channels, ch);
        ck_assert_int_eq(info.samplerate, 16000);
        ck_assert_int_eq(info.frames, n);
        const float *x = data_of(&w);
        if (cases[k].exact) {
            for (int64_t i = 0; i < ch * n; i++)
                ck_assert_msg(back[i] == x[i], "%s: element %lld: %.9g, expected %.9g",
                              cases[k].file, (long long)i, (double)back[i], (double)x[i]);
        } else {
            double e = 0, s = 0;
            for (int64_t i = 0; i < ch * n; i++) {
                e += (back[i] - x[i]) * (double)(back[i] - x[i]);
                s += x[i] * (double)x[i];
            }
            ck_assert_msg(10 * log10(e / s) < -20, "%s: error power %.1f dB", cases[k].file,
                          10 * log10(e / s));
        }
        free(back);
    }
    mrt_tensor_release(&w);
}
END_TEST

START_TEST(test_save_1d_strided_and_clipping)
{
    /* {frames} writes a mono file. */
    mrt_tensor w = {0};
    TU_ALLOC(&w, MRT_F32, 1000);
    fill_grid16(&w, 5);
    tu_set(&w, 10, 1.0);   /* one past the largest 16-bit value: clips */
    tu_set(&w, 11, 7.5);
    tu_set(&w, 12, -2.0);
    TPATH(p, "mono.wav");
    TU_OK(mrt_audio_save(p, &w, 8000, NULL));
    SF_INFO info;
    float *back = read_file_direct(p, &info);
    ck_assert_int_eq(info.channels, 1);
    ck_assert_int_eq(info.frames, 1000);
    ck_assert(back[10] == 32767.0f / 32768.0f);
    ck_assert(back[11] == 32767.0f / 32768.0f);
    ck_assert(back[12] == -1.0f);
    ck_assert(back[13] == (float)tu_get(&w, 13));
    free(back);
    mrt_tensor_release(&w);

    /* A transposed view {channels, frames} of {frames, channels} data. */
    mrt_tensor fc = {0}, view = {0};
    TU_ALLOC(&fc, MRT_F32, 500, 2);
    fill_grid16(&fc, 6);
    TU_OK(mrt_view_transpose(&fc, 0, 1, &view));
    TPATH(q, "strided.flac");
    TU_OK(mrt_audio_save(q, &view, 16000, NULL));
    back = read_file_direct(q, &info);
    ck_assert_int_eq(info.channels, 2);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 500; i++) {
            int64_t idx[2] = {i, c};
            ck_assert(back[c * 500 + i] == (float)tu_get_idx(&fc, idx));
        }
    free(back);
    mrt_tensor_release(&view);
    mrt_tensor_release(&fc);
}
END_TEST

/* Count of entries in g_dir whose name starts with `prefix`. */
static int count_files(const char *prefix)
{
    DIR *d = opendir(g_dir);
    ck_assert(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

START_TEST(test_save_errors)
{
    TPATH(p, "bad.wav");
    mrt_tensor w = {0};
    TU_ALLOC(&w, MRT_F32, 2, 100);
    fill_grid16(&w, 1);

    mrt_tensor r3 = {0};
    TU_ALLOC(&r3, MRT_F32, 2, 3, 4);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_save(p, &r3, 16000, NULL));
    TU_MSG_HAS("3-d");
    TU_MSG_HAS(p);
    mrt_tensor r0 = {0};
    tu_alloc_scalar(&r0, MRT_F32);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_save(p, &r0, 16000, NULL));
    mrt_tensor li = {0};
    TU_ALLOC(&li, MRT_I64, 100);
    TU_FAILS(MRT_ERR_DTYPE, mrt_audio_save(p, &li, 16000, NULL));
    mrt_tensor empty = {0};
    TU_ALLOC(&empty, MRT_F32, 2, 0);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_save(p, &empty, 16000, NULL));
    TU_MSG_HAS("no frames");
    mrt_tensor nochan = {0};
    TU_ALLOC(&nochan, MRT_F32, 0, 10);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_save(p, &nochan, 16000, NULL));

    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, 0, NULL));
    TU_MSG_HAS("sample rate");
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, -44100, NULL));

    mrt_audio_save_opts o = {.format = "mp3"};
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, 16000, &o));
    TU_MSG_HAS("unsupported format 'mp3'");
    TPATH(mp3, "song.mp3");
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(mp3, &w, 16000, NULL));
    TU_MSG_HAS("unsupported format");
    o = (mrt_audio_save_opts){.encoding = "pcm12"};
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, 16000, &o));
    TU_MSG_HAS("pcm12");
    TPATH(fl, "bad.flac");
    o = (mrt_audio_save_opts){.encoding = "float"};
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(fl, &w, 16000, &o));
    TU_MSG_HAS("flac");
    TU_MSG_HAS("float");

    tu_set(&w, 150, NAN);
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, 16000, NULL));
    TU_MSG_HAS("channel 2, frame 51");
    tu_set(&w, 150, INFINITY);
    TU_FAILS(MRT_ERR_ARG, mrt_audio_save(p, &w, 16000, NULL));
    tu_set(&w, 150, 0.0);

    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.wav", g_dir);
    TU_FAILS(MRT_ERR_IO, mrt_audio_save(nodir, &w, 16000, NULL));
    TU_MSG_HAS("no/such/dir");

    ck_assert_int_eq(count_files("bad."), 0); /* nothing written, no temp left */
    ck_assert_int_eq(count_files("song."), 0);
    mrt_tensor_release(&w);
    mrt_tensor_release(&r3);
    mrt_tensor_release(&r0);
    mrt_tensor_release(&li);
    mrt_tensor_release(&empty);
    mrt_tensor_release(&nochan);
}
END_TEST

START_TEST(test_save_replaces_existing)
{
    TPATH(p, "replace.wav");
    write_bytes(p, "old contents", 12);
    mrt_tensor w = {0};
    TU_ALLOC(&w, MRT_F32, 64);
    fill_grid16(&w, 2);
    TU_OK(mrt_audio_save(p, &w, 16000, NULL));
    mrt_tensor back = load_ok(p, NULL, NULL);
    TU_ASSERT_SHAPE(&back, 1, 64);
    for (int i = 0; i < 64; i++) ck_assert(data_of(&back)[i] == (float)tu_get(&w, i));
    ck_assert_int_eq(count_files("replace.wav"), 1); /* no temporary left behind */
    mrt_tensor_release(&back);
    mrt_tensor_release(&w);
}
END_TEST

/* ---- resample --------------------------------------------------------------- */

/* Relative error power (dB) of a tone at f Hz resampled from -> to against
 * the ideal tone at the new rate, the first and last 5 % excluded (the
 * filter sees the zeros outside the clip there). */
static double tone_error_db(double f, int from, int to, int64_t n)
{
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, n);
    for (int64_t i = 0; i < n; i++) tu_set(&x, i, sin(2 * M_PI * f * (double)i / from));
    TU_OK(mrt_audio_resample(&x, from, to, MRT_RESAMPLER_SOXR, &y));
    int64_t m = mrt_audio_resampled_length(n, from, to);
    TU_ASSERT_SHAPE(&y, m);
    double e = 0, s = 0;
    for (int64_t i = m / 20; i < m - m / 20; i++) {
        double ref = sin(2 * M_PI * f * (double)i / to);
        double d = tu_get(&y, i) - ref;
        e += d * d;
        s += ref * ref;
    }
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
    return 10 * log10(e / s);
}

START_TEST(test_resample_tone_quality)
{
    const double tones[] = {1000, 5000, 7000};
    for (int k = 0; k < 3; k++) {
        double db = tone_error_db(tones[k], 16000, 22050, 32000);
        ck_assert_msg(db < -60, "%g Hz 16000 -> 22050: error %.1f dB (bar: -60)", tones[k], db);
    }
    /* Downsampling keeps in-band tones too. */
    ck_assert(tone_error_db(5000, 22050, 16000, 44100) < -60);
    ck_assert(tone_error_db(1000, 44100, 16000, 44100) < -60);
}
END_TEST

/* A tone above the new Nyquist frequency must not alias into the output. */
START_TEST(test_resample_rejects_aliases)
{
    const int64_t n = 44100;
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, n);
    for (int64_t i = 0; i < n; i++) tu_set(&x, i, sin(2 * M_PI * 10000.0 * (double)i / 44100));
    TU_OK(mrt_audio_resample(&x, 44100, 16000, MRT_RESAMPLER_SOXR, &y));
    int64_t m = y.shape[0];
    double p = 0;
    for (int64_t i = m / 20; i < m - m / 20; i++) p += tu_get(&y, i) * tu_get(&y, i);
    double db = 10 * log10(p / (m - 2 * (m / 20)) / 0.5 + 1e-30);
    ck_assert_msg(db < -90, "10 kHz tone at 16 kHz: %.1f dB left", db);
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
}
END_TEST

START_TEST(test_resample_lengths)
{
    /* ceil(frames * to / from), torchaudio's rule. */
    ck_assert_int_eq(mrt_audio_resampled_length(160000, 16000, 22050), 220500);
    ck_assert_int_eq(mrt_audio_resampled_length(80000, 16000, 22050), 110250);
    ck_assert_int_eq(mrt_audio_resampled_length(1, 16000, 22050), 2);
    ck_assert_int_eq(mrt_audio_resampled_length(3, 16000, 22050), 5);
    ck_assert_int_eq(mrt_audio_resampled_length(100, 44100, 16000), 37);
    ck_assert_int_eq(mrt_audio_resampled_length(1, 44100, 16000), 1);
    ck_assert_int_eq(mrt_audio_resampled_length(7, 48000, 44100), 7);
    ck_assert_int_eq(mrt_audio_resampled_length(0, 16000, 22050), 0);
    ck_assert_int_eq(mrt_audio_resampled_length(INT64_C(1) << 40, 10000000, 9999999),
                     (int64_t)1099511517825); /* ceil(2^40 * 0.9999999), exact */
    const int64_t ns[] = {1, 2, 3, 7, 100, 1001, 16001};
    const int rates[][2] = {{16000, 22050}, {22050, 16000}, {44100, 16000}, {8000, 48000},
                            {48000, 44100}, {16000, 16001}, {192000, 8000}};
    for (int r = 0; r < 7; r++)
        for (int k = 0; k < 7; k++) {
            mrt_tensor x = {0}, y = {0};
            TU_ALLOC(&x, MRT_F32, ns[k]);
            tu_fill_uniform(&x, (uint64_t)(r * 10 + k), -1, 1);
            TU_OK(mrt_audio_resample(&x, rates[r][0], rates[r][1], MRT_RESAMPLER_SOXR, &y));
            double want = ceil((double)ns[k] * rates[r][1] / rates[r][0]);
            TU_ASSERT_SHAPE(&y, (int64_t)want);
            for (int64_t i = 0; i < y.shape[0]; i++) ck_assert(isfinite(tu_get(&y, i)));
            mrt_tensor_release(&x);
            mrt_tensor_release(&y);
        }
}
END_TEST

/* The last sample (the one libsoxr's own count would leave out) is a real
 * resampled value: a constant signal stays near constant up to the end,
 * apart from the edge ringing both ends share. */
START_TEST(test_resample_last_sample)
{
    const int64_t n = 16001; /* 16001 * 22050 / 16000 = 22051.378 -> 22052 */
    mrt_tensor x = {0}, y = {0};
    TU_ALLOC(&x, MRT_F32, n);
    for (int64_t i = 0; i < n; i++) tu_set(&x, i, sin(2 * M_PI * 100.0 * (double)i / 16000));
    TU_OK(mrt_audio_resample(&x, 16000, 22050, MRT_RESAMPLER_SOXR, &y));
    TU_ASSERT_SHAPE(&y, 22052);
    /* Frames near the end, not the very last few where the clip's edge
     * rings, follow the tone; the very last is on the same scale. */
    for (int64_t i = 22052 - 400; i < 22052 - 100; i++)
        ck_assert(fabs(tu_get(&y, i) - sin(2 * M_PI * 100.0 * (double)i / 22050)) < 1e-3);
    ck_assert(fabs(tu_get(&y, 22051)) < 1.2);
    mrt_tensor_release(&x);
    mrt_tensor_release(&y);
}
END_TEST

/* Rows of a batch are resampled independently: each equals the 1-d result,
 * bit for bit, with 1 or 2 threads. */
START_TEST(test_resample_rows_and_threads)
{
    const int64_t n = 4001;
    mrt_tensor x = {0};
    TU_ALLOC(&x, MRT_F32, 2, 3, n);
    tu_fill_uniform(&x, 99, -1, 1);
    int saved = mrt_get_num_threads();
    mrt_tensor ys[2] = {{0}, {0}};
    for (int t = 0; t < 2; t++) {
        mrt_set_num_threads(t + 1);
        TU_OK(mrt_audio_resample(&x, 16000, 22050, MRT_RESAMPLER_SOXR, &ys[t]));
    }
    mrt_set_num_threads(saved);
    int64_t m = mrt_audio_resampled_length(n, 16000, 22050);
    TU_ASSERT_SHAPE(&ys[0], 2, 3, m);
    ck_assert(memcmp(data_of(&ys[0]), data_of(&ys[1]), sizeof(float) * 6 * (size_t)m) == 0);
    for (int r = 0; r < 6; r++) {
        mrt_tensor row = {0}, flat = {0}, yr = {0};
        TU_OK(mrt_view_reshape(&x, 2, (int64_t[]){6, n}, &flat));
        TU_OK(mrt_view_select(&flat, 0, r, &row));
        TU_OK(mrt_audio_resample(&row, 16000, 22050, MRT_RESAMPLER_SOXR, &yr));
        ck_assert(memcmp(data_of(&yr), data_of(&ys[0]) + r * m, sizeof(float) * (size_t)m) == 0);
        mrt_tensor_release(&row);
        mrt_tensor_release(&flat);
        mrt_tensor_release(&yr);
    }
    mrt_tensor_release(&ys[0]);
    mrt_tensor_release(&ys[1]);
    mrt_tensor_release(&x);
}
END_TEST

/* Strided input, preallocated and strided outputs, the same-rate copy. */
START_TEST(test_resample_views_and_outputs)
{
    const int64_t n = 1000;
    mrt_tensor fc = {0}, view = {0}, ref_in = {0}, ref = {0};
    TU_ALLOC(&fc, MRT_F32, n, 2); /* {frames, channels}: transposed below */
    tu_fill_uniform(&fc, 3, -1, 1);
    TU_OK(mrt_view_transpose(&fc, 0, 1, &view));
    TU_OK(mrt_tensor_clone(&ref_in, &view));
    TU_OK(mrt_audio_resample(&ref_in, 16000, 8000, MRT_RESAMPLER_SOXR, &ref));
    TU_ASSERT_SHAPE(&ref, 2, 500);

    mrt_tensor y = {0};
    TU_OK(mrt_audio_resample(&view, 16000, 8000, MRT_RESAMPLER_SOXR, &y));
    ck_assert(tu_max_abs_diff(&y, &ref) == 0.0);

    /* A preallocated strided output: the transpose of a {500, 2} tensor. */
    mrt_tensor store = {0}, out = {0};
    TU_ALLOC(&store, MRT_F32, 500, 2);
    TU_OK(mrt_view_transpose(&store, 0, 1, &out));
    TU_OK(mrt_audio_resample(&view, 16000, 8000, MRT_RESAMPLER_SOXR, &out));
    ck_assert(tu_max_abs_diff(&out, &ref) == 0.0);

    /* Wrong preallocated shape. */
    mrt_tensor bad = {0};
    TU_ALLOC(&bad, MRT_F32, 2, 499);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_resample(&view, 16000, 8000, MRT_RESAMPLER_SOXR, &bad));

    /* Same rate: a copy. */
    mrt_tensor same = {0};
    TU_OK(mrt_audio_resample(&view, 16000, 16000, MRT_RESAMPLER_SOXR, &same));
    ck_assert(tu_max_abs_diff(&same, &view) == 0.0);
    ck_assert(same.storage != view.storage);

    /* Zero frames stay zero frames. */
    mrt_tensor z = {0}, zy = {0};
    TU_ALLOC(&z, MRT_F32, 3, 0);
    TU_OK(mrt_audio_resample(&z, 16000, 22050, MRT_RESAMPLER_SOXR, &zy));
    TU_ASSERT_SHAPE(&zy, 3, 0);

    mrt_tensor *all[] = {&fc, &view, &ref_in, &ref, &y, &store, &out, &bad, &same, &z, &zy};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) mrt_tensor_release(all[i]);
}
END_TEST

START_TEST(test_resample_errors)
{
    mrt_tensor x = {0}, y = {0}, s = {0}, l = {0};
    TU_ALLOC(&x, MRT_F32, 100);
    TU_FAILS(MRT_ERR_ARG, mrt_audio_resample(&x, 0, 22050, MRT_RESAMPLER_SOXR, &y));
    TU_MSG_HAS("'from'");
    TU_FAILS(MRT_ERR_ARG, mrt_audio_resample(&x, 16000, -1, MRT_RESAMPLER_SOXR, &y));
    TU_MSG_HAS("'to'");
    TU_FAILS(MRT_ERR_ARG, mrt_audio_resample(&x, 16000, MRT_AUDIO_MAX_RATE + 1, MRT_RESAMPLER_SOXR, &y));
    tu_alloc_scalar(&s, MRT_F32);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_resample(&s, 16000, 22050, MRT_RESAMPLER_SOXR, &y));
    TU_MSG_HAS("0-d");
    TU_ALLOC(&l, MRT_I64, 100);
    TU_FAILS(MRT_ERR_DTYPE, mrt_audio_resample(&l, 16000, 22050, MRT_RESAMPLER_SOXR, &y));
    TU_MSG_HAS("int64");
    ck_assert_ptr_null(y.storage);
    mrt_tensor_release(&x);
    mrt_tensor_release(&s);
    mrt_tensor_release(&l);
}
END_TEST

/* ---- chunks ------------------------------------------------------------------ */

static void check_chunks(int64_t frames, int64_t chunk, int64_t max, int64_t want_n)
{
    mrt_tensor w = {0}, c = {0};
    TU_ALLOC(&w, MRT_F32, frames);
    tu_fill_iota(&w);
    TU_OK(mrt_audio_chunks(&w, chunk, max, &c));
    TU_ASSERT_SHAPE(&c, want_n, chunk);
    for (int64_t k = 0; k < want_n; k++)
        for (int64_t i = 0; i < chunk; i++) {
            int64_t src = k * chunk + i;
            double want = src < frames && src < max ? (double)src : 0.0;
            int64_t idx[2] = {k, i};
            ck_assert_msg(tu_get_idx(&c, idx) == want, "frames %lld chunk %lld: [%lld][%lld]",
                          (long long)frames, (long long)chunk, (long long)k, (long long)i);
        }
    mrt_tensor_release(&w);
    mrt_tensor_release(&c);
}

START_TEST(test_chunks_fix_method)
{
    check_chunks(100, 25, 1000, 4);  /* exact multiple */
    check_chunks(110, 25, 1000, 4);  /* partial last chunk dropped */
    check_chunks(124, 25, 1000, 4);
    check_chunks(25, 25, 1000, 1);
    check_chunks(10, 25, 1000, 1);   /* shorter than a chunk: one, zero-padded */
    check_chunks(1, 25, 1000, 1);
    check_chunks(1000, 25, 60, 2);   /* max cap: 60 frames -> 2 chunks */
    check_chunks(1000, 25, 10, 1);   /* cap below one chunk: one padded chunk */
    /* 10 s at 22050 Hz in 5 s chunks, as at inference. */
    check_chunks(220500, 110250, 600 * 22050, 2);
}
END_TEST

START_TEST(test_chunks_views_and_errors)
{
    /* A strided 1-d view (every other element). */
    mrt_tensor base = {0}, two = {0}, col = {0}, c = {0};
    TU_ALLOC(&base, MRT_F32, 50, 2);
    tu_fill_iota(&base);
    TU_OK(mrt_view_select(&base, 1, 1, &col)); /* 1, 3, 5, ... */
    TU_OK(mrt_audio_chunks(&col, 20, 1000, &c));
    TU_ASSERT_SHAPE(&c, 2, 20);
    ck_assert(tu_get(&c, 0) == 1.0 && tu_get(&c, 39) == 79.0);
    mrt_tensor_release(&c);

    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_chunks(&base, 20, 1000, &c));
    TU_MSG_HAS("{frames}");
    TU_MSG_HAS("2-d");
    TU_FAILS(MRT_ERR_ARG, mrt_audio_chunks(&col, 0, 1000, &c));
    TU_FAILS(MRT_ERR_ARG, mrt_audio_chunks(&col, 20, 0, &c));
    TU_MSG_HAS("max_seconds");
    TU_ALLOC(&two, MRT_F32, 0);
    TU_FAILS(MRT_ERR_SHAPE, mrt_audio_chunks(&two, 20, 1000, &c));
    TU_MSG_HAS("no frames");
    ck_assert_ptr_null(c.storage);
    mrt_tensor_release(&base);
    mrt_tensor_release(&two);
    mrt_tensor_release(&col);
}
END_TEST

/* ---- real MIMII clips (when MACHRT_SAMPLE_DATA is set) ------------------ */

START_TEST(test_real_mimii_clip)
{
    const char *dir = getenv("MACHRT_SAMPLE_DATA");
    char p[1024];
    snprintf(p, sizeof p, "%s/pump/id_00/normal/00000000.wav", dir);
    mrt_audio_info info;
    TU_OK(mrt_audio_read_info(p, &info));
    ck_assert_int_eq(info.channels, 8);
    ck_assert_int_eq(info.sample_rate, 16000);
    ck_assert_int_eq(info.frames, 160000);
    ck_assert_str_eq(info.encoding, "pcm16");
    mrt_tensor all = load_ok(p, NULL, NULL);
    TU_ASSERT_SHAPE(&all, 8, 160000);
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    o.channel = 7;
    o.offset = 2.5;
    o.duration = 5.0;
    mrt_tensor part = load_ok(p, &o, NULL);
    TU_ASSERT_SHAPE(&part, 80000);
    ck_assert(memcmp(data_of(&part), data_of(&all) + 7 * 160000 + 40000, 80000 * sizeof(float)) ==
              0);
    mrt_tensor_release(&part);
    mrt_tensor_release(&all);
}
END_TEST

/* ---- main ---------------------------------------------------------------------- */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) {
            remove_tree(p);
            rmdir(p);
        }
    }
    closedir(d);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/machrt_audio_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("audio_io");
    TCase *ld = tcase_create("load");
    tcase_add_test(ld, test_info_every_format);
    tcase_add_test(ld, test_load_every_format);
    tcase_add_test(ld, test_load_float_values_as_stored);
    tcase_add_test(ld, test_load_channel_counts);
    tcase_add_test(ld, test_load_long_file_blocks);
    tcase_add_test(ld, test_load_channel_and_mono);
    tcase_add_test(ld, test_load_offset_duration);
    tcase_add_test(ld, test_load_resampled);
    const char *sample = getenv("MACHRT_SAMPLE_DATA");
    if (sample && *sample)
        tcase_add_test(ld, test_real_mimii_clip);
    else
        tu_skip(1, "test_audio_io: the real MIMII clip: MACHRT_SAMPLE_DATA is not set");
    tcase_set_timeout(ld, 60);
    suite_add_tcase(s, ld);

    TCase *le = tcase_create("load errors");
    tcase_add_test(le, test_load_missing_and_directory);
    tcase_add_test(le, test_load_empty_and_not_audio);
    tcase_add_test(le, test_load_zero_frames);
    tcase_add_test(le, test_load_truncated);
    tcase_add_test(le, test_load_streamed_wav_size);
    tcase_add_test(le, test_load_unsupported_encoding);
    tcase_add_test(le, test_load_bad_options);
    tcase_add_test(le, test_load_non_finite_samples);
    tcase_add_test(le, test_load_header_claims_huge_length);
    tcase_add_test(le, test_load_highly_compressed);
    tcase_add_test(le, test_load_upsampling_bound);
    tcase_set_timeout(le, 60);
    suite_add_tcase(s, le);

    TCase *sv = tcase_create("save");
    tcase_add_test(sv, test_save_roundtrip_formats);
    tcase_add_test(sv, test_save_1d_strided_and_clipping);
    tcase_add_test(sv, test_save_errors);
    tcase_add_test(sv, test_save_replaces_existing);
    tcase_set_timeout(sv, 60);
    suite_add_tcase(s, sv);

    TCase *rs = tcase_create("resample");
    tcase_add_test(rs, test_resample_tone_quality);
    tcase_add_test(rs, test_resample_rejects_aliases);
    tcase_add_test(rs, test_resample_lengths);
    tcase_add_test(rs, test_resample_last_sample);
    tcase_add_test(rs, test_resample_rows_and_threads);
    tcase_add_test(rs, test_resample_views_and_outputs);
    tcase_add_test(rs, test_resample_errors);
    tcase_set_timeout(rs, 60);
    suite_add_tcase(s, rs);

    TCase *ch = tcase_create("chunks");
    tcase_add_test(ch, test_chunks_fix_method);
    tcase_add_test(ch, test_chunks_views_and_errors);
    suite_add_tcase(s, ch);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_tree(g_dir);
    rmdir(g_dir);
    return failed ? 1 : 0;
}
