/* Audio files through libsndfile: header info, decoding (channel pick, mono
 * mean, offset/duration) and encoding (WAV, FLAC, OGG/Vorbis, AIFF).
 *
 * libsndfile does the decoding; this file adds what it leaves to the caller:
 * messages that name the file and say what is wrong with it, detection of
 * truncated files (libsndfile quietly shortens a WAV or AIFF whose data
 * chunk runs past the end of the file, which would turn a cut-off download
 * into a silently shorter clip), decoding only the selected frames, and
 * writes that never leave a half-written file under the final name.
 *
 * Headers are not trusted for what they cost: a frame count is only
 * allocated up front when the file is large enough to hold it (else the
 * buffer grows as frames actually arrive), an upsampling that would blow
 * a small file up to gigabytes is refused, and a float file holding NaN,
 * Inf or absurdly large samples is refused as corrupt rather than fed to a
 * model. */
#include "machrt/audio_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>
#include "machrt/sys.h"

/* Frames decoded per libsndfile call: the interleaved scratch buffer stays
 * small (64 KiB per channel) whatever the file's length and channel count. */
#define IO_BLOCK 16384

/* Decoded samples (frames x channels) per byte of file a header may claim
 * before its frame count is doubted: PCM holds at most 1 per byte (8-bit),
 * ADPCM 2, GSM 4.9, lossy codecs at speech bitrates about 8. FLAC of pure
 * silence compresses further, so past this bound the count is not refused,
 * only allocated as decoding proves it. */
#define PLAUSIBLE_SAMPLES_PER_BYTE 16

/* Largest sample magnitude a float file may hold. Samples are nominally in
 * [-1, 1], and files scaled as integers (+-32768, +-2^23) are common; beyond
 * 1e10 a value is damage, and near FLT_MAX the mono mean, the resampler and
 * the power spectrum would overflow to Inf and NaN further down. */
#define MAX_SAMPLE_MAGNITUDE 1e10f

/* Upsampling a load may do without questions: up to this factor, or any
 * factor while the result stays under RESAMPLE_FREE_BYTES. A 2 MB file whose
 * header says 1 Hz would otherwise ask for 88 GB at 22050 Hz. */
#define MAX_UPSAMPLE_FACTOR 64
#define RESAMPLE_FREE_BYTES ((double)(1u << 30))

/* ---- names ----------------------------------------------------------------- */

static const char *major_name(int format)
{
    switch (format & SF_FORMAT_TYPEMASK) {
    case SF_FORMAT_WAV: case SF_FORMAT_WAVEX: return "wav";
    case SF_FORMAT_RF64: return "rf64";
    case SF_FORMAT_W64: return "w64";
    case SF_FORMAT_FLAC: return "flac";
    case SF_FORMAT_OGG: return "ogg";
    case SF_FORMAT_AIFF: return "aiff";
    case SF_FORMAT_AU: return "au";
    case SF_FORMAT_CAF: return "caf";
    case SF_FORMAT_MPEG: return "mpeg";
    case SF_FORMAT_RAW: return "raw";
    default: return "other";
    }
}

static const char *subtype_name(int format)
{
    switch (format & SF_FORMAT_SUBMASK) {
    case SF_FORMAT_PCM_S8: case SF_FORMAT_PCM_U8: return "pcm8";
    case SF_FORMAT_PCM_16: return "pcm16";
    case SF_FORMAT_PCM_24: return "pcm24";
    case SF_FORMAT_PCM_32: return "pcm32";
    case SF_FORMAT_FLOAT: return "float";
    case SF_FORMAT_DOUBLE: return "double";
    case SF_FORMAT_VORBIS: return "vorbis";
    case SF_FORMAT_OPUS: return "opus";
    case SF_FORMAT_ULAW: return "ulaw";
    case SF_FORMAT_ALAW: return "alaw";
    case SF_FORMAT_IMA_ADPCM: return "ima_adpcm";
    case SF_FORMAT_MS_ADPCM: return "ms_adpcm";
    case SF_FORMAT_GSM610: return "gsm610";
    case SF_FORMAT_ALAC_16: case SF_FORMAT_ALAC_20: case SF_FORMAT_ALAC_24:
    case SF_FORMAT_ALAC_32: return "alac";
    case SF_FORMAT_MPEG_LAYER_I: case SF_FORMAT_MPEG_LAYER_II:
    case SF_FORMAT_MPEG_LAYER_III: return "mpeg";
    default: return "other";
    }
}

/* ---- opening ------------------------------------------------------------- */

/* libsndfile reports a failed sf_open through process-wide state
 * (sf_error(NULL), sf_strerror(NULL)); data-loader threads opening files at
 * the same time would read each other's messages. Opening under one lock
 * keeps each message with its file; it only covers header parsing. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

/* libsndfile notes in its parse log when a chunk claims more bytes than the
 * file holds, then shortens the chunk to what is there. For WAV the line is
 * "data : <declared> (should be <present>)"; for AIFF the 'COMM' frame count
 * disagrees with the length of the 'SSND' chunk. A declared size of 0 or
 * 0xFFFFFFFF is what streaming writers leave when they cannot seek back to
 * fix the header: that file is complete, not truncated. */
