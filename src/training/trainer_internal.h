/* The trainer's state, shared by its files (trainer.c: create and the
 * training loop; evaluate.c: ELBO, IWAE and pictures' decoding;
 * trainer_checkpoint.c: save and load). */
#ifndef VAE_TRAINER_INTERNAL_H
#define VAE_TRAINER_INTERNAL_H

#include "backends/backend.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/train_step.h"
#include "training/data_placement.h"
#include "io/event_file.h"

struct vae_trainer {
    vae_config config;
    vae_device_kind device;
    vae_model model;
    vae_backend *backend;
    int input_dim, image_channels, image_rows, image_cols;

    vae_data_splits data;
    int data_loaded;

    float *parameters;              /* backend memory, flat */
    vae_step *train_step;           /* created on first training */
    int prepared;                   /* train_step built and the gradient all-reduce connected */
    vae_step_counter *counter;      /* backend memory */
    vae_step_counter *eval_counter; /* backend memory */
    vae_placed_rows train_rows;     /* training set as the backend's gather reads it */
    int32_t *train_permutation;     /* backend memory, one epoch's order */
    int32_t *host_permutation;
    long steps_per_epoch;
    uint64_t permutation_epoch;     /* epoch whose order is on the device; UINT64_MAX: none */
    void *graph;                    /* captured step (CUDA), or NULL */
    int eager_step_done;            /* the graph is captured after one eager step */
    int step_graphs;                /* steps replay a captured graph (step_graphs_wanted, at creation) */
    uint64_t synchronised_step;     /* host_step at the last successful wait for the device */
    vae_adam_settings adam;
    vae_gather_settings gather;
    vae_noise_settings noise;
    uint64_t host_step;             /* the host's copy of counter->step */
    vae_step_counter resumed_counter; /* counters from a loaded checkpoint */
    float *loaded_adam_m, *loaded_adam_v; /* host, from a checkpoint, until the step exists */
    double *kl_per_dimension;       /* [latent_dim], the last evaluation's */
};

/* Builds everything but the data (model, backend, parameters); the image
 * shape (channels, rows, cols; 0s when the data are not images) shapes the
 * conv layers. */
vae_status vae_trainer_create_empty(vae_trainer **out, const vae_config *config, vae_device_kind device, int input_dim,
                                    int image_channels, int image_rows, int image_cols);
vae_status vae_trainer_ensure_data(vae_trainer *trainer);
vae_status vae_trainer_ensure_train_step(vae_trainer *trainer);
const vae_dataset *vae_trainer_split(vae_trainer *trainer, const char *split);
/* Reads the training counters back from the device. */
vae_status vae_trainer_read_counter(vae_trainer *trainer, vae_step_counter *counter);

/* Rows a caller holds (vae/arrays.h) seen as a data set of float32 values
 * scaled 1, so that the split-based paths run on them unchanged. The data
 * set points into the struct: it must stay where it is while in use. */
typedef struct vae_input_rows {
    vae_dataset dataset;
    int64_t first_row[2];
    const void *values[1];
} vae_input_rows;
/* Checks inputs [count, input_dim] (present, 1 <= count <= INT32_MAX, every
 * value finite and in [0,1], the first bad one named) and wraps them. */
vae_status vae_input_rows_wrap(const vae_trainer *trainer, const float *inputs, long count, vae_input_rows *out);

/* Sample and reconstruction grids into out_dir for an epoch and, with
 * events, into its image summaries at step (src/training/latent.c). */
vae_status vae_trainer_write_epoch_images(vae_trainer *trainer, const char *out_dir, long epoch,
                                          vae_event_file *events, long step);

#endif
