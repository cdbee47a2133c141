/* The trainer: set-up and the training loop. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "distributed/distributed.h"
#include "io/event_file.h"
#include "io/metrics.h"
#include "vae/run_folder.h"
#include "training/trainer_internal.h"

/* Stop requests are counted, not flagged: a run remembers the count when it
 * starts and stops when the count has moved. So a request reaches every run
 * in progress (any thread) and no run that starts later; a flag that was
 * never cleared stopped every later run of the process after one step. A
 * lock-free atomic is async-signal-safe (C11 7.14.1.1), so the CLI's signal
 * handler may call vae_request_stop. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "vae_request_stop needs a lock-free atomic counter");
static atomic_uint stop_requests;

void vae_request_stop(void) { atomic_fetch_add(&stop_requests, 1u); }

static int stop_requested_since(unsigned int requests_at_start) {
    return atomic_load(&stop_requests) != requests_at_start;
}

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static vae_status backend_alloc(vae_trainer *trainer, size_t bytes, void **out) {
    return vae_backend_alloc(trainer->backend, bytes, out);
}

/* Whether steps replay a captured graph: where the backend has graphs, unless
 * VAE_CUDA_GRAPHS=0 asks for every step eagerly (a switch for isolating a
 * capture problem; the steps compute the same bits either way). Read once,
 * when the trainer is made. */
static int step_graphs_wanted(const vae_backend *backend) {
    if (!vae_backend_has_graphs(backend)) return 0;
    const char *setting = getenv("VAE_CUDA_GRAPHS");
    return !(setting && strcmp(setting, "0") == 0);
}

vae_status vae_trainer_create_empty(vae_trainer **out, const vae_config *config, vae_device_kind device, int input_dim,
                                    int image_channels, int image_rows, int image_cols) {
    *out = NULL;
    VAE_TRY(vae_config_validate(config));
    vae_trainer *trainer = calloc(1, sizeof *trainer);
    if (!trainer) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "trainer: out of memory");
    trainer->config = *config;
    trainer->device = device;
    trainer->input_dim = input_dim;
    trainer->image_channels = image_channels;
    trainer->image_rows = image_rows;
    trainer->image_cols = image_cols;
    trainer->permutation_epoch = UINT64_MAX;
    vae_image_shape image = {image_channels, image_rows, image_cols};
    vae_status status = vae_model_build(config, input_dim, &image, &trainer->model);
    if (status == VAE_OK) status = vae_backend_create(&trainer->backend, device, config->precision);
    if (status == VAE_OK) trainer->step_graphs = step_graphs_wanted(trainer->backend);
    if (status == VAE_OK)
        status = backend_alloc(trainer, sizeof(float) * trainer->model.parameter_count, (void **)&trainer->parameters);
    if (status == VAE_OK) status = backend_alloc(trainer, sizeof(vae_step_counter), (void **)&trainer->counter);
    if (status == VAE_OK) status = backend_alloc(trainer, sizeof(vae_step_counter), (void **)&trainer->eval_counter);
    if (status == VAE_OK) {
        vae_step_counter zero = {0, 0, 0};
        status = vae_backend_copy_to_device(trainer->backend, trainer->counter, &zero, sizeof zero);
    }
    if (status == VAE_OK) {
        float *host = malloc(sizeof(float) * trainer->model.parameter_count);
        if (!host) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "trainer: out of memory for parameters");
        else {
            vae_model_init_parameters(&trainer->model, config->seed, config->init_scale, host);
            status = vae_backend_copy_to_device(trainer->backend, trainer->parameters, host,
                                                          sizeof(float) * trainer->model.parameter_count);
            free(host);
        }
    }
    if (status != VAE_OK) {
        vae_trainer_destroy(trainer);
        return status;
    }
    const vae_config *c = &trainer->config;
    trainer->adam = (vae_adam_settings){
        .lr = c->lr, .lr_min = c->lr_min, .beta1 = c->adam_beta1, .beta2 = c->adam_beta2,
        .epsilon = c->adam_epsilon, .weight_decay = c->weight_decay, .decoupled_weight_decay = c->optimizer == VAE_OPTIMIZER_ADAMW,
        .lr_schedule = c->lr_schedule, .warmup_steps = (uint64_t)c->warmup_steps, .total_steps = 0,
        .clip_norm = c->grad_clip, .skip_norm = c->skip_grad_norm};
    trainer->noise = (vae_noise_settings){.seed = c->seed, .random_purpose = VAE_RANDOM_EPS};
    *out = trainer;
    return VAE_OK;
}

