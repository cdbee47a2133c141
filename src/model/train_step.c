/* The training step, once, against the backend table. */
#include "model/train_step.h"

#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "model/hierarchy_step.h"
#include "vae_math.h"

struct vae_step {
    vae_backend *backend;
    vae_model model;
    int rows, samples;
    int likelihood;
    int objective; /* vae_objective: what vae_step_forward_backward differentiates */
    float fixed_logvar, beta, logvar_clamp;
    uint64_t kl_warmup_steps;
    vae_step_buffers buffers;
    /* per hidden layer: pre-activation and post-activation */
    float *pre[VAE_MAX_LAYERS], *post[VAE_MAX_LAYERS];
    float *scratch[2];        /* ping-pong buffers for activation gradients */
    float *dz, *dmu_logvar;
    float *conv_workspace;    /* conv layers: the largest workspace any of them needs, or NULL */
    float *iwae_weight, *iwae_row_loss; /* objective iwae: [samples*rows] normalised weights, [rows] losses */
    float *iwae_log_ratio;              /* objective iwae with groups: [samples*rows] the lower groups' log p - log q */
    int with_optimizer;
    /* hierarchical models (model.latent_groups) */
    vae_hierarchy *hierarchy;
    vae_hierarchy_settings hierarchy_settings;
    float *encoder_output_gradient; /* d loss / d d_0 [rows, encoder output width] */
    const float *s0;                /* the decoder's input of the last forward pass */
    void *allocations[4 * VAE_MAX_LAYERS + 32];
    int allocation_count;
};

