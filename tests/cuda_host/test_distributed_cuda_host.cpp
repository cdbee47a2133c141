// Data-parallel training on the host CUDA backend: `mpirun -np 2
// vae_cuda_host train --device cuda` goes through the real NCCL path
// (src/distributed/nccl_allreduce.c: ncclAllReduce(ncclAvg) on the backend's
// stream, captured into the step graph and replayed) against the host NCCL
// subset over MPI. Two ranks end where one process of the same global batch
// ends, step by step (each logged gradient norm) and in the final weights; a
// job is bitwise repeatable and computes with the step graph what it
// computes eagerly; and its checkpoint evaluates on the CPU `vae` like the
// checkpoint of the same job on the CPU backend; a failure in NCCL's set-up
// or collectives ends the job with its message (no hang). Skipped (visibly)
// without MPI or the Fashion-MNIST package.
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

const std::string mpiexec = VAE_MPIEXEC;

#define REQUIRE_MPI_AND_DATA()                                                                                         \
    do {                                                                                                               \
        if (mpiexec.empty()) GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev openmpi-bin)";             \
        if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";        \
    } while (0)

using Tensors = vae_test::CheckpointTensors;

// A small tanh model (smooth: float rounding stays small over the steps):
// 20 steps of a global batch of 20 (10 rows per rank) in one epoch of 400
// rows, the first eager, the second captured, the rest replayed; then the
// epoch's evaluation on 100 test rows.
std::string train_arguments(const std::string &device, const std::string &folder) {
    return "train --config " + std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini --device " + device + " --out " +
           folder +
           " --set model.activation=tanh --set model.hidden=32 --set model.latent_dim=4"
           " --set train.batch_size=20 --set train.epochs=1 --set data.train_limit=400 --set data.test_limit=100"
           " --set train.eval_batch_size=50 --set train.log_every_steps=2";
}

// One thread per process (the machine has few cores, the host target runs
// on the calling thread), a hang fails instead of stalling; VAE_CUDA_GRAPHS
// unset (step graphs on) unless a test asks otherwise.
std::string environment(const std::string &extra = "") {
    return "env -u VAE_CUDA_GRAPHS OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 " + extra + " timeout 120 ";
}

std::string launch(int processes, const std::string &program, const std::string &exported = "") {
    std::string line = mpiexec + " --allow-run-as-root --oversubscribe -np " + std::to_string(processes) +
                       " -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1" + exported;
    // Under scripts/sanitize.sh, as tests/test_distributed.cpp: Open MPI's
    // plugins leak at MPI_Finalize in frames LeakSanitizer cannot name.
    if (const char *asan = std::getenv("ASAN_OPTIONS"))
        line += " -x 'ASAN_OPTIONS=" + std::string(asan) + ":detect_leaks=0'";
    return line + " " + program;
}

std::string host_binary() { return std::string(VAE_BINARY_DIR) + "/vae_cuda_host"; }
std::string cpu_binary() { return std::string(VAE_BINARY_DIR) + "/vae"; }

struct Job {
    std::string folder;
    Tensors tensors;
    std::vector<double> grad_norms; // of each logged training step
    double eval_elbo = NAN;
};

// Runs a training command line and reads what it wrote.
Job run_job(const std::string &command, const std::string &folder, bool expect_distributed) {
    Job job;
    job.folder = folder;
    vae_test::CommandResult result = vae_test::run_command(command, true);
    EXPECT_EQ(result.exit_code, 0) << command << "\n" << result.output;
    if (expect_distributed) {
        EXPECT_NE(result.output.find("data parallel over MPI"), std::string::npos) << result.output;
    }
    const std::string checkpoint = folder + "/checkpoint.safetensors";
    if (result.exit_code != 0 || !std::filesystem::exists(checkpoint)) return job;
    job.tensors = vae_test::read_checkpoint_tensors(checkpoint);
    std::istringstream metrics(vae_test::read_file(folder + "/metrics.jsonl"));
    for (std::string line; std::getline(metrics, line);) {
        cJSON *object = cJSON_Parse(line.c_str());
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(object, "kind");
        const bool train = cJSON_IsString(kind) && std::strcmp(kind->valuestring, "train") == 0;
        const bool eval = cJSON_IsString(kind) && std::strcmp(kind->valuestring, "eval") == 0;
        const cJSON *norm = cJSON_GetObjectItemCaseSensitive(object, "grad_norm");
        const cJSON *elbo = cJSON_GetObjectItemCaseSensitive(object, "elbo");
        if (train && cJSON_IsNumber(norm)) job.grad_norms.push_back(norm->valuedouble);
        if (eval && cJSON_IsNumber(elbo)) job.eval_elbo = elbo->valuedouble;
        cJSON_Delete(object);
    }
    return job;
}

