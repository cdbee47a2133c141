// The model's layer table from layer lists: shapes inferred from the image,
// PyTorch names (nn.Sequential module indices) and weight layouts, PyTorch's
// initialisation bounds, widths models unchanged, and every misfit refused
// before training with a message naming the layer and the shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

extern "C" {
#include "model/model.h"
}

namespace {

vae_layer_spec dense(int width) { return vae_layer_spec{VAE_LAYER_DENSE, width, 0, 1, 0, 0, 0, 0}; }
vae_layer_spec dense_image(int c, int h, int w) { return vae_layer_spec{VAE_LAYER_DENSE, c * h * w, 0, 1, 0, c, h, w}; }
vae_layer_spec conv(int channels, int k, int s, int p) { return vae_layer_spec{VAE_LAYER_CONV, channels, k, s, p, 0, 0, 0}; }
vae_layer_spec convt(int channels, int k, int s, int p) {
    return vae_layer_spec{VAE_LAYER_CONV_TRANSPOSE, channels, k, s, p, 0, 0, 0};
}
const int kOut = 0;

vae_config layer_config(const std::vector<vae_layer_spec> &encoder, const std::vector<vae_layer_spec> &decoder,
                        int latent = 32) {
    vae_config config;
    vae_config_defaults(&config);
    snprintf(config.data_path, sizeof config.data_path, "/data/points.npy");
    config.latent_dim = latent;
    config.hidden_count = config.decoder_hidden_count = 0;
    config.encoder_layer_count = (int)encoder.size();
    for (size_t i = 0; i < encoder.size(); ++i) config.encoder_layers[i] = encoder[i];
    config.decoder_layer_count = (int)decoder.size();
    for (size_t i = 0; i < decoder.size(); ++i) config.decoder_layers[i] = decoder[i];
    return config;
}

std::vector<std::string> names(const vae_model &model) {
    std::vector<std::string> result;
    for (int i = 0; i < model.encoder_layer_count + model.decoder_layer_count; ++i) {
        result.push_back(model.layers[i].weight_name);
        result.push_back(model.layers[i].bias_name);
    }
    return result;
}

// The shipped kind of model: two strided convs down, two transposed convs up.
const std::vector<vae_layer_spec> kEncoder = {conv(32, 4, 2, 1), conv(64, 4, 2, 1), dense(256)};
const std::vector<vae_layer_spec> kDecoder = {dense(256), dense_image(64, 7, 7), convt(32, 4, 2, 1),
                                              convt(kOut, 4, 2, 1)};
const vae_image_shape kMnist = {1, 28, 28};

TEST(ModelLayers, ConvolutionalNamesFollowAnNnSequentialPerSide) {
    vae_config config = layer_config(kEncoder, kDecoder);
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, 784, &kMnist, &model), VAE_OK) << vae_last_error();
    EXPECT_EQ(model.convolutional, 1);
    // Indices as PyTorch prints this nn.Sequential pair (bench/vae_torch.py):
    // encoder Unflatten, Conv2d, ReLU, Conv2d, ReLU, Flatten, Linear, ReLU, Linear;
    // decoder Linear, ReLU, Linear, ReLU, Unflatten, ConvT, ReLU, ConvT, Flatten.
    const std::vector<std::string> expected = {
        "encoder.1.weight", "encoder.1.bias", "encoder.3.weight", "encoder.3.bias", "encoder.6.weight",
        "encoder.6.bias",   "encoder.8.weight", "encoder.8.bias", "decoder.0.weight", "decoder.0.bias",
        "decoder.2.weight", "decoder.2.bias", "decoder.5.weight", "decoder.5.bias", "decoder.7.weight",
        "decoder.7.bias"};
    EXPECT_EQ(names(model), expected);
    ASSERT_EQ(model.encoder_layer_count, 4);
    ASSERT_EQ(model.decoder_layer_count, 4);
    const vae_layer &first = model.layers[0];
    EXPECT_EQ(first.kind, VAE_LAYER_CONV);
    EXPECT_EQ(first.weight_rank, 4);
    EXPECT_EQ(std::vector<int>(first.weight_shape, first.weight_shape + 4), (std::vector<int>{32, 1, 4, 4}));
    EXPECT_EQ(first.geometry.out_height, 14);
    EXPECT_EQ(model.layers[1].geometry.out_width, 7);
    EXPECT_EQ(model.layers[2].in, 64 * 7 * 7);
    const vae_layer &up = model.layers[6];  // ConvTranspose2d(64, 32): weight [in, out, k, k]
    EXPECT_EQ(up.kind, VAE_LAYER_CONV_TRANSPOSE);
    EXPECT_EQ(std::vector<int>(up.weight_shape, up.weight_shape + 4), (std::vector<int>{64, 32, 4, 4}));
    EXPECT_EQ(up.fan_in, 32 * 16);  // PyTorch: weight.size(1) * k * k
    EXPECT_EQ(up.bias_count, 32u);
    const vae_layer &last = model.layers[7];
    EXPECT_EQ(last.out, 784);
    EXPECT_EQ(last.activation, VAE_ACTIVATION_IDENTITY);
    EXPECT_EQ(model.layers[6].activation, config.activation);
    size_t total = 0;
    for (int i = 0; i < 8; ++i) total += model.layers[i].weight_count + model.layers[i].bias_count;
    EXPECT_EQ(total, model.parameter_count);
    // 32*16+32 + 64*32*16+64 + 3136*256+256 + 256*64+64 + 32*256+256 + 256*3136+3136 + 64*32*16+32 + 32*16+1
    EXPECT_EQ(model.parameter_count, (size_t)(544 + 32832 + 803072 + 16448 + 8448 + 805952 + 32800 + 513));
}

