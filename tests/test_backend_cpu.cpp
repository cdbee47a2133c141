// The CPU reference backend's operations that the gradient and golden tests
// do not reach: batch gathering (scaling, static and dynamic binarisation
// from the Philox stream), the sum of squares, and the Adam step with its
// schedule, bias correction, clipping and non-finite skip, each against an
// independent float64 computation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
}

namespace {

class CpuBackend : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_EQ(vae_backend_create_cpu(&backend_), VAE_OK) << vae_last_error(); }
    void TearDown() override {
        if (backend_) backend_->ops->destroy(backend_);
    }
    vae_backend *backend_ = nullptr;
};

TEST_F(CpuBackend, GatherScalesAndFollowsThePermutation) {
    const int count = 10, dim = 7, rows = 3;
    std::vector<uint8_t> data(count * dim);
    for (size_t i = 0; i < data.size(); ++i) data[i] = (uint8_t)(i * 37 % 256);
    std::vector<int32_t> permutation = {4, 9, 0, 2, 7, 1, 8, 3, 6, 5};
    vae_gather_settings settings = {};
    settings.dtype = VAE_DTYPE_U8;
    settings.scale = 1.0f / 255.0f;
    settings.binarize = VAE_BINARIZE_NONE;
    settings.steps_per_epoch = 3;
    std::vector<float> x(rows * dim);
    for (uint64_t step : {0ull, 1ull, 5ull}) {  // step 5 is batch 2 of its epoch
        vae_step_counter counter = {step, 0, 0};
        ASSERT_EQ(backend_->ops->gather_batch(backend_, data.data(), permutation.data(), dim, rows, &settings, &counter,
                                              x.data()),
                  VAE_OK);
        uint64_t batch = step % 3;
        for (int r = 0; r < rows; ++r)
            for (int j = 0; j < dim; ++j)
                ASSERT_FLOAT_EQ(x[r * dim + j], data[permutation[batch * rows + r] * dim + j] / 255.0f)
                    << "step " << step << " row " << r;
    }
}

TEST_F(CpuBackend, StaticAndDynamicBinarisation) {
    const int dim = 9, rows = 200;
    std::vector<float> data = vae_test::random_uniform((size_t)rows * dim, 77, 0.0f, 1.0f);
    std::vector<int32_t> identity(rows);
    for (int i = 0; i < rows; ++i) identity[i] = i;
    vae_gather_settings settings = {};
    settings.dtype = VAE_DTYPE_F32;
    settings.scale = 1.0f;
    settings.binarize = VAE_BINARIZE_STATIC;
    settings.threshold = 0.3f;
    settings.seed = 12345;
    settings.random_purpose = VAE_RANDOM_BINARIZE;
    settings.steps_per_epoch = 1;
    vae_step_counter counter = {41, 0, 0};
    std::vector<float> x(rows * dim);
    ASSERT_EQ(backend_->ops->gather_batch(backend_, data.data(), identity.data(), dim, rows, &settings, &counter,
                                          x.data()),
              VAE_OK);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], data[i] > 0.3f ? 1.0f : 0.0f);

    // Dynamic: pixel (r, j) is 1 exactly when the Philox uniform at
    // (seed, subsequence(step, purpose, r), column j) is below its intensity.
    settings.binarize = VAE_BINARIZE_DYNAMIC;
    ASSERT_EQ(backend_->ops->gather_batch(backend_, data.data(), identity.data(), dim, rows, &settings, &counter,
                                          x.data()),
              VAE_OK);
    double ones = 0, expected_ones = 0;
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < dim; ++j) {
            float uniforms[4];
            vae_uniform4(12345, vae_philox_subsequence(41, VAE_RANDOM_BINARIZE, (uint32_t)r), (uint64_t)(j / 4 * 4),
                         uniforms);
            float value = data[r * dim + j];
            ASSERT_EQ(x[r * dim + j], uniforms[j % 4] < value ? 1.0f : 0.0f) << "row " << r << " column " << j;
            ones += x[r * dim + j];
            expected_ones += value;
        }
    // The draws are Bernoulli(intensity): the count of ones is near its mean.
    EXPECT_NEAR(ones, expected_ones, 4.0 * std::sqrt(expected_ones));
    // A later step draws afresh.
    std::vector<float> later(rows * dim);
    counter.step = 42;
    ASSERT_EQ(backend_->ops->gather_batch(backend_, data.data(), identity.data(), dim, rows, &settings, &counter,
                                          later.data()),
              VAE_OK);
    EXPECT_NE(std::memcmp(later.data(), x.data(), x.size() * sizeof(float)), 0);
}

