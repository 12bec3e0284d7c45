/* libFuzzer target: safetensors files (mt.load). Any input must either
 * load or fail with a message; a loaded file must hold tensors whose bytes
 * lie inside the file, which ASan checks as the data is read back. */
#include "fuzz_file.h"
#include "machrt/safetensors.h"
#include "machrt/status.h"

/* Every byte of every tensor is read into this, so ASan sees each access. */
static volatile unsigned fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_input_file(".safetensors", data, size);
    mrt_named_tensor *tensors = NULL;
    int n = 0;
    char *meta = NULL;
    mrt_status st = mrt_safetensors_load(path, &tensors, &n, &meta);
    if (st != MRT_OK) {
        if (!mrt_last_error()[0]) abort(); /* a failure must say why */
        if (tensors || n) abort();         /* and leave nothing behind */
        return 0;
    }
    for (int i = 0; i < n; i++) {
        const mrt_tensor *t = &tensors[i].tensor;
        if (!tensors[i].name || !t->storage) abort();
        size_t elem = mrt_dtype_size(t->dtype);
        size_t nbytes = (size_t)mrt_tensor_numel(t) * elem;
        if ((size_t)t->offset * elem + nbytes > t->storage->nbytes) abort();
        const unsigned char *bytes = (const unsigned char *)t->storage->data + t->offset * elem;
        for (size_t k = 0; k < nbytes; k++) fuzz_sink += bytes[k];
    }
    mrt_safetensors_free(tensors, n);
    free(meta);
    return 0;
}
