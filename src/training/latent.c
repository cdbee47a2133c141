/* The latent space of a trained model: encoding splits into latent means,
 * reconstructions, interpolations, the decoded latent plane, and the grids
 * the training loop writes every output.image_every_epochs epochs. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae/latent.h"
#include "vae/arrays.h"
#include "base/error.h"
#include "vae/output.h"
#include "io/atomic_file.h"
#include "io/event_file.h"
#include "training/normal_quantile.h"
#include "training/picture_grids.h"
#include "training/trainer_internal.h"

/* Pictures of the epoch grids: samples (a square grid) and reconstructions. */
#define EPOCH_SAMPLE_COUNT 64
#define EPOCH_SAMPLE_COLUMNS 8
#define EPOCH_RECONSTRUCTION_COUNT 32
/* The manifold's probabilities run from this to 1 minus this. */
#define MANIFOLD_EDGE_PROBABILITY 0.05
#define MANIFOLD_MAX_SIDE 1000

/* The split, with data loaded, or an error naming the split. */
static vae_status find_split(vae_trainer *trainer, const char *split, const vae_dataset **out) {
    *out = NULL;
    if (!split) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "split must not be NULL");
    const vae_dataset *data = vae_trainer_split(trainer, split);
    if (!data)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "unknown split '%s' (expected train, validation or test)", split);
    VAE_TRY(vae_trainer_ensure_data(trainer));
    *out = data;
    return VAE_OK;
}

/* The split with examples [first, first+count) present. */
static vae_status find_range(vae_trainer *trainer, const char *split, long first, long count,
                             const vae_dataset **out) {
    VAE_TRY(find_split(trainer, split, out));
    const vae_dataset *data = *out;
    if (data->count == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "the %s split has no examples%s", split,
                         strcmp(split, "validation") == 0 ? " (set data.validation_size)" : "");
    if (count < 1)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "the number of %s examples asked for must be positive, got %ld",
                         split, count);
    if (first < 0 || first > data->count || count > data->count - first)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "examples [%ld, %ld) are outside the %s split's %ld examples",
                         first, first + count, split, data->count);
    return VAE_OK;
}

vae_status vae_trainer_split_size(vae_trainer *trainer, const char *split, long *count) {
    *count = 0;
    const vae_dataset *data = NULL;
    VAE_TRY(find_split(trainer, split, &data));
    *count = data->count;
    return VAE_OK;
}

vae_status vae_trainer_split_has_labels(vae_trainer *trainer, const char *split, int *has_labels) {
    *has_labels = 0;
    const vae_dataset *data = NULL;
    VAE_TRY(find_split(trainer, split, &data));
    *has_labels = data->labels != NULL;
    return VAE_OK;
}

/* The encoder's inputs: scaled to [0,1], thresholded under static
 * binarisation (as gather_batch does), grey levels otherwise. */
static void scaled_inputs(const vae_trainer *trainer, const vae_dataset *data, long first, long count, float *inputs) {
    size_t dim = (size_t)data->dim;
    for (long i = 0; i < count; ++i) {
        float *row = inputs + (size_t)i * dim;
        vae_dataset_example_scaled(data, first + i, row);
        if (trainer->config.binarize == VAE_BINARIZE_STATIC)
            for (size_t j = 0; j < dim; ++j) row[j] = row[j] > trainer->config.binarize_threshold ? 1.0f : 0.0f;
    }
}

vae_status vae_trainer_inputs(vae_trainer *trainer, const char *split, long first, long count, float *inputs) {
    const vae_dataset *data = NULL;
    VAE_TRY(find_range(trainer, split, first, count, &data));
    if (!inputs) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "inputs: the output array must not be NULL");
    scaled_inputs(trainer, data, first, count, inputs);
    return VAE_OK;
}

