// Loading a dataset: data.path resolution (IDX and NPY folders), limits and
// splits, slices, the per-epoch permutation, and the real Fashion-MNIST. The
// IDX and NPY readers themselves are in test_dataset_formats.cpp.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "dataset_test_files.h"
#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "data/dataset.h"
#include "base/error.h"
#include "vae_philox.h"
}

namespace {

using namespace dataset_test;
using vae_test::npy_dict;
using vae_test::npy_file;
using vae_test::raw_bytes;

// ---------------------------------------------------------------- data.path

void write_npy_folder(const std::string &folder, long train, long test, bool labels) {
    std::vector<float> train_values = float_values((size_t)train * 4);
    std::vector<float> test_values = float_values((size_t)test * 4);
    vae_test::write_file(folder + "/train.npy",
                         npy_file(npy_dict("<f4", "(" + std::to_string(train) + ", 4)"), raw_bytes(train_values)));
    vae_test::write_file(folder + "/test.npy",
                         npy_file(npy_dict("<f4", "(" + std::to_string(test) + ", 2, 2)"), raw_bytes(test_values)));
    if (labels) {
        std::vector<int64_t> train_labels(train), test_labels(test);
        for (long i = 0; i < train; ++i) train_labels[i] = i % 10;
        for (long i = 0; i < test; ++i) test_labels[i] = (i + 3) % 10;
        vae_test::write_file(folder + "/train_labels.npy",
                             npy_file(npy_dict("<i8", "(" + std::to_string(train) + ",)"), raw_bytes(train_labels)));
        vae_test::write_file(folder + "/test_labels.npy",
                             npy_file(npy_dict("<i8", "(" + std::to_string(test) + ",)"), raw_bytes(test_labels)));
    }
}

TEST(DatasetLoad, NpyFolderWithSplits) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy");
    write_npy_folder(folder, 20, 7, true);
    std::vector<float> train_values = float_values(20 * 4);

    vae_config config = data_config(folder);
    config.validation_size = 5;
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    EXPECT_EQ(s.train.count, 15);
    EXPECT_EQ(s.validation.count, 5);
    EXPECT_EQ(s.test.count, 7);
    EXPECT_EQ(s.train.dim, 4);
    EXPECT_EQ(s.validation.dim, 4);
    EXPECT_EQ(s.train.rows, 2);  // 4 is a perfect square
    EXPECT_EQ(s.test.rows, 2);
    EXPECT_EQ(s.train.channels, 0) << "(N, D) has no image shape";
    EXPECT_EQ(s.validation.channels, 0);
    EXPECT_EQ(s.validation.dtype, VAE_DTYPE_F32);
    // Validation holds the last 5 training examples, in order, with their labels.
    EXPECT_EQ(std::memcmp(s.train.values, train_values.data(), 15 * 4 * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(s.validation.values, train_values.data() + 15 * 4, 5 * 4 * sizeof(float)), 0);
    ASSERT_NE(s.validation.labels, nullptr);
    ASSERT_NE(s.train.labels, nullptr);
    ASSERT_NE(s.test.labels, nullptr);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(s.validation.labels[i], (15 + i) % 10);
    for (int i = 0; i < 15; ++i) EXPECT_EQ(s.train.labels[i], i % 10);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(s.test.labels[i], (i + 3) % 10);

    std::vector<float> scaled(4);
    vae_dataset_example_scaled(&s.validation, 2, scaled.data());
    EXPECT_EQ(std::vector<float>(train_values.begin() + 17 * 4, train_values.begin() + 18 * 4), scaled);
}

TEST(DatasetLoad, NpyFolderLimitsAndNoLabels) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy_limits");
    write_npy_folder(folder, 20, 7, false);
    vae_config config = data_config(folder);
    config.train_limit = 12;
    config.test_limit = 3;
    config.validation_size = 2;
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(loaded.splits.train.count, 10);
    EXPECT_EQ(loaded.splits.validation.count, 2);
    EXPECT_EQ(loaded.splits.test.count, 3);
    EXPECT_EQ(loaded.splits.train.labels, nullptr);
    // Validation is taken from the end of the limited set: examples 10 and 11.
    std::vector<float> train_values = float_values(20 * 4);
    EXPECT_EQ(std::memcmp(loaded.splits.validation.values, train_values.data() + 10 * 4, 2 * 4 * sizeof(float)), 0);

