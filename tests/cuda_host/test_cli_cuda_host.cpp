// The vae command line on the host execution target (vae_cuda_host: the real
// CLI linked against the CUDA backend's kernels as host code): it trains a
// few steps with --device cuda, says so, and writes a checkpoint that the
// normal `vae` loads and evaluates on the CPU to the host CUDA's own ELBO
// and IWAE estimate.
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "test_support.h"

namespace {

using Result = vae_test::CommandResult;

Result run_host(const std::string &arguments) {
    return vae_test::run_command(std::string(VAE_BINARY_DIR) + "/vae_cuda_host " + arguments, true);
}

double json_number(const std::string &line, const char *key) {
    cJSON *object = cJSON_Parse(line.c_str());
    const cJSON *item = object ? cJSON_GetObjectItemCaseSensitive(object, key) : nullptr;
    double value = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    cJSON_Delete(object);
    return value;
}

// The two evaluations run the same operations on the same weights and the
// same Philox noise; they differ by GEMM summation order (OpenBLAS called
// with the operands cuBLAS's way round) and the kernels' reductions. Seen
// 2026-12-07: a few 1e-8 relative; the tolerance leaves a wide margin and
// is still far below what a wrong kernel moves (a 500-point ELBO's worth).
constexpr double kEvalTolerance = 1e-5;

TEST(CliCudaHost, TrainsWithDeviceCudaAndTheCpuEvaluatesItsCheckpointAlike) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    const std::string folder = vae_test::temporary_folder("cli_cuda_host");
    const std::string config = std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini";
    // 600 rows in batches of 100 for one epoch: 6 steps, then the epoch's
    // evaluation on 500 test rows.
    Result train = run_host("train --config " + config + " --device cuda --set data.train_limit=600" +
                            " --set train.epochs=1 --set train.log_every_steps=2 --out " + folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    EXPECT_NE(train.output.find("vae: device cuda:0 ("), std::string::npos) << train.output;
    const std::string checkpoint = folder + "/checkpoint.safetensors";
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    const std::string metrics = vae_test::read_file(folder + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"kind\":\"train\""), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\"kind\":\"eval\""), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\"step\":6"), std::string::npos) << metrics;

    const std::string eval = "eval --checkpoint " + checkpoint + " --split test --iwae-k 5";
    Result on_cpu = vae_test::run_vae(eval + " --device cpu");
    Result on_cuda = run_host(eval + " --device cuda");
    ASSERT_EQ(on_cpu.exit_code, 0) << on_cpu.output;
    ASSERT_EQ(on_cuda.exit_code, 0) << on_cuda.output;
    for (const char *key : {"elbo", "reconstruction", "kl", "log_likelihood"}) {
        const double cpu = json_number(on_cpu.output, key), cuda = json_number(on_cuda.output, key);
        std::printf("vae eval %s: CPU %.9g, host CUDA %.9g (relative %.3g)\n", key, cpu, cuda,
                    std::fabs(cuda - cpu) / std::fabs(cpu));
        ASSERT_TRUE(std::isfinite(cpu) && std::isfinite(cuda)) << key << "\n" << on_cpu.output << "\n"
                                                               << on_cuda.output;
        EXPECT_LE(std::fabs(cuda - cpu), kEvalTolerance * std::fabs(cpu)) << key;
    }
    EXPECT_NE(on_cpu.output.find("\"points\":500"), std::string::npos) << on_cpu.output;
    EXPECT_NE(on_cuda.output.find("\"points\":500"), std::string::npos) << on_cuda.output;
}

}  // namespace
