/* The layer table over the one flat parameter buffer: shape inference from
 * the config's layer lists, PyTorch names, and initialisation. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "vae_math.h"
#include "vae_philox.h"

/* A layer's text as the config writes it, for messages. */
static void spec_text(const vae_layer_spec *spec, char *text, size_t size) {
    char outputs[16];
    if (spec->outputs > 0) snprintf(outputs, sizeof outputs, "%d", spec->outputs);
    else snprintf(outputs, sizeof outputs, "out");
    if (spec->kind == VAE_LAYER_DENSE) {
        if (spec->unflatten_channels > 0)
            snprintf(text, size, "dense %dx%dx%d", spec->unflatten_channels, spec->unflatten_height,
                     spec->unflatten_width);
        else snprintf(text, size, "dense %s", outputs);
    } else {
        snprintf(text, size, "%s %s k%d s%d p%d", spec->kind == VAE_LAYER_CONV ? "conv" : "convt", outputs,
                 spec->kernel_size, spec->stride, spec->padding);
    }
}

/* What flows between layers: a flat row of `width` values, or (spatial) an
 * image of channels x height x width values in NCHW order. */
typedef struct flow_shape {
    int spatial;
    int channels, height, width;
    int values;
} flow_shape;

typedef struct build_state {
    vae_model *model;
    const vae_config *config;
    int index;        /* next row of the layer table */
    int module;       /* next module index of the side's nn.Sequential (convolutional models) */
    const char *side; /* "encoder" or "decoder" */
    int side_layers;  /* layers of this side so far (ModuleList names) */
} build_state;

static vae_status add_layer(build_state *state, vae_layer_kind kind, int in, int out, const vae_conv_geometry *geometry,
                            int activation) {
    vae_model *model = state->model;
    if (state->index >= VAE_MAX_LAYERS) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: too many layers");
    int name_index = model->convolutional ? state->module : state->side_layers;
    if (in <= 0 || out <= 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: %s.%d has a zero width (%d -> %d)", state->side,
                         name_index, in, out);
    vae_layer *layer = &model->layers[state->index++];
    memset(layer, 0, sizeof *layer);
    layer->kind = kind;
    layer->in = in;
    layer->out = out;
    layer->activation = activation;
    if (kind == VAE_LAYER_DENSE) {
        layer->fan_in = in;
        layer->weight_rank = 2;
        layer->weight_shape[0] = out;
        layer->weight_shape[1] = in;
        layer->weight_count = (size_t)in * (size_t)out;
        layer->bias_count = (size_t)out;
    } else {
        const vae_conv_geometry *g = geometry;
        int k = g->kernel_size;
        layer->geometry = *g;
        layer->weight_rank = 4;
        /* nn.Conv2d [out, in, k, k]; nn.ConvTranspose2d [in, out, k, k], whose
         * fan_in PyTorch takes from weight.size(1) */
        layer->weight_shape[0] = kind == VAE_LAYER_CONV ? g->out_channels : g->in_channels;
        layer->weight_shape[1] = kind == VAE_LAYER_CONV ? g->in_channels : g->out_channels;
        layer->weight_shape[2] = k;
        layer->weight_shape[3] = k;
        layer->fan_in = layer->weight_shape[1] * k * k;
        layer->weight_count = (size_t)g->in_channels * (size_t)g->out_channels * (size_t)k * (size_t)k;
        layer->bias_count = (size_t)g->out_channels;
    }
    layer->weight_offset = model->parameter_count;
    model->parameter_count += layer->weight_count;
    layer->bias_offset = model->parameter_count;
    model->parameter_count += layer->bias_count;
    snprintf(layer->weight_name, sizeof layer->weight_name, "%s.%d.weight", state->side, name_index);
    snprintf(layer->bias_name, sizeof layer->bias_name, "%s.%d.bias", state->side, name_index);
    state->side_layers += 1;
    state->module += 1;
    return VAE_OK;
}