/* The posterior of data's rows [first, first+count), which must exist. */
static vae_status encode_rows(vae_trainer *trainer, const vae_dataset *data, long first, long count, float *mu,
                              float *logvar) {
    int latent = trainer->model.latent_dim;
    int dim = trainer->input_dim;
    float clamp = trainer->config.logvar_clamp;
    long rows = trainer->config.eval_batch_size < count ? trainer->config.eval_batch_size : count;
    vae_backend *backend = trainer->backend;
    /* One step for the whole call; the last, partial batch reuses it (the
     * encoder treats rows independently, so the unused rows do no harm). */
    vae_step *step = NULL;
    VAE_TRY(vae_step_create(&step, backend, &trainer->model, &trainer->config, (int)rows, 1, trainer->parameters, 0));
    const vae_step_buffers *b = vae_step_get_buffers(step);
    float *host_x = malloc(sizeof(float) * (size_t)rows * (size_t)dim);
    float *host_mu_logvar = malloc(sizeof(float) * (size_t)rows * 2 * (size_t)latent);
    vae_status status = VAE_OK;
    if (!host_x || !host_mu_logvar) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "encode: out of memory");
    for (long done = 0; status == VAE_OK && done < count; done += rows) {
        long batch_rows = count - done < rows ? count - done : rows;
        scaled_inputs(trainer, data, first + done, batch_rows, host_x);
        status = vae_backend_copy_to_device(backend, b->x, host_x, sizeof(float) * (size_t)batch_rows * (size_t)dim);
        if (status == VAE_OK) status = vae_step_encode(step);
        if (status == VAE_OK)
            status = vae_backend_copy_to_host(backend, host_mu_logvar, b->mu_logvar,
                                       sizeof(float) * (size_t)batch_rows * 2 * (size_t)latent);
        for (long r = 0; status == VAE_OK && r < batch_rows; ++r) {
            const float *source = host_mu_logvar + (size_t)r * 2 * (size_t)latent;
            size_t destination = (size_t)(done + r) * (size_t)latent;
            memcpy(mu + destination, source, sizeof(float) * (size_t)latent);
            if (logvar)
                for (int j = 0; j < latent; ++j) {
                    float value = source[latent + j];
                    /* The posterior the model trained with has the clamped variance. */
                    if (clamp > 0.0f) value = value < -clamp ? -clamp : (value > clamp ? clamp : value);
                    logvar[destination + (size_t)j] = value;
                }
        }
    }
    free(host_x);
    free(host_mu_logvar);
    vae_step_destroy(step);
    return status;
}

vae_status vae_trainer_encode(vae_trainer *trainer, const char *split, long first, long count, float *mu,
                              float *logvar, int32_t *labels) {
    const vae_dataset *data = NULL;
    VAE_TRY(find_range(trainer, split, first, count, &data));
    if (!mu) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "encode: the mu array must not be NULL");
    if (labels && !data->labels)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "the %s split of %s has no labels", split,
                         trainer->config.data_path);
    VAE_TRY(encode_rows(trainer, data, first, count, mu, logvar));
    if (labels) memcpy(labels, data->labels + first, sizeof(int32_t) * (size_t)count);
    return VAE_OK;
}

int vae_trainer_input_dim(const vae_trainer *trainer) { return trainer->input_dim; }

int vae_trainer_latent_dim(const vae_trainer *trainer) { return trainer->model.latent_dim; }

vae_status vae_input_rows_wrap(const vae_trainer *trainer, const float *inputs, long count, vae_input_rows *out) {
    memset(out, 0, sizeof *out);
    if (!inputs) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "inputs: the array must not be NULL");
    if (count < 1 || count > INT32_MAX)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "inputs: expected 1 to %d rows, got %ld", INT32_MAX, count);
    size_t dim = (size_t)trainer->input_dim;
    size_t total = (size_t)count * dim;
    for (size_t k = 0; k < total; ++k) {
        float value = inputs[k];
        if (isfinite(value) && value >= 0.0f && value <= 1.0f) continue;
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "inputs: value %g at row %zu, column %zu is not finite and in [0,1] (the model's inputs "
                         "are scaled as its training data were)",
                         (double)value, k / dim, k % dim);
    }
    out->dataset.count = count;
    out->dataset.dim = trainer->input_dim;
    out->dataset.dtype = VAE_DTYPE_F32;
    out->dataset.scale = 1.0f;
    out->dataset.values = inputs;
    out->first_row[0] = 0;
    out->first_row[1] = count;
    out->values[0] = inputs;
    out->dataset.segment_count = 1;
    out->dataset.segment_first = out->first_row;
    out->dataset.segment_values = out->values;
    return VAE_OK;
}

vae_status vae_trainer_encode_inputs(vae_trainer *trainer, const float *inputs, long count, float *mu,
                                     float *logvar) {
    vae_input_rows rows;
    VAE_TRY(vae_input_rows_wrap(trainer, inputs, count, &rows));
    if (!mu) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "encode: the mu array must not be NULL");
    return encode_rows(trainer, &rows.dataset, 0, count, mu, logvar);
}

/* vae_trainer_decode in chunks of train.eval_batch_size, so that the
 * decoder's workspace stays bounded however many pictures are asked for. */