TEST(ModelLayers, GaussianDecoderEndsWithTwiceTheChannels) {
    vae_config config = layer_config(kEncoder, kDecoder);
    config.likelihood = VAE_LIKELIHOOD_GAUSSIAN;
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, 784, &kMnist, &model), VAE_OK) << vae_last_error();
    EXPECT_EQ(model.layers[7].geometry.out_channels, 2);
    EXPECT_EQ(model.layers[7].out, model.output_width);
}

TEST(ModelLayers, DenseOnlyListsAreTheWidthsModel) {
    vae_config widths;
    vae_config_defaults(&widths);
    widths.hidden_count = 2;
    widths.hidden[0] = 300;
    widths.hidden[1] = 100;
    widths.decoder_hidden_count = 1;
    widths.decoder_hidden[0] = 200;
    vae_config lists = layer_config({dense(300), dense(100)}, {dense(200)}, widths.latent_dim);
    vae_model a, b;
    ASSERT_EQ(vae_model_build(&widths, 784, &kMnist, &a), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_model_build(&lists, 784, nullptr, &b), VAE_OK) << vae_last_error();
    EXPECT_EQ(a.convolutional, 0);
    EXPECT_EQ(b.convolutional, 0);
    EXPECT_EQ(names(a), names(b));
    EXPECT_EQ(names(a), (std::vector<std::string>{"encoder.0.weight", "encoder.0.bias", "encoder.1.weight",
                                                  "encoder.1.bias", "encoder.2.weight", "encoder.2.bias",
                                                  "decoder.0.weight", "decoder.0.bias", "decoder.1.weight",
                                                  "decoder.1.bias"}));
    ASSERT_EQ(a.parameter_count, b.parameter_count);
    std::vector<float> pa(a.parameter_count), pb(b.parameter_count);
    vae_model_init_parameters(&a, 7, 0.0f, pa.data());
    vae_model_init_parameters(&b, 7, 0.0f, pb.data());
    EXPECT_EQ(pa, pb);
}

// The evaluation sizes its batches by this count: a conv decoder's workspace
// (an unfolded matrix per image, larger than the activations here) must be in
// it, or an IWAE batch under the activation budget overruns it several times.
TEST(ModelLayers, DecoderRowFloatsCountActivationsAndTheLargestConvWorkspace) {
    vae_config config = layer_config(kEncoder, kDecoder);
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, 784, &kMnist, &model), VAE_OK) << vae_last_error();
    // latent 32 + output 784 + twice each decoder layer's output (256, 64x7x7, 32x14x14, 784)
    const size_t activations = 32 + 784 + 2 * (256 + 3136 + 6272 + 784);
    const size_t first_up = vae_conv_workspace_floats(&model.layers[6].geometry, 1);
    const size_t last_up = vae_conv_workspace_floats(&model.layers[7].geometry, 1);
    ASSERT_GT(first_up, 0u);
    ASSERT_NE(first_up, last_up);
    EXPECT_EQ(vae_model_decoder_floats_per_row(&model), activations + std::max(first_up, last_up));
    // The budget divides by a per-row count: the workspace is linear in the batch.
    EXPECT_EQ(vae_conv_workspace_floats(&model.layers[6].geometry, 1000), 1000 * first_up);
    // A widths model has no workspace.
    vae_config widths = layer_config({dense(300)}, {dense(200)}, 20);
    vae_model dense_model;
    ASSERT_EQ(vae_model_build(&widths, 784, nullptr, &dense_model), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_model_decoder_floats_per_row(&dense_model), (size_t)(20 + 784 + 2 * (200 + 784)));
}

