/* Audio decoding and encoding (libsndfile), resampling (libsoxr, or
 * torchaudio's windowed sinc) and the fixed-size chunking used at inference.
 *
 * Conventions follow tensor.h: 0-based channels and dimensions in C (the Lua
 * binding converts from 1-based), float32 samples in [-1, 1] for PCM files
 * (libsndfile's normalisation: a 16-bit sample s reads as s / 32768), and
 * every fallible call returns an mrt_status with a message naming the
 * operation as the Lua user calls it ("audio.load", ...) and the file or
 * parameter at fault. */
#ifndef MACHRT_AUDIO_IO_H
#define MACHRT_AUDIO_IO_H

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include "machrt/tensor.h"

/* Sample rates are integers in [1, MRT_AUDIO_MAX_RATE] Hz: the bound keeps
 * frame arithmetic (frames * rate) far inside int64. */
#define MRT_AUDIO_MAX_RATE 10000000

/* Channels libsndfile can read or write (its SF_MAX_CHANNELS). */
#define MRT_AUDIO_MAX_CHANNELS 1024

/* ---- info ---------------------------------------------------------------- */

typedef struct {
    int sample_rate;
    int channels;
    int64_t frames;
    double seconds;     /* frames / sample_rate */
    char format[16];    /* container, lower case: "wav", "flac", "ogg", "aiff", ... */
    char encoding[16];  /* "pcm16", "pcm24", "pcm32", "pcm8", "float", "double",
                           "vorbis", "ulaw", ... */
} mrt_audio_info;

/* Reads the header of `path` (and checks what the header alone can show:
 * an empty or truncated file is an error, as for mrt_audio_load). */
mrt_status mrt_audio_read_info(const char *path, mrt_audio_info *info);

/* ---- resamplers ---------------------------------------------------------- */

/* The resampling algorithms. */
typedef enum {
    MRT_RESAMPLER_SOXR = 0,  /* libsoxr, high quality, linear phase, flat passband
                                to 91 % of the lower Nyquist frequency, stopband
                                below -135 dB */
    MRT_RESAMPLER_TORCHAUDIO /* torchaudio.functional.resample's default:
                                windowed sinc (Hann), 6 zero crossings, rolloff
                                0.99 (the reference recipe's resampler) */
} mrt_resampler;

/* ---- load ------------------------------------------------------------------ */

/* Not a channel number: every negative other than this is an out-of-range
 * channel (reported with the file's channel count, like one too large). */
#define MRT_AUDIO_ALL_CHANNELS INT_MIN

typedef struct {
    int channel;        /* MRT_AUDIO_ALL_CHANNELS: {channels, frames};
                           c >= 0: channel c alone (0-based), {frames} */
    int mono;           /* nonzero: mean of all channels, {frames} */
    double offset;      /* seconds skipped at the start, >= 0 */
    double duration;    /* seconds read, >= 0; INFINITY = to the end */
    int sample_rate;    /* 0: the file's rate; > 0: resampled to this rate */
    mrt_resampler resampler; /* how, when sample_rate asks for another rate */
} mrt_audio_load_opts;

#define MRT_AUDIO_LOAD_DEFAULTS \
    {.channel = MRT_AUDIO_ALL_CHANNELS, .mono = 0, .offset = 0.0, .duration = INFINITY, \
     .sample_rate = 0, .resampler = MRT_RESAMPLER_SOXR}

/* Decodes `path` into `out` (which must be empty). Only the frames selected
 * by offset/duration are decoded (the decoder seeks to the offset). A
 * duration running past the end is cut at the end; an offset at or past the
 * end is an error. offset and duration convert to frames by rounding to the
 * nearest frame at the file's rate. `*sample_rate` (may be NULL) receives
 * the rate of `out`. `opts` NULL means MRT_AUDIO_LOAD_DEFAULTS.
 * A decoded sample that is NaN, infinite or beyond 1e10 in magnitude makes
 * the file corrupt (MRT_ERR_FORMAT naming frame and channel); so does a
 * header claiming frames the file does not hold. An upsampling by more than
 * 64x to more than 1 GiB is refused (MRT_ERR_FORMAT naming both rates). */
