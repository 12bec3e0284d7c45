/* The fuzz input as a file: the parsers under test read paths, as users
 * give them. One temporary file per process, rewritten for every input and
 * removed at exit. */
#ifndef MACHRT_FUZZ_FILE_H
#define MACHRT_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_path[64];

static void fuzz_remove_input(void) { unlink(fuzz_path); }

/* Writes data to the process's input file and returns its path; aborts
 * when the file cannot be written (a harness fault, not a finding). */
static const char *fuzz_input_file(const char *suffix, const uint8_t *data, size_t size)
{
    if (!fuzz_path[0]) {
        snprintf(fuzz_path, sizeof fuzz_path, "/tmp/machrt-fuzz-%ld%s", (long)getpid(), suffix);
        atexit(fuzz_remove_input);
    }
    FILE *f = fopen(fuzz_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(fuzz_path);
        abort();
    }
    return fuzz_path;
}

#endif