vae_status vae_trainer_ensure_data(vae_trainer *trainer) {
    if (trainer->data_loaded) return VAE_OK;
    VAE_TRY(vae_data_load(&trainer->config, &trainer->data));
    trainer->data_loaded = 1;
    if (trainer->data.train.dim != trainer->input_dim)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: examples have %d values, the model expects %d",
                         trainer->config.data_path, trainer->data.train.dim, trainer->input_dim);
    const vae_dataset *train = &trainer->data.train;
    if (trainer->model.convolutional && (train->channels != trainer->image_channels ||
                                         train->rows != trainer->image_rows || train->cols != trainer->image_cols))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: images are %dx%dx%d, the model's conv layers expect %dx%dx%d",
                         trainer->config.data_path, train->channels, train->rows, train->cols,
                         trainer->image_channels, trainer->image_rows, trainer->image_cols);
    return VAE_OK;
}

vae_status vae_trainer_create(vae_trainer **out, const vae_config *config, vae_device_kind device) {
    *out = NULL;
    VAE_TRY(vae_config_validate(config));
    vae_data_splits data;
    memset(&data, 0, sizeof data);
    VAE_TRY(vae_data_load(config, &data));
    vae_trainer *trainer = NULL;
    vae_status status = vae_trainer_create_empty(&trainer, config, device, data.train.dim, data.train.channels,
                                                 data.train.rows, data.train.cols);
    if (status != VAE_OK) {
        vae_data_splits_free(&data);
        return status;
    }
    trainer->data = data;
    trainer->data_loaded = 1;
    *out = trainer;
    return VAE_OK;
}

void vae_trainer_destroy(vae_trainer *trainer) {
    if (!trainer) return;
    vae_backend *backend = trainer->backend;
    if (backend) {
        if (trainer->graph) vae_backend_graph_destroy(backend, trainer->graph);
        vae_step_destroy(trainer->train_step);
        if (trainer->parameters) vae_backend_free(backend, trainer->parameters);
        if (trainer->counter) vae_backend_free(backend, trainer->counter);
        if (trainer->eval_counter) vae_backend_free(backend, trainer->eval_counter);
        vae_placed_rows_free(backend, &trainer->train_rows);
        if (trainer->train_permutation) vae_backend_free(backend, trainer->train_permutation);
        vae_backend_destroy(backend);
    }
    free(trainer->host_permutation);
    free(trainer->loaded_adam_m);
    free(trainer->loaded_adam_v);
    free(trainer->kl_per_dimension);
    vae_data_splits_free(&trainer->data);
    free(trainer);
}

const vae_dataset *vae_trainer_split(vae_trainer *trainer, const char *split) {
    if (strcmp(split, "train") == 0) return &trainer->data.train;
    if (strcmp(split, "validation") == 0) return &trainer->data.validation;
    if (strcmp(split, "test") == 0) return &trainer->data.test;
    return NULL;
}

vae_status vae_trainer_read_counter(vae_trainer *trainer, vae_step_counter *counter) {
    return vae_backend_copy_to_host(trainer->backend, counter, trainer->counter, sizeof *counter);
}

