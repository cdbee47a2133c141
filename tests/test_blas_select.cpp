// The CPU backend's BLAS kernels are chosen from the CPU's features, inside
// the running process (src/backends/blas_select.c): the choice must be the
// one the features call for, OpenBLAS must be running it (also where
// OpenBLAS itself chose other kernels, simulated here on any CPU), and a
// user's own OPENBLAS_CORETYPE must win. The launcher case (mpirun) is in
// test_distributed.
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

vae_test::CommandResult vae_version(const std::string &environment) {
    return vae_test::run_command("env -u OPENBLAS_CORETYPE -u VAE_BLAS_SIMULATE_UNKNOWN_CPU " + environment + " " +
                                     VAE_BINARY_DIR "/vae --version",
                                 true);
}

TEST(BlasSelect, CoreFollowsTheCpuFeatures) {
    const char *core = vae_blas_core_for_this_cpu();
    EXPECT_EQ(core ? core : "", expected_core());
}

TEST(BlasSelect, TheVaeProgramRunsTheCoreTheFeaturesCallFor) {
    const char *core = vae_blas_core_for_this_cpu();
    if (!core) GTEST_SKIP() << "no AVX on this CPU: OpenBLAS's own choice stands";
    // Without the user's variable, the program runs the features' kernels:
    // by OpenBLAS's own detection where it knows the CPU, else by switching.
    vae_test::CommandResult result = vae_version("");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find(std::string("core ") + core + " (chosen by CPU features"), std::string::npos)
        << result.output;
}

TEST(BlasSelect, AKernelOpenBlasChoseWronglyIsSwitchedInTheSameProcess) {
    const char *core = vae_blas_core_for_this_cpu();
    if (!core) GTEST_SKIP() << "no AVX on this CPU: OpenBLAS's own choice stands";
    // As on a CPU OpenBLAS does not recognise: it runs Prescott, and the
    // program switches to the features' kernels without restarting itself.
    vae_test::CommandResult result = vae_version("VAE_BLAS_SIMULATE_UNKNOWN_CPU=1");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find(std::string("core ") + core + " (chosen by CPU features; OpenBLAS chose Prescott)"),
              std::string::npos)
        << result.output;
}

TEST(BlasSelect, TheUsersCoreTypeWins) {
    // Prescott runs on every x86-64 CPU.
    vae_test::CommandResult result = vae_version("OPENBLAS_CORETYPE=Prescott VAE_BLAS_SIMULATE_UNKNOWN_CPU=1");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("core Prescott (set by OPENBLAS_CORETYPE)"), std::string::npos) << result.output;
}

}  // namespace
