// Data sets past 2^31 values and 2^32 bytes (ctest label "large"): a uint8
// NPY file of 5,600,000 x 784 values (4.39 GB, more than 2^32 bytes) is
// written sparse into the test's folder (ftruncate, then a few known rows
// pwritten at the offsets that matter; the holes read as zeros and take no
// disk) and removed after. The reader maps it without copying, the rows past
// the 2^31st value and past the 2^32nd byte read back as the file's bytes
// through the data set and through the CPU gather, and `vae train` runs a
// few steps on it and evaluates with a peak resident memory far below the
// file's size.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "base/error.h"
#include "data/dataset.h"
}

namespace {

constexpr int64_t kRows = 5600000;
constexpr int kDim = 784;
constexpr uint64_t kTwo31 = 1ull << 31, kTwo32 = 1ull << 32;

// The rows whose bytes the test writes and checks: the first, the ones that
// straddle and follow value 2^31 and byte 2^32, and the last.
std::vector<int64_t> known_rows() {
    return {0,
            (int64_t)(kTwo31 / kDim),      // holds value 2^31 (straddles it)
            (int64_t)(kTwo31 / kDim) + 1,  // wholly past 2^31
            (int64_t)(kTwo32 / kDim),      // holds byte 2^32
            (int64_t)(kTwo32 / kDim) + 1,  // wholly past 2^32
            kRows - 1};
}

uint8_t known_byte(int64_t row, int column) { return (uint8_t)((row * 131 + column * 7 + 1) % 251 + 1); }

// Removes the folder (and the big file) however the test ends.
struct folder_guard {
    std::string path;
    ~folder_guard() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
};

// Writes the NPY header and the known rows; the rest of the file is a hole.
void write_sparse_npy(const std::string &path, int64_t rows, int dim, const std::vector<int64_t> &written) {
    std::string header = vae_test::npy_file(
        vae_test::npy_dict("|u1", "(" + std::to_string(rows) + ", " + std::to_string(dim) + ")"), "");
    int descriptor = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(descriptor, 0) << path;
    ASSERT_EQ(ftruncate(descriptor, (off_t)(header.size() + (uint64_t)rows * dim)), 0) << std::strerror(errno);
    ASSERT_EQ(pwrite(descriptor, header.data(), header.size(), 0), (ssize_t)header.size());
    std::vector<uint8_t> row(dim);
    for (int64_t r : written) {
        for (int j = 0; j < dim; ++j) row[j] = known_byte(r, j);
        off_t offset = (off_t)(header.size() + (uint64_t)r * dim);
        ASSERT_EQ(pwrite(descriptor, row.data(), dim, offset), dim);
    }
    ASSERT_EQ(close(descriptor), 0);
}

// A small test split (uint8, same width) so that evaluation is quick.
void write_test_split(const std::string &folder) {
    std::vector<uint8_t> values((size_t)200 * kDim);
    for (size_t i = 0; i < values.size(); ++i) values[i] = (uint8_t)(i * 17 % 256);
    vae_test::write_file(folder + "/test.npy",
                         vae_test::npy_file(vae_test::npy_dict("|u1", "(200, 784)"), vae_test::raw_bytes(values)));
}

class LargeDataset : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        guard_.path = vae_test::temporary_folder("dataset_large");
        folder_ = guard_.path;
        write_sparse_npy(folder_ + "/train.npy", kRows, kDim, known_rows());
        write_test_split(folder_);
    }
    static void TearDownTestSuite() {
        std::error_code ignored;
        std::filesystem::remove_all(guard_.path, ignored);
    }
    static folder_guard guard_;
    static std::string folder_;
};
folder_guard LargeDataset::guard_;
std::string LargeDataset::folder_;

TEST_F(LargeDataset, MapsWithoutCopyAndReadsRowsPastTwoToThe31And32) {
    uint64_t file_bytes = std::filesystem::file_size(folder_ + "/train.npy");
    ASSERT_GT(file_bytes, kTwo32);
    vae_dataset data{};
    ASSERT_EQ(vae_dataset_load_npy((folder_ + "/train.npy").c_str(), &data), VAE_OK) << vae_last_error();
    EXPECT_EQ(data.count, kRows);
    EXPECT_EQ(data.dim, kDim);
    EXPECT_EQ(data.dtype, VAE_DTYPE_U8);
    ASSERT_EQ(data.storage_count, 1);
    EXPECT_EQ(data.storage[0].mapped, 1) << "the file is mapped, not copied";
    EXPECT_EQ(data.storage[0].bytes, file_bytes);
    for (int64_t row : known_rows()) {
        const uint8_t *values = (const uint8_t *)vae_dataset_example(&data, row);
        ASSERT_NE(values, nullptr) << row;
        EXPECT_EQ(values, (const uint8_t *)data.values + (uint64_t)row * kDim) << row;
        for (int j = 0; j < kDim; ++j) ASSERT_EQ(values[j], known_byte(row, j)) << "row " << row << " column " << j;
    }
    // A row between the known ones lies in a hole: zeros, as in the file.
    const uint8_t *hole = (const uint8_t *)vae_dataset_example(&data, 4000000);
    for (int j = 0; j < kDim; ++j) ASSERT_EQ(hole[j], 0);

    // The CPU gather at those rows, with the dataset's segment table.
    vae_backend *backend = nullptr;
    ASSERT_EQ(vae_backend_create_cpu(&backend), VAE_OK) << vae_last_error();
    std::vector<int64_t> rows = known_rows();
    std::vector<int32_t> permutation(rows.begin(), rows.end());
    vae_row_segments segments = {data.segment_count, data.segment_first, data.segment_values};
    vae_gather_settings settings = {};
    settings.dtype = VAE_DTYPE_U8;
    settings.scale = 1.0f / 255.0f;
    settings.binarize = VAE_BINARIZE_NONE;
    settings.steps_per_epoch = 1;
    vae_step_counter counter = {0, 0, 0};
    std::vector<float> x(rows.size() * kDim);
    ASSERT_EQ(vae_backend_gather_batch(backend, &segments, permutation.data(), kDim, (int)rows.size(), &settings,
                                         &counter, x.data()),
              VAE_OK)
        << vae_last_error();
    for (size_t r = 0; r < rows.size(); ++r)
        for (int j = 0; j < kDim; ++j)
            ASSERT_EQ(x[r * kDim + j], (float)known_byte(rows[r], j) * (1.0f / 255.0f)) << rows[r] << ", " << j;
    vae_backend_destroy(backend);

    // Slicing past 2^32 bytes copies the right bytes.
    vae_dataset slice{};
    ASSERT_EQ(vae_dataset_slice(&data, rows[4], 1, &slice), VAE_OK) << vae_last_error();
    for (int j = 0; j < kDim; ++j) ASSERT_EQ(((const uint8_t *)slice.values)[j], known_byte(rows[4], j));
    vae_dataset_free(&slice);
    vae_dataset_free(&data);
}