    // Limits above the counts keep everything; no validation gives an empty split.
    config.train_limit = 1000;
    config.test_limit = 1000;
    config.validation_size = 0;
    scoped_splits all;
    ASSERT_EQ(vae_data_load(&config, &all.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(all.splits.train.count, 20);
    EXPECT_EQ(all.splits.test.count, 7);
    EXPECT_EQ(all.splits.validation.count, 0);
    EXPECT_EQ(all.splits.validation.dim, 4);

    config.train_limit = 12;
    config.validation_size = 12;
    scoped_splits too_big;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &too_big.splits), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("validation_size"), std::string::npos) << vae_last_error();
    EXPECT_EQ(too_big.splits.train.values, nullptr) << "a failed load frees what it loaded";
}

TEST(DatasetLoad, NpyDimensionMismatch) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy_mismatch");
    vae_test::write_file(folder + "/train.npy", npy_file(npy_dict("|u1", "(2, 4)"), image_payload(2, 2, 2)));
    vae_test::write_file(folder + "/test.npy", npy_file(npy_dict("|u1", "(2, 3)"), image_payload(2, 1, 3)));
    vae_config config = data_config(folder);
    scoped_splits loaded;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &loaded.splits), VAE_ERROR_BAD_INPUT);
    std::string message = vae_last_error();
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;
    EXPECT_NE(message.find("test.npy"), std::string::npos) << message;

    // Same dim, different value types.
    vae_test::write_file(folder + "/test.npy", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(float_values(8))));
    scoped_splits mixed;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &mixed.splits), VAE_ERROR_BAD_INPUT);
    EXPECT_NE(std::string(vae_last_error()).find("float32"), std::string::npos) << vae_last_error();
}

TEST(DatasetLoad, IdxFolderPlainAndGzip) {
    for (bool compressed : {false, true}) {
        SCOPED_TRACE(compressed ? "gzip" : "plain");
        std::string folder = vae_test::temporary_folder(compressed ? "dataset_load_idx_gz" : "dataset_load_idx");
        auto put = [&](const std::string &name, const std::string &bytes) {
            if (compressed) write_gzip(folder + "/" + name + ".gz", bytes);
            else vae_test::write_file(folder + "/" + name, bytes);
        };
        put("train-images-idx3-ubyte", idx_images(9, 3, 3));
        put("train-labels-idx1-ubyte", idx_labels(9));
        put("t10k-images-idx3-ubyte", idx_images(4, 3, 3));
        put("t10k-labels-idx1-ubyte", idx_labels(4));
        vae_config config = data_config(folder);
        config.validation_size = 3;
        config.test_limit = 2;
        scoped_splits loaded;
        ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
        const vae_data_splits &s = loaded.splits;
        EXPECT_EQ(s.train.count, 6);
        EXPECT_EQ(s.validation.count, 3);
        EXPECT_EQ(s.test.count, 2);
        EXPECT_EQ(s.train.rows, 3);
        EXPECT_EQ(s.train.cols, 3);
        for (const vae_dataset *split : {&s.train, &s.validation, &s.test})
            EXPECT_EQ(split->channels, 1) << "IDX images are 1 x rows x cols, kept by every split";
        EXPECT_EQ(s.validation.rows, 3);
        EXPECT_EQ(s.train.dtype, VAE_DTYPE_U8);
        std::string all = image_payload(9, 3, 3);
        EXPECT_EQ(std::memcmp(s.validation.values, all.data() + 6 * 9, 3 * 9), 0);
        ASSERT_NE(s.validation.labels, nullptr);
        for (int i = 0; i < 3; ++i) EXPECT_EQ(s.validation.labels[i], ((6 + i) * 5 + 2) % 10);
        std::vector<float> scaled(9);
        vae_dataset_example_scaled(&s.validation, 1, scaled.data());
        for (int j = 0; j < 9; ++j) EXPECT_FLOAT_EQ(scaled[j], (float)(uint8_t)all[7 * 9 + j] / 255.0f) << j;
    }
}

TEST(DatasetLoad, IdxFolderLabelsOptionalTestImagesRequired) {
    std::string folder = vae_test::temporary_folder("dataset_load_idx_partial");
    vae_test::write_file(folder + "/train-images-idx3-ubyte", idx_images(4, 2, 2));
    vae_config config = data_config(folder);
    scoped_splits missing_test;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &missing_test.splits), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find("t10k-images-idx3-ubyte"), std::string::npos) << vae_last_error();

    vae_test::write_file(folder + "/t10k-images-idx3-ubyte", idx_images(2, 2, 2));
    scoped_splits no_labels;
    ASSERT_EQ(vae_data_load(&config, &no_labels.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(no_labels.splits.train.labels, nullptr);
    EXPECT_EQ(no_labels.splits.test.count, 2);

    // A label file that disagrees with its images is an error, not ignored.
    vae_test::write_file(folder + "/train-labels-idx1-ubyte", idx_labels(3));
    scoped_splits bad_labels;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &bad_labels.splits), VAE_ERROR_BAD_INPUT);
    EXPECT_NE(std::string(vae_last_error()).find("train-labels-idx1-ubyte"), std::string::npos) << vae_last_error();
}

