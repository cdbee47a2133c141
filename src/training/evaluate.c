/* Evaluation (ELBO, IWAE log-likelihood, active units) and decoding for
 * pictures. Runs on the trainer's backend; allocations happen once per call,
 * never per batch. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vae/arrays.h"
#include "base/error.h"
#include "distributed/distributed.h"
#include "training/trainer_internal.h"
#include "vae_step_math.h"

/* Decoder rows one evaluation batch may hold (rows * samples). */
#define EVAL_DECODER_ROW_BUDGET 65536
/* Convolutional decoders keep images per row: their batches are also held to
 * this many floats of decoder activations and conv workspace (1 GiB). Widths
 * models keep the row budget alone, so their batches (and the noise each row
 * sees) are as before. */
#define EVAL_CONV_DECODER_FLOAT_BUDGET (256L * 1024 * 1024)

typedef struct eval_state {
    vae_trainer *trainer;
    const vae_dataset *dataset;
    vae_placed_rows rows;      /* split's values as the gather reads them */
    int32_t *order;            /* identity order on the backend */
    vae_step *steps[2];        /* full batches, and the remainder */
    float *importance;         /* [rows] IWAE per-row estimates (backend) */
    float *log_weight;         /* hierarchical models: [samples*rows] log p(x|z) + the lower groups' log p - log q */
    float *host_prior;         /* hierarchical models: a group's conditional prior and posterior of the */
    float *host_group_posterior; /* batch's draws ([samples*rows, 2Z]) */
    float *host_importance;
    float *host_mu_logvar;
    int sharded;               /* 1: batches split over the data-parallel ranks (a split); 0: all here */
    /* Per-row results where not NULL ([dataset->count], host), and the
     * batch's logp and kl read back for them. */
    double *row_elbo, *row_iwae;
    float *host_logp, *host_kl;
    /* This process's sums, reduced over the ranks before the result:
     * [importance, loss slots..., mean[latent], mean square[latent],
     * kl[latent]]. */
    double *sums;
} eval_state;

static void eval_state_free(eval_state *s) {
    vae_backend *backend = s->trainer->backend;
    for (int i = 0; i < 2; ++i) vae_step_destroy(s->steps[i]);
    vae_placed_rows_free(backend, &s->rows);
    if (s->order) vae_backend_free(backend, s->order);
    if (s->importance) vae_backend_free(backend, s->importance);
    if (s->log_weight) vae_backend_free(backend, s->log_weight);
    free(s->host_prior);
    free(s->host_group_posterior);
    free(s->host_importance);
    free(s->host_mu_logvar);
    free(s->host_logp);
    free(s->host_kl);
    free(s->sums);
}

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

#define SUM_IMPORTANCE 0
#define SUM_LOSS_SLOTS 1
#define SUM_LATENT (1 + VAE_LOSS_SLOTS)

/* The ELBO from its two terms: of one row, or of the means over a split. */
static double elbo_from_terms(double reconstruction, double kl) { return reconstruction - kl; }

/* A hierarchical model's per-dimension sums, group by group: the posterior
 * means whitened by the prior, (mu_q - mu_p) / sigma_p (what vae encode
 * gives; the top group's prior is N(0, I): its plain means), for the groups
 * below the top of the first sample, and each dimension's KL from the
 * group's prior, averaged over the samples as the ELBO's KL is. A lower
 * group's raw mean follows its prior's, which varies with the draws above
 * whether or not the group carries anything. */
