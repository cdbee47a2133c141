/* The hierarchical latents' forward and backward passes (hierarchy_step.h). */
#include "model/hierarchy_step.h"

#include <stdlib.h>

#include "base/error.h"

/* One group's buffers. Rows: "data" = rows, "draws" = samples*rows. */
typedef struct group_buffers {
    float *bottom_up_pre, *features; /* g >= 1: [data, H] before and after the activation (d_g); g = 0: d_0 is the caller's */
    float *posterior;                /* [data (top) or draws, 2Z] mu | logvar */
    float *prior;                    /* lower groups: [draws, 2Z] */
    float *merge_bottom_up;          /* lower: [data, H] */
    float *merge_pre, *merge_post;   /* lower: [draws, H] */
    float *z;                        /* [draws, Z] */
    float *kl;                       /* top: [data]; lower: [draws] */
    float *latent_in_pre, *latent_in_post; /* [draws, H] */
    float *state;                    /* s_g [draws, H]: the top's is latent_in_post */
    float *feature_gradient;         /* with gradients: d loss / d d_g, [data, width of d_g] */
} group_buffers;

struct vae_hierarchy {
    vae_backend *backend;
    vae_model model;
    int rows, samples;
    group_buffers groups[VAE_MAX_LATENT_GROUPS];
    float *zeros;          /* [draws, 2 Zmax]: N(0, I) as [mu | logvar], and the eps of posterior means */
    float *kl_scratch;     /* [draws] */
    const float *d0;       /* the last forward pass's input */
    /* backward */
    float *state_gradient[2], *scratch_draws, *dz, *dq, *dp, *dmerge, *dmerge_rows, *scratch_data;
    float *dq_direct; /* objective iwae: log q's own partials of a lower group, [draws, 2 Zmax] */
    void *allocations[16 * VAE_MAX_LATENT_GROUPS + 16];
    int allocation_count;
};

static vae_status hierarchy_alloc(vae_hierarchy *h, size_t floats, float **out) {
    if (h->allocation_count >= (int)(sizeof h->allocations / sizeof h->allocations[0]))
        return vae_error(VAE_ERROR_INTERNAL, "hierarchy: too many buffers");
    void *pointer = NULL;
    vae_status status = vae_backend_alloc(h->backend, floats * sizeof(float), &pointer);
    if (status != VAE_OK) return vae_error_context(status, "allocating the hierarchy's workspace");
    h->allocations[h->allocation_count++] = pointer;
    *out = pointer;
    return VAE_OK;
}

static const vae_layer *layer_at(const vae_hierarchy *h, int index) { return &h->model.layers[index]; }
/* d_g of the last forward pass (d_0 is the caller's). */
static const float *group_features(const vae_hierarchy *h, int g) { return g == 0 ? h->d0 : h->groups[g].features; }
static int is_top(const vae_hierarchy *h, int g) { return g == h->model.group_count - 1; }

/* The width of d_g: the encoder's output for g = 0, else H. */
static int feature_width(const vae_hierarchy *h, int g) {
    const vae_model *m = &h->model;
    return g == 0 ? m->layers[m->encoder_layer_count - 1].out : m->hierarchy_width;
}

vae_status vae_hierarchy_create(vae_hierarchy **out, vae_backend *backend, const vae_model *model, int rows,
                                int samples, int with_gradients) {
    *out = NULL;
    if (!vae_model_is_hierarchical(model)) return vae_error(VAE_ERROR_INTERNAL, "hierarchy: the model has none");
    vae_hierarchy *h = calloc(1, sizeof *h);
    if (!h) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "hierarchy: out of memory");
    h->backend = backend;
    h->model = *model;
    h->rows = rows;
    h->samples = samples;
    size_t data = (size_t)rows, draws = (size_t)rows * (size_t)samples, width = (size_t)model->hierarchy_width;
    size_t largest_group = 0, widest_feature = 0;
    vae_status status = VAE_OK;
