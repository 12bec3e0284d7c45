/* Fixed-size chunks of a clip: the inference `Fix` method of the reference
 * experiment (non-overlapping chunks, at most max_frames of audio). */
#include "machrt/audio_io.h"

#include <string.h>

mrt_status mrt_audio_chunks(const mrt_tensor *wave, int64_t chunk_frames, int64_t max_frames,
                            mrt_tensor *out)
{
    if (!wave || !wave->storage)
        return mrt_fail(MRT_ERR_ARG, "audio.chunks: wave is not an allocated tensor");
    if (!out) return mrt_fail(MRT_ERR_ARG, "audio.chunks: needs an output tensor");
    if (wave->dtype != MRT_F32)
        return mrt_fail(MRT_ERR_DTYPE, "audio.chunks: wave must be float32, got %s",
                        mrt_dtype_name(wave->dtype));
    if (wave->ndim != 1) {
        char sb[MRT_SHAPE_STRLEN];
        return mrt_fail(MRT_ERR_SHAPE, "audio.chunks: wave must be {frames} (one channel), got "
                        "a %d-d tensor of shape %s", wave->ndim,
                        mrt_shape_str(wave->ndim, wave->shape, sb, sizeof sb));
    }
    if (chunk_frames < 1)
        return mrt_fail(MRT_ERR_ARG, "audio.chunks: a chunk must hold at least one frame, got "
                        "%lld", (long long)chunk_frames);
    if (max_frames < 1)
        return mrt_fail(MRT_ERR_ARG, "audio.chunks: max_seconds must cover at least one frame, "
                        "got %lld frames", (long long)max_frames);
    int64_t frames = wave->shape[0];
    if (frames < 1) return mrt_fail(MRT_ERR_SHAPE, "audio.chunks: wave has no frames");
    int64_t used = frames < max_frames ? frames : max_frames;
    /* A clip shorter than one chunk still gives one (zero-padded) chunk, so
     * every clip gets a prediction; otherwise the tail that does not fill a
     * chunk is dropped, as the reference does. */
    int64_t n = used < chunk_frames ? 1 : used / chunk_frames;
    int64_t shape[2] = {n, chunk_frames};
    mrt_status st = mrt_tensor_prepare_out("audio.chunks", out, MRT_F32, 2, shape);
    if (st != MRT_OK) return st;
    if (used < chunk_frames) {
        st = mrt_tensor_fill(out, 0.0);
        mrt_tensor row = {0}, part = {0}, src = {0};
        if (st == MRT_OK) st = mrt_view_select(out, 0, 0, &row);
        if (st == MRT_OK) st = mrt_view_narrow(&row, 0, 0, used, &part);
        if (st == MRT_OK) st = mrt_view_narrow(wave, 0, 0, used, &src);
        if (st == MRT_OK) st = mrt_tensor_copy(&part, &src);
        mrt_tensor_release(&row);
        mrt_tensor_release(&part);
        mrt_tensor_release(&src);
        return st;
    }
    /* The first n * chunk_frames frames, viewed as {n, chunk_frames}. */
    mrt_tensor head = {0}, src = {0};
    st = mrt_view_narrow(wave, 0, 0, n * chunk_frames, &head);
    if (st == MRT_OK) st = mrt_tensor_reshape(&head, 2, shape, &src);
    if (st == MRT_OK) st = mrt_tensor_copy(out, &src);
    mrt_tensor_release(&head);
    mrt_tensor_release(&src);
    return st;
}
