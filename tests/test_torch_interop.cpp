// The engine against PyTorch: scripts/torch_check.py loads a checkpoint into
// bench/vae_torch.py's TorchVAE (strict state_dict load), re-draws the
// engine's evaluation noise and dynamic binarisation with its own numpy
// Philox, computes the ELBO (and IWAE estimate) in float64 and compares them
// with `vae eval` on the same points; hierarchical models (model.latent_groups)
// go into TorchHierarchicalVAE the same way. Skipped, visibly, without PyTorch or
// without Fashion-MNIST.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

extern "C" {
#include "io/checkpoint.h"
}
#include "test_support.h"
#include "vae/vae.h"
#include "vae_philox.h"

namespace {

const char *const kPython = "/usr/bin/python3";

using vae_test::CommandResult;

bool torch_available() {
    return std::system((std::string(kPython) + " -c 'import torch, numpy' >/dev/null 2>&1").c_str()) == 0;
}

std::string script() { return std::string(kPython) + " " + VAE_SOURCE_DIR + "/scripts/torch_check.py"; }

// The last line of output that parses as a JSON object (caller deletes).
cJSON *last_json_line(const std::string &output) {
    size_t end = output.size();
    while (end > 0) {
        size_t begin = output.rfind('\n', end - 1);
        begin = begin == std::string::npos ? 0 : begin + 1;
        std::string line = output.substr(begin, end - begin);
        if (!line.empty() && line[0] == '{') return cJSON_Parse(line.c_str());
        if (begin == 0) break;
        end = begin - 1;
    }
    return nullptr;
}

double number(const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsNumber(item) ? item->valuedouble : NAN;
}

std::string hex_bits(float value) {
    char text[16];
    std::snprintf(text, sizeof text, "%08x", vae_test::float_bits(value));
    return text;
}

std::vector<std::string> string_array(const cJSON *object, const char *key) {
    std::vector<std::string> out;
    const cJSON *array = cJSON_GetObjectItemCaseSensitive(object, key);
    const cJSON *item = nullptr;
    cJSON_ArrayForEach(item, array) {
        if (cJSON_IsString(item)) out.push_back(item->valuestring);
    }
    return out;
}

// Trains 784-64-6 for one epoch on 2000 examples and returns the checkpoint.
// latent 6 is not a multiple of 4 (partial Philox blocks), and evaluation
// batches of 64 over 200 test points leave a remainder batch of 8.
const char *const kDenseModel = "[model]\nlatent_dim = 6\nhidden = 64\n";
// Strided convs down to 8x7x7, transposed convs back up; channels and the
// latent size are not powers of two.
const char *const kConvModel =
    "[model]\nlatent_dim = 6\nencoder = conv 6 k4 s2 p1, conv 10 k3 s2 p1, dense 24\n"
    "decoder = dense 10x7x7, convt 6 k4 s2 p1, convt out k4 s2 p1\nactivation = tanh\n";

// Hierarchical latents: three groups (z_0 of 5, z_1 of 3, the top z_2 of 2;
// offsets 5 and 8 start mid-way through a Philox block), two draws per row
// in training, the residual posterior (the default).
const char *const kHierarchicalModel =
    "[model]\nlatent_dim = 10\nhidden = 64\nlatent_groups = 5, 3, 2\nhierarchy_width = 32\nsamples = 2\n";
// Two groups, the posterior network giving q directly, a log-variance clamp.
const char *const kDirectPosteriorModel =
    "[model]\nlatent_dim = 9\nhidden = 64\nlatent_groups = 6, 3\nhierarchy_width = 32\n"
    "residual_posterior = off\nactivation = tanh\n";

// A conv trunk under the (dense) hierarchy: the encoder ends with a conv
// layer, flattened into d_0 with no head; the decoder reads s_0 of width 24.
const char *const kHierarchicalConvModel =
    "[model]\nlatent_dim = 7\nencoder = conv 6 k4 s2 p1, conv 10 k3 s2 p1\n"
    "decoder = dense 10x7x7, convt 6 k4 s2 p1, convt out k4 s2 p1\nactivation = tanh\n"
    "latent_groups = 4, 3\nhierarchy_width = 24\n";

std::string train_tiny_model(const std::string &folder, const char *model_section = kDenseModel, int epochs = 1,
                             const char *extra_train_keys = "") {
    vae_config config;
    vae_config_defaults(&config);
    std::string ini = "[data]\npath = " + vae_test::fashion_mnist_folder() +
                      "\nbinarize = dynamic\ntrain_limit = 2000\ntest_limit = 200\n" + model_section +
                      "[train]\nepochs = " + std::to_string(epochs) +
                      "\nbatch_size = 100\nseed = 11\neval_batch_size = 64\nlog_every_steps = 10\n" +
                      extra_train_keys;
    EXPECT_EQ(vae_config_load_string(&config, ini.c_str(), "test_torch_interop config"), VAE_OK) << vae_last_error();
    vae_trainer *trainer = nullptr;
    EXPECT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    if (!trainer) return "";
    std::string out = folder + "/run";
    vae_train_options options{};
    options.out_dir = out.c_str();
    options.quiet = 1;
    EXPECT_EQ(vae_trainer_train(trainer, &options), VAE_OK) << vae_last_error();
    vae_trainer_destroy(trainer);
    return out + "/checkpoint.safetensors";
}

class TorchInterop : public ::testing::Test {
protected:
    void SetUp() override {
        if (!torch_available()) GTEST_SKIP() << "PyTorch is not installed (" << kPython << " cannot import torch, numpy)";
    }
};

TEST_F(TorchInterop, NumpyPhiloxMatchesTheEngineBitForBit) {
    std::string folder = vae_test::temporary_folder("torch_interop_philox");
    CommandResult self_test = vae_test::run_command(script() + " --self-test", false);
    EXPECT_EQ(self_test.exit_code, 0) << self_test.output << self_test.errors;
    EXPECT_NE(self_test.output.find("\"passed\""), std::string::npos) << self_test.output;

    struct Address {
        uint64_t seed;
        uint64_t step;
        uint32_t purpose, row;
        uint64_t column;
    };
    const Address addresses[] = {{1, 0, VAE_RANDOM_EVAL_EPS, 0, 0},
                                 {11, 3, VAE_RANDOM_EVAL_EPS, 130, 4},
                                 {11, 2, VAE_RANDOM_EVAL_BINARIZE, 63, 780},
                                 // an angle that a multiply-add without fusing rounds differently
                                 {11, 3, VAE_RANDOM_EVAL_EPS, 34, 8},
                                 {0xFEDCBA9876543210ull, 123456, VAE_RANDOM_EPS, 0xFFFFFFFFu, 1ull << 33}};
    for (const Address &a : addresses) {
        uint64_t subsequence = vae_philox_subsequence(a.step, a.purpose, a.row);
        CommandResult probe = vae_test::run_command(script() + " --philox-probe " + std::to_string(a.seed) + " " +
                                    std::to_string(subsequence) + " " + std::to_string(a.column), false);
        ASSERT_EQ(probe.exit_code, 0) << probe.errors;
        cJSON *json = last_json_line(probe.output);
        ASSERT_NE(json, nullptr) << probe.output;
        vae_philox_block block = vae_philox_block_at(a.seed, subsequence, a.column);
        float normals[4], uniforms[4];
        vae_normal4(a.seed, subsequence, a.column, normals);
        vae_uniform4(a.seed, subsequence, a.column, uniforms);
        std::vector<std::string> words = string_array(json, "words");
        std::vector<std::string> probe_uniforms = string_array(json, "uniforms");
        std::vector<std::string> probe_normals = string_array(json, "normals");
        ASSERT_EQ(words.size(), 4u);
        ASSERT_EQ(probe_uniforms.size(), 4u);
        ASSERT_EQ(probe_normals.size(), 4u);
        for (int i = 0; i < 4; ++i) {
            char word[16];
            std::snprintf(word, sizeof word, "%08x", block.word[i]);
            EXPECT_EQ(words[i], word) << "seed " << a.seed << " subsequence " << subsequence << " word " << i;
            EXPECT_EQ(probe_uniforms[i], hex_bits(uniforms[i])) << "uniform " << i;
            EXPECT_EQ(probe_normals[i], hex_bits(normals[i])) << "normal " << i << " = " << normals[i];
        }
        cJSON_Delete(json);
    }
}

TEST_F(TorchInterop, EngineEvaluationMatchesPyTorch) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "Fashion-MNIST is not installed";
    std::string vae = std::string(VAE_BINARY_DIR) + "/vae";
    ASSERT_TRUE(std::filesystem::exists(vae)) << vae << " is not built";
    std::string folder = vae_test::temporary_folder("torch_interop_eval");
    std::string checkpoint = train_tiny_model(folder);
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    std::string common = script() + " --checkpoint " + checkpoint + " --vae " + vae + " --device cpu";

