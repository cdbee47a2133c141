/* libFuzzer target: any byte string read as an IDX image file or an IDX label
 * file (plain or gzip) must be refused or accepted cleanly, never read out of
 * bounds or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "data/dataset.h"
#include "fuzz_input_file.h"

/* Labels are only read into a dataset with as many examples as the label file
 * holds. Take that count from a plain (uncompressed) label header when there
 * is one, so that the label body is reached; bound it so that a corrupt count
 * cannot ask for an absurd allocation. */
static long label_count_to_expect(const uint8_t *data, size_t size) {
    if (size < 8) return 1;
    uint32_t count = (uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 | (uint32_t)data[6] << 8 | data[7];
    return count > 0 && count <= (1u << 20) ? (long)count : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file_write(data, size);

    vae_dataset images;
    if (vae_dataset_load_idx_images(path, &images) == VAE_OK) {
        /* Touch every value so that a buffer shorter than the header says is seen. */
        const uint8_t *values = images.values;
        volatile unsigned sum = 0;
        for (long i = 0; i < images.count * (long)images.dim; ++i) sum += values[i];
        (void)sum;
    }
    vae_dataset_free(&images);

    vae_dataset dataset;
    memset(&dataset, 0, sizeof dataset);
    dataset.count = label_count_to_expect(data, size);
    if (vae_dataset_load_idx_labels(path, &dataset) == VAE_OK) {
        volatile uint32_t sum = 0;
        for (long i = 0; i < dataset.count; ++i) sum += (uint32_t)dataset.labels[i];
        (void)sum;
    }
    vae_dataset_free(&dataset);
    return 0;
}
