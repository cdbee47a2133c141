#include "test_support.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <cstdlib>
#include <sstream>
#include <cstring>
#include <stdexcept>

extern "C" {
#include "io/checkpoint.h"
}

namespace vae_test {

pid_t spawn_quiet(const std::vector<std::string> &arguments) {
    std::vector<char *> argv;
    for (const auto &a : arguments) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    return error == 0 ? pid : -1;
}

CheckpointTensors read_checkpoint_tensors(const std::string &path) {
    CheckpointTensors tensors;
    vae_checkpoint checkpoint;
    std::memset(&checkpoint, 0, sizeof checkpoint);
    EXPECT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_OK) << vae_last_error();
    for (int i = 0; i < checkpoint.tensor_count; ++i) {
        const vae_checkpoint_tensor &t = checkpoint.tensors[i];
        size_t count = 1;
        for (int d = 0; d < t.rank; ++d) count *= (size_t)t.shape[d];
        tensors.names.push_back(t.name);
        tensors.values.emplace_back(t.data, t.data + count);
    }
    const char *step = vae_checkpoint_metadata(&checkpoint, "step");
    tensors.step = step ? step : "";
    vae_checkpoint_free(&checkpoint);
    return tensors;
}

std::string temporary_folder(const std::string &name) {
    // ctest runs each test as its own process, several at once: the process
    // id keeps two processes of one suite out of each other's folders.
    std::filesystem::path folder =
        std::filesystem::path(VAE_BINARY_DIR) / "test-output" / (name + "-" + std::to_string(getpid()));
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

std::string read_file_or_empty(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return "";
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

uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

float float_from_bits(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
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

CommandResult run_command(const std::string &command, bool merge_errors) {
    CommandResult result{-1, "", ""};
    std::string errors_path;
    std::string full = command + " 2>&1";
    if (!merge_errors) {
        char name[] = "/tmp/vae-test-stderr-XXXXXX";
        int descriptor = mkstemp(name);
        if (descriptor < 0) return result;
        close(descriptor);
        errors_path = name;
        full = command + " 2>" + errors_path;
    }
    FILE *pipe = popen(full.c_str(), "r");
    if (pipe) {
        char buffer[4096];
        size_t n;
        while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
        int status = pclose(pipe);
        result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (!errors_path.empty()) {
        result.errors = read_file(errors_path);
        std::remove(errors_path.c_str());
    }
    return result;
}

CommandResult run_vae(const std::string &arguments) {
    return run_command(std::string(VAE_BINARY_DIR) + "/vae " + arguments, true);
}

std::string project_version() {
    // Read from the source, not from the generated header the library uses:
    // the test then checks the path from project(VERSION) to the outputs.
    std::string text = read_file(std::string(VAE_SOURCE_DIR) + "/CMakeLists.txt");
    std::smatch match;
    if (!std::regex_search(text, match, std::regex(R"(project\s*\(\s*\w+\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+))")))
        throw std::runtime_error("no project(... VERSION x.y.z) in CMakeLists.txt");
    return match[1].str();
}

std::string fashion_mnist_folder() {
    // VAE_FASHION_MNIST_DIR points at a copy elsewhere (a GPU machine with carried data).
    const char *override_folder = std::getenv("VAE_FASHION_MNIST_DIR");
    if (override_folder && std::filesystem::exists(std::string(override_folder) + "/train-images-idx3-ubyte.gz"))
        return override_folder;
    const char *folder = "/usr/share/datasets/fashion-mnist";
    if (std::filesystem::exists(std::string(folder) + "/train-images-idx3-ubyte.gz")) return folder;
    return "";
}

static std::string big_endian(uint32_t value) {
    std::string bytes(4, '\0');
    for (int i = 0; i < 4; ++i) bytes[i] = (char)(value >> (24 - 8 * i));
    return bytes;
}

std::string idx_file(uint32_t magic, const std::vector<uint32_t> &dims, const std::string &payload) {
    std::string bytes = big_endian(magic);
    for (uint32_t d : dims) bytes += big_endian(d);
    return bytes + payload;
}

std::string npy_file(const std::string &header_dict, const std::string &payload, int major) {
    std::string preamble = std::string("\x93NUMPY", 6) + (char)major + '\0';
    size_t length_bytes = major == 1 ? 2 : 4;
    size_t unpadded = preamble.size() + length_bytes + header_dict.size() + 1;
    size_t padded = (unpadded + 63) / 64 * 64;
    std::string header = header_dict + std::string(padded - unpadded, ' ') + "\n";
    uint32_t length = (uint32_t)header.size();
    std::string length_field;
    for (size_t i = 0; i < length_bytes; ++i) length_field += (char)(length >> (8 * i));
    return preamble + length_field + header + payload;
}

std::string npy_dict(const std::string &descr, const std::string &shape, const std::string &order) {
    return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

}  // namespace vae_test