    // The whole test split (200 points: 3 batches of 64 and one of 8).
    CommandResult all = vae_test::run_command(common + " --count 200", false);
    EXPECT_EQ(all.exit_code, 0) << all.output << all.errors;
    cJSON *json = last_json_line(all.output);
    ASSERT_NE(json, nullptr) << all.output << all.errors;
    double engine = number(json, "engine_elbo"), torch = number(json, "torch_elbo");
    double difference = number(json, "relative_difference");
    std::printf("200 points: engine ELBO %.9g, torch ELBO %.12g, relative difference %.3e\n", engine, torch, difference);
    EXPECT_TRUE(std::isfinite(engine) && engine < 0.0);
    EXPECT_LT(difference, 1e-5);
    EXPECT_NEAR(std::fabs(engine - torch) / std::fabs(torch), difference, 1e-12);  // the reported number is honest
    EXPECT_EQ(number(json, "points"), 200.0);
    EXPECT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "state_dict_strict")));
    EXPECT_EQ(number(json, "tensors"), 8.0);  // encoder.{0,1} and decoder.{0,1}, weight and bias
    cJSON_Delete(json);

    // The first 100 points (default count) with an IWAE estimate: the script
    // evaluates the engine on a copy of the checkpoint limited to them.
    CommandResult iwae = vae_test::run_command(common + " --iwae-k 20", false);
    EXPECT_EQ(iwae.exit_code, 0) << iwae.output << iwae.errors;
    json = last_json_line(iwae.output);
    ASSERT_NE(json, nullptr) << iwae.output << iwae.errors;
    std::printf("100 points, K=20: engine log p(x) %.9g, torch %.12g, relative difference %.3e\n",
                number(json, "engine_log_likelihood"), number(json, "torch_log_likelihood"),
                number(json, "log_likelihood_relative_difference"));
    EXPECT_EQ(number(json, "points"), 100.0);
    EXPECT_LT(number(json, "relative_difference"), 1e-5);
    EXPECT_LT(number(json, "log_likelihood_relative_difference"), 1e-5);
    EXPECT_GE(number(json, "torch_log_likelihood"), number(json, "torch_elbo") - 1.0);
    cJSON_Delete(json);

    // The comparison has teeth: a tolerance below the float32 rounding the
    // engine must show (it cannot agree with float64 to 1e-15) fails.
    CommandResult strict = vae_test::run_command(common + " --count 200 --tolerance 1e-15", false);
    EXPECT_EQ(strict.exit_code, 1) << strict.output << strict.errors;
}

