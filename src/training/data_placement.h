/* A data set placed where a backend's gather reads it: in place on a backend
 * whose memory is host memory (the CPU: memory-mapped shards are read where
 * they lie, nothing is copied), else copied into one block of device memory,
 * or of mapped page-locked host memory when it does not fit (CUDA). */
#ifndef VAE_DATA_PLACEMENT_H
#define VAE_DATA_PLACEMENT_H

#include "backends/backend.h"
#include "data/dataset.h"

typedef struct vae_placed_rows {
    vae_row_segments rows;       /* what gather_batch takes */
    int64_t copy_first_row[2];   /* the one segment of a copy */
    const void *copy_values[1];
    void *copy;                  /* backend memory holding the copy, or NULL (read in place) */
    void *copy_mapped;           /* host side of mapped host memory, or NULL */
} vae_placed_rows;

enum vae_placement {
    VAE_PLACE_DEVICE_ONLY = 0,   /* device memory or fail (evaluation splits) */
    VAE_PLACE_AUTO = 1,          /* device memory when it fits, else mapped host memory */
    VAE_PLACE_HOST = 2           /* mapped host memory where the backend has it */
};

/* out must stay where it is while in use: out->rows points into it. */
vae_status vae_place_rows(vae_backend *backend, const vae_dataset *data, int placement, vae_placed_rows *out);
void vae_placed_rows_free(vae_backend *backend, vae_placed_rows *placed);

#endif
