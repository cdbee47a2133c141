/* Datasets in host memory: IDX (plain or .gz) and NPY readers, splits,
 * per-epoch shuffling. Values stay raw (uint8 or float32); scaling to [0,1]
 * and binarisation happen in the backend's gather_batch. */
#ifndef VAE_DATASET_H
#define VAE_DATASET_H

#include <stdint.h>
#include "vae/vae.h"

typedef struct vae_dataset {
    long count;        /* examples */
    int dim;           /* values per example (D) */
    int rows, cols;    /* image shape when known (rows*cols == dim), else 0 */
    int dtype;         /* VAE_DTYPE_U8 or VAE_DTYPE_F32 (src/backends/backend.h) */
    float scale;       /* raw * scale lands in [0,1]: 1/255 for uint8, 1 for float32 */
    void *values;      /* count*dim raw values, row-major, malloc'd */
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
/* NPY file, version 1.0/2.0/3.0, C order, dtype |u1 or <f4, shape (N, D) or
 * (N, rows, cols). */
vae_status vae_dataset_load_npy(const char *path, vae_dataset *out);
/* NPY labels (|u1, <i4 or <i8, shape (N,)) into dataset->labels. */
vae_status vae_dataset_load_npy_labels(const char *path, vae_dataset *dataset);

/* Resolves config->data_path (a folder with the four standard IDX files,
 * .gz or plain, or with train.npy and test.npy plus optional
 * train_labels.npy, test_labels.npy), applies train_limit, test_limit and
 * validation_size (the last validation_size training examples). */
vae_status vae_data_load(const vae_config *config, vae_data_splits *out);

/* Copies examples [first, first+count) into out. */
vae_status vae_dataset_slice(const vae_dataset *source, long first, long count, vae_dataset *out);
/* A float32 copy of example i scaled to [0,1] (host; for pictures). */
void vae_dataset_example_scaled(const vae_dataset *dataset, long index, float *out);
void vae_dataset_free(vae_dataset *dataset);
void vae_data_splits_free(vae_data_splits *splits);

/* Seeded Fisher-Yates permutation of 0..count-1 for an epoch; the same
 * (seed, epoch) always gives the same order. */
void vae_permutation_for_epoch(uint64_t seed, uint64_t epoch, int32_t *permutation, long count);

#endif