static vae_status add_group_statistics(eval_state *s, vae_hierarchy *hierarchy, int rows, int samples,
                                       double *mean_sum, double *mean_square_sum, double *kl_sum) {
    const vae_model *m = &s->trainer->model;
    vae_backend *backend = s->trainer->backend;
    float clamp = s->trainer->config.logvar_clamp;
    for (int g = 0; g < m->group_count; ++g) {
        int size = m->groups[g].size, offset = m->groups[g].offset, top = g == m->group_count - 1;
        size_t draws = top ? (size_t)rows : (size_t)rows * (size_t)samples;
        size_t bytes = sizeof(float) * draws * 2 * (size_t)size;
        double weight = top ? 1.0 : 1.0 / samples;
        VAE_TRY(vae_backend_copy_to_host(backend, s->host_group_posterior, vae_hierarchy_posterior(hierarchy, g), bytes));
        if (!top) VAE_TRY(vae_backend_copy_to_host(backend, s->host_prior, vae_hierarchy_prior(hierarchy, g), bytes));
        for (size_t d = 0; d < draws; ++d)
            for (int j = 0; j < size; ++j) {
                const float *q = s->host_group_posterior + d * 2 * size, *p = s->host_prior + d * 2 * size;
                float q_logvar = vae_clamp_logvar(q[size + j], clamp);
                if (d < (size_t)rows) {
                    double mu = top ? q[j] : (q[j] - p[j]) * exp(-0.5 * vae_clamp_logvar(p[size + j], clamp));
                    mean_sum[offset + j] += mu;
                    mean_square_sum[offset + j] += mu * mu;
                }
                kl_sum[offset + j] += weight * (top ? vae_kl_term(q[j], q_logvar)
                                                    : vae_gaussian_kl_term(q[j], q_logvar, p[j],
                                                                           vae_clamp_logvar(p[size + j], clamp)));
            }
    }
    return VAE_OK;
}

/* Data parallel: rank r evaluates batches r, r + world, ...; a batch's noise
 * is addressed by its index, so the sharding does not change what a row
 * sees. */
