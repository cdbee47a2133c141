/* The per-step rules that the CPU backend and the CUDA kernels both apply,
 * written once: the binarisation draw of a gathered value, the per-row loss,
 * the skip of a step whose gradient is not finite, how the importance
 * weighted log mean treats NaN and infinite log weights, and the importance
 * weighted training objective (model.objective = iwae) with its gradient. Element-wise
 * formulas are in vae_math.h; the data these read in vae_step_data.h. */
#ifndef VAE_STEP_MATH_H
#define VAE_STEP_MATH_H

#include <math.h>
#include <stdint.h>

#include "vae_hostdevice.h"
#include "vae_math.h"
#include "vae_step_data.h"

/* ---- gathering a batch ---- */

/* A gathered value (raw * scale, in [0,1]) after binarisation: static gives 1
 * above the threshold; dynamic a Bernoulli draw with mean value, from one
 * uniform number (Philox, in (0,1]); none leaves the value. */
VAE_HD float vae_binarize_value(float value, int binarize, float threshold, float uniform) {
    if (binarize == VAE_BINARIZE_STATIC) return value > threshold ? 1.0f : 0.0f;
    if (binarize == VAE_BINARIZE_DYNAMIC) return uniform < value ? 1.0f : 0.0f;
    return value;
}

/* ---- the loss of one data row ---- */

/* Reconstruction term of data row `row`: the mean over its samples of
 * log p(x|z_l), with logp sample-major ([samples*rows], row l*rows+row),
 * summed in double in sample order. */
VAE_HD double vae_row_reconstruction(const float *logp, int rows, int samples, int row) {
    double sum = 0.0;
    for (int l = 0; l < samples; ++l) sum += (double)logp[(size_t)l * (size_t)rows + (size_t)row];
    return sum / (double)samples;
}

/* The row's loss: -reconstruction + beta_t * KL (beta_t from vae_schedule_beta). */
VAE_HD double vae_row_loss(double reconstruction, double kl, double beta_now) {
    return -reconstruction + beta_now * kl;
}

/* ---- the optimizer's non-finite skip ---- */

/* A step whose gradient norm is not finite changes no parameter and no
 * moment: no NaN ever reaches the parameters, so the last finite state is
 * what a user gets to diagnose or skip on from. */
VAE_HD int vae_step_is_nonfinite(float grad_norm_squared) { return !isfinite(grad_norm_squared); }

/* Whether the optimizer skips the step: a non-finite norm, or (skip_norm >
 * 0, train.skip_grad_norm) a norm above skip_norm, an outlier step of the
 * kind a deep hierarchy produces now and then (VDVAE skips them too). */
VAE_HD int vae_step_is_skipped(float grad_norm_squared, float skip_norm) {
    return vae_step_is_nonfinite(grad_norm_squared) ||
           (skip_norm > 0.0f && grad_norm_squared > skip_norm * skip_norm);
}

/* The counter's advance after the optimizer's update: a skipped step is
 * counted and a non-finite one recorded (the trainer's policy reads
 * nonfinite_seen), then step += 1. */
VAE_HD void vae_advance_step_counter(vae_step_counter *counter, float grad_norm_squared, float skip_norm) {
    if (vae_step_is_nonfinite(grad_norm_squared)) counter->nonfinite_seen = 1;
    if (vae_step_is_skipped(grad_norm_squared, skip_norm)) counter->skipped_steps += 1;
    counter->step += 1;
}

/* ---- the importance-weighted log mean (IWAE) ----
 *
 * result = log (1/L) sum_l exp(w_l) over the L log weights w_l of a row,
 * computed stably as m + log sum_l exp(w_l - m) - log L with m = max_l w_l.
 * The rule for non-finite weights, the same on every backend:
 *   - any NaN weight gives NaN (a broken weight is never silently dropped);
 *   - else any +inf weight gives +inf;
 *   - all weights -inf (p(x|z) = 0 for every sample) gives -inf; some -inf
 *     weights among finite ones add nothing (exp(-inf) = 0).
 * The maximum carries the first three cases: fold the weights with
 * vae_nan_max from -INFINITY, then vae_iwae_finish. */

/* max(a, b) where a NaN on either side wins; any order of folding gives the
 * same maximum (NaN if any is NaN). */
VAE_HD double vae_nan_max(double a, double b) { return (a != a || a > b) ? a : b; }

/* 1 when the maximum alone decides the result (NaN, +inf or -inf): the sum
 * pass is skipped. */
VAE_HD int vae_iwae_max_decides(double max_weight) { return !isfinite(max_weight); }

/* The result from the maximum and sum_l exp(w_l - max). */
VAE_HD float vae_iwae_finish(double max_weight, double shifted_sum, int samples) {
    if (vae_iwae_max_decides(max_weight)) return (float)max_weight;
    return (float)(max_weight + log(shifted_sum) - log((double)samples));
}