static vae_status decode_in_batches(vae_trainer *trainer, const float *z, long count, float *images) {
    long rows = trainer->config.eval_batch_size;
    int latent = trainer->model.latent_dim, dim = trainer->input_dim;
    for (long done = 0; done < count; done += rows) {
        long batch_rows = count - done < rows ? count - done : rows;
        VAE_TRY(vae_trainer_decode(trainer, z + (size_t)done * (size_t)latent, (int)batch_rows,
                                   images + (size_t)done * (size_t)dim));
    }
    return VAE_OK;
}

vae_status vae_trainer_reconstruct(vae_trainer *trainer, const char *split, long first, int count, float *inputs,
                                   float *reconstructions) {
    const vae_dataset *data = NULL;
    VAE_TRY(find_range(trainer, split, first, count, &data));
    if (inputs) scaled_inputs(trainer, data, first, count, inputs);
    if (!reconstructions) return VAE_OK;
    float *mu = malloc(sizeof(float) * (size_t)count * (size_t)trainer->model.latent_dim);
    if (!mu) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "reconstruct: out of memory");
    vae_status status = vae_trainer_encode(trainer, split, first, count, mu, NULL, NULL);
    if (status == VAE_OK) status = decode_in_batches(trainer, mu, count, reconstructions);
    free(mu);
    return status;
}

vae_status vae_trainer_interpolate(vae_trainer *trainer, const char *split, long first, int pairs, int steps,
                                   float *images) {
    if (pairs < 1 || steps < 2 || steps > 10000 || !images)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "interpolate: expected at least 1 pair and 2..10000 steps (endpoints included), got %d pairs "
                         "and %d steps",
                         pairs, steps);
    const vae_dataset *data = NULL;
    long examples = 2 * (long)pairs;
    VAE_TRY(find_range(trainer, split, first, examples, &data));
    int latent = trainer->model.latent_dim;
    size_t dim = (size_t)trainer->input_dim;
    size_t path_count = (size_t)pairs * (size_t)steps;
    float *inputs = malloc(sizeof(float) * (size_t)examples * dim);
    float *mu = malloc(sizeof(float) * (size_t)examples * (size_t)latent);
    float *z = malloc(sizeof(float) * path_count * (size_t)latent);
    float *decoded = malloc(sizeof(float) * path_count * dim);
    vae_status status = VAE_OK;
    if (!inputs || !mu || !z || !decoded) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "interpolate: out of memory");
    if (status == VAE_OK) status = vae_trainer_encode(trainer, split, first, examples, mu, NULL, NULL);
    if (status == VAE_OK) {
        scaled_inputs(trainer, data, first, examples, inputs);
        for (int p = 0; p < pairs; ++p) {
            const float *a = mu + (size_t)(2 * p) * (size_t)latent, *b = a + latent;
            for (int s = 0; s < steps; ++s) {
                /* The last step is b itself, not a + 1*(b-a) with its rounding. */
                float t = (float)s / (float)(steps - 1);
                float *point = z + ((size_t)p * (size_t)steps + (size_t)s) * (size_t)latent;
                for (int j = 0; j < latent; ++j) point[j] = s == steps - 1 ? b[j] : a[j] + t * (b[j] - a[j]);
            }
        }
        status = decode_in_batches(trainer, z, (long)path_count, decoded);
    }
    if (status == VAE_OK) {
        size_t row_cells = (size_t)steps + 2;
        for (int p = 0; p < pairs; ++p) {
            float *row = images + (size_t)p * row_cells * dim;
            memcpy(row, inputs + (size_t)(2 * p) * dim, sizeof(float) * dim);
            memcpy(row + dim, decoded + (size_t)p * (size_t)steps * dim, sizeof(float) * (size_t)steps * dim);
            memcpy(row + (row_cells - 1) * dim, inputs + (size_t)(2 * p + 1) * dim, sizeof(float) * dim);
        }
    }
    free(inputs);
    free(mu);
    free(z);
    free(decoded);
    return status;
}

