/* Saving a trainer to a safetensors checkpoint and creating one from it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "base/error.h"
#include "training/trainer_internal.h"

#define OPTIMIZER_FIRST_MOMENT "optimizer.exp_avg."
#define OPTIMIZER_SECOND_MOMENT "optimizer.exp_avg_sq."

static int layer_total(const vae_model *model) { return model->layer_count; }

/* Fills tensors (2 per layer, times sets) over host buffers. */
static int describe_tensors(const vae_model *model, const char *prefix, const float *host, vae_checkpoint_tensor *tensors) {
    int n = 0;
    for (int i = 0; i < layer_total(model); ++i) {
        const vae_layer *layer = &model->layers[i];
        vae_checkpoint_tensor *w = &tensors[n++], *b = &tensors[n++];
        snprintf(w->name, sizeof w->name, "%s%s", prefix, layer->weight_name);
        w->rank = layer->weight_rank;
        for (int d = 0; d < layer->weight_rank; ++d) w->shape[d] = layer->weight_shape[d];
        w->data = host + layer->weight_offset;
        snprintf(b->name, sizeof b->name, "%s%s", prefix, layer->bias_name);
        b->rank = 1;
        b->shape[0] = (int64_t)layer->bias_count;
        b->data = host + layer->bias_offset;
    }
    return n;
}

vae_status vae_trainer_save(vae_trainer *trainer, const char *path) {
    size_t count = trainer->model.parameter_count;
    int has_moments = trainer->train_step != NULL || trainer->loaded_adam_m != NULL;
    float *host = malloc(sizeof(float) * count * (has_moments ? 3 : 1));
    vae_checkpoint_tensor *tensors = calloc((size_t)layer_total(&trainer->model) * 6, sizeof *tensors);
    char *config_text = NULL;
    vae_status status = host && tensors ? VAE_OK : vae_error(VAE_ERROR_OUT_OF_MEMORY, "saving %s: out of memory", path);
    vae_step_counter counter;
    if (status == VAE_OK) status = vae_backend_copy_to_host(trainer->backend, host, trainer->parameters, sizeof(float) * count);
    if (status == VAE_OK) status = vae_trainer_read_counter(trainer, &counter);
    if (status == VAE_OK && has_moments) {
        if (trainer->train_step) {
            const vae_step_buffers *b = vae_step_get_buffers(trainer->train_step);
            status = vae_backend_copy_to_host(trainer->backend, host + count, b->adam_m, sizeof(float) * count);
            if (status == VAE_OK) status = vae_backend_copy_to_host(trainer->backend, host + 2 * count, b->adam_v, sizeof(float) * count);
        } else {
            memcpy(host + count, trainer->loaded_adam_m, sizeof(float) * count);
            memcpy(host + 2 * count, trainer->loaded_adam_v, sizeof(float) * count);
        }
    }
    if (status == VAE_OK) status = vae_config_to_string(&trainer->config, &config_text);
    if (status == VAE_OK) {
        int n = describe_tensors(&trainer->model, "", host, tensors);
        if (has_moments) {
            n += describe_tensors(&trainer->model, OPTIMIZER_FIRST_MOMENT, host + count, tensors + n);
            n += describe_tensors(&trainer->model, OPTIMIZER_SECOND_MOMENT, host + 2 * count, tensors + n);
        }
        char step[32], epoch[32], seed[32], skipped[32], nonfinite[32], input_dim[32], channels[32], rows[32],
            cols[32];
        uint64_t steps_per_epoch = trainer->steps_per_epoch > 0 ? (uint64_t)trainer->steps_per_epoch : 0;
        snprintf(step, sizeof step, "%" PRIu64, counter.step);
        snprintf(epoch, sizeof epoch, "%" PRIu64, steps_per_epoch ? counter.step / steps_per_epoch : 0);
        snprintf(seed, sizeof seed, "%" PRIu64, trainer->config.seed);
        snprintf(skipped, sizeof skipped, "%" PRIu64, counter.skipped_steps);
        snprintf(nonfinite, sizeof nonfinite, "%" PRIu64, counter.nonfinite_seen);
        snprintf(input_dim, sizeof input_dim, "%d", trainer->input_dim);
        snprintf(channels, sizeof channels, "%d", trainer->image_channels);
        snprintf(rows, sizeof rows, "%d", trainer->image_rows);
        snprintf(cols, sizeof cols, "%d", trainer->image_cols);
        const char *keys[] = {"engine", "config", "step", "epoch", "seed", "skipped_steps", "nonfinite_seen",
                              "input_dim", "image_channels", "image_rows", "image_cols"};
        const char *values[] = {"vae-engine " VAE_VERSION_STRING, config_text, step, epoch, seed, skipped, nonfinite,
                                input_dim, channels, rows, cols};
        status = vae_checkpoint_write(path, tensors, n, keys, values, (int)(sizeof keys / sizeof keys[0]));
    }
    free(config_text);
    free(tensors);
    free(host);
    return status;
}