static mrt_status check_truncated(const char *op, const char *path, SNDFILE *sf, int format)
{
    char log[8192];
    log[0] = '\0';
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    int major = format & SF_FORMAT_TYPEMASK;
    if (major == SF_FORMAT_WAV || major == SF_FORMAT_WAVEX) {
        const char *p = strstr(log, "\ndata : ");
        unsigned long long declared;
        long long present;
        if (p && sscanf(p, "\ndata : %llu (should be %lld)", &declared, &present) == 2 &&
            declared != 0 && declared != 0xFFFFFFFFull && present >= 0 &&
            (unsigned long long)present < declared)
            return mrt_fail(MRT_ERR_FORMAT,
                            "%s: %s is truncated: its header declares %llu bytes of audio "
                            "data but the file holds %lld", op, path, declared, present);
    } else if (major == SF_FORMAT_AIFF) {
        const char *p = strstr(log, "Frame count read from 'COMM' chunk (");
        const char *q = strstr(log, "calculated from length of 'SSND' chunk (");
        long long declared, present;
        if (p && q && sscanf(p, "Frame count read from 'COMM' chunk (%lld", &declared) == 1 &&
            sscanf(q, "calculated from length of 'SSND' chunk (%lld", &present) == 1 &&
            present < declared)
            return mrt_fail(MRT_ERR_FORMAT,
                            "%s: %s is truncated: its header declares %lld frames but the "
                            "file holds %lld", op, path, declared, present);
    }
    return MRT_OK;
}

/* Opens `path` for reading with every check the header allows. */
static mrt_status open_read(const char *op, const char *path, SNDFILE **out, SF_INFO *info)
{
    *out = NULL;
    if (!path) return mrt_fail(MRT_ERR_ARG, "%s: needs a file path", op);
    struct stat stt;
    if (stat(path, &stt) != 0)
        return mrt_fail(MRT_ERR_IO, "%s: cannot open %s: %s", op, path, strerror(errno));
    if (S_ISDIR(stt.st_mode))
        return mrt_fail(MRT_ERR_IO, "%s: cannot open %s: it is a directory", op, path);
    if (S_ISREG(stt.st_mode) && stt.st_size == 0)
        return mrt_fail(MRT_ERR_FORMAT, "%s: %s is empty (0 bytes), not an audio file", op, path);

    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&open_lock);
    SNDFILE *sf = sf_open(path, SFM_READ, info);
    int code = sf ? 0 : sf_error(NULL);
    char why[256];
    snprintf(why, sizeof why, "%s", sf ? "" : sf_strerror(NULL));
    pthread_mutex_unlock(&open_lock);

    if (!sf) {
        if (code == SF_ERR_UNRECOGNISED_FORMAT)
            return mrt_fail(MRT_ERR_FORMAT,
                            "%s: %s is not an audio file in a format machrt reads (WAV, FLAC, "
                            "OGG/Vorbis, AIFF and the rest of libsndfile's formats): %s",
                            op, path, why);
        if (code == SF_ERR_SYSTEM)
            return mrt_fail(MRT_ERR_IO, "%s: cannot open %s: %s", op, path, why);
        return mrt_fail(MRT_ERR_FORMAT, "%s: %s: unsupported or malformed audio file: %s", op,
                        path, why);
    }
    mrt_status st = MRT_OK;
    if (info->channels < 1 || info->channels > MRT_AUDIO_MAX_CHANNELS)
        st = mrt_fail(MRT_ERR_FORMAT, "%s: %s: malformed header: %d channels", op, path,
                      info->channels);
    else if (info->samplerate < 1 || info->samplerate > MRT_AUDIO_MAX_RATE)
        st = mrt_fail(MRT_ERR_FORMAT, "%s: %s: malformed header: sample rate %d Hz", op, path,
                      info->samplerate);
    else if (info->frames <= 0)
        st = mrt_fail(MRT_ERR_FORMAT, "%s: %s has no audio frames (zero-length %s file)", op,
                      path, major_name(info->format));
    else if (info->frames > INT64_MAX / MRT_AUDIO_MAX_CHANNELS)
        st = mrt_fail(MRT_ERR_FORMAT, "%s: %s: malformed header: %lld frames", op, path,
                      (long long)info->frames);
    else
        st = check_truncated(op, path, sf, info->format);
    if (st != MRT_OK) {
        sf_close(sf);
        return st;
    }
    *out = sf;
    return MRT_OK;
}

