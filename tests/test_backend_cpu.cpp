// The CPU reference backend's operations that the gradient and golden tests
// do not reach: batch gathering (scaling, static and dynamic binarisation
// from the Philox stream), the sum of squares, and the Adam step with its
// schedule, bias correction, clipping and non-finite skip, each against an
// independent float64 computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
}

namespace {

// A data set in one block, as gather_batch takes it.
struct OneSegment {
    int64_t first_row[2];
    const void *values[1];
    vae_row_segments rows;
    OneSegment(const void *data, int64_t count) : first_row{0, count}, values{data}, rows{1, first_row, values} {}
    OneSegment(const OneSegment &) = delete;
};

class CpuBackend : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_EQ(vae_backend_create_cpu(&backend_), VAE_OK) << vae_last_error(); }
    void TearDown() override {
        if (backend_) vae_backend_destroy(backend_);
    }
    vae_backend *backend_ = nullptr;
};

// The rule of kernels/vae_step_math.h for the importance-weighted log mean,
// which the CUDA kernel shares: a NaN log weight anywhere gives NaN (even
// beside -inf weights, where a NaN-skipping maximum would answer -inf), else
// +inf gives +inf, all -inf gives -inf, and -inf among finite weights adds
// nothing. With mu = 0, logvar = 0 and z = 0 the prior/posterior term of a
// weight is 0, so each log weight is exactly its logp.
TEST_F(CpuBackend, ImportanceLogMeanRuleForNanAndInfiniteWeights) {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const std::vector<std::vector<float>> weights = {
        {1.0f, 2.0f, 3.0f}, {1.0f, nan, 3.0f},   {1.0f, inf, 3.0f},  {-inf, -inf, -inf},
        {-inf, 0.0f, -inf}, {nan, -inf, -inf},   {-inf, -inf, nan},  {inf, nan, 1.0f},
        {-inf, inf, -inf},  {-1000.0f, -1001.0f, -1002.0f}};
    const int rows = (int)weights.size(), samples = 3, latent = 1;
    std::vector<float> logp((size_t)rows * samples), mu_logvar((size_t)rows * 2, 0.0f),
        z((size_t)rows * samples, 0.0f), result(rows, 12345.0f);
    for (int b = 0; b < rows; ++b)
        for (int l = 0; l < samples; ++l) logp[(size_t)l * rows + b] = weights[b][l];  // sample-major
    ASSERT_EQ(vae_backend_importance_log_mean(backend_, logp.data(), mu_logvar.data(), z.data(), result.data(), rows,
                                              latent, samples, 0.0f),
              VAE_OK)
        << vae_last_error();
    auto log_mean_exp = [](std::vector<double> w) {
        double m = *std::max_element(w.begin(), w.end()), sum = 0.0;
        for (double value : w) sum += std::exp(value - m);
        return m + std::log(sum / (double)w.size());
    };
    EXPECT_NEAR(result[0], log_mean_exp({1, 2, 3}), 1e-6);
    EXPECT_TRUE(std::isnan(result[1])) << result[1];
    EXPECT_EQ(result[2], inf);
    EXPECT_EQ(result[3], -inf);
    EXPECT_NEAR(result[4], std::log(1.0 / 3.0), 1e-6);
    EXPECT_TRUE(std::isnan(result[5])) << "a NaN first beside -inf weights: " << result[5];
    EXPECT_TRUE(std::isnan(result[6])) << "a NaN last beside -inf weights: " << result[6];
    EXPECT_TRUE(std::isnan(result[7])) << "NaN beats +inf: " << result[7];
    EXPECT_EQ(result[8], inf);
    EXPECT_NEAR(result[9], log_mean_exp({-1000, -1001, -1002}), 1e-3) << "stable far from 0";
}

