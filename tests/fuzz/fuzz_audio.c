/* libFuzzer target: audio files (audio.info, audio.load) in any format
 * libsndfile reads. Any input must either decode or fail with a message;
 * a decoded wave must have the shape the options ask for and finite
 * samples. Allocations beyond libFuzzer's -malloc_limit_mb are findings:
 * a header must not make a small file ask for gigabytes. */
#include <math.h>

#include "fuzz_file.h"
#include "machrt/audio_io.h"
#include "machrt/status.h"

static void check_wave(const mrt_tensor *w, int ndim, int64_t rows)
{
    if (w->ndim != ndim || (ndim == 2 && w->shape[0] != rows)) abort();
    const float *x = mrt_f32(w);
    for (int64_t i = 0; i < mrt_tensor_numel(w); i++)
        if (!isfinite(x[i])) abort();
}

/* Loads with `o`; a failure must leave a message and no tensor. */
static void load(const char *path, const mrt_audio_load_opts *o, int ndim, int64_t rows)
{
    mrt_tensor w = {0};
    int sr = 0;
    if (mrt_audio_load(path, o, &w, &sr) != MRT_OK) {
        if (!mrt_last_error()[0] || w.storage) abort();
        return;
    }
    if (sr < 1) abort();
    check_wave(&w, ndim, rows);
    mrt_tensor_release(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_input_file(".audio", data, size);
    mrt_audio_info info;
    if (mrt_audio_read_info(path, &info) != MRT_OK) {
        if (!mrt_last_error()[0]) abort();
        /* A header info refuses may still not crash the full decoder. */
        load(path, NULL, 2, -1);
        return 0;
    }
    if (info.channels < 1 || info.sample_rate < 1 || info.frames < 1) abort();
    mrt_audio_load_opts all = MRT_AUDIO_LOAD_DEFAULTS;
    load(path, &all, 2, info.channels);
    mrt_audio_load_opts one = MRT_AUDIO_LOAD_DEFAULTS;
    one.channel = info.channels - 1;
    one.offset = 0.25 * info.seconds;
    one.duration = 0.5;
    load(path, &one, 1, 1);
    /* Resampling (libsoxr) only to short results, so the fuzzer keeps its
     * pace; the bound on long ones is tested in the Check suites. */
    if ((double)info.frames * 16000 / info.sample_rate <= 1e6) {
        mrt_audio_load_opts mono = MRT_AUDIO_LOAD_DEFAULTS;
        mono.mono = 1;
        mono.sample_rate = 16000;
        load(path, &mono, 1, 1);
    }
    return 0;
}