static void fill_info(const SF_INFO *sfi, mrt_audio_info *info)
{
    memset(info, 0, sizeof *info);
    info->sample_rate = sfi->samplerate;
    info->channels = sfi->channels;
    info->frames = (int64_t)sfi->frames;
    info->seconds = (double)sfi->frames / sfi->samplerate;
    snprintf(info->format, sizeof info->format, "%s", major_name(sfi->format));
    snprintf(info->encoding, sizeof info->encoding, "%s", subtype_name(sfi->format));
}

mrt_status mrt_audio_read_info(const char *path, mrt_audio_info *info)
{
    if (!info) return mrt_fail(MRT_ERR_ARG, "audio.info: needs an info struct");
    SNDFILE *sf;
    SF_INFO sfi;
    mrt_status st = open_read("audio.info", path, &sf, &sfi);
    if (st != MRT_OK) return st;
    fill_info(&sfi, info);
    sf_close(sf);
    return MRT_OK;
}

/* ---- load ------------------------------------------------------------------ */

/* Frames selected by offset/duration (seconds) in a file of `frames` at
 * `rate`: *first and *count. */
static mrt_status select_frames(const char *path, const mrt_audio_load_opts *o, int rate,
                                int64_t frames, int64_t *first, int64_t *count)
{
    if (!(o->offset >= 0.0) || isinf(o->offset))
        return mrt_fail(MRT_ERR_ARG, "audio.load: %s: offset must be a finite number of "
                        "seconds >= 0, got %g", path, o->offset);
    if (!(o->duration >= 0.0))
        return mrt_fail(MRT_ERR_ARG, "audio.load: %s: duration must be a number of seconds "
                        ">= 0, got %g", path, o->duration);
    /* Compared in double first: offset * rate can exceed any int64. */
    double off = nearbyint(o->offset * rate);
    if (off >= (double)frames)
        return mrt_fail(MRT_ERR_INDEX,
                        "audio.load: %s: offset %g s is beyond the end of the file (%.6g s, "
                        "%lld frames at %d Hz)", path, o->offset, (double)frames / rate,
                        (long long)frames, rate);
    *first = (int64_t)off;
    int64_t left = frames - *first;
    double dur = isinf(o->duration) ? (double)left : nearbyint(o->duration * rate);
    *count = dur >= (double)left ? left : (int64_t)dur;
    return MRT_OK;
}

/* Skips `n` frames: a seek when the file allows it, else decode and drop.
 * Ogg files are decoded and dropped too: libsndfile 1.2's Vorbis seek lands
 * on wrong samples inside the last pages of some files (errors of 0.6 on a
 * signal of amplitude 0.25 in our tests), and an offset must never shift
 * the audio silently. */
static mrt_status skip_frames(const char *path, SNDFILE *sf, const SF_INFO *info, int64_t n,
                              float *scratch)
{
    if (n == 0) return MRT_OK;
    if (info->seekable && (info->format & SF_FORMAT_TYPEMASK) != SF_FORMAT_OGG) {
        if (sf_seek(sf, (sf_count_t)n, SEEK_SET) != (sf_count_t)n)
            return mrt_fail(MRT_ERR_IO, "audio.load: %s: cannot seek to frame %lld: %s", path,
                            (long long)n, sf_strerror(sf));
        return MRT_OK;
    }
    while (n > 0) {
        sf_count_t want = n < IO_BLOCK ? (sf_count_t)n : IO_BLOCK;
        sf_count_t got = sf_readf_float(sf, scratch, want);
        if (got <= 0)
            return mrt_fail(MRT_ERR_FORMAT, "audio.load: %s is truncated or corrupt: cannot "
                            "reach the offset (%s)", path, sf_strerror(sf));
        n -= got;
    }
    return MRT_OK;
}

/* Lays out `got` interleaved frames, read with SAMPLE(k) (sample k of the
 * block as a float), at frame `done` of `dst`: channel-major rows (all
 * channels), one channel, or the mean of the channels. */
#define LAY_OUT(SAMPLE)                                                               \
    do {                                                                              \
        if (o->mono) {                                                                \
            for (sf_count_t i = 0; i < got; i++) {                                    \
                float s = 0.0f;                                                       \
                for (int c = 0; c < channels; c++) s += SAMPLE(i * channels + c);     \
                dst[done + i] = s * inv;                                              \
            }                                                                         \
        } else if (o->channel != MRT_AUDIO_ALL_CHANNELS) {                            \
            const int ch = o->channel;                                                \
            for (sf_count_t i = 0; i < got; i++) dst[done + i] = SAMPLE(i * channels + ch); \
        } else {                                                                      \
            for (int c = 0; c < channels; c++) {                                      \
                float *row = dst + (int64_t)c * stride + done;                        \
                for (sf_count_t i = 0; i < got; i++) row[i] = SAMPLE(i * channels + c); \
            }                                                                         \
        }                                                                             \
    } while (0)

#define FLOAT_SAMPLE(k) (fbuf[k])
/* Exactly libsndfile's own conversion (s * (1 / 32768), exact in float). */
#define SHORT_SAMPLE(k) ((float)sbuf[k] * (1.0f / 32768.0f))

