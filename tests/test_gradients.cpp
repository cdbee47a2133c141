// Finite-difference check of the whole objective's gradient with respect to
// every parameter tensor, on small models with each activation and each
// likelihood, and on small convolutional models (conv, convt, flatten and
// unflatten on both sides, stride 2, padding 0 and 1, 3 channels, odd image
// sizes) (the CPU reference backend, through the training step).
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
    // convolutional cases: the layer lists and the images' shape
    std::vector<vae_layer_spec> encoder = {}, decoder = {};
    vae_image_shape image = {0, 0, 0};
};

vae_layer_spec dense(int width) { return vae_layer_spec{VAE_LAYER_DENSE, width, 0, 1, 0, 0, 0, 0}; }
vae_layer_spec dense_image(int c, int h, int w) { return vae_layer_spec{VAE_LAYER_DENSE, c * h * w, 0, 1, 0, c, h, w}; }
vae_layer_spec conv(int channels, int k, int s, int p) { return vae_layer_spec{VAE_LAYER_CONV, channels, k, s, p, 0, 0, 0}; }
vae_layer_spec convt(int channels, int k, int s, int p) {
    return vae_layer_spec{VAE_LAYER_CONV_TRANSPOSE, channels, k, s, p, 0, 0, 0};
}
const int kOut = 0;  // the decoder's last layer: the image's channels

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
    if (!c.encoder.empty()) {
        config->hidden_count = config->decoder_hidden_count = 0;
        config->encoder_layer_count = (int)c.encoder.size();
        for (size_t i = 0; i < c.encoder.size(); ++i) config->encoder_layers[i] = c.encoder[i];
        config->decoder_layer_count = (int)c.decoder.size();
        for (size_t i = 0; i < c.decoder.size(); ++i) config->decoder_layers[i] = c.decoder[i];
    }
}

int input_dim(const GradientCase &c) { return c.image.channels ? c.image.channels * c.image.height * c.image.width : 6; }

double loss_at(const vae_config &config, int dim, const vae_image_shape *image, const std::vector<float> &parameters,
               const std::vector<float> &x, int rows, const std::vector<float> &eps) {
    double loss = 0;
    EXPECT_EQ(vae_reference_loss_and_gradients(&config, dim, image, parameters.data(), x.data(), rows, eps.data(), &loss,
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
    const int dim = input_dim(c), rows = 4;
    const vae_image_shape *image = c.image.channels ? &c.image : nullptr;
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, dim, image, &model), VAE_OK) << vae_last_error();
    ASSERT_EQ(model.convolutional, c.encoder.empty() ? 0 : 1);
    uint64_t seed = 1000 + (uint64_t)c.activation * 10 + (uint64_t)c.likelihood;
    std::vector<float> parameters = vae_test::random_normal(model.parameter_count, seed, 0.5f);
    std::vector<float> x = vae_test::random_uniform((size_t)rows * dim, seed + 1, 0.0f, 1.0f);
    std::vector<float> eps = vae_test::random_normal((size_t)c.samples * rows * config.latent_dim, seed + 2);
    std::vector<float> gradients(model.parameter_count);
    double loss = 0;
    ASSERT_EQ(vae_reference_loss_and_gradients(&config, dim, image, parameters.data(), x.data(), rows, eps.data(), &loss,
                                               gradients.data()),
              VAE_OK)
        << vae_last_error();
    ASSERT_TRUE(std::isfinite(loss));

    int layer_count = model.encoder_layer_count + model.decoder_layer_count;
    for (int i = 0; i < layer_count; ++i) {
        const vae_layer &layer = model.layers[i];
        for (int part = 0; part < 2; ++part) {
            size_t offset = part == 0 ? layer.weight_offset : layer.bias_offset;
            size_t count = part == 0 ? layer.weight_count : layer.bias_count;
            const char *name = part == 0 ? layer.weight_name : layer.bias_name;
            std::vector<float> analytic, numeric;
            for (size_t k = 0; k < count; ++k) {
                std::vector<float> shifted = parameters;
                // Central difference in float32: a step large enough to rise
                // above rounding, small enough for the curvature.
                const float h = 2e-3f;
                shifted[offset + k] = parameters[offset + k] + h;
                double plus = loss_at(config, dim, image, shifted, x, rows, eps);
                shifted[offset + k] = parameters[offset + k] - h;
                double minus = loss_at(config, dim, image, shifted, x, rows, eps);
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
    // 1x8x8: conv 8 -> 4 (s2 p1) -> 2 (s1 p0); decoder 3x2x2 -> convt 5x5 (s2 p0) -> out 8x8 (s2 p1)
    {"conv_bernoulli_tanh", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_BERNOULLI, 1, 1.0f, "",
     {conv(3, 3, 2, 1), conv(2, 3, 1, 0), dense(5)},
     {dense(5), dense_image(3, 2, 2), convt(3, 3, 2, 0), convt(kOut, 2, 2, 1)}, {1, 8, 8}},
    // 1x7x9 with a Gaussian (2 output channels): 7x9 -> 4x5 -> ... -> 7x9
    {"conv_gaussian_gelu_odd_sizes", VAE_ACTIVATION_GELU, VAE_LIKELIHOOD_GAUSSIAN, 2, 1.0f, "",
     {conv(3, 3, 2, 1), dense(4)}, {dense_image(3, 4, 5), convt(kOut, 3, 2, 1)}, {1, 7, 9}},
    // a convt in the encoder, a conv then dense layers in the decoder (flatten on the decoder side)
    {"conv_mixed_relu_fixed", VAE_ACTIVATION_RELU, VAE_LIKELIHOOD_GAUSSIAN_FIXED, 2, 1.0f, "",
     {convt(2, 2, 1, 0), conv(3, 3, 2, 0), dense(3)}, {dense_image(3, 3, 3), conv(2, 2, 1, 0), dense(4)}, {1, 4, 5}},
    // 3-channel images (RGB): channels not a power of two on both sides
    {"conv_rgb_softplus", VAE_ACTIVATION_SOFTPLUS, VAE_LIKELIHOOD_BERNOULLI, 1, 1.0f, "",
     {conv(3, 3, 2, 1)}, {dense_image(3, 3, 3), convt(kOut, 3, 2, 1)}, {3, 5, 5}},
};

INSTANTIATE_TEST_SUITE_P(AllActivationsAndLikelihoods, FiniteDifferences, ::testing::ValuesIn(gradient_cases),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
