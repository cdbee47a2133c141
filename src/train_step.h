/* One training step, written once against the backend table: gather,
 * encoder, reparam_kl, decoder, likelihood, backward, grad norm, Adam. All
 * buffers are allocated once at creation; a step allocates nothing. */
#ifndef VAE_TRAIN_STEP_H
#define VAE_TRAIN_STEP_H

#include "backend.h"
#include "model.h"

typedef struct vae_step vae_step;

typedef struct vae_step_buffers {
    float *parameters, *gradients, *adam_m, *adam_v; /* flat, parameter_count each */
    vae_step_counter *counter;                        /* backend memory */
    double *loss_accumulator;                         /* VAE_LOSS_SLOTS doubles */
    float *x;                                         /* [rows, D] this batch */
    float *mu_logvar;                                 /* [rows, 2Z] */
    float *z;                                         /* [samples*rows, Z] */
    float *kl;                                        /* [rows] */
    float *logp;                                      /* [samples*rows] */
    float *decoder_output;                            /* [samples*rows, output_width] */
} vae_step_buffers;

vae_status vae_step_create(vae_step **out, vae_backend *backend, const vae_model *model, const vae_config *config,
                           int rows, int samples);
void vae_step_destroy(vae_step *step);
const vae_step_buffers *vae_step_get_buffers(const vae_step *step);

/* Forward and backward for the batch already in buffers.x: fills
 * buffers.gradients with d loss / d parameters where
 *   loss = mean over rows of [ -(1/L) sum_l log p(x|z_l) + beta_t KL ],
 * and adds the batch's sums into buffers.loss_accumulator.
 * eps_override (backend memory, [samples*rows, Z]) replaces Philox noise
 * when not NULL (tests). */
vae_status vae_step_forward_backward(vae_step *step, const float *eps_override);
/* Gradient norm (+ clipping) and Adam/AdamW; advances the step counter. */
vae_status vae_step_optimizer(vae_step *step);
/* Forward only (evaluation): mu_logvar, z, kl, logp for buffers.x with the
 * given noise address; no gradients. */
vae_status vae_step_forward(vae_step *step, const vae_noise_settings *noise);

/* CPU reference of the whole objective for tests (golden values, finite
 * differences): parameters, x [rows, D] and eps [samples*rows, Z] are host
 * arrays; writes the mean loss (as defined above, beta without warm-up) and
 * gradients [parameter_count] (host; may be NULL). */
vae_status vae_reference_loss_and_gradients(const vae_config *config, int input_dim, const float *parameters,
                                            const float *x, int rows, const float *eps, double *loss,
                                            float *gradients);

#endif