static vae_status step_alloc(vae_step *step, size_t floats, float **out) {
    if (step->allocation_count >= (int)(sizeof step->allocations / sizeof step->allocations[0]))
        return vae_error(VAE_ERROR_INTERNAL, "train step: too many buffers");
    void *pointer = NULL;
    vae_status status = vae_backend_alloc(step->backend, floats * sizeof(float), &pointer);
    if (status != VAE_OK) return vae_error_context(status, "allocating the training workspace");
    step->allocations[step->allocation_count++] = pointer;
    *out = pointer;
    return VAE_OK;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

vae_status vae_step_create(vae_step **out, vae_backend *backend, const vae_model *model, const vae_config *config,
                           int rows, int samples, float *parameters, int with_optimizer) {
    *out = NULL;
    vae_step *step = calloc(1, sizeof *step);
    if (!step) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "train step: out of memory");
    step->backend = backend;
    step->model = *model;
    step->rows = rows;
    step->samples = samples;
    step->likelihood = config->likelihood;
    step->objective = config->objective;
    step->fixed_logvar = config->gaussian_fixed_logvar;
    step->beta = config->beta;
    step->logvar_clamp = config->logvar_clamp;
    step->kl_warmup_steps = (uint64_t)config->kl_warmup_steps;
    step->with_optimizer = with_optimizer;
    step->buffers.parameters = parameters;

    const vae_model *m = &step->model;
    size_t decoder_rows = (size_t)rows * (size_t)samples;
    size_t z_floats = decoder_rows * (size_t)m->latent_dim;
    size_t scratch_floats = max_size(z_floats, (size_t)rows * 2 * (size_t)m->latent_dim);
    vae_status status = VAE_OK;
#define STEP_ALLOC(count, target) do { status = step_alloc(step, (count), (target)); if (status) goto fail; } while (0)
    STEP_ALLOC((size_t)rows * m->input_dim, &step->buffers.x);
    STEP_ALLOC((size_t)rows * 2 * m->latent_dim, &step->buffers.mu_logvar);
    STEP_ALLOC(z_floats, &step->buffers.z);
    STEP_ALLOC((size_t)rows, &step->buffers.kl);
    STEP_ALLOC(decoder_rows, &step->buffers.logp);
    STEP_ALLOC(decoder_rows * m->output_width, &step->buffers.decoder_output);
    STEP_ALLOC(2 * VAE_LOSS_SLOTS, (float **)&step->buffers.loss_accumulator);
    /* A hierarchical model's encoder has no head: its last layer is activated too. */
    int hierarchical = vae_model_is_hierarchical(m);
    for (int i = 0; i < m->encoder_layer_count - (hierarchical ? 0 : 1); ++i) {
        size_t floats = (size_t)rows * m->layers[i].out;
        STEP_ALLOC(floats, &step->pre[i]);
        STEP_ALLOC(floats, &step->post[i]);
        scratch_floats = max_size(scratch_floats, floats);
    }
    for (int i = 0; i < m->decoder_layer_count - 1; ++i) {
        int index = m->encoder_layer_count + i;
        size_t floats = decoder_rows * m->layers[index].out;
        STEP_ALLOC(floats, &step->pre[index]);
        STEP_ALLOC(floats, &step->post[index]);
        scratch_floats = max_size(scratch_floats, floats);
    }
    size_t workspace_floats = 0;
    for (int i = 0; i < m->encoder_layer_count + m->decoder_layer_count; ++i) {
        const vae_layer *layer = &m->layers[i];
        if (layer->kind == VAE_LAYER_DENSE) continue;
        int batch = i < m->encoder_layer_count ? rows : (int)decoder_rows;
        workspace_floats = max_size(workspace_floats, vae_conv_workspace_floats(&layer->geometry, batch));
    }
    if (workspace_floats > 0) STEP_ALLOC(workspace_floats, &step->conv_workspace);
    if (with_optimizer) {
        STEP_ALLOC(m->parameter_count, &step->buffers.gradients);
        STEP_ALLOC(m->parameter_count, &step->buffers.adam_m);
        STEP_ALLOC(m->parameter_count, &step->buffers.adam_v);
        STEP_ALLOC(1, &step->buffers.grad_norm_squared);
        STEP_ALLOC(scratch_floats, &step->scratch[0]);
        STEP_ALLOC(scratch_floats, &step->scratch[1]);
        STEP_ALLOC(hierarchical ? max_size(z_floats, decoder_rows * (size_t)m->hierarchy_width) : z_floats,
                   &step->dz);
        if (hierarchical)
            STEP_ALLOC((size_t)rows * m->layers[m->encoder_layer_count - 1].out, &step->encoder_output_gradient);
        STEP_ALLOC((size_t)rows * 2 * m->latent_dim, &step->dmu_logvar);
        if (step->objective == VAE_OBJECTIVE_IWAE) {
            STEP_ALLOC(decoder_rows, &step->iwae_weight);
            STEP_ALLOC((size_t)rows, &step->iwae_row_loss);
            if (hierarchical) STEP_ALLOC(decoder_rows, &step->iwae_log_ratio);
        }
        if ((status = vae_backend_fill(backend, step->buffers.gradients, 0.0f, m->parameter_count))) goto fail;
        if ((status = vae_backend_fill(backend, step->buffers.adam_m, 0.0f, m->parameter_count))) goto fail;
        if ((status = vae_backend_fill(backend, step->buffers.adam_v, 0.0f, m->parameter_count))) goto fail;
    }
#undef STEP_ALLOC
    if (hierarchical) {
        step->hierarchy_settings = (vae_hierarchy_settings){.beta = config->beta,
                                                            .kl_warmup_steps = (uint64_t)config->kl_warmup_steps,
                                                            .logvar_clamp = config->logvar_clamp,
                                                            .free_bits = config->free_bits};
        if ((status = vae_hierarchy_create(&step->hierarchy, backend, m, rows, samples, with_optimizer))) goto fail;
    }
    if ((status = vae_backend_fill(backend, (float *)step->buffers.loss_accumulator, 0.0f, 2 * VAE_LOSS_SLOTS)))
        goto fail;
    *out = step;
    return VAE_OK;
fail:
    vae_step_destroy(step);
    return status;
}

