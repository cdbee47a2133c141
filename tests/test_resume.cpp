// Exact resume: a real `vae train` process killed with SIGKILL at several
// moments and resumed with --resume ends with parameters and Adam moments
// bitwise identical to a run that was never interrupted. Also SIGTERM writes
// a checkpoint, periodic checkpoints are kept as configured, and a
// non-finite loss stops training while the last good checkpoint survives.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
}

extern char **environ;

namespace {

std::string vae_binary() { return std::string(VAE_BINARY_DIR) + "/vae"; }
std::string tiny_config() { return std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini"; }

int wait_for(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

std::vector<std::string> train_arguments(const std::string &folder, bool resume, int epochs = 8) {
    std::vector<std::string> a = {vae_binary(), "train", "--config", tiny_config(), "--device", "cpu", "--quiet",
                                  "--out", folder, "--set", "train.epochs=" + std::to_string(epochs),
                                  "--set", "checkpoint.every_steps=7", "--set", "train.eval_every_epochs=3"};
    if (resume) a.push_back("--resume");
    return a;
}

// A run that only a signal ends: interrupted runs are planned this long, so
// that however fast the machine, the signal finds them running. The
// learning rate is constant, so a run planned for more epochs is, step for
// step, the run planned for fewer (Resume.MoreEpochsContinue...).
constexpr int endless_epochs = 1000000;
constexpr int tiny_steps_per_epoch = 20;  // configs/tiny_test.ini: 2000 examples, batches of 100

// The epochs a reference run needs to end past an interrupted run's
// checkpoint (at least at_least), whatever step the signal reached.
int epochs_past(const std::string &step, int steps_per_epoch, int at_least) {
    return std::max(at_least, (int)(std::stol(step) / steps_per_epoch) + 1);
}

using Snapshot = vae_test::CheckpointTensors;

void expect_bitwise_equal(const Snapshot &a, const Snapshot &b) {
    ASSERT_EQ(a.names, b.names);
    EXPECT_EQ(a.step, b.step);
    for (size_t i = 0; i < a.values.size(); ++i) {
        ASSERT_EQ(a.values[i].size(), b.values[i].size()) << a.names[i];
        EXPECT_EQ(std::memcmp(a.values[i].data(), b.values[i].data(), a.values[i].size() * sizeof(float)), 0)
            << a.names[i] << " differs after resume";
    }
}

TEST(Resume, KilledRunsResumeToBitwiseIdenticalParameters) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    // Kill points that follow the run's progress rather than the clock, so
    // they land the same way on a slow (sanitizer) build: during start-up,
    // while a checkpoint's temporary file is being written, and at several
    // delays after a checkpoint was renamed into place.
    std::string folder = vae_test::temporary_folder("resume_killed");
    enum class KillPoint { startup, while_writing, after_checkpoint };
    struct Kill {
        KillPoint point;
        int delay_ms;
    };
    const Kill schedule[] = {{KillPoint::startup, 150},        {KillPoint::while_writing, 0},
                             {KillPoint::after_checkpoint, 0}, {KillPoint::after_checkpoint, 20},
                             {KillPoint::while_writing, 0},    {KillPoint::after_checkpoint, 70},
                             {KillPoint::after_checkpoint, 150}};
    int kills = 0, kills_after_a_checkpoint = 0;
    // The killed runs are endless: each kill finds its run going.
    for (const Kill &kill_at : schedule) {
        pid_t pid = vae_test::spawn_quiet(train_arguments(folder, true, endless_epochs));
        ASSERT_GT(pid, 0);
        std::string latest = folder + "/checkpoint.safetensors";
        auto written_at = [&] {
            std::error_code error;
            auto time = std::filesystem::last_write_time(latest, error);
            return error ? std::filesystem::file_time_type::min() : time;
        };
        auto before = written_at();
        auto writing = [&] {
            std::error_code error;
            for (const auto &entry : std::filesystem::directory_iterator(folder, error))
                if (entry.path().filename().string().rfind("checkpoint.safetensors.tmp", 0) == 0) return true;
            return false;
        };
        int status = 0;
        bool exited = false;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
        if (kill_at.point == KillPoint::startup) {
            std::this_thread::sleep_for(std::chrono::milliseconds(kill_at.delay_ms));
        } else {
            while (std::chrono::steady_clock::now() < deadline) {
                if (waitpid(pid, &status, WNOHANG) == pid) { exited = true; break; }
                // A write too quick to catch still moves the kill past a checkpoint.
                if ((kill_at.point == KillPoint::while_writing && writing()) || written_at() != before) break;
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
            if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(kill_at.delay_ms));
        }
        ASSERT_FALSE(exited) << "an endless run ended by itself, exit status " << status;
        bool had_checkpoint = written_at() != std::filesystem::file_time_type::min();
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        ASSERT_EQ(wait_for(pid), 128 + SIGKILL);
        ++kills;
        if (had_checkpoint) ++kills_after_a_checkpoint;
    }
    EXPECT_EQ(kills, (int)(sizeof schedule / sizeof schedule[0]));
    EXPECT_GE(kills_after_a_checkpoint, 3);
    // The last resume runs to the end of a plan past the kills; a run
    // planned so from the start and never killed is the reference.
    Snapshot killed = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    ASSERT_FALSE(killed.step.empty());
    int epochs = epochs_past(killed.step, tiny_steps_per_epoch, 8);
    std::string reference = vae_test::temporary_folder("resume_reference");
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(train_arguments(reference, false, epochs))), 0);
    Snapshot expected = vae_test::read_checkpoint_tensors(reference + "/checkpoint.safetensors");
    ASSERT_EQ(expected.step, std::to_string(epochs * tiny_steps_per_epoch));
    ASSERT_GT(expected.names.size(), 8u) << "parameters and both Adam moments are stored";
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(train_arguments(folder, true, epochs))), 0);
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"), expected);
    // No temporary file survives the kills' aftermath.
    for (const auto &entry : std::filesystem::directory_iterator(folder))
        EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(Resume, SigtermWritesACheckpointThatResumesExactly) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("sigterm");
    auto arguments = [&](const std::string &out, bool resume, int epochs) {
        std::vector<std::string> a = train_arguments(out, resume, epochs);
        a.insert(a.end(), {"--set", "checkpoint.every_steps=0"});
        return a;
    };
    // An endless run, signalled once training is under way (its first
    // metrics line), however slow or fast the build.
    pid_t pid = vae_test::spawn_quiet(arguments(folder, true, endless_epochs));
    for (int i = 0; i < 6000 && vae_test::read_file_or_empty(folder + "/metrics.jsonl").empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    EXPECT_EQ(wait_for(pid), 1) << "an interrupted run exits with 1 after saving";
    Snapshot interrupted = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    ASSERT_FALSE(interrupted.step.empty());
    EXPECT_NE(interrupted.step, "0");
    // Resumed to the end of a plan past the signal, it is the run planned so.
    int epochs = epochs_past(interrupted.step, tiny_steps_per_epoch, 30);
    std::string reference = vae_test::temporary_folder("sigterm_reference");
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments(reference, false, epochs))), 0);
    Snapshot expected = vae_test::read_checkpoint_tensors(reference + "/checkpoint.safetensors");
    EXPECT_NE(interrupted.step, expected.step);
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments(folder, true, epochs))), 0);
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"), expected);
}

