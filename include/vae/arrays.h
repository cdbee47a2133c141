/* A trained model on arrays the caller holds, rather than on the splits of
 * its config's data: what a language binding (the Python package, python/vae)
 * needs. Inputs are row-major float32 [count, input_dim] with every value
 * finite and in [0,1], as the training data were scaled; the model treats
 * them as it treats a split's rows (static binarisation thresholds them,
 * dynamic draws them with the evaluation's seed). None of these functions
 * loads the config's data. */
#ifndef VAE_ARRAYS_H
#define VAE_ARRAYS_H

#include "vae/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* sizeof(vae_config): a binding that does not declare the struct's fields
 * (python/vae) holds a config as that many bytes of memory. */
size_t vae_config_size(void);

/* D, the values per input row (and per decoded image). */
int vae_trainer_input_dim(const vae_trainer *trainer);
/* Z, the latent dimensions. */
int vae_trainer_latent_dim(const vae_trainer *trainer);

/* The encoder's posterior for count rows: mu and logvar [count, latent_dim]
 * (logvar may be NULL; clamped as training clamps it, train.logvar_clamp).
 * The same values vae_trainer_encode gives for a split's rows, bit for bit,
 * when inputs are those rows (vae_trainer_inputs). */
vae_status vae_trainer_encode_inputs(vae_trainer *trainer, const float *inputs, long count, float *mu,
                                     float *logvar);

/* Per-row bounds on log p(x) in nats, as vae_trainer_evaluate computes them
 * for a split: elbo[count] (may be NULL) the ELBO, E_q[log p(x|z)] - KL, with
 * max(iwae_k, 1) reparameterised samples; with iwae_k > 0, iwae[count] (may
 * be NULL) the importance-weighted estimate over iwae_k samples. Rows are
 * batched and their noise drawn as vae_trainer_evaluate does, so for a
 * split's rows in order the mean of these is that split's result. Runs in
 * this process alone (no data-parallel sharding). */
vae_status vae_trainer_evaluate_inputs(vae_trainer *trainer, const float *inputs, long count, int iwae_k,
                                       double *elbo, double *iwae);

#ifdef __cplusplus
}
#endif
#endif
