// Each element-wise formula of kernels/vae_math.h against a float64
// reference, including the extreme inputs where naive formulas overflow.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "test_support.h"

extern "C" {
#include "vae_math.h"
}

namespace {

double softplus64(double x) { return std::log1p(std::exp(-std::fabs(x))) + std::max(x, 0.0); }
double sigmoid64(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Relative error with an absolute floor, so values near zero compare sanely.
void expect_close(double actual, double expected, double relative, double absolute, const char *what, double input) {
    ASSERT_TRUE(std::isfinite(actual)) << what << " not finite at " << input;
    EXPECT_LE(std::fabs(actual - expected), relative * std::fabs(expected) + absolute)
        << what << " at " << input << ": got " << actual << ", float64 says " << expected;
}

const std::vector<double> extreme_inputs = {-100, -88, -30, -20, -5, -1, -1e-3, 0, 1e-6, 1e-3, 0.5, 1, 5, 20, 30, 88, 100};

TEST(Math, SoftplusIsStableEverywhere) {
    for (double x : extreme_inputs) expect_close(vae_softplus((float)x), softplus64(x), 1e-6, 1e-30, "softplus", x);
    // The naive log(1+exp(x)) overflows to inf at 100; ours must not.
    EXPECT_FLOAT_EQ(vae_softplus(100.0f), 100.0f);
    EXPECT_GT(vae_softplus(-100.0f), 0.0f);
}

TEST(Math, SigmoidIsStableEverywhere) {
    for (double x : extreme_inputs) expect_close(vae_sigmoid((float)x), sigmoid64(x), 1e-6, 1e-37, "sigmoid", x);
}

// The host's branch-free exp and log1p (vectorisable, no libm call) and the
// softplus and sigmoid built on them, on dense grids against float64: a few
// 1e-7 relative at worst (libm's float functions are within 1.2e-7), down to
// the subnormal range.
TEST(Math, PolynomialExpLog1pSoftplusSigmoidMatchFloat64) {
    double worst_exp = 0, worst_log1p = 0, worst_softplus = 0, worst_sigmoid = 0;
    for (double x = -104.0; x <= 0.0; x += 1e-3) {
        const float f = (float)x;
        const double expected = std::exp((double)f);
        const double got = vae_exp_nonpositive(f);
        if (expected > 1.2e-38) worst_exp = std::max(worst_exp, std::fabs(got - expected) / expected);
        else EXPECT_LE(std::fabs(got - expected), 2e-45) << "exp at " << x;  // subnormal: within one step
    }
    for (double t = 0.0; t <= 1.0; t += 1e-5) {
        const float f = (float)t;
        const double expected = std::log1p((double)f);
        const double got = vae_log1p_unit(f);
        if (f > 0) worst_log1p = std::max(worst_log1p, std::fabs(got - expected) / expected);
        else EXPECT_EQ(got, 0.0);
    }
    for (double x = -110.0; x <= 110.0; x += 1e-3) {
        const float f = (float)x;
        const double softplus = softplus64(f), sigmoid = sigmoid64(f);
        if (softplus > 1.2e-38)
            worst_softplus = std::max(worst_softplus, std::fabs(vae_softplus(f) - softplus) / softplus);
        if (sigmoid > 1.2e-38)
            worst_sigmoid = std::max(worst_sigmoid, std::fabs(vae_sigmoid(f) - sigmoid) / sigmoid);
    }
    EXPECT_LT(worst_exp, 4e-7);
    EXPECT_LT(worst_log1p, 3e-7);
    EXPECT_LT(worst_softplus, 5e-7);
    EXPECT_LT(worst_sigmoid, 5e-7);
    // Far ends: exp(0) = 1 exactly, nothing below zero, no NaN from a huge input.
    EXPECT_EQ(vae_exp_nonpositive(0.0f), 1.0f);
    EXPECT_EQ(vae_exp_nonpositive(-1000.0f), 0.0f);
    EXPECT_EQ(vae_softplus(1e30f), 1e30f);
    EXPECT_EQ(vae_sigmoid(-1e30f), 0.0f);
    EXPECT_EQ(vae_sigmoid(1e30f), 1.0f);
}

TEST(Math, BernoulliLogProbFromLogits) {
    for (double logit : extreme_inputs)
        for (double x : {0.0, 0.3, 1.0}) {
            double expected = x * logit - softplus64(logit);
            expect_close(vae_bernoulli_log_prob((float)x, (float)logit), expected, 1e-6, 1e-5, "bernoulli log p", logit);
            expect_close(vae_bernoulli_neg_log_prob_grad((float)x, (float)logit), sigmoid64(logit) - x, 1e-6, 1e-7,
                         "bernoulli grad", logit);
        }
    // log p of the right answer at a confident logit is ~0, not -inf.
    EXPECT_NEAR(vae_bernoulli_log_prob(1.0f, 100.0f), 0.0f, 1e-6f);
    EXPECT_NEAR(vae_bernoulli_log_prob(0.0f, -100.0f), 0.0f, 1e-6f);
    EXPECT_NEAR(vae_bernoulli_log_prob(0.0f, 100.0f), -100.0f, 1e-4f);
}

TEST(Math, GaussianLogProbAndGradients) {
    const double log_2pi = std::log(2.0 * M_PI);
    for (double logvar : {-30.0, -5.0, -0.7, 0.0, 2.0, 30.0})
        for (double offset : {-3.0, -1e-3, 0.0, 0.25, 2.0}) {
            double diff = offset;
            // The reference works on the float inputs the engine sees.
            double x = 0.5, mean = (double)(float)(x - diff);
            diff = x - mean;
            double precision = std::exp(-logvar);
            double expected = -0.5 * (log_2pi + logvar + diff * diff * precision);
            float got = vae_gaussian_log_prob((float)x, (float)mean, (float)logvar);
            // (x - mean) and exp(-logvar) are formed in float: a few ulps of
            // the largest term.
            double slack = 1e-6 * diff * diff * precision + 1e-5;
            expect_close(got, expected, 1e-5, slack, "gaussian log p", logvar);
            expect_close(vae_gaussian_neg_log_prob_grad_mean((float)x, (float)mean, (float)logvar), -diff * precision,
                         1e-5, 1e-7 * precision + 1e-7, "gaussian d/dmean", logvar);
            expect_close(vae_gaussian_neg_log_prob_grad_logvar((float)x, (float)mean, (float)logvar),
                         0.5 * (1.0 - diff * diff * precision), 1e-5, slack, "gaussian d/dlogvar", logvar);
        }
}

TEST(Math, KlTermAndGradients) {
    for (double logvar : {-30.0, -10.0, -1e-4, 0.0, 1e-4, 1.0, 10.0, 30.0})
        for (double mu : {-5.0, 0.0, 0.1, 3.0}) {
            double expected = 0.5 * (mu * mu + std::expm1(logvar) - logvar);
            expect_close(vae_kl_term((float)mu, (float)logvar), expected, 1e-6, 1e-12, "kl", logvar);
            expect_close(vae_kl_grad_logvar((float)logvar), 0.5 * std::expm1(logvar), 1e-6, 1e-12, "kl d/dlogvar", logvar);
            EXPECT_EQ(vae_kl_grad_mu((float)mu), (float)mu);
        }
    // Near logvar = 0 the term is tiny but must stay accurate (expm1, not exp - 1).
    expect_close(vae_kl_term(0.0f, 1e-4f), 0.5 * (std::expm1(1e-4) - 1e-4), 1e-3, 0, "kl near 0", 1e-4);
}

// The KL of two diagonal Gaussians (hierarchical latents) against the
// textbook form in double, its derivatives against central differences of
// that form, and against N(0, 1) it is vae_kl_term.
double textbook_gaussian_kl(double q_mu, double q_logvar, double p_mu, double p_logvar) {
    double q_var = std::exp(q_logvar), p_var = std::exp(p_logvar), d = q_mu - p_mu;
    return 0.5 * (std::log(p_var / q_var) + (q_var + d * d) / p_var - 1.0);
}

TEST(Math, GaussianKlOfTwoGaussiansAndItsGradients) {
    std::mt19937_64 rng(20261206);
    std::normal_distribution<double> mean(0.0, 1.5);
    std::uniform_real_distribution<double> logvar(-4.0, 4.0);
    for (int trial = 0; trial < 2000; ++trial) {
        const double v[4] = {mean(rng), logvar(rng), mean(rng), logvar(rng)};
        const float f[4] = {(float)v[0], (float)v[1], (float)v[2], (float)v[3]};
        const double kl = textbook_gaussian_kl(f[0], f[1], f[2], f[3]);
        ASSERT_NEAR(vae_gaussian_kl_term(f[0], f[1], f[2], f[3]), kl, 2e-6 * (1.0 + std::fabs(kl))) << trial;
        const vae_gaussian_kl_gradient g = vae_gaussian_kl_grad(f[0], f[1], f[2], f[3]);
        const float got[4] = {g.q_mu, g.q_logvar, g.p_mu, g.p_logvar};
        for (int k = 0; k < 4; ++k) {
            double plus[4] = {f[0], f[1], f[2], f[3]}, minus[4] = {f[0], f[1], f[2], f[3]};
            const double h = 1e-5;
            plus[k] += h;
            minus[k] -= h;
            const double numeric = (textbook_gaussian_kl(plus[0], plus[1], plus[2], plus[3]) -
                                    textbook_gaussian_kl(minus[0], minus[1], minus[2], minus[3])) /
                                   (2 * h);
            ASSERT_NEAR(got[k], numeric, 1e-4 * (1.0 + std::fabs(numeric))) << "trial " << trial << " argument " << k;
        }
    }
    // Near t = q_logvar - p_logvar = 0 the expm1 form keeps its relative accuracy.
    EXPECT_NEAR(vae_gaussian_kl_term(0.0f, 1e-3f, 0.0f, 0.0f), 0.5 * (std::expm1(1e-3) - 1e-3), 1e-10);
    for (float mu : {-2.0f, 0.0f, 0.7f})
        for (float lv : {-3.0f, 0.0f, 1e-3f, 2.5f})
            EXPECT_FLOAT_EQ(vae_gaussian_kl_term(mu, lv, 0.0f, 0.0f), vae_kl_term(mu, lv)) << mu << " " << lv;
}

// log N(z; p) - log N(z; q) for one dimension against the textbook log
// densities in double (the log 2pi terms included there), over means and
// log-variances the models produce; it is 0 where p is q, and against
// N(0, 1) for p it is vae_log_prior_minus_log_posterior.
double textbook_log_normal(double x, double mean, double logvar) {
    return -0.5 * std::log(2 * M_PI * std::exp(logvar)) - (x - mean) * (x - mean) / (2 * std::exp(logvar));
}

TEST(Math, GaussianLogRatioIsLogPriorMinusLogPosterior) {
    std::mt19937_64 rng(20261207);
    std::normal_distribution<double> mean(0.0, 1.5);
    std::uniform_real_distribution<double> logvar(-4.0, 4.0);
    for (int trial = 0; trial < 2000; ++trial) {
        const float z = (float)mean(rng), q_mu = (float)mean(rng), q_lv = (float)logvar(rng), p_mu = (float)mean(rng),
                    p_lv = (float)logvar(rng);
        const double expected = textbook_log_normal(z, p_mu, p_lv) - textbook_log_normal(z, q_mu, q_lv);
        // The terms' size, not the difference's, sets float's rounding.
        const double size = 1.0 + std::fabs(textbook_log_normal(z, p_mu, p_lv)) + std::fabs(textbook_log_normal(z, q_mu, q_lv));
        ASSERT_NEAR(vae_gaussian_log_ratio_term(z, q_mu, q_lv, p_mu, p_lv), expected, 1e-6 * size) << trial;
    }
    for (float z : {-2.5f, 0.0f, 0.3f})
        for (float lv : {-3.0f, 0.0f, 2.5f}) {
            EXPECT_NEAR(vae_gaussian_log_ratio_term(z, 0.7f, lv, 0.7f, lv), 0.0, 1e-6) << z << " " << lv;
            // Within rounding of terms about e^3 in size (the two group the sums differently).
            EXPECT_NEAR(vae_gaussian_log_ratio_term(z, 0.7f, lv, 0.0f, 0.0f),
                        vae_log_prior_minus_log_posterior(z, 0.7f, lv), 1e-5)
                << z << " " << lv;
        }
    // At extreme log-variances (the clamp's range and beyond) still the textbook value.
    for (double lv : {-12.0, 12.0}) {
        const double expected = textbook_log_normal(1.0, 0.0, 0.0) - textbook_log_normal(1.0, 0.5, lv);
        expect_close(vae_gaussian_log_ratio_term(1.0f, 0.5f, (float)lv, 0.0f, 0.0f), expected, 1e-6, 1e-6,
                     "log ratio", lv);
    }
}

TEST(Math, FreeBitsFloor) {
    EXPECT_TRUE(vae_below_free_bits(0.5f, 1.0f));
    EXPECT_FALSE(vae_below_free_bits(1.0f, 1.0f)); // at the floor: the gradient goes on
    EXPECT_FALSE(vae_below_free_bits(2.0f, 1.0f));
    EXPECT_FALSE(vae_below_free_bits(0.5f, 0.0f)); // off
    EXPECT_FALSE(vae_below_free_bits(-1.0f, -0.5f));
    EXPECT_FALSE(vae_below_free_bits(NAN, 1.0f));
}

TEST(Math, AddScaledRoundsOnce) {
    // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: a product rounded to float first loses the 2^-24.
    const float s = 1.0f + 0x1p-12f;
    EXPECT_EQ(vae_add_scaled(-1.0f, s, s), 0x1p-11f + 0x1p-24f);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> value(0.0f, 3.0f);
    for (int trial = 0; trial < 1000; ++trial) {
        const float a = value(rng), b = value(rng), scale = value(rng);
        // The product of two floats is exact in double; its sum with a then rounds (almost always) as one rounding.
        EXPECT_EQ(vae_add_scaled(a, b, scale), (float)((double)a + (double)scale * (double)b)) << trial;
    }
}

TEST(Math, ReparameterisationAndItsGradient) {
    for (double logvar : {-30.0, -2.0, 0.0, 3.0, 30.0}) {
        double mu = 0.3, eps = -1.7;
        double z = mu + std::exp(0.5 * logvar) * eps;
        expect_close(vae_reparam_z((float)mu, (float)logvar, (float)eps), z, 1e-6, 1e-7, "z", logvar);
        // dz/dlogvar = 0.5 * std * eps, recovered from z - mu without stored eps.
        double dz = 0.9;
        expect_close(vae_reparam_grad_logvar((float)dz, (float)z, (float)mu), dz * 0.5 * std::exp(0.5 * logvar) * eps,
                     1e-5, 1e-7, "dz/dlogvar", logvar);
    }
}

TEST(Math, LogPriorMinusLogPosterior) {
    const double log_2pi = std::log(2.0 * M_PI);
    for (double logvar : {-8.0, -1.0, 0.0, 2.0})
        for (double z : {-2.0, 0.0, 1.5}) {
            double mu = 0.4;
            double log_prior = -0.5 * (log_2pi + z * z);
            double log_posterior = -0.5 * (log_2pi + logvar + (z - mu) * (z - mu) * std::exp(-logvar));
            expect_close(vae_log_prior_minus_log_posterior((float)z, (float)mu, (float)logvar), log_prior - log_posterior,
                         1e-5, 1e-5, "log p(z) - log q(z|x)", logvar);
        }
}

TEST(Math, ActivationsAndDerivatives) {
    const double h = 1e-4;
    for (int activation : {VAE_ACTIVATION_RELU, VAE_ACTIVATION_TANH, VAE_ACTIVATION_SOFTPLUS, VAE_ACTIVATION_GELU})
        for (double x : {-100.0, -20.0, -3.0, -0.5, 0.3, 2.0, 20.0, 100.0}) {
            double expected = 0, derivative = 0;
            switch (activation) {
            case VAE_ACTIVATION_RELU: expected = x > 0 ? x : 0; derivative = x > 0 ? 1 : 0; break;
            case VAE_ACTIVATION_TANH: expected = std::tanh(x); derivative = 1 - std::tanh(x) * std::tanh(x); break;
            case VAE_ACTIVATION_SOFTPLUS: expected = softplus64(x); derivative = sigmoid64(x); break;
            case VAE_ACTIVATION_GELU: {
                auto gelu = [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); };
                expected = gelu(x);
                derivative = (gelu(x + h) - gelu(x - h)) / (2 * h);
                break;
            }
            }
            expect_close(vae_activation_forward(activation, (float)x), expected, 1e-6, 1e-7, "activation", x);
            expect_close(vae_activation_derivative(activation, (float)x), derivative, 1e-5, 1e-6, "derivative", x);
        }
}

// Both backends take the gradient through an activation with this one
// function: a unit that is off passes nothing back, not even an infinite or
// NaN gradient (a product with the derivative 0 would pass NaN and make the
// GPU skip a step the CPU takes).
TEST(Math, ActivationBackwardKeepsNonFiniteGradientsBehindOffReluUnits) {
    const float infinity = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    for (float dpost : {infinity, -infinity, nan, 3.5f}) {
        EXPECT_EQ(vae_activation_backward(VAE_ACTIVATION_RELU, -1.0f, dpost), 0.0f) << dpost;
        EXPECT_EQ(vae_activation_backward(VAE_ACTIVATION_RELU, 0.0f, dpost), 0.0f) << dpost;
        const float on = vae_activation_backward(VAE_ACTIVATION_RELU, 2.0f, dpost);
        if (std::isnan(dpost)) EXPECT_TRUE(std::isnan(on));
        else EXPECT_EQ(on, dpost);
    }
    // Smooth activations multiply by the derivative.
    for (int activation : {VAE_ACTIVATION_TANH, VAE_ACTIVATION_SOFTPLUS, VAE_ACTIVATION_GELU})
        for (float pre : {-3.0f, -0.25f, 0.0f, 1.5f})
            EXPECT_EQ(vae_activation_backward(activation, pre, 0.75f), 0.75f * vae_activation_derivative(activation, pre))
                << activation << " at " << pre;
}

TEST(Math, AdamMatchesTorchFormula) {
    vae_adam_settings s = {};
    s.lr = 1e-3f; s.beta1 = 0.9f; s.beta2 = 0.999f; s.epsilon = 1e-8f; s.weight_decay = 0.0f;
    double p = 0.5, m = 0, v = 0;
    float pf = 0.5f, mf = 0, vf = 0;
    const double lr = 1e-3;
    const double grads[] = {0.3, -1.2, 0.05, 2.0, -0.7};
    for (int t = 1; t <= 5; ++t) {
        double g = grads[t - 1];
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        double bias1 = 1 - std::pow(0.9, t), bias2 = 1 - std::pow(0.999, t);
        p -= lr / bias1 * m / (std::sqrt(v) / std::sqrt(bias2) + 1e-8);
        vae_adam_update(&pf, &mf, &vf, (float)g, vae_adam_constants(&s, (uint64_t)(t - 1), 1.0f));
        expect_close(pf, p, 1e-6, 1e-9, "adam param", t);
    }
    // AdamW decays the parameter itself; Adam adds the decay to the gradient.
    s.lr = 0.01f;
    s.weight_decay = 0.1f;
    s.decoupled_weight_decay = 1;
    float decoupled = 1.0f, m1 = 0, v1 = 0;
    vae_adam_update(&decoupled, &m1, &v1, 0.0f, vae_adam_constants(&s, 0, 0.0f));
    EXPECT_NEAR(decoupled, 1.0f * (1 - 0.01f * 0.1f), 1e-7);
    s.decoupled_weight_decay = 0;
    float coupled = 1.0f, m2 = 0, v2 = 0;
    vae_adam_update(&coupled, &m2, &v2, 0.0f, vae_adam_constants(&s, 0, 0.0f));
    EXPECT_NEAR(coupled, 1.0f - 0.01f * 1.0f, 1e-5);  // first step moves by ~lr whatever the gradient's size
    // Clipping scales the gradient before the moments see it.
    s.weight_decay = 0.0f;
    s.clip_norm = 1.0f;
    float clipped = 0.0f, m3 = 0, v3 = 0;
    vae_adam_update(&clipped, &m3, &v3, 2.0f, vae_adam_constants(&s, 0, 16.0f));  // norm 4 -> scale ~1/4
    EXPECT_NEAR(m3, 0.1f * 2.0f * (1.0f / (4.0f + 1e-6f)), 1e-7);
}

TEST(Math, Schedules) {
    EXPECT_FLOAT_EQ(vae_schedule_beta(0, 2.0f, 0), 2.0f);
    EXPECT_FLOAT_EQ(vae_schedule_beta(0, 2.0f, 4), 0.5f);
    EXPECT_FLOAT_EQ(vae_schedule_beta(1, 2.0f, 4), 1.0f);
    EXPECT_FLOAT_EQ(vae_schedule_beta(3, 2.0f, 4), 2.0f);
    EXPECT_FLOAT_EQ(vae_schedule_beta(100, 2.0f, 4), 2.0f);
    EXPECT_FLOAT_EQ(vae_schedule_lr(5, VAE_LR_CONSTANT, 1e-3f, 0, 0, 100), 1e-3f);
    EXPECT_FLOAT_EQ(vae_schedule_lr(0, VAE_LR_COSINE, 1e-3f, 0, 10, 110), 1e-4f);
    EXPECT_FLOAT_EQ(vae_schedule_lr(9, VAE_LR_COSINE, 1e-3f, 0, 10, 110), 1e-3f);
    EXPECT_NEAR(vae_schedule_lr(60, VAE_LR_COSINE, 1e-3f, 0, 10, 110), 5e-4f, 1e-9);
    EXPECT_NEAR(vae_schedule_lr(110, VAE_LR_COSINE, 1e-3f, 1e-5f, 10, 110), 1e-5f, 1e-9);
    EXPECT_FLOAT_EQ(vae_clip_scale(4.0f, 0.0f), 1.0f);
    EXPECT_NEAR(vae_clip_scale(4.0f, 1.0f), 0.5f, 1e-6);
    EXPECT_FLOAT_EQ(vae_clip_scale(0.25f, 1.0f), 1.0f);
}

// bfloat16 rounding (train.precision = bf16) against a float64 reference that
// does not share the bit trick: of the two bfloat16 neighbours of x (its
// truncation and the next one out), the nearer, the even one on a tie, with
// the one past the largest bfloat16 standing for 2^128 as IEEE rounding has it.
using vae_test::float_bits;
using vae_test::float_from_bits;

double bfloat16_magnitude(uint32_t upper_bits) { // sign dropped; 0x7f80 stands for 2^128
    upper_bits &= 0x7fffu;
    return upper_bits == 0x7f80u ? std::ldexp(1.0, 128) : (double)float_from_bits(upper_bits << 16);
}
float bfloat16_reference(float x) {
    const uint32_t bits = float_bits(x), sign = bits & 0x80000000u;
    const uint32_t down = (bits & 0x7fffffffu) >> 16, up = down + 1;
    const double magnitude = std::fabs((double)x);
    const double below = magnitude - bfloat16_magnitude(down), above = bfloat16_magnitude(up) - magnitude;
    const uint32_t chosen = below < above ? down : above < below ? up : ((down & 1u) ? up : down);
    return float_from_bits(sign | (chosen << 16));
}

TEST(Math, Bfloat16RoundsToNearestEvenAndKeepsSpecials) {
    const float one = 1.0f, ulp = std::ldexp(1.0f, -7);
    EXPECT_EQ(vae_round_to_bfloat16(one), one);
    EXPECT_EQ(vae_round_to_bfloat16(one + ulp / 2), one) << "tie to even (down)";
    EXPECT_EQ(vae_round_to_bfloat16(one + 3 * ulp / 2), one + 2 * ulp) << "tie to even (up)";
    EXPECT_EQ(vae_round_to_bfloat16(one + ulp / 2 + std::ldexp(1.0f, -20)), one + ulp) << "just past the tie";
    EXPECT_EQ(vae_round_to_bfloat16(-(one + 3 * ulp / 2)), -(one + 2 * ulp));
    EXPECT_EQ(vae_bfloat16_bits(1.0f), 0x3f80u);
    const float largest = float_from_bits(0x7f7f0000u);
    EXPECT_EQ(vae_round_to_bfloat16(largest), largest);
    EXPECT_EQ(vae_round_to_bfloat16(std::numeric_limits<float>::max()), INFINITY) << "past the largest: infinity";
    EXPECT_EQ(vae_round_to_bfloat16(-INFINITY), -INFINITY);
    EXPECT_TRUE(std::isnan(vae_round_to_bfloat16(NAN)));
    EXPECT_TRUE(std::isnan(vae_round_to_bfloat16(float_from_bits(0x7f800001u)))) << "a NaN must not become infinity";
    EXPECT_TRUE(std::signbit(vae_round_to_bfloat16(-0.0f)));
    EXPECT_EQ(float_bits(vae_round_to_bfloat16(float_from_bits(0x00008000u))), 0u) << "subnormal tie to even";
    EXPECT_EQ(float_bits(vae_round_to_bfloat16(float_from_bits(0x00018000u))), 0x00020000u);

    std::mt19937 generator(20261122);
    for (int i = 0; i < 2000000; ++i) {
        const float x = float_from_bits((uint32_t)generator());
        if (std::isnan(x)) continue;
        const float got = vae_round_to_bfloat16(x), expected = bfloat16_reference(x);
        ASSERT_EQ(float_bits(got), float_bits(expected))
            << "x = " << x << " (bits " << std::hex << float_bits(x) << ")";
        ASSERT_EQ(float_bits(got) & 0xffffu, 0u);
    }
}

}  // namespace