TEST(Resume, PeriodicCheckpointsKeepTheConfiguredNumber) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("keep");
    std::vector<std::string> arguments = train_arguments(folder, false);
    arguments.insert(arguments.end(), {"--set", "checkpoint.every_steps=10", "--set", "checkpoint.keep=2",
                                       "--set", "train.epochs=3"});
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments)), 0);
    // 60 steps, every 10: numbered 50 and 60 stay, older ones are removed.
    EXPECT_TRUE(std::filesystem::exists(folder + "/checkpoint-60.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(folder + "/checkpoint-50.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(folder + "/checkpoint-40.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(folder + "/checkpoint-10.safetensors"));
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint-60.safetensors"),
                         vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"));
}

// More epochs continue a finished run: `--resume --set train.epochs=5` on a
// run that finished 3 epochs ends bitwise where a run planned for 5 from the
// start ends (the learning rate is constant, so the schedule does not depend
// on the length; the permutation and the noise are functions of seed and
// step), and the folder's config.ini says 5.
TEST(Resume, MoreEpochsContinueAFinishedRunAsIfPlannedFromTheStart) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    auto arguments = [](const std::string &folder, int epochs, bool resume) {
        std::vector<std::string> a = train_arguments(folder, resume);
        a.insert(a.end(), {"--set", "train.epochs=" + std::to_string(epochs)});
        return a;
    };
    std::string planned = vae_test::temporary_folder("resume_planned_five");
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments(planned, 5, false))), 0);
    Snapshot expected = vae_test::read_checkpoint_tensors(planned + "/checkpoint.safetensors");
    ASSERT_EQ(expected.step, "100");

    std::string extended = vae_test::temporary_folder("resume_three_then_five");
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments(extended, 3, false))), 0);
    ASSERT_EQ(vae_test::read_checkpoint_tensors(extended + "/checkpoint.safetensors").step, "60");
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(arguments(extended, 5, true))), 0);
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(extended + "/checkpoint.safetensors"), expected);
    EXPECT_NE(vae_test::read_file(extended + "/config.ini").find("\nepochs = 5\n"), std::string::npos);
}