void vae_step_destroy(vae_step *step) {
    if (!step) return;
    vae_hierarchy_destroy(step->hierarchy);
    for (int i = 0; i < step->allocation_count; ++i) vae_backend_free(step->backend, step->allocations[i]);
    free(step);
}

const vae_step_buffers *vae_step_get_buffers(const vae_step *step) { return &step->buffers; }
int vae_step_rows(const vae_step *step) { return step->rows; }

/* One layer's output (before its activation) by its kind. */
static vae_status layer_forward(vae_step *step, const vae_layer *layer, const float *input, int rows, float *output) {
    const float *weight = step->buffers.parameters + layer->weight_offset;
    const float *bias = step->buffers.parameters + layer->bias_offset;
    switch (layer->kind) {
    case VAE_LAYER_CONV:
        return vae_backend_conv2d_forward(step->backend, &layer->geometry, rows, input, weight, bias, output,
                                          step->conv_workspace);
    case VAE_LAYER_CONV_TRANSPOSE:
        return vae_backend_conv_transpose2d_forward(step->backend, &layer->geometry, rows, input, weight, bias, output,
                                                    step->conv_workspace);
    default:
        return vae_backend_linear_forward(step->backend, input, weight, bias, output, rows, layer->in, layer->out);
    }
}

/* Overwrites the layer's weight and bias gradients and, when dx is not NULL,
 * d loss / d input, from dy = d loss / d output. */
static vae_status layer_backward(vae_step *step, const vae_layer *layer, const float *input, int rows, const float *dy,
                                 float *dx) {
    const float *weight = step->buffers.parameters + layer->weight_offset;
    float *dweight = step->buffers.gradients + layer->weight_offset;
    float *dbias = step->buffers.gradients + layer->bias_offset;
    switch (layer->kind) {
    case VAE_LAYER_CONV:
        return vae_backend_conv2d_backward(step->backend, &layer->geometry, rows, input, weight, dy, dx, dweight, dbias,
                                           step->conv_workspace);
    case VAE_LAYER_CONV_TRANSPOSE:
        return vae_backend_conv_transpose2d_backward(step->backend, &layer->geometry, rows, input, weight, dy, dx,
                                                     dweight, dbias, step->conv_workspace);
    default:
        return vae_backend_linear_backward(step->backend, input, weight, dy, dx, dweight, dbias, rows, layer->in,
                                           layer->out);
    }
}

/* Runs the layers [first, first+count) of the table on input (in_rows rows),
 * the last one writing final_output. */
static vae_status forward_layers(vae_step *step, int first, int count, const float *input, int in_rows,
                                 float *final_output) {
    for (int i = first; i < first + count; ++i) {
        const vae_layer *layer = &step->model.layers[i];
        int last = i == first + count - 1;
        float *output = last ? final_output : step->pre[i];
        VAE_TRY(layer_forward(step, layer, input, in_rows, output));
        if (!last) {
            VAE_TRY(vae_backend_activation_forward(step->backend, layer->activation, step->pre[i], step->post[i],
                                            (size_t)in_rows * layer->out));
            input = step->post[i];
        }
    }
    return VAE_OK;
}

/* Backward through layers [first, first+count): dy is d loss / d (last
 * layer's output); writes parameter gradients and, when input_gradient is not
 * NULL, d loss / d input. */
static vae_status backward_layers(vae_step *step, int first, int count, const float *input, int in_rows,
                                  float *dy, float *input_gradient) {
    int next_scratch = 0;
    for (int i = first + count - 1; i >= first; --i) {
        const vae_layer *layer = &step->model.layers[i];
        const float *layer_input = i == first ? input : step->post[i - 1];
        float *dx = i == first ? input_gradient : step->scratch[next_scratch];
        VAE_TRY(layer_backward(step, layer, layer_input, in_rows, dy, dx));
        if (i > first) {
            const vae_layer *previous = &step->model.layers[i - 1];
            VAE_TRY(vae_backend_activation_backward(step->backend, previous->activation, step->pre[i - 1], dx, dx,
                                             (size_t)in_rows * previous->out));
            dy = dx;
            next_scratch ^= 1;
        }
    }
    return VAE_OK;
}