static vae_status metadata_integer(const vae_checkpoint *checkpoint, const char *path, const char *key,
                                   uint64_t max_value, uint64_t *out) {
    const char *text = vae_checkpoint_metadata(checkpoint, key);
    if (!text) return vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata has no '%s'", path, key);
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end != '\0' || text[0] == '-' || value > max_value)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata '%s' = '%s' is not an integer in 0..%" PRIu64, path, key,
                         text, max_value);
    *out = value;
    return VAE_OK;
}

static void shape_text(int rank, const int64_t *shape, char *text, size_t size) {
    size_t used = (size_t)snprintf(text, size, "[");
    for (int d = 0; d < rank && used < size; ++d)
        used += (size_t)snprintf(text + used, size - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < size) snprintf(text + used, size - used, "]");
}

/* Copies one set of tensors (parameters or a moment) into host after
 * checking each shape against the model. found not NULL: a set wholly
 * absent is reported via *found instead of failing. A set partly absent (a
 * file for another architecture) fails naming the first missing tensor. */
static vae_status load_tensor_set(const vae_checkpoint *checkpoint, const char *path, const vae_model *model,
                                  const char *prefix, float *host, int *found) {
    int present = 0, total = 0;
    char first_missing[160] = "";
    for (int i = 0; i < layer_total(model); ++i) {
        const vae_layer *layer = &model->layers[i];
        for (int part = 0; part < 2; ++part) {
            char name[160];
            snprintf(name, sizeof name, "%s%s", prefix, part == 0 ? layer->weight_name : layer->bias_name);
            const vae_checkpoint_tensor *t = vae_checkpoint_find(checkpoint, name);
            total += 1;
            if (!t) {
                if (!first_missing[0]) snprintf(first_missing, sizeof first_missing, "%s", name);
                continue;
            }
            present += 1;
            int64_t expected[VAE_CHECKPOINT_MAX_RANK] = {0};
            int expected_rank = part == 0 ? layer->weight_rank : 1;
            if (part == 0)
                for (int d = 0; d < layer->weight_rank; ++d) expected[d] = layer->weight_shape[d];
            else expected[0] = (int64_t)layer->bias_count;
            int same = t->rank == expected_rank;
            for (int d = 0; same && d < expected_rank; ++d) same = t->shape[d] == expected[d];
            if (!same) {
                char have[96], need[96];
                shape_text(t->rank, t->shape, have, sizeof have);
                shape_text(expected_rank, expected, need, sizeof need);
                return vae_error(VAE_ERROR_BAD_INPUT,
                                 "%s: tensor %s has shape %s, the stored config's model needs %s (wrong architecture?)",
                                 path, name, have, need);
            }
            size_t offset = part == 0 ? layer->weight_offset : layer->bias_offset;
            size_t floats = part == 0 ? layer->weight_count : layer->bias_count;
            memcpy(host + offset, t->data, sizeof(float) * floats);
        }
    }
    if (present != total) {
        if (found && present == 0) { *found = 0; return VAE_OK; }
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: %d of the model's %d %stensors are missing, first %s (wrong architecture?)", path,
                         total - present, total, prefix, first_missing);
    }
    if (found) *found = 1;
    return VAE_OK;
}