#define H_ALLOC(count, target) do { status = hierarchy_alloc(h, (count), (target)); if (status) goto fail; } while (0)
    for (int g = 0; g < model->group_count; ++g) {
        group_buffers *b = &h->groups[g];
        size_t size = (size_t)model->groups[g].size;
        if (size > largest_group) largest_group = size;
        if ((size_t)feature_width(h, g) > widest_feature) widest_feature = (size_t)feature_width(h, g);
        if (g > 0) {
            H_ALLOC(data * width, &b->bottom_up_pre);
            H_ALLOC(data * width, &b->features);
        }
        if (is_top(h, g)) {
            H_ALLOC(data * 2 * size, &b->posterior);
            H_ALLOC(data, &b->kl);
        } else {
            H_ALLOC(draws * 2 * size, &b->posterior);
            H_ALLOC(draws * 2 * size, &b->prior);
            H_ALLOC(data * width, &b->merge_bottom_up);
            H_ALLOC(draws * width, &b->merge_pre);
            H_ALLOC(draws * width, &b->merge_post);
            H_ALLOC(draws, &b->kl);
            H_ALLOC(draws * width, &b->state);
        }
        H_ALLOC(draws * size, &b->z);
        H_ALLOC(draws * width, &b->latent_in_pre);
        H_ALLOC(draws * width, &b->latent_in_post);
        if (is_top(h, g)) b->state = b->latent_in_post;
        if (with_gradients) H_ALLOC(data * (size_t)feature_width(h, g), &b->feature_gradient);
    }
    H_ALLOC(draws * 2 * largest_group, &h->zeros);
    H_ALLOC(draws, &h->kl_scratch);
    if (with_gradients) {
        H_ALLOC(draws * width, &h->state_gradient[0]);
        H_ALLOC(draws * width, &h->state_gradient[1]);
        H_ALLOC(draws * width, &h->scratch_draws);
        H_ALLOC(draws * largest_group, &h->dz);
        H_ALLOC(draws * 2 * largest_group, &h->dq);
        H_ALLOC(draws * 2 * largest_group, &h->dp);
        H_ALLOC(draws * 2 * largest_group, &h->dq_direct);
        H_ALLOC(draws * width, &h->dmerge);
        H_ALLOC(data * width, &h->dmerge_rows);
        H_ALLOC(data * (widest_feature > width ? widest_feature : width), &h->scratch_data);
    }
#undef H_ALLOC
    if ((status = vae_backend_fill(backend, h->zeros, 0.0f, draws * 2 * largest_group))) goto fail;
    *out = h;
    return VAE_OK;
fail:
    vae_hierarchy_destroy(h);
    return status;
}

void vae_hierarchy_destroy(vae_hierarchy *h) {
    if (!h) return;
    for (int i = 0; i < h->allocation_count; ++i) vae_backend_free(h->backend, h->allocations[i]);
    free(h);
}

static vae_status dense_forward(vae_hierarchy *h, const float *parameters, int index, const float *x, int rows,
                                float *y) {
    const vae_layer *layer = layer_at(h, index);
    return vae_backend_linear_forward(h->backend, x, parameters + layer->weight_offset,
                                      parameters + layer->bias_offset, y, rows, layer->in, layer->out);
}

static vae_status dense_backward(vae_hierarchy *h, const float *parameters, float *gradients, int index,
                                 const float *x, int rows, const float *dy, float *dx) {
    const vae_layer *layer = layer_at(h, index);
    return vae_backend_linear_backward(h->backend, x, parameters + layer->weight_offset, dy, dx,
                                       gradients + layer->weight_offset, gradients + layer->bias_offset, rows,
                                       layer->in, layer->out);
}

static vae_status activate(vae_hierarchy *h, int index, const float *pre, float *post, size_t count) {
    return vae_backend_activation_forward(h->backend, layer_at(h, index)->activation, pre, post, count);
}

/* y[k] = a[k] + scale * b for each of the samples blocks of `block` floats
 * of y and a (b is one block): a row-wise term broadcast over the draws. */
static vae_status add_to_each_sample(vae_hierarchy *h, const float *a, const float *b, float scale, float *y,
                                     size_t block, int samples) {
    for (int k = 0; k < samples; ++k)
        VAE_TRY(vae_backend_add_scaled(h->backend, a + (size_t)k * block, b, scale, y + (size_t)k * block, block));
    return VAE_OK;
}

/* The group's noise: its own Philox columns; lower groups draw once per
 * sample-major row. */