static void shape_text(const flow_shape *shape, char *text, size_t size) {
    if (shape->spatial) snprintf(text, size, "%dx%dx%d", shape->channels, shape->height, shape->width);
    else snprintf(text, size, "%d flat values", shape->values);
}

/* Runs one side's layer list from shape, adding its layers (without the
 * encoder's head or the decoder's implicit output layer). *ended_with_conv:
 * the list ended with a conv/convt layer (the decoder's output layer). */
static vae_status build_side(build_state *state, const vae_layer_spec *specs, int count, flow_shape *shape,
                             const vae_image_shape *image, int *ended_with_conv) {
    const vae_config *config = state->config;
    int decoder = strcmp(state->side, "decoder") == 0;
    *ended_with_conv = 0;
    for (int i = 0; i < count; ++i) {
        const vae_layer_spec *spec = &specs[i];
        int last = i == count - 1;
        char text[64], have[48];
        spec_text(spec, text, sizeof text);
        shape_text(shape, have, sizeof have);
        if (spec->kind == VAE_LAYER_DENSE) {
            if (spec->outputs <= 0 && spec->unflatten_channels <= 0)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: %s layer %d '%s': a dense layer needs a width ('out' is for the decoder's "
                                 "last conv/convt layer)", state->side, i + 1, text);
            if (shape->spatial) state->module += 1; /* nn.Flatten */
            int out = spec->unflatten_channels > 0
                          ? spec->unflatten_channels * spec->unflatten_height * spec->unflatten_width
                          : spec->outputs;
            VAE_TRY(add_layer(state, VAE_LAYER_DENSE, shape->values, out, NULL, config->activation));
            state->module += 1; /* the activation */
            *shape = (flow_shape){0, 0, 0, 0, out};
            if (spec->unflatten_channels > 0) {
                if (last || specs[i + 1].kind == VAE_LAYER_DENSE) {
                    char next[96];
                    if (last) snprintf(next, sizeof next, "the implicit dense %s", decoder ? "output layer" : "head");
                    else {
                        char next_text[64];
                        spec_text(&specs[i + 1], next_text, sizeof next_text);
                        snprintf(next, sizeof next, "layer %d '%s'", i + 2, next_text);
                    }
                    return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                     "model: %s layer %d '%s' views its output as %dx%dx%d images, so a conv or convt "
                                     "layer must follow it, not %s", state->side, i + 1, text, spec->unflatten_channels,
                                     spec->unflatten_height, spec->unflatten_width, next);
                }
                state->module += 1; /* nn.Unflatten */
                *shape = (flow_shape){1, spec->unflatten_channels, spec->unflatten_height, spec->unflatten_width, out};
            }
            continue;
        }
        /* conv, convt */
        if (!shape->spatial) {
            if (!decoder && i == 0) {
                if (image == NULL || image->channels <= 0)
                    return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                     "model: encoder layer 1 '%s' needs images of a known shape, but the data at '%s' "
                                     "have %d values per example and no image shape (IDX images, or .npy arrays of "
                                     "shape (N, H, W) or (N, C, H, W))", text, config->data_path, shape->values);
                state->module += 1; /* nn.Unflatten */
                *shape = (flow_shape){1, image->channels, image->height, image->width, shape->values};
            } else {
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: %s layer %d '%s' needs an image input but gets %s; put a 'dense CxHxW' layer "
                                 "before it", state->side, i + 1, text, have);
            }
            shape_text(shape, have, sizeof have);
        }
        if (spec->kernel_size <= 0 || spec->stride <= 0 || spec->padding < 0)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: %s layer %d '%s': kernel and stride must be positive, "
                             "padding not negative", state->side, i + 1, text);
        int out_channels = spec->outputs;
        if (out_channels <= 0) {
            if (!decoder || !last)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: %s layer %d '%s': 'out' channels only for the decoder's last layer",
                                 state->side, i + 1, text);
            if (image == NULL || image->channels <= 0)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: decoder layer %d '%s' outputs images, but the data at '%s' have no image "
                                 "shape (IDX images, or .npy arrays of shape (N, H, W) or (N, C, H, W))",
                                 i + 1, text, config->data_path);
            out_channels = config->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * image->channels : image->channels;
        }
        vae_conv_geometry geometry = {
            .in_channels = shape->channels, .in_height = shape->height, .in_width = shape->width,
            .out_channels = out_channels, .kernel_size = spec->kernel_size, .stride = spec->stride,
            .padding = spec->padding};
        if (spec->kind == VAE_LAYER_CONV) {
            if (spec->kernel_size > shape->height + 2 * spec->padding ||
                spec->kernel_size > shape->width + 2 * spec->padding)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: %s layer %d '%s': kernel %dx%d is larger than its input %s padded by %d "
                                 "(%dx%d)", state->side, i + 1, text, spec->kernel_size, spec->kernel_size, have,
                                 spec->padding, shape->height + 2 * spec->padding, shape->width + 2 * spec->padding);
            geometry.out_height = vae_conv_output_size(shape->height, spec->kernel_size, spec->stride, spec->padding);
            geometry.out_width = vae_conv_output_size(shape->width, spec->kernel_size, spec->stride, spec->padding);
        } else {
            geometry.out_height =
                vae_conv_transpose_output_size(shape->height, spec->kernel_size, spec->stride, spec->padding);
            geometry.out_width =
                vae_conv_transpose_output_size(shape->width, spec->kernel_size, spec->stride, spec->padding);
        }
        if (geometry.out_height <= 0 || geometry.out_width <= 0)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "model: %s layer %d '%s' on input %s gives an empty %dx%d output", state->side, i + 1,
                             text, have, geometry.out_height, geometry.out_width);
        int out = out_channels * geometry.out_height * geometry.out_width;
        int output_layer = decoder && last;
        VAE_TRY(add_layer(state, spec->kind, shape->values, out, &geometry,
                          output_layer ? VAE_ACTIVATION_IDENTITY : config->activation));
        if (!output_layer) state->module += 1; /* the activation */
        *shape = (flow_shape){1, out_channels, geometry.out_height, geometry.out_width, out};
        if (output_layer) {
            *ended_with_conv = 1;
            if (image == NULL)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: decoder layer %d '%s' outputs images, but the data at '%s' have no image "
                                 "shape (IDX images, or .npy arrays of shape (N, H, W) or (N, C, H, W))",
                                 i + 1, text, config->data_path);
            int expected_channels = config->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * image->channels
                                                                                  : image->channels;
            if (out_channels != expected_channels || geometry.out_height != image->height ||
                geometry.out_width != image->width)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                                 "model: decoder layer %d '%s' ends the decoder at %dx%dx%d, but the images are "
                                 "%dx%dx%d and likelihood %s needs %dx%dx%d", i + 1, text, out_channels,
                                 geometry.out_height, geometry.out_width, image->channels, image->height, image->width,
                                 config->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? "gaussian (means and log-variances)"
                                                                               : "of one value per pixel",
                                 expected_channels, image->height, image->width);
        }
    }
    return VAE_OK;
}

