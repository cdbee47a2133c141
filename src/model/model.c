/* The layer table over the one flat parameter buffer, and initialisation. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "vae_math.h"
#include "vae_philox.h"

static vae_status add_layer(vae_model *model, int index, const char *part, int part_index, int in, int out,
                            int activation) {
    if (index >= VAE_MAX_LAYERS) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: too many layers");
    if (in <= 0 || out <= 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: %s.%d has a zero width (%d -> %d)", part, part_index,
                         in, out);
    vae_layer *layer = &model->layers[index];
    layer->in = in;
    layer->out = out;
    layer->activation = activation;
    layer->weight_offset = model->parameter_count;
    model->parameter_count += (size_t)in * (size_t)out;
    layer->bias_offset = model->parameter_count;
    model->parameter_count += (size_t)out;
    snprintf(layer->weight_name, sizeof layer->weight_name, "%s.%d.weight", part, part_index);
    snprintf(layer->bias_name, sizeof layer->bias_name, "%s.%d.bias", part, part_index);
    return VAE_OK;
}

vae_status vae_model_build(const vae_config *config, int input_dim, vae_model *model) {
    memset(model, 0, sizeof *model);
    /* Layer lists (model.encoder, model.decoder) are read by the config but
     * not built here yet (issue 9's model work replaces this): refuse them
     * rather than train a model without their layers. */
    if (config->encoder_layer_count > 0 || config->decoder_layer_count > 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "model: [model] %s: layer lists are not built by this version yet; use hidden and "
                         "decoder_hidden (widths)",
                         config->encoder_layer_count > 0 ? "encoder" : "decoder");
    if (input_dim <= 0) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: input dimension must be positive");
    model->input_dim = input_dim;
    model->latent_dim = config->latent_dim;
    model->likelihood = config->likelihood;
    model->output_width = config->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * input_dim : input_dim;
    int index = 0, width = input_dim;
    for (int i = 0; i < config->hidden_count; ++i) {
        VAE_TRY(add_layer(model, index++, "encoder", i, width, config->hidden[i], config->activation));
        width = config->hidden[i];
    }
    VAE_TRY(add_layer(model, index++, "encoder", config->hidden_count, width, 2 * config->latent_dim,
                      VAE_ACTIVATION_IDENTITY));
    model->encoder_layer_count = index;
    width = config->latent_dim;
    for (int i = 0; i < config->decoder_hidden_count; ++i) {
        VAE_TRY(add_layer(model, index++, "decoder", i, width, config->decoder_hidden[i], config->activation));
        width = config->decoder_hidden[i];
    }
    VAE_TRY(add_layer(model, index++, "decoder", config->decoder_hidden_count, width, model->output_width,
                      VAE_ACTIVATION_IDENTITY));
    model->decoder_layer_count = index - model->encoder_layer_count;
    return VAE_OK;
}

/* Initialisation draws from Philox under its own purpose so it never shares
 * numbers with training noise. */
void vae_model_init_parameters(const vae_model *model, uint64_t seed, float init_scale, float *host_parameters) {
    int layer_count = model->encoder_layer_count + model->decoder_layer_count;
    for (int i = 0; i < layer_count; ++i) {
        const vae_layer *layer = &model->layers[i];
        float bound = 1.0f / sqrtf((float)layer->in);
        size_t weights = (size_t)layer->in * (size_t)layer->out;
        uint64_t subsequence = vae_philox_subsequence(0, VAE_RANDOM_INIT, (uint32_t)i);
        for (size_t k = 0; k < weights; k += 4) {
            float draw[4];
            if (init_scale > 0.0f) vae_normal4(seed, subsequence, k, draw);
            else vae_uniform4(seed, subsequence, k, draw);
            for (size_t q = 0; q < 4 && k + q < weights; ++q)
                host_parameters[layer->weight_offset + k + q] =
                    init_scale > 0.0f ? init_scale * draw[q] : bound * (2.0f * draw[q] - 1.0f);
        }
        uint64_t bias_subsequence = vae_philox_subsequence(1, VAE_RANDOM_INIT, (uint32_t)i);
        for (int k = 0; k < layer->out; k += 4) {
            float draw[4];
            vae_uniform4(seed, bias_subsequence, (uint64_t)k, draw);
            for (int q = 0; q < 4 && k + q < layer->out; ++q)
                host_parameters[layer->bias_offset + k + q] = init_scale > 0.0f ? 0.0f : bound * (2.0f * draw[q] - 1.0f);
        }
    }
}