static vae_noise_settings group_noise(const vae_hierarchy *h, const vae_noise_settings *noise, int g) {
    vae_noise_settings settings = *noise;
    settings.column_offset = noise->column_offset + (uint32_t)h->model.groups[g].offset;
    settings.rows_hold_samples = is_top(h, g) ? 0 : (uint32_t)h->samples;
    return settings;
}

vae_status vae_hierarchy_forward(vae_hierarchy *h, const float *parameters, const float *d0,
                                 const vae_noise_settings *noise, const vae_step_counter *counter, int means,
                                 const vae_hierarchy_settings *settings, float *kl, const float **s0) {
    const vae_model *m = &h->model;
    vae_backend *backend = h->backend;
    int rows = h->rows, draws = h->rows * h->samples, top = m->group_count - 1;
    size_t width = (size_t)m->hierarchy_width;
    float clamp = settings->logvar_clamp;
    h->d0 = d0;
    /* bottom-up */
    const float *features = d0;
    for (int g = 1; g < m->group_count; ++g) {
        group_buffers *b = &h->groups[g];
        VAE_TRY(dense_forward(h, parameters, m->groups[g].bottom_up, features, rows, b->bottom_up_pre));
        VAE_TRY(activate(h, m->groups[g].bottom_up, b->bottom_up_pre, b->features, (size_t)rows * width));
        features = b->features;
    }
    /* the top group, against N(0, I) */
    group_buffers *t = &h->groups[top];
    int top_size = m->groups[top].size;
    VAE_TRY(dense_forward(h, parameters, m->groups[top].posterior, features, rows, t->posterior));
    vae_noise_settings top_noise = group_noise(h, noise, top);
    VAE_TRY(vae_backend_reparam_kl_forward(backend, t->posterior, t->z, h->kl_scratch, rows, top_size, h->samples,
                                           &top_noise, counter, means ? h->zeros : NULL, clamp));
    VAE_TRY(vae_backend_gaussian_kl(backend, t->posterior, h->zeros, t->kl, NULL, NULL, rows, top_size, 1.0f, 0,
                                    counter, clamp, 0.0f));
    VAE_TRY(vae_backend_copy(backend, kl, t->kl, sizeof(float) * (size_t)rows));
    VAE_TRY(dense_forward(h, parameters, m->groups[top].latent_in, t->z, draws, t->latent_in_pre));
    VAE_TRY(activate(h, m->groups[top].latent_in, t->latent_in_pre, t->latent_in_post, (size_t)draws * width));
    /* top-down */
    const float *state = t->state;
    for (int g = top - 1; g >= 0; --g) {
        const vae_latent_group *group = &m->groups[g];
        group_buffers *b = &h->groups[g];
        size_t block = (size_t)rows * width;
        VAE_TRY(dense_forward(h, parameters, group->prior, state, draws, b->prior));
        VAE_TRY(dense_forward(h, parameters, group->merge_bottom_up, group_features(h, g), rows,
                              b->merge_bottom_up));
        VAE_TRY(dense_forward(h, parameters, group->merge_top_down, state, draws, b->merge_pre));
        VAE_TRY(add_to_each_sample(h, b->merge_pre, b->merge_bottom_up, 1.0f, b->merge_pre, block, h->samples));
        VAE_TRY(activate(h, group->merge_top_down, b->merge_pre, b->merge_post, (size_t)draws * width));
        VAE_TRY(dense_forward(h, parameters, group->posterior, b->merge_post, draws, b->posterior));
        size_t parameter_floats = (size_t)draws * 2 * (size_t)group->size;
        if (m->residual_posterior)
            VAE_TRY(vae_backend_add_scaled(backend, b->posterior, b->prior, 1.0f, b->posterior, parameter_floats));
        vae_noise_settings lower_noise = group_noise(h, noise, g);
        VAE_TRY(vae_backend_reparam_kl_forward(backend, b->posterior, b->z, h->kl_scratch, draws, group->size, 1,
                                               &lower_noise, counter, means ? h->zeros : NULL, clamp));
        VAE_TRY(vae_backend_gaussian_kl(backend, b->posterior, b->prior, b->kl, NULL, NULL, draws, group->size, 1.0f,
                                        0, counter, clamp, 0.0f));
        for (int k = 0; k < h->samples; ++k)
            VAE_TRY(vae_backend_add_scaled(backend, kl, b->kl + (size_t)k * rows, 1.0f / (float)h->samples, kl,
                                           (size_t)rows));
        VAE_TRY(dense_forward(h, parameters, group->latent_in, b->z, draws, b->latent_in_pre));
        VAE_TRY(activate(h, group->latent_in, b->latent_in_pre, b->latent_in_post, (size_t)draws * width));
        VAE_TRY(vae_backend_add_scaled(backend, state, b->latent_in_post, 1.0f, b->state, (size_t)draws * width));
        state = b->state;
    }
    *s0 = state;
    return VAE_OK;
}

