/* The hierarchical latents' part of a step (model.h: vae_latent_group):
 * from the encoder's output d_0 through the bottom-up layers, the top-down
 * groups (conditional priors, posteriors, reparameterisation, KL) to the
 * decoder's input s_0, and back. Written once against the backend table
 * (dense layers, activations, reparam_kl, gaussian_kl, add_scaled,
 * gaussian_log_ratio), so both backends run it. All buffers are allocated
 * at creation. */
#ifndef VAE_HIERARCHY_STEP_H
#define VAE_HIERARCHY_STEP_H

#include "backends/backend.h"
#include "model/model.h"

typedef struct vae_hierarchy vae_hierarchy;

typedef struct vae_hierarchy_settings {
    float beta;                /* the KL weight (training), with its warm-up */
    uint64_t kl_warmup_steps;
    float logvar_clamp;
    float free_bits;           /* nats per group and row; 0 = off */
} vae_hierarchy_settings;

/* rows data rows, samples draws per row (the top-down path runs on
 * samples*rows rows, sample-major as the decoder's). with_gradients: also
 * the backward pass's buffers. */
vae_status vae_hierarchy_create(vae_hierarchy **out, vae_backend *backend, const vae_model *model, int rows,
                                int samples, int with_gradients);
void vae_hierarchy_destroy(vae_hierarchy *hierarchy);

/* d0 [rows, width of the encoder's output] -> *s0 [samples*rows,
 * hierarchy_width] (the hierarchy's buffer), kl[rows] = the top group's KL
 * from N(0, I) plus, averaged over the samples, each lower group's KL from
 * its conditional prior. Noise: the settings' purpose, each group at its
 * own Philox columns (its offset in the concatenated latent). means: every
 * z at its posterior mean (no noise; reconstructions). */
vae_status vae_hierarchy_forward(vae_hierarchy *hierarchy, const float *parameters, const float *d0,
                                 const vae_noise_settings *noise, const vae_step_counter *counter, int means,
                                 const vae_hierarchy_settings *settings, float *kl, const float **s0);
/* From ds0 = d loss / d s0 [samples*rows, hierarchy_width]: the hierarchy's
 * parameter gradients (overwritten) and dd0 = d loss / d d0 [rows, width].
 * iwae_weight NULL (the ELBO): with the KL terms (beta_t / rows per row's
 * KL, free bits applied). iwae_weight [samples*rows], the normalised
 * importance weights of iwae_objective (model.objective = iwae): with each
 * draw's beta_t [log p(z_g|z_>g) - log q(z_g|x,z_>g)] of every group
 * instead, weighted by -w_k / rows (gaussian_log_ratio_backward for the
 * lower groups, iwae_latent_backward for the top; no free bits). */
vae_status vae_hierarchy_backward(vae_hierarchy *hierarchy, const float *parameters, float *gradients,
                                  const float *ds0, const float *iwae_weight, const vae_step_counter *counter,
                                  const vae_hierarchy_settings *settings, float *dd0);
/* After vae_hierarchy_forward: log_weight[samples*rows] = logp + sum over
 * the lower groups of log p(z_g | z_>g) - log q(z_g | x, z_>g); the top
 * group's term is importance_log_mean's (its q and z below). */
vae_status vae_hierarchy_log_weights(vae_hierarchy *hierarchy, const float *logp, float logvar_clamp,
                                     float *log_weight);
/* After vae_hierarchy_forward: log_ratio[samples*rows] = the sum over the
 * lower groups of log p(z_g | z_>g) - log q(z_g | x, z_>g) (iwae_objective's
 * log_ratio; the top group's term is its own). */
vae_status vae_hierarchy_log_ratios(vae_hierarchy *hierarchy, float logvar_clamp, float *log_ratio);
/* Ancestral sampling: eps holds, group after group (group 0 first), each
 * group's [count, Z_g] standard normals (scaled by a temperature by the
 * caller); z_top = eps_top, z_g = mu_p + std_p * eps_g. count <= samples*rows. */
vae_status vae_hierarchy_generate(vae_hierarchy *hierarchy, const float *parameters, const float *eps, int count,
                                  const vae_step_counter *counter, float logvar_clamp, const float **s0);
/* The group's posterior [mu | logvar] and draws of the last forward pass:
 * [rows, 2 Z_g] for the top group, [samples*rows, 2 Z_g] (sample-major)
 * for the others; its conditional prior (NULL for the top group); and
 * its per-row KL (the top group: [rows]; the others [samples*rows]). */
const float *vae_hierarchy_posterior(const vae_hierarchy *hierarchy, int group);
const float *vae_hierarchy_prior(const vae_hierarchy *hierarchy, int group);
const float *vae_hierarchy_z(const vae_hierarchy *hierarchy, int group);
const float *vae_hierarchy_group_kl(const vae_hierarchy *hierarchy, int group);

#endif
