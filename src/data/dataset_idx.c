/* IDX readers (the MNIST / Fashion-MNIST file format): big-endian header
 * "0x00 0x00 type rank" followed by rank uint32 dimensions and raw values.
 * Files are read through zlib, which detects a gzip stream by its magic bytes
 * and reads anything else as plain bytes, so "x.gz" that is not compressed and
 * "x" that is compressed both work. Every header field is checked before it
 * is trusted, and the file must hold exactly the bytes the header promises. */
#include "data/dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "backends/backend.h"
#include "base/error.h"

#define IDX_IMAGES_MAGIC 0x00000803u /* unsigned bytes, rank 3: (count, rows, cols) */
#define IDX_LABELS_MAGIC 0x00000801u /* unsigned bytes, rank 1: (count) */

/* Examples one data set may hold (the epoch's permutation holds int32
 * indices) and values per example (the backends' dim is an int). The total
 * may exceed 2^31 values; a header that promises more than the file holds
 * costs no more memory than the file (read_growing). */
#define IDX_MAX_EXAMPLES ((uint64_t)INT32_MAX)
#define IDX_MAX_EXAMPLE_VALUES ((uint64_t)INT_MAX)

#define IDX_FIRST_BUFFER ((size_t)16 << 20)

/* gzread takes an unsigned and returns an int: read in pieces well below that. */
#define IDX_READ_CHUNK ((size_t)1 << 28)

static uint32_t big_endian_u32(const unsigned char *bytes) {
    return ((uint32_t)bytes[0] << 24) | ((uint32_t)bytes[1] << 16) | ((uint32_t)bytes[2] << 8) | (uint32_t)bytes[3];
}

/* Reads up to wanted bytes; *got says how many arrived. Fails only on a read
 * error or corrupt compressed data; a short read at end of file is not an
 * error here (the caller names what is missing). A compressed stream that
 * ends early is reported by zlib as Z_BUF_ERROR, which is also end of data. */
static vae_status read_bytes(gzFile file, const char *path, void *buffer, size_t wanted, size_t *got) {
    unsigned char *destination = buffer;
    *got = 0;
    while (*got < wanted) {
        size_t piece = wanted - *got;
        if (piece > IDX_READ_CHUNK) piece = IDX_READ_CHUNK;
        int count = gzread(file, destination + *got, (unsigned)piece);
        if (count < 0) {
            int zlib_error = 0;
            const char *message = gzerror(file, &zlib_error);
            if (zlib_error == Z_ERRNO)
                return vae_error(VAE_ERROR_IO, "%s: read failed: %s", path, strerror(errno));
            if (zlib_error == Z_BUF_ERROR) return VAE_OK; /* compressed stream cut short */
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: corrupt gzip data: %s", path, message);
        }
        if (count == 0) {
            int zlib_error = 0;
            const char *message = gzerror(file, &zlib_error);
            if (zlib_error == Z_ERRNO)
                return vae_error(VAE_ERROR_IO, "%s: read failed: %s", path, strerror(errno));
            if (zlib_error != Z_OK && zlib_error != Z_BUF_ERROR)
                return vae_error(VAE_ERROR_BAD_INPUT, "%s: corrupt gzip data: %s", path, message);
            return VAE_OK;
        }
        *got += (size_t)count;
    }
    return VAE_OK;
}

/* Reads up to total bytes into a buffer that grows with what actually
 * arrives (doubling from 16 MiB), so a header that promises gigabytes in a
 * short file costs no more memory than the file holds. */
static vae_status read_growing(gzFile file, const char *path, size_t total, unsigned char **out, size_t *got) {
    size_t capacity = total < IDX_FIRST_BUFFER ? total : IDX_FIRST_BUFFER;
    unsigned char *buffer = malloc(capacity ? capacity : 1);
    *out = NULL;
    *got = 0;
    while (buffer) {
        size_t piece = 0;
        vae_status status = read_bytes(file, path, buffer + *got, capacity - *got, &piece);
        if (status != VAE_OK) {
            free(buffer);
            return status;
        }
        *got += piece;
        if (*got < capacity || capacity == total) {
            *out = buffer;
            return VAE_OK;
        }
        capacity = capacity > total / 2 ? total : 2 * capacity;
        unsigned char *grown = realloc(buffer, capacity);
        if (!grown) free(buffer);
        buffer = grown;
    }
    return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of image data", path, total);
}

static vae_status open_idx(const char *path, gzFile *out) {
    errno = 0;
    *out = gzopen(path, "rb");
    if (*out == NULL)
        return vae_error(VAE_ERROR_IO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    return VAE_OK;
}

/* After the payload the file must end: anything more means the header and the
 * data disagree. */
static vae_status expect_end(gzFile file, const char *path, const char *what, uint64_t payload_bytes) {
    unsigned char scratch[4096];
    uint64_t extra = 0;
    for (;;) {
        size_t got = 0;
        VAE_TRY(read_bytes(file, path, scratch, sizeof scratch, &got));
        if (got == 0) break;
        extra += got;
    }
    int zlib_error = 0;
    gzerror(file, &zlib_error);
    if (zlib_error == Z_BUF_ERROR) /* all data arrived but the gzip trailer (checksum, size) did not */
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: the compressed stream ends before its gzip trailer",
                         path);
    if (extra > 0)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: %llu trailing bytes after the %llu bytes of %s that the header describes",
                         path, (unsigned long long)extra, (unsigned long long)payload_bytes, what);
    return VAE_OK;
}

