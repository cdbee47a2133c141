// cuRAND's own device-API header (curand_kernel.h), compiled here as host
// code, against the engine's two Philox implementations: the CPU's
// kernels/vae_philox.h and the kernels' kernels/vae_curand_philox.h (which
// includes only cuRAND's Philox bijection). Over more than a million blocks
// at engine-shaped addresses, random addresses and counters that carry from
// the low into the high counter word, the 32-bit words, the uniforms and the
// normals must be bitwise equal.
//
// Normals "the host way": cuRAND's host branch of Box-Muller (sinf, cosf,
// logf) evaluated with the multiply-adds fused, as nvcc fuses them on the
// device (its PTX has fma.rn.f32 for the angle y * 2pi/2^32 + pi/2^32). g++
// fuses them when the code below is compiled for FMA with
// -ffp-contract=fast; the engine writes them as fmaf. The device itself
// uses __sincosf in curand_normal4, which the kernels do not use (see
// vae_curand_philox.h).
//
// CMake defines VAE_HAVE_CURAND_HEADERS when it finds curand_kernel.h (the
// CUDA toolkit's include folder); without it every test here skips and says
// why.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "test_support.h"

#if defined(VAE_HAVE_CURAND_HEADERS) && defined(__GNUC__) && !defined(__clang__) && \
    (defined(__x86_64__) || defined(__aarch64__))
#define VAE_CURAND_HOST_TEST 1
#endif

#ifdef VAE_CURAND_HOST_TEST
// First, outside the FMA region: what the engine's code uses, so that none of
// it is compiled for FMA (an always_inline callee may not carry a target the
// caller lacks).
#include <cuda_runtime.h>
#include <curand_philox4x32_x.h>

#include "vae_curand_philox.h"
#include "vae_philox.h"

// cuRAND's own code, compiled with fused multiply-adds as nvcc compiles it.
#pragma GCC push_options
#if defined(__x86_64__)
#pragma GCC target("fma")
#endif
#pragma GCC optimize("fp-contract=fast")
#include <curand_kernel.h>

namespace curand_reference {

struct Draws {
    uint4 words;
    float4 uniforms;
    float4 normals;
};

// Each quantity from a freshly initialised state, as the kernels draw it.
static Draws draw(uint64_t seed, uint64_t subsequence, uint64_t column) {
    Draws result;
    curandStatePhilox4_32_10_t state;
    curand_init(seed, subsequence, column, &state);
    result.words = curand4(&state);
    curand_init(seed, subsequence, column, &state);
    result.uniforms = curand_uniform4(&state);
    curand_init(seed, subsequence, column, &state);
    result.normals = curand_normal4(&state);
    return result;
}

// count consecutive blocks from one state (curand4 advances the counter
// with its own carry logic).
static void consecutive_words(uint64_t seed, uint64_t subsequence, uint64_t column, int count, uint4 *out) {
    curandStatePhilox4_32_10_t state;
    curand_init(seed, subsequence, column, &state);
    for (int i = 0; i < count; ++i) out[i] = curand4(&state);
}

}  // namespace curand_reference
#pragma GCC pop_options
#endif

namespace {

#ifdef VAE_CURAND_HOST_TEST

bool cpu_has_fma() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("fma");
#else
    return true;
#endif
}

using vae_test::float_bits;

struct Tally {
    long blocks = 0;
    long word_mismatches = 0, uniform_mismatches = 0, normal_mismatches = 0;
    long kernel_mismatches = 0;
    long fused_angle_differs = 0; // pairs whose angle an unfused multiply-add would change
    long first_failures_printed = 0;
};

// One block through every path; counts (and prints the first few) mismatches.
void check_block(uint64_t seed, uint64_t subsequence, uint64_t column, Tally &tally) {
    const curand_reference::Draws ref = curand_reference::draw(seed, subsequence, column);
    const uint32_t ref_words[4] = {ref.words.x, ref.words.y, ref.words.z, ref.words.w};
    const float ref_uniforms[4] = {ref.uniforms.x, ref.uniforms.y, ref.uniforms.z, ref.uniforms.w};
    const float ref_normals[4] = {ref.normals.x, ref.normals.y, ref.normals.z, ref.normals.w};

    vae_philox_block cpu_block = vae_philox_block_at(seed, subsequence, column);
    float cpu_uniforms[4], cpu_normals[4];
    vae_uniform4(seed, subsequence, column, cpu_uniforms);
    vae_normal4(seed, subsequence, column, cpu_normals);

    uint4 kernel_block = vae_curand_philox_block(seed, subsequence, column);
    const uint32_t kernel_words[4] = {kernel_block.x, kernel_block.y, kernel_block.z, kernel_block.w};
    float kernel_uniforms[4], kernel_normals[4];
    vae_curand_uniform4(seed, subsequence, column, kernel_uniforms);
    vae_curand_normal4(seed, subsequence, column, kernel_normals);

    bool failed = false;
    for (int i = 0; i < 4; ++i) {
        if (cpu_block.word[i] != ref_words[i]) ++tally.word_mismatches, failed = true;
        if (float_bits(cpu_uniforms[i]) != float_bits(ref_uniforms[i])) ++tally.uniform_mismatches, failed = true;
        if (float_bits(cpu_normals[i]) != float_bits(ref_normals[i])) ++tally.normal_mismatches, failed = true;
        if (kernel_words[i] != ref_words[i] || float_bits(kernel_uniforms[i]) != float_bits(ref_uniforms[i]) ||
            float_bits(kernel_normals[i]) != float_bits(ref_normals[i]))
            ++tally.kernel_mismatches, failed = true;
    }
    // How often fusing matters: the angle of each pair, unfused (volatile
    // keeps the product rounded on its own).
    const float step = 2.3283064e-10f * 6.2831855f;
    for (int pair = 0; pair < 2; ++pair) {
        volatile float product = (float)ref_words[2 * pair + 1] * step;
        float unfused = product + step / 2.0f;
        float fused = std::fmaf((float)ref_words[2 * pair + 1], step, step / 2.0f);
        if (float_bits(unfused) != float_bits(fused)) ++tally.fused_angle_differs;
    }
    if (failed && tally.first_failures_printed < 5) {
        ++tally.first_failures_printed;
        std::printf("mismatch at seed %#llx subsequence %#llx column %#llx: word0 %08x/%08x normal0 %.9g/%.9g\n",
                    (unsigned long long)seed, (unsigned long long)subsequence, (unsigned long long)column,
                    cpu_block.word[0], ref_words[0], cpu_normals[0], ref_normals[0]);
    }
    ++tally.blocks;
}

