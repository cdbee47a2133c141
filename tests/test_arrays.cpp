// The array-level calls (vae/arrays.h) against the split-based ones on the
// same rows: encode_inputs must give vae_trainer_encode's mu and logvar bit
// for bit, and evaluate_inputs per-row values whose means are
// vae_trainer_evaluate's ELBO and IWAE estimate of the split. The model is a
// small trained one on a generated .npy data set (no download, no Fashion-MNIST).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "vae/arrays.h"
#include "vae/latent.h"
#include "vae/vae.h"
}

namespace {

constexpr int kSide = 4;               // 4x4 pictures, D = 16
constexpr int kDim = kSide * kSide;
constexpr int kTrainRows = 96;
constexpr int kTestRows = 37;          // two full evaluation batches of 16 and a remainder of 5
constexpr int kLatent = 3;

// Grey levels that vary by row and column, so that rows encode differently.
std::string picture_bytes(int rows, int salt) {
    std::string bytes;
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < kDim; ++j) bytes += (char)(uint8_t)((i * 37 + j * 11 + salt * 5) % 256);
    return bytes;
}

struct trained_model {
    vae_trainer *trainer = nullptr;
    ~trained_model() { vae_trainer_destroy(trainer); }
};

// A trainer trained a few steps (so the weights are not the initial ones),
// with the logvar clamp on so that encode's clamping is compared too.
void make_trainer(trained_model &model, const char *binarize) {
    std::string folder = vae_test::temporary_folder("arrays");
    std::string shape_train = "(" + std::to_string(kTrainRows) + ", 4, 4)";
    std::string shape_test = "(" + std::to_string(kTestRows) + ", 4, 4)";
    vae_test::write_file(folder + "/train.npy",
                         vae_test::npy_file(vae_test::npy_dict("|u1", shape_train), picture_bytes(kTrainRows, 1)));
    vae_test::write_file(folder + "/test.npy",
                         vae_test::npy_file(vae_test::npy_dict("|u1", shape_test), picture_bytes(kTestRows, 2)));
    vae_config config;
    vae_config_defaults(&config);
    std::snprintf(config.data_path, sizeof config.data_path, "%s", folder.c_str());
    std::string binarize_setting = std::string("data.binarize=") + binarize;
    const char *settings[] = {binarize_setting.c_str(), "model.hidden=8",          "model.latent_dim=3",
                              "train.batch_size=16",    "train.eval_batch_size=16", "train.epochs=1",
                              "train.logvar_clamp=0.05", "train.eval_every_epochs=0", "output.image_every_epochs=0"};
    for (const char *setting : settings) ASSERT_EQ(vae_config_set(&config, setting), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_trainer_create(&model.trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    vae_train_options options = {};
    options.quiet = 1;
    ASSERT_EQ(vae_trainer_train(model.trainer, &options), VAE_OK) << vae_last_error();
}

std::vector<float> test_inputs(vae_trainer *trainer) {
    std::vector<float> inputs((size_t)kTestRows * kDim);
    EXPECT_EQ(vae_trainer_inputs(trainer, "test", 0, kTestRows, inputs.data()), VAE_OK) << vae_last_error();
    return inputs;
}

double mean(const std::vector<double> &values) {
    double sum = 0.0;
    for (double value : values) sum += value;
    return sum / (double)values.size();
}

TEST(Arrays, DimensionsAreTheModels) {
    trained_model model;
    ASSERT_NO_FATAL_FAILURE(make_trainer(model, "none"));
    EXPECT_EQ(vae_trainer_input_dim(model.trainer), kDim);
    EXPECT_EQ(vae_trainer_latent_dim(model.trainer), kLatent);
}

TEST(Arrays, EncodeInputsEqualsEncodeOfTheSplitBitwise) {
    trained_model model;
    ASSERT_NO_FATAL_FAILURE(make_trainer(model, "static"));
    std::vector<float> inputs = test_inputs(model.trainer);
    std::vector<float> split_mu((size_t)kTestRows * kLatent), split_logvar(split_mu.size());
    ASSERT_EQ(vae_trainer_encode(model.trainer, "test", 0, kTestRows, split_mu.data(), split_logvar.data(), nullptr),
              VAE_OK)
        << vae_last_error();
    std::vector<float> mu(split_mu.size(), NAN), logvar(split_mu.size(), NAN);
    ASSERT_EQ(vae_trainer_encode_inputs(model.trainer, inputs.data(), kTestRows, mu.data(), logvar.data()), VAE_OK)
        << vae_last_error();
    int clamped = 0;
    for (size_t i = 0; i < mu.size(); ++i) {
        ASSERT_EQ(vae_test::float_bits(mu[i]), vae_test::float_bits(split_mu[i])) << "mu " << i;
        ASSERT_EQ(vae_test::float_bits(logvar[i]), vae_test::float_bits(split_logvar[i])) << "logvar " << i;
        clamped += std::fabs(logvar[i]) == 0.05f;
    }
    // The rows differ, and mu is not logvar (a swap would pass the equalities above only if it were).
    EXPECT_NE(mu[0], mu[kLatent]);
    EXPECT_NE(mu[0], logvar[0]);
    // Some values clamped and some not: both paths of the clamp are compared.
    EXPECT_GT(clamped, 0);
    EXPECT_LT(clamped, (int)logvar.size());
    // logvar may be left out; a few rows alone give those rows' values, to
    // float rounding: a GEMM of 5 rows may take another kernel than one of
    // the whole split (OpenBLAS on Zen 3 did), so only the batch is bitwise.
    std::vector<float> first_rows(5 * kLatent);
    ASSERT_EQ(vae_trainer_encode_inputs(model.trainer, inputs.data() + 10 * kDim, 5, first_rows.data(), nullptr),
              VAE_OK);
    for (int i = 0; i < 5 * kLatent; ++i) {
        const float expected = split_mu[10 * kLatent + i];
        EXPECT_NEAR(first_rows[i], expected, 1e-5f * (1.0f + std::fabs(expected))) << "mu of row " << 10 + i / kLatent;
    }
}

// Dynamic binarisation draws with the evaluation's seed per batch: the same
// rows in the same batches see the same draws and noise as the split.
TEST(Arrays, EvaluateInputsMeansAreTheSplitsEvaluation) {
    trained_model model;
    ASSERT_NO_FATAL_FAILURE(make_trainer(model, "dynamic"));
    std::vector<float> inputs = test_inputs(model.trainer);
    for (int k : {0, 7}) {
        vae_eval_result split;
        ASSERT_EQ(vae_trainer_evaluate(model.trainer, "test", k, &split), VAE_OK) << vae_last_error();
        std::vector<double> elbo(kTestRows, NAN), iwae(kTestRows, NAN);
        ASSERT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), kTestRows, k, elbo.data(),
                                              k > 0 ? iwae.data() : nullptr),
                  VAE_OK)
            << vae_last_error();
        // The split's sums run in another order: equal to double rounding, far below any formula's change.
        EXPECT_NEAR(mean(elbo), split.elbo, 1e-9 * std::fabs(split.elbo)) << "k " << k;
        if (k > 0) {
            EXPECT_NEAR(mean(iwae), split.log_likelihood, 1e-6 * std::fabs(split.log_likelihood));
            for (int r = 0; r < kTestRows; ++r) ASSERT_TRUE(std::isfinite(iwae[r])) << "row " << r;
            EXPECT_NE(iwae[0], elbo[0]);
        }
        for (int r = 0; r < kTestRows; ++r) ASSERT_TRUE(std::isfinite(elbo[r])) << "row " << r;
        EXPECT_NE(elbo[0], elbo[1]);
    }
    // The first full batch alone gets the same rows' values (batch 0's draws).
    std::vector<double> all(kTestRows), first(16);
    ASSERT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), kTestRows, 0, all.data(), nullptr), VAE_OK);
    ASSERT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), 16, 0, first.data(), nullptr), VAE_OK);
    for (int r = 0; r < 16; ++r) EXPECT_EQ(first[r], all[r]) << "row " << r;
}