vae_status vae_trainer_manifold(vae_trainer *trainer, int n, float *images) {
    int latent = trainer->model.latent_dim;
    if (latent != 2)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "the latent manifold needs a model with model.latent_dim = 2; this model has latent_dim = %d",
                         latent);
    if (n < 1 || n > MANIFOLD_MAX_SIDE || !images)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "manifold: the grid side must be in 1..%d, got %d",
                         MANIFOLD_MAX_SIDE, n);
    double *quantiles = malloc(sizeof(double) * (size_t)n);
    float *z = malloc(sizeof(float) * (size_t)n * (size_t)n * 2);
    vae_status status = VAE_OK;
    if (!quantiles || !z) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "manifold: out of memory");
    if (status == VAE_OK) {
        for (int k = 0; k < n; ++k) {
            double p = n == 1 ? 0.5
                              : MANIFOLD_EDGE_PROBABILITY + (1.0 - 2.0 * MANIFOLD_EDGE_PROBABILITY) * k / (double)(n - 1);
            quantiles[k] = vae_normal_quantile(p);
        }
        for (int r = 0; r < n; ++r)
            for (int c = 0; c < n; ++c) {
                float *point = z + ((size_t)r * (size_t)n + (size_t)c) * 2;
                point[0] = (float)quantiles[c];
                point[1] = (float)quantiles[n - 1 - r];
            }
        status = decode_in_batches(trainer, z, (long)n * n, images);
    }
    free(quantiles);
    free(z);
    return status;
}

/* The grid as PNG: into its file in out_dir and, with events, into an image
 * summary at step (the same bytes: encoded once). */
static vae_status write_grid(const vae_png_bytes *png, const char *path, vae_event_file *events, const char *tag,
                             long step) {
    VAE_TRY(vae_atomic_write(path, png->data, png->size, "PNG"));
    if (!events) return VAE_OK;
    return vae_event_file_write_image(events, step, tag, png->data, png->size, png->width, png->height,
                                      png->channels);
}

vae_status vae_trainer_write_epoch_images(vae_trainer *trainer, const char *out_dir, long epoch,
                                          vae_event_file *events, long step) {
    int rows = trainer->image_rows, cols = trainer->image_cols;
    /* Data without an image shape (or of channels a PNG cannot hold) cannot
     * be drawn; training goes on. */
    int channels = vae_trainer_image_channels(trainer);
    if (rows <= 0 || cols <= 0 || (channels != 1 && channels != 3)) return VAE_OK;
    if (!out_dir) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "epoch images: no output folder");
    const char *split = NULL;
    long count = 0;
    VAE_TRY(vae_trainer_split_size(trainer, "validation", &count));
    split = "validation";
    if (count == 0) {
        VAE_TRY(vae_trainer_split_size(trainer, "test", &count));
        split = "test";
    }
    if (count > EPOCH_RECONSTRUCTION_COUNT) count = EPOCH_RECONSTRUCTION_COUNT;
    size_t dim = (size_t)trainer->input_dim;
    size_t path_size = strlen(out_dir) + 64;
    char *path = malloc(path_size);
    float *samples = malloc(sizeof(float) * EPOCH_SAMPLE_COUNT * dim);
    float *inputs = malloc(sizeof(float) * EPOCH_RECONSTRUCTION_COUNT * dim);
    float *reconstructions = malloc(sizeof(float) * EPOCH_RECONSTRUCTION_COUNT * dim);
    vae_png_bytes png = {0};
    vae_status status = VAE_OK;
    if (!path || !samples || !inputs || !reconstructions)
        status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "epoch images: out of memory");
    /* The same prior draws every epoch, so that the grids show the model change. */
    if (status == VAE_OK) status = vae_trainer_sample(trainer, EPOCH_SAMPLE_COUNT, trainer->config.seed, samples);
    if (status == VAE_OK) {
        snprintf(path, path_size, "%s/samples_epoch_%03ld.png", out_dir, epoch);
        status = vae_png_encode_image_grid(path, samples, EPOCH_SAMPLE_COUNT, channels, rows, cols,
                                           EPOCH_SAMPLE_COLUMNS, VAE_GRID_MARGIN, &png);
        if (status == VAE_OK) status = write_grid(&png, path, events, "images/samples", step);
        free(png.data);
        png.data = NULL;
    }
    if (status == VAE_OK && count > 0) {
        status = vae_trainer_reconstruct(trainer, split, 0, (int)count, inputs, reconstructions);
        snprintf(path, path_size, "%s/reconstructions_epoch_%03ld.png", out_dir, epoch);
        if (status == VAE_OK)
            status = vae_encode_image_comparison_grid(path, inputs, reconstructions, (int)count, channels, rows, cols,
                                                      VAE_COMPARISON_COLUMNS, &png);
        if (status == VAE_OK) status = write_grid(&png, path, events, "images/reconstructions", step);
        free(png.data);
    }
    free(path);
    free(samples);
    free(inputs);
    free(reconstructions);
    return status;
}
