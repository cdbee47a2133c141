// The vae command line as a user runs it: exit codes, messages, outputs.
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"

namespace {

using Result = vae_test::CommandResult;
Result run(const std::string &arguments) { return vae_test::run_vae(arguments); }

std::string tiny_config() { return std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini"; }

TEST(Cli, UsageErrorsExitWithTwo) {
    EXPECT_EQ(run("").exit_code, 2);
    Result unknown = run("frobnicate");
    EXPECT_EQ(unknown.exit_code, 2);
    EXPECT_NE(unknown.output.find("unknown command"), std::string::npos);
    Result option = run("train --config x.ini --bogus");
    EXPECT_EQ(option.exit_code, 2);
    EXPECT_NE(option.output.find("--bogus"), std::string::npos);
    EXPECT_EQ(run("train").exit_code, 2);
    EXPECT_EQ(run("eval").exit_code, 2);
    EXPECT_EQ(run("train --config x --device tpu").exit_code, 2);
    EXPECT_EQ(run("--help").exit_code, 0);
    for (const char *command : {"train", "eval", "sample", "bench"}) {
        Result help = run(std::string(command) + " --help");
        EXPECT_EQ(help.exit_code, 0) << command;
        EXPECT_NE(help.output.find("usage: vae " + std::string(command)), std::string::npos) << command;
    }
}

// One parser reads every command's options: one a command does not take is
// refused by name before anything runs, not read and silently ignored (eval
// reads the checkpoint's own config, so --set there would change nothing).
TEST(Cli, OptionsACommandDoesNotTakeAreRefused) {
    const std::vector<std::pair<std::string, std::string>> refused = {
        {"eval --checkpoint c.safetensors --set data.test_limit=10", "--set"},
        {"eval --checkpoint c.safetensors --resume", "--resume"},
        {"sample --checkpoint c.safetensors --out s.png --iwae-k 5", "--iwae-k"},
        {"bench --config x.ini --checkpoint c.safetensors", "--checkpoint"},
        {"train --config x.ini --pairs 3", "--pairs"},
        {"encode --checkpoint c.safetensors --out z.npy --n 5", "--n"},
        {"manifold --checkpoint c.safetensors --out m.png --split test", "--split"},
        {"sample --checkpoint c.safetensors --out s.png --precision fp32", "--precision"},
    };
    for (const auto &[arguments, option] : refused) {
        Result result = run(arguments);
        EXPECT_EQ(result.exit_code, 2) << arguments << "\n" << result.output;
        const std::string command = arguments.substr(0, arguments.find(' '));
        EXPECT_NE(result.output.find("vae: " + command + " does not take " + option), std::string::npos)
            << arguments << "\n" << result.output;
        EXPECT_NE(result.output.find("usage: vae " + command), std::string::npos) << result.output;
    }
    // Options a usage names are still taken (the error is then the missing file).
    for (const std::string arguments :
         {"eval --checkpoint /nonexistent/c.safetensors --split test --iwae-k 5 --device cpu --precision bf16",
          "sample --checkpoint /nonexistent/c.safetensors --out s.png --n 4 --seed 3 --quiet",
          "interpolate --checkpoint /nonexistent/c.safetensors --out i.png --pairs 2 --steps 5 --quiet",
          "scatter --checkpoint /nonexistent/c.safetensors --out p.png --dims 0,1 --n 10",
          "encode --checkpoint /nonexistent/c.safetensors --out z.npy --logvar l.npy --labels y.npy --quiet"}) {
        Result result = run(arguments);
        EXPECT_EQ(result.output.find("does not take"), std::string::npos) << arguments << "\n" << result.output;
        EXPECT_NE(result.output.find("/nonexistent/c.safetensors"), std::string::npos) << arguments << "\n"
                                                                                       << result.output;
    }
}

TEST(Cli, VersionPrintsTheProjectVersion) {
    Result version = run("--version");
    EXPECT_EQ(version.exit_code, 0) << version.output;
    // The version, then the BLAS and the kernel it runs (a slow fallback shows).
    std::string first_line = "vae " + vae_test::project_version() + "\n";
    EXPECT_EQ(version.output.substr(0, first_line.size()), first_line) << version.output;
    EXPECT_EQ(version.output.find("blas: OpenBLAS", first_line.size()), first_line.size()) << version.output;
    EXPECT_NE(version.output.find(", core "), std::string::npos) << version.output;
    EXPECT_EQ(run("version").output, version.output);
    EXPECT_NE(run("--help").output.find("--version"), std::string::npos) << "the usage names --version";
}

TEST(Cli, BadConfigNamesFileLineAndKey) {
    std::string folder = vae_test::temporary_folder("cli_bad_config");
    std::string path = folder + "/bad.ini";
    vae_test::write_file(path, "[model]\nlatent_dim = 8\nlatent_dimm = 3\n");
    Result result = run("train --config " + path + " --out " + folder + "/out");
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.output.find("bad.ini:3"), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("latent_dimm"), std::string::npos) << result.output;
    Result override_result = run("train --config " + tiny_config() + " --set model.latent_dim=-4");
    EXPECT_EQ(override_result.exit_code, 2);
    EXPECT_NE(override_result.output.find("latent_dim"), std::string::npos) << override_result.output;
}

TEST(Cli, ASmokeRunShorterThanTheWarmupWarnsAndShortensIt) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("cli_smoke_warmup");
    std::string path = folder + "/warmup.ini";
    // 1000 examples in batches of 100 for 20 epochs: 200 steps, warm-up 100.
    vae_test::write_file(path, "[data]\npath = " + vae_test::fashion_mnist_folder() + "\ntrain_limit = 1000\ntest_limit = 100\n"
                               "[model]\nlatent_dim = 4\nhidden = 16\n[train]\nepochs = 20\nbatch_size = 100\n"
                               "warmup_steps = 100\neval_every_epochs = 0\n");
    Result smoke = run("train --config " + path + " --set train.epochs=1 --device cpu --out " + folder + "/smoke");
    EXPECT_EQ(smoke.exit_code, 0) << smoke.output;
    EXPECT_NE(smoke.output.find("warning: [train] warmup_steps shortened from 100 to 10"), std::string::npos)
        << smoke.output;
    // The file's own inconsistency, and an override of the warm-up itself, are still refused.
    Result asked = run("train --config " + path + " --set train.warmup_steps=500 --device cpu --out " + folder + "/asked");
    EXPECT_EQ(asked.exit_code, 2) << asked.output;
    EXPECT_NE(asked.output.find("warmup_steps"), std::string::npos) << asked.output;
}

