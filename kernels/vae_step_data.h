/* The plain data that the backend operations and the CUDA kernels share:
 * the training counters in backend memory, how a batch is gathered, where
 * the reparameterisation noise comes from, and the loss accumulator's slots.
 * Both layers include this header: src/backends/backend.h (host) and
 * kernels/vae_kernels.h (device), with the row addressing of a batch shared
 * by processes (data parallel). It includes nothing from src/, so device
 * code never depends on host code. */
#ifndef VAE_STEP_DATA_H
#define VAE_STEP_DATA_H

#include <stdint.h>

#include "vae_hostdevice.h"

/* Where the training counters live (backend memory). */
typedef struct vae_step_counter {
    uint64_t step;            /* optimizer steps taken so far (0-based index of the next step) */
    uint64_t skipped_steps;   /* steps skipped for non-finite gradients */
    uint64_t nonfinite_seen;  /* 1 once a non-finite loss or gradient was seen */
} vae_step_counter;

/* How a batch is gathered from a dataset resident in backend memory. */
typedef struct vae_gather_settings {
    int dtype;                /* VAE_DTYPE_U8 or VAE_DTYPE_F32 */
    float scale;              /* raw value * scale lands in [0,1] */
    int binarize;             /* vae_binarize (include/vae/vae.h) */
    float threshold;          /* static: x > threshold ? 1 : 0 */
    uint64_t seed;            /* dynamic: Bernoulli draw from Philox */
    uint32_t random_purpose;  /* VAE_RANDOM_BINARIZE or VAE_RANDOM_EVAL_BINARIZE */
    long steps_per_epoch;     /* batch index in the epoch = step % steps_per_epoch */
    /* Data parallel: this process gathers rows [row_offset, row_offset +
     * rows) of a global batch of batch_rows (0: rows, one process). A row's
     * permutation slot and binarisation noise use its global index. */
    int row_offset;
    int batch_rows;
} vae_gather_settings;

enum vae_dtype { VAE_DTYPE_U8 = 0, VAE_DTYPE_F32 = 1 };

/* Random-number address of the reparameterisation noise. */
typedef struct vae_noise_settings {
    uint64_t seed;
    uint32_t random_purpose;  /* VAE_RANDOM_EPS, VAE_RANDOM_EVAL_EPS, ... */
    uint64_t step_offset;     /* added to the counter's step (evaluation batches) */
    /* Data parallel: the rows are [row_offset, row_offset + rows) of a
     * global batch of batch_rows (0: rows, one process); see
     * vae_noise_row_address. */
    uint32_t row_offset;
    uint32_t batch_rows;
    /* Added to the Philox column of every draw: latent column j draws at
     * column column_offset + j, so that the latent groups of a hierarchical
     * model, each its own call, draw different noise (a group at offset c
     * gets what columns c.. of one wider call would). Any value. */
    uint32_t column_offset;
    /* > 1: the call's rows are this many sample-major copies of the local
     * batch (call row r is sample r / (rows / rows_hold_samples) of local
     * data row r % (rows / rows_hold_samples)), each drawn once (the call's
     * samples is 1): a deeper group's posterior, computed per sample of the
     * group above. Each row then draws what a call with rows /
     * rows_hold_samples rows and samples = rows_hold_samples would draw for
     * it (vae_noise_row_address). 0 or 1: the rows are data rows. */
    uint32_t rows_hold_samples;
} vae_noise_settings;

/* The Philox row address of sample l of local data row b: l * B + (offset
 * + b) with B the global batch, so the noise a global row sees does not
 * depend on how many processes share the batch. rows is the call's rows;
 * with rows_hold_samples = S > 1 call row b is sample b / (rows / S) of data
 * row b % (rows / S) (and l is 0). */
VAE_HD uint32_t vae_noise_row_address(const vae_noise_settings *noise, int rows, int l, int b) {
    uint32_t sample = (uint32_t)l, data_row = (uint32_t)b, local_rows = (uint32_t)rows;
    if (noise->rows_hold_samples > 1) {
        local_rows = (uint32_t)rows / noise->rows_hold_samples;
        sample = (uint32_t)l * noise->rows_hold_samples + (uint32_t)b / local_rows;
        data_row = (uint32_t)b % local_rows;
    }
    uint32_t global_rows = noise->batch_rows ? noise->batch_rows : local_rows;
    return sample * global_rows + noise->row_offset + data_row;
}

/* The permutation slot and the noise row of local batch row r. */
VAE_HD uint64_t vae_gather_slot(const vae_gather_settings *settings, uint64_t batch_in_epoch, int rows, int r) {
    uint64_t global_rows = settings->batch_rows ? (uint64_t)settings->batch_rows : (uint64_t)rows;
    return batch_in_epoch * global_rows + (uint64_t)settings->row_offset + (uint64_t)r;
}
VAE_HD uint32_t vae_gather_row_address(const vae_gather_settings *settings, int r) {
    return (uint32_t)settings->row_offset + (uint32_t)r;
}

/* Loss accumulator layout (backend memory, doubles): */
enum vae_loss_slot {
    VAE_LOSS_SUM_LOSS = 0,           /* sum over rows of -(recon) + beta_t * kl */
    VAE_LOSS_SUM_RECONSTRUCTION = 1, /* sum over rows of (1/L) sum_l log p(x|z_l) */
    VAE_LOSS_SUM_KL = 2,             /* sum over rows of KL */
    VAE_LOSS_COUNT = 3,              /* rows accumulated */
    VAE_LOSS_SLOTS = 4
};

#endif