/* Backward through latent_in_g: d loss / d z_g into h->dz (overwritten). */
static vae_status latent_in_backward(vae_hierarchy *h, const float *parameters, float *gradients, int g,
                                     const float *state_gradient) {
    const vae_model *m = &h->model;
    const vae_latent_group *group = &m->groups[g];
    group_buffers *b = &h->groups[g];
    int draws = h->rows * h->samples;
    size_t width = (size_t)m->hierarchy_width;
    VAE_TRY(vae_backend_activation_backward(h->backend, layer_at(h, group->latent_in)->activation, b->latent_in_pre,
                                            state_gradient, h->scratch_draws, (size_t)draws * width));
    return dense_backward(h, parameters, gradients, group->latent_in, b->z, draws, h->scratch_draws, h->dz);
}

/* The reparameterisation alone (beta 0) from h->dz: d[mu | logvar] into
 * h->dq (overwritten), z's draws on `data_rows` x samples rows. */
static vae_status reparameterisation_backward(vae_hierarchy *h, int g, const float *posterior, int data_rows,
                                              int samples, const vae_hierarchy_settings *settings,
                                              const vae_step_counter *counter) {
    return vae_backend_reparam_kl_backward(h->backend, posterior, h->groups[g].z, h->dz, h->dq, data_rows,
                                           h->model.groups[g].size, samples, 0.0f, 0, counter,
                                           settings->logvar_clamp);
}