/* The training set and the step's workspace, on the backend. */
static vae_status build_train_step(vae_trainer *trainer) {
    VAE_TRY(vae_trainer_ensure_data(trainer));
    const vae_config *c = &trainer->config;
    const vae_dataset *train = &trainer->data.train;
    if (train->count < c->batch_size)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "train.batch_size = %d is larger than the training set (%ld examples)", c->batch_size,
                         train->count);
    /* Data parallel: batch_size is the global batch; each process trains on
     * its contiguous share of every step's slice of the permutation. */
    int world = vae_distributed_size(), rank = vae_distributed_rank();
    if (c->batch_size % world != 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "train.batch_size = %d cannot be split evenly over %d processes: it is the global batch, "
                         "each process takes batch_size / %d rows; choose a multiple of %d or another process count",
                         c->batch_size, world, world, world);
    int local_rows = c->batch_size / world;
    trainer->steps_per_epoch = train->count / c->batch_size; /* the last partial batch is dropped */
    trainer->adam.total_steps = (uint64_t)trainer->steps_per_epoch * (uint64_t)c->epochs;
    /* The training set goes to device memory when it fits; otherwise (or
     * with data.on_device = host) to page-locked host memory the gather
     * reads over the bus, so the step stays one graph either way. On the CPU
     * it is read where it lies (memory-mapped NPY files are not copied). */
    VAE_TRY(vae_place_rows(trainer->backend, train, c->data_on_device == VAE_DATA_HOST ? VAE_PLACE_HOST : VAE_PLACE_AUTO,
                           &trainer->train_rows));
    VAE_TRY(backend_alloc(trainer, sizeof(int32_t) * (size_t)train->count, (void **)&trainer->train_permutation));
    trainer->host_permutation = malloc(sizeof(int32_t) * (size_t)train->count);
    if (!trainer->host_permutation) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "trainer: out of memory");
    trainer->gather = (vae_gather_settings){
        .dtype = train->dtype, .scale = train->scale, .binarize = c->binarize, .threshold = c->binarize_threshold,
        .seed = c->seed, .random_purpose = VAE_RANDOM_BINARIZE, .steps_per_epoch = trainer->steps_per_epoch,
        .row_offset = rank * local_rows, .batch_rows = c->batch_size};
    trainer->noise.row_offset = (uint32_t)(rank * local_rows);
    trainer->noise.batch_rows = (uint32_t)c->batch_size;
    VAE_TRY(vae_step_create(&trainer->train_step, trainer->backend, &trainer->model, c, local_rows, c->samples,
                            trainer->parameters, 1));
    if (trainer->loaded_adam_m) {
        const vae_step_buffers *b = vae_step_get_buffers(trainer->train_step);
        size_t bytes = sizeof(float) * trainer->model.parameter_count;
        VAE_TRY(vae_backend_copy_to_device(trainer->backend, b->adam_m, trainer->loaded_adam_m, bytes));
        VAE_TRY(vae_backend_copy_to_device(trainer->backend, b->adam_v, trainer->loaded_adam_v, bytes));
    }
    return VAE_OK;
}

/* Once; data parallel: collective (every rank calls it), and the ranks
 * agree on the set-up before they connect for the gradient all-reduce. */
vae_status vae_trainer_ensure_train_step(vae_trainer *trainer) {
    if (trainer->prepared) return VAE_OK;
    VAE_TRY(vae_distributed_agree(trainer->train_step ? VAE_OK : build_train_step(trainer)));
    VAE_TRY(vae_distributed_agree(vae_distributed_prepare(trainer->backend)));
    trainer->prepared = 1;
    return VAE_OK;
}

/* The epoch's order on the device; uploaded once per epoch. */
static vae_status ensure_permutation(vae_trainer *trainer, uint64_t epoch) {
    if (trainer->permutation_epoch == epoch) return VAE_OK;
    long count = trainer->data.train.count;
    vae_permutation_for_epoch(trainer->config.seed, epoch, trainer->host_permutation, count);
    VAE_TRY(vae_backend_copy_to_device(trainer->backend, trainer->train_permutation,
                                                  trainer->host_permutation, sizeof(int32_t) * (size_t)count));
    trainer->permutation_epoch = epoch;
    return VAE_OK;
}

/* Gather, forward, backward, the gradient all-reduce across processes (a
 * no-op for one process) and Adam: the operations of one step. */
static vae_status issue_one_step(vae_trainer *trainer) {
    const vae_step_buffers *b = vae_step_get_buffers(trainer->train_step);
    VAE_TRY(vae_backend_gather_batch(trainer->backend, &trainer->train_rows.rows, trainer->train_permutation,
                                                trainer->input_dim, vae_step_rows(trainer->train_step),
                                                &trainer->gather, trainer->counter, b->x));
    VAE_TRY(vae_step_forward_backward(trainer->train_step, &trainer->noise, trainer->counter, NULL));
    VAE_TRY(vae_distributed_mean_gradients(trainer->backend, b->gradients, trainer->model.parameter_count));
    return vae_step_optimizer(trainer->train_step, &trainer->adam, trainer->counter);
}

/* One step: replayed from a captured graph where the backend has them. The
 * first step of a trainer runs eagerly and the graph is captured on the
 * second: the first launches load kernel modules lazily and let cuBLAS pick
 * its algorithms, work that has no place inside a capture. Errors name the
 * step (numbered as the progress lines number it). */
