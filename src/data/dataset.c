/* Datasets: finding the files of data.path, the train / validation / test
 * splits, copies, and the per-epoch shuffle. The file formats live in
 * dataset_idx.c and dataset_npy.c. */
#define _POSIX_C_SOURCE 200809L /* stat(), strdup(), munmap() */

#include "data/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "vae_philox.h"
#include "backends/backend.h"
#include "base/error.h"

static const char *dtype_name(int dtype) { return dtype == VAE_DTYPE_F32 ? "float32" : "uint8"; }

static size_t dtype_bytes(int dtype) { return dtype == VAE_DTYPE_F32 ? sizeof(float) : sizeof(uint8_t); }

_Static_assert(sizeof(long) == 8, "data set sizes are longs: the engine needs a host where long has 64 bits");

/* ------------------------------------------------------------ segments, copies */

vae_status vae_dataset_from_block(void *block, long count, int dim, int dtype, vae_dataset *out) {
    if (out == NULL || count < 0 || dim < 1)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_from_block: out, count >= 0 and dim >= 1 needed");
    memset(out, 0, sizeof *out);
    out->segment_first = calloc(2, sizeof *out->segment_first);
    out->segment_values = calloc(1, sizeof *out->segment_values);
    out->storage = calloc(1, sizeof *out->storage);
    if (!out->segment_first || !out->segment_values || !out->storage) {
        free(out->segment_first);
        free(out->segment_values);
        free(out->storage);
        memset(out, 0, sizeof *out);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cannot allocate a data set's segment table");
    }
    out->count = count;
    out->dim = dim;
    out->dtype = dtype;
    out->scale = dtype == VAE_DTYPE_U8 ? 1.0f / 255.0f : 1.0f;
    out->segment_count = 1;
    out->segment_first[1] = count;
    out->segment_values[0] = block;
    out->values = block;
    if (block != NULL) {
        out->storage[0] = (vae_dataset_storage){block, (size_t)count * (size_t)dim * dtype_bytes(dtype), 0};
        out->storage_count = 1;
    }
    return VAE_OK;
}

const void *vae_dataset_example(const vae_dataset *dataset, long index) {
    if (dataset == NULL || index < 0 || index >= dataset->count || dataset->segment_count < 1) return NULL;
    /* The last segment whose first example is at or before index. */
    int low = 0, high = dataset->segment_count - 1;
    while (low < high) {
        int middle = low + (high - low + 1) / 2;
        if (dataset->segment_first[middle] <= index) low = middle;
        else high = middle - 1;
    }
    size_t row_bytes = (size_t)dataset->dim * dtype_bytes(dataset->dtype);
    return (const char *)dataset->segment_values[low] + (size_t)(index - dataset->segment_first[low]) * row_bytes;
}

vae_status vae_dataset_slice(const vae_dataset *source, long first, long count, vae_dataset *out) {
    if (source == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_slice: source and out must not be NULL");
    if (first < 0 || count < 0 || first > source->count || count > source->count - first)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "vae_dataset_slice: examples [%ld, %ld) are outside the dataset's %ld examples", first,
                         first + count, source->count);
    size_t row_bytes = (size_t)source->dim * dtype_bytes(source->dtype);
    char *values = NULL;
    int32_t *labels = NULL;
    if (count > 0) {
        values = malloc((size_t)count * row_bytes);
        if (values == NULL)
            return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cannot allocate %ld examples of %d values", count,
                             source->dim);
        /* Row by row: the range may span segments (shards). */
        for (long i = 0; i < count; ++i)
            memcpy(values + (size_t)i * row_bytes, vae_dataset_example(source, first + i), row_bytes);
        if (source->labels != NULL) {
            labels = malloc((size_t)count * sizeof *labels);
            if (labels == NULL) {
                free(values);
                return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cannot allocate %ld labels", count);
            }
            memcpy(labels, source->labels + first, (size_t)count * sizeof *labels);
        }
    }
    vae_dataset slice;
    vae_status status = vae_dataset_from_block(values, count, source->dim, source->dtype, &slice);
    if (status != VAE_OK) {
        free(values);
        free(labels);
        return status;
    }
    slice.channels = source->channels;
    slice.rows = source->rows;
    slice.cols = source->cols;
    slice.scale = source->scale;
    slice.labels = labels;
    *out = slice;
    return VAE_OK;
}

/* Keeps the first count examples. Mapped shards stay mapped (their unused
 * pages cost nothing); only the tables shrink. */