/* A hierarchical model's encoder (every layer activated: d_0) and latent
 * groups: *s0, the decoder's input, and buffers.kl. */
static vae_status hierarchy_forward(vae_step *step, const vae_noise_settings *noise, const vae_step_counter *counter,
                                    int means, const float **s0) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    int last = m->encoder_layer_count - 1;
    VAE_TRY(forward_layers(step, 0, m->encoder_layer_count, b->x, step->rows, step->pre[last]));
    VAE_TRY(vae_backend_activation_forward(step->backend, m->layers[last].activation, step->pre[last], step->post[last],
                                           (size_t)step->rows * m->layers[last].out));
    return vae_hierarchy_forward(step->hierarchy, b->parameters, step->post[last], noise, counter, means,
                                 &step->hierarchy_settings, b->kl, s0);
}

static vae_status run_forward(vae_step *step, const vae_noise_settings *noise, const vae_step_counter *counter,
                              const float *eps_override, int write_gradient) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    int decoder_rows = step->rows * step->samples;
    if (step->hierarchy) {
        if (eps_override) return vae_error(VAE_ERROR_INTERNAL, "train step: no eps override for hierarchical models");
        VAE_TRY(hierarchy_forward(step, noise, counter, 0, &step->s0));
        VAE_TRY(forward_layers(step, m->encoder_layer_count, m->decoder_layer_count, step->s0, decoder_rows,
                               b->decoder_output));
        return vae_backend_likelihood(step->backend, step->likelihood, b->x, b->decoder_output, b->logp, step->rows,
                                      step->samples, m->input_dim, step->fixed_logvar, write_gradient);
    }
    VAE_TRY(forward_layers(step, 0, m->encoder_layer_count, b->x, step->rows, b->mu_logvar));
    VAE_TRY(vae_backend_reparam_kl_forward(step->backend, b->mu_logvar, b->z, b->kl, step->rows, m->latent_dim,
                                    step->samples, noise, counter, eps_override, step->logvar_clamp));
    VAE_TRY(forward_layers(step, m->encoder_layer_count, m->decoder_layer_count, b->z, decoder_rows,
                           b->decoder_output));
    return vae_backend_likelihood(step->backend, step->likelihood, b->x, b->decoder_output, b->logp, step->rows,
                           step->samples, m->input_dim, step->fixed_logvar, write_gradient);
}

vae_status vae_step_forward(vae_step *step, const vae_noise_settings *noise, const vae_step_counter *counter,
                            const float *eps_override) {
    VAE_TRY(run_forward(step, noise, counter, eps_override, 0));
    return vae_backend_accumulate_loss(step->backend, step->buffers.logp, step->buffers.kl, step->rows,
                                      step->samples, 1.0f, 0, counter, step->buffers.loss_accumulator);
}

/* A hierarchical model's backward pass from the decoder's output gradient:
 * the decoder, the hierarchy (the ELBO's KL terms, or with iwae_weight the
 * importance-weighted objective's), the encoder. */
static vae_status hierarchy_encoder_backward(vae_step *step, const vae_step_counter *counter,
                                             const float *iwae_weight) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    int last = m->encoder_layer_count - 1;
    VAE_TRY(backward_layers(step, m->encoder_layer_count, m->decoder_layer_count, step->s0,
                            step->rows * step->samples, b->decoder_output, step->dz));
    VAE_TRY(vae_hierarchy_backward(step->hierarchy, b->parameters, b->gradients, step->dz, iwae_weight, counter,
                                   &step->hierarchy_settings, step->encoder_output_gradient));
    VAE_TRY(vae_backend_activation_backward(step->backend, m->layers[last].activation, step->pre[last],
                                            step->encoder_output_gradient, step->encoder_output_gradient,
                                            (size_t)step->rows * m->layers[last].out));
    return backward_layers(step, 0, m->encoder_layer_count, b->x, step->rows, step->encoder_output_gradient, NULL);
}