TEST(DatasetLoad, MissingFolderOrFiles) {
    std::string base = vae_test::temporary_folder("dataset_load_missing");
    std::string missing = base + "/no-such-folder";
    vae_config config = data_config(missing);
    scoped_splits loaded;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &loaded.splits), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(missing), std::string::npos) << message;
    EXPECT_NE(message.find("train-images-idx3-ubyte"), std::string::npos) << message;
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;

    // An existing but empty folder.
    config = data_config(base);
    scoped_splits empty;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &empty.splits), VAE_ERROR_IO);
    message = vae_last_error();
    EXPECT_NE(message.find(base), std::string::npos) << message;
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;

    // A file instead of a folder.
    std::string file = base + "/a-file";
    vae_test::write_file(file, "x");
    config = data_config(file);
    scoped_splits not_folder;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &not_folder.splits), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(file), std::string::npos) << vae_last_error();
}

// ---------------------------------------------------------------- slices

TEST(DatasetSlice, CopiesRangeAndChecksBounds) {
    std::string folder = vae_test::temporary_folder("dataset_slice");
    vae_test::write_file(folder + "/d.npy", npy_file(npy_dict("|u1", "(6, 2, 2)"), image_payload(6, 2, 2)));
    vae_test::write_file(folder + "/l.npy", npy_file(npy_dict("<i4", "(6,)"),
                                                      raw_bytes(std::vector<int32_t>{5, 4, 3, 2, 1, 0})));
    scoped_dataset source;
    ASSERT_EQ(load_npy(folder + "/d.npy", &source.dataset), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_dataset_load_npy_labels((folder + "/l.npy").c_str(), &source.dataset), VAE_OK);
    scoped_dataset slice;
    ASSERT_EQ(vae_dataset_slice(&source.dataset, 2, 3, &slice.dataset), VAE_OK) << vae_last_error();
    EXPECT_EQ(slice.dataset.count, 3);
    EXPECT_EQ(slice.dataset.channels, 1);
    EXPECT_EQ(slice.dataset.rows, 2);
    EXPECT_EQ(slice.dataset.cols, 2);
    EXPECT_NE(slice.dataset.values, source.dataset.values);
    EXPECT_EQ(std::memcmp(slice.dataset.values, (const char *)source.dataset.values + 8, 12), 0);
    EXPECT_EQ(std::vector<int32_t>(slice.dataset.labels, slice.dataset.labels + 3), (std::vector<int32_t>{3, 2, 1}));
    scoped_dataset bad;
    EXPECT_EQ(vae_dataset_slice(&source.dataset, 4, 3, &bad.dataset), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_dataset_slice(&source.dataset, -1, 2, &bad.dataset), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(bad.dataset.values, nullptr);
}

// ---------------------------------------------------------------- shuffling

bool is_permutation_of_range(const std::vector<int32_t> &values) {
    std::vector<int32_t> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i)
        if (sorted[i] != (int32_t)i) return false;
    return true;
}

std::vector<int32_t> permutation(uint64_t seed, uint64_t epoch, long count) {
    std::vector<int32_t> values(count, -1);
    vae_permutation_for_epoch(seed, epoch, values.data(), count);
    return values;
}

TEST(DatasetPermutation, IsDeterministicPermutation) {
    for (long count : {1L, 2L, 7L, 1000L, 60000L}) {
        SCOPED_TRACE(count);
        std::vector<int32_t> first = permutation(1234, 3, count);
        EXPECT_TRUE(is_permutation_of_range(first));
        EXPECT_EQ(first, permutation(1234, 3, count));
        if (count >= 7) {
            EXPECT_NE(first, permutation(1234, 4, count)) << "epochs must differ";
            EXPECT_NE(first, permutation(1235, 3, count)) << "seeds must differ";
            std::vector<int32_t> identity(count);
            for (long i = 0; i < count; ++i) identity[i] = (int32_t)i;
            EXPECT_NE(first, identity);
        }
    }
}

// The documented stream: the first swap of Fisher-Yates puts position
// floor(word0 * count / 2^32) (Philox at subsequence (epoch, purpose 5, row
// 0), column 0) into the last slot, unless that draw was rejected (which has
// probability count / 2^32 and does not happen for these seeds).
TEST(DatasetPermutation, UsesDocumentedPhiloxStream) {
    const long count = 1000;
    for (uint64_t epoch : {0u, 1u, 17u}) {
        uint64_t seed = 0x9e3779b97f4a7c15ull + epoch;
        vae_philox_block block = vae_philox_block_at(seed, vae_philox_subsequence(epoch, 5, 0), 0);
        uint64_t product = (uint64_t)block.word[0] * (uint64_t)count;
        ASSERT_GE((uint32_t)product, (uint32_t)count) << "pick another seed: the first draw is rejected";
        int32_t expected_last = (int32_t)(product >> 32);
        EXPECT_EQ(permutation(seed, epoch, count)[count - 1], expected_last) << "epoch " << epoch;
    }
}