/* The output of a load while it is decoded: `cap` frames allocated of the
 * `count` the header promises, as {count} or {channels, count} once full. */
typedef struct {
    mrt_tensor wave;
    int64_t cap;
    int one_row, channels;
} out_buffer;

/* (Re)allocates b->wave for `cap` frames, keeping its first `kept` frames. */
static mrt_status buffer_alloc(const char *path, out_buffer *b, int64_t cap, int64_t kept)
{
    int64_t shape[2] = {b->channels, cap};
    mrt_tensor t = {0};
    mrt_status st = b->one_row ? mrt_tensor_alloc_uninit(&t, MRT_F32, 1, &cap)
                               : mrt_tensor_alloc_uninit(&t, MRT_F32, 2, shape);
    if (st != MRT_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", mrt_last_error());
        return mrt_fail(st, "audio.load: %s: cannot hold %lld frames of %d channel%s: %s", path,
                        (long long)cap, b->one_row ? 1 : b->channels,
                        b->one_row || b->channels == 1 ? "" : "s", why);
    }
    if (b->wave.storage) {
        const int rows = b->one_row ? 1 : b->channels;
        for (int r = 0; r < rows; r++)
            memcpy(mrt_f32(&t) + (int64_t)r * cap, mrt_f32(&b->wave) + (int64_t)r * b->cap,
                   (size_t)kept * sizeof(float));
        mrt_tensor_release(&b->wave);
    }
    b->wave = t;
    b->cap = cap;
    return MRT_OK;
}

/* The first allocation for `count` frames: all of them when the file on
 * disk is big enough to hold that many samples, else what it can hold. */
static int64_t first_capacity(const char *path, int64_t count, int channels)
{
    struct stat stt;
    if (stat(path, &stt) != 0 || !S_ISREG(stt.st_mode)) return count < IO_BLOCK ? count : IO_BLOCK;
    double plausible = (double)stt.st_size * PLAUSIBLE_SAMPLES_PER_BYTE / channels;
    if ((double)count <= plausible) return count;
    int64_t cap = (int64_t)plausible;
    return cap < IO_BLOCK ? (count < IO_BLOCK ? count : IO_BLOCK) : cap;
}

/* The first sample among `n` floats that is NaN, infinite or beyond
 * MAX_SAMPLE_MAGNITUDE, or -1. */
static int64_t first_damaged(const float *x, int64_t n)
{
    for (int64_t k = 0; k < n; k++)
        if (!(fabsf(x[k]) <= MAX_SAMPLE_MAGNITUDE)) return k;
    return -1;
}

/* Decodes `count` frames from the current position into b->wave, laid out
 * as the options ask (LAY_OUT), growing it (doubling, up to `count`) when
 * the header promised more than the first allocation. Reads in blocks
 * through `scratch` (IO_BLOCK frames of every channel, as floats). 16-bit
 * PCM (MIMII's format) is read as integers and only the samples kept are
 * converted: picking one channel of 8 that way was 5x faster than
 * libsndfile converting all of them. Other encodings are checked for NaN,
 * Inf and absurd magnitudes, which only a float file (or a broken decoder)
 * can hold. */