/* A hierarchical model's importance-weighted objective after run_forward:
 * the log weights a_k = log p(x|z_k) + beta_t sum_g [log p(z_g|z_>g) -
 * log q(z_g|x,z_>g)] (the lower groups' sum from the hierarchy, the top
 * group's against N(0, I) inside iwae_objective), the same normalisation
 * and rescaling of the likelihood's gradient as one latent's, the decoder's
 * backward pass, then the hierarchy's with the weights (hierarchy_step.h). */
static vae_status hierarchy_iwae_backward(vae_step *step, const vae_step_counter *counter) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    int top = m->group_count - 1;
    VAE_TRY(vae_hierarchy_log_ratios(step->hierarchy, step->logvar_clamp, step->iwae_log_ratio));
    VAE_TRY(vae_backend_iwae_objective(step->backend, b->logp, vae_hierarchy_posterior(step->hierarchy, top),
                                       vae_hierarchy_z(step->hierarchy, top), step->iwae_log_ratio, b->kl,
                                       b->decoder_output, step->iwae_weight, step->iwae_row_loss, step->rows,
                                       m->groups[top].size, step->samples, m->output_width, step->beta,
                                       step->kl_warmup_steps, counter, step->logvar_clamp, b->loss_accumulator));
    return hierarchy_encoder_backward(step, counter, step->iwae_weight);
}

/* The importance-weighted objective after run_forward (kernels/vae_step_math.h):
 * the weights rescale the likelihood's gradient in place, then the decoder's
 * backward pass, then the latent pass with the prior's and log q's terms. */
static vae_status iwae_backward(vae_step *step, const vae_step_counter *counter) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    if (step->hierarchy) return hierarchy_iwae_backward(step, counter);
    VAE_TRY(vae_backend_iwae_objective(step->backend, b->logp, b->mu_logvar, b->z, NULL, b->kl, b->decoder_output,
                                       step->iwae_weight, step->iwae_row_loss, step->rows, m->latent_dim,
                                       step->samples, m->output_width, step->beta, step->kl_warmup_steps, counter,
                                       step->logvar_clamp, b->loss_accumulator));
    VAE_TRY(backward_layers(step, m->encoder_layer_count, m->decoder_layer_count, b->z, step->rows * step->samples,
                            b->decoder_output, step->dz));
    VAE_TRY(vae_backend_iwae_latent_backward(step->backend, b->mu_logvar, b->z, step->dz, step->iwae_weight,
                                             step->dmu_logvar, step->rows, m->latent_dim, step->samples, step->beta,
                                             step->kl_warmup_steps, counter, step->logvar_clamp));
    return backward_layers(step, 0, m->encoder_layer_count, b->x, step->rows, step->dmu_logvar, NULL);
}

vae_status vae_step_forward_backward(vae_step *step, const vae_noise_settings *noise, vae_step_counter *counter,
                                     const float *eps_override) {
    if (!step->with_optimizer) return vae_error(VAE_ERROR_INTERNAL, "train step: created without gradients");
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    int decoder_rows = step->rows * step->samples;
    VAE_TRY(run_forward(step, noise, counter, eps_override, 1));
    if (step->objective == VAE_OBJECTIVE_IWAE) return iwae_backward(step, counter);
    VAE_TRY(vae_backend_accumulate_loss(step->backend, b->logp, b->kl, step->rows, step->samples, step->beta,
                                 step->kl_warmup_steps, counter, b->loss_accumulator));
    if (step->hierarchy) return hierarchy_encoder_backward(step, counter, NULL);
    VAE_TRY(backward_layers(step, m->encoder_layer_count, m->decoder_layer_count, b->z, decoder_rows,
                            b->decoder_output, step->dz));
    VAE_TRY(vae_backend_reparam_kl_backward(step->backend, b->mu_logvar, b->z, step->dz, step->dmu_logvar, step->rows,
                                     m->latent_dim, step->samples, step->beta, step->kl_warmup_steps, counter,
                                     step->logvar_clamp));
    return backward_layers(step, 0, m->encoder_layer_count, b->x, step->rows, step->dmu_logvar, NULL);
}