static vae_status run_one_step(vae_trainer *trainer) {
    const unsigned long long step_number = (unsigned long long)trainer->host_step + 1;
    VAE_TRY(ensure_permutation(trainer, trainer->host_step / (uint64_t)trainer->steps_per_epoch));
    if (trainer->step_graphs) vae_distributed_heartbeat();
    if (!trainer->step_graphs || !trainer->eager_step_done) {
        vae_status status = issue_one_step(trainer);
        if (status != VAE_OK) return vae_error_context(status, "training step %llu (eager)", step_number);
        trainer->eager_step_done = 1;
        return VAE_OK;
    }
    if (!trainer->graph) {
        VAE_TRY(vae_backend_graph_capture_begin(trainer->backend));
        vae_status status = issue_one_step(trainer);
        void *graph = NULL;
        vae_status end_status = vae_backend_graph_capture_end(trainer->backend, &graph);
        if (status != VAE_OK || end_status != VAE_OK) {
            if (graph) vae_backend_graph_destroy(trainer->backend, graph);
            return vae_error_context(status != VAE_OK ? status : end_status,
                                     "capturing the step graph at training step %llu", step_number);
        }
        trainer->graph = graph;
    }
    vae_status status = vae_backend_graph_launch(trainer->backend, trainer->graph);
    if (status != VAE_OK)
        return vae_error_context(status, "training step %llu (replay of the captured step graph)", step_number);
    return VAE_OK;
}

/* A device fault in a replayed step surfaces at the next wait for the
 * device: name the steps issued since the last successful wait. */
static vae_status name_unsynchronised_steps(vae_trainer *trainer, vae_status status) {
    if (status != VAE_ERROR_DEVICE) return status;
    unsigned long long first = (unsigned long long)trainer->synchronised_step + 1;
    unsigned long long last = (unsigned long long)trainer->host_step;
    if (first > last) return status;
    const char *how = trainer->graph ? "replays of the captured step graph" : "eager steps";
    if (first == last) return vae_error_context(status, "device fault in training step %llu (%s)", last, how);
    return vae_error_context(status,
                             "device fault in training steps %llu to %llu (%s; faults surface at the next "
                             "wait for the device: train.log_every_steps = 1 narrows it to one step)",
                             first, last, how);
}

static vae_status synchronise_steps(vae_trainer *trainer) {
    VAE_TRY(name_unsynchronised_steps(trainer, vae_backend_synchronize(trainer->backend)));
    trainer->synchronised_step = trainer->host_step;
    return VAE_OK;
}

static void format_duration(double seconds, char *out, size_t size) {
    if (!(seconds >= 0) || seconds > 1e7) { snprintf(out, size, "?"); return; }
    long total = (long)(seconds + 0.5);
    if (total >= 3600) snprintf(out, size, "%ldh%02ldm", total / 3600, total / 60 % 60);
    else snprintf(out, size, "%ldm%02lds", total / 60, total % 60);
}

/* Reads the loss accumulator, writes a metrics line and a progress line,
 * zeroes the accumulator. The only place the training loop waits for the
 * device. */
