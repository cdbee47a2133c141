// Test files and owners shared by the dataset suites (test_dataset_formats.cpp,
// test_dataset_load.cpp, test_dataset_shards.cpp): header-only, since each tests/test_*.cpp is its own
// executable linked with test_support.cpp alone.
#ifndef VAE_DATASET_TEST_FILES_H
#define VAE_DATASET_TEST_FILES_H

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "data/dataset.h"
#include "base/error.h"
}

namespace dataset_test {

// Splits freed when the test's scope ends.
struct scoped_splits {
    vae_data_splits splits{};
    ~scoped_splits() { vae_data_splits_free(&splits); }
};

// A config whose only setting is data.path (the loaders' tests set the rest).
inline vae_config data_config(const std::string &folder) {
    vae_config config;
    std::memset(&config, 0, sizeof config);
    std::snprintf(config.data_path, sizeof config.data_path, "%s", folder.c_str());
    return config;
}

// count images of rows x cols with value (i*7 + j*3) % 256: every byte known.
inline std::string image_payload(uint32_t count, uint32_t rows, uint32_t cols) {
    std::string payload;
    for (uint32_t i = 0; i < count; ++i)
        for (uint32_t j = 0; j < rows * cols; ++j) payload += (char)(uint8_t)((i * 7 + j * 3) % 256);
    return payload;
}

inline std::string label_payload(uint32_t count) {
    std::string payload;
    for (uint32_t i = 0; i < count; ++i) payload += (char)(uint8_t)((i * 5 + 2) % 10);
    return payload;
}

inline std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols) {
    return vae_test::idx_file(0x803, {count, rows, cols}, image_payload(count, rows, cols));
}

inline std::string idx_labels(uint32_t count) { return vae_test::idx_file(0x801, {count}, label_payload(count)); }

inline void write_gzip(const std::string &path, const std::string &bytes) {
    gzFile file = gzopen(path.c_str(), "wb");
    ASSERT_NE(file, nullptr) << path;
    if (!bytes.empty()) {
        ASSERT_EQ(gzwrite(file, bytes.data(), (unsigned)bytes.size()), (int)bytes.size());
    }
    ASSERT_EQ(gzclose(file), Z_OK);
}

inline std::vector<float> float_values(size_t count) {
    std::vector<float> values(count);
    for (size_t i = 0; i < count; ++i) values[i] = (float)((i * 37) % 101) / 100.0f;
    return values;
}

// A loaded dataset freed when the test ends, pass or fail.
struct scoped_dataset {
    vae_dataset dataset{};
    ~scoped_dataset() { vae_dataset_free(&dataset); }
};

inline vae_status load_npy(const std::string &path, vae_dataset *out) {
    vae_error_clear();
    return vae_dataset_load_npy(path.c_str(), out);
}

}  // namespace dataset_test

#endif