// A convolutional model: its checkpoint loads strictly into the nn.Sequential
// pair bench/vae_torch.py builds from the stored config and image shape, and
// F.conv2d / F.conv_transpose2d in float64 reproduce the engine's ELBO and
// IWAE estimate.
TEST_F(TorchInterop, ConvolutionalEngineEvaluationMatchesPyTorch) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "Fashion-MNIST is not installed";
    std::string vae = std::string(VAE_BINARY_DIR) + "/vae";
    ASSERT_TRUE(std::filesystem::exists(vae)) << vae << " is not built";
    std::string folder = vae_test::temporary_folder("torch_interop_conv");
    std::string checkpoint = train_tiny_model(folder, kConvModel);
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    std::string common = script() + " --checkpoint " + checkpoint + " --vae " + vae + " --device cpu";
    CommandResult run = vae_test::run_command(common + " --count 130 --iwae-k 7", false);
    EXPECT_EQ(run.exit_code, 0) << run.output << run.errors;
    cJSON *json = last_json_line(run.output);
    ASSERT_NE(json, nullptr) << run.output << run.errors;
    std::printf("conv, 130 points, K=7: engine ELBO %.9g, torch %.12g (%.3e); log p(x) %.9g, torch %.12g (%.3e)\n",
                number(json, "engine_elbo"), number(json, "torch_elbo"), number(json, "relative_difference"),
                number(json, "engine_log_likelihood"), number(json, "torch_log_likelihood"),
                number(json, "log_likelihood_relative_difference"));
    EXPECT_EQ(number(json, "points"), 130.0);
    EXPECT_TRUE(std::isfinite(number(json, "engine_elbo")) && number(json, "engine_elbo") < 0.0);
    EXPECT_LT(number(json, "relative_difference"), 1e-5);
    EXPECT_LT(number(json, "log_likelihood_relative_difference"), 1e-5);
    EXPECT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "state_dict_strict")));
    EXPECT_EQ(number(json, "tensors"), 14.0);  // 3 encoder layers and the head, 3 decoder layers; weight and bias
    cJSON_Delete(json);
}

