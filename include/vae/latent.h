/* vae-engine public C API, latent space: encoding a split into latent
 * means, reconstructions, interpolations and the decoded latent plane.
 *
 * Inputs are what the encoder sees at evaluation: the split's values scaled
 * to [0,1]; with data.binarize = static the threshold is applied; with
 * dynamic the grey levels themselves are encoded, because the grey level is
 * the mean of the Bernoulli draw the model was trained on (the expected
 * input), and a single random draw would make the latents noisy. */
#ifndef VAE_LATENT_H
#define VAE_LATENT_H

#include "vae/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Examples in a split ("train", "validation" or "test"). */
vae_status vae_trainer_split_size(vae_trainer *trainer, const char *split, long *count);
/* *has_labels = 1 when the split's examples have class labels. */
vae_status vae_trainer_split_has_labels(vae_trainer *trainer, const char *split, int *has_labels);
/* The encoder's inputs for examples [first, first+count) (see above),
 * [count, D] host floats. */
vae_status vae_trainer_inputs(vae_trainer *trainer, const char *split, long first, long count, float *inputs);
/* Latent means mu [count, latent_dim] of examples [first, first+count), and
 * when not NULL their log-variances [count, latent_dim] (clamped as in
 * training when model.logvar_clamp is set) and labels [count] (an error if
 * the split has none). Runs in batches of train.eval_batch_size. */
vae_status vae_trainer_encode(vae_trainer *trainer, const char *split, long first, long count, float *mu,
                              float *logvar, int32_t *labels);
/* inputs and reconstructions [count, D] (either may be NULL): the
 * reconstruction is the decoded latent mean, decode(mu(x)), as a picture in
 * [0,1]. */
vae_status vae_trainer_reconstruct(vae_trainer *trainer, const char *split, long first, int count, float *inputs,
                                   float *reconstructions);
/* For pair p (examples first+2p and first+2p+1), images[p] is one row of
 * steps + 2 pictures [pairs, steps+2, D]: the first input, the decoded
 * linear path mu_a + t (mu_b - mu_a), t = 0, 1/(steps-1), ..., 1 (endpoints
 * included, steps >= 2), and the second input. */
vae_status vae_trainer_interpolate(vae_trainer *trainer, const char *split, long first, int pairs, int steps,
                                   float *images);
/* For a model with latent_dim 2: images [n*n, D] decoded over the latent
 * plane at the standard normal quantiles of probabilities evenly spaced from
 * 0.05 to 0.95 (Kingma & Welling's figure); grid row r, column c decodes
 * z = (q[c], q[n-1-r]), so the second latent dimension grows upwards.
 * latent_dim != 2 is VAE_ERROR_INVALID_ARGUMENT. */
vae_status vae_trainer_manifold(vae_trainer *trainer, int n, float *images);

#ifdef __cplusplus
}
#endif
#endif