TEST(Cli, MissingFilesAreReported) {
    Result config = run("train --config /nonexistent/x.ini");
    EXPECT_NE(config.exit_code, 0);
    EXPECT_NE(config.output.find("/nonexistent/x.ini"), std::string::npos);
    Result data = run("train --config " + tiny_config() + " --set data.path=/nonexistent/data --out " +
                      vae_test::temporary_folder("cli_missing_data"));
    EXPECT_NE(data.exit_code, 0);
    EXPECT_NE(data.output.find("/nonexistent/data"), std::string::npos) << data.output;
    Result checkpoint = run("eval --checkpoint /nonexistent/c.safetensors");
    EXPECT_NE(checkpoint.exit_code, 0);
    EXPECT_NE(checkpoint.output.find("/nonexistent/c.safetensors"), std::string::npos);
}

TEST(Cli, UnwritableOutputFolderIsAClearError) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    // A folder below a regular file can never be created, even by root.
    std::string folder = vae_test::temporary_folder("cli_unwritable");
    vae_test::write_file(folder + "/a_file", "x");
    Result result = run("train --config " + tiny_config() + " --device cpu --quiet --out " + folder + "/a_file/out");
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_NE(result.output.find(folder + "/a_file/out"), std::string::npos) << result.output;
}

TEST(Cli, ImpossibleMemoryIsAClearError) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    // Three 65536-wide layers need tens of GiB of parameters: more than the machine has.
    Result result = run("bench --config " + tiny_config() +
                        " --device cpu --set model.hidden=65536,65536,65536 --steps 1 --warmup-steps 0");
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("cannot allocate"), std::string::npos) << result.output;
}

