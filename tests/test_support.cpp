#include "test_support.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace vae_test {

std::string temporary_folder(const std::string &name) {
    std::filesystem::path folder = std::filesystem::path(VAE_BINARY_DIR) / "test-output" / name;
    std::filesystem::remove_all(folder);
    std::filesystem::create_directories(folder);
    return folder.string();
}

void write_file(const std::string &path, const std::string &bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), (std::streamsize)bytes.size());
    if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

double relative_error(const float *a, const float *b, size_t count) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; ++i) {
        double d = (double)a[i] - (double)b[i];
        if (!std::isfinite(d)) return INFINITY;
        diff += d * d;
        norm += (double)b[i] * (double)b[i];
    }
    return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

double relative_error(const std::vector<float> &a, const std::vector<float> &b) {
    if (a.size() != b.size()) return INFINITY;
    return relative_error(a.data(), b.data(), a.size());
}

std::vector<float> random_normal(size_t count, uint64_t seed, float scale) {
    std::mt19937_64 generator(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> values(count);
    for (auto &v : values) v = normal(generator);
    return values;
}

std::vector<float> random_uniform(size_t count, uint64_t seed, float low, float high) {
    std::mt19937_64 generator(seed);
    std::uniform_real_distribution<float> uniform(low, high);
    std::vector<float> values(count);
    for (auto &v : values) v = uniform(generator);
    return values;
}

std::string fashion_mnist_folder() {
    const char *folder = "/usr/share/datasets/fashion-mnist";
    if (std::filesystem::exists(std::string(folder) + "/train-images-idx3-ubyte.gz")) return folder;
    return "";
}

}  // namespace vae_test