vae_status vae_hierarchy_backward(vae_hierarchy *h, const float *parameters, float *gradients, const float *ds0,
                                  const float *iwae_weight, const vae_step_counter *counter,
                                  const vae_hierarchy_settings *settings, float *dd0) {
    const vae_model *m = &h->model;
    vae_backend *backend = h->backend;
    if (!h->dz) return vae_error(VAE_ERROR_INTERNAL, "hierarchy: created without gradients");
    int rows = h->rows, draws = h->rows * h->samples, top = m->group_count - 1;
    size_t width = (size_t)m->hierarchy_width, state_floats = (size_t)draws * width;
    const float *current = ds0;
    int next_buffer = 0;
    for (int g = 0; g < top; ++g) {
        const vae_latent_group *group = &m->groups[g];
        group_buffers *b = &h->groups[g];
        const float *upper_state = h->groups[g + 1].state;
        size_t parameter_floats = (size_t)draws * 2 * (size_t)group->size;
        VAE_TRY(latent_in_backward(h, parameters, gradients, g, current));
        if (iwae_weight) {
            /* log p(z_g|z_>g) - log q(z_g|x,z_>g) in each draw's log weight: its
             * z partial joins dz before the reparameterisation; its q and p
             * partials are written to dq_direct and dp. */
            VAE_TRY(vae_backend_gaussian_log_ratio_backward(backend, b->z, b->posterior, b->prior, iwae_weight, h->dz,
                                                            h->dq_direct, h->dp, draws, group->size, settings->beta,
                                                            settings->kl_warmup_steps, counter, rows,
                                                            settings->logvar_clamp));
            VAE_TRY(reparameterisation_backward(h, g, b->posterior, draws, 1, settings, counter));
            VAE_TRY(vae_backend_add_scaled(backend, h->dq, h->dq_direct, 1.0f, h->dq, parameter_floats));
        } else {
            VAE_TRY(reparameterisation_backward(h, g, b->posterior, draws, 1, settings, counter));
            VAE_TRY(vae_backend_fill(backend, h->dp, 0.0f, parameter_floats));
            /* the closed-form KL's gradient (free bits) */
            VAE_TRY(vae_backend_gaussian_kl(backend, b->posterior, b->prior, h->kl_scratch, h->dq, h->dp, draws,
                                            group->size, settings->beta, settings->kl_warmup_steps, counter,
                                            settings->logvar_clamp, settings->free_bits));
        }
        /* q = p + the posterior layer's output: p gets q's gradient too */
        if (m->residual_posterior)
            VAE_TRY(vae_backend_add_scaled(backend, h->dp, h->dq, 1.0f, h->dp, parameter_floats));
        VAE_TRY(dense_backward(h, parameters, gradients, group->posterior, b->merge_post, draws, h->dq, h->dmerge));
        VAE_TRY(vae_backend_activation_backward(backend, layer_at(h, group->merge_top_down)->activation, b->merge_pre,
                                                h->dmerge, h->dmerge, state_floats));
        /* s_{g+1} feeds s_g (residual), the merge and the prior */
        float *upper_gradient = h->state_gradient[next_buffer];
        VAE_TRY(dense_backward(h, parameters, gradients, group->merge_top_down, upper_state, draws, h->dmerge,
                               h->scratch_draws));
        VAE_TRY(vae_backend_add_scaled(backend, current, h->scratch_draws, 1.0f, upper_gradient, state_floats));
        VAE_TRY(dense_backward(h, parameters, gradients, group->prior, upper_state, draws, h->dp, h->scratch_draws));
        VAE_TRY(vae_backend_add_scaled(backend, upper_gradient, h->scratch_draws, 1.0f, upper_gradient, state_floats));
        /* the bottom-up merge is the same for every sample of a row: its gradient is their sum */
        const float *merge_rows_gradient = h->dmerge;
        if (h->samples > 1) {
            size_t block = (size_t)rows * width;
            VAE_TRY(vae_backend_copy(backend, h->dmerge_rows, h->dmerge, sizeof(float) * block));
            for (int k = 1; k < h->samples; ++k)
                VAE_TRY(vae_backend_add_scaled(backend, h->dmerge_rows, h->dmerge + (size_t)k * block, 1.0f,
                                               h->dmerge_rows, block));
            merge_rows_gradient = h->dmerge_rows;
        }
        VAE_TRY(dense_backward(h, parameters, gradients, group->merge_bottom_up, group_features(h, g), rows,
                               merge_rows_gradient, b->feature_gradient));
        current = upper_gradient;
        next_buffer ^= 1;
    }
    /* the top group: s_top = act(latent_in(z_top)), KL against N(0, I) */
    const vae_latent_group *group = &m->groups[top];
    group_buffers *t = &h->groups[top];
    VAE_TRY(latent_in_backward(h, parameters, gradients, top, current));
    if (iwae_weight) {
        /* against N(0, I): the one latent's rule (the prior's z term through the
         * reparameterisation, log q's direct logvar term) */
        VAE_TRY(vae_backend_iwae_latent_backward(backend, t->posterior, t->z, h->dz, iwae_weight, h->dq, rows,
                                                 group->size, h->samples, settings->beta, settings->kl_warmup_steps,
                                                 counter, settings->logvar_clamp));
    } else {
        VAE_TRY(reparameterisation_backward(h, top, t->posterior, rows, h->samples, settings, counter));
        size_t top_parameter_floats = (size_t)rows * 2 * (size_t)group->size;
        VAE_TRY(vae_backend_fill(backend, h->dp, 0.0f, top_parameter_floats));
        VAE_TRY(vae_backend_gaussian_kl(backend, t->posterior, h->zeros, h->kl_scratch, h->dq, h->dp, rows,
                                        group->size, settings->beta, settings->kl_warmup_steps, counter,
                                        settings->logvar_clamp, settings->free_bits));
    }
    VAE_TRY(dense_backward(h, parameters, gradients, group->posterior, group_features(h, top), rows, h->dq,
                           t->feature_gradient));
    /* bottom-up: d_g = act(bottom_up_g(d_{g-1})) */
    for (int g = top; g >= 1; --g) {
        group_buffers *b = &h->groups[g];
        int index = m->groups[g].bottom_up;
        VAE_TRY(vae_backend_activation_backward(backend, layer_at(h, index)->activation, b->bottom_up_pre,
                                                b->feature_gradient, h->scratch_data, (size_t)rows * width));
        float *lower_gradient = h->groups[g - 1].feature_gradient;
        float *dx = h->dmerge_rows; /* free here: [rows, H] holds any d_{g-1} but d_0 */
        if (g == 1) dx = dd0;
        VAE_TRY(dense_backward(h, parameters, gradients, index, group_features(h, g - 1), rows, h->scratch_data, dx));
        VAE_TRY(vae_backend_add_scaled(backend, lower_gradient, dx, 1.0f, g == 1 ? dd0 : lower_gradient,
                                       (size_t)rows * (size_t)feature_width(h, g - 1)));
    }
    return VAE_OK;
}

