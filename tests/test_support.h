// Helpers shared by the GoogleTest suites.
#ifndef VAE_TEST_SUPPORT_H
#define VAE_TEST_SUPPORT_H

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vae_test {

// A fresh empty folder under the build tree for one test (name + process id).
std::string temporary_folder(const std::string &name);
void write_file(const std::string &path, const std::string &bytes);
std::string read_file(const std::string &path);
// The file's bytes, or "" when it does not exist (yet).
std::string read_file_or_empty(const std::string &path);
// ||a - b|| / max(||b||, tiny): the normalised error used by all comparisons.
double relative_error(const float *a, const float *b, size_t count);
double relative_error(const std::vector<float> &a, const std::vector<float> &b);
// A float's bits and back (for bitwise comparisons and crafted values).
uint32_t float_bits(float value);
float float_from_bits(uint32_t bits);
// Fresh random values from a seeded generator (tests print the seed they use).
std::vector<float> random_normal(size_t count, uint64_t seed, float scale = 1.0f);
std::vector<float> random_uniform(size_t count, uint64_t seed, float low, float high);
struct CommandResult {
    int exit_code;
    std::string output;  // stdout (and stderr where merged)
    std::string errors;  // stderr where kept apart
};
// Runs a shell command; stderr merged into output, or kept apart in errors.
CommandResult run_command(const std::string &command, bool merge_errors);
// Runs build/vae with arguments (shell words), stderr merged into output.
CommandResult run_vae(const std::string &arguments);

// Starts a program (arguments[0] is its path) with stderr sent to /dev/null,
// without waiting for it; the child's pid, or -1 when it could not start.
pid_t spawn_quiet(const std::vector<std::string> &arguments);

// A checkpoint's tensors in file order and its "step" metadata ("" if none);
// a file that does not load fails the calling test.
struct CheckpointTensors {
    std::vector<std::string> names;
    std::vector<std::vector<float>> values;
    std::string step;
};
CheckpointTensors read_checkpoint_tensors(const std::string &path);

// The version in the top CMakeLists.txt's project(... VERSION x.y.z).
std::string project_version();

// The Debian package's folder when dataset-fashion-mnist is installed, else "".
std::string fashion_mnist_folder();

// The bytes of test input files, built here independently of the library's
// readers and writers (which the tests check).
// An IDX file: the magic number and each dimension big-endian, then payload.
std::string idx_file(uint32_t magic, const std::vector<uint32_t> &dims, const std::string &payload);
// An NPY file: preamble for the version, the header padded with spaces and a
// newline so that the data starts at a multiple of 64.
std::string npy_file(const std::string &header_dict, const std::string &payload, int major = 1);
// The header dictionary of an NPY file.
std::string npy_dict(const std::string &descr, const std::string &shape, const std::string &order = "False");
// The values' bytes as they lie in memory (an NPY payload).
template <typename T>
std::string raw_bytes(const std::vector<T> &values) {
    return std::string((const char *)values.data(), values.size() * sizeof(T));
}

}  // namespace vae_test

#endif