mrt_status mrt_audio_load(const char *path, const mrt_audio_load_opts *opts, mrt_tensor *out,
                          int *sample_rate);

/* ---- 16-bit samples, kept small ------------------------------------------------ */

/* A cache of decoded clips can keep a 16-bit PCM file's samples as the file
 * holds them (2 bytes a frame at the file's rate) and resample on every use,
 * instead of float32 at the model's rate (4 bytes a frame, 5.5 at 22050 Hz
 * from 16 kHz). There is no int16 tensor type: the samples are packed into an
 * int64 tensor, a byte buffer for the cache and nothing else, {2 + ceil(frames
 * / 4)}: element 0 the frame count, element 1 the sample rate, then the
 * samples, four to an element in native byte order. */

/* Decodes channel `channel` (0-based, or MRT_AUDIO_ALL_CHANNELS for a mono
 * file) of `path` at its own rate, as mrt_audio_load does, into `packed`
 * (empty). A file that is not 16-bit PCM leaves `packed` empty (*is_pcm16 =
 * 0): its samples are not 16-bit integers. */
mrt_status mrt_audio_load_pcm16(const char *path, int channel, mrt_tensor *packed, int *is_pcm16);

/* The float32 wave {frames} of packed samples (s / 32768, as mrt_audio_load
 * reads them) resampled to `sample_rate` (0: the file's rate) by `how`: bit
 * for bit what mrt_audio_load with that channel, rate and resampler gives,
 * with its refusal of an absurd upsampling (naming `name`, the file). */
mrt_status mrt_audio_unpack_pcm16(const mrt_tensor *packed, int sample_rate, mrt_resampler how,
                                  const char *name, mrt_tensor *out);

/* ---- save ------------------------------------------------------------------ */

typedef struct {
    const char *format;   /* "wav", "flac", "ogg", "aiff"; NULL: from the path's
                             extension (.wav .flac .ogg .oga .aif .aiff), WAV for
                             any other extension */
    const char *encoding; /* "pcm16" (NULL: the default; "vorbis" for ogg),
                             "pcm24", "pcm32", "float" */
} mrt_audio_save_opts;

/* Writes `wave` ({frames} or {channels, frames}, float32) to `path`. PCM
 * encodings clip samples outside [-1, 1). The file is written under a
 * temporary name in the same directory and renamed into place, so `path`
 * never holds a half-written file. `opts` may be NULL. */
mrt_status mrt_audio_save(const char *path, const mrt_tensor *wave, int sample_rate,
                          const mrt_audio_save_opts *opts);

/* ---- resample ------------------------------------------------------------- */

/* Frames after resampling `frames` from `from` Hz to `to` Hz:
 * ceil(frames * to / from), as torchaudio.functional.resample. */
int64_t mrt_audio_resampled_length(int64_t frames, int from, int to);

/* Resamples `in` ({..., frames}, float32, any rank >= 1) along its last
 * dimension from `from` Hz to `to` Hz with the resampler `how`. Rows run in
 * parallel. `out` follows the output convention of tensor.h: shape
 * {..., mrt_audio_resampled_length(frames, from, to)}. Equal rates copy. */
mrt_status mrt_audio_resample(const mrt_tensor *in, int from, int to, mrt_resampler how,
                              mrt_tensor *out);

/* ---- chunks ----------------------------------------------------------------- */

/* The inference `Fix` method: the first `max_frames` frames of `wave`
 * ({frames}) cut into non-overlapping chunks of `chunk_frames`, as
 * `out` {n_chunks, chunk_frames} (output convention of tensor.h). A last
 * partial chunk is zero-padded when it is the only chunk (a clip shorter
 * than one chunk), otherwise dropped. */
mrt_status mrt_audio_chunks(const mrt_tensor *wave, int64_t chunk_frames, int64_t max_frames,
                            mrt_tensor *out);

#endif
