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

static int layer_total(const vae_model *model) { return model->encoder_layer_count + model->decoder_layer_count; }

/* Fills tensors (2 per layer, times sets) over host buffers. */
static int describe_tensors(const vae_model *model, const char *prefix, const float *host, vae_checkpoint_tensor *tensors) {
    int n = 0;
    for (int i = 0; i < layer_total(model); ++i) {
        const vae_layer *layer = &model->layers[i];
        vae_checkpoint_tensor *w = &tensors[n++], *b = &tensors[n++];
        snprintf(w->name, sizeof w->name, "%s%s", prefix, layer->weight_name);
        w->rank = 2;
        w->shape[0] = layer->out;
        w->shape[1] = layer->in;
        w->data = host + layer->weight_offset;
        snprintf(b->name, sizeof b->name, "%s%s", prefix, layer->bias_name);
        b->rank = 1;
        b->shape[0] = layer->out;
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
        char step[32], epoch[32], seed[32], skipped[32], nonfinite[32], input_dim[32], rows[32], cols[32];
        uint64_t steps_per_epoch = trainer->steps_per_epoch > 0 ? (uint64_t)trainer->steps_per_epoch : 0;
        snprintf(step, sizeof step, "%" PRIu64, counter.step);
        snprintf(epoch, sizeof epoch, "%" PRIu64, steps_per_epoch ? counter.step / steps_per_epoch : 0);
        snprintf(seed, sizeof seed, "%" PRIu64, trainer->config.seed);
        snprintf(skipped, sizeof skipped, "%" PRIu64, counter.skipped_steps);
        snprintf(nonfinite, sizeof nonfinite, "%" PRIu64, counter.nonfinite_seen);
        snprintf(input_dim, sizeof input_dim, "%d", trainer->input_dim);
        snprintf(rows, sizeof rows, "%d", trainer->image_rows);
        snprintf(cols, sizeof cols, "%d", trainer->image_cols);
        const char *keys[] = {"engine", "config", "step", "epoch", "seed", "skipped_steps", "nonfinite_seen",
                              "input_dim", "image_rows", "image_cols"};
        const char *values[] = {"vae-engine " VAE_VERSION_STRING, config_text, step, epoch, seed, skipped, nonfinite,
                                input_dim, rows, cols};
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

/* Copies one set of tensors (parameters or a moment) into host after
 * checking each shape against the model. missing_ok: report absence via
 * *found instead of failing. */
static vae_status load_tensor_set(const vae_checkpoint *checkpoint, const char *path, const vae_model *model,
                                  const char *prefix, float *host, int *found) {
    int present = 0, total = 0;
    for (int i = 0; i < layer_total(model); ++i) {
        const vae_layer *layer = &model->layers[i];
        for (int part = 0; part < 2; ++part) {
            char name[160];
            snprintf(name, sizeof name, "%s%s", prefix, part == 0 ? layer->weight_name : layer->bias_name);
            const vae_checkpoint_tensor *t = vae_checkpoint_find(checkpoint, name);
            total += 1;
            if (!t) continue;
            present += 1;
            int expected_rank = part == 0 ? 2 : 1;
            int64_t expected0 = layer->out, expected1 = layer->in;
            if (t->rank != expected_rank || t->shape[0] != expected0 || (part == 0 && t->shape[1] != expected1))
                return vae_error(VAE_ERROR_BAD_INPUT,
                                 "%s: tensor %s has shape [%lld%s%lld], the stored config's model needs [%lld%s%lld]",
                                 path, name, (long long)t->shape[0], t->rank > 1 ? ", " : "",
                                 t->rank > 1 ? (long long)t->shape[1] : 0LL, (long long)expected0,
                                 part == 0 ? ", " : "", part == 0 ? (long long)expected1 : 0LL);
            size_t offset = part == 0 ? layer->weight_offset : layer->bias_offset;
            size_t floats = part == 0 ? (size_t)layer->in * layer->out : (size_t)layer->out;
            memcpy(host + offset, t->data, sizeof(float) * floats);
        }
    }
    if (present != total) {
        if (found && present == 0) { *found = 0; return VAE_OK; }
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %d of the model's %d %stensors are missing (wrong architecture?)",
                         path, total - present, total, prefix);
    }
    if (found) *found = 1;
    return VAE_OK;
}

vae_status vae_trainer_load(vae_trainer **out, const char *path, vae_device_kind device) {
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
    uint64_t step = 0, skipped = 0, nonfinite = 0, input_dim = 0, rows = 0, cols = 0;
    if (!config_text) status = vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata has no 'config'", path);
    if (status == VAE_OK) {
        char name[VAE_PATH_MAX + 32];
        snprintf(name, sizeof name, "%s (stored config)", path);
        status = vae_config_load_string(&config, config_text, name);
    }
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "step", UINT64_C(1) << 40, &step);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "skipped_steps", step, &skipped);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "nonfinite_seen", 1, &nonfinite);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "input_dim", 1 << 26, &input_dim);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "image_rows", 1 << 16, &rows);
    if (status == VAE_OK) status = metadata_integer(&checkpoint, path, "image_cols", 1 << 16, &cols);
    if (status == VAE_OK && input_dim == 0) status = vae_error(VAE_ERROR_BAD_INPUT, "%s: input_dim is 0", path);
    if (status == VAE_OK)
        status = vae_trainer_create_empty(&trainer, &config, device, (int)input_dim, (int)rows, (int)cols);
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