// The largest difference between the engine's group_kl and torch's (a lower
// group's KL averaged over the draws), relative to the whole KL; and that
// torch's groups add up to its KL.
void expect_group_kl_agrees(const cJSON *json, int groups) {
    const cJSON *engine = cJSON_GetObjectItemCaseSensitive(json, "engine_group_kl");
    const cJSON *torch = cJSON_GetObjectItemCaseSensitive(json, "torch_group_kl");
    ASSERT_EQ(cJSON_GetArraySize(engine), groups);
    ASSERT_EQ(cJSON_GetArraySize(torch), groups);
    double sum = 0.0;
    for (int g = 0; g < groups; ++g) sum += cJSON_GetArrayItem(torch, g)->valuedouble;
    EXPECT_NEAR(sum, number(json, "torch_kl"), 1e-9 * std::fabs(number(json, "torch_kl")));
    // group_kl is printed to 6 significant digits: 1e-4 of the whole KL is well above that
    EXPECT_LT(number(json, "group_kl_difference"), 1e-4);
}

// A hierarchical model (model.latent_groups): its checkpoint loads strictly
// into bench/vae_torch.py's TorchHierarchicalVAE (hierarchy.{g}.{role}
// nn.Linear modules), the script re-draws each group's noise at its own
// Philox columns (the top group per sample and data row, the lower groups per
// sample-major row) and computes in float64 the ELBO (the top group's KL from
// N(0, I), the lower groups' from their conditional priors, averaged over the
// draws) and the IWAE estimate (log p(x|z) + sum_g log p(z_g|z_>g) - log q).
TEST_F(TorchInterop, HierarchicalEngineEvaluationMatchesPyTorch) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "Fashion-MNIST is not installed";
    std::string vae = std::string(VAE_BINARY_DIR) + "/vae";
    ASSERT_TRUE(std::filesystem::exists(vae)) << vae << " is not built";
    std::string folder = vae_test::temporary_folder("torch_interop_hierarchy");
    // 15 epochs of 20 steps: 300 steps, enough for every group to carry some KL
    std::string checkpoint = train_tiny_model(folder, kHierarchicalModel, 15);
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    std::string common = script() + " --checkpoint " + checkpoint + " --vae " + vae + " --device cpu";

    // The whole test split (3 batches of 64 and one of 8), one draw per row.
    CommandResult all = vae_test::run_command(common + " --count 200", false);
    EXPECT_EQ(all.exit_code, 0) << all.output << all.errors;
    cJSON *json = last_json_line(all.output);
    ASSERT_NE(json, nullptr) << all.output << all.errors;
    double engine = number(json, "engine_elbo"), torch = number(json, "torch_elbo");
    double difference = number(json, "relative_difference");
    std::printf("hierarchy 5,3,2, 200 points: engine ELBO %.9g, torch %.12g (%.3e); KL %.9g, torch %.12g; "
                "group KL difference %.3e of the KL\n",
                engine, torch, difference, number(json, "engine_kl"), number(json, "torch_kl"),
                number(json, "group_kl_difference"));
    EXPECT_TRUE(std::isfinite(engine) && engine < 0.0);
    EXPECT_LT(difference, 1e-5);
    EXPECT_NEAR(std::fabs(engine - torch) / std::fabs(torch), difference, 1e-12);
    EXPECT_EQ(number(json, "points"), 200.0);
    EXPECT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "hierarchical")));
    EXPECT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "state_dict_strict")));
    // encoder.0, decoder.{0,1}; hierarchy.0: prior, merge_bottom_up, merge_top_down, posterior, latent_in;
    // hierarchy.1: bottom_up and those five; hierarchy.2: bottom_up, posterior, latent_in; weight and bias
    EXPECT_EQ(number(json, "tensors"), 34.0);
    expect_group_kl_agrees(json, 3);
    // every group is in use (else the noise of a collapsed group would hardly matter)
    const cJSON *group_kl = cJSON_GetObjectItemCaseSensitive(json, "torch_group_kl");
    for (int g = 0; g < cJSON_GetArraySize(group_kl); ++g)
        EXPECT_GT(cJSON_GetArrayItem(group_kl, g)->valuedouble, 0.1) << "group " << g;
    cJSON_Delete(json);

    // IWAE with K = 20 on the first 101 points (one batch of 64, one of 37).
    CommandResult iwae = vae_test::run_command(common + " --count 101 --iwae-k 20", false);
    EXPECT_EQ(iwae.exit_code, 0) << iwae.output << iwae.errors;
    json = last_json_line(iwae.output);
    ASSERT_NE(json, nullptr) << iwae.output << iwae.errors;
    std::printf("hierarchy 5,3,2, 101 points, K=20: engine ELBO %.9g, torch %.12g (%.3e); log p(x) %.9g, "
                "torch %.12g (%.3e); group KL difference %.3e of the KL\n",
                number(json, "engine_elbo"), number(json, "torch_elbo"), number(json, "relative_difference"),
                number(json, "engine_log_likelihood"), number(json, "torch_log_likelihood"),
                number(json, "log_likelihood_relative_difference"), number(json, "group_kl_difference"));
    EXPECT_EQ(number(json, "points"), 101.0);
    EXPECT_LT(number(json, "relative_difference"), 1e-5);
    EXPECT_LT(number(json, "log_likelihood_relative_difference"), 1e-5);
    EXPECT_GE(number(json, "torch_log_likelihood"), number(json, "torch_elbo") - 1.0);
    expect_group_kl_agrees(json, 3);
    cJSON_Delete(json);

    // The comparison has teeth here too.
    CommandResult strict = vae_test::run_command(common + " --count 101 --iwae-k 20 --tolerance 1e-15", false);
    EXPECT_EQ(strict.exit_code, 1) << strict.output << strict.errors;

    // Two groups, residual_posterior = off, tanh, logvar_clamp 3 (a few hundred steps as well).
    std::string direct = train_tiny_model(vae_test::temporary_folder("torch_interop_hierarchy_direct"),
                                          kDirectPosteriorModel, 10, "logvar_clamp = 3\n");
    ASSERT_TRUE(std::filesystem::exists(direct));
    CommandResult off = vae_test::run_command(
        script() + " --checkpoint " + direct + " --vae " + vae + " --device cpu --count 130 --iwae-k 7", false);
    EXPECT_EQ(off.exit_code, 0) << off.output << off.errors;
    json = last_json_line(off.output);
    ASSERT_NE(json, nullptr) << off.output << off.errors;
    std::printf("hierarchy 6,3 (residual_posterior off), 130 points, K=7: engine ELBO %.9g, torch %.12g (%.3e); "
                "log p(x) %.9g, torch %.12g (%.3e)\n",
                number(json, "engine_elbo"), number(json, "torch_elbo"), number(json, "relative_difference"),
                number(json, "engine_log_likelihood"), number(json, "torch_log_likelihood"),
                number(json, "log_likelihood_relative_difference"));
    EXPECT_LT(number(json, "relative_difference"), 1e-5);
    EXPECT_LT(number(json, "log_likelihood_relative_difference"), 1e-5);
    EXPECT_EQ(number(json, "tensors"), 22.0);
    expect_group_kl_agrees(json, 2);
    cJSON_Delete(json);
}