void expect_clean(const Tally &tally, const char *what) {
    std::printf("%s: %ld blocks; angles where fusing changes the bits: %ld of %ld\n", what, tally.blocks,
                tally.fused_angle_differs, 2 * tally.blocks);
    EXPECT_EQ(tally.word_mismatches, 0) << what;
    EXPECT_EQ(tally.uniform_mismatches, 0) << what;
    EXPECT_EQ(tally.normal_mismatches, 0) << what;
    EXPECT_EQ(tally.kernel_mismatches, 0) << what << ": vae_curand_philox.h differs from cuRAND";
}

class CurandHost : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!cpu_has_fma())
            GTEST_SKIP() << "this CPU has no FMA instructions; the test needs them to evaluate cuRAND's "
                            "Box-Muller with the device's fused multiply-adds";
    }
};

// The addresses the engine uses: subsequence(step, purpose, row), column a
// multiple of 4 below the widest layer.
TEST_F(CurandHost, EngineShapedAddressesMatchBitwise) {
    Tally tally;
    const uint64_t seeds[] = {0, 1, 42, 0xdeadbeefcafef00dULL};
    const uint64_t steps[] = {0, 1, 2, 937, 60000, 1000003, (1ULL << 29) - 1};
    for (uint64_t seed : seeds)
        for (uint64_t step : steps)
            for (uint32_t purpose = 0; purpose <= VAE_RANDOM_INIT; ++purpose)
                for (uint32_t row = 0; row < 40; ++row)
                    for (uint64_t column = 0; column < 800; column += 4)
                        check_block(seed, vae_philox_subsequence(step, purpose, row * 97u), column, tally);
    expect_clean(tally, "engine-shaped");
    EXPECT_GE(tally.blocks, 1000000);
    // The normals check would pass a plain multiply-add only if fusing never
    // mattered; it matters often, so the comparison distinguishes the two.
    EXPECT_GT(tally.fused_angle_differs, tally.blocks / 100);
}

// Any 64-bit seed, any 64-bit subsequence, any block-aligned offset.
TEST_F(CurandHost, RandomAddressesMatchBitwise) {
    Tally tally;
    std::mt19937_64 generator(20261121);
    for (int i = 0; i < 200000; ++i) {
        uint64_t seed = generator(), subsequence = generator();
        uint64_t column = (generator() >> 2) & ~3ULL; // offset/4 below 2^62, a multiple of 4
        check_block(seed, subsequence, column, tally);
    }
    expect_clean(tally, "random");
}

// Block indices around 2^32 (column/4 carries from counter word 0 into word
// 1) and around 2^62, and subsequences whose low word is all ones.
TEST_F(CurandHost, CountersThatCarryIntoTheHighWordMatchBitwise) {
    Tally tally;
    const uint64_t block_bases[] = {(1ULL << 32) - 64, (1ULL << 62) - 64, (3ULL << 32) - 64};
    const uint64_t subsequences[] = {0, 0xffffffffULL, 0x1ffffffffULL, vae_philox_subsequence(5, 0, 0xffffffffu)};
    for (uint64_t seed : {7ULL, 0xffffffffffffffffULL})
        for (uint64_t base : block_bases)
            for (uint64_t subsequence : subsequences)
                for (uint64_t block = base; block < base + 128; ++block)
                    check_block(seed, subsequence, 4 * block, tally);
    expect_clean(tally, "carry");

    // curand4 stepping one state across the carry equals direct addressing.
    uint4 words[128];
    curand_reference::consecutive_words(11, 0x123456789ULL, 4 * ((1ULL << 32) - 64), 128, words);
    for (int i = 0; i < 128; ++i) {
        vae_philox_block expected = vae_philox_block_at(11, 0x123456789ULL, 4 * ((1ULL << 32) - 64 + i));
        ASSERT_EQ(words[i].x, expected.word[0]) << "block " << i;
        ASSERT_EQ(words[i].y, expected.word[1]) << "block " << i;
        ASSERT_EQ(words[i].z, expected.word[2]) << "block " << i;
        ASSERT_EQ(words[i].w, expected.word[3]) << "block " << i;
    }
}

#else

TEST(CurandHost, SkippedWithoutTheCudaToolkitHeaders) {
    GTEST_SKIP() << "curand_kernel.h was not found at configure time (CUDA toolkit headers absent, "
                    "or a compiler other than g++ on x86-64/aarch64): cuRAND's stream is not compared";
}

#endif

}  // namespace