static mrt_status decode(const char *path, SNDFILE *sf, int format, int channels,
                         int64_t first, int64_t count, const mrt_audio_load_opts *o,
                         void *scratch, out_buffer *b)
{
    const int pcm16 = (format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16;
    const float *fbuf = scratch;
    const short *sbuf = scratch;
    const float inv = 1.0f / (float)channels;
    int64_t done = 0;
    while (done < count) {
        int64_t left = count - done;
        sf_count_t want = left < IO_BLOCK ? (sf_count_t)left : IO_BLOCK;
        if (done + want > b->cap) {
            int64_t cap = b->cap > count / 2 ? count : 2 * b->cap;
            if (cap < done + want) cap = done + want;
            mrt_status st = buffer_alloc(path, b, cap, done);
            if (st != MRT_OK) return st;
        }
        sf_count_t got = pcm16 ? sf_readf_short(sf, scratch, want)
                               : sf_readf_float(sf, scratch, want);
        if (got <= 0) {
            int err = sf_error(sf);
            return mrt_fail(MRT_ERR_FORMAT,
                            "audio.load: %s is truncated or corrupt: decoding stopped at frame "
                            "%lld of %lld%s%s", path, (long long)(first + done),
                            (long long)(first + count), err ? ": " : "",
                            err ? sf_strerror(sf) : "");
        }
        if (!pcm16) {
            int64_t k = first_damaged(fbuf, (int64_t)got * channels);
            if (k >= 0) {
                char value[32];
                if (isfinite(fbuf[k])) snprintf(value, sizeof value, "%g", (double)fbuf[k]);
                else snprintf(value, sizeof value, "%s",
                              isnan(fbuf[k]) ? "NaN" : fbuf[k] > 0 ? "Inf" : "-Inf");
                return mrt_fail(MRT_ERR_FORMAT,
                                "audio.load: %s is corrupt: sample %s at frame %lld, channel "
                                "%d (audio samples must be finite, at most %g in magnitude)",
                                path, value, (long long)(first + done + k / channels + 1),
                                (int)(k % channels) + 1, (double)MAX_SAMPLE_MAGNITUDE);
            }
        }
        float *dst = mrt_f32(&b->wave);
        const int64_t stride = b->cap;
        if (pcm16) LAY_OUT(SHORT_SAMPLE);
        else LAY_OUT(FLOAT_SAMPLE);
        done += got;
    }
    return MRT_OK;
}

/* Refuses an upsampling of `frames` frames (`rows` rows) from `from` to `to`
 * Hz that would turn a file into more than RESAMPLE_FREE_BYTES and more
 * than MAX_UPSAMPLE_FACTOR times its decoded size. */
static mrt_status check_upsampling(const char *path, int64_t frames, int rows, int from, int to)
{
    if ((double)to <= (double)from * MAX_UPSAMPLE_FACTOR) return MRT_OK;
    double out_frames = (double)frames * to / from;
    double bytes = out_frames * rows * sizeof(float);
    if (bytes <= RESAMPLE_FREE_BYTES) return MRT_OK;
    return mrt_fail(MRT_ERR_FORMAT,
                    "audio.load: %s: resampling its %lld frames from %d Hz to %d Hz would "
                    "make %.4g frames (%.1f GiB): refused, an upsampling by more than %dx "
                    "is limited to %.0f GiB (is the header's sample rate right?)", path,
                    (long long)frames, from, to, out_frames, bytes / (1u << 30),
                    MAX_UPSAMPLE_FACTOR, RESAMPLE_FREE_BYTES / (1u << 30));
}

mrt_status mrt_audio_load(const char *path, const mrt_audio_load_opts *opts, mrt_tensor *out,
                          int *sample_rate)
{
    const mrt_audio_load_opts defaults = MRT_AUDIO_LOAD_DEFAULTS;
    const mrt_audio_load_opts *o = opts ? opts : &defaults;
    if (!out || out->storage)
        return mrt_fail(MRT_ERR_ARG, "audio.load: the output tensor must be empty");
    if (o->mono && o->channel != MRT_AUDIO_ALL_CHANNELS)
        return mrt_fail(MRT_ERR_ARG, "audio.load: %s: give either channel or mono, not both",
                        path ? path : "(null)");
    if (o->sample_rate < 0 || o->sample_rate > MRT_AUDIO_MAX_RATE)
        return mrt_fail(MRT_ERR_ARG, "audio.load: %s: sample_rate must be a positive integer "
                        "up to %d Hz, got %d", path ? path : "(null)", MRT_AUDIO_MAX_RATE,
                        o->sample_rate);

    SNDFILE *sf;
    SF_INFO info;
    mrt_status st = open_read("audio.load", path, &sf, &info);
    if (st != MRT_OK) return st;
    if (o->channel != MRT_AUDIO_ALL_CHANNELS && (o->channel < 0 || o->channel >= info.channels)) {
        sf_close(sf);
        return mrt_fail(MRT_ERR_INDEX, "audio.load: %s: channel %d out of range (the file has "
                        "%d channel%s)", path, o->channel + 1, info.channels,
                        info.channels == 1 ? "" : "s");
    }
    int64_t first = 0, count = 0;
    st = select_frames(path, o, info.samplerate, (int64_t)info.frames, &first, &count);
    if (st != MRT_OK) {
        sf_close(sf);
        return st;
    }

    float *scratch = malloc((size_t)IO_BLOCK * (size_t)info.channels * sizeof *scratch);
    out_buffer b = {.one_row = o->mono || o->channel != MRT_AUDIO_ALL_CHANNELS,
                    .channels = info.channels};
    mrt_tensor wave = {0};
    if (!scratch) {
        st = mrt_fail(MRT_ERR_NOMEM, "audio.load: %s: out of memory", path);
        goto done;
    }
    st = buffer_alloc(path, &b, first_capacity(path, count, info.channels), 0);
    if (st != MRT_OK) goto done;
    st = skip_frames(path, sf, &info, first, scratch);
    if (st == MRT_OK)
        st = decode(path, sf, info.format, info.channels, first, count, o, scratch, &b);
    wave = b.wave; /* released at `done` unless handed out */
    if (st != MRT_OK) goto done;

    int rate = info.samplerate;
    if (o->sample_rate > 0 && o->sample_rate != rate) {
        st = check_upsampling(path, count, b.one_row ? 1 : info.channels, rate, o->sample_rate);
        if (st != MRT_OK) goto done;
        mrt_tensor res = {0};
        st = mrt_audio_resample(&wave, rate, o->sample_rate, o->resampler, &res);
        if (st != MRT_OK) goto done;
        mrt_tensor_release(&wave);
        wave = res;
        rate = o->sample_rate;
    }
    *out = wave;
    wave.storage = NULL; /* ownership moved to the caller */
    if (sample_rate) *sample_rate = rate;

done:
    mrt_tensor_release(&wave);
    free(scratch);
    sf_close(sf);
    return st;
}

/* ---- 16-bit samples, kept small ------------------------------------------------ */

#define PCM16_HEADER 2 /* int64 elements before the samples: frames, rate */

mrt_status mrt_audio_load_pcm16(const char *path, int channel, mrt_tensor *packed, int *is_pcm16)
{
    if (!packed || packed->storage || !is_pcm16)
        return mrt_fail(MRT_ERR_ARG, "audio.load_pcm16: the output tensor must be empty");
    *is_pcm16 = 0;
    mrt_audio_info info;
    mrt_status st = mrt_audio_read_info(path, &info);
    if (st != MRT_OK || strcmp(info.encoding, "pcm16") != 0) return st;
    mrt_audio_load_opts o = MRT_AUDIO_LOAD_DEFAULTS;
    o.channel = channel;
    mrt_tensor wave = {0};
    int rate = 0;
    st = mrt_audio_load(path, &o, &wave, &rate);
    if (st != MRT_OK) return st;
    if (wave.ndim == 2 && wave.shape[0] != 1) {
        mrt_tensor_release(&wave);
        return mrt_fail(MRT_ERR_ARG, "audio.load_pcm16: %s has %d channels: pick one", path,
                        info.channels);
    }
    const int64_t frames = wave.shape[wave.ndim - 1];
    int64_t n = PCM16_HEADER + (frames + 3) / 4;
    st = mrt_tensor_alloc(packed, MRT_I64, 1, &n);
    if (st == MRT_OK) {
        int64_t *head = mrt_i64(packed);
        head[0] = frames;
        head[1] = rate;
        int16_t *samples = (int16_t *)(head + PCM16_HEADER);
        const float *x = mrt_f32(&wave);
        for (int64_t i = 0; i < frames; i++) {
            /* Exact: the decoder made each sample s / 32768 of a 16-bit s. */
            float s = x[i] * 32768.0f;
            if (!(s >= -32768.0f && s <= 32767.0f) || s != (float)(int16_t)s) {
                mrt_tensor_release(packed);
                st = mrt_fail(MRT_ERR_FORMAT, "audio.load_pcm16: %s: sample %lld (%g) is not "
                              "a 16-bit sample", path, (long long)i + 1, (double)x[i]);
                break;
            }
            samples[i] = (int16_t)s;
        }
        if (st == MRT_OK) *is_pcm16 = 1;
    }
    mrt_tensor_release(&wave);
    return st;
}

mrt_status mrt_audio_unpack_pcm16(const mrt_tensor *packed, int sample_rate, mrt_resampler how,
                                  const char *name, mrt_tensor *out)
{
    if (!packed || !packed->storage || packed->dtype != MRT_I64 || packed->ndim != 1 ||
        !mrt_tensor_is_contiguous(packed) || packed->shape[0] < PCM16_HEADER)
        return mrt_fail(MRT_ERR_ARG, "audio.unpack_pcm16: expects the samples of "
                        "audio.load_pcm16 (a 1-D int64 tensor)");
    const int64_t *head = mrt_i64(packed);
    const int64_t frames = head[0], rate = head[1];
    /* frames / 4 + (frames % 4 != 0), not (frames + 3) / 4: frames is read from
     * the buffer and may be near INT64_MAX. load_pcm16 never packs 0 frames
     * (audio.load refuses a file without any). */
    if (frames < 1 || frames / 4 + (frames % 4 != 0) != packed->shape[0] - PCM16_HEADER ||
        rate < 1 || rate > MRT_AUDIO_MAX_RATE)
        return mrt_fail(MRT_ERR_ARG, "audio.unpack_pcm16: %s: not the samples of "
                        "audio.load_pcm16 (%lld frames at %lld Hz in %lld elements)",
                        name ? name : "(unnamed)", (long long)frames, (long long)rate,
                        (long long)packed->shape[0]);
    if (!out || out->storage) return mrt_fail(MRT_ERR_ARG, "audio.unpack_pcm16: the output tensor must be empty");
    mrt_tensor wave = {0};
    mrt_status st = mrt_tensor_alloc_uninit(&wave, MRT_F32, 1, &frames);
    if (st != MRT_OK) return st;
    const int16_t *samples = (const int16_t *)(head + PCM16_HEADER);
    float *x = mrt_f32(&wave);
    const short *sbuf = samples;
    for (int64_t k = 0; k < frames; k++) x[k] = SHORT_SAMPLE(k);
    if (sample_rate > 0 && sample_rate != rate) {
        st = check_upsampling(name ? name : "(unnamed)", frames, 1, (int)rate, sample_rate);
        mrt_tensor res = {0};
        if (st == MRT_OK) st = mrt_audio_resample(&wave, (int)rate, sample_rate, how, &res);
        mrt_tensor_release(&wave);
        if (st != MRT_OK) return st;
        wave = res;
    }
    *out = wave;
    return MRT_OK;
}

/* ---- save ------------------------------------------------------------------ */

static const char *path_extension(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash + 1 : path, '.');
    return dot && dot[1] ? dot + 1 : NULL;
}

