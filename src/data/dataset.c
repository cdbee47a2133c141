/* Datasets: finding the files of data.path, the train / validation / test
 * splits, copies, and the per-epoch shuffle. The file formats live in
 * dataset_idx.c and dataset_npy.c. */
#define _POSIX_C_SOURCE 200809L /* stat() */

#include "data/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vae_philox.h"
#include "backends/backend.h"
#include "base/error.h"

static const char *dtype_name(int dtype) { return dtype == VAE_DTYPE_F32 ? "float32" : "uint8"; }

static size_t dtype_bytes(int dtype) { return dtype == VAE_DTYPE_F32 ? sizeof(float) : sizeof(uint8_t); }

/* ------------------------------------------------------------ small copies */

vae_status vae_dataset_slice(const vae_dataset *source, long first, long count, vae_dataset *out) {
    if (source == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_slice: source and out must not be NULL");
    if (first < 0 || count < 0 || first > source->count || count > source->count - first)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "vae_dataset_slice: examples [%ld, %ld) are outside the dataset's %ld examples", first,
                         first + count, source->count);
    vae_dataset slice = *source;
    slice.count = count;
    slice.values = NULL;
    slice.labels = NULL;
    if (count > 0) {
        size_t row_bytes = (size_t)source->dim * dtype_bytes(source->dtype);
        slice.values = malloc((size_t)count * row_bytes);
        if (slice.values == NULL)
            return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cannot allocate %ld examples of %d values", count,
                             source->dim);
        memcpy(slice.values, (const char *)source->values + (size_t)first * row_bytes, (size_t)count * row_bytes);
        if (source->labels != NULL) {
            slice.labels = malloc((size_t)count * sizeof *slice.labels);
            if (slice.labels == NULL) {
                free(slice.values);
                return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cannot allocate %ld labels", count);
            }
            memcpy(slice.labels, source->labels + first, (size_t)count * sizeof *slice.labels);
        }
    }
    *out = slice;
    return VAE_OK;
}

/* Keeps the first count examples; the memory is shrunk when that is possible. */
static void keep_first(vae_dataset *dataset, long count) {
    if (count >= dataset->count) return;
    dataset->count = count;
    size_t bytes = (size_t)count * (size_t)dataset->dim * dtype_bytes(dataset->dtype);
    void *values = realloc(dataset->values, bytes > 0 ? bytes : 1);
    if (values != NULL) dataset->values = values; /* on failure the larger block stays valid */
    if (dataset->labels != NULL) {
        int32_t *labels = realloc(dataset->labels, count > 0 ? (size_t)count * sizeof *labels : 1);
        if (labels != NULL) dataset->labels = labels;
    }
}

void vae_dataset_example_scaled(const vae_dataset *dataset, long index, float *out) {
    /* Out-of-range requests write nothing: there is no status to return. */
    if (dataset == NULL || out == NULL || dataset->values == NULL || index < 0 || index >= dataset->count) return;
    size_t start = (size_t)index * (size_t)dataset->dim;
    if (dataset->dtype == VAE_DTYPE_F32) {
        const float *values = (const float *)dataset->values + start;
        for (int j = 0; j < dataset->dim; ++j) out[j] = values[j] * dataset->scale;
    } else {
        const uint8_t *values = (const uint8_t *)dataset->values + start;
        for (int j = 0; j < dataset->dim; ++j) out[j] = (float)values[j] * dataset->scale;
    }
}

void vae_dataset_free(vae_dataset *dataset) {
    if (dataset == NULL) return;
    free(dataset->values);
    free(dataset->labels);
    memset(dataset, 0, sizeof *dataset);
}

void vae_data_splits_free(vae_data_splits *splits) {
    if (splits == NULL) return;
    vae_dataset_free(&splits->train);
    vae_dataset_free(&splits->validation);
    vae_dataset_free(&splits->test);
}

/* ------------------------------------------------------------ finding files */

static int is_regular_file(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 && S_ISREG(info.st_mode);
}

static vae_status join_path(const char *folder, const char *name, const char *suffix, char *out, size_t out_size) {
    int used = snprintf(out, out_size, "%s/%s%s", folder, name, suffix);
    if (used < 0 || (size_t)used >= out_size)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "data.path '%s': path of %s%s is too long", folder, name, suffix);
    return VAE_OK;
}