// The hierarchy on a conv trunk: TorchHierarchicalVAE's nn.Sequential sides
// (no encoder head) load strictly and reproduce the engine.
TEST_F(TorchInterop, HierarchicalConvolutionalEngineEvaluationMatchesPyTorch) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "Fashion-MNIST is not installed";
    std::string vae = std::string(VAE_BINARY_DIR) + "/vae";
    ASSERT_TRUE(std::filesystem::exists(vae)) << vae << " is not built";
    std::string checkpoint =
        train_tiny_model(vae_test::temporary_folder("torch_interop_hierarchy_conv"), kHierarchicalConvModel);
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    CommandResult run = vae_test::run_command(
        script() + " --checkpoint " + checkpoint + " --vae " + vae + " --device cpu --count 90 --iwae-k 5", false);
    EXPECT_EQ(run.exit_code, 0) << run.output << run.errors;
    cJSON *json = last_json_line(run.output);
    ASSERT_NE(json, nullptr) << run.output << run.errors;
    std::printf("hierarchy 4,3 on conv, 90 points, K=5: engine ELBO %.9g, torch %.12g (%.3e); log p(x) %.9g, "
                "torch %.12g (%.3e)\n",
                number(json, "engine_elbo"), number(json, "torch_elbo"), number(json, "relative_difference"),
                number(json, "engine_log_likelihood"), number(json, "torch_log_likelihood"),
                number(json, "log_likelihood_relative_difference"));
    EXPECT_EQ(number(json, "points"), 90.0);
    EXPECT_LT(number(json, "relative_difference"), 1e-5);
    EXPECT_LT(number(json, "log_likelihood_relative_difference"), 1e-5);
    EXPECT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "hierarchical")));
    // 2 encoder and 3 decoder layers; hierarchy.0: 5 layers, hierarchy.1: bottom_up, posterior, latent_in
    EXPECT_EQ(number(json, "tensors"), 26.0);
    expect_group_kl_agrees(json, 2);
    cJSON_Delete(json);
}

