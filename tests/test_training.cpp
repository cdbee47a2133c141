// Real training on a Fashion-MNIST subset through the public API: the test
// ELBO improves by a stated margin, and seeded runs are bitwise repeatable.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

extern "C" {
#include "io/checkpoint.h"
#include "vae/vae.h"
}

namespace {

vae_config subset_config(uint64_t seed) {
    vae_config config;
    vae_config_defaults(&config);
    std::string folder = vae_test::fashion_mnist_folder();
    std::snprintf(config.data_path, sizeof config.data_path, "%s", folder.c_str());
    const char *settings[] = {"data.train_limit=4000", "data.test_limit=1000", "data.binarize=dynamic",
                              "model.hidden=128",      "model.latent_dim=10",  "train.epochs=3",
                              "train.batch_size=100",  "train.eval_every_epochs=0", "train.log_every_steps=1000"};
    for (const char *setting : settings) EXPECT_EQ(vae_config_set(&config, setting), VAE_OK) << vae_last_error();
    config.seed = seed;
    return config;
}

std::vector<float> checkpoint_values(const std::string &path) {
    vae_checkpoint checkpoint;
    std::memset(&checkpoint, 0, sizeof checkpoint);
    EXPECT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_OK) << vae_last_error();
    std::vector<float> values;
    for (int i = 0; i < checkpoint.tensor_count; ++i) {
        const vae_checkpoint_tensor &t = checkpoint.tensors[i];
        size_t count = 1;
        for (int d = 0; d < t.rank; ++d) count *= (size_t)t.shape[d];
        values.insert(values.end(), t.data, t.data + count);
    }
    vae_checkpoint_free(&checkpoint);
    return values;
}

std::vector<float> train_and_read(const vae_config &config, const std::string &folder) {
    vae_trainer *trainer = nullptr;
    EXPECT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    if (!trainer) return {};
    vae_train_options options = {};
    options.out_dir = folder.c_str();
    options.quiet = 1;
    EXPECT_EQ(vae_trainer_train(trainer, &options), VAE_OK) << vae_last_error();
    vae_trainer_destroy(trainer);
    return checkpoint_values(folder + "/checkpoint.safetensors");
}

TEST(Training, TestElboImprovesOnFashionMnistSubset) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    vae_config config = subset_config(7);
    vae_trainer *trainer = nullptr;
    ASSERT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    vae_eval_result before, after;
    ASSERT_EQ(vae_trainer_evaluate(trainer, "test", 0, &before), VAE_OK) << vae_last_error();
    vae_train_options options = {};
    options.quiet = 1;
    ASSERT_EQ(vae_trainer_train(trainer, &options), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_trainer_evaluate(trainer, "test", 0, &after), VAE_OK) << vae_last_error();
    vae_eval_result iwae;
    ASSERT_EQ(vae_trainer_evaluate(trainer, "test", 20, &iwae), VAE_OK) << vae_last_error();
    vae_trainer_destroy(trainer);
    std::printf("test ELBO before %.2f, after 3 epochs %.2f, IWAE-20 %.2f\n", before.elbo, after.elbo,
                iwae.log_likelihood);
    EXPECT_EQ(after.points, 1000);
    // A randomly initialised decoder scores about -545 nats (784 * log 2);
    // three epochs on 4000 images reach about -300. The stated margin: at
    // least 150 nats better, and better than -360.
    EXPECT_GT(after.elbo - before.elbo, 150.0);
    EXPECT_GT(after.elbo, -360.0);
    EXPECT_GT(after.kl, 1.0);               // the posterior carries information
    EXPECT_GT(after.active_units, 2);
    // The importance-weighted bound is never below the ELBO on average.
    EXPECT_GE(iwae.log_likelihood, after.elbo - 0.5);
    EXPECT_LT(iwae.log_likelihood, 0.0);
}

TEST(Training, SeededRunsAreBitwiseRepeatable) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    vae_config config = subset_config(11);
    config.epochs = 1;
    std::vector<float> first = train_and_read(config, vae_test::temporary_folder("repeatable_a"));
    std::vector<float> second = train_and_read(config, vae_test::temporary_folder("repeatable_b"));
    ASSERT_FALSE(first.empty());
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0)
        << "two runs with the same seed differ";
    config.seed = 12;
    std::vector<float> other = train_and_read(config, vae_test::temporary_folder("repeatable_c"));
    ASSERT_EQ(first.size(), other.size());
    EXPECT_NE(std::memcmp(first.data(), other.data(), first.size() * sizeof(float)), 0)
        << "a different seed gave the same parameters";
}