// Arguments are checked once, for every backend, in the vae_backend_*
// wrappers (src/backends/backend.c): the CPU backend, which checks nothing
// itself, refuses them with a message naming the backend, the operation and
// the bad value.
TEST_F(CpuBackend, WrappersRefuseBadArgumentsNamingTheOperation) {
    std::vector<float> buffer(64, 0.0f);
    float *f = buffer.data();
    auto refused = [](vae_status status, const std::string &needle) {
        EXPECT_EQ(status, VAE_ERROR_INVALID_ARGUMENT) << needle;
        EXPECT_NE(std::string(vae_last_error()).find(needle), std::string::npos) << vae_last_error();
    };
    refused(vae_backend_linear_forward(backend_, f, f, f, f, 0, 4, 4), "cpu backend linear_forward");
    refused(vae_backend_linear_forward(backend_, f, f, f, f, 0, 4, 4), "rows 0");
    refused(vae_backend_linear_forward(backend_, nullptr, f, f, f, 2, 4, 4), "NULL pointer");
    refused(vae_backend_linear_backward(backend_, f, f, f, f, nullptr, f, 2, 2, 2), "linear_backward");
    refused(vae_backend_activation_forward(backend_, (vae_activation)9, f, f, 4), "unknown activation 9");
    refused(vae_backend_activation_backward(backend_, VAE_ACTIVATION_TANH, f, nullptr, f, 4), "activation_backward");
    refused(vae_backend_likelihood(backend_, (vae_likelihood)7, f, f, f, 2, 1, 4, 0.0f, 0), "unknown likelihood 7");
    refused(vae_backend_likelihood(backend_, VAE_LIKELIHOOD_BERNOULLI, f, f, f, 2, 0, 4, 0.0f, 0), "samples 0");
    vae_step_counter counter = {0, 0, 0};
    vae_noise_settings noise = {1, VAE_RANDOM_EPS, 0};
    refused(vae_backend_reparam_kl_forward(backend_, f, f, f, 2, -1, 1, &noise, &counter, nullptr, 0.0f), "latent -1");
    refused(vae_backend_reparam_kl_backward(backend_, f, f, f, f, 2, 2, 1, 1.0f, 0, nullptr, 0.0f), "NULL pointer");
    vae_noise_settings held = noise;
    held.rows_hold_samples = 2;
    refused(vae_backend_reparam_kl_forward(backend_, f, f, f, 4, 2, 2, &held, &counter, nullptr, 0.0f),
            "need samples 1 (got 2)");
    refused(vae_backend_reparam_kl_forward(backend_, f, f, f, 3, 2, 1, &held, &counter, nullptr, 0.0f),
            "rows a multiple of 2 (got 3)");
    refused(vae_backend_gaussian_kl(backend_, f, f, f, f, f, 2, 2, 1.0f, 0, &counter, 0.0f, NAN), "free_bits is NaN");
    refused(vae_backend_gaussian_kl(backend_, f, f, f, f, nullptr, 2, 2, 1.0f, 0, &counter, 0.0f, 0.0f),
            "dq and dp must be both NULL or both given");
    refused(vae_backend_gaussian_log_ratio(backend_, f, f, nullptr, f, 2, 2, 0.0f, 0), "gaussian_log_ratio");
    refused(vae_backend_gaussian_log_ratio(backend_, f, f, f, f, 0, 2, 0.0f, 0), "rows 0");
    refused(vae_backend_gaussian_log_ratio_backward(backend_, f, f, f, f, f, nullptr, f, 2, 2, 1.0f, 0, &counter, 2,
                                                    0.0f),
            "NULL pointer");
    refused(vae_backend_gaussian_log_ratio_backward(backend_, f, f, f, f, f, f, f, 2, 2, 1.0f, 0, &counter, 0, 0.0f),
            "mean_rows 0");
    refused(vae_backend_gaussian_log_ratio_backward(backend_, f, f, f, f, f, f, f, 2, 2, -1.0f, 0, &counter, 2, 0.0f),
            "beta must be finite and >= 0");
    refused(vae_backend_add_scaled(backend_, f, nullptr, 1.0f, f, 4), "add_scaled");
    refused(vae_backend_add_scaled(backend_, f, f + 8, 1.0f, f + 1, 4), "y overlaps a or b");
    refused(vae_backend_add_scaled(backend_, f + 8, f, 1.0f, f + 3, 4), "y overlaps a or b");
    refused(vae_backend_accumulate_loss(backend_, f, f, 0, 1, 1.0f, 0, &counter, (double *)f), "rows 0");
    refused(vae_backend_importance_log_mean(backend_, f, f, f, nullptr, 2, 2, 2, 0.0f), "importance_log_mean");
    refused(vae_backend_sum_of_squares(backend_, nullptr, 4, f), "sum_of_squares");
    vae_adam_settings adam = {};
    refused(vae_backend_adam_step(backend_, f, f, nullptr, f, 4, &adam, f, &counter), "adam_step");
    uint8_t bytes[16] = {0};
    OneSegment one(bytes, 4);
    const vae_row_segments *data = &one.rows;
    int32_t permutation[4] = {0, 1, 2, 3};
    vae_gather_settings gather = {};
    gather.dtype = VAE_DTYPE_U8;
    gather.scale = 1.0f;
    refused(vae_backend_gather_batch(backend_, data, permutation, 4, 2, &gather, &counter, f),
            "steps_per_epoch must be positive, got 0");
    gather.steps_per_epoch = 2;
    gather.dtype = 5;
    refused(vae_backend_gather_batch(backend_, data, permutation, 4, 2, &gather, &counter, f), "dtype 5");
    gather.dtype = VAE_DTYPE_U8;
    gather.binarize = 3;
    refused(vae_backend_gather_batch(backend_, data, permutation, 4, 2, &gather, &counter, f), "binarize mode 3");
    gather.binarize = VAE_BINARIZE_NONE;
    vae_row_segments no_segments = {0, one.first_row, one.values};
    refused(vae_backend_gather_batch(backend_, &no_segments, permutation, 4, 2, &gather, &counter, f),
            "at least one segment");
    refused(vae_backend_copy_to_host(backend_, nullptr, f, 4), "copy_to_host");
    refused(vae_backend_fill(backend_, nullptr, 1.0f, 4), "fill");
    // The optional operations the CPU backend lacks are refused, not crashed on.
    EXPECT_FALSE(vae_backend_has_graphs(backend_));
    EXPECT_FALSE(vae_backend_has_host_mapped_memory(backend_));
    refused(vae_backend_graph_capture_begin(backend_), "no graphs");
    void *host = f, *device = f;
    refused(vae_backend_alloc_host_mapped(backend_, 16, &host, &device), "no mapped host memory");
    EXPECT_EQ(host, nullptr);
    refused(vae_backend_synchronize(nullptr), "no backend");
    // Empty work is not an error, and touches nothing.
    EXPECT_EQ(vae_backend_fill(backend_, nullptr, 1.0f, 0), VAE_OK);
    EXPECT_EQ(vae_backend_copy(backend_, nullptr, nullptr, 0), VAE_OK);
    EXPECT_EQ(vae_backend_activation_forward(backend_, VAE_ACTIVATION_RELU, nullptr, nullptr, 0), VAE_OK);
}