/* Container from opts->format, else from the extension. Extensions of
 * formats machrt cannot write (mp3, m4a, ...) are refused rather than
 * silently given WAV content. */
static mrt_status pick_major(const char *path, const char *format, int *major, const char **name)
{
    static const struct { const char *name; int major; } known[] = {
        {"wav", SF_FORMAT_WAV}, {"wave", SF_FORMAT_WAV}, {"flac", SF_FORMAT_FLAC},
        {"ogg", SF_FORMAT_OGG}, {"oga", SF_FORMAT_OGG}, {"aiff", SF_FORMAT_AIFF},
        {"aif", SF_FORMAT_AIFF}};
    static const char *const refused[] = {"mp3", "mp2", "m4a", "mp4", "aac", "opus", "wma",
                                          "webm", "caf", "au", "w64", "rf64", "aifc", NULL};
    const char *want = format;
    if (!want) {
        const char *ext = path_extension(path);
        if (!ext) { *major = SF_FORMAT_WAV; *name = "wav"; return MRT_OK; }
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcasecmp(ext, known[i].name) == 0) {
                *major = known[i].major;
                *name = major_name(known[i].major);
                return MRT_OK;
            }
        for (int i = 0; refused[i]; i++)
            if (strcasecmp(ext, refused[i]) == 0)
                return mrt_fail(MRT_ERR_ARG, "audio.save: %s: unsupported format '%s' "
                                "(audio.save writes wav, flac, ogg, aiff)", path, ext);
        *major = SF_FORMAT_WAV;
        *name = "wav";
        return MRT_OK;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcasecmp(want, known[i].name) == 0) {
            *major = known[i].major;
            *name = major_name(known[i].major);
            return MRT_OK;
        }
    return mrt_fail(MRT_ERR_ARG, "audio.save: %s: unsupported format '%s' (audio.save "
                    "writes wav, flac, ogg, aiff)", path, want);
}

