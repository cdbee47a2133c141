/* The per-step rules that the CPU backend and the CUDA kernels both apply,
 * written once: the binarisation draw of a gathered value, the per-row loss,
 * the skip of a step whose gradient is not finite, and how the importance
 * weighted log mean treats NaN and infinite log weights. Element-wise
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

/* The counter's advance after the optimizer's update: a non-finite step is
 * recorded (the trainer's policy reads nonfinite_seen), then step += 1. */
VAE_HD void vae_advance_step_counter(vae_step_counter *counter, float grad_norm_squared) {
    if (vae_step_is_nonfinite(grad_norm_squared)) {
        counter->nonfinite_seen = 1;
        counter->skipped_steps += 1;
    }
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

#endif
