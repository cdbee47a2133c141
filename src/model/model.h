/* The model's shape and its one flat parameter buffer with named views.
 *
 * Widths models (model.hidden / model.decoder_hidden, or layer lists of
 * dense layers only) keep PyTorch nn.Linear naming over two nn.ModuleList
 * (weight [out, in] row-major):
 *   encoder.0.weight, encoder.0.bias, ..., encoder.{E}.weight/bias
 *     where encoder.{E} is the head with 2*latent outputs: rows 0..Z-1 give
 *     mu, rows Z..2Z-1 give logvar;
 *   decoder.0.weight, decoder.0.bias, ..., decoder.{M}.weight/bias
 *     where decoder.{M} emits D logits (bernoulli), 2D values (gaussian:
 *     rows 0..D-1 the mean, D..2D-1 the log-variance) or D means
 *     (gaussian_fixed).
 *
 * Convolutional models (a layer list with a conv or convt layer, or a
 * `dense CxHxW`, on either side) name each side as one nn.Sequential that
 * maps flat rows to flat rows, and N in encoder.N / decoder.N is the module's
 * index in it, counting the parameter-free modules too:
 *   encoder: [nn.Unflatten(1, (C, H, W)) if the first layer is a conv], then
 *            per listed layer: [nn.Flatten() before a dense layer that follows
 *            a conv], the layer (nn.Linear, nn.Conv2d, nn.ConvTranspose2d),
 *            the activation (nn.ReLU, nn.Tanh, nn.Softplus, nn.GELU), and
 *            [nn.Unflatten(1, (C, H, W)) after a `dense CxHxW`]; then the
 *            head: [nn.Flatten() if the last layer was a conv], nn.Linear to
 *            2Z outputs [mu | logvar].
 *   decoder: per listed layer as the encoder (its input is z, flat); a list
 *            ending with a conv/convt layer (channels `out`) ends there, with
 *            no activation, followed by nn.Flatten(); a list ending with a
 *            dense layer gets the implicit nn.Linear to D (or 2D) values.
 * For example `encoder = conv 32 k4 s2 p1, dense 256` on 1x28x28 images names
 * encoder.1 (Conv2d, after Unflatten), encoder.4 (Linear, after ReLU and
 * Flatten) and encoder.6 (the head). nn.Conv2d weights are [out_c, in_c, k,
 * k], nn.ConvTranspose2d weights [in_c, out_c, k, k], biases [out_c]; all
 * tensors NCHW row-major, and a flat row is the NCHW flatten of one image
 * (PyTorch's order). A Gaussian decoder's output channels are C means then C
 * log-variances, which is flat [D means | D log-variances] as for dense. */
#ifndef VAE_MODEL_H
#define VAE_MODEL_H

#include <stddef.h>
#include "vae/vae.h"
#include "vae_conv_geometry.h"

#define VAE_MAX_SIDE_LAYERS (VAE_MAX_HIDDEN_LAYERS > VAE_MAX_LAYER_SPECS ? VAE_MAX_HIDDEN_LAYERS : VAE_MAX_LAYER_SPECS)
/* Encoder and decoder with their heads, then the hierarchy's layers (at
 * most 6 per latent group). */
#define VAE_MAX_LAYERS (2 * VAE_MAX_SIDE_LAYERS + 2 + 6 * VAE_MAX_LATENT_GROUPS)

typedef struct vae_layer {
    vae_layer_kind kind;
    int in, out;               /* values per row: a conv layer's C*H*W of its input and output */
    vae_conv_geometry geometry; /* conv and convt layers */
    int fan_in;                /* PyTorch's fan_in of the weight (initialisation bound 1/sqrt(fan_in)) */
    size_t weight_count, bias_count;
    int weight_rank;           /* 2 (dense) or 4 (conv, convt) */
    int weight_shape[4];       /* PyTorch's shape of the weight */
    size_t weight_offset;      /* floats from the start of the flat buffer */
    size_t bias_offset;
    int activation;            /* applied after this layer; VAE_ACTIVATION_IDENTITY for heads */
    char weight_name[48], bias_name[48];
} vae_layer;