TEST(Cli, CudaWithoutGpuFailsClearlyAndAutoFallsBack) {
    Result probe = run("bench --config " + tiny_config() + " --device cuda --steps 1 --warmup-steps 0");
    if (probe.exit_code == 0) GTEST_SKIP() << "a CUDA GPU is present";
    EXPECT_EQ(probe.exit_code, 1);
    EXPECT_NE(probe.output.find("CUDA"), std::string::npos) << probe.output;
    if (vae_test::fashion_mnist_folder().empty()) return;
    Result automatic = run("bench --config " + tiny_config() + " --device auto --steps 2 --warmup-steps 1");
    EXPECT_EQ(automatic.exit_code, 0) << automatic.output;
    EXPECT_NE(automatic.output.find("\"device\":\"cpu"), std::string::npos) << automatic.output;
}

// One number field of a JSON line (NaN when absent).
double json_number(const std::string &line, const char *key) {
    cJSON *object = cJSON_Parse(line.c_str());
    const cJSON *item = object ? cJSON_GetObjectItemCaseSensitive(object, key) : nullptr;
    double value = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    cJSON_Delete(object);
    return value;
}

TEST(Cli, TrainEvalSampleEndToEnd) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    // The output folder's parents are created as needed (a fresh clone has no runs/).
    std::string folder = vae_test::temporary_folder("cli_end_to_end") + "/runs/first";
    Result train = run("train --config " + tiny_config() + " --device cpu --quiet --out " + folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    for (const char *file : {"checkpoint.safetensors", "metrics.jsonl", "config.ini"})
        EXPECT_TRUE(std::filesystem::exists(folder + "/" + file)) << file;
    std::string metrics = vae_test::read_file(folder + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"kind\":\"train\""), std::string::npos);
    EXPECT_NE(metrics.find("\"kind\":\"eval\""), std::string::npos);
    // The resolved config reads back as a config.
    Result again = run("bench --config " + folder + "/config.ini --device cpu --steps 1 --warmup-steps 0");
    EXPECT_EQ(again.exit_code, 0) << again.output;
    Result eval = run("eval --checkpoint " + folder + "/checkpoint.safetensors --split test --iwae-k 5");
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    for (const char *key : {"\"elbo\":", "\"reconstruction\":", "\"kl\":", "\"log_likelihood\":", "\"iwae_k\":5",
                            "\"active_units\":", "\"kl_per_dimension\":[", "\"points\":500", "\"split\":\"test\"",
                            "\"precision\":\"fp32\""})
        EXPECT_NE(eval.output.find(key), std::string::npos) << key << " in " << eval.output;
    // The same weights evaluated with bf16 GEMMs: the precision is the one
    // asked for, and the ELBO moves by bfloat16 rounding (not at all in fp32).
    Result eval_fp32 = run("eval --checkpoint " + folder + "/checkpoint.safetensors --split test --iwae-k 5 --precision fp32");
    Result eval_bf16 = run("eval --checkpoint " + folder + "/checkpoint.safetensors --split test --iwae-k 5 --precision bf16");
    ASSERT_EQ(eval_fp32.exit_code, 0) << eval_fp32.output;
    ASSERT_EQ(eval_bf16.exit_code, 0) << eval_bf16.output;
    EXPECT_NE(eval_bf16.output.find("\"precision\":\"bf16\""), std::string::npos) << eval_bf16.output;
    const double elbo_fp32 = json_number(eval_fp32.output, "elbo"), elbo_bf16 = json_number(eval_bf16.output, "elbo");
    EXPECT_EQ(elbo_fp32, json_number(eval.output, "elbo"));
    EXPECT_NE(elbo_bf16, elbo_fp32);
    EXPECT_LT(std::fabs(elbo_bf16 - elbo_fp32), 1e-2 * std::fabs(elbo_fp32));
    Result bad = run("eval --checkpoint " + folder + "/checkpoint.safetensors --precision fp16");
    EXPECT_EQ(bad.exit_code, 2) << bad.output;
    EXPECT_NE(bad.output.find("--precision expects fp32, tf32 or bf16, got fp16"), std::string::npos) << bad.output;
    std::string png = folder + "/samples.png";
    Result sample = run("sample --checkpoint " + folder + "/checkpoint.safetensors --out " + png + " --n 16");
    ASSERT_EQ(sample.exit_code, 0) << sample.output;
    std::string bytes = vae_test::read_file(png);
    ASSERT_GT(bytes.size(), 8u);
    EXPECT_EQ(bytes.substr(1, 3), "PNG");
    Result bench = run("bench --config " + tiny_config() + " --device cpu --steps 3 --warmup-steps 1");
    ASSERT_EQ(bench.exit_code, 0) << bench.output;
    EXPECT_NE(bench.output.find("\"samples_per_s\":"), std::string::npos);
}

