/* libFuzzer target: any byte string read as an IDX image file or an IDX label
 * file (plain or gzip) must be refused or accepted cleanly, never read out of
 * bounds or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "dataset.h"
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

/* The image reader allocates what the header promises (up to 2^31 bytes, by
 * design) before it reads the data. Under AddressSanitizer each such
 * allocation costs about 0.3 s (the shadow of the whole block is poisoned on
 * free), which would slow this target to a few hundred inputs a second. Inputs
 * whose header, plain or gzip, promises more than this are skipped; headers
 * beyond the reader's own limit are still fuzzed (refused before allocating). */
#define LARGEST_IMAGE_BYTES_FUZZED ((uint64_t)1 << 24)

static int promises_large_images(const uint8_t *data, size_t size) {
    uint8_t header[16];
    size_t have = 0;
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        z_stream stream;
        memset(&stream, 0, sizeof stream);
        if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) return 0;
        stream.next_in = (Bytef *)data;
        stream.avail_in = (uInt)(size < UINT32_MAX ? size : UINT32_MAX);
        stream.next_out = header;
        stream.avail_out = sizeof header;
        (void)inflate(&stream, Z_SYNC_FLUSH); /* a broken stream just yields fewer bytes */
        have = sizeof header - stream.avail_out;
        inflateEnd(&stream);
    } else {
        have = size < sizeof header ? size : sizeof header;
        memcpy(header, data, have);
    }
    if (have < sizeof header || header[0] != 0 || header[1] != 0 || header[2] != 8 || header[3] != 3) return 0;
    uint64_t bytes = 1;
    for (int i = 1; i <= 3; ++i) {
        /* bytes <= 2^31 and a factor < 2^32: the product cannot wrap. */
        bytes *= (uint32_t)header[4 * i] << 24 | (uint32_t)header[4 * i + 1] << 16 |
                 (uint32_t)header[4 * i + 2] << 8 | header[4 * i + 3];
        if (bytes > (uint64_t)INT32_MAX) return 0; /* the reader refuses it before allocating */
    }
    return bytes > LARGEST_IMAGE_BYTES_FUZZED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (promises_large_images(data, size)) return -1; /* -1: not added to the corpus */
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
