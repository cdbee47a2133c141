// The one module that writes files (src/io/atomic_file): whole files replace
// the old one atomically or not at all, failures name the file and say when
// the disk is full, append-only files keep or restart their lines.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "io/atomic_file.h"
}

namespace {

std::vector<std::string> folder_entries(const std::string &folder) {
    std::vector<std::string> names;
    for (const auto &entry : std::filesystem::directory_iterator(folder)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
}

std::string temporary_name(const std::string &path) { return path + ".tmp-" + std::to_string((long)getpid()); }

TEST(AtomicFile, WritesAndReplacesLeavingNoTemporaryFile) {
    std::string folder = vae_test::temporary_folder("atomic_replace");
    std::string path = folder + "/file.bin";
    ASSERT_EQ(vae_atomic_write(path.c_str(), "first", 5, "test file"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(path), "first");
    ASSERT_EQ(vae_atomic_write(path.c_str(), "second!", 7, "test file"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(path), "second!");
    ASSERT_EQ(vae_atomic_write(path.c_str(), "", 0, "test file"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(path), "");
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"file.bin"});
}

TEST(AtomicFile, ReadersSeeTheOldFileUntilCommit) {
    std::string folder = vae_test::temporary_folder("atomic_readers");
    std::string path = folder + "/file.txt";
    vae_test::write_file(path, "old contents");
    vae_atomic_file file;
    ASSERT_EQ(vae_atomic_file_open(&file, path.c_str(), "test file"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_atomic_file_write(&file, "new ", 4), 0);
    ASSERT_EQ(fflush(file.stream), 0);
    EXPECT_EQ(vae_test::read_file(path), "old contents") << "half a new file is visible under the final name";
    EXPECT_EQ(vae_test::read_file(temporary_name(path)), "new ") << "the temporary file sits beside the target";
    EXPECT_EQ(vae_atomic_file_write(&file, "contents", 8), 0);
    ASSERT_EQ(vae_atomic_file_commit(&file), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(path), "new contents");
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"file.txt"});
}

TEST(AtomicFile, AbortAndRecordedFailuresReplaceNothing) {
    std::string folder = vae_test::temporary_folder("atomic_abort");
    std::string path = folder + "/file.txt";
    vae_test::write_file(path, "keep me");
    vae_atomic_file file;
    ASSERT_EQ(vae_atomic_file_open(&file, path.c_str(), "test file"), VAE_OK);
    vae_atomic_file_write(&file, "discarded", 9);
    vae_atomic_file_abort(&file);
    EXPECT_EQ(vae_test::read_file(path), "keep me");
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"file.txt"});

    // A failure seen by other code writing through the stream (libpng's callbacks).
    ASSERT_EQ(vae_atomic_file_open(&file, path.c_str(), "picture"), VAE_OK);
    vae_atomic_file_write(&file, "half", 4);
    vae_atomic_file_fail(&file, EIO);
    EXPECT_EQ(vae_atomic_file_write(&file, "more", 4), EIO) << "writes after a failure report it";
    EXPECT_EQ(vae_atomic_file_commit(&file), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(path + ": cannot write the picture"), std::string::npos) << message;
    EXPECT_EQ(vae_test::read_file(path), "keep me");
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"file.txt"});
}

TEST(AtomicFile, DiskFullNamesTheFileAndKeepsTheOldOne) {
    if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
    std::string folder = vae_test::temporary_folder("atomic_disk_full");
    std::string path = folder + "/model.bin";
    vae_test::write_file(path, "old model");
    // The temporary name points at /dev/full: every write fails with ENOSPC.
    std::filesystem::create_symlink("/dev/full", temporary_name(path));
    std::string big(1 << 20, 'x');  // more than stdio buffers: the failure shows during the writes
    EXPECT_EQ(vae_atomic_write(path.c_str(), big.data(), big.size(), "checkpoint"), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(path + ": cannot write the checkpoint"), std::string::npos) << message;
    EXPECT_NE(message.find("disk full"), std::string::npos) << message;
    EXPECT_EQ(vae_test::read_file(path), "old model");
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"model.bin"}) << "the temporary file is removed";

    // A small write fails only at the final flush: the same message.
    std::filesystem::create_symlink("/dev/full", temporary_name(path));
    EXPECT_EQ(vae_atomic_write(path.c_str(), "tiny", 4, "config"), VAE_ERROR_IO);
    message = vae_last_error();
    EXPECT_NE(message.find(path + ": cannot write the config"), std::string::npos) << message;
    EXPECT_NE(message.find("disk full"), std::string::npos) << message;
    EXPECT_EQ(vae_test::read_file(path), "old model");
}