TEST(Numerics, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("nonfinite_stop");
    // A sane first stretch writes a checkpoint; then the run is resumed with
    // an absurd learning rate that drives the loss to infinity.
    std::vector<std::string> good = {vae_binary(), "train", "--config", tiny_config(), "--device", "cpu", "--quiet",
                                     "--out", folder, "--set", "checkpoint.every_steps=5", "--max-steps", "10"};
    ASSERT_EQ(wait_for(vae_test::spawn_quiet(good)), 0);
    Snapshot last_good = vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors");
    std::vector<std::string> diverging = {vae_binary(), "train", "--config", tiny_config(), "--device", "cpu",
                                          "--quiet", "--out", folder + "/diverging", "--set", "train.lr=1e30",
                                          "--set", "checkpoint.every_steps=5", "--set", "train.nonfinite=stop"};
    int code = wait_for(vae_test::spawn_quiet(diverging));
    EXPECT_EQ(code, 1);
    EXPECT_TRUE(std::filesystem::exists(folder + "/diverging/checkpoint-nonfinite.safetensors"));
    Snapshot diagnosis = vae_test::read_checkpoint_tensors(folder + "/diverging/checkpoint-nonfinite.safetensors");
    for (const auto &values : diagnosis.values)
        for (float v : values) ASSERT_FALSE(std::isnan(v)) << "a NaN reached the parameters";
    expect_bitwise_equal(vae_test::read_checkpoint_tensors(folder + "/checkpoint.safetensors"), last_good);

    // With the skip policy the run goes on and counts what it skipped.
    std::string skipping = vae_test::temporary_folder("nonfinite_skip");
    std::vector<std::string> skip = {vae_binary(), "train", "--config", tiny_config(), "--device", "cpu", "--quiet",
                                     "--out", skipping, "--set", "train.lr=1e30", "--set", "train.nonfinite=skip"};
    EXPECT_EQ(wait_for(vae_test::spawn_quiet(skip)), 0);
    std::string metrics = vae_test::read_file(skipping + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"skipped_steps\":"), std::string::npos);
    EXPECT_EQ(metrics.find("\"skipped_steps\":0}"), std::string::npos) << "no step was counted as skipped";
}

}  // namespace