static vae_status log_progress(vae_trainer *trainer, vae_metrics *metrics, vae_event_file *events,
                               const vae_train_options *options, double start_time, uint64_t first_step,
                               uint64_t total_steps, double *window_start, uint64_t *window_first_step) {
    const vae_step_buffers *b = vae_step_get_buffers(trainer->train_step);
    double sums[VAE_LOSS_SLOTS];
    vae_step_counter counter;
    VAE_TRY(name_unsynchronised_steps(
        trainer, vae_backend_copy_to_host(trainer->backend, sums, b->loss_accumulator, sizeof sums)));
    trainer->synchronised_step = trainer->host_step;
    VAE_TRY(vae_backend_copy_to_host(trainer->backend, &counter, trainer->counter, sizeof counter));
    /* The last step's global gradient norm, which the optimizer computes
     * for clipping and the non-finite check anyway: one float read back. */
    float grad_norm_squared = NAN;
    VAE_TRY(vae_backend_copy_to_host(trainer->backend, &grad_norm_squared, b->grad_norm_squared,
                                     sizeof grad_norm_squared));
    vae_distributed_device_idle();
    VAE_TRY(vae_backend_fill(trainer->backend, (float *)b->loss_accumulator, 0.0f, 2 * VAE_LOSS_SLOTS));
    VAE_TRY(vae_distributed_sum_doubles(sums, VAE_LOSS_SLOTS)); /* every rank's rows */
    double now = seconds_now();
    double count = sums[VAE_LOSS_COUNT] > 0 ? sums[VAE_LOSS_COUNT] : 1;
    double window_steps = (double)(counter.step - *window_first_step);
    double samples_per_second = window_steps * trainer->config.batch_size / (now - *window_start + 1e-12);
    double done_fraction = (double)(counter.step - first_step) / (double)(total_steps - first_step + 1e-12);
    double elapsed = now - start_time;
    double eta = done_fraction > 0 ? elapsed / done_fraction - elapsed : -1;
    uint64_t epoch = counter.step == 0 ? 0 : (counter.step - 1) / (uint64_t)trainer->steps_per_epoch;
    float beta = vae_schedule_beta(counter.step - 1, trainer->config.beta, (uint64_t)trainer->config.kl_warmup_steps);
    float lr = vae_schedule_lr(counter.step - 1, trainer->adam.lr_schedule, trainer->adam.lr, trainer->adam.lr_min,
                               trainer->adam.warmup_steps, trainer->adam.total_steps);
    /* With model.objective = iwae the loss is the IWAE-K loss (annealed by
     * beta_t); elbo, reconstruction and kl stay the ELBO's terms. */
    const int iwae = trainer->config.objective == VAE_OBJECTIVE_IWAE;
    vae_metrics_record record = {
        .kind = "train", .split = NULL, .objective = iwae ? "iwae" : NULL, .epoch = (long)epoch + 1,
        .step = (long)counter.step,
        .loss = sums[VAE_LOSS_SUM_LOSS] / count, .elbo = (sums[VAE_LOSS_SUM_RECONSTRUCTION] - sums[VAE_LOSS_SUM_KL]) / count,
        .reconstruction = sums[VAE_LOSS_SUM_RECONSTRUCTION] / count, .kl = sums[VAE_LOSS_SUM_KL] / count,
        .beta = beta, .lr = lr, .samples_per_second = samples_per_second, .seconds = elapsed,
        .grad_norm = sqrt((double)grad_norm_squared), .skipped_steps = (long)counter.skipped_steps,
        .log_likelihood = NAN, .iwae_k = 0, .active_units = -1};
    if (metrics) VAE_TRY(vae_metrics_write(metrics, &record));
    if (events) {
        /* The values of the metrics line, under the line's names. */
        const vae_event_scalar scalars[] = {
            {"train/loss", record.loss}, {"train/elbo", record.elbo},
            {"train/reconstruction", record.reconstruction}, {"train/kl", record.kl},
            {"train/beta", record.beta}, {"train/lr", record.lr}, {"train/grad_norm", record.grad_norm},
            {"train/samples_per_s", record.samples_per_second}};
        VAE_TRY(vae_event_file_write_scalars(events, record.step, scalars, (int)(sizeof scalars / sizeof *scalars)));
    }
    if (!options->quiet && vae_distributed_rank() == 0) {
        char eta_text[32];
        format_duration(eta, eta_text, sizeof eta_text);
        fprintf(stderr, "epoch %llu/%d  step %llu/%llu  %sloss %.3f  recon %.3f  kl %.3f  %.0f samples/s  eta %s\n",
                (unsigned long long)epoch + 1, trainer->config.epochs, (unsigned long long)counter.step,
                (unsigned long long)total_steps, iwae ? "iwae " : "", record.loss, record.reconstruction, record.kl, samples_per_second,
                eta_text);
    }
    *window_start = now;
    *window_first_step = counter.step;
    trainer->host_step = counter.step;
    if (!isfinite(sums[VAE_LOSS_SUM_LOSS])) counter.nonfinite_seen = 1;
    if (counter.nonfinite_seen) {
        if (trainer->config.nonfinite_policy == VAE_NONFINITE_STOP)
            return vae_error(VAE_ERROR_NUMERIC,
                             "non-finite loss or gradients at or before step %llu (train.nonfinite = stop); the "
                             "parameters were left at their last finite values",
                             (unsigned long long)counter.step);
        if (!options->quiet && counter.skipped_steps && vae_distributed_rank() == 0)
            fprintf(stderr, "warning: %llu steps skipped so far (non-finite gradients, or norms above "
                            "train.skip_grad_norm)\n",
                    (unsigned long long)counter.skipped_steps);
    }
    return VAE_OK;
}

