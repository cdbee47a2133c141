// A run folder belongs to one run: the library's claim (lock, the pid in the
// lock file, what a new, resumed or restarted run may find) and the real
// `vae train` processes (two runs on one folder, a finished model, a holder
// killed by SIGKILL).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "vae/run_folder.h"

extern char **environ;

namespace {

using vae_test::CommandResult;

std::string tiny_config() { return std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini"; }
bool exists(const std::string &path) { return std::filesystem::exists(path); }

// A child process that claims folder, reports through a pipe, and waits to
// be killed. Returns its pid once the claim succeeded, or -1.
pid_t child_holding(const std::string &folder, vae_run_start start = VAE_RUN_START_NEW) {
    int ready[2];
    if (pipe(ready) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        vae_run_folder *held = nullptr;
        char result = vae_run_folder_claim(folder.c_str(), start, &held) == VAE_OK ? 'y' : 'n';
        if (write(ready[1], &result, 1) != 1) _exit(3);
        for (;;) pause();
    }
    close(ready[1]);
    char result = 0;
    ssize_t got = read(ready[0], &result, 1);
    close(ready[0]);
    if (got != 1 || result != 'y') {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        return -1;
    }
    return pid;
}

TEST(RunFolder, ClaimCreatesTheFolderAndWritesThePid) {
    std::string folder = vae_test::temporary_folder("run_folder_claim") + "/runs/a";
    vae_run_folder *held = nullptr;
    ASSERT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_NEW, &held), VAE_OK) << vae_last_error();
    ASSERT_NE(held, nullptr);
    EXPECT_EQ(vae_test::read_file(folder + "/.lock"), std::to_string((long)getpid()) + "\n");
    // Claims nest within one process (the CLI claims, then the trainer).
    vae_run_folder *again = nullptr;
    ASSERT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_RESUME, &again), VAE_OK) << vae_last_error();
    vae_run_folder_release(again);
    vae_run_folder_release(held);
    vae_run_folder_release(nullptr);
}

TEST(RunFolder, AnotherProcessIsRefusedUntilTheHolderDies) {
    std::string folder = vae_test::temporary_folder("run_folder_busy");
    pid_t holder = child_holding(folder);
    ASSERT_GT(holder, 0);
    vae_run_folder *held = nullptr;
    EXPECT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_NEW, &held), VAE_ERROR_BUSY);
    EXPECT_EQ(held, nullptr);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(folder), std::string::npos) << message;
    EXPECT_NE(message.find("pid " + std::to_string((long)holder)), std::string::npos) << message;
    // SIGKILL gives the holder no chance to clean up: the kernel drops the lock.
    ASSERT_EQ(kill(holder, SIGKILL), 0);
    ASSERT_EQ(waitpid(holder, nullptr, 0), holder);
    ASSERT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_NEW, &held), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(folder + "/.lock"), std::to_string((long)getpid()) + "\n");
    vae_run_folder_release(held);
    // Released: another process may claim it now.
    pid_t next = child_holding(folder);
    EXPECT_GT(next, 0) << "a released folder must be free for others";
    if (next > 0) {
        kill(next, SIGKILL);
        waitpid(next, nullptr, 0);
    }
}