TEST_F(CpuBackend, AddScaledIsOneFusedMultiplyAddAndMayWorkInPlace) {
    // 1 + 2^-11 + 2^-24 needs one rounding: a product rounded first loses the 2^-24.
    const float a[3] = {-1.0f, 0.5f, 3.0f}, b[3] = {1.0f + 0x1p-12f, -2.0f, 0.25f};
    const float scale = 1.0f + 0x1p-12f;
    float y[3], in_a[3] = {a[0], a[1], a[2]}, in_b[3] = {b[0], b[1], b[2]};
    ASSERT_EQ(vae_backend_add_scaled(backend_, a, b, scale, y, 3), VAE_OK);
    EXPECT_EQ(y[0], 0x1p-11f + 0x1p-24f);
    for (int i = 1; i < 3; ++i) EXPECT_EQ(y[i], (float)((double)a[i] + (double)scale * b[i])) << i;
    ASSERT_EQ(vae_backend_add_scaled(backend_, in_a, b, scale, in_a, 3), VAE_OK);
    ASSERT_EQ(vae_backend_add_scaled(backend_, a, in_b, scale, in_b, 3), VAE_OK);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(in_a[i], y[i]) << i;
        EXPECT_EQ(in_b[i], y[i]) << i;
    }
}

// The noise layout of a hierarchical model's deeper groups: rows that hold
// S sample-major copies of the batch (each drawn once) give bitwise the z of
// the batch with samples = S, whole or as the shares of a data-parallel
// batch; a column offset c gives the draws of columns c.. of a wider call,
// for offsets that are and are not multiples of Philox's 4-column blocks.
class CpuNoiseLayout : public CpuBackend {
  protected:
    std::vector<float> posterior(int rows, int latent, uint64_t seed) {
        std::vector<float> mu_logvar = vae_test::random_normal((size_t)rows * 2 * latent, seed);
        for (int b = 0; b < rows; ++b)
            for (int j = 0; j < latent; ++j) mu_logvar[(size_t)b * 2 * latent + latent + j] *= 1.5f;
        return mu_logvar;
    }
    std::vector<float> z_of(const std::vector<float> &mu_logvar, int rows, int latent, int samples,
                            const vae_noise_settings &noise) {
        std::vector<float> z((size_t)samples * rows * latent), kl(rows);
        vae_step_counter counter = {6, 0, 0};
        EXPECT_EQ(vae_backend_reparam_kl_forward(backend_, mu_logvar.data(), z.data(), kl.data(), rows, latent,
                                                 samples, &noise, &counter, nullptr, 0.0f),
                  VAE_OK)
            << vae_last_error();
        return z;
    }
    // Data rows [first, first + count) of mu_logvar ([*, 2*latent]), `copies` times, sample-major.
    static std::vector<float> copies_of(const std::vector<float> &mu_logvar, int latent, int first, int count,
                                        int copies) {
        std::vector<float> out;
        for (int s = 0; s < copies; ++s)
            out.insert(out.end(), mu_logvar.begin() + (size_t)first * 2 * latent,
                       mu_logvar.begin() + (size_t)(first + count) * 2 * latent);
        return out;
    }
    vae_noise_settings noise_ = {0xfeedull, VAE_RANDOM_EPS, 3, 0, 0};
};