static vae_status evaluate_and_record(vae_trainer *trainer, vae_metrics *metrics, vae_event_file *events,
                                      const vae_train_options *options, long epoch) {
    const char *split = trainer->data.validation.count > 0 ? "validation" : "test";
    vae_eval_result result;
    VAE_TRY(vae_trainer_evaluate(trainer, split, 0, &result));
    vae_metrics_record record = {
        .kind = "eval", .split = split, .epoch = epoch, .step = (long)trainer->host_step, .loss = -result.elbo,
        .elbo = result.elbo, .reconstruction = result.reconstruction, .kl = result.kl, .beta = 1, .lr = NAN,
        .samples_per_second = NAN, .seconds = result.seconds, .grad_norm = NAN, .skipped_steps = -1,
        .log_likelihood = NAN, .iwae_k = 0, .active_units = result.active_units};
    if (metrics) VAE_TRY(vae_metrics_write(metrics, &record));
    if (events) {
        /* SPLIT/NAME: the eval line's values, with the line's names. */
        char tags[5][64];
        const char *names[5] = {"loss", "elbo", "reconstruction", "kl", "active_units"};
        for (int i = 0; i < 5; ++i) snprintf(tags[i], sizeof tags[i], "%s/%s", split, names[i]);
        const vae_event_scalar scalars[] = {{tags[0], record.loss},
                                            {tags[1], record.elbo},
                                            {tags[2], record.reconstruction},
                                            {tags[3], record.kl},
                                            {tags[4], (double)record.active_units}};
        VAE_TRY(vae_event_file_write_scalars(events, record.step, scalars, (int)(sizeof scalars / sizeof *scalars)));
    }
    if (!options->quiet && vae_distributed_rank() == 0)
        fprintf(stderr, "epoch %ld  %s ELBO %.3f  (recon %.3f  kl %.3f  active units %d)\n", epoch, split,
                result.elbo, result.reconstruction, result.kl, result.active_units);
    return VAE_OK;
}

/* Writes DIR/checkpoint.safetensors (the latest) and, with checkpoint.keep,
 * DIR/checkpoint-STEP.safetensors, removing numbered ones beyond keep. The
 * metrics lines written so far reach the disk first: a checkpoint on disk
 * always has its metrics there too. */
static vae_status save_periodic(vae_trainer *trainer, vae_metrics *metrics, const char *out_dir) {
    char path[VAE_PATH_MAX + 64];
    VAE_TRY(vae_metrics_sync(metrics));
    int keep = trainer->config.checkpoint_keep;
    if (keep > 0) {
        snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64 ".safetensors", out_dir, trainer->host_step);
        VAE_TRY(vae_trainer_save(trainer, path));
        uint64_t every = (uint64_t)trainer->config.checkpoint_every_steps;
        if (every > 0 && trainer->host_step >= every * (uint64_t)(keep + 1)) {
            uint64_t old_step = trainer->host_step - every * (uint64_t)keep;
            snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64 ".safetensors", out_dir, old_step);
            if (remove(path) != 0 && errno != ENOENT)
                return vae_error(VAE_ERROR_IO, "cannot remove old checkpoint %s: %s", path, strerror(errno));
        }
    }
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", out_dir);
    return vae_trainer_save(trainer, path);
}

/* Data parallel: every rank took the same Adam steps from the same
 * all-reduced gradients, so every rank must hold the same parameters (and
 * rank 0's checkpoint stands for all). Checked once, at the end. */
static vae_status check_ranks_agree(vae_trainer *trainer) {
    size_t bytes = sizeof(float) * trainer->model.parameter_count;
    float *host = malloc(bytes);
    if (!host) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "trainer: out of memory");
    vae_status status = vae_backend_copy_to_host(trainer->backend, host, trainer->parameters, bytes);
    int same = 1;
    if (status == VAE_OK) status = vae_distributed_same_everywhere(host, bytes, &same);
    free(host);
    if (status == VAE_OK && !same)
        status = vae_error(VAE_ERROR_INTERNAL, "the processes' parameters differ at step %" PRIu64
                                               " although they took the same all-reduced steps",
                           trainer->host_step);
    return status;
}

/* Claims the run folder (vae/run_folder.h) and opens its files: config.ini,
 * metrics.jsonl and (output.tensorboard) a new TensorBoard event file. The
 * writing rank only. */