/* One dense layer of the hierarchy, named hierarchy.{group}.{role}; returns its index. */
static vae_status add_hierarchy_layer(build_state *state, int group, const char *role, int in, int out,
                                      int activation, int *index) {
    *index = state->index;
    VAE_TRY(add_layer(state, VAE_LAYER_DENSE, in, out, NULL, activation));
    vae_layer *layer = &state->model->layers[*index];
    snprintf(layer->weight_name, sizeof layer->weight_name, "hierarchy.%d.%s.weight", group, role);
    snprintf(layer->bias_name, sizeof layer->bias_name, "hierarchy.%d.%s.bias", group, role);
    return VAE_OK;
}

/* The hierarchy's layers (model.h: vae_latent_group), group by group from
 * the data side up. */
static vae_status build_hierarchy(build_state *state, const vae_config *config, int bottom_up_width) {
    vae_model *model = state->model;
    int count = config->latent_group_count, width = config->hierarchy_width, act = config->activation;
    model->group_count = count;
    model->hierarchy_width = width;
    model->residual_posterior = config->residual_posterior;
    int offset = 0, feature_width = bottom_up_width;
    for (int g = 0; g < count; ++g) {
        vae_latent_group *group = &model->groups[g];
        int size = config->latent_groups[g];
        *group = (vae_latent_group){.size = size, .offset = offset, .posterior = -1, .latent_in = -1, .prior = -1,
                                    .merge_bottom_up = -1, .merge_top_down = -1, .bottom_up = -1};
        offset += size;
        int top = g == count - 1;
        if (g > 0) {
            VAE_TRY(add_hierarchy_layer(state, g, "bottom_up", feature_width, width, act, &group->bottom_up));
            feature_width = width;
        }
        if (top) {
            VAE_TRY(add_hierarchy_layer(state, g, "posterior", feature_width, 2 * size, VAE_ACTIVATION_IDENTITY,
                                        &group->posterior));
        } else {
            VAE_TRY(add_hierarchy_layer(state, g, "prior", width, 2 * size, VAE_ACTIVATION_IDENTITY, &group->prior));
            VAE_TRY(add_hierarchy_layer(state, g, "merge_bottom_up", feature_width, width, VAE_ACTIVATION_IDENTITY,
                                        &group->merge_bottom_up));
            /* the activation of the merge's sum */
            VAE_TRY(add_hierarchy_layer(state, g, "merge_top_down", width, width, act, &group->merge_top_down));
            VAE_TRY(add_hierarchy_layer(state, g, "posterior", width, 2 * size, VAE_ACTIVATION_IDENTITY,
                                        &group->posterior));
        }
        VAE_TRY(add_hierarchy_layer(state, g, "latent_in", size, width, act, &group->latent_in));
    }
    return VAE_OK;
}