Job host_cuda_job(int processes, const std::string &name, const std::string &extra_environment = "") {
    const std::string folder = vae_test::temporary_folder(name);
    const std::string train = host_binary() + " " + train_arguments("cuda", folder);
    const std::string exported = extra_environment.empty() ? "" : " -x " + extra_environment;
    const std::string command =
        environment(extra_environment) + (processes == 0 ? train : launch(processes, train, exported));
    return run_job(command, folder, processes > 0);
}

double largest_tensor_difference(const Tensors &a, const Tensors &b) {
    double largest = 0;
    for (size_t i = 0; i < a.values.size() && i < b.values.size(); ++i)
        largest = std::max(largest, vae_test::relative_error(a.values[i], b.values[i]));
    return largest;
}

void expect_bitwise_equal(const Tensors &a, const Tensors &b, const std::string &what) {
    ASSERT_EQ(a.names, b.names) << what;
    for (size_t i = 0; i < a.values.size(); ++i) {
        ASSERT_EQ(a.values[i].size(), b.values[i].size()) << a.names[i];
        EXPECT_EQ(std::memcmp(a.values[i].data(), b.values[i].data(), a.values[i].size() * sizeof(float)), 0)
            << a.names[i] << ": " << what;
    }
}

// Two ranks of 10 rows average two means where one process takes the mean
// of 20 rows: the same gradient up to float rounding, which Adam carries
// into the weights. Measured (2026-12-07, 20 steps): gradient norms 4e-8
// relative, checkpoint tensors (weights and Adam's moments) 1.7e-7; the
// tolerances leave 25x and 58x. Planted bugs, each failing these tests:
// ncclSum for ncclAvg in nccl_allreduce.c doubles every gradient norm (Adam
// all but hides it in the weights, not in its second moment: 3 relative),
// and an all-reduce recorded nowhere in the capture (skipped on replay)
// lets the ranks drift apart (the trainer's own check then fails the job).
constexpr double kGradNormTolerance = 1e-6;
constexpr double kWeightTolerance = 1e-5;

TEST(DistributedCudaHost, TwoRanksEndWhereOneProcessEnds) {
    REQUIRE_MPI_AND_DATA();
    const Job one = host_cuda_job(0, "distributed_cuda_host_one");
    const Job two = host_cuda_job(2, "distributed_cuda_host_two");
    ASSERT_FALSE(one.tensors.names.empty());
    ASSERT_FALSE(two.tensors.names.empty());
    ASSERT_EQ(one.tensors.names, two.tensors.names);
    EXPECT_EQ(one.tensors.step, "20");
    EXPECT_EQ(two.tensors.step, "20");
    // Rank 0 alone writes the metrics: one line per logged step.
    ASSERT_EQ(one.grad_norms.size(), 10u);
    ASSERT_EQ(two.grad_norms.size(), one.grad_norms.size());
    double largest_norm = 0;
    for (size_t i = 0; i < one.grad_norms.size(); ++i) {
        const double difference = std::fabs(two.grad_norms[i] - one.grad_norms[i]) / one.grad_norms[i];
        EXPECT_LE(difference, kGradNormTolerance)
            << "logged step " << 2 * (i + 1) << ": gradient norm " << two.grad_norms[i] << " on 2 ranks, "
            << one.grad_norms[i] << " in one process";
        largest_norm = std::max(largest_norm, difference);
    }
    const double largest_weight = largest_tensor_difference(two.tensors, one.tensors);
    EXPECT_LE(largest_weight, kWeightTolerance) << "the weights after 20 steps: 2 ranks vs 1 process";
    EXPECT_NEAR(two.eval_elbo, one.eval_elbo, 1e-5 * std::fabs(one.eval_elbo));
    std::printf("2 ranks vs 1 process, host CUDA: gradient norms %.3g, weights %.3g relative (largest); test ELBO "
                "%.9g vs %.9g\n",
                largest_norm, largest_weight, two.eval_elbo, one.eval_elbo);
}

TEST(DistributedCudaHost, TwoRankJobsAreBitwiseRepeatableAndGraphsEqualEagerSteps) {
    REQUIRE_MPI_AND_DATA();
    const Job first = host_cuda_job(2, "distributed_cuda_host_first");
    const Job second = host_cuda_job(2, "distributed_cuda_host_second");
    // Every step eager: the all-reduce runs when enqueued instead of from
    // the recorded graph; the same operations on the same values.
    const Job eager = host_cuda_job(2, "distributed_cuda_host_eager", "VAE_CUDA_GRAPHS=0");
    ASSERT_FALSE(first.tensors.names.empty());
    expect_bitwise_equal(second.tensors, first.tensors, "a second 2-rank job differs");
    EXPECT_EQ(second.grad_norms, first.grad_norms);
    expect_bitwise_equal(eager.tensors, first.tensors, "2 ranks with eager steps differ from 2 ranks replaying graphs");
    EXPECT_EQ(eager.grad_norms, first.grad_norms);
}