static mrt_status pick_subtype(const char *path, int major, const char *mname,
                               const char *encoding, int *subtype)
{
    static const struct { const char *name; int sub; } known[] = {
        {"pcm16", SF_FORMAT_PCM_16}, {"pcm24", SF_FORMAT_PCM_24}, {"pcm32", SF_FORMAT_PCM_32},
        {"float", SF_FORMAT_FLOAT}, {"vorbis", SF_FORMAT_VORBIS}};
    if (!encoding) {
        *subtype = major == SF_FORMAT_OGG ? SF_FORMAT_VORBIS : SF_FORMAT_PCM_16;
        return MRT_OK;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcasecmp(encoding, known[i].name) == 0) {
            *subtype = known[i].sub;
            SF_INFO probe = {.samplerate = 16000, .channels = 1, .format = major | *subtype};
            if (!sf_format_check(&probe))
                return mrt_fail(MRT_ERR_ARG, "audio.save: %s: the %s format cannot store "
                                "%s samples", path, mname, known[i].name);
            return MRT_OK;
        }
    return mrt_fail(MRT_ERR_ARG, "audio.save: %s: unknown encoding '%s' (pcm16, pcm24, "
                    "pcm32, float, vorbis)", path, encoding);
}

/* Interleaves frames [f0, f0 + n) of the contiguous {channels, frames} data,
 * multiplied by `scale`. */
static void interleave(const float *src, int channels, int64_t frames, int64_t f0, int64_t n,
                       float scale, float *dst)
{
    for (int c = 0; c < channels; c++) {
        const float *row = src + (int64_t)c * frames + f0;
        for (int64_t i = 0; i < n; i++) dst[i * channels + c] = row[i] * scale;
    }
}

/* Full scale of a PCM subtype (2^(bits - 1)), 0 for the others. */
static float pcm_scale(int subtype)
{
    switch (subtype) {
    case SF_FORMAT_PCM_16: return 32768.0f;
    case SF_FORMAT_PCM_24: return 8388608.0f;
    case SF_FORMAT_PCM_32: return 2147483648.0f;
    default: return 0.0f;
    }
}