/* A widths list (model.hidden) as dense layer specs. */
static int widths_as_specs(const int *widths, int count, vae_layer_spec *specs) {
    for (int i = 0; i < count; ++i) specs[i] = (vae_layer_spec){.kind = VAE_LAYER_DENSE, .outputs = widths[i]};
    return count;
}

static int specs_need_images(const vae_layer_spec *specs, int count) {
    for (int i = 0; i < count; ++i)
        if (specs[i].kind != VAE_LAYER_DENSE || specs[i].unflatten_channels > 0) return 1;
    return 0;
}

vae_status vae_model_build(const vae_config *config, int input_dim, const vae_image_shape *image, vae_model *model) {
    memset(model, 0, sizeof *model);
    if (input_dim <= 0) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: input dimension must be positive");
    if (image && image->channels > 0) {
        if (image->height <= 0 || image->width <= 0 ||
            (long long)image->channels * image->height * image->width != input_dim)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "model: image shape %dx%dx%d does not hold %d values",
                             image->channels, image->height, image->width, input_dim);
        model->image = *image;
    } else {
        image = NULL;
    }
    model->input_dim = input_dim;
    model->latent_dim = config->latent_dim;
    model->likelihood = config->likelihood;
    model->output_width = config->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * input_dim : input_dim;

    vae_layer_spec encoder_specs[VAE_MAX_LAYER_SPECS > VAE_MAX_HIDDEN_LAYERS ? VAE_MAX_LAYER_SPECS
                                                                             : VAE_MAX_HIDDEN_LAYERS];
    vae_layer_spec decoder_specs[sizeof encoder_specs / sizeof encoder_specs[0]];
    int encoder_count, decoder_count;
    if (config->encoder_layer_count > 0) {
        encoder_count = config->encoder_layer_count;
        memcpy(encoder_specs, config->encoder_layers, sizeof(vae_layer_spec) * (size_t)encoder_count);
    } else {
        encoder_count = widths_as_specs(config->hidden, config->hidden_count, encoder_specs);
    }
    if (config->decoder_layer_count > 0) {
        decoder_count = config->decoder_layer_count;
        memcpy(decoder_specs, config->decoder_layers, sizeof(vae_layer_spec) * (size_t)decoder_count);
    } else {
        decoder_count = widths_as_specs(config->decoder_hidden, config->decoder_hidden_count, decoder_specs);
    }
    model->convolutional = specs_need_images(encoder_specs, encoder_count) ||
                           specs_need_images(decoder_specs, decoder_count);

    int hierarchical = config->latent_group_count >= 2;
    if (hierarchical && encoder_count == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "model: latent_groups needs at least one encoder layer (model.hidden or model.encoder): its "
                         "output is the hierarchy's bottom-up input");
    build_state state = {.model = model, .config = config, .side = "encoder"};
    flow_shape shape = {0, 0, 0, 0, input_dim};
    int ended_with_conv = 0;
    VAE_TRY(build_side(&state, encoder_specs, encoder_count, &shape, image, &ended_with_conv));
    int bottom_up_width = shape.values;
    if (!hierarchical) {
        if (shape.spatial) state.module += 1; /* nn.Flatten before the head */
        VAE_TRY(add_layer(&state, VAE_LAYER_DENSE, shape.values, 2 * config->latent_dim, NULL,
                          VAE_ACTIVATION_IDENTITY));
    }
    model->encoder_layer_count = state.index;

    state.side = "decoder";
    state.module = 0;
    state.side_layers = 0;
    shape = (flow_shape){0, 0, 0, 0, hierarchical ? config->hierarchy_width : config->latent_dim};
    VAE_TRY(build_side(&state, decoder_specs, decoder_count, &shape, image, &ended_with_conv));
    if (!ended_with_conv)
        VAE_TRY(add_layer(&state, VAE_LAYER_DENSE, shape.values, model->output_width, NULL, VAE_ACTIVATION_IDENTITY));
    model->decoder_layer_count = state.index - model->encoder_layer_count;
    if (hierarchical) VAE_TRY(build_hierarchy(&state, config, bottom_up_width));
    model->layer_count = state.index;
    return VAE_OK;
}