// The host CUDA kernels against the CPU backend's code, over MPI on both:
// the two evaluations of the two checkpoints on the CPU `vae`. The CPU and
// host CUDA differ by GEMM and reduction order alone (test_cli_cuda_host:
// 1e-8 relative for one checkpoint); 20 steps of tanh keep that small.
TEST(DistributedCudaHost, TwoRankCheckpointEvaluatesOnTheCpuLikeTheCpuTwoRankJob) {
    REQUIRE_MPI_AND_DATA();
    const Job cuda = host_cuda_job(2, "distributed_cuda_host_cuda");
    const std::string folder = vae_test::temporary_folder("distributed_cuda_host_cpu");
    const Job cpu =
        run_job(environment() + launch(2, cpu_binary() + " " + train_arguments("cpu", folder)), folder, true);
    ASSERT_FALSE(cuda.tensors.names.empty());
    ASSERT_FALSE(cpu.tensors.names.empty());
    const double largest_weight = largest_tensor_difference(cuda.tensors, cpu.tensors);
    EXPECT_LE(largest_weight, kWeightTolerance) << "2 ranks: host CUDA vs CPU weights";

    auto evaluate = [](const Job &job) {
        const std::string command = environment() + cpu_binary() + " eval --checkpoint " + job.folder +
                                    "/checkpoint.safetensors --split test --device cpu";
        vae_test::CommandResult result = vae_test::run_command(command, false);
        EXPECT_EQ(result.exit_code, 0) << result.output << result.errors;
        cJSON *object = cJSON_Parse(result.output.c_str());
        const cJSON *elbo = cJSON_GetObjectItemCaseSensitive(object, "elbo");
        const double value = cJSON_IsNumber(elbo) ? elbo->valuedouble : NAN;
        cJSON_Delete(object);
        return value;
    };
    const double cuda_elbo = evaluate(cuda), cpu_elbo = evaluate(cpu);
    ASSERT_TRUE(std::isfinite(cuda_elbo) && std::isfinite(cpu_elbo));
    EXPECT_NEAR(cuda_elbo, cpu_elbo, 1e-5 * std::fabs(cpu_elbo));
    std::printf("2 ranks, host CUDA vs CPU: weights %.3g relative (largest); CPU eval ELBO %.9g vs %.9g\n",
                largest_weight, cuda_elbo, cpu_elbo);
}

// A job whose NCCL set-up or collective fails ends, on every rank, with the
// failure's message: a 2-rank job with a fault the host subset injects
// (VAE_CUDA_HOST_NCCL_FAULT), under a 60 s limit that only a hang reaches.
vae_test::CommandResult faulty_job(const std::string &fault, const std::string &name) {
    const std::string folder = vae_test::temporary_folder(name);
    const std::string train = host_binary() + " " + train_arguments("cuda", folder);
    const std::string command = "env -u VAE_CUDA_GRAPHS OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 60 " +
                                launch(2, train, " -x VAE_CUDA_HOST_NCCL_FAULT=" + fault);
    return vae_test::run_command(command, true);
}

// Rank 0's ncclGetUniqueId fails (NCCL does so when its bootstrap finds no
// network interface). nccl_allreduce.c returned before the id's broadcast
// there, and rank 1 waited in MPI_Bcast for ever (seen: the 60 s limit).
TEST(DistributedCudaHost, AFailedUniqueIdEndsEveryRankWithItsMessage) {
    REQUIRE_MPI_AND_DATA();
    const vae_test::CommandResult result = faulty_job("unique_id", "distributed_cuda_host_unique_id");
    EXPECT_NE(result.exit_code, 0) << result.output;
    EXPECT_NE(result.exit_code, 124) << "the job hung:\n" << result.output;
    EXPECT_NE(result.output.find("ncclGetUniqueId failed"), std::string::npos) << result.output;
}

// Rank 1's third all-reduce (a graph replay) fails as a lost connection
// does, and rank 0 waits in it: rank 1's watchdog (nccl_allreduce.c) reads
// the asynchronous error, aborts the communicator and ends the process,
// and mpirun ends the job.
TEST(DistributedCudaHost, AnAsynchronousNcclErrorEndsTheJobThroughTheWatchdog) {
    REQUIRE_MPI_AND_DATA();
    const vae_test::CommandResult result = faulty_job("all_reduce_rank_1", "distributed_cuda_host_async_error");
    EXPECT_NE(result.exit_code, 0) << result.output;
    EXPECT_NE(result.exit_code, 124) << "the job hung:\n" << result.output;
    EXPECT_NE(result.output.find("rank 1 of 2: NCCL reported an asynchronous error"), std::string::npos)
        << result.output;
}

} // namespace
