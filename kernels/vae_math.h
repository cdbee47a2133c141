/* Element-wise math of the engine, written once for the CPU backend and the
 * CUDA kernels. Every formula of the model lives here: activations, the
 * likelihood terms, the KL term, the reparameterisation, Adam, schedules.
 * All are stable at extreme inputs (logits of +-100, logvar of +-30). */
#ifndef VAE_MATH_H
#define VAE_MATH_H

#include <stdint.h>
#include "vae_hostdevice.h"
/* The enums of the choices a config makes (activation, likelihood, schedule)
 * are public API types; the formulas here switch on them. */
#include "vae/vae.h"

#define VAE_LOG_2PI 1.8378770664093453f

/* ---- exp and log1p as straight-line polynomials (host) ----
 * libm's expf and log1pf are calls the compiler cannot vectorise: in the
 * likelihood over every pixel they were 8-10% of a CPU training step. These
 * forms have no branches and no calls, so a loop over them vectorises; their
 * error against float64 is tested in tests/test_math.cpp (a few 1e-8
 * relative). The GPU keeps its own fast expf/log1pf. */

/* Bit pattern of 2^n for an integer n in [-126, 127]. */
VAE_HD float vae_exp2_integer(int n) {
    union { uint32_t bits; float value; } pun;
    pun.bits = (uint32_t)(n + 127) << 23;
    return pun.value;
}

/* exp(x) for x <= 0 (an argument above 0 is treated as 0; below -104 the
 * result is 0 or the smallest subnormal, as expf's). x = n ln2 + r with
 * |r| <= ln2/2 (ln2 in two parts so that r is exact), exp(r) by a degree-6
 * polynomial (Taylor's coefficients, nearly minimax on this small interval),
 * times 2^n applied in two halves so subnormal results come out right. */
VAE_HD float vae_exp_nonpositive(float x) {
    x = x > 0.0f ? 0.0f : x; /* two plain selects (not nested): loops vectorise them */
    x = x < -104.0f ? -104.0f : x;
    /* round to nearest integer by the 1.5 * 2^23 trick (no rintf call) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;           /* ln2's upper bits: n * this is exact */
    r = r - n * -2.12194440054690583e-4f;     /* the rest of ln2 */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r * r + r + 1.0f;
    int exponent = (int)n;                    /* in [-150, 0] */
    int half = exponent / 2;
    return p * vae_exp2_integer(half) * vae_exp2_integer(exponent - half);
}

/* log(1 + t) for t in [0, 1]: with s = t / (2 + t) in [0, 1/3],
 * log(1 + t) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...); the series to s^15
 * leaves a relative error under 1e-8. Exact near 0 (returns t's scale). */
VAE_HD float vae_log1p_unit(float t) {
    float s = t / (2.0f + t);
    float s2 = s * s;
    float p = 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    return 2.0f * s + 2.0f * s * (p * s2);
}

/* log(1 + exp(x)) without overflow or loss of precision at either end:
 * max(x, 0) + log1p(exp(-|x|)). */
VAE_HD float vae_softplus(float x) {
#ifdef __CUDA_ARCH__
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
#else
    float magnitude = x < 0.0f ? -x : x;
    return (x > 0.0f ? x : 0.0f) + vae_log1p_unit(vae_exp_nonpositive(-magnitude));
#endif
}

VAE_HD float vae_sigmoid(float x) {
#ifdef __CUDA_ARCH__
    if (x >= 0.0f) { float e = expf(-x); return 1.0f / (1.0f + e); }
    float e = expf(x);
    return e / (1.0f + e);
#else
    /* e = exp(-|x|) in (0, 1]: 1/(1+e) for x >= 0, e/(1+e) below. */
    float e = vae_exp_nonpositive(x < 0.0f ? x : -x);
    float reciprocal = 1.0f / (1.0f + e);
    return x >= 0.0f ? reciprocal : e * reciprocal;
#endif
}

/* ---- bfloat16: the GEMM operands of train.precision = bf16 ----
 * float's sign, exponent and upper 7 mantissa bits, rounded to nearest, ties
 * to even (as __float2bfloat16_rn and PyTorch's .bfloat16()); a NaN stays a
 * quiet NaN, values past bfloat16's largest round to infinity. The CUDA
 * backend stores these bits for cuBLAS; the CPU backend multiplies the same
 * values held in floats (a bfloat16 product is exact in float), so both
 * compute the same GEMM up to the order of the float sums. */