/* Looks for folder/name, then folder/name.gz; *found is 0 when neither is a
 * file. (Compression is detected from the bytes when reading, not from the
 * name.) */
static vae_status find_idx_file(const char *folder, const char *name, char *out, size_t out_size, int *found) {
    VAE_TRY(join_path(folder, name, "", out, out_size));
    if (is_regular_file(out)) { *found = 1; return VAE_OK; }
    VAE_TRY(join_path(folder, name, ".gz", out, out_size));
    *found = is_regular_file(out);
    return VAE_OK;
}

static const char *const IDX_TRAIN_IMAGES = "train-images-idx3-ubyte";
static const char *const IDX_TRAIN_LABELS = "train-labels-idx1-ubyte";
static const char *const IDX_TEST_IMAGES = "t10k-images-idx3-ubyte";
static const char *const IDX_TEST_LABELS = "t10k-labels-idx1-ubyte";

static vae_status load_idx_split(const char *folder, const char *images_name, const char *labels_name,
                                 vae_dataset *out) {
    char path[VAE_PATH_MAX + 64];
    int found = 0;
    VAE_TRY(find_idx_file(folder, images_name, path, sizeof path, &found));
    if (!found)
        return vae_error(VAE_ERROR_IO, "data.path '%s': missing %s (or %s.gz) beside the other IDX files", folder,
                         images_name, images_name);
    VAE_TRY(vae_dataset_load_idx_images(path, out));
    VAE_TRY(find_idx_file(folder, labels_name, path, sizeof path, &found));
    if (found) VAE_TRY(vae_dataset_load_idx_labels(path, out)); /* labels are optional */
    return VAE_OK;
}

static vae_status load_npy_split(const char *folder, const char *data_name, const char *labels_name,
                                 vae_dataset *out) {
    char path[VAE_PATH_MAX + 64];
    VAE_TRY(join_path(folder, data_name, "", path, sizeof path));
    if (!is_regular_file(path))
        return vae_error(VAE_ERROR_IO,
                         "data.path '%s': no %s there (looked for train-images-idx3-ubyte[.gz], "
                         "t10k-images-idx3-ubyte[.gz], or train.npy and test.npy)",
                         folder, data_name);
    VAE_TRY(vae_dataset_load_npy(path, out));
    VAE_TRY(join_path(folder, labels_name, "", path, sizeof path));
    if (is_regular_file(path)) VAE_TRY(vae_dataset_load_npy_labels(path, out));
    return VAE_OK;
}

static vae_status load_files(const char *folder, vae_data_splits *splits, const char **train_name,
                             const char **test_name) {
    struct stat info;
    if (folder[0] == '\0')
        return vae_error(VAE_ERROR_IO, "data.path is empty: set it to a folder with the IDX or NPY files");
    if (stat(folder, &info) != 0)
        return vae_error(VAE_ERROR_IO,
                         "data.path '%s': %s (looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                         "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], or train.npy, test.npy, "
                         "train_labels.npy, test_labels.npy)",
                         folder, strerror(errno));
    if (!S_ISDIR(info.st_mode))
        return vae_error(VAE_ERROR_IO, "data.path '%s' is not a folder (it should hold the IDX or NPY files)", folder);

    char path[VAE_PATH_MAX + 64];
    int idx_layout = 0;
    VAE_TRY(find_idx_file(folder, IDX_TRAIN_IMAGES, path, sizeof path, &idx_layout));
    if (idx_layout) {
        *train_name = IDX_TRAIN_IMAGES;
        *test_name = IDX_TEST_IMAGES;
        VAE_TRY(load_idx_split(folder, IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, &splits->train));
        VAE_TRY(load_idx_split(folder, IDX_TEST_IMAGES, IDX_TEST_LABELS, &splits->test));
    } else {
        *train_name = "train.npy";
        *test_name = "test.npy";
        VAE_TRY(load_npy_split(folder, "train.npy", "train_labels.npy", &splits->train));
        VAE_TRY(load_npy_split(folder, "test.npy", "test_labels.npy", &splits->test));
    }
    return VAE_OK;
}