// A real short run with model.objective = iwae (K = 5) through the CLI: every
// train line names the objective, the IWAE loss falls, it lies below the
// negative ELBO on average (the bound is tighter), and the model evaluates.
TEST(Cli, TrainWithTheIwaeObjective) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("cli_iwae") + "/run";
    Result train = run("train --config " + tiny_config() +
                       " --device cpu --set model.objective=iwae --set model.samples=5 --set train.epochs=3"
                       " --out " + folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    EXPECT_NE(train.output.find("iwae loss "), std::string::npos) << "the progress line names the loss";
    EXPECT_NE(vae_test::read_file(folder + "/config.ini").find("objective = iwae"), std::string::npos);
    std::istringstream lines(vae_test::read_file(folder + "/metrics.jsonl"));
    std::vector<double> losses, negative_elbos;
    for (std::string line; std::getline(lines, line);) {
        if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
        EXPECT_NE(line.find("\"objective\":\"iwae\""), std::string::npos) << line;
        losses.push_back(json_number(line, "loss"));
        negative_elbos.push_back(-json_number(line, "elbo"));
        ASSERT_TRUE(std::isfinite(losses.back()) && std::isfinite(negative_elbos.back())) << line;
    }
    ASSERT_GE(losses.size(), 10u) << "tiny_test logs every 5 of 60 steps";
    // An untrained decoder scores about 545 nats (784 log 2); 60 steps bring the IWAE-5 loss near 360.
    EXPECT_GT(losses.front(), 500.0);
    EXPECT_LT(losses.back(), losses.front() - 120.0);
    double loss_sum = 0, negative_elbo_sum = 0;
    for (size_t i = 0; i < losses.size(); ++i) loss_sum += losses[i], negative_elbo_sum += negative_elbos[i];
    EXPECT_LT(loss_sum, negative_elbo_sum) << "the IWAE-5 loss should lie below -ELBO on average";
    Result eval = run("eval --checkpoint " + folder + "/checkpoint.safetensors --split test --iwae-k 50");
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    const double log_likelihood = json_number(eval.output, "log_likelihood"), elbo = json_number(eval.output, "elbo");
    EXPECT_GT(log_likelihood, elbo);
    EXPECT_GT(log_likelihood, -400.0);

    // The default objective leaves the train lines as they were (no objective field).
    std::string elbo_folder = vae_test::temporary_folder("cli_elbo") + "/run";
    Result elbo_train = run("train --config " + tiny_config() + " --device cpu --quiet --set train.epochs=1 --out " +
                            elbo_folder);
    ASSERT_EQ(elbo_train.exit_code, 0) << elbo_train.output;
    EXPECT_EQ(vae_test::read_file(elbo_folder + "/metrics.jsonl").find("objective"), std::string::npos);
}