TEST_F(CpuNoiseLayout, RowsHoldingSamplesDrawWhatTheSamplesWould) {
    const int batch = 8, samples = 3, latent = 13;
    const std::vector<float> mu_logvar = posterior(batch, latent, 201);
    const std::vector<float> by_samples = z_of(mu_logvar, batch, latent, samples, noise_);
    vae_noise_settings held = noise_;
    held.rows_hold_samples = samples;
    EXPECT_EQ(z_of(copies_of(mu_logvar, latent, 0, batch, samples), samples * batch, latent, 1, held), by_samples);
    // Two shares of a data-parallel batch of 8 (4 rows each) and the whole,
    // samples or held rows alike.
    for (int share_rows : {4, 3}) {
        for (int first = 0; first < batch; first += share_rows) {
            const int count = std::min(share_rows, batch - first);
            SCOPED_TRACE("share of " + std::to_string(count) + " rows from " + std::to_string(first));
            vae_noise_settings share = held;
            share.batch_rows = batch;
            share.row_offset = (uint32_t)first;
            const std::vector<float> z =
                z_of(copies_of(mu_logvar, latent, first, count, samples), samples * count, latent, 1, share);
            for (int s = 0; s < samples; ++s)
                for (int d = 0; d < count; ++d)
                    for (int j = 0; j < latent; ++j)
                        ASSERT_EQ(z[((size_t)s * count + d) * latent + j],
                                  by_samples[((size_t)s * batch + first + d) * latent + j])
                            << "sample " << s << ", row " << d << ", column " << j;
        }
    }
    // rows_hold_samples 1 is the plain layout.
    held.rows_hold_samples = 1;
    EXPECT_EQ(z_of(mu_logvar, batch, latent, samples, held), by_samples);
}