// Peak resident memory of a child process (wait4's ru_maxrss, KiB).
struct child_result {
    int exit_code;
    long max_resident_kib;
};

child_result run_vae_measured(const std::vector<std::string> &arguments, const std::string &log_path) {
    std::string binary = std::string(VAE_BINARY_DIR) + "/vae";
    pid_t child = fork();
    if (child == 0) {
        int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (log >= 0) {
            dup2(log, 1);
            dup2(log, 2);
        }
        std::vector<char *> argv = {const_cast<char *>(binary.c_str())};
        for (const std::string &a : arguments) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        execv(binary.c_str(), argv.data());
        _exit(127);
    }
    int status = 0;
    struct rusage usage {};
    if (child < 0 || wait4(child, &status, 0, &usage) != child) return {-1, 0};
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, usage.ru_maxrss};
}

TEST_F(LargeDataset, TrainsAndEvaluatesWithResidentMemoryFarBelowTheFile) {
    uint64_t file_bytes = std::filesystem::file_size(folder_ + "/train.npy");
    std::string out = folder_ + "/run";
    std::string config = std::string(VAE_SOURCE_DIR) + "/configs/tiny_test.ini";
    child_result train = run_vae_measured(
        {"train", "--config", config, "--device", "cpu", "--quiet", "--max-steps", "5", "--out", out, "--set",
         "data.path=" + folder_, "--set", "data.train_limit=0", "--set", "data.test_limit=0", "--set",
         "data.validation_size=100", "--set", "train.eval_batch_size=100"},
        folder_ + "/train.log");
    ASSERT_EQ(train.exit_code, 0) << vae_test::read_file_or_empty(folder_ + "/train.log");
    // The permutation (5.6 M int32 indices) and the model are all that grow
    // with the run; the 4.4 GB of data stay in the file. The bound is a
    // tenth of the file: a copy of the data would be ten times over it.
    std::printf("vae train on a %.2f GB file: peak resident memory %.1f MB\n", file_bytes / 1e9,
                train.max_resident_kib / 1024.0);
    EXPECT_LT((uint64_t)train.max_resident_kib * 1024, file_bytes / 10);
    EXPECT_GT(train.max_resident_kib, 0);
    std::string metrics = vae_test::read_file_or_empty(out + "/metrics.jsonl");
    EXPECT_NE(metrics.find("\"kind\":\"train\",\"epoch\":1,\"step\":5,"), std::string::npos) << metrics;

    child_result eval = run_vae_measured({"eval", "--checkpoint", out + "/checkpoint.safetensors", "--device", "cpu",
                                          "--split", "validation"},
                                         folder_ + "/eval.log");
    std::string eval_log = vae_test::read_file_or_empty(folder_ + "/eval.log");
    ASSERT_EQ(eval.exit_code, 0) << eval_log;
    EXPECT_NE(eval_log.find("elbo"), std::string::npos) << eval_log;
    EXPECT_LT((uint64_t)eval.max_resident_kib * 1024, file_bytes / 10);
}

// More examples than the int32 permutation can index: refused with the limit
// named, from the header alone (the 2 GB file is a hole).
TEST(LargeDatasetLimits, MoreThanInt32MaxExamplesIsRefusedClearly) {
    folder_guard guard{vae_test::temporary_folder("dataset_large_limit")};
    std::string path = guard.path + "/train.npy";
    write_sparse_npy(path, 2147483648ll, 1, {});
    vae_dataset data{};
    EXPECT_NE(vae_dataset_load_npy(path.c_str(), &data), VAE_OK);
    std::string message = vae_last_error();
    EXPECT_NE(message.find("2147483648 examples"), std::string::npos) << message;
    EXPECT_NE(message.find("at most 2147483647"), std::string::npos) << message;
    EXPECT_NE(message.find(path), std::string::npos) << message;
}

}  // namespace