static void keep_first(vae_dataset *dataset, long count) {
    if (count >= dataset->count) return;
    dataset->count = count;
    int segments = 1;
    while (segments < dataset->segment_count && dataset->segment_first[segments] < count) ++segments;
    dataset->segment_count = segments;
    dataset->segment_first[segments] = count;
    dataset->values = segments == 1 ? dataset->segment_values[0] : NULL;
}

void vae_dataset_example_scaled(const vae_dataset *dataset, long index, float *out) {
    /* Out-of-range requests write nothing: there is no status to return. */
    if (out == NULL) return;
    const void *example = vae_dataset_example(dataset, index);
    if (example == NULL) return;
    if (dataset->dtype == VAE_DTYPE_F32) {
        const float *values = example;
        for (int j = 0; j < dataset->dim; ++j) out[j] = values[j] * dataset->scale;
    } else {
        const uint8_t *values = example;
        for (int j = 0; j < dataset->dim; ++j) out[j] = (float)values[j] * dataset->scale;
    }
}

void vae_dataset_free(vae_dataset *dataset) {
    if (dataset == NULL) return;
    for (int i = 0; i < dataset->storage_count; ++i) {
        vae_dataset_storage *storage = &dataset->storage[i];
        if (storage->mapped) munmap(storage->address, storage->bytes); /* read-only: nothing to write back */
        else free(storage->address);
    }
    free(dataset->storage);
    free(dataset->segment_first);
    free(dataset->segment_values);
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

/* ------------------------------------------------------------ NPY shards */

/* Shards are name-NNNNN.npy: exactly five decimal digits, numbered from 00000
 * without gaps (configs/README.md). */
#define SHARD_DIGITS 5
#define SHARD_LIMIT 100000

typedef struct file_list {
    int count;
    char **paths;
    int sharded;   /* 1: name-NNNNN.npy shards; 0: one name.npy */
} file_list;

static void file_list_free(file_list *list) {
    for (int i = 0; i < list->count; ++i) free(list->paths[i]);
    free(list->paths);
    list->count = 0;
    list->paths = NULL;
}

/* The shard number of entry when it is name-<digits>.npy: 1 and *number for
 * five digits, -1 for another count of digits (a misnamed shard), 0 when the
 * entry is something else. */
static int shard_number(const char *entry, const char *name, int *number) {
    size_t name_length = strlen(name);
    if (strncmp(entry, name, name_length) != 0 || entry[name_length] != '-') return 0;
    const char *digits = entry + name_length + 1;
    size_t digit_count = 0;
    while (digits[digit_count] >= '0' && digits[digit_count] <= '9') ++digit_count;
    if (digit_count == 0 || strcmp(digits + digit_count, ".npy") != 0) return 0;
    if (digit_count != SHARD_DIGITS) return -1;
    *number = atoi(digits);
    return 1;
}

/* folder/name.npy, or the shards folder/name-00000.npy, name-00001.npy, ...
 * in order; found->count is 0 when there is neither. */
static vae_status find_npy_files(const char *folder, const char *name, file_list *found) {
    memset(found, 0, sizeof *found);
    char single[VAE_PATH_MAX + 64];
    VAE_TRY(join_path(folder, name, ".npy", single, sizeof single));
    int have_single = is_regular_file(single);

    DIR *directory = opendir(folder);
    if (directory == NULL)
        return vae_error(VAE_ERROR_IO, "data.path '%s': cannot list the folder: %s", folder, strerror(errno));
    unsigned char *present = calloc(SHARD_LIMIT, 1);
    if (present == NULL) {
        closedir(directory);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "data.path '%s': out of memory listing shards", folder);
    }
    int shards = 0, highest = -1;
    vae_status status = VAE_OK;
    for (struct dirent *entry; status == VAE_OK && (entry = readdir(directory)) != NULL;) {
        int number = 0;
        int kind = shard_number(entry->d_name, name, &number);
        if (kind < 0)
            status = vae_error(VAE_ERROR_BAD_INPUT,
                               "data.path '%s': '%s' looks like a shard but is not numbered with %d digits "
                               "(%s-00000.npy, %s-00001.npy, ...)",
                               folder, entry->d_name, SHARD_DIGITS, name, name);
        if (kind <= 0) continue;
        present[number] = 1;
        ++shards;
        if (number > highest) highest = number;
    }
    closedir(directory);
    if (status == VAE_OK && shards > 0 && have_single)
        status = vae_error(VAE_ERROR_BAD_INPUT,
                           "data.path '%s': holds both %s.npy and %d shards %s-NNNNN.npy; keep one form", folder,
                           name, shards, name);
    for (int i = 0; status == VAE_OK && i <= highest; ++i)
        if (!present[i])
            status = vae_error(VAE_ERROR_BAD_INPUT,
                               "data.path '%s': shard %s-%05d.npy is missing (found %d shards numbered up to "
                               "%s-%05d.npy; shards are numbered from 00000 without gaps)",
                               folder, name, i, shards, name, highest);
    free(present);
    VAE_TRY(status);

    int count = shards > 0 ? shards : have_single;
    if (count == 0) return VAE_OK;
    found->sharded = shards > 0;
    found->paths = calloc((size_t)count, sizeof *found->paths);
    if (found->paths == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "data.path '%s': out of memory", folder);
    for (int i = 0; i < count; ++i) {
        char path[VAE_PATH_MAX + 64];
        char suffix[32];
        if (shards > 0) snprintf(suffix, sizeof suffix, "-%05d.npy", i);
        else snprintf(suffix, sizeof suffix, ".npy");
        status = join_path(folder, name, suffix, path, sizeof path);
        if (status == VAE_OK && shards > 0 && !is_regular_file(path))
            status = vae_error(VAE_ERROR_IO, "data.path '%s': shard %s is not a regular file", folder, path);
        if (status == VAE_OK && (found->paths[i] = strdup(path)) == NULL)
            status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "data.path '%s': out of memory", folder);
        found->count = i + 1;
        if (status != VAE_OK) {
            file_list_free(found);
            return status;
        }
    }
    return VAE_OK;
}