// A hierarchical model through the CLI: train (the groups and skip_grad_norm
// in the written config), eval's per-group fields, sampling at a
// temperature and per group; --groups on a one-latent model and a bad
// temperature are refused with exit 2.
TEST(Cli, HierarchicalModelTrainsEvaluatesAndSamples) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("cli_hierarchy") + "/run";
    Result train = run("train --config " + tiny_config() +
                       " --device cpu --quiet --set model.latent_groups=6,2 --set model.hierarchy_width=32"
                       " --set train.skip_grad_norm=1000 --set train.epochs=1 --out " + folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    std::string config = vae_test::read_file(folder + "/config.ini");
    for (const char *line : {"latent_groups = 6, 2", "hierarchy_width = 32", "skip_grad_norm = 1e+03"})
        EXPECT_NE(config.find(line), std::string::npos) << line << " in " << config;
    std::string checkpoint = folder + "/checkpoint.safetensors";
    Result eval = run("eval --checkpoint " + checkpoint + " --iwae-k 5");
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_NE(eval.output.find("\"group_kl\":["), std::string::npos) << eval.output;
    EXPECT_NE(eval.output.find("\"group_active_units\":["), std::string::npos) << eval.output;
    EXPECT_GT(json_number(eval.output, "log_likelihood"), json_number(eval.output, "elbo"));
    std::string png = folder + "/groups.png";
    Result groups = run("sample --checkpoint " + checkpoint + " --groups --n 5 --temperature 0.7 --out " + png);
    ASSERT_EQ(groups.exit_code, 0) << groups.output;
    EXPECT_NE(groups.output.find("wrote 10 samples"), std::string::npos) << groups.output;
    EXPECT_EQ(vae_test::read_file(png).substr(1, 3), "PNG");
    Result cold = run("sample --checkpoint " + checkpoint + " --temperature 0 --out " + png);
    EXPECT_EQ(cold.exit_code, 2) << cold.output;
    EXPECT_NE(cold.output.find("--temperature expects a number in (0, 100], got 0"), std::string::npos) << cold.output;

    std::string flat = vae_test::temporary_folder("cli_hierarchy_flat") + "/run";
    ASSERT_EQ(run("train --config " + tiny_config() + " --device cpu --quiet --set train.epochs=1 --out " + flat)
                  .exit_code, 0);
    Result refused = run("sample --checkpoint " + flat + "/checkpoint.safetensors --groups --out " + png);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("--groups needs a hierarchical model"), std::string::npos) << refused.output;
    Result mismatch = run("train --config " + tiny_config() + " --device cpu --set model.latent_groups=6,3 --out " +
                          folder + "-bad");
    EXPECT_EQ(mismatch.exit_code, 2) << mismatch.output;
    EXPECT_NE(mismatch.output.find("latent_dim: expected the sum of latent_groups (9), got 8"), std::string::npos)
        << mismatch.output;
}

// A hierarchical model trained with model.objective = iwae (K = 3) through
// the CLI: the written config names both, every train line the objective,
// the IWAE loss falls and lies below -ELBO on average, and eval's IWAE-20
// lies above its ELBO. Free bits with it are refused, naming the key.
TEST(Cli, HierarchicalModelTrainsWithTheIwaeObjective) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("cli_hierarchy_iwae") + "/run";
    const std::string model = " --set model.latent_groups=6,2 --set model.hierarchy_width=32"
                              " --set model.objective=iwae --set model.samples=3";
    Result train = run("train --config " + tiny_config() + " --device cpu" + model + " --set train.epochs=2 --out " +
                       folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    EXPECT_NE(train.output.find("iwae loss "), std::string::npos) << train.output;
    std::string config = vae_test::read_file(folder + "/config.ini");
    for (const char *line : {"latent_groups = 6, 2", "objective = iwae", "samples = 3"})
        EXPECT_NE(config.find(line), std::string::npos) << line << " in " << config;
    std::istringstream lines(vae_test::read_file(folder + "/metrics.jsonl"));
    std::vector<double> losses, negative_elbos;
    for (std::string line; std::getline(lines, line);) {
        if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
        EXPECT_NE(line.find("\"objective\":\"iwae\""), std::string::npos) << line;
        losses.push_back(json_number(line, "loss"));
        negative_elbos.push_back(-json_number(line, "elbo"));
        ASSERT_TRUE(std::isfinite(losses.back()) && std::isfinite(negative_elbos.back())) << line;
    }
    ASSERT_GE(losses.size(), 5u);
    EXPECT_LT(losses.back(), losses.front() - 100.0);
    double loss_sum = 0, negative_elbo_sum = 0;
    for (size_t i = 0; i < losses.size(); ++i) loss_sum += losses[i], negative_elbo_sum += negative_elbos[i];
    EXPECT_LT(loss_sum, negative_elbo_sum) << "the IWAE-3 loss should lie below -ELBO on average";
    Result eval = run("eval --checkpoint " + folder + "/checkpoint.safetensors --split test --iwae-k 20");
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_NE(eval.output.find("\"group_kl\":["), std::string::npos) << eval.output;
    EXPECT_GT(json_number(eval.output, "log_likelihood"), json_number(eval.output, "elbo")) << eval.output;
    Result refused = run("train --config " + tiny_config() + " --device cpu" + model +
                         " --set model.free_bits=0.5 --out " + folder + "-free-bits");
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("[model] free_bits: expected 0 with objective = iwae"), std::string::npos)
        << refused.output;
}

}  // namespace