/* Hierarchical latents (model.latent_groups, groups g = 0 .. G-1, g = 0
 * nearest the data, G-1 the top; Ladder/NVAE-style top-down inference).
 * d_0 is the encoder's output (its layers without a head), d_g =
 * act(bottom_up_g(d_{g-1})). The top group's posterior is
 * posterior_{G-1}(d_{G-1}) against N(0, I), and the top-down state starts
 * at s_{G-1} = act(latent_in_{G-1}(z_{G-1})). Each lower group g then has
 * the conditional prior p_g = prior_g(s_{g+1}), the posterior
 * q_g = posterior_g(act(merge_bottom_up_g(d_g) + merge_top_down_g(s_{g+1})))
 * (plus p_g with residual_posterior: NVAE's residual normal), both
 * [mu | logvar], and s_g = s_{g+1} + act(latent_in_g(z_g)) (a residual
 * top-down path). The decoder reads s_0. Every entry is a layer index in the
 * table, -1 where the group has no such layer. Names:
 * hierarchy.{g}.{posterior,latent_in,prior,merge_bottom_up,merge_top_down,
 * bottom_up}.{weight,bias}, each an nn.Linear. */
typedef struct vae_latent_group {
    int size;       /* Z_g */
    int offset;     /* of the group's dimensions in the concatenated latent [z_0 | z_1 | ...] */
    int posterior, latent_in, prior, merge_bottom_up, merge_top_down, bottom_up;
} vae_latent_group;

/* An image's shape (channels-first); all 0 when the data are not images. */
typedef struct vae_image_shape {
    int channels, height, width;
} vae_image_shape;

typedef struct vae_model {
    int input_dim;         /* D */
    int latent_dim;        /* Z */
    int output_width;      /* D or 2D */
    int likelihood;
    vae_image_shape image; /* the input's shape, 0s when unknown */
    int convolutional;     /* names follow nn.Sequential (see above) */
    int encoder_layer_count;   /* including the head */
    int decoder_layer_count;   /* including the output layer */
    int layer_count;           /* all of them: encoder, decoder, hierarchy */
    vae_layer layers[VAE_MAX_LAYERS]; /* encoder layers, decoder layers, then the hierarchy's */
    size_t parameter_count;
    /* Hierarchical models: group_count >= 2 (else 0), the encoder has no
     * head (its last layer gives d_0), the decoder reads s_0 [hierarchy_width]. */
    int group_count;
    int hierarchy_width;
    int residual_posterior;
    vae_latent_group groups[VAE_MAX_LATENT_GROUPS];
} vae_model;

static inline int vae_model_is_hierarchical(const vae_model *m) { return m->group_count > 0; }

/* Builds the layer table from the config's widths or layer lists for data of
 * input_dim values per row; image (may be NULL: unknown) gives their shape,
 * needed by conv layers. Every layer's shape is inferred here: a layer list
 * that does not fit the image (a kernel larger than its padded input, a
 * decoder that does not end at the image's shape, conv layers on data of
 * unknown shape, ...) is refused with a message naming the layer (side,
 * 1-based position, its text) and the shapes. */
vae_status vae_model_build(const vae_config *config, int input_dim, const vae_image_shape *image, vae_model *model);
static inline const vae_layer *vae_model_encoder_layer(const vae_model *m, int i) { return &m->layers[i]; }
static inline const vae_layer *vae_model_decoder_layer(const vae_model *m, int i) {
    return &m->layers[m->encoder_layer_count + i];
}
/* Floats of activations and conv workspace one decoder row needs (for sizing
 * evaluation batches). */
size_t vae_model_decoder_floats_per_row(const vae_model *model);
/* PyTorch's default initialisation of nn.Linear, nn.Conv2d and
 * nn.ConvTranspose2d (uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight
 * and bias), drawn from Philox with the seed; init_scale > 0 instead draws
 * weights from N(0, init_scale^2) and zero biases. */
void vae_model_init_parameters(const vae_model *model, uint64_t seed, float init_scale, float *host_parameters);

#endif