static vae_status evaluate_batches(eval_state *s, int rows, int samples, int iwae) {
    vae_trainer *trainer = s->trainer;
    vae_backend *backend = trainer->backend;
    const vae_dataset *data = s->dataset;
    const vae_config *c = &trainer->config;
    int latent = trainer->model.latent_dim;
    long count = data->count;
    VAE_TRY(vae_place_rows(backend, data, VAE_PLACE_DEVICE_ONLY, &s->rows));
    int32_t *identity = malloc(sizeof(int32_t) * (size_t)count);
    if (!identity) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "evaluation: out of memory");
    for (long i = 0; i < count; ++i) identity[i] = (int32_t)i;
    vae_status status = vae_backend_alloc(backend, sizeof(int32_t) * (size_t)count, (void **)&s->order);
    if (status == VAE_OK) status = vae_backend_copy_to_device(backend, s->order, identity, sizeof(int32_t) * (size_t)count);
    free(identity);
    VAE_TRY(status);
    long full_batches = count / rows;
    int remainder = (int)(count % rows);
    VAE_TRY(vae_step_create(&s->steps[0], backend, &trainer->model, c, rows, samples, trainer->parameters, 0));
    if (remainder)
        VAE_TRY(vae_step_create(&s->steps[1], backend, &trainer->model, c, remainder, samples, trainer->parameters, 0));
    VAE_TRY(vae_backend_alloc(backend, sizeof(float) * (size_t)rows, (void **)&s->importance));
    s->host_importance = malloc(sizeof(float) * (size_t)rows);
    s->host_mu_logvar = malloc(sizeof(float) * (size_t)rows * 2 * latent);
    if (trainer->model.group_count > 0) {
        size_t floats = (size_t)rows * (size_t)samples * 2 * (size_t)latent;
        s->host_prior = malloc(sizeof(float) * floats);
        s->host_group_posterior = malloc(sizeof(float) * floats);
        if (!s->host_prior || !s->host_group_posterior)
            return vae_error(VAE_ERROR_OUT_OF_MEMORY, "evaluation: out of memory");
        if (iwae) VAE_TRY(vae_backend_alloc(backend, sizeof(float) * (size_t)rows * (size_t)samples, (void **)&s->log_weight));
    }
    s->sums = calloc((size_t)SUM_LATENT + 3 * (size_t)latent, sizeof(double));
    free(trainer->kl_per_dimension);
    trainer->kl_per_dimension = calloc((size_t)latent, sizeof(double));
    if (!trainer->kl_per_dimension || !s->host_importance || !s->host_mu_logvar || !s->sums)
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "evaluation: out of memory");
    if (s->row_elbo) {
        s->host_logp = malloc(sizeof(float) * (size_t)rows * (size_t)samples);
        s->host_kl = malloc(sizeof(float) * (size_t)rows);
        if (!s->host_logp || !s->host_kl) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "evaluation: out of memory");
    }
    double *mean_sum = s->sums + SUM_LATENT, *mean_square_sum = mean_sum + latent;
    double *kl_sum = mean_square_sum + latent;

    vae_gather_settings gather = {
        .dtype = data->dtype, .scale = data->scale, .binarize = c->binarize, .threshold = c->binarize_threshold,
        .seed = c->seed, .random_purpose = VAE_RANDOM_EVAL_BINARIZE, .steps_per_epoch = 1};
    vae_noise_settings noise = {.seed = c->seed, .random_purpose = VAE_RANDOM_EVAL_EPS};
    double importance_sum = 0.0;
    long batches = full_batches + (remainder ? 1 : 0);
    long first_batch = s->sharded ? vae_distributed_rank() : 0, batch_stride = s->sharded ? vae_distributed_size() : 1;
    for (long batch = first_batch; batch < batches; batch += batch_stride) {
        vae_step *step = batch < full_batches ? s->steps[0] : s->steps[1];
        int batch_rows = vae_step_rows(step);
        const vae_step_buffers *b = vae_step_get_buffers(step);
        vae_step_counter counter = {(uint64_t)batch, 0, 0};
        VAE_TRY(vae_backend_copy_to_device(backend, trainer->eval_counter, &counter, sizeof counter));
        VAE_TRY(vae_backend_gather_batch(backend, &s->rows.rows, s->order + batch * rows, data->dim, batch_rows, &gather,
                                  trainer->eval_counter, b->x));
        VAE_TRY(vae_step_forward(step, &noise, trainer->eval_counter, NULL));
        vae_hierarchy *hierarchy = vae_step_hierarchy(step);
        if (iwae && hierarchy) {
            /* log w = log p(x|z) + sum_g [log p(z_g|z_>g) - log q(z_g|x,z_>g)]: the lower groups here, the
             * top group's (against N(0, I)) and the log-mean-exp in importance_log_mean */
            int top = trainer->model.group_count - 1;
            VAE_TRY(vae_hierarchy_log_weights(hierarchy, b->logp, c->logvar_clamp, s->log_weight));
            VAE_TRY(vae_backend_importance_log_mean(backend, s->log_weight, vae_hierarchy_posterior(hierarchy, top),
                                                    vae_hierarchy_z(hierarchy, top), s->importance, batch_rows,
                                                    trainer->model.groups[top].size, samples, c->logvar_clamp));
        } else if (iwae) {
            VAE_TRY(vae_backend_importance_log_mean(backend, b->logp, b->mu_logvar, b->z, s->importance, batch_rows, latent,
                                             samples, c->logvar_clamp));
        }
        if (iwae) {
            VAE_TRY(vae_backend_copy_to_host(backend, s->host_importance, s->importance, sizeof(float) * (size_t)batch_rows));
            for (int r = 0; r < batch_rows; ++r) importance_sum += s->host_importance[r];
            if (s->row_iwae)
                for (int r = 0; r < batch_rows; ++r) s->row_iwae[batch * rows + r] = s->host_importance[r];
        }
        if (s->row_elbo) {
            VAE_TRY(vae_backend_copy_to_host(backend, s->host_logp, b->logp,
                                             sizeof(float) * (size_t)batch_rows * (size_t)samples));
            VAE_TRY(vae_backend_copy_to_host(backend, s->host_kl, b->kl, sizeof(float) * (size_t)batch_rows));
            /* The row's terms as accumulate_loss sums them (vae_step_math.h). */
            for (int r = 0; r < batch_rows; ++r)
                s->row_elbo[batch * rows + r] =
                    elbo_from_terms(vae_row_reconstruction(s->host_logp, batch_rows, samples, r), s->host_kl[r]);
        }
        if (hierarchy) {
            VAE_TRY(add_group_statistics(s, hierarchy, batch_rows, samples, mean_sum, mean_square_sum, kl_sum));
            continue;
        }
        VAE_TRY(vae_backend_copy_to_host(backend, s->host_mu_logvar, b->mu_logvar, sizeof(float) * (size_t)batch_rows * 2 * latent));
        for (int r = 0; r < batch_rows; ++r)
            for (int j = 0; j < latent; ++j) {
                const float *row = s->host_mu_logvar + (size_t)r * 2 * latent;
                double mu = row[j];
                mean_sum[j] += mu;
                mean_square_sum[j] += mu * mu;
                kl_sum[j] += vae_kl_term(row[j], vae_clamp_logvar(row[latent + j], c->logvar_clamp));
            }
    }
    s->sums[SUM_IMPORTANCE] = importance_sum;
    for (int i = 0; i < 2; ++i) {
        if (!s->steps[i]) continue;
        double part[VAE_LOSS_SLOTS];
        VAE_TRY(vae_backend_copy_to_host(backend, part, vae_step_get_buffers(s->steps[i])->loss_accumulator, sizeof part));
        for (int k = 0; k < VAE_LOSS_SLOTS; ++k) s->sums[SUM_LOSS_SLOTS + k] += part[k];
    }
    return VAE_OK;
}

