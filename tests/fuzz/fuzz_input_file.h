/* The IDX and NPY readers take a path, not a buffer: fuzz targets write each
 * input to one per-process temporary file (created on first use, rewritten in
 * place each call, its name removed at once: the path handed to the readers
 * is /proc/self/fd/N) and hand the readers that path. */
#ifndef VAE_FUZZ_INPUT_FILE_H
#define VAE_FUZZ_INPUT_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Writes data to the temporary file and returns its path; aborts when the
 * file cannot be written (a broken harness must not look like a clean run). */
const char *fuzz_input_file_write(const uint8_t *data, size_t size);

#endif