// A draw whose low product word falls below 2^32 mod count is rejected (it
// would make some results more likely) and the next word is used. With
// count = 2^20 + 1 about one seed in 4000 rejects its first word: find one.
TEST(DatasetPermutation, RejectsBiasedDraws) {
    const uint32_t count = (1u << 20) + 1;
    const uint32_t threshold = (uint32_t)(-count) % count;
    const uint64_t epoch = 2;
    for (uint64_t seed = 0; seed < 1000000; ++seed) {
        vae_philox_block block = vae_philox_block_at(seed, vae_philox_subsequence(epoch, 5, 0), 0);
        uint64_t first = (uint64_t)block.word[0] * count, second = (uint64_t)block.word[1] * count;
        if ((uint32_t)first >= threshold || (uint32_t)second < threshold) continue;
        ASSERT_NE(first >> 32, second >> 32) << "seed " << seed << " cannot tell the two draws apart";
        EXPECT_EQ(permutation(seed, epoch, count)[count - 1], (int32_t)(second >> 32)) << "seed " << seed;
        return;
    }
    FAIL() << "no seed with a rejected first draw found";
}

// Every ordering of three items is equally likely over many epochs; a biased
// shuffle (for example Sattolo's, or j drawn from [0, count)) fails this.
TEST(DatasetPermutation, AllOrdersEquallyLikely) {
    std::map<std::vector<int32_t>, int> seen;
    const int epochs = 12000;
    for (int epoch = 0; epoch < epochs; ++epoch) seen[permutation(42, (uint64_t)epoch, 3)]++;
    ASSERT_EQ(seen.size(), 6u);
    for (const auto &[order, times] : seen) EXPECT_NEAR(times, epochs / 6, 200) << order[0] << order[1] << order[2];
}

// ---------------------------------------------------------------- real data

TEST(DatasetFashionMnist, LoadsTheDebianPackage) {
    std::string folder = vae_test::fashion_mnist_folder();
    if (folder.empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)";
    vae_config config = data_config(folder);
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    EXPECT_EQ(s.train.count, 60000);
    EXPECT_EQ(s.test.count, 10000);
    EXPECT_EQ(s.validation.count, 0);
    EXPECT_EQ(s.train.dim, 784);
    EXPECT_EQ(s.train.channels, 1);
    EXPECT_EQ(s.train.rows, 28);
    EXPECT_EQ(s.train.cols, 28);
    EXPECT_EQ(s.test.channels, 1);
    EXPECT_EQ(s.train.dtype, VAE_DTYPE_U8);
    ASSERT_NE(s.train.labels, nullptr);
    ASSERT_NE(s.test.labels, nullptr);
    std::vector<int> per_class(10, 0);
    for (long i = 0; i < s.train.count; ++i) {
        ASSERT_GE(s.train.labels[i], 0);
        ASSERT_LE(s.train.labels[i], 9);
        per_class[s.train.labels[i]]++;
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 6000) << "class " << c;  // Fashion-MNIST is balanced
    for (long i = 0; i < s.test.count; ++i) ASSERT_TRUE(s.test.labels[i] >= 0 && s.test.labels[i] <= 9);

    // Compare against the raw bytes read independently through zlib.
    auto first_bytes = [](const std::string &path, size_t count) {
        std::string bytes(count, '\0');
        gzFile file = gzopen(path.c_str(), "rb");
        EXPECT_NE(file, nullptr);
        if (file == nullptr) return std::string();
        EXPECT_EQ(gzread(file, bytes.data(), (unsigned)count), (int)count);
        gzclose(file);
        return bytes;
    };
    std::string labels = first_bytes(folder + "/train-labels-idx1-ubyte.gz", 9);
    EXPECT_EQ(s.train.labels[0], (uint8_t)labels[8]);
    std::string images = first_bytes(folder + "/train-images-idx3-ubyte.gz", 16 + 784);
    EXPECT_EQ(std::memcmp(s.train.values, images.data() + 16, 784), 0);
    std::string test_labels = first_bytes(folder + "/t10k-labels-idx1-ubyte.gz", 9);
    EXPECT_EQ(s.test.labels[0], (uint8_t)test_labels[8]);
}

}  // namespace