VAE_HD uint16_t vae_bfloat16_bits(float x) {
    union { float value; uint32_t bits; } pun;
    pun.value = x;
    if ((pun.bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((pun.bits >> 16) | 0x0040u);
    uint32_t rounding = 0x7fffu + ((pun.bits >> 16) & 1u);
    return (uint16_t)((pun.bits + rounding) >> 16);
}

VAE_HD float vae_bfloat16_to_float(uint16_t bits) {
    union { uint32_t bits; float value; } pun;
    pun.bits = (uint32_t)bits << 16;
    return pun.value;
}

VAE_HD float vae_round_to_bfloat16(float x) { return vae_bfloat16_to_float(vae_bfloat16_bits(x)); }

/* ---- activations: forward from the pre-activation, backward from it too ---- */
VAE_HD float vae_activation_forward(int activation, float pre) {
    switch (activation) {
    case VAE_ACTIVATION_RELU: return pre > 0.0f ? pre : 0.0f;
    case VAE_ACTIVATION_TANH: return tanhf(pre);
    case VAE_ACTIVATION_SOFTPLUS: return vae_softplus(pre);
    case VAE_ACTIVATION_GELU: return 0.5f * pre * (1.0f + erff(pre * 0.70710678118654752f));
    default: return pre;
    }
}

/* d activation / d pre, evaluated at pre. */
VAE_HD float vae_activation_derivative(int activation, float pre) {
    switch (activation) {
    case VAE_ACTIVATION_RELU: return pre > 0.0f ? 1.0f : 0.0f;
    case VAE_ACTIVATION_TANH: { float t = tanhf(pre); return 1.0f - t * t; }
    case VAE_ACTIVATION_SOFTPLUS: return vae_sigmoid(pre);
    case VAE_ACTIVATION_GELU: {
        float cdf = 0.5f * (1.0f + erff(pre * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * pre * pre);
        return cdf + pre * pdf;
    }
    default: return 1.0f;
    }
}

/* The gradient through an activation. ReLU selects rather than multiplies,
 * so that an infinite or NaN gradient behind a unit that is off stays out
 * (0 * inf would be NaN): both backends then skip or take the same steps. */
VAE_HD float vae_activation_backward(int activation, float pre, float dpost) {
    if (activation == VAE_ACTIVATION_RELU) return pre > 0.0f ? dpost : 0.0f;
    return dpost * vae_activation_derivative(activation, pre);
}

/* ---- likelihoods: log p(x | params) and d(-log p)/d params ---- */

/* Bernoulli from a logit: x*l - softplus(l), never log(sigmoid). */
VAE_HD float vae_bernoulli_log_prob(float x, float logit) {
    return x * logit - vae_softplus(logit);
}
VAE_HD float vae_bernoulli_neg_log_prob_grad(float x, float logit) {
    return vae_sigmoid(logit) - x;
}

/* Gaussian with mean m and log-variance lv. */
VAE_HD float vae_gaussian_log_prob(float x, float mean, float logvar) {
    float diff = x - mean;
    return -0.5f * (VAE_LOG_2PI + logvar + diff * diff * expf(-logvar));
}
VAE_HD float vae_gaussian_neg_log_prob_grad_mean(float x, float mean, float logvar) {
    return (mean - x) * expf(-logvar);
}
VAE_HD float vae_gaussian_neg_log_prob_grad_logvar(float x, float mean, float logvar) {
    float diff = x - mean;
    return 0.5f * (1.0f - diff * diff * expf(-logvar));
}

/* ---- posterior: KL(N(mu, exp(lv)) || N(0,1)) per dimension, reparam ---- */
VAE_HD float vae_kl_term(float mu, float logvar) {
    /* expm1 keeps exp(lv) - 1 - lv accurate when lv is near 0. */
    return 0.5f * (mu * mu + expm1f(logvar) - logvar);
}
VAE_HD float vae_kl_grad_mu(float mu) { return mu; }
VAE_HD float vae_kl_grad_logvar(float logvar) { return 0.5f * expm1f(logvar); }

/* ---- KL(N(q_mu, exp(q_lv)) || N(p_mu, exp(p_lv))) per dimension ----
 * Hierarchical latents: a group's posterior against its conditional prior.
 * With t = q_lv - p_lv and d = q_mu - p_mu it is
 * 0.5 * (e^t - 1 - t + d^2 e^-p_lv), expm1 keeping e^t - 1 - t accurate near
 * t = 0; against N(0, 1) it is vae_kl_term. Its partial derivatives:
 *   d/dq_mu = d e^-p_lv = -d/dp_mu,   d/dq_lv = 0.5 (e^t - 1),
 *   d/dp_lv = -0.5 (e^t - 1 + d^2 e^-p_lv). */
typedef struct vae_gaussian_kl_gradient {
    float q_mu, q_logvar, p_mu, p_logvar;
} vae_gaussian_kl_gradient;

VAE_HD float vae_gaussian_kl_term(float q_mu, float q_logvar, float p_mu, float p_logvar) {
    const float t = q_logvar - p_logvar, d = q_mu - p_mu;
    return 0.5f * (expm1f(t) - t + d * d * expf(-p_logvar));
}

VAE_HD vae_gaussian_kl_gradient vae_gaussian_kl_grad(float q_mu, float q_logvar, float p_mu, float p_logvar) {
    const float excess = expm1f(q_logvar - p_logvar), d = q_mu - p_mu, precision = expf(-p_logvar);
    vae_gaussian_kl_gradient g;
    g.q_mu = d * precision;
    g.p_mu = -g.q_mu;
    g.q_logvar = 0.5f * excess;
    g.p_logvar = -0.5f * (excess + d * d * precision);
    return g;
}

/* Free bits (a floor on a group's KL per row, loss max(KL, free_bits)): a
 * row whose KL is below the floor gets no KL gradient. free_bits <= 0: off.
 * A NaN KL is not below: its gradient goes on, and the non-finite check
 * sees it. */
VAE_HD int vae_below_free_bits(float kl, float free_bits) { return free_bits > 0.0f && kl < free_bits; }

/* log N(z; p_mu, exp(p_lv)) - log N(z; q_mu, exp(q_lv)) for one dimension:
 * a group's part of log p(z_g | z_>g) - log q(z_g | x, z_>g) in the
 * hierarchical model's importance weight. The log 2pi terms cancel. */
VAE_HD float vae_gaussian_log_ratio_term(float z, float q_mu, float q_logvar, float p_mu, float p_logvar) {
    const float dq = z - q_mu, dp = z - p_mu;
    return 0.5f * (q_logvar - p_logvar) + 0.5f * (dq * dq * expf(-q_logvar) - dp * dp * expf(-p_logvar));
}

/* Its partial derivatives, z, q and p as separate inputs (the caller chains
 * z's through the reparameterisation z = q_mu + exp(q_logvar/2) eps):
 *   d/dz = (z - q_mu) e^-q_lv - (z - p_mu) e^-p_lv
 *   d/dq_mu = -(z - q_mu) e^-q_lv          d/dq_lv = (1 - (z - q_mu)^2 e^-q_lv) / 2
 *   d/dp_mu =  (z - p_mu) e^-p_lv          d/dp_lv = ((z - p_mu)^2 e^-p_lv - 1) / 2 */
typedef struct vae_gaussian_log_ratio_gradient {
    float z, q_mu, q_logvar, p_mu, p_logvar;
} vae_gaussian_log_ratio_gradient;

VAE_HD vae_gaussian_log_ratio_gradient vae_gaussian_log_ratio_grad(float z, float q_mu, float q_logvar, float p_mu,
                                                                   float p_logvar) {
    const float q_scaled = (z - q_mu) * expf(-q_logvar), p_scaled = (z - p_mu) * expf(-p_logvar);
    vae_gaussian_log_ratio_gradient g;
    g.z = q_scaled - p_scaled;
    g.q_mu = -q_scaled;
    g.q_logvar = 0.5f - 0.5f * (z - q_mu) * q_scaled;
    g.p_mu = p_scaled;
    g.p_logvar = 0.5f * (z - p_mu) * p_scaled - 0.5f;
    return g;
}

/* Optional guard (train.logvar_clamp > 0): the encoder's logvar is clamped to
 * [-clamp, clamp] before use; a value strictly outside does not move the
 * loss, so its gradient is zero. Off (0) by default: it changes the math. */
VAE_HD float vae_clamp_logvar(float logvar, float clamp) {
    if (clamp <= 0.0f) return logvar;
    return logvar < -clamp ? -clamp : (logvar > clamp ? clamp : logvar);
}
VAE_HD int vae_logvar_is_clamped(float logvar, float clamp) {
    return clamp > 0.0f && (logvar < -clamp || logvar > clamp);
}

VAE_HD float vae_reparam_z(float mu, float logvar, float eps) {
    return mu + expf(0.5f * logvar) * eps;
}
/* dz/dlogvar = 0.5 * std * eps = 0.5 * (z - mu): no stored eps needed. */
VAE_HD float vae_reparam_grad_logvar(float dz, float z, float mu) {
    return dz * 0.5f * (z - mu);
}

/* log N(z; 0, 1) - log N(z; mu, exp(lv)) for one dimension: the per-dimension
 * part of log p(z) - log q(z|x) in the importance weight. */
VAE_HD float vae_log_prior_minus_log_posterior(float z, float mu, float logvar) {
    float diff = z - mu;
    return -0.5f * z * z + 0.5f * (logvar + diff * diff * expf(-logvar));
}

/* a + scale * b, rounded once: an explicit fused multiply-add on the host and
 * on the device alike, so that the CPU backend and the kernels give the same
 * bits whatever each compiler would contract a * b + c into. */
VAE_HD float vae_add_scaled(float a, float b, float scale) { return fmaf(scale, b, a); }

/* ---- schedules, read from the step counter so a graph can replay them ---- */

/* Linear KL warm-up: beta * min(1, (step+1)/warmup_steps). */
VAE_HD float vae_schedule_beta(uint64_t step, float beta, uint64_t warmup_steps) {
    if (warmup_steps == 0 || step + 1 >= warmup_steps) return beta;
    return beta * (float)(step + 1) / (float)warmup_steps;
}

/* Learning rate at a 0-based step: linear warm-up then constant or cosine
 * decay to lr_min at total_steps. */
VAE_HD float vae_schedule_lr(uint64_t step, int schedule, float lr, float lr_min,
                             uint64_t warmup_steps, uint64_t total_steps) {
    if (warmup_steps > 0 && step < warmup_steps)
        return lr * (float)(step + 1) / (float)warmup_steps;
    if (schedule == VAE_LR_CONSTANT || total_steps <= warmup_steps) return lr;
    double progress = (double)(step - warmup_steps) / (double)(total_steps - warmup_steps);
    if (progress > 1.0) progress = 1.0;
    return lr_min + 0.5f * (lr - lr_min) * (float)(1.0 + cos(3.14159265358979323846 * progress));
}

/* ---- Adam / AdamW, as torch.optim computes them ---- */
typedef struct vae_adam_settings {
    float lr, lr_min, beta1, beta2, epsilon, weight_decay;
    int decoupled_weight_decay; /* 1: AdamW, 0: Adam with L2 added to the gradient */
    int lr_schedule;
    uint64_t warmup_steps, total_steps;
    float clip_norm;            /* 0: no clipping */
    float skip_norm;            /* > 0: a step whose gradient norm exceeds it is skipped (VDVAE); 0: off */
} vae_adam_settings;

/* Scale applied to gradients for global-norm clipping (torch's clip_grad_norm_). */
VAE_HD float vae_clip_scale(float norm_squared, float clip_norm) {
    if (clip_norm <= 0.0f) return 1.0f;
    float norm = sqrtf(norm_squared);
    float scale = clip_norm / (norm + 1e-6f);
    return scale < 1.0f ? scale : 1.0f;
}

/* What one Adam step needs, computed once per step (not per parameter) so
 * the per-parameter loop is a few multiply-adds that vectorise. */
typedef struct vae_adam_step_constants {
    float lr, beta1, beta2, epsilon;
    float step_size;      /* lr / (1 - beta1^t) */
    float sqrt_bias2;     /* sqrt(1 - beta2^t) */
    float inverse_sqrt_bias2; /* its reciprocal: one multiply per parameter instead of a division */
    float clip;           /* global-norm clipping scale for the gradients */
    float param_scale;    /* AdamW's decay: 1 - lr * weight_decay (else 1) */
    float gradient_decay; /* Adam's L2 term added to the gradient: weight_decay (else 0) */
} vae_adam_step_constants;

/* At 0-based step (t = step + 1): the schedule's learning rate, the bias
 * corrections (in double, then float) and the clipping scale. */
VAE_HD vae_adam_step_constants vae_adam_constants(const vae_adam_settings *s, uint64_t step, float grad_norm_squared) {
    vae_adam_step_constants k;
    double t = (double)(step + 1);
    k.lr = vae_schedule_lr(step, s->lr_schedule, s->lr, s->lr_min, s->warmup_steps, s->total_steps);
    k.beta1 = s->beta1;
    k.beta2 = s->beta2;
    k.epsilon = s->epsilon;
    k.param_scale = s->decoupled_weight_decay ? 1.0f - k.lr * s->weight_decay : 1.0f;
    k.gradient_decay = s->decoupled_weight_decay ? 0.0f : s->weight_decay;
    k.step_size = k.lr / (float)(1.0 - pow((double)s->beta1, t));
    k.sqrt_bias2 = sqrtf((float)(1.0 - pow((double)s->beta2, t)));
    k.inverse_sqrt_bias2 = (float)(1.0 / sqrt(1.0 - pow((double)s->beta2, t)));
    k.clip = vae_clip_scale(grad_norm_squared, s->clip_norm);
    return k;
}

/* One parameter's update, as torch.optim.Adam / AdamW compute it; no
 * branches, so the loop over the flat buffer vectorises. */
VAE_HD void vae_adam_update(float *param, float *m, float *v, float grad, vae_adam_step_constants k) {
    grad = grad * k.clip + k.gradient_decay * *param;
    *param *= k.param_scale;
    *m = k.beta1 * *m + (1.0f - k.beta1) * grad;
    *v = k.beta2 * *v + (1.0f - k.beta2) * grad * grad;
    float denom = sqrtf(*v) * k.inverse_sqrt_bias2 + k.epsilon;
    *param -= k.step_size * (*m / denom);
}

#endif