// Trains a trainer for max_steps (counted from step 0) into folder.
// continuing: the trainer goes on with the run whose checkpoint is in folder
// (a run folder holding a checkpoint refuses a new run, vae/run_folder.h).
vae_status train_steps(vae_trainer *trainer, int max_steps, const std::string &folder, bool continuing = false) {
    vae_train_options options = {};
    options.out_dir = folder.c_str();
    options.resume = continuing ? 1 : 0;
    options.quiet = 1;
    options.max_steps = max_steps;
    return vae_trainer_train(trainer, &options);
}

TEST(Training, CheckpointEngineFieldCarriesTheProjectVersion) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    vae_config config = subset_config(5);
    vae_trainer *trainer = nullptr;
    ASSERT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    std::string folder = vae_test::temporary_folder("engine_version");
    ASSERT_EQ(train_steps(trainer, 2, folder), VAE_OK) << vae_last_error();
    vae_trainer_destroy(trainer);
    vae_checkpoint checkpoint;
    std::memset(&checkpoint, 0, sizeof checkpoint);
    ASSERT_EQ(vae_checkpoint_read((folder + "/checkpoint.safetensors").c_str(), &checkpoint), VAE_OK)
        << vae_last_error();
    const char *engine = vae_checkpoint_metadata(&checkpoint, "engine");
    ASSERT_NE(engine, nullptr);
    EXPECT_EQ(std::string(engine), "vae-engine " + vae_test::project_version());
    EXPECT_EQ(std::string(vae_version()), vae_test::project_version());
    vae_checkpoint_free(&checkpoint);
}

// A stop request (what SIGINT/SIGTERM send) belongs to the runs in progress:
// it stops them after a step, and every run that starts later trains in full.
// Before, the request was a process-wide flag never cleared, so every later
// trainer of the process stopped after one step.
TEST(Training, StopRequestBelongsToTheRunInProgress) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    vae_config config = subset_config(9);
    config.epochs = 1000;  // 40000 steps: far more than the stopped run takes
    std::string folder = vae_test::temporary_folder("stop_scope");

    // A request while no run is in progress reaches no later run.
    vae_request_stop();
    vae_trainer *first = nullptr;
    ASSERT_EQ(vae_trainer_create(&first, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    ASSERT_EQ(train_steps(first, 7, folder + "/first"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_trainer_step(first), 7u);

    // A request during a run stops it after a step, with a checkpoint. The
    // request repeats until the run returns: one sent before the run started
    // would (by design) not reach it.
    vae_trainer *second = nullptr;
    ASSERT_EQ(vae_trainer_create(&second, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    std::atomic<bool> finished{false};
    vae_status stopped_status = VAE_OK;
    std::thread run([&] {
        stopped_status = train_steps(second, 0, folder + "/second");
        finished = true;
    });
    while (!finished) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        vae_request_stop();
    }
    run.join();
    EXPECT_EQ(stopped_status, VAE_ERROR_INTERRUPTED) << vae_last_error();
    uint64_t stopped_at = vae_trainer_step(second);
    EXPECT_GE(stopped_at, 1u);
    EXPECT_LT(stopped_at, 40000u);
    EXPECT_TRUE(std::filesystem::exists(folder + "/second/checkpoint.safetensors"));

    // After the stop, in the same process: the stopped trainer trains on, and
    // the first and a fresh trainer run their full count of steps.
    ASSERT_EQ(train_steps(second, (int)stopped_at + 5, folder + "/second", true), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_trainer_step(second), stopped_at + 5);
    ASSERT_EQ(train_steps(first, 12, folder + "/first", true), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_trainer_step(first), 12u);
    vae_trainer *third = nullptr;
    ASSERT_EQ(vae_trainer_create(&third, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
    ASSERT_EQ(train_steps(third, 6, folder + "/third"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_trainer_step(third), 6u);
    vae_trainer_destroy(first);
    vae_trainer_destroy(second);
    vae_trainer_destroy(third);
}

}  // namespace
