// Finite-difference check of the whole objective's gradient with respect to
// every parameter tensor, on small models with each activation and each
// likelihood (the CPU reference backend, through the training step).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "model/model.h"
#include "model/train_step.h"
}

namespace {

struct GradientCase {
    const char *name;
    vae_activation activation;
    vae_likelihood likelihood;
    int samples;
    float beta;
    const char *hidden;
};

void PrintTo(const GradientCase &c, std::ostream *os) { *os << c.name; }

void configure(vae_config *config, const GradientCase &c) {
    vae_config_defaults(config);
    config->latent_dim = 3;
    config->activation = c.activation;
    config->likelihood = c.likelihood;
    config->gaussian_fixed_logvar = -0.5f;
    config->samples = c.samples;
    config->beta = c.beta;
    std::string assignment = std::string("model.hidden=") + c.hidden;
    ASSERT_EQ(vae_config_set(config, assignment.c_str()), VAE_OK) << vae_last_error();
    // decoder mirrors the encoder unless told otherwise
    std::string decoder = std::string("model.decoder_hidden=") + c.hidden;
    ASSERT_EQ(vae_config_set(config, decoder.c_str()), VAE_OK) << vae_last_error();
}

double loss_at(const vae_config &config, int dim, const std::vector<float> &parameters, const std::vector<float> &x,
               int rows, const std::vector<float> &eps) {
    double loss = 0;
    EXPECT_EQ(vae_reference_loss_and_gradients(&config, dim, parameters.data(), x.data(), rows, eps.data(), &loss,
                                               nullptr),
              VAE_OK)
        << vae_last_error();
    return loss;
}

class FiniteDifferences : public ::testing::TestWithParam<GradientCase> {};

TEST_P(FiniteDifferences, EveryTensorMatches) {
    const GradientCase &c = GetParam();
    vae_config config;
    configure(&config, c);
    const int dim = 6, rows = 4;
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, dim, &model), VAE_OK) << vae_last_error();
    uint64_t seed = 1000 + (uint64_t)c.activation * 10 + (uint64_t)c.likelihood;
    std::vector<float> parameters = vae_test::random_normal(model.parameter_count, seed, 0.5f);
    std::vector<float> x = vae_test::random_uniform((size_t)rows * dim, seed + 1, 0.0f, 1.0f);
    std::vector<float> eps = vae_test::random_normal((size_t)c.samples * rows * config.latent_dim, seed + 2);
    std::vector<float> gradients(model.parameter_count);
    double loss = 0;
    ASSERT_EQ(vae_reference_loss_and_gradients(&config, dim, parameters.data(), x.data(), rows, eps.data(), &loss,
                                               gradients.data()),
              VAE_OK)
        << vae_last_error();
    ASSERT_TRUE(std::isfinite(loss));

    int layer_count = model.encoder_layer_count + model.decoder_layer_count;
    for (int i = 0; i < layer_count; ++i) {
        const vae_layer &layer = model.layers[i];
        for (int part = 0; part < 2; ++part) {
            size_t offset = part == 0 ? layer.weight_offset : layer.bias_offset;
            size_t count = part == 0 ? (size_t)layer.in * layer.out : (size_t)layer.out;
            const char *name = part == 0 ? layer.weight_name : layer.bias_name;
            std::vector<float> analytic, numeric;
            for (size_t k = 0; k < count; ++k) {
                std::vector<float> shifted = parameters;
                // Central difference in float32: a step large enough to rise
                // above rounding, small enough for the curvature.
                const float h = 2e-3f;
                shifted[offset + k] = parameters[offset + k] + h;
                double plus = loss_at(config, dim, shifted, x, rows, eps);
                shifted[offset + k] = parameters[offset + k] - h;
                double minus = loss_at(config, dim, shifted, x, rows, eps);
                numeric.push_back((float)((plus - minus) / (2.0 * h)));
                analytic.push_back(gradients[offset + k]);
            }
            double error = vae_test::relative_error(analytic, numeric);
            EXPECT_LT(error, 1e-2) << c.name << ": " << name << " analytic vs finite differences";
        }
    }
}

const GradientCase gradient_cases[] = {
    {"bernoulli_tanh", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_BERNOULLI, 1, 1.0f, "5"},
    {"bernoulli_softplus_two_samples", VAE_ACTIVATION_SOFTPLUS, VAE_LIKELIHOOD_BERNOULLI, 2, 0.5f, "5,4"},
    {"gaussian_gelu", VAE_ACTIVATION_GELU, VAE_LIKELIHOOD_GAUSSIAN, 1, 1.0f, "4"},
    {"gaussian_fixed_relu", VAE_ACTIVATION_RELU, VAE_LIKELIHOOD_GAUSSIAN_FIXED, 3, 2.0f, "5"},
    {"gaussian_tanh_no_hidden", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_GAUSSIAN, 2, 1.0f, ""},
};

INSTANTIATE_TEST_SUITE_P(AllActivationsAndLikelihoods, FiniteDifferences, ::testing::ValuesIn(gradient_cases),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