/* Reads the magic and the dimensions: rank dims, each nonzero, at most
 * IDX_MAX_EXAMPLES examples of at most IDX_MAX_EXAMPLE_VALUES values. */
static vae_status read_idx_header(gzFile file, const char *path, uint32_t expected_magic, const char *kind,
                                  uint32_t *dims, int rank, uint64_t *total) {
    unsigned char header[4 + 4 * 3];
    size_t header_bytes = 4 + 4 * (size_t)rank;
    size_t got = 0;
    VAE_TRY(read_bytes(file, path, header, 4, &got));
    if (got < 4)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated header: expected %zu bytes, found %zu", path,
                         header_bytes, got);
    uint32_t magic = big_endian_u32(header);
    if (magic != expected_magic)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: bad magic number 0x%08x: expected 0x%08x (IDX %s, unsigned bytes, %d dimensions)",
                         path, magic, expected_magic, kind, rank);
    VAE_TRY(read_bytes(file, path, header + 4, header_bytes - 4, &got));
    if (got < header_bytes - 4)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated header: expected %zu bytes, found %zu", path,
                         header_bytes, 4 + got);
    uint64_t example_values = 1;
    for (int i = 0; i < rank; ++i) {
        dims[i] = big_endian_u32(header + 4 + 4 * i);
        if (dims[i] == 0)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: dimension %d of the header is zero", path, i);
        if (i == 0) continue;
        /* Both factors are below 2^32 and example_values stays below 2^31
         * before this step, so the multiplication cannot wrap. */
        example_values *= dims[i];
        if (example_values > IDX_MAX_EXAMPLE_VALUES)
            return vae_error(VAE_ERROR_BAD_INPUT,
                             "%s: examples of more than %llu values in the header (corrupt header?)", path,
                             (unsigned long long)IDX_MAX_EXAMPLE_VALUES);
    }
    if (dims[0] > IDX_MAX_EXAMPLES)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: more than %llu examples in the header (the epoch's shuffle holds 32-bit indices)", path,
                         (unsigned long long)IDX_MAX_EXAMPLES);
    *total = (uint64_t)dims[0] * example_values; /* below 2^62 */
    if (*total > SIZE_MAX)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %llu values do not fit this host's address space", path,
                         (unsigned long long)*total);
    return VAE_OK;
}

static vae_status load_images(gzFile file, const char *path, vae_dataset *out) {
    uint32_t dims[3];
    uint64_t total = 0;
    VAE_TRY(read_idx_header(file, path, IDX_IMAGES_MAGIC, "images", dims, 3, &total));
    uint64_t dim = (uint64_t)dims[1] * dims[2];
    if (dim > INT_MAX)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: image size %ux%u is too large", path, dims[1], dims[2]);

    unsigned char *values = NULL;
    size_t got = 0;
    vae_status status = read_growing(file, path, (size_t)total, &values, &got);
    if (status == VAE_OK && got < total)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %llu bytes of image data, found %zu", path,
                           (unsigned long long)total, got);
    if (status == VAE_OK) status = expect_end(file, path, "image data", total);
    if (status != VAE_OK) {
        free(values);
        return status;
    }
    status = vae_dataset_from_block(values, (long)dims[0], (int)dim, VAE_DTYPE_U8, out);
    if (status != VAE_OK) {
        free(values);
        return status;
    }
    out->channels = 1; /* IDX images are grey: 1 x rows x cols */
    out->rows = (int)dims[1];
    out->cols = (int)dims[2];
    out->scale = 1.0f / 255.0f;
    return VAE_OK;
}

vae_status vae_dataset_load_idx_images(const char *path, vae_dataset *out) {
    if (path == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_idx_images: path and out must not be NULL");
    memset(out, 0, sizeof *out);
    gzFile file = NULL;
    VAE_TRY(open_idx(path, &file));
    vae_status status = load_images(file, path, out);
    gzclose(file); /* read-only: nothing is lost if closing fails */
    return status;
}

static vae_status load_labels(gzFile file, const char *path, vae_dataset *dataset) {
    uint32_t count = 0;
    uint64_t total = 0;
    VAE_TRY(read_idx_header(file, path, IDX_LABELS_MAGIC, "labels", &count, 1, &total));
    if ((uint64_t)dataset->count != count)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: holds %u labels but the images have %ld examples", path, count,
                         dataset->count);

    unsigned char *bytes = malloc(count);
    int32_t *labels = malloc((size_t)count * sizeof *labels);
    if (bytes == NULL || labels == NULL) {
        free(bytes);
        free(labels);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %u labels", path, count);
    }
    size_t got = 0;
    vae_status status = read_bytes(file, path, bytes, count, &got);
    if (status == VAE_OK && got < count)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %u bytes of label data, found %zu", path,
                           count, got);
    if (status == VAE_OK) status = expect_end(file, path, "label data", count);
    if (status != VAE_OK) {
        free(bytes);
        free(labels);
        return status;
    }
    for (uint32_t i = 0; i < count; ++i) labels[i] = bytes[i];
    free(bytes);
    free(dataset->labels);
    dataset->labels = labels;
    return VAE_OK;
}

vae_status vae_dataset_load_idx_labels(const char *path, vae_dataset *dataset) {
    if (path == NULL || dataset == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_idx_labels: path and dataset must not be NULL");
    if (dataset->count <= 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: labels need a dataset with examples loaded first", path);
    gzFile file = NULL;
    VAE_TRY(open_idx(path, &file));
    vae_status status = load_labels(file, path, dataset);
    gzclose(file);
    return status;
}