static vae_status load_npy_split(const char *folder, const char *data_name, const char *labels_name,
                                 vae_dataset *out) {
    file_list files;
    VAE_TRY(find_npy_files(folder, data_name, &files));
    if (files.count == 0)
        return vae_error(VAE_ERROR_IO,
                         "data.path '%s': no %s.npy there, nor shards %s-00000.npy, ... (looked for "
                         "train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz], or train and test as .npy files "
                         "or shards)",
                         folder, data_name, data_name);
    vae_status status = vae_dataset_load_npy_shards((const char *const *)files.paths, files.count, out);
    file_list_free(&files);
    VAE_TRY(status);
    VAE_TRY(find_npy_files(folder, labels_name, &files)); /* labels are optional */
    if (files.sharded && files.count != out->segment_count)
        status = vae_error(VAE_ERROR_BAD_INPUT,
                           "data.path '%s': %d label shards for %d data shards (%s-00000.npy ...); give one labels "
                           "shard per data shard, or one %s.npy for all",
                           folder, files.count, out->segment_count, labels_name, labels_name);
    else if (files.count > 0)
        status = vae_dataset_load_npy_label_shards((const char *const *)files.paths, files.count, out);
    file_list_free(&files);
    return status;
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
                         "train_labels.npy, test_labels.npy or their shards train-00000.npy, ...)",
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
        VAE_TRY(load_npy_split(folder, "train", "train_labels", &splits->train));
        VAE_TRY(load_npy_split(folder, "test", "test_labels", &splits->test));
        *train_name = splits->train.segment_count > 1 ? "the train-NNNNN.npy shards" : "train.npy";
        *test_name = splits->test.segment_count > 1 ? "the test-NNNNN.npy shards" : "test.npy";
    }
    return VAE_OK;
}

static vae_status make_splits(const vae_config *config, vae_data_splits *splits, const char *train_name,
                              const char *test_name) {
    const char *folder = config->data_path;
    if (splits->train.dim != splits->test.dim)
        return vae_error(VAE_ERROR_BAD_INPUT, "data.path '%s': %s has %d values per example but %s has %d", folder,
                         train_name, splits->train.dim, test_name, splits->test.dim);
    /* One image shape for all splits, so that one model serves them (a
     * split without a shape, (N, D), only has to agree on D). */
    const vae_dataset *train = &splits->train, *test = &splits->test;
    if (train->channels > 0 && test->channels > 0 &&
        (train->channels != test->channels || train->rows != test->rows || train->cols != test->cols))
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "data.path '%s': %s holds images of %d x %d x %d (channels x rows x cols) but %s holds %d x "
                         "%d x %d; use one shape",
                         folder, train_name, train->channels, train->rows, train->cols, test_name, test->channels,
                         test->rows, test->cols);
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