/* sum over the lower groups of log p(z_g|z_>g) - log q(z_g|x,z_>g) per draw,
 * added to out (accumulate) or written over it. */
static vae_status lower_group_log_ratios(vae_hierarchy *h, float logvar_clamp, float *out, int accumulate) {
    int draws = h->rows * h->samples;
    for (int g = 0; g < h->model.group_count - 1; ++g) {
        const group_buffers *b = &h->groups[g];
        VAE_TRY(vae_backend_gaussian_log_ratio(h->backend, b->z, b->posterior, b->prior, out, draws,
                                               h->model.groups[g].size, logvar_clamp, accumulate || g > 0));
    }
    return VAE_OK;
}

vae_status vae_hierarchy_log_weights(vae_hierarchy *h, const float *logp, float logvar_clamp, float *log_weight) {
    VAE_TRY(vae_backend_copy(h->backend, log_weight, logp, sizeof(float) * (size_t)h->rows * (size_t)h->samples));
    return lower_group_log_ratios(h, logvar_clamp, log_weight, 1);
}

vae_status vae_hierarchy_log_ratios(vae_hierarchy *h, float logvar_clamp, float *log_ratio) {
    return lower_group_log_ratios(h, logvar_clamp, log_ratio, 0);
}

vae_status vae_hierarchy_generate(vae_hierarchy *h, const float *parameters, const float *eps, int count,
                                  const vae_step_counter *counter, float logvar_clamp, const float **s0) {
    const vae_model *m = &h->model;
    vae_backend *backend = h->backend;
    if (count <= 0 || count > h->rows * h->samples)
        return vae_error(VAE_ERROR_INTERNAL, "hierarchy: %d draws do not fit %d rows", count, h->rows * h->samples);
    int top = m->group_count - 1;
    size_t width = (size_t)m->hierarchy_width;
    group_buffers *t = &h->groups[top];
    const float *top_eps = eps + (size_t)count * (size_t)m->groups[top].offset;
    VAE_TRY(vae_backend_copy(backend, t->z, top_eps, sizeof(float) * (size_t)count * (size_t)m->groups[top].size));
    VAE_TRY(dense_forward(h, parameters, m->groups[top].latent_in, t->z, count, t->latent_in_pre));
    VAE_TRY(activate(h, m->groups[top].latent_in, t->latent_in_pre, t->latent_in_post, (size_t)count * width));
    const float *state = t->state;
    vae_noise_settings unused = {0};
    for (int g = top - 1; g >= 0; --g) {
        const vae_latent_group *group = &m->groups[g];
        group_buffers *b = &h->groups[g];
        VAE_TRY(dense_forward(h, parameters, group->prior, state, count, b->prior));
        /* z = mu_p + std_p * eps: the reparameterisation of the prior with the given noise */
        VAE_TRY(vae_backend_reparam_kl_forward(backend, b->prior, b->z, h->kl_scratch, count, group->size, 1, &unused,
                                               counter, eps + (size_t)count * (size_t)group->offset, logvar_clamp));
        VAE_TRY(dense_forward(h, parameters, group->latent_in, b->z, count, b->latent_in_pre));
        VAE_TRY(activate(h, group->latent_in, b->latent_in_pre, b->latent_in_post, (size_t)count * width));
        VAE_TRY(vae_backend_add_scaled(backend, state, b->latent_in_post, 1.0f, b->state, (size_t)count * width));
        state = b->state;
    }
    *s0 = state;
    return VAE_OK;
}

const float *vae_hierarchy_posterior(const vae_hierarchy *h, int group) { return h->groups[group].posterior; }
const float *vae_hierarchy_prior(const vae_hierarchy *h, int group) { return h->groups[group].prior; }
const float *vae_hierarchy_z(const vae_hierarchy *h, int group) { return h->groups[group].z; }
const float *vae_hierarchy_group_kl(const vae_hierarchy *h, int group) { return h->groups[group].kl; }
