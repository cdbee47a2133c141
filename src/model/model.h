/* The model's shape and its one flat parameter buffer with named views.
 *
 * Parameter order (PyTorch nn.Linear naming, weight [out, in] row-major):
 *   encoder.0.weight, encoder.0.bias, ..., encoder.{E}.weight/bias
 *     where encoder.{E} is the head with 2*latent outputs: rows 0..Z-1 give
 *     mu, rows Z..2Z-1 give logvar;
 *   decoder.0.weight, decoder.0.bias, ..., decoder.{M}.weight/bias
 *     where decoder.{M} emits D logits (bernoulli), 2D values (gaussian:
 *     rows 0..D-1 the mean, D..2D-1 the log-variance) or D means
 *     (gaussian_fixed).
 * An equivalent torch module holds nn.ModuleList attributes named encoder and
 * decoder, so a checkpoint's tensors load into it unchanged. */
#ifndef VAE_MODEL_H
#define VAE_MODEL_H

#include <stddef.h>
#include "vae/vae.h"

#define VAE_MAX_LAYERS (2 * VAE_MAX_HIDDEN_LAYERS + 2)

typedef struct vae_layer {
    int in, out;
    size_t weight_offset;  /* floats from the start of the flat buffer */
    size_t bias_offset;
    int activation;        /* applied after this layer; VAE_ACTIVATION_IDENTITY for heads */
    char weight_name[48], bias_name[48];
} vae_layer;

typedef struct vae_model {
    int input_dim;         /* D */
    int latent_dim;        /* Z */
    int output_width;      /* D or 2D */
    int likelihood;
    int encoder_layer_count;   /* including the head */
    int decoder_layer_count;   /* including the output layer */
    vae_layer layers[VAE_MAX_LAYERS]; /* encoder layers, then decoder layers */
    size_t parameter_count;
} vae_model;

vae_status vae_model_build(const vae_config *config, int input_dim, vae_model *model);
static inline const vae_layer *vae_model_encoder_layer(const vae_model *m, int i) { return &m->layers[i]; }
static inline const vae_layer *vae_model_decoder_layer(const vae_model *m, int i) {
    return &m->layers[m->encoder_layer_count + i];
}
/* PyTorch's nn.Linear default initialisation (uniform(-1/sqrt(in), 1/sqrt(in))
 * for weight and bias), drawn from Philox with the seed; init_scale > 0
 * instead draws weights from N(0, init_scale^2) and zero biases. */
void vae_model_init_parameters(const vae_model *model, uint64_t seed, float init_scale, float *host_parameters);

#endif