// PyTorch's default bound 1/sqrt(fan_in) for weight and bias: every value
// inside it, and the extreme draws near it (a wrong fan_in, e.g. in*k*k for a
// transposed convolution, would move the bound by a factor of 2 here).
TEST(ModelLayers, InitialisationUsesPyTorchFanIn) {
    vae_config config = layer_config(kEncoder, kDecoder);
    vae_model model;
    ASSERT_EQ(vae_model_build(&config, 784, &kMnist, &model), VAE_OK) << vae_last_error();
    std::vector<float> parameters(model.parameter_count);
    vae_model_init_parameters(&model, 11, 0.0f, parameters.data());
    for (int i = 0; i < model.encoder_layer_count + model.decoder_layer_count; ++i) {
        const vae_layer &layer = model.layers[i];
        double bound = 1.0 / std::sqrt((double)layer.fan_in);
        float largest = 0.0f;
        for (size_t k = 0; k < layer.weight_count; ++k) {
            float value = std::fabs(parameters[layer.weight_offset + k]);
            EXPECT_LE(value, bound * (1 + 1e-6)) << layer.weight_name;
            largest = std::max(largest, value);
        }
        EXPECT_GT(largest, 0.9 * bound) << layer.weight_name;
        for (size_t k = 0; k < layer.bias_count; ++k)
            EXPECT_LE(std::fabs(parameters[layer.bias_offset + k]), bound * (1 + 1e-6)) << layer.bias_name;
    }
}

// Builds and expects a refusal whose message holds every fragment.
void expect_refused(const vae_config &config, int dim, const vae_image_shape *image,
                    const std::vector<std::string> &fragments) {
    vae_model model;
    EXPECT_EQ(vae_model_build(&config, dim, image, &model), VAE_ERROR_INVALID_ARGUMENT);
    std::string message = vae_last_error();
    for (const std::string &fragment : fragments)
        EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nmissing: " << fragment;
}

TEST(ModelLayers, KernelLargerThanThePaddedInputIsRefused) {
    // 28 -> 14 -> 7 -> 2 (k4 s2 p0) -> a k5 kernel on 2x2 padded by 0
    vae_config config = layer_config({conv(8, 4, 2, 1), conv(8, 4, 2, 1), conv(8, 4, 2, 0), conv(8, 5, 1, 0)},
                                     kDecoder);
    expect_refused(config, 784, &kMnist, {"encoder layer 4", "'conv 8 k5 s1 p0'", "8x2x2", "padded by 0"});
}

TEST(ModelLayers, DecoderNotEndingAtTheImageIsRefused) {
    vae_config config = layer_config(kEncoder, {dense_image(64, 7, 7), convt(kOut, 4, 2, 1)});
    expect_refused(config, 784, &kMnist, {"decoder layer 2", "'convt out k4 s2 p1'", "1x14x14", "1x28x28"});
    config.likelihood = VAE_LIKELIHOOD_GAUSSIAN;
    config.decoder_layers[1] = convt(1, 4, 2, 1);
    config.decoder_layers[0] = dense_image(64, 14, 14);
    expect_refused(config, 784, &kMnist, {"decoder layer 2", "1x28x28", "2x28x28", "gaussian"});
}

TEST(ModelLayers, DenseImageFollowedByADenseLayerIsRefused) {
    vae_config config = layer_config(kEncoder, {dense_image(64, 7, 7), dense(100)});
    expect_refused(config, 784, &kMnist, {"decoder layer 1", "'dense 64x7x7'", "layer 2 'dense 100'"});
    config = layer_config(kEncoder, {dense(100), dense_image(64, 7, 7)});
    expect_refused(config, 784, &kMnist, {"decoder layer 2", "'dense 64x7x7'", "implicit dense output layer"});
}

TEST(ModelLayers, ConvLayersOnDataOfUnknownShapeAreRefusedNamingTheData) {
    vae_config config = layer_config(kEncoder, kDecoder);
    expect_refused(config, 784, nullptr, {"encoder layer 1", "'conv 32 k4 s2 p1'", "/data/points.npy", "image shape"});
    config = layer_config({dense(64)}, kDecoder);
    expect_refused(config, 784, nullptr, {"decoder layer 4", "'convt out k4 s2 p1'", "/data/points.npy"});
}

TEST(ModelLayers, ConvAfterAFlatLayerIsRefused) {
    vae_config config = layer_config(kEncoder, {dense(256), convt(kOut, 4, 2, 1)});
    expect_refused(config, 784, &kMnist, {"decoder layer 2", "256 flat values", "dense CxHxW"});
    config = layer_config({conv(kOut, 4, 2, 1)}, kDecoder);
    expect_refused(config, 784, &kMnist, {"encoder layer 1", "'conv out k4 s2 p1'", "'out'"});
}

TEST(ModelLayers, ImageShapeMustHoldTheInput) {
    vae_config config = layer_config(kEncoder, kDecoder);
    vae_image_shape wrong = {3, 28, 28};
    expect_refused(config, 784, &wrong, {"3x28x28", "784"});
}

}  // namespace