static vae_status open_run_folder(vae_trainer *trainer, const vae_train_options *options, vae_run_folder **folder,
                                  vae_metrics **metrics, vae_event_file **events) {
    vae_run_start start = options->resume ? VAE_RUN_START_RESUME
                          : options->force ? VAE_RUN_START_OVER
                                           : VAE_RUN_START_NEW;
    VAE_TRY(vae_run_folder_claim(options->out_dir, start, folder));
    char path[VAE_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/config.ini", options->out_dir);
    VAE_TRY(vae_config_write_file(&trainer->config, path));
    snprintf(path, sizeof path, "%s/metrics.jsonl", options->out_dir);
    if (options->resume) VAE_TRY(vae_metrics_truncate_after(path, (long)trainer->host_step));
    VAE_TRY(vae_metrics_open(metrics, path, options->resume));
    /* A resumed run starts a file of its own; TensorBoard drops the earlier
     * file's events past the step the new one starts from. */
    if (trainer->config.tensorboard) VAE_TRY(vae_event_file_open(events, options->out_dir));
    return VAE_OK;
}

/* Data parallel: every rank runs this loop in step; rank 0 alone writes
 * (write_dir is NULL elsewhere). Where one rank can fail on its own (writing
 * files, evaluation) the ranks agree on the outcome (vae_distributed_agree)
 * so that all of them stop together; a stop signal is honoured one step
 * after the first rank saw it, by all ranks at the same step. */
vae_status vae_trainer_train(vae_trainer *trainer, const vae_train_options *options) {
    const unsigned int stop_requests_at_start = atomic_load(&stop_requests);
    vae_status status = vae_trainer_ensure_train_step(trainer);
    VAE_TRY(status);
    const vae_config *c = &trainer->config;
    vae_metrics *metrics = NULL;
    vae_event_file *events = NULL;
    vae_run_folder *folder = NULL;
    char path[VAE_PATH_MAX + 64];
    int distributed = vae_distributed_launched();
    const char *write_dir = vae_distributed_rank() == 0 ? options->out_dir : NULL;
    if (write_dir) status = open_run_folder(trainer, options, &folder, &metrics, &events);
    status = vae_distributed_agree(status);
    if (status != VAE_OK) {
        vae_event_file_close(events);
        vae_metrics_close(metrics);
        vae_run_folder_release(folder);
        return status;
    }
    uint64_t total_steps = (uint64_t)trainer->steps_per_epoch * (uint64_t)c->epochs;
    if (options->max_steps > 0 && (uint64_t)options->max_steps < total_steps) total_steps = (uint64_t)options->max_steps;
    uint64_t first_step = trainer->host_step, last_eval_step = UINT64_MAX;
    uint64_t every = (uint64_t)c->checkpoint_every_steps;
    double start = seconds_now(), window_start = start;
    uint64_t window_first_step = first_step;
    while (status == VAE_OK && trainer->host_step < total_steps) {
        status = run_one_step(trainer);
        if (status != VAE_OK) break;
        trainer->host_step += 1;
        int end_of_epoch = trainer->host_step % (uint64_t)trainer->steps_per_epoch == 0;
        int checkpoint_due = options->out_dir && every > 0 && trainer->host_step % every == 0;
        /* Data parallel: the ranks agree on a stop request one step later,
         * without waiting, and all stop at the same step. */
        int stop_now = 0;
        status = vae_distributed_stop_poll(stop_requested_since(stop_requests_at_start), &stop_now);
        if (status != VAE_OK) break;
        /* A checkpoint is only written after the loss was looked at, so a
         * non-finite step never reaches DIR/checkpoint.safetensors. */
        if (trainer->host_step % (uint64_t)c->log_every_steps == 0 || end_of_epoch || checkpoint_due ||
            trainer->host_step == total_steps || stop_now)
            status = vae_distributed_agree(log_progress(trainer, metrics, events, options, start, first_step,
                                                        total_steps, &window_start, &window_first_step));
        if (status == VAE_OK && end_of_epoch) {
            long epoch = (long)(trainer->host_step / (uint64_t)trainer->steps_per_epoch);
            if (c->eval_every_epochs > 0 && epoch % c->eval_every_epochs == 0) {
                status = vae_distributed_agree(evaluate_and_record(trainer, metrics, events, options, epoch));
                last_eval_step = trainer->host_step;
            }
            if (status == VAE_OK && options->out_dir && c->image_every_epochs > 0 && epoch % c->image_every_epochs == 0)
                status = vae_distributed_agree(
                    write_dir ? vae_trainer_write_epoch_images(trainer, write_dir, epoch, events, (long)trainer->host_step)
                              : VAE_OK);
        }
        if (status == VAE_OK && checkpoint_due)
            status = vae_distributed_agree(write_dir ? save_periodic(trainer, metrics, write_dir) : VAE_OK);
        if (status == VAE_OK && stop_now) {
            if (options->out_dir) status = vae_distributed_agree(write_dir ? save_periodic(trainer, metrics, write_dir) : VAE_OK);
            if (status == VAE_OK) /* agreed: one message, from rank 0 */
                status = vae_distributed_agree(vae_error(VAE_ERROR_INTERRUPTED, "stopped by a signal at step %" PRIu64 "%s%s",
                                                         trainer->host_step, options->out_dir ? "; checkpoint written to " : "",
                                                         options->out_dir ? options->out_dir : ""));
        }
    }
    if (status == VAE_OK) status = vae_distributed_stop_finish();
    if (status == VAE_OK && last_eval_step != trainer->host_step && trainer->host_step > first_step)
        status = vae_distributed_agree(evaluate_and_record(
            trainer, metrics, events, options, (long)(trainer->host_step / (uint64_t)trainer->steps_per_epoch)));
    if (status == VAE_OK && distributed) status = vae_distributed_agree(check_ranks_agree(trainer));
    if (options->out_dir && status == VAE_OK)
        status = vae_distributed_agree(write_dir ? save_periodic(trainer, metrics, write_dir) : VAE_OK);
    if (write_dir && status == VAE_ERROR_NUMERIC) {
        /* Keep the last good checkpoint; write the state at the failure
         * beside it for diagnosis. */
        char message[2048];
        snprintf(message, sizeof message, "%s", vae_last_error());
        snprintf(path, sizeof path, "%s/checkpoint-nonfinite.safetensors", write_dir);
        vae_status save_status = vae_trainer_save(trainer, path);
        status = save_status == VAE_OK
                     ? vae_error(VAE_ERROR_NUMERIC, "%s; state written to %s, %s/checkpoint.safetensors is the last good one",
                                 message, path, write_dir)
                     : vae_error_context(VAE_ERROR_NUMERIC, "%s; and writing the diagnosis checkpoint failed", message);
    }
    vae_status close_status = vae_metrics_close(metrics);
    vae_status events_close_status = vae_event_file_close(events);
    if (close_status == VAE_OK) close_status = events_close_status;
    vae_run_folder_release(folder);
    return status != VAE_OK ? status : close_status;
}

vae_status vae_trainer_benchmark(vae_trainer *trainer, int warmup_steps, int timed_steps, double *samples_per_second) {
    VAE_TRY(vae_trainer_ensure_train_step(trainer));
    for (int i = 0; i < warmup_steps; ++i) {
        VAE_TRY(run_one_step(trainer));
        trainer->host_step += 1;
    }
    VAE_TRY(synchronise_steps(trainer));
    vae_distributed_device_idle();
    VAE_TRY(vae_distributed_barrier());
    double start = seconds_now();
    for (int i = 0; i < timed_steps; ++i) {
        VAE_TRY(run_one_step(trainer));
        trainer->host_step += 1;
    }
    VAE_TRY(synchronise_steps(trainer));
    vae_distributed_device_idle();
    /* Data parallel: the slowest rank's time; batch_size is global, so the
     * rate below counts every rank's samples. */
    double elapsed = seconds_now() - start;
    VAE_TRY(vae_distributed_max_double(&elapsed));
    *samples_per_second = (double)timed_steps * trainer->config.batch_size / elapsed;
    return VAE_OK;
}

uint64_t vae_trainer_step(const vae_trainer *trainer) { return trainer->host_step; }

const vae_config *vae_trainer_config(const vae_trainer *trainer) { return &trainer->config; }

void vae_trainer_image_shape(const vae_trainer *trainer, int *rows, int *cols) {
    *rows = trainer->image_rows;
    *cols = trainer->image_cols;
}

/* Data of rows and cols without channels (NPY (N, D) with a square D) are
 * drawn as grey pictures, though conv layers cannot use them. */
int vae_trainer_image_channels(const vae_trainer *trainer) {
    if (trainer->image_channels > 0) return trainer->image_channels;
    return trainer->image_rows > 0 && trainer->image_cols > 0 ? 1 : 0;
}

const char *vae_trainer_device_name(const vae_trainer *trainer) { return trainer->backend->device_name; }

int vae_trainer_data_in_host_memory(const vae_trainer *trainer) { return trainer->train_rows.copy_mapped != NULL; }