TEST_F(TorchInterop, StrictStateDictLoadRejectsAForeignTensor) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "Fashion-MNIST is not installed";
    std::string folder = vae_test::temporary_folder("torch_interop_strict");
    std::string checkpoint = train_tiny_model(folder);
    vae_checkpoint original;
    ASSERT_EQ(vae_checkpoint_read(checkpoint.c_str(), &original), VAE_OK) << vae_last_error();
    // The same checkpoint plus one tensor TorchVAE does not have.
    std::vector<vae_checkpoint_tensor> tensors(original.tensors, original.tensors + original.tensor_count);
    float extra_values[3] = {1.0f, 2.0f, 3.0f};
    vae_checkpoint_tensor extra{};
    std::snprintf(extra.name, sizeof extra.name, "encoder.7.bias");
    extra.rank = 1;
    extra.shape[0] = 3;
    extra.data = extra_values;
    tensors.push_back(extra);
    std::vector<const char *> keys, values;
    for (int i = 0; i < original.metadata_count; ++i) {
        if (std::strcmp(original.metadata[i].key, "checksum") == 0 || std::strcmp(original.metadata[i].key, "format") == 0)
            continue;  // the writer adds its own
        keys.push_back(original.metadata[i].key);
        values.push_back(original.metadata[i].value);
    }
    std::string foreign = folder + "/foreign.safetensors";
    ASSERT_EQ(vae_checkpoint_write(foreign.c_str(), tensors.data(), (int)tensors.size(), keys.data(), values.data(),
                                   (int)keys.size()),
              VAE_OK)
        << vae_last_error();
    vae_checkpoint_free(&original);
    CommandResult run = vae_test::run_command(script() + " --checkpoint " + foreign + " --vae " + VAE_BINARY_DIR + "/vae", false);
    EXPECT_EQ(run.exit_code, 2) << run.output << run.errors;
    EXPECT_NE(run.errors.find("strict state_dict load failed"), std::string::npos) << run.errors;
    EXPECT_NE(run.errors.find("encoder.7.bias"), std::string::npos) << run.errors;
}

}  // namespace
