// The CPU backend's BLAS kernels are chosen from the CPU's features before
// OpenBLAS initialises (src/backends/blas_select.c): the choice must be the
// one the features call for, OpenBLAS must be running it, and a user's own
// OPENBLAS_CORETYPE must win.
#include <gtest/gtest.h>

#include <string>

#include "test_support.h"

extern "C" {
#include "backends/blas_select.h"
}

namespace {

// The features, read here with the compiler's own CPU test, independently of
// the library: the widest vector unit the OS lets us use.
std::string expected_core() {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
    return "";
}

TEST(BlasSelect, CoreFollowsTheCpuFeatures) {
    const char *core = vae_blas_core_for_this_cpu();
    EXPECT_EQ(core ? core : "", expected_core());
}

TEST(BlasSelect, TheVaeProgramRunsTheCoreTheFeaturesCallFor) {
    const char *core = vae_blas_core_for_this_cpu();
    if (!core) GTEST_SKIP() << "no AVX on this CPU: OpenBLAS's own choice stands";
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
    // Without the user's variable, the program runs the features' kernels:
    // by OpenBLAS's own detection where it knows the CPU, else by restarting.
    vae_test::CommandResult result = vae_test::run_command(
        "env -u OPENBLAS_CORETYPE " VAE_BINARY_DIR "/vae bench --config " VAE_SOURCE_DIR
        "/configs/tiny_test.ini --device cpu --steps 2 --warmup-steps 1",
        true);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find(std::string("core ") + core + " (chosen by CPU features)"), std::string::npos)
        << result.output;
}

TEST(BlasSelect, TheUsersCoreTypeWins) {
    if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
    // Prescott runs on every x86-64 CPU.
    vae_test::CommandResult result = vae_test::run_command(
        "OPENBLAS_CORETYPE=Prescott " VAE_BINARY_DIR "/vae bench --config " VAE_SOURCE_DIR
        "/configs/tiny_test.ini --device cpu --steps 2 --warmup-steps 1",
        true);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("core Prescott (set by OPENBLAS_CORETYPE)"), std::string::npos)
        << result.output;
}

}  // namespace
