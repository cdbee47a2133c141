/* libFuzzer target: any byte string read as an NPY data file or an NPY label
 * file must be refused or accepted cleanly, never read out of bounds or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "data/dataset.h"
#include "fuzz_input_file.h"

/* Labels are only read into a dataset with as many examples as the label file
 * holds. Take that count from the first number after "shape" in the header
 * text when there is one, so that the label body is reached; bound it so that
 * a corrupt count cannot ask for an absurd allocation. */
static long label_count_to_expect(const uint8_t *data, size_t size) {
    size_t limit = size < 512 ? size : 512;
    char header[513];
    memcpy(header, data, limit);
    header[limit] = '\0';
    for (size_t i = 0; i < limit; ++i)
        if (header[i] == '\0') header[i] = ' '; /* keep searching past NUL bytes of the preamble */
    const char *shape = strstr(header, "shape");
    if (shape == NULL) return 1;
    const char *digits = shape + strcspn(shape, "0123456789");
    if (*digits == '\0') return 1;
    unsigned long count = strtoul(digits, NULL, 10);
    return count > 0 && count <= (1ul << 20) ? (long)count : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file_write(data, size);

    vae_dataset dataset;
    if (vae_dataset_load_npy(path, &dataset) == VAE_OK) {
        /* Touch every value so that a buffer shorter than the header says is seen. */
        size_t bytes = (size_t)dataset.count * (size_t)dataset.dim * (dataset.dtype == VAE_DTYPE_U8 ? 1 : 4);
        const uint8_t *values = dataset.values;
        volatile unsigned sum = 0;
        for (size_t i = 0; i < bytes; ++i) sum += values[i];
        (void)sum;
    }
    vae_dataset_free(&dataset);

    memset(&dataset, 0, sizeof dataset);
    dataset.count = label_count_to_expect(data, size);
    if (vae_dataset_load_npy_labels(path, &dataset) == VAE_OK) {
        volatile uint32_t sum = 0;
        for (long i = 0; i < dataset.count; ++i) sum += (uint32_t)dataset.labels[i];
        (void)sum;
    }
    vae_dataset_free(&dataset);
    return 0;
}
