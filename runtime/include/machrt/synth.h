/* Synthetic machine sounds: the embedded default dataset (a MIMII-like
 * corpus of fans, pumps, slide rails and valves in factory noise).
 *
 * A clip is a pure function of its mrt_synth_clip description: every random
 * draw comes from Philox streams keyed on (seed, index, purpose), never from
 * shared state, so clips can be rendered in any order on any number of
 * threads and the files are byte-identical. Per-model parameters (rotation
 * speed, resonances, stroke period, ...) are keyed on (type, model id) only:
 * a model id is the same machine under every seed, as in a recording
 * campaign; the seed changes the recordings.
 *
 * Output follows MIMII: 16 kHz, 10.0 s, 1 or 8 channels (a circular array:
 * per-microphone delay and gain). Messages name the operation as the Lua
 * user calls it ("synth.clip", "synth.write"). */
#ifndef MACHRT_SYNTH_H
#define MACHRT_SYNTH_H

#include <stdint.h>
#include "machrt/status.h"

#define MRT_SYNTH_RATE 16000
#define MRT_SYNTH_FRAMES 160000 /* 10.0 s */
#define MRT_SYNTH_MAX_CHANNELS 8

typedef enum {
    MRT_SYNTH_FAN = 0,
    MRT_SYNTH_PUMP,
    MRT_SYNTH_SLIDER,
    MRT_SYNTH_VALVE,
    MRT_SYNTH_NTYPES
} mrt_synth_type;

typedef struct {
    int type;        /* mrt_synth_type */
    int model_id;    /* 0..99, as MIMII's id_NN */
    int abnormal;    /* nonzero: a fault of the type (see synth_machines.c) */
    double fault_severity; /* abnormal: (0, 1], from barely there to gross; normal: 0 */
    double snr_db;   /* machine-to-noise power ratio on channel 1, in [-30, 30] */
    int channels;    /* 1 or 8 */
    uint64_t seed;
    uint64_t index;  /* the clip's number within the corpus */
} mrt_synth_clip;

/* "fan", "pump", "slider", "valve"; NULL when out of range. */
const char *mrt_synth_type_name(int type);
/* The type for a name, or -1. */
int mrt_synth_type_from_name(const char *name);

/* Checks a description; the message names `op` and the bad field. */
mrt_status mrt_synth_check(const char *op, const mrt_synth_clip *clip);

/* Renders one clip into `mix` (channels x MRT_SYNTH_FRAMES floats,
 * channel-major). `machine` and `noise`, when not NULL, receive the two
 * parts as each microphone records them (same layout), so that
 * mix == machine + noise exactly and the SNR can be measured back. */
mrt_status mrt_synth_render(const mrt_synth_clip *clip, float *mix, float *machine, float *noise);

/* Renders clips[i] and writes it as a 16-bit PCM WAV to paths[i] (missing
 * parent folders are created; each file is written under a temporary name
 * and renamed), in parallel over clips with `threads` OpenMP threads
 * (<= 0: mrt_get_num_threads()). The files do not depend on the thread
 * count. On failure the error of the lowest failing clip is reported. */
mrt_status mrt_synth_write(const mrt_synth_clip *clips, const char *const *paths, int n,
                           int threads);

#endif
