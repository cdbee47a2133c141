// Philox4x32-10 against the published Random123 known-answer vectors, and
// the engine's stream layout against cuRAND's definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>

extern "C" {
#include "vae_philox.h"
}

namespace {

struct KnownAnswer {
    uint32_t counter[4];
    uint32_t key[2];
    uint32_t expected[4];
};

// From Random123's kat_vectors (philox4x32 with 10 rounds).
const KnownAnswer known_answers[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

TEST(Philox, Random123KnownAnswers) {
    for (const auto &answer : known_answers) {
        vae_philox_block block = vae_philox4x32_10(answer.counter, answer.key[0], answer.key[1]);
        for (int i = 0; i < 4; ++i) EXPECT_EQ(block.word[i], answer.expected[i]) << "word " << i;
    }
}

// cuRAND: curand_init(seed, subsequence, offset) puts offset/4 in counter
// words 0-1 and the subsequence in words 2-3, key = {seed lo, seed hi}.
TEST(Philox, BlockAddressFollowsCurandLayout) {
    uint64_t seed = 0x0123456789abcdefULL, subsequence = 0xfedcba9876543210ULL, column = 4 * 0x100000003ULL;
    uint32_t counter[4] = {3, 1, 0x76543210u, 0xfedcba98u};
    vae_philox_block direct = vae_philox4x32_10(counter, 0x89abcdefu, 0x01234567u);
    vae_philox_block addressed = vae_philox_block_at(seed, subsequence, column);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(addressed.word[i], direct.word[i]);
}

TEST(Philox, SubsequencesSeparateStepPurposeAndRow) {
    std::set<uint64_t> seen;
    for (uint64_t step : {0ULL, 1ULL, 1000000ULL})
        for (uint32_t purpose = 0; purpose < 7; ++purpose)
            for (uint32_t row : {0u, 1u, 0xffffffffu}) seen.insert(vae_philox_subsequence(step, purpose, row));
    EXPECT_EQ(seen.size(), 3u * 7u * 3u);
}

// Box-Muller as cuRAND defines it: u = x*2^-32 + 2^-33, v = y*2^-32*2pi +
// half a step, pair = sqrt(-2 ln u) * (sin v, cos v).
TEST(Philox, NormalsFollowCurandBoxMuller) {
    float normals[4];
    vae_normal4(42, 7, 8, normals);
    vae_philox_block block = vae_philox_block_at(42, 7, 8);
    for (int pair = 0; pair < 2; ++pair) {
        double u = block.word[2 * pair] * std::ldexp(1.0, -32) + std::ldexp(1.0, -33);
        double v = (block.word[2 * pair + 1] * std::ldexp(1.0, -32) + std::ldexp(1.0, -33)) * 2 * M_PI;
        double radius = std::sqrt(-2.0 * std::log(u));
        EXPECT_NEAR(normals[2 * pair], radius * std::sin(v), 1e-4);
        EXPECT_NEAR(normals[2 * pair + 1], radius * std::cos(v), 1e-4);
    }
}

TEST(Philox, NormalsAndUniformsHaveTheRightMoments) {
    double sum = 0, sum_squares = 0, uniform_sum = 0;
    const int blocks = 50000;
    for (int i = 0; i < blocks; ++i) {
        float normals[4], uniforms[4];
        vae_normal4(9, vae_philox_subsequence(i / 100, VAE_RANDOM_EPS, i % 100), 0, normals);
        vae_uniform4(9, vae_philox_subsequence(i, VAE_RANDOM_BINARIZE, 0), 0, uniforms);
        for (int k = 0; k < 4; ++k) {
            sum += normals[k];
            sum_squares += normals[k] * normals[k];
            uniform_sum += uniforms[k];
            ASSERT_GT(uniforms[k], 0.0f);
            ASSERT_LE(uniforms[k], 1.0f);
        }
    }
    double n = 4.0 * blocks;
    EXPECT_NEAR(sum / n, 0.0, 0.01);
    EXPECT_NEAR(sum_squares / n, 1.0, 0.01);
    EXPECT_NEAR(uniform_sum / n, 0.5, 0.005);
}

}  // namespace