static vae_status make_splits(const vae_config *config, vae_data_splits *splits, const char *train_name,
                              const char *test_name) {
    const char *folder = config->data_path;
    if (splits->train.dim != splits->test.dim)
        return vae_error(VAE_ERROR_BAD_INPUT, "data.path '%s': %s has %d values per example but %s has %d", folder,
                         train_name, splits->train.dim, test_name, splits->test.dim);
    /* One value type for all splits, so that one gather setting serves them. */
    if (splits->train.dtype != splits->test.dtype)
        return vae_error(VAE_ERROR_BAD_INPUT, "data.path '%s': %s holds %s values but %s holds %s; use one type", folder,
                         train_name, dtype_name(splits->train.dtype), test_name, dtype_name(splits->test.dtype));
    if (config->train_limit < 0 || config->test_limit < 0 || config->validation_size < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "data.train_limit, data.test_limit and data.validation_size must not be negative "
                         "(got %d, %d, %d)",
                         config->train_limit, config->test_limit, config->validation_size);
    if (config->train_limit > 0) keep_first(&splits->train, config->train_limit);
    if (config->test_limit > 0) keep_first(&splits->test, config->test_limit);

    long validation = config->validation_size;
    if (validation >= splits->train.count)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "data.validation_size = %ld must be less than the %ld training examples of '%s'%s", validation,
                         splits->train.count, folder, config->train_limit > 0 ? " (after data.train_limit)" : "");
    /* The last validation_size training examples become the validation split;
     * an empty validation split keeps the shape of the data. */
    long kept = splits->train.count - validation;
    VAE_TRY(vae_dataset_slice(&splits->train, kept, validation, &splits->validation));
    keep_first(&splits->train, kept);
    return VAE_OK;
}

vae_status vae_data_load(const vae_config *config, vae_data_splits *out) {
    if (config == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_data_load: config and out must not be NULL");
    memset(out, 0, sizeof *out);
    const char *train_name = "", *test_name = "";
    vae_status status = load_files(config->data_path, out, &train_name, &test_name);
    if (status == VAE_OK) status = make_splits(config, out, train_name, test_name);
    if (status != VAE_OK) vae_data_splits_free(out);
    return status;
}

/* ------------------------------------------------------------ shuffling */

/* 32-bit words from the Philox stream at (seed, subsequence), taken four at a
 * time from consecutive blocks. */
typedef struct word_stream {
    uint64_t seed, subsequence, next_column;
    vae_philox_block block;
    int used;
} word_stream;

static uint32_t next_word(word_stream *stream) {
    if (stream->used == 4) {
        stream->block = vae_philox_block_at(stream->seed, stream->subsequence, stream->next_column);
        stream->next_column += 4;
        stream->used = 0;
    }
    return stream->block.word[stream->used++];
}

/* Unbiased integer in [0, bound) by multiply-shift with rejection of the few
 * low products that would favour some results (Lemire 2019). */
static uint32_t uniform_below(word_stream *stream, uint32_t bound) {
    uint64_t product = (uint64_t)next_word(stream) * bound;
    uint32_t low = (uint32_t)product;
    if (low < bound) {
        uint32_t threshold = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
        while (low < threshold) {
            product = (uint64_t)next_word(stream) * bound;
            low = (uint32_t)product;
        }
    }
    return (uint32_t)(product >> 32);
}

/* Fisher-Yates from the last position down; the random words come from the
 * Philox stream at subsequence vae_philox_subsequence(epoch, 5, 0), columns
 * 0, 4, 8, ... in order, so (seed, epoch) fixes the order. */
void vae_permutation_for_epoch(uint64_t seed, uint64_t epoch, int32_t *permutation, long count) {
    if (permutation == NULL || count <= 0) return;
    for (long i = 0; i < count; ++i) permutation[i] = (int32_t)i;
    word_stream stream = {seed, vae_philox_subsequence(epoch, VAE_RANDOM_SHUFFLE, 0), 0, {{0, 0, 0, 0}}, 4};
    for (long i = count - 1; i > 0; --i) {
        long j = (long)uniform_below(&stream, (uint32_t)(i + 1));
        int32_t swap = permutation[i];
        permutation[i] = permutation[j];
        permutation[j] = swap;
    }
}
