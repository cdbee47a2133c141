// Finite-difference check of the whole objective's gradient with respect to
// every parameter tensor, on small models with each activation and each
// likelihood, and on small convolutional models (conv, convt, flatten and
// unflatten on both sides, stride 2, padding 0 and 1, 3 channels, odd image
// sizes) (the CPU reference backend, through the training step), for both
// objectives (model.objective = elbo | iwae); and what the IWAE objective
// is at one sample: the ELBO with the sampled KL in place of the closed form.
#include <gtest/gtest.h>

#include <algorithm>
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
    vae_objective objective = VAE_OBJECTIVE_ELBO;
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
    config->objective = c.objective;
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
    uint64_t seed = 1000 + (uint64_t)c.activation * 10 + (uint64_t)c.likelihood + 100 * (uint64_t)c.objective;
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
    // The importance-weighted objective: K = 1, 3, 5; tanh and relu; each
    // likelihood; beta scales log p(z) - log q(z|x) (the annealed bound).
    {"iwae_bernoulli_tanh_K1", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_BERNOULLI, 1, 1.0f, "5", {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
    {"iwae_bernoulli_tanh_K3", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_BERNOULLI, 3, 1.0f, "5,4", {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
    {"iwae_bernoulli_relu_K5", VAE_ACTIVATION_RELU, VAE_LIKELIHOOD_BERNOULLI, 5, 1.0f, "5", {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
    {"iwae_gaussian_relu_K3_beta0.5", VAE_ACTIVATION_RELU, VAE_LIKELIHOOD_GAUSSIAN, 3, 0.5f, "4", {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
    {"iwae_gaussian_fixed_tanh_K5_beta2", VAE_ACTIVATION_TANH, VAE_LIKELIHOOD_GAUSSIAN_FIXED, 5, 2.0f, "5",
     {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
    {"iwae_bernoulli_relu_K1_no_hidden", VAE_ACTIVATION_RELU, VAE_LIKELIHOOD_BERNOULLI, 1, 1.0f, "",
     {}, {}, {0, 0, 0}, VAE_OBJECTIVE_IWAE},
};

INSTANTIATE_TEST_SUITE_P(AllActivationsAndLikelihoods, FiniteDifferences, ::testing::ValuesIn(gradient_cases),
                         [](const auto &info) {
                             std::string name = info.param.name;
                             std::replace(name.begin(), name.end(), '.', '_');
                             return name;
                         });

// ---- the IWAE objective at one sample

struct LossAndGradients {
    double loss = 0;
    std::vector<float> gradients;
};

LossAndGradients reference(const vae_config &config, int dim, const std::vector<float> &parameters,
                           const std::vector<float> &x, int rows, const std::vector<float> &eps) {
    LossAndGradients result;
    vae_model model;
    EXPECT_EQ(vae_model_build(&config, dim, nullptr, &model), VAE_OK) << vae_last_error();
    result.gradients.assign(model.parameter_count, NAN);
    EXPECT_EQ(vae_reference_loss_and_gradients(&config, dim, nullptr, parameters.data(), x.data(), rows, eps.data(),
                                               &result.loss, result.gradients.data()),
              VAE_OK)
        << vae_last_error();
    return result;
}

// mean over rows of [log q(z|x) - log p(z)] (the sampled KL) and of the
// closed-form KL, in double, from the encoder's mu and logvar (run on the CPU
// backend) and eps: z = mu + exp(logvar/2) eps.
void kl_estimates(const vae_config &config, int dim, const std::vector<float> &parameters,
                  const std::vector<float> &x, int rows, const std::vector<float> &eps, double *sampled,
                  double *closed_form) {
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, dim, nullptr, &model), VAE_OK) << vae_last_error();
    vae_backend *backend = nullptr;
    ASSERT_EQ(vae_backend_create_cpu(&backend), VAE_OK) << vae_last_error();
    std::vector<float> parameter_copy = parameters;
    vae_step *step = nullptr;
    ASSERT_EQ(vae_step_create(&step, backend, &model, &config, rows, 1, parameter_copy.data(), 0), VAE_OK)
        << vae_last_error();
    const vae_step_buffers *b = vae_step_get_buffers(step);
    std::copy(x.begin(), x.end(), b->x);
    ASSERT_EQ(vae_step_encode(step), VAE_OK) << vae_last_error();
    const int latent = config.latent_dim;
    *sampled = *closed_form = 0;
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < latent; ++j) {
            double mu = b->mu_logvar[(size_t)r * 2 * latent + j], lv = b->mu_logvar[(size_t)r * 2 * latent + latent + j];
            double e = eps[(size_t)r * latent + j], z = mu + std::exp(0.5 * lv) * e;
            // log N(z; mu, e^lv) - log N(z; 0, 1): the 2 pi terms cancel.
            *sampled += (-0.5 * (lv + e * e) + 0.5 * z * z) / rows;
            *closed_form += 0.5 * (mu * mu + std::expm1(lv) - lv) / rows;
        }
    vae_step_destroy(step);
    vae_backend_destroy(backend);
}

struct OneSampleModel {
    vae_config config;
    vae_model model;
    int dim = 7, rows = 5;
    std::vector<float> parameters, x, eps;
};

OneSampleModel one_sample_model(vae_activation activation, vae_likelihood likelihood, float beta) {
    OneSampleModel m;
    GradientCase c{"one_sample", activation, likelihood, 1, beta, "6,4"};
    configure(&m.config, c);
    EXPECT_EQ(vae_model_build(&m.config, m.dim, nullptr, &m.model), VAE_OK) << vae_last_error();
    m.parameters = vae_test::random_normal(m.model.parameter_count, 4242, 0.5f);
    m.x = vae_test::random_uniform((size_t)m.rows * m.dim, 4243, 0.0f, 1.0f);
    m.eps = vae_test::random_normal((size_t)m.rows * m.config.latent_dim, 4244);
    return m;
}

// With beta = 0 both objectives are -mean log p(x|z_1): the same loss and the
// same gradient of every parameter, to the bit (the weight of the one draw is
// exactly 1, the KL terms are exactly 0).
TEST(IwaeObjective, OneSampleWithoutKlWeightIsTheElboExactly) {
    for (vae_likelihood likelihood : {VAE_LIKELIHOOD_BERNOULLI, VAE_LIKELIHOOD_GAUSSIAN}) {
        SCOPED_TRACE(likelihood);
        OneSampleModel m = one_sample_model(VAE_ACTIVATION_TANH, likelihood, 0.0f);
        LossAndGradients elbo = reference(m.config, m.dim, m.parameters, m.x, m.rows, m.eps);
        m.config.objective = VAE_OBJECTIVE_IWAE;
        LossAndGradients iwae = reference(m.config, m.dim, m.parameters, m.x, m.rows, m.eps);
        EXPECT_EQ(iwae.loss, elbo.loss);
        ASSERT_EQ(iwae.gradients.size(), elbo.gradients.size());
        for (size_t i = 0; i < elbo.gradients.size(); ++i) ASSERT_EQ(iwae.gradients[i], elbo.gradients[i]) << i;
    }
}

// With beta > 0 the IWAE objective at one sample is the ELBO with the sampled
// KL: the loss differs from the engine's ELBO (closed-form KL) by exactly
// beta * (sampled - closed form), the decoder's gradients are the same to the
// bit, and the encoder's differ (the KL estimator's gradient).
TEST(IwaeObjective, OneSampleIsTheElboWithTheSampledKl) {
    for (vae_activation activation : {VAE_ACTIVATION_TANH, VAE_ACTIVATION_RELU}) {
        SCOPED_TRACE(activation);
        const float beta = 0.75f;
        OneSampleModel m = one_sample_model(activation, VAE_LIKELIHOOD_BERNOULLI, beta);
        double sampled = 0, closed_form = 0;
        kl_estimates(m.config, m.dim, m.parameters, m.x, m.rows, m.eps, &sampled, &closed_form);
        LossAndGradients elbo = reference(m.config, m.dim, m.parameters, m.x, m.rows, m.eps);
        m.config.objective = VAE_OBJECTIVE_IWAE;
        LossAndGradients iwae = reference(m.config, m.dim, m.parameters, m.x, m.rows, m.eps);
        ASSERT_GT(std::fabs(sampled - closed_form), 0.05) << "the draw should tell the two KL estimates apart";
        EXPECT_NEAR(iwae.loss, elbo.loss + beta * (sampled - closed_form), 1e-5 * std::fabs(elbo.loss));
        const size_t decoder_start = m.model.layers[m.model.encoder_layer_count].weight_offset;
        for (size_t i = decoder_start; i < elbo.gradients.size(); ++i)
            ASSERT_EQ(iwae.gradients[i], elbo.gradients[i]) << "decoder gradient " << i;
        std::vector<float> elbo_encoder(elbo.gradients.begin(), elbo.gradients.begin() + (long)decoder_start);
        std::vector<float> iwae_encoder(iwae.gradients.begin(), iwae.gradients.begin() + (long)decoder_start);
        EXPECT_GT(vae_test::relative_error(iwae_encoder, elbo_encoder), 1e-3);
    }
}

}  // namespace