TEST(RunFolder, ACheckpointNeedsResumeOrStartOver) {
    std::string folder = vae_test::temporary_folder("run_folder_start");
    for (const char *name : {"checkpoint.safetensors", "checkpoint-40.safetensors", "checkpoint-nonfinite.safetensors",
                             "metrics.jsonl", "config.ini", "samples_epoch_001.png", "reconstructions_epoch_001.png",
                             "notes.txt", "checkpoint.safetensors.tmp-1"})
        vae_test::write_file(folder + "/" + name, "x");
    vae_run_folder *held = nullptr;
    EXPECT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_NEW, &held), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(held, nullptr);
    std::string message = vae_last_error();
    for (const std::string &part : {folder + "/checkpoint.safetensors", std::string("--resume"), std::string("--force")})
        EXPECT_NE(message.find(part), std::string::npos) << part << " in " << message;
    EXPECT_TRUE(exists(folder + "/checkpoint.safetensors")) << "a refused run removes nothing";
    // The refusal released the lock: another process can claim the folder.
    pid_t other = child_holding(folder, VAE_RUN_START_RESUME);
    EXPECT_GT(other, 0);
    if (other > 0) { kill(other, SIGKILL); waitpid(other, nullptr, 0); }

    ASSERT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_RESUME, &held), VAE_OK) << vae_last_error();
    EXPECT_TRUE(exists(folder + "/checkpoint.safetensors"));
    EXPECT_FALSE(exists(folder + "/checkpoint.safetensors.tmp-1")) << "a killed writer's leftover is removed";
    vae_run_folder_release(held);

    ASSERT_EQ(vae_run_folder_claim(folder.c_str(), VAE_RUN_START_OVER, &held), VAE_OK) << vae_last_error();
    for (const char *name : {"checkpoint.safetensors", "checkpoint-40.safetensors", "checkpoint-nonfinite.safetensors",
                             "metrics.jsonl", "config.ini", "samples_epoch_001.png", "reconstructions_epoch_001.png"})
        EXPECT_FALSE(exists(folder + "/" + name)) << name << " survived a start-over";
    EXPECT_TRUE(exists(folder + "/notes.txt")) << "files the engine did not write are kept";
    vae_run_folder_release(held);
}

TEST(RunFolder, BadArgumentsAndUnusableFolders) {
    vae_run_folder *held = nullptr;
    EXPECT_EQ(vae_run_folder_claim("", VAE_RUN_START_NEW, &held), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_run_folder_claim(nullptr, VAE_RUN_START_NEW, &held), VAE_ERROR_INVALID_ARGUMENT);
    std::string folder = vae_test::temporary_folder("run_folder_bad");
    EXPECT_EQ(vae_run_folder_claim(folder.c_str(), (vae_run_start)7, &held), VAE_ERROR_INVALID_ARGUMENT);
    vae_test::write_file(folder + "/a_file", "x");
    EXPECT_EQ(vae_run_folder_claim((folder + "/a_file/run").c_str(), VAE_RUN_START_NEW, &held), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(folder + "/a_file/run"), std::string::npos) << vae_last_error();
    EXPECT_EQ(held, nullptr);
}

// ------------------------------------------------------------- the real CLI

std::string vae_binary() { return std::string(VAE_BINARY_DIR) + "/vae"; }

// Waits (up to a minute) until predicate holds or the process exits.
template <typename Predicate>
bool wait_until(pid_t pid, Predicate predicate) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        if (waitpid(pid, nullptr, WNOHANG) == pid) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

TEST(RunFolderCli, SecondRunIsRefusedAndAKilledHolderFreesTheFolderAtOnce) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("run_folder_cli_busy") + "/run";
    // A run long enough to be caught holding the folder, checkpointing often.
    pid_t first = vae_test::spawn_quiet({vae_binary(), "train", "--config", tiny_config(), "--device", "cpu", "--quiet", "--out",
                               folder, "--set", "train.epochs=1000", "--set", "checkpoint.every_steps=5"});
    ASSERT_GT(first, 0);
    std::string pid_line = std::to_string((long)first) + "\n";
    bool checkpointed = wait_until(first, [&] {
        return vae_test::read_file_or_empty(folder + "/.lock") == pid_line && exists(folder + "/checkpoint.safetensors");
    });
    if (!checkpointed) { kill(first, SIGKILL); waitpid(first, nullptr, 0); }
    ASSERT_TRUE(checkpointed) << "the first run neither locked its folder nor wrote a checkpoint";

    auto started = std::chrono::steady_clock::now();
    CommandResult second = vae_test::run_vae("train --config " + tiny_config() + " --device cpu --quiet --out " + folder);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    CommandResult resumer = vae_test::run_vae("train --resume --device cpu --quiet --out " + folder);
    ASSERT_EQ(kill(first, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(first, &status, 0), first);
    EXPECT_TRUE(WIFSIGNALED(status)) << "the first run must still have been running";

    EXPECT_EQ(second.exit_code, 1) << second.output;
    EXPECT_NE(second.output.find(folder), std::string::npos) << second.output;
    EXPECT_NE(second.output.find("pid " + std::to_string((long)first)), std::string::npos) << second.output;
    EXPECT_NE(second.output.find("in use"), std::string::npos) << second.output;
    EXPECT_LT(seconds, 10.0) << "refused at once, before loading data";
    EXPECT_EQ(resumer.exit_code, 1) << "--resume does not get around the lock: " << resumer.output;

    // Killed by SIGKILL: the folder is free at once and its checkpoint resumes.
    CommandResult resumed =
        vae_test::run_vae("train --resume --device cpu --out " + folder + " --max-steps 25 --set checkpoint.every_steps=5");
    EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resuming from " + folder + "/checkpoint.safetensors"), std::string::npos)
        << resumed.output;
}