mrt_status mrt_audio_save(const char *path, const mrt_tensor *wave, int sample_rate,
                          const mrt_audio_save_opts *opts)
{
    if (!path) return mrt_fail(MRT_ERR_ARG, "audio.save: needs a file path");
    if (!wave || !wave->storage)
        return mrt_fail(MRT_ERR_ARG, "audio.save: %s: wave is not an allocated tensor", path);
    if (wave->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "audio.save: %s: wave must be float32, got %s", path,
                        mrt_dtype_name(wave->dtype));
    if (wave->ndim != 1 && wave->ndim != 2) {
        char sb[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "audio.save: %s: wave must be {frames} or {channels, "
                        "frames}, got a %d-d tensor of shape %s", path, wave->ndim,
                        mrt_shape_str(wave->ndim, wave->shape, sb, sizeof sb));
    }
    int channels = wave->ndim == 2 ? (int)wave->shape[0] : 1;
    int64_t frames = wave->shape[wave->ndim - 1];
    if (wave->ndim == 2 && (wave->shape[0] < 1 || wave->shape[0] > MRT_AUDIO_MAX_CHANNELS))
        return mrt_fail(MRT_ERR_SHAPE, "audio.save: %s: wave has %lld channels (1 to %d can "
                        "be written)", path, (long long)wave->shape[0], MRT_AUDIO_MAX_CHANNELS);
    if (frames < 1)
        return mrt_fail(MRT_ERR_SHAPE, "audio.save: %s: wave has no frames", path);
    if (sample_rate < 1 || sample_rate > MRT_AUDIO_MAX_RATE)
        return mrt_fail(MRT_ERR_ARG, "audio.save: %s: sample rate must be a positive integer "
                        "up to %d Hz, got %d", path, MRT_AUDIO_MAX_RATE, sample_rate);
    int major = SF_FORMAT_WAV, subtype = SF_FORMAT_PCM_16;
    const char *mname;
    mrt_status st = pick_major(path, opts ? opts->format : NULL, &major, &mname);
    if (st == MRT_OK) st = pick_subtype(path, major, mname, opts ? opts->encoding : NULL,
                                        &subtype);
    if (st != MRT_OK) return st;
    SF_INFO info = {.samplerate = sample_rate, .channels = channels, .format = major | subtype};
    if (!sf_format_check(&info))
        return mrt_fail(MRT_ERR_ARG, "audio.save: %s: the %s format cannot hold %d channels "
                        "at %d Hz", path, mname, channels, sample_rate);

    mrt_tensor src = {0};
    st = mrt_tensor_contiguous(wave, &src);
    if (st != MRT_OK) return st;
    const float *data = mrt_f32(&src);
    /* PCM would clip them and Vorbis would encode garbage: refuse instead. */
    for (int64_t i = 0; i < (int64_t)channels * frames; i++)
        if (!isfinite(data[i])) {
            mrt_tensor_release(&src);
            return mrt_fail(MRT_ERR_ARG, "audio.save: %s: wave holds a non-finite value (%g) "
                            "at channel %lld, frame %lld", path, (double)data[i],
                            (long long)(i / frames + 1), (long long)(i % frames + 1));
        }

    char *tmp = NULL;
    float *block = NULL;
    SNDFILE *sf = NULL;
    int fd = -1, created = 0;
    tmp = mrt_sys_temp_name(path);
    block = malloc((size_t)IO_BLOCK * (size_t)channels * sizeof *block);
    if (!tmp || !block) {
        st = mrt_fail(MRT_ERR_NOMEM, "audio.save: %s: out of memory", path);
        goto done;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s (creating the temporary "
                      "file %s)", path, strerror(errno), tmp);
        goto done;
    }
    created = 1;
    sf = sf_open_fd(fd, SFM_WRITE, &info, SF_FALSE);
    if (!sf) {
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s", tmp, sf_strerror(NULL));
        goto done;
    }
    /* Without clipping, libsndfile wraps out-of-range samples around. */
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
    /* libsndfile reads a 16-bit sample s as s / 32768 but, normalising on
     * write, stores x as x * 32767, so a load/save round trip would shrink
     * the signal. Scaling by 32768 ourselves (libsndfile then rounds to
     * nearest and clips) makes PCM round trips exact for every sample value
     * a PCM file can hold, the convention of sox and torchaudio. */
    float scale = pcm_scale(subtype);
    if (scale > 0.0f) sf_command(sf, SFC_SET_NORM_FLOAT, NULL, SF_FALSE);
    else scale = 1.0f;
    for (int64_t f0 = 0; f0 < frames; f0 += IO_BLOCK) {
        int64_t n = frames - f0 < IO_BLOCK ? frames - f0 : IO_BLOCK;
        interleave(data, channels, frames, f0, n, scale, block);
        if (sf_writef_float(sf, block, (sf_count_t)n) != (sf_count_t)n) {
            st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s", tmp, sf_strerror(sf));
            goto done;
        }
    }
    int cerr = sf_close(sf);
    sf = NULL;
    if (cerr != 0) {
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s", tmp, sf_error_number(cerr));
        goto done;
    }
    /* Flushed to disk before the rename publishes it. */
    if (fsync(fd) != 0) {
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        st = mrt_fail(MRT_ERR_IO, "audio.save: cannot replace %s: %s", path, strerror(errno));

done:
    if (sf) sf_close(sf);
    if (fd >= 0) close(fd);
    if (st != MRT_OK && created) unlink(tmp);
    free(tmp);
    free(block);
    mrt_tensor_release(&src);
    return st;
}