/* The result from the sums of all ranks. */
static vae_status finish_evaluation(eval_state *s, int samples, int iwae, vae_eval_result *result) {
    vae_trainer *trainer = s->trainer;
    int latent = trainer->model.latent_dim;
    long count = s->dataset->count;
    VAE_TRY(vae_distributed_sum_doubles(s->sums, (size_t)SUM_LATENT + 3 * (size_t)latent));
    const double *sums = s->sums + SUM_LOSS_SLOTS, *mean_sum = s->sums + SUM_LATENT;
    const double *mean_square_sum = mean_sum + latent, *kl_sum = mean_square_sum + latent;
    double importance_sum = s->sums[SUM_IMPORTANCE];
    for (int j = 0; j < latent; ++j) trainer->kl_per_dimension[j] = kl_sum[j];
    result->points = count;
    result->reconstruction = sums[VAE_LOSS_SUM_RECONSTRUCTION] / count;
    result->kl = sums[VAE_LOSS_SUM_KL] / count;
    result->elbo = elbo_from_terms(result->reconstruction, result->kl);
    result->log_likelihood = iwae ? importance_sum / count : NAN;
    result->iwae_k = iwae ? samples : 0;
    /* Active units (Burda et al.): variance over the data of E_q[z_j] above 0.01. */
    result->active_units = 0;
    result->latent_dim = latent;
    result->kl_per_dimension = trainer->kl_per_dimension;
    for (int j = 0; j < latent; ++j) {
        trainer->kl_per_dimension[j] /= count;
        double mean = mean_sum[j] / count;
        double variance = mean_square_sum[j] / count - mean * mean;
        if (variance > 0.01) result->active_units += 1;
    }
    result->group_count = trainer->model.group_count;
    for (int g = 0; g < result->group_count; ++g) {
        const vae_latent_group *group = &trainer->model.groups[g];
        result->group_kl[g] = 0.0;
        result->group_active_units[g] = 0;
        for (int j = group->offset; j < group->offset + group->size; ++j) {
            double mean = mean_sum[j] / count;
            result->group_kl[g] += trainer->kl_per_dimension[j];
            if (mean_square_sum[j] / count - mean * mean > 0.01) result->group_active_units[g] += 1;
        }
    }
    return VAE_OK;
}

/* Evaluates data's rows: the split's result, and per-row values where
 * row_elbo, row_iwae are not NULL. sharded: a split, whose batches the
 * data-parallel ranks share; else every batch in this process and no
 * reduction over ranks. */
static vae_status run_evaluation(vae_trainer *trainer, const vae_dataset *data, int iwae_k, int sharded,
                                 double *row_elbo, double *row_iwae, vae_eval_result *result) {
    if (iwae_k < 0 || iwae_k > 1000000)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "--iwae-k must be between 1 and 1000000, got %d", iwae_k);
    int samples = iwae_k > 0 ? iwae_k : 1;
    long rows = trainer->config.eval_batch_size;
    if (rows > data->count) rows = data->count;
    long decoder_row_budget = EVAL_DECODER_ROW_BUDGET;
    if (trainer->model.convolutional) {
        long by_memory = EVAL_CONV_DECODER_FLOAT_BUDGET / (long)vae_model_decoder_floats_per_row(&trainer->model);
        if (by_memory < decoder_row_budget) decoder_row_budget = by_memory;
    }
    long budget_rows = decoder_row_budget / samples;
    if (budget_rows < 1) budget_rows = 1;
    if (rows > budget_rows) rows = budget_rows;
    double start = seconds_now();
    eval_state state;
    memset(&state, 0, sizeof state);
    state.trainer = trainer;
    state.dataset = data;
    state.sharded = sharded;
    state.row_elbo = row_elbo;
    state.row_iwae = iwae_k > 0 ? row_iwae : NULL;
    vae_status status = VAE_OK;
    if (sharded) {
        /* Every rank agrees before the reduction, so that one that failed
         * does not leave the others waiting in it. */
        status = vae_distributed_agree(evaluate_batches(&state, (int)rows, samples, iwae_k > 0));
        if (status == VAE_OK) status = finish_evaluation(&state, samples, iwae_k > 0, result);
    } else {
        status = evaluate_batches(&state, (int)rows, samples, iwae_k > 0);
    }
    eval_state_free(&state);
    result->seconds = seconds_now() - start;
    result->precision = trainer->config.precision;
    return status;
}