TEST_F(CpuNoiseLayout, ColumnOffsetDrawsTheColumnsOfAWiderCall) {
    const int rows = 5, samples = 2, latent = 13, wide = 9 + latent + 3;
    const std::vector<float> wide_mu_logvar = posterior(rows, wide, 202);
    const std::vector<float> wide_z = z_of(wide_mu_logvar, rows, wide, samples, noise_);
    for (int offset : {0, 1, 2, 3, 4, 5, 8, 9}) {
        SCOPED_TRACE("column offset " + std::to_string(offset));
        std::vector<float> mu_logvar((size_t)rows * 2 * latent);
        for (int b = 0; b < rows; ++b)
            for (int j = 0; j < latent; ++j) {
                mu_logvar[(size_t)b * 2 * latent + j] = wide_mu_logvar[(size_t)b * 2 * wide + offset + j];
                mu_logvar[(size_t)b * 2 * latent + latent + j] = wide_mu_logvar[(size_t)b * 2 * wide + wide + offset + j];
            }
        vae_noise_settings shifted = noise_;
        shifted.column_offset = (uint32_t)offset;
        const std::vector<float> z = z_of(mu_logvar, rows, latent, samples, shifted);
        for (size_t r = 0; r < (size_t)samples * rows; ++r)
            for (int j = 0; j < latent; ++j)
                ASSERT_EQ(z[r * latent + j], wide_z[r * wide + offset + j]) << "z row " << r << ", column " << j;
    }
    // Groups side by side draw different noise: the same posterior at offset 0 and at offset `wide`.
    std::vector<float> narrow = copies_of(wide_mu_logvar, wide, 0, rows, 1);
    vae_noise_settings next = noise_;
    next.column_offset = (uint32_t)wide;
    EXPECT_NE(z_of(narrow, rows, wide, samples, noise_), z_of(narrow, rows, wide, samples, next));
}

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
    OneSegment dataset(data.data(), count);
    for (uint64_t step : {0ull, 1ull, 5ull}) {  // step 5 is batch 2 of its epoch
        vae_step_counter counter = {step, 0, 0};
        ASSERT_EQ(vae_backend_gather_batch(backend_, &dataset.rows, permutation.data(), dim, rows, &settings, &counter,
                                              x.data()),
                  VAE_OK);
        uint64_t batch = step % 3;
        for (int r = 0; r < rows; ++r)
            for (int j = 0; j < dim; ++j)
                ASSERT_FLOAT_EQ(x[r * dim + j], data[permutation[batch * rows + r] * dim + j] / 255.0f)
                    << "step " << step << " row " << r;
    }
}