TEST(Arrays, BadInputsAreErrorsNamingTheValue) {
    trained_model model;
    ASSERT_NO_FATAL_FAILURE(make_trainer(model, "none"));
    std::vector<float> inputs(2 * kDim, 0.5f);
    std::vector<float> mu(2 * kLatent);
    std::vector<double> elbo(2);
    EXPECT_EQ(vae_trainer_encode_inputs(model.trainer, nullptr, 2, mu.data(), nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_trainer_encode_inputs(model.trainer, inputs.data(), 0, mu.data(), nullptr),
              VAE_ERROR_INVALID_ARGUMENT);
    inputs[kDim + 3] = 1.5f;
    EXPECT_EQ(vae_trainer_encode_inputs(model.trainer, inputs.data(), 2, mu.data(), nullptr),
              VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("row 1, column 3"), std::string::npos) << vae_last_error();
    inputs[kDim + 3] = NAN;
    EXPECT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), 2, 0, elbo.data(), nullptr),
              VAE_ERROR_INVALID_ARGUMENT);
    inputs[kDim + 3] = 0.5f;
    // An IWAE output without samples to draw it from.
    EXPECT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), 2, 0, elbo.data(), elbo.data()),
              VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_trainer_evaluate_inputs(model.trainer, inputs.data(), 2, 0, elbo.data(), nullptr), VAE_OK)
        << vae_last_error();
}

}  // namespace