vae_status vae_trainer_evaluate(vae_trainer *trainer, const char *split, int iwae_k, vae_eval_result *result) {
    memset(result, 0, sizeof *result);
    VAE_TRY(vae_trainer_ensure_data(trainer));
    const vae_dataset *data = vae_trainer_split(trainer, split);
    if (!data) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "unknown split '%s' (expected train, validation or test)", split);
    if (data->count == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "the %s split has no examples%s", split,
                         strcmp(split, "validation") == 0 ? " (set data.validation_size)" : "");
    return run_evaluation(trainer, data, iwae_k, 1, NULL, NULL, result);
}

vae_status vae_trainer_evaluate_inputs(vae_trainer *trainer, const float *inputs, long count, int iwae_k,
                                       double *elbo, double *iwae) {
    vae_input_rows rows;
    VAE_TRY(vae_input_rows_wrap(trainer, inputs, count, &rows));
    if (iwae_k < 1 && iwae)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "evaluate: an IWAE estimate needs iwae_k >= 1, got %d", iwae_k);
    /* The per-row ELBO is always computed: it costs only the copies of logp and kl. */
    double *row_elbo = elbo ? elbo : malloc(sizeof(double) * (size_t)count);
    if (!row_elbo) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "evaluate: out of memory");
    vae_eval_result unused;
    memset(&unused, 0, sizeof unused);
    vae_status status = run_evaluation(trainer, &rows.dataset, iwae_k, 0, row_elbo, iwae, &unused);
    if (row_elbo != elbo) free(row_elbo);
    return status;
}

/* Decoder outputs to pixel values in [0,1]: the Bernoulli mean or the
 * Gaussian mean. */
static void outputs_to_images(const vae_trainer *trainer, const float *outputs, int count, float *images) {
    int dim = trainer->input_dim, width = trainer->model.output_width;
    for (int i = 0; i < count; ++i)
        for (int j = 0; j < dim; ++j) {
            float value = outputs[(size_t)i * width + j];
            if (trainer->model.likelihood == VAE_LIKELIHOOD_BERNOULLI) value = vae_sigmoid(value);
            images[(size_t)i * dim + j] = value < 0.0f ? 0.0f : (value > 1.0f ? 1.0f : value);
        }
}

vae_status vae_trainer_decode(vae_trainer *trainer, const float *host_z, int count, float *images) {
    if (count <= 0) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "decode: count must be positive, got %d", count);
    vae_step *step = NULL;
    vae_backend *backend = trainer->backend;
    VAE_TRY(vae_step_create(&step, backend, &trainer->model, &trainer->config, count, 1, trainer->parameters, 0));
    const vae_step_buffers *b = vae_step_get_buffers(step);
    int width = trainer->model.output_width;
    float *outputs = malloc(sizeof(float) * (size_t)count * width);
    vae_status status = outputs ? VAE_OK : vae_error(VAE_ERROR_OUT_OF_MEMORY, "decode: out of memory");
    /* A hierarchical model's decoder takes each group's noise as one block (vae_step_decode). */
    const vae_model *m = &trainer->model;
    size_t latent = (size_t)m->latent_dim;
    float *group_major = NULL;
    if (status == VAE_OK && vae_model_is_hierarchical(m)) {
        group_major = malloc(sizeof(float) * (size_t)count * latent);
        if (!group_major) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "decode: out of memory");
        for (int g = 0; status == VAE_OK && g < m->group_count; ++g)
            for (int i = 0; i < count; ++i)
                memcpy(group_major + (size_t)count * (size_t)m->groups[g].offset + (size_t)i * (size_t)m->groups[g].size,
                       host_z + (size_t)i * latent + (size_t)m->groups[g].offset,
                       sizeof(float) * (size_t)m->groups[g].size);
    }
    if (status == VAE_OK)
        status = vae_backend_copy_to_device(backend, b->z, group_major ? group_major : host_z,
                                            sizeof(float) * (size_t)count * latent);
    free(group_major);
    if (status == VAE_OK) status = vae_step_decode(step, b->z, count);
    if (status == VAE_OK)
        status = vae_backend_copy_to_host(backend, outputs, b->decoder_output, sizeof(float) * (size_t)count * width);
    if (status == VAE_OK) outputs_to_images(trainer, outputs, count, images);
    free(outputs);
    vae_step_destroy(step);
    return status;
}