// A sharded data set: rows spread over segments of different lengths at
// unrelated addresses are found by their global index, in every segment.
TEST_F(CpuBackend, GatherReadsRowsAcrossSegments) {
    const int dim = 5, rows = 12;
    const std::vector<int64_t> lengths = {3, 1, 6, 2};  // 12 rows in all
    std::vector<std::vector<float>> shards;
    std::vector<int64_t> first_row = {0};
    std::vector<const void *> values;
    for (size_t s = 0; s < lengths.size(); ++s) {
        shards.push_back(vae_test::random_uniform((size_t)lengths[s] * dim, 100 + s, 0.0f, 1.0f));
        first_row.push_back(first_row.back() + lengths[s]);
    }
    for (auto &shard : shards) values.push_back(shard.data());
    vae_row_segments dataset = {(int)lengths.size(), first_row.data(), values.data()};
    std::vector<int32_t> permutation = {11, 0, 3, 9, 2, 4, 10, 1, 8, 5, 7, 6};
    vae_gather_settings settings = {};
    settings.dtype = VAE_DTYPE_F32;
    settings.scale = 1.0f;
    settings.binarize = VAE_BINARIZE_NONE;
    settings.steps_per_epoch = 1;
    vae_step_counter counter = {0, 0, 0};
    std::vector<float> x((size_t)rows * dim);
    ASSERT_EQ(vae_backend_gather_batch(backend_, &dataset, permutation.data(), dim, rows, &settings, &counter,
                                          x.data()),
              VAE_OK);
    for (int r = 0; r < rows; ++r) {
        int64_t row = permutation[r];
        size_t s = 0;
        while (row >= first_row[s + 1]) ++s;
        const float *expected = shards[s].data() + (size_t)(row - first_row[s]) * dim;
        EXPECT_EQ(std::memcmp(&x[(size_t)r * dim], expected, dim * sizeof(float)), 0) << "row " << row;
    }
    vae_row_segments none = {0, first_row.data(), values.data()};
    EXPECT_NE(vae_backend_gather_batch(backend_, &none, permutation.data(), dim, rows, &settings, &counter, x.data()),
              VAE_OK);
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
    OneSegment dataset(data.data(), rows);
    ASSERT_EQ(vae_backend_gather_batch(backend_, &dataset.rows, identity.data(), dim, rows, &settings, &counter,
                                          x.data()),
              VAE_OK);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], data[i] > 0.3f ? 1.0f : 0.0f);

    // Dynamic: pixel (r, j) is 1 exactly when the Philox uniform at
    // (seed, subsequence(step, purpose, r), column j) is below its intensity.
    settings.binarize = VAE_BINARIZE_DYNAMIC;
    ASSERT_EQ(vae_backend_gather_batch(backend_, &dataset.rows, identity.data(), dim, rows, &settings, &counter,
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
    ASSERT_EQ(vae_backend_gather_batch(backend_, &dataset.rows, identity.data(), dim, rows, &settings, &counter,
                                          later.data()),
              VAE_OK);
    EXPECT_NE(std::memcmp(later.data(), x.data(), x.size() * sizeof(float)), 0);
}

TEST_F(CpuBackend, SumOfSquaresMatchesFloat64) {
    std::vector<float> values = vae_test::random_normal(100003, 5, 3.0f);
    double expected = 0;
    for (float v : values) expected += (double)v * v;
    float result = 0;
    ASSERT_EQ(vae_backend_sum_of_squares(backend_, values.data(), values.size(), &result), VAE_OK);
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
        ASSERT_EQ(vae_backend_adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
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
    ASSERT_EQ(vae_backend_adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
                                       &norm_squared, &counter),
              VAE_OK);
    EXPECT_EQ(params, (std::vector<float>{1, 2, 3, 4, 5}));
    EXPECT_EQ(m, std::vector<float>(count, 0.1f));
    EXPECT_EQ(v, std::vector<float>(count, 0.2f));
    EXPECT_EQ(counter.step, 8u);
    EXPECT_EQ(counter.skipped_steps, 1u);
    EXPECT_EQ(counter.nonfinite_seen, 1u);
}

// train.skip_grad_norm: a finite norm above the threshold skips the update
// (counted, not recorded as non-finite); one below it updates.
TEST_F(CpuBackend, GradientNormAboveTheSkipThresholdSkipsTheStep) {
    const size_t count = 3;
    vae_adam_settings settings = {};
    settings.lr = 1e-3f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.skip_norm = 2.0f;
    std::vector<float> params = {1, 2, 3}, m(count, 0.0f), v(count, 0.0f), grads = {3, 0, 0};
    float norm_squared = 9.0f;  // norm 3 > 2
    vae_step_counter counter = {4, 0, 0};
    ASSERT_EQ(vae_backend_adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
                                    &norm_squared, &counter),
              VAE_OK);
    EXPECT_EQ(params, (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(m, std::vector<float>(count, 0.0f));
    EXPECT_EQ(counter.step, 5u);
    EXPECT_EQ(counter.skipped_steps, 1u);
    EXPECT_EQ(counter.nonfinite_seen, 0u);
    grads = {1.5f, 0, 0};
    norm_squared = 2.25f;  // norm 1.5 <= 2
    ASSERT_EQ(vae_backend_adam_step(backend_, params.data(), grads.data(), m.data(), v.data(), count, &settings,
                                    &norm_squared, &counter),
              VAE_OK);
    EXPECT_LT(params[0], 1.0f);
    EXPECT_EQ(counter.skipped_steps, 1u);
    EXPECT_EQ(counter.step, 6u);
}

// --device auto without a usable GPU: the CPU, and the reason CUDA was not
// used is in the device name the CLI prints (no CUDA in this build, no
// device, a driver too old, out of memory).
TEST(BackendChoice, AutoFallsBackToTheCpuAndSaysWhy) {
    if (vae_backend_cuda_available()) GTEST_SKIP() << "a usable GPU is present: auto picks CUDA";
    vae_backend *backend = nullptr;
    ASSERT_EQ(vae_backend_create(&backend, VAE_DEVICE_AUTO, VAE_PRECISION_FP32), VAE_OK) << vae_last_error();
    std::string name = backend->device_name;
    vae_backend_destroy(backend);
    std::printf("device: %s\n", name.c_str());
    EXPECT_EQ(name.rfind("cpu", 0), 0u) << name;
    size_t at = name.find("; CUDA not used: ");
    ASSERT_NE(at, std::string::npos) << name;
    std::string reason = name.substr(at + 17);
    EXPECT_TRUE(reason.find("no CUDA backend") != std::string::npos || reason.find("no usable CUDA GPU") != std::string::npos)
        << reason;
    EXPECT_STREQ(vae_last_error(), "") << "the fallback is not an error";
}

// train.precision = bf16 on the CPU: every GEMM of a linear layer is the
// fp32 GEMM of the operands rounded to bfloat16 (bit for bit: the same
// sgemm on the same values), the bias and its gradient stay fp32, and the
// result is not the fp32 one (the rounding happened).
TEST(CpuBackendBfloat16, LinearGemmsAreFp32GemmsOfRoundedOperands) {
    vae_backend *bf16 = nullptr, *fp32 = nullptr;
    ASSERT_EQ(vae_backend_create_cpu_precision(&bf16, VAE_PRECISION_BF16), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_create_cpu(&fp32), VAE_OK) << vae_last_error();
    EXPECT_NE(std::string(bf16->device_name).find("bf16"), std::string::npos) << bf16->device_name;
    const int rows = 37, in = 301, out = 67;
    std::vector<float> x = vae_test::random_normal((size_t)rows * in, 11),
                       weight = vae_test::random_normal((size_t)out * in, 12, 0.1f);
    std::vector<float> bias = vae_test::random_normal(out, 13), dy = vae_test::random_normal((size_t)rows * out, 14);
    auto rounded = [](std::vector<float> values) {
        for (float &value : values) value = vae_round_to_bfloat16(value);
        return values;
    };
    std::vector<float> x16 = rounded(x), weight16 = rounded(weight), dy16 = rounded(dy);
    std::vector<float> y(rows * out), y_reference(rows * out), y_fp32(rows * out);
    ASSERT_EQ(vae_backend_linear_forward(bf16, x.data(), weight.data(), bias.data(), y.data(), rows, in, out), VAE_OK);
    ASSERT_EQ(
        vae_backend_linear_forward(fp32, x16.data(), weight16.data(), bias.data(), y_reference.data(), rows, in, out),
        VAE_OK);
    ASSERT_EQ(vae_backend_linear_forward(fp32, x.data(), weight.data(), bias.data(), y_fp32.data(), rows, in, out),
              VAE_OK);
    EXPECT_EQ(std::memcmp(y.data(), y_reference.data(), y.size() * sizeof(float)), 0);
    EXPECT_GT(vae_test::relative_error(y, y_fp32), 1e-4) << "bf16 rounding left no trace";
    EXPECT_LT(vae_test::relative_error(y, y_fp32), 2e-2);

    std::vector<float> dx(rows * in), dweight(out * in), dbias(out), dx_reference(rows * in),
        dweight_reference(out * in);
    std::vector<float> dbias_fp32(out), dbias_unused(out), dx_fp32(rows * in), dweight_fp32(out * in);
    ASSERT_EQ(vae_backend_linear_backward(bf16, x.data(), weight.data(), dy.data(), dx.data(), dweight.data(),
                                          dbias.data(), rows, in, out),
              VAE_OK);
    ASSERT_EQ(vae_backend_linear_backward(fp32, x16.data(), weight16.data(), dy16.data(), dx_reference.data(),
                                          dweight_reference.data(), dbias_unused.data(), rows, in, out),
              VAE_OK);
    ASSERT_EQ(vae_backend_linear_backward(fp32, x.data(), weight.data(), dy.data(), dx_fp32.data(), dweight_fp32.data(),
                                          dbias_fp32.data(), rows, in, out),
              VAE_OK);
    EXPECT_EQ(std::memcmp(dx.data(), dx_reference.data(), dx.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(dweight.data(), dweight_reference.data(), dweight.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(dbias.data(), dbias_fp32.data(), dbias.size() * sizeof(float)), 0)
        << "the bias gradient is not a GEMM: fp32";
    EXPECT_GT(vae_test::relative_error(dweight, dweight_fp32), 1e-4);
    EXPECT_GT(vae_test::relative_error(dx, dx_fp32), 1e-4);
    vae_backend_destroy(bf16);
    vae_backend_destroy(fp32);
    vae_backend *unknown = nullptr;
    EXPECT_EQ(vae_backend_create_cpu_precision(&unknown, (vae_precision)7), VAE_ERROR_INVALID_ARGUMENT);
}

}  // namespace
