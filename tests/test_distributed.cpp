// Data-parallel training over MPI on the CPU backend, through real `mpirun
// -np 2 vae train` jobs: two processes end where one process ends (within
// 1e-4 relative per tensor after 100 steps of a tanh model), a job is
// bitwise repeatable, one launched process is bitwise a plain run, a batch
// the world size does not divide is refused, a rank that fails on its own
// (an unwritable output folder, non-finite values) stops every rank with the
// same exit code, a SIGKILLed rank ends the job within 60 s, and --resume
// after such a kill continues exactly. Skipped (visibly) in builds without
// MPI or without the Fashion-MNIST package.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

extern "C" {
#include "io/checkpoint.h"
}

extern char **environ;

namespace {

const std::string mpiexec = VAE_MPIEXEC;

#define REQUIRE_MPI_AND_DATA()                                                                          \
    do {                                                                                                \
        if (mpiexec.empty()) GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev openmpi-bin)"; \
        if (vae_test::fashion_mnist_folder().empty())                                                   \
            GTEST_SKIP() << "dataset-fashion-mnist is not installed";                                   \
    } while (0)

std::string vae_binary() { return std::string(VAE_BINARY_DIR) + "/vae"; }

// A small tanh model: 100 steps of batch 20 in one epoch of 2000 examples.
std::vector<std::string> train_words(const std::string &folder, const std::vector<std::string> &extra = {}) {
    std::vector<std::string> words = {vae_binary(), "train", "--config", std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini",
                                      "--device", "cpu", "--quiet", "--out", folder,
                                      "--set", "model.activation=tanh", "--set", "model.hidden=32",
                                      "--set", "model.latent_dim=4", "--set", "train.batch_size=20",
                                      "--set", "train.epochs=1", "--set", "data.test_limit=100",
                                      "--set", "train.eval_batch_size=50", "--set", "train.log_every_steps=25"};
    words.insert(words.end(), extra.begin(), extra.end());
    return words;
}

// One OpenMP/OpenBLAS thread per process: the CI machine has few cores.
std::vector<std::string> launch_words(int processes, const std::vector<std::string> &command) {
    std::vector<std::string> words = {mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(processes),
                                      "-x", "OMP_NUM_THREADS=1", "-x", "OPENBLAS_NUM_THREADS=1"};
    // Under scripts/sanitize.sh: Open MPI's plugins are unloaded at
    // MPI_Finalize with allocations they never free, which LeakSanitizer
    // reports from frames it can no longer name (no suppression can match
    // them). Launched ranks keep every other ASan/UBSan check; leaks in the
    // engine's own code are checked by the single-process runs here and by
    // every other suite.
    if (const char *asan = std::getenv("ASAN_OPTIONS")) {
        words.push_back("-x");
        words.push_back(std::string("ASAN_OPTIONS=") + asan + ":detect_leaks=0");
    }
    words.insert(words.end(), command.begin(), command.end());
    return words;
}

std::string shell_line(const std::vector<std::string> &words) {
    std::string line = "env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 300";
    for (const auto &w : words) line += " '" + w + "'";
    return line;
}

vae_test::CommandResult run(const std::vector<std::string> &words) {
    return vae_test::run_command(shell_line(words), true);
}

using Tensors = vae_test::CheckpointTensors;

void expect_bitwise_equal(const Tensors &a, const Tensors &b, const std::string &what) {
    ASSERT_EQ(a.names, b.names);
    EXPECT_EQ(a.step, b.step);
    for (size_t i = 0; i < a.values.size(); ++i) {
        ASSERT_EQ(a.values[i].size(), b.values[i].size()) << a.names[i];
        EXPECT_EQ(std::memcmp(a.values[i].data(), b.values[i].data(), a.values[i].size() * sizeof(float)), 0)
            << a.names[i] << ": " << what;
    }
}

size_t count_lines(const std::string &text, const std::string &needle) {
    size_t count = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
    return count;
}

// The reference a single process reaches, shared by the tests.
const Tensors &single_process_result() {
    static Tensors result;
    static bool done = false;
    if (!done) {
        std::string folder = vae_test::temporary_folder("distributed_single");
        auto r = run(train_words(folder));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        result = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
        done = true;
    }
    return result;
}

const Tensors &two_process_result() {
    static Tensors result;
    static bool done = false;
    if (!done) {
        std::string folder = vae_test::temporary_folder("distributed_two");
        auto r = run(launch_words(2, train_words(folder)));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        result = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
        // Rank 0 alone writes: one metrics line per log point, no duplicate.
        std::string metrics = vae_test::read_file_or_empty(folder + "/metrics.jsonl");
        EXPECT_EQ(count_lines(metrics, "\"kind\":\"train\""), 4u) << metrics;
        EXPECT_EQ(count_lines(metrics, "\"kind\":\"eval\""), 1u) << metrics;
        done = true;
    }
    return result;
}

TEST(Distributed, TwoProcessesEndWhereOneProcessEnds) {
    REQUIRE_MPI_AND_DATA();
    const Tensors &one = single_process_result();
    const Tensors &two = two_process_result();
    ASSERT_EQ(one.names, two.names);
    ASSERT_EQ(one.step, "100");
    ASSERT_EQ(two.step, "100");
    double largest = 0;
    for (size_t i = 0; i < one.values.size(); ++i) {
        double error = vae_test::relative_error(two.values[i], one.values[i]);
        EXPECT_LE(error, 1e-4) << one.names[i] << " after 100 steps: 2 processes vs 1";
        largest = std::max(largest, error);
    }
    std::printf("largest relative difference per tensor, 2 processes vs 1: %.3g\n", largest);
}

TEST(Distributed, OneLaunchedProcessIsBitwiseAPlainRun) {
    REQUIRE_MPI_AND_DATA();
    std::string folder = vae_test::temporary_folder("distributed_one_launched");
    auto r = run(launch_words(1, train_words(folder)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"), single_process_result(),
                         "mpirun -np 1 differs from a plain run");
}

TEST(Distributed, TwoProcessJobsAreBitwiseRepeatable) {
    REQUIRE_MPI_AND_DATA();
    std::string folder = vae_test::temporary_folder("distributed_repeat");
    auto r = run(launch_words(2, train_words(folder)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"), two_process_result(),
                         "a second 2-process run differs");
}

double json_number(const std::string &line, const std::string &key) {
    size_t at = line.find("\"" + key + "\":");
    return at == std::string::npos ? NAN : std::atof(line.c_str() + at + key.size() + 3);
}

TEST(Distributed, ShardedEvaluationMatchesOneProcess) {
    REQUIRE_MPI_AND_DATA();
    // 100 test rows in evaluation batches of 30: rank 0 takes batches 0 and
    // 2, rank 1 batches 1 and 3 (the short one).
    std::string folder = vae_test::temporary_folder("distributed_eval");
    auto r = run(train_words(folder, {"--set", "train.eval_batch_size=30", "--max-steps", "30"}));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::vector<std::string> eval = {vae_binary(), "eval", "--checkpoint", folder + "/checkpoint.safetensors",
                                     "--split", "test", "--iwae-k", "20", "--device", "cpu"};
    auto one = vae_test::run_command(shell_line(eval), false);
    auto two = vae_test::run_command(shell_line(launch_words(2, eval)), false);
    ASSERT_EQ(one.exit_code, 0) << one.errors;
    ASSERT_EQ(two.exit_code, 0) << two.errors;
    EXPECT_EQ(count_lines(two.output, "\"kind\":\"eval\""), 1u) << "rank 0 alone prints:\n" << two.output;
    for (const char *key : {"elbo", "log_likelihood", "kl", "active_units", "points"}) {
        double a = json_number(one.output, key), b = json_number(two.output, key);
        EXPECT_TRUE(std::isfinite(a)) << key << " in " << one.output;
        EXPECT_NEAR(b, a, 1e-6 * std::fabs(a) + 1e-9) << key;
    }
}

TEST(Distributed, RefusesABatchTheWorldSizeDoesNotDivide) {
    REQUIRE_MPI_AND_DATA();
    std::string folder = vae_test::temporary_folder("distributed_odd_batch");
    auto r = run(launch_words(2, train_words(folder, {"--set", "train.batch_size=25"})));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(count_lines(r.output, "train.batch_size = 25 cannot be split evenly over 2 processes"), 1u)
        << "printed once, by one rank:\n" << r.output;
}

TEST(Distributed, AFailureOnTheWritingRankStopsEveryRank) {
    REQUIRE_MPI_AND_DATA();
    // Rank 0 alone creates the output folder; a file in its way fails it
    // there only. The other rank must not wait for it forever.
    std::string base = vae_test::temporary_folder("distributed_unwritable");
    vae_test::write_file(base + "/in_the_way", "a file, not a folder");
    auto start = std::chrono::steady_clock::now();
    auto r = run(launch_words(2, train_words(base + "/in_the_way/run")));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_LT(seconds, 60.0);
    EXPECT_EQ(count_lines(r.output, "cannot create output folder"), 1u) << r.output;
}

TEST(Distributed, NonFiniteValuesStopEveryRankWithTheSameCode) {
    REQUIRE_MPI_AND_DATA();
    std::string folder = vae_test::temporary_folder("distributed_nonfinite");
    auto r = run(launch_words(2, train_words(folder, {"--set", "train.lr=1e30", "--set", "train.nonfinite=stop"})));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(count_lines(r.output, "non-finite loss or gradients"), 1u) << r.output;
    EXPECT_TRUE(std::filesystem::exists(folder + "/checkpoint-nonfinite.safetensors")) << r.output;
}

// A job started in the background, its ranks found by their environment.
struct Job {
    pid_t launcher = -1;
    std::string log;
};

Job start_job(const std::vector<std::string> &words, const std::string &log) {
    Job job;
    job.log = log;
    std::vector<char *> argv;
    for (const auto &w : words) argv.push_back(const_cast<char *>(w.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&job.launcher, argv[0], &actions, nullptr, argv.data(), environ) != 0) job.launcher = -1;
    posix_spawn_file_actions_destroy(&actions);
    return job;
}

pid_t parent_of(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    size_t close = text.rfind(')');
    if (close == std::string::npos) return -1;
    std::istringstream rest(text.substr(close + 2));
    char state;
    pid_t parent = -1;
    rest >> state >> parent;
    return parent;
}

// The process of the given rank among the launcher's children.
pid_t find_rank(pid_t launcher, int rank) {
    std::string wanted = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
    for (const auto &entry : std::filesystem::directory_iterator("/proc")) {
        std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        pid_t pid = std::stoi(name);
        if (parent_of(pid) != launcher) continue;
        std::ifstream file("/proc/" + name + "/environ");
        std::string environment((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        for (size_t at = 0; at < environment.size();) {
            size_t end = environment.find('\0', at);
            if (end == std::string::npos) end = environment.size();
            if (environment.compare(at, end - at, wanted) == 0) return pid;
            at = end + 1;
        }
    }
    return -1;
}

// Waits up to limit seconds; returns the exit code (128 + signal) or -1.
int wait_for(pid_t pid, double limit, double *seconds) {
    auto start = std::chrono::steady_clock::now();
    for (;;) {
        int status = 0;
        pid_t done = waitpid(pid, &status, WNOHANG);
        *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (*seconds > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// Starts a long 2-process job, waits for its first checkpoint, SIGKILLs
// rank 1 and returns the launcher's exit code and how long it took to end.
void kill_rank_after_first_checkpoint(const std::string &folder, const std::vector<std::string> &extra, int *exit_code,
                                      double *seconds, std::string *log) {
    std::string log_path = folder + ".log";
    Job job = start_job(launch_words(2, train_words(folder, extra)), log_path);
    ASSERT_GT(job.launcher, 0);
    auto start = std::chrono::steady_clock::now();
    while (!std::filesystem::exists(folder + "/checkpoint.safetensors") &&
           std::chrono::steady_clock::now() - start < std::chrono::seconds(120))
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    pid_t victim = find_rank(job.launcher, 1);
    ASSERT_GT(victim, 0) << "rank 1 not found";
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    *exit_code = wait_for(job.launcher, 90.0, seconds);
    *log = vae_test::read_file_or_empty(log_path);
}

// A run that only a signal or a kill ends, however fast the machine: the
// test acts on a state of it (its first checkpoint, a logged step), never
// on a time. The learning rate is constant, so the plan's length changes no
// step (a resumed run may be given a shorter plan).
constexpr int endless_epochs = 1000000;
constexpr int steps_per_epoch = 100;  // train_words: 2000 examples in batches of 20

std::vector<std::string> long_run() {
    return {"--set", "train.epochs=" + std::to_string(endless_epochs), "--set", "checkpoint.every_steps=50"};
}

TEST(Distributed, AKilledRankEndsTheJobWithinAMinute) {
    REQUIRE_MPI_AND_DATA();
    std::string folder = vae_test::temporary_folder("distributed_killed");
    int exit_code = 0;
    double seconds = 0;
    std::string log;
    kill_rank_after_first_checkpoint(folder, long_run(), &exit_code, &seconds, &log);
    EXPECT_NE(exit_code, 0) << log;
    EXPECT_NE(exit_code, -1) << "the job still ran 90 s after a rank was killed:\n" << log;
    EXPECT_LT(seconds, 60.0) << log;
    // The launcher names what was lost.
    EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
    EXPECT_NE(log.find("signal 9"), std::string::npos) << log;
    // The last checkpoint is intact.
    Tensors last = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    EXPECT_FALSE(last.names.empty());
}

TEST(Distributed, SigtermToTheLauncherStopsEveryRankWithACheckpoint) {
    REQUIRE_MPI_AND_DATA();
    // mpirun forwards SIGTERM to the ranks (and SIGKILLs them 1 s later);
    // they agree to stop at the same step, one step after the first saw it,
    // and rank 0 writes the checkpoint.
    std::string folder = vae_test::temporary_folder("distributed_sigterm");
    std::string log_path = folder + ".log";
    // No periodic checkpoints: the one found afterwards is the stop's.
    std::vector<std::string> words =
        train_words(folder, {"--set", "train.epochs=" + std::to_string(endless_epochs), "--set", "checkpoint.every_steps=0"});
    words.erase(std::find(words.begin(), words.end(), "--quiet"));
    Job job = start_job(launch_words(2, words), log_path);
    ASSERT_GT(job.launcher, 0);
    auto start = std::chrono::steady_clock::now();
    while (vae_test::read_file_or_empty(log_path).find("step 50/") == std::string::npos &&
           std::chrono::steady_clock::now() - start < std::chrono::seconds(120))
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(kill(job.launcher, SIGTERM), 0);
    double seconds = 0;
    int exit_code = wait_for(job.launcher, 90.0, &seconds);
    std::string log = vae_test::read_file_or_empty(log_path);
    EXPECT_EQ(exit_code, 1) << log;
    EXPECT_LT(seconds, 60.0) << log;
    EXPECT_EQ(count_lines(log, "stopped by a signal"), 1u) << log;
    Tensors last = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    ASSERT_FALSE(last.step.empty());
    EXPECT_GE(std::stol(last.step), 50) << "the checkpoint is the stop's, written after the signal";
    // The metrics end at the step of the checkpoint (rank 0 logged it).
    std::string metrics = vae_test::read_file_or_empty(folder + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"step\":" + last.step + ","), std::string::npos) << metrics;
}

TEST(Distributed, ResumeAfterAKilledRankContinuesExactly) {
    REQUIRE_MPI_AND_DATA();
    // An endless job, a checkpoint every 50 steps, rank 1 killed after the first.
    std::string folder = vae_test::temporary_folder("distributed_resume");
    int exit_code = 0;
    double seconds = 0;
    std::string log;
    kill_rank_after_first_checkpoint(folder, long_run(), &exit_code, &seconds, &log);
    ASSERT_NE(exit_code, 0) << "the run ended before it was killed:\n" << log;
    Tensors killed = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    ASSERT_FALSE(killed.step.empty()) << log;
    // Resumed to the end of a plan past the kill (at least 3 epochs), it
    // ends bitwise where a job planned so and never killed ends.
    int epochs = std::max(3, (int)(std::stol(killed.step) / steps_per_epoch) + 1);
    std::vector<std::string> settings = {"--set", "train.epochs=" + std::to_string(epochs), "--set",
                                         "checkpoint.every_steps=50"};
    std::string reference = vae_test::temporary_folder("distributed_resume_reference");
    auto r = run(launch_words(2, train_words(reference, settings)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::vector<std::string> resume = settings;
    resume.push_back("--resume");
    r = run(launch_words(2, train_words(folder, resume)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"),
                         vae_test::read_checkpoint_tensors(reference + "/checkpoint.safetensors"), "resumed run differs");
    // The metrics file holds each step once: the last train line and the final eval at the end.
    std::string metrics = vae_test::read_file_or_empty(folder + "/metrics.jsonl");
    EXPECT_EQ(count_lines(metrics, "\"step\":" + std::to_string(epochs * steps_per_epoch) + ","), 2u) << metrics;
}

TEST(Distributed, LaunchedRanksSwitchBlasKernelsWithoutRestarting) {
    REQUIRE_MPI_AND_DATA();
    // As on a CPU OpenBLAS does not recognise (an AMD Zen 4 under OpenBLAS
    // 0.3.21): each rank switches OpenBLAS to the features' kernels inside
    // the process mpirun started, so MPI starts and the job trains.
    std::string folder = vae_test::temporary_folder("distributed_blas_switch");
    std::vector<std::string> words = train_words(folder, {"--max-steps", "10"});
    words.erase(std::find(words.begin(), words.end(), "--quiet"));
    std::vector<std::string> launch = launch_words(2, words);
    launch.insert(launch.begin() + 1, {"-x", "VAE_BLAS_SIMULATE_UNKNOWN_CPU=1"});
    auto r = vae_test::run_command("env -u OPENBLAS_CORETYPE" + shell_line(launch).substr(3), true);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx")) {
        EXPECT_NE(r.output.find("(chosen by CPU features; OpenBLAS chose Prescott)"), std::string::npos) << r.output;
    }
    EXPECT_TRUE(std::filesystem::exists(folder + "/checkpoint.safetensors")) << r.output;
}

}  // namespace