vae_status vae_trainer_sample(vae_trainer *trainer, int count, uint64_t seed, float *images) {
    return vae_trainer_sample_at_temperature(trainer, count, seed, 1.0f, images);
}

vae_status vae_trainer_sample_at_temperature(vae_trainer *trainer, int count, uint64_t seed, float temperature,
                                             float *images) {
    if (count <= 0 || count > 100000)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "sample count must be between 1 and 100000, got %d", count);
    if (!(temperature > 0.0f) || temperature > 100.0f)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "sample temperature must be in (0, 100], got %g",
                         (double)temperature);
    int latent = trainer->model.latent_dim;
    float *z = malloc(sizeof(float) * (size_t)count * latent);
    if (!z) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "sample: out of memory");
    for (int i = 0; i < count; ++i) {
        uint64_t subsequence = vae_philox_subsequence(0, VAE_RANDOM_SAMPLE, (uint32_t)i);
        for (int j = 0; j < latent; j += 4) {
            float eps[4];
            vae_normal4(seed, subsequence, (uint64_t)j, eps);
            /* the temperature scales the prior's standard deviations: every group's noise */
            for (int k = 0; k < 4 && j + k < latent; ++k) z[(size_t)i * latent + j + k] = temperature * eps[k];
        }
    }
    vae_status status = vae_trainer_decode(trainer, z, count, images);
    free(z);
    return status;
}

int vae_trainer_latent_group_count(const vae_trainer *trainer) { return trainer->model.group_count; }

vae_status vae_trainer_sample_groups(vae_trainer *trainer, int count, uint64_t seed, float temperature,
                                     float *images) {
    const vae_model *m = &trainer->model;
    if (!vae_model_is_hierarchical(m))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "sample groups: the model has one latent group, not a hierarchy");
    if (count <= 0 || count > 10000 || !(temperature > 0.0f) || temperature > 100.0f)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "sample groups: expected 1..10000 samples per group and a temperature in (0, 100], got %d "
                         "and %g", count, (double)temperature);
    int latent = m->latent_dim, groups = m->group_count;
    size_t pictures = (size_t)groups * (size_t)count;
    float *z = malloc(sizeof(float) * pictures * (size_t)latent);
    if (!z) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "sample groups: out of memory");
    /* the shared draw is Philox row 0; column c's draw of the varied group is row 1 + c */
    for (size_t picture = 0; picture < pictures; ++picture) {
        int row = (int)(picture / (size_t)count), column = (int)(picture % (size_t)count);
        const vae_latent_group *varied = &m->groups[groups - 1 - row];
        for (int j = 0; j < latent; j += 4) {
            float shared[4], redrawn[4];
            vae_normal4(seed, vae_philox_subsequence(0, VAE_RANDOM_SAMPLE, 0), (uint64_t)j, shared);
            vae_normal4(seed, vae_philox_subsequence(0, VAE_RANDOM_SAMPLE, 1u + (uint32_t)column), (uint64_t)j, redrawn);
            for (int k = 0; k < 4 && j + k < latent; ++k) {
                int in_group = j + k >= varied->offset && j + k < varied->offset + varied->size;
                z[picture * (size_t)latent + (size_t)(j + k)] = temperature * (in_group ? redrawn[k] : shared[k]);
            }
        }
    }
    vae_status status = VAE_OK;
    size_t rows = (size_t)trainer->config.eval_batch_size;
    for (size_t done = 0; status == VAE_OK && done < pictures; done += rows) {
        size_t batch = pictures - done < rows ? pictures - done : rows;
        status = vae_trainer_decode(trainer, z + done * (size_t)latent, (int)batch,
                                    images + done * (size_t)trainer->input_dim);
    }
    free(z);
    return status;
}