/* A hierarchical model's code of buffers.x: the posterior means, every
 * group at its mean, as the standard normal noise that ancestral sampling
 * turns into them (vae_step_decode): eps_top = mu_q, eps_g = (mu_q - mu_p) /
 * std_p, and log-variance logvar_q - logvar_p, into mu_logvar [rows, 2Z] as
 * [all groups' means | all groups' log-variances]. */
static vae_status hierarchy_encode(vae_step *step) {
    const vae_model *m = &step->model;
    vae_step_buffers *b = &step->buffers;
    vae_noise_settings noise = {0};
    vae_step_counter zero = {0, 0, 0};
    vae_step_counter *counter = NULL;
    const float *s0 = NULL;
    VAE_TRY(vae_backend_alloc(step->backend, sizeof zero, (void **)&counter));
    vae_status status = vae_backend_copy_to_device(step->backend, counter, &zero, sizeof zero);
    if (status == VAE_OK) status = hierarchy_forward(step, &noise, counter, 1, &s0);
    vae_backend_free(step->backend, counter);
    VAE_TRY(status);
    int rows = step->rows, latent = m->latent_dim;
    float clamp = step->logvar_clamp;
    size_t largest = 0;
    for (int g = 0; g < m->group_count; ++g)
        if ((size_t)m->groups[g].size > largest) largest = (size_t)m->groups[g].size;
    float *code = malloc(sizeof(float) * (size_t)rows * 2 * (size_t)latent);
    float *q = malloc(sizeof(float) * (size_t)rows * 2 * largest), *p = malloc(sizeof(float) * (size_t)rows * 2 * largest);
    status = code && q && p ? VAE_OK : vae_error(VAE_ERROR_OUT_OF_MEMORY, "encode: out of memory");
    for (int g = 0; status == VAE_OK && g < m->group_count; ++g) {
        int size = m->groups[g].size, offset = m->groups[g].offset, top = g == m->group_count - 1;
        size_t floats = (size_t)rows * 2 * (size_t)size;
        status = vae_backend_copy_to_host(step->backend, q, vae_hierarchy_posterior(step->hierarchy, g),
                                          sizeof(float) * floats);
        if (status == VAE_OK && !top)
            status = vae_backend_copy_to_host(step->backend, p, vae_hierarchy_prior(step->hierarchy, g),
                                              sizeof(float) * floats);
        for (int r = 0; status == VAE_OK && r < rows; ++r)
            for (int j = 0; j < size; ++j) {
                const float *qr = q + (size_t)r * 2 * size, *pr = p + (size_t)r * 2 * size;
                float q_logvar = vae_clamp_logvar(qr[size + j], clamp);
                float p_mu = top ? 0.0f : pr[j], p_logvar = top ? 0.0f : vae_clamp_logvar(pr[size + j], clamp);
                float *row = code + (size_t)r * 2 * latent;
                row[offset + j] = (qr[j] - p_mu) * expf(-0.5f * p_logvar);
                row[latent + offset + j] = q_logvar - p_logvar;
            }
    }
    if (status == VAE_OK)
        status = vae_backend_copy_to_device(step->backend, b->mu_logvar, code,
                                            sizeof(float) * (size_t)rows * 2 * (size_t)latent);
    free(code);
    free(q);
    free(p);
    return status;
}