TEST_F(CpuBackend, SumOfSquaresMatchesFloat64) {
    std::vector<float> values = vae_test::random_normal(100003, 5, 3.0f);
    double expected = 0;
    for (float v : values) expected += (double)v * v;
    float result = 0;
    ASSERT_EQ(backend_->ops->sum_of_squares(backend_, values.data(), values.size(), &result), VAE_OK);
    EXPECT_NEAR(result, expected, 1e-6 * expected);
}

// Adam over several steps with a cosine schedule, warm-up, weight decay and
// clipping, against the same update written out in float64.
TEST_F(CpuBackend, AdamStepFollowsScheduleClippingAndBiasCorrection) {
    const size_t count = 37;
    vae_adam_settings settings = {};
    settings.lr = 1e-2f;
    settings.lr_min = 1e-4f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.99f;
    settings.epsilon = 1e-8f;
    settings.weight_decay = 0.01f;
    settings.decoupled_weight_decay = 1;
    settings.lr_schedule = VAE_LR_COSINE;
    settings.warmup_steps = 2;
    settings.total_steps = 6;
    settings.clip_norm = 0.5f;
    std::vector<float> params = vae_test::random_normal(count, 8);
    std::vector<float> m(count, 0.0f), v(count, 0.0f);
    std::vector<double> p64(params.begin(), params.end()), m64(count, 0.0), v64(count, 0.0);
    vae_step_counter counter = {0, 0, 0};
    for (int t = 1; t <= 6; ++t) {
        std::vector<float> grads = vae_test::random_normal(count, 100 + t, 0.4f);
        double norm_squared = 0;
        for (float g : grads) norm_squared += (double)g * g;
        float norm_squared_f = (float)norm_squared;
        ASSERT_EQ(backend_->ops->adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
                                           &norm_squared_f, &counter),
                  VAE_OK);
        double step = t - 1;
        double lr = step < 2 ? 1e-2 * (step + 1) / 2
                             : 1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + std::cos(M_PI * (step - 2) / (6 - 2)));
        double clip = std::min(1.0, 0.5 / (std::sqrt(norm_squared) + 1e-6));
        for (size_t i = 0; i < count; ++i) {
            double g = grads[i] * clip;
            p64[i] *= 1 - lr * 0.01;
            m64[i] = 0.9 * m64[i] + 0.1 * g;
            v64[i] = 0.99 * v64[i] + 0.01 * g * g;
            double bias1 = 1 - std::pow(0.9, t), bias2 = 1 - std::pow(0.99, t);
            p64[i] -= lr / bias1 * m64[i] / (std::sqrt(v64[i]) / std::sqrt(bias2) + 1e-8);
        }
        EXPECT_EQ(counter.step, (uint64_t)t);
    }
    std::vector<float> expected(p64.begin(), p64.end());
    EXPECT_LT(vae_test::relative_error(params, expected), 1e-6);
}

TEST_F(CpuBackend, NonFiniteGradientNormLeavesEverythingUnchanged) {
    const size_t count = 5;
    vae_adam_settings settings = {};
    settings.lr = 1e-3f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    std::vector<float> params = {1, 2, 3, 4, 5}, m(count, 0.1f), v(count, 0.2f);
    std::vector<float> grads = {0, 1, NAN, 0, 0};
    float norm_squared = NAN;
    vae_step_counter counter = {7, 0, 0};
    ASSERT_EQ(backend_->ops->adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
                                       &norm_squared, &counter),
              VAE_OK);
    EXPECT_EQ(params, (std::vector<float>{1, 2, 3, 4, 5}));
    EXPECT_EQ(m, std::vector<float>(count, 0.1f));
    EXPECT_EQ(v, std::vector<float>(count, 0.2f));
    EXPECT_EQ(counter.step, 8u);
    EXPECT_EQ(counter.skipped_steps, 1u);
    EXPECT_EQ(counter.nonfinite_seen, 1u);
}

}  // namespace