TEST(AtomicFile, MissingOrBlockedFolderIsAnIoErrorNamingTheFile) {
    std::string folder = vae_test::temporary_folder("atomic_missing");
    std::string path = folder + "/no/such/folder/file.txt";
    EXPECT_EQ(vae_atomic_write(path.c_str(), "x", 1, "NPY file"), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(path + ": cannot write the NPY file"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
    // A folder where the temporary file should go: fails even for root.
    std::string blocked = folder + "/blocked.txt";
    std::filesystem::create_directory(temporary_name(blocked));
    EXPECT_EQ(vae_atomic_write(blocked.c_str(), "x", 1, "PNG"), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(temporary_name(blocked)), std::string::npos) << vae_last_error();
    EXPECT_FALSE(std::filesystem::exists(blocked));
    vae_atomic_file file;
    EXPECT_EQ(vae_atomic_file_open(&file, "", "PNG"), VAE_ERROR_INVALID_ARGUMENT);
}

TEST(AtomicFile, SyncParentFolderAcceptsBareAndRootedNames) {
    EXPECT_EQ(vae_sync_parent_folder("name-in-the-current-folder"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_sync_parent_folder("/tmp"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_sync_parent_folder("/nonexistent-folder/x"), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find("/nonexistent-folder/x"), std::string::npos) << vae_last_error();
}

TEST(AppendFile, KeepsOrRestartsLinesAndSyncs) {
    std::string folder = vae_test::temporary_folder("append_file");
    std::string path = folder + "/metrics.jsonl";
    FILE *file = nullptr;
    ASSERT_EQ(vae_append_file_open(&file, path.c_str(), 0, "metrics"), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_append_file_write_line(file, path.c_str(), "{\"step\":1}", "metrics"), VAE_OK);
    // Flushed line by line: a reader (or a killed process) sees each whole line.
    EXPECT_EQ(vae_test::read_file(path), "{\"step\":1}\n");
    ASSERT_EQ(vae_append_file_sync(file, path.c_str(), "metrics"), VAE_OK) << vae_last_error();
    fclose(file);
    ASSERT_EQ(vae_append_file_open(&file, path.c_str(), 1, "metrics"), VAE_OK);
    ASSERT_EQ(vae_append_file_write_line(file, path.c_str(), "{\"step\":2}", "metrics"), VAE_OK);
    fclose(file);
    EXPECT_EQ(vae_test::read_file(path), "{\"step\":1}\n{\"step\":2}\n");
    ASSERT_EQ(vae_append_file_open(&file, path.c_str(), 0, "metrics"), VAE_OK);
    fclose(file);
    EXPECT_EQ(vae_test::read_file(path), "") << "keep_existing 0 starts afresh";

    EXPECT_EQ(vae_append_file_open(&file, (folder + "/missing/m.jsonl").c_str(), 1, "metrics"), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(folder + "/missing/m.jsonl"), std::string::npos) << vae_last_error();
    EXPECT_EQ(file, nullptr);
}

TEST(AppendFile, DiskFullIsReportedPerLine) {
    if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
    FILE *file = fopen("/dev/full", "a");
    ASSERT_NE(file, nullptr);
    EXPECT_EQ(vae_append_file_write_line(file, "runs/x/metrics.jsonl", "{\"step\":1}", "metrics"), VAE_ERROR_IO);
    std::string message = vae_last_error();
    fclose(file);
    EXPECT_NE(message.find("runs/x/metrics.jsonl: cannot write the metrics"), std::string::npos) << message;
    EXPECT_NE(message.find("disk full"), std::string::npos) << message;
}

}  // namespace