TEST(RunFolderCli, AFinishedModelIsNotReplacedWithoutForce) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::string folder = vae_test::temporary_folder("run_folder_cli_finished");
    std::string train = "train --config " + tiny_config() + " --device cpu --quiet --out " + folder;
    ASSERT_EQ(vae_test::run_vae(train + " --max-steps 10").exit_code, 0);
    std::string checkpoint = folder + "/checkpoint.safetensors";
    std::string model = vae_test::read_file(checkpoint);

    CommandResult refused = vae_test::run_vae(train);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    for (const std::string &part : {checkpoint, std::string("--resume"), std::string("--force")})
        EXPECT_NE(refused.output.find(part), std::string::npos) << part << " in " << refused.output;
    EXPECT_EQ(vae_test::read_file(checkpoint), model) << "the finished model was touched";
    EXPECT_EQ(vae_test::run_vae(train + " --resume --force").exit_code, 2);

    // A resumed run keeps its stored config: a --set or --config that would
    // change what it trains is refused (not silently ignored), naming the
    // setting; one that agrees, or the same command again, resumes.
    CommandResult changed = vae_test::run_vae("train --resume --device cpu --quiet --out " + folder +
                                              " --set model.latent_dim=3 --max-steps 15");
    EXPECT_EQ(changed.exit_code, 2) << changed.output;
    for (const char *part : {"model.latent_dim = 3 given, 8 stored", "train.epochs", "--force"})
        EXPECT_NE(changed.output.find(part), std::string::npos) << part << " in " << changed.output;
    CommandResult other = vae_test::run_vae(train + " --set train.lr=0.5 --resume --max-steps 15");
    EXPECT_EQ(other.exit_code, 2) << other.output;
    EXPECT_NE(other.output.find("train.lr = 0.5 given, 0.001 stored"), std::string::npos) << other.output;
    EXPECT_EQ(vae_test::read_file(checkpoint), model) << "a refused resume touched the model";

    // --resume continues it: the step goes on from 10.
    CommandResult resumed = vae_test::run_vae(train + " --resume --max-steps 15 --set train.lr=1e-3");
    EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
    std::string metrics = vae_test::read_file(folder + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"step\":10"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\"step\":15"), std::string::npos) << metrics;

    // --force starts over: a fresh run of 5 steps, none of the old lines.
    vae_test::write_file(folder + "/notes.txt", "mine");
    CommandResult forced = vae_test::run_vae(train + " --force --max-steps 5");
    EXPECT_EQ(forced.exit_code, 0) << forced.output;
    metrics = vae_test::read_file(folder + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"step\":5"), std::string::npos) << metrics;
    EXPECT_EQ(metrics.find("\"step\":10"), std::string::npos) << metrics;
    EXPECT_EQ(metrics.find("\"step\":15"), std::string::npos) << metrics;
    EXPECT_NE(vae_test::read_file(checkpoint), model);
    EXPECT_EQ(vae_test::read_file(folder + "/notes.txt"), "mine");
}

}  // namespace
