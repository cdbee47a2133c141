/* Datasets in host memory: IDX (plain or .gz) and NPY readers, splits,
 * per-epoch shuffling. Values stay raw (uint8 or float32); scaling to [0,1]
 * and binarisation happen in the backend's gather_batch. */
#ifndef VAE_DATASET_H
#define VAE_DATASET_H

#include <stdint.h>
#include "vae/vae.h"

/* What a data set holds on to: a read-only mapping of an NPY file (a shard)
 * or a malloc'd block (IDX data, copies, labels' source). */
typedef struct vae_dataset_storage {
    void *address;
    size_t bytes;
    int mapped;        /* 1: munmap(address, bytes); 0: free(address) */
} vae_dataset_storage;

/* Examples live in one or more segments (one per shard file, each a
 * memory-mapped file or a malloc'd block); segment s holds examples
 * [segment_first[s], segment_first[s+1]) row-major at segment_values[s].
 * Sizes are 64-bit throughout (long is 64 bits on the LP64 hosts the engine
 * builds for; dataset.c asserts it): a data set may hold any number of values
 * a 64-bit address space maps, with at most INT32_MAX examples (the epoch's
 * permutation holds int32 indices) of at most INT_MAX values each. */
typedef struct vae_dataset {
    long count;        /* examples */
    int dim;           /* values per example (D) */
    int channels;      /* image shape channels x rows x cols, NCHW (channels*rows*cols == dim) when the
                          file gives it (IDX: 1; NPY (N, H, W): 1; (N, C, H, W): C), else 0 */
    int rows, cols;    /* image rows and cols when known; for channels 0, NPY (N, D) with a square D
                          gives rows = cols = sqrt(D) (for pictures only), else 0 */
    int dtype;         /* VAE_DTYPE_U8 or VAE_DTYPE_F32 (src/backends/backend.h) */
    float scale;       /* raw * scale lands in [0,1]: 1/255 for uint8, 1 for float32 */
    const void *values; /* all count*dim values when they lie in one segment, else NULL */
    int segment_count;
    int64_t *segment_first;      /* [segment_count + 1] */
    const void **segment_values; /* [segment_count] */
    int storage_count;
    vae_dataset_storage *storage; /* [storage_count], released by vae_dataset_free */
    int32_t *labels;   /* count labels, or NULL */
} vae_dataset;

typedef struct vae_data_splits {
    vae_dataset train, validation, test;
} vae_data_splits;

/* IDX image file (magic 0x00000803, ubyte), .gz or plain. */
vae_status vae_dataset_load_idx_images(const char *path, vae_dataset *out);
/* IDX label file (magic 0x00000801, ubyte) into out->labels; count must
 * match out->count. */
vae_status vae_dataset_load_idx_labels(const char *path, vae_dataset *dataset);
/* NPY file, version 1.0/2.0/3.0, C order, dtype |u1 or <f4, shape (N, D),
 * (N, rows, cols) or (N, channels, rows, cols). The values are memory-mapped read-only, not copied (a
 * big-endian host, or a file system that cannot map, gets a copy); float32
 * values are checked once (finite, in [0,1]) and the first bad one is named
 * by file, example and position. */
vae_status vae_dataset_load_npy(const char *path, vae_dataset *out);
/* NPY labels (|u1, <i4 or <i8, shape (N,)) into dataset->labels. */
vae_status vae_dataset_load_npy_labels(const char *path, vae_dataset *dataset);

/* Shards: path_prefix-00000.npy, path_prefix-00001.npy, ... (count files,
 * numbered without gaps) read as one data set in order; every shard must
 * agree on dtype and example shape (C, H, W; the error names the shard that
 * does not). */
vae_status vae_dataset_load_npy_shards(const char *const *paths, int count, vae_dataset *out);
/* Labels for a data set from NPY files concatenated in order: one file
 * holding a label for every example, or one file per data shard (count ==
 * dataset->segment_count), each holding as many labels as its shard has
 * examples. */
vae_status vae_dataset_load_npy_label_shards(const char *const *paths, int count, vae_dataset *dataset);

/* Resolves config->data_path (a folder with the four standard IDX files,
 * .gz or plain, or with train.npy and test.npy plus optional
 * train_labels.npy, test_labels.npy, or with numbered shards of each:
 * train-00000.npy, train-00001.npy, ..., see configs/README.md), applies
 * train_limit, test_limit and validation_size (the last validation_size
 * training examples). */
vae_status vae_data_load(const vae_config *config, vae_data_splits *out);

/* A one-segment data set that takes ownership of block (malloc'd, count*dim
 * raw values); scale follows dtype. On failure block is not freed. */
vae_status vae_dataset_from_block(void *block, long count, int dim, int dtype, vae_dataset *out);
/* Raw values of example index (its segment found by binary search); NULL
 * when index is out of range. */
const void *vae_dataset_example(const vae_dataset *dataset, long index);
/* Copies examples [first, first+count) into out (one malloc'd segment). */
vae_status vae_dataset_slice(const vae_dataset *source, long first, long count, vae_dataset *out);
/* A float32 copy of example i scaled to [0,1] (host; for pictures). */
void vae_dataset_example_scaled(const vae_dataset *dataset, long index, float *out);
void vae_dataset_free(vae_dataset *dataset);
void vae_data_splits_free(vae_data_splits *splits);

/* Seeded Fisher-Yates permutation of 0..count-1 for an epoch; the same
 * (seed, epoch) always gives the same order. count <= INT32_MAX. */
void vae_permutation_for_epoch(uint64_t seed, uint64_t epoch, int32_t *permutation, long count);

#endif