/* ---- the importance-weighted training objective (model.objective = iwae) ----
 *
 * Burda et al. (2015). Per data row, over its K = samples draws
 * z_k = mu + exp(logvar/2) eps_k (eps fixed for the step):
 *
 *   a_k  = log p(x|z_k) + beta_t * [log p(z_k) - log q(z_k|x)]   the log weights
 *   loss = -(log sum_k exp(a_k) - log K)                        the row's loss
 *   w_k  = exp(a_k) / sum_k' exp(a_k')                          d loss / d a_k = -w_k
 *
 * and the step minimises the mean over rows. beta_t (model.beta with its
 * warm-up, vae_schedule_beta) scales log p(z) - log q(z|x): the usual
 * annealed bound; with beta_t = 1 it is the IWAE bound, and at K = 1 it is
 * the ELBO with the sampled KL (-log q + log p at z_1) in place of the
 * closed form. Stable as the evaluation's: a_k - max_k a_k, sums in double.
 *
 * The gradient, with prior_scale = beta_t / rows (the mean over rows):
 *   - the decoder's outputs of draw k get w_k d(-log p(x|z_k))/d output / rows:
 *     the ELBO's 1/K replaced by w_k. The likelihood op writes the ELBO's
 *     gradient (scale 1/(rows K)); it is multiplied by K w_k;
 *   - z_kj, besides the decoder's path, through log p(z) = -z^2/2 + c:
 *     -w_k beta_t (-z_kj) / rows = prior_scale w_k z_kj;
 *   - mu and logvar through z (the reparameterisation, as the ELBO's), and
 *     through log q's direct term: with eps fixed,
 *     log q(z_k|x) = -sum_j (logvar_j + eps_kj^2 + log 2 pi) / 2, so
 *     d loss / d logvar_j gets -sum_k w_k beta_t (1/2) / rows = -prior_scale / 2
 *     (the weights sum to 1); mu has no direct term.
 * A non-finite maximum log weight (NaN, or every weight -inf, or one +inf)
 * gives a non-finite loss and NaN weights: the gradient is then not finite
 * and train.nonfinite decides (skip or stop), as for the ELBO. */

/* sum over the latent dimensions of log p(z_j) - log q(z_j|x) for one draw
 * (z: that draw's row; mu, logvar: its data row's), in double. */
VAE_HD double vae_log_prior_minus_log_posterior_sum(const float *z, const float *mu, const float *logvar, int latent,
                                                    float logvar_clamp) {
    double sum = 0.0;
    for (int j = 0; j < latent; ++j)
        sum += (double)vae_log_prior_minus_log_posterior(z[j], mu[j], vae_clamp_logvar(logvar[j], logvar_clamp));
    return sum;
}

/* a_k from log p(x|z_k) and sum_j [log p(z_kj) - log q(z_kj|x)]. */
VAE_HD double vae_iwae_log_weight(double log_likelihood, double log_prior_minus_posterior, double beta_now) {
    return log_likelihood + beta_now * log_prior_minus_posterior;
}

/* a_k of draw l of data row `row` (z and log_ratio sample-major, row
 * l*rows+row; mu_logvar [rows, 2*latent]). log_ratio, when not NULL, holds
 * a hierarchical model's other groups' sum_g [log p(z_g|z_>g) -
 * log q(z_g|x,z_>g)] of each draw (mu_logvar and z are then the top
 * group's, against N(0, I)): added to the top's before beta_t, so beta_t
 * weighs every group's log p - log q alike. */
VAE_HD double vae_iwae_draw_log_weight(const float *logp, const float *mu_logvar, const float *z,
                                       const float *log_ratio, int rows, int latent, int row, int l, double beta_now,
                                       float logvar_clamp) {
    const float *mu = mu_logvar + (size_t)row * 2 * (size_t)latent;
    const size_t z_row = (size_t)l * (size_t)rows + (size_t)row;
    double prior_minus_posterior =
        vae_log_prior_minus_log_posterior_sum(z + z_row * (size_t)latent, mu, mu + latent, latent, logvar_clamp);
    if (log_ratio) prior_minus_posterior += (double)log_ratio[z_row];
    return vae_iwae_log_weight(logp[z_row], prior_minus_posterior, beta_now);
}

/* The row's loss from the maximum log weight (folded with vae_nan_max) and
 * sum_k exp(a_k - max). */
VAE_HD double vae_iwae_row_loss(double max_weight, double shifted_sum, int samples) {
    if (vae_iwae_max_decides(max_weight)) return -max_weight;
    return -(max_weight + log(shifted_sum) - log((double)samples));
}

/* w_k, the normalised weight of log weight a_k (NaN when the maximum is not
 * finite, see above). */
VAE_HD float vae_iwae_normalized_weight(double log_weight, double max_weight, double shifted_sum) {
    if (vae_iwae_max_decides(max_weight)) return (float)NAN;
    return (float)(exp(log_weight - max_weight) / shifted_sum);
}

/* The factor on the likelihood op's gradient of draw k (written with the
 * ELBO's 1/(rows K)): K w_k. Exactly 1 at K = 1. */
VAE_HD float vae_iwae_output_gradient_scale(float weight, int samples) { return (float)samples * weight; }

/* d loss / d z_kj through log p(z_k), added to the decoder's. */
VAE_HD float vae_iwae_prior_gradient_z(float weight, float z, float prior_scale) { return prior_scale * weight * z; }

/* d loss / d logvar_j through log q's direct term (summed over the draws). */
VAE_HD float vae_iwae_posterior_gradient_logvar(float prior_scale) { return -0.5f * prior_scale; }

/* A hierarchical model's lower group g (model.latent_groups): its term
 * r_k = log p(z_g|z_>g) - log q(z_g|x,z_>g) in a_k gets d loss / d r_k =
 * -w_k beta_t / rows = -prior_scale w_k, the coefficient on r's partial
 * derivatives (vae_gaussian_log_ratio_grad: z, q's and p's mean and
 * log-variance, taken apart; z's goes on through the reparameterisation
 * into q, q's and p's through their networks into the draws above). The
 * top group, against N(0, I), is the one latent's (the two rules above). */
VAE_HD float vae_iwae_log_ratio_coefficient(float weight, float prior_scale) { return -prior_scale * weight; }

#endif