/* precision: NULL keeps the stored one. */
static vae_status load_trainer(vae_trainer **out, const char *path, vae_device_kind device,
                               const vae_precision *precision) {
    *out = NULL;
    vae_checkpoint checkpoint;
    memset(&checkpoint, 0, sizeof checkpoint);
    VAE_TRY(vae_checkpoint_read(path, &checkpoint));
    vae_trainer *trainer = NULL;
    float *host = NULL;
    vae_status status = VAE_OK;
    const char *config_text = vae_checkpoint_metadata(&checkpoint, "config");
    vae_config config;
    vae_config_defaults(&config);
    uint64_t step = 0, skipped = 0, nonfinite = 0, input_dim = 0, channels = 0, rows = 0, cols = 0;
    if (!config_text) status = vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata has no 'config'", path);
    if (status == VAE_OK) {
        char name[VAE_PATH_MAX + 32];
        snprintf(name, sizeof name, "%s (stored config)", path);
        status = vae_config_load_string(&config, config_text, name);
    }
    if (status == VAE_OK && precision) config.precision = *precision;
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "step", UINT64_C(1) << 40, &step);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "skipped_steps", step, &skipped);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "nonfinite_seen", 1, &nonfinite);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "input_dim", 1 << 26, &input_dim);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "image_rows", 1 << 16, &rows);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "image_cols", 1 << 16, &cols);
    /* Checkpoints written before conv layers have no image_channels (their
     * models are dense; pictures take rows and cols as grey). */
    if (status == VAE_OK && vae_checkpoint_metadata(&checkpoint, "image_channels"))
        status = metadata_integer(&checkpoint, path, "image_channels", 1 << 16, &channels);
    if (status == VAE_OK && input_dim == 0) status = vae_error(VAE_ERROR_BAD_INPUT, "%s: input_dim is 0", path);
    if (status == VAE_OK && channels > 0 && channels * rows * cols != input_dim)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: image shape %" PRIu64 "x%" PRIu64 "x%" PRIu64
                           " does not hold input_dim %" PRIu64 " values", path, channels, rows, cols, input_dim);
    if (status == VAE_OK) {
        status = vae_trainer_create_empty(&trainer, &config, device, (int)input_dim, (int)channels, (int)rows,
                                          (int)cols);
        if (status != VAE_OK) status = vae_error_context(status, "%s: the stored config", path);
    }
    size_t count = trainer ? trainer->model.parameter_count : 0;
    if (status == VAE_OK) {
        host = malloc(sizeof(float) * count);
        if (!host) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "loading %s: out of memory", path);
    }
    if (status == VAE_OK) status = load_tensor_set(&checkpoint, path, &trainer->model, "", host, NULL);
    if (status == VAE_OK)
        status = vae_backend_copy_to_device(trainer->backend, trainer->parameters, host, sizeof(float) * count);
    if (status == VAE_OK) {
        int found_m = 0, found_v = 0;
        trainer->loaded_adam_m = malloc(sizeof(float) * count);
        trainer->loaded_adam_v = malloc(sizeof(float) * count);
        if (!trainer->loaded_adam_m || !trainer->loaded_adam_v)
            status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "loading %s: out of memory", path);
        if (status == VAE_OK)
            status = load_tensor_set(&checkpoint, path, &trainer->model, OPTIMIZER_FIRST_MOMENT, trainer->loaded_adam_m, &found_m);
        if (status == VAE_OK)
            status = load_tensor_set(&checkpoint, path, &trainer->model, OPTIMIZER_SECOND_MOMENT, trainer->loaded_adam_v, &found_v);
        if (status == VAE_OK && found_m != found_v)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: has one of the two Adam moments but not the other", path);
        if (status == VAE_OK && !found_m) {
            free(trainer->loaded_adam_m);
            free(trainer->loaded_adam_v);
            trainer->loaded_adam_m = trainer->loaded_adam_v = NULL;
        }
    }
    if (status == VAE_OK) {
        vae_step_counter counter = {step, skipped, nonfinite};
        trainer->host_step = step;
        trainer->synchronised_step = step;
        trainer->resumed_counter = counter;
        status = vae_backend_copy_to_device(trainer->backend, trainer->counter, &counter, sizeof counter);
    }
    free(host);
    vae_checkpoint_free(&checkpoint);
    if (status != VAE_OK) {
        vae_trainer_destroy(trainer);
        return status;
    }
    *out = trainer;
    return VAE_OK;
}

vae_status vae_trainer_load(vae_trainer **out, const char *path, vae_device_kind device) {
    return load_trainer(out, path, device, NULL);
}

vae_status vae_trainer_load_with_precision(vae_trainer **out, const char *path, vae_device_kind device,
                                           vae_precision precision) {
    if (precision != VAE_PRECISION_FP32 && precision != VAE_PRECISION_TF32 && precision != VAE_PRECISION_BF16) {
        *out = NULL;
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_trainer_load_with_precision: unknown precision %d",
                         (int)precision);
    }
    return load_trainer(out, path, device, &precision);
}

/* The settings a resumed run may change: how long it goes on and how it is
 * watched (logs, evaluations, checkpoints, pictures), never what it trains. */
#define CONTINUABLE_SETTINGS                                                                               \
    "train.epochs, train.log_every_steps, train.eval_every_epochs, train.eval_batch_size, "                 \
    "checkpoint.every_steps, checkpoint.keep, output.image_every_epochs and output.tensorboard"

static void copy_continuable_settings(vae_config *to, const vae_config *from) {
    to->epochs = from->epochs;
    to->log_every_steps = from->log_every_steps;
    to->eval_every_epochs = from->eval_every_epochs;
    to->eval_batch_size = from->eval_batch_size;
    to->checkpoint_every_steps = from->checkpoint_every_steps;
    to->checkpoint_keep = from->checkpoint_keep;
    to->image_every_epochs = from->image_every_epochs;
    to->tensorboard = from->tensorboard;
}

vae_status vae_trainer_continue_with(vae_trainer *trainer, const vae_config *config) {
    if (!trainer || !config)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_trainer_continue_with: trainer or config is NULL");
    if (trainer->prepared)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "vae_trainer_continue_with: the trainer has trained already; call it before vae_trainer_train");
    VAE_TRY(vae_config_validate(config));
    vae_config comparable = *config;
    copy_continuable_settings(&comparable, &trainer->config);
    char key[96], given[200], stored[200];
    if (vae_config_first_difference(&comparable, &trainer->config, key, sizeof key, given, stored, sizeof given))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s = %s given, %s stored: a resumed run keeps its stored config and may change only "
                         CONTINUABLE_SETTINGS " (start a new run to change more: another --out, or --force)",
                         key, given, stored);
    copy_continuable_settings(&trainer->config, config);
    return VAE_OK;
}
