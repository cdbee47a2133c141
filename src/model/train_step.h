/* One training step, written once against the backend table: encoder,
 * reparam_kl, decoder, likelihood, backward, grad norm, Adam. All buffers are
 * allocated once at creation; a step allocates nothing and never waits for
 * the device. */
#ifndef VAE_TRAIN_STEP_H
#define VAE_TRAIN_STEP_H

#include "backends/backend.h"
#include "model/model.h"
#include "model/hierarchy_step.h"

typedef struct vae_step vae_step;

typedef struct vae_step_buffers {
    float *parameters;                                /* flat [parameter_count], owned by the caller */
    float *gradients, *adam_m, *adam_v;               /* flat, only with an optimizer */
    float *grad_norm_squared;                         /* one float, only with an optimizer */
    float *x;                                         /* [rows, D] the batch to use */
    float *mu_logvar;                                 /* [rows, 2Z] */
    float *z;                                         /* [samples*rows, Z] */
    float *kl;                                        /* [rows] */
    float *logp;                                      /* [samples*rows] */
    float *decoder_output;                            /* [samples*rows, output_width] */
    double *loss_accumulator;                         /* VAE_LOSS_SLOTS doubles, zeroed at creation */
} vae_step_buffers;

/* parameters: backend memory holding model->parameter_count floats, shared
 * between steps (a training step and an evaluation step). with_optimizer:
 * also allocate gradients and Adam moments (zeroed). */
vae_status vae_step_create(vae_step **out, vae_backend *backend, const vae_model *model, const vae_config *config,
                           int rows, int samples, float *parameters, int with_optimizer);
void vae_step_destroy(vae_step *step);
const vae_step_buffers *vae_step_get_buffers(const vae_step *step);
int vae_step_rows(const vae_step *step);

/* Encoder, reparameterisation and decoder for buffers.x, then the
 * likelihood: fills mu_logvar, z, kl, logp. With gradients (a step created
 * with an optimizer), decoder_output is overwritten by d loss/d output and
 * the backward pass fills buffers.gradients with d loss / d parameters for
 *   loss = mean over rows of [ -(1/L) sum_l log p(x|z_l) + beta_t KL ]
 * (model.objective = elbo), or with model.objective = iwae
 *   loss = mean over rows of -(log sum_l exp(a_l) - log L),
 *   a_l = log p(x|z_l) + beta_t [log p(z_l) - log q(z_l|x)]
 * (kernels/vae_step_math.h). The batch's sums are added to
 * buffers.loss_accumulator: the loss slot with beta_t of the schedule when
 * training; vae_step_forward (evaluation) adds the true ELBO (beta = 1)
 * whatever the objective.
 * counter (backend memory) addresses the noise and the beta schedule.
 * eps_override (backend memory, [samples*rows, Z]) replaces Philox noise
 * when not NULL (tests). */
vae_status vae_step_forward(vae_step *step, const vae_noise_settings *noise, const vae_step_counter *counter,
                            const float *eps_override);
vae_status vae_step_forward_backward(vae_step *step, const vae_noise_settings *noise, vae_step_counter *counter,
                                     const float *eps_override);
/* Encoder only: mu_logvar for buffers.x. */
vae_status vae_step_encode(vae_step *step);
/* Decoder only: decoder_output for count rows of z (backend memory, may be
 * buffers.z), count <= rows * samples. */
vae_status vae_step_decode(vae_step *step, const float *z, int count);
/* Hierarchical models: the latent groups' part of the step (NULL otherwise).
 * Their encode gives, per group, the standard normal noise that ancestral
 * sampling maps to the posterior means (hierarchy_encode in train_step.c),
 * and their decode takes such noise, laid out group after group ([count,
 * Z_0] then [count, Z_1] ...), and samples ancestrally from the top. */
vae_hierarchy *vae_step_hierarchy(vae_step *step);
/* Gradient norm (+ clipping) and Adam/AdamW; advances counter->step. */
vae_status vae_step_optimizer(vae_step *step, const vae_adam_settings *settings, vae_step_counter *counter);

/* CPU reference of the whole objective for tests (golden values, finite
 * differences): parameters, x [rows, D] and eps [samples*rows, Z] are host
 * arrays; the config's model section gives the architecture (image: the
 * input's shape, NULL when unknown). Writes the mean
 * loss (as defined above, beta without warm-up) and gradients
 * [parameter_count] (host; may be NULL). A hierarchical model ignores eps:
 * its groups draw Philox noise at step 0, the same draws on every call. */
vae_status vae_reference_loss_and_gradients(const vae_config *config, int input_dim, const vae_image_shape *image,
                                            const float *parameters, const float *x, int rows, const float *eps,
                                            double *loss, float *gradients);

#endif