size_t vae_model_decoder_floats_per_row(const vae_model *model) {
    size_t floats = (size_t)model->latent_dim + (size_t)model->output_width, workspace = 0;
    for (int i = 0; i < model->decoder_layer_count; ++i) {
        const vae_layer *layer = vae_model_decoder_layer(model, i);
        floats += 2 * (size_t)layer->out;
        /* A step holds one conv workspace, the largest its layers need; it
         * grows with the batch in proportion, like the activations. */
        if (layer->kind != VAE_LAYER_DENSE) {
            size_t needed = vae_conv_workspace_floats(&layer->geometry, 1);
            if (needed > workspace) workspace = needed;
        }
    }
    return floats + workspace;
}

/* Initialisation draws from Philox under its own purpose so it never shares
 * numbers with training noise. */
void vae_model_init_parameters(const vae_model *model, uint64_t seed, float init_scale, float *host_parameters) {
    for (int i = 0; i < model->layer_count; ++i) {
        const vae_layer *layer = &model->layers[i];
        float bound = 1.0f / sqrtf((float)layer->fan_in);
        size_t weights = layer->weight_count;
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
        for (size_t k = 0; k < layer->bias_count; k += 4) {
            float draw[4];
            vae_uniform4(seed, bias_subsequence, (uint64_t)k, draw);
            for (size_t q = 0; q < 4 && k + q < layer->bias_count; ++q)
                host_parameters[layer->bias_offset + k + q] = init_scale > 0.0f ? 0.0f : bound * (2.0f * draw[q] - 1.0f);
        }
    }
}