vae_status vae_step_encode(vae_step *step) {
    if (step->hierarchy) return hierarchy_encode(step);
    return forward_layers(step, 0, step->model.encoder_layer_count, step->buffers.x, step->rows,
                          step->buffers.mu_logvar);
}

vae_status vae_step_decode(vae_step *step, const float *z, int count) {
    if (count > step->rows * step->samples) return vae_error(VAE_ERROR_INTERNAL, "decode: too many rows");
    if (step->hierarchy) {
        vae_step_counter zero = {0, 0, 0};
        vae_step_counter *counter = NULL;
        const float *s0 = NULL;
        VAE_TRY(vae_backend_alloc(step->backend, sizeof zero, (void **)&counter));
        vae_status status = vae_backend_copy_to_device(step->backend, counter, &zero, sizeof zero);
        if (status == VAE_OK)
            status = vae_hierarchy_generate(step->hierarchy, step->buffers.parameters, z, count, counter,
                                            step->logvar_clamp, &s0);
        vae_backend_free(step->backend, counter);
        VAE_TRY(status);
        z = s0;
    }
    return forward_layers(step, step->model.encoder_layer_count, step->model.decoder_layer_count, z, count,
                          step->buffers.decoder_output);
}

vae_hierarchy *vae_step_hierarchy(vae_step *step) { return step->hierarchy; }

vae_status vae_step_optimizer(vae_step *step, const vae_adam_settings *settings, vae_step_counter *counter) {
    if (!step->with_optimizer) return vae_error(VAE_ERROR_INTERNAL, "train step: created without an optimizer");
    vae_step_buffers *b = &step->buffers;
    VAE_TRY(vae_backend_sum_of_squares(step->backend, b->gradients, step->model.parameter_count,
                                      b->grad_norm_squared));
    return vae_backend_adam_step(step->backend, b->parameters, b->gradients, b->adam_m, b->adam_v,
                                step->model.parameter_count, settings, b->grad_norm_squared, counter);
}

vae_status vae_reference_loss_and_gradients(const vae_config *config, int input_dim, const vae_image_shape *image,
                                            const float *parameters, const float *x, int rows, const float *eps,
                                            double *loss, float *gradients) {
    vae_model model;
    VAE_TRY(vae_model_build(config, input_dim, image, &model));
    vae_backend *backend = NULL;
    VAE_TRY(vae_backend_create_cpu(&backend));
    vae_config reference_config = *config;
    reference_config.kl_warmup_steps = 0;
    vae_step *step = NULL;
    float *parameter_copy = malloc(sizeof(float) * model.parameter_count);
    vae_step_counter counter = {0, 0, 0};
    vae_noise_settings noise = {.seed = config->seed, .random_purpose = VAE_RANDOM_EPS};
    vae_status status = parameter_copy ? VAE_OK : vae_error(VAE_ERROR_OUT_OF_MEMORY, "reference: out of memory");
    if (status == VAE_OK) {
        memcpy(parameter_copy, parameters, sizeof(float) * model.parameter_count);
        status = vae_step_create(&step, backend, &model, &reference_config, rows, config->samples, parameter_copy, 1);
    }
    if (status == VAE_OK) {
        const vae_step_buffers *b = vae_step_get_buffers(step);
        memcpy(b->x, x, sizeof(float) * (size_t)rows * input_dim);
        /* A hierarchical model draws its own Philox noise at step 0 (the same draws every call). */
        status = vae_step_forward_backward(step, &noise, &counter, vae_model_is_hierarchical(&model) ? NULL : eps);
        if (status == VAE_OK) {
            *loss = b->loss_accumulator[VAE_LOSS_SUM_LOSS] / rows;
            if (gradients) memcpy(gradients, b->gradients, sizeof(float) * model.parameter_count);
        }
    }
    vae_step_destroy(step);
    free(parameter_copy);
    vae_backend_destroy(backend);
    return status;
}
